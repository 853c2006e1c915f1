//! Client-side access (issue 15) on the control plane: client keys read evaluated values of
//! client-side flags and nothing else, CORS, the per-context evaluated stream.

use serde_json::{Value, json};
use vexil_testkit::sse::SseReader;
use vexil_testkit::{Backend, TestApp, spawn_app};

use crate::helpers::*;

pub(crate) const ALLOWED: &str = "https://app.example.com";
pub(crate) const OTHER: &str = "https://evil.example.com";

/// Unpadded base64url, as browsers send the context.
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Project `p`/`prod` with a client-side flag `banner` (targets `vip`), an internal flag
/// `internal` (targets `secret-user`), an SDK key and a client key; origins allowed: one.
pub(crate) async fn client_setup(app: &TestApp) -> (String, String) {
    let sdk = setup(app, &["prod"]).await.remove(0);
    for (key, client_side, target) in [("banner", true, "vip"), ("internal", false, "secret-user")]
    {
        expect(
            app.post(
                "/api/v1/projects/p/flags",
                &json!({"key": key, "name": key, "kind": "string", "client_side": client_side,
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
                &config_path("p", key, "prod"),
                &json!({"on": true, "off_variation": 0, "fallthrough": {"variation": 1},
                        "targets": [{"variation": 0, "values": [target]}]}),
            )
            .send()
            .await
            .unwrap(),
            200,
        )
        .await;
    }
    let env = expect(
        app.patch(
            "/api/v1/projects/p/environments/prod",
            &json!({"allowed_origins": [ALLOWED]}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(env["allowed_origins"], json!([ALLOWED]));
    let client = expect(
        app.post(
            "/api/v1/projects/p/environments/prod/client-keys",
            &json!({"name": "web"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    assert_eq!(client["kind"], "client");
    let client = client["secret"].as_str().unwrap().to_owned();
    assert!(client.starts_with("vxc_"));
    (sdk, client)
}

async fn bulk(app: &TestApp, key: &str, origin: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}/ofrep/v1/evaluate/flags", app.base_url))
        .header("authorization", format!("Bearer {key}"))
        .json(&json!({"context": {"targetingKey": "vip"}}));
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_read_client_side_values_and_nothing_else() {
    let app = spawn_app(Backend::Postgres).await;
    let (sdk, client) = client_setup(&app).await;
    let base = app.base_url.as_str();
    let http = reqwest::Client::new();

    // OFREP bulk: only the client-side flag, version at the response level.
    let res = bulk(&app, &client, None).await;
    let body = expect(res, 200).await;
    assert_eq!(
        body["flags"],
        json!([{"key": "banner", "value": "red", "reason": "TARGETING_MATCH", "variant": "warm"}])
    );
    assert!(body["metadata"]["environmentVersion"].as_u64().is_some());

    // From an allowed origin: the origin echoed, ETag exposed.
    let res = bulk(&app, &client, Some(ALLOWED)).await;
    assert_eq!(res.headers()["access-control-allow-origin"], ALLOWED);
    assert_eq!(res.headers()["access-control-expose-headers"], "ETag");
    expect(res, 200).await;
    // A disallowed origin: 403, nothing the browser may read.
    let res = bulk(&app, &client, Some(OTHER)).await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    expect(res, 403).await;
    // A server-side SDK key from a browser: refused.
    let res = bulk(&app, &sdk, Some(ALLOWED)).await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
    expect(res, 403).await;
    // ... but from a server it still reads every flag.
    let body = expect(bulk(&app, &sdk, None).await, 200).await;
    assert_eq!(body["flags"].as_array().unwrap().len(), 2);

    // Preflight: answered for the browser, with the contract's headers.
    let res = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/ofrep/v1/evaluate/flags"),
        )
        .header("origin", ALLOWED)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], ALLOWED);
    assert_eq!(h["access-control-allow-methods"], "GET, POST, OPTIONS");
    assert_eq!(
        h["access-control-allow-headers"],
        "Authorization, Content-Type, If-None-Match, Last-Event-ID, X-Vexil-Event-Schema"
    );
    assert_eq!(h["access-control-max-age"], "600");
    let res = http
        .request(reqwest::Method::OPTIONS, format!("{base}/client/v1/stream"))
        .header("origin", ALLOWED)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);

    // One flag: the internal one does not exist for a client key.
    let res = http
        .post(format!("{base}/ofrep/v1/evaluate/flags/internal"))
        .header("authorization", format!("Bearer {client}"))
        .json(&json!({"context": {"targetingKey": "secret-user"}}))
        .send()
        .await
        .unwrap();
    expect(res, 404).await;

    // Nothing else: admin API, SDK stream and snapshot, relay stream, snapshot endpoint.
    for path in [
        "/sdk/v1/stream",
        "/sdk/v1/snapshot",
        "/relay/v1/stream",
        "/api/v1/projects",
        "/api/v1/projects/p/environments/prod/snapshot",
    ] {
        let res = http
            .get(format!("{base}{path}"))
            .header("authorization", format!("Bearer {client}"))
            .send()
            .await
            .unwrap();
        assert!(
            res.status() == 401 || res.status() == 403,
            "{path}: {}",
            res.status()
        );
    }
    // SDK keys do not open evaluated streams.
    let res = http
        .get(format!("{base}/client/v1/stream?key={sdk}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

async fn open_stream(
    base: &str,
    client: &str,
    context: &Value,
    origin: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let ctx = b64url(context.to_string().as_bytes());
    let mut req = reqwest::Client::new()
        .get(format!(
            "{base}/client/v1/stream?key={client}&context={ctx}"
        ))
        .header("origin", origin);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    tokio::time::timeout(WAIT, req.send())
        .await
        .unwrap()
        .unwrap()
}

/// A stream event's data with each item's `flagVersion` checked (a number) and taken out:
/// what the page compares.
fn without_flag_versions(mut data: Value) -> Value {
    if let Some(flags) = data["flags"].as_object_mut() {
        for item in flags.values_mut() {
            let v = item
                .as_object_mut()
                .and_then(|o| o.remove("flagVersion"))
                .unwrap_or_else(|| panic!("no flagVersion in {item}"));
            assert!(v.as_u64().is_some(), "flagVersion {v}");
        }
    }
    data
}

async fn next(reader: &mut SseReader) -> vexil_testkit::sse::Event {
    tokio::time::timeout(WAIT, reader.next_event())
        .await
        .expect("an event in time")
        .expect("the stream stays open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluated_stream_sends_this_contexts_values_and_only_their_changes() {
    let app = spawn_app(Backend::Postgres).await;
    let (_, client) = client_setup(&app).await;
    let base = app.base_url.as_str();

    // A disallowed origin is refused before any stream opens.
    let res = open_stream(base, &client, &json!({"targetingKey": "vip"}), OTHER, None).await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
    expect(res, 403).await;

    let res = open_stream(
        base,
        &client,
        &json!({"targetingKey": "vip"}),
        ALLOWED,
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["access-control-allow-origin"], ALLOWED);
    let mut vip = SseReader::new(res);
    let put = next(&mut vip).await;
    assert_eq!(put.event, "put");
    let version: u64 = put.id.as_deref().unwrap().parse().unwrap();
    assert_eq!(
        without_flag_versions(put.json()),
        json!({"version": version,
               "flags": {"banner": {"value": "red", "variant": "warm", "reason": "TARGETING_MATCH",
                                    "variationIndex": 0}}})
    );
    // Values only: no rules, targets, segments, or any other context's key.
    for secret in [
        "targets",
        "rules",
        "segments",
        "secret-user",
        "internal",
        "fallthrough",
    ] {
        assert!(!put.data.contains(secret), "{secret} in {}", put.data);
    }

    // The internal flag changes, then the banner's fallthrough (not this targeted context's
    // value): no event for either. Then the banner's target goes: a patch with it alone.
    set_on(&app, "internal", "prod", false).await;
    expect(
        app.patch(
            &config_path("p", "banner", "prod"),
            &json!({"fallthrough": {"variation": 0}}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let off = set_on(&app, "banner", "prod", false).await;
    let patch = next(&mut vip).await;
    assert_eq!(patch.event, "patch");
    assert_eq!(
        patch.id.as_deref(),
        Some(off.to_string().as_str()),
        "no event before: {patch:?}"
    );
    assert_eq!(
        without_flag_versions(patch.json()),
        json!({"version": off, "flags": {"banner": {"value": "red", "variant": "warm",
                                                    "reason": "DISABLED", "variationIndex": 0}}})
    );

    // Resume at the current version: no put; the next change arrives as a patch.
    let res = open_stream(
        base,
        &client,
        &json!({"targetingKey": "vip"}),
        ALLOWED,
        Some(&off.to_string()),
    )
    .await;
    let mut resumed = SseReader::new(res);
    // Resume from an older version: a fresh put.
    let res = open_stream(
        base,
        &client,
        &json!({"targetingKey": "vip"}),
        ALLOWED,
        Some(&version.to_string()),
    )
    .await;
    let mut stale = SseReader::new(res);
    let put = next(&mut stale).await;
    assert_eq!(
        (put.event.as_str(), put.id.clone()),
        ("put", Some(off.to_string()))
    );

    // The flag stops being client-side: removed.
    expect(
        app.put(
            "/api/v1/projects/p/flags/banner",
            &json!({"key": "banner", "name": "banner", "kind": "string", "client_side": false,
                    "variations": [{"value": "red", "name": "warm"}, {"value": "blue"}]}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let ev = next(&mut resumed).await;
    assert_eq!(ev.event, "patch", "{ev:?}");
    let data = ev.json();
    assert_eq!(data["removed"], json!(["banner"]), "{data}");
    assert_eq!(data["flags"], json!({}));
    let ev = next(&mut vip).await;
    assert_eq!(ev.json()["removed"], json!(["banner"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_and_origins_work_on_sqlite() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, client) = client_setup(&app).await;
    let res = bulk(&app, &client, Some(ALLOWED)).await;
    assert_eq!(res.headers()["access-control-allow-origin"], ALLOWED);
    let body = expect(res, 200).await;
    assert_eq!(body["flags"].as_array().unwrap().len(), 1, "{body}");
    expect(bulk(&app, &client, Some(OTHER)).await, 403).await;
}
