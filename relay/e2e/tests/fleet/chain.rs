//! A chain of relays in the fleet view: control plane ← relay A ← relay B ← relay C, SDK
//! streams on each relay, a flag change, and `GET …/fleet` listing every relay under its own
//! id with the relay it reports through, its subscribers, and the change reaching 100 % of the
//! streams behind the chain. Chained relays post their reports to their parent relay, which
//! forwards them hop by hop.

use std::time::Duration;

use serde_json::{Value, json};
use vexil_testkit::{Backend, spawn_app};

use super::{expect, poll, setup, stream, until_version};
use crate::harness::{InProcessRelay, relay_config};

/// SDK streams on the relay chained below the first one.
const CHAINED_STREAMS: usize = 12;

async fn relay(upstream: &str, key: &str, id: &str) -> InProcessRelay {
    let mut config = relay_config(upstream);
    config.relay_key = key.to_owned();
    config.relay_id = Some(id.to_owned());
    config.fleet_report_min_gap = Duration::from_millis(100);
    let r = InProcessRelay::start(config).await;
    r.wait_ready().await;
    r
}

fn relay_named<'a>(fleet: &'a Value, id: &str) -> &'a Value {
    fleet["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} is listed: {fleet:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_chained_below_a_relay_appear_in_the_fleet_and_converge() {
    let app = spawn_app(Backend::Postgres).await;
    let (sdk_key, relay_key) = setup(&app).await;
    let mut a = relay(&app.base_url, &relay_key, "edge-a").await;
    let mut b = relay(&a.url(), &relay_key, "edge-b").await;
    let mut c = relay(&b.url(), &relay_key, "edge-c").await;

    let mut streams = Vec::new();
    for _ in 0..2 {
        streams.push(stream(&a.url(), &sdk_key).await);
    }
    for _ in 0..CHAINED_STREAMS {
        streams.push(stream(&b.url(), &sdk_key).await);
    }
    for _ in 0..3 {
        streams.push(stream(&c.url(), &sdk_key).await);
    }
    let total = streams.len() as u64;
    let fleet = app.url("/api/v1/projects/shop/environments/prod/fleet");
    poll(
        &fleet,
        &app.admin_token,
        "every relay's streams are reported",
        |f| {
            f["sdk_streams"].as_u64() == Some(total)
                && f["relays"].as_array().map(Vec::len) == Some(3)
        },
    )
    .await;

    expect(
        app.patch(
            "/api/v1/projects/shop/flags/checkout/environments/prod",
            &json!({"on": true}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let version = expect(
        app.get("/api/v1/projects/shop/environments/prod")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await["version"]
        .as_u64()
        .unwrap();
    for s in &mut streams {
        until_version(s, version).await;
    }

    let f = poll(
        &fleet,
        &app.admin_token,
        "the change reached the whole chain",
        |f| {
            let c = &f["changes"][0];
            c["version"].as_u64() == Some(version)
                && c["delivered"].as_u64() == Some(total)
                && c["p100_ms"].is_number()
                && f["relays"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().all(|r| r["environment_version"] == version))
        },
    )
    .await;
    let change = &f["changes"][0];
    assert_eq!(change["streams"].as_u64(), Some(total), "{f:#}");
    assert_eq!(change["delivered_percent"].as_f64(), Some(100.0), "{f:#}");
    assert_eq!(f["on_latest_percent"].as_f64(), Some(100.0), "{f:#}");
    assert_eq!(f["streams_on_latest"].as_u64(), Some(total), "{f:#}");
    assert_eq!(f["direct_sdk_streams"].as_u64(), Some(0), "{f:#}");
    for (id, parent, subscribers) in [
        ("edge-a", Value::Null, 2),
        ("edge-b", json!("edge-a"), CHAINED_STREAMS as u64),
        ("edge-c", json!("edge-b"), 3),
    ] {
        let r = relay_named(&f, id);
        assert_eq!(r["parent"], parent, "{r}");
        assert_eq!(r["upstream"], "connected", "{r}");
        assert_eq!(r["subscribers"].as_u64(), Some(subscribers), "{r}");
    }

    // The parent relay takes reports only with a key it accepts, and only well formed.
    let post = |body: Value, key: Option<&str>| {
        let mut req = reqwest::Client::new()
            .post(format!("{}/relay/v1/fleet", a.url()))
            .json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    let report =
        json!({"relay_id": "x", "version": "0", "upstream_connected": true, "environments": []});
    assert_eq!(post(report.clone(), None).await.unwrap().status(), 401);
    assert_eq!(
        post(report, Some("vxr_not_a_key")).await.unwrap().status(),
        401
    );
    let bad = post(json!({"relay_id": "x"}), Some(&relay_key))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );

    drop(streams);
    c.stop().await;
    b.stop().await;
    // With the control plane gone, the parent says the report did not go through.
    app.stop().await;
    let report = json!({"relay_id": "edge-b", "version": "0", "upstream_connected": true, "environments": []});
    let lost = post(report, Some(&relay_key)).await.unwrap();
    assert_eq!(lost.status(), 502);
    assert_eq!(
        lost.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    a.stop().await;
}
