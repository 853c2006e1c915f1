//! Release plans and scheduled changes of one flag in one environment: the plans with their
//! steps and state (pause, resume, advance, abort), a new plan, the scheduled changes (cancel
//! one, schedule one).
//!
//! Every write calls the function the delivery API calls
//! ([`crate::store::Store::create_release_plan`], `act_on_release_plan`,
//! `create_scheduled_change`, `cancel_scheduled_change`) with the server's clock, the
//! signed-in token as actor and the editor role required, as the API does.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vexil_schema::Serve;

use super::flags::variation_label;
use super::page::{self, Nav};
use super::session::Session;
use super::{ConsoleError, enc, settle, store_status};
use crate::app::AppState;
use crate::auth::Role;
use crate::delivery::plans::{NewReleasePlan, PlanAction, PlanState, PlanStep, ReleasePlan};
use crate::delivery::schedule::{NewScheduledChange, ScheduleState, ScheduledChange};
use crate::store::{FlagView, StoreError};

/// The page's path.
fn base(project: &str, flag: &str, environment: &str) -> String {
    format!(
        "/projects/{}/flags/{}/environments/{}/releases",
        enc(project),
        enc(flag),
        enc(environment)
    )
}

/// What was just done (shown as a notice after the redirect).
#[derive(Debug, Default, Deserialize)]
pub struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

fn done_message(done: &str) -> &'static str {
    match done {
        "plan-started" => "Release plan started: its first step is in force.",
        "advance" => "Advanced to the next step.",
        "pause" => "Paused at the current step.",
        "resume" => "Resumed.",
        "abort" => "Aborted: the default rule from before the plan is back.",
        "scheduled" => "Change scheduled.",
        "cancelled" => "Scheduled change cancelled.",
        _ => "Done.",
    }
}

/// `GET …/environments/{environment}/releases`.
pub async fn page(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment)): Path<(String, String, String)>,
    Query(q): Query<DoneQuery>,
) -> Result<Response, ConsoleError> {
    render(
        &app,
        &session,
        (&project, &flag, &environment),
        &[],
        q.done.as_deref().map(done_message),
        StatusCode::OK,
    )
    .await
}

fn when(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A plan's state as a badge; green while it is moving or done, grey otherwise.
fn plan_state(s: PlanState) -> Markup {
    html! {
        @match s {
            PlanState::Running => span.badge.on { "Running" },
            PlanState::Paused => span.badge.off { "Paused" },
            PlanState::WaitingForApproval => span.badge.off { "Waiting for approval" },
            PlanState::Completed => span.badge.on { "Completed" },
            PlanState::Aborted => span.badge.off { "Aborted" },
            PlanState::RolledBack => span.badge.off { "Rolled back" },
        }
    }
}

fn schedule_state(s: ScheduleState) -> &'static str {
    match s {
        ScheduleState::Pending => "Pending",
        ScheduleState::Executed => "Executed",
        ScheduleState::Failed => "Failed",
        ScheduleState::Cancelled => "Cancelled",
    }
}

/// What a scheduled change does, in words.
fn change_text(view: &FlagView, c: &ScheduledChange) -> String {
    if c.kind == "kill" {
        return "Kill switch: off in every environment".to_owned();
    }
    let Some(patch) = &c.patch else {
        return c.kind.clone();
    };
    let mut parts = Vec::new();
    if let Some(on) = patch.get("on").and_then(serde_json::Value::as_bool) {
        parts.push(if on { "turn on" } else { "turn off" }.to_owned());
    }
    if let Some(ft) = patch.get("fallthrough")
        && let Ok(serve) = serde_json::from_value::<Serve>(ft.clone())
    {
        parts.push(format!(
            "default rule {}",
            super::targeting::serve_text(view, &serve)
        ));
    }
    for k in ["off_variation", "targets", "rules", "prerequisites"] {
        if patch.get(k).is_some() {
            parts.push(format!("set {k}"));
        }
    }
    if parts.is_empty() {
        "no change".to_owned()
    } else {
        parts.join(", ")
    }
}

async fn render(
    app: &AppState,
    session: &Session,
    (project, flag, environment): (&str, &str, &str),
    errors: &[(String, String)],
    done: Option<&str>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(app, Some(project), Some(environment), "flags").await?;
    let view = app.store.get_flag(project, flag).await?;
    let path = (project, flag, environment);
    let plans = app
        .store
        .list_release_plans(path, None, Some(20))
        .await?
        .items;
    let changes = app
        .store
        .list_scheduled_changes(path, None, None, Some(50))
        .await?
        .items;
    let editor = session.can(Role::Editor) && !view.archived;
    let b = base(project, flag, environment);
    let active = plans
        .iter()
        .any(|p| matches!(p.state, PlanState::Running | PlanState::Paused));
    let variations = view.definition.variations.len();
    let body = html! {
        p.muted {
            a href=(format!("/projects/{}/flags", enc(project))) { "Flags" } " / "
            a href=(format!("/projects/{}/flags/{}?env={}", enc(project), enc(flag), enc(environment))) { code { (flag) } }
            " / " (environment)
        }
        h1 { "Releases of " (view.definition.name) " in " (environment) }
        @if let Some(d) = done { (page::notice("ok", html! { (d) })) }
        @if !errors.is_empty() {
            (page::notice("error", html! {
                "Nothing was changed: "
                @for (p, m) in errors { @if !p.is_empty() { code { (p) } ": " } (m) " " }
            }))
        }
        h2 { "Release plans" }
        p.muted { "A plan moves the default rule from one variation to another in steps, each held for a while, e.g. 1 % → 10 % → 50 % → 100 %." }
        @if plans.is_empty() {
            (page::empty("No release plans yet", html! {
                @if editor { "Start one below: the first step applies at once." } @else { "An editor can start one." }
            }))
        }
        @for plan in &plans { (render_plan(session, &view, &b, plan, editor)) }
        @if editor && !active && variations >= 2 {
            h3 { "New release plan" }
            form.stack method="post" action=(format!("{b}/plans")) {
                (page::csrf(session))
                div.row {
                    div {
                        label for="plan-from" { "From variation" }
                        select #plan-from name="from_variation" {
                            option value="" { "What the default rule serves now" }
                            @for i in 0..variations { option value=(i) { (variation_label(&view, i)) } }
                        }
                        (page::field_errors(errors, "from_variation"))
                    }
                    div {
                        label for="plan-to" { "To variation" }
                        select #plan-to name="to_variation" aria-invalid=[errors.iter().any(|(p, _)| p == "to_variation").then_some("true")] {
                            @for i in 0..variations { option value=(i) selected[i == 0] { (variation_label(&view, i)) } }
                        }
                        (page::field_errors(errors, "to_variation"))
                    }
                }
                div.field {
                    label for="plan-steps" { "Steps: one per line, “percentage, minutes to hold” (the last one 100)" }
                    textarea.code #plan-steps name="steps" rows="4" aria-describedby="plan-steps-help"
                        aria-invalid=[errors.iter().any(|(p, _)| p.starts_with("steps")).then_some("true")] { "1, 60\n10, 240\n50, 1440\n100" }
                    span #plan-steps-help .muted { "Percentages strictly increase; the hold of the last step is ignored." }
                    (page::field_errors(errors, "steps"))
                }
                div.field { label for="plan-desc" { "Description" } input #plan-desc type="text" name="description"; }
                div { button type="submit" { "Start release plan" } }
            }
        } @else if editor && active {
            p.muted { "One plan at a time: finish or abort the plan in progress to start another." }
        }
        h2 { "Scheduled changes" }
        @if changes.is_empty() {
            (page::empty("No scheduled changes", html! {
                @if editor { "Schedule one below: it runs at its time through the same write as an edit made then." }
                @else { "An editor can schedule changes." }
            }))
        } @else {
            table {
                thead { tr {
                    th scope="col" { "When (UTC)" } th scope="col" { "Change" } th scope="col" { "Author" }
                    th scope="col" { "State" } @if editor { th scope="col" { "Actions" } }
                } }
                tbody {
                    @for c in &changes {
                        tr {
                            td { (when(c.execute_at)) }
                            td { (change_text(&view, c)) @if !c.description.is_empty() { br; span.muted { (c.description) } } }
                            td { (c.author) }
                            td {
                                (schedule_state(c.state))
                                @if let Some(r) = &c.reason { br; span.bad { (r) } }
                                @if let Some(v) = c.result_version { br; span.muted { "→ version " (v) } }
                            }
                            @if editor {
                                td {
                                    @if c.state == ScheduleState::Pending {
                                        form method="post" action=(format!("{b}/schedules/{}/cancel", c.id)) {
                                            (page::csrf(session))
                                            button.secondary.small type="submit" aria-label=(format!("Cancel the change due {}", when(c.execute_at))) { "Cancel" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if editor {
            h3 { "Schedule a change" }
            form.stack method="post" action=(format!("{b}/schedules")) {
                (page::csrf(session))
                div.row {
                    div {
                        label for="at" { "When (UTC)" }
                        input #at type="datetime-local" name="execute_at" required
                            aria-invalid=[errors.iter().any(|(p, _)| p == "execute_at").then_some("true")];
                        (page::field_errors(errors, "execute_at"))
                    }
                    div {
                        label for="what" { "Change" }
                        select #what name="what" {
                            option value="on" { "Turn on" }
                            option value="off" { "Turn off" }
                            @for i in 0..variations { option value=(format!("serve:{i}")) { "Default rule serves " (variation_label(&view, i)) } }
                            option value="kill" { "Kill switch (off in every environment)" }
                        }
                        (page::field_errors(errors, "patch"))
                    }
                }
                div.field { label for="sc-desc" { "Description" } input #sc-desc type="text" name="description"; }
                div { button type="submit" { "Schedule change" } }
            }
        }
    };
    Ok((status, page::layout(session, &nav, "Releases", body)).into_response())
}

fn render_plan(
    session: &Session,
    view: &FlagView,
    base: &str,
    plan: &ReleasePlan,
    editor: bool,
) -> Markup {
    let id = format!("plan-{}", plan.id);
    let action = format!("{base}/plans/{}", plan.id);
    let button = |act: &str, label: &str, class: &str| {
        html! {
            form method="post" action=(action) {
                (page::csrf(session))
                input type="hidden" name="action" value=(act);
                button class=(class) type="submit" aria-label=(format!("{label} plan {}", plan.id)) { (label) @if act == "abort" { "…" } }
            }
        }
    };
    let from = usize::try_from(plan.from_variation).unwrap_or(usize::MAX);
    let to = usize::try_from(plan.to_variation).unwrap_or(usize::MAX);
    html! {
        section.card aria-labelledby=(id) {
            h3 #(id) { "Plan " (plan.id) " " (plan_state(plan.state)) }
            p {
                "From " strong { (variation_label(view, from)) } " to " strong { (variation_label(view, to)) }
                @if !plan.description.is_empty() { " — " (plan.description) }
            }
            ol {
                @for (i, s) in plan.steps.iter().enumerate() {
                    @let current = i64::try_from(i).is_ok_and(|i| i == plan.current_step);
                    li aria-current=[current.then_some("step")] {
                        @if current { strong { (s.percentage) " %" } } @else { (s.percentage) " %" }
                        @if i + 1 < plan.steps.len() { ", held " (s.hold_minutes) " min" }
                        @if current { " ← in force" }
                    }
                }
            }
            p.muted {
                "Created by " (plan.author) " at " (when(plan.created_at))
                @if let Some(t) = plan.next_step_at { " · next step at " (when(t)) }
                @if let Some(ms) = plan.remaining_ms { " · " (ms / 60_000) " min of the hold left" }
            }
            @if let Some(r) = &plan.reason { (page::notice("warn", html! { (r) })) }
            @if editor {
                div.row {
                    @match plan.state {
                        PlanState::Running => {
                            (button("advance", "Advance", "small"))
                            (button("pause", "Pause", "secondary small"))
                            (button("abort", "Abort", "danger small"))
                        }
                        PlanState::Paused => {
                            (button("resume", "Resume", "small"))
                            (button("abort", "Abort", "danger small"))
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The new-plan form.
#[derive(Debug, Deserialize)]
pub struct PlanForm {
    csrf: String,
    #[serde(default)]
    from_variation: String,
    #[serde(default)]
    to_variation: String,
    #[serde(default)]
    steps: String,
    #[serde(default)]
    description: String,
}

/// Reads "percentage, minutes" lines into steps, or the field error.
fn parse_steps(text: &str) -> Result<Vec<PlanStep>, (String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, line)| {
            let mut parts = line.split(',').map(str::trim);
            let err = |what: &str| {
                (
                    format!("steps[{i}]"),
                    format!("line {}: {what} (write “percentage, minutes”)", i + 1),
                )
            };
            let percentage = parts
                .next()
                .and_then(|p| p.trim_end_matches('%').trim().parse::<f64>().ok())
                .ok_or_else(|| err("the percentage is not a number"))?;
            let hold_minutes = match parts.next() {
                None | Some("") => 0,
                Some(m) => m
                    .parse::<u32>()
                    .map_err(|_| err("the minutes are not a whole number"))?,
            };
            Ok(PlanStep {
                percentage,
                hold_minutes,
            })
        })
        .collect()
}

/// Store errors a form shows beside its fields; others fail the request.
fn form_errors(e: StoreError) -> Result<Vec<(String, String)>, ConsoleError> {
    match e {
        StoreError::Invalid(v) => Ok(v.errors.into_iter().map(|e| (e.path, e.message)).collect()),
        StoreError::Conflict { message, .. } => Ok(vec![(String::new(), message)]),
        StoreError::PreconditionFailed { current } => Ok(vec![(
            String::new(),
            format!(
                "the configuration changed meanwhile (now version {current}); reload and try again"
            ),
        )]),
        other => Err(other.into()),
    }
}

/// `POST …/releases/plans`: `create_release_plan`.
pub async fn create_plan(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment)): Path<(String, String, String)>,
    Form(f): Form<PlanForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let path = (project.as_str(), flag.as_str(), environment.as_str());
    let steps = match parse_steps(&f.steps) {
        Ok(s) => s,
        Err(e) => {
            return render(
                &app,
                &session,
                path,
                &[e],
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let Ok(to_variation) = f.to_variation.parse::<usize>() else {
        let e = ("to_variation".to_owned(), "choose a variation".to_owned());
        return render(
            &app,
            &session,
            path,
            &[e],
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let req = NewReleasePlan {
        from_variation: f.from_variation.parse::<usize>().ok(),
        to_variation,
        steps,
        description: f.description.trim().to_owned(),
        // Guardrails are set through the API (docs/progressive-delivery.md).
        guardrails: Vec::new(),
    };
    match app
        .store
        .create_release_plan(&ctx, path, req, app.clock.now())
        .await
    {
        Ok(_) => {
            settle(&app).await;
            Ok(Redirect::to(&format!(
                "{}?done=plan-started",
                base(&project, &flag, &environment)
            ))
            .into_response())
        }
        Err(e) => {
            let status = store_status(&e).0;
            let errors = form_errors(e)?;
            render(&app, &session, path, &errors, None, status).await
        }
    }
}

/// A plan action form.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: String,
    action: String,
    #[serde(default)]
    confirmed: Option<String>,
}

/// `POST …/releases/plans/{id}`: advance, pause, resume, or (after a confirmation) abort.
pub async fn act(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment, id)): Path<(String, String, String, i64)>,
    Form(f): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let path = (project.as_str(), flag.as_str(), environment.as_str());
    let b = base(&project, &flag, &environment);
    let action = match f.action.as_str() {
        "advance" => PlanAction::Advance,
        "pause" => PlanAction::Pause,
        "resume" => PlanAction::Resume,
        "abort" => PlanAction::Abort,
        other => return Err(ConsoleError::BadForm(format!("unknown action '{other}'"))),
    };
    if action == PlanAction::Abort && f.confirmed.as_deref() != Some("yes") {
        let nav = Nav::load(&app, Some(&project), Some(&environment), "flags").await?;
        let body = html! {
            h1 { "Abort release plan " (id) "?" }
            (page::notice("warn", html! { "The plan stops and the default rule of " strong { (flag) } " in " strong { (environment) } " goes back to what it served before the plan." }))
            div.row {
                form method="post" action=(format!("{b}/plans/{id}")) {
                    (page::csrf(&session))
                    input type="hidden" name="action" value="abort";
                    input type="hidden" name="confirmed" value="yes";
                    button.danger type="submit" autofocus { "Abort the plan" }
                }
                a.button.secondary href=(b) { "Cancel" }
            }
        };
        return Ok(page::layout(&session, &nav, "Abort release plan", body).into_response());
    }
    match app
        .store
        .act_on_release_plan(&ctx, path, id, action, app.clock.now())
        .await
    {
        Ok(_) => {
            settle(&app).await;
            Ok(Redirect::to(&format!("{b}?done={}", f.action)).into_response())
        }
        Err(e) => {
            let status = store_status(&e).0;
            let errors = form_errors(e)?;
            render(&app, &session, path, &errors, None, status).await
        }
    }
}

/// The schedule form.
#[derive(Debug, Deserialize)]
pub struct ScheduleForm {
    csrf: String,
    #[serde(default)]
    execute_at: String,
    #[serde(default)]
    what: String,
    #[serde(default)]
    description: String,
}

/// A `datetime-local` value (`2026-12-05T10:30`, seconds optional), read as UTC.
fn parse_local(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    let full = match s.len() {
        16 => format!("{s}:00Z"),
        19 => format!("{s}Z"),
        _ => return None,
    };
    OffsetDateTime::parse(&full, &Rfc3339).ok()
}

/// `POST …/releases/schedules`: `create_scheduled_change`.
pub async fn create_schedule(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment)): Path<(String, String, String)>,
    Form(f): Form<ScheduleForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let path = (project.as_str(), flag.as_str(), environment.as_str());
    let Some(execute_at) = parse_local(&f.execute_at) else {
        let e = (
            "execute_at".to_owned(),
            "a date and time is required".to_owned(),
        );
        return render(
            &app,
            &session,
            path,
            &[e],
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let (patch, kill) = match f.what.as_str() {
        "on" => (Some(json!({"on": true})), false),
        "off" => (Some(json!({"on": false})), false),
        "kill" => (None, true),
        other => match other
            .strip_prefix("serve:")
            .and_then(|i| i.parse::<usize>().ok())
        {
            Some(i) => (Some(json!({"fallthrough": {"variation": i}})), false),
            None => return Err(ConsoleError::BadForm(format!("unknown change '{other}'"))),
        },
    };
    let req = NewScheduledChange {
        execute_at,
        description: f.description.trim().to_owned(),
        patch,
        kill,
        base_version: None,
        force: false,
    };
    match app
        .store
        .create_scheduled_change(&ctx, path, req, app.clock.now())
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!(
            "{}?done=scheduled",
            base(&project, &flag, &environment)
        ))
        .into_response()),
        Err(e) => {
            let status = store_status(&e).0;
            let errors = form_errors(e)?;
            render(&app, &session, path, &errors, None, status).await
        }
    }
}

/// `POST …/releases/schedules/{id}/cancel`: `cancel_scheduled_change`.
pub async fn cancel_schedule(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment, id)): Path<(String, String, String, i64)>,
    Form(f): Form<super::session::CsrfForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let path = (project.as_str(), flag.as_str(), environment.as_str());
    match app
        .store
        .cancel_scheduled_change(&ctx, path, id, app.clock.now())
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!(
            "{}?done=cancelled",
            base(&project, &flag, &environment)
        ))
        .into_response()),
        Err(e) => {
            let status = store_status(&e).0;
            let errors = form_errors(e)?;
            render(&app, &session, path, &errors, None, status).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_from_lines() {
        let s = parse_steps("1, 60\n\n10 %, 240\n100").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].percentage, 10.0);
        assert_eq!(s[1].hold_minutes, 240);
        assert_eq!(s[2].hold_minutes, 0);
        let e = parse_steps("1, 60\nten, 5").unwrap_err();
        assert_eq!(e.0, "steps[1]");
    }

    #[test]
    fn a_local_time_reads_as_utc() {
        let t = parse_local("2026-12-05T10:30").unwrap();
        assert_eq!(t.hour(), 10);
        assert_eq!(t.offset(), time::UtcOffset::UTC);
        assert!(parse_local("tomorrow").is_none());
    }
}
