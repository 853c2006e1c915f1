//! Editing a flag's definition: name, description, tags, temporary, client-side, and its
//! variations (add, edit, remove), saved with `If-Match` through
//! [`crate::store::Store::update_definition`], the function the API's `PUT` of a flag calls.
//!
//! Variation fields are named by their JSON path (`variations[1].value`), so the store's
//! validation errors (a value of the wrong kind, a removed variation an environment still
//! serves) land on the field they concern. The key and the kind cannot change.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Value, json};
use vexil_schema::FlagDefinition;

use super::page::{self, Nav};
use super::session::Session;
use super::{ConsoleError, enc, settle};
use crate::app::AppState;
use crate::auth::Role;
use crate::store::{FlagView, StoreError};

/// One variation row of the form, as typed.
#[derive(Debug, Clone, Default)]
struct Row {
    value: String,
    name: String,
    description: String,
}

/// The form, as typed.
#[derive(Debug, Clone, Default)]
struct Draft {
    name: String,
    description: String,
    tags: String,
    temporary: bool,
    client_side: bool,
    rows: Vec<Row>,
    version: u64,
}

impl Draft {
    fn of(view: &FlagView) -> Self {
        let d = &view.definition;
        Self {
            name: d.name.clone(),
            description: d.description.clone(),
            tags: d.tags.join(", "),
            temporary: d.temporary,
            client_side: d.client_side,
            rows: d
                .variations
                .iter()
                .map(|v| Row {
                    value: v.value.to_string(),
                    name: v.name.clone().unwrap_or_default(),
                    description: v.description.clone().unwrap_or_default(),
                })
                .collect(),
            version: crate::store::to_u64(view.version),
        }
    }

    /// Reads the posted pairs; `remove` drops a row, `add` appends an empty one.
    fn read(pairs: &[(String, String)]) -> (Self, Option<String>) {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut rows = Vec::new();
        for i in 0.. {
            let prefix = format!("variations[{i}]");
            if !pairs.iter().any(|(n, _)| n.starts_with(&prefix)) {
                break;
            }
            rows.push(Row {
                value: get(&format!("{prefix}.value")),
                name: get(&format!("{prefix}.name")),
                description: get(&format!("{prefix}.description")),
            });
        }
        let action = get("action");
        if let Some(i) = action
            .strip_prefix("remove:")
            .and_then(|i| i.parse::<usize>().ok())
            && i < rows.len()
        {
            rows.remove(i);
        }
        if action == "add" {
            rows.push(Row::default());
        }
        let draft = Self {
            name: get("name"),
            description: get("description"),
            tags: get("tags"),
            temporary: pairs.iter().any(|(n, _)| n == "temporary"),
            client_side: pairs.iter().any(|(n, _)| n == "client_side"),
            rows,
            version: get("version").parse().unwrap_or(0),
        };
        (draft, Some(action).filter(|a| !a.is_empty()))
    }

    /// The definition the draft describes, or the fields that cannot be read.
    fn definition(&self, view: &FlagView) -> Result<FlagDefinition, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut variations = Vec::new();
        for (i, r) in self.rows.iter().enumerate() {
            match serde_json::from_str::<Value>(r.value.trim()) {
                Ok(v) => {
                    let mut var = json!({ "value": v });
                    if !r.name.trim().is_empty() {
                        var["name"] = json!(r.name.trim());
                    }
                    if !r.description.trim().is_empty() {
                        var["description"] = json!(r.description.trim());
                    }
                    variations.push(var);
                }
                Err(e) => errors.push((
                    format!("variations[{i}].value"),
                    format!("not a JSON value ({e}); strings need quotes, e.g. \"blue\""),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let tags: Vec<&str> = self
            .tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        let d = &view.definition;
        let doc = json!({
            "key": d.key, "name": self.name.trim(), "description": self.description,
            "kind": d.kind, "variations": variations, "tags": tags,
            "temporary": self.temporary, "client_side": self.client_side,
        });
        serde_json::from_value(doc).map_err(|e| vec![(String::new(), e.to_string())])
    }
}

fn form(
    session: &Session,
    project: &str,
    view: &FlagView,
    d: &Draft,
    errors: &[(String, String)],
    notice: Option<Markup>,
) -> Markup {
    let key = view.definition.key.to_string();
    let action = format!("/projects/{}/flags/{}/edit", enc(project), enc(&key));
    let invalid = |path: &str| {
        errors
            .iter()
            .any(|(p, _)| {
                p == path
                    || p.starts_with(&format!("{path}."))
                    || p.starts_with(&format!("{path}["))
            })
            .then_some("true")
    };
    // Errors that name no field of this form (e.g. an environment still serving a removed
    // variation) are listed at the top.
    let fields = ["name", "description", "tags", "variations"];
    let general: Vec<&(String, String)> = errors
        .iter()
        .filter(|(p, _)| !fields.iter().any(|f| p.starts_with(f)))
        .collect();
    html! {
        p.muted {
            a href=(format!("/projects/{}/flags", enc(project))) { "Flags" } " / "
            a href=(format!("/projects/{}/flags/{}", enc(project), enc(&key))) { code { (key) } } " / definition"
        }
        h1 { "Edit " (view.definition.name) }
        @if let Some(n) = notice { (n) }
        @if !errors.is_empty() {
            (page::notice("error", html! {
                "Nothing was saved: fix the fields marked below."
                @for (p, m) in &general { br; @if !p.is_empty() { code { (p) } ": " } (m) }
            }))
        }
        form.stack method="post" action=(action) {
            (page::csrf(session))
            input type="hidden" name="version" value=(d.version);
            p { "Key " code { (key) } " · kind " strong { (view.definition.kind.as_str()) } span.muted { " (neither can change: SDKs depend on them)" } }
            div.row {
                div { label for="d-name" { "Name" } input #d-name type="text" name="name" value=(d.name) required aria-invalid=[invalid("name")]; (page::field_errors(errors, "name")) }
                div { label for="d-tags" { "Tags (comma-separated)" } input #d-tags type="text" name="tags" value=(d.tags) aria-invalid=[invalid("tags")]; (page::field_errors(errors, "tags")) }
            }
            div { label for="d-desc" { "Description" } textarea #d-desc name="description" rows="2" aria-invalid=[invalid("description")] { (d.description) } (page::field_errors(errors, "description")) }
            div.row {
                div { label { input type="checkbox" name="temporary" checked[d.temporary]; " Temporary (a release flag to remove later)" } }
                div { label { input type="checkbox" name="client_side" checked[d.client_side]; " Available to client-side SDKs (browsers, mobile apps)" } }
            }
            fieldset {
                legend { "Variations" }
                p.muted { "Configurations refer to variations by position: removing one that an environment serves is refused." }
                (page::field_errors(errors, "variations"))
                @for (i, r) in d.rows.iter().enumerate() {
                    @let p = format!("variations[{i}]");
                    div.row.card {
                        div {
                            label for=(format!("v{i}-value")) { "Variation " (i) " value (JSON)" }
                            input.code #(format!("v{i}-value")) type="text" name=(format!("{p}.value")) value=(r.value) required aria-invalid=[invalid(&format!("{p}.value"))];
                            (page::field_errors(errors, &format!("{p}.value")))
                        }
                        div { label for=(format!("v{i}-name")) { "Name" } input #(format!("v{i}-name")) type="text" name=(format!("{p}.name")) value=(r.name); }
                        div { label for=(format!("v{i}-desc")) { "Description" } input #(format!("v{i}-desc")) type="text" name=(format!("{p}.description")) value=(r.description); }
                        div { button.secondary.small type="submit" name="action" value=(format!("remove:{i}")) formnovalidate aria-label=(format!("Remove variation {i}")) { "Remove" } }
                    }
                }
                button.secondary.small type="submit" name="action" value="add" formnovalidate { "Add a variation" }
            }
            div.row {
                button type="submit" name="action" value="save" { "Save definition" }
                a href=(format!("/projects/{}/flags/{}", enc(project), enc(&key))) { "Cancel" }
            }
        }
    }
}

/// `GET /projects/{project}/flags/{flag}/edit`.
pub async fn edit(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    if !session.can(Role::Editor) {
        return Err(ConsoleError::Forbidden(Role::Editor));
    }
    let nav = Nav::load(&app, Some(&project), None, "flags").await?;
    let view = app.store.get_flag(&project, &flag).await?;
    let body = form(&session, &project, &view, &Draft::of(&view), &[], None);
    Ok(page::layout(&session, &nav, "Edit flag", body).into_response())
}

/// `POST /projects/{project}/flags/{flag}/edit`: add or remove a variation row, or save.
pub async fn submit(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag)): Path<(String, String)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let csrf = pairs
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let ctx = session.write(Role::Editor, csrf)?;
    let nav = Nav::load(&app, Some(&project), None, "flags").await?;
    let view = app.store.get_flag(&project, &flag).await?;
    let (draft, action) = Draft::read(&pairs);
    let again = |errors: Vec<(String, String)>, status: StatusCode, notice: Option<Markup>| {
        let body = form(&session, &project, &view, &draft, &errors, notice);
        (status, page::layout(&session, &nav, "Edit flag", body)).into_response()
    };
    if action.as_deref() != Some("save") {
        return Ok(again(Vec::new(), StatusCode::OK, None));
    }
    let def = match draft.definition(&view) {
        Ok(d) => d,
        Err(errors) => return Ok(again(errors, StatusCode::UNPROCESSABLE_ENTITY, None)),
    };
    match app
        .store
        .update_definition(&ctx, &project, &flag, def, Some(draft.version))
        .await
    {
        Ok(_) => {
            settle(&app).await;
            Ok(Redirect::to(&format!(
                "/projects/{}/flags/{}?done=defined",
                enc(&project),
                enc(&flag)
            ))
            .into_response())
        }
        Err(StoreError::Invalid(v)) => {
            let errors = v.errors.into_iter().map(|e| (e.path, e.message)).collect();
            Ok(again(errors, StatusCode::UNPROCESSABLE_ENTITY, None))
        }
        Err(StoreError::PreconditionFailed { current }) => {
            let notice = page::notice(
                "warn",
                html! {
                    "Someone changed this flag's definition meanwhile: you started from version " (draft.version)
                    ", the current one is " (current) ". Nothing was saved. "
                    a href=(format!("/projects/{}/flags/{}/edit", enc(&project), enc(&flag))) { "Reload the current definition" }
                    " and make your change again."
                },
            );
            Ok(again(
                Vec::new(),
                StatusCode::PRECONDITION_FAILED,
                Some(notice),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn rows_are_read_removed_and_added() {
        let p = pairs(&[
            ("name", "N"),
            ("variations[0].value", "\"a\""),
            ("variations[0].name", "A"),
            ("variations[1].value", "\"b\""),
            ("variations[2].value", "\"c\""),
            ("temporary", "on"),
            ("version", "4"),
            ("action", "remove:1"),
        ]);
        let (d, action) = Draft::read(&p);
        assert_eq!(action.as_deref(), Some("remove:1"));
        assert_eq!(d.rows.len(), 2);
        assert_eq!(d.rows[0].name, "A");
        assert_eq!(d.rows[1].value, "\"c\"");
        assert!(d.temporary && !d.client_side);
        assert_eq!(d.version, 4);
        let mut p = p;
        p.pop();
        p.push(("action".into(), "add".into()));
        assert_eq!(Draft::read(&p).0.rows.len(), 4);
    }
}
