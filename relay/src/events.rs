//! Analytics events at the relay: `POST /events/v1/bulk` from SDKs (and any HTTP client with
//! an SDK key), `POST /relay/v1/events/{project}/{environment}` from relays chained below,
//! and the exposures of the relay's own OFREP evaluations, all forwarded upstream to
//! `POST {upstream}/relay/v1/events/{project}/{environment}` with the relay key.
//!
//! **Acknowledged only after upstream acknowledged.** A request's events wait in a bounded
//! buffer (`VEXIL_EVENTS_BUFFER` events in all) for the environment's forwarder, which groups
//! the requests waiting (several SDKs' batches) into one upstream request of at most
//! [`MAX_EVENTS_PER_BATCH`] events, gzip-compressed, retried with backoff. The SDK gets its
//! `200` with the [`BulkResponse`] only once upstream answered `200` (its commit), with the
//! upstream's per-event rejections mapped back to the SDK's indices. If upstream cannot be
//! reached within the attempts, or the buffer is full, the SDK gets `503` with
//! `Retry-After` and retries: nothing the relay acknowledged can be lost when it dies, and
//! memory stays bounded. (A batch committed upstream whose answer was lost is sent again by
//! the SDK's retry: delivery is at least once.)
//!
//! Stream fan-out never waits for any of this: event requests run on their own tasks, the
//! forwarders are separate tasks with bounded in-flight requests, and the lean SSE path
//! shares nothing with them but the key table.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use vexil_fanout::auth::{AuthError, SdkAuth};
use vexil_fanout::exposures::ExposureSink;
use vexil_fanout::relay_stream::RelayAuth;
use vexil_schema::events::{
    BulkResponse, EVENTS_SCHEMA_HEADER, EVENTS_SCHEMA_VERSION, Event, EventBatch, Exposure,
    MAX_EVENTS_PER_BATCH, RawEvent, RejectedEvent,
};
use vexil_schema::stream::EnvironmentId;

/// Path of the SDK endpoint.
pub const BULK_PATH: &str = "/events/v1/bulk";
/// Path of the relay endpoint, here and upstream.
pub const RELAY_EVENTS_PATH: &str = "/relay/v1/events/{project}/{environment}";

/// Counter: events received for forwarding (SDK batches, relays below, OFREP exposures),
/// whether or not there was room for them.
pub const RECEIVED: &str = "vexil_relay_events_received_total";
/// Counter: events acknowledged by upstream.
pub const FORWARDED: &str = "vexil_relay_events_forwarded_total";
/// Counter: events not forwarded, by `reason` (`buffer_full`, `upstream`); those of SDK
/// requests were answered `503`, so the SDK still holds them.
pub const DROPPED: &str = "vexil_relay_events_dropped_total";
/// Counter: upstream requests retried.
pub const RETRIED: &str = "vexil_relay_events_retried_total";
/// Gauge: events waiting in the buffer or in flight upstream.
pub const BUFFERED: &str = "vexil_relay_events_buffered";

/// Tuning of the forwarder.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Base URL of the upstream.
    pub upstream_url: String,
    /// The relay key sent upstream.
    pub relay_key: String,
    /// Most events buffered (waiting or in flight) across environments.
    pub buffer: usize,
    /// Concurrent upstream requests per environment.
    pub concurrency: usize,
    /// Attempts per upstream request before the SDKs waiting for it get `503`.
    pub attempts: u32,
    /// Timeout of one upstream request.
    pub timeout: Duration,
    /// Certificate authorities trusted for the upstream besides the public roots
    /// (`VEXIL_UPSTREAM_CA`).
    pub roots: Vec<reqwest::Certificate>,
}

/// Why events could not be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The buffer is full: retry later.
    #[error("the relay's event buffer is full")]
    Full,
    /// Upstream did not acknowledge the events.
    #[error("upstream did not acknowledge the events: {0}")]
    Upstream(String),
}

type Reply = oneshot::Sender<Result<Vec<RejectedEvent>, ForwardError>>;

/// One request's events waiting for upstream.
struct Pending {
    events: Vec<RawEvent>,
    _permit: OwnedSemaphorePermit,
    reply: Option<Reply>,
}

/// The forwarder: per-environment queues and tasks, one bounded buffer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ForwarderConfig,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    queues: Mutex<HashMap<EnvironmentId, mpsc::UnboundedSender<Pending>>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("events", &self.events.len())
            .finish()
    }
}

impl Forwarder {
    /// A forwarder with its own HTTP client.
    pub fn new(config: ForwarderConfig) -> Result<Self, reqwest::Error> {
        let client = config
            .roots
            .iter()
            .fold(reqwest::Client::builder(), |b, c| {
                b.add_root_certificate(c.clone())
            })
            .timeout(config.timeout)
            .build()?;
        // Registered at zero so that alerts on their increase see a series from the start.
        metrics::counter!(RECEIVED).increment(0);
        metrics::counter!(FORWARDED).increment(0);
        for reason in ["buffer_full", "upstream"] {
            metrics::counter!(DROPPED, "reason" => reason).increment(0);
        }
        metrics::gauge!(BUFFERED).set(0.0);
        let permits = Arc::new(Semaphore::new(
            config.buffer.clamp(1, Semaphore::MAX_PERMITS),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                client,
                permits,
                queues: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Events waiting or in flight now.
    pub fn buffered(&self) -> usize {
        self.inner
            .config
            .buffer
            .saturating_sub(self.inner.permits.available_permits())
    }

    /// Queues `events` of `env`; the receiver resolves once upstream acknowledged them (with
    /// upstream's rejections, by index in `events`) or gave up. `Full` at once when the
    /// buffer has no room for them.
    pub fn submit(
        &self,
        env: &EnvironmentId,
        events: Vec<RawEvent>,
    ) -> Result<oneshot::Receiver<Result<Vec<RejectedEvent>, ForwardError>>, ForwardError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(env, events, Some(tx))?;
        Ok(rx)
    }

    fn enqueue(
        &self,
        env: &EnvironmentId,
        events: Vec<RawEvent>,
        reply: Option<Reply>,
    ) -> Result<(), ForwardError> {
        metrics::counter!(RECEIVED).increment(events.len() as u64);
        let n = u32::try_from(events.len().max(1)).map_err(|_| ForwardError::Full)?;
        let Ok(permit) = Arc::clone(&self.inner.permits).try_acquire_many_owned(n) else {
            metrics::counter!(DROPPED, "reason" => "buffer_full").increment(events.len() as u64);
            return Err(ForwardError::Full);
        };
        metrics::gauge!(BUFFERED).set(self.buffered() as f64);
        let pending = Pending {
            events,
            _permit: permit,
            reply,
        };
        let mut queues = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tx = queues.entry(env.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_environment(Arc::clone(&self.inner), env.clone(), rx));
            tx
        });
        // The task holds the receiver for the life of the forwarder: sending cannot fail.
        let _ = tx.send(pending);
        Ok(())
    }
}

impl ExposureSink for Forwarder {
    fn record(&self, env: &EnvironmentId, exposure: Exposure) {
        // Nobody waits: a full buffer drops it (counted).
        let _ = self.enqueue(env, vec![RawEvent::from(&Event::Exposure(exposure))], None);
    }
}

/// Groups the waiting requests of `env` into upstream requests, at most
/// `concurrency` in flight.
async fn run_environment(
    inner: Arc<Inner>,
    env: EnvironmentId,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(inner.config.concurrency.max(1)));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for a free slot first: while every slot is busy, requests pile up and the
        // next upstream request carries them all.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut n = first.events.len();
        let mut batch = vec![first];
        while let Ok(p) = rx.try_recv() {
            if n + p.events.len() > MAX_EVENTS_PER_BATCH {
                carry = Some(p);
                break;
            }
            n += p.events.len();
            batch.push(p);
        }
        let inner = Arc::clone(&inner);
        let env = env.clone();
        tokio::spawn(async move {
            forward(&inner, &env, batch).await;
            drop(slot);
            metrics::gauge!(BUFFERED).set(
                inner
                    .config
                    .buffer
                    .saturating_sub(inner.permits.available_permits()) as f64,
            );
        });
    }
}

/// Sends `batch` upstream as one request and answers every request in it.
async fn forward(inner: &Inner, env: &EnvironmentId, batch: Vec<Pending>) {
    let total: usize = batch.iter().map(|p| p.events.len()).sum();
    let mut events = Vec::with_capacity(total);
    for p in &batch {
        events.extend(p.events.iter().cloned());
    }
    let result = send(
        inner,
        env,
        EventBatch {
            schema_version: EVENTS_SCHEMA_VERSION,
            sdk: None,
            events,
        },
    )
    .await;
    match &result {
        Ok(r) => metrics::counter!(FORWARDED).increment(r.accepted),
        Err(e) => {
            tracing::warn!(environment = %env, events = total, error = %e, "events not forwarded");
            metrics::counter!(DROPPED, "reason" => "upstream").increment(total as u64);
        }
    }
    let mut offset = 0;
    for p in batch {
        let len = p.events.len();
        let answer = match &result {
            Ok(r) => Ok(r
                .rejected
                .iter()
                .filter(|x| x.index >= offset && x.index < offset + len)
                .map(|x| RejectedEvent {
                    index: x.index - offset,
                    reason: x.reason.clone(),
                })
                .collect()),
            Err(e) => Err(e.clone()),
        };
        offset += len;
        if let Some(reply) = p.reply {
            let _ = reply.send(answer);
        }
    }
}

/// One upstream request with retries.
async fn send(
    inner: &Inner,
    env: &EnvironmentId,
    batch: EventBatch,
) -> Result<BulkResponse, ForwardError> {
    let json = serde_json::to_vec(&batch).map_err(|e| ForwardError::Upstream(e.to_string()))?;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&json)
        .map_err(|e| ForwardError::Upstream(e.to_string()))?;
    let body = Bytes::from(
        enc.finish()
            .map_err(|e| ForwardError::Upstream(e.to_string()))?,
    );
    let url = format!(
        "{}/relay/v1/events/{}/{}",
        inner.config.upstream_url.trim_end_matches('/'),
        env.project(),
        env.environment()
    );
    let mut delay = Duration::from_millis(100);
    let mut last = String::new();
    for attempt in 1..=inner.config.attempts.max(1) {
        if attempt > 1 {
            metrics::counter!(RETRIED).increment(1);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        let res = inner
            .client
            .post(&url)
            .bearer_auth(&inner.config.relay_key)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_ENCODING, "gzip")
            .header(EVENTS_SCHEMA_HEADER, EVENTS_SCHEMA_VERSION.to_string())
            .body(body.clone())
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                return r
                    .json::<BulkResponse>()
                    .await
                    .map_err(|e| ForwardError::Upstream(format!("unreadable answer: {e}")));
            }
            Ok(r)
                if r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS =>
            {
                last = format!("upstream answered {}", r.status());
            }
            Ok(r) => {
                // 4xx: retrying the same request cannot help.
                return Err(ForwardError::Upstream(format!(
                    "upstream refused the batch: {}",
                    r.status()
                )));
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(ForwardError::Upstream(last))
}

/// What the event routes share.
#[derive(Debug, Clone)]
pub(crate) struct EventRoutes<S, R> {
    pub forwarder: Forwarder,
    pub sdk_auth: S,
    pub relay_auth: R,
    pub max_body_bytes: usize,
    /// Client-side keys (browsers send events too, with CORS).
    pub client_keys: vexil_fanout::ClientKeyTable,
}

/// `POST /events/v1/bulk` and `POST /relay/v1/events/{project}/{environment}`.
pub(crate) fn router<S: SdkAuth, R: RelayAuth>(routes: EventRoutes<S, R>) -> Router {
    let limit = routes.max_body_bytes;
    let browser = Router::new()
        .route(BULK_PATH, post(bulk::<S, R>).options(preflight))
        .layer(axum::middleware::from_fn(vexil_fanout::cors));
    Router::new()
        .merge(browser)
        .route(RELAY_EVENTS_PATH, post(relay_bulk::<S, R>))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(routes)
}

/// An RFC 9457 problem response (`Retry-After: 1` on 503).
pub(crate) fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut r = (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )],
        body.to_string(),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The key of a `Bearer` (or bare) `Authorization` header.
pub(crate) fn authorization_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let key = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None => value,
    };
    (!key.is_empty()).then_some(key)
}

/// The response refusing a key.
pub(crate) fn auth_refusal(e: AuthError) -> Response {
    match e {
        AuthError::Forbidden(why) => problem(StatusCode::FORBIDDEN, &why),
        AuthError::Unavailable => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "authentication is temporarily unavailable",
        ),
        _ => problem(StatusCode::UNAUTHORIZED, "send an SDK key in Authorization"),
    }
}

/// A preflight without `Origin` (the CORS layer answers those with one).
async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `POST /events/v1/bulk`: an SDK key in `Authorization`, or a client-side key (header or
/// `?key=`) from an allowed origin (see [`vexil_fanout::events_caller`]).
async fn bulk<S: SdkAuth, R: RelayAuth>(
    State(s): State<EventRoutes<S, R>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let env = match vexil_fanout::events_caller(&s.client_keys, &headers, uri.query()) {
        Ok(vexil_fanout::EventsCaller::Client { env, .. }) => env,
        Ok(vexil_fanout::EventsCaller::Sdk(key)) => match s.sdk_auth.authenticate(key).await {
            Ok(env) => env,
            Err(e) => return auth_refusal(e),
        },
        Err(refusal) if refusal.status() == StatusCode::UNAUTHORIZED => {
            return auth_refusal(AuthError::Unauthorized);
        }
        Err(refusal) => return *refusal,
    };
    receive(&s.forwarder, &env, &headers, &body, s.max_body_bytes).await
}

async fn relay_bulk<S: SdkAuth, R: RelayAuth>(
    State(s): State<EventRoutes<S, R>>,
    Path((project, environment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = authorization_key(&headers) else {
        return auth_refusal(AuthError::Unauthorized);
    };
    let scope = match s.relay_auth.authenticate(key).await {
        Ok(scope) => scope,
        Err(e) => return auth_refusal(e),
    };
    match EnvironmentId::parse(&format!("{project}/{environment}")) {
        Ok(env) if scope.contains(&env) => {
            receive(&s.forwarder, &env, &headers, &body, s.max_body_bytes).await
        }
        _ => problem(
            StatusCode::FORBIDDEN,
            "the environment is not in this relay key's scope",
        ),
    }
}

/// Decodes a batch (the same checks as the server's, so that a batch the server would refuse
/// as a whole is refused here at once) and waits for upstream's acknowledgement.
async fn receive(
    forwarder: &Forwarder,
    env: &EnvironmentId,
    headers: &HeaderMap,
    body: &[u8],
    max_bytes: usize,
) -> Response {
    let batch = match decode(headers, body, max_bytes) {
        Ok(b) => b,
        Err((status, detail)) => return problem(status, &detail),
    };
    let n = batch.events.len();
    if n == 0 {
        return (StatusCode::OK, axum::Json(BulkResponse::default())).into_response();
    }
    let events = with_sender(batch);
    let rx = match forwarder.submit(env, events) {
        Ok(rx) => rx,
        Err(_) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the relay's event buffer is full; retry shortly",
            );
        }
    };
    match rx.await {
        Ok(Ok(rejected)) => {
            let response = BulkResponse {
                accepted: (n - rejected.len().min(n)) as u64,
                rejected,
            };
            (StatusCode::OK, axum::Json(response)).into_response()
        }
        _ => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream did not acknowledge the events; retry shortly",
        ),
    }
}

/// A batch's events with the batch's sender written into its summaries (which are forwarded
/// among other SDKs' events, in a batch without `sdk`).
fn with_sender(batch: EventBatch) -> Vec<RawEvent> {
    let Some(sdk) = batch.sdk else {
        return batch.events;
    };
    let Ok(sdk) = serde_json::to_value(&sdk) else {
        return batch.events;
    };
    batch
        .events
        .into_iter()
        .map(|mut e| {
            if let Value::Object(fields) = &mut e.0
                && fields.get("kind").and_then(Value::as_str) == Some("summary")
                && !fields.contains_key("sdk")
            {
                fields.insert("sdk".to_owned(), sdk.clone());
            }
            e
        })
        .collect()
}

fn decode(
    headers: &HeaderMap,
    body: &[u8],
    max_bytes: usize,
) -> Result<EventBatch, (StatusCode, String)> {
    let bad = |d: String| (StatusCode::BAD_REQUEST, d);
    if let Some(v) = headers.get(EVENTS_SCHEMA_HEADER)
        && v.to_str().ok().and_then(|v| v.trim().parse::<u32>().ok()) != Some(EVENTS_SCHEMA_VERSION)
    {
        return Err(bad(format!(
            "{EVENTS_SCHEMA_HEADER} must be {EVENTS_SCHEMA_VERSION}"
        )));
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
                .map_err(|e| bad(format!("the body is not valid gzip: {e}")))?;
            if out.len() > max_bytes {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the decompressed body is larger than {max_bytes} bytes"),
                ));
            }
            inflated = out;
            &inflated
        }
        Some(other) => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {other:?} is not supported: use gzip or none"),
            ));
        }
    };
    let batch: EventBatch = serde_json::from_slice(json)
        .map_err(|e| bad(format!("the body is not an event batch: {e}")))?;
    if batch.schema_version != EVENTS_SCHEMA_VERSION {
        return Err(bad(format!(
            "schema_version {} is not supported: send {EVENTS_SCHEMA_VERSION}",
            batch.schema_version
        )));
    }
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_EVENTS_PER_BATCH} events per batch"),
        ));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_get_the_batch_sender() {
        let batch: EventBatch = serde_json::from_value(json!({
            "schema_version": 1,
            "sdk": {"name": "vexil-rust", "version": "1", "instance_id": "i"},
            "events": [
                {"kind": "summary", "start": 1, "end": 2, "environment_version": 1, "counters": []},
                {"kind": "summary", "start": 1, "end": 2, "environment_version": 1, "counters": [],
                 "sdk": {"name": "other", "version": "2", "instance_id": "j"}},
                {"kind": "custom", "time": 1, "event_key": "k", "context_key": "u"}
            ]
        }))
        .unwrap();
        let events = with_sender(batch);
        assert_eq!(events[0].0["sdk"]["name"], "vexil-rust");
        assert_eq!(events[1].0["sdk"]["name"], "other");
        assert!(events[2].0.get("sdk").is_none());
    }
}
