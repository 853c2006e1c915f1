//! The measurement of a metric guardrail: per variation, the sufficient statistics
//! (units, `Σy`, `Σy²`) of the metric's per-unit value over the units exposed to the flag
//! since the step began, read from the stored events in one aggregate query.
//!
//! A unit is a context key with exposures to the flag in the environment since the step
//! began, all on one variation (a unit seen on both is left out, as in experiment analysis).
//! Its value is computed from its custom events with the metric's `event_key` since then,
//! by the metric's kind: `conversion` 1 if any, else 0; `count` how many; `sum` the sum of
//! their values; `mean` the mean of their values (units without such an event left out). The
//! metric's window and cap are not applied: the step is the window.

use vexil_stats::Sample;

use crate::db::{Conn, args};
use crate::experiments::model::MetricKind;
use crate::store::StoreError;

/// Per-unit values by metric kind; `$1` environment, `$2` flag key, `$3` since (ms), `$4`
/// received since (ms, prunes day partitions), `$5` event key.
macro_rules! aggregate {
    ($value:literal, $join:literal) => {
        concat!(
            "WITH units AS (
                 SELECT context_key AS unit, MIN(variation) AS v
                 FROM events
                 WHERE environment_id = $1 AND kind = 'exposure' AND key = $2
                   AND time_ms >= $3 AND received_at_ms >= $4
                   AND context_key IS NOT NULL AND variation IS NOT NULL
                 GROUP BY context_key
                 HAVING MIN(variation) = MAX(variation)
             ), hits AS (
                 SELECT context_key AS unit, COUNT(*) AS cnt,
                        SUM(COALESCE(value, 0.0)) AS total
                 FROM events
                 WHERE environment_id = $1 AND kind = 'custom' AND key = $5
                   AND time_ms >= $3 AND received_at_ms >= $4 AND context_key IS NOT NULL
                 GROUP BY context_key
             ), vals AS (
                 SELECT u.v AS v, CAST(",
            $value,
            " AS DOUBLE PRECISION) AS val FROM units u ",
            $join,
            " JOIN hits h ON h.unit = u.unit
             )
             SELECT CAST(v AS BIGINT) AS variation, COUNT(*) AS n,
                    CAST(SUM(val) AS DOUBLE PRECISION) AS total,
                    CAST(SUM(val * val) AS DOUBLE PRECISION) AS total_sq
             FROM vals GROUP BY v"
        )
    };
}

const CONVERSION: &str = aggregate!("CASE WHEN COALESCE(h.cnt, 0) > 0 THEN 1 ELSE 0 END", "LEFT");
const COUNT: &str = aggregate!("COALESCE(h.cnt, 0)", "LEFT");
const SUM: &str = aggregate!("COALESCE(h.total, 0.0)", "LEFT");
const MEAN: &str = aggregate!("h.total / h.cnt", "INNER");

/// How far before the step receipt times are read: events are stored by day of receipt, and
/// a sender's clock or buffering may put an event's receipt before its own time.
const RECEIPT_SLACK_MS: i64 = 86_400_000;

/// One metric's events since a step began, per variation.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The environment's id.
    pub environment_id: i64,
    /// The flag's key (exposures name it).
    pub flag: &'a str,
    /// The metric's event key.
    pub event_key: &'a str,
    /// The metric's kind.
    pub kind: MetricKind,
    /// Start of the step, ms since the epoch.
    pub since_ms: i64,
}

/// The sums of the units on `control` and on `treatment`.
pub(crate) async fn samples(
    c: &mut Conn<'_>,
    q: Query<'_>,
    control: i64,
    treatment: i64,
) -> Result<(Sample, Sample), StoreError> {
    let sql = match q.kind {
        MetricKind::Conversion => CONVERSION,
        MetricKind::Count => COUNT,
        MetricKind::Sum => SUM,
        MetricKind::Mean => MEAN,
    };
    let rows: Vec<(i64, i64, Option<f64>, Option<f64>)> = c
        .fetch_all(
            sql,
            args![
                q.environment_id,
                q.flag,
                q.since_ms,
                q.since_ms.saturating_sub(RECEIPT_SLACK_MS),
                q.event_key
            ],
        )
        .await?;
    let pick = |variation: i64| {
        rows.iter()
            .find(|r| r.0 == variation)
            .map_or(Sample::new(0, 0.0, 0.0), |r| {
                Sample::new(
                    u64::try_from(r.1).unwrap_or(0),
                    r.2.unwrap_or(0.0),
                    r.3.unwrap_or(0.0),
                )
            })
    };
    Ok((pick(control), pick(treatment)))
}
