//! The guardrail test of a release plan: has the treatment (the variation being rolled out)
//! regressed a metric by more than a tolerated relative threshold against the control (the
//! variation it replaces)? Read after every check, for as long as a step lasts, without
//! inflating the false-alarm rate.
//!
//! Notation as in [`compare`](crate::compare): `ȳ_c, ȳ_t` the means, `V_c = s_c²/n_c`,
//! `V_t = s_t²/n_t`. The regression is the relative change in the bad direction,
//! `R = ȳ_t/ȳ_c − 1` when an increase is bad (errors, latency) and `R = 1 − ȳ_t/ȳ_c` when a
//! decrease is bad (conversions), with the delta-method variance
//! `V = V_t/ȳ_c² + ȳ_t² V_c/ȳ_c⁴` (Deng, Knoblich & Lu, KDD 2018). With the threshold `r`
//! (0.1 = a 10 % regression is tolerated) the hypotheses are one-sided:
//!
//! `H₀: R ≤ r` (no breach) against `H₁: R > r` (breach).
//!
//! **One-sided mixture SPRT.** Under the normal approximation `R̂ ~ N(R, V)`, the likelihood
//! ratio of `R = r + δ` against `R = r` is `exp(δ d/V − δ²/(2V))` with `d = R̂ − r`. Mixing
//! `δ` over a half-normal distribution with scale `τ` (only regressions *beyond* the threshold
//! are alternatives) gives, in closed form,
//!
//! `Λ = 2 · √(V/(V+τ²)) · exp(τ² d² / (2V(V+τ²))) · Φ(d τ / √(V(V+τ²)))`.
//!
//! For each `δ > 0` the likelihood ratio is a non-negative martingale when `R = r` and a
//! supermartingale when `R < r`, so their mixture `Λ` is one too, and by Ville's inequality
//! `P(∃ look: Λ ≥ 1/α) ≤ α` under `H₀`: a breach may be declared the first time `Λ ≥ 1/α`,
//! however often the data are looked at (Robbins 1970; Johari, Koomen, Pekelis & Walsh,
//! "Always Valid Inference", Operations Research 2022, whose two-sided normal mixture this is
//! with the mixing distribution restricted to `δ > 0`; Howard, Ramdas, McAuliffe & Sekhon,
//! "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics
//! 2021, §3 for one-sided mixtures). The always-valid p-value is `min(1, 1/Λ)`. As in
//! [`compare`](crate::compare), `V` is estimated from the data at each look (the usual
//! plug-in of the mixture SPRT for large samples); `tests/simulation.rs` checks the false-alarm
//! rate under a look after every batch, and `fixtures/guardrail.json` checks `Λ` against a
//! numerical integration of the mixture (`fixtures/generate_guardrail.py`, mpmath).
//!
//! `τ` is on the relative scale: the size of regressions beyond the threshold the test is
//! tuned to catch fastest (default [`DEFAULT_GUARDRAIL_TAU`]: 50 percentage points: a
//! guardrail is there to catch gross regressions within minutes, small ones take longer).

use serde::{Deserialize, Serialize};

use crate::dist::normal_cdf;
use crate::error::{StatsError, check_alpha};
use crate::sample::Moments;

/// Default mixture scale `τ` of the guardrail test, on the relative scale.
pub const DEFAULT_GUARDRAIL_TAU: f64 = 0.5;

/// `ln 2`.
const LN_2: f64 = std::f64::consts::LN_2;

/// Which way a metric regresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is worse (error rates, latency).
    #[default]
    Increase,
    /// Lower is worse (conversions, successful checkouts).
    Decrease,
}

/// The parameters of a guardrail test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuardrailTest {
    /// The tolerated relative regression `r` (0.1 = 10 %); 0 or more.
    pub threshold: f64,
    /// Which way the metric regresses.
    pub direction: Direction,
    /// The false-alarm rate over all looks (0.05).
    pub alpha: f64,
    /// Mixture scale `τ` (relative); see the module documentation.
    pub tau: f64,
}

/// One look of [`guardrail`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuardrailReading {
    /// Control mean `ȳ_c`.
    pub control_mean: f64,
    /// Treatment mean `ȳ_t`.
    pub treatment_mean: f64,
    /// The estimated relative regression `R̂` (0.5 = 50 % worse on the treatment).
    pub regression: f64,
    /// Its standard error `√V` (delta method).
    pub std_error: f64,
    /// The tolerated regression `r`.
    pub threshold: f64,
    /// `ln Λ`, the log of the mixture likelihood ratio (a logarithm so that it never
    /// overflows).
    pub log_likelihood_ratio: f64,
    /// The always-valid p-value of `H₀: R ≤ r`, `min(1, 1/Λ)`.
    pub p_value: f64,
    /// Whether `Λ ≥ 1/α`: the regression exceeds the threshold at level `α`.
    pub breached: bool,
}

/// The mixture likelihood ratio's logarithm `ln Λ` for an estimate `estimate` with variance
/// `variance` of a parameter tested against `H₀: θ ≤ threshold`, half-normal mixture of scale
/// `tau` (the formula of the module documentation).
///
/// # Errors
/// [`StatsError::InvalidInput`] unless `variance > 0`, `tau > 0` and all inputs are finite.
pub fn one_sided_log_lr(
    estimate: f64,
    variance: f64,
    threshold: f64,
    tau: f64,
) -> Result<f64, StatsError> {
    if !(estimate.is_finite() && threshold.is_finite()) {
        return Err(StatsError::InvalidInput {
            field: "estimate",
            rule: "must be a finite number",
        });
    }
    if !(variance.is_finite() && variance > 0.0) {
        return Err(StatsError::InvalidInput {
            field: "variance",
            rule: "must be a finite, positive number",
        });
    }
    check_tau(tau)?;
    let t2 = tau * tau;
    let d = estimate - threshold;
    let spread = variance * (variance + t2);
    let ln_phi = normal_cdf(d * tau / spread.sqrt()).ln();
    Ok(LN_2 + 0.5 * (variance / (variance + t2)).ln() + t2 * d * d / (2.0 * spread) + ln_phi)
}

fn check_tau(tau: f64) -> Result<f64, StatsError> {
    if tau.is_finite() && tau > 0.0 {
        Ok(tau)
    } else {
        Err(StatsError::InvalidInput {
            field: "tau",
            rule: "must be a finite, positive number",
        })
    }
}

/// Tests whether `treatment` regresses against `control` by more than `test.threshold`.
///
/// # Errors
/// [`StatsError::TooFewUnits`] when a variation has fewer than 2 units,
/// [`StatsError::NonPositiveControlMean`] when `ȳ_c ≤ 0` (no relative change is defined: a
/// guardrail on errors with no error at all on the control cannot read yet),
/// [`StatsError::ZeroVariance`] when the regression's standard error is 0,
/// [`StatsError::InvalidInput`] on a bad threshold, `alpha`, `tau` or moments.
pub fn guardrail(
    control: &Moments,
    treatment: &Moments,
    test: &GuardrailTest,
) -> Result<GuardrailReading, StatsError> {
    control.validate("control")?;
    treatment.validate("treatment")?;
    let alpha = check_alpha(test.alpha)?;
    check_tau(test.tau)?;
    if !(test.threshold.is_finite() && test.threshold >= 0.0) {
        return Err(StatsError::InvalidInput {
            field: "threshold",
            rule: "must be a finite number, 0 or more",
        });
    }
    for (field, m) in [("control", control), ("treatment", treatment)] {
        if m.n < 2 {
            return Err(StatsError::TooFewUnits {
                field,
                n: m.n,
                needed: 2,
            });
        }
    }
    let (mc, mt) = (control.mean, treatment.mean);
    if mc <= 0.0 {
        return Err(StatsError::NonPositiveControlMean(mc));
    }
    let (vc, vt) = (control.variance_of_mean(), treatment.variance_of_mean());
    let var = vt / (mc * mc) + mt * mt * vc / (mc * mc * mc * mc);
    if var.is_nan() || var <= 0.0 {
        return Err(StatsError::ZeroVariance);
    }
    let lift = mt / mc - 1.0;
    let regression = match test.direction {
        Direction::Increase => lift,
        Direction::Decrease => -lift,
    };
    let log_lr = one_sided_log_lr(regression, var, test.threshold, test.tau)?;
    let reading = GuardrailReading {
        control_mean: mc,
        treatment_mean: mt,
        regression,
        std_error: var.sqrt(),
        threshold: test.threshold,
        log_likelihood_ratio: log_lr,
        p_value: (-log_lr).exp().min(1.0),
        breached: log_lr >= -alpha.ln(),
    };
    let finite = [
        reading.regression,
        reading.std_error,
        reading.p_value,
        reading.control_mean,
        reading.treatment_mean,
    ]
    .iter()
    .all(|x| x.is_finite())
        && !reading.log_likelihood_ratio.is_nan();
    if finite {
        Ok(reading)
    } else {
        Err(StatsError::InvalidInput {
            field: "moments",
            rule: "magnitudes too large to compare in double precision",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sample;

    fn test(threshold: f64) -> GuardrailTest {
        GuardrailTest {
            threshold,
            direction: Direction::Increase,
            alpha: 0.05,
            tau: DEFAULT_GUARDRAIL_TAU,
        }
    }

    fn rate(n: u64, errors: u64) -> Moments {
        Sample::conversions(n, errors)
            .moments()
            .expect("two or more units")
    }

    #[test]
    fn five_times_the_errors_breach_and_equal_rates_do_not() {
        let bad = guardrail(&rate(2_000, 40), &rate(2_000, 200), &test(0.1)).expect("reads");
        assert!(bad.breached, "{bad:?}");
        assert!((bad.regression - 4.0).abs() < 1e-12);
        assert!(bad.p_value < 0.05);
        let same = guardrail(&rate(2_000, 40), &rate(2_000, 40), &test(0.1)).expect("reads");
        assert!(!same.breached, "{same:?}");
        assert!(same.p_value > 0.5);
    }

    #[test]
    fn the_direction_decides_what_a_regression_is() {
        let fewer = rate(2_000, 40);
        let more = rate(2_000, 200);
        let mut t = test(0.1);
        t.direction = Direction::Decrease;
        // Conversions up five-fold: no regression when lower is worse.
        assert!(!guardrail(&fewer, &more, &t).expect("reads").breached);
        // Conversions down to a fifth: a regression of 80 %.
        let r = guardrail(&more, &fewer, &t).expect("reads");
        assert!(r.breached);
        assert!((r.regression - 0.8).abs() < 1e-12);
    }

    #[test]
    fn a_regression_within_the_threshold_never_breaches() {
        // +5 % on a huge sample, 10 % tolerated.
        let r = guardrail(
            &rate(1_000_000, 100_000),
            &rate(1_000_000, 105_000),
            &test(0.1),
        )
        .expect("reads");
        assert!(!r.breached, "{r:?}");
    }

    #[test]
    fn the_closed_form_is_twice_phi_times_the_two_sided_mixture() {
        // At d = 0 the half-normal mixture is exactly the two-sided one (Φ(0) = 1/2).
        let (v, tau) = (0.04_f64, 0.25_f64);
        let l = one_sided_log_lr(0.3, v, 0.3, tau).expect("finite");
        assert!((l - 0.5 * (v / (v + tau * tau)).ln()).abs() < 1e-12);
        // Far below the threshold the statistic vanishes.
        assert!(one_sided_log_lr(-10.0, v, 0.0, tau).expect("finite") < -10.0);
    }

    #[test]
    fn bad_inputs_are_errors_not_nan() {
        let m = rate(100, 10);
        let zero = rate(100, 0);
        assert_eq!(
            guardrail(&zero, &m, &test(0.1)),
            Err(StatsError::NonPositiveControlMean(0.0))
        );
        let mut t = test(-0.1);
        assert!(guardrail(&m, &m, &t).is_err());
        t = test(0.1);
        t.tau = 0.0;
        assert!(guardrail(&m, &m, &t).is_err());
        t = test(0.1);
        t.alpha = 1.0;
        assert!(guardrail(&m, &m, &t).is_err());
        assert!(one_sided_log_lr(0.1, 0.0, 0.0, 0.1).is_err());
        assert!(one_sided_log_lr(f64::NAN, 0.1, 0.0, 0.1).is_err());
    }
}
