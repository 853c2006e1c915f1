//! [`Client`]: the handle applications hold. Cheap to clone; every clone shares one store,
//! one background thread and one data source.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{Either, select};
use tokio::sync::{broadcast, watch};

use crate::builder::ClientBuilder;
use crate::events::{EventStats, Events};
use crate::fallback::Fallback;
use crate::listeners::{FlagChange, ListenerId, Listeners, StatusListeners, status_loop};
use crate::runtime::Background;
use crate::status::{DataOrigin, DataSourceError, State, Status};
use crate::store::Store;
use vexil_schema::Context;

/// Why [`Client::wait_for_initialization`] returned without the client being ready.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// Upstream data did not arrive in time. The client keeps trying in the background; it
    /// serves `serving` meanwhile (the last-known-good snapshot, if there is one), or the
    /// callers' defaults with `ERROR(CLIENT_NOT_READY)` if `None`.
    #[error(
        "no flags from upstream within {timeout:?} (state {state}); serving {}",
        serving_text(*.serving)
    )]
    TimedOut {
        /// How long the caller waited.
        timeout: Duration,
        /// The state at that moment.
        state: State,
        /// Where the flags served come from, if any are.
        serving: Option<DataOrigin>,
    },
    /// The data source gave up (e.g. the SDK key was refused) and will not retry.
    #[error("the data source failed: {0}")]
    Failed(DataSourceError),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
}

fn serving_text(serving: Option<DataOrigin>) -> &'static str {
    match serving {
        Some(DataOrigin::LastKnownGood) => "the last-known-good snapshot",
        Some(_) => "earlier data",
        None => "the code's defaults",
    }
}

/// State shared by the handle and the background tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) listeners: Arc<Listeners>,
    /// The tasks calling status listeners.
    pub(crate) status_listeners: StatusListeners,
    pub(crate) fallback: Arc<Fallback>,
    /// The event pipeline; `None` when events are off (or there is nowhere to send them).
    pub(crate) events: Option<Arc<Events>>,
}

struct Inner {
    shared: Arc<Shared>,
    background: Background,
    /// How long closing waits for the background thread (pending writes included).
    close_timeout: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.store.close();
        self.background.close(self.close_timeout);
    }
}

/// A Vexil client: evaluates flags in process, kept current by a data source running on its
/// own background thread.
///
/// Create one per process with [`Client::builder`] and share it: clones are cheap and
/// share everything. Evaluation methods never block, never perform I/O and never panic;
/// without flags they return the caller's default.
///
/// ```no_run
/// use std::time::Duration;
/// use vexil_sdk::{Client, Context};
///
/// let client = Client::builder("sdk-key").base_url("http://localhost:8080").build()?;
/// if let Err(e) = client.wait_for_initialization_blocking(Duration::from_secs(5)) {
///     eprintln!("starting without fresh flags: {e}");
/// }
/// let user = Context::builder("user-42").set("plan", "pro").build();
/// if client.bool_variation("new-checkout", &user, false) {
///     // new code path
/// }
/// # Ok::<(), vexil_sdk::BuildError>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status();
        f.debug_struct("Client")
            .field("state", &status.state)
            .field("version", &status.version)
            .field("origin", &status.origin)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts configuring a client that authenticates with `sdk_key`.
    pub fn builder(sdk_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(sdk_key.into())
    }

    pub(crate) fn from_parts(
        shared: Arc<Shared>,
        background: Background,
        close_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                background,
                close_timeout,
            }),
        }
    }

    #[inline]
    pub(crate) fn store(&self) -> &Store {
        &self.inner.shared.store
    }

    #[inline]
    pub(crate) fn events(&self) -> Option<&Events> {
        self.inner.shared.events.as_deref()
    }

    /// The current status, with the event pipeline's counters.
    pub fn status(&self) -> Status {
        let mut status = self.store().status();
        status.events = self.event_stats();
        status
    }

    /// The event pipeline's counters (all zero when events are off).
    pub fn event_stats(&self) -> EventStats {
        self.events().map(Events::stats).unwrap_or_default()
    }

    /// Records a custom event for `ctx` (e.g. `"purchase"`), sent with the next flush; the
    /// experiment analysis counts it towards metrics on `event_key`. Never blocks or fails:
    /// an event with an empty or over-long key (over 256 bytes), or for a context without a
    /// key, is dropped and counted in [`EventStats::invalid`]. A no-op when events are off.
    pub fn track(&self, event_key: &str, ctx: &Context) {
        if let Some(events) = self.events() {
            events.track(event_key, ctx, None);
        }
    }

    /// [`Client::track`] with a numeric value (revenue, latency, items…); a non-finite
    /// value is dropped and counted in [`EventStats::invalid`].
    pub fn track_value(&self, event_key: &str, ctx: &Context, value: f64) {
        if let Some(events) = self.events() {
            events.track(event_key, ctx, Some(value));
        }
    }

    /// Sends the events queued and the current summary now rather than at the next
    /// interval. Returns at once, except with an [`crate::EventSink`], where everything
    /// pending is in the sink when it returns. [`Client::close`] flushes as well.
    pub fn flush(&self) {
        if let Some(events) = self.events()
            && !events.flush_to_sink(self.store().snapshot().as_ref())
        {
            events.wake.notify_one();
        }
    }

    /// A receiver of every status change (`tokio::sync::watch`, usable from any async
    /// runtime).
    pub fn status_receiver(&self) -> watch::Receiver<Status> {
        self.store().subscribe_status()
    }

    /// Whether flags are being served (from upstream or a fallback).
    pub fn is_initialized(&self) -> bool {
        self.store().version().is_some()
    }

    /// The environment version of the flags served.
    pub fn version(&self) -> Option<u64> {
        self.store().version()
    }

    /// Waits until the client is ready, up to `timeout`.
    ///
    /// `Ok` once upstream data has arrived (or at once in offline mode). On timeout the
    /// last-known-good snapshot, if configured and loaded, is served from then on, and the
    /// client keeps trying in the background: the application can start anyway. Works from
    /// any async runtime; the timer runs on the client's own thread.
    pub async fn wait_for_initialization(&self, timeout: Duration) -> Result<(), InitError> {
        let mut status = self.status_receiver();
        let (tx, mut timer) = futures::channel::oneshot::channel::<()>();
        self.inner.background.handle().spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = tx.send(());
        });
        loop {
            if let Some(outcome) = self.init_outcome(&status.borrow_and_update()) {
                return outcome;
            }
            match select(Box::pin(status.changed()), &mut timer).await {
                Either::Left((Ok(()), _)) => {}
                Either::Left((Err(_), _)) => return Err(InitError::Closed),
                Either::Right(_) => break,
            }
        }
        // Gave up waiting: serve the last-known-good snapshot rather than defaults.
        self.inner.shared.fallback.activate(self.store());
        let s = self.status();
        match self.init_outcome(&s) {
            Some(outcome) => outcome,
            None => Err(InitError::TimedOut {
                timeout,
                state: s.state,
                serving: s.origin,
            }),
        }
    }

    /// [`Client::wait_for_initialization`] for synchronous code: blocks the calling thread.
    /// Do not call it from an async task (it would block the executor's thread).
    pub fn wait_for_initialization_blocking(&self, timeout: Duration) -> Result<(), InitError> {
        futures::executor::block_on(self.wait_for_initialization(timeout))
    }

    fn init_outcome(&self, s: &Status) -> Option<Result<(), InitError>> {
        if self.store().is_closed() {
            return Some(Err(InitError::Closed));
        }
        match s.state {
            State::Ready | State::Offline => Some(Ok(())),
            // Was ready, lost the connection since: initialised all the same.
            State::Stale if s.has_data() && s.origin != Some(DataOrigin::LastKnownGood) => {
                Some(Ok(()))
            }
            State::Failed => Some(Err(InitError::Failed(s.last_error.clone().unwrap_or(
                DataSourceError::InvalidConfiguration("the data source stopped".into()),
            )))),
            _ => None,
        }
    }

    /// A receiver of flag-change notifications: one [`FlagChange`] per update that changed
    /// some flag's possible result. A receiver that falls more than 256 notifications behind
    /// gets `RecvError::Lagged` and should re-read the flags it cares about.
    pub fn flag_changes(&self) -> broadcast::Receiver<FlagChange> {
        self.store().subscribe_changes()
    }

    /// Calls `listener` for every [`FlagChange`] made from now on, on the client's background
    /// thread, in order. Keep it quick (hand long work to another thread); a panic in it is contained
    /// and logged. If listeners fall behind, one change naming every flag replaces the
    /// notifications they missed.
    pub fn on_flag_change(
        &self,
        listener: impl Fn(&FlagChange) + Send + Sync + 'static,
    ) -> ListenerId {
        // Counted before the sequence number is read (see `Store::listener_added`).
        self.store().listener_added();
        let after = self.store().change_seq();
        self.inner.shared.listeners.add(Arc::new(listener), after)
    }

    /// Removes a listener added with [`Client::on_flag_change`]; `false` if it was not
    /// registered.
    pub fn remove_flag_change_listener(&self, id: ListenerId) -> bool {
        let removed = self.inner.shared.listeners.remove(id);
        if removed {
            self.store().listener_removed();
        }
        removed
    }

    /// Calls `listener` with the new [`Status`] each time the client's [`State`] changes
    /// from the state it had when the listener was added: `Ready` → `Stale` when the stream
    /// is lost (the flags held are still served), `Stale` → `Ready` once reconnected,
    /// `Failed` when the data source gives up (e.g. the SDK key was refused), `Offline`
    /// when closed. Runs on the client's background thread, in order; keep it quick. A
    /// panic in it is contained and logged. Transitions closer together than the listener
    /// runs are coalesced into the latest, so it is always told the state the client ends
    /// up in. This is what the OpenFeature providers of the Python and Node bindings turn
    /// into `PROVIDER_STALE`, `PROVIDER_READY` and `PROVIDER_ERROR` events.
    pub fn on_status_change(
        &self,
        listener: impl Fn(&Status) + Send + Sync + 'static,
    ) -> ListenerId {
        let id = self.inner.shared.listeners.next_id();
        // The baseline is the state now, not when the task first runs.
        let mut rx = self.status_receiver();
        let now = rx.borrow_and_update().state;
        let task = self
            .inner
            .background
            .handle()
            .spawn(status_loop(rx, now, listener));
        self.inner
            .shared
            .status_listeners
            .add(id, task.abort_handle());
        id
    }

    /// Removes a listener added with [`Client::on_status_change`]; `false` if it was not
    /// registered.
    pub fn remove_status_listener(&self, id: ListenerId) -> bool {
        self.inner.shared.status_listeners.remove(id)
    }

    /// Stops the data source and background work, writing a pending last-known-good
    /// snapshot and sending pending events first (waiting up to the builder's close
    /// timeout). Evaluations keep working
    /// on the flags held. Dropping the last clone of the client does the same.
    pub fn close(&self) {
        self.store().close();
        self.inner.background.close(self.inner.close_timeout);
    }
}
