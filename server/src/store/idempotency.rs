//! Stored responses for `Idempotency-Key` retries.
//!
//! The first request with a key claims it (a row with no response yet), runs, and stores its
//! response; a repeat with the same body gets that response back and changes nothing; a repeat
//! with a different body is refused. Keys are per API token and kept for 24 hours.
//!
//! The record commits with the write: while the request runs, its [`IdempotencyClaim`] sits in
//! a task-local, and every write transaction the request commits marks the record
//! `committed_at` inside that same transaction (see `Tx::commit`). So a record without
//! `committed_at` always means "nothing was written", and one with it means "written" even
//! if the server stopped before storing the response: such a key is answered as
//! [`IdempotencyBegin::Applied`], never re-executed. A claim that neither committed nor
//! answered (the server stopped mid-request, before any commit) is taken over after
//! [`ABANDONED_AFTER`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use time::{Duration, OffsetDateTime};

use super::{Store, StoreError};
use crate::db::{Conn, args, now};

/// How long a stored response is replayed.
pub const RETENTION: Duration = Duration::hours(24);

/// After this long, a claimed key with no stored response is considered abandoned (the server
/// stopped mid-request) and may be claimed again.
pub const ABANDONED_AFTER: Duration = Duration::minutes(5);

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Location`.
    pub location: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// What to do with a request carrying an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First use: run the request, then store its response.
    Proceed,
    /// Seen before with the same request: send this response again.
    Replay(StoredResponse),
    /// Seen before with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
    /// The first request with this key committed its write, but its response was not kept
    /// (the server stopped between the commit and storing it).
    Applied,
}

tokio::task_local! {
    /// The idempotency key the current request runs under.
    static CLAIM: IdempotencyClaim;
}

/// A claimed idempotency key, carried by the request that claimed it so that the store's
/// commit points can mark the key's record in the write's own transaction.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    token_id: i64,
    key: String,
    /// Set once a write transaction that marked the record has committed.
    committed: Arc<AtomicBool>,
}

impl IdempotencyClaim {
    /// A claim on `key` of the API token `token_id`.
    pub fn new(token_id: i64, key: &str) -> Self {
        Self {
            token_id,
            key: key.to_owned(),
            committed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs `f` (the request) with this claim visible to the store's commit points.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        CLAIM.scope(self, f).await
    }

    /// Whether the request committed a write under this claim.
    pub fn is_committed(&self) -> bool {
        self.committed.load(Ordering::Acquire)
    }

    /// Records that a write transaction under this claim committed.
    pub(crate) fn committed(&self) {
        self.committed.store(true, Ordering::Release);
    }
}

/// Inside a write transaction about to commit: marks the current request's idempotency
/// record (if it runs under one) as committed, in this transaction. Returns the claim so the
/// caller can note the commit once it has happened.
pub(crate) async fn mark_idempotency_committed(
    c: &mut Conn<'_>,
) -> Result<Option<IdempotencyClaim>, sqlx::Error> {
    let Ok(claim) = CLAIM.try_with(IdempotencyClaim::clone) else {
        return Ok(None);
    };
    c.execute(
        "UPDATE idempotency_keys SET committed_at = $3
         WHERE token_id = $1 AND key = $2 AND committed_at IS NULL",
        args![claim.token_id, claim.key.as_str(), now()],
    )
    .await?;
    Ok(Some(claim))
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: Vec<u8>,
    status: Option<i32>,
    content_type: Option<String>,
    etag: Option<String>,
    location: Option<String>,
    body: Option<Vec<u8>>,
    created_at: OffsetDateTime,
    committed_at: Option<OffsetDateTime>,
}

impl Store {
    /// Claims `key` for this token and request, or says what happened to it before.
    pub async fn idempotency_begin(
        &self,
        token_id: i64,
        key: &str,
        request_hash: &[u8],
    ) -> Result<IdempotencyBegin, StoreError> {
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let t = now();
        let claimed = c
            .execute(
                "INSERT INTO idempotency_keys (token_id, key, request_hash, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                args![token_id, key, request_hash.to_vec(), t],
            )
            .await?;
        if claimed == 1 {
            return Ok(IdempotencyBegin::Proceed);
        }
        let row: Option<KeyRow> = c
            .fetch_optional(
                "SELECT request_hash, status, content_type, etag, location, body, created_at,
                        committed_at
                 FROM idempotency_keys WHERE token_id = $1 AND key = $2",
                args![token_id, key],
            )
            .await?;
        let Some(row) = row else {
            // Purged between the two statements: the key is free again.
            return Ok(IdempotencyBegin::InProgress);
        };
        if row.request_hash != request_hash {
            return Ok(IdempotencyBegin::Mismatch);
        }
        if row.created_at + RETENTION < t {
            // Expired but not yet purged: start over.
            c.execute(
                "DELETE FROM idempotency_keys WHERE token_id = $1 AND key = $2 AND created_at = $3",
                args![token_id, key, row.created_at],
            )
            .await?;
            drop(pc);
            return Box::pin(self.idempotency_begin(token_id, key, request_hash)).await;
        }
        match row.status {
            Some(status) => Ok(IdempotencyBegin::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                content_type: row.content_type,
                etag: row.etag,
                location: row.location,
                body: row.body.unwrap_or_default(),
            })),
            None if row.committed_at.is_some() => Ok(IdempotencyBegin::Applied),
            None if row.created_at + ABANDONED_AFTER < t => {
                let taken = c
                    .execute(
                        "UPDATE idempotency_keys SET created_at = $3
                         WHERE token_id = $1 AND key = $2 AND status IS NULL
                           AND committed_at IS NULL AND created_at = $4",
                        args![token_id, key, t, row.created_at],
                    )
                    .await?;
                Ok(if taken == 1 {
                    IdempotencyBegin::Proceed
                } else {
                    IdempotencyBegin::InProgress
                })
            }
            None => Ok(IdempotencyBegin::InProgress),
        }
    }

    /// Stores the response of a claimed key.
    pub async fn idempotency_complete(
        &self,
        token_id: i64,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        let mut pc = self.db.acquire().await?;
        pc.conn()
            .execute(
                "UPDATE idempotency_keys SET status = $3, content_type = $4, etag = $5,
                        location = $6, body = $7
                 WHERE token_id = $1 AND key = $2",
                args![
                    token_id,
                    key,
                    i64::from(response.status),
                    response.content_type.clone(),
                    response.etag.clone(),
                    response.location.clone(),
                    response.body.clone()
                ],
            )
            .await?;
        Ok(())
    }

    /// Releases a claimed key whose request failed in a way worth retrying (a 5xx) without
    /// committing anything.
    pub async fn idempotency_abandon(&self, token_id: i64, key: &str) -> Result<(), StoreError> {
        let mut pc = self.db.acquire().await?;
        pc.conn()
            .execute(
                "DELETE FROM idempotency_keys
                 WHERE token_id = $1 AND key = $2 AND status IS NULL AND committed_at IS NULL",
                args![token_id, key],
            )
            .await?;
        Ok(())
    }

    /// Deletes stored responses past their retention. Returns how many.
    pub async fn purge_idempotency_keys(&self) -> Result<u64, StoreError> {
        let mut pc = self.db.acquire().await?;
        Ok(pc
            .conn()
            .execute(
                "DELETE FROM idempotency_keys WHERE created_at < $1",
                args![now() - RETENTION],
            )
            .await?)
    }
}
