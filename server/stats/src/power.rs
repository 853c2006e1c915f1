//! Sample size and time to significance of a fixed-horizon test, for a minimum detectable
//! relative effect.
//!
//! With baseline mean `μ`, per-unit variance `σ²`, relative MDE `δ`, the standardised effect is
//! `d = |δ| μ / σ`. A two-sided z-test at level `α` with `n` units in each of two arms has power
//! `Φ(d√(n/2) − z) + Φ(−d√(n/2) − z)`, `z = Φ⁻¹(1 − α/2)`; [`sample_size`] solves it for `n`
//! (by bisection; close to the textbook `n = 2 (z + Φ⁻¹(power))² / d²`; Chow, Shao & Wang, *Sample
//! Size Calculations in Clinical Research*, §3.2; the same equation as statsmodels'
//! `NormalIndPower.solve_power` with `ratio = 1`). Every treatment is compared with the control
//! at the same `n`, so `k` variations need `k·n` units; with Holm's correction pass `α / (k − 1)`
//! for a conservative plan. A sequential analysis (always-valid) needs more units than this plan
//! to reach the same power; the plan is a lower bound for it.

use serde::{Deserialize, Serialize};

use crate::dist::{normal_cdf, normal_quantile};
use crate::error::{StatsError, check_alpha};

/// What [`sample_size`] plans for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleSizeInput {
    /// The control's mean per unit (the conversion rate for a conversion metric); positive.
    pub baseline_mean: f64,
    /// The per-unit variance (`p(1 − p)` for a conversion rate `p`); positive.
    pub baseline_variance: f64,
    /// The smallest relative lift worth detecting (0.05 = ±5 %); non-zero.
    pub mde_relative: f64,
    /// Two-sided significance level.
    pub alpha: f64,
    /// Probability of detecting a true lift of `mde_relative` (0.8 is customary); above `alpha`.
    pub power: f64,
    /// Variations including the control; at least 2.
    pub variations: u32,
    /// Units entering the experiment per day over all variations, for the time estimate.
    pub daily_units: Option<f64>,
}

/// The result of [`sample_size`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleSize {
    /// The exact (fractional) units per variation that solve the power equation.
    pub per_variation_exact: f64,
    /// `per_variation_exact` rounded up, and at least 2.
    pub per_variation: u64,
    /// `per_variation · variations`.
    pub total: u64,
    /// `total / daily_units`: days from the start until the planned sample size is reached.
    pub days: Option<f64>,
}

/// Units per variation needed to detect `mde_relative` (see the module documentation).
///
/// # Errors
/// [`StatsError::InvalidInput`] naming the field that is out of its domain, or when the plan
/// would exceed `u64` units.
pub fn sample_size(input: &SampleSizeInput) -> Result<SampleSize, StatsError> {
    let bad = |field, rule| Err(StatsError::InvalidInput { field, rule });
    let alpha = check_alpha(input.alpha)?;
    if !(input.baseline_mean.is_finite() && input.baseline_mean > 0.0) {
        return bad("baseline_mean", "must be a finite, positive number");
    }
    if !(input.baseline_variance.is_finite() && input.baseline_variance > 0.0) {
        return bad("baseline_variance", "must be a finite, positive number");
    }
    if !(input.mde_relative.is_finite() && input.mde_relative != 0.0) {
        return bad("mde_relative", "must be a finite, non-zero number");
    }
    if !(input.power.is_finite() && input.power > alpha && input.power < 1.0) {
        return bad("power", "must lie strictly between alpha and 1");
    }
    if input.variations < 2 {
        return bad("variations", "at least 2 (the control and one treatment)");
    }
    if let Some(d) = input.daily_units
        && !(d.is_finite() && d > 0.0)
    {
        return bad("daily_units", "must be a finite, positive number");
    }

    let d = input.mde_relative.abs() * input.baseline_mean / input.baseline_variance.sqrt();
    let z = -normal_quantile(alpha / 2.0);
    let s = solve_power(z, input.power);
    let d2 = d * d;
    if !d2.is_finite() {
        return bad(
            "baseline_variance",
            "too small for the baseline mean: any sample detects this effect",
        );
    }
    let exact = 2.0 * s * s / d2;
    let too_many = || {
        bad(
            "mde_relative",
            "too small: the plan exceeds any possible sample",
        )
    };
    // `as` saturates, so anything at or past u64::MAX is caught by checked_mul or the bound.
    if !(exact.is_finite() && exact < u64::MAX as f64) {
        return too_many();
    }
    // Two units are the fewest a variance (and so any test) needs.
    let per_variation = (exact.ceil() as u64).max(2);
    let Some(total) = per_variation.checked_mul(u64::from(input.variations)) else {
        return too_many();
    };
    let days = input.daily_units.map(|d| total as f64 / d);
    if days.is_some_and(|d| !d.is_finite()) {
        return bad("daily_units", "too small: the plan would take forever");
    }
    Ok(SampleSize {
        per_variation_exact: exact,
        per_variation,
        total,
        days,
    })
}

/// The `s ≥ 0` with `Φ(s − z) + Φ(−s − z) = power`, for `2Φ(−z) = α < power < 1`.
///
/// The left side rises from `α` at `s = 0` towards 1, so bisection on a bracket converges for
/// every valid input (Newton can overshoot when `power` is barely above `α`); 200 halvings reach
/// the resolution of a double.
fn solve_power(z: f64, power: f64) -> f64 {
    let f = |s: f64| normal_cdf(s - z) + normal_cdf(-s - z);
    let (mut lo, mut hi) = (0.0_f64, (z + normal_quantile(power)).max(0.0) + 1.0);
    while f(hi) < power && hi < 1e6 {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if f(mid) < power {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SampleSizeInput {
        SampleSizeInput {
            baseline_mean: 0.1,
            baseline_variance: 0.09,
            mde_relative: 0.1,
            alpha: 0.05,
            power: 0.8,
            variations: 2,
            daily_units: Some(1_000.0),
        }
    }

    #[test]
    fn textbook_conversion_plan() {
        // 2 (1.96 + 0.8416)² · 0.09 / 0.01² ≈ 14_128 per arm.
        let r = sample_size(&input()).unwrap();
        assert_eq!(r.per_variation, 14_128);
        assert_eq!(r.total, 28_256);
        assert!((r.days.unwrap() - 28.256).abs() < 1e-9);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut i = input();
        i.power = 0.01;
        assert_eq!(
            sample_size(&i),
            Err(StatsError::InvalidInput {
                field: "power",
                rule: "must lie strictly between alpha and 1"
            })
        );
        let mut i = input();
        i.mde_relative = 1e-300;
        assert!(sample_size(&i).is_err());
    }
}
