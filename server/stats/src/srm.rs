//! Sample-ratio mismatch: Pearson's chi-square goodness-of-fit test of the units observed per
//! variation against the configured weights (Fabijan et al., "Diagnosing Sample Ratio Mismatch
//! in Online Controlled Experiments", KDD 2019).
//!
//! With `N = Σ oᵢ` units and weights `wᵢ`, the expected counts are `eᵢ = N wᵢ / Σw`,
//! `χ² = Σ (oᵢ − eᵢ)² / eᵢ` over the variations with positive weight, `df = k − 1` and
//! `p = P(χ²_df > χ²)`. A mismatch is flagged at `p <` [`SRM_THRESHOLD`] (0.001), the strict level
//! customary for this check because it runs on every experiment and a real mismatch means the
//! assignment or the logging is broken, whatever the metric says. A variation with weight 0 but
//! units observed is a mismatch outright (`χ² = ∞`, `p = 0`).

use serde::{Deserialize, Serialize};

use crate::dist::chi2_sf;
use crate::error::StatsError;

/// The p-value below which [`srm`] flags a mismatch.
pub const SRM_THRESHOLD: f64 = 0.001;

/// The result of [`srm`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Srm {
    /// Pearson's statistic (`+∞` when a zero-weight variation has units).
    pub chi2: f64,
    /// Degrees of freedom: variations with positive weight, minus one.
    pub df: u32,
    /// `P(χ²_df > chi2)`.
    pub p_value: f64,
    /// `p_value <` [`SRM_THRESHOLD`].
    pub mismatch: bool,
}

/// Tests `observed` units per variation against `weights` (any positive scale: `[50, 50]`,
/// `[0.5, 0.5]` and `[1, 1]` are the same).
///
/// # Errors
/// [`StatsError::BadWeights`] when the lengths differ, a weight is negative or not finite, or
/// fewer than two weights are positive; [`StatsError::TooFewUnits`] when no unit was observed.
pub fn srm(observed: &[u64], weights: &[f64]) -> Result<Srm, StatsError> {
    if observed.len() != weights.len() {
        return Err(StatsError::BadWeights("one weight per variation is needed"));
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(StatsError::BadWeights(
            "every weight must be a finite, non-negative number",
        ));
    }
    // Scaled by the largest weight, so their sum cannot overflow; a weight so small against the
    // largest that its expected count is 0 in double precision counts as 0.
    let largest = weights.iter().copied().fold(0.0_f64, f64::max);
    let shares: Vec<f64> = weights
        .iter()
        .map(|w| if largest > 0.0 { w / largest } else { 0.0 })
        .collect();
    let positive = shares.iter().filter(|s| **s > 0.0).count();
    if positive < 2 {
        return Err(StatsError::BadWeights(
            "at least two weights must be positive",
        ));
    }
    // In u128: counts near u64::MAX must not overflow the total.
    let total: u128 = observed.iter().map(|&o| u128::from(o)).sum();
    if total == 0 {
        return Err(StatsError::TooFewUnits {
            field: "observed",
            n: 0,
            needed: 1,
        });
    }
    let share_sum: f64 = shares.iter().sum();
    let n = total as f64;
    let mut chi2 = 0.0;
    for (&o, &share) in observed.iter().zip(&shares) {
        if share == 0.0 {
            if o > 0 {
                chi2 = f64::INFINITY;
            }
            continue;
        }
        let e = n * share / share_sum;
        let d = o as f64 - e;
        chi2 += d * d / e;
    }
    let df = (positive - 1) as u32;
    let p_value = if chi2.is_infinite() {
        0.0
    } else {
        chi2_sf(chi2, f64::from(df))
    };
    Ok(Srm {
        chi2,
        df,
        p_value,
        mismatch: p_value < SRM_THRESHOLD,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_passes_and_skewed_fails() {
        let ok = srm(&[10_050, 9_950], &[0.5, 0.5]).unwrap();
        assert!(!ok.mismatch && ok.df == 1);
        let bad = srm(&[10_500, 9_500], &[1.0, 1.0]).unwrap();
        assert!(bad.mismatch, "{bad:?}");
        // scipy.stats.chisquare([10500, 9500]) = (50.0, 1.5374597944280348e-12).
        assert!((bad.chi2 - 50.0).abs() < 1e-9);
        assert!((bad.p_value - 1.537_459_794_428_034_8e-12).abs() < 1e-20);
    }

    #[test]
    fn zero_weight_with_units_is_a_mismatch() {
        let r = srm(&[10, 10, 1], &[1.0, 1.0, 0.0]).unwrap();
        assert!(r.mismatch && r.p_value == 0.0);
        assert_eq!(srm(&[10, 12, 0], &[1.0, 1.0, 0.0]).unwrap().df, 1);
    }

    #[test]
    fn bad_inputs() {
        assert!(matches!(
            srm(&[1, 2], &[1.0]),
            Err(StatsError::BadWeights(_))
        ));
        assert!(matches!(
            srm(&[1, 2], &[1.0, -1.0]),
            Err(StatsError::BadWeights(_))
        ));
        assert!(matches!(
            srm(&[1, 2], &[1.0, 0.0]),
            Err(StatsError::BadWeights(_))
        ));
        assert!(matches!(
            srm(&[0, 0], &[1.0, 1.0]),
            Err(StatsError::TooFewUnits { .. })
        ));
    }
}
