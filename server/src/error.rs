//! The API's one error type, [`ApiError`], and its RFC 9457 `application/problem+json` form.
//!
//! Every handler returns `Result<_, ApiError>`; [`StoreError`]s convert into it here, in one
//! place. Server errors are logged once (inside the request's span, so with its request id)
//! and their bodies say nothing internal. The `problem_context` middleware in
//! [`crate::middleware`] then adds the request path and id to every problem, and turns the
//! framework's own plain-text rejections (unknown route, wrong method, bad query string,
//! oversized body) into problems too.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use vexil_schema::validate::ValidationErrors;

use crate::auth::Role;
use crate::store::StoreError;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field-level error in a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldProblem {
    /// Path of the field in the request body, e.g. `rules[0].clauses[1].op`; empty for the
    /// body as a whole.
    pub path: String,
    /// Stable rule code, e.g. `variation_index`, `unknown_field`, `invalid_type`.
    pub rule: String,
    /// A sentence for a human.
    pub message: String,
}

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:vexil:problem:<slug>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The request id (also in the `x-request-id` header): quote it when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Field errors, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// What stands in the way, for conflicts (e.g. the flags requiring this one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<String>,
    /// The current version, for failed preconditions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

impl Problem {
    /// A problem of kind `slug` with the standard title for `status`.
    pub fn new(status: StatusCode, slug: &str, detail: Option<String>) -> Self {
        Self {
            kind: format!("urn:vexil:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            instance: None,
            request_id: None,
            errors: Vec::new(),
            blockers: Vec::new(),
            current_version: None,
        }
    }

    /// Renders the problem as a response.
    pub fn into_response_with_status(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vexil\""),
            );
        }
        res.extensions_mut().insert(self);
        res
    }
}

/// Everything an API request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request cannot be parsed at all: a body that is not JSON, a header that is not
    /// in its syntax, a query string that is not form-encoded. A request that parses but
    /// breaks a rule (wrong type, unknown field or parameter, out-of-range value, garbage
    /// cursor) is [`ApiError::Unprocessable`] instead.
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or credentials that are not a live API token.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's role does not allow this.
    #[error("this needs the {0:?} role")]
    Forbidden(Role),
    /// The caller's token is scoped, and its role in the addressed project or environment
    /// does not allow this (or it has none there).
    #[error("{detail}")]
    OutOfScope {
        /// The role the operation needs.
        role: Role,
        /// What the token has there.
        detail: String,
    },
    /// No such resource.
    #[error("{0} not found")]
    NotFound(String),
    /// A resource with that key already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The change conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// What stands in the way.
        blockers: Vec<String>,
    },
    /// `If-Match` names a stale version.
    #[error("version mismatch: current is {current}")]
    PreconditionFailed {
        /// The current version.
        current: u64,
    },
    /// The body is larger than the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body is not JSON.
    #[error("expected an application/json body")]
    UnsupportedMediaType,
    /// The body is well-formed but breaks rules; each error names a field path.
    #[error("{detail}")]
    Unprocessable {
        /// Summary.
        detail: String,
        /// Field errors.
        errors: Vec<FieldProblem>,
    },
    /// The environment's approval policy routes this change through a change request.
    #[error("{0}")]
    ApprovalRequired(String),
    /// An idempotency key was reused with a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    /// The first request with an idempotency key is still running.
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyInProgress,
    /// A dependency (the database) is unavailable.
    #[error("service unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else: logged, never shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// An internal error from any cause.
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }

    fn problem(&self) -> Problem {
        use StatusCode as S;
        match self {
            ApiError::BadRequest(d) => Problem::new(S::BAD_REQUEST, "bad-request", Some(d.clone())),
            ApiError::Unauthorized(d) => {
                Problem::new(S::UNAUTHORIZED, "unauthorized", Some(d.clone()))
            }
            ApiError::Forbidden(role) => Problem::new(
                S::FORBIDDEN,
                "forbidden",
                Some(format!(
                    "this operation needs a token with the '{}' role or higher",
                    role.as_str()
                )),
            ),
            ApiError::OutOfScope { detail, .. } => {
                Problem::new(S::FORBIDDEN, "forbidden", Some(detail.clone()))
            }
            ApiError::NotFound(what) => {
                Problem::new(S::NOT_FOUND, "not-found", Some(format!("{what} not found")))
            }
            ApiError::AlreadyExists(what) => Problem::new(
                S::CONFLICT,
                "already-exists",
                Some(format!("{what} already exists")),
            ),
            ApiError::Conflict { message, blockers } => {
                let mut p = Problem::new(S::CONFLICT, "conflict", Some(message.clone()));
                p.blockers = blockers.clone();
                p
            }
            ApiError::PreconditionFailed { current } => {
                let mut p = Problem::new(
                    S::PRECONDITION_FAILED,
                    "precondition-failed",
                    Some(format!(
                        "the resource has changed since version given in If-Match; it is now at version {current}: fetch it and retry"
                    )),
                );
                p.current_version = Some(*current);
                p
            }
            ApiError::PayloadTooLarge => Problem::new(
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                Some("the request body is larger than the server accepts".into()),
            ),
            ApiError::UnsupportedMediaType => Problem::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                Some("send the body as JSON with 'Content-Type: application/json'".into()),
            ),
            ApiError::Unprocessable { detail, errors } => {
                let mut p =
                    Problem::new(S::UNPROCESSABLE_ENTITY, "validation", Some(detail.clone()));
                p.errors = errors.clone();
                p
            }
            ApiError::ApprovalRequired(d) => {
                Problem::new(S::CONFLICT, "approval-required", Some(d.clone()))
            }
            ApiError::IdempotencyMismatch => Problem::new(
                S::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                Some("this Idempotency-Key was already used with a different request; use a new key for a new request".into()),
            ),
            ApiError::IdempotencyInProgress => Problem::new(
                S::CONFLICT,
                "idempotency-key-in-progress",
                Some("the first request with this Idempotency-Key has not finished; retry shortly".into()),
            ),
            ApiError::Unavailable(_) => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                Some("the service cannot reach its database; retry shortly".into()),
            ),
            ApiError::Internal(_) => Problem::new(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                Some("an internal error occurred; it has been logged with this request's id".into()),
            ),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(e: ValidationErrors) -> Self {
        let n = e.errors.len();
        ApiError::Unprocessable {
            detail: format!(
                "the document breaks {n} validation rule{}",
                if n == 1 { "" } else { "s" }
            ),
            errors: e
                .errors
                .into_iter()
                .map(|f| FieldProblem {
                    path: f.path,
                    rule: f.rule.to_owned(),
                    message: f.message,
                })
                .collect(),
        }
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        // The connection broke under the driver (a cut socket mid-message, a connection task
        // that died, a transaction that could not start on a broken connection): the request
        // did not commit and can be retried once the database answers again.
        sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed
        | sqlx::Error::Tls(_) => true,
        // PostgreSQL going away under a session: a connection exception (class 08) or an
        // operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot
        // connect now), as when it is stopped or restarted; the transaction was rolled back.
        _ => e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
    }
}

/// A reference points at a row deleted since it was read: a concurrent deletion won the
/// race. (A row that vanished between two statements arrives as [`StoreError::Gone`] from
/// the places where that can happen; any other `RowNotFound` is a bug, so a 500.)
fn references_deleted_row(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}

/// The 409 of a request that lost a race against a concurrent deletion.
fn deleted_meanwhile(what: Option<&str>) -> ApiError {
    let what = what.unwrap_or("something this change refers to");
    ApiError::Conflict {
        message: format!("{what} was deleted by a concurrent request; re-read and retry"),
        blockers: Vec::new(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(w) => ApiError::NotFound(w),
            StoreError::AlreadyExists(w) => ApiError::AlreadyExists(w),
            StoreError::Conflict { message, blockers } => ApiError::Conflict { message, blockers },
            StoreError::PreconditionFailed { current } => ApiError::PreconditionFailed { current },
            StoreError::Invalid(v) => v.into(),
            StoreError::Gone(what) => deleted_meanwhile(Some(&what)),
            StoreError::ApprovalRequired(d) => ApiError::ApprovalRequired(d),
            StoreError::Database(e) if is_unavailable(&e) => ApiError::Unavailable(Box::new(e)),
            StoreError::Database(e) if references_deleted_row(&e) => deleted_meanwhile(None),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, source = ?cause.source(), "request failed");
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
            }
            _ => {}
        }
        self.problem().into_response_with_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses() {
        let cases: Vec<(StoreError, u16)> = vec![
            (StoreError::NotFound("flag 'x'".into()), 404),
            (StoreError::AlreadyExists("flag 'x'".into()), 409),
            (StoreError::PreconditionFailed { current: 3 }, 412),
            (StoreError::invalid("key", "key_mismatch", "mismatch"), 422),
            (StoreError::Gone("project 'p'".into()), 409),
            (StoreError::Corrupt("bad".into()), 500),
            (StoreError::ApprovalRequired("needs approval".into()), 409),
            (StoreError::Database(sqlx::Error::PoolTimedOut), 503),
            (StoreError::Database(sqlx::Error::WorkerCrashed), 503),
            (
                StoreError::Database(sqlx::Error::Protocol("unexpected end of stream".into())),
                503,
            ),
            // A missing row nobody expected is a bug, not a conflict.
            (StoreError::Database(sqlx::Error::RowNotFound), 500),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).problem().status, status);
        }
    }

    #[test]
    fn internal_problems_reveal_nothing() {
        let e = ApiError::from(StoreError::Corrupt("secret table xyz".into()));
        let p = e.problem();
        assert!(!serde_json::to_string(&p).unwrap().contains("xyz"));
    }

    #[test]
    fn field_errors_carry_their_path_and_rule() {
        // The path is carried, not recovered from the message: a message with ": " in it
        // stays whole.
        let e = ApiError::from(StoreError::invalid(
            "environments[0].project",
            "unknown_project",
            "project 'a: b' does not exist",
        ));
        let p = e.problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].path, "environments[0].project");
        assert_eq!(p.errors[0].rule, "unknown_project");
        assert_eq!(p.errors[0].message, "project 'a: b' does not exist");
    }

    #[test]
    fn unexpected_missing_rows_are_internal_and_say_nothing() {
        let p = ApiError::from(StoreError::Database(sqlx::Error::RowNotFound)).problem();
        assert_eq!(p.status, 500);
        assert_eq!(p.kind, "urn:vexil:problem:internal");
        let body = serde_json::to_string(&p).unwrap();
        assert!(!body.contains("no rows"), "{body}");
    }

    #[test]
    fn lost_races_are_conflicts_naming_what_went() {
        let p = ApiError::from(StoreError::Gone("project 'p'".into())).problem();
        assert_eq!(p.status, 409);
        assert!(p.detail.unwrap().starts_with("project 'p' was deleted"));
    }
}
