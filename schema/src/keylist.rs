//! [`KeyList`]: an ordered list of context keys held compactly, as a segment's `included` and
//! `excluded` lists are (up to a million keys each).
//!
//! A `Vec<String>` costs 24 bytes per key plus a heap allocation of its own (32 bytes for a
//! 15-byte key under glibc), and decoding a list of a million keys allocates a million times;
//! the allocator then keeps that memory after the list is compiled and dropped. A `KeyList`
//! keeps every key's bytes back to back in one buffer and each key's end offset in another:
//! 4 bytes per key beyond the key's own bytes, two allocations in all. Deserialization feeds
//! each JSON string straight into the buffer (borrowed from the input, or from the parser's
//! scratch space when it has escapes), so decoding allocates nothing per key either.
//!
//! On the wire it is a JSON array of strings, exactly as a `Vec<String>` is.

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ordered list of strings (keys may repeat: validation, not the type, rejects that),
/// stored as one byte buffer and one end offset per key.
///
/// ```
/// use vexil_schema::KeyList;
///
/// let mut list = KeyList::from(vec!["acct-1", "acct-2"]);
/// list.push("acct-3");
/// list.retain(|k| k != "acct-2");
/// assert_eq!(list, vec!["acct-1", "acct-3"]);
/// assert_eq!(serde_json::to_string(&list).unwrap(), r#"["acct-1","acct-3"]"#);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyList {
    /// Every key's bytes, back to back.
    bytes: String,
    /// The end offset of each key in `bytes`; a key starts where the previous one ends.
    ends: Vec<u32>,
}

/// The list's bytes passed what a `u32` offset can address (4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key list's keys exceed 4 GiB in all")]
pub struct KeyListTooLarge;

impl KeyList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `keys` keys of `bytes` bytes in all.
    pub fn with_capacity(keys: usize, bytes: usize) -> Self {
        Self {
            bytes: String::with_capacity(bytes),
            ends: Vec::with_capacity(keys),
        }
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the list holds no key.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The keys' bytes in all (what the list holds beyond its 4 bytes per key).
    pub fn key_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The key at `index`, if any.
    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)? as usize;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize,
        };
        self.bytes.get(start..end)
    }

    /// The first key, if any.
    pub fn first(&self) -> Option<&str> {
        self.get(0)
    }

    /// The last key, if any.
    pub fn last(&self) -> Option<&str> {
        self.get(self.len().checked_sub(1)?)
    }

    /// The keys, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            list: self,
            front: 0,
            back: self.len(),
        }
    }

    /// Whether `key` is in the list (a linear scan).
    pub fn contains(&self, key: &str) -> bool {
        self.iter().any(|k| k == key)
    }

    /// Appends `key`, or says the list's bytes would pass 4 GiB (and leaves it unchanged).
    pub fn try_push(&mut self, key: &str) -> Result<(), KeyListTooLarge> {
        let end = u32::try_from(self.bytes.len() + key.len()).map_err(|_| KeyListTooLarge)?;
        self.bytes.push_str(key);
        self.ends.push(end);
        Ok(())
    }

    /// Appends `key`.
    ///
    /// # Panics
    ///
    /// If the list's bytes would pass 4 GiB (as `Vec` panics past its capacity limit);
    /// [`KeyList::try_push`] reports it instead.
    pub fn push(&mut self, key: &str) {
        if self.try_push(key).is_err() {
            panic!("{KeyListTooLarge}");
        }
    }

    /// Keeps only the keys for which `keep` is true, in order (in place, one pass).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let mut buf = std::mem::take(&mut self.bytes).into_bytes();
        let mut write = 0usize; // bytes kept so far
        let mut kept = 0usize; // keys kept so far
        let mut start = 0usize;
        for i in 0..self.ends.len() {
            let end = self.ends[i] as usize;
            let key = std::str::from_utf8(&buf[start..end]).unwrap_or("");
            if keep(key) {
                buf.copy_within(start..end, write);
                write += end - start;
                // `write` ≤ the old end, which fitted in a u32.
                self.ends[kept] = write as u32;
                kept += 1;
            }
            start = end;
        }
        self.ends.truncate(kept);
        buf.truncate(write);
        // Whole keys were moved to key boundaries, so the bytes are still UTF-8; the lossy
        // fallback only keeps this free of a panic path.
        self.bytes = String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    }

    /// The keys as owned strings.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }

    /// Frees the spare capacity of the two buffers.
    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

/// The keys of a [`KeyList`], in order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    list: &'a KeyList,
    front: usize,
    back: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.front == self.back {
            return None;
        }
        let key = self.list.get(self.front);
        self.front += 1;
        key
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        self.list.get(self.back)
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a KeyList {
    type Item = &'a str;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<S: AsRef<str>> FromIterator<S> for KeyList {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut list = KeyList::new();
        list.extend(iter);
        list
    }
}

impl<S: AsRef<str>> Extend<S> for KeyList {
    fn extend<I: IntoIterator<Item = S>>(&mut self, iter: I) {
        for key in iter {
            self.push(key.as_ref());
        }
    }
}

impl<S: AsRef<str>> From<Vec<S>> for KeyList {
    fn from(keys: Vec<S>) -> Self {
        let bytes = keys.iter().map(|k| k.as_ref().len()).sum();
        let mut list = KeyList::with_capacity(keys.len(), bytes);
        list.extend(keys);
        list
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for KeyList {
    fn from(keys: [S; N]) -> Self {
        keys.into_iter().collect()
    }
}

impl From<&KeyList> for Vec<String> {
    fn from(list: &KeyList) -> Self {
        list.to_vec()
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for KeyList {
    fn eq(&self, other: &[S]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<S: AsRef<str>> PartialEq<Vec<S>> for KeyList {
    fn eq(&self, other: &Vec<S>) -> bool {
        *self == other[..]
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for KeyList {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}

impl fmt::Debug for KeyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for KeyList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for KeyList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ListVisitor)
    }
}

/// Reads a JSON array of strings into a [`KeyList`].
struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = KeyList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyList, A::Error> {
        // The hint comes from the input: cap what it may reserve.
        let mut list = KeyList::with_capacity(seq.size_hint().unwrap_or(0).min(4096), 0);
        while seq.next_element_seed(KeySeed(&mut list))?.is_some() {}
        Ok(list)
    }
}

/// Appends one string element to the list it holds, without allocating it on its own.
struct KeySeed<'l>(&'l mut KeyList);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        self.0.try_push(key).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_a_json_array() {
        let list: KeyList =
            serde_json::from_str(r#"["a", "b\"c", "\u00e9t\u00e9", "", "a"]"#).unwrap();
        assert_eq!(list, vec!["a", "b\"c", "été", "", "a"]);
        assert_eq!(list.len(), 5);
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, r#"["a","b\"c","été","","a"]"#);
        assert_eq!(serde_json::from_str::<KeyList>(&json).unwrap(), list);
        // From a `Value` (owned strings) as well as from text (borrowed).
        let v = serde_json::json!(["x", "y"]);
        assert_eq!(serde_json::from_value::<KeyList>(v).unwrap(), ["x", "y"]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            r#"["a", 1]"#,
            r#"{"a": 1}"#,
            r#""a""#,
            "null",
            r#"["a""#,
            "[[]]",
        ] {
            assert!(serde_json::from_str::<KeyList>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retain_keeps_order_and_compacts() {
        let mut list = KeyList::from(vec!["one", "two", "three", "four", "five"]);
        list.retain(|k| k.len() != 3);
        assert_eq!(list, vec!["three", "four", "five"]);
        assert_eq!(list.key_bytes(), 13);
        list.retain(|k| k != "four");
        assert_eq!(list, vec!["three", "five"]);
        list.push("six");
        assert_eq!(list, vec!["three", "five", "six"]);
        list.retain(|_| false);
        assert!(list.is_empty());
        assert_eq!(list, KeyList::new());
    }

    #[test]
    fn iterates_both_ways_and_indexes() {
        let list: KeyList = ["a", "bb", "ccc"].into();
        assert_eq!(list.iter().rev().collect::<Vec<_>>(), ["ccc", "bb", "a"]);
        assert_eq!(list.iter().len(), 3);
        assert_eq!(list.get(1), Some("bb"));
        assert_eq!(list.get(3), None);
        assert_eq!((list.first(), list.last()), (Some("a"), Some("ccc")));
        assert_eq!(KeyList::new().last(), None);
        assert!(list.contains("ccc") && !list.contains("c"));
        assert_eq!(list.to_vec(), vec!["a", "bb", "ccc"]);
        assert_eq!(format!("{list:?}"), r#"["a", "bb", "ccc"]"#);
    }
}
