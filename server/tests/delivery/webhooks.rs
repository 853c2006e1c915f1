//! Webhooks: signed deliveries from the outbox, retried with backoff after a 500, a delivery
//! log, auto-disable after a day of failures, the Slack format, and validation.

use std::time::Duration;

use serde_json::{Value, json};
use vexil_testkit::Backend;

use crate::helpers::*;

const SECRET: &str = "a-very-secret-signing-key";

/// Waits until the delivery log's newest entry is in `state` after `attempts` attempts;
/// returns the log.
async fn log_until(app: &App, hook_id: &Value, state: &str, attempts: i64) -> Value {
    let path = format!("/api/v1/projects/shop/webhooks/{hook_id}/deliveries");
    tokio::time::timeout(WAIT, async {
        loop {
            let log = expect(app.get(&path).send().await.unwrap(), 200).await;
            let d = &log["items"][0];
            if d["state"] == state && d["attempts"] == attempts && !d["last_status"].is_null() {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the delivery log reaches the state in time")
}

both! {
    async fn deliveries_are_signed_and_retried_after_a_500(app) {
        app.setup("shop", &["checkout"]).await;
        let mut hook = Receiver::start(&[500]).await;
        let sub = app.subscribe("shop", &hook.url, &["flag.*"], "json").await;
        assert_eq!(sub["secret"], SECRET);
        // A write refused by validation commits nothing, so queues nothing.
        expect(app.patch(&config_path("shop", "checkout"), &json!({"off_variation": 7})).send().await.unwrap(), 422).await;
        expect(app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap(), 200).await;

        let first = hook.next().await;
        assert_eq!(first.status, 500);
        assert!(signature_ok(&first, SECRET), "bad signature");
        assert!(!signature_ok(&first, "another-secret-entirely"));
        assert_eq!(first.header("vexil-event"), "flag.config.update");
        assert_eq!(first.header("vexil-timestamp"), app.clock.now().unix_timestamp().to_string());
        let event = first.json();
        assert_eq!(event["project"], "shop");
        assert_eq!(event["environment"], "prod");
        assert_eq!(event["key"], "checkout");
        assert_eq!(event["before"]["on"], false);
        assert_eq!(event["after"]["on"], true);
        let log = log_until(&app, &sub["id"], "pending", 1).await;
        let d = &log["items"][0];
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["last_status"], 500);
        assert!(d["next_attempt_at"].is_string());

        // Not before the backoff (10 s) has passed.
        app.clock.advance(Duration::from_secs(5));
        assert!(hook.quiet(Duration::from_millis(300)).await);
        app.clock.advance(Duration::from_secs(5));
        let second = hook.next().await;
        assert_eq!(second.status, 200);
        assert_eq!(second.header("vexil-delivery"), first.header("vexil-delivery"));
        assert_eq!(second.body, first.body, "the same event, resent");
        assert_ne!(second.header("vexil-timestamp"), first.header("vexil-timestamp"));
        assert!(signature_ok(&second, SECRET));
        let log = log_until(&app, &sub["id"], "delivered", 2).await;
        assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");
        assert_eq!(log["items"][0]["attempts"], 2);
        assert_eq!(log["items"][0]["last_status"], 200);
        let got = expect(app.get(&format!("/api/v1/projects/shop/webhooks/{}", sub["id"])).send().await.unwrap(), 200).await;
        assert_eq!(got["consecutive_failures"], 0);
        assert!(got.get("secret").is_none(), "the secret is shown only at creation");
    }

    async fn a_day_of_failures_disables_the_subscription(app) {
        app.setup("shop", &["checkout"]).await;
        let mut hook = Receiver::start(&[500; 8]).await;
        let sub = app.subscribe("shop", &hook.url, &["flag.kill"], "json").await;
        let path = format!("/api/v1/projects/shop/webhooks/{}", sub["id"]);
        expect(app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap(), 200).await;
        expect(app.post("/api/v1/projects/shop/flags/checkout/kill", &json!({})).send().await.unwrap(), 200).await;
        assert_eq!(hook.next().await.status, 500);
        log_until(&app, &sub["id"], "pending", 1).await;

        app.clock.advance(Duration::from_secs(25 * 3600));
        assert_eq!(hook.next().await.status, 500);
        let log = log_until(&app, &sub["id"], "failed", 2).await;
        assert_eq!(log["items"][0]["attempts"], 2);
        let got = expect(app.get(&path).send().await.unwrap(), 200).await;
        assert_eq!(got["enabled"], false);
        assert!(got["disabled_reason"].as_str().unwrap().contains("24 h"), "{got}");

        // Disabled: new events are not queued.
        expect(app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap(), 200).await;
        expect(app.post("/api/v1/projects/shop/flags/checkout/kill", &json!({})).send().await.unwrap(), 200).await;
        assert!(hook.quiet(Duration::from_millis(300)).await);

        // Re-enabled (with If-Match): deliveries resume, the failure count restarts.
        let etag = got["version"].to_string();
        let res = app.client.patch(app.url(&path)).bearer_auth(&app.admin_token)
            .header("if-match", format!("\"{etag}\"")).json(&json!({"enabled": true})).send().await.unwrap();
        let re = expect(res, 200).await;
        assert_eq!(re["enabled"], true);
        assert_eq!(re["consecutive_failures"], 0);
        assert!(re.get("disabled_reason").is_none());
        expect(app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap(), 200).await;
        expect(app.post("/api/v1/projects/shop/flags/checkout/kill", &json!({})).send().await.unwrap(), 200).await;
        let r = hook.next().await;
        assert_eq!(r.header("vexil-event"), "flag.kill");
    }

    async fn slack_subscriptions_get_a_text_message(app) {
        app.setup("shop", &["checkout"]).await;
        let mut hook = Receiver::start(&[]).await;
        app.subscribe("shop", &hook.url, &["flag.kill"], "slack").await;
        expect(app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap(), 200).await;
        expect(app.post("/api/v1/projects/shop/flags/checkout/kill", &json!({})).send().await.unwrap(), 200).await;
        let r = hook.next().await;
        assert!(signature_ok(&r, SECRET));
        assert_eq!(r.json(), json!({"text": "*flag.kill* `checkout` flag in shop/prod by bootstrap-admin"}));
    }

    async fn subscriptions_are_validated_and_admin_only(app) {
        app.setup("shop", &[]).await;
        let path = "/api/v1/projects/shop/webhooks";
        for body in [
            json!({"url": "ftp://example.com/x", "events": ["flag.*"]}),
            json!({"url": "not a url", "events": ["flag.*"]}),
            json!({"url": "http://example.com/x", "events": []}),
            json!({"url": "http://example.com/x", "events": ["flag.explode"]}),
            json!({"url": "http://example.com/x", "events": ["*"], "secret": "short"}),
            json!({"url": "http://example.com/x", "events": ["*"], "format": "xml"}),
        ] {
            let res = app.post(path, &body).send().await.unwrap();
            assert_eq!(res.status(), 422, "{body}");
        }
        let editor = {
            let t = expect(app.post("/api/v1/tokens", &json!({"name": "ed", "role": "editor"})).send().await.unwrap(), 201).await;
            t["secret"].as_str().unwrap().to_owned()
        };
        let res = app.client.get(app.url(path)).bearer_auth(&editor).send().await.unwrap();
        assert_eq!(res.status(), 403);
        let created = app.post(path, &json!({"url": "http://example.com/x", "events": ["*"]})).send().await.unwrap();
        let created = expect(created, 201).await;
        assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
        let list = expect(app.get(path).send().await.unwrap(), 200).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert!(list["items"][0].get("secret").is_none());
        let one = format!("{path}/{}", created["id"]);
        let res = app.client.delete(app.url(&one)).bearer_auth(&app.admin_token).send().await.unwrap();
        assert_eq!(res.status(), 204);
        expect(app.get(&one).send().await.unwrap(), 404).await;
    }
}
