//! The OpenFeature Remote Evaluation Protocol (OFREP) endpoints, evaluated locally on
//! compiled snapshots through `vexil-eval`:
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}`: one flag;
//! - `POST /ofrep/v1/evaluate/flags`: every flag of the environment, with an `ETag` (the
//!   environment version and a hash of the context) and `If-None-Match` → 304;
//! - `GET /ofrep/v1/configuration`: the provider configuration extension.
//!
//! Authentication: an SDK key in `Authorization` (`Bearer <key>` or the bare key) or in
//! `X-API-Key`, through any [`SdkAuth`]; 401 and 403 have no body, as the spec says. Each key
//! is rate limited ([`OfrepConfig::rate_limit`], 429 with `Retry-After`). Compiled snapshots
//! come from an [`EvaluatorSource`]: the edge relay's state, or the control plane's
//! in-memory snapshots.
//!
//! Context: `targetingKey` (a string) is the context key; without it the context is
//! anonymous, which Vexil evaluates by its anonymous rules (rollouts serve the fallthrough's
//! first bucket deterministically), so `TARGETING_KEY_MISSING` is never returned. A string
//! `kind` sets the context kind; `key` is ignored (the targeting key is the only key); every
//! other field is an attribute. A body that is not JSON is `PARSE_ERROR`; a `context` that
//! is not an object, or a `targetingKey` that is not a string, is `INVALID_CONTEXT`.
//! A flag whose configuration is malformed answers 400 `PARSE_ERROR` (in bulk, that item).
//!
//! Exposures: with [`OfrepConfig::exposures`], every evaluation with `in_experiment` (single
//! or bulk) made with a server-side key is recorded through an [`ExposureRecorder`]
//! (deduplicated per context × flag × variation), so apps in any language take part in
//! experiments. Client-side keys (browsers) record none: the page records its own exposures
//! when it *uses* a value, from the item's `metadata` (`flagVersion`, `inExperiment`,
//! `variationIndex`, present on items in an experiment only, so that other items stay
//! byte-identical across versions). Client keys are rate limited like SDK keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use vexil_eval::{CompiledSnapshot, Evaluation};
use vexil_schema::reason::ErrorKind;

use crate::evaluations::EvaluationCounts;
use vexil_schema::stream::{EnvironmentId, SdkKeyHash};
use vexil_schema::{Context, Flag};

use crate::auth::{AuthError, SdkAuth, hash_sdk_key};
use crate::exposures::ExposureRecorder;
use crate::http::sdk_key;
use crate::ofrep_bulk::{BulkPlans, push_json};

/// Path of single-flag evaluation (with `{key}`).
pub const EVALUATE_FLAG_PATH: &str = "/ofrep/v1/evaluate/flags/{key}";
/// Path of bulk evaluation.
pub const EVALUATE_FLAGS_PATH: &str = "/ofrep/v1/evaluate/flags";
/// Path of the configuration extension.
pub const CONFIGURATION_PATH: &str = "/ofrep/v1/configuration";

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Where OFREP finds an environment's compiled snapshot.
pub trait EvaluatorSource: Clone + Send + Sync + 'static {
    /// The current compiled snapshot of `env`, or `None` if it is not loaded (503).
    fn evaluator(&self, env: &EnvironmentId) -> Option<Arc<CompiledSnapshot>>;
}

/// Tuning of the OFREP endpoints.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OfrepConfig {
    /// Sustained requests per second allowed per SDK key (`0`: no limit). The burst is one
    /// second's worth.
    pub rate_limit: u32,
    /// `minPollingIntervalMs` announced by `GET /ofrep/v1/configuration`.
    pub min_polling_interval: Duration,
    /// Where exposures of experiment flags go (none: not recorded).
    pub exposures: Option<Arc<ExposureRecorder>>,
    /// Client-side keys (`vxc_`) also accepted, limited to `client_side` flags and checked
    /// against their environment's allowed origins; `None`: SDK keys only.
    pub client_keys: Option<crate::client::ClientKeyTable>,
}

impl Default for OfrepConfig {
    fn default() -> Self {
        Self {
            rate_limit: 10_000,
            min_polling_interval: Duration::from_secs(10),
            exposures: None,
            client_keys: None,
        }
    }
}

impl OfrepConfig {
    /// Sets [`OfrepConfig::rate_limit`].
    pub fn rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = per_second;
        self
    }

    /// Records the exposures of evaluations with `in_experiment` through `recorder`.
    pub fn exposures(mut self, recorder: Arc<ExposureRecorder>) -> Self {
        self.exposures = Some(recorder);
        self
    }

    /// Sets [`OfrepConfig::client_keys`].
    pub fn client_keys(mut self, table: crate::client::ClientKeyTable) -> Self {
        self.client_keys = Some(table);
        self
    }

    /// Sets [`OfrepConfig::min_polling_interval`].
    pub fn min_polling_interval(mut self, d: Duration) -> Self {
        self.min_polling_interval = d;
        self
    }
}

#[derive(Debug, Clone)]
struct OfrepState<S, A> {
    source: S,
    auth: A,
    config: OfrepConfig,
    limiter: Arc<RateLimiter>,
    /// What answers need from each environment's current snapshot, prepared once.
    plans: Arc<BulkPlans>,
}

/// The OFREP routes with the default [`OfrepConfig`].
pub fn ofrep_router<S: EvaluatorSource, A: SdkAuth>(source: S, auth: A) -> Router {
    ofrep_router_with(source, auth, OfrepConfig::default())
}

/// The OFREP routes with an explicit configuration.
pub fn ofrep_router_with<S: EvaluatorSource, A: SdkAuth>(
    source: S,
    auth: A,
    config: OfrepConfig,
) -> Router {
    let limiter = Arc::new(RateLimiter::new(config.rate_limit));
    Router::new()
        .route(EVALUATE_FLAG_PATH, post(evaluate_one::<S, A>))
        .route(EVALUATE_FLAGS_PATH, post(evaluate_all::<S, A>))
        .route(CONFIGURATION_PATH, get(configuration::<S, A>))
        .with_state(OfrepState {
            source,
            auth,
            config,
            limiter,
            plans: Arc::default(),
        })
        .layer(axum::middleware::from_fn(crate::client::cors))
}

/// An answer that is not a successful evaluation.
type Refusal = Box<Response>;

async fn evaluate_one<S: EvaluatorSource, A: SdkAuth>(
    State(s): State<OfrepState<S, A>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (env, compiled, client) = match admit(&s, &headers).await {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let ctx = match parse_context(&body) {
        Ok((ctx, _)) => ctx,
        Err((code, details)) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"key": key, "errorCode": code, "errorDetails": details}),
            );
        }
    };
    let hidden = client && !compiled.flag(&key).is_some_and(|f| f.client_side);
    let eval = compiled.evaluate(&key, &ctx);
    if !hidden {
        EvaluationCounts::global().environment(&env).record(
            &key,
            compiled.flag(&key).map(|f| f.variations.len()),
            &eval,
        );
    }
    // A browser records its own exposures (the web SDK sends them with its events): a
    // client-key evaluation records none here, or each would count twice.
    if !client && let Some(recorder) = &s.config.exposures {
        recorder.observe(&env, &compiled, &key, &ctx, &eval);
    }
    let not_found = hidden || eval.reason.error_kind() == Some(ErrorKind::FlagNotFound);
    match eval.reason.error_kind().filter(|_| !not_found) {
        _ if not_found => json_response(
            StatusCode::NOT_FOUND,
            json!({
                "key": key,
                "errorCode": "FLAG_NOT_FOUND",
                "errorDetails": format!("flag {key:?} not found in {env}"),
            }),
        ),
        Some(kind) => json_response(StatusCode::BAD_REQUEST, failure(&key, kind)),
        None => {
            // A single answer keeps the version in its metadata; bulk items do not.
            let plan = s.plans.get(&env, &compiled);
            let Some(entry) = plan.entry(&key) else {
                // Evaluated, so the flag exists: the plan is of this very snapshot.
                let mut one = success(&key, compiled.flag(&key), &eval);
                one["metadata"]["environmentVersion"] = json!(compiled.version());
                return json_response(StatusCode::OK, one);
            };
            let mut out = Vec::with_capacity(160);
            entry.push_success(&mut out, &eval, Some(compiled.version()));
            json_bytes(StatusCode::OK, out)
        }
    }
}

async fn evaluate_all<S: EvaluatorSource, A: SdkAuth>(
    State(s): State<OfrepState<S, A>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (env, compiled, client) = match admit(&s, &headers).await {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let (ctx, canonical) = match parse_context(&body) {
        Ok(parsed) => parsed,
        Err((code, details)) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"errorCode": code, "errorDetails": details}),
            );
        }
    };
    let etag = bulk_etag(&env, compiled.version(), &canonical);
    if if_none_match(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, [(ETAG, header(&etag))]).into_response();
    }
    // Flag-key order, on server and relay alike; client keys see client-side flags only.
    // The JSON is written straight into one buffer (see `ofrep_bulk`).
    let plan = s.plans.get(&env, &compiled);
    let counts = EvaluationCounts::global().environment(&env);
    let mut out = plan.buffer();
    out.extend_from_slice(b"{\"flags\":[");
    let mut first = true;
    for entry in plan.entries.iter().filter(|e| !client || e.client_side) {
        let eval = compiled.evaluate(&entry.key, &ctx);
        counts.record(
            &entry.key,
            compiled.flag(&entry.key).map(|f| f.variations.len()),
            &eval,
        );
        if !client && let Some(recorder) = &s.config.exposures {
            recorder.observe(&env, &compiled, &entry.key, &ctx, &eval);
        }
        if !first {
            out.push(b',');
        }
        first = false;
        match eval.reason.error_kind() {
            Some(kind) => push_json(&mut out, &failure(&entry.key, kind)),
            None => entry.push_success(&mut out, &eval, None),
        }
    }
    // The version is response-level: per-item data changes only when the flag's does.
    out.extend_from_slice(b"],\"metadata\":{\"environmentVersion\":");
    out.extend_from_slice(compiled.version().to_string().as_bytes());
    out.extend_from_slice(b"}}");
    plan.used(out.len());
    let mut r = json_bytes(StatusCode::OK, out);
    r.headers_mut().insert(ETAG, header(&etag));
    r
}

async fn configuration<S: EvaluatorSource, A: SdkAuth>(
    State(s): State<OfrepState<S, A>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authenticate(&s, &headers).await {
        return *r;
    }
    let min_ms = u64::try_from(s.config.min_polling_interval.as_millis()).unwrap_or(u64::MAX);
    let body = json!({
        "name": "vexil",
        "capabilities": {
            "cacheInvalidation": {"polling": {"enabled": true, "minPollingIntervalMs": min_ms}},
            "flagEvaluation": {"supportedTypes": ["boolean", "string", "int", "float", "object"]},
        },
    });
    let etag = format!("\"cfg-{min_ms}\"");
    if if_none_match(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, [(ETAG, header(&etag))]).into_response();
    }
    let mut r = json_response(StatusCode::OK, body);
    r.headers_mut().insert(ETAG, header(&etag));
    r
}

/// Authenticates, rate limits and finds the environment's compiled snapshot; `true` for a
/// client-side key.
async fn admit<S: EvaluatorSource, A: SdkAuth>(
    s: &OfrepState<S, A>,
    headers: &HeaderMap,
) -> Result<(EnvironmentId, Arc<CompiledSnapshot>, bool), Refusal> {
    let (env, client) = authenticate_any(s, headers).await?;
    match s.source.evaluator(&env) {
        Some(compiled) => Ok((env, compiled, client)),
        None => Err(Box::new(unavailable(
            "the environment's flags are not loaded yet; retry shortly",
            Duration::from_secs(5),
        ))),
    }
}

/// [`authenticate`], accepting client-side keys too (`true`). A request from a browser (with
/// `Origin`) must use a client-side key whose environment allows the origin.
async fn authenticate_any<S: EvaluatorSource, A: SdkAuth>(
    s: &OfrepState<S, A>,
    headers: &HeaderMap,
) -> Result<(EnvironmentId, bool), Refusal> {
    let origin = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if let (Some(table), Some(key)) = (&s.config.client_keys, sdk_key(headers))
        && table.lookup(key).is_some()
    {
        let env = table.authenticate(key, origin)?;
        // Client keys are public: limited per key like SDK keys, so one page (or a script
        // with a key copied from it) cannot monopolise the relay.
        rate_limit(s, key)?;
        return Ok((env, true));
    }
    if origin.is_some() {
        return Err(Box::new(crate::client::origin_refused()));
    }
    Ok((authenticate(s, headers).await?, false))
}

async fn authenticate<S: EvaluatorSource, A: SdkAuth>(
    s: &OfrepState<S, A>,
    headers: &HeaderMap,
) -> Result<EnvironmentId, Refusal> {
    let key = sdk_key(headers)
        .or_else(|| {
            headers
                .get(X_API_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|k| !k.is_empty())
        })
        .ok_or_else(|| Box::new(StatusCode::UNAUTHORIZED.into_response()))?;
    let env = s.auth.authenticate(key).await.map_err(|e| {
        Box::new(match e {
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN.into_response(),
            AuthError::Unavailable => unavailable(
                "authentication is temporarily unavailable",
                Duration::from_secs(5),
            ),
            _ => StatusCode::UNAUTHORIZED.into_response(),
        })
    })?;
    rate_limit(s, key)?;
    Ok(env)
}

/// The per-key rate limit: `429` with `Retry-After` once `key` is over it.
fn rate_limit<S, A>(s: &OfrepState<S, A>, key: &str) -> Result<(), Refusal> {
    if s.limiter.per_second > 0
        && let Err(wait) = s.limiter.check(hash_sdk_key(key))
    {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut r = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"errorDetails": "rate limit reached for this key"}),
        );
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return Err(Box::new(r));
    }
    Ok(())
}

/// The context of an evaluation request and its canonical JSON (for the bulk ETag), or the
/// OFREP error code and details.
pub(crate) fn parse_context(body: &[u8]) -> Result<(Context, Vec<u8>), (&'static str, String)> {
    let request: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ("PARSE_ERROR", format!("the body is not valid JSON: {e}")))?
    };
    let Value::Object(mut request) = request else {
        return Err((
            "PARSE_ERROR",
            "the body must be a JSON object with a \"context\" field".into(),
        ));
    };
    let fields = match request.remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(fields)) => fields,
        Some(_) => {
            return Err(("INVALID_CONTEXT", "\"context\" must be an object".into()));
        }
    };
    let canonical = serde_json::to_vec(&fields).unwrap_or_default();
    let mut ctx = match fields.get("targetingKey") {
        None | Some(Value::Null) => Context::anonymous(),
        Some(Value::String(key)) => Context::new(key.clone()),
        Some(_) => {
            return Err((
                "INVALID_CONTEXT",
                "\"targetingKey\" must be a string".into(),
            ));
        }
    };
    for (name, value) in fields {
        match name.as_str() {
            "targetingKey" | "key" => {}
            "kind" => {
                if let Value::String(kind) = value {
                    ctx.set_kind(Some(kind));
                }
            }
            _ => ctx.set(name, value),
        }
    }
    Ok((ctx, canonical))
}

/// A successful evaluation item.
fn success(key: &str, flag: Option<&Flag>, eval: &Evaluation<'_>) -> Value {
    let variant = match (eval.variation, flag) {
        (Some(i), Some(f)) => f
            .variations
            .get(i)
            .and_then(|v| v.name.clone())
            .unwrap_or_else(|| i.to_string()),
        (Some(i), None) => i.to_string(),
        (None, _) => String::new(),
    };
    let mut item = json!({
        "key": key,
        "value": eval.value.cloned().unwrap_or(Value::Null),
        "reason": eval.openfeature_reason(),
        "variant": variant,
    });
    if eval.in_experiment
        && let Some(i) = eval.variation
    {
        item["metadata"] = json!({
            "flagVersion": flag.map_or(0, |f| f.config.version),
            "inExperiment": true,
            "variationIndex": i,
        });
    }
    item
}

/// A failed evaluation item (never `FLAG_NOT_FOUND`, which has its own status).
fn failure(key: &str, kind: ErrorKind) -> Value {
    let (code, details) = match kind {
        ErrorKind::Malformed => (
            "PARSE_ERROR",
            format!("flag {key:?} has an invalid configuration"),
        ),
        other => (
            "GENERAL",
            format!("flag {key:?}: {}", other.openfeature_code()),
        ),
    };
    json!({"key": key, "errorCode": code, "errorDetails": details})
}

/// `"<version>-<16 hex digits of SHA-256(environment, context)>"`.
fn bulk_etag(env: &EnvironmentId, version: u64, canonical_context: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(env.as_str().as_bytes());
    h.update([0]);
    h.update(canonical_context);
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{version}-{hex}\"")
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn header(value: &str) -> HeaderValue {
    // ETags built here are quoted ASCII: always valid header values.
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// A JSON answer already encoded.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body.to_string(),
    )
        .into_response()
}

fn unavailable(details: &str, retry_after: Duration) -> Response {
    let mut r = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "errorDetails": details }),
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
    r
}

/// Token buckets per SDK key (only keys that authenticated, so the map is bounded by the
/// number of valid keys).
#[derive(Debug)]
struct RateLimiter {
    per_second: u32,
    buckets: Mutex<HashMap<SdkKeyHash, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    fn new(per_second: u32) -> Self {
        Self {
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    fn check(&self, key: SdkKeyHash) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: SdkKeyHash, now: Instant) -> Result<(), Duration> {
        if self.per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_second);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_fields_map_to_key_kind_and_attributes() {
        let (ctx, _) = parse_context(
            br#"{"context":{"targetingKey":"u1","kind":"org","key":"ignored","plan":"pro","n":3}}"#,
        )
        .unwrap();
        assert_eq!(ctx.key(), Some("u1"));
        assert_eq!(ctx.kind(), Some("org"));
        assert_eq!(ctx.attribute("plan"), Some(&json!("pro")));
        assert_eq!(ctx.attribute("n"), Some(&json!(3)));
        assert_eq!(ctx.attribute_count(), 2);

        let (anon, _) = parse_context(br#"{"context":{"plan":"free"}}"#).unwrap();
        assert_eq!(anon.key(), None);
        let (empty, _) = parse_context(b"").unwrap();
        assert_eq!(empty, Context::anonymous());
    }

    #[test]
    fn bad_bodies_have_ofrep_error_codes() {
        assert_eq!(parse_context(b"{not json").unwrap_err().0, "PARSE_ERROR");
        assert_eq!(parse_context(b"[1]").unwrap_err().0, "PARSE_ERROR");
        assert_eq!(
            parse_context(br#"{"context":"x"}"#).unwrap_err().0,
            "INVALID_CONTEXT"
        );
        assert_eq!(
            parse_context(br#"{"context":{"targetingKey":5}}"#)
                .unwrap_err()
                .0,
            "INVALID_CONTEXT"
        );
    }

    #[test]
    fn bulk_etag_depends_on_version_environment_and_context_not_field_order() {
        let e = EnvironmentId::parse("p/e").unwrap();
        let (_, a) = parse_context(br#"{"context":{"targetingKey":"u","x":1}}"#).unwrap();
        let (_, b) = parse_context(br#"{"context":{"x":1,"targetingKey":"u"}}"#).unwrap();
        let (_, c) = parse_context(br#"{"context":{"targetingKey":"v","x":1}}"#).unwrap();
        assert_eq!(bulk_etag(&e, 3, &a), bulk_etag(&e, 3, &b));
        assert_ne!(bulk_etag(&e, 3, &a), bulk_etag(&e, 4, &a));
        assert_ne!(bulk_etag(&e, 3, &a), bulk_etag(&e, 3, &c));
        let other = EnvironmentId::parse("p/f").unwrap();
        assert_ne!(bulk_etag(&e, 3, &a), bulk_etag(&other, 3, &a));
    }

    /// The direct encoder writes exactly what the `Value` path wrote: same bytes, same order.
    #[test]
    fn direct_encoding_matches_the_value_encoding() {
        use vexil_schema::{FlagConfig, FlagKey, FlagKind, Variation};
        let variation = |value: Value, name: Option<&str>| Variation {
            value,
            name: name.map(str::to_owned),
            description: None,
        };
        let flag = |key: &str, kind, variations, on: bool, serve: usize| {
            let mut config = FlagConfig::serving(serve);
            config.on = on;
            Flag {
                key: FlagKey::parse(key).unwrap(),
                kind,
                variations,
                client_side: false,
                config,
            }
        };
        let snapshot = vexil_schema::EnvironmentSnapshot {
            version: 42,
            flags: vec![
                flag(
                    "b-bool",
                    FlagKind::Boolean,
                    vec![
                        variation(json!(true), Some("on")),
                        variation(json!(false), None),
                    ],
                    true,
                    0,
                ),
                flag(
                    "a-json",
                    FlagKind::Json,
                    vec![
                        variation(json!({"z": [1, "two\"", null], "a": 1.5}), None),
                        variation(json!("x"), Some("say \"hi\"\n")),
                    ],
                    true,
                    1,
                ),
                flag(
                    "c-off",
                    FlagKind::Boolean,
                    vec![
                        variation(json!(false), Some("off")),
                        variation(json!(true), None),
                    ],
                    false,
                    0,
                ),
            ],
            segments: vec![],
        };
        let compiled = Arc::new(CompiledSnapshot::compile(&snapshot));
        let plans = BulkPlans::default();
        let env = EnvironmentId::parse("p/e").unwrap();
        let plan = plans.get(&env, &compiled);
        assert!(Arc::ptr_eq(&plan, &plans.get(&env, &compiled)), "cached");
        let keys: Vec<&str> = plan.entries.iter().map(|e| &*e.key).collect();
        assert_eq!(keys, ["a-json", "b-bool", "c-off"]);
        let (ctx, _) = parse_context(br#"{"context":{"targetingKey":"u"}}"#).unwrap();
        for entry in &plan.entries {
            let eval = compiled.evaluate(&entry.key, &ctx);
            let mut out = Vec::new();
            entry.push_success(&mut out, &eval, None);
            let expected = success(&entry.key, compiled.flag(&entry.key), &eval).to_string();
            assert_eq!(String::from_utf8(out).unwrap(), expected);
            let mut one = Vec::new();
            entry.push_success(&mut one, &eval, Some(42));
            let mut expected = success(&entry.key, compiled.flag(&entry.key), &eval);
            expected["metadata"]["environmentVersion"] = json!(42);
            assert_eq!(String::from_utf8(one).unwrap(), expected.to_string());
        }
        // A new snapshot gets a new plan.
        let newer = Arc::new(CompiledSnapshot::compile(&snapshot));
        assert!(!Arc::ptr_eq(&plan, &plans.get(&env, &newer)));
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_refills() {
        let l = RateLimiter::new(2);
        let k = hash_sdk_key("k");
        let t0 = Instant::now();
        assert!(l.check_at(k, t0).is_ok());
        assert!(l.check_at(k, t0).is_ok());
        let wait = l.check_at(k, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(l.check_at(k, t0 + Duration::from_millis(500)).is_ok());
        // Another key has its own bucket; 0 means unlimited.
        assert!(l.check_at(hash_sdk_key("other"), t0).is_ok());
        let unlimited = RateLimiter::new(0);
        for _ in 0..100 {
            assert!(unlimited.check_at(k, t0).is_ok());
        }
    }
}
