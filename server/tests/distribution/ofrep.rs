//! OFREP on the control plane: exact JSON shapes, authentication, bulk ETags.

use serde_json::{Value, json};
use vexil_testkit::{Backend, spawn_app};

use crate::helpers::*;

async fn post(base: &str, path: &str, auth: Option<(&str, &str)>, body: &str) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some((h, v)) = auth {
        req = req.header(h, v);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_answers_match_the_spec() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod", "staging"]).await;
    expect(
        app.post(
            "/api/v1/projects/p/flags",
            &json!({"key": "color", "name": "Color", "kind": "string",
                    "variations": [{"value": "red", "name": "warm"}, {"value": "blue"}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    expect(
        app.put(
            &config_path("p", "color", "prod"),
            &json!({"on": true, "off_variation": 0, "fallthrough": {"variation": 1},
                    "targets": [{"variation": 0, "values": ["vip"]}]}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let bearer = format!("Bearer {}", keys[0]);
    let auth = Some(("authorization", bearer.as_str()));
    let base = app.base_url.as_str();
    let version = expect(
        app.get("/api/v1/projects/p/environments/prod")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await["version"]
        .as_u64()
        .unwrap();

    // One flag: default and targeting match, exactly.
    let res = post(
        base,
        "/ofrep/v1/evaluate/flags/color",
        auth,
        r#"{"context":{"targetingKey":"u1"}}"#,
    )
    .await;
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        expect(res, 200).await,
        json!({"key": "color", "value": "blue", "reason": "DEFAULT", "variant": "1",
               "metadata": {"environmentVersion": version}})
    );
    let res = post(
        base,
        "/ofrep/v1/evaluate/flags/color",
        Some(("x-api-key", &keys[0])),
        r#"{"context":{"targetingKey":"vip"}}"#,
    )
    .await;
    assert_eq!(
        expect(res, 200).await,
        json!({"key": "color", "value": "red", "reason": "TARGETING_MATCH", "variant": "warm",
               "metadata": {"environmentVersion": version}})
    );

    // Not found, bad bodies.
    let res = post(
        base,
        "/ofrep/v1/evaluate/flags/nope",
        auth,
        r#"{"context":{}}"#,
    )
    .await;
    let body = expect(res, 404).await;
    assert_eq!(body["key"], "nope");
    assert_eq!(body["errorCode"], "FLAG_NOT_FOUND");
    assert!(body["errorDetails"].is_string());
    let body = expect(
        post(base, "/ofrep/v1/evaluate/flags/color", auth, "{not json").await,
        400,
    )
    .await;
    assert_eq!(
        (body["key"].as_str(), body["errorCode"].as_str()),
        (Some("color"), Some("PARSE_ERROR"))
    );
    let body = expect(
        post(
            base,
            "/ofrep/v1/evaluate/flags/color",
            auth,
            r#"{"context":{"targetingKey":5}}"#,
        )
        .await,
        400,
    )
    .await;
    assert_eq!(body["errorCode"], "INVALID_CONTEXT");

    // Authentication: missing or unknown 401, relay key 403, all without a body.
    for a in [
        None,
        Some(("authorization", "Bearer vxs_unknown")),
        Some(("x-api-key", "nonsense")),
    ] {
        let res = post(base, "/ofrep/v1/evaluate/flags/color", a, "{}").await;
        assert_eq!(res.status(), 401);
        assert_eq!(res.text().await.unwrap(), "");
    }
    let relay = expect(
        app.post(
            "/api/v1/relay-keys",
            &json!({"name": "edge", "environments": [{"project": "p", "environment": "prod"}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let relay_key = relay["secret"].as_str().unwrap();
    let res = post(
        base,
        "/ofrep/v1/evaluate/flags/color",
        Some(("x-api-key", relay_key)),
        "{}",
    )
    .await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.text().await.unwrap(), "");

    // The staging key reads staging, where the flag is off: a different answer.
    let staging = format!("Bearer {}", keys[1]);
    let body = expect(
        post(
            base,
            "/ofrep/v1/evaluate/flags/color",
            Some(("authorization", &staging)),
            r#"{"context":{"targetingKey":"vip"}}"#,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["reason"], "DISABLED");

    // Bulk: every flag, ETag, 304 on If-None-Match, a new ETag after a change.
    let res = post(
        base,
        "/ofrep/v1/evaluate/flags",
        auth,
        r#"{"context":{"targetingKey":"vip"}}"#,
    )
    .await;
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with(&format!("\"{version}-")), "{etag}");
    assert_eq!(
        expect(res, 200).await,
        json!({"flags": [{"key": "color", "value": "red", "reason": "TARGETING_MATCH", "variant": "warm"}],
               "metadata": {"environmentVersion": version}})
    );
    let res = reqwest::Client::new()
        .post(format!("{base}/ofrep/v1/evaluate/flags"))
        .header("authorization", &bearer)
        .header("if-none-match", &etag)
        .json(&json!({"context": {"targetingKey": "vip"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let other = post(
        base,
        "/ofrep/v1/evaluate/flags",
        auth,
        r#"{"context":{"targetingKey":"u2"}}"#,
    )
    .await;
    assert_ne!(other.headers()["etag"].to_str().unwrap(), etag);
    set_on(&app, "color", "prod", false).await;
    let res = reqwest::Client::new()
        .post(format!("{base}/ofrep/v1/evaluate/flags"))
        .header("authorization", &bearer)
        .header("if-none-match", &etag)
        .json(&json!({"context": {"targetingKey": "vip"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["flags"][0]["reason"], "DISABLED");
    let body = expect(
        post(base, "/ofrep/v1/evaluate/flags", auth, "[1]").await,
        400,
    )
    .await;
    assert_eq!(body["errorCode"], "PARSE_ERROR");
    assert!(body.get("key").is_none());

    // Configuration extension.
    let res = reqwest::Client::new()
        .get(format!("{base}/ofrep/v1/configuration"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    let body = expect(res, 200).await;
    assert_eq!(body["name"], "vexil");
    assert_eq!(
        body["capabilities"]["cacheInvalidation"]["polling"]["enabled"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_rate_limits_per_key_with_retry_after() {
    let app =
        vexil_testkit::spawn_app_with(Backend::Sqlite, |c| c.distribution.ofrep_rate_limit = 2)
            .await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "f").await;
    let auth = format!("Bearer {}", keys[0]);
    let mut limited = None;
    for _ in 0..10 {
        let res = post(
            &app.base_url,
            "/ofrep/v1/evaluate/flags/f",
            Some(("authorization", &auth)),
            "{}",
        )
        .await;
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
        assert_eq!(res.status(), 200);
    }
    let res = limited.expect("the third request within a second is limited");
    assert!(
        res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}
