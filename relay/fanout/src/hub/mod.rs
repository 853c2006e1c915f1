//! The hub: per-environment state, the publishing API and subscriptions.
//!
//! Each environment has an [`EnvChannel`]: its items (for applying changes), the current state
//! (for new and resynced subscribers and the snapshot endpoint), the ring of recent change
//! frames (for `Last-Event-ID` resume) and one `broadcast` channel to its subscribers. A
//! change's frame is encoded once, at publish time; the full `put` frame of a version is
//! encoded once, when first needed (so a one-key edit of a large list never re-encodes the
//! list unless someone needs the whole state); subscribers only clone `Bytes`.
//!
//! Ordering: publishers and new subscribers meet under the environment's writer lock, so a
//! subscriber's starting point (a `put` or a replay) and its broadcast receiver always agree:
//! every change after that point arrives through the receiver, none before it. Broadcast
//! messages carry a per-environment sequence number so a subscriber that resynchronises
//! skips whatever its fresh `put` already covers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use tokio::sync::{OnceCell, broadcast, watch};
use vexil_schema::EnvironmentSnapshot;
use vexil_schema::stream::{Change, EnvironmentId, SdkKeyHash, parse_version};

use crate::auth::SdkKeyTable;

use crate::frame::Frame;
use crate::items::Items;
use crate::metrics::EnvMetrics;
use crate::ring::{Resume, Ring};
use crate::subscriber::{Audience, EndsWhen, Start, Subscription};

mod config;
pub(crate) mod fleet;
mod outcome;

pub use config::HubConfig;
pub use fleet::TRACKED_CHANGES;
pub use outcome::{NotServing, PublishError, SnapshotOutcome};

/// A message on an environment's broadcast channel. Small and cheap to clone: the channel
/// clones it once per subscriber.
#[derive(Debug, Clone)]
pub(crate) enum Signal {
    /// A change frame, already encoded.
    Change {
        seq: u64,
        version: u64,
        frame: Bytes,
    },
    /// The state was replaced: send the current `put` unless already past `seq`.
    Snapshot { seq: u64 },
    /// Send a keep-alive comment.
    KeepAlive,
    /// Check whether to close (hub draining or environment removed).
    Close,
}

/// The current state of an environment, as subscribers and the snapshot endpoint read it.
#[derive(Debug)]
pub(crate) struct Current {
    pub(crate) version: u64,
    /// Sequence number of the broadcast message that published this state.
    pub(crate) seq: u64,
    /// The items at this version (shared with the writer's, not copied).
    items: Items,
    /// The `put` frame, built on first need: a change publishes only its own small frame, and
    /// the whole state is encoded once per version a subscriber or the snapshot endpoint
    /// actually asks for (`None`: it could not be encoded, which the schema never causes).
    put: std::sync::OnceLock<Option<Frame>>,
    gzip: OnceCell<Bytes>,
}

impl Current {
    fn new(version: u64, seq: u64, items: Items, put: Option<Frame>) -> Self {
        let cell = std::sync::OnceLock::new();
        if let Some(frame) = put {
            let _ = cell.set(Some(frame));
        }
        Self {
            version,
            seq,
            items,
            put: cell,
            gzip: OnceCell::new(),
        }
    }

    /// The `put` frame of this version, encoded the first time it is asked for (concurrent
    /// callers wait for that one encoding). `None` if it cannot be encoded (logged).
    pub(crate) fn put(&self) -> Option<&Frame> {
        self.put
            .get_or_init(|| match self.items.put_frame() {
                Ok(frame) => Some(frame),
                Err(e) => {
                    tracing::error!(version = self.version, error = %e, "cannot encode the put");
                    None
                }
            })
            .as_ref()
    }

    /// The snapshot JSON gzip-compressed, computed at most once per version (off the async
    /// threads: a large snapshot takes milliseconds to compress).
    pub(crate) async fn gzip(&self) -> Result<Bytes, std::io::Error> {
        self.gzip
            .get_or_try_init(|| {
                let json = self.put().map(Frame::data);
                async move {
                    let json = json.ok_or_else(|| std::io::Error::other("no put frame"))?;
                    tokio::task::spawn_blocking(move || gzip(&json))
                        .await
                        .map_err(std::io::Error::other)?
                }
            })
            .await
            .cloned()
    }
}

fn gzip(data: &[u8]) -> Result<Bytes, std::io::Error> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::default(),
    );
    enc.write_all(data)?;
    Ok(enc.finish()?.into())
}

/// What publishers change under the writer lock.
#[derive(Debug)]
struct Writer {
    items: Option<Items>,
    ring: Ring,
    seq: u64,
}

/// One environment's fan-out state.
#[derive(Debug)]
pub(crate) struct EnvChannel {
    pub(crate) id: EnvironmentId,
    /// To every subscriber of this environment.
    tx: broadcast::Sender<Signal>,
    /// Lock-free read of the current state (snapshot endpoint, resyncs).
    current: ArcSwapOption<Current>,
    /// Serialises publishers, and subscribers choosing their starting point.
    writer: Mutex<Writer>,
    /// Set once the environment is removed: its subscribers close.
    removed: AtomicBool,
    pub(crate) metrics: EnvMetrics,
    /// Where its SDK streams stand (the fleet view).
    pub(crate) fleet: fleet::FleetTracker,
    /// The lean path's writers walking this environment's subscribers (see [`crate::walk`]).
    #[cfg(feature = "lean")]
    pub(crate) walk: crate::walk::Walkers,
}

impl EnvChannel {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        // Writers never leave the state half-updated across a panic point, so a poisoned
        // lock still guards consistent data.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn current(&self) -> Option<Arc<Current>> {
        self.current.load_full()
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Streams open on this environment: broadcast receivers, plus the lean path's walked
    /// subscribers less the receivers their writers hold.
    fn streams(&self) -> usize {
        let receivers = self.tx.receiver_count();
        #[cfg(feature = "lean")]
        let receivers = self.walk.streams(receivers);
        receivers
    }

    /// A broadcast receiver and the sequence number of the last message sent before it, taken
    /// together under the writer lock: every message after that number reaches the receiver.
    #[cfg(feature = "lean")]
    pub(crate) fn subscribe_at(&self) -> (broadcast::Receiver<Signal>, u64) {
        let w = self.writer();
        (self.tx.subscribe(), w.seq)
    }

    /// Where a subscriber holding `last_seen` (if anything) starts, chosen under the writer
    /// lock, with a receiver of everything after it (`None` when `with_rx` is false) and
    /// the sequence number its start covers.
    fn start_point(
        &self,
        last_seen: Option<u64>,
        with_rx: bool,
    ) -> Result<(Start, Option<broadcast::Receiver<Signal>>, u64), NotServing> {
        let w = self.writer();
        let Some(items) = w.items.as_ref() else {
            return Err(NotServing::NotReady);
        };
        let current = items.version();
        let resume = match last_seen {
            Some(l) => w.ring.resume(l, current),
            None => Resume::Snapshot,
        };
        let start = match resume {
            Resume::Current => Start::Current { version: current },
            Resume::Replay(frames) => Start::Replay {
                version: current,
                frames,
            },
            Resume::Snapshot => match self.current() {
                Some(c) => Start::Put(c),
                None => return Err(NotServing::NotReady),
            },
        };
        Ok((start, with_rx.then(|| self.tx.subscribe()), w.seq))
    }
}

/// State shared by every clone of a [`Hub`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: HubConfig,
    envs: RwLock<HashMap<EnvironmentId, Arc<EnvChannel>>>,
    /// Set when draining starts: new subscriptions are refused.
    draining: AtomicBool,
    /// Subscribers whose ticket is below this (0..=1000) must close: raised step by step
    /// while draining so that clients reconnect spread over the drain window.
    close_below: AtomicU32,
    /// Hands out tickets `0..1000` round-robin.
    next_ticket: AtomicU32,
    /// SHA-256 hashes of every environment's SDK keys: the relay's SDK authentication and
    /// what relay streams send as `keys` events.
    pub(crate) keys: SdkKeyTable,
    /// Client-side key hashes and allowed origins per environment (issue 15).
    pub(crate) client_keys: crate::client::ClientKeyTable,
    /// Bumped whenever something relay streams must look at again changes: an environment
    /// gets its first state or is removed, a key set changes, relay scopes change, or a drain
    /// step passes. Relay streams hold receivers; SDK streams never look at it.
    catalog: watch::Sender<Catalog>,
    /// Bumped whenever a fleet report would change (a change published, a stream started,
    /// moved past a change or ended): what reporters wait on besides their interval.
    fleet_changed: watch::Sender<u64>,
}

/// Generations of what relay streams watch (see [`Shared::catalog`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Catalog {
    /// Bumped on every change relay streams must look at.
    pub(crate) any: u64,
    /// Bumped when relay scopes may have changed: streams authenticate again.
    pub(crate) scopes: u64,
}

impl Shared {
    pub(crate) fn must_close(&self, ticket: u32) -> bool {
        ticket < self.close_below.load(Ordering::Acquire)
    }

    fn bump_catalog(&self) {
        self.catalog.send_modify(|c| c.any += 1);
    }

    pub(crate) fn ticket(&self) -> u32 {
        self.next_ticket.fetch_add(1, Ordering::Relaxed) % 1000
    }
}

/// The fan-out engine. Cheap to clone: every clone shares the same state.
///
/// Publishers feed it full snapshots and changes per environment; SDK streams subscribe to it.
/// It knows nothing of databases or upstreams.
#[derive(Debug, Clone)]
pub struct Hub {
    pub(crate) shared: Arc<Shared>,
}

impl Hub {
    /// A hub with `config`, starting its keep-alive task.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn new(config: HubConfig) -> Self {
        let shared = Arc::new(Shared {
            config,
            envs: RwLock::new(HashMap::new()),
            draining: AtomicBool::new(false),
            close_below: AtomicU32::new(0),
            next_ticket: AtomicU32::new(0),
            keys: SdkKeyTable::new(),
            client_keys: crate::client::ClientKeyTable::new(),
            catalog: watch::Sender::new(Catalog::default()),
            fleet_changed: watch::Sender::new(0),
        });
        tokio::spawn(keep_alive(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    fn channel(&self, env: &EnvironmentId) -> Option<Arc<EnvChannel>> {
        self.shared
            .envs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(env)
            .cloned()
    }

    fn channel_or_create(&self, env: &EnvironmentId) -> Arc<EnvChannel> {
        if let Some(c) = self.channel(env) {
            return c;
        }
        let mut envs = self
            .shared
            .envs
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        envs.entry(env.clone())
            .or_insert_with(|| {
                let (tx, _) = broadcast::channel(self.shared.config.subscriber_buffer.max(1));
                Arc::new(EnvChannel {
                    id: env.clone(),
                    tx,
                    current: ArcSwapOption::empty(),
                    writer: Mutex::new(Writer {
                        items: None,
                        ring: Ring::new(self.shared.config.ring_capacity),
                        seq: 0,
                    }),
                    removed: AtomicBool::new(false),
                    metrics: EnvMetrics::new(env),
                    fleet: fleet::FleetTracker::new(env, self.shared.fleet_changed.clone()),
                    #[cfg(feature = "lean")]
                    walk: crate::walk::Walkers::new(),
                })
            })
            .clone()
    }

    /// Publishes the full state of `env`. Ignored if the environment is already at that
    /// version; refused with [`PublishError::Stale`] if it is past it (use
    /// [`Hub::replace_snapshot`] when the source of truth really went back).
    pub fn publish_snapshot(
        &self,
        env: &EnvironmentId,
        snapshot: &EnvironmentSnapshot,
    ) -> Result<SnapshotOutcome, PublishError> {
        self.snapshot_inner(env, snapshot, false)
    }

    /// Publishes the full state of `env` whatever its version: for an authoritative resync
    /// after the upstream's versions went back (e.g. a database restored from backup).
    pub fn replace_snapshot(
        &self,
        env: &EnvironmentId,
        snapshot: &EnvironmentSnapshot,
    ) -> Result<SnapshotOutcome, PublishError> {
        self.snapshot_inner(env, snapshot, true)
    }

    fn snapshot_inner(
        &self,
        env: &EnvironmentId,
        snapshot: &EnvironmentSnapshot,
        force: bool,
    ) -> Result<SnapshotOutcome, PublishError> {
        // Encode before taking the lock: a big snapshot takes a while.
        let items = Items::from_snapshot(snapshot)?;
        let put = items.put_frame()?;
        let chan = self.channel_or_create(env);
        let mut w = chan.writer();
        let previous = w.items.as_ref().map(Items::version);
        if let Some(current) = previous
            && !force
        {
            if snapshot.version == current {
                return Ok(SnapshotOutcome::Unchanged);
            }
            if snapshot.version < current {
                return Err(PublishError::Stale {
                    current,
                    got: snapshot.version,
                });
            }
        }
        w.seq += 1;
        let seq = w.seq;
        w.items = Some(items.clone());
        w.ring.clear();
        chan.current.store(Some(Arc::new(Current::new(
            snapshot.version,
            seq,
            items,
            Some(put),
        ))));
        // An error only means nobody is subscribed.
        let _ = chan.tx.send(Signal::Snapshot { seq });
        drop(w);
        if previous.is_none() {
            // A new environment: relay streams waiting for it can start sending it.
            self.shared.bump_catalog();
        }
        chan.metrics.version.set(snapshot.version as f64);
        tracing::debug!(environment = %env, version = snapshot.version, ?previous, "snapshot published");
        Ok(SnapshotOutcome::Replaced { previous })
    }

    /// Publishes one change to `env`. Its version must be exactly the current version plus
    /// one; otherwise nothing is sent and the error says whether the publisher must resync
    /// with a full snapshot ([`PublishError::needs_resync`]). Returns the new version.
    pub fn publish_change(
        &self,
        env: &EnvironmentId,
        change: &Change,
    ) -> Result<u64, PublishError> {
        self.publish_change_traced(env, change, None)
    }

    /// [`Hub::publish_change`], with the W3C `traceparent` of the span publishing it: SDK
    /// and relay stream frames of the change carry it as their data's first field
    /// (`"traceparent"`), so that receivers can continue the trace of the write. An invalid
    /// value is left out.
    pub fn publish_change_traced(
        &self,
        env: &EnvironmentId,
        change: &Change,
        traceparent: Option<&str>,
    ) -> Result<u64, PublishError> {
        let Some(chan) = self.channel(env) else {
            return Err(PublishError::NoSnapshot);
        };
        let result = Self::apply_change(&chan, change, traceparent);
        match &result {
            Ok(version) => chan.metrics.version.set(*version as f64),
            Err(e) => {
                chan.metrics.rejected(e.reason());
                tracing::debug!(environment = %env, error = %e, "change not applied");
            }
        }
        result
    }

    fn apply_change(
        chan: &EnvChannel,
        change: &Change,
        traceparent: Option<&str>,
    ) -> Result<u64, PublishError> {
        let mut w = chan.writer();
        let w = &mut *w;
        let Some(items) = w.items.as_mut() else {
            return Err(PublishError::NoSnapshot);
        };
        let current = items.version();
        let got = change.version();
        if got == current {
            return Err(PublishError::Duplicate { version: got });
        }
        if got < current {
            return Err(PublishError::Stale { current, got });
        }
        if current.checked_add(1) != Some(got) {
            return Err(PublishError::Gap { current, got });
        }
        let mut frame = items.apply(change)?;
        if let Some(tp) = traceparent {
            frame = crate::trace::frame_with_traceparent(&frame, tp)
                .map_err(crate::EncodeError::from)?;
        }
        w.seq += 1;
        let seq = w.seq;
        w.ring.push(got, frame.bytes().clone());
        chan.fleet.published(got);
        // The `put` of this version is built when first needed (see [`Current::put`]).
        chan.current
            .store(Some(Arc::new(Current::new(got, seq, items.clone(), None))));
        let _ = chan.tx.send(Signal::Change {
            seq,
            version: got,
            frame: frame.bytes().clone(),
        });
        Ok(got)
    }

    /// Stops serving `env`: its state and SDK key hashes are dropped, its subscribers'
    /// streams end, and relay streams send `env-remove`.
    pub fn remove_environment(&self, env: &EnvironmentId) {
        let removed = self
            .shared
            .envs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(env);
        let had_keys = !self.shared.keys.environment_keys(env).is_empty();
        if had_keys {
            self.shared.keys.remove_environment(env);
        }
        self.shared.client_keys.remove_environment(env);
        if let Some(chan) = removed {
            chan.removed.store(true, Ordering::Release);
            let _ = chan.tx.send(Signal::Close);
            tracing::info!(environment = %env, "environment removed");
        }
        self.shared.bump_catalog();
    }

    /// The SDK key registry: the SHA-256 hashes of every environment's SDK keys, as set with
    /// [`Hub::set_environment_keys`]. It implements [`crate::SdkAuth`] (the relay
    /// authenticates SDKs with it) and feeds the `keys` events of relay streams.
    pub fn keys(&self) -> &SdkKeyTable {
        &self.shared.keys
    }

    /// Replaces the set of SDK key hashes that read `env` (a key created, rotated or
    /// revoked). Relay streams whose scope holds `env` send it as a `keys` event, and the
    /// environment's SDK streams opened with a key no longer in the set end (see
    /// [`Hub::subscribe_with_key`]). Setting the same set again does nothing.
    pub fn set_environment_keys(&self, env: &EnvironmentId, hashes: &[SdkKeyHash]) {
        let mut sorted = hashes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut previous = self.shared.keys.environment_keys(env);
        previous.sort_unstable();
        if previous == sorted && self.shared.keys.has_environment(env) {
            return;
        }
        self.shared.keys.set_environment_keys(env, &sorted);
        if let Some(chan) = self.channel(env) {
            // Subscribers check their key on a close signal. Sent on any change, additions
            // included: a stream may have been opened with a key the registry did not hold
            // yet (the server checks unknown keys in its database), and only a full check
            // finds it gone.
            let _ = chan.tx.send(Signal::Close);
        }
        self.shared.bump_catalog();
    }

    /// The client-side key registry: client key hashes and allowed origins per environment.
    pub fn client_keys(&self) -> &crate::client::ClientKeyTable {
        &self.shared.client_keys
    }

    /// Replaces `env`'s client-side keys and allowed origins. Relay streams send the change
    /// in a `keys` event; evaluated streams opened with a key no longer listed end at the
    /// next change of the environment.
    pub fn set_client_access(&self, env: &EnvironmentId, access: crate::client::ClientEnv) {
        if self.shared.client_keys.set_environment(env, access) {
            self.shared.bump_catalog();
        }
    }

    /// Tells every relay stream to authenticate its relay key again and apply any change of
    /// scope (environments added to or removed from the key, or the key revoked). Call it
    /// after changing relay keys; streams also re-check on their own every
    /// [`crate::RelayStreamConfig::reauthenticate_every`].
    pub fn notify_relay_scopes_changed(&self) {
        self.shared.catalog.send_modify(|c| {
            c.any += 1;
            c.scopes += 1;
        });
    }

    /// A receiver of the catalog generations (see [`Shared::catalog`]).
    pub(crate) fn catalog(&self) -> watch::Receiver<Catalog> {
        self.shared.catalog.subscribe()
    }

    /// The environment's current version, if it has a state.
    pub fn version(&self, env: &EnvironmentId) -> Option<u64> {
        self.channel(env)?.current().map(|c| c.version)
    }

    /// Every environment with a state, with its version.
    pub fn environments(&self) -> Vec<(EnvironmentId, u64)> {
        let envs = self
            .shared
            .envs
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = envs
            .values()
            .filter_map(|c| Some((c.id.clone(), c.current()?.version)))
            .collect();
        out.sort();
        out
    }

    /// Where `env`'s SDK streams stand: how many hold each version and how the last
    /// [`TRACKED_CHANGES`] changes reached them. `None` if the environment has no state.
    pub fn fleet_report(
        &self,
        env: &EnvironmentId,
    ) -> Option<vexil_schema::fleet::EnvironmentReport> {
        let chan = self.channel(env)?;
        let version = chan.current()?.version;
        Some(chan.fleet.report(env, version))
    }

    /// [`Hub::fleet_report`] of every environment with a state.
    pub fn fleet_reports(&self) -> Vec<vexil_schema::fleet::EnvironmentReport> {
        let chans: Vec<_> = self
            .shared
            .envs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut out: Vec<_> = chans
            .iter()
            .filter_map(|c| Some(c.fleet.report(&c.id, c.current()?.version)))
            .collect();
        out.sort_by(|a, b| a.environment.cmp(&b.environment));
        out
    }

    /// A receiver that sees a new value whenever a fleet report would change: reporters
    /// send on it (debounced) besides their interval.
    pub fn fleet_changes(&self) -> watch::Receiver<u64> {
        self.shared.fleet_changed.subscribe()
    }

    /// Subscribers currently connected to `env`.
    pub fn subscriber_count(&self, env: &EnvironmentId) -> usize {
        self.channel(env).map_or(0, |c| c.streams())
    }

    /// The current state of `env`: the body of `GET /sdk/v1/snapshot` (served by
    /// [`crate::http`], plain or pre-compressed) and the stream's `put`.
    pub(crate) fn current(&self, env: &EnvironmentId) -> Result<Arc<Current>, NotServing> {
        if self.is_draining() {
            return Err(NotServing::ShuttingDown);
        }
        self.channel(env)
            .and_then(|c| c.current())
            .ok_or(NotServing::NotReady)
    }

    /// Subscribes to `env`'s SDK stream. `last_event_id` is the client's `Last-Event-ID`:
    /// when every later change is still in the ring only those are replayed (nothing if it is
    /// current); otherwise, or if it is absent or malformed, the stream starts with a `put`.
    pub fn subscribe(
        &self,
        env: &EnvironmentId,
        last_event_id: Option<&str>,
    ) -> Result<Subscription, NotServing> {
        let last_seen = last_event_id.and_then(|s| parse_version(s.trim()));
        self.subscribe_as(env, last_seen, Audience::Sdk, None)
    }

    /// [`Hub::subscribe`] for a client authenticated with the SDK key whose hash is `key`:
    /// the stream ends once that key no longer reads `env` in the key registry (revoked, its
    /// rotation grace period over, or moved), so a revoked key stops receiving changes at
    /// once instead of at its next reconnect. Only environments whose key set the hub holds
    /// ([`Hub::set_environment_keys`]) are checked.
    pub fn subscribe_with_key(
        &self,
        env: &EnvironmentId,
        last_event_id: Option<&str>,
        key: SdkKeyHash,
    ) -> Result<Subscription, NotServing> {
        let last_seen = last_event_id.and_then(|s| parse_version(s.trim()));
        self.subscribe_as(env, last_seen, Audience::Sdk, Some(key))
    }

    /// Subscribes to `env` for one environment of a relay stream, the receiver holding
    /// `last_seen` (from its cursor) if anything.
    pub(crate) fn subscribe_relay(
        &self,
        env: &EnvironmentId,
        last_seen: Option<u64>,
    ) -> Result<Subscription, NotServing> {
        self.subscribe_as(env, last_seen, Audience::Relay, None)
    }

    fn subscribe_as(
        &self,
        env: &EnvironmentId,
        last_seen: Option<u64>,
        audience: Audience,
        key: Option<SdkKeyHash>,
    ) -> Result<Subscription, NotServing> {
        if self.is_draining() {
            return Err(NotServing::ShuttingDown);
        }
        let chan = self.channel(env).ok_or(NotServing::NotReady)?;
        let (start, rx, seq) = chan.start_point(last_seen, true)?;
        let rx = rx.ok_or(NotServing::NotReady)?;
        Ok(Subscription::new(
            Arc::clone(&self.shared),
            chan,
            rx,
            start,
            seq,
            audience,
            EndsWhen {
                ticket: self.shared.ticket(),
                key,
            },
        ))
    }

    /// [`Hub::subscribe_with_key`] for the lean path's walked streams (see [`crate::walk`]):
    /// the starting frames, to be written by the connection, and the subscriber's state, to
    /// be registered with its environment's writer once they are.
    #[cfg(feature = "lean")]
    pub(crate) fn subscribe_walked(
        &self,
        env: &EnvironmentId,
        last_event_id: Option<&str>,
        key: SdkKeyHash,
    ) -> Result<(Start, Box<crate::walk::Walked>), NotServing> {
        if self.is_draining() {
            return Err(NotServing::ShuttingDown);
        }
        let last_seen = last_event_id.and_then(|s| parse_version(s.trim()));
        let chan = self.channel(env).ok_or(NotServing::NotReady)?;
        let (start, _, seq) = chan.start_point(last_seen, false)?;
        crate::subscriber::count_connect(&chan, &start);
        let ends = EndsWhen {
            ticket: self.shared.ticket(),
            key: Some(key),
        };
        let walked = crate::walk::Walked::new(chan, &start, seq, ends);
        Ok((start, walked))
    }

    /// Continues a walked stream that its writer handed back (a slow subscriber, or one
    /// that registered behind the writer) as an ordinary subscription, from the version its
    /// client holds; `None` if the environment is gone.
    #[cfg(feature = "lean")]
    pub(crate) fn continue_walked(&self, walked: &crate::walk::Walked) -> Option<Subscription> {
        let chan = walked.channel();
        if chan.is_removed() {
            return None;
        }
        let (start, rx, seq) = chan.start_point(Some(walked.version()), true).ok()?;
        Some(Subscription::new(
            Arc::clone(&self.shared),
            Arc::clone(chan),
            rx?,
            start,
            seq,
            Audience::SdkContinued,
            walked.ends(),
        ))
    }

    /// Whether this stream's `ticket` must close now (drain in progress).
    pub(crate) fn must_close(&self, ticket: u32) -> bool {
        self.shared.must_close(ticket)
    }

    /// A ticket for spreading closes over the drain window.
    pub(crate) fn ticket(&self) -> u32 {
        self.shared.ticket()
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// Refuses new subscriptions and closes every subscriber stream, spread evenly over
    /// `drain` so that clients do not all reconnect elsewhere at the same instant. Returns
    /// once every stream has been told to close (at once if none is open). Call it before the HTTP server's graceful
    /// shutdown, which then finds the SSE connections finished.
    pub async fn shutdown(&self, drain: Duration) {
        self.shared.draining.store(true, Ordering::Release);
        self.shared.bump_catalog();
        const STEPS: u32 = 20;
        let pause = drain / STEPS;
        tracing::info!(?drain, "draining subscriber streams");
        for step in 1..=STEPS {
            self.shared
                .close_below
                .store(1000 * step / STEPS, Ordering::Release);
            self.broadcast_all(Signal::Close);
            self.shared.bump_catalog();
            if step < STEPS && !pause.is_zero() {
                if self.open_streams() == 0 {
                    // Nothing left to spread out: do not sit out the rest of the window.
                    break;
                }
                tokio::time::sleep(pause).await;
            }
        }
        self.shared.close_below.store(1000, Ordering::Release);
        self.broadcast_all(Signal::Close);
    }

    /// Streams (SDK subscriptions and relay-stream environments) still open.
    fn open_streams(&self) -> usize {
        self.shared
            .envs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|c| c.streams())
            .sum()
    }

    fn broadcast_all(&self, signal: Signal) {
        broadcast_all(&self.shared, signal);
    }
}

fn broadcast_all(shared: &Shared, signal: Signal) {
    let envs = shared.envs.read().unwrap_or_else(PoisonError::into_inner);
    for chan in envs.values() {
        if chan.streams() > 0 {
            let _ = chan.tx.send(signal.clone());
        }
    }
}

/// Sends a keep-alive to every stream each interval; ends when the hub is dropped or drained.
async fn keep_alive(shared: std::sync::Weak<Shared>) {
    let Some(interval) = shared.upgrade().map(|s| s.config.keep_alive) else {
        return;
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.close_below.load(Ordering::Acquire) >= 1000 {
            return; // drained: every stream is closed
        }
        broadcast_all(&shared, Signal::KeepAlive);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvironmentId {
        EnvironmentId::parse("p/e").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_with_nothing_open_does_not_wait_out_the_window() {
        let hub = Hub::new(HubConfig::default());
        hub.publish_snapshot(&env(), &EnvironmentSnapshot::default())
            .unwrap();
        let start = tokio::time::Instant::now();
        hub.shutdown(Duration::from_secs(100)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(hub.subscribe(&env(), None).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_is_spread_while_streams_stay_open() {
        use futures::StreamExt;
        let hub = Hub::new(HubConfig::default());
        hub.publish_snapshot(&env(), &EnvironmentSnapshot::default())
            .unwrap();
        // One subscriber per ticket step, kept open (polled) until told to close.
        let mut subs = Vec::new();
        for _ in 0..1000 {
            let mut sub = hub.subscribe(&env(), None).unwrap();
            assert!(sub.next().await.is_some()); // the put
            subs.push(tokio::spawn(
                async move { while sub.next().await.is_some() {} },
            ));
        }
        let start = tokio::time::Instant::now();
        hub.shutdown(Duration::from_secs(20)).await;
        // 20 steps of 1 s, the last without a pause.
        assert_eq!(start.elapsed(), Duration::from_secs(19));
        for s in subs {
            s.await.unwrap();
        }
        assert_eq!(hub.subscriber_count(&env()), 0);
    }
}
