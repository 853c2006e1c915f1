//! Stored responses for `Idempotency-Key` retries.
//!
//! The first request with a key claims it (a row with no response yet), runs, and stores its
//! response; a repeat with the same body gets that response back and changes nothing; a repeat
//! with a different body is refused. Keys are per API token and kept for 24 hours. A claim
//! whose request died without answering is taken over after [`ABANDONED_AFTER`].

use time::{Duration, OffsetDateTime};

use super::{Store, StoreError};
use crate::db::{args, now};

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
                "SELECT request_hash, status, content_type, etag, location, body, created_at
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
            None if row.created_at + ABANDONED_AFTER < t => {
                let taken = c
                    .execute(
                        "UPDATE idempotency_keys SET created_at = $3
                         WHERE token_id = $1 AND key = $2 AND status IS NULL AND created_at = $4",
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

    /// Releases a claimed key whose request failed in a way worth retrying (a 5xx).
    pub async fn idempotency_abandon(&self, token_id: i64, key: &str) -> Result<(), StoreError> {
        let mut pc = self.db.acquire().await?;
        pc.conn()
            .execute(
                "DELETE FROM idempotency_keys WHERE token_id = $1 AND key = $2 AND status IS NULL",
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
