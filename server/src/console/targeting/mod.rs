//! The targeting editor of one flag in one environment: on/off, individual targets, ordered
//! rules with clauses for every operator (segments picked from a list), rollouts with their
//! percentages, the default rule, prerequisites and the off variation.
//!
//! The form is the whole configuration; its field names are the configuration's JSON paths
//! (`rules[0].clauses[1].values`), so the store's validation errors land on the field they
//! name. Nothing is saved without a review: "Review changes" shows a side-by-side diff of
//! the current and the edited configuration, and "Save" sends it with `If-Match` (the
//! version the editor started from) to the same `put_config` the API's `PUT` calls. A save
//! over a version changed meanwhile shows the conflict view: what the other change did,
//! what yours would do on top of it, and a way to re-apply yours or reload.
//!
//! [`form`] reads the form back into a configuration (pure); [`view`] renders the editor.

mod form;
mod view;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use vexil_schema::{Clause, FlagConfig, Operator, Rule, Serve};

pub(crate) use form::comparable;
pub use form::serve_text;
use form::{Errors, Fields, new_rule_id, parse_config, reapply};
use view::Editor;

use super::diff;
use super::page::{self, Nav};
use super::session::Session;
use super::{ConsoleError, enc, settle};
use crate::app::AppState;
use crate::auth::Role;
use crate::store::{FlagFilter, FlagView, StoreError};

/// `GET …/targeting`: the editor on the current configuration.
pub async fn edit(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment)): Path<(String, String, String)>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, Some(&project), Some(&environment), "flags").await?;
    let view = app.store.get_flag(&project, &flag).await?;
    let cfg = view
        .environments
        .get(&environment)
        .cloned()
        .ok_or_else(|| StoreError::NotFound(format!("flag '{flag}' in '{environment}'")))?;
    let ed = editor(
        &app,
        &session,
        &project,
        &view,
        &environment,
        cfg.version,
        Errors::new(),
    )
    .await?;
    Ok(page::layout(&session, &nav, "Targeting", ed.render(&cfg, None)).into_response())
}

async fn editor<'a>(
    app: &AppState,
    session: &'a Session,
    project: &'a str,
    view: &'a FlagView,
    environment: &'a str,
    base: u64,
    errors: Errors,
) -> Result<Editor<'a>, ConsoleError> {
    let segments = app
        .store
        .list_segments(project, environment, None, Some(100))
        .await?
        .items
        .into_iter()
        .map(|s| (s.key, s.name))
        .collect();
    let flags = app
        .store
        .list_flags(
            project,
            &FlagFilter {
                archived: Some(false),
                limit: Some(100),
                ..FlagFilter::default()
            },
        )
        .await?
        .items
        .into_iter()
        .map(|f| f.key)
        .filter(|k| *k != view.definition.key.to_string())
        .collect();
    Ok(Editor {
        session,
        project,
        flag: view,
        environment,
        base,
        segments,
        flags,
        errors,
        editable: session.can(Role::Editor) && !view.archived,
    })
}

/// `POST …/targeting`: an edit of the form's structure (add or remove a rule, a condition),
/// a review (diff), or a save.
pub async fn submit(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment)): Path<(String, String, String)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let fields = Fields::new(pairs);
    let ctx = session.write(Role::Editor, fields.get("csrf").unwrap_or(""))?;
    let nav = Nav::load(&app, Some(&project), Some(&environment), "flags").await?;
    let view = app.store.get_flag(&project, &flag).await?;
    let current = view
        .environments
        .get(&environment)
        .cloned()
        .ok_or_else(|| StoreError::NotFound(format!("flag '{flag}' in '{environment}'")))?;
    let base: u64 = fields
        .get("base")
        .and_then(|b| b.parse().ok())
        .ok_or_else(|| ConsoleError::BadForm("the form lacks its base version".into()))?;
    let (mut cfg, errors) = parse_config(&fields, view.definition.variations.len());
    let action = fields.get("action").unwrap_or("preview").to_owned();
    let page_with =
        |cfg: FlagConfig, errors: Errors, base: u64, status: StatusCode, review: Option<Markup>| {
            let app = app.clone();
            let session = &session;
            let nav = &nav;
            let view = &view;
            let project = &project;
            let environment = &environment;
            async move {
                let ed = editor(&app, session, project, view, environment, base, errors).await?;
                Ok::<Response, ConsoleError>(
                    (
                        status,
                        page::layout(session, nav, "Targeting", ed.render(&cfg, review)),
                    )
                        .into_response(),
                )
            }
        };
    // Structural edits re-render the editor with the change applied; nothing is saved.
    let index = |s: &str| s.parse::<usize>().ok();
    let structural = match action.split(':').collect::<Vec<_>>().as_slice() {
        ["add_rule"] => {
            cfg.rules.push(Rule {
                id: new_rule_id(),
                description: None,
                clauses: vec![Clause {
                    attribute: "key".into(),
                    op: Operator::In,
                    values: Vec::new(),
                    negate: false,
                }],
                serve: Serve::Variation(0),
            });
            true
        }
        ["remove_rule", i] => {
            if let Some(i) = index(i).filter(|i| *i < cfg.rules.len()) {
                cfg.rules.remove(i);
            }
            true
        }
        ["move_up", i] => {
            if let Some(i) = index(i).filter(|i| *i > 0 && *i < cfg.rules.len()) {
                cfg.rules.swap(i - 1, i);
            }
            true
        }
        ["add_clause", i] => {
            if let Some(r) = index(i).and_then(|i| cfg.rules.get_mut(i)) {
                r.clauses.push(Clause {
                    attribute: String::new(),
                    op: Operator::In,
                    values: Vec::new(),
                    negate: false,
                });
            }
            true
        }
        ["remove_clause", i, j] => {
            if let (Some(r), Some(j)) = (index(i).and_then(|i| cfg.rules.get_mut(i)), index(j))
                && j < r.clauses.len()
            {
                r.clauses.remove(j);
            }
            true
        }
        _ => false,
    };
    if structural {
        return page_with(cfg, errors, base, StatusCode::OK, None).await;
    }
    if !errors.is_empty() {
        return page_with(cfg, errors, base, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    }
    if current.version != base {
        // Someone saved meanwhile: show what they changed and what this edit would do on
        // top of the current version; re-applying makes the current version the base.
        let started = app
            .store
            .get_version(&project, &flag, &environment, base)
            .await
            .map(|v| v.config)
            .ok();
        let theirs = started.as_ref().map(comparable).unwrap_or_default();
        // Re-applying keeps the other change: the fields this edit changed (against the
        // version it started from) over the current version.
        if let Some(started) = &started {
            cfg = reapply(started, &cfg, &current);
        }
        let review = html! {
            section #conflict aria-labelledby="conflict-h" {
                h2 #conflict-h { "This flag changed while you were editing" }
                (page::notice("warn", html! {
                    "You started from version " (base) "; version " (current.version) " was saved since. Nothing of yours was saved. "
                    "Review both changes, then re-apply yours on the latest version or discard it."
                }))
                h3 { "What changed meanwhile" }
                (diff::side_by_side(&format!("Version {base} (yours started here)"), &format!("Version {} (current)", current.version), &theirs, &comparable(&current)))
                h3 { "What your edit would change on top of it" }
                (diff::side_by_side(&format!("Version {} (current)", current.version), "Your edit", &comparable(&current), &comparable(&cfg)))
                div.row {
                    a.button.secondary href=(format!("/projects/{}/flags/{}/environments/{}/targeting", enc(&project), enc(&flag), enc(&environment))) { "Discard mine and reload" }
                    span.muted { "or press “Review changes” below to re-apply your edit on version " (current.version) "." }
                }
            }
        };
        return page_with(
            cfg,
            errors,
            current.version,
            StatusCode::PRECONDITION_FAILED,
            Some(review),
        )
        .await;
    }
    if action == "save" {
        return match app
            .store
            .put_config(&ctx, &project, &flag, &environment, cfg.clone(), Some(base))
            .await
        {
            Ok(_) => {
                settle(&app).await;
                Ok(Redirect::to(&format!(
                    "/projects/{}/flags/{}?env={}&done=saved&t={}",
                    enc(&project),
                    enc(&flag),
                    enc(&environment),
                    crate::events::now_ms()
                ))
                .into_response())
            }
            Err(StoreError::ApprovalRequired(why)) => {
                // A governed environment: offer the same change as a change request.
                let patch = super::changes::patch_between(&current, &cfg);
                let path = (project.as_str(), flag.as_str(), environment.as_str());
                let offer = super::changes::proposal(&session, path, &current, &patch, &why);
                page_with(cfg, errors, base, StatusCode::CONFLICT, Some(offer)).await
            }
            Err(StoreError::Invalid(v)) => {
                let errors = v.errors.into_iter().map(|e| (e.path, e.message)).collect();
                page_with(cfg, errors, base, StatusCode::UNPROCESSABLE_ENTITY, None).await
            }
            Err(StoreError::PreconditionFailed { .. }) => {
                // Lost a race after the check above: the next review shows the conflict.
                page_with(
                    cfg,
                    vec![(
                        String::new(),
                        "This flag changed meanwhile: review again.".into(),
                    )],
                    base,
                    StatusCode::PRECONDITION_FAILED,
                    None,
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
    }
    // Review: the diff and the save button (the store validates on save; its errors come
    // back onto the fields).
    let (old, new) = (comparable(&current), comparable(&cfg));
    let changed = diff::changes(&diff::lines(&old, &new));
    let review = html! {
        section #review aria-labelledby="review-h" {
            h2 #review-h { "Review before saving" }
            (diff::side_by_side(&format!("Version {} (current)", current.version), "After saving", &old, &new))
            @if changed {
                form method="post" action=(format!("/projects/{}/flags/{}/environments/{}/targeting", enc(&project), enc(&flag), enc(&environment))) data-save {
                    (page::csrf(&session))
                    @for (k, vs) in &fields.0 {
                        @if k != "csrf" && k != "action" {
                            @for v in vs { input type="hidden" name=(k) value=(v); }
                        }
                    }
                    div.row {
                        button type="submit" name="action" value="save" { "Save version " (current.version + 1) }
                        span.muted { "or keep editing below." }
                    }
                }
            } @else {
                (page::notice("ok", html! { "Nothing to save: the edit matches the current version." }))
            }
        }
    };
    page_with(cfg, errors, base, StatusCode::OK, Some(review)).await
}
