//! The one error type of the crate.

use thiserror::Error;

/// Why a statistic could not be computed. Every function of the crate returns this instead of
/// panicking or returning NaN.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum StatsError {
    /// A sample has fewer units than the statistic needs (a variance needs two).
    #[error("{field}: {n} units, at least {needed} needed")]
    TooFewUnits {
        /// Which input (for example `control`, `treatment`).
        field: &'static str,
        /// Units it has.
        n: u64,
        /// Units the statistic needs.
        needed: u64,
    },
    /// The standard error of an effect is zero, so no test can be made: every unit in both
    /// samples has the same value, or the treatment is constant at 0 (its relative lift of
    /// −100 % has no delta-method variance).
    #[error("zero variance: the effect's standard error is 0, so no test can be made")]
    ZeroVariance,
    /// The control mean is zero or negative, so a relative lift is undefined.
    #[error("control mean is {0}: a relative lift needs a positive control mean")]
    NonPositiveControlMean(f64),
    /// An input is out of its domain (NaN, infinite, negative where it cannot be, …).
    #[error("{field}: {rule}")]
    InvalidInput {
        /// The offending input, named as in the API.
        field: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Sample-ratio weights are unusable (wrong length, negative, none positive).
    #[error("weights: {0}")]
    BadWeights(&'static str),
}

/// Checks that `value` is finite, else names `field`.
pub(crate) fn finite(field: &'static str, value: f64) -> Result<f64, StatsError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(StatsError::InvalidInput {
            field,
            rule: "must be a finite number",
        })
    }
}

/// Checks a significance level: finite, strictly between 0 and 1.
pub(crate) fn check_alpha(alpha: f64) -> Result<f64, StatsError> {
    if alpha.is_finite() && alpha > 0.0 && alpha < 1.0 {
        Ok(alpha)
    } else {
        Err(StatsError::InvalidInput {
            field: "alpha",
            rule: "must lie strictly between 0 and 1",
        })
    }
}
