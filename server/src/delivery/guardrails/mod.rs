//! Guardrails of release plans: checks run while a plan ramps whose breach rolls the plan
//! back by itself.
//!
//! - [`Guardrail::Metric`]: a metric of the project's experimentation metrics (an `error`
//!   event count or rate, a latency value…) per unit, comparing the units exposed to the new
//!   variation with those exposed to the old one **since the current step began**, with the
//!   one-sided always-valid test of [`vexil_stats::guardrail`] (checked every interval without
//!   inflating false alarms), a minimum sample per variation and a tolerated relative
//!   regression;
//! - [`Guardrail::Prometheus`]: a PromQL instant query against the configured Prometheus
//!   (`VEXIL_PROMETHEUS_URL`) whose every series must stay at or below a maximum.
//!
//! This module is the pure judgement ([`judge_metric`], [`judge_prometheus`]) and the two
//! measurements ([`metric`]: aggregates of the stored events, [`prometheus`]: the HTTP
//! query). The plan worker that runs them and rolls back lives with the plans
//! (`plans/guard.rs`); the statistics and their references are in `docs/statistics.md`.

pub mod metric;
pub mod prometheus;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use vexil_stats::{GuardrailTest, Sample, StatsError};

use crate::store::StoreError;

/// Units needed on each variation before a metric guardrail reads, unless said otherwise.
pub const DEFAULT_MIN_UNITS: u64 = 100;
/// Default false-alarm rate of a metric guardrail over all the checks of a step.
pub const DEFAULT_ALPHA: f64 = 0.05;

fn default_min_units() -> u64 {
    DEFAULT_MIN_UNITS
}

fn default_alpha() -> f64 {
    DEFAULT_ALPHA
}

/// One guardrail of a release plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Guardrail {
    /// A metric of the project, compared between the units on the new variation and those
    /// on the old one during each step. Its `direction` says which way is a regression
    /// (`decrease` is good: an increase regresses).
    Metric {
        /// The metric's key (see `/api/v1/projects/{project}/metrics`).
        metric: String,
        /// The tolerated relative regression (0.1: up to 10 % worse is accepted).
        max_regression: f64,
        /// Units each variation needs in the step before the test reads (default 100).
        #[serde(default = "default_min_units")]
        min_units: u64,
        /// False-alarm rate over all the checks of a step (default 0.05).
        #[serde(default = "default_alpha")]
        alpha: f64,
        /// Mixture scale of the sequential test, relative (default 0.5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tau: Option<f64>,
    },
    /// A PromQL instant query against the configured Prometheus: every series it returns
    /// must stay at or below `max`.
    Prometheus {
        /// The PromQL expression.
        query: String,
        /// The highest acceptable value.
        max: f64,
    },
}

impl Guardrail {
    /// A short name for logs, reasons and evidence.
    pub fn name(&self) -> String {
        match self {
            Self::Metric { metric, .. } => format!("metric '{metric}'"),
            Self::Prometheus { query, .. } => format!("prometheus '{query}'"),
        }
    }

    /// Checks the fields that need no lookup, naming the offending one.
    pub fn validate(&self, i: usize) -> Result<(), StoreError> {
        let field = |f: &str| format!("guardrails[{i}].{f}");
        match self {
            Self::Metric {
                metric,
                max_regression,
                min_units,
                alpha,
                tau,
            } => {
                if metric.is_empty() {
                    return Err(StoreError::invalid(
                        field("metric"),
                        "required",
                        "name a metric",
                    ));
                }
                if !(max_regression.is_finite() && *max_regression >= 0.0) {
                    return Err(StoreError::invalid(
                        field("max_regression"),
                        "range",
                        "a finite relative regression, 0 or more (0.1 = 10 %)",
                    ));
                }
                if *min_units < 2 {
                    return Err(StoreError::invalid(
                        field("min_units"),
                        "range",
                        "at least 2 units per variation",
                    ));
                }
                if !(alpha.is_finite() && *alpha > 0.0 && *alpha <= 0.5) {
                    return Err(StoreError::invalid(
                        field("alpha"),
                        "range",
                        "a false-alarm rate above 0 and at most 0.5",
                    ));
                }
                if tau.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
                    return Err(StoreError::invalid(
                        field("tau"),
                        "range",
                        "a finite, positive mixture scale",
                    ));
                }
            }
            Self::Prometheus { query, max } => {
                if query.trim().is_empty() || query.len() > 4_096 {
                    return Err(StoreError::invalid(
                        field("query"),
                        "length",
                        "a PromQL expression of 1 to 4096 bytes",
                    ));
                }
                if !max.is_finite() {
                    return Err(StoreError::invalid(
                        field("max"),
                        "finite",
                        "a finite maximum",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What one check of one guardrail found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within bounds.
    Healthy,
    /// Out of bounds: the plan rolls back.
    Breached,
    /// Too few units (or no variation yet) to read; checked again next time.
    InsufficientData,
    /// The measurement failed (Prometheus unreachable…); checked again next time.
    Error,
}

/// One guardrail's reading at a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reading {
    /// The guardrail, by [`Guardrail::name`].
    pub guardrail: String,
    /// The verdict.
    pub verdict: Verdict,
    /// In words.
    pub message: String,
    /// The numbers behind the verdict: for a metric `control_units`, `treatment_units`,
    /// `control_mean`, `treatment_mean`, `regression`, `std_error`, `max_regression`,
    /// `p_value`, `log_likelihood_ratio`, `alpha`; for Prometheus `value` and `max`.
    pub numbers: BTreeMap<String, f64>,
}

/// The readings of one check of a plan's guardrails: the plan's last check, or the breach
/// that rolled it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    /// When the check ran.
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
    /// The step in force.
    pub step: i64,
    /// Units and events counted from this time (the start of the step).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// One reading per guardrail, in the plan's order.
    pub readings: Vec<Reading>,
}

impl Evidence {
    /// The first breached reading, if any.
    pub fn breach(&self) -> Option<&Reading> {
        self.readings
            .iter()
            .find(|r| r.verdict == Verdict::Breached)
    }
}

/// Judges a metric guardrail on the per-variation sums of the step (`control`: units on the
/// old variation, `treatment`: on the new one).
pub fn judge_metric(
    name: String,
    control: &Sample,
    treatment: &Sample,
    test: &GuardrailTest,
    min_units: u64,
) -> Reading {
    let mut numbers = BTreeMap::from([
        ("control_units".to_owned(), control.n as f64),
        ("treatment_units".to_owned(), treatment.n as f64),
        ("max_regression".to_owned(), test.threshold),
        ("alpha".to_owned(), test.alpha),
    ]);
    let short = control.n.min(treatment.n);
    if short < min_units.max(2) {
        return Reading {
            guardrail: name,
            verdict: Verdict::InsufficientData,
            message: format!(
                "{} units on the old variation and {} on the new one: {min_units} needed on each",
                control.n, treatment.n
            ),
            numbers,
        };
    }
    let read = control
        .moments()
        .and_then(|c| treatment.moments().map(|t| (c, t)))
        .and_then(|(c, t)| vexil_stats::guardrail(&c, &t, test));
    match read {
        Ok(r) => {
            numbers.extend([
                ("control_mean".to_owned(), r.control_mean),
                ("treatment_mean".to_owned(), r.treatment_mean),
                ("regression".to_owned(), r.regression),
                ("std_error".to_owned(), r.std_error),
                ("p_value".to_owned(), r.p_value),
                ("log_likelihood_ratio".to_owned(), r.log_likelihood_ratio),
            ]);
            let (verdict, message) = if r.breached {
                (
                    Verdict::Breached,
                    format!(
                        "{:+.1} % on the new variation ({:.4} against {:.4}), more than the {:.1} % \
                         tolerated (always-valid p = {:.2e} < α = {})",
                        100.0 * r.regression,
                        r.treatment_mean,
                        r.control_mean,
                        100.0 * test.threshold,
                        r.p_value,
                        test.alpha
                    ),
                )
            } else {
                (
                    Verdict::Healthy,
                    format!(
                        "{:+.1} % on the new variation, not shown to exceed {:.1} % (p = {:.3})",
                        100.0 * r.regression,
                        100.0 * test.threshold,
                        r.p_value
                    ),
                )
            };
            Reading {
                guardrail: name,
                verdict,
                message,
                numbers,
            }
        }
        // No event on the old variation yet, or nothing varies: nothing to compare.
        Err(
            e @ (StatsError::NonPositiveControlMean(_)
            | StatsError::ZeroVariance
            | StatsError::TooFewUnits { .. }),
        ) => Reading {
            guardrail: name,
            verdict: Verdict::InsufficientData,
            message: e.to_string(),
            numbers,
        },
        Err(e) => Reading {
            guardrail: name,
            verdict: Verdict::Error,
            message: e.to_string(),
            numbers,
        },
    }
}

/// Judges a Prometheus guardrail on the highest value its query returned (`Ok(None)`: no
/// series).
pub fn judge_prometheus(name: String, max: f64, value: Result<Option<f64>, String>) -> Reading {
    let mut numbers = BTreeMap::from([("max".to_owned(), max)]);
    let (verdict, message) = match value {
        Ok(Some(v)) => {
            numbers.insert("value".to_owned(), v);
            if v > max {
                (Verdict::Breached, format!("{v} is above the maximum {max}"))
            } else {
                (Verdict::Healthy, format!("{v} is within the maximum {max}"))
            }
        }
        Ok(None) => (
            Verdict::InsufficientData,
            "the query returned no series".to_owned(),
        ),
        Err(e) => (Verdict::Error, e),
    };
    Reading {
        guardrail: name,
        verdict,
        message,
        numbers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_stats::Direction;

    fn test(threshold: f64) -> GuardrailTest {
        GuardrailTest {
            threshold,
            direction: Direction::Increase,
            alpha: 0.05,
            tau: vexil_stats::DEFAULT_GUARDRAIL_TAU,
        }
    }

    #[test]
    fn five_times_the_errors_breach_with_the_numbers() {
        let r = judge_metric(
            "metric 'errors'".into(),
            &Sample::conversions(2_000, 40),
            &Sample::conversions(2_000, 200),
            &test(0.2),
            100,
        );
        assert_eq!(r.verdict, Verdict::Breached, "{r:?}");
        assert!((r.numbers["regression"] - 4.0).abs() < 1e-9);
        assert_eq!(r.numbers["treatment_units"], 2_000.0);
        assert!(r.numbers["p_value"] < 0.05);
        assert!(r.message.contains("+400.0 %"), "{}", r.message);
    }

    #[test]
    fn equal_rates_are_healthy_and_small_samples_wait() {
        let same = judge_metric(
            "m".into(),
            &Sample::conversions(2_000, 40),
            &Sample::conversions(2_000, 41),
            &test(0.2),
            100,
        );
        assert_eq!(same.verdict, Verdict::Healthy, "{same:?}");
        // Five times the errors, but 99 units on the new variation: not yet.
        let few = judge_metric(
            "m".into(),
            &Sample::conversions(2_000, 40),
            &Sample::conversions(99, 50),
            &test(0.2),
            100,
        );
        assert_eq!(few.verdict, Verdict::InsufficientData);
        assert!(!few.numbers.contains_key("regression"));
        // No error on the old variation yet: no relative change to read.
        let none = judge_metric(
            "m".into(),
            &Sample::conversions(500, 0),
            &Sample::conversions(500, 30),
            &test(0.2),
            100,
        );
        assert_eq!(none.verdict, Verdict::InsufficientData);
    }

    #[test]
    fn prometheus_breaches_above_its_maximum_only() {
        let over = judge_prometheus("p".into(), 0.5, Ok(Some(0.7)));
        assert_eq!(over.verdict, Verdict::Breached);
        assert_eq!(over.numbers["value"], 0.7);
        assert_eq!(
            judge_prometheus("p".into(), 0.5, Ok(Some(0.5))).verdict,
            Verdict::Healthy
        );
        assert_eq!(
            judge_prometheus("p".into(), 0.5, Ok(None)).verdict,
            Verdict::InsufficientData
        );
        assert_eq!(
            judge_prometheus("p".into(), 0.5, Err("down".into())).verdict,
            Verdict::Error
        );
    }

    #[test]
    fn guardrails_are_validated_by_field() {
        let ok = Guardrail::Metric {
            metric: "errors".into(),
            max_regression: 0.1,
            min_units: 100,
            alpha: 0.05,
            tau: None,
        };
        assert!(ok.validate(0).is_ok());
        let bad = Guardrail::Metric {
            metric: "errors".into(),
            max_regression: -0.1,
            min_units: 100,
            alpha: 0.05,
            tau: None,
        };
        assert!(bad.validate(0).is_err());
        let bad = Guardrail::Prometheus {
            query: " ".into(),
            max: 1.0,
        };
        assert!(bad.validate(1).is_err());
        let json: Guardrail =
            serde_json::from_value(serde_json::json!({"kind": "metric", "metric": "errors",
                "max_regression": 0.2}))
            .expect("defaults apply");
        assert_eq!(
            json,
            Guardrail::Metric {
                metric: "errors".into(),
                max_regression: 0.2,
                min_units: DEFAULT_MIN_UNITS,
                alpha: DEFAULT_ALPHA,
                tau: None
            }
        );
    }
}
