//! Data sources: where the client's flags come from, behind one trait ([`DataSource`]).
//!
//! - `streaming`: the SSE stream (`GET /sdk/v1/stream`), the default;
//! - `polling`: `GET /sdk/v1/snapshot` with `ETag`/`If-None-Match`;
//! - `file`: a JSON snapshot file, read once or re-read when it changes;
//! - [`test_data`]: [`TestData`], flags set programmatically, for users' own tests;
//! - `http`: the HTTP plumbing the network sources share.
//!
//! A source runs on the client's background runtime and reports through [`Updates`]: full
//! snapshots, stream events (applied in version order) and state changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use vexil_schema::EnvironmentSnapshot;
use vexil_schema::stream::SdkEvent;

use crate::status::{DataOrigin, DataSourceError, State};
use crate::store::{Applied, Store};

pub(crate) mod file;
pub(crate) mod http;
pub(crate) mod polling;
pub(crate) mod streaming;
pub mod test_data;

pub use test_data::{TestData, TestFlag};

/// A boxed future, as returned by [`DataSource::start`].
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where a client's flags come from.
///
/// Vexil ships streaming (the default), polling, file and [`TestData`] sources; implement
/// this trait to feed flags from elsewhere and pass it to
/// [`crate::ClientBuilder::data_source`]. Deliver flags through [`Updates`] and call
/// [`Updates::ready`] once they are current: [`crate::Client::wait_for_initialization`]
/// waits for that.
pub trait DataSource: Send + 'static {
    /// Where the data this source delivers comes from, as reported in
    /// [`crate::Status::origin`]. Only [`DataOrigin::Upstream`] data is persisted as the
    /// last-known-good snapshot.
    fn origin(&self) -> DataOrigin {
        DataOrigin::Custom
    }

    /// Starts the source. Called once, from [`crate::ClientBuilder::build`] on the caller's
    /// thread (there may be no Tokio runtime there); anything delivered to `updates` before
    /// returning is visible as soon as `build` returns. The returned future runs on the
    /// client's background runtime; it should return once `shutdown` fires (it is dropped
    /// then in any case).
    fn start(self: Box<Self>, updates: Updates, shutdown: Shutdown) -> BoxFuture;
}

/// Where a [`DataSource`] delivers flags and reports its state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Updates {
    store: Arc<Store>,
    origin: DataOrigin,
}

impl Updates {
    pub(crate) fn new(store: Arc<Store>, origin: DataOrigin) -> Self {
        Self { store, origin }
    }

    /// Replaces every flag and segment with `snapshot` (a `put`). A full snapshot is
    /// authoritative and applied even if its version is lower than the one held.
    pub fn init(&self, snapshot: &EnvironmentSnapshot) -> Applied {
        self.store.replace(snapshot, self.origin)
    }

    /// [`Updates::init`] with a snapshot the source no longer needs (one it just decoded):
    /// its flags move into the SDK's state instead of being copied.
    pub fn init_owned(&self, snapshot: EnvironmentSnapshot) -> Applied {
        self.store.replace_owned(snapshot, self.origin)
    }

    /// Applies a stream event: a `put` like [`Updates::init`]; a `patch` or `delete` only if
    /// its version is exactly the next one (older ones are ignored, a gap is reported and
    /// nothing applied).
    pub fn apply(&self, event: SdkEvent) -> Applied {
        self.store.apply(event, self.origin)
    }

    /// [`Updates::apply`] for an event whose frame carried the W3C `traceparent` of the
    /// change: the [`crate::FlagChange`] it causes carries it on.
    pub fn apply_traced(&self, event: SdkEvent, traceparent: Option<&str>) -> Applied {
        self.store
            .apply_traced(event, self.origin, traceparent.map(Arc::from))
    }

    /// The environment version held, whichever source delivered it.
    pub fn version(&self) -> Option<u64> {
        self.store.version()
    }

    /// Whether the data held came from this source (rather than, say, the last-known-good
    /// snapshot served while the source was unreachable).
    pub fn holds_own_data(&self) -> bool {
        self.store.origin() == Some(self.origin)
    }

    /// The source is connected and current. The data held, whatever delivered it, is now
    /// confirmed by this source.
    pub fn ready(&self) {
        self.store.adopt(self.origin);
        self.store.set_state(State::Ready, None);
    }

    /// Whether the client is [`State::Ready`].
    pub fn is_ready(&self) -> bool {
        self.store.status().state == State::Ready
    }

    /// The source lost its connection (or could not make one) and keeps retrying: the client
    /// is `Stale` if it serves flags, still `Initializing` if not.
    pub fn interrupted(&self, error: DataSourceError) {
        let state = if self.store.version().is_some() {
            State::Stale
        } else {
            State::Initializing
        };
        self.store.set_state(state, Some(error));
    }

    /// The source gave up for good: the client is `Failed` and keeps serving what it holds.
    pub fn failed(&self, error: DataSourceError) {
        self.store.set_state(State::Failed, Some(error));
    }

    /// The source does not connect anywhere (offline mode).
    pub fn offline(&self) {
        self.store.set_state(State::Offline, None);
    }
}

/// Fires when the client closes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    pub(crate) fn new(rx: watch::Receiver<bool>) -> Self {
        Self { rx }
    }

    /// Whether the client is closing.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the client is closing.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the client is gone: closing as well.
        let _ = rx.wait_for(|closing| *closing).await;
    }
}
