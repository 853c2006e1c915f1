//! The shared invalid-payload corpus (`schema/testdata/invalid`): every case sent to the API
//! is refused with a 4xx naming the expected paths and rules, and the database is unchanged.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use vexil_schema::Segment;
use vexil_schema::validate::corpus::{CorpusTarget, InvalidCase, load_invalid_corpus};
use vexil_testkit::TestApp;

use crate::both;
use crate::helpers::expect;

/// Creates the case's environment (flags, segments, the definition under test) in a project
/// of its own.
async fn set_up(app: &TestApp, project: &str, case: &InvalidCase) {
    app.project(project, &["e"]).await;
    let flags = format!("/api/v1/projects/{project}/flags");
    let segments = format!("/api/v1/projects/{project}/environments/e/segments");
    let mut defined = BTreeSet::new();
    for f in &case.environment.flags {
        let def = json!({"key": f.key, "kind": f.kind, "variations": f.variations});
        expect(app.post(&flags, &def).send().await.unwrap(), 201).await;
        defined.insert(f.key.to_string());
    }
    if let Some(def) = &case.definition
        && !defined.contains(def.key.as_str())
    {
        let body = serde_json::to_value(def).unwrap();
        expect(app.post(&flags, &body).send().await.unwrap(), 201).await;
    }
    // Segments first without rules (they may refer to each other), then with them.
    for s in &case.environment.segments {
        let mut bare: Segment = s.clone();
        bare.rules.clear();
        expect(
            app.post(&segments, &serde_json::to_value(&bare).unwrap())
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
    }
    let mut pending: Vec<&Segment> = case
        .environment
        .segments
        .iter()
        .filter(|s| !s.rules.is_empty())
        .collect();
    while !pending.is_empty() {
        let mut next = Vec::new();
        for s in &pending {
            let res = app
                .put(
                    &format!("{segments}/{}", s.key),
                    &serde_json::to_value(s).unwrap(),
                )
                .send()
                .await
                .unwrap();
            if res.status() != 200 {
                next.push(*s);
            }
        }
        assert!(
            next.len() < pending.len(),
            "case {}: cannot set up segments",
            case.name
        );
        pending = next;
    }
    // Flag configurations, retried until every prerequisite they name is in place.
    let mut pending: Vec<_> = case.environment.flags.iter().collect();
    while !pending.is_empty() {
        let mut next = Vec::new();
        for f in &pending {
            let path = format!("/api/v1/projects/{project}/flags/{}/environments/e", f.key);
            let res = app
                .put(&path, &serde_json::to_value(&f.config).unwrap())
                .send()
                .await
                .unwrap();
            if res.status() != 200 {
                next.push(*f);
            }
        }
        assert!(
            next.len() < pending.len(),
            "case {}: cannot set up flags",
            case.name
        );
        pending = next;
    }
}

fn request(app: &TestApp, project: &str, case: &InvalidCase) -> reqwest::RequestBuilder {
    match case.target {
        CorpusTarget::FlagDefinition => {
            let key = case.payload["key"].as_str().unwrap_or_default();
            let exists = case.environment.flags.iter().any(|f| f.key == key)
                || case.definition.as_ref().is_some_and(|d| d.key == key);
            if exists {
                app.put(
                    &format!("/api/v1/projects/{project}/flags/{key}"),
                    &case.payload,
                )
            } else {
                app.post(&format!("/api/v1/projects/{project}/flags"), &case.payload)
            }
        }
        CorpusTarget::FlagConfig => {
            let key = case
                .definition
                .as_ref()
                .map(|d| d.key.to_string())
                .unwrap_or_default();
            app.put(
                &format!("/api/v1/projects/{project}/flags/{key}/environments/e"),
                &case.payload,
            )
        }
        CorpusTarget::Segment => {
            let key = case.payload["key"].as_str().unwrap_or_default();
            let base = format!("/api/v1/projects/{project}/environments/e/segments");
            if case.environment.segments.iter().any(|s| s.key == key) {
                app.put(&format!("{base}/{key}"), &case.payload)
            } else {
                app.post(&base, &case.payload)
            }
        }
        _ => panic!("unknown corpus target {:?}", case.target),
    }
}

both! {
    async fn every_invalid_payload_is_refused_and_changes_nothing(app) {
        let cases = load_invalid_corpus().expect("the invalid-payload corpus loads");
        assert!(cases.len() >= 20, "only {} cases", cases.len());
        for (i, case) in cases.iter().enumerate() {
            let project = format!("case-{i}");
            set_up(&app, &project, case).await;
            let before = app.database.fingerprint().await;
            let res = request(&app, &project, case).send().await.unwrap();
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            assert!(status.is_client_error(), "case {:?} ({}): {status} {body}", case.name, case.file.display());
            let got: BTreeSet<(String, String)> = body["errors"].as_array()
                .unwrap_or_else(|| panic!("case {:?}: no errors in {body}", case.name))
                .iter()
                .map(|e| (e["path"].as_str().unwrap().to_owned(), e["rule"].as_str().unwrap().to_owned()))
                .collect();
            assert_eq!(got, case.expected(), "case {:?} ({})", case.name, case.file.display());
            assert_eq!(app.database.fingerprint().await, before, "case {:?} changed the database", case.name);
        }
    }
}
