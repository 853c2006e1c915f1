//! The control plane's storage: transaction scripts over PostgreSQL or SQLite.
//!
//! [`Store`] is a cheap-to-clone handle. Each submodule owns one aggregate and writes its SQL
//! once for both engines (see [`crate::db`]):
//!
//! - `projects`, `environments`: the containers;
//! - `flags`: definitions, per-environment configurations, history, rollback, kill switch;
//! - `segments`: per-environment segments with large key lists;
//! - `audit`: the append-only audit log and its queries;
//! - `tokens`, `keys`: API tokens, SDK keys and relay keys (hashed secrets);
//! - `idempotency`: stored responses for `Idempotency-Key` retries;
//! - `changes`: what every write to an environment shares: the environment lock, the version
//!   bump, the change-log row and the cached validation index;
//! - `restore`: the version fence run after restoring a backup.
//!
//! Every write that changes an environment's flags or segments locks that environment (row
//! lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), bumps `environments.version`, appends a
//! `change_log` row and an audit entry, all in one transaction.

mod audit;
mod changes;
mod environments;
mod flags;
mod idempotency;
mod keys;
mod projects;
mod restore;
pub use restore::{Fenced, RESTORE_FENCE};
mod segment_keys;
mod segments;
mod snapshot;
pub(crate) use changes::LogEntry;
pub use snapshot::Change;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vexil_schema::validate::{EnvironmentIndex, FieldError, ValidationErrors};

use crate::auth::Actor;
use crate::db::Db;

pub use audit::{AuditEntry, AuditQuery};
pub use environments::{CreateEnvironment, EnvironmentView, UpdateEnvironment};
pub use flags::{
    ConfigPatch, FlagConfigView, FlagFilter, FlagSummary, FlagVersion, FlagView, KillResult,
};
pub(crate) use idempotency::mark_idempotency_committed;
pub use idempotency::{IdempotencyBegin, IdempotencyClaim, StoredResponse};
pub use keys::{AccessKeyKind, AccessKeyView, CreatedAccessKey, KeyScope, RelayEnvironment};
pub use projects::{ProjectView, UpdateProject};
pub use segments::{SegmentKeysEdited, SegmentList, SegmentSummary, SegmentView, segment_key_list};
pub use tokens::{CreatedToken, TokenView};
// For the experiments module (`crate::experiments`), which keeps its own tables.
pub(crate) use changes::{AuditRecord, audit};
pub(crate) use environments::environment_row;
pub(crate) use projects::{paginate, project_row};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The named resource does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The resource already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The change conflicts with the current state (e.g. other flags depend on this one).
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// The resources standing in the way, if any.
        blockers: Vec<String>,
    },
    /// `If-Match` named a version that is no longer current.
    #[error("the resource has changed: current version is {current}")]
    PreconditionFailed {
        /// The current version.
        current: u64,
    },
    /// The request broke validation rules (a body field, or a query parameter such as a
    /// cursor); each error carries its field path. Build single-field errors with
    /// [`StoreError::invalid`].
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// A row this request read a moment ago is gone: a concurrent request deleted it. Only
    /// the places where that race is expected produce it (see [`OrGone`]); any other missing
    /// row is a bug and stays a [`StoreError::Database`] error.
    #[error("{0} was deleted by a concurrent request")]
    Gone(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A stored document does not decode: the database was edited outside the API.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The environment has an approval policy: the change must go through an approved
    /// change request (see [`crate::delivery::approvals`]). The message says where.
    #[error("{0}")]
    ApprovalRequired(String),
}

impl StoreError {
    /// A validation error on one field: `path` (e.g. `environments[0].project`, `cursor`),
    /// a stable `rule` code and a sentence for a human.
    pub fn invalid(
        path: impl Into<String>,
        rule: &'static str,
        message: impl Into<String>,
    ) -> Self {
        StoreError::Invalid(ValidationErrors {
            errors: vec![FieldError {
                path: path.into(),
                rule,
                message: message.into(),
            }],
        })
    }
}

/// Maps the "no row" outcome of a statement whose row was read earlier in the request to
/// [`StoreError::Gone`]: use it only where a concurrent deletion can remove that row.
pub(crate) trait OrGone<T> {
    /// `RowNotFound` becomes `Gone(what)`; any other error a database error.
    fn or_gone(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> OrGone<T> for Result<T, sqlx::Error> {
    fn or_gone(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|e| match e {
            sqlx::Error::RowNotFound => StoreError::Gone(what()),
            e => StoreError::Database(e),
        })
    }
}

impl From<sqlx::Error> for StoreError {
    /// A database error, except those that only a concurrent writer (in this process or
    /// another one) can cause: a unique violation on a racing insert, a deadlock or a
    /// serialization failure (a foreign-key violation, a concurrent deletion, is mapped to
    /// 409 at the HTTP boundary). Those are conflicts (409: the client may retry),
    /// never a 500, however many servers write to the database.
    fn from(e: sqlx::Error) -> Self {
        match race_of(&e) {
            Some(what) => {
                tracing::warn!(error = %e, "write lost a race with a concurrent writer");
                StoreError::Conflict {
                    message: format!("a concurrent change got there first ({what}): retry"),
                    blockers: Vec::new(),
                }
            }
            None => StoreError::Database(e),
        }
    }
}

/// What kind of race a database error reports, if it reports one.
fn race_of(e: &sqlx::Error) -> Option<&'static str> {
    let d = e.as_database_error()?;
    if d.is_unique_violation() {
        return Some("already exists");
    }
    // PostgreSQL: serialization_failure, deadlock_detected.
    match d.code().as_deref() {
        Some("40001") | Some("40P01") => Some("transactions collided"),
        _ => None,
    }
}

/// Maps a unique violation to [`StoreError::AlreadyExists`], anything else to a database error.
pub(crate) fn unique_or(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => StoreError::AlreadyExists(what()),
        _ => StoreError::Database(e),
    }
}

/// Who is making a change, recorded in the audit log.
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// The authenticated caller.
    pub actor: Actor,
    /// The request id (`x-request-id`) the change was made under.
    pub request_id: Option<String>,
}

/// The control plane's storage handle. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    /// The connection pool.
    db: Db,
    /// Validation indexes per environment id, tagged with the environment version they
    /// describe. A writer holds the environment lock and reads the current version, so a
    /// cached index is used only when no change (from any process) has happened since.
    indexes: Arc<Mutex<HashMap<i64, (i64, EnvironmentIndex)>>>,
    /// One async mutex per environment id serialising this process's writers (see
    /// `changes::local_locks`). Entries are tiny and environments few, so they are kept.
    writers: Arc<Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>>,
    /// Recently verified and refused API tokens (see `tokens`): API requests authenticate
    /// from memory, and keep doing so through a short database outage.
    tokens: Arc<tokens::TokenCache>,
}

impl Store {
    /// Wraps a migrated database.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            indexes: Arc::new(Mutex::new(HashMap::new())),
            writers: Arc::new(Mutex::new(HashMap::new())),
            tokens: Arc::new(tokens::TokenCache::new(std::time::Duration::from_secs(5))),
        }
    }

    /// Sets how long a verified or refused API token is remembered (default 5 s; zero asks
    /// the database on every request).
    pub fn with_token_cache_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.tokens = Arc::new(tokens::TokenCache::new(ttl));
        self
    }

    /// The underlying database.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// A page of results and the cursor for the next one.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Clamps a requested page size to 1..=500 (default 50).
pub(crate) fn page_limit(limit: Option<u32>) -> i64 {
    i64::from(limit.unwrap_or(50).clamp(1, 500))
}

/// The id after which a page of an id-ordered listing starts (0 without a cursor).
pub(crate) fn id_cursor(cursor: Option<&str>) -> Result<i64, StoreError> {
    match cursor {
        None => Ok(0),
        Some(c) => c
            .parse::<i64>()
            .map_err(|_| StoreError::invalid("cursor", "cursor", "not a cursor from this API")),
    }
}

/// Converts a stored non-negative counter.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Decodes a stored JSON document.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    v: serde_json::Value,
) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Encodes a document for storage.
pub(crate) fn encode<T: serde::Serialize>(v: &T) -> serde_json::Value {
    // The model types serialise to JSON without failing (string keys, no non-finite floats
    // survive deserialisation).
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// A fresh random salt for bucketing (64 bits, hex).
pub(crate) fn new_salt() -> String {
    let mut b = [0u8; 8];
    rand::fill(&mut b);
    crate::auth::hex(&b)
}
