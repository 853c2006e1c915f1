//! Flag-change notifications: the [`FlagChange`] message, the registry of callbacks, and the
//! dispatcher task that calls them on the SDK's background thread.
//!
//! Every applied update that changes at least one flag's possible result is broadcast once.
//! Receivers ([`crate::Client::flag_changes`]) get it through a `tokio::sync::broadcast`
//! channel; callbacks ([`crate::Client::on_flag_change`]) are called by one dispatcher task,
//! never on the evaluation path and never while the client's data is being updated, so a
//! slow or panicking callback cannot hold anything up.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::status::{DataOrigin, State, Status};

/// Notifications kept for slow receivers before they lag.
pub(crate) const CHANNEL_CAPACITY: usize = 256;

/// One update that changed some flags.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlagChange {
    /// The environment version after the update.
    pub version: u64,
    /// The keys of the flags whose result may differ for some context, sorted: flags
    /// created, changed or deleted, and flags depending on them through prerequisites or
    /// segments.
    pub keys: Arc<[String]>,
    /// Where the new data came from.
    pub origin: DataOrigin,
    /// The W3C trace context (`traceparent`) the change arrived with, when the server traces
    /// with OpenTelemetry: the span that fanned it out, in the trace of the write that made
    /// it. Give it to your propagator (as the `traceparent` entry of a carrier) to continue
    /// that trace from a listener. `None` for full snapshots and untraced changes.
    pub traceparent: Option<Arc<str>>,
    /// Position in the client's sequence of notifications: callbacks registered after it
    /// was sent do not receive it.
    pub(crate) seq: u64,
}

impl FlagChange {
    /// Whether `key` is among the changed flags.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.binary_search_by(|k| k.as_str().cmp(key)).is_ok()
    }
}

/// Identifies a registered callback, to remove it with
/// [`crate::Client::remove_flag_change_listener`] or [`crate::Client::remove_status_listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

type Callback = Arc<dyn Fn(&FlagChange) + Send + Sync>;

struct Registered {
    id: ListenerId,
    /// The notification sequence number when it was registered: it gets later ones only.
    after: u64,
    callback: Callback,
}

/// The registered callbacks.
#[derive(Default)]
pub(crate) struct Listeners {
    next_id: AtomicU64,
    callbacks: Mutex<Vec<Registered>>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("count", &self.lock().len())
            .finish()
    }
}

impl Listeners {
    /// A fresh listener id (flag-change and status listeners share the sequence).
    pub(crate) fn next_id(&self) -> ListenerId {
        ListenerId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Registers `callback` for the notifications after sequence number `after`.
    pub(crate) fn add(&self, callback: Callback, after: u64) -> ListenerId {
        let id = self.next_id();
        self.lock().push(Registered {
            id,
            after,
            callback,
        });
        id
    }

    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        let mut callbacks = self.lock();
        let before = callbacks.len();
        callbacks.retain(|r| r.id != id);
        callbacks.len() != before
    }

    /// The callbacks that should receive `change`.
    fn for_change(&self, change: &FlagChange) -> Vec<Callback> {
        self.lock()
            .iter()
            .filter(|r| change.seq > r.after)
            .map(|r| Arc::clone(&r.callback))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Registered>> {
        // The list is only pushed to and filtered: never left half-updated.
        self.callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls every callback with `change`, containing panics.
    pub(crate) fn dispatch(&self, change: &FlagChange) {
        for callback in self.for_change(change) {
            if catch_unwind(AssertUnwindSafe(|| callback(change))).is_err() {
                tracing::error!(
                    version = change.version,
                    "a flag-change listener panicked; the panic was contained"
                );
            }
        }
    }
}

/// The tasks that call status listeners ([`crate::Client::on_status_change`]), by id, so
/// that removing a listener stops its task. The tasks run on the client's runtime and end
/// with it.
#[derive(Debug, Default)]
pub(crate) struct StatusListeners {
    tasks: Mutex<Vec<(ListenerId, AbortHandle)>>,
}

impl StatusListeners {
    pub(crate) fn add(&self, id: ListenerId, task: AbortHandle) {
        self.lock().push((id, task));
    }

    /// Stops the task of listener `id`; `false` if there is none.
    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        let mut tasks = self.lock();
        let Some(at) = tasks.iter().position(|(i, _)| *i == id) else {
            return false;
        };
        let (_, task) = tasks.swap_remove(at);
        task.abort();
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ListenerId, AbortHandle)>> {
        // Only pushed to and removed from: never left half-updated.
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Calls `listener` with every status whose [`crate::State`] differs from the last one it
/// was called with (starting from `last`, the state when it registered, which `rx` has
/// marked seen), until the status channel closes. A watch channel keeps only the latest value, so transitions quicker than
/// this task runs are coalesced: the listener always ends up told the current state.
pub(crate) async fn status_loop(
    mut rx: watch::Receiver<Status>,
    mut last: State,
    listener: impl Fn(&Status) + Send + Sync + 'static,
) {
    while rx.changed().await.is_ok() {
        let status = rx.borrow_and_update().clone();
        if status.state == last {
            continue;
        }
        last = status.state;
        if catch_unwind(AssertUnwindSafe(|| listener(&status))).is_err() {
            tracing::error!(
                state = %status.state,
                "a status listener panicked; the panic was contained"
            );
        }
    }
}

/// Delivers every broadcast change to the callbacks until the channel closes. When the
/// callbacks fall so far behind that notifications were dropped, `resync` supplies a change
/// naming every flag, so that a listener never silently misses one.
pub(crate) async fn dispatch_loop(
    listeners: Arc<Listeners>,
    mut rx: broadcast::Receiver<FlagChange>,
    resync: impl Fn() -> Option<FlagChange>,
) {
    loop {
        match rx.recv().await {
            Ok(change) => listeners.dispatch(&change),
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "flag-change listeners fell behind; reporting every flag as changed"
                );
                if let Some(change) = resync() {
                    listeners.dispatch(&change);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(keys: &[&str]) -> FlagChange {
        FlagChange {
            traceparent: None,
            version: 1,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            origin: DataOrigin::TestData,
            seq: 1,
        }
    }

    #[test]
    fn contains_searches_the_sorted_keys() {
        let c = change(&["a", "m", "z"]);
        assert!(c.contains("m"));
        assert!(!c.contains("b"));
    }

    #[test]
    fn a_panicking_callback_does_not_stop_the_others() {
        let l = Listeners::default();
        let seen = Arc::new(AtomicU64::new(0));
        l.add(Arc::new(|_| panic!("listener bug")), 0);
        let s = Arc::clone(&seen);
        let id = l.add(
            Arc::new(move |_| {
                s.fetch_add(1, Ordering::SeqCst);
            }),
            0,
        );
        l.dispatch(&change(&["a"]));
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert!(l.remove(id));
        assert!(!l.remove(id));
        l.dispatch(&change(&["a"]));
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn callbacks_get_only_what_was_sent_after_they_registered() {
        let l = Listeners::default();
        let seen = Arc::new(AtomicU64::new(0));
        let s = Arc::clone(&seen);
        l.add(
            Arc::new(move |c: &FlagChange| {
                s.store(c.seq, Ordering::SeqCst);
            }),
            5,
        );
        l.dispatch(&FlagChange {
            traceparent: None,
            seq: 5,
            ..change(&["a"])
        });
        assert_eq!(seen.load(Ordering::SeqCst), 0);
        l.dispatch(&FlagChange {
            traceparent: None,
            seq: 6,
            ..change(&["a"])
        });
        assert_eq!(seen.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn status_listeners_hear_state_changes_only() {
        let (tx, rx) = watch::channel(Status::initial());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let task = tokio::spawn(status_loop(rx, State::Initializing, move |st: &Status| {
            s.lock().unwrap().push(st.state);
            assert_ne!(st.state, State::Failed, "a panicking listener is contained");
        }));
        let set = |state: State, version: Option<u64>| {
            tx.send_modify(|st| {
                st.state = state;
                st.version = version;
            });
        };
        // Each step waits for the listener, so that the watch cannot coalesce them.
        let wait_len = |n: usize| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::timeout(std::time::Duration::from_secs(10), async {
                    while seen.lock().unwrap().len() < n {
                        tokio::task::yield_now().await;
                    }
                })
                .await
                .expect("the listener was not called");
            }
        };
        set(State::Ready, Some(1));
        wait_len(1).await;
        set(State::Ready, Some(2)); // a new version, the same state: not reported
        set(State::Stale, Some(2));
        wait_len(2).await;
        set(State::Failed, Some(2));
        wait_len(3).await;
        set(State::Ready, Some(3));
        wait_len(4).await;
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [State::Ready, State::Stale, State::Failed, State::Ready]
        );
    }

    #[test]
    fn removing_a_status_listener_stops_its_task() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let l = StatusListeners::default();
        let task = rt.spawn(std::future::pending::<()>());
        let id = Listeners::default().next_id();
        l.add(id, task.abort_handle());
        assert!(l.remove(id));
        assert!(!l.remove(id));
        assert!(rt.block_on(task).unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn lagging_dispatch_resyncs_with_every_flag() {
        let l = Arc::new(Listeners::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        l.add(
            Arc::new(move |c: &FlagChange| {
                s.lock().unwrap().push(c.keys.to_vec());
            }),
            0,
        );
        let (tx, rx) = broadcast::channel(2);
        for k in ["a", "b", "c", "d"] {
            tx.send(change(&[k])).unwrap();
        }
        drop(tx);
        dispatch_loop(Arc::clone(&l), rx, || Some(change(&["a", "b", "c", "d"]))).await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], ["a", "b", "c", "d"], "{seen:?}");
        assert_eq!(seen[1..], [vec!["c".to_string()], vec!["d".to_string()]]);
    }
}
