//! Explain: enter a context (a JSON document, or a key and attributes) and see, for one flag,
//! which prerequisites, targets, rules and clauses were checked and why the value served
//! was chosen: the same engine explanation the API's `…/explain` returns, computed on the
//! same compiled snapshot.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use vexil_eval::ClauseOutcome;
use vexil_eval::Explanation;
use vexil_schema::{Context, Reason};

use super::ConsoleError;
use super::page::{self, Nav};
use super::session::Session;
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::StoreError;

/// Query of the explain page.
#[derive(Debug, Default, Deserialize)]
pub struct ExplainQuery {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    flag: Option<String>,
}

/// The explain form (read-only: it changes nothing, so viewers may use it).
#[derive(Debug, Default, Deserialize)]
pub struct ExplainForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    flag: String,
    /// The context key (when no JSON is given).
    #[serde(default)]
    key: String,
    /// Attributes as a JSON object (with `key`).
    #[serde(default)]
    attributes: String,
    /// A whole context document (takes precedence).
    #[serde(default)]
    context: String,
}

/// `GET /projects/{project}/explain`.
pub async fn page(
    State(app): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Query(q): Query<ExplainQuery>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, Some(&project), q.env.as_deref(), "explain").await?;
    let form = ExplainForm {
        flag: q.flag.unwrap_or_default(),
        env: nav.environment.clone().unwrap_or_default(),
        ..ExplainForm::default()
    };
    Ok(page::layout(
        &session,
        &nav,
        "Explain",
        render(&session, &nav, &project, &form, None, None),
    )
    .into_response())
}

fn render(
    session: &Session,
    nav: &Nav,
    project: &str,
    f: &ExplainForm,
    error: Option<(&str, &str)>,
    result: Option<Markup>,
) -> Markup {
    let err_on = |field: &str| error.filter(|(p, _)| *p == field).map(|_| "true");
    html! {
        h1 { "Explain an evaluation" }
        p.muted { "Which value would this context get, and why? Evaluated on the environment's current configuration, exactly as the SDKs do." }
        form.stack method="post" action=(format!("/projects/{}/explain", super::enc(project))) {
            (page::csrf(session))
            div.row {
                div {
                    label for="x-env" { "Environment" }
                    select #x-env name="env" {
                        @for e in &nav.environments { option value=(e.key) selected[e.key == f.env] { (e.name) } }
                    }
                }
                div { label for="x-flag" { "Flag key" } input #x-flag type="text" name="flag" value=(f.flag) required aria-invalid=[err_on("flag")]; }
                div { label for="x-key" { "Context key" } input #x-key type="text" name="key" value=(f.key) aria-invalid=[err_on("key")]; }
            }
            div {
                label for="x-attrs" { "Attributes (JSON object)" }
                textarea.code #x-attrs name="attributes" rows="3" placeholder="{\"plan\": \"pro\", \"country\": \"DE\"}" aria-invalid=[err_on("attributes")] { (f.attributes) }
            }
            details open[!f.context.is_empty()] {
                summary { "Or paste a whole context document" }
                label for="x-ctx" { "Context JSON (used instead of key and attributes when given)" }
                textarea.code #x-ctx name="context" rows="4" placeholder="{\"key\": \"user-1\", \"kind\": \"user\", \"attributes\": {}}" aria-invalid=[err_on("context")] { (f.context) }
            }
            @if let Some((_, m)) = error { p.field-error role="alert" { (m) } }
            button type="submit" { "Explain" }
        }
        @if let Some(r) = result { (r) }
    }
}

fn reason_text(r: &Reason) -> String {
    match r {
        Reason::Off => "the flag is off, so its off variation is served".into(),
        Reason::PrerequisiteFailed { prerequisite_key } => {
            format!("prerequisite '{prerequisite_key}' is not met, so the off variation is served")
        }
        Reason::TargetMatch => "the context key is individually targeted".into(),
        Reason::RuleMatch {
            rule_index,
            rule_id,
        } => {
            format!("rule {} ({rule_id}) matched", rule_index + 1)
        }
        Reason::Fallthrough => "no target or rule matched: the default rule applies".into(),
        Reason::Error { error_kind } => format!("the evaluation failed: {error_kind:?}"),
        #[allow(unreachable_patterns)]
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn render_explanation(x: &Explanation, version: u64) -> Markup {
    html! {
        section #explanation aria-labelledby="x-h" {
            h2 #x-h { "Result" }
            div.card {
                p { "Serves " code { (x.value.as_ref().map(Value::to_string).unwrap_or_else(|| "the caller's default".into())) }
                    @if let Some(v) = x.variation { " (variation " (v) ")" } }
                p { strong { "Why: " } (reason_text(&x.reason)) "." }
                @if x.split { p.muted { "Served by a percentage rollout." } }
                @if x.in_experiment { p.muted { "The context is in an experiment: its exposure is counted." } }
                @if let Some(m) = &x.malformed_message { (page::notice("error", html! { "The flag is malformed: " (m) })) }
                p.muted { "Environment version " (version) }
            }
            @if !x.prerequisites.is_empty() {
                h3 { "Prerequisites" }
                ul { @for p in &x.prerequisites {
                    li { code { (p.key) } " must serve variation " (p.required_variation) ": "
                        @if p.met { span.badge.on { "met" } } @else { span.badge.off { "not met" } }
                        @if let Some(v) = p.variation { " (serves " (v) ")" } }
                } }
            }
            @if !x.rules.is_empty() {
                h3 { "Rules checked, in order" }
                @for r in &x.rules {
                    div.card.rule {
                        p { strong { "Rule " (r.index + 1) } " " code { (r.id) } ": "
                            @if r.matched { span.badge.on { "matched" } } @else { span.badge.off { "no match" } } }
                        ul {
                            @for c in &r.clauses {
                                li {
                                    code { (c.attribute) } " " (serde_json::to_string(&c.op).unwrap_or_default().trim_matches('"'))
                                    @if c.negate { " (negated)" }
                                    " — context value " code { (c.context_value.as_ref().map(Value::to_string).unwrap_or_else(|| "absent".into())) } ": "
                                    @match c.outcome {
                                        ClauseOutcome::Match => strong { "match" },
                                        ClauseOutcome::NoMatch => span { "no match" },
                                        ClauseOutcome::MissingAttribute => span { "attribute missing (never matches)" },
                                        _ => span { "?" },
                                    }
                                    @for s in &c.segments {
                                        " · segment " code { (s.key) } ": " (serde_json::to_value(&s.result).ok().and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned)).unwrap_or_default())
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(b) = &x.bucket {
                h3 { "Bucketing" }
                pre { (serde_json::to_string_pretty(b).unwrap_or_default()) }
            }
        }
    }
}

/// `POST /projects/{project}/explain`.
pub async fn run(
    State(app): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Form(f): Form<ExplainForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&f.csrf)?;
    let nav = Nav::load(&app, Some(&project), Some(&f.env), "explain").await?;
    let fail = |field: &'static str, message: String| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            page::layout(
                &session,
                &nav,
                "Explain",
                render(&session, &nav, &project, &f, Some((field, &message)), None),
            ),
        )
            .into_response()
    };
    let doc = if f.context.trim().is_empty() {
        let attributes: Value = if f.attributes.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str(&f.attributes) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return Ok(fail(
                        "attributes",
                        "Attributes must be a JSON object.".into(),
                    ));
                }
                Err(e) => return Ok(fail("attributes", format!("Attributes are not JSON: {e}"))),
            }
        };
        json!({"key": f.key.trim(), "attributes": attributes})
    } else {
        match serde_json::from_str(&f.context) {
            Ok(v) => v,
            Err(e) => return Ok(fail("context", format!("The context is not JSON: {e}"))),
        }
    };
    let context: Context = match serde_json::from_value(doc) {
        Ok(c) => c,
        Err(e) => return Ok(fail("context", format!("Not a valid context: {e}"))),
    };
    let compiled = match crate::api::compiled(&app, &project, &f.env).await {
        Ok(c) => c,
        Err(ApiError::NotFound(w)) => return Err(StoreError::NotFound(w).into()),
        Err(e) => {
            let _ = axum::response::IntoResponse::into_response(e);
            return Err(ConsoleError::BadForm(
                "the environment could not be evaluated".into(),
            ));
        }
    };
    let flag = f.flag.trim();
    if compiled.flag(flag).is_none() && compiled.malformation(flag).is_none() {
        return Ok(fail(
            "flag",
            format!(
                "No flag '{flag}' is served in {} (archived flags are not).",
                f.env
            ),
        ));
    }
    let x = compiled.explain(flag, &context);
    let result = render_explanation(&x, compiled.version());
    Ok(page::layout(
        &session,
        &nav,
        "Explain",
        render(&session, &nav, &project, &f, None, Some(result)),
    )
    .into_response())
}
