//! Per-variation sufficient statistics and the moments derived from them.

use serde::{Deserialize, Serialize};

use crate::error::{StatsError, finite};

/// The sufficient statistics of one variation's metric: the number of units, the sum of their
/// values and the sum of their squared values. A conversion metric (each unit 0 or 1) has
/// `sum = sum_sq = conversions` ([`Sample::conversions`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Units (exposed users, devices, …) in the variation.
    pub n: u64,
    /// `Σ yᵢ` over the units.
    pub sum: f64,
    /// `Σ yᵢ²` over the units.
    pub sum_sq: f64,
}

/// A variation's estimate: units, mean and per-unit sample variance. This is what the
/// comparisons read, so a [`Sample`] and a CUPED-adjusted variation
/// ([`cuped`](mod@crate::cuped)) are analysed the same way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Units.
    pub n: u64,
    /// Mean per unit `ȳ`.
    pub mean: f64,
    /// Per-unit sample variance `s²` (denominator `n − 1`); the mean's variance is `s²/n`.
    pub variance: f64,
}

impl Sample {
    /// A sample from its sums.
    pub fn new(n: u64, sum: f64, sum_sq: f64) -> Self {
        Self { n, sum, sum_sq }
    }

    /// A conversion (0/1) metric: `conversions` of `n` units converted.
    pub fn conversions(n: u64, conversions: u64) -> Self {
        let c = conversions as f64;
        Self {
            n,
            sum: c,
            sum_sq: c,
        }
    }

    /// The mean `ȳ = Σy / n`.
    ///
    /// # Errors
    /// [`StatsError::TooFewUnits`] when `n = 0`; [`StatsError::InvalidInput`] on a non-finite sum.
    pub fn mean(&self) -> Result<f64, StatsError> {
        if self.n == 0 {
            return Err(StatsError::TooFewUnits {
                field: "sample",
                n: 0,
                needed: 1,
            });
        }
        Ok(finite("sample.sum", self.sum)? / self.n as f64)
    }

    /// The sample variance `s² = (Σy² − (Σy)²/n) / (n − 1)`.
    ///
    /// Rounding can make the numerator slightly negative when every value is (nearly) equal; a
    /// deficit within 1e-9 of `Σy²` reads as 0, a larger one means the sums are inconsistent.
    ///
    /// # Errors
    /// [`StatsError::TooFewUnits`] when `n < 2`; [`StatsError::InvalidInput`] on non-finite or
    /// inconsistent sums (`Σy² < (Σy)²/n`).
    pub fn variance(&self) -> Result<f64, StatsError> {
        if self.n < 2 {
            return Err(StatsError::TooFewUnits {
                field: "sample",
                n: self.n,
                needed: 2,
            });
        }
        let n = self.n as f64;
        let sum = finite("sample.sum", self.sum)?;
        let sum_sq = finite("sample.sum_sq", self.sum_sq)?;
        let centred = sum_sq - sum * sum / n;
        if centred < -1e-9 * sum_sq.abs().max(1.0) {
            return Err(StatsError::InvalidInput {
                field: "sample.sum_sq",
                rule: "must be at least sum² / n",
            });
        }
        Ok(centred.max(0.0) / (n - 1.0))
    }

    /// Mean and sample variance together.
    ///
    /// # Errors
    /// As [`Sample::variance`].
    pub fn moments(&self) -> Result<Moments, StatsError> {
        Ok(Moments {
            n: self.n,
            mean: self.mean()?,
            variance: self.variance()?,
        })
    }
}

impl Moments {
    /// Checks the moments are usable: `n ≥ 2`, finite mean, finite non-negative variance.
    pub(crate) fn validate(&self, field: &'static str) -> Result<(), StatsError> {
        if self.n < 2 {
            return Err(StatsError::TooFewUnits {
                field,
                n: self.n,
                needed: 2,
            });
        }
        if !self.mean.is_finite() {
            return Err(StatsError::InvalidInput {
                field,
                rule: "mean must be a finite number",
            });
        }
        if !self.variance.is_finite() || self.variance < 0.0 {
            return Err(StatsError::InvalidInput {
                field,
                rule: "variance must be a finite, non-negative number",
            });
        }
        Ok(())
    }

    /// The variance of the mean, `s²/n`.
    pub fn variance_of_mean(&self) -> f64 {
        self.variance / self.n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_moments() {
        let m = Sample::conversions(10, 3).moments().unwrap();
        assert_eq!(m.mean, 0.3);
        // p(1 − p) n/(n − 1) = 0.21 · 10/9.
        assert!((m.variance - 0.21 * 10.0 / 9.0).abs() < 1e-15);
    }

    #[test]
    fn rejects_bad_samples() {
        assert!(matches!(
            Sample::new(0, 0.0, 0.0).mean(),
            Err(StatsError::TooFewUnits { .. })
        ));
        assert!(matches!(
            Sample::new(1, 1.0, 1.0).variance(),
            Err(StatsError::TooFewUnits { .. })
        ));
        assert!(matches!(
            Sample::new(10, 10.0, 1.0).variance(),
            Err(StatsError::InvalidInput { .. })
        ));
        assert!(Sample::new(10, f64::NAN, 1.0).mean().is_err());
        // Equal values: zero variance, not an error and not negative.
        assert_eq!(Sample::new(3, 0.3, 0.03).variance().unwrap(), 0.0);
    }
}
