//! Walked streams over real sockets: the lean server on port 0, raw TCP clients.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use vexil_schema::stream::{Change, EnvironmentId, Patch, PatchItem};
use vexil_schema::{EnvironmentSnapshot, Flag, FlagConfig, FlagKey, FlagKind, Variation};

use crate::lean::{LeanSse, serve_lean};
use crate::{Hub, HubConfig, SdkKeyTable, hash_sdk_key, sdk_router};

const KEY: &str = "sdk-walk-key";
const WAIT: Duration = Duration::from_secs(10);

fn env() -> EnvironmentId {
    EnvironmentId::parse("shop/walk").unwrap()
}

fn flag(value: serde_json::Value) -> Flag {
    Flag {
        key: FlagKey::parse("big").unwrap(),
        kind: FlagKind::Json,
        variations: vec![Variation::new(value)],
        client_side: false,
        config: FlagConfig::serving(0),
    }
}

fn change(version: u64, value: serde_json::Value) -> Change {
    Change::Patch(Patch {
        version,
        item: PatchItem::Flag(flag(value)),
    })
}

async fn spawn(config: HubConfig) -> (Hub, SdkKeyTable, SocketAddr) {
    let keys = SdkKeyTable::new();
    keys.set_environment_keys(&env(), &[hash_sdk_key(KEY)]);
    let hub = Hub::new(config);
    hub.set_environment_keys(&env(), &[hash_sdk_key(KEY)]);
    hub.publish_snapshot(
        &env(),
        &EnvironmentSnapshot {
            version: 1,
            flags: vec![flag(json!(0))],
            segments: vec![],
        },
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = sdk_router(hub.clone(), hub.keys().clone());
    let lean = LeanSse::new(hub.clone(), hub.keys().clone());
    tokio::spawn(serve_lean(listener, app, lean, std::future::pending()));
    (hub, keys, addr)
}

/// Opens a stream; `rcvbuf` shrinks the client's receive buffer.
async fn open(addr: SocketAddr, rcvbuf: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut tcp = socket.connect(addr).await.unwrap();
    let req = format!("GET /sdk/v1/stream HTTP/1.1\r\nhost: t\r\nauthorization: {KEY}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp
}

/// Reads until the stream holds `version`'s event (or ends), returning every SSE event's
/// `(event, id)` in order; the bytes must be well-formed SSE throughout.
async fn read_until(tcp: &mut TcpStream, buf: &mut Vec<u8>, version: u64) -> Vec<(String, u64)> {
    let mut events = Vec::new();
    let want = version.to_string();
    // Bytes at the front of `buf` already searched for a block's end.
    let mut scanned = 0;
    tokio::time::timeout(WAIT, async {
        loop {
            if buf.starts_with(b"HTTP/1.1 200 OK\r\n")
                && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
            {
                buf.drain(..end + 4);
            }
            while !buf.starts_with(b"HTTP/")
                && let Some(end) = buf[scanned..].windows(2).position(|w| w == b"\n\n")
            {
                let block: Vec<u8> = buf.drain(..scanned + end + 2).collect();
                scanned = 0;
                let text = String::from_utf8(block).expect("frames are whole UTF-8");
                if text.starts_with(':') {
                    continue;
                }
                let mut event = None;
                let mut id = None;
                for line in text.trim_end().split('\n') {
                    match line.split_once(": ") {
                        Some(("event", v)) => event = Some(v.to_owned()),
                        Some(("id", v)) => id = Some(v.to_owned()),
                        Some(("data", _)) => {}
                        _ => panic!("malformed line {line:.80?}"),
                    }
                }
                let (event, id) = (event.expect("event"), id.expect("id"));
                let done = id == want;
                events.push((event, id.parse().unwrap()));
                if done {
                    return;
                }
            }
            scanned = buf.len().saturating_sub(1);
            let mut chunk = vec![0u8; 256 * 1024];
            let n = tcp.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("timed out reading the stream");
    events
}

/// Every change from `from` to `to`, once each and in order, after the starting `put`.
fn assert_every_change(events: &[(String, u64)], from: u64, to: u64) {
    let ids: Vec<u64> = events.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, (from..=to).collect::<Vec<_>>(), "{events:?}");
    assert!(events[1..].iter().all(|(e, _)| e == "patch"), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_continues_from_the_exact_byte() {
    let (hub, _keys, addr) = spawn(HubConfig::default().ring_capacity(64)).await;
    let mut slow = open(addr, Some(4096)).await;
    let mut fast = open(addr, None).await;
    let (mut slow_buf, mut fast_buf) = (Vec::new(), Vec::new());
    assert_eq!(read_until(&mut slow, &mut slow_buf, 1).await.len(), 1);
    assert_eq!(read_until(&mut fast, &mut fast_buf, 1).await.len(), 1);
    // 48 changes of 200 KB each: far more than the slow client's socket buffers hold, so
    // its writes stop part-way through a frame while the fast one keeps reading.
    let big = "x".repeat(200 * 1024);
    let last = 49;
    let fast_reader = tokio::spawn(async move { read_until(&mut fast, &mut fast_buf, last).await });
    for v in 2..=last {
        hub.publish_change(&env(), &change(v, json!([v, big])))
            .unwrap();
    }
    let fast_events = fast_reader.await.unwrap();
    assert_every_change(&fast_events, 2, last);
    // Now the slow client reads: every byte, in order, from where its socket stopped.
    let mut events = vec![("put".to_owned(), 1)];
    events.extend(read_until(&mut slow, &mut slow_buf, last).await);
    assert_every_change(&events, 1, last);
    // The fast client has gone; the slow one is still counted, on its own task now.
    assert_eq!(hub.subscriber_count(&env()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_registering_during_walks_get_each_change_once() {
    let (hub, _keys, addr) = spawn(HubConfig::default().ring_capacity(512)).await;
    let last = 301;
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for v in 2..=last {
                hub.publish_change(&env(), &change(v, json!(v))).unwrap();
                if v % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // Clients connect while the changes are being walked: each starts with a `put` at
    // some version and must then see every later change once, in order.
    let mut readers = Vec::new();
    for _ in 0..40 {
        let mut tcp = open(addr, None).await;
        readers.push(tokio::spawn(async move {
            read_until(&mut tcp, &mut Vec::new(), last).await
        }));
    }
    publisher.await.unwrap();
    for reader in readers {
        let events = reader.await.unwrap();
        let (first, start) = &events[0];
        assert_eq!(first, "put", "{events:?}");
        assert_every_change(&events, *start, last);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_closes_a_walked_stream() {
    let (hub, _keys, addr) = spawn(HubConfig::default()).await;
    let mut tcp = open(addr, None).await;
    let mut buf = Vec::new();
    assert_eq!(read_until(&mut tcp, &mut buf, 1).await.len(), 1);
    hub.publish_change(&env(), &change(2, json!(2))).unwrap();
    assert_eq!(read_until(&mut tcp, &mut buf, 2).await.len(), 1);
    assert_eq!(hub.subscriber_count(&env()), 1);
    hub.set_environment_keys(&env(), &[hash_sdk_key("another-key")]);
    // The stream ends: the read reaches EOF with nothing more.
    assert!(read_until(&mut tcp, &mut buf, 99).await.is_empty());
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.subscriber_count(&env()) != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closing_a_walked_stream_is_counted_out() {
    let (hub, _keys, addr) = spawn(HubConfig::default()).await;
    let mut tcp = open(addr, None).await;
    assert_eq!(read_until(&mut tcp, &mut Vec::new(), 1).await.len(), 1);
    assert_eq!(hub.subscriber_count(&env()), 1);
    drop(tcp);
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.subscriber_count(&env()) != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
