//! Request middleware: authentication, `Idempotency-Key` replay, and problem context.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::auth::{API_TOKEN_PREFIX, Actor};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::store::{IdempotencyBegin, IdempotencyClaim, StoredResponse};

/// The header carrying an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response replayed for a repeated idempotency key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Authenticates `Authorization: Bearer vxa_…` and puts the [`Actor`] in the request.
///
/// Failures are counted per client address (metric `vexil_auth_failures_total{reason}`);
/// an address past its limit gets `429` with `Retry-After` without a database lookup,
/// unless its token was verified recently (see [`crate::throttle`]). While the database is
/// known to be down, writes are refused at once with `503` and `Retry-After`.
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let client = client_addr(&req, app.config.trust_forwarded_for);
    let token = bearer_token(req.headers());
    let cached = token
        .as_ref()
        .ok()
        .and_then(|t| app.store.cached_token(t, app.health.is_down()));
    if cached.is_none()
        && let Some(wait) = client.and_then(|ip| app.auth_throttle.blocked(ip, Instant::now()))
    {
        metrics::counter!("vexil_auth_failures_total", "reason" => "throttled").increment(1);
        return throttled(wait);
    }
    let actor = match (token, cached) {
        (Err((reason, e)), _) => return refuse(&app, client, reason, e),
        (Ok(_), Some(actor)) => actor,
        (Ok(token), None) => match app.store.authenticate_token(&token).await {
            Ok(Some(actor)) => actor,
            Ok(None) => {
                return refuse(
                    &app,
                    client,
                    "unknown",
                    ApiError::Unauthorized("the API token is not valid or has been revoked".into()),
                );
            }
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    if app.health.is_down() && is_database_write(&req) {
        return database_down();
    }
    tracing::Span::current().record("actor", actor.name.as_str());
    req.extensions_mut().insert(actor);
    next.run(req).await
}

/// The presented API token, or why there is none usable (a metric label and the error).
fn bearer_token(headers: &HeaderMap) -> Result<String, (&'static str, ApiError)> {
    let Some(header) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err((
            "missing",
            ApiError::Unauthorized(format!(
                "send an API token as 'Authorization: Bearer {API_TOKEN_PREFIX}…'"
            )),
        ));
    };
    let token = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err((
                "scheme",
                ApiError::Unauthorized("use the Bearer authentication scheme".into()),
            ));
        }
    };
    if !token.starts_with(API_TOKEN_PREFIX) {
        return Err((
            "wrong_kind",
            ApiError::Unauthorized(
                "the management API takes API tokens (vxa_…); SDK and relay keys cannot use it"
                    .into(),
            ),
        ));
    }
    Ok(token.to_owned())
}

/// Counts a failed authentication and answers it.
fn refuse(app: &AppState, client: Option<IpAddr>, reason: &'static str, e: ApiError) -> Response {
    metrics::counter!("vexil_auth_failures_total", "reason" => reason).increment(1);
    if let Some(ip) = client {
        app.auth_throttle.failed(ip, Instant::now());
    }
    e.into_response()
}

/// `429` with `Retry-After` for a client past its failed-authentication limit.
fn throttled(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut res = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-failed-authentications",
        Some(format!(
            "too many failed authentications from this address; retry in {secs} s"
        )),
    )
    .into_response_with_status();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    res
}

/// Whether a request writes to the database: any mutating method, except evaluation
/// (served from memory).
fn is_database_write(req: &Request) -> bool {
    let path = req.uri().path();
    let evaluation = path.starts_with("/api/v1/evaluate") || path.ends_with("/explain");
    matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) && !evaluation
}

/// Seconds a client is asked to wait before retrying while the database is unreachable.
const RETRY_AFTER_UNAVAILABLE_SECS: u32 = 2;

/// `503` with `Retry-After`, without touching the database.
fn database_down() -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        Some("the service cannot reach its database; retry shortly".into()),
    )
    .into_response_with_status()
}

/// The client address throttling is keyed by: the peer, or with `trust_forwarded_for` the
/// last `X-Forwarded-For` entry (the one the nearest proxy added; earlier ones are the
/// client's word). `None` when served without a socket (in-process router tests).
fn client_addr(req: &Request, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|a| a.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Replays the stored response of a `POST` whose `Idempotency-Key` was seen before with the
/// same request, refuses one seen with a different request, and stores the response of a
/// first one. Runs after [`authenticate`]: keys are scoped to the API token.
pub async fn idempotency(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return next.run(req).await;
    };
    let Some(key) = key
        .to_str()
        .ok()
        .filter(|k| valid_key(k))
        .map(str::to_owned)
    else {
        return ApiError::BadRequest(
            "Idempotency-Key: must be 1 to 255 visible ASCII characters".into(),
        )
        .into_response();
    };
    let Some(token_id) = req.extensions().get::<Actor>().and_then(|a| a.token_id) else {
        return ApiError::Unauthorized("missing API token".into()).into_response();
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let hash = request_hash(&parts, &bytes);
    match app.store.idempotency_begin(token_id, &key, &hash).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(IdempotencyBegin::Mismatch) => ApiError::IdempotencyMismatch.into_response(),
        Ok(IdempotencyBegin::InProgress) => ApiError::IdempotencyInProgress.into_response(),
        Ok(IdempotencyBegin::Replay(stored)) => replay(stored),
        Ok(IdempotencyBegin::Applied) => response_lost(),
        Ok(IdempotencyBegin::Proceed) => {
            let claim = IdempotencyClaim::new(token_id, &key);
            let path = parts.uri.path().to_owned();
            let request_id = request_id_of(&parts.headers);
            let res = claim
                .clone()
                .scope(next.run(Request::from_parts(parts, Body::from(bytes))))
                .await;
            if res.status().is_server_error() {
                // Something written keeps its record, answering "applied" to a retry rather
                // than letting it write again; nothing written releases the key.
                if !claim.is_committed() {
                    release(&app, token_id, &key).await;
                }
                return res;
            }
            let (mut res_parts, body) = res.into_parts();
            let body = match to_bytes(body, usize::MAX).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "could not buffer a response for idempotency");
                    if !claim.is_committed() {
                        release(&app, token_id, &key).await;
                    }
                    return ApiError::internal(std::io::Error::other("response body"))
                        .into_response();
                }
            };
            // A problem body is finished by `problem_context` on the way out; store it the
            // way the client will see it.
            let client_body = match res_parts.extensions.remove::<Problem>() {
                Some(mut p) => {
                    p.instance = Some(path);
                    p.request_id = request_id;
                    serde_json::to_vec(&p).unwrap_or_else(|_| body.to_vec())
                }
                None => body.to_vec(),
            };
            let stored = stored_response(&res_parts, &client_body);
            if let Err(e) = app
                .store
                .idempotency_complete(token_id, &key, &stored)
                .await
            {
                tracing::warn!(error = %e, "could not store a response for idempotency");
            }
            res_parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(res_parts, Body::from(client_body))
        }
    }
}

/// What identifies a request for its `Idempotency-Key`: method, path and query, body.
fn request_hash(parts: &axum::http::request::Parts, body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("")
            .as_bytes(),
    );
    hasher.update([0]);
    hasher.update(body);
    hasher.finalize().to_vec()
}

/// The answer to a repeat of a request that was applied but whose response was never stored.
fn response_lost() -> Response {
    Problem::new(
        StatusCode::CONFLICT,
        "idempotency-response-lost",
        Some(
            "the first request with this Idempotency-Key was applied, but its response was \
             not kept (the server stopped before storing it); it is not applied again: read \
             the resource to see its state"
                .into(),
        ),
    )
    .into_response_with_status()
}

/// Releases a key whose request wrote nothing, so that it may be retried.
async fn release(app: &AppState, token_id: i64, key: &str) {
    if let Err(e) = app.store.idempotency_abandon(token_id, key).await {
        tracing::warn!(error = %e, "could not release an idempotency key");
    }
}

/// The response as it is kept for replays: a secret (a token or key just created or rotated)
/// is shown once and never stored.
fn stored_response(parts: &axum::http::response::Parts, body: &[u8]) -> StoredResponse {
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(header::CONTENT_TYPE);
    let kept_body = content_type
        .as_deref()
        .filter(|t| t.starts_with("application/json"))
        .and_then(|_| without_secret(body))
        .unwrap_or_else(|| body.to_vec());
    StoredResponse {
        status: parts.status.as_u16(),
        content_type,
        etag: header(header::ETAG),
        location: header(header::LOCATION),
        body: kept_body,
    }
}

/// Field added to a stored response whose `secret` was removed before storing it.
pub const SECRET_WITHHELD: &str = "secret_withheld";

/// A JSON object body without its top-level `secret`, marked [`SECRET_WITHHELD`]; `None`
/// when there is no secret to remove.
fn without_secret(body: &[u8]) -> Option<Vec<u8>> {
    let mut doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    doc.remove("secret")?;
    doc.insert(SECRET_WITHHELD.to_owned(), serde_json::Value::Bool(true));
    serde_json::to_vec(&doc).ok()
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut res = (status, stored.body).into_response();
    let h = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, stored.content_type),
        (header::ETAG, stored.etag),
        (header::LOCATION, stored.location),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    }
    h.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    res
}

fn request_id_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Adds the request path and id to every problem response, and turns the framework's own
/// error responses (unknown route, wrong method, bad path or query, oversized body) into
/// problems.
pub async fn problem_context(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let request_id = request_id_of(req.headers());
    let mut res = next.run(req).await;
    let status = res.status();
    if status == StatusCode::SERVICE_UNAVAILABLE && !res.headers().contains_key(header::RETRY_AFTER)
    {
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER_UNAVAILABLE_SECS),
        );
    }
    if let Some(mut problem) = res.extensions().get::<Problem>().cloned() {
        problem.instance = Some(path);
        problem.request_id = request_id;
        let (mut parts, _) = res.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(
            parts,
            Body::from(serde_json::to_vec(&problem).unwrap_or_default()),
        );
    }
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if is_problem {
        return res;
    }
    let (parts, body) = res.into_parts();
    let detail = if status.is_client_error() {
        match to_bytes(body, 4096).await {
            Ok(b) if !b.is_empty() => Some(String::from_utf8_lossy(&b).into_owned()),
            _ => None,
        }
    } else {
        tracing::error!(%status, "request failed");
        None
    };
    let slug = match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let detail = detail.or_else(|| match status {
        StatusCode::NOT_FOUND => Some(format!("no route for {path}")),
        _ => None,
    });
    let mut problem = Problem::new(status, slug, detail);
    problem.instance = Some(path);
    problem.request_id = request_id;
    let mut out = problem.into_response_with_status();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.extensions_mut().remove::<Problem>();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(forwarded: &[&str], peer: [u8; 4]) -> Request {
        let mut b = Request::builder().uri("/api/v1/projects");
        for f in forwarded {
            b = b.header("x-forwarded-for", *f);
        }
        let mut req = b.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((peer, 40_000))));
        req
    }

    #[test]
    fn the_client_address_is_the_peer_unless_the_proxy_is_trusted() {
        let req = request(&["203.0.113.9, 10.0.0.7"], [10, 0, 0, 1]);
        assert_eq!(client_addr(&req, false), Some(IpAddr::from([10, 0, 0, 1])));
        // Trusted: the entry the nearest proxy appended, not what the client claimed first.
        assert_eq!(client_addr(&req, true), Some(IpAddr::from([10, 0, 0, 7])));
        let req = request(&["1.1.1.1", "198.51.100.4"], [10, 0, 0, 1]);
        assert_eq!(
            client_addr(&req, true),
            Some(IpAddr::from([198, 51, 100, 4]))
        );
        // An unusable last entry falls back to the peer, never to a client-supplied one.
        let req = request(&["1.1.1.1, garbage"], [10, 0, 0, 1]);
        assert_eq!(client_addr(&req, true), Some(IpAddr::from([10, 0, 0, 1])));
    }

    #[test]
    fn secrets_are_removed_from_stored_bodies() {
        let body = br#"{"id":3,"hint":"vxs_...abcd","secret":"vxs_0123"}"#;
        let kept = without_secret(body).unwrap();
        let kept: serde_json::Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(
            kept,
            serde_json::json!({"id": 3, "hint": "vxs_...abcd", "secret_withheld": true})
        );
        assert_eq!(without_secret(br#"{"id":3}"#), None);
        assert_eq!(without_secret(b"[1,2]"), None);
        assert_eq!(without_secret(b"not json"), None);
    }
}
