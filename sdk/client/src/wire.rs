//! Decoding of full snapshots, faster than through the schema's types.
//!
//! `vexil_schema::Flag` flattens its configuration into the flag's JSON object with
//! `#[serde(flatten)]`, which makes serde buffer every flag into an intermediate tree and
//! deserialise it a second time. A `put` of 10,000 flags then spends about a third of its
//! decoding time (and much of its allocator churn) on that buffering, on the path between
//! connecting and the first evaluation. [`WireFlag`] is the same object with the
//! configuration's fields inline: same field names, same defaults, same tolerance of unknown
//! fields. It is turned into a `Flag` with exhaustive struct literals, so a field added to
//! the schema fails to compile here rather than being silently dropped, and the tests
//! check that both decodings agree on every shared fixture.
//!
//! Changes (`patch`, one flag) are small and keep using the schema's decoding.

use serde::Deserialize;
use vexil_schema::stream::{SdkEvent, StreamError, event};
use vexil_schema::{
    EnvironmentSnapshot, Flag, FlagConfig, FlagKey, FlagKind, Prerequisite, Rule, Segment, Serve,
    Target, Variation,
};

/// A flag as it appears on the wire (see the module documentation).
#[derive(Deserialize)]
struct WireFlag {
    key: FlagKey,
    kind: FlagKind,
    variations: Vec<Variation>,
    #[serde(default)]
    client_side: bool,
    #[serde(default)]
    on: bool,
    off_variation: usize,
    #[serde(default)]
    targets: Vec<Target>,
    #[serde(default)]
    rules: Vec<Rule>,
    fallthrough: Serve,
    #[serde(default)]
    prerequisites: Vec<Prerequisite>,
    #[serde(default)]
    salt: String,
    #[serde(default)]
    version: u64,
}

impl From<WireFlag> for Flag {
    fn from(w: WireFlag) -> Flag {
        Flag {
            key: w.key,
            kind: w.kind,
            variations: w.variations,
            client_side: w.client_side,
            config: FlagConfig {
                on: w.on,
                off_variation: w.off_variation,
                targets: w.targets,
                rules: w.rules,
                fallthrough: w.fallthrough,
                prerequisites: w.prerequisites,
                salt: w.salt,
                version: w.version,
            },
        }
    }
}

/// An environment snapshot as it appears on the wire.
#[derive(Deserialize)]
pub(crate) struct WireSnapshot {
    #[serde(default)]
    version: u64,
    #[serde(default)]
    flags: Vec<WireFlag>,
    #[serde(default)]
    segments: Vec<Segment>,
}

impl From<WireSnapshot> for EnvironmentSnapshot {
    fn from(w: WireSnapshot) -> Self {
        EnvironmentSnapshot {
            version: w.version,
            flags: w.flags.into_iter().map(Flag::from).collect(),
            segments: w.segments,
        }
    }
}

/// Decodes an environment snapshot (the data of a `put`, the body of the snapshot endpoint).
pub(crate) fn decode_snapshot(json: &[u8]) -> Result<EnvironmentSnapshot, serde_json::Error> {
    serde_json::from_slice::<WireSnapshot>(json).map(EnvironmentSnapshot::from)
}

/// A snapshot file: an environment snapshot, or a last-known-good file (`format` and
/// `snapshot`), told apart in one pass.
#[derive(Deserialize)]
struct SnapshotFile {
    format: Option<String>,
    snapshot: Option<WireSnapshot>,
    version: Option<u64>,
    flags: Option<Vec<WireFlag>>,
    segments: Option<Vec<Segment>>,
}

/// Decodes a snapshot file (see the file source): an environment snapshot, or a
/// last-known-good file of the right format (its key fingerprint is not checked: the user
/// named the file). Refuses JSON that is neither, so that a wrong file does not load as
/// "no flags".
pub(crate) fn decode_snapshot_file(json: &[u8]) -> Result<EnvironmentSnapshot, String> {
    let file: SnapshotFile =
        serde_json::from_slice(json).map_err(|e| format!("not a valid snapshot file: {e}"))?;
    if let Some(format) = file.format {
        if format != crate::persist::FORMAT {
            return Err(format!("unknown format {format:?}"));
        }
        return file
            .snapshot
            .map(EnvironmentSnapshot::from)
            .ok_or_else(|| "a last-known-good file without a snapshot".to_owned());
    }
    if file.version.is_none() && file.flags.is_none() && file.segments.is_none() {
        return Err(
            "not an environment snapshot (no \"flags\", \"segments\" or \"version\")".into(),
        );
    }
    Ok(EnvironmentSnapshot::from(WireSnapshot {
        version: file.version.unwrap_or_default(),
        flags: file.flags.unwrap_or_default(),
        segments: file.segments.unwrap_or_default(),
    }))
}

/// [`SdkEvent::decode`], with the fast path for `put`.
pub(crate) fn decode_event(event_name: &str, data: &str) -> Result<SdkEvent, StreamError> {
    if event_name == event::PUT {
        return decode_snapshot(data.as_bytes())
            .map(SdkEvent::Put)
            .map_err(|source| StreamError::Malformed {
                event: event::PUT,
                source,
            });
    }
    SdkEvent::decode(event_name, data)
}

/// The W3C `traceparent` a change frame's data carries (`"traceparent":"00-…"`, written as
/// the first field by the server or relay that fanned the change out), when present and
/// well formed. Only the start of the data is searched: the field is never further in.
pub(crate) fn traceparent_in(data: &str) -> Option<&str> {
    const NEEDLE: &str = "\"traceparent\":\"";
    let window = data.get(..data.len().min(256)).unwrap_or(data);
    let start = window.find(NEEDLE)? + NEEDLE.len();
    let value = data.get(start..start + 55)?;
    let b = value.as_bytes();
    let hex = |r: &[u8]| {
        r.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let valid = b.starts_with(b"00-")
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(&b[3..35])
        && hex(&b[36..52])
        && hex(&b[53..55])
        && data[start + 55..].starts_with('"');
    valid.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn change_frames_with_a_traceparent_decode_and_yield_it() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let data = format!(r#"{{"traceparent":"{tp}","version":3,"kind":"flag","key":"f"}}"#);
        // Old and new SDKs alike decode the change: the field is unknown to the schema.
        assert!(matches!(
            decode_event("delete", &data),
            Ok(SdkEvent::Delete(d)) if d.version == 3
        ));
        let patch = format!(
            r#"{{"traceparent":"{tp}","version":4,"flag":{{"key":"f","kind":"boolean","variations":[{{"value":true}},{{"value":false}}],"on":false,"off_variation":1,"fallthrough":{{"variation":0}}}}}}"#
        );
        assert!(
            matches!(decode_event("patch", &patch), Ok(SdkEvent::Patch(p)) if p.version == 4),
            "{:?}",
            decode_event("patch", &patch)
        );
        assert_eq!(traceparent_in(&data), Some(tp));
        assert_eq!(traceparent_in(r#"{"version":3}"#), None);
        assert_eq!(
            traceparent_in(r#"{"traceparent":"00-zz","version":3}"#),
            None
        );
    }
    use vexil_schema::fixture::{load_bench_fixtures, load_eval_fixtures};

    fn both(
        json: &str,
    ) -> (
        Result<EnvironmentSnapshot, String>,
        Result<EnvironmentSnapshot, String>,
    ) {
        (
            decode_snapshot(json.as_bytes()).map_err(|e| e.to_string()),
            serde_json::from_str::<EnvironmentSnapshot>(json).map_err(|e| e.to_string()),
        )
    }

    #[test]
    fn agrees_with_the_schema_on_every_fixture() {
        let mut snapshots: Vec<EnvironmentSnapshot> = load_eval_fixtures()
            .unwrap()
            .into_iter()
            .map(|f| f.snapshot)
            .collect();
        snapshots.extend(
            load_bench_fixtures()
                .unwrap()
                .into_iter()
                .map(|f| f.snapshot),
        );
        assert!(snapshots.len() > 5);
        for s in snapshots {
            let json = serde_json::to_string(&s).unwrap();
            let (fast, schema) = both(&json);
            assert_eq!(fast.unwrap(), schema.unwrap());
        }
    }

    #[test]
    fn agrees_on_defaults_unknown_fields_and_errors() {
        let minimal = json!({"flags": [{
            "key": "f", "kind": "boolean", "variations": [{"value": true}],
            "off_variation": 0, "fallthrough": {"variation": 0}, "from_the_future": [1]
        }], "also_new": true});
        let (fast, schema) = both(&minimal.to_string());
        assert_eq!(fast.unwrap(), schema.unwrap());

        for bad in [
            json!({"flags": [{"key": "bad key", "kind": "boolean", "variations": [],
                "off_variation": 0, "fallthrough": {"variation": 0}}]}),
            json!({"flags": [{"key": "f", "kind": "boolean", "variations": [],
                "fallthrough": {"variation": 0}}]}),
            json!({"flags": [{"key": "f", "kind": "colour", "variations": [],
                "off_variation": 0, "fallthrough": {"variation": 0}}]}),
            json!({"version": -1}),
        ] {
            let (fast, schema) = both(&bad.to_string());
            assert!(fast.is_err() && schema.is_err(), "{bad}");
        }
    }

    #[test]
    fn events_other_than_put_use_the_schema() {
        assert!(matches!(
            decode_event("put", "{\"version\": 2}"),
            Ok(SdkEvent::Put(s)) if s.version == 2
        ));
        assert!(matches!(
            decode_event("put", "{"),
            Err(StreamError::Malformed { event: "put", .. })
        ));
        assert!(matches!(
            decode_event("delete", r#"{"version": 3, "kind": "flag", "key": "f"}"#),
            Ok(SdkEvent::Delete(_))
        ));
        assert!(matches!(
            decode_event("novel", "{}"),
            Err(StreamError::UnknownEvent(_))
        ));
    }
}
