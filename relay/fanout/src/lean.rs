//! A lean HTTP/1.1 path for SDK streams, for processes that hold tens of thousands of idle
//! SSE connections (the edge relay).
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for every HTTP/1 connection
//! for as long as it lives, which dominates the memory of an idle SSE subscriber (see
//! `docs/benchmarks.md`). Here each connection's request head is read into a small,
//! temporary buffer and parsed with `httparse`. A `GET /sdk/v1/stream` that will succeed
//! (ready, key known, subscription granted) is then answered directly: a fixed response head,
//! then the hub's pre-encoded frames written straight to the socket, the response delimited
//! by closing the connection. Nothing is buffered per subscriber while idle. Once its
//! starting frames are written, the stream's socket is walked by its environment's writer
//! ([`crate::walk`]) and its task stays parked; a slow subscriber is handed back to its task,
//! which continues it as a [`Subscription`]. Every other
//! request — and any stream request that would fail, so that errors come from the one
//! implementation in [`crate::http`] — is handed to hyper with the bytes already read,
//! through the same `axum` router.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vexil_schema::stream::EnvironmentId;

use crate::auth::{SdkAuth, hash_sdk_key};
use crate::http::{STREAM_PATH, authorization_key};
use crate::hub::Hub;
use crate::subscriber::{Start, Subscription};
use crate::walk::{self, Exit, Slot, Walked};

/// Largest request head read before giving the connection to hyper (which then answers
/// 431 or 400 as it sees fit).
const MAX_HEAD: usize = 16 * 1024;
/// Initial size of the temporary head buffer (a typical SDK request is ~300 bytes).
const HEAD_CHUNK: usize = 1024;
/// A subscriber that cannot take a frame for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
content-type: text/event-stream\r\n\
cache-control: no-cache\r\n\
x-accel-buffering: no\r\n\
connection: close\r\n\r\n";

/// What the lean path needs to accept an SDK stream itself.
pub struct LeanSse<A> {
    hub: Hub,
    auth: A,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl<A: Clone> Clone for LeanSse<A> {
    fn clone(&self) -> Self {
        Self {
            hub: self.hub.clone(),
            auth: self.auth.clone(),
            ready: Arc::clone(&self.ready),
        }
    }
}

impl<A> std::fmt::Debug for LeanSse<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanSse").finish_non_exhaustive()
    }
}

impl<A: SdkAuth> LeanSse<A> {
    /// Streams from `hub`, authenticating with `auth` (the same as the router's SDK routes).
    pub fn new(hub: Hub, auth: A) -> Self {
        Self {
            hub,
            auth,
            ready: Arc::new(|| true),
        }
    }

    /// Takes streams on the lean path only while `ready` says so (the router's own gate
    /// answers otherwise).
    pub fn ready_when(mut self, ready: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.ready = Arc::new(ready);
        self
    }

    /// The starting point and walked state for this request head, if it is an SDK stream
    /// request that would succeed; `None` hands the request to the router.
    async fn accept(&self, head: &Head) -> Option<(Start, Box<Walked>)> {
        if !head.is_stream || !(self.ready)() {
            return None;
        }
        let key = head.key.as_deref()?;
        let env: EnvironmentId = self.auth.authenticate(key).await.ok()?;
        let accepted = self
            .hub
            .subscribe_walked(&env, head.last_event_id.as_deref(), hash_sdk_key(key))
            .ok()?;
        tracing::debug!(environment = %env, version = accepted.1.version(), "SDK stream opened (lean)");
        Some(accepted)
    }
}

/// What the lean path needs from a request head.
#[derive(Debug, Default)]
struct Head {
    /// `GET /sdk/v1/stream` over HTTP/1.1 with no body.
    is_stream: bool,
    key: Option<String>,
    last_event_id: Option<String>,
}

/// Parses a complete request head; `Err` if it is not HTTP/1.x at all (hyper answers).
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let path = req.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let mut head = Head {
        is_stream: req.method == Some("GET") && req.version == Some(1) && path == STREAM_PATH,
        ..Head::default()
    };
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).ok().map(str::trim);
        if h.name.eq_ignore_ascii_case("authorization") {
            head.key = value.and_then(authorization_key).map(str::to_owned);
        } else if h.name.eq_ignore_ascii_case("last-event-id") {
            head.last_event_id = value.map(str::to_owned);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            head.is_stream &= value == Some("0");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
            || h.name.eq_ignore_ascii_case("expect")
        {
            head.is_stream = false;
        }
    }
    Ok(Some((len, head)))
}

/// Serves `app` on `listener`, SDK streams on the lean path, until `shutdown` completes;
/// then stops accepting and returns once every connection has ended (call
/// [`Hub::shutdown`] so that streams end). Like [`crate::serve_http1`] otherwise.
pub async fn serve_lean<A: SdkAuth>(
    listener: TcpListener,
    app: Router,
    lean: LeanSse<A>,
    shutdown: impl Future<Output = ()> + Send,
) {
    crate::serve::accept_until(listener, shutdown, |tcp, stop| {
        tokio::spawn(connection(tcp, app.clone(), lean.clone(), stop));
    })
    .await;
}

/// One connection. The large hyper future is boxed so that the task of an SDK stream (the
/// common case) stays small.
async fn connection<A: SdkAuth>(
    mut tcp: TcpStream,
    app: Router,
    lean: LeanSse<A>,
    mut stop: watch::Receiver<()>,
) {
    let mut buf = Vec::with_capacity(HEAD_CHUNK);
    let head = loop {
        if buf.len() == buf.capacity() {
            buf.reserve(HEAD_CHUNK.min(MAX_HEAD.saturating_sub(buf.len())).max(1));
        }
        let read = tokio::select! {
            read = tokio::io::AsyncReadExt::read_buf(&mut tcp, &mut buf) => read,
            _ = stop.changed() => return, // shutting down before a request arrived
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match parse_head(&buf) {
            Ok(Some((_, head))) => break Some(head),
            Ok(None) if buf.len() < MAX_HEAD => continue,
            // Too large or not HTTP: let hyper answer.
            _ => break None,
        }
    };
    if let Some(head) = head
        && let Some((start, walked)) = lean.accept(&head).await
    {
        drop(buf);
        Box::pin(stream(tcp, &lean.hub, start, walked)).await;
        return;
    }
    Box::pin(hyper_connection(tcp, Bytes::from(buf), app, stop)).await;
}

/// Writes the response head and the starting frames, then leaves the socket to its
/// environment's writer until it is handed back: to close, or (slow) to continue here as a
/// subscription until the stream ends (drain, environment removed, lagging), the client
/// goes away or a write stalls.
async fn stream(tcp: TcpStream, hub: &Hub, start: Start, mut walked: Box<Walked>) {
    if write(&tcp, RESPONSE_HEAD).await.is_err() {
        return;
    }
    match &start {
        Start::Put(current) => {
            let Some(put) = current.put() else { return };
            if write(&tcp, put.bytes()).await.is_err() {
                return;
            }
            walked.sent();
        }
        Start::Replay { frames, .. } => {
            for frame in frames {
                if write(&tcp, frame).await.is_err() {
                    return;
                }
                walked.sent();
            }
        }
        Start::Current { .. } => {}
    }
    drop(start);
    walked.settle();
    let slot = Slot::new(tcp, walked);
    walk::register(&hub.shared, Arc::clone(&slot));
    let Some((exit, mut walked)) = slot.parked().await else {
        return; // the client closed
    };
    let tcp = slot.tcp();
    let rest = match exit {
        Exit::Close => return,
        Exit::Continue { rest } => rest,
    };
    if write(tcp, &rest).await.is_err() {
        return;
    }
    walked.settle();
    let Some(sub) = hub.continue_walked(&walked) else {
        return;
    };
    drop(walked);
    pump(tcp, sub).await;
}

/// Writes every frame of `sub` until it ends, the client goes away or a write stalls.
async fn pump(tcp: &TcpStream, mut sub: Subscription) {
    loop {
        tokio::select! {
            frame = sub.next() => {
                let Some(frame) = frame else { break };
                if write(tcp, &frame).await.is_err() {
                    return;
                }
            }
            ready = tcp.readable() => {
                if walk::client_gone(tcp, ready) {
                    return;
                }
            }
        }
    }
}

/// Writes all of `bytes`, failing if the socket does not take them within [`WRITE_TIMEOUT`].
async fn write(tcp: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    let all = async {
        while !bytes.is_empty() {
            tcp.writable().await?;
            match tcp.try_write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(WRITE_TIMEOUT, all).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Serves the rest of the connection with hyper, replaying the bytes already read.
async fn hyper_connection(tcp: TcpStream, read: Bytes, app: Router, mut stop: watch::Receiver<()>) {
    let io = TokioIo::new(Rewind {
        prefix: read,
        inner: tcp,
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.changed() => conn.as_mut().graceful_shutdown(),
    }
    if let Err(e) = conn.await {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_requests_are_recognised() {
        let req =
            b"GET /sdk/v1/stream?x=1 HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer k1\r\nLast-Event-ID: 7\r\n\r\nrest";
        let (len, head) = parse_head(req).unwrap().unwrap();
        assert_eq!(len, req.len() - "rest".len());
        assert!(head.is_stream);
        assert_eq!(head.key.as_deref(), Some("k1"));
        assert_eq!(head.last_event_id.as_deref(), Some("7"));
    }

    #[test]
    fn everything_else_goes_to_the_router() {
        for req in [
            &b"GET /sdk/v1/snapshot HTTP/1.1\r\nauthorization: k\r\n\r\n"[..],
            b"POST /sdk/v1/stream HTTP/1.1\r\nauthorization: k\r\n\r\n",
            b"GET /sdk/v1/stream HTTP/1.0\r\nauthorization: k\r\n\r\n",
            b"GET /sdk/v1/stream HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
            b"GET /sdk/v1/stream HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET /sdk/v1/streams HTTP/1.1\r\n\r\n",
        ] {
            let (_, head) = parse_head(req).unwrap().unwrap();
            assert!(!head.is_stream, "{}", String::from_utf8_lossy(req));
        }
        assert!(
            parse_head(b"GET /sdk/v1/stream HTTP/1.1\r\nhost")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"\x16\x03\x01 not http").is_err());
    }
}
