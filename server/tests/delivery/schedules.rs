//! Scheduled changes: fired by the clock through the ordinary write path (SDKs see them,
//! the audit log names the schedule), conflicts, force, cancel, grace and restarts.

use std::time::Duration;

use serde_json::json;
use vexil_testkit::Backend;

use crate::helpers::*;

const HOUR: Duration = Duration::from_secs(3600);

both! {
    async fn a_schedule_fires_when_the_clock_reaches_it(app) {
        app.setup("shop", &["checkout"]).await;
        let mut hook = Receiver::start(&[]).await;
        app.subscribe("shop", &hook.url, &["schedule.*", "flag.config.update"], "json").await;
        let mut sse = app.sdk_stream("shop").await;
        let at = app.clock.now() + HOUR;
        let s = app
            .schedule("shop", "checkout", json!({
                "execute_at": rfc3339(at),
                "description": "launch",
                "patch": {"on": true},
            }))
            .await;
        assert_eq!(s["state"], "pending");
        assert_eq!(s["kind"], "patch");
        assert_eq!(s["base_version"], 1);
        let id = s["id"].as_i64().unwrap();
        assert_eq!(hook.next().await.header("vexil-event"), "schedule.create");

        // A minute early: nothing runs.
        app.clock.advance(HOUR - Duration::from_secs(60));
        assert!(hook.quiet(Duration::from_millis(300)).await);
        assert_eq!(app.config("shop", "checkout").await["on"], false);

        app.clock.advance(Duration::from_secs(60));
        // Both events, in no particular order (one round sends them concurrently).
        let mut got = std::collections::HashMap::new();
        for _ in 0..2 {
            let r = hook.next().await;
            got.insert(r.header("vexil-event").to_owned(), r.json());
        }
        let change = &got["flag.config.update"];
        assert_eq!(change["actor"], format!("schedule {id} (on behalf of bootstrap-admin)"));
        assert_eq!(change["after"]["on"], true);
        let done = &got["schedule.executed"];
        assert_eq!(done["after"]["state"], "executed");
        // SDKs receive it through the normal stream.
        assert_eq!(sse.next_patch("checkout").await["on"], true);

        let s = app.scheduled("shop", "checkout", id).await;
        assert_eq!(s["state"], "executed");
        assert_eq!(s["attempts"], 1);
        assert_eq!(s["result_version"], 2);
        let cfg = app.config("shop", "checkout").await;
        assert_eq!(cfg["on"], true);
        assert_eq!(cfg["version"], 2);
        // Audited: created, the change itself, executed.
        let audit = expect(app.get("/api/v1/audit?project=shop&limit=50").send().await.unwrap(), 200).await;
        let actions: Vec<&str> = audit["items"].as_array().unwrap().iter()
            .filter_map(|e| e["action"].as_str()).collect();
        for a in ["schedule.create", "flag.config.update", "schedule.executed"] {
            assert!(actions.contains(&a), "{a} missing from {actions:?}");
        }
        let list = expect(app.get(&format!("{}?state=executed", schedules_path("shop", "checkout"))).send().await.unwrap(), 200).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        let list = expect(app.get(&format!("{}?state=pending", schedules_path("shop", "checkout"))).send().await.unwrap(), 200).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0);
    }

    async fn a_touched_field_changed_since_the_base_fails_unless_forced(app) {
        app.setup("shop", &["checkout", "search"]).await;
        let mut hook = Receiver::start(&[]).await;
        app.subscribe("shop", &hook.url, &["schedule.executed", "schedule.failed"], "json").await;
        let at = rfc3339(app.clock.now() + HOUR);
        let conflicting = app.schedule("shop", "checkout", json!({
            "execute_at": at, "patch": {"fallthrough": {"variation": 0}}})).await;
        let forced = app.schedule("shop", "search", json!({
            "execute_at": at, "patch": {"fallthrough": {"variation": 0}}, "force": true})).await;
        // Someone changes the same field of both flags by hand, and an unrelated one.
        for flag in ["checkout", "search"] {
            expect(app.patch(&config_path("shop", flag),
                &json!({"fallthrough": {"rollout": {"variations": [
                    {"variation": 0, "weight": 10000}, {"variation": 1, "weight": 90000}]}},
                        "on": true}))
                .send().await.unwrap(), 200).await;
        }
        app.clock.advance(HOUR);
        let mut results = std::collections::HashMap::new();
        for _ in 0..2 {
            let r = hook.next().await.json();
            results.insert(r["after"]["id"].as_i64().unwrap(), r);
        }
        let failed = &results[&conflicting["id"].as_i64().unwrap()];
        assert_eq!(failed["event"], "schedule.failed");
        let reason = failed["after"]["reason"].as_str().unwrap();
        assert!(reason.contains("conflict") && reason.contains("fallthrough"), "{reason}");
        // Nothing overwritten.
        let cfg = app.config("shop", "checkout").await;
        assert!(cfg["fallthrough"]["rollout"].is_object(), "{cfg}");
        assert_eq!(cfg["version"], 2);

        let applied = &results[&forced["id"].as_i64().unwrap()];
        assert_eq!(applied["event"], "schedule.executed");
        let cfg = app.config("shop", "search").await;
        assert_eq!(cfg["fallthrough"], json!({"variation": 0}));
        assert_eq!(cfg["on"], true, "fields the patch does not touch are kept");
    }

    async fn cancelled_and_overdue_changes_do_not_run(app) {
        app.setup("shop", &["checkout", "search"]).await;
        let mut hook = Receiver::start(&[]).await;
        app.subscribe("shop", &hook.url, &["schedule.executed", "schedule.failed"], "json").await;
        let at = rfc3339(app.clock.now() + Duration::from_secs(600));
        let a = app.schedule("shop", "checkout", json!({"execute_at": at, "patch": {"on": true}})).await;
        let b = app.schedule("shop", "search", json!({"execute_at": at, "kill": true})).await;
        let path = format!("{}/{}/cancel", schedules_path("shop", "checkout"), a["id"]);
        let cancelled = expect(app.post(&path, &json!({})).send().await.unwrap(), 200).await;
        assert_eq!(cancelled["state"], "cancelled");
        assert_eq!(cancelled["cancelled_by"], "bootstrap-admin");
        expect(app.post(&path, &json!({})).send().await.unwrap(), 409).await;

        // The servers were "down" for two hours: past the one-hour grace, the kill fails
        // visibly instead of turning the flag off long after it was meant to.
        expect(app.patch(&config_path("shop", "search"), &json!({"on": true})).send().await.unwrap(), 200).await;
        app.clock.advance(2 * HOUR);
        let failed = hook.next().await.json();
        assert_eq!(failed["event"], "schedule.failed");
        assert_eq!(failed["after"]["id"], b["id"]);
        assert!(failed["after"]["reason"].as_str().unwrap().starts_with("overdue"), "{failed}");
        assert_eq!(app.config("shop", "search").await["on"], true);
        assert_eq!(app.config("shop", "checkout").await["on"], false);
        assert_eq!(app.scheduled("shop", "checkout", a["id"].as_i64().unwrap()).await["state"], "cancelled");

        // A kill on time turns the flag off (the kill switch: every environment).
        let kill = app.schedule("shop", "search", json!({
            "execute_at": rfc3339(app.clock.now() + Duration::from_secs(60)), "kill": true})).await;
        assert_eq!(kill["kind"], "kill");
        app.clock.advance(Duration::from_secs(60));
        let done = hook.next().await.json();
        assert_eq!(done["event"], "schedule.executed");
        assert_eq!(done["after"]["id"], kill["id"]);
        let cfg = app.config("shop", "search").await;
        assert_eq!(cfg["on"], false);
        assert_eq!(done["after"]["result_version"], cfg["version"]);
    }

    async fn a_claim_left_by_a_dead_server_is_taken_over_when_its_lease_ends(app) {
        app.setup("shop", &["checkout"]).await;
        let mut hook = Receiver::start(&[]).await;
        app.subscribe("shop", &hook.url, &["schedule.executed"], "json").await;
        let due = app.clock.now() + HOUR;
        let s = app.schedule("shop", "checkout", json!({"execute_at": rfc3339(due), "patch": {"on": true}})).await;
        // Another server claimed it (lease until 30 s after its time), made the change, and
        // died before recording that it had.
        let lease = (due + Duration::from_secs(30))
            .format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"))
            .unwrap();
        let sql = format!(
            "UPDATE scheduled_changes SET claimed_by = 'dead-server', attempts = 1,
                 lease_until = '{lease}' WHERE id = {}", s["id"]);
        assert_eq!(app.database.execute(Box::leak(sql.into_boxed_str())).await.unwrap(), 1);
        expect(app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap(), 200).await;

        app.clock.advance(HOUR);
        assert!(hook.quiet(Duration::from_millis(300)).await, "taken while the lease holds");
        app.clock.advance(Duration::from_secs(31));
        let done = hook.next().await.json();
        assert_eq!(done["after"]["id"], s["id"]);
        assert_eq!(done["after"]["attempts"], 2);
        // Found in place: recorded as executed, nothing written twice.
        assert_eq!(done["after"]["result_version"], 2);
        assert_eq!(app.config("shop", "checkout").await["version"], 2);
    }

    async fn bad_schedules_are_refused_and_store_nothing(app) {
        app.setup("shop", &["checkout"]).await;
        let at = rfc3339(app.clock.now());
        for body in [
            json!({"execute_at": at}),
            json!({"execute_at": at, "patch": {"on": true}, "kill": true}),
            json!({"execute_at": at, "patch": {"onn": true}}),
            json!({"execute_at": at, "patch": {"on": "yes"}}),
            json!({"execute_at": "tomorrow", "patch": {"on": true}}),
            json!({"execute_at": at, "patch": {"on": true}, "surprise": 1}),
        ] {
            let res = app.post(&schedules_path("shop", "checkout"), &body).send().await.unwrap();
            assert_eq!(res.status(), 422, "{body}");
            assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/problem+json"));
        }
        expect(app.post(&schedules_path("shop", "nope"), &json!({"execute_at": at, "patch": {"on": true}})).send().await.unwrap(), 404).await;
        expect(app.get(&format!("{}/999", schedules_path("shop", "checkout"))).send().await.unwrap(), 404).await;
        let list = expect(app.get(&schedules_path("shop", "checkout")).send().await.unwrap(), 200).await;
        assert_eq!(list["items"], json!([]));
    }
}

/// Overdue changes run when a server starts (within the grace), on the same database.
async fn overdue_changes_run_at_start(backend: Backend) {
    let app = spawn(backend).await;
    app.setup("shop", &["checkout"]).await;
    let mut hook = Receiver::start(&[]).await;
    app.subscribe("shop", &hook.url, &["schedule.executed"], "json")
        .await;
    let s = app
        .schedule(
            "shop",
            "checkout",
            json!({"execute_at": rfc3339(app.clock.now() + Duration::from_secs(300)),
                   "patch": {"on": true}}),
        )
        .await;
    let (database, clock, token) = app.stop().await;
    // Ten minutes pass with no server running.
    clock.advance(Duration::from_secs(600));
    let app = start(database, clock, token).await;
    // The first round runs at start, with nobody moving the clock.
    let done = hook.next().await.json();
    assert_eq!(done["after"]["id"], s["id"]);
    assert_eq!(app.config("shop", "checkout").await["on"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_changes_run_at_start_postgres() {
    overdue_changes_run_at_start(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_changes_run_at_start_sqlite() {
    overdue_changes_run_at_start(Backend::Sqlite).await;
}
