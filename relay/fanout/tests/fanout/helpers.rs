//! Test harness: a real axum server on port 0 serving the SDK routes, and a small SSE client
//! over real HTTP connections.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::net::TcpListener;
use vexil_fanout::{Hub, HubConfig, SdkAuth, SdkKeyTable, hash_sdk_key, sdk_router};
use vexil_schema::stream::{Change, Delete, EnvironmentId, ItemRef, Patch, PatchItem};
use vexil_schema::{EnvironmentSnapshot, Flag, FlagConfig, FlagKey, FlagKind, Variation};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub const KEY: &str = "sdk-prod-key";

pub fn env() -> EnvironmentId {
    EnvironmentId::parse("shop/prod").unwrap()
}

pub struct App {
    pub hub: Hub,
    pub keys: SdkKeyTable,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn connect(&self, last_event_id: Option<&str>) -> SseClient {
        let mut req = self
            .client
            .get(self.url("/sdk/v1/stream"))
            .header("authorization", KEY);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = tokio::time::timeout(WAIT, req.send())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        SseClient::new(resp)
    }
}

/// Starts a hub with `config`, an SDK key table holding [`KEY`] for [`env()`], and a server.
pub async fn spawn(config: HubConfig) -> App {
    let keys = SdkKeyTable::new();
    keys.set_environment_keys(&env(), &[hash_sdk_key(KEY)]);
    let hub = Hub::new(config);
    let addr = serve(hub.clone(), keys.clone()).await;
    App {
        hub,
        keys,
        addr,
        client: reqwest::Client::builder().no_gzip().build().unwrap(),
    }
}

/// Serves the SDK routes of `hub` with `auth` on a fresh port.
pub async fn serve<A: SdkAuth>(hub: Hub, auth: A) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = sdk_router(hub, auth);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub fn flag(key: &str, serve: usize) -> Flag {
    Flag {
        key: FlagKey::parse(key).unwrap(),
        kind: FlagKind::Boolean,
        variations: vec![Variation::new(json!(true)), Variation::new(json!(false))],
        client_side: false,
        config: FlagConfig::serving(serve),
    }
}

pub fn snapshot(version: u64, flags: Vec<Flag>) -> EnvironmentSnapshot {
    EnvironmentSnapshot {
        version,
        flags,
        segments: vec![],
    }
}

pub fn patch(version: u64, flag: Flag) -> Change {
    Change::Patch(Patch {
        version,
        item: PatchItem::Flag(flag),
    })
}

pub fn delete(version: u64, key: &str) -> Change {
    Change::Delete(Delete {
        version,
        item: ItemRef::Flag(FlagKey::parse(key).unwrap()),
    })
}

/// One parsed SSE block.
#[derive(Debug, Clone, PartialEq)]
pub enum Sse {
    Event {
        event: String,
        id: Option<String>,
        data: String,
    },
    Comment(String),
}

impl Sse {
    pub fn event(&self) -> (&str, &str, &str) {
        match self {
            Sse::Event { event, id, data } => (event, id.as_deref().unwrap_or(""), data),
            Sse::Comment(c) => panic!("expected an event, got comment {c:?}"),
        }
    }
}

/// A minimal SSE reader over a real HTTP response body (LF line endings, as the server
/// writes them).
pub struct SseClient {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl SseClient {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next block, or `None` when the server ended the stream. Fails the test after
    /// [`WAIT`].
    pub async fn next(&mut self) -> Option<Sse> {
        tokio::time::timeout(WAIT, self.next_inner())
            .await
            .expect("timed out waiting for an SSE block")
    }

    /// The next event, skipping keep-alive comments.
    pub async fn next_event(&mut self) -> Option<Sse> {
        loop {
            match self.next().await? {
                Sse::Comment(_) => continue,
                e => return Some(e),
            }
        }
    }

    async fn next_inner(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(block).unwrap();
                return Some(parse_block(text.trim_end_matches('\n')));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) if e.is_body() || e.is_decode() => return None,
                Some(Err(e)) => panic!("stream error: {e}"),
                None => return None,
            }
        }
    }
}

fn parse_block(text: &str) -> Sse {
    if let Some(comment) = text.strip_prefix(':') {
        assert!(
            !comment.contains('\n'),
            "one comment line per block: {text:?}"
        );
        return Sse::Comment(comment.trim().to_owned());
    }
    let (mut event, mut id, mut data) = (None, None, None);
    for line in text.split('\n') {
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => {
                assert!(data.is_none(), "single data line expected: {text:?}");
                data = Some(value.to_owned());
            }
            other => panic!("unexpected field {other:?} in {text:?}"),
        }
    }
    Sse::Event {
        event: event.expect("event name"),
        id,
        data: data.expect("data"),
    }
}
