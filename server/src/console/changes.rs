//! Change requests: the environment's list (filtered by state and flag), a request's page
//! (the patch as a before→after diff, approvals so far against the policy, reviews, and the
//! approve / reject / comment / apply buttons the signed-in token's role there allows), and
//! the "Propose as a change request" offer shown when a save is refused with
//! `approval-required`.
//!
//! Every write calls the store function the change-request API calls
//! ([`crate::store::Store::create_change_request`], `review_change_request`,
//! `apply_change_request`) with the role the API requires in the environment: editor to
//! propose and apply, the policy's approver role to approve or reject, viewer to comment.
//! The list is a console read ([`list_in_environment`]): the API lists per flag.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vexil_schema::FlagConfig;

use super::page::{self, Nav};
use super::session::Session;
use super::targeting::comparable;
use super::{ConsoleError, diff, enc, settle};
use crate::app::AppState;
use crate::auth::Role;
use crate::db::args;
use crate::delivery::approvals::requests::{
    ChangeRequest, ChangeRequestState, NewChangeRequest, NewReview, ReviewKind,
};
use crate::store::{StoreError, environment_row, project_row};

/// The configuration fields a patch may set, in the order the diff shows them.
const PATCH_FIELDS: [&str; 6] = [
    "on",
    "off_variation",
    "targets",
    "rules",
    "fallthrough",
    "prerequisites",
];

/// The states the list filters on, with their labels.
const STATES: [(&str, &str); 4] = [
    ("open", "Open"),
    ("approved", "Approved"),
    ("applied", "Applied"),
    ("rejected", "Rejected"),
];

/// A request's page.
fn request_path((project, flag, environment): (&str, &str, &str), id: i64) -> String {
    format!("{}/{id}", create_path((project, flag, environment)))
}

/// Where a request of `flag` in `environment` is proposed.
fn create_path((project, flag, environment): (&str, &str, &str)) -> String {
    format!(
        "/projects/{}/flags/{}/environments/{}/change-requests",
        enc(project),
        enc(flag),
        enc(environment)
    )
}

/// The environment's list.
pub fn list_path(project: &str, environment: &str) -> String {
    format!(
        "/projects/{}/environments/{}/change-requests",
        enc(project),
        enc(environment)
    )
}

fn when(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn state_badge(state: &str) -> Markup {
    let label = STATES
        .iter()
        .find(|(k, _)| *k == state)
        .map_or(state, |(_, l)| l);
    let class = match state {
        "approved" | "applied" => "badge on",
        _ => "badge off",
    };
    html! { span class=(class) { (label) } }
}

/// The patch that turns `old` into `new`: the configuration fields that differ.
pub fn patch_between(old: &FlagConfig, new: &FlagConfig) -> Value {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Value::Object(Map::new());
    };
    let mut patch = Map::new();
    for k in PATCH_FIELDS {
        if let Some(v) = b.get(k)
            && a.get(k) != Some(v)
        {
            patch.insert(k.to_owned(), v.clone());
        }
    }
    Value::Object(patch)
}

/// `cfg` with the fields `patch` names set, as the diff compares it (`None` when the patch
/// does not fit the configuration).
fn patched(cfg: &FlagConfig, patch: &Value) -> Option<String> {
    let mut v = serde_json::to_value(cfg).ok()?;
    let (Value::Object(m), Value::Object(p)) = (&mut v, patch) else {
        return None;
    };
    for (k, x) in p {
        m.insert(k.clone(), x.clone());
    }
    serde_json::from_value::<FlagConfig>(v)
        .ok()
        .map(|c| comparable(&c))
}

/// The diff of what `patch` does to `cfg`.
fn patch_diff(left: &str, cfg: &FlagConfig, patch: &Value) -> Markup {
    match patched(cfg, patch) {
        Some(after) => diff::side_by_side(left, "After applying", &comparable(cfg), &after),
        None => html! { pre.code { (serde_json::to_string_pretty(patch).unwrap_or_default()) } },
    }
}

/// The offer shown when a configuration write is refused with `approval-required`: why,
/// the diff of the same patch, and a form proposing it as a change request against
/// `current`'s version.
pub fn proposal(
    session: &Session,
    path: (&str, &str, &str),
    current: &FlagConfig,
    patch: &Value,
    why: &str,
) -> Markup {
    let (project, _, environment) = path;
    html! {
        section #proposal aria-labelledby="proposal-h" {
            h2 #proposal-h { "This environment needs approval" }
            (page::notice("warn", html! { "Nothing was saved. " (why) }))
            (patch_diff(&format!("Version {} (current)", current.version), current, patch))
            @if session.can_in(Role::Editor, project, environment) {
                form.stack method="post" action=(create_path(path)) {
                    (page::csrf(session))
                    input type="hidden" name="patch" value=(patch.to_string());
                    input type="hidden" name="base_version" value=(current.version);
                    div.field {
                        label for="cr-desc" { "Why (shown to reviewers)" }
                        textarea #cr-desc name="description" rows="2" {}
                    }
                    div { button type="submit" { "Propose as a change request" } }
                }
            }
        }
    }
}

/// The proposal on a page of its own (for writes made outside the targeting editor: on/off).
pub async fn proposal_page(
    app: &AppState,
    session: &Session,
    path: (&str, &str, &str),
    patch: &Value,
    why: &str,
) -> Result<Response, ConsoleError> {
    let (project, flag, environment) = path;
    let nav = Nav::load(app, Some(project), Some(environment), "flags").await?;
    let current = app.store.get_config(project, flag, environment).await?;
    let body = html! {
        p.muted {
            a href=(format!("/projects/{}/flags", enc(project))) { "Flags" } " / "
            a href=(format!("/projects/{}/flags/{}?env={}", enc(project), enc(flag), enc(environment))) { code { (flag) } }
            " / " (environment)
        }
        h1 { "Propose a change to " code { (flag) } " in " (environment) }
        (proposal(session, path, &current, patch, why))
    };
    Ok((
        StatusCode::CONFLICT,
        page::layout(session, &nav, "Approval required", body),
    )
        .into_response())
}

/// A change request in the environment's list.
#[derive(Debug, sqlx::FromRow)]
struct ListRow {
    id: i64,
    flag: String,
    state: String,
    author: String,
    description: String,
    base_version: i64,
    created_at: OffsetDateTime,
}

/// The environment's change requests, newest first (at most 200), optionally only those of
/// one state and one flag.
async fn list_in_environment(
    app: &AppState,
    (project, environment): (&str, &str),
    state: Option<&str>,
    flag: Option<&str>,
) -> Result<Vec<ListRow>, StoreError> {
    let mut pc = app.store.db().acquire().await?;
    let mut c = pc.conn();
    let p = project_row(&mut c, project).await?;
    let e = environment_row(&mut c, p.id, environment).await?;
    Ok(c.fetch_all(
        "SELECT r.id, f.key AS flag, r.state, r.author, r.description, r.base_version,
                r.created_at
         FROM change_requests r JOIN flags f ON f.id = r.flag_id
         WHERE r.environment_id = $1 AND ($2 IS NULL OR r.state = $2)
           AND ($3 IS NULL OR f.key = $3)
         ORDER BY r.id DESC LIMIT 200",
        args![e.id, state, flag],
    )
    .await?)
}

/// Filters of the list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    flag: Option<String>,
}

/// `GET /projects/{project}/environments/{environment}/change-requests`.
pub async fn list(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, Some(&project), Some(&environment), "changes").await?;
    let state = q
        .state
        .as_deref()
        .filter(|s| STATES.iter().any(|(k, _)| k == s));
    let flag = q.flag.as_deref().filter(|f| !f.trim().is_empty());
    let rows = list_in_environment(&app, (&project, &environment), state, flag).await?;
    let policy = match app.store.get_approval_policy(&project, &environment).await {
        Ok(p) => Some(p),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let here = list_path(&project, &environment);
    let body = html! {
        h1 { "Change requests in " (environment) }
        p.muted {
            @match &policy {
                Some(p) => {
                    "Flag changes here need " strong { (p.required_approvals) " approval" @if p.required_approvals != 1 { "s" } }
                    " (role " (p.approver_role.as_str()) " or higher)"
                    @if p.kill_switch_exempt { "; the kill switch is exempt." } @else { "; the kill switch too." }
                }
                None => "This environment has no approval policy: changes save directly, and a change request needs one editor's approval.",
            }
        }
        form.row.filters method="get" action=(here) {
            div {
                label for="cr-state" { "State" }
                select #cr-state name="state" {
                    option value="" { "Any" }
                    @for (k, l) in STATES { option value=(k) selected[state == Some(k)] { (l) } }
                }
            }
            div {
                label for="cr-flag" { "Flag key" }
                input #cr-flag type="text" name="flag" value=[flag];
            }
            div { button.secondary type="submit" { "Filter" } }
        }
        @if rows.is_empty() {
            (page::empty("No change requests", html! {
                "When an environment has an approval policy, saving a flag there offers to propose the change; proposals appear here."
            }))
        } @else {
            table {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "Flag" } th scope="col" { "State" }
                    th scope="col" { "Proposed by" } th scope="col" { "Against version" } th scope="col" { "Opened (UTC)" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { a href=(request_path((&project, &r.flag, &environment), r.id)) aria-label=(format!("Change request {} to {}", r.id, r.flag)) { (r.id) } }
                            td { code { (r.flag) } @if !r.description.is_empty() { br; span.muted { (r.description) } } }
                            td { (state_badge(&r.state)) }
                            td { (r.author) } td { (r.base_version) } td { (when(r.created_at)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page::layout(&session, &nav, "Change requests", body).into_response())
}

/// The proposal form.
#[derive(Debug, Deserialize)]
pub struct ProposeForm {
    csrf: String,
    patch: String,
    #[serde(default)]
    base_version: Option<u64>,
    #[serde(default)]
    description: String,
}

/// `POST …/flags/{flag}/environments/{environment}/change-requests`: `create_change_request`.
pub async fn create(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment)): Path<(String, String, String)>,
    Form(f): Form<ProposeForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write_in(Role::Editor, &f.csrf, (&project, &environment))?;
    let patch: Value = serde_json::from_str(&f.patch)
        .map_err(|e| ConsoleError::BadForm(format!("the proposed patch is not JSON: {e}")))?;
    let path = (project.as_str(), flag.as_str(), environment.as_str());
    let req = NewChangeRequest {
        patch,
        description: f.description.trim().to_owned(),
        base_version: f.base_version,
    };
    let cr = app
        .store
        .create_change_request(&ctx, path, req, app.clock.now())
        .await?;
    Ok(Redirect::to(&format!("{}?done=proposed", request_path(path, cr.id))).into_response())
}

/// What was just done on a request's page.
#[derive(Debug, Default, Deserialize)]
pub struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

fn done_message(done: &str) -> &'static str {
    match done {
        "proposed" => "Change request opened: reviewers can approve it here.",
        "approve" => "Approved.",
        "reject" => "Rejected: it can no longer be applied.",
        "comment" => "Comment added.",
        _ => "Done.",
    }
}

/// `GET …/change-requests/{id}`.
pub async fn show(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment, id)): Path<(String, String, String, i64)>,
    Query(q): Query<DoneQuery>,
) -> Result<Response, ConsoleError> {
    let path = (project.as_str(), flag.as_str(), environment.as_str());
    render(
        &app,
        &session,
        path,
        id,
        q.done
            .as_deref()
            .map(|d| ("ok", done_message(d).to_owned())),
        StatusCode::OK,
    )
    .await
}

async fn render(
    app: &AppState,
    session: &Session,
    path: (&str, &str, &str),
    id: i64,
    notice: Option<(&str, String)>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let (project, flag, environment) = path;
    let nav = Nav::load(app, Some(project), Some(environment), "changes").await?;
    let cr = app.store.get_change_request(path, id).await?;
    let current = app.store.get_config(project, flag, environment).await?;
    let base = if current.version == u64::try_from(cr.base_version).unwrap_or(0) {
        current.clone()
    } else {
        app.store
            .get_version(
                project,
                flag,
                environment,
                u64::try_from(cr.base_version).unwrap_or(0),
            )
            .await?
            .config
    };
    let body = html! {
        p.muted {
            a href=(list_path(project, environment)) { "Change requests" } " / "
            a href=(format!("/projects/{}/flags/{}?env={}", enc(project), enc(flag), enc(environment))) { code { (flag) } }
            " / " (environment)
        }
        h1 { "Change request " (cr.id) " " (state_badge(state_key(cr.state))) }
        @if let Some((kind, text)) = &notice { (page::notice(kind, html! { (text) })) }
        p {
            "Proposed by " strong { (cr.author) } " at " (when(cr.created_at)) " against version " (cr.base_version) "."
            @if let (Some(v), Some(by)) = (cr.applied_version, &cr.applied_by) { " Applied by " strong { (by) } " as version " (v) "." }
        }
        @if !cr.description.is_empty() { blockquote { (cr.description) } }
        (approvals(&cr))
        h2 { "What it changes" }
        (patch_diff(&format!("Version {} (proposed against)", cr.base_version), &base, &cr.patch))
        @if current.version != base.version && matches!(cr.state, ChangeRequestState::Open | ChangeRequestState::Approved) {
            (page::notice("warn", html! {
                "The flag changed since: version " (current.version) " is current. Applying writes only the fields this request sets, "
                "and fails if one of them changed meanwhile."
            }))
            h3 { "On the current version" }
            (patch_diff(&format!("Version {} (current)", current.version), &current, &cr.patch))
        }
        h2 { "Reviews" }
        @if cr.reviews.is_empty() {
            p.muted { "No reviews yet." }
        } @else {
            ol.reviews {
                @for r in &cr.reviews {
                    li {
                        strong { (r.actor) } " (" (r.role.as_str()) ") "
                        @match r.kind { ReviewKind::Approve => "approved", ReviewKind::Reject => "rejected", ReviewKind::Comment => "commented" }
                        " at " (when(r.created_at))
                        @if !r.comment.is_empty() { blockquote { (r.comment) } }
                    }
                }
            }
        }
        (actions(session, path, &cr))
    };
    let title = format!("Change request {id}");
    Ok((status, page::layout(session, &nav, &title, body)).into_response())
}

fn state_key(s: ChangeRequestState) -> &'static str {
    match s {
        ChangeRequestState::Open => "open",
        ChangeRequestState::Approved => "approved",
        ChangeRequestState::Rejected => "rejected",
        ChangeRequestState::Applied => "applied",
    }
}

/// Approvals so far against the requirement in force.
fn approvals(cr: &ChangeRequest) -> Markup {
    let have = cr.approved_by.len();
    html! {
        p {
            strong { (have) " of " (cr.required_approvals) } " approval" @if cr.required_approvals != 1 { "s" }
            " (role " (cr.approver_role.as_str()) " or higher)"
            @if !cr.approved_by.is_empty() { ": " (cr.approved_by.join(", ")) }
            "."
        }
    }
}

/// The review and apply forms the signed-in token's role in the environment allows.
fn actions(session: &Session, path: (&str, &str, &str), cr: &ChangeRequest) -> Markup {
    let (project, _, environment) = path;
    let open = matches!(
        cr.state,
        ChangeRequestState::Open | ChangeRequestState::Approved
    );
    let reviewer = open && session.can_in(cr.approver_role, project, environment);
    let author = session.actor.token_id.is_some() && session.actor.name == cr.author;
    let applier = cr.state == ChangeRequestState::Approved
        && session.can_in(Role::Editor, project, environment);
    let commenter = session.can_in(Role::Viewer, project, environment);
    let action = |what: &str| format!("{}/{what}", request_path(path, cr.id));
    html! {
        @if applier {
            form method="post" action=(action("apply")) {
                (page::csrf(session))
                button type="submit" name="action" value="apply" { "Apply to " (environment) }
                span.muted { " Writes the change as a new version; SDKs receive it at once." }
            }
        }
        @if reviewer || commenter {
            h2 { "Review" }
            form.stack method="post" action=(action("review")) {
                (page::csrf(session))
                div.field {
                    label for="cr-comment" { "Comment" }
                    textarea #cr-comment name="comment" rows="3" {}
                }
                div.row {
                    @if reviewer && !author && cr.state == ChangeRequestState::Open {
                        button type="submit" name="action" value="approve" { "Approve" }
                    }
                    @if reviewer {
                        button.danger type="submit" name="action" value="reject" { "Reject" }
                    }
                    button.secondary type="submit" name="action" value="comment" { "Comment" }
                }
                @if reviewer && author && cr.state == ChangeRequestState::Open {
                    p.muted { "You proposed this change: another person approves it." }
                }
            }
        }
    }
}

/// A review or apply form.
#[derive(Debug, Deserialize)]
pub struct ActForm {
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    comment: String,
}

/// `POST …/change-requests/{id}/{apply|review}`: apply (editor), or approve / reject (the
/// policy's approver role) / comment (viewer), as the API checks them.
pub async fn act(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment, id, _form)): Path<(String, String, String, i64, String)>,
    Form(f): Form<ActForm>,
) -> Result<Response, ConsoleError> {
    let path = (project.as_str(), flag.as_str(), environment.as_str());
    let kind = match f.action.as_str() {
        "apply" => None,
        "approve" => Some(ReviewKind::Approve),
        "reject" => Some(ReviewKind::Reject),
        "comment" => Some(ReviewKind::Comment),
        other => return Err(ConsoleError::BadForm(format!("unknown action '{other}'"))),
    };
    let result = match kind {
        None => {
            let ctx = session.write_in(Role::Editor, &f.csrf, (&project, &environment))?;
            let r = app
                .store
                .apply_change_request(&ctx, path, id, app.clock.now())
                .await;
            if r.is_ok() {
                settle(&app).await;
                return Ok(Redirect::to(&format!(
                    "/projects/{}/flags/{}?env={}&done=applied&t={}",
                    enc(&project),
                    enc(&flag),
                    enc(&environment),
                    crate::events::now_ms()
                ))
                .into_response());
            }
            r
        }
        Some(kind) => {
            let needs = if kind == ReviewKind::Comment {
                Role::Viewer
            } else {
                app.store.approver_role(&project, &environment).await?
            };
            let ctx = session.write_in(needs, &f.csrf, (&project, &environment))?;
            let role = session
                .actor
                .role_in(Some(&project), Some(&environment))
                .unwrap_or(needs);
            let review = NewReview {
                kind,
                role,
                comment: f.comment.trim().to_owned(),
            };
            app.store
                .review_change_request(&ctx, path, id, review, app.clock.now())
                .await
        }
    };
    match result {
        Ok(_) => Ok(
            Redirect::to(&format!("{}?done={}", request_path(path, id), f.action)).into_response(),
        ),
        Err(e @ (StoreError::Conflict { .. } | StoreError::Invalid(_))) => {
            let status = super::store_status(&e).0;
            let text = match e {
                StoreError::Invalid(v) => v
                    .errors
                    .into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            render(&app, &session, path, id, Some(("error", text)), status).await
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(on: bool) -> FlagConfig {
        serde_json::from_value(json!({
            "on": on, "off_variation": 1, "fallthrough": {"variation": 0},
            "salt": "s", "version": 3
        }))
        .expect("a configuration")
    }

    #[test]
    fn the_patch_between_two_configurations_names_only_what_differs() {
        assert_eq!(
            patch_between(&config(false), &config(true)),
            json!({"on": true})
        );
        assert_eq!(patch_between(&config(true), &config(true)), json!({}));
    }

    #[test]
    fn a_patch_applies_onto_a_configuration_for_the_diff() {
        let after = patched(&config(false), &json!({"on": true})).expect("it fits");
        assert_eq!(after, comparable(&config(true)));
        assert!(patched(&config(false), &json!({"on": "yes"})).is_none());
    }
}
