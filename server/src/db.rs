//! A thin, dialect-neutral layer over the two sqlx drivers.
//!
//! The store's SQL is written once, with `$1`-style placeholders that both PostgreSQL and
//! SQLite accept, and run through [`Conn`], which binds [`Arg`]s to whichever driver is in use
//! and decodes rows with `FromRow` (derived row types decode from either driver). sqlx's `Any`
//! driver would do the same but lacks JSON and PostgreSQL-specific features (`LISTEN`,
//! `FOR UPDATE`) that later work needs, so the two pools stay concrete.
//!
//! Where the dialects differ ([`Conn::lock_environment`], transaction start, times), the
//! difference lives here.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{
    Arguments, FromRow, PgConnection, PgPool, Postgres, SqlSafeStr, Sqlite, SqliteConnection,
    SqlitePool,
};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use crate::store::StoreError;

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: the production system of record.
    Postgres,
    /// Embedded SQLite: the zero-setup default.
    Sqlite,
}

/// A connection pool to either engine.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL pool.
    Postgres(PgPool),
    /// SQLite pool, with the signal its write transactions raise after committing.
    Sqlite(SqlitePool, Commits),
}

/// Counts the write transactions committed through one SQLite [`Db`], so that in-process
/// readers (the change feed) wake after each commit: SQLite has no `LISTEN`/`NOTIFY`.
#[derive(Debug, Clone)]
pub struct Commits(std::sync::Arc<tokio::sync::watch::Sender<u64>>);

impl Commits {
    fn new() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::channel(0).0))
    }

    /// A receiver that sees the commit count change after every committed write
    /// transaction.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }

    fn committed(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A query argument, bound to either driver with the right SQL type.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    I64(i64),
    OptI64(Option<i64>),
    Text(String),
    OptText(Option<String>),
    Bool(bool),
    OptBool(Option<bool>),
    Json(Value),
    OptJson(Option<Value>),
    Time(OffsetDateTime),
    OptTime(Option<OffsetDateTime>),
    Bytes(Vec<u8>),
    OptBytes(Option<Vec<u8>>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::I64(v)
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::OptI64(v)
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::OptText(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::OptText(v.map(str::to_owned))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<Value> for Arg {
    fn from(v: Value) -> Self {
        Arg::Json(v)
    }
}
impl From<Option<Value>> for Arg {
    fn from(v: Option<Value>) -> Self {
        Arg::OptJson(v)
    }
}
impl From<OffsetDateTime> for Arg {
    fn from(v: OffsetDateTime) -> Self {
        Arg::Time(v)
    }
}
impl From<Option<OffsetDateTime>> for Arg {
    fn from(v: Option<OffsetDateTime>) -> Self {
        Arg::OptTime(v)
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}
impl From<Option<Vec<u8>>> for Arg {
    fn from(v: Option<Vec<u8>>) -> Self {
        Arg::OptBytes(v)
    }
}

/// Builds a `Vec<Arg>` from values convertible into [`Arg`].
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$($crate::db::Arg::from($v)),*] };
}
pub(crate) use args;

/// SQLite stores times as text and compares them as text, so every time is written in one
/// fixed-width UTC form (RFC 3339 with exactly six fractional digits). sqlx reads it back as
/// RFC 3339.
const SQLITE_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

fn sqlite_time(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    // Formatting a valid UTC date-time with a fixed description cannot fail for years 0..=9999.
    utc.format(SQLITE_TIME)
        .unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

/// The current time, truncated to microseconds (the precision both engines store).
pub(crate) fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    let micros = t.microsecond();
    t.replace_microsecond(micros).unwrap_or(t)
}

/// The body of a function building one driver's arguments from [`Arg`]s. The two drivers differ only in how JSON and
/// times are stored, so the caller names those two conversions (`json`, `time`); every other
/// kind binds as is. An encoding failure is the error `sqlx` would return on running a query
/// with the value bound (`Error::Encode`, numbering the argument), before anything is sent.
macro_rules! driver_args {
    ($args:expr, $Arguments:ty, json: |$j:ident| $json:expr, time: |$t:ident| $time:expr) => {{
        let mut out = <$Arguments>::default();
        for (i, a) in $args.into_iter().enumerate() {
            let added = match a {
                Arg::I64(v) => out.add(v),
                Arg::OptI64(v) => out.add(v),
                Arg::Text(v) => out.add(v),
                Arg::OptText(v) => out.add(v),
                Arg::Bool(v) => out.add(v),
                Arg::OptBool(v) => out.add(v),
                Arg::Json($j) => out.add($json),
                Arg::OptJson(v) => out.add(v.map(|$j| $json)),
                Arg::Time($t) => out.add($time),
                Arg::OptTime(v) => out.add(v.map(|$t| $time)),
                Arg::Bytes(v) => out.add(v),
                Arg::OptBytes(v) => out.add(v),
            };
            added.map_err(|error| {
                let message = format!("Encoding argument ${} failed: {error}", i + 1);
                sqlx::Error::Encode(message.into())
            })?;
        }
        Ok(out)
    }};
}

/// Arguments for PostgreSQL: JSON as `jsonb`, times as `timestamptz`.
fn pg_args(args: Vec<Arg>) -> Result<PgArguments, sqlx::Error> {
    driver_args!(args, PgArguments, json: |v| Json(v), time: |v| v)
}

fn json_text(v: &Value) -> String {
    // Serialising a `Value` cannot fail: every key is a string.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// Arguments for SQLite: JSON as text, times as fixed-width UTC text (see [`SQLITE_TIME`]).
fn lite_args(args: Vec<Arg>) -> Result<SqliteArguments, sqlx::Error> {
    driver_args!(args, SqliteArguments, json: |v| json_text(&v), time: |v| sqlite_time(v))
}

/// Runs `$run` on whichever driver `$conn` holds, with `$c` bound to that driver's connection
/// and `$a` to `$args` built for it (see [`pg_args`], [`lite_args`]): the one place the
/// query methods of [`Conn`] dispatch on the engine.
macro_rules! on_driver {
    ($conn:expr, $args:expr, |$c:ident, $a:ident| $run:expr) => {
        match $conn {
            Conn::Pg($c) => {
                let $a = pg_args($args)?;
                $run
            }
            Conn::Lite($c) => {
                let $a = lite_args($args)?;
                $run
            }
        }
    };
}

/// A row type that decodes from either driver.
pub(crate) trait AnyRow:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin + 'static
{
}
impl<T> AnyRow for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin + 'static
{
}

/// A borrowed connection (plain or inside a transaction) to either engine.
pub(crate) enum Conn<'c> {
    Pg(&'c mut PgConnection),
    Lite(&'c mut SqliteConnection),
}

impl Conn<'_> {
    /// The `backend` label of this connection's engine.
    fn backend_label(&self) -> &'static str {
        match self {
            Conn::Pg(_) => "postgres",
            Conn::Lite(_) => "sqlite",
        }
    }

    /// Runs a statement, returning the number of rows affected.
    pub(crate) async fn execute(
        &mut self,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<u64, sqlx::Error> {
        let backend = self.backend_label();
        crate::metrics::time_query(backend, "execute", sql, async {
            Ok(on_driver!(self, args, |c, a| sqlx::query_with(sql, a)
                .execute(&mut **c)
                .await?
                .rows_affected()))
        })
        .await
    }

    /// Fetches at most one row.
    pub(crate) async fn fetch_optional<T: AnyRow>(
        &mut self,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<Option<T>, sqlx::Error> {
        let backend = self.backend_label();
        crate::metrics::time_query(backend, "fetch", sql, async {
            on_driver!(self, args, |c, a| sqlx::query_as_with::<_, T, _>(sql, a)
                .fetch_optional(&mut **c)
                .await)
        })
        .await
    }

    /// Fetches exactly one row.
    pub(crate) async fn fetch_one<T: AnyRow>(
        &mut self,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<T, sqlx::Error> {
        let backend = self.backend_label();
        crate::metrics::time_query(backend, "fetch", sql, async {
            on_driver!(self, args, |c, a| sqlx::query_as_with::<_, T, _>(sql, a)
                .fetch_one(&mut **c)
                .await)
        })
        .await
    }

    /// Fetches every row.
    pub(crate) async fn fetch_all<T: AnyRow>(
        &mut self,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<Vec<T>, sqlx::Error> {
        let backend = self.backend_label();
        crate::metrics::time_query(backend, "fetch", sql, async {
            on_driver!(self, args, |c, a| sqlx::query_as_with::<_, T, _>(sql, a)
                .fetch_all(&mut **c)
                .await)
        })
        .await
    }

    /// Takes the environment's write lock for the rest of the transaction and returns its
    /// current data version. On PostgreSQL this is a row lock (`FOR NO KEY UPDATE`); SQLite transactions are
    /// started with `BEGIN IMMEDIATE`, which already serialises writers.
    ///
    /// Callers found the environment a moment earlier; if it is gone now, a concurrent
    /// deletion won the race: [`StoreError::Gone`].
    pub(crate) async fn lock_environment(
        &mut self,
        environment_id: i64,
    ) -> Result<i64, StoreError> {
        let sql = match self {
            // NO KEY UPDATE: writers still exclude each other, but the KEY SHARE locks that
            // foreign-key checks take (any row inserted with this environment_id) do not wait
            // on it, so a writer holding one environment and a transaction inserting rows
            // for two cannot deadlock.
            Conn::Pg(_) => "SELECT version FROM environments WHERE id = $1 FOR NO KEY UPDATE",
            Conn::Lite(_) => "SELECT version FROM environments WHERE id = $1",
        };
        let row: Option<(i64,)> = self.fetch_optional(sql, args![environment_id]).await?;
        row.map(|(v,)| v)
            .ok_or_else(|| StoreError::Gone("the environment".into()))
    }

    /// Takes a flag's row lock (definition changes in a project with no environment still
    /// need serialising).
    pub(crate) async fn lock_flag(&mut self, flag_id: i64) -> Result<(), sqlx::Error> {
        if let Conn::Pg(_) = self {
            let _: Option<(i64,)> = self
                .fetch_optional(
                    "SELECT id FROM flags WHERE id = $1 FOR NO KEY UPDATE",
                    args![flag_id],
                )
                .await?;
        }
        Ok(())
    }
}

/// An open transaction on either engine.
#[derive(Debug)]
pub(crate) enum Tx {
    /// A PostgreSQL transaction and whether it is a write transaction.
    Pg(sqlx::Transaction<'static, Postgres>, bool),
    /// A SQLite transaction and, for write transactions, the signal raised after commit.
    Lite(sqlx::Transaction<'static, Sqlite>, Option<Commits>),
}

impl Tx {
    /// The transaction's connection.
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Pg(t, _) => Conn::Pg(&mut *t),
            Tx::Lite(t, _) => Conn::Lite(&mut *t),
        }
    }

    /// Whether this is a write transaction (from [`Db::begin`]).
    fn is_write(&self) -> bool {
        match self {
            Tx::Pg(_, write) => *write,
            Tx::Lite(_, commits) => commits.is_some(),
        }
    }

    /// Commits. A write transaction run for a request with an `Idempotency-Key` first marks
    /// the key's record as committed, in this same transaction, so that the record can never
    /// say "in progress" about a write that happened (see `store::idempotency`).
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let claim = if self.is_write() {
            crate::store::mark_idempotency_committed(&mut self.conn()).await?
        } else {
            None
        };
        match self {
            Tx::Pg(t, _) => {
                crate::metrics::time_query("postgres", "commit", "COMMIT", t.commit()).await?
            }
            Tx::Lite(t, commits) => {
                crate::metrics::time_query("sqlite", "commit", "COMMIT", t.commit()).await?;
                if let Some(c) = commits {
                    c.committed();
                }
            }
        }
        if let Some(claim) = claim {
            claim.committed();
        }
        Ok(())
    }
}

/// A pooled connection to either engine, for reads outside a transaction.
pub(crate) enum Pooled {
    Pg(sqlx::pool::PoolConnection<Postgres>),
    Lite(sqlx::pool::PoolConnection<Sqlite>),
}

impl Pooled {
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Pooled::Pg(c) => Conn::Pg(&mut *c),
            Pooled::Lite(c) => Conn::Lite(&mut *c),
        }
    }
}

/// A connection pool's use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open (idle or in use).
    pub size: u32,
    /// Connections open and idle.
    pub idle: u32,
    /// The most connections the pool may open.
    pub max: u32,
}

/// How to open a [`Db`].
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `postgres://…`, `sqlite://path` or a bare file path (SQLite).
    pub url: String,
    /// Maximum pooled connections (PostgreSQL; SQLite uses a small fixed pool).
    pub max_connections: u32,
}

/// How long a request waits for a pooled connection while every connection is busy.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the pool tries to open a connection before the database counts as unreachable
/// (a refused connection is retried until then). PostgreSQL answers a connection attempt in
/// milliseconds when it is up; the margin is for a loaded host.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(2);

/// A pooled PostgreSQL connection, failing fast when the database is unreachable.
///
/// The pool's own timeout is [`UNREACHABLE_AFTER`]. When it expires with the pool full (every
/// connection busy serving requests) the database is up but loaded, and the wait goes on, up
/// to [`ACQUIRE_TIMEOUT`] in all. When it expires with room in the pool, the pool spent the
/// whole time failing to open a connection: the database is down, and the caller gets
/// `PoolTimedOut` (a 503) after two seconds instead of ten. With `wait_for_database`
/// (start-up) an unreachable database is waited for up to [`ACQUIRE_TIMEOUT`] too.
async fn acquire_pg(
    pool: &PgPool,
    wait_for_database: bool,
) -> Result<sqlx::pool::PoolConnection<Postgres>, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
    loop {
        match pool.acquire().await {
            Err(sqlx::Error::PoolTimedOut) if tokio::time::Instant::now() < deadline => {
                let saturated =
                    pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0;
                if !(saturated || wait_for_database) {
                    return Err(sqlx::Error::PoolTimedOut);
                }
            }
            other => return other,
        }
    }
}

impl Db {
    /// Connects (creating a SQLite file if missing, in WAL mode) without migrating.
    pub async fn connect(options: &DbOptions) -> Result<Self, sqlx::Error> {
        let url = options.url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(UNREACHABLE_AFTER)
                .connect_lazy_with(opts);
            // Open the first connection now, so that a wrong URL fails the start.
            drop(acquire_pg(&pool, true).await?);
            Ok(Db::Postgres(pool))
        } else {
            let opts = if url.starts_with("sqlite:") {
                SqliteConnectOptions::from_str(url)?
            } else {
                SqliteConnectOptions::new().filename(url)
            };
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections.clamp(1, 8))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Db::Sqlite(pool, Commits::new()))
        }
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Postgres(_) => Backend::Postgres,
            Db::Sqlite(..) => Backend::Sqlite,
        }
    }

    /// The embedded migrations for this engine.
    fn migrator(&self) -> sqlx::migrate::Migrator {
        match self {
            Db::Postgres(_) => sqlx::migrate!("../schema/migrations/postgres"),
            Db::Sqlite(..) => sqlx::migrate!("../schema/migrations/sqlite"),
        }
    }

    /// Applies the embedded migrations for this engine.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let migrator = self.migrator();
        match self {
            Db::Postgres(p) => migrator.run(p).await,
            Db::Sqlite(p, _) => migrator.run(p).await,
        }
    }

    /// Whether the database answers and every embedded migration is applied.
    pub async fn ready(&self) -> Result<bool, sqlx::Error> {
        let expected = self.migrator().iter().map(|m| m.version).max();
        let Some(expected) = expected else {
            return Ok(true);
        };
        let mut c = self.acquire().await?;
        let applied: Option<(i64,)> = c
            .conn()
            .fetch_optional(
                "SELECT version FROM _sqlx_migrations WHERE version = $1 AND success",
                args![expected],
            )
            .await?;
        Ok(applied.is_some())
    }

    /// Borrows a pooled connection.
    pub(crate) async fn acquire(&self) -> Result<Pooled, sqlx::Error> {
        Ok(match self {
            Db::Postgres(p) => {
                Pooled::Pg(crate::metrics::time_acquire("postgres", acquire_pg(p, false)).await?)
            }
            Db::Sqlite(p, _) => {
                Pooled::Lite(crate::metrics::time_acquire("sqlite", p.acquire()).await?)
            }
        })
    }

    /// The pool's current use (sampled for the `vexil_db_pool_*` gauges).
    pub fn pool_stats(&self) -> PoolStats {
        match self {
            Db::Postgres(p) => PoolStats {
                size: p.size(),
                idle: u32::try_from(p.num_idle()).unwrap_or(u32::MAX),
                max: p.options().get_max_connections(),
            },
            Db::Sqlite(p, _) => PoolStats {
                size: p.size(),
                idle: u32::try_from(p.num_idle()).unwrap_or(u32::MAX),
                max: p.options().get_max_connections(),
            },
        }
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE` on SQLite, so the write lock is taken
    /// up front rather than failing on upgrade).
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Postgres(p) => {
                let c = crate::metrics::time_acquire("postgres", acquire_pg(p, false)).await?;
                Tx::Pg(sqlx::Transaction::begin(c, None).await?, true)
            }
            Db::Sqlite(p, commits) => Tx::Lite(
                crate::metrics::time_acquire("sqlite", p.begin_with("BEGIN IMMEDIATE")).await?,
                Some(commits.clone()),
            ),
        })
    }

    /// Starts a read-only transaction that sees one consistent state of the database
    /// (`REPEATABLE READ` on PostgreSQL; a deferred transaction on SQLite, which in WAL mode
    /// reads one snapshot).
    pub(crate) async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Postgres(p) => {
                let c = crate::metrics::time_acquire("postgres", acquire_pg(p, false)).await?;
                let begin =
                    SqlSafeStr::into_sql_str("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
                Tx::Pg(sqlx::Transaction::begin(c, Some(begin)).await?, false)
            }
            Db::Sqlite(p, _) => Tx::Lite(
                crate::metrics::time_acquire("sqlite", p.begin()).await?,
                None,
            ),
        })
    }

    /// The post-commit signal of a SQLite database (`None` on PostgreSQL, whose writers
    /// notify with `NOTIFY`).
    pub fn commits(&self) -> Option<&Commits> {
        match self {
            Db::Postgres(_) => None,
            Db::Sqlite(_, c) => Some(c),
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Db::Postgres(p) => p.close().await,
            Db::Sqlite(p, _) => p.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_times_are_fixed_width_and_sort_as_text() {
        let a = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let b = a + time::Duration::microseconds(1);
        let c = a + time::Duration::milliseconds(500);
        let (sa, sb, sc) = (sqlite_time(a), sqlite_time(b), sqlite_time(c));
        assert_eq!(sa, "2023-11-14T22:13:20.000000Z");
        assert_eq!(sa.len(), sb.len());
        assert!(sa < sb && sb < sc);
        let back =
            OffsetDateTime::parse(&sb, &time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn now_is_truncated_to_microseconds() {
        assert_eq!(now().nanosecond() % 1_000, 0);
    }
}
