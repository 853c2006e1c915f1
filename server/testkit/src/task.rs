//! [`ServerTask`]: a server serving in the background of a test, whose failure fails the test.
//!
//! Needs nothing but tokio, so the relay's own tests use it without the control plane
//! (`vexil-testkit` with `default-features = false`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};

/// A server serving in the background of a test, owned by the test.
///
/// A failure there must fail the test, not a log line nobody reads: an error the server
/// returns, or a panic in its task, is raised again (with the task's name) by
/// [`ServerTask::stop`], and by dropping the `ServerTask` if the task had already ended by
/// then. A task still running when dropped is aborted.
pub struct ServerTask<E: fmt::Display + Send + 'static> {
    /// Names the server in the panic that reports its failure.
    name: String,
    /// Asks the server to shut down gracefully.
    shutdown: Option<oneshot::Sender<()>>,
    /// The serving task; taken by [`ServerTask::stop`] or on drop.
    handle: Option<JoinHandle<Result<(), E>>>,
}

impl<E: fmt::Display + Send + 'static> fmt::Debug for ServerTask<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTask")
            .field("name", &self.name)
            .field(
                "running",
                &self.handle.as_ref().is_some_and(|h| !h.is_finished()),
            )
            .finish()
    }
}

impl<E: fmt::Display + Send + 'static> ServerTask<E> {
    /// Spawns `serve(stop)`, where `stop` resolves (`Ok`) when the test asks the server to
    /// shut down (or `Err` when the `ServerTask` is gone).
    pub fn spawn<Fut>(
        name: impl Into<String>,
        serve: impl FnOnce(oneshot::Receiver<()>) -> Fut,
    ) -> Self
    where
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        Self {
            name: name.into(),
            shutdown: Some(tx),
            handle: Some(tokio::spawn(serve(rx))),
        }
    }

    /// Whether the task has ended (on its own, unless [`ServerTask::stop`] was called).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the server to shut down and waits for it, at most `within`.
    ///
    /// # Panics
    ///
    /// If the server returned an error or panicked, or did not stop within `within`.
    pub async fn stop(mut self, within: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(mut handle) = self.handle.take() else {
            return;
        };
        match tokio::time::timeout(within, &mut handle).await {
            Ok(result) => report(&self.name, result),
            Err(_) => {
                handle.abort();
                panic!("{} did not stop within {within:?}", self.name);
            }
        }
    }
}

impl<E: fmt::Display + Send + 'static> Drop for ServerTask<E> {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(mut handle) = self.handle.take() else {
            return;
        };
        if !handle.is_finished() {
            handle.abort();
            return;
        }
        // A second panic while the test is already failing would abort the process and hide
        // the first one.
        if std::thread::panicking() {
            return;
        }
        // Finished: the result is ready, one poll takes it without an executor.
        if let Poll::Ready(result) =
            Pin::new(&mut handle).poll(&mut Context::from_waker(Waker::noop()))
        {
            report(&self.name, result);
        }
    }
}

/// Panics with the failure of the task `name`, if it failed.
fn report<E: fmt::Display>(name: &str, result: Result<Result<(), E>, JoinError>) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{name} failed in the background: {e}"),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            panic!("{name} panicked in the background: {message}")
        }
        // Cancelled: aborted by its owner, which is no failure of the server's.
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    #[should_panic(expected = "the test server failed in the background: the socket went away")]
    async fn an_error_returned_in_the_background_fails_the_test_at_stop() {
        let task = ServerTask::spawn("the test server", |stop| async move {
            let _ = stop.await;
            Err::<(), _>("the socket went away")
        });
        task.stop(Duration::from_secs(20)).await;
    }

    #[tokio::test]
    #[should_panic(expected = "the test server panicked in the background: handler bug 42")]
    async fn a_panic_in_the_background_fails_the_test_at_stop() {
        let task = ServerTask::<String>::spawn("the test server", |_stop| async move {
            panic!("handler bug {}", 42);
        });
        task.stop(Duration::from_secs(20)).await;
    }

    // On a current-thread runtime the task runs to its end while the test waits for its
    // signal, so it has finished when the test drops it.
    #[tokio::test(flavor = "current_thread")]
    #[should_panic(
        expected = "the test server failed in the background: accept: too many open files"
    )]
    async fn a_server_that_died_on_its_own_fails_the_test_when_dropped() {
        let (died, dying) = oneshot::channel();
        let task = ServerTask::spawn("the test server", |_stop| async move {
            let _ = died.send(());
            Err::<(), _>("accept: too many open files")
        });
        dying.await.unwrap();
        tokio::task::yield_now().await;
        assert!(task.is_finished());
        drop(task);
    }

    #[tokio::test]
    async fn a_server_that_stops_cleanly_passes() {
        let task = ServerTask::spawn("the test server", |stop| async move {
            let _ = stop.await;
            Ok::<(), String>(())
        });
        assert!(!task.is_finished());
        task.stop(Duration::from_secs(20)).await;
        // Dropped while running: aborted, which is no failure.
        drop(ServerTask::spawn("the test server", |stop| async move {
            let _ = stop.await;
            std::future::pending::<Result<(), String>>().await
        }));
    }
}
