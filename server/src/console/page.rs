//! The console's one layout, its navigation (project and environment switcher) and the small
//! components every page shares: on/off badges, field errors, CSRF fields, empty states.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use super::{ConsoleError, enc};
use crate::app::AppState;
use crate::auth::Role;
use crate::store::{EnvironmentView, ProjectView, StoreError};

/// Where a page sits: the project and environment being looked at, and the lists the
/// switcher offers.
#[derive(Debug, Default)]
pub struct Nav {
    /// The current project's key, if the page belongs to one.
    pub project: Option<String>,
    /// The current environment's key (the switcher's choice; the first one by default).
    pub environment: Option<String>,
    /// Every project (first page), for the switcher.
    pub projects: Vec<ProjectView>,
    /// The current project's environments.
    pub environments: Vec<EnvironmentView>,
    /// Which section of the navigation is current.
    pub section: &'static str,
}

impl Nav {
    /// Loads the switcher's lists for `project` and picks `environment` (or the project's
    /// first environment).
    pub async fn load(
        app: &AppState,
        project: Option<&str>,
        environment: Option<&str>,
        section: &'static str,
    ) -> Result<Self, ConsoleError> {
        let projects = app.store.list_projects(None, Some(100)).await?.items;
        let environments = match project {
            Some(p) => app.store.list_environments(p, None, Some(100)).await?.items,
            None => Vec::new(),
        };
        let environment = match environment {
            Some(e) if environments.iter().any(|x| x.key == e) => Some(e.to_owned()),
            Some(e) => return Err(StoreError::NotFound(format!("environment '{e}'")).into()),
            None => environments.first().map(|e| e.key.clone()),
        };
        Ok(Self {
            project: project.map(str::to_owned),
            environment,
            projects,
            environments,
            section,
        })
    }

    /// The current environment key, or a not-found error when the project has none.
    pub fn env(&self) -> Result<&str, ConsoleError> {
        self.environment.as_deref().ok_or_else(|| {
            StoreError::NotFound(
                "an environment in this project (create one under Settings)".into(),
            )
            .into()
        })
    }
}

/// The document head and the shared assets.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Vexil" }
            link rel="stylesheet" href=(super::assets::CSS_URL);
            script src=(super::assets::HTMX_URL) defer {}
            script src=(super::assets::JS_URL) defer {}
        }
    }
}

/// A page without navigation (sign-in, errors before sign-in).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (body) }
        }
    }
}

/// An error page (kept bare: it may be shown before the navigation can be loaded).
pub fn error_page(status: StatusCode, title: &str, detail: &str) -> Markup {
    bare(
        title,
        html! {
            main.signin {
                h1 { (title) }
                p role="alert" { (detail) }
                p.muted { "HTTP " (status.as_u16()) }
                p { a href="/projects" { "Back to the console" } }
            }
        },
    )
}

/// The layout of every signed-in page.
pub fn layout(session: &Session, nav: &Nav, title: &str, body: Markup) -> Markup {
    let env_q = nav
        .environment
        .as_deref()
        .map(|e| format!("?env={}", enc(e)))
        .unwrap_or_default();
    let item = |section: &str, href: String, label: &str| {
        html! {
            li { a href=(href) aria-current=[(nav.section == section).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/projects" { "Vexil" }
                    form.switcher method="get" action="/switch" {
                        label for="project-switch" { "Project" }
                        select #project-switch name="project" data-autosubmit {
                            @if nav.project.is_none() { option value="" selected { "Choose…" } }
                            @for p in &nav.projects {
                                option value=(p.key) selected[nav.project.as_deref() == Some(p.key.as_str())] { (p.name) }
                            }
                        }
                        @if nav.project.is_some() && !nav.environments.is_empty() {
                            label for="env-switch" { "Environment" }
                            select #env-switch name="env" data-autosubmit {
                                @for e in &nav.environments {
                                    option value=(e.key) selected[nav.environment.as_deref() == Some(e.key.as_str())] { (e.name) }
                                }
                            }
                        }
                        input type="hidden" name="section" value=(nav.section);
                        button.secondary.small type="submit" { "Go" }
                    }
                    div.who {
                        span { (session.actor.name) " · " span.role { (session.actor.role.as_str()) } }
                        form method="post" action="/sign-out" {
                            (csrf(session))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                nav.side aria-label="Sections" {
                    ul {
                        @if let Some(p) = &nav.project {
                            @let p = enc(p);
                            (item("flags", format!("/projects/{p}/flags{env_q}"), "Flags"))
                            @if let Some(e) = &nav.environment {
                                @let e = enc(e);
                                (item("segments", format!("/projects/{p}/environments/{e}/segments"), "Segments"))
                                (item("keys", format!("/projects/{p}/environments/{e}/keys"), "SDK & relay keys"))
                                (item("experiments", format!("/projects/{p}/environments/{e}/experiments"), "Experiments"))
                                (item("changes", format!("/projects/{p}/environments/{e}/change-requests"), "Change requests"))
                            }
                            (item("explain", format!("/projects/{p}/explain{env_q}"), "Explain"))
                            (item("settings", format!("/projects/{p}/settings"), "Environments"))
                        }
                        (item("projects", "/projects".to_owned(), "Projects"))
                        (item("audit", "/audit".to_owned(), "Audit log"))
                        @if session.can(Role::Admin) {
                            (item("tokens", "/tokens".to_owned(), "API tokens"))
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    }
}

/// The hidden CSRF field of a state-changing form.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// On/off shown by colour and by text.
pub fn state_badge(on: bool) -> Markup {
    html! {
        @if on { span.badge.on { "On" } } @else { span.badge.off { "Off" } }
    }
}

/// A message box: `kind` is `ok`, `warn` or `error`.
pub fn notice(kind: &str, body: Markup) -> Markup {
    let role = if kind == "error" { "alert" } else { "status" };
    html! { div class=(format!("notice {kind}")) role=(role) { (body) } }
}

/// An empty state: what is missing and what to do next.
pub fn empty(title: &str, next: Markup) -> Markup {
    html! { div.empty { p.empty-title { (title) } p { (next) } } }
}

/// Field errors of a validation failure, for the field at `path` (and its children).
pub fn field_errors(errors: &[(String, String)], path: &str) -> Markup {
    let mine: Vec<&(String, String)> = errors
        .iter()
        .filter(|(p, _)| {
            p == path
                || p.strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
        .collect();
    html! {
        @for (p, m) in mine {
            p.field-error role="alert" data-path=(p) { (m) }
        }
    }
}
