//! Folding event batches into the per-unit aggregates, set-based: a batch costs a handful of
//! statements whatever its size (one upsert of exposed units, one read of first exposures,
//! one upsert of unit × metric rows), never one statement per event. Rows are written in key
//! order so concurrent ingesters lock them in the same order and cannot deadlock.
//!
//! Attribution, by event time:
//! - an exposure belongs to the iteration of its flag's experiment that was running at its
//!   time; a unit's first exposure and variation are its earliest; a unit seen with two
//!   variations is marked `multiple` (excluded from analysis and counted);
//! - a custom event feeds every metric with its `event_key` of every iteration running at
//!   its time: before the unit's first exposure it is pre-exposure data (the CUPED
//!   covariate); from the first exposure to the end of the metric's window it counts; after
//!   the window it is ignored;
//! - a custom event for a unit with no exposure yet is kept as a *pending* aggregate (count,
//!   sum, first and last time) and attributed when the exposure arrives: all before it →
//!   pre-exposure; all within the window → counted (converted at the first); all after the
//!   exposure but past the window's end → only the first counts (with the mean value), if it
//!   is inside; straddling the exposure → pre-exposure, conservatively.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sqlx::types::Json;
use vexil_schema::events::Event;

use super::model::{Experiment, Metric};
use crate::db::{Conn, args};
use crate::store::{StoreError, decode};

#[derive(sqlx::FromRow)]
struct LiveIteration {
    id: i64,
    started_ms: i64,
    ended_ms: Option<i64>,
    flag_key: String,
    definition: Json<Value>,
}

#[derive(sqlx::FromRow)]
struct MetricRow {
    id: i64,
    definition: Json<Value>,
}

/// One iteration that may receive this batch's events.
struct Target {
    id: i64,
    started_ms: i64,
    ended_ms: Option<i64>,
    flag_key: String,
    /// (metric id, event key, window in ms).
    metrics: Vec<(i64, String, Option<i64>)>,
}

impl Target {
    fn covers(&self, t: i64) -> bool {
        t >= self.started_ms && self.ended_ms.is_none_or(|end| t < end)
    }

    fn window(&self, metric_id: i64) -> Option<i64> {
        self.metrics
            .iter()
            .find(|(id, _, _)| *id == metric_id)
            .and_then(|(_, _, w)| *w)
    }
}

/// A unit's exposures in one iteration, reduced over the batch.
#[derive(Debug, Clone, PartialEq)]
struct UnitDelta {
    variation: i64,
    first_ms: i64,
    multiple: bool,
}

/// What a batch adds to one unit × metric row.
#[derive(Debug, Clone, Default, PartialEq)]
struct MetricDelta {
    pre_count: i64,
    pre_sum: f64,
    count: i64,
    sum: f64,
    converted_ms: Option<i64>,
    pending_count: i64,
    pending_sum: f64,
    pending_first_ms: Option<i64>,
    pending_last_ms: Option<i64>,
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl MetricDelta {
    /// Adds one event at `t` with `value`, given the unit's first exposure (if known) and the
    /// metric's window.
    fn add(&mut self, t: i64, value: f64, first: Option<i64>, window: Option<i64>) {
        match first {
            None => {
                self.pending_count += 1;
                self.pending_sum += value;
                self.pending_first_ms = min_opt(self.pending_first_ms, Some(t));
                self.pending_last_ms = max_opt(self.pending_last_ms, Some(t));
            }
            Some(f) if t < f => {
                self.pre_count += 1;
                self.pre_sum += value;
            }
            Some(f) if window.is_none_or(|w| t <= f.saturating_add(w)) => {
                self.count += 1;
                self.sum += value;
                self.converted_ms = min_opt(self.converted_ms, Some(t));
            }
            Some(_) => {}
        }
    }

    /// Attributes a pending aggregate now that the unit's first exposure is known.
    fn resolve(p: &PendingRow, window: Option<i64>) -> Self {
        let (Some(first), Some(last)) = (p.pending_first_ms, p.pending_last_ms) else {
            return Self::default();
        };
        let f = p.first_ms;
        let end = window.map(|w| f.saturating_add(w));
        if first >= f {
            if end.is_none_or(|end| last <= end) {
                Self {
                    count: p.pending_count,
                    sum: p.pending_sum,
                    converted_ms: Some(first),
                    ..Self::default()
                }
            } else if end.is_none_or(|end| first <= end) {
                // Partly past the window: only the first event is surely inside it; it
                // counts with the mean value of the pending events.
                Self {
                    count: 1,
                    sum: p.pending_sum / p.pending_count.max(1) as f64,
                    converted_ms: Some(first),
                    ..Self::default()
                }
            } else {
                Self::default()
            }
        } else {
            // Before the exposure, or straddling it: pre-exposure, conservatively.
            Self {
                pre_count: p.pending_count,
                pre_sum: p.pending_sum,
                ..Self::default()
            }
        }
    }
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    iteration_id: i64,
    metric_id: i64,
    unit: String,
    pending_count: i64,
    pending_sum: f64,
    pending_first_ms: Option<i64>,
    pending_last_ms: Option<i64>,
    first_ms: i64,
}

/// The iterations of `environment_id` that may receive events from `since_ms` on, with the
/// metrics they measure.
async fn targets(
    conn: &mut Conn<'_>,
    environment_id: i64,
    since_ms: i64,
) -> Result<Vec<Target>, StoreError> {
    let live: Vec<LiveIteration> = conn
        .fetch_all(
            "SELECT i.id, i.started_ms, i.ended_ms, x.flag_key, x.definition
             FROM experiments x JOIN experiment_iterations i ON i.experiment_id = x.id
             WHERE x.environment_id = $1 AND x.status <> 'draft'
               AND (i.ended_ms IS NULL OR i.ended_ms > $2)",
            args![environment_id, since_ms],
        )
        .await?;
    if live.is_empty() {
        return Ok(Vec::new());
    }
    let metrics: Vec<MetricRow> = conn
        .fetch_all(
            "SELECT m.id, m.definition FROM metrics m
             JOIN environments e ON e.project_id = m.project_id WHERE e.id = $1",
            args![environment_id],
        )
        .await?;
    let metrics: Vec<(i64, Metric)> = metrics
        .into_iter()
        .map(|m| Ok((m.id, decode::<Metric>("metric", m.definition.0)?)))
        .collect::<Result<_, StoreError>>()?;
    live.into_iter()
        .map(|it| {
            let x: Experiment = decode("experiment", it.definition.0)?;
            let keys = x.metric_keys();
            let measured = metrics
                .iter()
                .filter(|(_, m)| keys.iter().any(|(k, _)| *k == m.key))
                .map(|(id, m)| (*id, m.event_key.clone(), m.window_ms()))
                .collect();
            Ok(Target {
                id: it.id,
                started_ms: it.started_ms,
                ended_ms: it.ended_ms,
                flag_key: it.flag_key,
                metrics: measured,
            })
        })
        .collect()
}

fn ms(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Reduces a batch's exposures to one delta per (iteration, unit), in key order.
fn unit_deltas(targets: &[&Target], events: &[Event]) -> BTreeMap<(i64, String), UnitDelta> {
    let mut units: BTreeMap<(i64, String), UnitDelta> = BTreeMap::new();
    for e in events {
        let Event::Exposure(x) = e else { continue };
        let t = ms(x.time);
        for it in targets {
            if it.flag_key != x.flag_key || !it.covers(t) {
                continue;
            }
            let d = UnitDelta {
                variation: i64::from(x.variation),
                first_ms: t,
                multiple: false,
            };
            units
                .entry((it.id, x.context_key.clone()))
                .and_modify(|u| {
                    u.multiple |= u.variation != d.variation;
                    if d.first_ms < u.first_ms {
                        u.first_ms = d.first_ms;
                        u.variation = d.variation;
                    }
                })
                .or_insert(d);
        }
    }
    units
}

/// One custom event for one metric of one iteration: (iteration, metric, unit, time, value,
/// window).
type Hit<'a> = (i64, i64, &'a str, i64, f64, Option<i64>);

/// Folds one validated batch into the aggregates (see the module documentation).
pub(crate) async fn fold(
    conn: &mut Conn<'_>,
    environment_id: i64,
    events: &[Event],
) -> Result<(), StoreError> {
    let since = events
        .iter()
        .filter_map(|e| match e {
            Event::Exposure(x) => Some(x.time),
            Event::Custom(c) => Some(c.time),
            Event::Summary(_) => None,
        })
        .min();
    let Some(since) = since else { return Ok(()) };
    let all = targets(conn, environment_id, ms(since)).await?;
    if all.is_empty() {
        return Ok(());
    }
    let targets: Vec<&Target> = all.iter().collect();

    // Exposures: upsert the units, then attribute their pending events.
    let units = unit_deltas(&targets, events);
    let mut deltas: BTreeMap<(i64, i64, String), MetricDelta> = BTreeMap::new();
    let mut clear: Vec<(i64, i64, String)> = Vec::new();
    if !units.is_empty() {
        upsert_units(conn, &units).await?;
        let keys: Vec<(i64, String)> = units.keys().cloned().collect();
        for p in pending_rows(conn, &keys).await? {
            let window = all
                .iter()
                .find(|t| t.id == p.iteration_id)
                .and_then(|t| t.window(p.metric_id));
            let d = MetricDelta::resolve(&p, window);
            let key = (p.iteration_id, p.metric_id, p.unit.clone());
            clear.push(key.clone());
            deltas.insert(key, d);
        }
    }

    // Custom events: per (iteration, metric, unit), by the unit's first exposure.
    let mut hits: Vec<Hit<'_>> = Vec::new();
    for e in events {
        let Event::Custom(c) = e else { continue };
        let t = ms(c.time);
        for it in &targets {
            if !it.covers(t) {
                continue;
            }
            for (metric_id, event_key, window) in &it.metrics {
                if *event_key == c.event_key {
                    hits.push((
                        it.id,
                        *metric_id,
                        c.context_key.as_str(),
                        t,
                        c.value.unwrap_or(0.0),
                        *window,
                    ));
                }
            }
        }
    }
    if !hits.is_empty() {
        let pairs: BTreeSet<(i64, String)> = hits
            .iter()
            .map(|(it, _, unit, ..)| (*it, (*unit).to_owned()))
            .collect();
        let pairs: Vec<(i64, String)> = pairs.into_iter().collect();
        let firsts: BTreeMap<(i64, String), i64> = first_exposures(conn, &pairs)
            .await?
            .into_iter()
            .map(|(it, unit, f)| ((it, unit), f))
            .collect();
        for (it, metric, unit, t, value, window) in hits {
            let first = firsts.get(&(it, unit.to_owned())).copied();
            deltas
                .entry((it, metric, unit.to_owned()))
                .or_default()
                .add(t, value, first, window);
        }
    }
    if !clear.is_empty() {
        clear_pending(conn, &clear).await?;
    }
    if !deltas.is_empty() {
        upsert_metrics(conn, &deltas).await?;
    }
    Ok(())
}

async fn upsert_units(
    conn: &mut Conn<'_>,
    units: &BTreeMap<(i64, String), UnitDelta>,
) -> Result<(), StoreError> {
    match conn {
        Conn::Pg(c) => {
            let mut its = Vec::with_capacity(units.len());
            let mut keys = Vec::with_capacity(units.len());
            let mut vars = Vec::with_capacity(units.len());
            let mut firsts = Vec::with_capacity(units.len());
            let mut multiple = Vec::with_capacity(units.len());
            for ((it, unit), d) in units {
                its.push(*it);
                keys.push(unit.as_str());
                vars.push(d.variation);
                firsts.push(d.first_ms);
                multiple.push(d.multiple);
            }
            sqlx::query(
                "INSERT INTO experiment_units (iteration_id, unit, variation, first_ms, multiple)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bool[])
                 ON CONFLICT (iteration_id, unit) DO UPDATE SET
                   multiple = experiment_units.multiple OR EXCLUDED.multiple
                              OR experiment_units.variation <> EXCLUDED.variation,
                   variation = CASE WHEN EXCLUDED.first_ms < experiment_units.first_ms
                                    THEN EXCLUDED.variation ELSE experiment_units.variation END,
                   first_ms = LEAST(experiment_units.first_ms, EXCLUDED.first_ms)",
            )
            .bind(its)
            .bind(keys)
            .bind(vars)
            .bind(firsts)
            .bind(multiple)
            .execute(&mut **c)
            .await?;
        }
        Conn::Lite(c) => {
            let rows: Vec<Value> = units
                .iter()
                .map(|((it, unit), d)| json!([it, unit, d.variation, d.first_ms, d.multiple]))
                .collect();
            sqlx::query(
                "INSERT INTO experiment_units (iteration_id, unit, variation, first_ms, multiple)
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                        json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                        json_extract(value, '$[4]')
                 FROM json_each($1) WHERE true
                 ON CONFLICT (iteration_id, unit) DO UPDATE SET
                   multiple = experiment_units.multiple OR excluded.multiple
                              OR experiment_units.variation <> excluded.variation,
                   variation = CASE WHEN excluded.first_ms < experiment_units.first_ms
                                    THEN excluded.variation ELSE experiment_units.variation END,
                   first_ms = MIN(experiment_units.first_ms, excluded.first_ms)",
            )
            .bind(Value::Array(rows).to_string())
            .execute(&mut **c)
            .await?;
        }
    }
    Ok(())
}

fn pairs_json(pairs: &[(i64, String)]) -> String {
    Value::Array(pairs.iter().map(|(i, u)| json!([i, u])).collect()).to_string()
}

/// Unit × metric rows with pending events for these (iteration, unit) pairs, now exposed.
async fn pending_rows(
    conn: &mut Conn<'_>,
    pairs: &[(i64, String)],
) -> Result<Vec<PendingRow>, StoreError> {
    Ok(match conn {
        Conn::Pg(c) => {
            let (its, units): (Vec<i64>, Vec<&str>) =
                pairs.iter().map(|(i, u)| (*i, u.as_str())).unzip();
            sqlx::query_as(
                "SELECT m.iteration_id, m.metric_id, m.unit, m.pending_count, m.pending_sum,
                        m.pending_first_ms, m.pending_last_ms, u.first_ms
                 FROM UNNEST($1::bigint[], $2::text[]) AS k(iteration_id, unit)
                 JOIN experiment_units u ON u.iteration_id = k.iteration_id AND u.unit = k.unit
                 JOIN experiment_unit_metrics m
                   ON m.iteration_id = k.iteration_id AND m.unit = k.unit AND m.pending_count > 0
                 ORDER BY m.iteration_id, m.metric_id, m.unit
                 FOR UPDATE OF m",
            )
            .bind(its)
            .bind(units)
            .fetch_all(&mut **c)
            .await?
        }
        Conn::Lite(c) => {
            sqlx::query_as(
                "SELECT m.iteration_id, m.metric_id, m.unit, m.pending_count, m.pending_sum,
                        m.pending_first_ms, m.pending_last_ms, u.first_ms
                 FROM json_each($1) AS k
                 JOIN experiment_units u ON u.iteration_id = json_extract(k.value, '$[0]')
                                        AND u.unit = json_extract(k.value, '$[1]')
                 JOIN experiment_unit_metrics m
                   ON m.iteration_id = u.iteration_id AND m.unit = u.unit AND m.pending_count > 0
                 ORDER BY m.iteration_id, m.metric_id, m.unit",
            )
            .bind(pairs_json(pairs))
            .fetch_all(&mut **c)
            .await?
        }
    })
}

/// The first exposure of each of these (iteration, unit) pairs that has one.
async fn first_exposures(
    conn: &mut Conn<'_>,
    pairs: &[(i64, String)],
) -> Result<Vec<(i64, String, i64)>, StoreError> {
    Ok(match conn {
        Conn::Pg(c) => {
            let (its, units): (Vec<i64>, Vec<&str>) =
                pairs.iter().map(|(i, u)| (*i, u.as_str())).unzip();
            sqlx::query_as(
                "SELECT u.iteration_id, u.unit, u.first_ms
                 FROM UNNEST($1::bigint[], $2::text[]) AS k(iteration_id, unit)
                 JOIN experiment_units u ON u.iteration_id = k.iteration_id AND u.unit = k.unit",
            )
            .bind(its)
            .bind(units)
            .fetch_all(&mut **c)
            .await?
        }
        Conn::Lite(c) => {
            sqlx::query_as(
                "SELECT u.iteration_id, u.unit, u.first_ms FROM json_each($1) AS k
                 JOIN experiment_units u ON u.iteration_id = json_extract(k.value, '$[0]')
                                        AND u.unit = json_extract(k.value, '$[1]')",
            )
            .bind(pairs_json(pairs))
            .fetch_all(&mut **c)
            .await?
        }
    })
}

async fn clear_pending(conn: &mut Conn<'_>, keys: &[(i64, i64, String)]) -> Result<(), StoreError> {
    match conn {
        Conn::Pg(c) => {
            let mut its = Vec::with_capacity(keys.len());
            let mut metrics = Vec::with_capacity(keys.len());
            let mut units = Vec::with_capacity(keys.len());
            for (i, m, u) in keys {
                its.push(*i);
                metrics.push(*m);
                units.push(u.as_str());
            }
            sqlx::query(
                "UPDATE experiment_unit_metrics m SET pending_count = 0, pending_sum = 0,
                        pending_first_ms = NULL, pending_last_ms = NULL
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::text[]) AS k(iteration_id, metric_id, unit)
                 WHERE m.iteration_id = k.iteration_id AND m.metric_id = k.metric_id
                   AND m.unit = k.unit",
            )
            .bind(its)
            .bind(metrics)
            .bind(units)
            .execute(&mut **c)
            .await?;
        }
        Conn::Lite(c) => {
            let rows: Vec<Value> = keys.iter().map(|(i, m, u)| json!([i, m, u])).collect();
            sqlx::query(
                "UPDATE experiment_unit_metrics SET pending_count = 0, pending_sum = 0,
                        pending_first_ms = NULL, pending_last_ms = NULL
                 WHERE (iteration_id, metric_id, unit) IN (
                     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                            json_extract(value, '$[2]') FROM json_each($1))",
            )
            .bind(Value::Array(rows).to_string())
            .execute(&mut **c)
            .await?;
        }
    }
    Ok(())
}

async fn upsert_metrics(
    conn: &mut Conn<'_>,
    deltas: &BTreeMap<(i64, i64, String), MetricDelta>,
) -> Result<(), StoreError> {
    match conn {
        Conn::Pg(c) => {
            let n = deltas.len();
            let (mut its, mut metrics, mut units) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut pre_count, mut pre_sum, mut count, mut sum, mut converted) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut p_count, mut p_sum, mut p_first, mut p_last) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for ((i, m, u), d) in deltas {
                its.push(*i);
                metrics.push(*m);
                units.push(u.as_str());
                pre_count.push(d.pre_count);
                pre_sum.push(d.pre_sum);
                count.push(d.count);
                sum.push(d.sum);
                converted.push(d.converted_ms);
                p_count.push(d.pending_count);
                p_sum.push(d.pending_sum);
                p_first.push(d.pending_first_ms);
                p_last.push(d.pending_last_ms);
            }
            sqlx::query(
                "INSERT INTO experiment_unit_metrics
                   (iteration_id, metric_id, unit, pre_count, pre_sum, count, sum, converted_ms,
                    pending_count, pending_sum, pending_first_ms, pending_last_ms)
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[],
                                      $5::float8[], $6::bigint[], $7::float8[], $8::bigint[],
                                      $9::bigint[], $10::float8[], $11::bigint[], $12::bigint[])
                 ON CONFLICT (iteration_id, metric_id, unit) DO UPDATE SET
                   pre_count = experiment_unit_metrics.pre_count + EXCLUDED.pre_count,
                   pre_sum = experiment_unit_metrics.pre_sum + EXCLUDED.pre_sum,
                   count = experiment_unit_metrics.count + EXCLUDED.count,
                   sum = experiment_unit_metrics.sum + EXCLUDED.sum,
                   converted_ms = LEAST(experiment_unit_metrics.converted_ms, EXCLUDED.converted_ms),
                   pending_count = experiment_unit_metrics.pending_count + EXCLUDED.pending_count,
                   pending_sum = experiment_unit_metrics.pending_sum + EXCLUDED.pending_sum,
                   pending_first_ms = LEAST(experiment_unit_metrics.pending_first_ms,
                                            EXCLUDED.pending_first_ms),
                   pending_last_ms = GREATEST(experiment_unit_metrics.pending_last_ms,
                                              EXCLUDED.pending_last_ms)",
            )
            .bind(its)
            .bind(metrics)
            .bind(units)
            .bind(pre_count)
            .bind(pre_sum)
            .bind(count)
            .bind(sum)
            .bind(converted)
            .bind(p_count)
            .bind(p_sum)
            .bind(p_first)
            .bind(p_last)
            .execute(&mut **c)
            .await?;
        }
        Conn::Lite(c) => {
            let rows: Vec<Value> = deltas
                .iter()
                .map(|((i, m, u), d)| {
                    json!([
                        i,
                        m,
                        u,
                        d.pre_count,
                        d.pre_sum,
                        d.count,
                        d.sum,
                        d.converted_ms,
                        d.pending_count,
                        d.pending_sum,
                        d.pending_first_ms,
                        d.pending_last_ms
                    ])
                })
                .collect();
            sqlx::query(
                "INSERT INTO experiment_unit_metrics
                   (iteration_id, metric_id, unit, pre_count, pre_sum, count, sum, converted_ms,
                    pending_count, pending_sum, pending_first_ms, pending_last_ms)
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                        json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                        json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                        json_extract(value, '$[6]'), json_extract(value, '$[7]'),
                        json_extract(value, '$[8]'), json_extract(value, '$[9]'),
                        json_extract(value, '$[10]'), json_extract(value, '$[11]')
                 FROM json_each($1) WHERE true
                 ON CONFLICT (iteration_id, metric_id, unit) DO UPDATE SET
                   pre_count = experiment_unit_metrics.pre_count + excluded.pre_count,
                   pre_sum = experiment_unit_metrics.pre_sum + excluded.pre_sum,
                   count = experiment_unit_metrics.count + excluded.count,
                   sum = experiment_unit_metrics.sum + excluded.sum,
                   converted_ms = COALESCE(MIN(experiment_unit_metrics.converted_ms, excluded.converted_ms),
                                           experiment_unit_metrics.converted_ms, excluded.converted_ms),
                   pending_count = experiment_unit_metrics.pending_count + excluded.pending_count,
                   pending_sum = experiment_unit_metrics.pending_sum + excluded.pending_sum,
                   pending_first_ms = COALESCE(MIN(experiment_unit_metrics.pending_first_ms,
                                                   excluded.pending_first_ms),
                                               experiment_unit_metrics.pending_first_ms,
                                               excluded.pending_first_ms),
                   pending_last_ms = COALESCE(MAX(experiment_unit_metrics.pending_last_ms,
                                                  excluded.pending_last_ms),
                                              experiment_unit_metrics.pending_last_ms,
                                              excluded.pending_last_ms)",
            )
            .bind(Value::Array(rows).to_string())
            .execute(&mut **c)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_attributed_by_the_first_exposure_and_the_window() {
        let mut d = MetricDelta::default();
        d.add(50, 1.0, Some(100), Some(1000)); // before exposure
        d.add(100, 2.0, Some(100), Some(1000)); // at exposure
        d.add(1100, 3.0, Some(100), Some(1000)); // window's end, inclusive
        d.add(1101, 4.0, Some(100), Some(1000)); // past the window
        d.add(7, 5.0, None, Some(1000)); // not exposed yet
        assert_eq!(
            d,
            MetricDelta {
                pre_count: 1,
                pre_sum: 1.0,
                count: 2,
                sum: 5.0,
                converted_ms: Some(100),
                pending_count: 1,
                pending_sum: 5.0,
                pending_first_ms: Some(7),
                pending_last_ms: Some(7),
            }
        );
    }

    #[test]
    fn pending_events_resolve_when_the_exposure_arrives() {
        let row = |first, last, exposed| PendingRow {
            iteration_id: 1,
            metric_id: 1,
            unit: "u".into(),
            pending_count: 2,
            pending_sum: 6.0,
            pending_first_ms: Some(first),
            pending_last_ms: Some(last),
            first_ms: exposed,
        };
        let after = MetricDelta::resolve(&row(200, 300, 100), Some(1000));
        assert_eq!((after.count, after.converted_ms), (2, Some(200)));
        let before = MetricDelta::resolve(&row(10, 20, 100), Some(1000));
        assert_eq!((before.pre_count, before.count), (2, 0));
        let straddling = MetricDelta::resolve(&row(10, 300, 100), None);
        assert_eq!((straddling.pre_count, straddling.count), (2, 0));
    }

    #[test]
    fn a_unit_with_two_variations_is_multiple_and_keeps_its_earliest() {
        use vexil_schema::events::Exposure;
        let target = Target {
            id: 9,
            started_ms: 0,
            ended_ms: None,
            flag_key: "f".into(),
            metrics: Vec::new(),
        };
        let ex = |t, v: u32, unit: &str| {
            Event::Exposure(Exposure {
                time: t,
                flag_key: "f".into(),
                flag_version: 1,
                environment_version: 1,
                variation: v,
                context_key: unit.into(),
                context_kind: "user".into(),
            })
        };
        let units = unit_deltas(
            &[&target],
            &[ex(20, 1, "a"), ex(10, 0, "a"), ex(5, 1, "b"), ex(6, 1, "b")],
        );
        assert_eq!(
            units[&(9, "a".to_owned())],
            UnitDelta {
                variation: 0,
                first_ms: 10,
                multiple: true
            }
        );
        assert!(!units[&(9, "b".to_owned())].multiple);
    }
}
