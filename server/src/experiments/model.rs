//! The documents of the experiments API: metrics, experiments, iterations and results.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use vexil_schema::validate::{FieldError, ValidationErrors};

/// What a metric measures per unit (context key), from the unit's custom events with the
/// metric's `event_key` inside its window after the unit's first exposure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// 1 if the unit sent the event at least once, else 0: the conversion rate.
    Conversion,
    /// How many times the unit sent the event.
    Count,
    /// The sum of the event's values.
    Sum,
    /// The mean of the event's values, over the units that sent the event at least once.
    Mean,
}

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Up is good (conversions, revenue).
    #[default]
    Increase,
    /// Down is good (latency, errors).
    Decrease,
}

/// How outliers are capped: each unit's value is limited to a fixed value or to the given
/// percentile of all units' values in the iteration (computed per analysis).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Cap {
    /// Cap each unit's value at this value.
    Value(f64),
    /// Cap each unit's value at this percentile (0 < p < 100) of the units' values.
    Percentile(f64),
}

/// A metric of a project. `key` is its name in experiments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Metric {
    /// Key: letters, digits, `-`, `_`, `.`; 1 to 256 bytes.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// What is measured.
    pub kind: MetricKind,
    /// The custom event (`track(event_key, …)`) it counts.
    pub event_key: String,
    /// Events count for a unit only within this many hours after its first exposure;
    /// absent: until the iteration ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_hours: Option<u32>,
    /// Which way is better.
    #[serde(default)]
    pub direction: Direction,
    /// Optional capping of outliers (not for conversion metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Cap>,
}

impl Metric {
    /// The window in milliseconds, if any.
    pub fn window_ms(&self) -> Option<i64> {
        self.window_hours.map(|h| i64::from(h) * 3_600_000)
    }

    /// Checks the fields, naming each one that is wrong.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        check_key(&mut errors, "key", &self.key);
        check_key(&mut errors, "event_key", &self.event_key);
        if self.name.trim().is_empty() {
            errors.push(field("name", "required", "a name is required"));
        }
        if self.window_hours == Some(0) {
            errors.push(field(
                "window_hours",
                "range",
                "the window must be at least one hour (omit it for no window)",
            ));
        }
        match self.cap {
            Some(_) if self.kind == MetricKind::Conversion => errors.push(field(
                "cap",
                "cap_conversion",
                "a conversion metric is 0 or 1 per unit: it cannot be capped",
            )),
            Some(Cap::Value(v)) if !v.is_finite() => errors.push(field(
                "cap.value",
                "range",
                "the cap must be a finite number",
            )),
            Some(Cap::Percentile(p)) if !(p > 0.0 && p < 100.0) => errors.push(field(
                "cap.percentile",
                "range",
                "the percentile must lie strictly between 0 and 100",
            )),
            _ => {}
        }
        done(errors)
    }
}

/// A metric with its version and times. `ETag`: `version`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricView {
    /// The metric.
    pub metric: Metric,
    /// Version, bumped by every change.
    pub version: u64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// How results are analysed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisMethod {
    /// Frequentist, fixed horizon: look once, at the planned sample size.
    #[default]
    FixedHorizon,
    /// Frequentist, sequential: always-valid intervals, safe to look at any time.
    Sequential,
    /// Bayesian: chance to beat control and expected loss.
    Bayesian,
}

fn default_alpha() -> f64 {
    0.05
}

/// An experiment on one flag in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Experiment {
    /// Key, unique in the environment.
    pub key: String,
    /// Display name.
    pub name: String,
    /// What is expected to happen, and why.
    #[serde(default)]
    pub hypothesis: String,
    /// The flag whose variations are compared (its rollout marked `experiment` assigns them).
    pub flag: String,
    /// The control variation's index.
    #[serde(default)]
    pub control: usize,
    /// The metric that decides the experiment.
    pub primary_metric: String,
    /// Further metrics to watch.
    #[serde(default)]
    pub secondary_metrics: Vec<String>,
    /// Metrics that must not get worse.
    #[serde(default)]
    pub guardrail_metrics: Vec<String>,
    /// The analysis.
    #[serde(default)]
    pub method: AnalysisMethod,
    /// Significance level (two-sided), 0 < alpha < 0.5; default 0.05.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

impl Experiment {
    /// Every metric key, primary first, without repeats.
    pub fn metric_keys(&self) -> Vec<(&str, MetricRole)> {
        let mut out: Vec<(&str, MetricRole)> = vec![(&self.primary_metric, MetricRole::Primary)];
        let rest = self
            .secondary_metrics
            .iter()
            .map(|m| (m.as_str(), MetricRole::Secondary))
            .chain(
                self.guardrail_metrics
                    .iter()
                    .map(|m| (m.as_str(), MetricRole::Guardrail)),
            );
        for (k, role) in rest {
            if !out.iter().any(|(o, _)| *o == k) {
                out.push((k, role));
            }
        }
        out
    }

    /// Checks the fields that need no database.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        check_key(&mut errors, "key", &self.key);
        check_key(&mut errors, "flag", &self.flag);
        check_key(&mut errors, "primary_metric", &self.primary_metric);
        if self.name.trim().is_empty() {
            errors.push(field("name", "required", "a name is required"));
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            errors.push(field(
                "alpha",
                "range",
                "alpha must lie strictly between 0 and 0.5",
            ));
        }
        done(errors)
    }
}

/// Where an experiment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentStatus {
    /// Defined, not started: exposures are not counted.
    Draft,
    /// Counting exposures and events.
    Running,
    /// Stopped: results are frozen.
    Stopped,
}

impl ExperimentStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentStatus::Draft => "draft",
            ExperimentStatus::Running => "running",
            ExperimentStatus::Stopped => "stopped",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(ExperimentStatus::Draft),
            "running" => Some(ExperimentStatus::Running),
            "stopped" => Some(ExperimentStatus::Stopped),
            _ => None,
        }
    }
}

/// The allocation an iteration runs under: the flag's variations and the weights of its
/// experiment rollout (the fallthrough's or a rule's rollout marked `experiment`, else the
/// fallthrough's rollout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Allocation {
    /// The flag's variation values.
    pub variations: Vec<serde_json::Value>,
    /// Weight per variation index, in thousandths of a percent (summing to 100,000); absent
    /// when the flag serves no rollout, in which case there is no SRM check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<u32>>,
}

/// One iteration of an experiment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Iteration {
    /// 1, 2, …
    pub number: u64,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When it ended (absent while it runs).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ended_at: Option<OffsetDateTime>,
    /// The allocation it runs under.
    pub allocation: Allocation,
    /// Why it started: `start` or `allocation_changed`.
    pub reason: String,
}

/// An experiment with its state. `ETag`: `version`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExperimentView {
    /// The experiment.
    pub experiment: Experiment,
    /// Where it stands.
    pub status: ExperimentStatus,
    /// Version, bumped by every change (including start and stop).
    pub version: u64,
    /// Its iterations, oldest first.
    pub iterations: Vec<Iteration>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What role a metric plays in an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricRole {
    /// The metric that decides.
    Primary,
    /// Watched.
    Secondary,
    /// Must not get worse.
    Guardrail,
}

/// The sample-ratio-mismatch check: are units split the way the weights say?
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SrmCheck {
    /// Chi-squared test p-value of the observed split against the configured weights.
    pub p_value: f64,
    /// `true` when p < 0.001: the assignment is broken and no result can be trusted.
    pub mismatch: bool,
    /// Units per variation index.
    pub observed: Vec<u64>,
    /// Expected share per variation index (weights / 100,000).
    pub expected_shares: Vec<f64>,
}

/// One variation of a metric's results.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VariationResult {
    /// Variation index.
    pub variation: usize,
    /// Units analysed (exposed to this variation only).
    pub units: u64,
    /// Units that converted (conversion metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversions: Option<u64>,
    /// Sum of the per-unit values (after capping).
    pub sum: f64,
    /// Mean per unit: the conversion rate for conversion metrics.
    pub mean: f64,
    /// Sample variance of the per-unit values.
    pub variance: f64,
    /// Comparison with control (absent for control itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_control: Option<VsControl>,
}

/// A treatment compared with control.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VsControl {
    /// Relative lift of the mean: treatment / control − 1.
    pub relative_lift: f64,
    /// Lower end of the interval for the relative lift (1 − alpha, delta method; always-valid
    /// for the sequential method; credible interval for Bayesian).
    pub interval_low: f64,
    /// Upper end of the interval.
    pub interval_high: f64,
    /// Two-sided p-value (frequentist methods).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The p-value after Holm's correction across the treatments of this metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value_adjusted: Option<f64>,
    /// Chance that the treatment beats control, in the metric's good direction (Bayesian).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chance_to_beat_control: Option<f64>,
    /// Expected relative loss of choosing the treatment (Bayesian).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_loss: Option<f64>,
    /// Whether the difference is significant (adjusted p < alpha, or for Bayesian a chance
    /// to beat control above 1 − alpha or below alpha).
    pub significant: bool,
    /// Whether the treatment is better in the metric's direction.
    pub better: bool,
    /// Whether CUPED (pre-exposure values) reduced the variance.
    pub cuped: bool,
}

/// One metric's results.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricResult {
    /// The metric's key.
    pub metric: String,
    /// What it measures.
    pub kind: MetricKind,
    /// Its role.
    pub role: MetricRole,
    /// Which way is better.
    pub direction: Direction,
    /// Per variation, control first.
    pub variations: Vec<VariationResult>,
}

/// How many units a chosen minimum detectable effect needs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SampleSizeEstimate {
    /// The minimum detectable effect asked for (relative, e.g. 0.05 for +5 %).
    pub mde: f64,
    /// Units needed per variation (power 0.8, the experiment's alpha) on the primary metric.
    pub units_per_variation: u64,
    /// Units so far in the smallest variation.
    pub units_so_far: u64,
    /// Days still needed at the rate units arrived so far (absent before any unit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_remaining: Option<f64>,
}

/// The results of one iteration.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExperimentResults {
    /// The experiment's key.
    pub experiment: String,
    /// The iteration analysed.
    pub iteration: u64,
    /// The experiment's status.
    pub status: ExperimentStatus,
    /// The analysis.
    pub method: AnalysisMethod,
    /// Its significance level.
    pub alpha: f64,
    /// The control variation's index.
    pub control: usize,
    /// The SRM check (absent when the allocation has no weights). When `mismatch` is true
    /// the results below must not be trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srm: Option<SrmCheck>,
    /// Units per variation index (units exposed to several variations excluded).
    pub units: Vec<u64>,
    /// Units exposed to more than one variation: excluded from every analysis.
    pub excluded_units: u64,
    /// Per metric, primary first.
    pub metrics: Vec<MetricResult>,
    /// Present when `mde` was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_size: Option<SampleSizeEstimate>,
}

fn field(path: &str, rule: &'static str, message: &str) -> FieldError {
    FieldError {
        path: path.to_owned(),
        rule,
        message: message.to_owned(),
    }
}

fn check_key(errors: &mut Vec<FieldError>, path: &str, key: &str) {
    let ok = !key.is_empty()
        && key.len() <= vexil_schema::events::MAX_EVENT_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        errors.push(field(
            path,
            "key",
            "must be 1 to 256 bytes of letters, digits, '-', '_' or '.'",
        ));
    }
}

fn done(errors: Vec<FieldError>) -> Result<(), ValidationErrors> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors { errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_validation_names_fields() {
        let mut m = Metric {
            key: "buy".into(),
            name: "Buy".into(),
            description: String::new(),
            kind: MetricKind::Conversion,
            event_key: "purchase".into(),
            window_hours: Some(24),
            direction: Direction::Increase,
            cap: None,
        };
        assert!(m.validate().is_ok());
        m.cap = Some(Cap::Value(10.0));
        let e = m.validate().unwrap_err();
        assert_eq!(e.errors[0].path, "cap");
        m.kind = MetricKind::Sum;
        m.cap = Some(Cap::Percentile(100.0));
        m.event_key = "bad key".into();
        let paths: Vec<_> = m
            .validate()
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["event_key", "cap.percentile"]);
    }

    #[test]
    fn metric_keys_put_primary_first_without_repeats() {
        let e = Experiment {
            key: "x".into(),
            name: "X".into(),
            hypothesis: String::new(),
            flag: "f".into(),
            control: 0,
            primary_metric: "a".into(),
            secondary_metrics: vec!["b".into(), "a".into()],
            guardrail_metrics: vec!["c".into(), "b".into()],
            method: AnalysisMethod::FixedHorizon,
            alpha: 0.05,
        };
        let keys: Vec<_> = e.metric_keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }
}
