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
/// Attributes are kept sorted by name (for [`Context::attributes`] and a binary-search
/// [`Context::attribute`]) and indexed by the [hash](Context::attribute_hash) of their name,
/// computed once when set, so that the evaluation engine, which hashes the names a flag
/// reads when it compiles the flag, finds each with one probe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    key: Option<String>,
    kind: Option<String>,
    attributes: Vec<Attribute>,
    /// Open addressing over `attributes` by name hash: positions, [`FREE`] for an empty
    /// slot. Length is a power of two at least twice the attribute count (or zero).
    index: Box<[u32]>,
}

/// Marks a free slot of [`Context::index`](Context).
const FREE: u32 = u32::MAX;

/// One attribute, with the [fingerprint](NameKey) of its name.
#[derive(Debug, Clone, PartialEq)]
struct Attribute {
    name: String,
    key: NameKey,
    value: Value,
}

impl Attribute {
    fn new(name: String, value: Value) -> Self {
        Self {
            key: NameKey::of(&name),
            name,
            value,
        }
    }
}

/// What a lookup compares before (rarely) comparing names: a hash of the name and its first
/// and last 8 bytes, which with its length cover every byte of names up to 16 bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameKey {
    hash: u64,
    head: u64,
    tail: u64,
}

impl NameKey {
    fn of(name: &str) -> Self {
        let b = name.as_bytes();
        let pack = |part: &[u8]| {
            let mut buf = [0u8; 8];
            buf[..part.len()].copy_from_slice(part);
            u64::from_le_bytes(buf)
        };
        let n = b.len().min(8);
        Self {
            hash: Context::attribute_hash(name),
            head: pack(&b[..n]),
            tail: pack(&b[b.len() - n..]),
        }
    }
}

/// An attribute name prepared for repeated lookups ([`Context::attribute_by`]): hashed once,
/// so that each lookup is one probe of the context's index and a few integer compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeName {
    name: Box<str>,
    key: NameKey,
}

impl AttributeName {
    /// Prepares `name`.
    pub fn new(name: &str) -> Self {
        Self {
            key: NameKey::of(name),
            name: name.into(),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
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

    /// The hash of an attribute name that the context's index uses. The same for the same
    /// name within one build of this crate; not meant to be stored or sent.
    fn attribute_hash(name: &str) -> u64 {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let b = name.as_bytes();
        let mut h = (b.len() as u64).wrapping_mul(K);
        let mut chunks = b.chunks_exact(8);
        for chunk in &mut chunks {
            let word = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
            h = (h ^ word).wrapping_mul(K).rotate_left(29);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            h = (h ^ u64::from_le_bytes(buf))
                .wrapping_mul(K)
                .rotate_left(29);
        }
        h ^ (h >> 32)
    }

    /// The attribute called `name`: one probe of the context's hash index (where
    /// [`Context::attribute`] is a binary search), comparing integers only for names of up to
    /// 16 bytes.
    #[inline]
    pub fn attribute_by(&self, name: &AttributeName) -> Option<&Value> {
        let mask = self.index.len().checked_sub(1)?;
        let mut i = name.key.hash as usize & mask;
        loop {
            // A free slot's position is past the end: not found.
            let a = self.attributes.get(*self.index.get(i)? as usize)?;
            if a.key == name.key
                && a.name.len() == name.name.len()
                && (a.name.len() <= 16 || *a.name == *name.name)
            {
                return Some(&a.value);
            }
            i = (i + 1) & mask;
        }
    }

    /// Rebuilds the hash index after attributes were added.
    fn reindex(&mut self) {
        let n = self.attributes.len().min(FREE as usize - 1);
        if n == 0 {
            self.index = Box::default();
            return;
        }
        let capacity = (n * 2).next_power_of_two();
        let mut index = vec![FREE; capacity];
        for (pos, a) in self.attributes.iter().take(n).enumerate() {
            let mut i = a.key.hash as usize & (capacity - 1);
            while index[i] != FREE {
                i = (i + 1) & (capacity - 1);
            }
            index[i] = pos as u32;
        }
        self.index = index.into();
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
                Err(i) => {
                    self.attributes.insert(i, Attribute::new(name, value));
                    self.reindex();
                }
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
            index: Box::default(),
        };
        // The map's names are distinct: sort once and index once, not per attribute.
        for (name, value) in w.attributes {
            match (name.as_str(), value) {
                ("key", Value::String(s)) => ctx.key = Some(s),
                ("kind", Value::String(s)) => ctx.kind = Some(s),
                (_, value) => ctx.attributes.push(Attribute::new(name, value)),
            }
        }
        ctx.attributes.sort_by(|a, b| a.name.cmp(&b.name));
        ctx.reindex();
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
    fn the_hash_index_finds_every_attribute_and_no_other() {
        let mut c = Context::new("u");
        for i in 0..300 {
            c.set(format!("attr-{i}"), i);
            // Replacing a value keeps the index.
            c.set(format!("attr-{}", i / 2), i / 2);
        }
        let wire: Context = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        for ctx in [&c, &wire] {
            for i in 0..300 {
                let name = format!("attr-{i}");
                let got = ctx.attribute_by(&AttributeName::new(&name));
                assert_eq!(got, Some(&json!(i)), "{name}");
                assert_eq!(got, ctx.attribute(&name));
            }
            for name in [
                "attr-300",
                "attr-",
                "",
                "attr-1\0",
                "attr-1-and-more-than-16",
            ] {
                assert_eq!(ctx.attribute_by(&AttributeName::new(name)), None);
            }
        }
        assert_eq!(
            Context::new("k").attribute_by(&AttributeName::new("a")),
            None
        );
        assert_ne!(
            Context::attribute_hash("ab"),
            Context::attribute_hash("ab\0")
        );
        // Names longer than 16 bytes that agree in hash-independent parts are still told
        // apart by the full comparison.
        let long = Context::builder("k")
            .set("a-long-attribute-name-1", 1)
            .set("a-long-attribute-name-2", 2)
            .build();
        assert_eq!(
            long.attribute_by(&AttributeName::new("a-long-attribute-name-2")),
            Some(&json!(2))
        );
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
