//! A JSON Schema validator for the subset the OpenAPI 3.1 document uses (`$ref`, `type` and
//! type lists, `properties`, `required`, `additionalProperties`, `items`, `oneOf`, `anyOf`,
//! `allOf`, `enum`, `const`, numeric bounds, lengths, item counts and `pattern`), and a way
//! to find the operation a request went to.
//!
//! Written here rather than taken from a crate: the `jsonschema` crate would add a large
//! dependency tree (a regex engine of its own, an HTTP client for remote references) to
//! check ~15 keywords, on a 2-core CI already bound by compile time. One stricter rule than
//! JSON Schema: an object schema that lists `properties` is closed unless it says
//! `additionalProperties`, so a field the API sends but the document does not describe is a
//! drift, caught.

use std::collections::BTreeSet;

use serde_json::Value;

/// The OpenAPI document, with the lookups the checks need.
pub struct Doc(pub Value);

impl Doc {
    /// The schema a `$ref` names, or the schema itself.
    pub fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                let target = &self.0["components"]["schemas"][name];
                assert!(!target.is_null(), "dangling $ref {r}");
                self.resolve(target)
            }
            None => schema,
        }
    }

    /// The component schema called `name`.
    pub fn component(&self, name: &str) -> &Value {
        let s = &self.0["components"]["schemas"][name];
        assert!(!s.is_null(), "no component schema {name}");
        s
    }

    /// Every (method, path template) in the document.
    pub fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.0["paths"].as_object().unwrap() {
            for method in ["get", "post", "put", "patch", "delete"] {
                if item.get(method).is_some() {
                    out.insert((method.to_owned(), path.clone()));
                }
            }
        }
        out
    }

    /// The path template a concrete path matches (the one with most literal segments).
    pub fn template_of(&self, method: &str, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        let mut best: Option<(usize, String)> = None;
        for (m, template) in self.operations() {
            if m != method {
                continue;
            }
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut literal = 0;
            let fits = parts.iter().zip(&segments).all(|(t, s)| {
                if t.starts_with('{') {
                    true
                } else {
                    literal += 1;
                    t == s
                }
            });
            if fits && best.as_ref().is_none_or(|(l, _)| literal > *l) {
                best = Some((literal, template));
            }
        }
        best.map(|(_, t)| t)
    }

    /// The operation object.
    pub fn operation(&self, method: &str, template: &str) -> &Value {
        &self.0["paths"][template][method]
    }

    /// Validates `value` against `schema`, collecting every error with its JSON path.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        self.validate_in(schema, value, at, errors, true);
    }

    /// The properties an object schema describes, through `allOf` (for closing the whole).
    fn described(&self, schema: &Value, out: &mut BTreeSet<String>) -> bool {
        let schema = self.resolve(schema);
        let mut any = false;
        if let Some(p) = schema.get("properties").and_then(Value::as_object) {
            out.extend(p.keys().cloned());
            any = true;
        }
        for s in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            any |= self.described(s, out);
        }
        any
    }

    /// `closed`: whether an object with `properties` refuses undescribed fields (off for the
    /// branches of an `allOf`, whose union is checked instead).
    fn validate_in(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        errors: &mut Vec<String>,
        closed: bool,
    ) {
        let schema = self.resolve(schema);
        if schema.as_bool() == Some(true) || schema.as_object().is_some_and(|o| o.is_empty()) {
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.validate_in(s, value, at, errors, false);
            }
            let mut names = BTreeSet::new();
            if closed
                && self.described(schema, &mut names)
                && schema.get("additionalProperties").is_none()
                && let Value::Object(map) = value
            {
                for k in map.keys().filter(|k| !names.contains(*k)) {
                    errors.push(format!("{at}.{k}: not described by the schema"));
                }
            }
        }
        for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                let passing = options.iter().filter(|s| self.accepts(s, value)).count();
                if passing == 0 || (exactly_one && passing > 1) {
                    errors.push(format!(
                        "{at}: {passing} of the {key} options accept {value}"
                    ));
                }
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {options:?}"));
        }
        if let Some(c) = schema.get("const")
            && c != value
        {
            errors.push(format!("{at}: {value} is not {c}"));
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let nullable = schema.get("nullable") == Some(&Value::Bool(true));
            if !(types.iter().any(|t| type_matches(t, value)) || (nullable && value.is_null())) {
                errors.push(format!("{at}: {value} is not of type {t}"));
                return;
            }
        }
        self.validate_bounds(schema, value, at, errors);
        if let Value::Object(map) = value {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errors.push(format!("{at}: required field '{r}' is missing"));
                    }
                }
            }
            for (k, v) in map {
                let path = format!("{at}.{k}");
                match properties.and_then(|p| p.get(k)) {
                    Some(s) => self.validate(s, v, &path, errors),
                    None if !closed || schema.get("allOf").is_some() => {}
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errors.push(format!("{path}: not allowed"));
                        }
                        Some(Value::Bool(true)) => {}
                        Some(s) => self.validate(s, v, &path, errors),
                        // Closed unless it says otherwise (see the module comment).
                        None if properties.is_some() => {
                            errors.push(format!("{path}: not described by the schema"));
                        }
                        None => {}
                    },
                }
            }
        }
        if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
            for (i, v) in items.iter().enumerate() {
                self.validate(s, v, &format!("{at}[{i}]"), errors);
            }
        }
    }

    fn validate_bounds(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let num = |k: &str| schema.get(k).and_then(Value::as_f64);
        if let Some(n) = value.as_f64()
            && (num("minimum").is_some_and(|m| n < m) || num("maximum").is_some_and(|m| n > m))
        {
            errors.push(format!("{at}: {n} is out of bounds"));
        }
        let count = |k: &str| schema.get(k).and_then(Value::as_u64).map(|c| c as usize);
        if let Some(s) = value.as_str() {
            let len = s.chars().count();
            if count("minLength").is_some_and(|m| len < m)
                || count("maxLength").is_some_and(|m| len > m)
            {
                errors.push(format!("{at}: length {len} is out of bounds"));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str)
                && !regex::Regex::new(p).unwrap().is_match(s)
            {
                errors.push(format!("{at}: {s:?} does not match {p}"));
            }
        }
        if let Some(a) = value.as_array()
            && (count("minItems").is_some_and(|m| a.len() < m)
                || count("maxItems").is_some_and(|m| a.len() > m))
        {
            errors.push(format!("{at}: {} items is out of bounds", a.len()));
        }
    }

    /// Whether `value` is valid against `schema`.
    pub fn accepts(&self, schema: &Value, value: &Value) -> bool {
        let mut errors = Vec::new();
        self.validate(schema, value, "$", &mut errors);
        errors.is_empty()
    }

    /// The errors of `value` against component `name`.
    pub fn errors_against(&self, name: &str, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.validate(self.component(name), value, "$", &mut errors);
        errors
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        _ => false,
    }
}

/// Every variant of `doc` with one field (at any depth) set to `null` or removed, named by
/// its path: the documents on which a schema and a serde type most easily disagree.
pub fn mutations(doc: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    fn walk(root: &Value, at: &mut Vec<PathPart>, node: &Value, out: &mut Vec<(String, Value)>) {
        match node {
            Value::Object(map) => {
                for (k, v) in map {
                    at.push(PathPart::Key(k.clone()));
                    for (what, replacement) in [("null", Some(Value::Null)), ("removed", None)] {
                        let mut copy = root.clone();
                        edit(&mut copy, at, replacement);
                        out.push((format!("{} {what}", render(at)), copy));
                    }
                    walk(root, at, v, out);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    at.push(PathPart::Index(i));
                    walk(root, at, v, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    walk(doc, &mut Vec::new(), doc, &mut out);
    out
}

#[derive(Clone)]
enum PathPart {
    Key(String),
    Index(usize),
}

fn render(at: &[PathPart]) -> String {
    at.iter()
        .map(|p| match p {
            PathPart::Key(k) => format!(".{k}"),
            PathPart::Index(i) => format!("[{i}]"),
        })
        .collect()
}

fn edit(node: &mut Value, at: &[PathPart], replacement: Option<Value>) {
    let (last, parents) = at.split_last().unwrap();
    let mut cur = node;
    for p in parents {
        cur = match p {
            PathPart::Key(k) => &mut cur[k.as_str()],
            PathPart::Index(i) => &mut cur[*i],
        };
    }
    if let (PathPart::Key(k), Value::Object(map)) = (last, cur) {
        match replacement {
            Some(v) => {
                map.insert(k.clone(), v);
            }
            None => {
                map.remove(k);
            }
        }
    }
}
