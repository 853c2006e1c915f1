//! Validation (`vexil_schema::validate`) and evaluation agree on every fixture flag: a flag
//! whose definition, configuration and referenced segments validate never evaluates to
//! `ERROR(MALFORMED)` (equivalently: every flag the engine finds malformed is rejected by
//! validation).
//! (Validation is stricter in documented ways: duplicate targets, empty value lists and
//! unknown references are refused on input but evaluate gracefully.)

use vexil_eval::CompiledSnapshot;
use vexil_schema::fixture::load_eval_fixtures;
use vexil_schema::validate::EnvironmentIndex;
use vexil_schema::{
    Flag, FlagDefinition, Operator, validate_config, validate_definition, validate_segment,
};

fn definition(f: &Flag) -> FlagDefinition {
    FlagDefinition {
        key: f.key.clone(),
        name: f.key.to_string(),
        description: String::new(),
        kind: f.kind,
        variations: f.variations.clone(),
        tags: Vec::new(),
        temporary: false,
        client_side: false,
    }
}

#[test]
fn validation_and_evaluation_agree_on_every_fixture_flag() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in load_eval_fixtures().expect("fixtures load") {
        let env = EnvironmentIndex::from_snapshot(&file.snapshot);
        let compiled = CompiledSnapshot::compile(&file.snapshot);
        let invalid_segments: Vec<&str> = file
            .snapshot
            .segments
            .iter()
            .filter(|s| validate_segment((*s).clone(), &env).is_err())
            .map(|s| s.key.as_str())
            .collect();
        for flag in &file.snapshot.flags {
            let def = definition(flag);
            let valid = validate_definition(def.clone()).is_ok()
                && validate_config(&def, flag.config.clone(), &env).is_ok();
            let uses_invalid_segment = flag
                .config
                .rules
                .iter()
                .flat_map(|r| &r.clauses)
                .filter(|c| c.op == Operator::SegmentMatch)
                .flat_map(|c| &c.values)
                .any(|v| v.as_str().is_some_and(|k| invalid_segments.contains(&k)));
            if !valid || uses_invalid_segment {
                continue;
            }
            checked += 1;
            if let Some(m) = compiled.malformation(&flag.key) {
                failures.push(format!(
                    "{} / {}: validates, but the engine says {m}",
                    file.name, flag.key
                ));
            }
        }
    }
    assert!(checked > 150, "only {checked} valid flags checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
