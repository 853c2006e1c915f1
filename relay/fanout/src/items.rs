//! One environment's state as the fan-out engine keeps it: every flag and segment as its own
//! pre-encoded JSON, so a change re-encodes only the item that changed and the full `put`
//! frame is a concatenation of cached pieces.

use std::collections::BTreeMap;

use bytes::Bytes;
use vexil_schema::stream::{Change, Delete, ItemRef, Patch, PatchItem, event};
use vexil_schema::{EnvironmentSnapshot, FlagKey, SegmentKey};

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
}

/// Every item of an environment at one version, each encoded once.
#[derive(Debug, Default)]
pub(crate) struct Items {
    version: u64,
    flags: BTreeMap<FlagKey, Bytes>,
    segments: BTreeMap<SegmentKey, Bytes>,
}

impl Items {
    /// Encodes every item of `snapshot`. Items sharing a key keep the last one.
    pub(crate) fn from_snapshot(snapshot: &EnvironmentSnapshot) -> Result<Self, EncodeError> {
        let mut items = Items {
            version: snapshot.version,
            ..Items::default()
        };
        for flag in &snapshot.flags {
            items
                .flags
                .insert(flag.key.clone(), serde_json::to_vec(flag)?.into());
        }
        for segment in &snapshot.segments {
            items
                .segments
                .insert(segment.key.clone(), serde_json::to_vec(segment)?.into());
        }
        Ok(items)
    }

    /// The version these items reflect.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The full `put` frame: `{"version":V,"flags":[...],"segments":[...]}`, flags and
    /// segments in key order.
    pub(crate) fn put_frame(&self) -> Result<Frame, EncodeError> {
        let head = format!("{{\"version\":{},\"flags\":[", self.version);
        let mut parts: Vec<&[u8]> =
            Vec::with_capacity(4 + 2 * (self.flags.len() + self.segments.len()));
        parts.push(head.as_bytes());
        push_joined(&mut parts, self.flags.values());
        parts.push(b"],\"segments\":[");
        push_joined(&mut parts, self.segments.values());
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
        let frame = match change {
            Change::Patch(Patch { item, .. }) => {
                let (field, json): (&[u8], Bytes) = match item {
                    PatchItem::Flag(f) => (b"\"flag\":", serde_json::to_vec(f)?.into()),
                    PatchItem::Segment(s) => (b"\"segment\":", serde_json::to_vec(s)?.into()),
                };
                let head = format!("{{\"version\":{version},");
                let frame =
                    Frame::encode(event::PATCH, &id, &[head.as_bytes(), field, &json, b"}"])?;
                match item {
                    PatchItem::Flag(f) => self.flags.insert(f.key.clone(), json),
                    PatchItem::Segment(s) => self.segments.insert(s.key.clone(), json),
                };
                frame
            }
            Change::Delete(d) => {
                let frame = Frame::encode(event::DELETE, &id, &[&serde_json::to_vec(d)?])?;
                let Delete { item, .. } = d;
                match item {
                    ItemRef::Flag(k) => self.flags.remove(k),
                    ItemRef::Segment(k) => self.segments.remove(k),
                };
                frame
            }
        };
        self.version = version;
        Ok(frame)
    }
}

fn push_joined<'a>(parts: &mut Vec<&'a [u8]>, items: impl Iterator<Item = &'a Bytes>) {
    for (i, json) in items.enumerate() {
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
    use vexil_schema::{Flag, FlagConfig, FlagKind, Segment, Variation};

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
