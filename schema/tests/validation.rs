//! Validation end to end: the invalid-payload corpus, a list of valid documents, the large
//! limits, and property tests over generated valid flags.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{Value, json};
use vexil_schema::limits::{MAX_SEGMENT_KEYS, MAX_TARGET_KEYS};
use vexil_schema::validate::corpus::{CorpusTarget, load_invalid_corpus};
use vexil_schema::validate::rules;
use vexil_schema::{
    EnvironmentIndex, EnvironmentSnapshot, Flag, FlagConfig, FlagDefinition, Segment,
    validate_config, validate_definition, validate_segment, validate_snapshot,
};

#[test]
fn every_invalid_case_fails_with_exactly_the_expected_errors() {
    let cases = load_invalid_corpus().unwrap();
    assert!(cases.len() >= 40, "corpus has only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        match case.run().unwrap() {
            None => failures.push(format!("{}: passed validation", case.file.display())),
            Some(errors) => {
                let got = errors.path_rules();
                if got != case.expected() {
                    failures.push(format!(
                        "{}:\n  expected {:?}\n  got      {:?}\n  messages {:#?}",
                        case.file.display(),
                        case.expected(),
                        got,
                        errors.errors.iter().map(|e| &e.message).collect::<Vec<_>>()
                    ));
                }
                for e in &errors.errors {
                    assert!(!e.message.is_empty(), "{}: empty message", case.name);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The state a case starts from must be valid on its own, or the server could not create it.
#[test]
fn every_invalid_case_starts_from_a_valid_environment() {
    for case in load_invalid_corpus().unwrap() {
        let mut env = case.environment.clone();
        if let Some(def) = &case.definition {
            assert_eq!(
                validate_definition(def.clone()).map(drop),
                Ok(()),
                "{}",
                case.name
            );
            if !env.flags.iter().any(|f| f.key == def.key) {
                env.flags.push(Flag::new(def, FlagConfig::serving(0)));
            }
        }
        assert_eq!(
            case.definition.is_some(),
            case.target == CorpusTarget::FlagConfig
        );
        assert_eq!(validate_snapshot(&env), Ok(()), "{}", case.name);
    }
}

#[test]
fn the_corpus_covers_every_rule() {
    let covered: BTreeSet<String> = load_invalid_corpus()
        .unwrap()
        .iter()
        .flat_map(|c| c.expect.iter().map(|e| e.rule.clone()))
        .collect();
    // Two keys in one environment can only happen in a snapshot, never in a single write.
    let snapshot_only = [rules::DUPLICATE_KEY];
    let missing: Vec<&str> = rules::ALL
        .iter()
        .copied()
        .filter(|r| !covered.contains(*r) && !snapshot_only.contains(r))
        .collect();
    assert!(missing.is_empty(), "no corpus case for {missing:?}");
    let unknown: Vec<&String> = covered
        .iter()
        .filter(|r| !rules::ALL.contains(&r.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "corpus expects unknown rules {unknown:?}"
    );
}

#[test]
fn the_docs_describe_every_rule() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/validation.md"),
    )
    .unwrap();
    for rule in rules::ALL {
        assert!(
            doc.contains(&format!("`{rule}`")),
            "docs/validation.md does not describe `{rule}`"
        );
    }
}

fn environment() -> EnvironmentSnapshot {
    serde_json::from_value(json!({
        "flags": [
            {"key": "new-login", "kind": "boolean",
             "variations": [{"value": true}, {"value": false}],
             "on": true, "off_variation": 1, "fallthrough": {"variation": 0}},
            {"key": "pricing-tier", "kind": "string",
             "variations": [{"value": "free"}, {"value": "pro"}, {"value": "enterprise"}],
             "off_variation": 0, "fallthrough": {"variation": 0},
             "prerequisites": [{"key": "new-login", "variation": 0}]}
        ],
        "segments": [
            {"key": "beta-testers", "included": ["user-1"]},
            {"key": "staff", "rules": [{"id": "email", "clauses": [
                {"attribute": "email", "op": "ends_with", "values": ["@example.com"]}]}]}
        ]
    }))
    .unwrap()
}

#[test]
fn valid_documents_pass() {
    let env = environment();
    assert_eq!(validate_snapshot(&env), Ok(()));
    let index = EnvironmentIndex::from_snapshot(&env);

    let definitions = [
        json!({"key": "dark-mode", "kind": "boolean", "variations": [{"value": false}, {"value": true}]}),
        json!({"key": "checkout", "name": "Checkout", "description": "New checkout flow",
               "kind": "string", "tags": ["team:payments", "release/2026.1"], "temporary": true,
               "variations": [{"value": "old", "name": "control", "description": "today's flow"},
                              {"value": "new", "name": "treatment"}]}),
        json!({"key": "rate-limit", "kind": "number", "variations": [{"value": 10}, {"value": 2.5}, {"value": -1}]}),
        json!({"key": "theme", "kind": "json", "variations": [
            {"value": {"primary": "#0055ff", "radius": 4}}, {"value": [1, 2]}, {"value": null}, {"value": "x"}]}),
        json!({"key": "kill-switch", "kind": "string", "variations": [{"value": "on"}]}),
    ];
    for d in definitions {
        let def: FlagDefinition = serde_json::from_value(d.clone()).unwrap();
        assert!(validate_definition(def).is_ok(), "{d}");
    }

    let def: FlagDefinition = serde_json::from_value(json!({
        "key": "checkout", "kind": "string",
        "variations": [{"value": "old"}, {"value": "new"}, {"value": "new-express"}]
    }))
    .unwrap();
    let configs = [
        json!({"off_variation": 0, "fallthrough": {"variation": 0}}),
        json!({
            "on": true, "off_variation": 0, "salt": "checkout-2026",
            "targets": [{"variation": 1, "values": ["user-1", "user-2"]},
                        {"variation": 0, "values": ["user-3"]}],
            "rules": [
                {"id": "staff", "description": "dogfood",
                 "clauses": [{"attribute": "", "op": "segment_match", "values": ["staff", "beta-testers"]}],
                 "serve": {"variation": 2}},
                {"id": "eu", "clauses": [
                    {"attribute": "country", "op": "in", "values": ["FR", "DE", "IT"]},
                    {"attribute": "age", "op": "gte", "values": [18]},
                    {"attribute": "signup", "op": "before", "values": ["2026-01-01T00:00:00Z"]},
                    {"attribute": "appVersion", "op": "semver_gt", "values": ["2.3"]},
                    {"attribute": "email", "op": "matches", "values": ["^[^@]+@(example|corp)\\.com$"]},
                    {"attribute": "plan", "op": "exists", "negate": true}
                 ],
                 "serve": {"rollout": {"variations": [
                    {"variation": 0, "weight": 33334}, {"variation": 1, "weight": 33333},
                    {"variation": 2, "weight": 33333}], "bucket_by": "orgId", "experiment": true}}},
                {"id": "everyone-else", "clauses": [], "serve": {"variation": 0}}
            ],
            "fallthrough": {"rollout": {"variations": [
                {"variation": 0, "weight": 95000}, {"variation": 1, "weight": 5000}]}},
            "prerequisites": [{"key": "new-login", "variation": 0}, {"key": "pricing-tier", "variation": 2}]
        }),
    ];
    for c in configs {
        let cfg: FlagConfig = serde_json::from_value(c.clone()).unwrap();
        assert!(
            validate_config(&def, cfg, &index).is_ok(),
            "{c}: {:?}",
            validate_config(&def, serde_json::from_value(c.clone()).unwrap(), &index)
        );
    }

    let segments = [
        json!({"key": "empty"}),
        json!({"key": "vip", "name": "VIP", "included": ["user-1"], "excluded": ["user-2"],
        "rules": [
         {"id": "staff", "clauses": [{"attribute": "", "op": "segment_match", "values": ["staff"]}]},
         {"id": "ten-percent-of-pro", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
          "weight": 10000, "bucket_by": "orgId"}
        ]}),
        // Replacing a stored segment with itself is no cycle.
        json!({"key": "staff", "rules": [{"id": "beta", "clauses": [
            {"attribute": "", "op": "segment_match", "values": ["beta-testers"]}]}]}),
    ];
    for s in segments {
        let seg: Segment = serde_json::from_value(s.clone()).unwrap();
        assert!(validate_segment(seg, &index).is_ok(), "{s}");
    }
}

/// 100,000 keys in each list of a segment pass. Speed is reported, never asserted.
#[test]
fn a_segment_at_the_key_limits_passes() {
    let included: Vec<String> = (0..MAX_SEGMENT_KEYS)
        .map(|i| format!("user-{i:08}"))
        .collect();
    let excluded: Vec<String> = (0..MAX_SEGMENT_KEYS)
        .map(|i| format!("guest-{i:08}"))
        .collect();
    let seg: Segment = serde_json::from_value(json!({
        "key": "everyone-imported", "included": included, "excluded": excluded
    }))
    .unwrap();
    let start = Instant::now();
    let result = validate_segment(seg, &EnvironmentIndex::new());
    let elapsed = start.elapsed();
    assert!(result.is_ok());
    eprintln!("validated a segment with 2 x {MAX_SEGMENT_KEYS} keys in {elapsed:?}");

    let mut seg = result.unwrap().into_inner();
    seg.included.push("one-too-many");
    let err = validate_segment(seg, &EnvironmentIndex::new()).unwrap_err();
    assert!(err.contains("included", rules::LIMIT_EXCEEDED));
}

/// 100,000 individually targeted keys pass. Speed is reported, never asserted.
#[test]
fn a_config_at_the_target_limit_passes() {
    let def: FlagDefinition = serde_json::from_value(json!({
        "key": "migrated", "kind": "boolean", "variations": [{"value": true}, {"value": false}]
    }))
    .unwrap();
    let on: Vec<String> = (0..MAX_TARGET_KEYS / 2)
        .map(|i| format!("user-{i}"))
        .collect();
    let off: Vec<String> = (MAX_TARGET_KEYS / 2..MAX_TARGET_KEYS)
        .map(|i| format!("user-{i}"))
        .collect();
    let cfg: FlagConfig = serde_json::from_value(json!({
        "on": true, "off_variation": 1, "fallthrough": {"variation": 1},
        "targets": [{"variation": 0, "values": on}, {"variation": 1, "values": off}]
    }))
    .unwrap();
    let start = Instant::now();
    let result = validate_config(&def, cfg, &EnvironmentIndex::new());
    eprintln!(
        "validated a config with {MAX_TARGET_KEYS} target keys in {:?}",
        start.elapsed()
    );
    assert!(result.is_ok());
}

/// The errors of a document are reported with their paths under a snapshot too.
#[test]
fn snapshot_paths_are_rooted_at_the_snapshot() {
    let mut env = environment();
    env.flags[1].config.fallthrough = serde_json::from_value(json!({"variation": 3})).unwrap();
    let err = validate_snapshot(&env).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.errors[0].path, "flags[1].fallthrough.variation");
    assert_eq!(err.errors[0].rule, rules::VARIATION_INDEX);
    let v: Value = serde_json::to_value(&err).unwrap();
    assert_eq!(v["errors"][0]["rule"], "variation_index");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A valid flag: definition, configuration, and the environment it lives in.
    #[derive(Debug, Clone)]
    struct Case {
        def: FlagDefinition,
        cfg: FlagConfig,
    }

    fn values(kind: &str, n: usize) -> Vec<Value> {
        match kind {
            "boolean" => vec![json!(true), json!(false)],
            "string" => (0..n).map(|i| json!(format!("v{i}"))).collect(),
            "number" => (0..n).map(|i| json!(i as f64 * 1.5)).collect(),
            _ => (0..n).map(|i| json!({"i": i, "tags": ["a"]})).collect(),
        }
    }

    /// A rollout over a random subset of `n` variations, weights summing to 100,000.
    fn rollout(n: usize) -> impl Strategy<Value = Value> {
        (
            proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 1..=n),
            proptest::collection::vec(0u32..=100_000, n),
            any::<bool>(),
        )
            .prop_map(|(vars, mut cuts, experiment)| {
                cuts.truncate(vars.len() - 1);
                cuts.sort_unstable();
                let mut prev = 0;
                let mut slices = Vec::new();
                for (i, v) in vars.iter().enumerate() {
                    let end = cuts.get(i).copied().unwrap_or(100_000);
                    slices.push(json!({"variation": v, "weight": end - prev}));
                    prev = end;
                }
                json!({"rollout": {"variations": slices, "experiment": experiment}})
            })
    }

    fn serve(n: usize) -> impl Strategy<Value = Value> {
        prop_oneof![(0..n).prop_map(|v| json!({"variation": v})), rollout(n),]
    }

    fn clause() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"attribute": "country", "op": "in", "values": ["FR", 1, true]})),
            Just(json!({"attribute": "email", "op": "ends_with", "values": ["@example.com"]})),
            Just(json!({"attribute": "email", "op": "matches", "values": ["^a.*z$"]})),
            (0i64..1000).prop_map(|x| json!({"attribute": "age", "op": "lt", "values": [x]})),
            (0i64..2_000_000_000_000)
                .prop_map(|x| json!({"attribute": "t", "op": "after", "values": [x]})),
            (0u8..20, 0u8..20).prop_map(
                |(a, b)| json!({"attribute": "v", "op": "semver_eq", "values": [format!("{a}.{b}")]})
            ),
            Just(json!({"attribute": "", "op": "segment_match", "values": ["beta-testers"]})),
            Just(json!({"attribute": "plan", "op": "exists", "negate": true})),
        ]
    }

    fn case() -> impl Strategy<Value = Case> {
        prop_oneof![
            Just(("boolean", 2usize)),
            (1usize..6).prop_map(|n| ("string", n)),
            (1usize..6).prop_map(|n| ("number", n)),
            (1usize..6).prop_map(|n| ("json", n)),
        ]
        .prop_flat_map(|(kind, n)| {
            (
                Just(kind),
                Just(n),
                0..n,
                proptest::collection::vec((proptest::collection::vec(clause(), 0..4), serve(n)), 0..5),
                serve(n),
                proptest::collection::vec((0..n, 0usize..20), 0..4),
                proptest::sample::subsequence(vec![("new-login", 2usize), ("pricing-tier", 3)], 0..=2),
                any::<u8>(),
            )
        })
        .prop_map(|(kind, n, off, rules, fallthrough, targets, prereqs, p)| {
            let variations: Vec<Value> = values(kind, n)
                .into_iter()
                .map(|v| json!({"value": v}))
                .collect();
            let def = json!({"key": "generated", "kind": kind, "variations": variations});
            // One target entry per variation, disjoint keys.
            let mut by_var: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
            for (v, k) in targets {
                by_var.entry(v).or_default().push(format!("user-{v}-{k}"));
            }
            let targets: Vec<Value> = by_var
                .into_iter()
                .map(|(v, mut keys)| {
                    keys.sort();
                    keys.dedup();
                    json!({"variation": v, "values": keys})
                })
                .collect();
            let rules: Vec<Value> = rules
                .into_iter()
                .enumerate()
                .map(|(i, (clauses, serve))| json!({"id": format!("rule-{i}"), "clauses": clauses, "serve": serve}))
                .collect();
            let prerequisites: Vec<Value> = prereqs
                .into_iter()
                .map(|(k, count)| json!({"key": k, "variation": usize::from(p) % count}))
                .collect();
            let cfg = json!({
                "on": p % 2 == 0, "off_variation": off, "targets": targets, "rules": rules,
                "fallthrough": fallthrough, "prerequisites": prerequisites, "salt": format!("s{p}")
            });
            Case {
                def: serde_json::from_value(def).unwrap(),
                cfg: serde_json::from_value(cfg).unwrap(),
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        })]

        #[test]
        fn valid_flags_pass_and_survive_a_json_round_trip(case in case()) {
            let index = EnvironmentIndex::from_snapshot(&environment());
            let def = validate_definition(case.def.clone()).unwrap();
            let cfg = validate_config(&def, case.cfg.clone(), &index);
            prop_assert!(cfg.is_ok(), "{:?}", cfg);
            let cfg = cfg.unwrap();

            let text = serde_json::to_string(&*cfg).unwrap();
            let back: FlagConfig = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&back, &*cfg);
            prop_assert!(validate_config(&def, back, &index).is_ok());

            let def_back: FlagDefinition =
                serde_json::from_str(&serde_json::to_string(&*def).unwrap()).unwrap();
            prop_assert_eq!(&def_back, &*def);
            prop_assert!(validate_definition(def_back).is_ok());

            // In a snapshot with the rest of the environment, it is still valid.
            let mut env = environment();
            env.flags.push(Flag::new(&def, cfg.into_inner()));
            prop_assert_eq!(validate_snapshot(&env), Ok(()));
        }

        #[test]
        fn an_out_of_range_off_variation_is_always_caught(case in case(), extra in 0usize..1000) {
            let index = EnvironmentIndex::from_snapshot(&environment());
            let mut cfg = case.cfg.clone();
            cfg.off_variation = case.def.variations.len() + extra;
            let err = validate_config(&case.def, cfg, &index).unwrap_err();
            prop_assert!(err.contains("off_variation", rules::VARIATION_INDEX), "{}", err);
            prop_assert_eq!(err.errors.len(), 1);
        }

        #[test]
        fn a_fallthrough_rollout_off_by_one_is_always_caught(case in case(), up in any::<bool>()) {
            let index = EnvironmentIndex::from_snapshot(&environment());
            let mut cfg = case.cfg.clone();
            if let vexil_schema::Serve::Rollout(r) = &mut cfg.fallthrough {
                let w = &mut r.variations[0].weight;
                *w = if up || *w == 0 { *w + 1 } else { *w - 1 };
                let err = validate_config(&case.def, cfg, &index).unwrap_err();
                prop_assert!(err.contains("fallthrough.rollout.variations", rules::WEIGHTS_SUM), "{}", err);
            }
        }
    }
}
