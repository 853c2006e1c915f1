use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use vexil_fanout::HubConfig;
use vexil_schema::{Flag, FlagConfig, FlagKey, FlagKind, Variation};

use crate::helpers::*;

/// A flag whose one variation is ~256 KiB, so a few changes fill any socket buffer.
fn big_flag(v: u64) -> Flag {
    Flag {
        key: FlagKey::parse("big").unwrap(),
        kind: FlagKind::Json,
        variations: vec![Variation::new(
            json!({ "v": v, "pad": "x".repeat(256 * 1024) }),
        )],
        client_side: false,
        config: FlagConfig::serving(0),
    }
}

/// A raw HTTP client with a tiny receive buffer that reads only when told to.
struct Stalled {
    tcp: TcpStream,
}

impl Stalled {
    async fn connect(app: &App) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut tcp = socket.connect(app.addr).await.unwrap();
        let req = format!(
            "GET /sdk/v1/stream HTTP/1.1\r\nhost: {}\r\nauthorization: {KEY}\r\n\r\n",
            app.addr
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        Self { tcp }
    }

    /// Reads until `pattern` has been seen (fails the test after [`WAIT`]); returns whether
    /// `forbidden` was seen on the way. Scans each chunk once, with a small overlap, since
    /// megabytes go by.
    async fn read_until(&mut self, pattern: &[u8], forbidden: &[u8]) -> bool {
        let keep = pattern.len().max(forbidden.len());
        let mut window: Vec<u8> = Vec::new();
        let mut saw_forbidden = false;
        let found = tokio::time::timeout(WAIT, async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = self.tcp.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "connection closed before {:?}",
                    String::from_utf8_lossy(pattern)
                );
                window.extend_from_slice(&buf[..n]);
                saw_forbidden |= contains(&window, forbidden);
                if contains(&window, pattern) {
                    return;
                }
                let cut = window.len().saturating_sub(keep);
                window.drain(..cut);
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "timed out waiting for {:?}",
            String::from_utf8_lossy(pattern)
        );
        saw_forbidden
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn counter(snapshotter: &Snapshotter, name: &str) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == name)
        .map(|(.., v)| match v {
            DebugValue::Counter(c) => c,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_delays_nobody_and_is_resynced_then_dropped() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let app = spawn(
        HubConfig::default()
            .subscriber_buffer(4)
            .max_lag_resyncs(1)
            .keep_alive(std::time::Duration::from_secs(3600)),
    )
    .await;
    // The environment's metric handles are registered with its first snapshot.
    metrics::with_local_recorder(&recorder, || {
        app.hub
            .publish_snapshot(&env(), &snapshot(1, vec![]))
            .unwrap();
    });

    let mut stalled = Stalled::connect(&app).await;
    stalled.read_until(b"event: put\nid: 1\n", b"").await;
    let mut healthy = app.connect(None).await;
    assert_eq!(healthy.next_event().await.unwrap().event().1, "1");

    // Phase 1: ~10 MiB of changes while one subscriber reads nothing. The other gets each
    // one as it is published.
    for v in 2..=41 {
        app.hub
            .publish_change(&env(), &patch(v, big_flag(v)))
            .unwrap();
        let e = healthy.next_event().await.unwrap();
        assert_eq!(
            (e.event().0, e.event().1),
            ("patch", v.to_string().as_str())
        );
    }
    // When it reads again it has fallen behind: it gets a fresh put of the current state.
    stalled.read_until(b"event: put\nid: 41\n", b"").await;
    assert_eq!(counter(&snapshotter, vexil_fanout::metrics::LAG_RESYNCS), 1);

    // Phase 2: it stalls again, beyond its allowance this time: it is disconnected.
    for v in 42..=81 {
        app.hub
            .publish_change(&env(), &patch(v, big_flag(v)))
            .unwrap();
        assert_eq!(healthy.next_event().await.unwrap().event().1, v.to_string());
    }
    // It reads to the end of the chunked body without catching up.
    let caught_up = stalled.read_until(b"\r\n0\r\n\r\n", b"id: 81\n").await;
    assert!(!caught_up, "a dropped subscriber must not catch up");
    assert_eq!(
        counter(&snapshotter, vexil_fanout::metrics::LAG_DISCONNECTS),
        1
    );
    assert_eq!(app.hub.subscriber_count(&env()), 1);

    // The healthy subscriber is unaffected.
    app.hub.publish_change(&env(), &delete(82, "big")).unwrap();
    assert_eq!(healthy.next_event().await.unwrap().event().1, "82");
}
