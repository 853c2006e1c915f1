//! Optimistic concurrency under contention: one winner per version, nothing lost.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::Barrier;

use crate::both;
use crate::helpers::{bool_flag, config_path, expect};

const WRITERS: usize = 20;

both! {
    async fn concurrent_updates_with_the_same_if_match(app) {
        app.project("p", &["e"]).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("hot")).send().await.unwrap(), 201).await;
        let path = config_path("p", "hot", "e");
        let app = Arc::new(app);

        // Round 1: twenty writers, all with If-Match "1", released together.
        let barrier = Arc::new(Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for i in 0..WRITERS {
            let (app, path, barrier) = (app.clone(), path.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                let req = app.put(&path, &json!({"off_variation": 1, "fallthrough": {"variation": 1},
                    "targets": [{"variation": 0, "values": [format!("writer-{i}")]}]})).header("if-match", "\"1\"");
                barrier.wait().await;
                req.send().await.unwrap().status().as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks { statuses.push(t.await.unwrap()); }
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 412).count(), WRITERS - 1, "{statuses:?}");

        // Round 2: every writer retries (read, then write with the ETag read) until it wins.
        let barrier = Arc::new(Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for i in 0..WRITERS {
            let (app, path, barrier) = (app.clone(), path.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut conflicts = 0u32;
                loop {
                    let res = app.get(&path).send().await.unwrap();
                    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
                    let res = app.put(&path, &json!({"off_variation": 1, "fallthrough": {"variation": 1},
                        "targets": [{"variation": 0, "values": [format!("retry-{i}")]}]})).header("if-match", etag).send().await.unwrap();
                    match res.status().as_u16() {
                        200 => {
                            let body: serde_json::Value = res.json().await.unwrap();
                            return (body["config"]["version"].as_u64().unwrap(), conflicts);
                        }
                        412 => conflicts += 1,
                        other => panic!("unexpected {other}: {}", res.text().await.unwrap()),
                    }
                }
            }));
        }
        let mut versions = BTreeSet::new();
        for t in tasks {
            let (v, _) = t.await.unwrap();
            assert!(versions.insert(v), "version {v} won twice");
        }
        let expected: BTreeSet<u64> = (3..3 + WRITERS as u64).collect();
        assert_eq!(versions, expected, "each version has exactly one winner");

        // Nothing lost: the history has every version, the audit log one entry per success.
        let history = expect(app.get(&format!("{path}/versions?limit=500")).send().await.unwrap(), 200).await;
        assert_eq!(history["items"].as_array().unwrap().len(), 2 + WRITERS);
        let audit = expect(app.get("/api/v1/audit?project=p&flag=hot&action=flag.config.update&limit=500").send().await.unwrap(), 200).await;
        assert_eq!(audit["items"].as_array().unwrap().len(), 1 + WRITERS);
        let env = expect(app.get("/api/v1/projects/p/environments/e").send().await.unwrap(), 200).await;
        assert_eq!(env["version"], 2 + WRITERS as u64);
        let changes = expect(app.get("/api/v1/projects/p/environments/e/changes?limit=1000").send().await.unwrap(), 200).await;
        let vs: Vec<u64> = changes.as_array().unwrap().iter().map(|c| c["version"].as_u64().unwrap()).collect();
        assert_eq!(vs, (1..=2 + WRITERS as u64).collect::<Vec<_>>(), "versions are dense and ordered");
    }
}
