//! The client's background thread: one OS thread (`vexil-sdk`) running a single-threaded
//! Tokio runtime of its own, on which the data source, the listener dispatcher and the
//! last-known-good writer run.
//!
//! Owning its runtime means the SDK works the same in synchronous programs, under any async
//! runtime, and inside a Tokio runtime of any flavour, and that its network work never
//! competes with the application's tasks. The cost is one thread per client: create one
//! client per process and share it (it is cheap to clone).

use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::source::BoxFuture;

/// The running background thread.
#[derive(Debug)]
pub(crate) struct Background {
    shutdown: watch::Sender<bool>,
    /// Disconnected when the thread finishes (its sender is dropped).
    done: Mutex<Option<mpsc::Receiver<()>>>,
    thread: ThreadId,
    handle: Handle,
}

impl Background {
    /// Starts the thread and its runtime, then runs `main` on it until it returns. `shutdown`
    /// is the sender of the signal `main` watches; [`Background::close`] fires it.
    pub(crate) fn spawn(shutdown: watch::Sender<bool>, main: BoxFuture) -> std::io::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vexil-sdk".into())
            .spawn(move || {
                // Built here, not by the caller: a runtime must not be dropped inside an
                // async context, and the caller's thread may be one.
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("vexil-sdk-blocking")
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(main);
                // Waits for blocking tasks in progress (a last-known-good write) to finish.
                drop(runtime);
                drop(done_tx);
            })?;
        let thread_id = thread.thread().id();
        let handle = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the SDK thread exited during start-up"))??;
        Ok(Self {
            shutdown,
            done: Mutex::new(Some(done_rx)),
            thread: thread_id,
            handle,
        })
    }

    /// The runtime's handle, for timers that callers from other runtimes can await.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Whether the caller is on the background thread (e.g. inside a listener callback).
    pub(crate) fn is_current_thread(&self) -> bool {
        std::thread::current().id() == self.thread
    }

    /// Signals shutdown and waits up to `wait` for the thread to finish (pending
    /// last-known-good writes included). Idempotent; never waits on itself.
    pub(crate) fn close(&self, wait: Duration) {
        let _ = self.shutdown.send(true);
        if self.is_current_thread() {
            return;
        }
        let done = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(done) = done
            && let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(wait)
        {
            tracing::warn!(?wait, "the SDK's background thread did not stop in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::source::Shutdown;

    fn signal() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown::new(rx))
    }

    #[test]
    fn runs_until_closed_without_a_caller_runtime() {
        let finished = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&finished);
        let (tx, shutdown) = signal();
        let bg = Background::spawn(
            tx,
            Box::pin(async move {
                shutdown.wait().await;
                // Work after the signal still completes before close returns.
                tokio::time::sleep(Duration::from_millis(20)).await;
                f.store(true, Ordering::SeqCst);
            }),
        )
        .unwrap();
        assert!(!bg.is_current_thread());
        bg.close(Duration::from_secs(10));
        assert!(finished.load(Ordering::SeqCst));
        bg.close(Duration::from_secs(10));
    }

    #[tokio::test]
    async fn can_be_created_and_closed_inside_a_tokio_runtime() {
        let (tx, shutdown) = signal();
        let bg = Background::spawn(tx, Box::pin(async move { shutdown.wait().await })).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        bg.handle().spawn(async move {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        assert_eq!(rx.await.unwrap().as_deref(), Some("vexil-sdk"));
        bg.close(Duration::from_secs(10));
    }
}
