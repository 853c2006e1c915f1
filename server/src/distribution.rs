//! The distribution endpoints, all served from the change feed through `vexil-relay`'s
//! shared handlers (the very code the edge relay runs):
//!
//! - `GET /sdk/v1/stream` and `GET /sdk/v1/snapshot` (SDK key);
//! - `GET /relay/v1/stream` (relay key);
//! - `POST /ofrep/v1/evaluate/flags/{key}`, `POST /ofrep/v1/evaluate/flags` and
//!   `GET /ofrep/v1/configuration` (SDK key, rate limited per key);
//!
//! and [`settle_writes`], the API layer that gives writers read-your-writes on this server.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use vexil_fanout::ofrep::ofrep_router_with;
use vexil_fanout::{relay_router, sdk_router};

use crate::app::AppState;

/// Largest OFREP request body (a context).
const MAX_OFREP_BODY: usize = 256 * 1024;

/// The SDK, relay and OFREP routes.
pub fn routes(state: &AppState) -> Router {
    let feed = &state.feed;
    let ofrep = state
        .config
        .distribution
        .ofrep_config()
        .client_keys(feed.hub().client_keys().clone());
    Router::new()
        .merge(sdk_router(feed.hub().clone(), feed.clone()))
        .merge(relay_router(feed.hub().clone(), feed.clone()))
        .merge(vexil_fanout::client_router(
            feed.hub().clone(),
            feed.clone(),
        ))
        .merge(
            ofrep_router_with(feed.clone(), feed.clone(), ofrep)
                .layer(DefaultBodyLimit::max(MAX_OFREP_BODY)),
        )
}

/// Whether `path` is one of the distribution endpoints (served in their own formats, not
/// problem+json).
pub fn is_distribution_path(path: &str) -> bool {
    ["/sdk/", "/relay/", "/ofrep/", "/client/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// How long a write waits for this process's in-memory state to include it.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// After a successful write through the API, waits (briefly) until this process's change
/// feed has applied it, so that the writer's next evaluation or SDK snapshot from this server
/// reflects its write. Other servers get it through `NOTIFY` within milliseconds.
pub async fn settle_writes(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let path = req.uri().path();
    let evaluation = path.starts_with("/api/v1/evaluate") || path.ends_with("/explain");
    let res = next.run(req).await;
    if mutating
        && !evaluation
        && res.status().is_success()
        && !state.feed.settle(SETTLE_TIMEOUT).await
    {
        tracing::warn!("the change feed did not apply a write within {SETTLE_TIMEOUT:?}");
    }
    res
}
