//! The admin console: server-rendered HTML pages on the server's own listener, at `/`.
//!
//! Layout:
//! - [`session`]: sign-in with an API token, the server-side session (cookie holds a random
//!   id, the table its digest), CSRF tokens, the [`session::Session`] extractor;
//! - [`page`]: the one layout, navigation and shared components; [`assets`]: the embedded
//!   CSS, JavaScript and vendored htmx;
//! - one module per area: [`flags`] (list, create, flag page, on/off, kill, archive),
//!   [`targeting`] (the targeting editor with its diff and conflict view), [`history`]
//!   (versions, side-by-side diff, rollback), [`audit`], [`segments`], [`admin`] (projects,
//!   environments, keys and tokens), [`explain`];
//! - [`definition`] (a flag's name, tags, variations…), [`environments`] (rename an
//!   environment, its allowed browser origins; rename or delete a project), [`releases`]
//!   (release plans and scheduled changes of a flag in an environment), [`experiments`]
//!   (results with lift intervals drawn as SVG, the SRM warning);
//! - [`changes`] (change requests: list, review, apply, and the proposal offered when a save
//!   needs approval), [`policy`] (each environment's approval policy on the environments
//!   page), [`fleet`] (the fleet panel, and a change's convergence shown after each flip);
//! - [`diff`]: the line diff the editor and history show (pure); [`reads`]: queries only the
//!   console needs (the flags list with each environment's on/off state, sessions).
//!
//! Every write calls the same [`crate::store::Store`] function as the REST API handler for
//! it, with the signed-in token as the actor: validation, role checks, audit, `If-Match`
//! and distribution cannot differ between the two.

pub mod admin;
pub mod assets;
pub mod audit;
pub mod changes;
pub mod definition;
pub mod diff;
pub mod environments;
pub mod experiments;
pub mod explain;
pub mod flags;
pub mod fleet;
pub mod history;
pub mod page;
pub mod policy;
pub mod reads;
pub mod releases;
pub mod segments;
pub mod session;
pub mod targeting;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::app::AppState;
use crate::auth::Role;
use crate::error::ApiError;
use crate::store::StoreError;

/// How long a console write waits for the change feed to apply it, so that the page shown
/// next reads it (the API's `settle_writes` does the same).
const SETTLE: Duration = Duration::from_secs(2);

/// Largest form the console accepts (a pasted segment list of 100,000 keys fits).
const MAX_FORM_BYTES: usize = 8 * 1024 * 1024;

/// The console's routes. Mounted outside the problem+json layer: the console answers in
/// HTML, including its error pages.
pub fn routes(state: &AppState) -> Router {
    Router::new()
        .route("/", get(home))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/assets/{file}", get(assets::serve))
        .route("/switch", get(switch))
        .route("/projects/{project}/flags/new", get(flags::new_form))
        .route(
            "/projects",
            get(admin::projects).post(admin::create_project),
        )
        .route("/projects/{project}/settings", get(admin::project_settings))
        .route(
            "/projects/{project}/environments",
            post(admin::create_environment),
        )
        .route(
            "/projects/{project}/environments/{environment}/delete",
            post(admin::delete_environment),
        )
        .route(
            "/projects/{project}/flags",
            get(flags::list).post(flags::create),
        )
        .route("/projects/{project}/flags/{flag}", get(flags::show))
        .route(
            "/projects/{project}/flags/{flag}/toggle",
            post(flags::toggle),
        )
        .route("/projects/{project}/flags/{flag}/kill", post(flags::kill))
        .route(
            "/projects/{project}/flags/{flag}/archive",
            post(flags::archive),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/targeting",
            get(targeting::edit).post(targeting::submit),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/history",
            get(history::list),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/rollback",
            post(history::rollback),
        )
        .route(
            "/projects/{project}/explain",
            get(explain::page).post(explain::run),
        )
        .route(
            "/projects/{project}/environments/{environment}/segments",
            get(segments::list).post(segments::create),
        )
        .route(
            "/projects/{project}/environments/{environment}/segments/{segment}",
            get(segments::show).post(segments::replace_keys),
        )
        .route(
            "/projects/{project}/environments/{environment}/keys",
            get(admin::keys).post(admin::create_key),
        )
        .route(
            "/projects/{project}/environments/{environment}/keys/{id}/revoke",
            post(admin::revoke_key),
        )
        .route(
            "/projects/{project}/edit",
            get(environments::edit_project).post(environments::update_project),
        )
        .route(
            "/projects/{project}/delete",
            post(environments::delete_project),
        )
        .route(
            "/projects/{project}/environments/{environment}/edit",
            get(environments::edit_environment).post(environments::update_environment),
        )
        .route(
            "/projects/{project}/flags/{flag}/edit",
            get(definition::edit).post(definition::submit),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/releases",
            get(releases::page),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/releases/plans",
            post(releases::create_plan),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/releases/plans/{id}",
            post(releases::act),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/releases/schedules",
            post(releases::create_schedule),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/releases/schedules/{id}/cancel",
            post(releases::cancel_schedule),
        )
        .route(
            "/projects/{project}/environments/{environment}/experiments",
            get(experiments::list),
        )
        .route(
            "/projects/{project}/environments/{environment}/experiments/{experiment}",
            get(experiments::results),
        )
        .route(
            "/projects/{project}/environments/{environment}/fleet",
            get(fleet::page),
        )
        .route(
            "/projects/{project}/environments/{environment}/change-requests",
            get(changes::list),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/change-requests",
            post(changes::create),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/change-requests/{id}",
            get(changes::show),
        )
        .route(
            "/projects/{project}/flags/{flag}/environments/{environment}/change-requests/{id}/{form}",
            post(changes::act),
        )
        .route(
            "/projects/{project}/environments/{environment}/approval-policy",
            post(policy::set),
        )
        .route(
            "/projects/{project}/environments/{environment}/approval-policy/delete",
            post(policy::remove),
        )
        .route(
            "/projects/{project}/environments/{environment}/fleet/converge",
            get(fleet::converge),
        )
        .route("/audit", get(audit::page))
        .route("/tokens", get(admin::tokens).post(admin::create_token))
        .route("/tokens/{id}/revoke", post(admin::revoke_token))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(state.clone())
}

/// `/`: the projects page (or sign-in).
async fn home(_session: session::Session) -> Redirect {
    Redirect::to("/projects")
}

/// The switcher's choice.
#[derive(Debug, serde::Deserialize)]
pub struct SwitchQuery {
    #[serde(default)]
    project: String,
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    section: String,
}

/// `GET /switch`: the project and environment switcher's target, on the same section.
async fn switch(
    axum::extract::State(app): axum::extract::State<AppState>,
    _session: session::Session,
    axum::extract::Query(q): axum::extract::Query<SwitchQuery>,
) -> Result<Redirect, ConsoleError> {
    if q.project.is_empty() {
        return Ok(Redirect::to("/projects"));
    }
    let envs = app
        .store
        .list_environments(&q.project, None, Some(100))
        .await?
        .items;
    let env = q
        .env
        .filter(|e| envs.iter().any(|x| &x.key == e))
        .or_else(|| envs.first().map(|e| e.key.clone()));
    let p = enc(&q.project);
    let to = match (q.section.as_str(), env) {
        ("segments", Some(e)) => format!("/projects/{p}/environments/{}/segments", enc(&e)),
        ("keys", Some(e)) => format!("/projects/{p}/environments/{}/keys", enc(&e)),
        ("experiments", Some(e)) => format!("/projects/{p}/environments/{}/experiments", enc(&e)),
        ("changes", Some(e)) => changes::list_path(&q.project, &e),
        ("explain", Some(e)) => format!("/projects/{p}/explain?env={}", enc(&e)),
        ("settings", _) => format!("/projects/{p}/settings"),
        (_, Some(e)) => format!("/projects/{p}/flags?env={}", enc(&e)),
        (_, None) => format!("/projects/{p}/flags"),
    };
    Ok(Redirect::to(&to))
}

/// Why a console request failed, rendered as an HTML page with the matching status.
#[derive(Debug)]
pub enum ConsoleError {
    /// Not signed in (or the session expired): back to the sign-in page.
    SignIn,
    /// The signed-in token's role does not allow this.
    Forbidden(Role),
    /// A store failure.
    Store(StoreError),
    /// A form field that cannot be parsed at all.
    BadForm(String),
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        ConsoleError::Store(e)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            ConsoleError::SignIn => return Redirect::to("/sign-in").into_response(),
            ConsoleError::Forbidden(role) => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!(
                    "This needs the {} role. Ask an admin for a token with it.",
                    role.as_str()
                ),
            ),
            ConsoleError::BadForm(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            ConsoleError::Store(e) => {
                let (status, title) = store_status(&e);
                let detail = if status.is_server_error() {
                    // Logged once by the API error's own response path; say nothing internal.
                    let _ = ApiError::from(e).into_response();
                    "The server could not complete this request. Try again in a moment.".to_owned()
                } else {
                    e.to_string()
                };
                (status, title, detail)
            }
        };
        (status, page::error_page(status, title, &detail)).into_response()
    }
}

/// The HTTP status and a short title for a store error.
pub(crate) fn store_status(e: &StoreError) -> (StatusCode, &'static str) {
    match e {
        StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
        StoreError::AlreadyExists(_) => (StatusCode::CONFLICT, "Already exists"),
        StoreError::Conflict { .. } => (StatusCode::CONFLICT, "Conflict"),
        StoreError::PreconditionFailed { .. } => {
            (StatusCode::PRECONDITION_FAILED, "Changed meanwhile")
        }
        StoreError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
        StoreError::Gone(_) => (StatusCode::CONFLICT, "Deleted meanwhile"),
        StoreError::ApprovalRequired(_) => (StatusCode::CONFLICT, "Approval required"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "Server error"),
    }
}

/// Waits until the change feed has applied the write just made (bounded by [`SETTLE`]).
pub(crate) async fn settle(app: &AppState) {
    if !app.feed.settle(SETTLE).await {
        tracing::warn!("the change feed did not apply a console write within {SETTLE:?}");
    }
}

/// Percent-encodes a path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
