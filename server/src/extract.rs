//! Request extractors whose rejections are [`ApiError`]s.
//!
//! - [`StrictJson`]: a JSON body that must match the type exactly. The model types tolerate
//!   unknown fields (for SDK forward-compatibility); the API does not, so an unknown field, a
//!   wrong type or a syntax error is reported with the JSON path where it happened.
//! - [`StrictQuery`]: the query string, held to the same rules: an unknown parameter, a
//!   value of the wrong type or out of range is a `422` naming the parameter.
//! - [`IfMatch`]: the optional `If-Match` version.
//! - [`Caller`]: the authenticated actor and request id, as a store `WriteContext`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::auth::{Actor, Role};
use crate::error::{ApiError, FieldProblem};
use crate::store::WriteContext;

/// A JSON body deserialised strictly: unknown fields are errors, every error names its path.
#[derive(Debug, Clone)]
pub struct StrictJson<T>(pub T);

/// Renders a serde_ignored path as `rules[0].clauses[1].field`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    fn walk(p: &Path<'_>, out: &mut String) {
        match p {
            Path::Root => {}
            Path::Seq { parent, index } => {
                walk(parent, out);
                out.push_str(&format!("[{index}]"));
            }
            Path::Map { parent, key } => {
                walk(parent, out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut out = String::new();
    walk(path, &mut out);
    out
}

/// Renders a serde_path_to_error path as `rules[0].clauses[1].field`.
fn error_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Deserialises `bytes` as `T`, rejecting unknown fields and naming the path of any error.
pub fn parse_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut unknown = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    let result: Result<T, _> = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        &mut de,
        &mut on_unknown,
    ));
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            let path = error_path(e.path());
            let inner = e.into_inner();
            return Err(match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    ApiError::BadRequest(format!("the body is not valid JSON: {inner}"))
                }
                _ => {
                    let message = strip_position(&inner.to_string());
                    ApiError::Unprocessable {
                        detail: if path.is_empty() {
                            format!("the body does not match the expected shape: {message}")
                        } else {
                            format!("{path}: {message}")
                        },
                        errors: vec![FieldProblem {
                            path,
                            rule: if message == NOT_NULL {
                                "not_null"
                            } else {
                                "invalid_type"
                            }
                            .into(),
                            message,
                        }],
                    }
                }
            });
        }
    };
    if let Err(e) = de.end() {
        return Err(ApiError::BadRequest(format!(
            "the body is not valid JSON: {e}"
        )));
    }
    if !unknown.is_empty() {
        let count = unknown.len();
        return Err(unknown_names(
            unknown,
            "unknown_field",
            |path| {
                format!(
                    "unknown field '{}'",
                    path.rsplit('.').next().unwrap_or(path)
                )
            },
            format!("the body has {count} unknown field{}", plural(count)),
        ));
    }
    Ok(value)
}

/// The query string deserialised strictly: unknown parameters are errors, every error names
/// its parameter.
#[derive(Debug, Clone)]
pub struct StrictQuery<T>(pub T);

/// Deserialises a query string as `T`, rejecting unknown parameters and naming the parameter
/// of any error.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let mut unknown = Vec::new();
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut on_unknown));
    let value = result.map_err(|e| {
        let path = error_path(e.path());
        let message = e.into_inner().to_string();
        ApiError::Unprocessable {
            detail: if path.is_empty() {
                format!("the query string is invalid: {message}")
            } else {
                format!("query parameter '{path}': {message}")
            },
            errors: vec![FieldProblem {
                path,
                rule: "invalid_parameter".into(),
                message,
            }],
        }
    })?;
    if !unknown.is_empty() {
        return Err(unknown_query_parameters(unknown));
    }
    Ok(value)
}

impl<S, T> FromRequestParts<S> for StrictQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(StrictQuery)
    }
}

/// The message of [`non_null`]'s error; its rule code is `not_null`.
const NOT_NULL: &str = "null is not allowed here: omit the field to keep its current value";

/// For PATCH-style bodies, where an absent field means "keep the current value":
/// `#[serde(default, deserialize_with = "crate::extract::non_null")]` on an `Option<T>`
/// field makes an explicit `null` an error (a `422` naming the field) instead of a silent
/// "absent", for fields that cannot hold null.
pub fn non_null<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    match Option::<T>::deserialize(de)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom(NOT_NULL)),
    }
}

/// serde_json appends " at line L column C": useful for syntax errors, noise for type errors
/// that already carry a path.
fn strip_position(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

impl<S, T> FromRequest<S> for StrictJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(format!("could not read the body: {rejection}"))
            }
        })?;
        parse_strict(&bytes).map(StrictJson)
    }
}

/// The version named by `If-Match` (`"12"`, `W/"12"` or `12`); `None` if absent or `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfMatch(pub Option<u64>);

/// Parses an `If-Match`/`ETag` value into a version.
pub fn parse_etag(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.trim_matches('"');
    v.parse().ok()
}

/// The `ETag` header value for a version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let s = value
            .to_str()
            .map_err(|_| ApiError::BadRequest("If-Match: not a valid header value".into()))?;
        if s.trim() == "*" {
            return Ok(IfMatch(None));
        }
        parse_etag(s).map(|v| IfMatch(Some(v))).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "If-Match: expected an ETag from this API such as \"3\", got {s:?}"
            ))
        })
    }
}

/// The project and environment a request addresses, taken from the matched route's
/// `{project}` and `{environment}` segments: where a scoped token's role is looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// The route's `{project}`, if it has one.
    pub project: Option<String>,
    /// The route's `{environment}`, if it has one.
    pub environment: Option<String>,
}

impl Resource {
    /// A resource named by a request body rather than by the path.
    pub fn named(project: &str, environment: Option<&str>) -> Self {
        Self {
            project: Some(project.to_owned()),
            environment: environment.map(str::to_owned),
        }
    }
}

/// The authenticated caller, with the request id, ready to write, and the project and
/// environment its route addresses. [`Caller::require`] and [`Caller::check`] are the one
/// place where roles and scopes are enforced for every API route.
#[derive(Debug, Clone)]
pub struct Caller(pub WriteContext, pub Resource);

impl Caller {
    /// The caller's context if its role on the route's resource includes `role`.
    pub fn require(self, role: Role) -> Result<WriteContext, ApiError> {
        self.check(role)?;
        Ok(self.0)
    }

    /// Fails unless the caller's role on the route's resource includes `role`.
    pub fn check(&self, role: Role) -> Result<(), ApiError> {
        self.check_on(role, &self.1)
    }

    /// For routes that name their project and environment in the body (evaluation): the
    /// caller's context if its role on `resource` includes `role`.
    pub fn require_on(self, role: Role, resource: &Resource) -> Result<WriteContext, ApiError> {
        self.check_on(role, resource)?;
        Ok(self.0)
    }

    /// Fails unless the caller's role on `resource` includes `role`.
    pub fn check_on(&self, role: Role, resource: &Resource) -> Result<(), ApiError> {
        let actor = &self.0.actor;
        let project = resource.project.as_deref();
        let environment = resource.environment.as_deref();
        if actor.can_in(role, project, environment) {
            return Ok(());
        }
        if !actor.scope.is_limited() {
            return Err(ApiError::Forbidden(role));
        }
        let place = match (project, environment) {
            (Some(p), Some(e)) => format!("environment '{p}/{e}'"),
            (Some(p), None) => format!("project '{p}'"),
            _ => "outside a project".to_owned(),
        };
        Err(ApiError::OutOfScope {
            role,
            detail: match actor.role_in(project, environment) {
                Some(has) => format!(
                    "this operation needs the '{}' role; this token has '{}' in {place}",
                    role.as_str(),
                    has.as_str()
                ),
                None => format!(
                    "this token is limited to its projects and environments and has no role in {place}"
                ),
            },
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let actor = parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("missing API token".into()))?;
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut resource = Resource::default();
        // Outside a matched route (never for API handlers) there are no parameters: the
        // resource is "outside a project", which a scoped token cannot use.
        if let Ok(params) = RawPathParams::from_request_parts(parts, state).await {
            for (name, value) in &params {
                match name {
                    "project" => resource.project = Some(value.to_owned()),
                    "environment" => resource.environment = Some(value.to_owned()),
                    _ => {}
                }
            }
        }
        Ok(Caller(WriteContext { actor, request_id }, resource))
    }
}

/// `422` for query parameters the operation does not take.
pub(crate) fn unknown_query_parameters(names: Vec<String>) -> ApiError {
    let lead = format!("unknown query parameter{}", plural(names.len()));
    unknown_names(
        names,
        "unknown_parameter",
        |path| format!("unknown query parameter '{path}'"),
        lead,
    )
}

/// `422` naming each unknown name (a body field or a query parameter) under `rule`; the
/// detail is `lead` followed by the names.
fn unknown_names(
    names: Vec<String>,
    rule: &str,
    message: impl Fn(&str) -> String,
    lead: String,
) -> ApiError {
    let detail = format!("{lead}: {}", names.join(", "));
    let errors = names
        .into_iter()
        .map(|path| FieldProblem {
            message: message(&path),
            path,
            rule: rule.into(),
        })
        .collect();
    ApiError::Unprocessable { detail, errors }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_schema::FlagConfig;

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        let body = br#"{"off_variation": 0, "fallthrough": {"variation": 0},
                        "rules": [{"id": "r", "clauses": [], "serve": {"variation": 0}, "colour": 1}],
                        "extra": true}"#;
        let err = parse_strict::<FlagConfig>(body).unwrap_err();
        let ApiError::Unprocessable { errors, .. } = err else {
            panic!("{err:?}")
        };
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["rules[0].colour", "extra"]);
        assert!(errors.iter().all(|e| e.rule == "unknown_field"));
    }

    #[test]
    fn type_errors_name_their_path() {
        let body = br#"{"off_variation": 0, "fallthrough": {"variation": 0},
                        "rules": [{"id": "r", "clauses": [{"attribute": "a", "op": "nope"}], "serve": {"variation": 0}}]}"#;
        let err = parse_strict::<FlagConfig>(body).unwrap_err();
        let ApiError::Unprocessable { errors, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(errors[0].path, "rules[0].clauses[0].op");
        assert_eq!(errors[0].rule, "invalid_type");
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(
            parse_strict::<FlagConfig>(b"{\"on\": tru"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_strict::<FlagConfig>(
                br#"{"off_variation": 0, "fallthrough": {"variation": 0}} x"#
            ),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[derive(Debug, serde::Deserialize)]
    struct Q {
        limit: Option<u32>,
        #[allow(dead_code)]
        q: Option<String>,
    }

    #[test]
    fn query_strings_are_strict() {
        let q: Q = parse_query("limit=5&q=a%20b").unwrap();
        assert_eq!(q.limit, Some(5));
        let Err(ApiError::Unprocessable { errors, .. }) =
            parse_query::<Q>("limit=5&temporary=true")
        else {
            panic!("unknown parameters must be refused")
        };
        assert_eq!(
            (errors[0].path.as_str(), errors[0].rule.as_str()),
            ("temporary", "unknown_parameter")
        );
        let Err(ApiError::Unprocessable { errors, .. }) = parse_query::<Q>("limit=many") else {
            panic!("a wrong type must be refused")
        };
        assert_eq!(errors[0].path, "limit");
        assert!(parse_query::<Q>("limit=1&limit=2").is_err());
    }

    #[derive(Debug, serde::Deserialize)]
    struct Patch {
        #[serde(default, deserialize_with = "non_null")]
        on: Option<bool>,
    }

    #[test]
    fn null_is_not_absent() {
        assert_eq!(parse_strict::<Patch>(b"{}").unwrap().on, None);
        assert_eq!(
            parse_strict::<Patch>(br#"{"on": true}"#).unwrap().on,
            Some(true)
        );
        let Err(ApiError::Unprocessable { errors, .. }) = parse_strict::<Patch>(br#"{"on": null}"#)
        else {
            panic!("null must be refused")
        };
        assert_eq!(
            (errors[0].path.as_str(), errors[0].rule.as_str()),
            ("on", "not_null")
        );
    }

    #[test]
    fn etags_parse_in_every_common_form() {
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag("W/\"12\""), Some(12));
        assert_eq!(parse_etag("12"), Some(12));
        assert_eq!(parse_etag("\"abc\""), None);
        assert_eq!(etag(7), "\"7\"");
    }
}
