//! The change feed: how committed changes reach every SDK, relay and evaluation of this
//! process, in order, with nothing lost.
//!
//! Writers (the store) bump the environment's version and append `change_log` rows in the
//! writing transaction; on PostgreSQL, triggers in that transaction send a small `NOTIFY`
//! on [`CHANNEL`] (`'<environment_id>:<version>'`, `'<id>:removed'` or `'keys'`); on SQLite
//! every committed write transaction raises an in-process signal instead.
//!
//! Each process keeps, per environment, a compiled snapshot (in an `ArcSwap`, for OFREP,
//! `/api/v1/evaluate` and explain) and the hub's stream state (for `GET /sdk/v1/stream`,
//! `/sdk/v1/snapshot` and `/relay/v1/stream`). One applier task brings both forward from the
//! change log after the version it last applied, whenever it is told to ([`Mark`]):
//!
//! - [`listen`]: the PostgreSQL listener (gap handling and heartbeat);
//! - [`apply`]: reading the change log and applying it, or rebuilding from the tables;
//! - [`keys`]: SDK and relay key authentication, and the SDK key hashes relays receive;
//! - [`compact`]: bounded change-log retention.
//!
//! Besides notifications the applier resynchronises every environment periodically, so a
//! lost notification costs at most [`FeedConfig::resync_interval`].

mod apply;
mod compact;
mod keys;
mod listen;
pub mod metrics;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use vexil_eval::CompiledSnapshot;
use vexil_fanout::Hub;
use vexil_fanout::ofrep::EvaluatorSource;
use vexil_schema::stream::EnvironmentId;

use crate::db::Db;
use crate::store::{Store, StoreError};

/// The notification channel.
pub const CHANNEL: &str = "vexil_changes";

/// Tuning of the change feed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FeedConfig {
    /// Every environment is resynchronised from the change log this often, whatever the
    /// notifications said.
    pub resync_interval: Duration,
    /// How often the PostgreSQL listener pings itself.
    pub heartbeat_interval: Duration,
    /// How long a ping may take to come back before the listener connection is presumed dead.
    pub heartbeat_timeout: Duration,
    /// Change-log rows kept per environment (the newest versions).
    pub retain_versions: u64,
    /// Change-log rows older than this are deleted (the newest `retain_versions` or not).
    pub retain_age: Duration,
    /// How often the change log is compacted.
    pub compact_interval: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(5),
            retain_versions: 10_000,
            retain_age: Duration::from_secs(7 * 24 * 3600),
            compact_interval: Duration::from_secs(600),
        }
    }
}

/// What the applier must look at.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {
    /// Every environment and the keys (a gap, a resync, a SQLite commit).
    All,
    /// One environment, by id.
    Environment(i64),
    /// The SDK and relay keys.
    Keys,
}

#[derive(Debug, Default)]
struct Dirty {
    all: bool,
    keys: bool,
    envs: HashSet<i64>,
    /// Counts marks; a round that takes the dirty set has applied every mark up to it.
    seq: u64,
}

/// Shared state of the feed.
#[derive(Debug)]
pub(crate) struct Inner {
    store: Store,
    hub: Hub,
    config: FeedConfig,
    /// This process's name in heartbeat payloads.
    process: String,
    /// The environments served, each with its compiled snapshot.
    envs: RwLock<apply::Envs>,
    /// Live SDK key hashes.
    keys: ArcSwap<keys::KeyIndex>,
    /// What the key tables looked like at the last key load (reloads are skipped when
    /// unchanged).
    key_fingerprint: Mutex<Option<String>>,
    /// What the applier has been asked to look at since it last ran.
    dirty: Mutex<Dirty>,
    /// Wakes the applier.
    wake: Notify,
    /// Serialises applying (the applier task, and [`Feed::sync`] callers).
    apply_lock: tokio::sync::Mutex<()>,
    /// The mark sequence number the last finished round covered ([`Feed::settle`] waits on
    /// it).
    rounds: watch::Sender<u64>,
    /// Environments rebuilt from the tables since the feed was loaded (the
    /// [`metrics::REBUILDS`] counter of this feed alone, for tests and embedders).
    rebuilds: AtomicU64,
}

impl Inner {
    /// Asks the applier to look at `mark`; returns the mark's sequence number.
    pub(crate) fn mark(&self, mark: Mark) -> u64 {
        let seq = {
            let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
            d.seq += 1;
            match mark {
                Mark::All => d.all = true,
                Mark::Keys => d.keys = true,
                Mark::Environment(id) => {
                    d.envs.insert(id);
                }
            }
            d.seq
        };
        self.wake.notify_one();
        seq
    }

    fn take_dirty(&self) -> Dirty {
        let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        let seq = d.seq;
        let taken = std::mem::take(&mut *d);
        d.seq = seq;
        taken
    }

    /// One applier round over what was marked.
    async fn apply_marked(&self) -> Result<(), StoreError> {
        let d = self.take_dirty();
        let _guard = self.apply_lock.lock().await;
        let result = async {
            if d.all {
                return self.sync_all().await;
            }
            for id in &d.envs {
                self.sync_environment(*id).await?;
            }
            if d.keys {
                self.reload_keys(true).await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            // Nothing marked is forgotten: the next round starts over with everything.
            self.mark_quietly_all();
        } else {
            self.rounds.send_modify(|n| *n = (*n).max(d.seq));
        }
        result
    }

    fn mark_quietly_all(&self) {
        let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        d.all = true;
    }
}

/// The change feed of one server process: in-memory compiled snapshots and the hub, kept up
/// to date from the database. Cheap to clone.
///
/// It is the server's [`vexil_fanout::SdkAuth`], [`vexil_fanout::RelayAuth`] and
/// [`EvaluatorSource`].
#[derive(Debug, Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

/// The feed's background tasks; [`FeedTasks::stop`] ends them.
#[derive(Debug)]
pub struct FeedTasks {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl FeedTasks {
    /// Stops every task and waits for them to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            if let Err(e) = h.await {
                tracing::error!(error = %e, "change feed task failed");
            }
        }
    }
}

impl Feed {
    /// Loads every environment and SDK key (so the process serves current data from its
    /// first request). Call [`Feed::start`] to keep them current.
    pub async fn load(store: Store, hub: Hub, config: FeedConfig) -> Result<Self, StoreError> {
        let (rounds, _) = watch::channel(0);
        let feed = Feed {
            inner: Arc::new(Inner {
                store,
                hub,
                config,
                process: uuid::Uuid::new_v4().simple().to_string(),
                envs: RwLock::new(apply::Envs::default()),
                keys: ArcSwap::from_pointee(keys::KeyIndex::default()),
                key_fingerprint: Mutex::new(None),
                dirty: Mutex::new(Dirty::default()),
                wake: Notify::new(),
                apply_lock: tokio::sync::Mutex::new(()),
                rounds,
                rebuilds: AtomicU64::new(0),
            }),
        };
        for reason in metrics::REBUILD_REASONS {
            // Registered at zero, so that `/metrics` shows that no rebuild happened.
            ::metrics::counter!(metrics::REBUILDS, "reason" => *reason).increment(0);
        }
        // Likewise, so that alerts on their increase see a series from the start.
        ::metrics::counter!(metrics::APPLY_ERRORS).increment(0);
        ::metrics::counter!(metrics::LISTENER_RESTARTS).increment(0);
        ::metrics::counter!(metrics::LISTENER_GAPS).increment(0);
        feed.sync().await?;
        Ok(feed)
    }

    /// Starts the background tasks: the applier, the PostgreSQL listener or the SQLite
    /// commit watcher, and change-log compaction. Each is restarted if it panics.
    pub fn start(&self) -> FeedTasks {
        let (stop, stop_rx) = watch::channel(false);
        let mut handles = Vec::new();
        let inner = Arc::clone(&self.inner);
        handles.push(supervise("applier", stop_rx.clone(), move |stop| {
            applier(Arc::clone(&inner), stop)
        }));
        match self.inner.store.db().clone() {
            Db::Postgres(pool) => {
                let inner = Arc::clone(&self.inner);
                handles.push(supervise("listener", stop_rx.clone(), move |stop| {
                    listen::run(Arc::clone(&inner), pool.clone(), stop)
                }));
            }
            Db::Sqlite(_, commits) => {
                let inner = Arc::clone(&self.inner);
                handles.push(supervise("commit watcher", stop_rx.clone(), move |stop| {
                    commit_watcher(Arc::clone(&inner), commits.subscribe(), stop)
                }));
            }
        }
        let inner = Arc::clone(&self.inner);
        handles.push(supervise("compaction", stop_rx, move |stop| {
            compact::run(Arc::clone(&inner), stop)
        }));
        FeedTasks { stop, handles }
    }

    /// Brings every environment and key up to date now.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let _guard = self.inner.apply_lock.lock().await;
        self.inner.sync_all().await
    }

    /// The database id of a loaded environment (`None` if it is not loaded).
    pub fn environment_id(&self, env: &EnvironmentId) -> Option<i64> {
        let envs = self.inner.envs.read().unwrap_or_else(|p| p.into_inner());
        envs.by_key.get(env).map(|e| e.id)
    }

    /// The hub the SDK and relay streams are served from.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The current compiled snapshot of an environment.
    pub fn snapshot(&self, env: &EnvironmentId) -> Option<Arc<CompiledSnapshot>> {
        let envs = self.inner.envs.read().unwrap_or_else(|p| p.into_inner());
        envs.by_key.get(env).map(|e| e.compiled.load_full())
    }

    /// Waits (at most `timeout`) until this process has applied everything committed before
    /// the call: every environment is caught up. Returns whether it got there in time. The
    /// API calls it after each write so that a client reads its own writes from this
    /// server's in-memory state.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let seq = self.inner.mark(Mark::All);
        let mut rounds = self.inner.rounds.subscribe();
        tokio::time::timeout(timeout, rounds.wait_for(|n| *n >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// How many times an environment was rebuilt from the tables (every subscriber then gets
    /// a full `put`) since the feed was loaded, initial loads not included. Catching up from
    /// the change log never rebuilds, except after a real gap (a compacted log, a restored
    /// database, an unusable row).
    pub fn rebuilds(&self) -> u64 {
        self.inner.rebuilds.load(Ordering::Relaxed)
    }

    /// Deletes change-log rows beyond the retention limits now; returns how many.
    pub async fn compact(&self) -> Result<u64, StoreError> {
        self.inner.compact().await
    }
}

impl EvaluatorSource for Feed {
    fn evaluator(&self, env: &EnvironmentId) -> Option<Arc<CompiledSnapshot>> {
        self.snapshot(env)
    }
}

/// Runs `task` until `stop`, starting it again (after a pause) if it panics.
fn supervise<F, Fut>(name: &'static str, stop: watch::Receiver<bool>, task: F) -> JoinHandle<()>
where
    F: Fn(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let run = tokio::spawn(task(stop.clone()));
            match run.await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(task = name, error = %e, "change feed task died: restarting");
                }
            }
            if *stop.borrow() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Applies whatever is marked, whenever woken, and everything every resync interval.
async fn applier(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut resync = tokio::time::interval(inner.config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await; // the first tick is immediate; the feed was just loaded
    let mut failures: u32 = 0;
    loop {
        let expiry = inner.keys.load().next_expiry;
        let until_expiry = expiry.map(|t| {
            let left = t - crate::db::now();
            Duration::try_from(left).unwrap_or(Duration::ZERO) + Duration::from_millis(10)
        });
        tokio::select! {
            _ = stop.changed() => return,
            _ = inner.wake.notified() => {}
            _ = resync.tick() => {
                inner.mark(Mark::All);
            }
            _ = async {
                match until_expiry {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {
                inner.mark(Mark::Keys);
            }
        }
        match inner.apply_marked().await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                ::metrics::counter!(metrics::APPLY_ERRORS).increment(1);
                tracing::warn!(error = %e, retry_in = ?pause, "cannot apply changes");
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(pause) => inner.wake.notify_one(),
                }
            }
        }
    }
}

/// SQLite: every committed write transaction wakes the applier.
async fn commit_watcher(
    inner: Arc<Inner>,
    mut commits: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    // The in-process signal is SQLite's listener: the same series as on PostgreSQL, so that
    // dashboards and alerts need no engine-specific queries.
    ::metrics::gauge!(metrics::LISTENER_CONNECTED).set(1.0);
    ::metrics::counter!(metrics::LISTENER_RESTARTS).increment(0);
    ::metrics::counter!(metrics::LISTENER_GAPS).increment(0);
    let notifications = ::metrics::counter!(metrics::NOTIFICATIONS);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            changed = commits.changed() => {
                if changed.is_err() {
                    return; // the database is gone
                }
                notifications.increment(1);
                inner.mark(Mark::All);
            }
        }
    }
}
