//! Segments: reusable sets of contexts, per environment.
//!
//! A segment's `included` and `excluded` key lists (up to 1,000,000 keys each) are stored one
//! key per row ([`super::segment_keys`]), read in one statement per segment and kept out of
//! listings (which show counts). Keys can be added and removed without sending the lists
//! ([`Store::edit_segment_keys`], [`Store::sync_segment_list`]): such an edit reads and writes
//! only the rows of the keys it names, and is logged and distributed as a delta.

use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;
use utoipa::ToSchema;
use vexil_schema::delta::{ListDelta, SegmentDelta};
use vexil_schema::limits::MAX_CONTEXT_KEY_LEN;
use vexil_schema::validate::validate_segment;
use vexil_schema::{KeyList, Segment};

use super::changes::{AuditRecord, Entity, Op, audit, record_changes};
use super::environments::{EnvironmentRow, environment_row};
use super::projects::{paginate, project_row};
use super::segment_keys::{self, EXCLUDED, INCLUDED};
use super::{
    Page, Store, StoreError, WriteContext, decode, encode, new_salt, page_limit, to_u64, unique_or,
};
use crate::db::{Conn, Db, Tx, args, now};

/// The keys of an uploaded segment list: one per line (`\r\n` line ends too), blank lines
/// skipped; at most [`vexil_schema::limits::MAX_SEGMENT_KEYS`]. Shared by the API's list sync
/// and the console's paste/upload, so both accept exactly the same lists.
pub fn segment_key_list(body: &str) -> Result<Vec<String>, StoreError> {
    use vexil_schema::limits::MAX_SEGMENT_KEYS;
    let keys: Vec<String> = body
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if keys.len() > MAX_SEGMENT_KEYS {
        return Err(StoreError::invalid(
            "",
            "limit_exceeded",
            format!(
                "a list holds at most {MAX_SEGMENT_KEYS} keys; the upload has {}",
                keys.len()
            ),
        ));
    }
    Ok(keys)
}

/// One of a segment's key lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentList {
    /// `included`.
    Included,
    /// `excluded`.
    Excluded,
}

/// A segment with its key lists.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SegmentView {
    /// The segment; its `version` is the `ETag`.
    #[schema(value_type = crate::openapi::SegmentDoc)]
    pub segment: Segment,
    /// The environment's data version after the change that produced this version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_version: Option<i64>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A segment in a listing: its key lists are counted, not shown.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct SegmentSummary {
    /// Key.
    pub key: String,
    /// Name.
    pub name: String,
    /// Number of keys in `included`.
    pub included_count: i64,
    /// Number of keys in `excluded`.
    pub excluded_count: i64,
    /// Version.
    pub version: i64,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Key rows inserted by one write from which [`Store::refresh_key_statistics`] runs `ANALYZE`.
const ANALYZE_AFTER_KEYS: usize = 10_000;

/// A segment after a key edit answered without its lists (`Prefer: return=minimal`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SegmentKeysEdited {
    /// The segment's counts and version; its `version` is the `ETag`.
    pub segment: SegmentSummary,
    /// The environment's data version after the edit (unchanged when it changed nothing).
    pub environment_version: i64,
}

#[derive(sqlx::FromRow)]
struct SegmentRow {
    id: i64,
    body: Json<Value>,
    included: Json<KeyList>,
    excluded: Json<KeyList>,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

fn assemble(row: SegmentRow) -> Result<(Segment, OffsetDateTime, OffsetDateTime), StoreError> {
    let mut seg: Segment = decode("segment", row.body.0)?;
    seg.included = row.included.0;
    seg.excluded = row.excluded.0;
    seg.version = to_u64(row.version);
    Ok((seg, row.created_at, row.updated_at))
}

/// The stored body: the segment without its key lists (which have their own rows).
fn body_of(seg: &Segment) -> Value {
    let mut body = seg.clone();
    body.included = KeyList::new();
    body.excluded = KeyList::new();
    encode(&body)
}

fn list_len(v: &KeyList) -> i64 {
    i64::try_from(v.len()).unwrap_or(i64::MAX)
}

/// Writes both key lists of segment `id` (which holds none).
async fn insert_lists(c: &mut Conn<'_>, id: i64, seg: &Segment) -> Result<(), StoreError> {
    segment_keys::insert_list(c, id, INCLUDED, &seg.included).await?;
    segment_keys::insert_list(c, id, EXCLUDED, &seg.excluded).await
}

/// The head of a segment: everything but its key lists.
#[derive(sqlx::FromRow)]
struct SegmentHead {
    id: i64,
    body: Json<Value>,
    included_count: i64,
    excluded_count: i64,
    version: i64,
    updated_at: OffsetDateTime,
}

async fn segment_row(
    c: &mut Conn<'_>,
    environment_id: i64,
    key: &str,
) -> Result<Option<SegmentRow>, StoreError> {
    let sql = segment_keys::row_by_key_sql(c);
    Ok(c.fetch_optional(sql, args![environment_id, key]).await?)
}

/// A segment that must exist (404 otherwise).
async fn existing_segment(
    c: &mut Conn<'_>,
    environment_id: i64,
    key: &str,
) -> Result<SegmentRow, StoreError> {
    segment_row(c, environment_id, key)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("segment '{key}'")))
}

/// Records a segment write in the change log (a put of the audit record's `after`, or a delete
/// when it has none) and in the audit log, returning the environment's new data version. The
/// caller holds the environment lock.
async fn record_segment_write(
    c: &mut Conn<'_>,
    ctx: &WriteContext,
    environment_id: i64,
    key: &str,
    rec: AuditRecord<'_>,
    now: OffsetDateTime,
) -> Result<i64, StoreError> {
    let change = match &rec.after {
        Some(payload) => (
            Op::Put,
            Entity::Segment,
            key.to_owned(),
            Some(payload.clone()),
        ),
        None => (Op::Delete, Entity::Segment, key.to_owned(), None),
    };
    let to = record_changes(c, environment_id, vec![change], now).await?;
    audit(c, ctx, rec, now).await?;
    Ok(to)
}

/// Checks the keys an edit names: none empty or longer than
/// [`MAX_CONTEXT_KEY_LEN`], none both added and removed. `field` is `included` or `excluded`.
pub(crate) fn check_list_edit(field: &str, edit: &ListDelta) -> Result<(), StoreError> {
    for (part, keys) in [("add", &edit.add), ("remove", &edit.remove)] {
        for (i, k) in keys.iter().enumerate() {
            if k.is_empty() || k.chars().count() > MAX_CONTEXT_KEY_LEN {
                return Err(StoreError::invalid(
                    format!("{field}.{part}[{i}]"),
                    "context_key",
                    format!("a context key has 1 to {MAX_CONTEXT_KEY_LEN} characters"),
                ));
            }
        }
    }
    if !edit.add.is_empty() && !edit.remove.is_empty() {
        let removed: std::collections::HashSet<&str> =
            edit.remove.iter().map(String::as_str).collect();
        if let Some(i) = edit.add.iter().position(|k| removed.contains(k.as_str())) {
            return Err(StoreError::invalid(
                format!("{field}.add[{i}]"),
                "add_and_remove",
                format!("'{}' is both added and removed", edit.add[i]),
            ));
        }
    }
    Ok(())
}

impl Store {
    /// Adds and removes keys of a segment's `included` and `excluded` lists by the canonical
    /// list rules ([`vexil_schema::delta`]): removed keys leave, the others keep their order,
    /// added keys that are absent are appended. Idempotent: an edit that changes nothing is
    /// not versioned, logged or audited. Honours `If-Match` with the segment version. The
    /// change log and the audit log record the effective delta (the keys actually added and
    /// removed), not the lists; subscribers receive it as a `delta` event.
    pub async fn edit_segment_keys(
        &self,
        ctx: &WriteContext,
        (project, environment, key): (&str, &str, &str),
        included: ListDelta,
        excluded: ListDelta,
        if_match: Option<u64>,
    ) -> Result<SegmentView, StoreError> {
        let edited = self
            .edit_segment_keys_summary(
                ctx,
                (project, environment, key),
                included,
                excluded,
                if_match,
            )
            .await?;
        // The answer carries the lists (read after the commit, off the write path; the
        // subscribers already have the delta). A write landing meanwhile is what it shows.
        let mut view = self.get_segment(project, environment, key).await?;
        view.environment_version = Some(edited.environment_version);
        Ok(view)
    }

    /// [`Store::edit_segment_keys`] answering with the segment's counts instead of its lists
    /// (`Prefer: return=minimal`): nothing after the write is O(list), so a one-key edit of a
    /// million-key list costs the server what the keys it names cost.
    pub async fn edit_segment_keys_summary(
        &self,
        ctx: &WriteContext,
        (project, environment, key): (&str, &str, &str),
        included: ListDelta,
        excluded: ListDelta,
        if_match: Option<u64>,
    ) -> Result<SegmentKeysEdited, StoreError> {
        check_list_edit("included", &included)?;
        check_list_edit("excluded", &excluded)?;
        let (env, local, mut tx) = self.begin_segment_write(project, environment).await?;
        let mut c = tx.conn();
        let from = c.lock_environment(env.id).await?;
        // Only the segment's head is read: the lists stay in their rows.
        let head: SegmentHead = c
            .fetch_optional(
                "SELECT id, body, included_count, excluded_count, version, updated_at
                 FROM segments WHERE environment_id = $1 AND key = $2",
                args![env.id, key],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("segment '{key}'")))?;
        let current = to_u64(head.version);
        if let Some(expected) = if_match
            && expected != current
        {
            return Err(StoreError::PreconditionFailed { current });
        }
        let (inc, included_count) = segment_keys::edit_list(
            &mut c,
            (head.id, INCLUDED, head.included_count),
            "included",
            &included,
        )
        .await?;
        let (exc, excluded_count) = segment_keys::edit_list(
            &mut c,
            (head.id, EXCLUDED, head.excluded_count),
            "excluded",
            &excluded,
        )
        .await?;
        let segment = decode::<Segment>("segment", head.body.0)?;
        let summary = |included_count, excluded_count, version, updated_at| SegmentSummary {
            key: segment.key.as_str().to_owned(),
            name: segment.name.clone(),
            included_count,
            excluded_count,
            version,
            updated_at,
        };
        let seg_key = segment.key.clone();
        let effective = SegmentDelta {
            key: seg_key,
            version: current + 1,
            included: inc,
            excluded: exc,
        };
        if effective.is_empty() {
            // Nothing changes: nothing is written, versioned, logged or audited (the
            // transaction, which wrote nothing, is dropped).
            drop(tx);
            drop(local);
            return Ok(SegmentKeysEdited {
                segment: summary(
                    head.included_count,
                    head.excluded_count,
                    head.version,
                    head.updated_at,
                ),
                environment_version: from,
            });
        }
        let t = now();
        c.execute(
            "UPDATE segments SET included_count = $3, excluded_count = $4, version = $5,
                    updated_at = $6
             WHERE environment_id = $1 AND key = $2",
            args![
                env.id,
                key,
                included_count,
                excluded_count,
                i64::try_from(effective.version).unwrap_or(i64::MAX),
                t
            ],
        )
        .await?;
        let payload = encode(&effective);
        let to = record_changes(
            &mut c,
            env.id,
            vec![(
                Op::Delta,
                Entity::Segment,
                key.to_owned(),
                Some(payload.clone()),
            )],
            t,
        )
        .await?;
        let rec = AuditRecord::new("segment.keys", "segment", key)
            .scoped(Some(project), Some(environment))
            .after(payload);
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        self.refresh_key_statistics(effective.included.add.len() + effective.excluded.add.len());
        // The rules did not change: the cached validation index only moves to the new version.
        self.advance_index(env.id, from, to, |_| {});
        drop(local);
        Ok(SegmentKeysEdited {
            segment: summary(
                included_count,
                excluded_count,
                i64::try_from(effective.version).unwrap_or(i64::MAX),
                t,
            ),
            environment_version: to,
        })
    }

    /// Replaces one list of a segment (`included` or `excluded`) with `keys`, computing the
    /// delta: keys absent from `keys` are removed, new ones appended in upload order, the
    /// others stay where they are. Subscribers receive only that delta.
    pub async fn sync_segment_list(
        &self,
        ctx: &WriteContext,
        (project, environment, key): (&str, &str, &str),
        list: SegmentList,
        keys: Vec<String>,
        if_match: Option<u64>,
    ) -> Result<SegmentView, StoreError> {
        let current = self.get_segment(project, environment, key).await?.segment;
        let old = match list {
            SegmentList::Included => &current.included,
            SegmentList::Excluded => &current.excluded,
        };
        let wanted: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
        let remove: Vec<String> = old
            .iter()
            .filter(|k| !wanted.contains(k))
            .map(str::to_owned)
            .collect();
        let edit = ListDelta { add: keys, remove };
        // The segment read above may change before the write: `If-Match` (defaulting to the
        // version read) makes the write refuse rather than apply a delta computed from an
        // older list.
        let if_match = Some(if_match.unwrap_or(current.version));
        let (included, excluded) = match list {
            SegmentList::Included => (edit, ListDelta::default()),
            SegmentList::Excluded => (ListDelta::default(), edit),
        };
        self.edit_segment_keys(
            ctx,
            (project, environment, key),
            included,
            excluded,
            if_match,
        )
        .await
    }

    /// After a write that inserted `inserted` key rows: on PostgreSQL, from
    /// [`ANALYZE_AFTER_KEYS`] rows on, refreshes the planner's statistics of `segment_keys` in
    /// the background. Until autovacuum gets to it, a freshly loaded list looks like a couple
    /// of rows to the planner, which then scans the whole list for every key an edit names
    /// (16 ms per statement at 100,000 keys instead of 0.1 ms).
    pub(super) fn refresh_key_statistics(&self, inserted: usize) {
        if inserted < ANALYZE_AFTER_KEYS {
            return;
        }
        if let Db::Postgres(pool) = &self.db {
            let pool = pool.clone();
            tokio::spawn(async move {
                if let Err(e) = sqlx::query("ANALYZE segment_keys").execute(&pool).await {
                    tracing::warn!(error = %e, "ANALYZE segment_keys failed; autovacuum will refresh the statistics");
                }
            });
        }
    }

    /// Starts a write to one environment's segments: finds the environment, takes this
    /// process's lock on it, then begins the transaction. Keep the guards until the
    /// transaction ends.
    async fn begin_segment_write(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<(EnvironmentRow, Vec<OwnedMutexGuard<()>>, Tx), StoreError> {
        let env = {
            let mut pc = self.db.acquire().await?;
            let mut c = pc.conn();
            let p = project_row(&mut c, project).await?;
            environment_row(&mut c, p.id, environment).await?
        };
        let local = self.local_locks(vec![env.id]).await;
        let tx = self.db.begin().await?;
        Ok((env, local, tx))
    }

    /// Every segment of an environment, key lists included, by key.
    pub(crate) async fn load_segments(
        &self,
        c: &mut Conn<'_>,
        environment_id: i64,
    ) -> Result<Vec<Segment>, StoreError> {
        let sql = segment_keys::rows_of_environment_sql(c);
        let rows: Vec<SegmentRow> = c.fetch_all(sql, args![environment_id]).await?;
        rows.into_iter()
            .map(|r| assemble(r).map(|(s, _, _)| s))
            .collect()
    }

    /// Creates a segment. An empty `salt` gets a fresh random one.
    pub async fn create_segment(
        &self,
        ctx: &WriteContext,
        project: &str,
        environment: &str,
        mut segment: Segment,
    ) -> Result<SegmentView, StoreError> {
        let (env, _local, mut tx) = self.begin_segment_write(project, environment).await?;
        let mut c = tx.conn();
        let from = c.lock_environment(env.id).await?;
        if segment_row(&mut c, env.id, &segment.key).await?.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "segment '{}'",
                segment.key
            )));
        }
        let mut ix = self.take_index(&mut c, env.id, from).await?;
        if segment.salt.is_empty() {
            segment.salt = new_salt();
        }
        segment.version = 1;
        let seg = validate_segment(segment, &ix)?.into_inner();
        let t = now();
        let (id,): (i64,) = c
            .fetch_one(
                "INSERT INTO segments (environment_id, key, name, body,
                                       included_count, excluded_count, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) RETURNING id",
                args![
                    env.id,
                    seg.key.as_str(),
                    seg.name.as_str(),
                    body_of(&seg),
                    list_len(&seg.included),
                    list_len(&seg.excluded),
                    t
                ],
            )
            .await
            .map_err(|e| unique_or(e, || format!("segment '{}'", seg.key)))?;
        insert_lists(&mut c, id, &seg).await?;
        let rec = AuditRecord::new("segment.create", "segment", seg.key.as_str())
            .scoped(Some(project), Some(environment))
            .after(encode(&seg));
        let to = record_segment_write(&mut c, ctx, env.id, seg.key.as_str(), rec, t).await?;
        tx.commit().await?;
        self.refresh_key_statistics(seg.included.len() + seg.excluded.len());
        ix.insert_segment(&seg);
        self.put_index(env.id, to, ix);
        Ok(SegmentView {
            segment: seg,
            environment_version: Some(to),
            created_at: t,
            updated_at: t,
        })
    }

    /// One segment with its key lists.
    pub async fn get_segment(
        &self,
        project: &str,
        environment: &str,
        key: &str,
    ) -> Result<SegmentView, StoreError> {
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, environment).await?;
        let row = existing_segment(&mut c, e.id, key).await?;
        let (segment, created_at, updated_at) = assemble(row)?;
        Ok(SegmentView {
            segment,
            environment_version: None,
            created_at,
            updated_at,
        })
    }

    /// Lists an environment's segments by key (counts only, no key lists).
    pub async fn list_segments(
        &self,
        project: &str,
        environment: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<SegmentSummary>, StoreError> {
        let limit = page_limit(limit);
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, environment).await?;
        let mut items: Vec<SegmentSummary> = c
            .fetch_all(
                "SELECT key, name, included_count, excluded_count, version, updated_at FROM segments
                 WHERE environment_id = $1 AND key > $2 ORDER BY key LIMIT $3",
                args![e.id, cursor.unwrap_or(""), limit + 1],
            )
            .await?;
        Ok(paginate(&mut items, limit, |s| s.key.clone()))
    }

    /// Replaces a segment. An empty `salt` keeps the current one; `version` is assigned.
    pub async fn put_segment(
        &self,
        ctx: &WriteContext,
        project: &str,
        environment: &str,
        key: &str,
        mut segment: Segment,
        if_match: Option<u64>,
    ) -> Result<SegmentView, StoreError> {
        if segment.key != key {
            return Err(StoreError::invalid(
                "key",
                "key_mismatch",
                format!(
                    "the body names segment '{}' but the path names '{key}'; keys cannot be changed",
                    segment.key
                ),
            ));
        }
        let (env, _local, mut tx) = self.begin_segment_write(project, environment).await?;
        let mut c = tx.conn();
        let from = c.lock_environment(env.id).await?;
        let row = existing_segment(&mut c, env.id, key).await?;
        let id = row.id;
        let (before, created_at, updated_before) = assemble(row)?;
        if let Some(expected) = if_match
            && expected != before.version
        {
            return Err(StoreError::PreconditionFailed {
                current: before.version,
            });
        }
        if segment.salt.is_empty() {
            segment.salt = before.salt.clone();
        }
        segment.version = before.version;
        if segment == before {
            // Nothing changes: nothing is versioned, logged, notified or audited.
            return Ok(SegmentView {
                segment: before,
                environment_version: Some(from),
                created_at,
                updated_at: updated_before,
            });
        }
        let mut ix = self.take_index(&mut c, env.id, from).await?;
        segment.version = before.version + 1;
        let seg = validate_segment(segment, &ix)?.into_inner();
        let t = now();
        c.execute(
            "UPDATE segments SET name = $3, body = $4,
                    included_count = $5, excluded_count = $6, version = $7, updated_at = $8
             WHERE environment_id = $1 AND key = $2",
            args![
                env.id,
                key,
                seg.name.as_str(),
                body_of(&seg),
                list_len(&seg.included),
                list_len(&seg.excluded),
                i64::try_from(seg.version).unwrap_or(i64::MAX),
                t
            ],
        )
        .await?;
        let lists_rewritten =
            (&seg.included, &seg.excluded) != (&before.included, &before.excluded);
        if lists_rewritten {
            segment_keys::clear(&mut c, id).await?;
            insert_lists(&mut c, id, &seg).await?;
        }
        let rec = AuditRecord::new("segment.update", "segment", key)
            .scoped(Some(project), Some(environment))
            .before(encode(&before))
            .after(encode(&seg));
        let to = record_segment_write(&mut c, ctx, env.id, key, rec, t).await?;
        tx.commit().await?;
        if lists_rewritten {
            self.refresh_key_statistics(seg.included.len() + seg.excluded.len());
        }
        ix.insert_segment(&seg);
        self.put_index(env.id, to, ix);
        Ok(SegmentView {
            segment: seg,
            environment_version: Some(to),
            created_at,
            updated_at: t,
        })
    }

    /// Deletes a segment. Refused (409, naming them) while flags or other segments match it.
    pub async fn delete_segment(
        &self,
        ctx: &WriteContext,
        project: &str,
        environment: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let (env, _local, mut tx) = self.begin_segment_write(project, environment).await?;
        let mut c = tx.conn();
        let from = c.lock_environment(env.id).await?;
        let row = existing_segment(&mut c, env.id, key).await?;
        let (before, _, _) = assemble(row)?;
        let mut ix = self.take_index(&mut c, env.id, from).await?;
        let mut blockers: Vec<String> = ix
            .flags_using_segment(key)
            .into_iter()
            .map(|f| format!("flag '{f}'"))
            .collect();
        blockers.extend(
            ix.segments_using_segment(key)
                .into_iter()
                .map(|s| format!("segment '{s}'")),
        );
        if !blockers.is_empty() {
            self.put_index(env.id, from, ix);
            return Err(StoreError::Conflict {
                message: format!("segment '{key}' is in use: remove the rules that match it first"),
                blockers,
            });
        }
        c.execute(
            "DELETE FROM segments WHERE environment_id = $1 AND key = $2",
            args![env.id, key],
        )
        .await?;
        let t = now();
        let rec = AuditRecord::new("segment.delete", "segment", key)
            .scoped(Some(project), Some(environment))
            .before(encode(&before));
        let to = record_segment_write(&mut c, ctx, env.id, key, rec, t).await?;
        tx.commit().await?;
        ix.remove_segment(key);
        self.put_index(env.id, to, ix);
        Ok(())
    }
}
