//! One subscriber's SDK stream: its starting frames, then every broadcast frame in order.
//!
//! A subscriber owns no task and no buffer of its own: the stream is polled by the HTTP
//! connection's task, and between polls it is a broadcast receiver (a position in the
//! environment's shared channel) plus a few integers. A subscriber that stops reading falls
//! behind in that channel without slowing anyone; once it is more than
//! [`crate::HubConfig::subscriber_buffer`] messages behind it gets a fresh `put` (a resync),
//! and after [`crate::HubConfig::max_lag_resyncs`] of those it is disconnected.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use metrics::{Counter, Gauge};
use tokio::sync::broadcast::{self, error::RecvError};

use vexil_schema::stream::SdkKeyHash;

use crate::frame::KEEP_ALIVE;
use crate::hub::fleet::Held;
use crate::hub::{Current, EnvChannel, Shared, Signal};
use crate::metrics::SubscriberGauge;

/// Where a new subscriber starts.
#[derive(Debug)]
pub(crate) enum Start {
    /// Send the full state.
    Put(Arc<Current>),
    /// Send these change frames (`Last-Event-ID` resume), reaching `version`.
    Replay { version: u64, frames: Vec<Bytes> },
    /// The subscriber is already at `version`.
    Current { version: u64 },
}

/// Who a subscription feeds, which decides the metrics it is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// An SDK stream: counted in the per-environment subscriber and event metrics.
    Sdk,
    /// One environment of a relay stream, which counts its own connections and events.
    Relay,
    /// An SDK stream the lean path's writer handed back to its connection (see
    /// [`crate::walk`]): counted like [`Audience::Sdk`], but not as a new connection.
    #[cfg_attr(not(feature = "lean"), allow(dead_code))]
    SdkContinued,
}

/// How a subscription began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartKind {
    /// With a `put` of the full state.
    Put,
    /// With a replay of this many changes from the ring.
    Replay {
        /// Number of change frames replayed.
        changes: usize,
    },
    /// With nothing: the client's `Last-Event-ID` was current.
    Current,
}

/// An SDK stream: a `Stream` of complete SSE frames, ready to be written to the connection.
/// It ends when the hub drains, the environment is removed or the subscriber is dropped for
/// falling behind.
pub struct Subscription {
    version: u64,
    start: StartKind,
    inner: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("version", &self.version)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        shared: Arc<Shared>,
        chan: Arc<EnvChannel>,
        rx: broadcast::Receiver<Signal>,
        start: Start,
        seq: u64,
        audience: Audience,
        ends: EndsWhen,
    ) -> Self {
        let (version, kind) = match &start {
            Start::Put(c) => (c.version, StartKind::Put),
            Start::Replay { version, frames } => (
                *version,
                StartKind::Replay {
                    changes: frames.len(),
                },
            ),
            Start::Current { version } => (*version, StartKind::Current),
        };
        let counted = match audience {
            Audience::Sdk | Audience::SdkContinued => {
                if audience == Audience::Sdk {
                    count_connect(&chan, &start);
                }
                Counted {
                    subscribers: chan.metrics.subscribers.clone(),
                    events_sent: chan.metrics.events_sent.clone(),
                }
            }
            Audience::Relay => Counted {
                subscribers: Gauge::noop(),
                events_sent: Counter::noop(),
            },
        };
        Self {
            version,
            start: kind,
            inner: Box::pin(frames(
                shared,
                chan,
                rx,
                start,
                seq,
                ends,
                counted,
                audience != Audience::Relay,
            )),
        }
    }

    /// The environment version the subscriber holds once the starting frames are sent.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How the subscription began.
    pub fn start(&self) -> StartKind {
        self.start
    }
}

impl Stream for Subscription {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Counts an SDK connection by how it starts.
pub(crate) fn count_connect(chan: &EnvChannel, start: &Start) {
    match start {
        Start::Put(_) => chan.metrics.connect_put.increment(1),
        Start::Replay { .. } => chan.metrics.connect_replay.increment(1),
        Start::Current { .. } => chan.metrics.connect_current.increment(1),
    }
}

/// The metric handles a subscription updates (no-ops for relay streams).
struct Counted {
    subscribers: Gauge,
    events_sent: Counter,
}

/// What, besides the environment's removal, ends a stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EndsWhen {
    /// Its drain ticket: the stream closes once draining reaches it.
    pub(crate) ticket: u32,
    /// The SHA-256 of the SDK key it was opened with: the stream closes once that key no
    /// longer reads the environment.
    pub(crate) key: Option<SdkKeyHash>,
}

impl EndsWhen {
    /// Whether the stream must end now: the environment was removed, the drain ticket came
    /// up, or the key no longer reads the environment. The key is checked only against an
    /// environment whose key set the hub holds (the relay's, and the server's registry);
    /// with any other [`crate::SdkAuth`] the hub has no say.
    pub(crate) fn now(&self, shared: &Shared, chan: &EnvChannel) -> bool {
        if chan.is_removed() || shared.must_close(self.ticket) {
            return true;
        }
        let revoked = self.key.as_ref().is_some_and(|k| {
            shared.keys.has_environment(&chan.id) && !shared.keys.reads(k, &chan.id)
        });
        if revoked {
            chan.metrics.key_disconnects.increment(1);
            tracing::info!(environment = %chan.id, "closing an SDK stream: its key no longer reads the environment");
        }
        revoked
    }
}

#[allow(clippy::too_many_arguments)]
fn frames(
    shared: Arc<Shared>,
    chan: Arc<EnvChannel>,
    mut rx: broadcast::Receiver<Signal>,
    start: Start,
    mut floor: u64,
    ends: EndsWhen,
    counted: Counted,
    tracked: bool,
) -> impl Stream<Item = Bytes> + Send {
    async_stream::stream! {
        let _gauge = SubscriberGauge::enter(&counted.subscribers);
        // Where this stream stands, for the fleet view: it holds a version once its frame
        // was taken by the connection (the code after a `yield` runs on the next poll).
        let mut held = None;
        match start {
            Start::Put(current) => {
                let Some(put) = current.put() else { return };
                counted.events_sent.increment(1);
                let version = current.version;
                yield put.bytes().clone();
                if tracked {
                    held = Some(Held::join(&chan.fleet, version));
                }
            }
            Start::Replay { frames, version } => {
                for frame in frames {
                    counted.events_sent.increment(1);
                    yield frame;
                }
                if tracked {
                    held = Some(Held::join(&chan.fleet, version));
                }
            }
            Start::Current { version } => {
                if tracked {
                    held = Some(Held::join(&chan.fleet, version));
                }
            }
        }
        let mut resyncs = 0u32;
        loop {
            match rx.recv().await {
                Ok(Signal::Change { seq, version, frame }) => {
                    if seq > floor {
                        floor = seq;
                        counted.events_sent.increment(1);
                        yield frame;
                        if let Some(h) = held.as_mut() {
                            h.move_to(version);
                        }
                    }
                }
                Ok(Signal::Snapshot { seq }) => {
                    if seq > floor {
                        let Some(current) = chan.current() else { break };
                        let Some(put) = current.put() else { break };
                        floor = current.seq;
                        counted.events_sent.increment(1);
                        yield put.bytes().clone();
                        if let Some(h) = held.as_mut() {
                            h.move_to(current.version);
                        }
                    }
                }
                Ok(Signal::KeepAlive) => yield Bytes::from_static(KEEP_ALIVE),
                Ok(Signal::Close) => {
                    if ends.now(&shared, &chan) {
                        break;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    if ends.now(&shared, &chan) {
                        break;
                    }
                    let Some(current) = chan.current() else { break };
                    if current.seq <= floor {
                        // Only keep-alives or close checks were missed: nothing to resend.
                        continue;
                    }
                    resyncs += 1;
                    if resyncs > shared.config.max_lag_resyncs {
                        chan.metrics.lag_disconnects.increment(1);
                        tracing::info!(environment = %chan.id, missed, "disconnecting a subscriber that keeps falling behind");
                        break;
                    }
                    chan.metrics.lag_resyncs.increment(1);
                    tracing::debug!(environment = %chan.id, missed, "resyncing a lagging subscriber");
                    let Some(put) = current.put() else { break };
                    floor = current.seq;
                    counted.events_sent.increment(1);
                    yield put.bytes().clone();
                    if let Some(h) = held.as_mut() {
                        h.move_to(current.version);
                    }
                }
                Err(RecvError::Closed) => break,
            }
        }
    }
}
