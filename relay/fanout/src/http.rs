//! The SDK endpoints both the control plane and the relay mount: `GET /sdk/v1/stream` (SSE)
//! and `GET /sdk/v1/snapshot` (JSON with `ETag`, `If-None-Match` and pre-compressed gzip).
//!
//! Errors are RFC 9457 `application/problem+json`, except 401 which has no body. Nothing
//! here may sit behind a body timeout: the stream is meant to stay open for hours.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, RETRY_AFTER, VARY, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use vexil_schema::stream::EnvironmentId;

use crate::auth::{AuthError, SdkAuth, hash_sdk_key};
use crate::frame::Frame;
use crate::hub::{Hub, NotServing};

/// Path of the SSE stream.
pub const STREAM_PATH: &str = "/sdk/v1/stream";
/// Path of the snapshot endpoint.
pub const SNAPSHOT_PATH: &str = "/sdk/v1/snapshot";

pub(crate) const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
pub(crate) const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

#[derive(Debug, Clone)]
struct SdkState<A> {
    hub: Hub,
    auth: A,
}

/// The SDK routes, authenticated by `auth` and served from `hub`. Merge it into the
/// application's router; keep body timeouts off these routes.
pub fn sdk_router<A: SdkAuth>(hub: Hub, auth: A) -> Router {
    Router::new()
        .route(STREAM_PATH, get(stream::<A>))
        .route(SNAPSHOT_PATH, get(snapshot::<A>))
        .with_state(SdkState { hub, auth })
}

async fn stream<A: SdkAuth>(State(s): State<SdkState<A>>, headers: HeaderMap) -> Response {
    let env = match authenticate(&s.auth, &headers, s.hub.config().retry_after).await {
        Ok(env) => env,
        Err(response) => return response,
    };
    let last_event_id = headers.get(LAST_EVENT_ID).and_then(|v| v.to_str().ok());
    // The stream ends if the key is revoked (authenticated above, so it is present).
    let subscription = match sdk_key(&headers).map(hash_sdk_key) {
        Some(key) => s.hub.subscribe_with_key(&env, last_event_id, key),
        None => s.hub.subscribe(&env, last_event_id),
    };
    let subscription = match subscription {
        Ok(sub) => sub,
        Err(e) => return not_serving(e, s.hub.config().retry_after),
    };
    tracing::debug!(environment = %env, start = ?subscription.start(), "SDK stream opened");
    let body = Body::from_stream(subscription.map(Ok::<_, Infallible>));
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (X_ACCEL_BUFFERING, HeaderValue::from_static("no")),
        ],
        body,
    )
        .into_response()
}

async fn snapshot<A: SdkAuth>(State(s): State<SdkState<A>>, headers: HeaderMap) -> Response {
    let retry_after = s.hub.config().retry_after;
    let env = match authenticate(&s.auth, &headers, retry_after).await {
        Ok(env) => env,
        Err(response) => return response,
    };
    let current = match s.hub.current(&env) {
        Ok(c) => c,
        Err(e) => return not_serving(e, retry_after),
    };
    let etag = format!("\"{}\"", current.version);
    let mut out = HeaderMap::new();
    // The version in quotes is a valid ETag and never holds a forbidden character.
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(ETAG, v);
    }
    out.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if if_none_match(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let Some(put) = current.put().map(Frame::data) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let body = if accepts_gzip(&headers) {
        match current.gzip().await {
            Ok(gz) => {
                out.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                gz
            }
            Err(e) => {
                tracing::warn!(environment = %env, error = %e, "gzip failed; sending identity");
                put
            }
        }
    } else {
        put
    };
    (out, body).into_response()
}

/// Reads the SDK key from `Authorization` (`<key>` or `Bearer <key>`) and authenticates it.
async fn authenticate<A: SdkAuth>(
    auth: &A,
    headers: &HeaderMap,
    retry_after: Duration,
) -> Result<EnvironmentId, Response> {
    let Some(key) = sdk_key(headers) else {
        return Err(unauthorized());
    };
    auth.authenticate(key)
        .await
        .map_err(|e| auth_error(e, retry_after))
}

/// The response to a refused key: 401 with no body, 403 or 503 as problem+json.
pub(crate) fn auth_error(e: AuthError, retry_after: Duration) -> Response {
    match e {
        AuthError::Unauthorized => unauthorized(),
        AuthError::Forbidden(detail) => problem(StatusCode::FORBIDDEN, "Forbidden", &detail),
        AuthError::Unavailable => {
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "authentication is temporarily unavailable",
            );
            set_retry_after(&mut r, retry_after);
            r
        }
        // Future variants: refuse rather than serve.
        #[allow(unreachable_patterns)]
        _ => unauthorized(),
    }
}

/// The key in `Authorization` (`<key>` or `Bearer <key>`), if any.
pub(crate) fn sdk_key(headers: &HeaderMap) -> Option<&str> {
    authorization_key(headers.get(AUTHORIZATION)?.to_str().ok()?)
}

/// The key of an `Authorization` value: `<key>` or `Bearer <key>` (any case, any spaces
/// around). The one parser behind the axum routes and the lean stream server.
pub(crate) fn authorization_key(value: &str) -> Option<&str> {
    let value = value.trim();
    let key = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None if value.eq_ignore_ascii_case("bearer") => return None,
        None => value,
    };
    (!key.is_empty()).then_some(key)
}

pub(crate) fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
    )
        .into_response()
}

pub(crate) fn not_serving(e: NotServing, retry_after: Duration) -> Response {
    let detail = match e {
        NotServing::NotReady => "the environment's flags are not loaded yet; retry shortly",
        NotServing::ShuttingDown => "this instance is shutting down; reconnect",
    };
    let mut r = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable",
        detail,
    );
    set_retry_after(&mut r, retry_after);
    r
}

fn set_retry_after(r: &mut Response, d: Duration) {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
}

/// An RFC 9457 problem response.
fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// Whether `If-None-Match` lists `etag` (weak comparison) or `*`.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Whether `Accept-Encoding` allows gzip (explicitly or through `*`) with a non-zero q.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut star = false;
    for v in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for part in v.split(',') {
            let mut params = part.split(';');
            let coding = params.next().unwrap_or("").trim();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                return q > 0.0;
            }
            if coding == "*" {
                star = q > 0.0;
            }
        }
    }
    star
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn sdk_key_accepts_raw_and_bearer() {
        assert_eq!(
            sdk_key(&headers(&[("authorization", "sdk-1")])),
            Some("sdk-1")
        );
        assert_eq!(
            sdk_key(&headers(&[("authorization", "Bearer sdk-1")])),
            Some("sdk-1")
        );
        assert_eq!(
            sdk_key(&headers(&[("authorization", "bearer  sdk-1 ")])),
            Some("sdk-1")
        );
        assert_eq!(sdk_key(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(sdk_key(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(sdk_key(&headers(&[])), None);
    }

    #[test]
    fn if_none_match_compares_weakly_and_handles_lists() {
        let tag = "\"12\"";
        assert!(if_none_match(&headers(&[("if-none-match", "\"12\"")]), tag));
        assert!(if_none_match(
            &headers(&[("if-none-match", "W/\"12\"")]),
            tag
        ));
        assert!(if_none_match(
            &headers(&[("if-none-match", "\"3\", \"12\"")]),
            tag
        ));
        assert!(if_none_match(&headers(&[("if-none-match", "*")]), tag));
        assert!(!if_none_match(
            &headers(&[("if-none-match", "\"11\"")]),
            tag
        ));
        assert!(!if_none_match(&headers(&[("if-none-match", "12")]), tag));
        assert!(!if_none_match(&headers(&[]), tag));
    }

    #[test]
    fn accept_encoding_honours_q_values() {
        assert!(accepts_gzip(&headers(&[("accept-encoding", "gzip")])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br, gzip;q=0.5"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[(
            "accept-encoding",
            "*, gzip;q=0"
        )])));
        assert!(!accepts_gzip(&headers(&[(
            "accept-encoding",
            "br, identity"
        )])));
        assert!(!accepts_gzip(&headers(&[])));
    }
}
