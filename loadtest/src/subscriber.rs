//! One SSE subscriber, as an SDK would be: a raw HTTP/1.1 `GET /sdk/v1/stream` from a chosen
//! loopback source address, resumed with `Last-Event-ID` after a disconnection, with jittered
//! exponential backoff. It reports what it sees as [`Observation`]s with wall-clock
//! timestamps, so observations from several worker processes can be compared.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::sse::{BodyDecoder, EventKind, ResponseHead, SseEvent};

/// Nanoseconds since the Unix epoch: comparable across processes on one machine.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The event kinds that carry a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A full state.
    Put,
    /// A change (`patch`, `delete` or `delta`).
    Change,
}

/// What a subscriber saw, with when (see [`now_ns`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Observation {
    /// The stream was accepted (status 200).
    Up {
        /// Subscriber number.
        s: u32,
        /// When.
        at: u64,
    },
    /// An event with a version id.
    Event {
        /// Subscriber number.
        s: u32,
        /// Full state or change.
        k: Kind,
        /// The version (the event id).
        v: u64,
        /// When it was read.
        at: u64,
    },
    /// The stream ended, failed, or was refused.
    Down {
        /// Subscriber number.
        s: u32,
        /// When.
        at: u64,
        /// Why, for the report.
        why: String,
    },
}

/// Where and how subscribers connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTarget {
    /// The relay (or server) address; loopback only.
    pub addr: SocketAddr,
    /// The request path, `/sdk/v1/stream`.
    pub path: String,
    /// The SDK key sent in `Authorization`.
    pub sdk_key: String,
}

/// Reconnection behaviour after a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Reconnect at all (an SDK does; the capacity scenario's idle subscribers need not).
    pub reconnect: bool,
    /// Upper bound of the first delay (full jitter), in milliseconds.
    pub initial_ms: u64,
    /// Cap of the delay, in milliseconds.
    pub max_ms: u64,
}

/// The source address of subscriber `index`: `127.0.0.2` for the first `per_address`, then
/// `127.0.0.3`, … (each source address has its own ~28,000 ephemeral ports).
pub fn source_address(index: u32, per_address: u32) -> Ipv4Addr {
    let n = index / per_address.max(1);
    // 127.0.0.2 ..= 127.0.0.254, wrapping (253 × 28k ports is far beyond any run).
    let last = 2 + (n % 253) as u8;
    Ipv4Addr::new(127, 0, 0, last)
}

/// Everything one subscriber needs.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Its number (unique across workers).
    pub id: u32,
    /// Where to connect.
    pub target: Arc<StreamTarget>,
    /// The local address to bind.
    pub source: Ipv4Addr,
    /// Reconnection policy.
    pub backoff: Backoff,
}

impl Subscriber {
    /// Runs until `stop` turns true (or, without reconnection, until the first stream ends).
    /// The first connection waits for a `ramp` permit, released once the initial state has
    /// arrived, so that thousands of subscribers do not overflow the listen backlog at once.
    pub async fn run(
        self,
        ramp: Arc<Semaphore>,
        tx: mpsc::UnboundedSender<Observation>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut last_id: Option<u64> = None;
        let mut delay_cap = self.backoff.initial_ms.max(1);
        let mut permit = Some(ramp);
        loop {
            let held = match permit.take() {
                Some(ramp) => tokio::select! {
                    p = ramp.acquire_owned() => p.ok(),
                    _ = stop.wait_for(|s| *s) => return,
                },
                None => None,
            };
            let mut delivered = false;
            let why = tokio::select! {
                r = self.session(&mut last_id, held, &tx, &mut delivered) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            let _ = tx.send(Observation::Down {
                s: self.id,
                at: now_ns(),
                why,
            });
            if !self.backoff.reconnect {
                return;
            }
            if delivered {
                delay_cap = self.backoff.initial_ms.max(1);
            }
            let delay = rand::random_range(0..=delay_cap);
            delay_cap = (delay_cap * 2).min(self.backoff.max_ms.max(1));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(delay)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One connection: returns why it ended.
    async fn session(
        &self,
        last_id: &mut Option<u64>,
        mut permit: Option<OwnedSemaphorePermit>,
        tx: &mpsc::UnboundedSender<Observation>,
        delivered: &mut bool,
    ) -> String {
        let mut tcp = match self.connect(*last_id).await {
            Ok(tcp) => tcp,
            Err(e) => return format!("connect: {e}"),
        };
        let mut buf = vec![0u8; 4096];
        let mut filled = 0;
        let (head, body_start) = loop {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match tcp.read(&mut buf[filled..]).await {
                Ok(0) => return "closed before the response head".into(),
                Ok(n) => filled += n,
                Err(e) => return format!("read: {e}"),
            }
            match ResponseHead::parse(&buf[..filled]) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {}
                Err(e) => return e.to_string(),
            }
        };
        if head.status != 200 {
            return format!("HTTP {}", head.status);
        }
        let _ = tx.send(Observation::Up {
            s: self.id,
            at: now_ns(),
        });
        let mut decoder = BodyDecoder::new(&head);
        let mut events: Vec<SseEvent> = Vec::new();
        let mut pending = buf[body_start..filled].to_vec();
        buf.truncate(4096);
        loop {
            if let Err(e) = decoder.feed(&pending, &mut events) {
                return e.to_string();
            }
            if !events.is_empty() {
                let at = now_ns();
                for ev in events.drain(..) {
                    let (Some(v), Some(k)) = (ev.id, kind(ev.kind)) else {
                        continue;
                    };
                    *last_id = Some(v);
                    *delivered = true;
                    // The initial state is in: let the next subscriber connect.
                    drop(permit.take());
                    let _ = tx.send(Observation::Event {
                        s: self.id,
                        k,
                        v,
                        at,
                    });
                }
            }
            if decoder.finished() {
                return "stream ended by the server".into();
            }
            match tcp.read(&mut buf).await {
                Ok(0) => return "connection closed".into(),
                Ok(n) => {
                    pending.clear();
                    pending.extend_from_slice(&buf[..n]);
                }
                Err(e) => return format!("read: {e}"),
            }
        }
    }

    async fn connect(&self, last_id: Option<u64>) -> std::io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::V4(SocketAddrV4::new(self.source, 0)))?;
        let mut tcp = socket.connect(self.target.addr).await?;
        tcp.set_nodelay(true)?;
        let resume = last_id.map_or_else(String::new, |id| format!("last-event-id: {id}\r\n"));
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: {}\r\nauthorization: {}\r\naccept: text/event-stream\r\n{resume}\r\n",
            self.target.path, self.target.addr, self.target.sdk_key
        );
        tcp.write_all(request.as_bytes()).await?;
        Ok(tcp)
    }
}

fn kind(k: EventKind) -> Option<Kind> {
    match k {
        EventKind::Put => Some(Kind::Put),
        EventKind::Patch | EventKind::Delete | EventKind::Delta => Some(Kind::Change),
        EventKind::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_spread_in_blocks() {
        assert_eq!(source_address(0, 8000), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(7999, 8000), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(8000, 8000), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(source_address(5, 0), Ipv4Addr::new(127, 0, 0, 7));
        assert_eq!(source_address(253, 1), Ipv4Addr::new(127, 0, 0, 2));
    }

    #[test]
    fn observations_round_trip_as_json_lines() {
        let o = Observation::Event {
            s: 3,
            k: Kind::Put,
            v: 12,
            at: 99,
        };
        let line = serde_json::to_string(&o).unwrap();
        assert_eq!(line, r#"{"t":"event","s":3,"k":"put","v":12,"at":99}"#);
        assert_eq!(serde_json::from_str::<Observation>(&line).unwrap(), o);
    }
}
