//! Client-side access (browsers and mobile apps, issue 15): public client keys (`vxc_`),
//! allowed origins per environment, CORS, and the per-context evaluated stream
//! `GET /client/v1/stream`.
//!
//! A client key reads only *evaluated values* of flags marked `client_side`, for the context
//! it presents: never rules, segments or other contexts' keys. The [`ClientKeyTable`] (held
//! by the [`Hub`], filled by the server from its database and by relays from the `keys`
//! events of their upstream) knows the SHA-256 hash of every client key and each
//! environment's allowed origins.
//!
//! The evaluated stream starts with a `put` of every client-side flag's value for the
//! context, then sends a `patch` only for flags whose answer *for this context* changed (and
//! `removed` for flags gone or no longer client-side). Per change, each connection
//! re-evaluates only the flags the change can affect
//! ([`CompiledSnapshot::flags_affected_since`], computed once per change and shared), with
//! the shared engine on the compiled snapshot of the [`EvaluatorSource`], and compares them
//! with the items it last sent; the hub's SDK stream of the environment is only the wake-up
//! signal. Items carry `inExperiment`, `variationIndex` and `flagVersion` for the page's
//! exposures; `flagVersion` alone changing (a no-op edit) sends nothing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, CONTENT_TYPE, ORIGIN,
    VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value, json};
use vexil_eval::CompiledSnapshot;
use vexil_schema::stream::{EnvironmentId, SdkKeyHash, parse_version};

use crate::auth::hash_sdk_key;
use crate::client_items::{AffectedCache, apply_change, evaluate_all, payload};
use crate::frame::{Frame, KEEP_ALIVE};
use crate::http::{LAST_EVENT_ID, X_ACCEL_BUFFERING, authorization_key, not_serving, unauthorized};
use crate::hub::Hub;
use crate::ofrep::{EvaluatorSource, parse_context};

/// Path of the per-context evaluated stream.
pub const CLIENT_STREAM_PATH: &str = "/client/v1/stream";

/// One environment's client-side access: key hashes and allowed browser origins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientEnv {
    /// SHA-256 hashes of the environment's client keys, sorted.
    pub key_hashes: Vec<SdkKeyHash>,
    /// Allowed origins (`"*"`: any), sorted.
    pub allowed_origins: Vec<String>,
}

impl ClientEnv {
    /// Whether a request from `origin` (its `Origin` header) may use this environment's
    /// client keys. No `Origin` (a mobile app, a server) is always allowed: origins only
    /// restrict browsers.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => self.allowed_origins.iter().any(|a| a == "*" || a == o),
        }
    }
}

#[derive(Debug, Default)]
struct ClientIndex {
    by_hash: HashMap<SdkKeyHash, EnvironmentId>,
    by_env: HashMap<EnvironmentId, ClientEnv>,
}

/// Client keys by SHA-256 hash and allowed origins, per environment. Lookups are
/// lock-free; updates copy the index.
#[derive(Debug, Clone, Default)]
pub struct ClientKeyTable {
    index: Arc<ArcSwap<ClientIndex>>,
}

impl ClientKeyTable {
    /// An empty table: every client key is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces `env`'s client keys and origins; returns whether anything changed.
    pub fn set_environment(&self, env: &EnvironmentId, mut access: ClientEnv) -> bool {
        access.key_hashes.sort_unstable();
        access.key_hashes.dedup();
        access.allowed_origins.sort_unstable();
        access.allowed_origins.dedup();
        if self.index.load().by_env.get(env) == Some(&access) {
            return false;
        }
        self.index.rcu(|old| {
            let mut by_hash = old.by_hash.clone();
            let mut by_env = old.by_env.clone();
            if let Some(previous) = by_env.remove(env) {
                for h in previous.key_hashes {
                    if by_hash.get(&h) == Some(env) {
                        by_hash.remove(&h);
                    }
                }
            }
            for h in &access.key_hashes {
                by_hash.insert(*h, env.clone());
            }
            by_env.insert(env.clone(), access.clone());
            ClientIndex { by_hash, by_env }
        });
        true
    }

    /// Forgets `env`.
    pub fn remove_environment(&self, env: &EnvironmentId) {
        self.index.rcu(|old| {
            let mut by_hash = old.by_hash.clone();
            let mut by_env = old.by_env.clone();
            if let Some(previous) = by_env.remove(env) {
                for h in previous.key_hashes {
                    by_hash.remove(&h);
                }
            }
            ClientIndex { by_hash, by_env }
        });
    }

    /// `env`'s client keys and origins (empty if unknown).
    pub fn environment(&self, env: &EnvironmentId) -> ClientEnv {
        self.index
            .load()
            .by_env
            .get(env)
            .cloned()
            .unwrap_or_default()
    }

    /// The environment the client key `key` reads, if known.
    pub fn lookup(&self, key: &str) -> Option<EnvironmentId> {
        self.index.load().by_hash.get(&hash_sdk_key(key)).cloned()
    }

    /// Whether the key with this hash (still) reads `env`.
    pub fn reads(&self, hash: &SdkKeyHash, env: &EnvironmentId) -> bool {
        self.index.load().by_hash.get(hash) == Some(env)
    }

    /// Authenticates a client key from a request with `origin`: its environment, or the
    /// refusal (401 unknown key, 403 origin not allowed).
    pub fn authenticate(
        &self,
        key: &str,
        origin: Option<&str>,
    ) -> Result<EnvironmentId, Box<Response>> {
        let index = self.index.load();
        let Some(env) = index.by_hash.get(&hash_sdk_key(key)) else {
            return Err(Box::new(unauthorized()));
        };
        let allowed = index.by_env.get(env).is_some_and(|e| e.allows(origin));
        if !allowed {
            return Err(Box::new(origin_refused()));
        }
        Ok(env.clone())
    }
}

/// Marks a response whose origin was refused: the CORS layer adds no allow-origin to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OriginRefused;

/// 403 problem+json for a browser origin (or a server-side key used from a browser) that
/// may not read; carries no `Access-Control-Allow-Origin`.
pub(crate) fn origin_refused() -> Response {
    forbidden(
        "this origin may not use this key: allow it on the environment, and use a client-side key (vxc_) in browsers",
    )
}

fn forbidden(detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": detail,
    });
    let mut r = (
        StatusCode::FORBIDDEN,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )],
        body.to_string(),
    )
        .into_response();
    r.extensions_mut().insert(OriginRefused);
    r
}

/// The CORS layer of client-side and OFREP routes: answers preflights (204, for any origin:
/// a preflight cannot carry the key, so the actual request is checked against the key's
/// environment) and adds `Access-Control-Allow-Origin` (echoed) to answers of requests with
/// an `Origin`, except refused ones.
pub async fn cors(req: Request, next: Next) -> Response {
    let origin = req.headers().get(ORIGIN).cloned();
    if req.method() == Method::OPTIONS {
        let Some(origin) = origin else {
            return StatusCode::NO_CONTENT.into_response();
        };
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(VARY, HeaderValue::from_static("Origin"));
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "Authorization, Content-Type, If-None-Match, Last-Event-ID, X-Vexil-Event-Schema",
            ),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        return r;
    }
    let mut r = next.run(req).await;
    if let Some(origin) = origin
        && r.extensions().get::<OriginRefused>().is_none()
    {
        let h = r.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(VARY, HeaderValue::from_static("Origin"));
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("ETag"),
        );
    }
    r
}

#[derive(Clone)]
struct ClientState<S> {
    hub: Hub,
    source: S,
    client_flags: Arc<ClientFlagsCache>,
    affected: Arc<AffectedCache>,
}

/// The client-side routes (`GET /client/v1/stream`), with CORS. Keep body timeouts off.
pub fn client_router<S: EvaluatorSource>(hub: Hub, source: S) -> Router {
    Router::new()
        .route(CLIENT_STREAM_PATH, get(stream::<S>).options(preflight_only))
        .with_state(ClientState {
            hub,
            source,
            client_flags: Arc::new(ClientFlagsCache::default()),
            affected: Arc::new(AffectedCache::default()),
        })
        .layer(from_fn(cors))
}

async fn preflight_only() -> StatusCode {
    // Answered by the CORS layer; reached only without an `Origin`.
    StatusCode::NO_CONTENT
}

/// Sorted flag keys, shared.
type FlagKeys = Arc<[Box<str>]>;

/// The keys of the client-side flags of each environment's current compiled snapshot,
/// sorted, computed once per version and shared by every stream.
#[derive(Debug, Default)]
struct ClientFlagsCache {
    by_env: std::sync::Mutex<HashMap<EnvironmentId, (u64, FlagKeys)>>,
}

impl ClientFlagsCache {
    fn get(&self, env: &EnvironmentId, compiled: &CompiledSnapshot) -> Arc<[Box<str>]> {
        let mut map = self
            .by_env
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((v, keys)) = map.get(env)
            && *v == compiled.version()
        {
            return Arc::clone(keys);
        }
        let keys = client_flag_keys(compiled);
        map.insert(env.clone(), (compiled.version(), Arc::clone(&keys)));
        keys
    }
}

/// The keys of `compiled`'s client-side flags, sorted.
pub(crate) fn client_flag_keys(compiled: &CompiledSnapshot) -> Arc<[Box<str>]> {
    let mut keys: Vec<Box<str>> = compiled
        .flag_keys()
        .filter(|k| compiled.flag(k).is_some_and(|f| f.client_side))
        .map(Box::from)
        .collect();
    keys.sort_unstable();
    keys.into()
}

fn frame(event: &str, version: u64, data: &[u8]) -> Option<Bytes> {
    Frame::encode(event, &version.to_string(), &[data])
        .ok()
        .map(|f| f.bytes().clone())
}

/// The query parameter `name` of `query` (no percent-decoding is needed: keys are hex and
/// contexts base64url).
pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Decodes unpadded (or padded) base64url.
pub(crate) fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=').trim_end_matches("%3D");
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn bad_request(detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": detail,
    });
    (
        StatusCode::BAD_REQUEST,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// The version in a change frame's `id` line, if any.
fn frame_version(f: &[u8]) -> Option<u64> {
    let at = f.windows(5).take(128).position(|w| w == b"\nid: ")?;
    let rest = &f[at + 5..];
    let end = rest.iter().position(|&b| b == b'\n')?;
    parse_version(std::str::from_utf8(&rest[..end]).ok()?)
}

async fn stream<S: EvaluatorSource>(
    State(s): State<ClientState<S>>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or("");
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    let key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(authorization_key)
        .or_else(|| query_param(query, "key"));
    let Some(key) = key else {
        return unauthorized();
    };
    let table = s.hub.client_keys().clone();
    let env = match table.authenticate(key, origin) {
        Ok(env) => env,
        Err(r) => return *r,
    };
    let key_hash = hash_sdk_key(key);
    // The context: base64url JSON of the OpenFeature evaluation context.
    let fields = match query_param(query, "context") {
        None => Map::new(),
        Some(b64) => {
            let Some(raw) = base64url_decode(b64) else {
                return bad_request("context: not base64url");
            };
            match serde_json::from_slice::<Value>(&raw) {
                Ok(Value::Object(m)) => m,
                _ => return bad_request("context: not a JSON object"),
            }
        }
    };
    let body = json!({ "context": fields }).to_string();
    let ctx = match parse_context(body.as_bytes()) {
        Ok((ctx, _)) => ctx,
        Err((_, detail)) => return bad_request(&format!("context: {detail}")),
    };
    let retry_after = s.hub.config().retry_after;
    let Some(compiled) = s.source.evaluator(&env) else {
        return not_serving(crate::hub::NotServing::NotReady, retry_after);
    };
    let version = compiled.version();
    // Subscribed as current: the hub's frames are only the wake-up signal.
    let mut sub = match s.hub.subscribe(&env, Some(&version.to_string())) {
        Ok(sub) => sub,
        Err(e) => return not_serving(e, retry_after),
    };
    let resumed = headers
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_version(v.trim()))
        == Some(version);
    let keys = s.client_flags.get(&env, &compiled);
    let mut sent = evaluate_all(&compiled, &keys, &ctx);
    let first = (!resumed)
        .then(|| {
            frame(
                "put",
                version,
                &payload(version, sent.iter().map(|(k, v)| (&**k, &*v.json)), &[]),
            )
        })
        .flatten();
    tracing::debug!(environment = %env, resumed, "client stream opened");
    let source = s.source.clone();
    let affected_cache = Arc::clone(&s.affected);
    let body = async_stream::stream! {
        if let Some(f) = first {
            yield f;
        }
        let mut at = version;
        let mut previous = compiled;
        while let Some(f) = sub.next().await {
            if f.as_ref() == KEEP_ALIVE {
                yield f;
                continue;
            }
            if !table.reads(&key_hash, &env) {
                break;
            }
            // The relay publishes to the hub before it swaps its compiled snapshot in.
            let target = frame_version(&f).unwrap_or(0);
            let mut compiled = source.evaluator(&env);
            // It follows within microseconds, unless the machine is saturated: yield first,
            // then poll each millisecond, for at most about a second.
            for attempt in 0..1_100u32 {
                if compiled.as_ref().is_some_and(|c| c.version() >= target) {
                    break;
                }
                if attempt < 100 {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                compiled = source.evaluator(&env);
            }
            let Some(compiled) = compiled else { break };
            if compiled.version() <= at {
                continue;
            }
            at = compiled.version();
            let affected = affected_cache.get(&env, &previous, &compiled);
            let (changed, removed) = apply_change(&compiled, &affected, &ctx, &mut sent);
            if !changed.is_empty() || !removed.is_empty() {
                let items = changed
                    .iter()
                    .filter_map(|k| sent.get(k).map(|v| (&**k, &*v.json)));
                let data = payload(at, items, &removed);
                if let Some(f) = frame("patch", at, &data) {
                    yield f;
                }
            }
            previous = compiled;
        }
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (X_ACCEL_BUFFERING, HeaderValue::from_static("no")),
        ],
        Body::from_stream(body.map(Ok::<_, Infallible>)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_without_padding() {
        assert_eq!(
            base64url_decode("eyJ0YXJnZXRpbmdLZXkiOiJ1MSJ9").unwrap(),
            br#"{"targetingKey":"u1"}"#
        );
        assert_eq!(base64url_decode("YQ").unwrap(), b"a");
        assert_eq!(base64url_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64url_decode("_-8").unwrap(), [0xff, 0xef]);
        assert!(base64url_decode("a b").is_none());
    }

    #[test]
    fn origins_restrict_browsers_only() {
        let e = ClientEnv {
            key_hashes: vec![],
            allowed_origins: vec!["https://a.example".into()],
        };
        assert!(e.allows(None));
        assert!(e.allows(Some("https://a.example")));
        assert!(!e.allows(Some("https://b.example")));
        let any = ClientEnv {
            key_hashes: vec![],
            allowed_origins: vec!["*".into()],
        };
        assert!(any.allows(Some("https://b.example")));
        assert!(!ClientEnv::default().allows(Some("https://a.example")));
    }

    #[test]
    fn table_maps_keys_and_replaces_them() {
        let t = ClientKeyTable::new();
        let env = EnvironmentId::parse("p/e").unwrap();
        assert!(t.set_environment(
            &env,
            ClientEnv {
                key_hashes: vec![hash_sdk_key("vxc_1")],
                allowed_origins: vec!["*".into()],
            }
        ));
        assert_eq!(t.lookup("vxc_1"), Some(env.clone()));
        assert!(t.authenticate("vxc_1", Some("https://x")).is_ok());
        assert!(t.authenticate("vxc_2", None).is_err());
        t.set_environment(&env, ClientEnv::default());
        assert_eq!(t.lookup("vxc_1"), None);
    }

    #[test]
    fn frame_version_reads_the_id_line() {
        assert_eq!(
            frame_version(b"event: patch\nid: 42\ndata: {}\n\n"),
            Some(42)
        );
        assert_eq!(frame_version(KEEP_ALIVE), None);
    }
}
