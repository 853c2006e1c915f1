//! One environment's state as the fan-out engine keeps it: every flag and segment as its own
//! pre-encoded JSON, so a change re-encodes only the item that changed and the full `put`
//! frame is a concatenation of cached pieces.
//!
//! Items are shared, not copied: the maps sit behind `Arc`s and each item is an `Arc`, so
//! the state of one version ([`Items`] is cheap to clone) stays readable by the `put` built
//! for it while the next change edits a copy of the map (one `Arc` per item, not the JSON).
//!
//! A `delta` (keys added to or removed from a large list) is not folded into the item's JSON
//! when it is published: the item keeps its last encoded JSON and the deltas since, and the
//! JSON with them applied is built the first time something needs it (a `put` for a new or
//! resynchronised subscriber, the snapshot endpoint). A one-key edit of a 100,000-key segment
//! thus costs the publisher O(keys edited), not a decode and re-encode of the whole list.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use vexil_schema::stream::{Change, Delete, Delta, DeltaItem, ItemRef, Patch, PatchItem, event};
use vexil_schema::{EnvironmentSnapshot, Flag, FlagKey, Segment, SegmentKey};

use crate::frame::{Frame, FrameError};

/// Why a snapshot or change could not be encoded. Never expected with the schema's types;
/// reported rather than panicking all the same.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// JSON serialisation failed.
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
    /// The encoded JSON or id would break SSE framing.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A `delta` edits an item the environment does not hold: the publisher's state and the
    /// hub's differ, so it must publish a full snapshot.
    #[error("a delta edits {0:?}, which is absent")]
    Missing(ItemRef),
}

/// Past this many deltas waiting on one item, they are folded into its JSON at publish time,
/// so an item nobody reads whole never accumulates an unbounded history.
const MAX_PENDING: usize = 64;

/// One flag or segment: its JSON at some version and the deltas applied since.
#[derive(Debug)]
pub(crate) struct Item {
    /// The item's JSON before `pending`.
    base: Bytes,
    /// Deltas published after `base`, oldest first; all edit this item.
    pending: Vec<Arc<DeltaItem>>,
    /// `base` with `pending` applied, built on first need (`None`: it could not be built,
    /// which the schema's types never cause).
    folded: OnceLock<Option<Bytes>>,
}

impl Item {
    fn encoded(json: Bytes) -> Arc<Self> {
        Arc::new(Self {
            base: json,
            pending: Vec::new(),
            folded: OnceLock::new(),
        })
    }

    /// The item's current JSON, applying the pending deltas the first time it is asked for.
    fn json(&self) -> Result<Bytes, EncodeError> {
        if self.pending.is_empty() {
            return Ok(self.base.clone());
        }
        if let Some(Some(json)) = self.folded.get() {
            return Ok(json.clone());
        }
        let built = self.fold();
        let kept = self.folded.get_or_init(|| built.as_ref().ok().cloned());
        match (kept, built) {
            (Some(json), _) => Ok(json.clone()),
            (None, Err(e)) => Err(e),
            (None, Ok(json)) => Ok(json),
        }
    }

    /// Decodes `base`, applies every pending delta in order, encodes the result.
    fn fold(&self) -> Result<Bytes, EncodeError> {
        let Some(first) = self.pending.first() else {
            return Ok(self.base.clone());
        };
        let json = match &**first {
            DeltaItem::Segment(_) => {
                let mut segment: Segment = serde_json::from_slice(&self.base)?;
                for d in &self.pending {
                    if let DeltaItem::Segment(sd) = &**d {
                        sd.apply(&mut segment);
                    }
                }
                serde_json::to_vec(&segment)?
            }
            DeltaItem::FlagTargets(_) => {
                let mut flag: Flag = serde_json::from_slice(&self.base)?;
                for d in &self.pending {
                    if let DeltaItem::FlagTargets(td) = &**d {
                        td.apply(&mut flag);
                    }
                }
                serde_json::to_vec(&flag)?
            }
        };
        Ok(json.into())
    }

    /// This item with `delta` applied after it: O(pending), the JSON is not touched (unless
    /// [`MAX_PENDING`] deltas are waiting: then they are folded now).
    fn with_delta(&self, delta: Arc<DeltaItem>) -> Result<Arc<Self>, EncodeError> {
        let (base, mut pending) = match self.folded.get() {
            Some(Some(json)) => (json.clone(), Vec::with_capacity(1)),
            _ => (self.base.clone(), self.pending.clone()),
        };
        pending.push(delta);
        let item = Self {
            base,
            pending,
            folded: OnceLock::new(),
        };
        if item.pending.len() >= MAX_PENDING {
            return Ok(Self::encoded(item.fold()?));
        }
        Ok(Arc::new(item))
    }
}

/// Every item of an environment at one version. Cheap to clone: clones share every item.
#[derive(Debug, Default, Clone)]
pub(crate) struct Items {
    version: u64,
    flags: Arc<BTreeMap<FlagKey, Arc<Item>>>,
    segments: Arc<BTreeMap<SegmentKey, Arc<Item>>>,
}

impl Items {
    /// Encodes every item of `snapshot`. Items sharing a key keep the last one.
    pub(crate) fn from_snapshot(snapshot: &EnvironmentSnapshot) -> Result<Self, EncodeError> {
        let mut flags = BTreeMap::new();
        for flag in &snapshot.flags {
            flags.insert(
                flag.key.clone(),
                Item::encoded(serde_json::to_vec(flag)?.into()),
            );
        }
        let mut segments = BTreeMap::new();
        for segment in &snapshot.segments {
            segments.insert(
                segment.key.clone(),
                Item::encoded(serde_json::to_vec(segment)?.into()),
            );
        }
        Ok(Items {
            version: snapshot.version,
            flags: Arc::new(flags),
            segments: Arc::new(segments),
        })
    }

    /// The version these items reflect.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The full `put` frame: `{"version":V,"flags":[...],"segments":[...]}`, flags and
    /// segments in key order. Folds the deltas still pending on any item (once per item and
    /// version: later calls and later versions reuse the result).
    pub(crate) fn put_frame(&self) -> Result<Frame, EncodeError> {
        let flags = jsons(self.flags.values())?;
        let segments = jsons(self.segments.values())?;
        let head = format!("{{\"version\":{},\"flags\":[", self.version);
        let mut parts: Vec<&[u8]> = Vec::with_capacity(4 + 2 * (flags.len() + segments.len()));
        parts.push(head.as_bytes());
        push_joined(&mut parts, &flags);
        parts.push(b"],\"segments\":[");
        push_joined(&mut parts, &segments);
        parts.push(b"]}");
        Ok(Frame::encode(
            event::PUT,
            &self.version.to_string(),
            &parts,
        )?)
    }

    /// Applies `change` (whose version the caller has checked) and returns its SSE frame.
    pub(crate) fn apply(&mut self, change: &Change) -> Result<Frame, EncodeError> {
        let version = change.version();
        let id = version.to_string();
        let frame =
            match change {
                Change::Patch(Patch { item, .. }) => {
                    let (field, json): (&[u8], Bytes) = match item {
                        PatchItem::Flag(f) => (b"\"flag\":", serde_json::to_vec(f)?.into()),
                        PatchItem::Segment(s) => (b"\"segment\":", serde_json::to_vec(s)?.into()),
                    };
                    let head = format!("{{\"version\":{version},");
                    let frame =
                        Frame::encode(event::PATCH, &id, &[head.as_bytes(), field, &json, b"}"])?;
                    match item {
                        PatchItem::Flag(f) => Arc::make_mut(&mut self.flags)
                            .insert(f.key.clone(), Item::encoded(json)),
                        PatchItem::Segment(s) => Arc::make_mut(&mut self.segments)
                            .insert(s.key.clone(), Item::encoded(json)),
                    };
                    frame
                }
                Change::Delete(d) => {
                    let frame = Frame::encode(event::DELETE, &id, &[&serde_json::to_vec(d)?])?;
                    let Delete { item, .. } = d;
                    match item {
                        ItemRef::Flag(k) => Arc::make_mut(&mut self.flags).remove(k),
                        ItemRef::Segment(k) => Arc::make_mut(&mut self.segments).remove(k),
                    };
                    frame
                }
                Change::Delta(d) => {
                    // Subscribers are sent only the small delta frame; the item records the
                    // delta and folds it into its JSON when a `put` first needs it.
                    let Delta { item, .. } = d;
                    let missing = || EncodeError::Missing(item.item_ref());
                    let pending = Arc::new(item.clone());
                    let edited = match item {
                        DeltaItem::Segment(sd) => self.segments.get(&sd.key),
                        DeltaItem::FlagTargets(td) => self.flags.get(&td.key),
                    }
                    .ok_or_else(missing)?
                    .with_delta(pending)?;
                    let frame = Frame::encode(event::DELTA, &id, &[&serde_json::to_vec(d)?])?;
                    match item {
                        DeltaItem::Segment(sd) => {
                            Arc::make_mut(&mut self.segments).insert(sd.key.clone(), edited)
                        }
                        DeltaItem::FlagTargets(td) => {
                            Arc::make_mut(&mut self.flags).insert(td.key.clone(), edited)
                        }
                    };
                    frame
                }
            };
        self.version = version;
        Ok(frame)
    }
}

fn jsons<'a>(items: impl Iterator<Item = &'a Arc<Item>>) -> Result<Vec<Bytes>, EncodeError> {
    items.map(|i| i.json()).collect()
}

fn push_joined<'a>(parts: &mut Vec<&'a [u8]>, jsons: &'a [Bytes]) {
    for (i, json) in jsons.iter().enumerate() {
        if i > 0 {
            parts.push(b",");
        }
        parts.push(json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vexil_schema::{FlagConfig, FlagKind, Variation};

    fn flag(key: &str, off: usize) -> Flag {
        Flag {
            key: FlagKey::parse(key).unwrap(),
            kind: FlagKind::Boolean,
            variations: vec![Variation::new(json!(true)), Variation::new(json!(false))],
            client_side: false,
            config: FlagConfig::serving(off),
        }
    }

    fn segment(key: &str) -> Segment {
        serde_json::from_value(json!({"key": key, "included": ["u1"]})).unwrap()
    }

    fn put_data(items: &Items) -> EnvironmentSnapshot {
        serde_json::from_slice(&items.put_frame().unwrap().data()).unwrap()
    }

    #[test]
    fn put_frame_is_the_snapshot_as_serde_would_write_it() {
        let snap = EnvironmentSnapshot {
            version: 4,
            flags: vec![flag("a", 0), flag("b", 1)],
            segments: vec![segment("s")],
        };
        let items = Items::from_snapshot(&snap).unwrap();
        let frame = items.put_frame().unwrap();
        let expected = format!(
            "event: put\nid: 4\ndata: {}\n\n",
            serde_json::to_string(&snap).unwrap()
        );
        assert_eq!(std::str::from_utf8(frame.bytes()).unwrap(), expected);
    }

    #[test]
    fn empty_snapshot_encodes_to_valid_json() {
        let items = Items::from_snapshot(&EnvironmentSnapshot::default()).unwrap();
        assert_eq!(
            items.put_frame().unwrap().data().as_ref(),
            br#"{"version":0,"flags":[],"segments":[]}"#
        );
    }

    /// The shared delta fixtures (`schema/testdata/delta`): the `put` after a delta holds
    /// exactly the item the fixture expects, and the delta frame is the delta alone.
    #[test]
    fn deltas_follow_the_shared_fixtures() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schema/testdata/delta/lists.json"
        );
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in file["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let mut snap = EnvironmentSnapshot {
                version: 1,
                ..Default::default()
            };
            if let Some(s) = case["before"].get("segment") {
                snap.segments
                    .push(serde_json::from_value(s.clone()).unwrap());
            } else {
                snap.flags
                    .push(serde_json::from_value(case["before"]["flag"].clone()).unwrap());
            }
            let mut items = Items::from_snapshot(&snap).unwrap();
            let delta = Change::Delta(Delta {
                version: 2,
                item: serde_json::from_value(case["delta"].clone()).unwrap(),
            });
            let frame = items.apply(&delta).unwrap();
            let text = std::str::from_utf8(frame.bytes()).unwrap();
            assert!(
                text.starts_with("event: delta\nid: 2\ndata: {\"version\":2,"),
                "{text}"
            );
            let after = put_data(&items);
            match case["after"].get("segment") {
                Some(s) => {
                    let want: Segment = serde_json::from_value(s.clone()).unwrap();
                    assert_eq!(after.segments, vec![want], "{name}");
                }
                None => {
                    let want: Flag = serde_json::from_value(case["after"]["flag"].clone()).unwrap();
                    assert_eq!(after.flags, vec![want], "{name}");
                }
            }
        }
        let missing = Change::Delta(Delta {
            version: 3,
            item: serde_json::from_value(json!({"segment": {"key": "nope"}})).unwrap(),
        });
        let mut items = Items::from_snapshot(&EnvironmentSnapshot::default()).unwrap();
        assert!(matches!(
            items.apply(&missing),
            Err(EncodeError::Missing(_))
        ));
    }

    fn one_key_delta(version: u64, add: &str, remove: &str) -> Change {
        Change::Delta(Delta {
            version,
            item: serde_json::from_value(json!({"segment": {"key": "s", "version": version,
                "included": {"add": [add], "remove": [remove]}}}))
            .unwrap(),
        })
    }

    /// A delta is recorded, not folded: the state of each version stays exact, including an
    /// older version's items still held (as a `put` built late for it holds them), and past
    /// `MAX_PENDING` waiting deltas they are folded at publish time.
    #[test]
    fn deltas_are_folded_lazily_and_every_version_stays_exact() {
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let seg: Segment = serde_json::from_value(json!({"key": "s", "included": keys})).unwrap();
        let mut items = Items::from_snapshot(&EnvironmentSnapshot {
            version: 1,
            flags: vec![],
            segments: vec![seg.clone()],
        })
        .unwrap();
        let mut expected = seg;
        let mut held = Vec::new();
        for v in 2..(2 + 2 * MAX_PENDING as u64) {
            let change = one_key_delta(v, &format!("new{v}"), &format!("k{v}"));
            let Change::Delta(Delta {
                item: DeltaItem::Segment(sd),
                ..
            }) = &change
            else {
                unreachable!()
            };
            sd.apply(&mut expected);
            items.apply(&change).unwrap();
            let pending = items.segments["s"].pending.len();
            assert!(
                pending < MAX_PENDING,
                "{pending} deltas waiting at version {v}"
            );
            if v % 17 == 0 {
                held.push((items.clone(), expected.clone()));
            }
        }
        assert_eq!(put_data(&items).segments, vec![expected]);
        for (old, want) in held {
            let snap = put_data(&old);
            assert_eq!(snap.version, want.version);
            assert_eq!(snap.segments, vec![want]);
        }
    }

    #[test]
    fn changes_update_state_and_encode_their_frames() {
        let mut items = Items::from_snapshot(&EnvironmentSnapshot {
            version: 1,
            flags: vec![flag("a", 0)],
            segments: vec![],
        })
        .unwrap();

        let patch = Change::Patch(Patch {
            version: 2,
            item: PatchItem::Flag(flag("a", 1)),
        });
        let frame = items.apply(&patch).unwrap();
        let text = std::str::from_utf8(frame.bytes()).unwrap();
        assert!(
            text.starts_with("event: patch\nid: 2\ndata: {\"version\":2,\"flag\":{"),
            "{text}"
        );
        let decoded: Patch = serde_json::from_slice(&frame.data()).unwrap();
        assert_eq!(Change::Patch(decoded), patch);

        items
            .apply(&Change::Patch(Patch {
                version: 3,
                item: PatchItem::Segment(segment("s")),
            }))
            .unwrap();
        let del = Change::Delete(Delete {
            version: 4,
            item: ItemRef::Flag(FlagKey::parse("a").unwrap()),
        });
        let frame = items.apply(&del).unwrap();
        assert_eq!(
            frame.bytes().as_ref(),
            b"event: delete\nid: 4\ndata: {\"version\":4,\"kind\":\"flag\",\"key\":\"a\"}\n\n"
        );

        let snap = put_data(&items);
        assert_eq!(snap.version, 4);
        assert!(snap.flags.is_empty());
        assert_eq!(snap.segments, vec![segment("s")]);
    }
}
