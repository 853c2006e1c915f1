//! Integration tests of the relay stream endpoint (`GET /relay/v1/stream`) over real
//! sockets: a hub with several environments behind `relay_router`, read by a real HTTP
//! client as SSE.

#[allow(dead_code)]
#[path = "../fanout/helpers.rs"]
mod helpers;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use vexil_fanout::{AuthError, Hub, HubConfig, RelayStreamConfig, hash_sdk_key, relay_router_with};
use vexil_schema::stream::{EnvironmentId, RelayCursor, RelayEvent};

use helpers::{Sse, SseClient, WAIT, delete, flag, patch, snapshot};

const RELAY_KEY: &str = "vxr_relay-key";

fn env(s: &str) -> EnvironmentId {
    EnvironmentId::parse(s).unwrap()
}

/// The scope the test's `RelayAuth` grants, changeable while streams are open.
#[derive(Clone, Default)]
struct Scope(Arc<Mutex<Option<BTreeSet<EnvironmentId>>>>);

impl Scope {
    fn set(&self, envs: &[&str]) {
        *self.0.lock().unwrap() = Some(envs.iter().map(|e| env(e)).collect());
    }
    fn revoke(&self) {
        *self.0.lock().unwrap() = None;
    }
}

struct App {
    hub: Hub,
    scope: Scope,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl App {
    async fn request(&self, key: Option<&str>, last_event_id: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .get(format!("http://{}/relay/v1/stream", self.addr));
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        tokio::time::timeout(WAIT, req.send())
            .await
            .unwrap()
            .unwrap()
    }

    async fn connect(&self, last_event_id: Option<&str>) -> SseClient {
        let resp = self.request(Some(RELAY_KEY), last_event_id).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseClient::new(resp)
    }
}

async fn spawn(config: RelayStreamConfig) -> App {
    let hub = Hub::new(HubConfig::default());
    let scope = Scope::default();
    let granted = scope.clone();
    let auth = move |key: &str| -> Result<BTreeSet<EnvironmentId>, AuthError> {
        if key == "vxr_other-kind" {
            return Err(AuthError::Forbidden("not a relay key".into()));
        }
        if key != RELAY_KEY {
            return Err(AuthError::Unauthorized);
        }
        granted
            .0
            .lock()
            .unwrap()
            .clone()
            .ok_or(AuthError::Unauthorized)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = relay_router_with(hub.clone(), auth, config);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App {
        hub,
        scope,
        addr,
        client: reqwest::Client::new(),
    }
}

/// The next event, decoded, with its id (`None` for `keys`).
async fn next(sse: &mut SseClient) -> (RelayEvent, Option<String>) {
    match sse.next_event().await.expect("stream ended") {
        Sse::Event { event, id, data } => (RelayEvent::decode(&event, &data).unwrap(), id),
        Sse::Comment(_) => unreachable!(),
    }
}

#[tokio::test]
async fn keys_first_then_state_then_changes_with_cursor_ids() {
    let app = spawn(RelayStreamConfig::default()).await;
    app.scope.set(&["shop/prod", "shop/dev"]);
    app.hub
        .set_environment_keys(&env("shop/prod"), &[hash_sdk_key("k1")]);
    app.hub
        .publish_snapshot(&env("shop/prod"), &snapshot(3, vec![flag("a", 0)]))
        .unwrap();
    app.hub
        .publish_snapshot(&env("shop/dev"), &snapshot(7, vec![]))
        .unwrap();
    // Not in scope: never sent.
    app.hub
        .publish_snapshot(&env("other/prod"), &snapshot(1, vec![]))
        .unwrap();

    let mut sse = app.connect(None).await;
    let (e, id) = next(&mut sse).await;
    assert_eq!(id, None);
    let RelayEvent::Keys(k) = e else {
        panic!("{e:?}")
    };
    assert_eq!(k.environment, env("shop/dev"));
    assert!(k.sdk_key_hashes.is_empty());
    let (e, id) = next(&mut sse).await;
    assert_eq!(id, None);
    let RelayEvent::Keys(k) = e else {
        panic!("{e:?}")
    };
    assert_eq!(k.environment, env("shop/prod"));
    assert_eq!(k.sdk_key_hashes, vec![hash_sdk_key("k1")]);

    // One `env-put` each, in either order; the second one's id holds both.
    let mut puts = Vec::new();
    let mut last_id = String::new();
    for _ in 0..2 {
        let (e, id) = next(&mut sse).await;
        let RelayEvent::EnvPut(p) = e else {
            panic!("{e:?}")
        };
        puts.push((p.environment.to_string(), p.snapshot.version));
        last_id = id.unwrap();
    }
    puts.sort();
    assert_eq!(puts, vec![("shop/dev".into(), 7), ("shop/prod".into(), 3)]);
    assert_eq!(last_id, "shop/dev:7,shop/prod:3");

    app.hub
        .publish_change(&env("shop/prod"), &patch(4, flag("a", 1)))
        .unwrap();
    let (e, id) = next(&mut sse).await;
    let RelayEvent::EnvPatch(p) = e else {
        panic!("{e:?}")
    };
    assert_eq!(p.environment, env("shop/prod"));
    assert_eq!(p.patch.version, 4);
    assert_eq!(id.as_deref(), Some("shop/dev:7,shop/prod:4"));

    app.hub
        .publish_change(&env("shop/dev"), &patch(8, flag("b", 0)))
        .unwrap();
    app.hub
        .publish_change(&env("shop/dev"), &delete(9, "b"))
        .unwrap();
    let (_, id) = next(&mut sse).await;
    assert_eq!(id.as_deref(), Some("shop/dev:8,shop/prod:4"));
    let (e, id) = next(&mut sse).await;
    let RelayEvent::EnvDelete(d) = e else {
        panic!("{e:?}")
    };
    assert_eq!(d.delete.version, 9);
    assert_eq!(id.as_deref(), Some("shop/dev:9,shop/prod:4"));

    // A key rotation is a `keys` event; setting the same set again sends nothing.
    app.hub
        .set_environment_keys(&env("shop/prod"), &[hash_sdk_key("k2")]);
    app.hub
        .set_environment_keys(&env("shop/prod"), &[hash_sdk_key("k2")]);
    app.hub
        .publish_change(&env("shop/prod"), &delete(5, "a"))
        .unwrap();
    // Key sets and changes travel independently: either may come first, each exactly once.
    let mut got = vec![next(&mut sse).await.0, next(&mut sse).await.0];
    got.sort_by_key(|e| matches!(e, RelayEvent::Keys(_)));
    assert!(
        matches!(&got[0], RelayEvent::EnvDelete(d) if d.delete.version == 5),
        "{got:?}"
    );
    let RelayEvent::Keys(k) = &got[1] else {
        panic!("{got:?}")
    };
    assert_eq!(k.sdk_key_hashes, vec![hash_sdk_key("k2")]);
    app.hub
        .publish_change(&env("shop/prod"), &patch(6, flag("a", 0)))
        .unwrap();
    assert!(matches!(next(&mut sse).await.0, RelayEvent::EnvPatch(_)));
}

#[tokio::test]
async fn resume_from_a_cursor_replays_only_what_is_missing() {
    let app = spawn(RelayStreamConfig::default()).await;
    app.scope.set(&["p/a", "p/b", "p/c"]);
    for e in ["p/a", "p/b", "p/c"] {
        app.hub
            .publish_snapshot(&env(e), &snapshot(1, vec![]))
            .unwrap();
    }
    for v in 2..=4 {
        app.hub
            .publish_change(&env("p/a"), &patch(v, flag("x", 0)))
            .unwrap();
    }
    // a: behind by two (replay), b: current (nothing), c: absent (put), gone: out of scope.
    let mut sse = app.connect(Some("p/a:2,p/b:1,p/gone:5")).await;
    let (e, id) = next(&mut sse).await;
    let RelayEvent::EnvRemove(r) = e else {
        panic!("{e:?}")
    };
    assert_eq!(r.environment, env("p/gone"));
    assert_eq!(id.as_deref(), Some("p/a:2,p/b:1"));
    for _ in 0..3 {
        assert!(matches!(next(&mut sse).await.0, RelayEvent::Keys(_)));
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let (e, id) = next(&mut sse).await;
        got.push((e, id.unwrap()));
    }
    // Per environment in order; environments may interleave.
    let a: Vec<_> = got
        .iter()
        .filter(|(e, _)| e.environment() == &env("p/a"))
        .map(|(e, _)| match e {
            RelayEvent::EnvPatch(p) => p.patch.version,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(a, vec![3, 4]);
    assert!(
        got.iter()
            .any(|(e, _)| matches!(e, RelayEvent::EnvPut(p) if p.environment == env("p/c")))
    );
    let last: RelayCursor = got.last().unwrap().1.parse().unwrap();
    assert_eq!(last.get(&env("p/b")), Some(1));
    assert_eq!(last.0.len(), 3);
    assert!(!got.iter().any(|(e, _)| e.environment() == &env("p/b")));
}

#[tokio::test]
async fn pending_environments_are_sent_when_they_get_state() {
    let app = spawn(RelayStreamConfig::default()).await;
    app.scope.set(&["p/a", "p/late"]);
    app.hub
        .publish_snapshot(&env("p/a"), &snapshot(1, vec![]))
        .unwrap();
    let mut sse = app.connect(None).await;
    for _ in 0..2 {
        assert!(matches!(next(&mut sse).await.0, RelayEvent::Keys(_)));
    }
    assert!(matches!(next(&mut sse).await.0, RelayEvent::EnvPut(_)));
    app.hub
        .publish_snapshot(&env("p/late"), &snapshot(5, vec![flag("f", 0)]))
        .unwrap();
    let (e, id) = next(&mut sse).await;
    let RelayEvent::EnvPut(p) = e else {
        panic!("{e:?}")
    };
    assert_eq!((p.environment, p.snapshot.version), (env("p/late"), 5));
    assert_eq!(id.as_deref(), Some("p/a:1,p/late:5"));

    // Removed from the hub: `env-remove`; back again: a fresh `env-put`.
    app.hub.remove_environment(&env("p/late"));
    let (e, id) = next(&mut sse).await;
    assert!(matches!(e, RelayEvent::EnvRemove(_)), "{e:?}");
    assert_eq!(id.as_deref(), Some("p/a:1"));
    app.hub
        .publish_snapshot(&env("p/late"), &snapshot(9, vec![]))
        .unwrap();
    let mut saw_put = false;
    while !saw_put {
        match next(&mut sse).await.0 {
            RelayEvent::Keys(_) => {}
            RelayEvent::EnvPut(p) => {
                assert_eq!(p.snapshot.version, 9);
                saw_put = true;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn scope_changes_and_revocation_apply_to_open_streams() {
    let app = spawn(RelayStreamConfig::default()).await;
    app.scope.set(&["p/a"]);
    for e in ["p/a", "p/b"] {
        app.hub
            .publish_snapshot(&env(e), &snapshot(2, vec![]))
            .unwrap();
    }
    let mut sse = app.connect(None).await;
    assert!(matches!(next(&mut sse).await.0, RelayEvent::Keys(_)));
    assert!(matches!(next(&mut sse).await.0, RelayEvent::EnvPut(_)));

    app.scope.set(&["p/b"]);
    app.hub.notify_relay_scopes_changed();
    let (e, id) = next(&mut sse).await;
    assert_eq!(e.environment(), &env("p/a"));
    assert!(matches!(e, RelayEvent::EnvRemove(_)));
    assert_eq!(id.as_deref(), Some(""));
    let (e, _) = next(&mut sse).await;
    assert!(matches!(e, RelayEvent::Keys(k) if k.environment == env("p/b")));
    let (e, id) = next(&mut sse).await;
    assert!(matches!(e, RelayEvent::EnvPut(p) if p.environment == env("p/b")));
    assert_eq!(id.as_deref(), Some("p/b:2"));

    app.scope.revoke();
    app.hub.notify_relay_scopes_changed();
    assert_eq!(
        sse.next_event().await,
        None,
        "a revoked key ends the stream"
    );
}

#[tokio::test]
async fn periodic_reauthentication_catches_revocation() {
    let app =
        spawn(RelayStreamConfig::default().reauthenticate_every(Duration::from_millis(50))).await;
    app.scope.set(&["p/a"]);
    app.hub
        .publish_snapshot(&env("p/a"), &snapshot(1, vec![]))
        .unwrap();
    let mut sse = app.connect(None).await;
    assert!(matches!(next(&mut sse).await.0, RelayEvent::Keys(_)));
    assert!(matches!(next(&mut sse).await.0, RelayEvent::EnvPut(_)));
    app.scope.revoke();
    assert_eq!(sse.next_event().await, None);
}

#[tokio::test]
async fn refused_keys_and_draining() {
    let app = spawn(RelayStreamConfig::default()).await;
    app.scope.set(&["p/a"]);
    app.hub
        .publish_snapshot(&env("p/a"), &snapshot(1, vec![]))
        .unwrap();
    assert_eq!(app.request(None, None).await.status(), 401);
    assert_eq!(app.request(Some("vxr_wrong"), None).await.status(), 401);
    let resp = app.request(Some("vxr_other-kind"), None).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    let mut sse = app.connect(Some("not a cursor")).await;
    assert!(matches!(next(&mut sse).await.0, RelayEvent::Keys(_)));
    assert!(matches!(next(&mut sse).await.0, RelayEvent::EnvPut(_)));
    tokio::time::timeout(WAIT, app.hub.shutdown(Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(sse.next_event().await, None, "draining ends relay streams");
    let resp = app.request(Some(RELAY_KEY), None).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
}
