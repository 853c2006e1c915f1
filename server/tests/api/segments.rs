//! Segments, including 100,000-key lists, and incremental edits of their keys.

use std::time::Instant;

use serde_json::json;

use crate::both;
use crate::helpers::{bool_flag, config_path, expect};

both! {
    async fn segment_crud_and_references(app) {
        app.project("p", &["e"]).await;
        let base = "/api/v1/projects/p/environments/e/segments";
        let res = app.post(base, &json!({"key": "beta", "name": "Beta", "included": ["a", "b"], "excluded": ["c"],
            "rules": [{"id": "r", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}]}]})).send().await.unwrap();
        assert_eq!(res.headers()["etag"], "\"1\"");
        let created = expect(res, 201).await;
        assert!(!created["segment"]["salt"].as_str().unwrap().is_empty());
        expect(app.post(base, &json!({"key": "beta", "name": "Again"})).send().await.unwrap(), 409).await;
        // A segment may match another; not itself.
        expect(app.post(base, &json!({"key": "wider", "name": "Wider",
            "rules": [{"id": "r", "clauses": [{"attribute": "key", "op": "segment_match", "values": ["beta"]}]}]})).send().await.unwrap(), 201).await;
        let cyc = expect(app.put(&format!("{base}/beta"), &json!({"key": "beta", "name": "Beta",
            "rules": [{"id": "r", "clauses": [{"attribute": "key", "op": "segment_match", "values": ["wider"]}]}]})).send().await.unwrap(), 422).await;
        assert_eq!(cyc["errors"][0]["rule"], "segment_cycle");

        let list = expect(app.get(base).send().await.unwrap(), 200).await;
        assert_eq!(list["items"][0]["key"], "beta");
        assert_eq!(list["items"][0]["included_count"], 2);
        assert_eq!(list["items"][0]["excluded_count"], 1);
        assert!(list["items"][0].get("included").is_none());

        let updated = expect(app.put(&format!("{base}/beta"), &json!({"key": "beta", "name": "Beta 2", "included": ["z"]}))
            .header("if-match", "\"1\"").send().await.unwrap(), 200).await;
        assert_eq!(updated["segment"]["version"], 2);
        assert_eq!(updated["segment"]["salt"], created["segment"]["salt"]);
        expect(app.put(&format!("{base}/beta"), &json!({"key": "beta", "name": "x"})).header("if-match", "\"1\"").send().await.unwrap(), 412).await;
        expect(app.put(&format!("{base}/beta"), &json!({"key": "other", "name": "x"})).send().await.unwrap(), 422).await;

        // Flags using a segment block its deletion, and so do segments.
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("f")).send().await.unwrap(), 201).await;
        expect(app.patch(&config_path("p", "f", "e"), &json!({"rules": [{"id": "r", "clauses":
            [{"attribute": "key", "op": "segment_match", "values": ["beta"]}], "serve": {"variation": 0}}]})).send().await.unwrap(), 200).await;
        let blocked = expect(app.delete(&format!("{base}/beta")).send().await.unwrap(), 409).await;
        assert_eq!(blocked["blockers"], json!(["flag 'f'", "segment 'wider'"]));
        let bad = expect(app.patch(&config_path("p", "f", "e"), &json!({"rules": [{"id": "r", "clauses":
            [{"attribute": "key", "op": "segment_match", "values": ["ghost"]}], "serve": {"variation": 0}}]})).send().await.unwrap(), 422).await;
        assert_eq!(bad["errors"][0]["rule"], "unknown_segment");

        expect(app.delete(&format!("{base}/wider")).send().await.unwrap(), 204).await;
        expect(app.patch(&config_path("p", "f", "e"), &json!({"rules": []})).send().await.unwrap(), 200).await;
        expect(app.delete(&format!("{base}/beta")).send().await.unwrap(), 204).await;
        expect(app.get(&format!("{base}/beta")).send().await.unwrap(), 404).await;
    }

    async fn hundred_thousand_key_segments_round_trip(app) {
        app.project("p", &["e"]).await;
        let base = "/api/v1/projects/p/environments/e/segments";
        let included: Vec<String> = (0..100_000).map(|i| format!("user-{i:06}")).collect();
        let excluded: Vec<String> = (0..100_000).map(|i| format!("blocked-{i:06}")).collect();
        let t = Instant::now();
        expect(app.post(base, &json!({"key": "big", "name": "Big", "included": included, "excluded": excluded})).send().await.unwrap(), 201).await;
        let created = t.elapsed();
        let t = Instant::now();
        let got = expect(app.get(&format!("{base}/big")).send().await.unwrap(), 200).await;
        let read = t.elapsed();
        assert_eq!(got["segment"]["included"].as_array().unwrap().len(), 100_000);
        assert_eq!(got["segment"]["included"][99_999], "user-099999");
        assert_eq!(got["segment"]["excluded"][0], "blocked-000000");
        let mut smaller = included.clone();
        smaller.truncate(50_000);
        let t = Instant::now();
        expect(app.put(&format!("{base}/big"), &json!({"key": "big", "name": "Big", "included": smaller})).send().await.unwrap(), 200).await;
        let updated = t.elapsed();
        let list = expect(app.get(base).send().await.unwrap(), 200).await;
        assert_eq!(list["items"][0]["included_count"], 50_000);
        assert_eq!(list["items"][0]["excluded_count"], 0);
        // Reported, not asserted: timings belong in benchmarks.
        eprintln!("100k-key segment on {:?}: create {created:?}, read {read:?}, update {updated:?}", app.database.backend);

        let too_many: Vec<String> = (0..=vexil_schema::limits::MAX_SEGMENT_KEYS).map(|i| format!("k{i}")).collect();
        let before = app.database.fingerprint().await;
        let bad = expect(app.post(base, &json!({"key": "huge", "name": "Huge", "included": too_many})).send().await.unwrap(), 422).await;
        assert_eq!(bad["errors"][0]["rule"], "limit_exceeded");
        assert_eq!(app.database.fingerprint().await, before);
    }

    async fn segment_keys_are_added_and_removed_without_the_lists(app) {
        app.project("p", &["e"]).await;
        let base = "/api/v1/projects/p/environments/e/segments";
        expect(app.post(base, &json!({"key": "s", "name": "S", "included": ["a", "b", "c"], "excluded": ["x"]}))
            .send().await.unwrap(), 201).await;
        let keys = format!("{base}/s/keys");
        let res = app.post(&keys, &json!({"included": {"add": ["d", "b", "e", "d"], "remove": ["a", "zz"]},
            "excluded": {"remove": ["x"]}})).header("if-match", "\"1\"").send().await.unwrap();
        assert_eq!(res.headers()["etag"], "\"2\"");
        let edited = expect(res, 200).await;
        assert_eq!(edited["segment"]["included"], json!(["b", "c", "d", "e"]));
        assert!(edited["segment"].get("excluded").is_none());
        let v = edited["environment_version"].as_u64().unwrap();
        // The same edit again changes nothing: no version, no log row, no audit entry.
        let before = app.database.fingerprint().await;
        let again = expect(app.post(&keys, &json!({"included": {"add": ["d", "b"], "remove": ["a"]}}))
            .send().await.unwrap(), 200).await;
        assert_eq!(again["segment"]["version"], 2);
        assert_eq!(again["environment_version"].as_u64(), Some(v));
        assert_eq!(app.database.fingerprint().await, before);
        // Preconditions, validation, absent segments.
        let stale = expect(app.post(&keys, &json!({"included": {"add": ["q"]}})).header("if-match", "\"1\"")
            .send().await.unwrap(), 412).await;
        assert_eq!(stale["current_version"], 2);
        let both = expect(app.post(&keys, &json!({"included": {"add": ["q"], "remove": ["q"]}}))
            .send().await.unwrap(), 422).await;
        assert_eq!((both["errors"][0]["path"].as_str(), both["errors"][0]["rule"].as_str()),
            (Some("included.add[0]"), Some("add_and_remove")));
        let empty = expect(app.post(&keys, &json!({"excluded": {"add": ["ok", ""]}})).send().await.unwrap(), 422).await;
        assert_eq!(empty["errors"][0]["path"], "excluded.add[1]");
        expect(app.post(&keys, &json!({"included": {"append": ["q"]}})).send().await.unwrap(), 422).await;
        let many: Vec<String> = (0..=vexil_schema::limits::MAX_EDIT_KEYS).map(|i| format!("k{i}")).collect();
        let big = expect(app.post(&keys, &json!({"included": {"add": many}})).send().await.unwrap(), 422).await;
        assert_eq!(big["errors"][0]["rule"], "limit_exceeded");
        expect(app.post(&format!("{base}/ghost/keys"), &json!({})).send().await.unwrap(), 404).await;
        // The change log carries the delta; the audit log the keys added and removed.
        let changes = expect(app.get("/api/v1/projects/p/environments/e/changes").send().await.unwrap(), 200).await;
        let last = changes.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["op"], "delta", "{last}");
        assert_eq!(last["payload"]["included"], json!({"add": ["d", "e"], "remove": ["a"]}));
        assert_eq!(last["payload"]["excluded"], json!({"remove": ["x"]}));
        let audit = expect(app.get("/api/v1/audit?project=p&action=segment.keys").send().await.unwrap(), 200).await;
        let entry = &audit["items"][0];
        assert_eq!(entry["after"]["included"]["add"], json!(["d", "e"]));
        assert!(entry["before"].is_null());
        // The snapshot SDKs load is exact.
        let snap = expect(app.get("/api/v1/projects/p/environments/e/snapshot").send().await.unwrap(), 200).await;
        assert_eq!(snap["segments"][0]["included"], json!(["b", "c", "d", "e"]));
        // `Prefer: return=minimal`: the answer has the counts and versions, not the lists.
        let res = app.post(&keys, &json!({"included": {"add": ["f"]}, "excluded": {"add": ["y"]}}))
            .header("prefer", "respond-async, return=minimal").header("if-match", "\"2\"").send().await.unwrap();
        assert_eq!(res.headers()["preference-applied"], "return=minimal");
        assert_eq!(res.headers()["etag"], "\"3\"");
        let minimal = expect(res, 200).await;
        assert_eq!(minimal["segment"]["key"], "s");
        assert_eq!((minimal["segment"]["included_count"].as_i64(), minimal["segment"]["excluded_count"].as_i64()),
            (Some(5), Some(1)));
        assert_eq!(minimal["segment"]["version"], 3);
        assert!(minimal["segment"].get("included").is_none(), "{minimal}");
        assert!(minimal["environment_version"].as_u64() > Some(v));
        // The same edit again: nothing changes, the same counts and versions.
        let again = expect(app.post(&keys, &json!({"included": {"add": ["f"]}}))
            .header("prefer", "return=minimal").send().await.unwrap(), 200).await;
        assert_eq!(again, minimal);
        let snap = expect(app.get("/api/v1/projects/p/environments/e/snapshot").send().await.unwrap(), 200).await;
        assert_eq!(snap["segments"][0]["included"], json!(["b", "c", "d", "e", "f"]));
        assert_eq!(snap["segments"][0]["excluded"], json!(["y"]));
    }

    async fn a_list_is_synced_from_a_newline_delimited_upload(app) {
        app.project("p", &["e"]).await;
        let base = "/api/v1/projects/p/environments/e/segments";
        let included: Vec<String> = (0..100_000).map(|i| format!("acct-{i:06}")).collect();
        expect(app.post(base, &json!({"key": "crm", "name": "CRM", "included": included})).send().await.unwrap(), 201).await;
        if app.database.backend == vexil_testkit::Backend::Postgres {
            // The load refreshes the planner's statistics at once (in the background): with
            // the empty table's, each key an edit names would scan all 100,000 rows.
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            while app.database.execute("SELECT 1 FROM pg_stat_user_tables
                    WHERE relname = 'segment_keys' AND last_analyze IS NOT NULL").await.unwrap() == 0 {
                assert!(Instant::now() < deadline, "segment_keys not analyzed after a 100,000-key load");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        // The CRM's export: one account gone, two new ones, CRLF line ends, a blank line.
        let mut upload: String = (1..100_000).map(|i| format!("acct-{i:06}\r\n")).collect();
        upload.push_str("\nnew-1\nnew-2\n");
        let sync = |list: &str, body: String| app.request_as(reqwest::Method::PUT,
            &format!("{base}/crm/keys/{list}"), &app.admin_token).header("content-type", "text/plain").body(body);
        let synced = expect(sync("included", upload.clone()).send().await.unwrap(), 200).await;
        let list = synced["segment"]["included"].as_array().unwrap();
        assert_eq!(list.len(), 100_001);
        assert_eq!((list[0].as_str(), list[100_000].as_str()), (Some("acct-000001"), Some("new-2")));
        let changes = expect(app.get("/api/v1/projects/p/environments/e/changes").send().await.unwrap(), 200).await;
        let last = changes.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["payload"]["included"], json!({"add": ["new-1", "new-2"], "remove": ["acct-000000"]}));
        // The same upload again changes nothing.
        let again = expect(sync("included", upload).send().await.unwrap(), 200).await;
        assert_eq!(again["segment"]["version"], synced["segment"]["version"]);
        let excluded = expect(sync("excluded", "x\ny\n".into()).send().await.unwrap(), 200).await;
        assert_eq!(excluded["segment"]["excluded"], json!(["x", "y"]));
        expect(sync("everyone", "x".into()).send().await.unwrap(), 404).await;
    }

    async fn flag_targets_are_added_and_removed_per_variation(app) {
        app.project("p", &["e"]).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("f")).send().await.unwrap(), 201).await;
        expect(app.patch(&config_path("p", "f", "e"), &json!({"on": true,
            "targets": [{"variation": 0, "values": ["a", "b"]}]})).send().await.unwrap(), 200).await;
        let path = format!("{}/targets", config_path("p", "f", "e"));
        let res = app.post(&path, &json!({"targets": [{"variation": 0, "add": ["c"], "remove": ["a"]},
            {"variation": 1, "add": ["z"]}]})).header("if-match", "\"2\"").send().await.unwrap();
        assert_eq!(res.headers()["etag"], "\"3\"");
        let edited = expect(res, 200).await;
        assert_eq!(edited["config"]["targets"], json!([{"variation": 0, "values": ["b", "c"]},
            {"variation": 1, "values": ["z"]}]));
        let changes = expect(app.get("/api/v1/projects/p/environments/e/changes").send().await.unwrap(), 200).await;
        let last = changes.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["op"], "delta");
        assert_eq!(last["payload"]["targets"], json!([{"variation": 0, "add": ["c"], "remove": ["a"]},
            {"variation": 1, "add": ["z"]}]));
        // Emptying a target drops it; an edit that changes nothing makes no version.
        let dropped = expect(app.post(&path, &json!({"targets": [{"variation": 1, "remove": ["z"]}]}))
            .send().await.unwrap(), 200).await;
        assert_eq!(dropped["config"]["targets"], json!([{"variation": 0, "values": ["b", "c"]}]));
        let same = expect(app.post(&path, &json!({"targets": [{"variation": 0, "add": ["b"]}]}))
            .send().await.unwrap(), 200).await;
        assert_eq!(same["config"]["version"], dropped["config"]["version"]);
        let bad = expect(app.post(&path, &json!({"targets": [{"variation": 5, "add": ["q"]}]}))
            .send().await.unwrap(), 422).await;
        assert!(bad["errors"][0]["path"].as_str().unwrap().starts_with("targets"), "{bad}");
        expect(app.post(&path, &json!({"targets": []})).header("if-match", "\"1\"").send().await.unwrap(), 412).await;
        let audit = expect(app.get("/api/v1/audit?project=p&action=flag.targets.update").send().await.unwrap(), 200).await;
        assert_eq!(audit["items"][0]["after"]["targets"], json!([{"variation": 1, "remove": ["z"]}]));
    }
}
