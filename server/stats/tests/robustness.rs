//! "Never panic, never return NaN silently": every public function over random inputs from
//! ordinary to absurd (empty, huge, tiny, negative, NaN, infinite, inconsistent sums) returns
//! either an error or finite numbers in their ranges.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use vexil_stats::{
    Cuped, Method, Sample, SampleSizeInput, compare_samples, cuped, holm, sample_size, srm,
};

/// A float from a wide menu: typical magnitudes, extremes and non-finite values.
fn wild(rng: &mut Xoshiro256PlusPlus) -> f64 {
    match rng.random_range(0..12) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => -1.0,
        3 => 0.0,
        4 => 1e300,
        5 => 1e-300,
        6 => f64::MIN_POSITIVE / 4.0,
        7 => 10f64.powi(rng.random_range(-20..20)) * rng.random::<f64>(),
        _ => 100.0 * rng.random::<f64>(),
    }
}

fn wild_n(rng: &mut Xoshiro256PlusPlus) -> u64 {
    match rng.random_range(0..6) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        _ => rng.random_range(2..100_000),
    }
}

/// A sample that is usually consistent (sums of real data) and sometimes not.
fn sample(rng: &mut Xoshiro256PlusPlus) -> Sample {
    let n = wild_n(rng);
    if rng.random::<f64>() < 0.5 {
        let mean = wild(rng);
        let var = wild(rng);
        let nf = n as f64;
        Sample::new(n, mean * nf, (var + mean * mean) * nf)
    } else {
        Sample::new(n, wild(rng), wild(rng))
    }
}

fn method(rng: &mut Xoshiro256PlusPlus) -> Method {
    match rng.random_range(0..4) {
        0 => Method::FixedHorizon,
        1 => Method::Sequential { tau: None },
        2 => Method::Sequential {
            tau: Some(wild(rng)),
        },
        _ => Method::Bayesian,
    }
}

fn unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

#[test]
fn compare_is_total() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    let mut ok = 0;
    for _ in 0..200_000 {
        let (c, t) = (sample(&mut rng), sample(&mut rng));
        let alpha = if rng.random::<f64>() < 0.8 {
            rng.random::<f64>()
        } else {
            wild(&mut rng)
        };
        let Ok(r) = compare_samples(&c, &t, method(&mut rng), alpha) else {
            continue;
        };
        ok += 1;
        for e in [r.absolute, r.relative] {
            assert!(
                e.estimate.is_finite() && e.std_error > 0.0,
                "{c:?} {t:?} {r:?}"
            );
            assert!(
                e.lower <= e.estimate && e.estimate <= e.upper,
                "{c:?} {t:?} {r:?}"
            );
            assert!(e.p_value.is_none_or(unit), "{c:?} {t:?} {r:?}");
        }
        if let Some(p) = r.posterior {
            assert!(unit(p.chance_to_beat_control), "{r:?}");
            assert!(
                p.expected_loss >= 0.0 && p.expected_loss_control >= 0.0,
                "{r:?}"
            );
        }
    }
    // The generator must also produce plenty of valid comparisons, or this proves little.
    assert!(ok > 5_000, "only {ok} valid comparisons");
}

#[test]
fn the_other_functions_are_total() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(12);
    for _ in 0..50_000 {
        let k = rng.random_range(0..5);
        let observed: Vec<u64> = (0..k).map(|_| wild_n(&mut rng)).collect();
        let weights: Vec<f64> = (0..rng.random_range(0..5))
            .map(|_| wild(&mut rng))
            .collect();
        if let Ok(r) = srm(&observed, &weights) {
            assert!(
                unit(r.p_value) && r.chi2 >= 0.0 && !r.chi2.is_nan(),
                "{r:?}"
            );
        }

        let p: Vec<f64> = (0..k).map(|_| wild(&mut rng)).collect();
        if let Ok(adjusted) = holm(&p) {
            assert!(adjusted.iter().zip(&p).all(|(a, p)| unit(*a) && a >= p));
        }

        let variations: Vec<Cuped> = (0..k)
            .map(|_| Cuped {
                y: sample(&mut rng),
                sum_x: wild(&mut rng),
                sum_x2: wild(&mut rng),
                sum_xy: wild(&mut rng),
            })
            .collect();
        if let Ok(r) = cuped(&variations) {
            assert!(r.theta.is_finite());
            assert!(
                r.adjusted
                    .iter()
                    .all(|m| m.mean.is_finite() && m.variance >= 0.0)
            );
        }

        let input = SampleSizeInput {
            baseline_mean: wild(&mut rng),
            baseline_variance: wild(&mut rng),
            mde_relative: wild(&mut rng),
            alpha: rng.random::<f64>(),
            power: rng.random::<f64>(),
            variations: rng.random_range(0..6),
            daily_units: Some(wild(&mut rng)),
        };
        if let Ok(r) = sample_size(&input) {
            assert!(r.per_variation_exact.is_finite() && r.per_variation_exact > 0.0);
            assert!(r.total >= r.per_variation);
            assert!(r.days.is_some_and(|d| d.is_finite() && d >= 0.0));
        }
    }
}
