//! Storage of raw events: one transaction per batch (the rows, then the experiment aggregates
//! through [`crate::experiments::on_ingest`]), day partitions and retention.
//!
//! PostgreSQL: the rows go in with one `INSERT … SELECT FROM unnest(…)` per batch (one
//! statement, ten array parameters, whatever the batch size), into the partition of the day
//! of receipt, created on first use if the maintenance task has not made it yet. SQLite: a
//! prepared single-row insert repeated inside the transaction.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, PgPool};
use time::{Date, OffsetDateTime};
use vexil_schema::events::{Event, SdkInfo};

use crate::db::{Db, Tx};
use crate::store::StoreError;

/// Milliseconds in a day.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The advisory lock key serialising partition creation and dropping across servers.
const PARTITION_LOCK: i64 = 0x7665_7869_6c00_0004; // "vexil" + migration 4

/// Days of partitions created ahead of today.
const DAYS_AHEAD: i64 = 2;

/// One event as a row of `events`.
#[derive(Debug, Clone, PartialEq)]
struct EventRow {
    kind: &'static str,
    time_ms: i64,
    key: String,
    context_key: Option<String>,
    context_kind: Option<String>,
    variation: Option<i32>,
    flag_version: Option<i64>,
    environment_version: Option<i64>,
    value: Option<f64>,
    detail: Option<Value>,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl EventRow {
    /// The row of a validated event; `sdk` is the batch's sender, kept with summaries.
    fn of(event: &Event, sdk: Option<&SdkInfo>) -> Self {
        match event {
            Event::Exposure(e) => EventRow {
                kind: "exposure",
                time_ms: i64_of(e.time),
                key: e.flag_key.clone(),
                context_key: Some(e.context_key.clone()),
                context_kind: Some(e.context_kind.clone()),
                variation: Some(i32::try_from(e.variation).unwrap_or(i32::MAX)),
                flag_version: Some(i64_of(e.flag_version)),
                environment_version: Some(i64_of(e.environment_version)),
                value: None,
                detail: None,
            },
            Event::Custom(e) => EventRow {
                kind: "custom",
                time_ms: i64_of(e.time),
                key: e.event_key.clone(),
                context_key: Some(e.context_key.clone()),
                context_kind: Some(e.context_kind.clone()),
                variation: None,
                flag_version: None,
                environment_version: None,
                value: e.value,
                detail: None,
            },
            Event::Summary(s) => EventRow {
                kind: "summary",
                time_ms: i64_of(s.end),
                key: String::new(),
                context_key: None,
                context_kind: None,
                variation: None,
                flag_version: None,
                environment_version: Some(i64_of(s.environment_version)),
                value: None,
                detail: Some(json!({
                    "start": s.start,
                    "sdk": s.sdk.as_ref().or(sdk),
                    "counters": s.counters,
                })),
            },
        }
    }
}

/// What one maintenance round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Partitions created (PostgreSQL), as `YYYY-MM-DD`.
    pub created: Vec<String>,
    /// Partitions dropped (PostgreSQL), as `YYYY-MM-DD`.
    pub dropped: Vec<String>,
    /// Rows deleted (SQLite).
    pub deleted_rows: u64,
}

/// Writes event batches and keeps the `events` table's partitions and retention. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct EventStore {
    db: Db,
    retention_days: u32,
    /// Days (since the epoch) whose partition this process created or saw exist.
    partitions: Arc<Mutex<HashSet<i64>>>,
}

/// The UTC day (days since the epoch) of a time in ms.
fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The date of a day number.
fn date_of(day: i64) -> Option<Date> {
    OffsetDateTime::from_unix_timestamp(day.checked_mul(86_400)?)
        .ok()
        .map(|t| t.date())
}

/// `events_pYYYYMMDD`.
fn partition_name(day: i64) -> Option<String> {
    let d = date_of(day)?;
    Some(format!(
        "events_p{:04}{:02}{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    ))
}

/// The day of a partition name made by [`partition_name`].
fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("events_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits[..4].parse().ok()?;
    let month: u8 = digits[4..6].parse().ok()?;
    let day: u8 = digits[6..].parse().ok()?;
    let date = Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let t = date.midnight().assume_utc().unix_timestamp();
    Some(t.div_euclid(86_400))
}

fn iso(day: i64) -> String {
    date_of(day).map_or_else(|| day.to_string(), |d| d.to_string())
}

impl EventStore {
    /// A store over `db` keeping `retention_days` days of events (0: keep forever).
    pub fn new(db: Db, retention_days: u32) -> Self {
        Self {
            db,
            retention_days,
            partitions: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Stores `events` (already validated) of `environment_id`, received at `received_at_ms`,
    /// and folds them into the experiment aggregates, in one transaction. Returns once it
    /// committed: only then may the events be acknowledged.
    pub async fn store(
        &self,
        environment_id: i64,
        received_at_ms: u64,
        events: &[Event],
        sdk: Option<&SdkInfo>,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let received = i64_of(received_at_ms);
        if let Db::Postgres(pool) = &self.db {
            self.ensure_partition(pool, day_of(received)).await?;
        }
        let rows: Vec<EventRow> = events.iter().map(|e| EventRow::of(e, sdk)).collect();
        let mut tx = self.db.begin().await?;
        insert(&mut tx, environment_id, received, &rows).await?;
        crate::experiments::on_ingest(&mut tx.conn(), environment_id, received_at_ms, events)
            .await?;
        crate::fleet::store::on_ingest(&mut tx.conn(), environment_id, events, sdk).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates the partition of `day` unless this process knows it exists.
    async fn ensure_partition(&self, pool: &PgPool, day: i64) -> Result<(), StoreError> {
        let known = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&day);
        if known {
            return Ok(());
        }
        create_partition(pool, day).await?;
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(day);
        Ok(())
    }

    /// One maintenance round at `now_ms`: on PostgreSQL, creates the partitions of today and
    /// the next days, and drops those wholly older than the retention; on SQLite, deletes the
    /// rows older than the retention. Safe to run on several servers at once.
    pub async fn maintain(&self, now_ms: u64) -> Result<Maintenance, StoreError> {
        let now = i64_of(now_ms);
        let today = day_of(now);
        let mut out = Maintenance::default();
        // Rows received before this are past retention.
        let cutoff = (self.retention_days > 0)
            .then(|| now.saturating_sub(i64::from(self.retention_days).saturating_mul(DAY_MS)));
        match &self.db {
            Db::Postgres(pool) => {
                for day in today..=today + DAYS_AHEAD {
                    if create_partition(pool, day).await? {
                        out.created.push(iso(day));
                    }
                    self.partitions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(day);
                }
                let Some(cutoff) = cutoff else {
                    return Ok(out);
                };
                let names: Vec<(String,)> = sqlx::query_as(
                    "SELECT c.relname::text FROM pg_inherits i
                     JOIN pg_class c ON c.oid = i.inhrelid
                     JOIN pg_class p ON p.oid = i.inhparent
                     WHERE p.relname = 'events' AND p.relnamespace = c.relnamespace",
                )
                .fetch_all(pool)
                .await?;
                for (name,) in names {
                    let Some(day) = partition_day(&name) else {
                        continue;
                    };
                    // The partition holds [day, day + 1): drop it once all of it is too old.
                    if (day + 1).saturating_mul(DAY_MS) > cutoff {
                        continue;
                    }
                    let mut tx = pool.begin().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(PARTITION_LOCK)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    self.partitions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&day);
                    out.dropped.push(iso(day));
                }
            }
            Db::Sqlite(pool, _) => {
                if let Some(cutoff) = cutoff {
                    out.deleted_rows = sqlx::query("DELETE FROM events WHERE received_at_ms < $1")
                        .bind(cutoff)
                        .execute(pool)
                        .await?
                        .rows_affected();
                }
            }
        }
        Ok(out)
    }

    /// Creates the partition of the UTC day `day` (days since the epoch) if missing, e.g. to
    /// hold events received then. Returns whether it was created. PostgreSQL only (a no-op
    /// on SQLite).
    pub async fn create_partition(&self, day: i64) -> Result<bool, StoreError> {
        match &self.db {
            Db::Postgres(pool) => create_partition(pool, day).await,
            Db::Sqlite(..) => Ok(false),
        }
    }
}

/// Creates the partition of `day` if missing (under the advisory lock, so concurrent
/// servers do not collide); whether it was created.
async fn create_partition(pool: &PgPool, day: i64) -> Result<bool, StoreError> {
    let Some(name) = partition_name(day) else {
        return Err(StoreError::invalid(
            "received_at",
            "range",
            "a receive time outside the supported dates",
        ));
    };
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *tx)
        .await?;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_class WHERE relname = $1")
        .bind(&name)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_some() {
        tx.commit().await?;
        return Ok(false);
    }
    let from = day.saturating_mul(DAY_MS);
    let to = (day + 1).saturating_mul(DAY_MS);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF events FOR VALUES FROM ({from}) TO ({to})"
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

const PG_INSERT: &str = "INSERT INTO events (environment_id, received_at_ms, kind, time_ms, key,
        context_key, context_kind, variation, flag_version, environment_version, value, detail)
    SELECT $1, $2, u.kind, u.time_ms, u.key, u.context_key, u.context_kind, u.variation,
        u.flag_version, u.environment_version, u.value, u.detail::jsonb
    FROM unnest($3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::int[],
        $9::bigint[], $10::bigint[], $11::float8[], $12::text[])
    AS u(kind, time_ms, key, context_key, context_kind, variation, flag_version,
        environment_version, value, detail)";

const LITE_INSERT: &str = "INSERT INTO events (environment_id, received_at_ms, kind, time_ms,
        key, context_key, context_kind, variation, flag_version, environment_version, value,
        detail)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// Rows per PostgreSQL statement.
const PG_CHUNK: usize = 10_000;

async fn insert(
    tx: &mut Tx,
    environment_id: i64,
    received: i64,
    rows: &[EventRow],
) -> Result<(), sqlx::Error> {
    match tx {
        Tx::Pg(t, _) => {
            for chunk in rows.chunks(PG_CHUNK) {
                let mut kind = Vec::with_capacity(chunk.len());
                let mut time_ms = Vec::with_capacity(chunk.len());
                let mut key = Vec::with_capacity(chunk.len());
                let mut context_key = Vec::with_capacity(chunk.len());
                let mut context_kind = Vec::with_capacity(chunk.len());
                let mut variation = Vec::with_capacity(chunk.len());
                let mut flag_version = Vec::with_capacity(chunk.len());
                let mut environment_version = Vec::with_capacity(chunk.len());
                let mut value = Vec::with_capacity(chunk.len());
                let mut detail = Vec::with_capacity(chunk.len());
                for r in chunk {
                    kind.push(r.kind);
                    time_ms.push(r.time_ms);
                    key.push(r.key.as_str());
                    context_key.push(r.context_key.as_deref());
                    context_kind.push(r.context_kind.as_deref());
                    variation.push(r.variation);
                    flag_version.push(r.flag_version);
                    environment_version.push(r.environment_version);
                    value.push(r.value);
                    detail.push(r.detail.as_ref().map(Value::to_string));
                }
                sqlx::query(PG_INSERT)
                    .bind(environment_id)
                    .bind(received)
                    .bind(kind)
                    .bind(time_ms)
                    .bind(key)
                    .bind(context_key)
                    .bind(context_kind)
                    .bind(variation)
                    .bind(flag_version)
                    .bind(environment_version)
                    .bind(value)
                    .bind(detail)
                    .execute(&mut **t)
                    .await?;
            }
        }
        Tx::Lite(t, _) => {
            for r in rows {
                sqlx::query(LITE_INSERT)
                    .bind(environment_id)
                    .bind(received)
                    .bind(r.kind)
                    .bind(r.time_ms)
                    .bind(r.key.as_str())
                    .bind(r.context_key.as_deref())
                    .bind(r.context_kind.as_deref())
                    .bind(r.variation)
                    .bind(r.flag_version)
                    .bind(r.environment_version)
                    .bind(r.value)
                    .bind(r.detail.as_ref().map(Value::to_string))
                    .execute(&mut **t)
                    .await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_schema::events::{CustomEvent, Summary, SummaryCounter};

    #[test]
    fn partition_names_round_trip_to_days() {
        let day = day_of(1_796_342_400_000);
        assert_eq!(partition_name(day).as_deref(), Some("events_p20261204"));
        assert_eq!(partition_day("events_p20261204"), Some(day));
        assert_eq!(partition_day("events_p2026124"), None);
        assert_eq!(partition_day("events_x20261204"), None);
        assert_eq!(partition_day("events_p20261332"), None);
        assert_eq!(day_of(-1), -1, "before the epoch rounds down");
    }

    #[test]
    fn summaries_keep_their_sender_and_counters() {
        let sdk = SdkInfo {
            name: "vexil-rust".into(),
            version: "1".into(),
            instance_id: "i".into(),
        };
        let s = Event::Summary(Summary {
            start: 1,
            end: 2,
            environment_version: 3,
            sdk: None,
            counters: vec![SummaryCounter {
                flag_key: "f".into(),
                variation: Some(1),
                reason: "FALLTHROUGH".into(),
                count: 9,
            }],
        });
        let row = EventRow::of(&s, Some(&sdk));
        assert_eq!(row.kind, "summary");
        assert_eq!(row.time_ms, 2);
        let detail = row.detail.unwrap();
        assert_eq!(detail["sdk"]["name"], "vexil-rust");
        assert_eq!(detail["counters"][0]["count"], 9);
        let c = Event::Custom(CustomEvent {
            time: 5,
            event_key: "buy".into(),
            context_key: "u".into(),
            context_kind: "user".into(),
            value: Some(2.5),
        });
        let row = EventRow::of(&c, None);
        assert_eq!(
            (row.kind, row.key.as_str(), row.value),
            ("custom", "buy", Some(2.5))
        );
    }
}
