//! Analytics event ingestion: `POST /events/v1/bulk` (SDK keys), `POST
//! /relay/v1/events/{project}/{environment}` (relay keys: what relays forward), and the
//! exposures OFREP evaluations record.
//!
//! A batch ([`vexil_schema::events::EventBatch`], optionally gzip-compressed) is checked as
//! a whole (JSON, `schema_version`, size, number of events: a problem+json `400`/`413` if
//! not), then event by event ([`RawEvent::decode`], [`Event::validate`]): malformed events are
//! counted and reported by index in the [`BulkResponse`], the rest are stored in one
//! transaction together with the experiment aggregates ([`store::EventStore::store`]). The
//! answer (`200`) comes only after the commit: an acknowledged event is stored. If the
//! database fails, the answer is `503` with `Retry-After` and nothing of the batch is kept,
//! so the sender retries the whole batch.
//!
//! Limits: the body size (`VEXIL_EVENTS_MAX_BODY_BYTES`, compressed and decompressed), the
//! events per batch ([`MAX_EVENTS_PER_BATCH`]) and requests per second per SDK key
//! (`VEXIL_EVENTS_RATE_LIMIT`, `429` with `Retry-After`; relay keys are not limited). Retention: see
//! [`store::EventStore::maintain`], run hourly by [`maintenance`].

mod exposures;
mod limit;
pub mod store;

use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_ENCODING, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use vexil_fanout::{AuthError, RelayAuth, SdkAuth};
use vexil_schema::events::{
    BulkResponse, EVENTS_SCHEMA_HEADER, EVENTS_SCHEMA_VERSION, Event, EventBatch, EventError,
    MAX_EVENTS_PER_BATCH, RawEvent, RejectedEvent,
};
use vexil_schema::stream::EnvironmentId;

pub use exposures::ServerExposures;
use limit::RateLimiter;
pub use store::{EventStore, Maintenance};

use crate::app::AppState;
use crate::error::{ApiError, Problem};

/// Path of the SDK endpoint.
pub const BULK_PATH: &str = "/events/v1/bulk";
/// Path of the relay endpoint (with `{project}` and `{environment}`).
pub const RELAY_EVENTS_PATH: &str = "/relay/v1/events/{project}/{environment}";

/// Events received (decoded or not), by route.
pub const RECEIVED: &str = "vexil_events_received_total";
/// Events that passed validation.
pub const ACCEPTED: &str = "vexil_events_accepted_total";
/// Events rejected, by `reason` (`malformed`, `length`, `not_finite`, `time`, `summary`).
pub const REJECTED: &str = "vexil_events_rejected_total";
/// Events committed to the database.
pub const STORED: &str = "vexil_events_stored_total";
/// Batches refused as a whole, by `reason`.
pub const BATCHES_REFUSED: &str = "vexil_events_batches_refused_total";
/// Seconds from receiving a batch to its commit.
pub const BATCH_SECONDS: &str = "vexil_events_batch_seconds";
/// Exposures recorded by OFREP evaluations and dropped because the writer was behind.
pub const EXPOSURES_DROPPED: &str = "vexil_events_exposures_dropped_total";

/// The ingestion state the routes share.
#[derive(Debug, Clone)]
pub struct Ingest {
    app: AppState,
    store: EventStore,
    limiter: std::sync::Arc<RateLimiter>,
}

/// The event routes: `POST /events/v1/bulk` and `POST /relay/v1/events/{project}/{environment}`.
pub fn routes(state: &AppState) -> Router {
    let config = &state.config;
    let ingest = Ingest {
        app: state.clone(),
        store: state.events.clone(),
        limiter: std::sync::Arc::new(RateLimiter::new(config.events_rate_limit)),
    };
    // The decompressed size is checked separately; this bounds what is read off the wire.
    let limit = config.events_max_body_bytes;
    // Browsers send batches too (client-side keys): CORS on the SDK route.
    let browser = Router::new()
        .route(BULK_PATH, post(bulk).options(preflight))
        .layer(axum::middleware::from_fn(vexil_fanout::cors));
    Router::new()
        .merge(browser)
        .route(RELAY_EVENTS_PATH, post(relay_bulk))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ingest)
}

/// A preflight without `Origin` (the CORS layer answers those with one).
async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The current time in ms since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn problem(status: StatusCode, slug: &str, detail: impl Into<String>) -> Response {
    Problem::new(status, slug, Some(detail.into())).into_response_with_status()
}

fn refused(reason: &'static str, status: StatusCode, slug: &str, detail: String) -> Response {
    metrics::counter!(BATCHES_REFUSED, "reason" => reason).increment(1);
    problem(status, slug, detail)
}

/// The key of `Authorization` (`<key>` or `Bearer <key>`).
fn authorization_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let key = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None => value,
    };
    (!key.is_empty()).then_some(key)
}

fn auth_refusal(e: AuthError) -> Response {
    match e {
        AuthError::Forbidden(why) => problem(StatusCode::FORBIDDEN, "forbidden", why),
        AuthError::Unavailable => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the key cannot be checked right now; retry shortly",
        ),
        _ => problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send an SDK key in Authorization",
        ),
    }
}

fn rate_limited(wait: Duration) -> Response {
    let mut r = refused(
        "rate_limited",
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "too many event batches for this key; retry after Retry-After seconds".into(),
    );
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// `POST /events/v1/bulk`: a batch from an SDK (or any HTTP client) with an SDK key, or from
/// a browser with a client-side key (in `Authorization`, or `?key=` for `sendBeacon`; the
/// `Origin` must be allowed by the key's environment; see [`vexil_fanout::events_caller`]).
async fn bulk(
    State(s): State<Ingest>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let table = s.app.feed.hub().client_keys().clone();
    let (env, key) = match vexil_fanout::events_caller(&table, &headers, uri.query()) {
        Ok(vexil_fanout::EventsCaller::Client { env, key }) => (env, key),
        Ok(vexil_fanout::EventsCaller::Sdk(key)) => {
            match SdkAuth::authenticate(&s.app.feed, key).await {
                Ok(env) => (env, key),
                Err(e) => return auth_refusal(e),
            }
        }
        Err(refusal) => {
            if refusal.status() == StatusCode::UNAUTHORIZED {
                return auth_refusal(AuthError::Unauthorized);
            }
            return *refusal;
        }
    };
    if let Err(wait) = s.limiter.check(key) {
        return rate_limited(wait);
    }
    s.receive(&env, &headers, &body, "sdk").await
}

/// `POST /relay/v1/events/{project}/{environment}`: a batch a relay forwards for one
/// environment of its scope, with its relay key.
async fn relay_bulk(
    State(s): State<Ingest>,
    Path((project, environment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = authorization_key(&headers) else {
        return auth_refusal(AuthError::Unauthorized);
    };
    let scope = match RelayAuth::authenticate(&s.app.feed, key).await {
        Ok(scope) => scope,
        Err(e) => return auth_refusal(e),
    };
    let Ok(env) = EnvironmentId::parse(&format!("{project}/{environment}")) else {
        return problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "no such environment in this relay key's scope",
        );
    };
    if !scope.contains(&env) {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the environment is not in this relay key's scope",
        );
    }
    // Not rate limited: a relay forwards the events of all its SDKs under one key (and
    // relay keys are the operator's).
    s.receive(&env, &headers, &body, "relay").await
}

/// Why a batch as a whole is refused.
#[derive(Debug)]
struct BatchRefusal {
    reason: &'static str,
    status: StatusCode,
    slug: &'static str,
    detail: String,
}

impl BatchRefusal {
    fn into_response(self) -> Response {
        refused(self.reason, self.status, self.slug, self.detail)
    }
}

/// Decodes a batch: optional gzip (bounded to `max_bytes` decompressed), JSON, schema
/// version, number of events.
fn decode_batch(
    headers: &HeaderMap,
    body: &[u8],
    max_bytes: usize,
) -> Result<EventBatch, BatchRefusal> {
    let bad = |reason, slug, detail: String| BatchRefusal {
        reason,
        status: StatusCode::BAD_REQUEST,
        slug,
        detail,
    };
    if let Some(v) = headers.get(EVENTS_SCHEMA_HEADER) {
        let version = v.to_str().ok().and_then(|v| v.trim().parse::<u32>().ok());
        if version != Some(EVENTS_SCHEMA_VERSION) {
            return Err(bad(
                "schema_version",
                "unsupported-event-schema",
                format!("{EVENTS_SCHEMA_HEADER} must be {EVENTS_SCHEMA_VERSION}"),
            ));
        }
    }
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let inflated;
    let json: &[u8] = match encoding.as_deref() {
        None | Some("identity") => body,
        Some("gzip") => {
            let mut out = Vec::new();
            let limit = u64::try_from(max_bytes)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            flate2::read::GzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| {
                    bad(
                        "gzip",
                        "bad-request",
                        format!("the body is not valid gzip: {e}"),
                    )
                })?;
            if out.len() > max_bytes {
                return Err(BatchRefusal {
                    reason: "too_large",
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    slug: "payload-too-large",
                    detail: format!("the decompressed body is larger than {max_bytes} bytes"),
                });
            }
            inflated = out;
            &inflated
        }
        Some(other) => {
            return Err(BatchRefusal {
                reason: "encoding",
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                slug: "unsupported-media-type",
                detail: format!("Content-Encoding {other:?} is not supported: use gzip or none"),
            });
        }
    };
    let batch: EventBatch = serde_json::from_slice(json).map_err(|e| {
        bad(
            "not_json",
            "bad-request",
            format!("the body is not an event batch: {e}"),
        )
    })?;
    if batch.schema_version != EVENTS_SCHEMA_VERSION {
        return Err(bad(
            "schema_version",
            "unsupported-event-schema",
            format!(
                "schema_version {} is not supported: send {EVENTS_SCHEMA_VERSION}",
                batch.schema_version
            ),
        ));
    }
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(BatchRefusal {
            reason: "too_many_events",
            status: StatusCode::PAYLOAD_TOO_LARGE,
            slug: "too-many-events",
            detail: format!(
                "{} events in one batch: at most {MAX_EVENTS_PER_BATCH}",
                batch.events.len()
            ),
        });
    }
    Ok(batch)
}

/// The metric label of a rejection.
fn reason_label(e: &EventError) -> &'static str {
    match e {
        EventError::Malformed(_) => "malformed",
        EventError::Length { .. } => "length",
        EventError::NotFinite => "not_finite",
        EventError::Time { .. } => "time",
        EventError::Summary(_) => "summary",
        _ => "other",
    }
}

/// Splits a batch into its valid events and the rejected ones (by index), at `now_ms`.
pub(crate) fn validate_events(
    events: &[RawEvent],
    now_ms: u64,
) -> (Vec<Event>, Vec<RejectedEvent>) {
    let mut accepted = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    for (index, raw) in events.iter().enumerate() {
        match raw.decode().and_then(|e| e.validate(now_ms).map(|()| e)) {
            Ok(e) => accepted.push(e),
            Err(e) => {
                metrics::counter!(REJECTED, "reason" => reason_label(&e)).increment(1);
                rejected.push(RejectedEvent {
                    index,
                    reason: e.to_string(),
                });
            }
        }
    }
    (accepted, rejected)
}

impl Ingest {
    /// Decodes, validates and stores a batch of `env`; answers after the commit.
    async fn receive(
        &self,
        env: &EnvironmentId,
        headers: &HeaderMap,
        body: &[u8],
        route: &'static str,
    ) -> Response {
        let started = Instant::now();
        let Some(environment_id) = self.app.feed.environment_id(env) else {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the environment is not loaded yet; retry shortly",
            );
        };
        let batch = match decode_batch(headers, body, self.app.config.events_max_body_bytes) {
            Ok(b) => b,
            Err(r) => return r.into_response(),
        };
        metrics::counter!(RECEIVED, "route" => route).increment(batch.events.len() as u64);
        let now = now_ms();
        let (accepted, rejected) = validate_events(&batch.events, now);
        metrics::counter!(ACCEPTED).increment(accepted.len() as u64);
        if !accepted.is_empty() {
            if self.app.health.is_down() {
                return ApiError::Unavailable("the database is unreachable".into()).into_response();
            }
            if let Err(e) = self
                .store
                .store(environment_id, now, &accepted, batch.sdk.as_ref())
                .await
            {
                return ApiError::from(e).into_response();
            }
            metrics::counter!(STORED).increment(accepted.len() as u64);
        }
        metrics::histogram!(BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        let response = BulkResponse {
            accepted: accepted.len() as u64,
            rejected,
        };
        (StatusCode::OK, axum::Json(response)).into_response()
    }
}

/// Runs [`EventStore::maintain`] every hour (creating partitions ahead, enforcing
/// retention). Owned by [`crate::Server::serve`], aborted when it returns. The first round
/// is an hour after start: the app already ran one while it was built, and a second one
/// racing it at start-up would only repeat the work.
pub(crate) async fn maintenance(store: EventStore) {
    let hour = Duration::from_secs(3600);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + hour, hour);
    loop {
        tick.tick().await;
        match store.maintain(now_ms()).await {
            Ok(m) if m.created.is_empty() && m.dropped.is_empty() && m.deleted_rows == 0 => {}
            Ok(m) => tracing::info!(
                created = ?m.created,
                dropped = ?m.dropped,
                deleted_rows = m.deleted_rows,
                "event partitions maintained"
            ),
            Err(e) => tracing::warn!(error = %e, "event maintenance failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn batches_decode_plain_and_gzip_and_refuse_bad_ones() {
        let body = br#"{"schema_version":1,"events":[{"kind":"custom"}]}"#;
        let plain = HeaderMap::new();
        assert_eq!(decode_batch(&plain, body, 1 << 20).unwrap().events.len(), 1);
        let mut gz = HeaderMap::new();
        gz.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            decode_batch(&gz, &gzip(body), 1 << 20)
                .unwrap()
                .events
                .len(),
            1
        );
        // A gzip bomb stops at the limit.
        let big = gzip(&vec![b' '; 10_000]);
        assert_eq!(
            decode_batch(&gz, &big, 1_000).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(decode_batch(&gz, body, 1 << 20).unwrap_err().reason, "gzip");
        assert_eq!(
            decode_batch(&plain, b"{", 100).unwrap_err().reason,
            "not_json"
        );
        let v2 = br#"{"schema_version":2,"events":[]}"#;
        assert_eq!(
            decode_batch(&plain, v2, 100).unwrap_err().reason,
            "schema_version"
        );
        let mut h = HeaderMap::new();
        h.insert(EVENTS_SCHEMA_HEADER, HeaderValue::from_static("2"));
        assert_eq!(
            decode_batch(&h, body, 100).unwrap_err().reason,
            "schema_version"
        );
        let many = format!(
            r#"{{"schema_version":1,"events":[{}]}}"#,
            vec!["{}"; MAX_EVENTS_PER_BATCH + 1].join(",")
        );
        assert_eq!(
            decode_batch(&plain, many.as_bytes(), 1 << 20)
                .unwrap_err()
                .reason,
            "too_many_events"
        );
    }

    #[test]
    fn authorization_takes_bearer_or_bare_keys() {
        let mut h = HeaderMap::new();
        assert_eq!(authorization_key(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer vxs_1"));
        assert_eq!(authorization_key(&h), Some("vxs_1"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("vxs_2"));
        assert_eq!(authorization_key(&h), Some("vxs_2"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert_eq!(authorization_key(&h), None);
    }
}
