//! OFREP at the relay: evaluated on the relay's compiled snapshots, exact wire shapes.

use serde_json::{Value, json};

use crate::harness::*;

async fn post(
    url: &str,
    auth: Option<(&str, &str)>,
    body: &str,
    etag: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    if let Some(tag) = etag {
        req = req.header("if-none-match", tag);
    }
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[tokio::test]
async fn ofrep_evaluates_on_the_relay_with_the_spec_shapes() {
    let mut origin = Origin::start(&["shop/prod", "shop/dev"]).await;
    // A flag with named variations and a rule on an attribute.
    let rule_flag: vexil_schema::Flag = serde_json::from_value(json!({
        "key": "checkout",
        "kind": "string",
        "variations": [{"value": "old", "name": "control"}, {"value": "new", "name": "treatment"}],
        "on": true,
        "off_variation": 0,
        "rules": [{"id": "pro", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "serve": {"variation": 1}}],
        "fallthrough": {"variation": 0}
    }))
    .unwrap();
    let e = env("shop/prod");
    let change = origin.model.set(&e, "placeholder", json!(0));
    origin.publish(&e, &change);
    let (version, flags) = origin.model.envs.get_mut(&e).unwrap();
    *version += 1;
    flags.insert("checkout".into(), rule_flag.clone());
    let change = vexil_schema::stream::Change::Patch(vexil_schema::stream::Patch {
        version: *version,
        item: vexil_schema::stream::PatchItem::Flag(rule_flag),
    });
    origin.publish(&e, &change);

    let relay = InProcessRelay::start(relay_config(&origin.url())).await;
    relay.wait_ready().await;
    relay
        .wait_until("checkout is loaded", |r| {
            r.state
                .evaluator(&e)
                .is_some_and(|c| c.flag("checkout").is_some())
        })
        .await;
    let key = sdk_key("shop/prod");
    let bearer = format!("Bearer {key}");
    let one = format!("{}/ofrep/v1/evaluate/flags/checkout", relay.url());

    let (status, _, body) = post(
        &one,
        Some(("authorization", &bearer)),
        r#"{"context":{"targetingKey":"u1","plan":"pro"}}"#,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"key": "checkout", "value": "new", "reason": "TARGETING_MATCH", "variant": "treatment",
               "metadata": {"environmentVersion": 3}})
    );
    // X-API-Key works too; no rule matches: the fallthrough.
    let (status, _, body) = post(
        &one,
        Some(("x-api-key", &key)),
        r#"{"context":{"targetingKey":"u2"}}"#,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(parse(&body)["reason"], "DEFAULT");
    assert_eq!(parse(&body)["variant"], "control");

    let missing = format!("{}/ofrep/v1/evaluate/flags/nope", relay.url());
    let (status, _, body) = post(&missing, Some(("authorization", &bearer)), "{}", None).await;
    assert_eq!(status, 404);
    let body = parse(&body);
    assert_eq!(
        (body["key"].as_str(), body["errorCode"].as_str()),
        (Some("nope"), Some("FLAG_NOT_FOUND"))
    );

    let (status, _, body) = post(&one, Some(("authorization", &bearer)), "{oops", None).await;
    assert_eq!(status, 400);
    assert_eq!(parse(&body)["errorCode"], "PARSE_ERROR");
    let (status, _, body) = post(
        &one,
        Some(("authorization", &bearer)),
        r#"{"context":{"targetingKey":1}}"#,
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(parse(&body)["errorCode"], "INVALID_CONTEXT");

    // No key / unknown key: 401; a relay key: 403; neither has a body.
    for auth in [None, Some(("authorization", "Bearer vxs_unknown"))] {
        let (status, _, body) = post(&one, auth, "{}", None).await;
        assert_eq!((status, body.as_str()), (401, ""));
    }
    let (status, _, body) = post(&one, Some(("x-api-key", RELAY_KEY)), "{}", None).await;
    assert_eq!((status, body.as_str()), (403, ""));

    // A key of another environment evaluates that environment: no `checkout` there.
    let (status, _, _) = post(&one, Some(("x-api-key", &sdk_key("shop/dev"))), "{}", None).await;
    assert_eq!(status, 404);

    // Bulk: every flag, an ETag, 304 when unchanged, a new tag after a change.
    let all = format!("{}/ofrep/v1/evaluate/flags", relay.url());
    let ctx = r#"{"context":{"targetingKey":"u1","plan":"pro"}}"#;
    let (status, headers, body) = post(&all, Some(("authorization", &bearer)), ctx, None).await;
    assert_eq!(status, 200);
    let body = parse(&body);
    let keys: Vec<_> = body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["checkout", "initial", "placeholder"]);
    assert_eq!(body["flags"][0]["value"], "new");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, body) = post(&all, Some(("authorization", &bearer)), ctx, Some(&etag)).await;
    assert_eq!((status, body.as_str()), (304, ""));
    let other_ctx = r#"{"context":{"targetingKey":"u9"}}"#;
    assert_eq!(
        post(
            &all,
            Some(("authorization", &bearer)),
            other_ctx,
            Some(&etag)
        )
        .await
        .0,
        200
    );

    origin.set("shop/prod", "added", json!(true));
    relay
        .wait_until("version 4", |r| {
            r.state.evaluator(&e).is_some_and(|c| c.version() == 4)
        })
        .await;
    let (status, headers, _) = post(&all, Some(("authorization", &bearer)), ctx, Some(&etag)).await;
    assert_eq!(status, 200);
    assert_ne!(headers["etag"].to_str().unwrap(), etag);

    let (status, _, body) = get(
        &format!("{}/ofrep/v1/configuration", relay.url()),
        Some(&key),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(parse(&body)["name"], "vexil");
}
