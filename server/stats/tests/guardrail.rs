//! The guardrail test against an independent implementation and by simulation.
//!
//! - `fixtures/guardrail.json` (`fixtures/generate_guardrail.py`): the mixture likelihood
//!   ratio integrated numerically with mpmath over the half-normal mixing density, on simulated
//!   raw data; the crate computes it in closed form from the sums.
//! - The false-alarm rate with a look after every batch, on the boundary of the null
//!   (the regression exactly at the threshold) and inside it (A/A), stays below `α`, while the
//!   same looks with a one-sided z-test raise it several-fold; a 5× error rate is caught.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;
use vexil_stats::{Direction, GuardrailTest, Moments, Sample, dist::normal_quantile, guardrail};

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    control: Sample,
    treatment: Sample,
    test: GuardrailTest,
    expected: Expected,
}

#[derive(Deserialize)]
struct Expected {
    regression: f64,
    std_error: f64,
    log_likelihood_ratio: f64,
    p_value: f64,
    breached: bool,
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let tol = rel * want.abs().max(1e-12);
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} (±{tol})"
    );
}

#[test]
fn matches_the_numerical_integration_of_the_mixture() {
    let fixture: Fixture = serde_json::from_str(include_str!("../fixtures/guardrail.json"))
        .expect("fixtures/guardrail.json is valid JSON");
    assert!(fixture.cases.len() >= 10);
    let mut breached = 0;
    for c in &fixture.cases {
        let got = guardrail(
            &c.control.moments().expect("control"),
            &c.treatment.moments().expect("treatment"),
            &c.test,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let e = &c.expected;
        close(
            got.regression,
            e.regression,
            1e-9,
            &format!("{} regression", c.name),
        );
        close(
            got.std_error,
            e.std_error,
            1e-7,
            &format!("{} std_error", c.name),
        );
        // The closed form against quadrature: agreement to 1e-6 absolute on ln Λ.
        assert!(
            (got.log_likelihood_ratio - e.log_likelihood_ratio).abs() < 1e-6,
            "{} ln Λ: got {}, want {}",
            c.name,
            got.log_likelihood_ratio,
            e.log_likelihood_ratio
        );
        close(got.p_value, e.p_value, 1e-5, &format!("{} p", c.name));
        assert_eq!(got.breached, e.breached, "{}", c.name);
        breached += usize::from(got.breached);
    }
    // The fixture exercises both verdicts.
    assert!((2..fixture.cases.len()).contains(&breached));
}

fn bernoulli(rng: &mut Xoshiro256PlusPlus, n: u64, p: f64) -> Sample {
    let c = (0..n).filter(|_| rng.random::<f64>() < p).count() as u64;
    Sample::conversions(n, c)
}

fn merge(a: Sample, b: Sample) -> Sample {
    Sample::new(a.n + b.n, a.sum + b.sum, a.sum_sq + b.sum_sq)
}

fn moments(s: Sample) -> Moments {
    s.moments().expect("two or more units")
}

const ALPHA: f64 = 0.05;

/// The share of `runs` in which any of `looks` looks (after each batch of `batch` units per
/// arm, control rate `pc`, treatment rate `pt`) declared a breach of `threshold`; `naive`
/// uses a one-sided z-test at `α` at every look instead of the mixture SPRT.
fn alarm_rate(seed: u64, (pc, pt): (f64, f64), threshold: f64, naive: bool) -> f64 {
    let (runs, looks, batch) = (1_000, 30, 200);
    let test = GuardrailTest {
        threshold,
        direction: Direction::Increase,
        alpha: ALPHA,
        tau: vexil_stats::DEFAULT_GUARDRAIL_TAU,
    };
    let z = normal_quantile(1.0 - ALPHA);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut alarms = 0;
    for _ in 0..runs {
        let (mut c, mut t) = (Sample::new(0, 0.0, 0.0), Sample::new(0, 0.0, 0.0));
        let mut alarm = false;
        for _ in 0..looks {
            c = merge(c, bernoulli(&mut rng, batch, pc));
            t = merge(t, bernoulli(&mut rng, batch, pt));
            let Ok(r) = guardrail(&moments(c), &moments(t), &test) else {
                continue;
            };
            alarm |= if naive {
                (r.regression - threshold) / r.std_error > z
            } else {
                r.breached
            };
        }
        alarms += usize::from(alarm);
    }
    let rate = alarms as f64 / runs as f64;
    eprintln!("alarm rate {rate} (seed {seed}, naive {naive})");
    rate
}

#[test]
fn false_alarms_stay_below_alpha_with_a_look_after_every_batch() {
    // On the boundary of the null: the treatment is exactly 10 % worse, 10 % tolerated.
    let boundary = alarm_rate(11, (0.1, 0.11), 0.1, false);
    assert!(boundary <= ALPHA, "boundary false-alarm rate {boundary}");
    // A/A with no tolerance at all.
    let same = alarm_rate(12, (0.05, 0.05), 0.0, false);
    assert!(same <= ALPHA, "A/A false-alarm rate {same}");
}

#[test]
fn the_same_looks_with_a_fixed_horizon_test_raise_false_alarms() {
    // Why the sequential test: thirty looks at a one-sided z-test alarm far more often than α.
    let naive = alarm_rate(12, (0.05, 0.05), 0.0, true);
    assert!(
        naive > 2.0 * ALPHA,
        "naive false-alarm rate under peeking {naive}"
    );
}

#[test]
fn five_times_the_errors_are_caught() {
    let caught = alarm_rate(13, (0.02, 0.10), 0.1, false);
    assert!(caught > 0.99, "detection rate {caught}");
}
