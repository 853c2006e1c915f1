//! Incremental edits of key lists: a segment's `included`/`excluded` lists and a flag's
//! individual targets, as the stream carries them (`delta` / `env-delta` events) and as the
//! server stores them.
//!
//! # Canonical list semantics (v1)
//!
//! One definition, used by the server when it stores an edit and by every receiver when it
//! applies the delta, so that a list edited by deltas equals the stored list exactly, order
//! included ([`ListDelta::apply`]):
//!
//! 1. every key in `remove` is taken out of the list; the remaining keys keep their order;
//! 2. then every key in `add` that is not in the list yet is appended, in `add`'s order (a
//!    key repeated in `add` is appended once; a key already present stays where it is).
//!
//! A flag's targets ([`TargetsDelta::apply`]): each entry edits the target of its
//! `variation` (the first target serving it) by the list rules above; an entry for a
//! variation with no target appends a new target `{variation, values: added}`; a target left
//! with no values is dropped. Entries apply in order.
//!
//! The deltas the server sends are *effective*: `add` holds only keys that were absent and
//! `remove` only keys that were present, so a delta never names a key twice and applying it
//! to the list it was computed from changes exactly what it says.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::KeyList;
use crate::key::{FlagKey, SegmentKey};
use crate::model::{Flag, Segment, Target};

/// Keys added to and removed from one list. Both default to empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListDelta {
    /// Keys to append (those not present yet), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Keys to take out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Past this many keys to add, membership is tested with a hash set of the list instead of
/// a scan per key.
const SCAN_LIMIT: usize = 8;

impl ListDelta {
    /// Whether the delta names no key.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the delta to `list` (a `Vec<String>` or a [`KeyList`]) by the canonical
    /// rules (module documentation). Returns the *effective* delta: the keys actually
    /// appended and actually removed.
    pub fn apply<L: EditList>(&self, list: &mut L) -> ListDelta {
        let mut effective = ListDelta::default();
        if !self.remove.is_empty() {
            let remove: HashSet<&str> = self.remove.iter().map(String::as_str).collect();
            list.retain_keys(|k| {
                let gone = remove.contains(k);
                if gone {
                    effective.remove.push(k.to_owned());
                }
                !gone
            });
        }
        if !self.add.is_empty() {
            let start = list.key_count();
            let fresh: Vec<&String> = if self.add.len() <= SCAN_LIMIT {
                let mut fresh: Vec<&String> = Vec::new();
                for key in &self.add {
                    let present = (0..list.key_count()).any(|i| list.key_at(i) == key);
                    if !present && !fresh.contains(&key) {
                        fresh.push(key);
                    }
                }
                fresh
            } else {
                let present: HashSet<&str> =
                    (0..list.key_count()).map(|i| list.key_at(i)).collect();
                let mut seen: HashSet<&str> = HashSet::with_capacity(self.add.len());
                self.add
                    .iter()
                    .filter(|k| !present.contains(k.as_str()) && seen.insert(k.as_str()))
                    .collect()
            };
            for key in fresh {
                list.push_key(key);
            }
            effective
                .add
                .extend((start..list.key_count()).map(|i| list.key_at(i).to_owned()));
        }
        effective
    }
}

/// A list of keys a [`ListDelta`] edits: `Vec<String>` (a flag's target values) or
/// [`KeyList`] (a segment's lists). Sealed.
pub trait EditList: sealed::Sealed {
    /// The number of keys.
    fn key_count(&self) -> usize;
    /// The key at `index` (< `key_count()`).
    fn key_at(&self, index: usize) -> &str;
    /// Keeps the keys for which `keep` is true, in order.
    fn retain_keys(&mut self, keep: impl FnMut(&str) -> bool);
    /// Appends `key`.
    fn push_key(&mut self, key: &str);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for Vec<String> {}
    impl Sealed for crate::KeyList {}
}

impl EditList for Vec<String> {
    fn key_count(&self) -> usize {
        self.len()
    }
    fn key_at(&self, index: usize) -> &str {
        &self[index]
    }
    fn retain_keys(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.retain(|k| keep(k));
    }
    fn push_key(&mut self, key: &str) {
        self.push(key.to_owned());
    }
}

impl EditList for KeyList {
    fn key_count(&self) -> usize {
        self.len()
    }
    fn key_at(&self, index: usize) -> &str {
        self.get(index).unwrap_or("")
    }
    fn retain_keys(&mut self, keep: impl FnMut(&str) -> bool) {
        self.retain(keep);
    }
    fn push_key(&mut self, key: &str) {
        self.push(key);
    }
}

/// A delta to one segment's lists: `{"key", "version", "included": ListDelta, "excluded":
/// ListDelta}`. `version` is the segment's own version after the edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentDelta {
    /// The segment.
    pub key: SegmentKey,
    /// The segment's version after the edit ([`Segment::version`]).
    #[serde(default)]
    pub version: u64,
    /// Edit of `included`.
    #[serde(default, skip_serializing_if = "ListDelta::is_empty")]
    pub included: ListDelta,
    /// Edit of `excluded`.
    #[serde(default, skip_serializing_if = "ListDelta::is_empty")]
    pub excluded: ListDelta,
}

impl SegmentDelta {
    /// Applies the delta to `segment` (whose key the caller has matched) and sets its
    /// version. Returns the effective delta.
    pub fn apply(&self, segment: &mut Segment) -> SegmentDelta {
        segment.version = self.version;
        SegmentDelta {
            key: self.key.clone(),
            version: self.version,
            included: self.included.apply(&mut segment.included),
            excluded: self.excluded.apply(&mut segment.excluded),
        }
    }

    /// Whether the delta names no key.
    pub fn is_empty(&self) -> bool {
        self.included.is_empty() && self.excluded.is_empty()
    }
}

/// A delta to the target of one variation: `{"variation", "add", "remove"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetDelta {
    /// The variation whose target list is edited.
    pub variation: usize,
    /// The keys added and removed.
    #[serde(flatten)]
    pub keys: ListDelta,
}

/// A delta to a flag's individual targets in one environment: `{"key", "version",
/// "targets": [TargetDelta]}`. `version` is the flag configuration's version after the edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetsDelta {
    /// The flag.
    pub key: FlagKey,
    /// The configuration's version after the edit ([`crate::FlagConfig::version`]).
    #[serde(default)]
    pub version: u64,
    /// Edits, one per variation, applied in order.
    pub targets: Vec<TargetDelta>,
}

impl TargetsDelta {
    /// Applies the delta to `flag`'s targets (the caller has matched the key) by the
    /// canonical rules, and sets the configuration's version. Returns the effective delta
    /// (entries that changed nothing left out).
    pub fn apply(&self, flag: &mut Flag) -> TargetsDelta {
        flag.config.version = self.version;
        let targets = &mut flag.config.targets;
        let mut effective = Vec::new();
        for edit in &self.targets {
            let done = match targets
                .iter_mut()
                .position(|t| t.variation == edit.variation)
            {
                Some(i) => {
                    let done = edit.keys.apply(&mut targets[i].values);
                    if targets[i].values.is_empty() {
                        targets.remove(i);
                    }
                    done
                }
                None => {
                    let mut values = Vec::new();
                    let done = ListDelta {
                        add: edit.keys.add.clone(),
                        remove: Vec::new(),
                    }
                    .apply(&mut values);
                    if !values.is_empty() {
                        targets.push(Target {
                            variation: edit.variation,
                            values,
                        });
                    }
                    done
                }
            };
            if !done.is_empty() {
                effective.push(TargetDelta {
                    variation: edit.variation,
                    keys: done,
                });
            }
        }
        TargetsDelta {
            key: self.key.clone(),
            version: self.version,
            targets: effective,
        }
    }

    /// Whether the delta names no key.
    pub fn is_empty(&self) -> bool {
        self.targets.iter().all(|t| t.keys.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    fn delta(add: &[&str], remove: &[&str]) -> ListDelta {
        ListDelta {
            add: list(add),
            remove: list(remove),
        }
    }

    #[test]
    fn removal_keeps_order_and_additions_append_once() {
        let mut l = list(&["a", "b", "c", "d"]);
        let eff = delta(&["e", "b", "e", "f"], &["c", "x", "a"]).apply(&mut l);
        assert_eq!(l, list(&["b", "d", "e", "f"]));
        assert_eq!(eff, delta(&["e", "f"], &["a", "c"]));
        // Idempotent: applying again changes nothing.
        let again = delta(&["e", "b", "e", "f"], &["c", "x", "a"]).apply(&mut l);
        assert_eq!(l, list(&["b", "d", "e", "f"]));
        assert!(again.is_empty());
    }

    #[test]
    fn many_additions_use_a_set_with_the_same_result() {
        let adds: Vec<String> = (0..20).map(|i| format!("k{}", i % 12)).collect();
        let mut l = list(&["k3", "z"]);
        ListDelta {
            add: adds,
            remove: vec![],
        }
        .apply(&mut l);
        let want: Vec<String> = std::iter::once("k3".to_owned())
            .chain(std::iter::once("z".to_owned()))
            .chain((0..12).filter(|i| *i != 3).map(|i| format!("k{i}")))
            .collect();
        assert_eq!(l, want);
    }

    #[test]
    fn removing_then_adding_the_same_key_moves_it_to_the_end() {
        let mut l = list(&["a", "b"]);
        delta(&["a"], &["a"]).apply(&mut l);
        assert_eq!(l, list(&["b", "a"]));
    }

    #[test]
    fn target_deltas_edit_append_and_drop_targets() {
        let mut f: Flag = serde_json::from_value(json!({
            "key": "f", "kind": "boolean", "variations": [{"value": true}, {"value": false}],
            "off_variation": 1, "fallthrough": {"variation": 1},
            "targets": [{"variation": 0, "values": ["a"]}, {"variation": 1, "values": ["b"]}]
        }))
        .unwrap();
        let d = TargetsDelta {
            key: FlagKey::parse("f").unwrap(),
            version: 9,
            targets: vec![
                TargetDelta {
                    variation: 0,
                    keys: delta(&[], &["a"]),
                },
                TargetDelta {
                    variation: 1,
                    keys: delta(&["c", "b"], &[]),
                },
                TargetDelta {
                    variation: 2,
                    keys: delta(&["d"], &["zz"]),
                },
            ],
        };
        let eff = d.apply(&mut f);
        assert_eq!(f.config.version, 9);
        assert_eq!(
            serde_json::to_value(&f.config.targets).unwrap(),
            json!([{"variation": 1, "values": ["b", "c"]}, {"variation": 2, "values": ["d"]}])
        );
        assert_eq!(
            serde_json::to_value(&eff).unwrap(),
            json!({"key": "f", "version": 9, "targets": [
                {"variation": 0, "remove": ["a"]}, {"variation": 1, "add": ["c"]},
                {"variation": 2, "add": ["d"]}]})
        );
    }

    #[test]
    fn segment_delta_wire_form() {
        let d: SegmentDelta = serde_json::from_value(json!({
            "key": "enterprise", "version": 5, "included": {"add": ["u1"], "remove": ["u2"]}
        }))
        .unwrap();
        assert!(d.excluded.is_empty());
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"key": "enterprise", "version": 5, "included": {"add": ["u1"], "remove": ["u2"]}})
        );
    }
}
