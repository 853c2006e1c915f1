//! Error rates by simulation, with fixed seeds (so each run is the same run): the false-positive
//! rate of the fixed-horizon and Bayesian readings over A/A experiments, the always-valid
//! guarantee of the sequential test under peeking after every batch (and, for contrast, how
//! peeking breaks the fixed-horizon test), CUPED's A/A validity and gain, and the detection and
//! coverage of a real lift.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use vexil_stats::{Cuped, Method, Moments, Sample, compare, cuped};

const ALPHA: f64 = 0.05;

/// The sufficient statistics of `n` Bernoulli(`p`) units.
fn conversions(rng: &mut Xoshiro256PlusPlus, n: u64, p: f64) -> Sample {
    let c = (0..n).filter(|_| rng.random::<f64>() < p).count() as u64;
    Sample::conversions(n, c)
}

/// Adds two samples' sums (the next batch joining the running totals).
fn merge(a: Sample, b: Sample) -> Sample {
    Sample::new(a.n + b.n, a.sum + b.sum, a.sum_sq + b.sum_sq)
}

fn moments(s: Sample) -> Moments {
    s.moments()
        .expect("simulated samples have two or more units")
}

#[test]
fn a_a_false_positive_rate_is_alpha() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let runs = 2_000;
    let (mut fixed, mut bayes) = (0, 0);
    for _ in 0..runs {
        let c = moments(conversions(&mut rng, 2_000, 0.1));
        let t = moments(conversions(&mut rng, 2_000, 0.1));
        fixed += usize::from(
            compare(&c, &t, Method::FixedHorizon, ALPHA)
                .expect("fixed")
                .significant,
        );
        bayes += usize::from(
            compare(&c, &t, Method::Bayesian, ALPHA)
                .expect("bayes")
                .significant,
        );
    }
    let (fixed, bayes) = (fixed as f64 / runs as f64, bayes as f64 / runs as f64);
    assert!(
        (0.035..=0.065).contains(&fixed),
        "fixed-horizon false-positive rate {fixed}"
    );
    assert!(
        (0.035..=0.065).contains(&bayes),
        "Bayesian false-positive rate {bayes}"
    );
}

/// Runs `runs` A/A experiments of `batches` batches of `batch` units per arm and returns the
/// share in which *any* look (after every batch) was significant under `method`.
fn peeking_rate(seed: u64, method: Method, runs: usize, batches: usize, batch: u64) -> f64 {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut rejected = 0;
    for _ in 0..runs {
        let (mut c, mut t) = (Sample::new(0, 0.0, 0.0), Sample::new(0, 0.0, 0.0));
        let mut any = false;
        for _ in 0..batches {
            c = merge(c, conversions(&mut rng, batch, 0.1));
            t = merge(t, conversions(&mut rng, batch, 0.1));
            // A look with no control conversion yet has no relative lift: nothing to reject.
            if let Ok(r) = compare(&moments(c), &moments(t), method, ALPHA) {
                any |= r.significant;
            }
        }
        rejected += usize::from(any);
    }
    rejected as f64 / runs as f64
}

#[test]
fn sequential_stays_valid_when_peeking_after_every_batch() {
    for (seed, tau) in [(2, None), (3, Some(0.03))] {
        let rate = peeking_rate(seed, Method::Sequential { tau }, 2_000, 20, 100);
        assert!(
            rate <= ALPHA,
            "sequential (tau {tau:?}) false-positive rate {rate} under peeking"
        );
    }
}

#[test]
fn peeking_breaks_the_fixed_horizon_test() {
    // The reason the sequential method exists: the same looks with the fixed-horizon test reject
    // far more often than alpha. (If this failed the simulation above would prove nothing.)
    let rate = peeking_rate(4, Method::FixedHorizon, 2_000, 20, 100);
    assert!(
        rate > 0.15,
        "fixed-horizon false-positive rate under peeking only {rate}"
    );
}

/// One variation of `n` units with a pre-exposure covariate correlated with the metric.
fn with_history(rng: &mut Xoshiro256PlusPlus, n: u64, lift: f64) -> Cuped {
    let mut v = Cuped {
        y: Sample::new(n, 0.0, 0.0),
        sum_x: 0.0,
        sum_x2: 0.0,
        sum_xy: 0.0,
    };
    for _ in 0..n {
        // A unit's propensity drives both periods; a third of units have no history.
        let propensity = 10.0 * rng.random::<f64>();
        let x = if rng.random::<f64>() < 0.33 {
            0.0
        } else {
            propensity + 2.0 * rng.random::<f64>()
        };
        let y = (propensity + 2.0 * rng.random::<f64>()) * (1.0 + lift);
        v.y.sum += y;
        v.y.sum_sq += y * y;
        v.sum_x += x;
        v.sum_x2 += x * x;
        v.sum_xy += x * y;
    }
    v
}

#[test]
fn cuped_keeps_alpha_and_narrows_intervals() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let runs = 2_000;
    let (mut false_positives, mut narrower) = (0, 0);
    for _ in 0..runs {
        let (c, t) = (
            with_history(&mut rng, 500, 0.0),
            with_history(&mut rng, 500, 0.0),
        );
        let adjusted = cuped(&[c, t]).expect("cuped");
        let r = compare(
            &adjusted.adjusted[0],
            &adjusted.adjusted[1],
            Method::FixedHorizon,
            ALPHA,
        )
        .expect("compare");
        false_positives += usize::from(r.significant);
        let raw = compare(&moments(c.y), &moments(t.y), Method::FixedHorizon, ALPHA).expect("raw");
        narrower += usize::from(r.relative.std_error < raw.relative.std_error);
    }
    let rate = false_positives as f64 / runs as f64;
    assert!(
        (0.035..=0.065).contains(&rate),
        "CUPED false-positive rate {rate}"
    );
    assert_eq!(
        narrower, runs,
        "CUPED must narrow every interval with this covariate"
    );
}

#[test]
fn a_real_lift_is_detected_and_covered() {
    // Control converts 10 %, treatment 12 % (+20 % relative), 10,000 units per arm.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
    let runs = 1_000;
    let (mut detected, mut covered, mut sequential, mut bayes) = (0, 0, 0, 0);
    for _ in 0..runs {
        let c = moments(conversions(&mut rng, 10_000, 0.10));
        let t = moments(conversions(&mut rng, 10_000, 0.12));
        let r = compare(&c, &t, Method::FixedHorizon, ALPHA).expect("fixed");
        detected += usize::from(r.significant);
        covered += usize::from(r.relative.lower <= 0.2 && 0.2 <= r.relative.upper);
        let s = compare(&c, &t, Method::Sequential { tau: None }, ALPHA).expect("sequential");
        sequential += usize::from(s.significant);
        let b = compare(&c, &t, Method::Bayesian, ALPHA).expect("bayes");
        bayes += usize::from(b.posterior.expect("posterior").chance_to_beat_control > 0.95);
    }
    let share = |k: usize| k as f64 / runs as f64;
    // Power of this design is about 0.99 for the fixed-horizon test.
    assert!(
        share(detected) >= 0.97,
        "fixed-horizon power {}",
        share(detected)
    );
    assert!(
        (0.93..=0.97).contains(&share(covered)),
        "95 % interval coverage {}",
        share(covered)
    );
    // The always-valid test pays for its guarantee with power, but still finds this lift.
    assert!(
        share(sequential) >= 0.8,
        "sequential power {}",
        share(sequential)
    );
    assert!(
        share(bayes) >= 0.97,
        "Bayesian chance to beat control > 95 % in {}",
        share(bayes)
    );
}
