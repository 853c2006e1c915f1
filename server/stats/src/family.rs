//! Every treatment against the control in one call, with Holm's correction applied across the
//! treatments, so every caller corrects the same way.
//!
//! The family is all `k` treatments. A treatment whose comparison fails (not enough data yet)
//! enters the correction with `p = 1`: the family's size does not shrink while data trickle in,
//! which keeps the correction conservative and stable from one look to the next. A treatment is
//! significant when its Holm-adjusted p-value is below `α`. The Bayesian method has no p-values:
//! its verdicts are not corrected (`p_value_adjusted` is `None`).

use serde::{Deserialize, Serialize};

use crate::compare::{Comparison, Method, compare};
use crate::error::StatsError;
use crate::holm::holm;
use crate::sample::Moments;

/// One treatment's result within its family.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FamilyMember {
    /// The comparison on its own; its `significant` ignores the other treatments.
    pub comparison: Comparison,
    /// The Holm-adjusted p-value of the relative lift; `None` for the Bayesian method.
    pub p_value_adjusted: Option<f64>,
    /// The verdict after correction (for the Bayesian method, `comparison.significant`).
    pub significant: bool,
}

/// Compares each of `treatments` with `control` and corrects across them (see the module
/// documentation). The result has one entry per treatment, in order; an entry is the error of
/// its comparison when that failed.
///
/// # Errors
/// An invalid `alpha` or `tau` fails every entry alike.
pub fn compare_family(
    control: &Moments,
    treatments: &[Moments],
    method: Method,
    alpha: f64,
) -> Vec<Result<FamilyMember, StatsError>> {
    let comparisons: Vec<Result<Comparison, StatsError>> = treatments
        .iter()
        .map(|t| compare(control, t, method, alpha))
        .collect();
    let raw: Vec<f64> = comparisons
        .iter()
        .map(|c| {
            c.as_ref()
                .ok()
                .and_then(|c| c.relative.p_value)
                .unwrap_or(1.0)
        })
        .collect();
    // Every raw value is a p-value in [0, 1] (compare checks its outputs), so holm succeeds;
    // were it ever to fail, no correction is claimed.
    let adjusted = holm(&raw).ok();
    comparisons
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let comparison = c?;
            Ok(match method {
                Method::Bayesian => FamilyMember {
                    comparison,
                    p_value_adjusted: None,
                    significant: comparison.significant,
                },
                _ => {
                    let p = adjusted.as_ref().map(|a| a[i]);
                    FamilyMember {
                        comparison,
                        p_value_adjusted: p,
                        significant: p.is_some_and(|p| p < alpha),
                    }
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Sample;

    fn m(n: u64, conversions: u64) -> Moments {
        Sample::conversions(n, conversions).moments().unwrap()
    }

    #[test]
    fn holm_across_treatments() {
        let control = m(10_000, 1_000);
        // A clear winner, a borderline one, and one without data yet.
        let treatments = [m(10_000, 1_200), m(10_000, 1_100), m(100, 0)];
        let out = compare_family(&control, &treatments, Method::FixedHorizon, 0.05);
        let first = out[0].as_ref().unwrap();
        let second = out[1].as_ref().unwrap();
        assert_eq!(out[2], Err(StatsError::ZeroVariance));
        let p = [
            first.comparison.relative.p_value.unwrap(),
            second.comparison.relative.p_value.unwrap(),
        ];
        // Sorted p: first (×3), second (×2), the failed one (1.0 × 1).
        assert_eq!(first.p_value_adjusted, Some(3.0 * p[0]));
        assert_eq!(second.p_value_adjusted, Some((2.0 * p[1]).max(3.0 * p[0])));
        assert!(first.significant);
        // Significant alone (p ≈ 0.03), not once corrected for three treatments.
        assert!(
            second.comparison.significant && !second.significant,
            "{second:?}"
        );
    }

    #[test]
    fn bayesian_is_not_corrected() {
        let out = compare_family(&m(1_000, 100), &[m(1_000, 150)], Method::Bayesian, 0.05);
        let only = out[0].as_ref().unwrap();
        assert_eq!(only.p_value_adjusted, None);
        assert_eq!(only.significant, only.comparison.significant);
    }
}
