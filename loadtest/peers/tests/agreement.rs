//! Every peer, given the faithful translation of a benchmark flag, serves the same variation
//! (and value) as Vexil for the benchmark context, so the benchmark compares equal work.

use vexil_eval::CompiledSnapshot;
use vexil_peers::{launchdarkly, unleash, vexil_outcome};
use vexil_schema::fixture::{BenchFixture, load_bench_fixtures};

fn fixtures() -> Vec<BenchFixture> {
    let fixtures = load_bench_fixtures().unwrap();
    let names: Vec<_> = fixtures.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["experiment", "simple-bool", "targeting"]);
    fixtures
}

#[test]
fn vexil_serves_what_the_fixtures_expect() {
    for fixture in fixtures() {
        let outcome = vexil_outcome(&fixture);
        assert_eq!(
            outcome.variation, fixture.expected.variation,
            "{}",
            fixture.name
        );
        assert_eq!(
            outcome.in_experiment, fixture.expected.in_experiment,
            "{}",
            fixture.name
        );
    }
}

#[test]
fn launchdarkly_serves_the_same_variation_and_value() {
    for fixture in fixtures() {
        let peer = launchdarkly::Prepared::prepare(&fixture).unwrap();
        assert_eq!(
            peer.variation(),
            fixture.expected.variation,
            "{}",
            fixture.name
        );
        assert_eq!(
            peer.value(),
            Some(fixture.expected.value.clone()),
            "{}",
            fixture.name
        );
        assert_eq!(
            peer.in_experiment(),
            fixture.expected.in_experiment,
            "{}",
            fixture.name
        );
    }
}

#[test]
fn unleash_serves_the_same_variation() {
    for fixture in fixtures() {
        let peer = unleash::Prepared::prepare(&fixture).unwrap();
        assert_eq!(
            peer.variation(),
            fixture.expected.variation,
            "{}",
            fixture.name
        );
    }
}

/// The translation, not the benchmark context alone, is faithful: contexts that take other
/// paths through the targeting flag (an earlier rule, the segment's include list, the
/// exclude list, the fallthrough, the flag switched off) get the same variation from every
/// engine.
#[test]
fn peers_agree_with_vexil_on_other_paths() {
    let fixture = fixtures()
        .into_iter()
        .find(|f| f.name == "targeting")
        .unwrap();
    let mut cases = Vec::new();
    // Rule 1 matches when the device is one of its fifth clause's values.
    let mut ctx = fixture.context.clone();
    ctx.set("device", "linux");
    cases.push(("rule-1", ctx, Some(1)));
    // Rule 6's negated country clause matches outside its list.
    let mut ctx = fixture.context.clone();
    ctx.set("country", "CH");
    ctx.set("org", "none");
    ctx.set("beta", false);
    cases.push(("country CH: rule 6 only if earlier rules fail", ctx, None));
    // In the segment through its include list although the segment's rule fails.
    let mut ctx = fixture.context.clone();
    ctx.set_key(Some("customer-7".into()));
    ctx.set("org", "none");
    cases.push(("included key", ctx, Some(10)));
    // Excluded: the segment's rule no longer admits, so the fallthrough serves.
    let mut ctx = fixture.context.clone();
    ctx.set_key(Some("user-2".into()));
    cases.push(("excluded key", ctx, Some(0)));
    // Too young for every rule: fallthrough.
    let mut ctx = fixture.context.clone();
    ctx.set("age", 12);
    cases.push(("fallthrough", ctx, Some(0)));

    let compiled = CompiledSnapshot::compile(&fixture.snapshot);
    for (name, ctx, expected) in cases {
        let vexil = compiled.evaluate(&fixture.flag, &ctx).variation;
        if let Some(expected) = expected {
            assert_eq!(vexil, Some(expected), "vexil: {name}");
        }
        let variant = BenchFixture {
            context: ctx.clone(),
            ..fixture.clone()
        };
        let ld = launchdarkly::Prepared::prepare(&variant).unwrap();
        assert_eq!(ld.variation(), vexil, "launchdarkly: {name}");
        let un = unleash::Prepared::prepare(&variant).unwrap();
        assert_eq!(un.variation(), vexil, "unleash: {name}");
    }

    // Switched off: the off variation everywhere.
    let mut off = fixture.clone();
    off.snapshot.flags[0].config.on = false;
    let vexil = CompiledSnapshot::compile(&off.snapshot)
        .evaluate(&off.flag, &off.context)
        .variation;
    assert_eq!(vexil, Some(0));
    assert_eq!(
        launchdarkly::Prepared::prepare(&off).unwrap().variation(),
        vexil
    );
    assert_eq!(unleash::Prepared::prepare(&off).unwrap().variation(), vexil);
}
