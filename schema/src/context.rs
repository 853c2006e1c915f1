//! The evaluation context: who or what a flag is evaluated for.
//!
//! A context has an optional targeting key (absent for anonymous contexts), an optional kind
//! (e.g. `user`, `organization`, `device`) and attributes whose values are JSON: strings,
//! numbers, booleans, arrays and null. Attribute names `key` and `kind` are reserved: in a
//! clause they refer to the targeting key and the kind.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Who or what a flag is evaluated for.
///
/// Attributes are kept sorted by name so that lookup is a binary search with no hashing and
/// no allocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    key: Option<String>,
    kind: Option<String>,
    attributes: Vec<Attribute>,
}

/// One attribute, with its name's [order key](Context::attribute_order_key).
#[derive(Debug, Clone, PartialEq)]
struct Attribute {
    name: String,
    order: u64,
    value: Value,
}

impl Attribute {
    fn new(name: String, value: Value) -> Self {
        Self {
            order: Context::attribute_order_key(&name),
            name,
            value,
        }
    }
}

impl Context {
    /// A context with a targeting key and no attributes.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            ..Self::default()
        }
    }

    /// An anonymous context: no targeting key.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Starts building a context with a targeting key.
    pub fn builder(key: impl Into<String>) -> ContextBuilder {
        ContextBuilder {
            ctx: Self::new(key),
        }
    }

    /// Starts building an anonymous context.
    pub fn anonymous_builder() -> ContextBuilder {
        ContextBuilder {
            ctx: Self::anonymous(),
        }
    }

    /// The targeting key, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The kind, if any.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// The attribute called `name` (not the reserved `key`/`kind`), if present.
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.attributes
            .binary_search_by(|a| a.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.attributes[i].value)
    }

    /// The number of attributes (the key and kind not counted).
    pub fn attribute_count(&self) -> usize {
        self.attributes.len()
    }

    /// The attribute at `index` in name order (`0..attribute_count()`), for callers that
    /// search the sorted attributes themselves: the evaluation engine compares names by
    /// their leading bytes as integers before falling back to a string comparison.
    pub fn attribute_at(&self, index: usize) -> Option<(&str, &Value)> {
        self.attributes
            .get(index)
            .map(|a| (a.name.as_str(), &a.value))
    }

    /// [`Context::attribute_at`] with the name's order key
    /// ([`Context::attribute_order_key`]), computed once when the attribute was set.
    pub fn attribute_keyed_at(&self, index: usize) -> Option<(u64, &str, &Value)> {
        self.attributes
            .get(index)
            .map(|a| (a.order, a.name.as_str(), &a.value))
    }

    /// Every attribute in name order, as [`Context::attribute_keyed_at`] gives them.
    pub fn attributes_keyed(&self) -> impl ExactSizeIterator<Item = (u64, &str, &Value)> {
        self.attributes
            .iter()
            .map(|a| (a.order, a.name.as_str(), &a.value))
    }

    /// The first 8 bytes of `name` as a big-endian integer, zero-padded: comparing two
    /// names' keys as integers orders them as their bytes do, except that names equal in
    /// their first 8 bytes (or one a prefix of the other within them) need a string
    /// comparison to decide.
    pub fn attribute_order_key(name: &str) -> u64 {
        let mut buf = [0u8; 8];
        let b = name.as_bytes();
        let n = b.len().min(8);
        buf[..n].copy_from_slice(&b[..n]);
        u64::from_be_bytes(buf)
    }

    /// All attributes, sorted by name.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.attributes.iter().map(|a| (a.name.as_str(), &a.value))
    }

    /// Sets the targeting key.
    pub fn set_key(&mut self, key: Option<String>) {
        self.key = key;
    }

    /// Sets the kind.
    pub fn set_kind(&mut self, kind: Option<String>) {
        self.kind = kind;
    }

    /// Sets an attribute, replacing any previous value. Setting `key` or `kind` to a string
    /// sets the targeting key or the kind instead.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        let name = name.into();
        let value = value.into();
        match (name.as_str(), value) {
            ("key", Value::String(s)) => self.key = Some(s),
            ("kind", Value::String(s)) => self.kind = Some(s),
            (_, value) => match self
                .attributes
                .binary_search_by(|a| a.name.as_str().cmp(&name))
            {
                Ok(i) => self.attributes[i].value = value,
                Err(i) => self.attributes.insert(i, Attribute::new(name, value)),
            },
        }
    }
}

/// Builds a [`Context`].
#[derive(Debug, Clone)]
pub struct ContextBuilder {
    ctx: Context,
}

impl ContextBuilder {
    /// Sets the kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.ctx.kind = Some(kind.into());
        self
    }

    /// Sets an attribute.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.ctx.set(name, value);
        self
    }

    /// Finishes the context.
    pub fn build(self) -> Context {
        self.ctx
    }
}

/// Wire form: `{"key": "...", "kind": "...", "attributes": {...}}`.
#[derive(Serialize, Deserialize)]
struct ContextWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    attributes: serde_json::Map<String, Value>,
}

impl Serialize for Context {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ContextWire {
            key: self.key.clone(),
            kind: self.kind.clone(),
            attributes: self
                .attributes
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = ContextWire::deserialize(d)?;
        let mut ctx = Context {
            key: w.key,
            kind: w.kind,
            attributes: Vec::with_capacity(w.attributes.len()),
        };
        for (name, value) in w.attributes {
            ctx.set(name, value);
        }
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attributes_are_found_whatever_the_insertion_order() {
        let c = Context::builder("u1")
            .set("zeta", 1)
            .set("alpha", "a")
            .set("mid", json!([1, 2]))
            .build();
        assert_eq!(c.attribute("alpha"), Some(&json!("a")));
        assert_eq!(c.attribute("zeta"), Some(&json!(1)));
        assert_eq!(c.attribute("mid"), Some(&json!([1, 2])));
        assert_eq!(c.attribute("missing"), None);
        assert_eq!(c.key(), Some("u1"));
    }

    #[test]
    fn reserved_names_set_key_and_kind() {
        let c = Context::anonymous_builder()
            .set("key", "k")
            .set("kind", "org")
            .build();
        assert_eq!(c.key(), Some("k"));
        assert_eq!(c.kind(), Some("org"));
        assert_eq!(c.attribute("key"), None);
    }

    #[test]
    fn wire_round_trip() {
        let j = json!({"key": "u", "kind": "user", "attributes": {"a": 1, "b": [true]}});
        let c: Context = serde_json::from_value(j.clone()).unwrap();
        assert_eq!(serde_json::to_value(&c).unwrap(), j);
        let anon: Context = serde_json::from_value(json!({})).unwrap();
        assert_eq!(anon.key(), None);
    }
}
