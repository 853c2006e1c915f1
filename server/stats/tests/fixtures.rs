//! Every estimator against the committed fixtures from an independent implementation
//! (`fixtures/generate.py`: scipy, statsmodels and numpy on the raw simulated data; the crate
//! sees only the sums).
//!
//! Tolerance: a value `a` matches the expected `b` when `|a − b| ≤ 1e-6·|b| + 1e-12`, that is a
//! relative error of 1e-6, with an absolute floor of 1e-12 for values at or near zero (an
//! estimate of exactly 0, a p-value of 1e-40 that quad or a root finder only resolves
//! absolutely). The special functions are held to 1e-12 relative.

use serde_json::Value;
use vexil_stats::{
    Comparison, Cuped, Effect, Method, Moments, Sample, SampleSizeInput, compare, cuped, dist,
    holm, sample_size, srm,
};

fn cases() -> Value {
    let text = include_str!("../fixtures/cases.json");
    serde_json::from_str(text).expect("fixtures/cases.json is valid JSON")
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[track_caller]
fn close(what: &str, actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= 1e-6 * expected.abs() + 1e-12,
        "{what}: got {actual:e}, expected {expected:e}"
    );
}

#[track_caller]
fn very_close(what: &str, actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= 1e-12 * expected.abs(),
        "{what}: got {actual:e}, expected {expected:e}"
    );
}

fn sample(v: &Value) -> Sample {
    Sample::new(v["n"].as_u64().expect("n"), f(v, "sum"), f(v, "sum_sq"))
}

#[test]
fn normal_quantiles() {
    let c = cases();
    for case in c["normal_quantile"].as_array().expect("cases") {
        let p = f(case, "p");
        very_close(
            &format!("quantile({p})"),
            dist::normal_quantile(p),
            f(case, "x"),
        );
    }
}

#[test]
fn normal_tails() {
    let c = cases();
    for case in c["normal_sf"].as_array().expect("cases") {
        let x = f(case, "x");
        very_close(&format!("sf({x})"), dist::normal_sf(x), f(case, "sf"));
        very_close(&format!("cdf({x})"), dist::normal_cdf(x), f(case, "cdf"));
    }
}

#[test]
fn chi_square_tails() {
    let c = cases();
    for case in c["chi2_sf"].as_array().expect("cases") {
        let (x, df) = (f(case, "x"), f(case, "df"));
        very_close(
            &format!("chi2_sf({x}, {df})"),
            dist::chi2_sf(x, df),
            f(case, "sf"),
        );
    }
}

fn check_effect(name: &str, which: &str, actual: &Effect, expected: &Value) {
    let what = |field: &str| format!("{name}: {which}.{field}");
    close(&what("estimate"), actual.estimate, f(expected, "estimate"));
    close(
        &what("std_error"),
        actual.std_error,
        f(expected, "std_error"),
    );
    close(&what("lower"), actual.lower, f(expected, "lower"));
    close(&what("upper"), actual.upper, f(expected, "upper"));
    match (actual.p_value, expected["p_value"].as_f64()) {
        (Some(a), Some(e)) => close(&what("p_value"), a, e),
        (None, None) => {}
        (a, e) => panic!("{}: {a:?} vs {e:?}", what("p_value")),
    }
}

#[test]
fn comparisons() {
    let c = cases();
    let all = c["compare"].as_array().expect("cases");
    assert!(all.len() >= 80, "{} comparison cases", all.len());
    for case in all {
        let name = case["name"].as_str().expect("name");
        let control = sample(&case["control"]).moments().expect("control");
        let treatment = sample(&case["treatment"]).moments().expect("treatment");
        let method: Method = serde_json::from_value(case["method"].clone()).expect("method");
        let r: Comparison = compare(&control, &treatment, method, f(case, "alpha"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let e = &case["expected"];
        close(
            &format!("{name}: control_mean"),
            r.control_mean,
            f(e, "control_mean"),
        );
        close(
            &format!("{name}: treatment_mean"),
            r.treatment_mean,
            f(e, "treatment_mean"),
        );
        check_effect(name, "absolute", &r.absolute, &e["absolute"]);
        check_effect(name, "relative", &r.relative, &e["relative"]);
        match (&r.posterior, e["posterior"].is_null()) {
            (Some(p), false) => {
                let ep = &e["posterior"];
                for (field, actual) in [
                    ("chance_to_beat_control", p.chance_to_beat_control),
                    ("expected_loss", p.expected_loss),
                    ("expected_loss_control", p.expected_loss_control),
                ] {
                    close(&format!("{name}: {field}"), actual, f(ep, field));
                }
            }
            (None, true) => {}
            (p, _) => panic!("{name}: posterior {p:?} vs {}", e["posterior"]),
        }
        assert_eq!(
            r.significant,
            e["significant"].as_bool().expect("significant"),
            "{name}: significant"
        );
    }
}

#[test]
fn cuped_adjustment() {
    let c = cases();
    for (i, case) in c["cuped"].as_array().expect("cases").iter().enumerate() {
        let variations: Vec<Cuped> = case["variations"]
            .as_array()
            .expect("variations")
            .iter()
            .map(|v| Cuped {
                y: sample(&v["y"]),
                sum_x: f(v, "sum_x"),
                sum_x2: f(v, "sum_x2"),
                sum_xy: f(v, "sum_xy"),
            })
            .collect();
        let r = cuped(&variations).expect("cuped");
        let e = &case["expected"];
        close(&format!("cuped {i}: theta"), r.theta, f(e, "theta"));
        let expected: Vec<&Value> = e["adjusted"].as_array().expect("adjusted").iter().collect();
        assert_eq!(r.adjusted.len(), expected.len());
        for (g, (a, x)) in r.adjusted.iter().zip(expected).enumerate() {
            assert_eq!(a.n, x["n"].as_u64().expect("n"));
            close(&format!("cuped {i}/{g}: mean"), a.mean, f(x, "mean"));
            close(
                &format!("cuped {i}/{g}: variance"),
                a.variance,
                f(x, "variance"),
            );
        }
        // The adjusted moments analyse like any others: the same test statsmodels runs on the
        // adjusted raw values.
        let r = compare(&r.adjusted[0], &r.adjusted[1], Method::FixedHorizon, 0.05)
            .expect("compare adjusted");
        check_effect(
            &format!("cuped {i}"),
            "absolute",
            &r.absolute,
            &e["fixed_horizon_absolute"],
        );
        // CUPED must have reduced the variance whenever the covariate is informative.
        let raw: Vec<Moments> = variations
            .iter()
            .map(|v| v.y.moments().expect("raw"))
            .collect();
        assert!(
            r.absolute.std_error <= (raw[0].variance_of_mean() + raw[1].variance_of_mean()).sqrt()
        );
    }
}

#[test]
fn sample_ratio_mismatch() {
    let c = cases();
    for case in c["srm"].as_array().expect("cases") {
        let observed: Vec<u64> = case["observed"]
            .as_array()
            .expect("observed")
            .iter()
            .map(|v| v.as_u64().expect("count"))
            .collect();
        let weights: Vec<f64> = case["weights"]
            .as_array()
            .expect("weights")
            .iter()
            .map(|v| v.as_f64().expect("weight"))
            .collect();
        let r = srm(&observed, &weights).expect("srm");
        close(&format!("srm {observed:?}: chi2"), r.chi2, f(case, "chi2"));
        close(
            &format!("srm {observed:?}: p"),
            r.p_value,
            f(case, "p_value"),
        );
        assert_eq!(u64::from(r.df), case["df"].as_u64().expect("df"));
        assert_eq!(r.mismatch, f(case, "p_value") < 0.001, "{observed:?}");
    }
}

#[test]
fn holm_correction() {
    let c = cases();
    for case in c["holm"].as_array().expect("cases") {
        let p: Vec<f64> = case["p_values"]
            .as_array()
            .expect("p")
            .iter()
            .map(|v| v.as_f64().expect("p"))
            .collect();
        let adjusted = holm(&p).expect("holm");
        for (a, e) in adjusted
            .iter()
            .zip(case["adjusted"].as_array().expect("adjusted"))
        {
            close(&format!("holm {p:?}"), *a, e.as_f64().expect("adjusted"));
        }
    }
}

#[test]
fn sample_sizes() {
    let c = cases();
    for case in c["sample_size"].as_array().expect("cases") {
        let input = SampleSizeInput {
            baseline_mean: f(case, "baseline_mean"),
            baseline_variance: f(case, "baseline_variance"),
            mde_relative: f(case, "mde_relative"),
            alpha: f(case, "alpha"),
            power: f(case, "power"),
            variations: 2,
            daily_units: None,
        };
        let r = sample_size(&input).expect("sample size");
        close(
            &format!("sample size {case}"),
            r.per_variation_exact,
            f(case, "per_variation_exact"),
        );
    }
}
