//! CUPED: variance reduction with a pre-exposure covariate (Deng, Xu, Kohavi & Walker,
//! "Improving the Sensitivity of Online Controlled Experiments by Utilizing Pre-Experiment
//! Data", WSDM 2013).
//!
//! Each unit has its metric `y` and a covariate `x` measured before its first exposure (the same
//! metric over a pre-period, 0 for units without history). With one `θ` shared by every
//! variation, the adjusted metric `y' = y − θ(x − x̄)` has the same expected difference between
//! variations (randomisation balances `x`) and the smallest variance at
//! `θ = Cov(x, y)/Var(x)`.
//!
//! - `θ` is pooled *within* variations, so a treatment effect on `y` cannot leak into it:
//!   `θ = Σ_g (Σxy − Σx Σy / n)_g / Σ_g (Σx² − (Σx)² / n)_g` (the `x` coefficient of the
//!   regression `y ~ x + variation`). When `x` has no variance (no unit has history) `θ = 0` and
//!   nothing is adjusted.
//! - `x̄` is the mean of `x` over all variations.
//! - Per variation: `ȳ'_g = ȳ_g − θ(x̄_g − x̄)`,
//!   `s'²_g = s²_y,g − 2θ s_xy,g + θ² s²_x,g` (sample variances and covariance, denominator
//!   `n_g − 1`).
//!
//! The adjusted [`Moments`] go to [`crate::compare()`] like any others. Treating `θ` and `x̄` as
//! known ignores their estimation error, which is of order `1/n` (Deng et al. §3.3).

use serde::{Deserialize, Serialize};

use crate::error::{StatsError, finite};
use crate::sample::{Moments, Sample};

/// One variation's sufficient statistics for CUPED: the metric's [`Sample`] and the sums of the
/// pre-exposure covariate `x` over the same units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cuped {
    /// The metric `y`: units, `Σy`, `Σy²`.
    pub y: Sample,
    /// `Σx`.
    pub sum_x: f64,
    /// `Σx²`.
    pub sum_x2: f64,
    /// `Σxy`.
    pub sum_xy: f64,
}

/// The result of [`cuped`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CupedAdjusted {
    /// The pooled within-variation regression coefficient of `y` on `x`.
    pub theta: f64,
    /// The adjusted moments, in the order of the input.
    pub adjusted: Vec<Moments>,
}

/// Adjusts every variation with one pooled `θ` (see the module documentation).
///
/// # Errors
/// [`StatsError::TooFewUnits`] when a variation has fewer than 2 units;
/// [`StatsError::InvalidInput`] on non-finite or inconsistent sums, or fewer than one variation.
pub fn cuped(variations: &[Cuped]) -> Result<CupedAdjusted, StatsError> {
    if variations.is_empty() {
        return Err(StatsError::InvalidInput {
            field: "variations",
            rule: "at least one variation is needed",
        });
    }
    struct Centred {
        y: Moments,
        mean_x: f64,
        var_x: f64,
        cov: f64,
    }
    let mut centred = Vec::with_capacity(variations.len());
    let (mut sxx, mut sxy, mut total_x, mut total_n) = (0.0, 0.0, 0.0, 0.0);
    for v in variations {
        let y = v.y.moments()?;
        let n = v.y.n as f64;
        let sum_x = finite("sum_x", v.sum_x)?;
        let sum_x2 = finite("sum_x2", v.sum_x2)?;
        let sum_xy = finite("sum_xy", v.sum_xy)?;
        let cxx = sum_x2 - sum_x * sum_x / n;
        if cxx < -1e-9 * sum_x2.abs().max(1.0) {
            return Err(StatsError::InvalidInput {
                field: "sum_x2",
                rule: "must be at least sum_x² / n",
            });
        }
        let cxx = cxx.max(0.0);
        let cxy = sum_xy - sum_x * v.y.sum / n;
        sxx += cxx;
        sxy += cxy;
        total_x += sum_x;
        total_n += n;
        centred.push(Centred {
            y,
            mean_x: sum_x / n,
            var_x: cxx / (n - 1.0),
            cov: cxy / (n - 1.0),
        });
    }
    let theta = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let mean_x = total_x / total_n;
    let adjusted: Vec<Moments> = centred
        .iter()
        .map(|c| Moments {
            n: c.y.n,
            mean: c.y.mean - theta * (c.mean_x - mean_x),
            variance: (c.y.variance - 2.0 * theta * c.cov + theta * theta * c.var_x).max(0.0),
        })
        .collect();
    if !theta.is_finite()
        || adjusted
            .iter()
            .any(|m| !m.mean.is_finite() || !m.variance.is_finite())
    {
        return Err(StatsError::InvalidInput {
            field: "variations",
            rule: "magnitudes too large to adjust in double precision",
        });
    }
    Ok(CupedAdjusted { theta, adjusted })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a variation from raw pairs.
    fn from_rows(rows: &[(f64, f64)]) -> Cuped {
        let mut c = Cuped {
            y: Sample::new(rows.len() as u64, 0.0, 0.0),
            sum_x: 0.0,
            sum_x2: 0.0,
            sum_xy: 0.0,
        };
        for &(x, y) in rows {
            c.y.sum += y;
            c.y.sum_sq += y * y;
            c.sum_x += x;
            c.sum_x2 += x * x;
            c.sum_xy += x * y;
        }
        c
    }

    #[test]
    fn a_perfect_covariate_removes_the_variance() {
        // y = 2x + variation offset: within-variation θ = 2, adjusted variance 0.
        let a = from_rows(&[(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]);
        let b = from_rows(&[(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)]);
        let r = cuped(&[a, b]).unwrap();
        assert!((r.theta - 2.0).abs() < 1e-12);
        assert!(r.adjusted.iter().all(|m| m.variance < 1e-12));
        // x̄ = 13/6; ȳ'_a = 4 − 2(2 − 13/6), ȳ'_b = 17/3 − 2(7/3 − 13/6).
        assert!((r.adjusted[0].mean - (4.0 + 1.0 / 3.0)).abs() < 1e-12);
        assert!((r.adjusted[1].mean - (17.0 / 3.0 - 1.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn no_history_means_no_adjustment() {
        let a = from_rows(&[(0.0, 1.0), (0.0, 0.0), (0.0, 1.0)]);
        let r = cuped(&[a]).unwrap();
        assert_eq!(r.theta, 0.0);
        assert_eq!(r.adjusted[0], a.y.moments().unwrap());
    }
}
