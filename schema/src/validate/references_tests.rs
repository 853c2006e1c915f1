//! Tests of the reference checks, through the public validation functions.

use serde_json::{Value, json};

use super::*;
use crate::model::{FlagDefinition, FlagKind, Variation};
use crate::validate::EnvironmentIndex;
use crate::validate::{validate_config, validate_segment, validate_snapshot};

/// A boolean flag in snapshot form with the given prerequisites.
fn flag(key: &str, prereqs: &[&str]) -> Value {
    let prereqs: Vec<Value> = prereqs
        .iter()
        .map(|k| json!({"key": k, "variation": 0}))
        .collect();
    json!({
        "key": key, "kind": "boolean", "variations": [{"value": true}, {"value": false}],
        "on": true, "off_variation": 1, "fallthrough": {"variation": 0},
        "prerequisites": prereqs
    })
}

/// A segment whose one rule matches the given segments.
fn segment(key: &str, refs: &[&str]) -> Value {
    if refs.is_empty() {
        return json!({"key": key});
    }
    json!({"key": key, "rules": [{"id": "r", "clauses": [
        {"attribute": "", "op": "segment_match", "values": refs}
    ]}]})
}

fn snapshot(flags: Vec<Value>, segments: Vec<Value>) -> EnvironmentSnapshot {
    serde_json::from_value(json!({"flags": flags, "segments": segments})).unwrap()
}

fn boolean_def(key: &str) -> FlagDefinition {
    FlagDefinition {
        key: FlagKey::parse(key).unwrap(),
        name: String::new(),
        description: String::new(),
        kind: FlagKind::Boolean,
        variations: vec![Variation::new(json!(true)), Variation::new(json!(false))],
        tags: vec![],
        temporary: false,
        client_side: false,
    }
}

fn config_with(prereqs: &[&str]) -> FlagConfig {
    let mut cfg: FlagConfig = FlagConfig::serving(0);
    cfg.prerequisites = prereqs
        .iter()
        .map(|k| Prerequisite {
            key: FlagKey::parse(*k).unwrap(),
            variation: 0,
        })
        .collect();
    cfg
}

fn chain_flags(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let next = format!("{prefix}{}", i + 1);
            if i + 1 < n {
                flag(&format!("{prefix}{i}"), &[&next])
            } else {
                flag(&format!("{prefix}{i}"), &[])
            }
        })
        .collect()
}

#[test]
fn prerequisite_cycle_is_named() {
    let env = EnvironmentIndex::from_snapshot(&snapshot(
        vec![flag("a", &[]), flag("b", &["c"]), flag("c", &["a"])],
        vec![],
    ));
    let err = validate_config(&boolean_def("a"), config_with(&["b"]), &env).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.errors[0].path, "prerequisites[0].key");
    assert_eq!(err.errors[0].rule, rules::PREREQUISITE_CYCLE);
    assert!(
        err.errors[0].message.ends_with("a -> b -> c -> a"),
        "{}",
        err.errors[0].message
    );
}

#[test]
fn the_old_configuration_is_replaced_not_merged() {
    // In the stored environment a requires b; the new configuration drops that.
    let env =
        EnvironmentIndex::from_snapshot(&snapshot(vec![flag("a", &["b"]), flag("b", &[])], vec![]));
    // b may now require a: a's old edge to b must not count.
    let mut without_a = env.clone();
    without_a.insert_flag_config(&boolean_def("a"), &config_with(&[]));
    assert!(validate_config(&boolean_def("b"), config_with(&["a"]), &without_a).is_ok());
    // But with a still requiring b, b requiring a is a cycle.
    let err = validate_config(&boolean_def("b"), config_with(&["a"]), &env).unwrap_err();
    assert!(err.contains("prerequisites[0].key", rules::PREREQUISITE_CYCLE));
}

#[test]
fn diamonds_are_not_cycles() {
    let env = EnvironmentIndex::from_snapshot(&snapshot(
        vec![flag("b", &["d"]), flag("c", &["d"]), flag("d", &[])],
        vec![],
    ));
    assert!(validate_config(&boolean_def("a"), config_with(&["b", "c"]), &env).is_ok());
}

#[test]
fn unrelated_existing_cycles_do_not_block_writes() {
    let env = EnvironmentIndex::from_snapshot(&snapshot(
        vec![flag("x", &["y"]), flag("y", &["x"]), flag("b", &[])],
        vec![],
    ));
    assert!(validate_config(&boolean_def("a"), config_with(&["b"]), &env).is_ok());
}

#[test]
fn depending_on_an_existing_cycle_is_refused() {
    // A corrupt environment: x and y require each other. The engine cannot evaluate anything
    // that leads into that cycle, so a new dependency on it is refused, naming the cycle.
    let env = EnvironmentIndex::from_snapshot(&snapshot(
        vec![
            flag("x", &["y"]),
            flag("y", &["x"]),
            flag("w", &["x"]),
            flag("b", &[]),
        ],
        vec![],
    ));
    let err = validate_config(&boolean_def("a"), config_with(&["b", "w"]), &env).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(err.errors[0].path, "prerequisites[1].key");
    assert_eq!(err.errors[0].rule, rules::PREREQUISITE_CYCLE);
    assert!(
        err.errors[0].message.contains("x -> y -> x") && err.errors[0].message.contains("w -> x"),
        "{}",
        err.errors[0].message
    );
}

#[test]
fn prerequisite_depth_is_limited_across_the_environment() {
    // c0 -> c1 -> ... : MAX - 1 flags. A new flag on top makes MAX: fine.
    let flags = chain_flags("c", MAX_PREREQUISITE_DEPTH - 1);
    let env = EnvironmentIndex::from_snapshot(&snapshot(flags.clone(), vec![]));
    assert!(validate_config(&boolean_def("top"), config_with(&["c0"]), &env).is_ok());

    // One more is too many.
    let mut longer = flags;
    longer.insert(0, flag("top", &["c0"]));
    let env = EnvironmentIndex::from_snapshot(&snapshot(longer, vec![]));
    let err = validate_config(&boolean_def("top2"), config_with(&["top"]), &env).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(err.errors[0].path, "prerequisites");
    assert_eq!(err.errors[0].rule, rules::LIMIT_EXCEEDED);
    let msg = &err.errors[0].message;
    assert!(
        msg.contains(&format!("of {} flags", MAX_PREREQUISITE_DEPTH + 1)),
        "{msg}"
    );
    assert!(msg.contains("top2 -> top -> c0 -> c1"), "{msg}");
}

#[test]
fn prerequisite_depth_counts_dependents_above_the_written_flag() {
    // up0 -> ... -> up{n-1} -> mid; mid gains a chain below it.
    let n = MAX_PREREQUISITE_DEPTH / 2;
    let mut flags = chain_flags("up", n);
    let last = format!("up{}", n - 1);
    flags.pop();
    flags.push(flag(&last, &["mid"]));
    flags.push(flag("mid", &[]));
    flags.extend(chain_flags("down", MAX_PREREQUISITE_DEPTH - n));
    let env = EnvironmentIndex::from_snapshot(&snapshot(flags, vec![]));
    // n flags above mid, mid, and MAX - n below: MAX + 1.
    let err = validate_config(&boolean_def("mid"), config_with(&["down0"]), &env).unwrap_err();
    assert!(
        err.contains("prerequisites", rules::LIMIT_EXCEEDED),
        "{err}"
    );
    assert!(err.errors[0].message.contains("up0 -> "), "{err}");
    // Linking mid to down1 instead makes exactly MAX.
    assert!(validate_config(&boolean_def("mid"), config_with(&["down1"]), &env).is_ok());
}

/// Flags `{p}{level}-a` and `{p}{level}-b` for levels `from..=to`, each requiring both flags of
/// the next level: a flag at level `to - k` expands into 2^(k+1) - 1 evaluations.
fn diamond_levels(from: usize, to: usize) -> Vec<Value> {
    let mut flags = Vec::new();
    for level in from..=to {
        for side in ["a", "b"] {
            let key = format!("l{level}-{side}");
            if level == to {
                flags.push(flag(&key, &[]));
            } else {
                let a = format!("l{}-a", level + 1);
                let b = format!("l{}-b", level + 1);
                flags.push(flag(&key, &[&a, &b]));
            }
        }
    }
    flags
}

#[test]
fn prerequisite_expansion_is_limited() {
    // l1 expands into 2^9 - 1 = 511; a flag on both l1 flags into 1023: fine.
    let env = EnvironmentIndex::from_snapshot(&snapshot(diamond_levels(1, 9), vec![]));
    assert!(validate_config(&boolean_def("top"), config_with(&["l1-a", "l1-b"]), &env).is_ok());

    // One level more: 1 + 2 * 1023 = 2047.
    let env = EnvironmentIndex::from_snapshot(&snapshot(diamond_levels(1, 10), vec![]));
    let err =
        validate_config(&boolean_def("top"), config_with(&["l1-a", "l1-b"]), &env).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(err.errors[0].path, "prerequisites");
    assert_eq!(err.errors[0].rule, rules::LIMIT_EXCEEDED);
    assert!(
        err.errors[0].message.contains("evaluating this flag"),
        "{err}"
    );
}

#[test]
fn prerequisite_expansion_counts_dependents_of_the_written_flag() {
    // root requires mid and l1-a (511). mid gains l1-a and l1-b: mid = 1023, root = 1535.
    let mut flags = diamond_levels(1, 9);
    flags.push(flag("root", &["mid", "l1-a"]));
    flags.push(flag("mid", &[]));
    let env = EnvironmentIndex::from_snapshot(&snapshot(flags, vec![]));
    let err =
        validate_config(&boolean_def("mid"), config_with(&["l1-a", "l1-b"]), &env).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert!(
        err.errors[0]
            .message
            .contains("flag \"root\", which depends on this one"),
        "{err}"
    );
    assert!(validate_config(&boolean_def("mid"), config_with(&["l1-a"]), &env).is_ok());
}

#[test]
fn snapshot_reports_expansion_at_the_top() {
    let mut flags = diamond_levels(1, 10);
    flags.insert(0, flag("ok", &[]));
    flags.push(flag("top", &["l1-a", "l1-b"]));
    let err = validate_snapshot(&snapshot(flags.clone(), vec![])).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(
        err.errors[0].path,
        format!("flags[{}].prerequisites", flags.len() - 1)
    );
    assert_eq!(err.errors[0].rule, rules::LIMIT_EXCEEDED);
    flags.pop();
    assert_eq!(validate_snapshot(&snapshot(flags, vec![])), Ok(()));
}

#[test]
fn segment_cycles_are_named_at_the_clause_value() {
    let env = EnvironmentIndex::from_snapshot(&snapshot(
        vec![],
        vec![
            segment("b", &["c"]),
            segment("c", &["a"]),
            segment("a", &[]),
        ],
    ));
    let seg: Segment = serde_json::from_value(segment("a", &["b"])).unwrap();
    let err = validate_segment(seg, &env).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.errors[0].path, "rules[0].clauses[0].values[0]");
    assert_eq!(err.errors[0].rule, rules::SEGMENT_CYCLE);
    assert!(err.errors[0].message.ends_with("a -> b -> c -> a"));

    let me: Segment = serde_json::from_value(json!({"key": "a", "rules": [
        {"id": "r0", "clauses": [{"attribute": "country", "op": "in", "values": ["FR"]}]},
        {"id": "r1", "clauses": [{"attribute": "", "op": "segment_match", "values": ["c", "a"]}]}
    ]}))
    .unwrap();
    let err = validate_segment(me, &EnvironmentIndex::new()).unwrap_err();
    // "c" does not exist; "a" is itself.
    assert!(err.contains("rules[1].clauses[0].values[0]", rules::UNKNOWN_SEGMENT));
    assert!(err.contains("rules[1].clauses[0].values[1]", rules::SEGMENT_CYCLE));
    assert!(err.errors.iter().any(|e| e.message.ends_with("a -> a")));
}

#[test]
fn segment_depth_is_limited() {
    // s0 -> s1 -> ... : MAX segments, fine; one more on top is not.
    let segs: Vec<Value> = (0..MAX_SEGMENT_DEPTH)
        .map(|i| {
            if i + 1 < MAX_SEGMENT_DEPTH {
                segment(&format!("s{i}"), &[&format!("s{}", i + 1)])
            } else {
                segment(&format!("s{i}"), &[])
            }
        })
        .collect();
    let s = snapshot(vec![], segs.clone());
    assert_eq!(validate_snapshot(&s), Ok(()));
    let env = EnvironmentIndex::from_snapshot(&s);
    let top: Segment = serde_json::from_value(segment("top", &["s0"])).unwrap();
    let err = validate_segment(top, &env).unwrap_err();
    assert!(err.contains("rules", rules::LIMIT_EXCEEDED), "{err}");
    assert!(err.errors[0].message.contains("nested segments"), "{err}");

    let mut deeper = segs;
    deeper.insert(0, segment("top", &["s0"]));
    let err = validate_snapshot(&snapshot(vec![], deeper)).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(err.errors[0].path, "segments[0].rules");
}

#[test]
fn segment_expansion_is_limited() {
    // Segments g{level}-{a,b} each matching both of the next level: 2^11 - 1 from the top.
    let mut segs = Vec::new();
    for level in 0..=10 {
        for side in ["a", "b"] {
            let key = format!("g{level}-{side}");
            if level == 10 {
                segs.push(segment(&key, &[]));
            } else {
                let a = format!("g{}-a", level + 1);
                let b = format!("g{}-b", level + 1);
                segs.push(segment(&key, &[&a, &b]));
            }
        }
    }
    let env = EnvironmentIndex::from_snapshot(&snapshot(vec![], segs[2..].to_vec()));
    let top: Segment = serde_json::from_value(segment("g0-a", &["g1-a", "g1-b"])).unwrap();
    let err = validate_segment(top, &env).unwrap_err();
    assert!(err.contains("rules", rules::LIMIT_EXCEEDED), "{err}");
    let err = validate_snapshot(&snapshot(vec![], segs)).unwrap_err();
    // Both top segments are reported.
    assert_eq!(err.errors.len(), 2, "{err}");
}

#[test]
fn snapshot_reports_each_cycle_once() {
    let s = snapshot(
        vec![
            flag("ok", &[]),
            flag("b", &["c"]),
            flag("c", &["a"]),
            flag("a", &["b"]),
            flag("self", &["self"]),
        ],
        vec![
            segment("s2", &["s1"]),
            segment("s1", &["s2"]),
            segment("me", &["me"]),
        ],
    );
    let err = validate_snapshot(&s).unwrap_err();
    let got: Vec<(&str, &str)> = err
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.rule))
        .collect();
    assert_eq!(
        got,
        vec![
            ("flags[4].prerequisites[0].key", rules::PREREQUISITE_CYCLE),
            ("flags[1].prerequisites[0].key", rules::PREREQUISITE_CYCLE),
            (
                "segments[0].rules[0].clauses[0].values[0]",
                rules::SEGMENT_CYCLE
            ),
            (
                "segments[2].rules[0].clauses[0].values[0]",
                rules::SEGMENT_CYCLE
            ),
        ]
    );
    assert!(err.errors[1].message.ends_with("b -> c -> a -> b"));
    assert!(err.errors[2].message.ends_with("s2 -> s1 -> s2"));
}

#[test]
fn snapshot_reports_deep_chains_once_at_the_top() {
    let s = snapshot(chain_flags("c", MAX_PREREQUISITE_DEPTH + 3), vec![]);
    let err = validate_snapshot(&s).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(err.errors[0].path, "flags[0].prerequisites");
    assert_eq!(err.errors[0].rule, rules::LIMIT_EXCEEDED);
    assert_eq!(
        validate_snapshot(&snapshot(chain_flags("c", MAX_PREREQUISITE_DEPTH), vec![])),
        Ok(())
    );
}

#[test]
fn very_deep_graphs_do_not_overflow_the_stack() {
    // A corrupt environment: a 20,000-flag chain closed into a cycle. (A recursive walk would
    // overflow a test thread's 2 MiB stack well before this depth.)
    let n = 20_000;
    let mut flags = chain_flags("f", n);
    flags.pop();
    flags.push(flag(&format!("f{}", n - 1), &["f0"]));
    let s = snapshot(flags, vec![]);
    let err = validate_snapshot(&s).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.errors[0].rule, rules::PREREQUISITE_CYCLE);
    // Writing a flag on top of it walks the whole cycle without recursion, and refuses.
    let env = EnvironmentIndex::from_snapshot(&s);
    let err = validate_config(&boolean_def("top"), config_with(&["f0"]), &env).unwrap_err();
    assert_eq!(err.errors[0].rule, rules::PREREQUISITE_CYCLE);
    // The same chain without the cycle is too deep, and expands too far, at its top.
    let err = validate_snapshot(&snapshot(chain_flags("f", n), vec![])).unwrap_err();
    assert_eq!(err.errors.len(), 2, "{err}");
    for e in &err.errors {
        assert_eq!(
            (e.path.as_str(), e.rule),
            ("flags[0].prerequisites", rules::LIMIT_EXCEEDED)
        );
    }
}
