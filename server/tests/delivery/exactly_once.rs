//! Exactly once across servers: two more server processes of the real binary join the
//! in-process server on one PostgreSQL database; every due change runs once.

use std::time::Duration;

use serde_json::json;
use vexil_testkit::Backend;

use crate::helpers::*;

const FLAGS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_run_each_due_change_exactly_once() {
    let app = spawn(Backend::Postgres).await;
    let keys: Vec<String> = (0..FLAGS).map(|i| format!("f{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    app.setup("shop", &refs).await;
    let (mut a, _) = spawn_process(&app.database.url, &app.admin_token).await;
    let (mut b, _) = spawn_process(&app.database.url, &app.admin_token).await;

    // Due in a second and a half of real time: the processes run by the system clock and
    // poll every 20 ms, so they all reach for the same rows at once.
    let at = time::OffsetDateTime::now_utc() + Duration::from_millis(1_500);
    let mut ids = Vec::new();
    for k in &keys {
        let s = app
            .schedule(
                "shop",
                k,
                json!({"execute_at": rfc3339(at), "patch": {"on": true}}),
            )
            .await;
        ids.push((k.clone(), s["id"].as_i64().unwrap()));
    }
    // The in-process server's manual clock joins in at the same moment.
    let wait = at - time::OffsetDateTime::now_utc();
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    app.clock.advance(Duration::from_secs(2));

    let done = tokio::time::timeout(WAIT, async {
        loop {
            let list = expect(
                app.get("/api/v1/audit?project=shop&action=schedule.executed&limit=100")
                    .send()
                    .await
                    .unwrap(),
                200,
            )
            .await;
            let n = list["items"].as_array().unwrap().len();
            if n >= FLAGS {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every change runs in time");
    assert_eq!(done["items"].as_array().unwrap().len(), FLAGS, "{done}");
    for (k, id) in &ids {
        let s = app.scheduled("shop", k, *id).await;
        assert_eq!(s["state"], "executed", "{s}");
        assert_eq!(s["attempts"], 1, "claimed more than once: {s}");
        let versions = expect(
            app.get(&format!("{}/versions", config_path("shop", k)))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        let by_schedule = versions["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["actor"].as_str().unwrap_or("").starts_with("schedule "))
            .count();
        assert_eq!(by_schedule, 1, "{versions}");
    }
    let _ = a.kill().await;
    let _ = b.kill().await;
}
