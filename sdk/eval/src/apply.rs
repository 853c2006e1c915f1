//! [`CompiledSnapshot::apply`]: a stream change (`patch`, `delete` or `delta`) applied to a compiled
//! snapshot, in version order. The one implementation behind the control plane's change
//! feed, the edge relay's upstream client and the SDK's store.

use vexil_schema::stream::{Change, Delete, Delta, DeltaItem, ItemRef, Patch, PatchItem};

use crate::CompiledSnapshot;

/// Why a change was not applied. Nothing is applied in either case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The change is at or below the version held: a duplicate or a replay, already applied.
    #[error("change at version {got} is not after the version held ({current})")]
    Stale {
        /// The version held.
        current: u64,
        /// The change's version.
        got: u64,
    },
    /// The change skips versions: some change was missed, so a full snapshot is needed.
    #[error("change at version {got} skips versions after {current}")]
    Gap {
        /// The version held.
        current: u64,
        /// The change's version.
        got: u64,
    },
    /// A `delta` edits an item this snapshot does not hold: the sender's state and this one
    /// differ, so a full snapshot is needed.
    #[error("delta at version {version} edits {item:?}, which is absent")]
    Missing {
        /// The change's version.
        version: u64,
        /// The absent item.
        item: ItemRef,
    },
}

impl ApplyError {
    /// Whether the receiver must fetch a full snapshot to get back in step (`false` only for
    /// [`ApplyError::Stale`], a harmless duplicate).
    pub fn needs_resync(&self) -> bool {
        !matches!(self, ApplyError::Stale { .. })
    }
}

impl CompiledSnapshot {
    /// This snapshot with `change` applied: a patch adds or replaces a flag or segment, a
    /// delete removes one (a no-op if absent), a delta edits a segment's lists or a flag's
    /// targets by the canonical list rules ([`vexil_schema::delta`]; the item must be
    /// present), and the result is at the change's version,
    /// which must be the next one. Only the changed item is compiled; a malformed flag
    /// compiles into one that evaluates to `ERROR(MALFORMED)`, as in
    /// [`CompiledSnapshot::compile`].
    ///
    /// ```
    /// use vexil_eval::{ApplyError, CompiledSnapshot};
    /// use vexil_schema::stream::{Change, Delete, ItemRef};
    /// use vexil_schema::{EnvironmentSnapshot, FlagKey};
    ///
    /// let v1 = CompiledSnapshot::compile(&EnvironmentSnapshot { version: 1, ..Default::default() });
    /// let delete = |version| Change::Delete(Delete {
    ///     version,
    ///     item: ItemRef::Flag(FlagKey::parse("gone").unwrap()),
    /// });
    /// assert_eq!(v1.apply(&delete(2)).unwrap().version(), 2);
    /// assert_eq!(v1.apply(&delete(1)).unwrap_err(), ApplyError::Stale { current: 1, got: 1 });
    /// assert_eq!(v1.apply(&delete(3)).unwrap_err(), ApplyError::Gap { current: 1, got: 3 });
    /// ```
    pub fn apply(&self, change: &Change) -> Result<Self, ApplyError> {
        self.apply_version(std::slice::from_ref(change))
    }

    /// This snapshot with the changes of one version applied in order (one write can change
    /// several items, e.g. a flag and the segment it references). Every change must carry
    /// the next version; an empty slice leaves the snapshot as it is.
    pub fn apply_version(&self, changes: &[Change]) -> Result<Self, ApplyError> {
        let current = self.version;
        if let Some(change) = changes.iter().find(|c| c.version() != current + 1) {
            let got = change.version();
            return Err(if got <= current {
                ApplyError::Stale { current, got }
            } else {
                ApplyError::Gap { current, got }
            });
        }
        let mut next: Option<Self> = None;
        for change in changes {
            let base = next.as_ref().unwrap_or(self);
            next = Some(base.apply_unchecked(change)?);
        }
        Ok(next.unwrap_or_else(|| self.clone()))
    }

    fn apply_unchecked(&self, change: &Change) -> Result<Self, ApplyError> {
        Ok(match change {
            Change::Patch(Patch { version, item }) => match item {
                PatchItem::Flag(f) => self.with_flag(f.clone(), *version),
                PatchItem::Segment(s) => self.with_segment(s.clone(), *version),
            },
            Change::Delete(Delete { version, item }) => match item {
                ItemRef::Flag(k) => self.without_flag(k.as_str(), *version),
                ItemRef::Segment(k) => self.without_segment(k.as_str(), *version),
            },
            Change::Delta(Delta { version, item }) => {
                let missing = || ApplyError::Missing {
                    version: *version,
                    item: item.item_ref(),
                };
                match item {
                    DeltaItem::Segment(d) => {
                        self.with_segment_delta(d, *version).ok_or_else(missing)?
                    }
                    DeltaItem::FlagTargets(d) => {
                        let mut flag = self.flag(d.key.as_str()).ok_or_else(missing)?.clone();
                        d.apply(&mut flag);
                        self.with_flag(flag, *version)
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vexil_schema::stream::{Change, Delete, ItemRef, Patch, PatchItem};
    use vexil_schema::{
        Context, EnvironmentSnapshot, ErrorKind, Flag, FlagKey, Reason, Segment, SegmentKey,
    };

    use super::*;

    fn flag(key: &str, value: bool) -> Flag {
        serde_json::from_value(json!({
            "key": key, "kind": "boolean",
            "variations": [{"value": true}, {"value": false}],
            "on": true, "off_variation": 1,
            "fallthrough": {"variation": if value { 0 } else { 1 }}
        }))
        .unwrap()
    }

    fn patch(version: u64, f: Flag) -> Change {
        Change::Patch(Patch {
            version,
            item: PatchItem::Flag(f),
        })
    }

    fn delete_flag(version: u64, key: &str) -> Change {
        Change::Delete(Delete {
            version,
            item: ItemRef::Flag(FlagKey::parse(key).unwrap()),
        })
    }

    fn at(version: u64, flags: Vec<Flag>) -> CompiledSnapshot {
        CompiledSnapshot::compile(&EnvironmentSnapshot {
            version,
            flags,
            ..Default::default()
        })
    }

    fn value(s: &CompiledSnapshot, key: &str) -> Option<bool> {
        s.evaluate(key, &Context::new("u1"))
            .value
            .and_then(|v| v.as_bool())
    }

    #[test]
    fn a_patch_adds_a_flag_at_the_next_version() {
        let next = at(1, vec![]).apply(&patch(2, flag("a", true))).unwrap();
        assert_eq!(next.version(), 2);
        assert_eq!(value(&next, "a"), Some(true));
    }

    #[test]
    fn a_patch_replaces_a_flag_and_keeps_the_others() {
        let old = at(4, vec![flag("a", true), flag("b", true)]);
        let next = old.apply(&patch(5, flag("a", false))).unwrap();
        assert_eq!(value(&next, "a"), Some(false));
        assert_eq!(value(&next, "b"), Some(true));
        assert_eq!(
            value(&old, "a"),
            Some(true),
            "the old snapshot is untouched"
        );
        assert_eq!(next.flag_keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn a_delete_removes_a_flag_and_an_absent_one_is_a_no_op() {
        let old = at(1, vec![flag("a", true), flag("b", true)]);
        let next = old.apply(&delete_flag(2, "a")).unwrap();
        assert!(next.flag("a").is_none());
        assert_eq!(value(&next, "b"), Some(true));
        let again = next.apply(&delete_flag(3, "a")).unwrap();
        assert_eq!(again.version(), 3);
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn segments_are_patched_and_deleted() {
        let mut targeted = flag("t", false);
        targeted.config = serde_json::from_value(json!({
            "on": true, "off_variation": 1, "fallthrough": {"variation": 1},
            "rules": [{"id": "r", "clauses": [{"attribute": "", "op": "segment_match",
                                    "values": ["beta"]}],
                       "serve": {"variation": 0}}]
        }))
        .unwrap();
        let segment: Segment =
            serde_json::from_value(json!({"key": "beta", "included": ["u1"]})).unwrap();
        let s = at(1, vec![targeted]);
        assert_eq!(value(&s, "t"), Some(false));
        let s = s
            .apply(&Change::Patch(Patch {
                version: 2,
                item: PatchItem::Segment(segment),
            }))
            .unwrap();
        assert_eq!(value(&s, "t"), Some(true), "the rule now matches");
        let s = s
            .apply(&Change::Delete(Delete {
                version: 3,
                item: ItemRef::Segment(SegmentKey::parse("beta").unwrap()),
            }))
            .unwrap();
        assert!(s.segment("beta").is_none());
        assert_eq!(value(&s, "t"), Some(false));
    }

    #[test]
    fn duplicates_and_gaps_are_refused_and_change_nothing() {
        let s = at(5, vec![flag("a", true)]);
        for (v, want) in [
            (5, ApplyError::Stale { current: 5, got: 5 }),
            (3, ApplyError::Stale { current: 5, got: 3 }),
            (7, ApplyError::Gap { current: 5, got: 7 }),
        ] {
            assert_eq!(s.apply(&patch(v, flag("a", false))).unwrap_err(), want);
        }
        assert_eq!(value(&s, "a"), Some(true));
    }

    #[test]
    fn the_changes_of_one_version_apply_together_or_not_at_all() {
        let s = at(1, vec![flag("a", true)]);
        let both = s
            .apply_version(&[patch(2, flag("a", false)), patch(2, flag("b", true))])
            .unwrap();
        assert_eq!(both.version(), 2);
        assert_eq!(
            (value(&both, "a"), value(&both, "b")),
            (Some(false), Some(true))
        );
        let mixed = s.apply_version(&[patch(2, flag("b", true)), patch(3, flag("c", true))]);
        assert_eq!(mixed.unwrap_err(), ApplyError::Gap { current: 1, got: 3 });
        assert_eq!(s.apply_version(&[]).unwrap().version(), 1);
    }

    #[test]
    fn a_malformed_flag_applies_and_evaluates_to_an_error() {
        let mut bad = flag("bad", true);
        bad.config = serde_json::from_value(json!({
            "on": true, "off_variation": 1, "fallthrough": {"variation": 9}
        }))
        .unwrap();
        let s = at(1, vec![flag("good", true)])
            .apply(&patch(2, bad))
            .unwrap();
        let eval = s.evaluate("bad", &Context::new("u1"));
        assert!(eval.value.is_none());
        assert_eq!(
            eval.to_reason(),
            Reason::Error {
                error_kind: ErrorKind::Malformed
            }
        );
        assert_eq!(value(&s, "good"), Some(true));
    }
}
