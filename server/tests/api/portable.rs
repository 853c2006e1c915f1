//! Flags as code: export a project, import it into an empty installation (PostgreSQL into
//! SQLite and back), and get the same snapshots and the same evaluations; importing again
//! changes nothing; a dry run writes nothing.

use serde_json::{Value, json};
use vexil_eval::CompiledSnapshot;
use vexil_schema::{Context, EnvironmentSnapshot};
use vexil_testkit::{Backend, TestApp, spawn_app};

use crate::helpers::{config_path, expect};

/// A project that uses every part of the model: two environments, segments (one referring
/// to another), flags of several kinds with targets, rules, percentage rollouts,
/// prerequisites, an archived flag, allowed origins.
async fn rich_project(app: &TestApp) {
    app.project("shop", &["staging", "production"]).await;
    expect(
        app.patch("/api/v1/projects/shop", &json!({"description": "the shop"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    expect(
        app.patch(
            "/api/v1/projects/shop/environments/production",
            &json!({"allowed_origins": ["https://shop.example.com"]}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    for env in ["staging", "production"] {
        let segs = format!("/api/v1/projects/shop/environments/{env}/segments");
        expect(app.post(&segs, &json!({"key": "beta", "name": "Beta", "included": ["u1", "u2"], "excluded": ["u3"],
            "rules": [{"id": "corp", "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@corp.example"]}]}]}))
            .send().await.unwrap(), 201).await;
        expect(app.post(&segs, &json!({"key": "vip", "name": "VIP",
            "rules": [{"id": "in-beta", "clauses": [{"attribute": "key", "op": "segment_match", "values": ["beta"]}], "weight": 40000},
                      {"id": "big", "clauses": [{"attribute": "spend", "op": "gt", "values": [1000]}]}]}))
            .send().await.unwrap(), 201).await;
    }
    let flags = "/api/v1/projects/shop/flags";
    expect(
        app.post(
            flags,
            &json!({"key": "checkout", "name": "New checkout", "kind": "boolean", "tags": ["web"],
        "temporary": true, "variations": [{"value": true}, {"value": false}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    expect(
        app.post(
            flags,
            &json!({"key": "banner", "name": "Banner", "kind": "string", "client_side": true,
        "variations": [{"value": "red"}, {"value": "green"}, {"value": "blue"}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    expect(
        app.post(
            flags,
            &json!({"key": "limits", "name": "Limits", "kind": "json",
        "variations": [{"value": {"max": 1}}, {"value": {"max": 10}}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    expect(
        app.post(
            flags,
            &json!({"key": "old", "name": "Old", "kind": "boolean",
        "variations": [{"value": true}, {"value": false}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    for (env, split) in [("staging", 50_000), ("production", 20_000)] {
        expect(app.put(&config_path("shop", "checkout", env), &json!({
            "on": true, "off_variation": 1,
            "targets": [{"variation": 0, "values": ["u9"]}],
            "rules": [{"id": "vip", "clauses": [{"attribute": "key", "op": "segment_match", "values": ["vip"]}],
                       "serve": {"variation": 0}},
                      {"id": "country", "clauses": [{"attribute": "country", "op": "in", "values": ["de", "fr"]}],
                       "serve": {"rollout": {"variations": [{"variation": 0, "weight": 70_000}, {"variation": 1, "weight": 30_000}]}}}],
            "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": split}, {"variation": 1, "weight": 100_000 - split}]}}
        })).send().await.unwrap(), 200).await;
        expect(app.put(&config_path("shop", "banner", env), &json!({
            "on": true, "off_variation": 0,
            "prerequisites": [{"key": "checkout", "variation": 0}],
            "rules": [{"id": "v2", "clauses": [{"attribute": "version", "op": "semver_gt", "values": ["2.0.0"]}], "serve": {"variation": 2}}],
            "fallthrough": {"rollout": {"bucket_by": "company", "variations": [{"variation": 0, "weight": 33_000},
                {"variation": 1, "weight": 33_000}, {"variation": 2, "weight": 34_000}]}}
        })).send().await.unwrap(), 200).await;
    }
    expect(
        app.patch(
            &config_path("shop", "limits", "production"),
            &json!({"on": true}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    expect(
        app.post("/api/v1/projects/shop/flags/old/archive", &json!({}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
}

async fn export(app: &TestApp) -> Value {
    expect(
        app.get("/api/v1/projects/shop/export")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

async fn import(app: &TestApp, doc: &Value, dry_run: bool) -> Value {
    let path = format!("/api/v1/projects/shop/import?dry_run={dry_run}");
    expect(app.post(&path, doc).send().await.unwrap(), 200).await
}

async fn snapshot(app: &TestApp, env: &str) -> EnvironmentSnapshot {
    let v = expect(
        app.get(&format!(
            "/api/v1/projects/shop/environments/{env}/snapshot"
        ))
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    serde_json::from_value(v).unwrap()
}

/// A snapshot without its versions (an installation numbers its own changes).
fn unversioned(mut s: EnvironmentSnapshot) -> EnvironmentSnapshot {
    s.version = 0;
    for f in &mut s.flags {
        f.config.version = 0;
    }
    for seg in &mut s.segments {
        seg.version = 0;
    }
    s
}

/// `n` contexts from a fixed seed, varied in every attribute the flags and segments read.
fn contexts(n: usize) -> Vec<Context> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let r = next();
            let country = ["de", "fr", "us", "jp"][usize::try_from(r % 4).unwrap()];
            let v = json!({
                "key": if r % 50 == 0 { format!("u{}", r % 10) } else { format!("user-{i}-{r}") },
                "kind": "user",
                "attributes": {
                    "email": if r % 7 == 0 { format!("p{i}@corp.example") } else { format!("p{i}@mail.example") },
                    "country": country,
                    "spend": (r >> 8) % 2000,
                    "version": format!("{}.{}.0", (r >> 16) % 4, (r >> 20) % 10),
                    "company": format!("c{}", (r >> 24) % 100),
                }
            });
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

/// Every flag's value, variation and reason for every context.
fn evaluations(
    s: &EnvironmentSnapshot,
    contexts: &[Context],
) -> Vec<(Option<Value>, Option<usize>, Value)> {
    let compiled = CompiledSnapshot::compile(s);
    let mut out = Vec::new();
    for ctx in contexts {
        for f in &s.flags {
            let e = compiled.evaluate(f.key.as_str(), ctx);
            out.push((
                e.value.cloned(),
                e.variation,
                serde_json::to_value(e.to_reason()).unwrap(),
            ));
        }
    }
    out
}

async fn round_trip(from: Backend, to: Backend) {
    let a = spawn_app(from).await;
    rich_project(&a).await;
    let doc = export(&a).await;
    assert_eq!(doc["format"], "vexil.project/v1");
    // Deterministic: exporting again gives the same document.
    assert_eq!(export(&a).await, doc);
    // Salts are in it.
    assert!(
        doc["flags"][0]["environments"]["production"]["salt"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{doc}"
    );

    let b = spawn_app(to).await;
    // A dry run into an empty installation plans everything and writes nothing.
    let before = b.database.fingerprint().await;
    let plan = import(&b, &doc, true).await;
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        plan["changes"][0],
        json!({"action": "create", "resource": "project", "key": "shop"})
    );
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == "archive" && c["key"] == "old"),
        "{plan}"
    );
    assert_eq!(b.database.fingerprint().await, before);

    let applied = import(&b, &doc, false).await;
    assert_eq!(applied["changes"], plan["changes"]);
    assert_eq!(
        export(&b).await,
        doc,
        "the imported project exports as the original"
    );
    let ctxs = contexts(10_000);
    for env in ["staging", "production"] {
        let (sa, sb) = (snapshot(&a, env).await, snapshot(&b, env).await);
        assert_eq!(unversioned(sa.clone()), unversioned(sb.clone()), "{env}");
        let (ea, eb) = (evaluations(&sa, &ctxs), evaluations(&sb, &ctxs));
        assert_eq!(ea.len(), ctxs.len() * 3);
        // The contexts reach every variation of every rollout, so bucketing is compared.
        assert!(ea.iter().any(|e| e.1 == Some(2)) && ea.iter().any(|e| e.1 == Some(1)));
        assert!(ea == eb, "evaluations differ in {env}");
    }
    // The import went through the audited write path.
    let audit = expect(b.get("/api/v1/audit?limit=200").send().await.unwrap(), 200).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "flag.config.update"),
        "{audit}"
    );

    // Idempotent: importing again changes nothing at all.
    let settled = b.database.fingerprint().await;
    let again = import(&b, &doc, false).await;
    assert_eq!(again["changes"], json!([]), "{again}");
    assert_eq!(b.database.fingerprint().await, settled);

    // A drifted installation is put back: the plan names exactly what drifted.
    expect(
        b.patch(
            &config_path("shop", "checkout", "staging"),
            &json!({"on": false}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    expect(
        b.post(
            "/api/v1/projects/shop/environments/staging/segments",
            &json!({"key": "extra", "name": "Extra"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let plan = import(&b, &doc, true).await;
    assert_eq!(
        plan["changes"],
        json!([{"action": "update", "resource": "flag_config", "key": "checkout",
                                         "environment": "staging", "fields": ["on"]}])
    );
    assert_eq!(plan["not_in_document"], json!(["segment:staging/extra"]));
    import(&b, &doc, false).await;
    let (sa, sb) = (snapshot(&a, "staging").await, snapshot(&b, "staging").await);
    assert_eq!(evaluations(&sa, &ctxs), evaluations(&sb, &ctxs));

    // A document for another project, or of another format, is refused.
    let p = expect(
        b.post("/api/v1/projects/other/import", &doc)
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["path"], "project.key");
    let mut bad = doc.clone();
    bad["format"] = json!("vexil.project/v9");
    let p = expect(
        b.post("/api/v1/projects/shop/import", &bad)
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["path"], "format");
    let mut bad = doc.clone();
    bad["flags"][0]["colour"] = json!("red");
    expect(
        b.post("/api/v1/projects/shop/import", &bad)
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip_postgres_to_sqlite() {
    round_trip(Backend::Postgres, Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip_sqlite_to_postgres() {
    round_trip(Backend::Sqlite, Backend::Postgres).await;
}
