//! Query parameters shared by the listings: page size, opaque cursors and the flag-list
//! filters. Each type checks its own rule while it is parsed, so a bad value is a `422` that
//! names the parameter (see [`crate::extract::StrictQuery`]), never a silently clamped or
//! empty page.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::ParameterIn;

use crate::auth::hex;
use crate::error::{ApiError, FieldProblem};
use crate::store::{FlagFilter, Page};

/// The query parameters each operation declares in the OpenAPI document, by method and
/// path template (`GET /api/v1/projects/{project}/flags`).
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownParameters(Arc<HashMap<(Method, String), HashSet<String>>>);

impl KnownParameters {
    /// Reads them from the document.
    pub(crate) fn of(doc: &utoipa::openapi::OpenApi) -> Self {
        let mut known = HashMap::new();
        for (path, item) in &doc.paths.paths {
            let ops = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let names = op
                    .parameters
                    .iter()
                    .flatten()
                    .filter_map(|p| match p {
                        RefOr::T(p) if p.parameter_in == ParameterIn::Query => Some(p.name.clone()),
                        _ => None,
                    })
                    .collect();
                known.insert((method, path.clone()), names);
            }
        }
        Self(Arc::new(known))
    }
}

/// Refuses (422, naming them) query parameters the matched operation does not declare.
pub(crate) async fn reject_unknown_parameters(
    State(known): State<KnownParameters>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    if let (Some(query), Some(matched)) = (req.uri().query(), matched)
        && let Some(names) = known
            .0
            .get(&(req.method().clone(), matched.as_str().to_owned()))
    {
        let unknown: Vec<String> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, _)| k.into_owned())
            .filter(|k| !names.contains(k))
            .collect();
        if !unknown.is_empty() {
            return crate::extract::unknown_query_parameters(unknown).into_response();
        }
    }
    next.run(req).await
}

/// The largest page a listing returns.
pub(crate) const MAX_LIMIT: u32 = 500;

/// A page size, 1–500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u32")]
pub(crate) struct Limit(pub u32);

impl TryFrom<u32> for Limit {
    type Error = String;

    fn try_from(v: u32) -> Result<Self, String> {
        if (1..=MAX_LIMIT).contains(&v) {
            Ok(Limit(v))
        } else {
            Err(format!("must be between 1 and {MAX_LIMIT}, got {v}"))
        }
    }
}

/// A cursor from a listing's `next_cursor`. On the wire it is opaque (the hex of the store's
/// position), so that a cursor not made by this API is recognised and refused instead of
/// being taken as a position and answering an empty page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct Cursor(pub String);

impl TryFrom<String> for Cursor {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        decode_cursor(&s)
            .map(Cursor)
            .ok_or_else(|| "not a cursor from this API: pass a next_cursor unchanged".to_owned())
    }
}

/// The store position a wire cursor stands for, if it is one this API made.
fn decode_cursor(s: &str) -> Option<String> {
    if s.is_empty() || !s.len().is_multiple_of(2) || s.len() > 2048 {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .filter(|p| {
                    p.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes)
        .ok()
        .filter(|p| !p.is_empty() && !p.chars().any(char::is_control))
}

/// The wire form of a store position.
fn encode_cursor(position: &str) -> String {
    hex(position.as_bytes())
}

/// A page whose `next_cursor` is in its wire form.
pub(crate) fn opaque<T>(mut page: Page<T>) -> Page<T> {
    page.next_cursor = page.next_cursor.as_deref().map(encode_cursor);
    page
}

/// Checks a page size given as a plain number (for query types the store defines).
pub(crate) fn checked_limit(limit: Option<u32>) -> Result<Option<u32>, ApiError> {
    limit
        .map(|l| Limit::try_from(l).map(|l| l.0))
        .transpose()
        .map_err(|m| parameter_error("limit", "limit_exceeded", m))
}

/// Decodes a wire cursor given as a plain string (for query types the store defines).
pub(crate) fn checked_cursor(cursor: Option<String>) -> Result<Option<String>, ApiError> {
    cursor
        .map(|c| Cursor::try_from(c).map(|c| c.0))
        .transpose()
        .map_err(|m| parameter_error("cursor", "invalid_parameter", m))
}

/// A 422 naming one query parameter.
pub(crate) fn parameter_error(name: &str, rule: &str, message: String) -> ApiError {
    ApiError::Unprocessable {
        detail: format!("query parameter '{name}': {message}"),
        errors: vec![FieldProblem {
            path: name.to_owned(),
            rule: rule.to_owned(),
            message,
        }],
    }
}

/// Page parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Cursor from the previous page's `next_cursor`, unchanged.
    #[param(value_type = Option<String>, pattern = "^([0-9a-f]{2})+$")]
    pub cursor: Option<Cursor>,
    /// Page size (1–500, default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<Limit>,
}

impl PageQuery {
    /// The store position to start after.
    pub(crate) fn cursor(&self) -> Option<&str> {
        self.cursor.as_ref().map(|c| c.0.as_str())
    }

    /// The page size, if given.
    pub(crate) fn limit(&self) -> Option<u32> {
        self.limit.map(|l| l.0)
    }
}

/// Which flags to list by archived state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Archived {
    /// Only archived flags.
    True,
    /// Only live flags.
    False,
    /// Both (the default).
    #[default]
    Any,
}

/// Filters and page parameters of the flag list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FlagListQuery {
    /// Only flags carrying this tag.
    tag: Option<String>,
    /// Case-insensitive substring of the key or name (empty: no filter).
    q: Option<String>,
    /// `true`: only archived flags; `false`: only live ones; `any` (default): both.
    #[param(inline)]
    archived: Option<Archived>,
    /// `true`: only temporary (release) flags; `false`: only permanent ones; absent: both.
    temporary: Option<bool>,
    /// `true`: only flags the stale-flag report of `environment` lists (default thresholds:
    /// see `GET …/environments/{environment}/stale-flags`).
    pub(crate) stale: Option<bool>,
    /// The environment whose stale report `stale=true` reads (required with it).
    pub(crate) environment: Option<String>,
    /// Cursor from the previous page's `next_cursor`, unchanged.
    #[param(value_type = Option<String>, pattern = "^([0-9a-f]{2})+$")]
    cursor: Option<Cursor>,
    /// Page size (1–500, default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<Limit>,
}

impl From<FlagListQuery> for FlagFilter {
    fn from(q: FlagListQuery) -> Self {
        FlagFilter {
            tag: q.tag,
            q: q.q.filter(|s| !s.is_empty()),
            archived: match q.archived.unwrap_or_default() {
                Archived::True => Some(true),
                Archived::False => Some(false),
                Archived::Any => None,
            },
            temporary: q.temporary,
            cursor: q.cursor.map(|c| c.0),
            limit: q.limit.map(|l| l.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        for position in ["a", "flag.key-1", "42", "ünïcode"] {
            let wire = encode_cursor(position);
            assert_eq!(decode_cursor(&wire).as_deref(), Some(position));
        }
        for garbage in ["", "zzz", "abc", "0g", "ABCD", "ff", "00"] {
            assert_eq!(decode_cursor(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn limits_outside_1_to_500_are_refused() {
        assert!(Limit::try_from(0).is_err());
        assert!(Limit::try_from(501).is_err());
        assert_eq!(Limit::try_from(500), Ok(Limit(500)));
        assert_eq!(Limit::try_from(1), Ok(Limit(1)));
    }
}
