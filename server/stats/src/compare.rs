//! One treatment against the control: absolute and relative effect, with a frequentist
//! fixed-horizon or sequential (always-valid) test, or a Bayesian posterior.
//!
//! Notation: `ȳ_c, ȳ_t` the means, `V_c = s_c²/n_c`, `V_t = s_t²/n_t` the variances of the means.
//!
//! - Absolute effect `Δ = ȳ_t − ȳ_c`, `Var Δ = V_t + V_c` (Welch's unpooled z-test).
//! - Relative lift `L = ȳ_t/ȳ_c − 1`, by the delta method
//!   `Var L ≈ V_t/ȳ_c² + ȳ_t² V_c/ȳ_c⁴` (the two means are independent; Deng, Knoblich & Lu,
//!   "Applying the Delta Method in Metric Analytics", KDD 2018). The relative lift is the
//!   primary test: its p-value decides `significant`, so the verdict always agrees with the
//!   relative interval.
//!
//! For an estimate `θ̂` with standard error `σ = √V`, each [`Method`] gives:
//!
//! - **Fixed horizon**: `z = θ̂/σ`, `p = 2·(1 − Φ(|z|))`, interval `θ̂ ± Φ⁻¹(1 − α/2)·σ`. Valid
//!   only when read once, at the planned sample size.
//! - **Sequential**: the mixture sequential probability ratio test with a normal mixing
//!   distribution `θ ~ N(0, τ²)` (Robbins 1970; Johari, Koomen, Pekelis & Walsh, "Always Valid
//!   Inference", Operations Research 2022; the method of Optimizely's Stats Engine and of Eppo's
//!   sequential analysis). The mixture likelihood ratio against `θ = 0` is
//!   `Λ = √(V/(V+τ²)) · exp(τ²θ̂² / (2V(V+τ²)))`, a non-negative martingale under the null, so by
//!   Ville's inequality `P(∃ look: Λ ≥ 1/α) ≤ α`. The always-valid p-value is `p = min(1, 1/Λ)`
//!   and the always-valid interval is
//!   `θ̂ ± √( V(V+τ²)/τ² · (2 ln(1/α) + ln((V+τ²)/V)) )`; both may be read after every batch
//!   without inflating the error rate. (A caller that keeps history may report the running
//!   minimum of `p` and the running intersection of intervals; each look alone is already
//!   valid.) `τ` is on the **relative** scale (for the absolute effect it is `τ·ȳ_c`); it is the
//!   spread of lifts the test is tuned for, with default [`DEFAULT_TAU`] = 0.1 (±10 %).
//!   Smaller `τ` narrows intervals for small lifts at large samples and widens them early.
//! - **Bayesian**: a flat (improper uniform) prior on the effect and the normal likelihood above
//!   give the posterior `θ | data ~ N(θ̂, V)` (the normal approximation of GrowthBook's and
//!   LaunchDarkly's Bayesian engines with an uninformative prior). Chance to beat control
//!   `P(θ > 0) = Φ(θ̂/σ)`; expected loss of shipping the treatment
//!   `E[max(0, −θ)] = σ φ(θ̂/σ) − θ̂ Φ(−θ̂/σ)` and of keeping the control
//!   `E[max(0, θ)] = σ φ(θ̂/σ) + θ̂ Φ(θ̂/σ)`; credible interval `θ̂ ± Φ⁻¹(1 − α/2)·σ`.
//!   `significant` when the chance to beat control is above `1 − α/2` or below `α/2`, that is
//!   when the credible interval excludes 0.
//!
//! The metric's direction (up is good or bad) is the caller's to apply: `significant` says only
//! that the effect is not zero.

use serde::{Deserialize, Serialize};

use crate::dist::{normal_cdf, normal_pdf, normal_quantile, normal_sf};
use crate::error::{StatsError, check_alpha};
use crate::sample::{Moments, Sample};

/// Default mixture standard deviation `τ` of the sequential test, on the relative scale.
pub const DEFAULT_TAU: f64 = 0.1;

/// How a comparison is analysed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Method {
    /// Frequentist z-test read once at a planned sample size.
    FixedHorizon,
    /// Frequentist always-valid test (mixture SPRT), safe to read after every batch.
    Sequential {
        /// Mixture standard deviation on the relative scale; `None` uses [`DEFAULT_TAU`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tau: Option<f64>,
    },
    /// Normal-approximation Bayesian posterior with a flat prior.
    Bayesian,
}

/// An effect estimate with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// The point estimate (absolute difference, or relative lift as a fraction: 0.2 = +20 %).
    pub estimate: f64,
    /// Its standard error (delta method for the relative lift).
    pub std_error: f64,
    /// Lower end of the `(1 − α)` interval: confidence, always-valid or credible by method.
    pub lower: f64,
    /// Upper end of the interval.
    pub upper: f64,
    /// Two-sided p-value against "no effect" (always-valid for the sequential method);
    /// `None` for the Bayesian method.
    pub p_value: Option<f64>,
}

/// The Bayesian reading of the relative lift.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Posterior {
    /// `P(lift > 0 | data)`.
    pub chance_to_beat_control: f64,
    /// Expected relative loss of shipping the treatment, `E[max(0, −lift)]`.
    pub expected_loss: f64,
    /// Expected relative loss of keeping the control, `E[max(0, lift)]`.
    pub expected_loss_control: f64,
}

/// The result of [`compare`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The method used.
    pub method: Method,
    /// The significance level used (intervals are `1 − α`).
    pub alpha: f64,
    /// Control mean `ȳ_c`.
    pub control_mean: f64,
    /// Treatment mean `ȳ_t`.
    pub treatment_mean: f64,
    /// `ȳ_t − ȳ_c`.
    pub absolute: Effect,
    /// `ȳ_t/ȳ_c − 1`, the primary test.
    pub relative: Effect,
    /// The posterior, for [`Method::Bayesian`] only.
    pub posterior: Option<Posterior>,
    /// Whether the relative lift differs from 0 at level `α` (see the module documentation).
    pub significant: bool,
}

/// Compares `treatment` with `control` at level `alpha` (0.05 for 95 % intervals).
///
/// # Errors
/// [`StatsError::TooFewUnits`] when a variation has fewer than 2 units,
/// [`StatsError::NonPositiveControlMean`] when `ȳ_c ≤ 0`, [`StatsError::ZeroVariance`] when
/// both variances are 0 (or the treatment is constant at 0, so the relative lift's standard error
/// is 0), [`StatsError::InvalidInput`] on a bad `alpha`, `tau` or moments.
pub fn compare(
    control: &Moments,
    treatment: &Moments,
    method: Method,
    alpha: f64,
) -> Result<Comparison, StatsError> {
    control.validate("control")?;
    treatment.validate("treatment")?;
    let alpha = check_alpha(alpha)?;
    let tau = match method {
        Method::Sequential { tau } => {
            let tau = tau.unwrap_or(DEFAULT_TAU);
            if !(tau.is_finite() && tau > 0.0) {
                return Err(StatsError::InvalidInput {
                    field: "tau",
                    rule: "must be a finite, positive number",
                });
            }
            tau
        }
        _ => 0.0,
    };

    let (mc, mt) = (control.mean, treatment.mean);
    if mc <= 0.0 {
        return Err(StatsError::NonPositiveControlMean(mc));
    }
    let (vc, vt) = (control.variance_of_mean(), treatment.variance_of_mean());
    let var_abs = vc + vt;
    if var_abs <= 0.0 {
        return Err(StatsError::ZeroVariance);
    }
    let var_rel = vt / (mc * mc) + mt * mt * vc / (mc * mc * mc * mc);
    if var_rel <= 0.0 {
        // A constant treatment with mean 0 (no conversion yet) against a varying control: the
        // delta method has nothing to say about a lift of exactly −100 %.
        return Err(StatsError::ZeroVariance);
    }

    let absolute = effect(mt - mc, var_abs, method, alpha, tau * mc);
    let relative = effect(mt / mc - 1.0, var_rel, method, alpha, tau);
    let (posterior, significant) = match method {
        Method::Bayesian => {
            let post = posterior(relative.estimate, relative.std_error);
            let sig = post.chance_to_beat_control > 1.0 - alpha / 2.0
                || post.chance_to_beat_control < alpha / 2.0;
            (Some(post), sig)
        }
        _ => (None, relative.p_value.is_some_and(|p| p < alpha)),
    };
    let out = Comparison {
        method,
        alpha,
        control_mean: mc,
        treatment_mean: mt,
        absolute,
        relative,
        posterior,
        significant,
    };
    if all_finite(&out) {
        Ok(out)
    } else {
        // Only reachable with extreme magnitudes (overflowing squares); say so rather than
        // hand back NaN.
        Err(StatsError::InvalidInput {
            field: "moments",
            rule: "magnitudes too large to compare in double precision",
        })
    }
}

/// [`compare`] straight from the sums: `control.moments()` and `treatment.moments()` first.
///
/// # Errors
/// As [`Sample::moments`](crate::Sample::moments) (named `control` / `treatment` only through
/// the error's content) and as [`compare`].
pub fn compare_samples(
    control: &Sample,
    treatment: &Sample,
    method: Method,
    alpha: f64,
) -> Result<Comparison, StatsError> {
    compare(&control.moments()?, &treatment.moments()?, method, alpha)
}

/// The estimate, interval and p-value of one effect with variance `var > 0`; `tau` is the
/// mixture standard deviation on this effect's own scale (sequential only).
fn effect(estimate: f64, var: f64, method: Method, alpha: f64, tau: f64) -> Effect {
    let se = var.sqrt();
    match method {
        Method::FixedHorizon | Method::Bayesian => {
            // −Φ⁻¹(α/2) = Φ⁻¹(1 − α/2), without rounding 1 − α/2 for tiny α.
            let half = -normal_quantile(alpha / 2.0) * se;
            let p_value = match method {
                Method::FixedHorizon => Some(2.0 * normal_sf((estimate / se).abs())),
                _ => None,
            };
            Effect {
                estimate,
                std_error: se,
                lower: estimate - half,
                upper: estimate + half,
                p_value,
            }
        }
        Method::Sequential { .. } => {
            let t2 = tau * tau;
            let ratio = (var + t2) / var;
            // ln(1/Λ) = ½ ln((V+τ²)/V) − τ²θ̂² / (2V(V+τ²)).
            let ln_inv_lambda =
                0.5 * ratio.ln() - t2 * estimate * estimate / (2.0 * var * (var + t2));
            let p_value = ln_inv_lambda.min(0.0).exp();
            let half = (var * (var + t2) / t2 * (2.0 * (1.0 / alpha).ln() + ratio.ln())).sqrt();
            Effect {
                estimate,
                std_error: se,
                lower: estimate - half,
                upper: estimate + half,
                p_value: Some(p_value),
            }
        }
    }
}

/// The posterior summaries of `θ ~ N(mean, sd²)`.
fn posterior(mean: f64, sd: f64) -> Posterior {
    let z = mean / sd;
    let density = sd * normal_pdf(z);
    Posterior {
        chance_to_beat_control: normal_cdf(z),
        expected_loss: (density - mean * normal_cdf(-z)).max(0.0),
        expected_loss_control: (density + mean * normal_cdf(z)).max(0.0),
    }
}

fn all_finite(c: &Comparison) -> bool {
    let e = |e: &Effect| {
        [e.estimate, e.std_error, e.lower, e.upper]
            .iter()
            .all(|v| v.is_finite())
            && e.p_value.is_none_or(f64::is_finite)
    };
    e(&c.absolute)
        && e(&c.relative)
        && c.posterior.is_none_or(|p| {
            [
                p.chance_to_beat_control,
                p.expected_loss,
                p.expected_loss_control,
            ]
            .iter()
            .all(|v| v.is_finite())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u64, conversions: u64) -> Moments {
        Sample::conversions(n, conversions).moments().unwrap()
    }

    #[test]
    fn detects_a_clear_lift_with_every_method() {
        let (c, t) = (m(10_000, 1_000), m(10_000, 1_200));
        for method in [
            Method::FixedHorizon,
            Method::Sequential { tau: None },
            Method::Bayesian,
        ] {
            let r = compare(&c, &t, method, 0.05).unwrap();
            assert!(r.significant, "{method:?}");
            assert!((r.relative.estimate - 0.2).abs() < 1e-12);
            assert!(
                r.relative.lower > 0.0 && r.relative.upper > 0.2,
                "{method:?}"
            );
        }
    }

    #[test]
    fn from_samples_is_the_same() {
        let (c, t) = (Sample::conversions(500, 50), Sample::conversions(500, 70));
        assert_eq!(
            compare_samples(&c, &t, Method::Bayesian, 0.05),
            compare(&m(500, 50), &m(500, 70), Method::Bayesian, 0.05)
        );
        assert!(matches!(
            compare_samples(&Sample::conversions(0, 0), &t, Method::Bayesian, 0.05),
            Err(StatsError::TooFewUnits { .. })
        ));
    }

    #[test]
    fn sequential_is_wider_than_fixed() {
        let (c, t) = (m(5_000, 500), m(5_000, 540));
        let f = compare(&c, &t, Method::FixedHorizon, 0.05).unwrap();
        let s = compare(&c, &t, Method::Sequential { tau: None }, 0.05).unwrap();
        assert!(s.relative.upper - s.relative.lower > f.relative.upper - f.relative.lower);
        assert!(s.relative.p_value.unwrap() >= f.relative.p_value.unwrap());
    }

    #[test]
    fn typed_errors() {
        let c = m(100, 10);
        assert_eq!(
            compare(&m(100, 0), &c, Method::FixedHorizon, 0.05),
            Err(StatsError::NonPositiveControlMean(0.0))
        );
        assert_eq!(
            compare(&m(100, 100), &m(100, 100), Method::FixedHorizon, 0.05),
            Err(StatsError::ZeroVariance)
        );
        assert_eq!(
            compare(&c, &m(100, 0), Method::Sequential { tau: None }, 0.05),
            Err(StatsError::ZeroVariance)
        );
        assert!(compare(&c, &c, Method::FixedHorizon, 1.0).is_err());
        assert!(compare(&c, &c, Method::Sequential { tau: Some(-1.0) }, 0.05).is_err());
        let one = Moments {
            n: 1,
            mean: 1.0,
            variance: 0.0,
        };
        assert!(matches!(
            compare(&one, &c, Method::Bayesian, 0.05),
            Err(StatsError::TooFewUnits { .. })
        ));
    }

    #[test]
    fn method_serde_shape() {
        let json = serde_json::to_string(&Method::Sequential { tau: Some(0.05) }).unwrap();
        assert_eq!(json, r#"{"kind":"sequential","tau":0.05}"#);
        let back: Method = serde_json::from_str(r#"{"kind":"fixed_horizon"}"#).unwrap();
        assert_eq!(back, Method::FixedHorizon);
    }
}
