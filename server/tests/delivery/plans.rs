//! Release plans: a ramp advanced by the clock and seen by SDKs, pause and resume, manual
//! advance, abort restoring the fallthrough, a hand edit pausing the plan, validation.

use std::time::Duration;

use serde_json::{Value, json};
use vexil_testkit::Backend;

use crate::helpers::*;

const HOUR: Duration = Duration::from_secs(3600);

fn plans_path(flag: &str) -> String {
    format!("{}/release-plans", config_path("shop", flag))
}

/// The rollout weight of variation 0 (true) in a fallthrough.
fn share_of_true(fallthrough: &Value) -> u64 {
    match fallthrough.get("variation") {
        Some(v) => {
            if v == 0 {
                100_000
            } else {
                0
            }
        }
        None => fallthrough["rollout"]["variations"][0]["weight"]
            .as_u64()
            .unwrap(),
    }
}

async fn act(app: &App, flag: &str, id: &Value, action: &str, status: u16) -> Value {
    expect(
        app.post(&format!("{}/{id}/{action}", plans_path(flag)), &json!({}))
            .send()
            .await
            .unwrap(),
        status,
    )
    .await
}

both! {
    async fn a_plan_ramps_by_the_clock_and_sdks_follow(app) {
        app.setup("shop", &["checkout"]).await;
        expect(app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap(), 200).await;
        let mut hook = Receiver::start(&[]).await;
        app.subscribe("shop", &hook.url, &["plan.*"], "json").await;
        let mut sse = app.sdk_stream("shop").await;
        let plan = expect(app.post(&plans_path("checkout"), &json!({
            "to_variation": 0, "description": "new checkout",
            "steps": [{"percentage": 10, "hold_minutes": 60}, {"percentage": 50, "hold_minutes": 60},
                      {"percentage": 100}]})).send().await.unwrap(), 201).await;
        assert_eq!(plan["state"], "running");
        assert_eq!(plan["current_step"], 0);
        assert_eq!(plan["from_variation"], 1);
        let id = plan["id"].clone();
        // The first step at once, B listed first in the rollout.
        let flag = sse.next_patch("checkout").await;
        assert_eq!(flag["fallthrough"]["rollout"]["variations"][0], json!({"variation": 0, "weight": 10000}));
        // Deliveries of one round go out concurrently: in no particular order.
        let mut first = [hook.next().await, hook.next().await]
            .map(|r| r.header("vexil-event").to_owned());
        first.sort();
        assert_eq!(first, ["plan.create", "plan.step"]);

        app.clock.advance(HOUR);
        assert_eq!(share_of_true(&sse.next_patch("checkout").await["fallthrough"]), 50_000);
        let step = hook.next_event("plan.step").await.json();
        assert_eq!(step["after"]["current_step"], 1);
        assert_eq!(step["actor"], format!("release plan {id} (on behalf of bootstrap-admin)"));

        // Paused half-way through the hold: nothing moves however long it waits.
        app.clock.advance(HOUR / 2);
        let paused = act(&app, "checkout", &id, "pause", 200).await;
        assert_eq!(paused["state"], "paused");
        assert_eq!(paused["remaining_ms"], 1_800_000);
        act(&app, "checkout", &id, "pause", 409).await;
        assert_eq!(hook.next().await.header("vexil-event"), "plan.pause");
        app.clock.advance(3 * HOUR);
        assert!(hook.quiet(Duration::from_millis(300)).await, "no step while paused");
        // Resumed: the rest of the hold, then the last step completes the plan.
        let resumed = act(&app, "checkout", &id, "resume", 200).await;
        assert_eq!(resumed["state"], "running");
        assert_eq!(hook.next().await.header("vexil-event"), "plan.resume");
        app.clock.advance(HOUR / 2);
        assert_eq!(sse.next_patch("checkout").await["fallthrough"], json!({"variation": 0}));
        let done = hook.next_event("plan.completed").await.json();
        assert_eq!(done["after"]["state"], "completed");
        act(&app, "checkout", &id, "abort", 409).await;
        let got = expect(app.get(&format!("{}/{id}", plans_path("checkout"))).send().await.unwrap(), 200).await;
        assert_eq!(got["state"], "completed");
        assert_eq!(got["current_step"], 2);
        assert!(got["finished_at"].is_string());
    }

    async fn abort_restores_the_fallthrough_and_a_hand_edit_pauses_the_plan(app) {
        app.setup("shop", &["checkout", "search"]).await;
        let steps = json!([{"percentage": 5, "hold_minutes": 600}, {"percentage": 25, "hold_minutes": 600}, {"percentage": 100}]);
        let a = expect(app.post(&plans_path("checkout"), &json!({"to_variation": 0, "steps": steps})).send().await.unwrap(), 201).await;
        // One active plan per flag and environment.
        expect(app.post(&plans_path("checkout"), &json!({"to_variation": 0, "steps": steps})).send().await.unwrap(), 409).await;
        let advanced = act(&app, "checkout", &a["id"], "advance", 200).await;
        assert_eq!(advanced["current_step"], 1);
        assert_eq!(share_of_true(&app.config("shop", "checkout").await["fallthrough"]), 25_000);
        let aborted = act(&app, "checkout", &a["id"], "abort", 200).await;
        assert_eq!(aborted["state"], "aborted");
        assert_eq!(app.config("shop", "checkout").await["fallthrough"], json!({"variation": 1}));
        act(&app, "checkout", &a["id"], "resume", 409).await;
        act(&app, "checkout", &a["id"], "advance", 409).await;

        // Someone edits the rollout by hand: the next step pauses the plan instead of
        // overwriting it.
        let b = expect(app.post(&plans_path("search"), &json!({"to_variation": 0, "steps": steps})).send().await.unwrap(), 201).await;
        let by_hand = json!({"rollout": {"variations": [{"variation": 0, "weight": 1000}, {"variation": 1, "weight": 99000}]}});
        expect(app.patch(&config_path("shop", "search"), &json!({"fallthrough": by_hand})).send().await.unwrap(), 200).await;
        app.clock.advance(10 * HOUR);
        let plan = tokio::time::timeout(WAIT, async {
            loop {
                let p = expect(app.get(&format!("{}/{}", plans_path("search"), b["id"])).send().await.unwrap(), 200).await;
                if p["state"] != "running" {
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }).await.expect("the plan reacts in time");
        assert_eq!(plan["state"], "paused");
        assert!(plan["reason"].as_str().unwrap().contains("changed outside the plan"), "{plan}");
        assert_eq!(app.config("shop", "search").await["fallthrough"], by_hand);
        // Resuming adopts the hand edit; the next step goes on from there.
        // The hold ran out while paused: the next step is due at once.
        act(&app, "search", &b["id"], "resume", 200).await;
        let path = format!("{}/{}", plans_path("search"), b["id"]);
        tokio::time::timeout(WAIT, async {
            loop {
                let p = expect(app.get(&path).send().await.unwrap(), 200).await;
                if p["current_step"] == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the plan steps in time");
        assert_eq!(share_of_true(&app.config("shop", "search").await["fallthrough"]), 25_000);
        let list = expect(app.get(&plans_path("search")).send().await.unwrap(), 200).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
    }

    async fn a_server_killed_mid_plan_is_taken_over(app) {
        app.setup("shop", &["checkout"]).await;
        let mut hook = Receiver::start(&[]).await;
        app.subscribe("shop", &hook.url, &["plan.step"], "json").await;
        let plan = expect(app.post(&plans_path("checkout"), &json!({"to_variation": 0,
            "steps": [{"percentage": 10, "hold_minutes": 60}, {"percentage": 50, "hold_minutes": 60},
                      {"percentage": 100}]})).send().await.unwrap(), 201).await;
        assert_eq!(hook.next().await.json()["after"]["current_step"], 0);
        // A server took the plan when step 1 fell due, wrote it, and was killed before
        // recording it: its lease runs 30 s past the step's time.
        let due = app.clock.now() + HOUR;
        let lease = (due + Duration::from_secs(30))
            .format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"))
            .unwrap();
        let sql = format!(
            "UPDATE release_plans SET claimed_by = 'dead-server', lease_until = '{lease}'
             WHERE id = {}", plan["id"]);
        assert_eq!(app.database.execute(Box::leak(sql.into_boxed_str())).await.unwrap(), 1);
        let step1 = json!({"rollout": {"variations": [{"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}});
        expect(app.patch(&config_path("shop", "checkout"), &json!({"fallthrough": step1})).send().await.unwrap(), 200).await;
        let version = app.config("shop", "checkout").await["version"].clone();

        app.clock.advance(HOUR);
        assert!(hook.quiet(Duration::from_millis(300)).await, "taken while the lease holds");
        app.clock.advance(Duration::from_secs(31));
        let step = hook.next().await.json();
        assert_eq!(step["after"]["current_step"], 1);
        assert_eq!(step["after"]["state"], "running");
        // Found in place: recorded, not written again; the plan goes on from there.
        assert_eq!(app.config("shop", "checkout").await["version"], version);
        app.clock.advance(HOUR);
        let path = format!("{}/{}", plans_path("checkout"), plan["id"]);
        let last = tokio::time::timeout(WAIT, async {
            loop {
                let p = expect(app.get(&path).send().await.unwrap(), 200).await;
                if p["state"] == "completed" {
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the plan completes in time");
        assert_eq!(last["current_step"], 2);
        assert_eq!(app.config("shop", "checkout").await["fallthrough"], json!({"variation": 0}));
    }

    async fn bad_plans_are_refused(app) {
        app.setup("shop", &["checkout"]).await;
        for body in [
            json!({"to_variation": 0, "steps": []}),
            json!({"to_variation": 0, "steps": [{"percentage": 50}]}),
            json!({"to_variation": 0, "steps": [{"percentage": 50}, {"percentage": 20}, {"percentage": 100}]}),
            json!({"to_variation": 1, "steps": [{"percentage": 100}]}),
            json!({"to_variation": 7, "steps": [{"percentage": 100}]}),
            json!({"to_variation": 0, "steps": [{"percentage": 100, "hold": 3}]}),
        ] {
            let res = app.post(&plans_path("checkout"), &body).send().await.unwrap();
            assert_eq!(res.status(), 422, "{body}");
        }
        expect(app.post(&format!("{}/999/pause", plans_path("checkout")), &json!({})).send().await.unwrap(), 404).await;
        assert_eq!(app.config("shop", "checkout").await["version"], 1, "nothing written");
    }
}
