//! Results: reads one iteration's per-unit aggregates (never raw events) and analyses them
//! with `vexil-stats`: per variation against control, Holm-corrected across treatments, with
//! CUPED when pre-exposure values exist, the SRM check and a sample-size estimate.

use vexil_stats::{
    Comparison, Cuped, Method, Moments, Sample, SampleSizeInput, compare, cuped, holm, sample_size,
    srm,
};

use super::model::{
    Allocation, AnalysisMethod, Cap, Direction, Experiment, ExperimentResults, Metric, MetricKind,
    MetricResult, MetricRole, SampleSizeEstimate, SrmCheck, VariationResult, VsControl,
};
use super::store::{IterationRow, time_ms};
use crate::db::{Conn, args, now};
use crate::store::{Store, StoreError, decode, to_u64};

#[derive(sqlx::FromRow)]
struct UnitCount {
    variation: i64,
    multiple: bool,
    n: i64,
}

#[derive(sqlx::FromRow)]
struct UnitValues {
    variation: i64,
    pre_count: Option<i64>,
    pre_sum: Option<f64>,
    count: Option<i64>,
    sum: Option<f64>,
    converted_ms: Option<i64>,
}

/// A unit's metric value `y` and pre-exposure covariate `x`; `None` when the unit does not
/// count for this metric (a mean metric's unit without events).
fn unit_value(kind: MetricKind, r: &UnitValues) -> Option<(f64, f64)> {
    let pre_count = r.pre_count.unwrap_or(0);
    let pre_sum = r.pre_sum.unwrap_or(0.0);
    let count = r.count.unwrap_or(0);
    let sum = r.sum.unwrap_or(0.0);
    match kind {
        MetricKind::Conversion => Some((
            f64::from(u8::from(r.converted_ms.is_some())),
            f64::from(u8::from(pre_count > 0)),
        )),
        MetricKind::Count => Some((count as f64, pre_count as f64)),
        MetricKind::Sum => Some((sum, pre_sum)),
        MetricKind::Mean => (count > 0).then(|| {
            let x = if pre_count > 0 {
                pre_sum / pre_count as f64
            } else {
                0.0
            };
            (sum / count as f64, x)
        }),
    }
}

/// The `p`-th percentile (0–100) of `values` (nearest rank).
fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1).copied()
}

/// Per-variation sums for one metric.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    n: u64,
    sum: f64,
    sum_sq: f64,
    sum_x: f64,
    sum_x2: f64,
    sum_xy: f64,
    conversions: u64,
}

/// Accumulates the per-unit values of one metric per variation, capped as the metric says.
fn sums(metric: &Metric, rows: &[UnitValues], variations: usize) -> Vec<Sums> {
    let values: Vec<(usize, f64, f64)> = rows
        .iter()
        .filter_map(|r| {
            let v = usize::try_from(r.variation).ok()?;
            let (y, x) = unit_value(metric.kind, r)?;
            Some((v, y, x))
        })
        .collect();
    let cap = match metric.cap {
        Some(Cap::Value(c)) => Some(c),
        Some(Cap::Percentile(p)) => {
            let mut ys: Vec<f64> = values.iter().map(|(_, y, _)| *y).collect();
            percentile(&mut ys, p)
        }
        None => None,
    };
    let mut out = vec![Sums::default(); variations];
    for (v, y, x) in values {
        let Some(s) = out.get_mut(v) else { continue };
        let (y, x) = match cap {
            Some(c) => (y.min(c), x.min(c)),
            None => (y, x),
        };
        s.n += 1;
        s.sum += y;
        s.sum_sq += y * y;
        s.sum_x += x;
        s.sum_x2 += x * x;
        s.sum_xy += x * y;
        if y > 0.0 && metric.kind == MetricKind::Conversion {
            s.conversions += 1;
        }
    }
    out
}

fn method_of(m: AnalysisMethod) -> Method {
    match m {
        AnalysisMethod::FixedHorizon => Method::FixedHorizon,
        AnalysisMethod::Sequential => Method::Sequential { tau: None },
        AnalysisMethod::Bayesian => Method::Bayesian,
    }
}

/// Analyses one metric: per variation, control first.
fn analyse_metric(
    x: &Experiment,
    metric: &Metric,
    role: MetricRole,
    sums: &[Sums],
) -> (MetricResult, Option<Moments>) {
    let samples: Vec<Sample> = sums
        .iter()
        .map(|s| Sample::new(s.n, s.sum, s.sum_sq))
        .collect();
    // CUPED when some unit has a pre-exposure value; every variation needs 2 units.
    let has_pre = sums.iter().any(|s| s.sum_x2 > 0.0);
    let adjusted = if has_pre {
        let input: Vec<Cuped> = sums
            .iter()
            .zip(&samples)
            .map(|(s, y)| Cuped {
                y: *y,
                sum_x: s.sum_x,
                sum_x2: s.sum_x2,
                sum_xy: s.sum_xy,
            })
            .collect();
        cuped(&input)
            .ok()
            .filter(|a| a.theta != 0.0)
            .map(|a| a.adjusted)
    } else {
        None
    };
    let moments: Vec<Option<Moments>> = match &adjusted {
        Some(a) => a.iter().copied().map(Some).collect(),
        None => samples.iter().map(|s| s.moments().ok()).collect(),
    };
    let control = x.control;
    let method = method_of(x.method);
    let comparisons: Vec<Option<Comparison>> = moments
        .iter()
        .enumerate()
        .map(|(v, m)| {
            if v == control {
                return None;
            }
            let c = moments.get(control).copied().flatten()?;
            compare(&c, m.as_ref()?, method, x.alpha).ok()
        })
        .collect();
    // Holm across the treatments that have a p-value.
    let ps: Vec<(usize, f64)> = comparisons
        .iter()
        .enumerate()
        .filter_map(|(v, c)| Some((v, c.as_ref()?.relative.p_value?)))
        .collect();
    let adjusted_ps = holm(&ps.iter().map(|(_, p)| *p).collect::<Vec<_>>()).unwrap_or_default();
    let adjusted_p = |v: usize| {
        ps.iter()
            .position(|(w, _)| *w == v)
            .and_then(|i| adjusted_ps.get(i).copied())
    };
    let mut order: Vec<usize> = (0..sums.len()).collect();
    order.sort_by_key(|v| *v != control);
    let variations = order
        .into_iter()
        .map(|v| {
            let s = sums[v];
            let plain = samples[v].moments().ok();
            let vs_control = comparisons[v].as_ref().map(|c| {
                let up = metric.direction == Direction::Increase;
                let lift = c.relative.estimate;
                let p_adj = adjusted_p(v);
                let (chance, loss) = match c.posterior {
                    Some(post) if up => {
                        (Some(post.chance_to_beat_control), Some(post.expected_loss))
                    }
                    Some(post) => (
                        Some(1.0 - post.chance_to_beat_control),
                        Some(post.expected_loss_control),
                    ),
                    None => (None, None),
                };
                let significant = match (p_adj, chance) {
                    (Some(p), _) => p < x.alpha,
                    (None, Some(ch)) => ch > 1.0 - x.alpha || ch < x.alpha,
                    (None, None) => c.significant,
                };
                VsControl {
                    relative_lift: lift,
                    interval_low: c.relative.lower,
                    interval_high: c.relative.upper,
                    p_value: c.relative.p_value,
                    p_value_adjusted: p_adj,
                    chance_to_beat_control: chance,
                    expected_loss: loss,
                    significant,
                    better: if up { lift > 0.0 } else { lift < 0.0 },
                    cuped: adjusted.is_some(),
                }
            });
            VariationResult {
                variation: v,
                units: s.n,
                conversions: (metric.kind == MetricKind::Conversion).then_some(s.conversions),
                sum: s.sum,
                mean: plain.map_or(if s.n > 0 { s.sum / s.n as f64 } else { 0.0 }, |m| m.mean),
                variance: plain.map_or(0.0, |m| m.variance),
                vs_control,
            }
        })
        .collect();
    let control_moments = samples.get(control).and_then(|s| s.moments().ok());
    (
        MetricResult {
            metric: metric.key.clone(),
            kind: metric.kind,
            role,
            direction: metric.direction,
            variations,
        },
        control_moments,
    )
}

/// The units of an iteration per variation: (analysed, all assigned incl. multiple, excluded).
async fn unit_counts(
    c: &mut Conn<'_>,
    iteration_id: i64,
    variations: usize,
) -> Result<(Vec<u64>, Vec<u64>, u64), StoreError> {
    let rows: Vec<UnitCount> = c
        .fetch_all(
            "SELECT variation, multiple, COUNT(*) AS n FROM experiment_units
             WHERE iteration_id = $1 GROUP BY variation, multiple",
            args![iteration_id],
        )
        .await?;
    let mut analysed = vec![0u64; variations];
    let mut assigned = vec![0u64; variations];
    let mut excluded = 0;
    for r in rows {
        let n = to_u64(r.n);
        if r.multiple {
            excluded += n;
        }
        if let Some(slot) = usize::try_from(r.variation)
            .ok()
            .and_then(|v| assigned.get_mut(v))
        {
            *slot += n;
        }
        if !r.multiple
            && let Some(slot) = usize::try_from(r.variation)
                .ok()
                .and_then(|v| analysed.get_mut(v))
        {
            *slot += n;
        }
    }
    Ok((analysed, assigned, excluded))
}

fn srm_check(allocation: &Allocation, assigned: &[u64]) -> Option<SrmCheck> {
    let weights: Vec<f64> = allocation
        .weights
        .as_ref()?
        .iter()
        .map(|w| f64::from(*w))
        .collect();
    let total: f64 = weights.iter().sum();
    let result = srm(assigned, &weights).ok()?;
    Some(SrmCheck {
        p_value: result.p_value,
        mismatch: result.mismatch,
        observed: assigned.to_vec(),
        expected_shares: weights.iter().map(|w| w / total).collect(),
    })
}

impl Store {
    /// The results of an experiment's iteration (`iteration`, default the latest), with a
    /// sample-size estimate when `mde` (relative) is given.
    pub async fn experiment_results(
        &self,
        project: &str,
        environment: &str,
        key: &str,
        iteration: Option<u64>,
        mde: Option<f64>,
    ) -> Result<ExperimentResults, StoreError> {
        let loaded = self.load_experiment(project, environment, key).await?;
        let x = &loaded.view.experiment;
        let it: &IterationRow = match iteration {
            Some(n) => loaded
                .iterations
                .iter()
                .find(|i| to_u64(i.number) == n)
                .ok_or_else(|| {
                    StoreError::NotFound(format!("iteration {n} of experiment '{key}'"))
                })?,
            None => loaded
                .iterations
                .last()
                .ok_or_else(|| StoreError::Conflict {
                    message: format!(
                        "experiment '{key}' has not started: there are no results yet"
                    ),
                    blockers: Vec::new(),
                })?,
        };
        let allocation: Allocation = decode("iteration allocation", it.allocation.0.clone())?;
        let variations = allocation.variations.len();
        let mut tx = self.db().begin_read().await?;
        let mut c = tx.conn();
        let (units, assigned, excluded_units) = unit_counts(&mut c, it.id, variations).await?;
        let mut metrics = Vec::new();
        let mut primary_control = None;
        for (metric_key, role) in x.metric_keys() {
            let row: Option<(sqlx::types::Json<serde_json::Value>, i64)> = c
                .fetch_optional(
                    "SELECT definition, id FROM metrics WHERE project_id = $1 AND key = $2",
                    args![loaded.project_id, metric_key],
                )
                .await?;
            let Some((definition, metric_id)) = row else {
                continue;
            };
            let metric: Metric = decode("metric", definition.0)?;
            let rows: Vec<UnitValues> = c
                .fetch_all(
                    "SELECT u.variation, m.pre_count, m.pre_sum, m.count, m.sum, m.converted_ms
                     FROM experiment_units u
                     LEFT JOIN experiment_unit_metrics m
                       ON m.iteration_id = u.iteration_id AND m.unit = u.unit AND m.metric_id = $2
                     WHERE u.iteration_id = $1 AND NOT u.multiple",
                    args![it.id, metric_id],
                )
                .await?;
            let s = sums(&metric, &rows, variations);
            let (result, control) = analyse_metric(x, &metric, role, &s);
            if role == MetricRole::Primary {
                primary_control = control;
            }
            metrics.push(result);
        }
        tx.commit().await?;

        let sample_size = match (mde, primary_control) {
            (Some(mde), Some(base)) => {
                let end = it.ended_ms.unwrap_or_else(|| time_ms(now()));
                let days = ((end - it.started_ms) as f64 / 86_400_000.0).max(1e-6);
                let total: u64 = units.iter().sum();
                let daily = (total > 0).then(|| total as f64 / days);
                sample_size(&SampleSizeInput {
                    baseline_mean: base.mean,
                    baseline_variance: base.variance,
                    mde_relative: mde,
                    alpha: x.alpha,
                    power: 0.8,
                    variations: u32::try_from(variations.max(2)).unwrap_or(u32::MAX),
                    daily_units: daily,
                })
                .ok()
                .map(|plan| SampleSizeEstimate {
                    mde,
                    units_per_variation: plan.per_variation,
                    units_so_far: units.iter().copied().min().unwrap_or(0),
                    days_remaining: plan.days.map(|d| (d - days).max(0.0)),
                })
            }
            _ => None,
        };
        Ok(ExperimentResults {
            experiment: x.key.clone(),
            iteration: to_u64(it.number),
            status: loaded.view.status,
            method: x.method,
            alpha: x.alpha,
            control: x.control,
            srm: srm_check(&allocation, &assigned),
            units,
            excluded_units,
            metrics,
            sample_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentile() {
        let mut v = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&mut v, 80.0), Some(4.0));
        assert_eq!(percentile(&mut v, 99.0), Some(5.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}
