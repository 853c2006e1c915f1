//! An OTLP/HTTP receiver that accepts and counts what the started server and relays export,
//! so that a scenario can be run with tracing on (`--otlp-sink`) and compared with the same
//! scenario with tracing off, the exporters doing all their real work (span creation,
//! batching, protobuf encoding, HTTP) against an endpoint that answers like a collector.
//!
//! Only what an OTLP exporter sends is understood: HTTP/1.1 `POST`s with a `content-length`
//! body, on keep-alive connections. Each is answered `200` with an empty protobuf
//! `Export…ServiceResponse` (zero bytes), which is what a collector that accepted
//! everything returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
/// Largest request head accepted (exporters send a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;

/// What the receiver has been sent so far.
#[derive(Debug, Default)]
pub struct Received {
    /// Export requests (one per batch of spans).
    pub requests: AtomicU64,
    /// Body bytes (encoded, possibly compressed, spans).
    pub bytes: AtomicU64,
}

/// A running receiver; stops with the process (the load test is short-lived).
#[derive(Debug, Clone)]
pub struct OtlpSink {
    /// Its address: the exporters' `OTEL_EXPORTER_OTLP_ENDPOINT` is `http://{addr}`.
    pub addr: SocketAddr,
    /// Counters.
    pub received: Arc<Received>,
}

impl OtlpSink {
    /// Binds a loopback port and starts accepting.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("the OTLP receiver cannot bind a loopback port")?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Received::default());
        let counters = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let counters = Arc::clone(&counters);
                tokio::spawn(async move {
                    if let Err(e) = serve(socket, &counters).await {
                        tracing::debug!(error = %e, "OTLP receiver connection ended");
                    }
                });
            }
        });
        Ok(Self { addr, received })
    }

    /// The endpoint to give exporters.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Export requests and body bytes received so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.received.requests.load(Ordering::Relaxed),
            self.received.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Answers the requests of one keep-alive connection until the peer closes it.
async fn serve(mut socket: TcpStream, counters: &Received) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Read until the end of a request head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                anyhow::bail!("request head over {MAX_HEAD} bytes");
            }
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&buf[..head_end]).context("request head not UTF-8")?;
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim().parse::<usize>())
            .transpose()
            .context("bad content-length")?
            .context("an export without content-length")?;
        while buf.len() < head_end + length {
            let mut chunk = vec![0u8; (head_end + length - buf.len()).min(64 * 1024)];
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                anyhow::bail!("connection closed inside a request body");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + length);
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.bytes.fetch_add(length as u64, Ordering::Relaxed);
        socket.write_all(RESPONSE).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_keep_alive_posts_and_answers_each() {
        let sink = OtlpSink::start().await.unwrap();
        let mut s = TcpStream::connect(sink.addr).await.unwrap();
        let req = b"POST /v1/traces HTTP/1.1\r\nhost: x\r\nContent-Length: 5\r\n\r\nhello";
        // Two requests in one write, then a third split across writes.
        s.write_all(&[&req[..], &req[..]].concat()).await.unwrap();
        s.write_all(&req[..20]).await.unwrap();
        s.write_all(&req[20..]).await.unwrap();
        let mut got = vec![0u8; RESPONSE.len() * 3];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, RESPONSE.repeat(3));
        assert_eq!(sink.totals(), (3, 15));
    }
}
