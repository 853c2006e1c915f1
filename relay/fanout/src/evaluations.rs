//! Evaluation counts by environment, flag, variation and reason, for the OFREP endpoints
//! (server and relay) and the control plane's `/api/v1/evaluate`.
//!
//! Remote evaluation is the hot path of a feature-flag service: one request may evaluate
//! every flag of an environment. Going through the `metrics` facade would cost a label set
//! per evaluation (strings cloned and hashed by the recorder), so counts go into plain atomics
//! held per flag instead, and [`EvaluationCounts::render`] writes them in the Prometheus text
//! format when `/metrics` is scraped. Recording is two hash lookups under a read lock (the
//! environment, then the flag) and one relaxed atomic add; nothing is allocated except the
//! first time a flag is seen.
//!
//! Cardinality is bounded by what the environments hold: a flag key that names no flag (any
//! caller can send one) is counted per environment under [`UNKNOWN_FLAG`], never as a series of
//! its own. A flag deleted later keeps its series until the process restarts.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use vexil_eval::{EvalReason, Evaluation};
use vexil_schema::stream::EnvironmentId;

/// Counter: evaluations served, labelled `environment`, `flag`, `variation` (the variation
/// index, `none` on error, `other` past [`MAX_VARIATIONS`]) and `reason` (`OFF`,
/// `PREREQUISITE_FAILED`, `TARGET_MATCH`, `RULE_MATCH`, `FALLTHROUGH`, `ERROR`).
pub const EVALUATIONS: &str = "vexil_flag_evaluations_total";

/// The `flag` label of evaluations of keys that name no flag of the environment.
pub const UNKNOWN_FLAG: &str = "__unknown__";

/// Variations counted one by one; higher indexes share the `other` label.
pub const MAX_VARIATIONS: usize = 32;

/// The reasons that serve a variation, in label order.
const SERVED_REASONS: [&str; 5] = [
    "OFF",
    "PREREQUISITE_FAILED",
    "TARGET_MATCH",
    "RULE_MATCH",
    "FALLTHROUGH",
];

/// The counts of one flag: `[variation slot][served reason]`, then one for errors. Slots
/// are sized from the flag's variation count when first seen (a flag that gains variations
/// later counts the new ones under `other`).
#[derive(Debug)]
struct FlagCounts {
    /// `slots × SERVED_REASONS.len()` counters; the last slot is `other`.
    served: Box<[AtomicU64]>,
    errors: AtomicU64,
}

impl FlagCounts {
    fn new(variations: usize) -> Self {
        let slots = variations.clamp(1, MAX_VARIATIONS) + 1;
        Self {
            served: (0..slots * SERVED_REASONS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            errors: AtomicU64::new(0),
        }
    }

    fn slots(&self) -> usize {
        self.served.len() / SERVED_REASONS.len()
    }

    fn record(&self, eval: &Evaluation<'_>) {
        let reason = match eval.reason {
            EvalReason::Off => 0,
            EvalReason::PrerequisiteFailed { .. } => 1,
            EvalReason::TargetMatch => 2,
            EvalReason::RuleMatch { .. } => 3,
            EvalReason::Fallthrough => 4,
            // Errors, and any reason a newer engine adds, count as errors (no variation).
            _ => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Some(variation) = eval.variation else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let slot = variation.min(self.slots() - 1);
        self.served[slot * SERVED_REASONS.len() + reason].fetch_add(1, Ordering::Relaxed);
    }
}

/// The counts of one environment.
#[derive(Debug, Default)]
pub struct EnvironmentCounts {
    label: String,
    flags: RwLock<HashMap<Box<str>, Arc<FlagCounts>>>,
    unknown: AtomicU64,
}

impl EnvironmentCounts {
    /// Counts one evaluation of `flag`. `variations` is the flag's variation count (`None`
    /// when the key names no flag: counted under [`UNKNOWN_FLAG`]).
    pub fn record(&self, flag: &str, variations: Option<usize>, eval: &Evaluation<'_>) {
        let Some(variations) = variations else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still whole.
        let found = self
            .flags
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(flag)
            .cloned();
        let counts = match found {
            Some(c) => c,
            None => self
                .flags
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(flag.into())
                .or_insert_with(|| Arc::new(FlagCounts::new(variations)))
                .clone(),
        };
        counts.record(eval);
    }

    /// Evaluations of `flag` so far, per (variation label, reason), non-zero only.
    pub fn flag_counts(&self, flag: &str) -> Vec<(String, &'static str, u64)> {
        let map = self.flags.read().unwrap_or_else(|p| p.into_inner());
        let Some(c) = map.get(flag) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        each_count(c, |variation, reason, n| out.push((variation, reason, n)));
        out
    }
}

/// Calls `f(variation label, reason, count)` for every non-zero counter of `c`.
fn each_count(c: &FlagCounts, mut f: impl FnMut(String, &'static str, u64)) {
    let slots = c.slots();
    for slot in 0..slots {
        for (r, reason) in SERVED_REASONS.iter().enumerate() {
            let n = c.served[slot * SERVED_REASONS.len() + r].load(Ordering::Relaxed);
            if n > 0 {
                let variation = if slot + 1 == slots {
                    "other".to_owned()
                } else {
                    slot.to_string()
                };
                f(variation, reason, n);
            }
        }
    }
    let errors = c.errors.load(Ordering::Relaxed);
    if errors > 0 {
        f("none".to_owned(), "ERROR", errors);
    }
}

/// Every environment's evaluation counts (see the module docs).
#[derive(Debug, Default)]
pub struct EvaluationCounts {
    environments: RwLock<HashMap<EnvironmentId, Arc<EnvironmentCounts>>>,
}

impl EvaluationCounts {
    /// The process-wide counts, shared like the Prometheus recorder is.
    pub fn global() -> &'static EvaluationCounts {
        static GLOBAL: OnceLock<EvaluationCounts> = OnceLock::new();
        GLOBAL.get_or_init(EvaluationCounts::default)
    }

    /// The counts of `env` (created on first use). Hold it for the evaluations of one
    /// request.
    pub fn environment(&self, env: &EnvironmentId) -> Arc<EnvironmentCounts> {
        if let Some(c) = self
            .environments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(env)
        {
            return Arc::clone(c);
        }
        let mut map = self.environments.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(env.clone()).or_insert_with(|| {
            Arc::new(EnvironmentCounts {
                label: env.to_string(),
                ..EnvironmentCounts::default()
            })
        }))
    }

    /// Appends the counts to `out` in the Prometheus text exposition format (one `# TYPE`
    /// line, then one sample per non-zero series), in a stable order.
    pub fn render(&self, out: &mut String) {
        let envs: Vec<Arc<EnvironmentCounts>> = {
            let map = self.environments.read().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<_> = map.values().cloned().collect();
            v.sort_by(|a, b| a.label.cmp(&b.label));
            v
        };
        let _ = writeln!(
            out,
            "# HELP {EVALUATIONS} Flag evaluations served (OFREP and /api/v1/evaluate) by flag, variation and reason."
        );
        let _ = writeln!(out, "# TYPE {EVALUATIONS} counter");
        for env in envs {
            let env_label = escape(&env.label);
            let flags: Vec<(Box<str>, Arc<FlagCounts>)> = {
                let map = env.flags.read().unwrap_or_else(|p| p.into_inner());
                let mut v: Vec<_> = map.iter().map(|(k, c)| (k.clone(), c.clone())).collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            };
            for (flag, counts) in flags {
                let flag = escape(&flag);
                each_count(&counts, |variation, reason, n| {
                    let _ = writeln!(
                        out,
                        "{EVALUATIONS}{{environment=\"{env_label}\",flag=\"{flag}\",variation=\"{variation}\",reason=\"{reason}\"}} {n}"
                    );
                });
            }
            let unknown = env.unknown.load(Ordering::Relaxed);
            if unknown > 0 {
                let _ = writeln!(
                    out,
                    "{EVALUATIONS}{{environment=\"{env_label}\",flag=\"{UNKNOWN_FLAG}\",variation=\"none\",reason=\"ERROR\"}} {unknown}"
                );
            }
        }
    }
}

/// A label value escaped for the text format (flag keys cannot hold these, but the format
/// is the contract).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vexil_schema::reason::ErrorKind;

    fn served(variation: usize, reason: EvalReason<'static>) -> Evaluation<'static> {
        static V: OnceLock<serde_json::Value> = OnceLock::new();
        Evaluation {
            value: Some(V.get_or_init(|| json!(true))),
            variation: Some(variation),
            reason,
            in_experiment: false,
            split: false,
        }
    }

    #[test]
    fn counts_by_flag_variation_and_reason_and_renders_them() {
        let counts = EvaluationCounts::default();
        let env = EnvironmentId::parse("shop/prod").unwrap();
        let e = counts.environment(&env);
        for _ in 0..3 {
            e.record("checkout", Some(2), &served(1, EvalReason::Fallthrough));
        }
        e.record("checkout", Some(2), &served(0, EvalReason::Off));
        e.record(
            "checkout",
            Some(2),
            &Evaluation::error(ErrorKind::Malformed),
        );
        // Past the variation count seen first: `other`.
        e.record("checkout", Some(2), &served(5, EvalReason::TargetMatch));
        e.record("nope", None, &Evaluation::error(ErrorKind::FlagNotFound));
        e.record("nope-2", None, &Evaluation::error(ErrorKind::FlagNotFound));

        let mut got = e.flag_counts("checkout");
        got.sort();
        assert_eq!(
            got,
            vec![
                ("0".to_owned(), "OFF", 1),
                ("1".to_owned(), "FALLTHROUGH", 3),
                ("none".to_owned(), "ERROR", 1),
                ("other".to_owned(), "TARGET_MATCH", 1),
            ]
        );
        let mut text = String::new();
        counts.render(&mut text);
        assert!(text.contains(
            "vexil_flag_evaluations_total{environment=\"shop/prod\",flag=\"checkout\",variation=\"1\",reason=\"FALLTHROUGH\"} 3\n"
        ), "{text}");
        assert!(text.contains(
            "vexil_flag_evaluations_total{environment=\"shop/prod\",flag=\"__unknown__\",variation=\"none\",reason=\"ERROR\"} 2\n"
        ), "{text}");
        assert!(
            !text.contains("nope"),
            "unknown keys make no series: {text}"
        );
        assert_eq!(text.matches("# TYPE").count(), 1);
    }

    #[test]
    fn the_same_environment_handle_is_shared() {
        let counts = EvaluationCounts::default();
        let env = EnvironmentId::parse("a/b").unwrap();
        counts
            .environment(&env)
            .record("f", Some(2), &served(0, EvalReason::Fallthrough));
        counts
            .environment(&env)
            .record("f", Some(2), &served(0, EvalReason::Fallthrough));
        assert_eq!(
            counts.environment(&env).flag_counts("f"),
            vec![("0".to_owned(), "FALLTHROUGH", 2)]
        );
    }
}
