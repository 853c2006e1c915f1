//! The shared evaluation fixtures (`schema/testdata/eval`) through the client's public API,
//! fed by the TestData source and by the file source: the SDK must agree with the engine,
//! the server and the relay on every case.

use serde_json::Value;
use vexil_schema::fixture::{Expected, FixtureCase, load_eval_fixtures};
use vexil_sdk::{Client, EvaluationDetail, TestData};

/// Checks one case through every typed method that applies, returning failures.
fn check(client: &Client, file: &str, case: &FixtureCase) -> Vec<String> {
    let mut failures = Vec::new();
    let ctx = &case.context;
    let expected = &case.expected;
    let mut expect = |method: &str, ok: bool, got: &dyn std::fmt::Debug| {
        if !ok {
            failures.push(format!(
                "{file}/{} via {method}: got {got:?}, expected {expected:?}",
                case.name
            ));
        }
    };

    let d = client.json_variation_detail(&case.flag, ctx, Value::Null);
    expect(
        "json_variation_detail",
        d.value == expected.value
            && d.variation == expected.variation
            && d.reason == expected.reason
            && d.in_experiment == expected.in_experiment,
        &d,
    );
    let v = client.json_variation(&case.flag, ctx, Value::Null);
    expect("json_variation", v == expected.value, &v);

    // The typed accessors agree whenever the served value has their type.
    fn typed<T>(d: &EvaluationDetail<T>, e: &Expected) -> bool {
        d.variation == e.variation && d.reason == e.reason
    }
    if matches!(expected.reason, vexil_sdk::Reason::Error { .. }) {
        // An error: every typed method returns its default with the same reason.
        let d = client.bool_variation_detail(&case.flag, ctx, true);
        expect(
            "bool_variation_detail (error)",
            d.value && d.variation.is_none() && d.reason == expected.reason,
            &d,
        );
        let d = client.string_variation_detail(&case.flag, ctx, "default");
        expect(
            "string_variation_detail (error)",
            d.value == "default" && d.variation.is_none() && d.reason == expected.reason,
            &d,
        );
        return failures;
    }
    match &expected.value {
        Value::Bool(b) => {
            let d = client.bool_variation_detail(&case.flag, ctx, !b);
            expect(
                "bool_variation_detail",
                d.value == *b && typed(&d, expected),
                &d,
            );
            let v = client.bool_variation(&case.flag, ctx, !b);
            expect("bool_variation", v == *b, &v);
        }
        Value::String(s) => {
            let d = client.string_variation_detail(&case.flag, ctx, "\u{0}default");
            expect(
                "string_variation_detail",
                d.value == *s && typed(&d, expected),
                &d,
            );
            let v = client.string_variation(&case.flag, ctx, "\u{0}default");
            expect("string_variation", v == *s, &v);
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(f64::NAN);
            let d = client.number_variation_detail(&case.flag, ctx, f64::NAN);
            expect(
                "number_variation_detail",
                d.value == n && typed(&d, expected),
                &d,
            );
        }
        _ => {}
    }
    failures
}

fn run_all(
    build: impl Fn(&vexil_schema::EnvironmentSnapshot) -> (Client, Option<TestData>),
) -> usize {
    let files = load_eval_fixtures().unwrap();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in &files {
        let (client, _td) = build(&file.snapshot);
        assert!(client.is_initialized(), "{}", file.name);
        for case in &file.cases {
            cases += 1;
            failures.extend(check(&client, &file.name, case));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    cases
}

#[test]
fn every_fixture_through_test_data() {
    let cases = run_all(|snapshot| {
        let td = TestData::new();
        td.load(snapshot.clone());
        let client = Client::builder("unused")
            .data_source(td.clone())
            .build()
            .unwrap();
        (client, Some(td))
    });
    assert!(cases > 100, "only {cases} cases");
}

#[test]
fn every_fixture_through_the_file_source() {
    let dir = tempfile::tempdir().unwrap();
    run_all(|snapshot| {
        let path = dir.path().join(format!("{}.json", snapshot.version));
        std::fs::write(&path, serde_json::to_vec(snapshot).unwrap()).unwrap();
        let client = Client::builder("unused").file(&path).build().unwrap();
        (client, None)
    });
}
