//! Stale flags: candidates for removal in one environment, each with its evidence.
//!
//! - `not_evaluated`: no SDK reported evaluating the flag for `unused_days` (from the
//!   evaluation summaries), or never, and the flag is older than that;
//! - `past_lifetime`: a temporary flag older than `lifetime_days`;
//! - `uniform`: the flag has served one variation to everyone for `uniform_days`: it is off
//!   (serving its off variation), or on with no prerequisite, target or rule and a fixed
//!   fallthrough variation, and its configuration has not changed since.
//!
//! Pure: the store reads the rows, the caller's clock says what "now" is.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use vexil_schema::model::{FlagConfig, Serve};

use super::store::{FlagRow, FlagUsage};

const DAY_MS: u64 = 86_400_000;

/// The thresholds of the report (query parameters).
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StaleQuery {
    /// A flag no SDK evaluated for this many days is stale (default 30).
    #[param(minimum = 1, maximum = 3650)]
    pub unused_days: Option<u32>,
    /// A temporary flag older than this many days is stale (default 40).
    #[param(minimum = 1, maximum = 3650)]
    pub lifetime_days: Option<u32>,
    /// A flag serving one variation to everyone for this many days is stale (default 30).
    #[param(minimum = 1, maximum = 3650)]
    pub uniform_days: Option<u32>,
}

impl StaleQuery {
    fn days(v: Option<u32>, default: u32) -> u64 {
        u64::from(v.unwrap_or(default).clamp(1, 3650))
    }
}

/// The stale-flag report of one environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StaleReport {
    /// When the report was made (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub generated_at: OffsetDateTime,
    /// Days without evaluation that make a flag stale.
    pub unused_days: u64,
    /// Lifetime of temporary flags, in days.
    pub lifetime_days: u64,
    /// Days of serving one variation that make a flag stale.
    pub uniform_days: u64,
    /// The stale flags, by key.
    pub flags: Vec<StaleFlag>,
}

/// A stale flag and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StaleFlag {
    /// The flag's key.
    pub key: String,
    /// Each reason, with its evidence.
    pub reasons: Vec<StaleReason>,
}

/// One reason a flag is stale.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StaleReason {
    /// No evaluation reported for the threshold.
    NotEvaluated {
        /// The last evaluation reported (ms since the epoch); absent if never.
        last_evaluated_ms: Option<u64>,
        /// Whole days since then (or since the flag was created, if never).
        days: u64,
    },
    /// A temporary flag past its expected lifetime.
    PastLifetime {
        /// When the flag was created (ms since the epoch).
        created_at_ms: u64,
        /// Its age in whole days.
        age_days: u64,
    },
    /// One variation served to everyone.
    Uniform {
        /// The variation index served.
        variation: usize,
        /// `off` or `fixed_fallthrough`.
        because: String,
        /// When the configuration last changed (ms since the epoch).
        since_ms: u64,
        /// Whole days since then.
        days: u64,
        /// Evaluations reported in that window, by variation (from the summaries).
        evaluations: Vec<super::store::VariationCount>,
    },
}

fn ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The variation `config` serves to everyone, with why, if it does.
fn uniform(config: &FlagConfig) -> Option<(usize, &'static str)> {
    if !config.on {
        return Some((config.off_variation, "off"));
    }
    if !config.prerequisites.is_empty() || !config.targets.is_empty() || !config.rules.is_empty() {
        return None;
    }
    match &config.fallthrough {
        Serve::Variation(v) => Some((*v, "fixed_fallthrough")),
        Serve::Rollout(_) => None,
    }
}

/// The report at `now` over `flags` and their `usage`.
pub(crate) fn report(
    q: StaleQuery,
    now: OffsetDateTime,
    flags: &[FlagRow],
    usage: &[FlagUsage],
) -> StaleReport {
    let unused_days = StaleQuery::days(q.unused_days, 30);
    let lifetime_days = StaleQuery::days(q.lifetime_days, 40);
    let uniform_days = StaleQuery::days(q.uniform_days, 30);
    let now_ms = ms(now);
    let days_since = |t: u64| now_ms.saturating_sub(t) / DAY_MS;
    let mut out = Vec::new();
    for f in flags {
        let mut reasons = Vec::new();
        let created = ms(f.created_at);
        let used = usage.iter().find(|u| u.flag_key == f.key);
        let last = used.map(|u| u.last_evaluated_ms);
        let idle = days_since(last.unwrap_or(created));
        if idle >= unused_days {
            reasons.push(StaleReason::NotEvaluated {
                last_evaluated_ms: last,
                days: idle,
            });
        }
        let temporary = f.definition.0.get("temporary").and_then(|v| v.as_bool());
        if temporary == Some(true) && days_since(created) >= lifetime_days {
            reasons.push(StaleReason::PastLifetime {
                created_at_ms: created,
                age_days: days_since(created),
            });
        }
        if let Ok(config) = serde_json::from_value::<FlagConfig>(f.config.0.clone())
            && let Some((variation, because)) = uniform(&config)
        {
            let since = ms(f.updated_at);
            if days_since(since) >= uniform_days {
                reasons.push(StaleReason::Uniform {
                    variation,
                    because: because.to_owned(),
                    since_ms: since,
                    days: days_since(since),
                    evaluations: used.map(|u| u.by_variation.clone()).unwrap_or_default(),
                });
            }
        }
        if !reasons.is_empty() {
            out.push(StaleFlag {
                key: f.key.clone(),
                reasons,
            });
        }
    }
    StaleReport {
        generated_at: now,
        unused_days,
        lifetime_days,
        uniform_days,
        flags: out,
    }
}
