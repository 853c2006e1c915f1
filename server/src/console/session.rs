//! Console sessions: sign in with an API token, get a server-side session.
//!
//! The browser holds a random 256-bit session id in an `HttpOnly`, `SameSite=Strict` cookie
//! (`Secure` behind TLS); the `console_sessions` table keeps only its SHA-256 digest, the API
//! token it acts for, a per-session CSRF token and the expiry. Every request re-reads the
//! token's name and role and whether it is revoked, so revoking a token ends its sessions
//! at once. Every state-changing form carries the CSRF token, compared in constant time.
//! Expiry is read on the server's injectable clock ([`crate::delivery::Clock`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::Form;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use time::OffsetDateTime;

use super::ConsoleError;
use super::page;
use crate::app::AppState;
use crate::auth::{Actor, Role, digests_equal, generate_secret, hash_secret};
use crate::db::args;
use crate::store::{StoreError, WriteContext};

/// The session cookie's name.
pub const COOKIE: &str = "vexil_session";

/// A signed-in console user: the API token's actor and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token the session acts for (its name is the audit log's actor).
    pub actor: Actor,
    /// The CSRF token every state-changing form must carry.
    pub csrf: String,
    /// The request id, recorded with audited writes.
    pub request_id: Option<String>,
    /// Digest of the session id (to end it on sign-out).
    id_hash: Vec<u8>,
}

impl Session {
    /// The write context for store calls if the role allows `role`, after checking the
    /// form's CSRF token.
    pub fn write(&self, role: Role, csrf: &str) -> Result<WriteContext, ConsoleError> {
        self.check_csrf(csrf)?;
        if !self.actor.can(role) {
            return Err(ConsoleError::Forbidden(role));
        }
        Ok(WriteContext {
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
        })
    }

    /// Fails unless `csrf` is this session's CSRF token.
    pub fn check_csrf(&self, csrf: &str) -> Result<(), ConsoleError> {
        if digests_equal(&hash_secret(csrf), &hash_secret(&self.csrf)) {
            Ok(())
        } else {
            Err(ConsoleError::BadForm(
                "The form has expired or did not come from this console. Reload the page and try again."
                    .into(),
            ))
        }
    }

    /// Whether the signed-in role includes `role` (to decide which controls to show).
    pub fn can(&self, role: Role) -> bool {
        self.actor.can(role)
    }

    /// Whether the signed-in token's role in `project/environment` (its grant there, for a
    /// scoped token) includes `role`.
    pub fn can_in(&self, role: Role, project: &str, environment: &str) -> bool {
        self.actor.can_in(role, Some(project), Some(environment))
    }

    /// As [`Session::write`], for a write in one environment: the role is the token's
    /// role there (a scoped token's grant counts), as the API's checks read it.
    pub fn write_in(
        &self,
        role: Role,
        csrf: &str,
        (project, environment): (&str, &str),
    ) -> Result<WriteContext, ConsoleError> {
        self.check_csrf(csrf)?;
        if !self.can_in(role, project, environment) {
            return Err(ConsoleError::Forbidden(role));
        }
        Ok(WriteContext {
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    token_id: i64,
    name: String,
    role: String,
    csrf: String,
}

/// The session id in the request's cookie, if any.
fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ConsoleError> {
        let id = cookie_value(&parts.headers).ok_or(ConsoleError::SignIn)?;
        let id_hash = hash_secret(&id);
        let mut pc = app.store.db().acquire().await.map_err(StoreError::from)?;
        let row: Option<SessionRow> = pc
            .conn()
            .fetch_optional(
                "SELECT t.id AS token_id, t.name, t.role, s.csrf
                 FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id
                 WHERE s.id_hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL
                   AND t.scopes IS NULL",
                args![id_hash.clone(), clock_now(app)],
            )
            .await
            .map_err(StoreError::from)?;
        let row = row.ok_or(ConsoleError::SignIn)?;
        let role = Role::parse(&row.role)
            .ok_or_else(|| StoreError::Corrupt(format!("token role '{}'", row.role)))?;
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        tracing::Span::current().record("actor", row.name.as_str());
        Ok(Session {
            actor: Actor {
                token_id: Some(row.token_id),
                name: row.name,
                role,
                // Scoped tokens hold no console session (see the query): the console checks
                // roles, not per-project grants, yet.
                scope: crate::auth::Scope::unrestricted(),
            },
            csrf: row.csrf,
            request_id,
            id_hash,
        })
    }
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    /// An API token (`vxa_…`).
    token: String,
}

/// `GET /sign-in`.
pub async fn sign_in_page() -> Response {
    sign_in_form(StatusCode::OK, None)
}

fn sign_in_form(status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        main.signin {
            h1 { "Sign in to Vexil" }
            p { "Paste an API token (" code { "vxa_…" } "). The console acts with its role, and the audit log records changes under its name." }
            form method="post" action="/sign-in" {
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required autofocus
                    aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| "token-error")];
                @if let Some(e) = error {
                    p #token-error .field-error role="alert" { (e) }
                }
                button type="submit" { "Sign in" }
            }
            p.muted { "No token yet? The server prints an admin token on its first start; admins create more under API tokens." }
        }
    };
    (status, page::bare("Sign in", body)).into_response()
}

/// `POST /sign-in`: checks the token (counting failures per address like the API does) and
/// opens a session.
pub async fn sign_in(
    State(app): State<AppState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let client = client_addr(&app, peer, &headers);
    if let Some(wait) = client.and_then(|ip| app.auth_throttle.blocked(ip, Instant::now())) {
        let msg = format!(
            "Too many failed sign-ins from this address; try again in {} s.",
            wait.as_secs().max(1)
        );
        return Ok(sign_in_form(StatusCode::TOO_MANY_REQUESTS, Some(&msg)));
    }
    let token = form.token.trim();
    let actor = app.store.authenticate_token(token).await?;
    let Some(actor) = actor else {
        metrics::counter!("vexil_auth_failures_total", "reason" => "console").increment(1);
        if let Some(ip) = client {
            app.auth_throttle.failed(ip, Instant::now());
        }
        return Ok(sign_in_form(
            StatusCode::UNAUTHORIZED,
            Some("That token is not valid or has been revoked."),
        ));
    };
    if actor.scope.is_limited() {
        return Ok(sign_in_form(
            StatusCode::FORBIDDEN,
            Some(
                "Tokens limited to projects cannot use the console yet: use the API, or an unscoped token.",
            ),
        ));
    }
    let Some(token_id) = actor.token_id else {
        return Err(ConsoleError::BadForm("this token cannot sign in".into()));
    };
    let id = generate_secret("");
    let csrf = generate_secret("");
    let created = clock_now(&app);
    let hours = i64::try_from(app.config.console_session_hours.clamp(1, 24 * 30)).unwrap_or(12);
    let expires: OffsetDateTime = created + time::Duration::hours(hours);
    let mut tx = app.store.db().begin().await.map_err(StoreError::from)?;
    let mut c = tx.conn();
    // Expired sessions go with each sign-in: the table stays as small as the live sessions.
    c.execute(
        "DELETE FROM console_sessions WHERE expires_at <= $1",
        args![created],
    )
    .await
    .map_err(StoreError::from)?;
    c.execute(
        "INSERT INTO console_sessions (id_hash, token_id, csrf, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        args![hash_secret(&id), token_id, csrf, created, expires],
    )
    .await
    .map_err(StoreError::from)?;
    tx.commit().await.map_err(StoreError::from)?;
    tracing::info!(actor = %actor.name, "console sign-in");
    let secure = secure(&app, &headers);
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        hours * 3600,
        if secure { "; Secure" } else { "" }
    );
    let mut res = Redirect::to("/projects").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// The server's clock (injectable, so tests can move past a session's expiry), truncated to
/// the microseconds both engines store.
fn clock_now(app: &AppState) -> OffsetDateTime {
    let t = app.clock.now();
    t.replace_microsecond(t.microsecond()).unwrap_or(t)
}

/// The CSRF field of the sign-out form.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    pub csrf: String,
}

/// `POST /sign-out`: ends the session and clears the cookie.
pub async fn sign_out(
    State(app): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form.csrf)?;
    let mut tx = app.store.db().begin().await.map_err(StoreError::from)?;
    tx.conn()
        .execute(
            "DELETE FROM console_sessions WHERE id_hash = $1",
            args![session.id_hash.clone()],
        )
        .await
        .map_err(StoreError::from)?;
    tx.commit().await.map_err(StoreError::from)?;
    let cookie = format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure(&app, &headers) {
            "; Secure"
        } else {
            ""
        }
    );
    let mut res = Redirect::to("/sign-in").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// Whether the cookie must be `Secure`: configured so, or the request came over HTTPS
/// through a trusted proxy.
fn secure(app: &AppState, headers: &HeaderMap) -> bool {
    app.config.console_secure_cookie
        || (app.config.trust_forwarded_for
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https")))
}

/// The address failed sign-ins are counted under: the peer, or behind a trusted proxy the
/// last `X-Forwarded-For` entry (as for the API).
fn client_addr(app: &AppState, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    if app.config.trust_forwarded_for
        && let Some(ip) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .next_back()
    {
        return Some(ip);
    }
    peer.map(|p| p.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; vexil_session=abc; b=2"),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("vexil_sessionx=1"));
        assert_eq!(cookie_value(&h), None);
    }
}
