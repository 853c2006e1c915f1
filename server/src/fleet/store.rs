//! The fleet's tables (migration 0016): the latest report of each process per environment
//! (`fleet_reports`, with expiry), and flag usage folded in from SDK evaluation summaries
//! (`flag_usage`, `flag_usage_sdks`). SQL written once for both engines.

use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use utoipa::ToSchema;
use vexil_schema::events::{Event, SdkInfo};
use vexil_schema::fleet::EnvironmentReport;

use super::view::{Source, SourceKind};
use crate::db::{Conn, Db, args};
use crate::store::{StoreError, environment_row, project_row};

const DAY_MS: i64 = 86_400_000;

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The database id and version of `project/environment`.
pub(crate) async fn environment_id(
    conn: &mut Conn<'_>,
    project: &str,
    environment: &str,
) -> Result<(i64, u64), StoreError> {
    let p = project_row(conn, project).await?;
    let e = environment_row(conn, p.id, environment).await?;
    let (version,): (i64,) = conn
        .fetch_one(
            "SELECT version FROM environments WHERE id = $1",
            args![e.id],
        )
        .await?;
    Ok((e.id, u64_of(version)))
}

/// What a process says of itself beside its environment reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct Meta {
    pub id: String,
    pub version: String,
    pub upstream_connected: bool,
    /// The relay a chained relay reports through (rows written before chains forwarded
    /// their reports have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// Stores `reports` (one per environment id) from `source` of `kind`, valid until
/// `now_ms + ttl_ms`, and deletes every expired report.
pub(crate) async fn save(
    db: &Db,
    kind: SourceKind,
    meta: &Meta,
    reports: &[(i64, EnvironmentReport)],
    now_ms: u64,
    ttl_ms: u64,
) -> Result<(), StoreError> {
    let (kind_label, prefix) = match kind {
        SourceKind::Relay => ("relay", "relay:"),
        SourceKind::Server => ("server", "server:"),
    };
    let source = format!("{prefix}{}", meta.id);
    let now = i64_of(now_ms);
    let expires = i64_of(now_ms.saturating_add(ttl_ms));
    let meta = serde_json::to_value(meta).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut tx = db.begin().await?;
    let mut c = tx.conn();
    c.execute(
        "DELETE FROM fleet_reports WHERE expires_at_ms < $1",
        args![now],
    )
    .await?;
    for (env_id, report) in reports {
        let report =
            serde_json::to_value(report).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        c.execute(
            "INSERT INTO fleet_reports \
               (source, environment_id, kind, meta, report, received_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (environment_id, source) DO UPDATE SET \
               kind = excluded.kind, meta = excluded.meta, report = excluded.report, \
               received_at_ms = excluded.received_at_ms, expires_at_ms = excluded.expires_at_ms",
            args![
                source.clone(),
                *env_id,
                kind_label,
                meta.clone(),
                report,
                now,
                expires
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Every unexpired report of an environment, relays first, by source.
pub(crate) async fn load(
    conn: &mut Conn<'_>,
    environment_id: i64,
    now_ms: u64,
) -> Result<Vec<Source>, StoreError> {
    let rows: Vec<(String, Json<Value>, Json<Value>, i64)> = conn
        .fetch_all(
            "SELECT kind, meta, report, received_at_ms FROM fleet_reports \
             WHERE environment_id = $1 AND expires_at_ms >= $2 ORDER BY kind, source",
            args![environment_id, i64_of(now_ms)],
        )
        .await?;
    rows.into_iter()
        .map(|(kind, meta, report, received)| {
            let meta: Meta = serde_json::from_value(meta.0)
                .map_err(|e| StoreError::Corrupt(format!("fleet report meta: {e}")))?;
            let report: EnvironmentReport = serde_json::from_value(report.0)
                .map_err(|e| StoreError::Corrupt(format!("fleet report: {e}")))?;
            Ok(Source {
                kind: if kind == "relay" {
                    SourceKind::Relay
                } else {
                    SourceKind::Server
                },
                id: meta.id,
                parent: meta.parent,
                version: meta.version,
                upstream_connected: meta.upstream_connected,
                received_at_ms: u64_of(received),
                report,
            })
        })
        .collect()
}

/// Folds the evaluation summaries among `events` into the flag usage tables. Runs in the
/// transaction that stores the events.
pub(crate) async fn on_ingest(
    conn: &mut Conn<'_>,
    environment_id: i64,
    events: &[Event],
    batch_sdk: Option<&SdkInfo>,
) -> Result<(), sqlx::Error> {
    for event in events {
        let Event::Summary(s) = event else { continue };
        let end = i64_of(s.end);
        let day = end.div_euclid(DAY_MS);
        let sdk = s.sdk.as_ref().or(batch_sdk);
        let mut flags: Vec<&str> = Vec::new();
        for counter in &s.counters {
            if counter.count == 0 {
                continue;
            }
            let variation = counter.variation.map_or(-1, i64::from);
            conn.execute(
                "INSERT INTO flag_usage \
                   (environment_id, flag_key, variation, day, evaluations, last_evaluated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (environment_id, flag_key, variation, day) DO UPDATE SET \
                   evaluations = flag_usage.evaluations + excluded.evaluations, \
                   last_evaluated_ms = CASE WHEN excluded.last_evaluated_ms > flag_usage.last_evaluated_ms \
                     THEN excluded.last_evaluated_ms ELSE flag_usage.last_evaluated_ms END",
                args![
                    environment_id,
                    counter.flag_key.as_str(),
                    variation,
                    day,
                    i64_of(counter.count),
                    end
                ],
            )
            .await?;
            if !flags.contains(&counter.flag_key.as_str()) {
                flags.push(&counter.flag_key);
            }
        }
        let Some(sdk) = sdk else { continue };
        for flag in flags {
            conn.execute(
                "INSERT INTO flag_usage_sdks \
                   (environment_id, flag_key, sdk_name, sdk_version, last_seen_ms) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (environment_id, flag_key, sdk_name, sdk_version) DO UPDATE SET \
                   last_seen_ms = CASE WHEN excluded.last_seen_ms > flag_usage_sdks.last_seen_ms \
                     THEN excluded.last_seen_ms ELSE flag_usage_sdks.last_seen_ms END",
                args![
                    environment_id,
                    flag,
                    sdk.name.as_str(),
                    sdk.version.as_str(),
                    end
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// One flag's usage in an environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlagUsage {
    /// The flag.
    pub flag_key: String,
    /// When an SDK last reported evaluating it (ms since the epoch; the end of the summary
    /// interval).
    pub last_evaluated_ms: u64,
    /// Evaluations in the window.
    pub evaluations: u64,
    /// Evaluations in the window by variation index (`null`: the caller's default, an error).
    pub by_variation: Vec<VariationCount>,
    /// SDKs seen evaluating it (ever), most recent first.
    pub sdks: Vec<SdkSeen>,
}

/// Evaluations of one variation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VariationCount {
    /// The variation index; `null` for the caller's default.
    pub variation: Option<u32>,
    /// Evaluations.
    pub evaluations: u64,
}

/// An SDK seen evaluating a flag.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SdkSeen {
    /// SDK name.
    pub name: String,
    /// SDK version.
    pub version: String,
    /// When last seen (ms since the epoch).
    pub last_seen_ms: u64,
}

/// Usage of every flag evaluated in `environment_id`: counts from the UTC days since
/// `since_ms`, last evaluation ever.
pub(crate) async fn usage(
    conn: &mut Conn<'_>,
    environment_id: i64,
    since_ms: u64,
) -> Result<Vec<FlagUsage>, StoreError> {
    let since_day = i64_of(since_ms).div_euclid(DAY_MS);
    let last: Vec<(String, i64)> = conn
        .fetch_all(
            "SELECT flag_key, MAX(last_evaluated_ms) FROM flag_usage \
             WHERE environment_id = $1 GROUP BY flag_key ORDER BY flag_key",
            args![environment_id],
        )
        .await?;
    let counts: Vec<(String, i64, i64)> = conn
        .fetch_all(
            "SELECT flag_key, variation, CAST(SUM(evaluations) AS BIGINT) FROM flag_usage \
             WHERE environment_id = $1 AND day >= $2 GROUP BY flag_key, variation \
             ORDER BY flag_key, variation",
            args![environment_id, since_day],
        )
        .await?;
    let sdks: Vec<(String, String, String, i64)> = conn
        .fetch_all(
            "SELECT flag_key, sdk_name, sdk_version, last_seen_ms FROM flag_usage_sdks \
             WHERE environment_id = $1 ORDER BY flag_key, last_seen_ms DESC",
            args![environment_id],
        )
        .await?;
    Ok(last
        .into_iter()
        .map(|(flag_key, last)| {
            let by_variation: Vec<VariationCount> = counts
                .iter()
                .filter(|(k, _, _)| *k == flag_key)
                .map(|(_, v, n)| VariationCount {
                    variation: u32::try_from(*v).ok(),
                    evaluations: u64_of(*n),
                })
                .collect();
            FlagUsage {
                last_evaluated_ms: u64_of(last),
                evaluations: by_variation.iter().map(|v| v.evaluations).sum(),
                by_variation,
                sdks: sdks
                    .iter()
                    .filter(|(k, ..)| *k == flag_key)
                    .map(|(_, name, version, seen)| SdkSeen {
                        name: name.clone(),
                        version: version.clone(),
                        last_seen_ms: u64_of(*seen),
                    })
                    .collect(),
                flag_key,
            }
        })
        .collect())
}

/// The flags of an environment as the stale report reads them: key, definition, when
/// created, configuration and when it last changed (not archived).
pub(crate) async fn flags_with_configs(
    conn: &mut Conn<'_>,
    environment_id: i64,
) -> Result<Vec<FlagRow>, StoreError> {
    Ok(conn
        .fetch_all(
            "SELECT f.key, f.definition, f.created_at, c.config, c.updated_at \
             FROM flags f JOIN flag_configs c ON c.flag_id = f.id \
             WHERE c.environment_id = $1 AND NOT f.archived ORDER BY f.key",
            args![environment_id],
        )
        .await?)
}

/// One row of [`flags_with_configs`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct FlagRow {
    pub key: String,
    pub definition: Json<Value>,
    pub created_at: time::OffsetDateTime,
    pub config: Json<Value>,
    pub updated_at: time::OffsetDateTime,
}
