//! Client-side access at the relay (issue 15): client keys and origins arrive with the
//! upstream's `keys` events, and the relay evaluates per-context streams in memory.

use serde_json::{Value, json};
use vexil_fanout::{ClientEnv, hash_sdk_key};
use vexil_schema::Flag;
use vexil_schema::stream::{Change, Patch, PatchItem};
use vexil_testkit::sse::SseReader;

use crate::harness::*;

const CLIENT_KEY: &str = "vxc_web";
const ALLOWED: &str = "https://app.example.com";

/// Sets `f` in `e` on the origin: the next version, which it returns.
fn put_flag(origin: &mut Origin, e: &str, f: Flag) -> u64 {
    let e = env(e);
    let (version, flags) = origin.model.envs.get_mut(&e).unwrap();
    *version += 1;
    let v = *version;
    flags.insert(f.key.to_string(), f.clone());
    origin.publish(
        &e,
        &Change::Patch(Patch {
            version: v,
            item: PatchItem::Flag(f),
        }),
    );
    v
}

fn client_flag(key: &str, value: Value) -> Flag {
    let mut f = flag(key, value);
    f.client_side = true;
    f
}

async fn get(url: &str, origin: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    tokio::time::timeout(WAIT, req.send())
        .await
        .unwrap()
        .unwrap()
}

async fn next(reader: &mut SseReader) -> vexil_testkit::sse::Event {
    tokio::time::timeout(WAIT, reader.next_event())
        .await
        .expect("an event in time")
        .expect("the stream stays open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_serves_evaluated_streams_to_client_keys() {
    let mut origin = Origin::start(&["shop/prod"]).await;
    let e = env("shop/prod");
    origin.hub.as_ref().unwrap().set_client_access(
        &e,
        ClientEnv {
            key_hashes: vec![hash_sdk_key(CLIENT_KEY)],
            allowed_origins: vec![ALLOWED.to_owned()],
        },
    );
    put_flag(
        &mut origin,
        "shop/prod",
        client_flag("banner", json!("red")),
    );

    let relay = InProcessRelay::start(relay_config(&origin.url())).await;
    relay.wait_ready().await;
    relay
        .wait_until("the client key and banner are known", |r| {
            r.hub.client_keys().lookup(CLIENT_KEY).is_some()
                && r.state
                    .evaluator(&e)
                    .is_some_and(|c| c.flag("banner").is_some())
        })
        .await;

    // {"targetingKey":"u1"} in base64url.
    let url = format!(
        "{}/client/v1/stream?key={CLIENT_KEY}&context=eyJ0YXJnZXRpbmdLZXkiOiJ1MSJ9",
        relay.url()
    );
    let res = get(&url, Some("https://evil.example.com")).await;
    assert_eq!(res.status(), 403);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let sdk = get(
        &format!(
            "{}/client/v1/stream?key={}",
            relay.url(),
            sdk_key("shop/prod")
        ),
        None,
    )
    .await;
    assert_eq!(sdk.status(), 401, "SDK keys do not open evaluated streams");

    let res = get(&url, Some(ALLOWED)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], ALLOWED);
    let mut stream = SseReader::new(res);
    let put = next(&mut stream).await;
    assert_eq!(put.event, "put");
    let flags = put.json()["flags"].clone();
    assert_eq!(
        flags.as_object().unwrap().len(),
        1,
        "client-side flags only: {flags}"
    );
    assert_eq!(flags["banner"]["value"], "red");

    // A change to a flag that is not client-side sends nothing; the banner's change does.
    origin.set("shop/prod", "internal", json!(5));
    let v = put_flag(
        &mut origin,
        "shop/prod",
        client_flag("banner", json!("blue")),
    );
    let patch = next(&mut stream).await;
    assert_eq!(patch.event, "patch");
    assert_eq!(patch.id, Some(v.to_string()), "nothing before: {patch:?}");
    assert_eq!(patch.json()["flags"]["banner"]["value"], "blue");
    assert_eq!(patch.json()["flags"].as_object().unwrap().len(), 1);

    // OFREP bulk with the client key at the relay: the client-side flag only.
    let res = reqwest::Client::new()
        .post(format!("{}/ofrep/v1/evaluate/flags", relay.url()))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("origin", ALLOWED)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], ALLOWED);
    let body: Value = res.json().await.unwrap();
    let keys: Vec<_> = body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["banner"]);
    assert_eq!(body["metadata"]["environmentVersion"], json!(v));
}
