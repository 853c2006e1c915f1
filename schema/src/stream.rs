//! The streaming protocol: payloads of the server-sent events that carry flag data to SDKs
//! and relays, shared by the server, the relay and the SDKs.
//!
//! # SDK stream (`GET /sdk/v1/stream`, one environment)
//!
//! | event    | SSE `id`            | data                                              |
//! |----------|---------------------|---------------------------------------------------|
//! | `put`    | environment version | the full [`EnvironmentSnapshot`]                   |
//! | `patch`  | environment version | [`Patch`]: `{"version", "flag": Flag}` or `{"version", "segment": Segment}` |
//! | `delete` | environment version | [`Delete`]: `{"version", "kind": "flag"\|"segment", "key"}` |
//!
//! A keep-alive is an SSE comment line (`: keep-alive`), ignored by every SSE parser.
//!
//! # Relay stream (`GET /relay/v1/stream`, every environment a relay key is scoped to)
//!
//! | event        | SSE `id`          | data                                            |
//! |--------------|-------------------|-------------------------------------------------|
//! | `env-put`    | [`RelayCursor`]   | [`EnvPut`]: `{"environment", "snapshot"}`      |
//! | `env-patch`  | [`RelayCursor`]   | [`EnvPatch`]: `{"environment", "version", "flag"\|"segment"}` |
//! | `env-delete` | [`RelayCursor`]   | [`EnvDelete`]: `{"environment", "version", "kind", "key"}` |
//! | `env-remove` | [`RelayCursor`]   | [`EnvRemove`]: `{"environment"}`                |
//! | `keys`       | none              | [`EnvKeys`]: `{"environment", "sdk_key_hashes"}` |
//!
//! The relay stream's `id` is the whole version vector (`proj/prod:12,proj/staging:40`), so a
//! relay that reconnects with `Last-Event-ID` resumes every environment at once, from any
//! server replica, with no server-side session. `keys` events carry no `id` (SSE keeps the
//! previous one) because key sets are not versioned: the server sends every environment's
//! keys at the start of each connection and again whenever they change.
//!
//! `docs/design.md` ("Distribution protocol") describes ordering, resume and failure modes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::key::{EnvironmentKey, FlagKey, KeyError, ProjectKey, SegmentKey};
use crate::model::{EnvironmentSnapshot, Flag, Segment};

/// SSE event names.
pub mod event {
    /// Full state of the SDK's environment.
    pub const PUT: &str = "put";
    /// A flag or segment was created or changed.
    pub const PATCH: &str = "patch";
    /// A flag or segment was deleted.
    pub const DELETE: &str = "delete";
    /// Relay stream: full state of one environment.
    pub const ENV_PUT: &str = "env-put";
    /// Relay stream: a flag or segment of one environment was created or changed.
    pub const ENV_PATCH: &str = "env-patch";
    /// Relay stream: a flag or segment of one environment was deleted.
    pub const ENV_DELETE: &str = "env-delete";
    /// Relay stream: the relay no longer serves this environment.
    pub const ENV_REMOVE: &str = "env-remove";
    /// Relay stream: the SHA-256 hashes of one environment's SDK keys.
    pub const KEYS: &str = "keys";
}

/// Why a stream payload or identifier could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The event name is not one this version knows. Clients ignore such events so that
    /// newer servers can add events.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// The data is not valid JSON for the event.
    #[error("malformed {event} data: {source}")]
    Malformed {
        /// The event name.
        event: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An environment identifier is malformed.
    #[error("malformed environment id {0:?}: expected \"project/environment\"")]
    EnvironmentId(String),
    /// A relay cursor is malformed.
    #[error("malformed relay cursor: {0}")]
    Cursor(String),
    /// An SDK key hash is not 64 hexadecimal digits.
    #[error("malformed SDK key hash: expected 64 hexadecimal digits")]
    KeyHash,
}

/// Identifies one environment across projects: `project-key/environment-key`.
///
/// Keys never contain `/`, `:` or `,`, so the string form is unambiguous and safe inside an
/// SSE `id` and a [`RelayCursor`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvironmentId {
    repr: String,
    slash: usize,
}

impl EnvironmentId {
    /// The identifier of `environment` in `project`.
    pub fn new(project: &ProjectKey, environment: &EnvironmentKey) -> Self {
        Self {
            repr: format!("{project}/{environment}"),
            slash: project.len(),
        }
    }

    /// Parses `project/environment`.
    pub fn parse(s: &str) -> Result<Self, StreamError> {
        let bad = || StreamError::EnvironmentId(s.to_owned());
        let (project, environment) = s.split_once('/').ok_or_else(bad)?;
        let check = |part: &str| crate::key::check_key(part).map_err(|_: KeyError| bad());
        check(project)?;
        check(environment)?;
        Ok(Self {
            repr: s.to_owned(),
            slash: project.len(),
        })
    }

    /// The project key part.
    pub fn project(&self) -> &str {
        &self.repr[..self.slash]
    }

    /// The environment key part.
    pub fn environment(&self) -> &str {
        &self.repr[self.slash + 1..]
    }

    /// The `project/environment` string.
    pub fn as_str(&self) -> &str {
        &self.repr
    }
}

impl fmt::Debug for EnvironmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.repr, f)
    }
}

impl fmt::Display for EnvironmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repr)
    }
}

impl FromStr for EnvironmentId {
    type Err = StreamError;
    fn from_str(s: &str) -> Result<Self, StreamError> {
        Self::parse(s)
    }
}

impl Serialize for EnvironmentId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.repr)
    }
}

impl<'de> Deserialize<'de> for EnvironmentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a `patch` carries: one flag or one segment, created or replaced whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchItem {
    /// `"flag": {...}`.
    Flag(Flag),
    /// `"segment": {...}`.
    Segment(Segment),
}

/// The data of a `patch` event: `{"version": 7, "flag": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// The environment version this change produces.
    pub version: u64,
    /// The flag or segment, whole.
    #[serde(flatten)]
    pub item: PatchItem,
}

/// What a `delete` removes: `"kind": "flag", "key": "..."`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "key", rename_all = "snake_case")]
pub enum ItemRef {
    /// A flag.
    Flag(FlagKey),
    /// A segment.
    Segment(SegmentKey),
}

/// The data of a `delete` event: `{"version": 8, "kind": "flag", "key": "new-checkout"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    /// The environment version this change produces.
    pub version: u64,
    /// What is deleted.
    #[serde(flatten)]
    pub item: ItemRef,
}

/// One change to an environment: what a publisher hands the fan-out engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A flag or segment was created or replaced.
    Patch(Patch),
    /// A flag or segment was deleted.
    Delete(Delete),
}

impl Change {
    /// The environment version the change produces.
    pub fn version(&self) -> u64 {
        match self {
            Change::Patch(p) => p.version,
            Change::Delete(d) => d.version,
        }
    }

    /// The SSE event name the change travels under on the SDK stream.
    pub fn event_name(&self) -> &'static str {
        match self {
            Change::Patch(_) => event::PATCH,
            Change::Delete(_) => event::DELETE,
        }
    }
}

impl From<Patch> for Change {
    fn from(p: Patch) -> Self {
        Change::Patch(p)
    }
}

impl From<Delete> for Change {
    fn from(d: Delete) -> Self {
        Change::Delete(d)
    }
}

/// A decoded event of the SDK stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SdkEvent {
    /// `put`: replace the whole state.
    Put(EnvironmentSnapshot),
    /// `patch`: create or replace one item.
    Patch(Patch),
    /// `delete`: remove one item.
    Delete(Delete),
}

impl SdkEvent {
    /// Decodes an SSE event by its name and data.
    pub fn decode(event_name: &str, data: &str) -> Result<Self, StreamError> {
        match event_name {
            event::PUT => json(event::PUT, data).map(SdkEvent::Put),
            event::PATCH => json(event::PATCH, data).map(SdkEvent::Patch),
            event::DELETE => json(event::DELETE, data).map(SdkEvent::Delete),
            other => Err(StreamError::UnknownEvent(other.to_owned())),
        }
    }

    /// The environment version the event brings the receiver to.
    pub fn version(&self) -> u64 {
        match self {
            SdkEvent::Put(s) => s.version,
            SdkEvent::Patch(p) => p.version,
            SdkEvent::Delete(d) => d.version,
        }
    }
}

fn json<T: serde::de::DeserializeOwned>(event: &'static str, data: &str) -> Result<T, StreamError> {
    serde_json::from_str(data).map_err(|source| StreamError::Malformed { event, source })
}

/// SHA-256 of an SDK key. Relays authenticate SDKs by comparing hashes, so they never hold
/// the keys themselves. Serialised as 64 lower-case hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SdkKeyHash(pub [u8; 32]);

impl SdkKeyHash {
    /// Parses 64 hexadecimal digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, StreamError> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(StreamError::KeyHash);
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(StreamError::KeyHash)?;
            let lo = hex_val(pair[1]).ok_or(StreamError::KeyHash)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }

    /// The 64 lower-case hexadecimal digits.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(DIGITS[usize::from(b >> 4)]));
            s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
        s
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for SdkKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SdkKeyHash({})", self.to_hex())
    }
}

impl Serialize for SdkKeyHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for SdkKeyHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Relay stream `env-put` data: `{"environment": "proj/prod", "snapshot": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvPut {
    /// The environment.
    pub environment: EnvironmentId,
    /// Its full state; `snapshot.version` is its version.
    pub snapshot: EnvironmentSnapshot,
}

/// Relay stream `env-patch` data: `{"environment": "proj/prod", "version": 7, "flag": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvPatch {
    /// The environment.
    pub environment: EnvironmentId,
    /// The change, as on the SDK stream.
    #[serde(flatten)]
    pub patch: Patch,
}

/// Relay stream `env-delete` data:
/// `{"environment": "proj/prod", "version": 8, "kind": "flag", "key": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvDelete {
    /// The environment.
    pub environment: EnvironmentId,
    /// The change, as on the SDK stream.
    #[serde(flatten)]
    pub delete: Delete,
}

/// Relay stream `env-remove` data: the relay must stop serving the environment and forget its
/// keys (the relay key's scope changed, or the environment was deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvRemove {
    /// The environment.
    pub environment: EnvironmentId,
}

/// Relay stream `keys` data: the complete set of SHA-256 hashes of the environment's valid
/// SDK keys, replacing any previous set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvKeys {
    /// The environment.
    pub environment: EnvironmentId,
    /// Hashes of every SDK key that may read the environment.
    pub sdk_key_hashes: Vec<SdkKeyHash>,
    /// Hashes of every client-side key (`vxc_`) of the environment: public keys that read
    /// only the evaluated values of client-side flags. Absent from older upstreams.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_key_hashes: Vec<SdkKeyHash>,
    /// Browser origins allowed to use the client-side keys (`"*"`: any). Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
}

/// A decoded event of the relay stream.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayEvent {
    /// `env-put`.
    EnvPut(EnvPut),
    /// `env-patch`.
    EnvPatch(EnvPatch),
    /// `env-delete`.
    EnvDelete(EnvDelete),
    /// `env-remove`.
    EnvRemove(EnvRemove),
    /// `keys`.
    Keys(EnvKeys),
}

impl RelayEvent {
    /// Decodes an SSE event by its name and data.
    pub fn decode(event_name: &str, data: &str) -> Result<Self, StreamError> {
        match event_name {
            event::ENV_PUT => json(event::ENV_PUT, data).map(RelayEvent::EnvPut),
            event::ENV_PATCH => json(event::ENV_PATCH, data).map(RelayEvent::EnvPatch),
            event::ENV_DELETE => json(event::ENV_DELETE, data).map(RelayEvent::EnvDelete),
            event::ENV_REMOVE => json(event::ENV_REMOVE, data).map(RelayEvent::EnvRemove),
            event::KEYS => json(event::KEYS, data).map(RelayEvent::Keys),
            other => Err(StreamError::UnknownEvent(other.to_owned())),
        }
    }

    /// The environment the event is about.
    pub fn environment(&self) -> &EnvironmentId {
        match self {
            RelayEvent::EnvPut(e) => &e.environment,
            RelayEvent::EnvPatch(e) => &e.environment,
            RelayEvent::EnvDelete(e) => &e.environment,
            RelayEvent::EnvRemove(e) => &e.environment,
            RelayEvent::Keys(e) => &e.environment,
        }
    }
}

/// The relay stream's SSE `id`: the version of every environment the relay holds,
/// `proj/prod:12,proj/staging:40` (sorted by environment, no spaces).
///
/// The server sends the whole vector as the `id` of every versioned event, so the relay's
/// `Last-Event-ID` on reconnect says exactly where each environment stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayCursor(pub BTreeMap<EnvironmentId, u64>);

impl RelayCursor {
    /// An empty cursor (a relay that holds nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The version held for `env`, if any.
    pub fn get(&self, env: &EnvironmentId) -> Option<u64> {
        self.0.get(env).copied()
    }

    /// Records that `env` is at `version`.
    pub fn set(&mut self, env: EnvironmentId, version: u64) {
        self.0.insert(env, version);
    }

    /// Forgets `env`.
    pub fn remove(&mut self, env: &EnvironmentId) {
        self.0.remove(env);
    }
}

impl fmt::Display for RelayCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (env, version)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{env}:{version}")?;
        }
        Ok(())
    }
}

impl FromStr for RelayCursor {
    type Err = StreamError;
    fn from_str(s: &str) -> Result<Self, StreamError> {
        let mut map = BTreeMap::new();
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self(map));
        }
        for part in s.split(',') {
            let (env, version) = part
                .rsplit_once(':')
                .ok_or_else(|| StreamError::Cursor(format!("{part:?} lacks ':'")))?;
            let env = EnvironmentId::parse(env)?;
            let version = parse_version(version)
                .ok_or_else(|| StreamError::Cursor(format!("bad version in {part:?}")))?;
            if map.insert(env, version).is_some() {
                return Err(StreamError::Cursor(format!("duplicate entry {part:?}")));
            }
        }
        Ok(Self(map))
    }
}

/// Parses an SDK stream SSE `id` (a `Last-Event-ID`): an environment version in decimal
/// digits only (no sign, no spaces, no leading `+`). `None` if malformed.
pub fn parse_version(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FlagConfig;
    use crate::{FlagKind, Variation};
    use serde_json::json;

    fn env(s: &str) -> EnvironmentId {
        EnvironmentId::parse(s).unwrap()
    }

    fn flag(key: &str) -> Flag {
        Flag {
            key: FlagKey::parse(key).unwrap(),
            kind: FlagKind::Boolean,
            variations: vec![Variation::new(json!(true)), Variation::new(json!(false))],
            client_side: false,
            config: FlagConfig::serving(1),
        }
    }

    #[test]
    fn environment_id_round_trips_and_rejects_bad_forms() {
        let id = EnvironmentId::new(
            &ProjectKey::parse("shop").unwrap(),
            &EnvironmentKey::parse("prod").unwrap(),
        );
        assert_eq!(id.as_str(), "shop/prod");
        assert_eq!(id.project(), "shop");
        assert_eq!(id.environment(), "prod");
        assert_eq!(env("shop/prod"), id);
        for bad in [
            "", "shop", "/prod", "shop/", "a/b/c", "a b/c", "a/b:1", "a/b,c",
        ] {
            assert!(EnvironmentId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(serde_json::to_value(&id).unwrap(), json!("shop/prod"));
    }

    #[test]
    fn patch_wire_form_is_flat() {
        let p = Patch {
            version: 7,
            item: PatchItem::Flag(flag("f")),
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["version"], 7);
        assert_eq!(v["flag"]["key"], "f");
        assert_eq!(v["flag"]["off_variation"], 1);
        let back = SdkEvent::decode("patch", &v.to_string()).unwrap();
        assert_eq!(back, SdkEvent::Patch(p));
    }

    #[test]
    fn delete_wire_form_names_kind_and_key() {
        let d = Delete {
            version: 8,
            item: ItemRef::Segment(SegmentKey::parse("beta").unwrap()),
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v, json!({"version": 8, "kind": "segment", "key": "beta"}));
        let back: Delete = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
        let err = SdkEvent::decode("delete", r#"{"version":1,"kind":"flag","key":"a b"}"#);
        assert!(matches!(
            err,
            Err(StreamError::Malformed {
                event: "delete",
                ..
            })
        ));
    }

    #[test]
    fn unknown_events_are_reported_as_such() {
        assert!(matches!(
            SdkEvent::decode("future", "{}"),
            Err(StreamError::UnknownEvent(e)) if e == "future"
        ));
    }

    #[test]
    fn relay_events_carry_the_environment() {
        let e = RelayEvent::decode(
            "env-delete",
            r#"{"environment":"p/e","version":3,"kind":"flag","key":"x"}"#,
        )
        .unwrap();
        assert_eq!(e.environment(), &env("p/e"));
        let RelayEvent::EnvDelete(d) = e else {
            panic!("wrong variant")
        };
        assert_eq!(d.delete.version, 3);

        let patch = EnvPatch {
            environment: env("p/e"),
            patch: Patch {
                version: 4,
                item: PatchItem::Flag(flag("g")),
            },
        };
        let s = serde_json::to_string(&patch).unwrap();
        assert_eq!(
            RelayEvent::decode("env-patch", &s).unwrap(),
            RelayEvent::EnvPatch(patch)
        );

        let keys = EnvKeys {
            environment: env("p/e"),
            sdk_key_hashes: vec![SdkKeyHash([0xab; 32])],
            client_key_hashes: vec![SdkKeyHash([0xcd; 32])],
            allowed_origins: vec!["https://app.example.com".to_owned()],
        };
        let v = serde_json::to_value(&keys).unwrap();
        assert_eq!(v["sdk_key_hashes"][0], "ab".repeat(32));
        assert_eq!(
            RelayEvent::decode("keys", &v.to_string()).unwrap(),
            RelayEvent::Keys(keys)
        );
    }

    #[test]
    fn key_hash_hex_round_trips_and_rejects_bad_input() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::try_from(i * 7).unwrap();
        }
        let h = SdkKeyHash(bytes);
        assert_eq!(SdkKeyHash::from_hex(&h.to_hex()).unwrap(), h);
        assert_eq!(SdkKeyHash::from_hex(&h.to_hex().to_uppercase()).unwrap(), h);
        assert!(SdkKeyHash::from_hex("ab").is_err());
        assert!(SdkKeyHash::from_hex(&"zz".repeat(32)).is_err());
        assert!(SdkKeyHash::from_hex(&"é".repeat(32)).is_err());
    }

    #[test]
    fn relay_cursor_round_trips() {
        let mut c = RelayCursor::new();
        c.set(env("p/staging"), 40);
        c.set(env("p/prod"), 12);
        let s = c.to_string();
        assert_eq!(s, "p/prod:12,p/staging:40");
        assert_eq!(s.parse::<RelayCursor>().unwrap(), c);
        assert_eq!("".parse::<RelayCursor>().unwrap(), RelayCursor::new());
        for bad in [
            "p/prod",
            "p/prod:x",
            "p/prod:-1",
            "p:1",
            "p/a:1,p/a:2",
            "p/a:1,",
        ] {
            assert!(bad.parse::<RelayCursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_are_plain_decimal() {
        assert_eq!(parse_version("0"), Some(0));
        assert_eq!(parse_version("42"), Some(42));
        for bad in ["", "+1", "-1", " 1", "1 ", "1.0", "99999999999999999999999"] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
    }
}
