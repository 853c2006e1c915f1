//! An HTTP/1-only server loop for processes whose connections are mostly idle SSE streams.
//!
//! `axum::serve` detects HTTP/1 or HTTP/2 on every connection, and its per-connection state
//! is sized for both: about 39 KB of heap per idle SSE subscriber against about 19 KB here
//! (see `docs/benchmarks.md`, "Fan-out engine"). SDKs reach relays over HTTP/1.1 (TLS and
//! HTTP/2 end at the load balancer), so a relay loses nothing by serving HTTP/1 only.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// First pause after a failed `accept`, doubled per consecutive failure.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between `accept` attempts while they fail.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The `kind` label of [`crate::metrics::ACCEPT_ERRORS`]: the process (`emfile`) or the
/// system (`enfile`) is out of file descriptors, the kernel of memory (`nomem`), or another
/// error.
pub(crate) fn accept_error_kind(e: &std::io::Error) -> &'static str {
    // Linux errno values (EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12).
    match e.raw_os_error() {
        Some(24) => "emfile",
        Some(23) => "enfile",
        Some(105 | 12) => "nomem",
        _ => "other",
    }
}

/// Accepts connections on `listener` until `shutdown` completes, handing each (with
/// `TCP_NODELAY` set) to `spawn` together with a receiver that changes when the server
/// stops; then stops accepting, signals every connection and returns once each has dropped
/// its receiver. The accept loop of both HTTP/1 servers ([`serve_http1`] and
/// [`crate::lean::serve_lean`]).
pub(crate) async fn accept_until(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    mut spawn: impl FnMut(TcpStream, watch::Receiver<()>),
) {
    // Dropping the sender tells every connection to shut down gracefully; each connection
    // task holds a receiver, so `closed()` resolves when the last one ends.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                tcp
            }
            Err(e) => {
                // Out of file descriptors and the like: counted, logged, and backed off
                // (doubling up to a second) instead of spinning on a listener that stays
                // readable; pending connections wait in the backlog meanwhile.
                let kind = accept_error_kind(&e);
                metrics::counter!(crate::metrics::ACCEPT_ERRORS, "kind" => kind).increment(1);
                tracing::warn!(error = %e, kind, retry_in = ?backoff, "accept failed: new connections wait");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        spawn(tcp, stop_rx.clone());
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    stop_tx.closed().await;
}

/// Serves `app` over HTTP/1.1 on `listener` until `shutdown` completes, then stops accepting,
/// lets every connection finish its current response (call [`crate::Hub::shutdown`] first so
/// SSE streams end) and returns once all connections are closed.
pub async fn serve_http1(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
) {
    accept_until(listener, shutdown, |tcp, mut stop| {
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
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
            drop(stop);
        });
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_labelled_by_cause() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(accept_error_kind(&e(24)), "emfile");
        assert_eq!(accept_error_kind(&e(23)), "enfile");
        assert_eq!(accept_error_kind(&e(105)), "nomem");
        assert_eq!(accept_error_kind(&e(104)), "other");
        assert_eq!(accept_error_kind(&std::io::Error::other("x")), "other");
    }
}
