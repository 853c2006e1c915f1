//! Request middleware: authentication, `Idempotency-Key` replay, and problem context.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::auth::{API_TOKEN_PREFIX, Actor};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::store::{IdempotencyBegin, StoredResponse};

/// The header carrying an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response replayed for a repeated idempotency key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Authenticates `Authorization: Bearer vxa_…` and puts the [`Actor`] in the request.
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return ApiError::Unauthorized(format!(
            "send an API token as 'Authorization: Bearer {API_TOKEN_PREFIX}…'"
        ))
        .into_response();
    };
    let token = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return ApiError::Unauthorized("use the Bearer authentication scheme".into())
                .into_response();
        }
    };
    if !token.starts_with(API_TOKEN_PREFIX) {
        return ApiError::Unauthorized(
            "the management API takes API tokens (vxa_…); SDK and relay keys cannot use it".into(),
        )
        .into_response();
    }
    match app.store.authenticate_token(token).await {
        Ok(Some(actor)) => {
            tracing::Span::current().record("actor", actor.name.as_str());
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        Ok(None) => ApiError::Unauthorized("the API token is not valid or has been revoked".into())
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
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
    let path = parts.uri.path().to_owned();
    let request_id = request_id_of(&parts.headers);
    let bytes = match to_bytes(body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
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
    hasher.update(&bytes);
    let hash = hasher.finalize().to_vec();

    match app.store.idempotency_begin(token_id, &key, &hash).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(IdempotencyBegin::Mismatch) => ApiError::IdempotencyMismatch.into_response(),
        Ok(IdempotencyBegin::InProgress) => ApiError::IdempotencyInProgress.into_response(),
        Ok(IdempotencyBegin::Replay(stored)) => replay(stored),
        Ok(IdempotencyBegin::Proceed) => {
            let res = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            if res.status().is_server_error() {
                if let Err(e) = app.store.idempotency_abandon(token_id, &key).await {
                    tracing::warn!(error = %e, "could not release an idempotency key");
                }
                return res;
            }
            let (mut res_parts, body) = res.into_parts();
            let body = match to_bytes(body, usize::MAX).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "could not buffer a response for idempotency");
                    let _ = app.store.idempotency_abandon(token_id, &key).await;
                    return ApiError::internal(std::io::Error::other("response body"))
                        .into_response();
                }
            };
            let header = |name: header::HeaderName| {
                res_parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            // A problem body is finished by `problem_context` on the way out; store it the
            // way the client will see it.
            let stored_body = match res_parts.extensions.remove::<Problem>() {
                Some(mut p) => {
                    p.instance = Some(path);
                    p.request_id = request_id;
                    serde_json::to_vec(&p).unwrap_or_else(|_| body.to_vec())
                }
                None => body.to_vec(),
            };
            let stored = StoredResponse {
                status: res_parts.status.as_u16(),
                content_type: header(header::CONTENT_TYPE),
                etag: header(header::ETAG),
                location: header(header::LOCATION),
                body: stored_body.clone(),
            };
            if let Err(e) = app
                .store
                .idempotency_complete(token_id, &key, &stored)
                .await
            {
                tracing::warn!(error = %e, "could not store a response for idempotency");
            }
            res_parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(res_parts, Body::from(stored_body))
        }
    }
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
    let res = next.run(req).await;
    let status = res.status();
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
