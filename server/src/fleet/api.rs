//! The fleet routes: `GET /api/v1/projects/{project}/environments/{environment}/fleet`,
//! `…/flag-usage` and `…/stale-flags` (viewer; mounted by [`crate::api`]), and
//! `POST /relay/v1/fleet` (relay key; [`relay_routes`]), where relays send their reports.

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use utoipa::IntoParams;
use vexil_fanout::{AuthError, RelayAuth};
use vexil_schema::fleet::{FLEET_REPORT_PATH, FleetReport};
use vexil_schema::stream::EnvironmentId;

use super::stale::{StaleQuery, StaleReport};
use super::store::{self, FlagUsage, Meta};
use super::view::{self, FleetView, SourceKind};
use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, StrictQuery};

/// Largest fleet report accepted (a relay serving many environments).
const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;

fn ttl_ms() -> u64 {
    u64::try_from(super::REPORT_TTL.as_millis()).unwrap_or(u64::MAX)
}

/// The environment's fleet: SDK streams across relays and server instances, the share on
/// the latest version, and how the recent changes converged (time until 50, 90, 99 and 100 %
/// of the streams had each). Reports are at most a few seconds old.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/fleet",
    tag = "fleet",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    responses((status = 200, body = FleetView), (status = 404, body = Problem)))]
pub(crate) async fn get_fleet(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Json<FleetView>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(environment_fleet(&app, &project, &environment).await?))
}

/// An environment's fleet now: the reports of its relays and servers, combined (the API's
/// answer and the console's fleet page and inline convergence panels).
pub(crate) async fn environment_fleet(
    app: &AppState,
    project: &str,
    environment: &str,
) -> Result<FleetView, crate::store::StoreError> {
    let mut pc = app.store.db().acquire().await?;
    let mut c = pc.conn();
    let (env_id, version) = store::environment_id(&mut c, project, environment).await?;
    let sources = store::load(&mut c, env_id, crate::events::now_ms()).await?;
    Ok(view::combine(version, &sources))
}

/// The usage window (query parameter).
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// Count evaluations of the last this many days (default 30).
    #[param(minimum = 1, maximum = 3650)]
    days: Option<u32>,
}

/// Per flag, from the SDKs' evaluation summaries: when last evaluated, evaluations by
/// variation over the window, and the SDKs (name, version) seen evaluating it.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/flag-usage",
    tag = "fleet",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           UsageQuery),
    responses((status = 200, body = Vec<FlagUsage>), (status = 404, body = Problem)))]
pub(crate) async fn get_flag_usage(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<UsageQuery>,
) -> Result<Json<Vec<FlagUsage>>, ApiError> {
    caller.check(Role::Viewer)?;
    let days = u64::from(q.days.unwrap_or(30).clamp(1, 3650));
    let now = now_ms(&app);
    let mut pc = app
        .store
        .db()
        .acquire()
        .await
        .map_err(crate::store::StoreError::from)?;
    let mut c = pc.conn();
    let (env_id, _) = store::environment_id(&mut c, &project, &environment).await?;
    let since = now.saturating_sub(days * 86_400_000);
    Ok(Json(store::usage(&mut c, env_id, since).await?))
}

fn now_ms(app: &AppState) -> u64 {
    let t = app.clock.now();
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Flags that look ready for removal in the environment, each with the evidence: not
/// evaluated for `unused_days`, temporary and older than `lifetime_days`, or serving one
/// variation to everyone for `uniform_days`.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/stale-flags",
    tag = "fleet",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           StaleQuery),
    responses((status = 200, body = StaleReport), (status = 404, body = Problem)))]
pub(crate) async fn get_stale_flags(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<StaleQuery>,
) -> Result<Json<StaleReport>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(stale_report(&app, &project, &environment, q).await?))
}

/// The stale report of `project/environment` at the app clock's now (also used by the
/// flag list's `stale=true`).
pub(crate) async fn stale_report(
    app: &AppState,
    project: &str,
    environment: &str,
    q: StaleQuery,
) -> Result<StaleReport, crate::store::StoreError> {
    let now = app.clock.now();
    let now_ms = now_ms(app);
    let mut pc = app.store.db().acquire().await?;
    let mut c = pc.conn();
    let (env_id, _) = store::environment_id(&mut c, project, environment).await?;
    let flags = store::flags_with_configs(&mut c, env_id).await?;
    let window = u64::from(q.uniform_days.unwrap_or(30).clamp(1, 3650)) * 86_400_000;
    let usage = store::usage(&mut c, env_id, now_ms.saturating_sub(window)).await?;
    Ok(super::stale::report(q, now, &flags, &usage))
}

/// The page of the flag list (`filter`, its cursor and limit) keeping only the flags the
/// stale report of `environment` lists: the store's pages are read in turn until the page is
/// full, and the next cursor is the last flag returned.
pub(crate) async fn stale_flag_page(
    app: &AppState,
    project: &str,
    environment: &str,
    filter: crate::store::FlagFilter,
) -> Result<crate::store::Page<crate::store::FlagSummary>, crate::store::StoreError> {
    let report = stale_report(app, project, environment, StaleQuery::default()).await?;
    let stale: std::collections::HashSet<String> =
        report.flags.into_iter().map(|f| f.key).collect();
    let limit = usize::try_from(crate::store::page_limit(filter.limit)).unwrap_or(50);
    let mut scan = filter;
    scan.limit = Some(500);
    let mut items = Vec::new();
    loop {
        let page = app.store.list_flags(project, &scan).await?;
        items.extend(page.items.into_iter().filter(|f| stale.contains(&f.key)));
        if items.len() > limit || page.next_cursor.is_none() {
            break;
        }
        scan.cursor = page.next_cursor;
    }
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|f| f.key.clone())
    } else {
        None
    };
    Ok(crate::store::Page { items, next_cursor })
}

/// `POST /relay/v1/fleet`.
pub fn relay_routes(state: &AppState) -> Router {
    Router::new()
        .route(FLEET_REPORT_PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .with_state(state.clone())
}

fn problem(status: StatusCode, slug: &str, detail: &str) -> Response {
    Problem::new(status, slug, Some(detail.to_owned())).into_response_with_status()
}

/// A relay's report: stored for every environment of its key's scope it reports on;
/// others are ignored. `204` once stored.
async fn receive(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let key = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a relay key in Authorization",
        );
    };
    let scope = match RelayAuth::authenticate(&app.feed, key).await {
        Ok(scope) => scope,
        Err(AuthError::Unavailable) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the key cannot be checked right now; retry shortly",
            );
        }
        Err(AuthError::Forbidden(why)) => return problem(StatusCode::FORBIDDEN, "forbidden", &why),
        Err(_) => {
            return problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a relay key in Authorization",
            );
        }
    };
    let report: FleetReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "invalid-report", &e.to_string()),
    };
    let id = report.relay_id.trim();
    if id.is_empty() || id.len() > 200 {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-report",
            "relay_id must be 1 to 200 bytes",
        );
    }
    match store_report(&app, &scope, &report).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, relay = %id, "cannot store a fleet report");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the report cannot be stored right now",
            )
        }
    }
}

async fn store_report(
    app: &AppState,
    scope: &std::collections::BTreeSet<EnvironmentId>,
    report: &FleetReport,
) -> Result<(), crate::store::StoreError> {
    let mut reports = Vec::new();
    {
        let mut pc = app.store.db().acquire().await?;
        let mut c = pc.conn();
        for r in &report.environments {
            let Ok(env) = EnvironmentId::parse(&r.environment) else {
                continue;
            };
            if !scope.contains(&env) {
                continue;
            }
            match store::environment_id(&mut c, env.project(), env.environment()).await {
                Ok((id, _)) => reports.push((id, r.clone())),
                Err(crate::store::StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let meta = Meta {
        id: report.relay_id.trim().to_owned(),
        version: report.version.chars().take(64).collect(),
        upstream_connected: report.upstream_connected,
        parent: report
            .parent
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.chars().take(200).collect()),
    };
    store::save(
        app.store.db(),
        SourceKind::Relay,
        &meta,
        &reports,
        crate::events::now_ms(),
        ttl_ms(),
    )
    .await
}
