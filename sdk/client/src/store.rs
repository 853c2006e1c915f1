//! The client's flag store: the compiled snapshot evaluations read, lock-free, through an
//! `ArcSwap`; the writer side that applies `put`/`patch`/`delete` in version order; and the
//! channels that publish the resulting status, flag changes and persistence requests.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use arc_swap::{ArcSwapOption, Guard};
use tokio::sync::{broadcast, watch};
use vexil_eval::{ApplyError, CompiledSnapshot};
use vexil_schema::EnvironmentSnapshot;
use vexil_schema::stream::{Change, Delete, Delta, DeltaItem, ItemRef, Patch, PatchItem, SdkEvent};

use crate::changes::{Touched, changed_flags};
use crate::listeners::{CHANNEL_CAPACITY, FlagChange};
use crate::status::{DataOrigin, DataSourceError, State, Status};

/// What applying an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// The update was applied; the client is now at `version`.
    Updated {
        /// The environment version now held.
        version: u64,
        /// How many flags may evaluate differently because of it.
        changed: usize,
    },
    /// A change at or below the version held (a duplicate or a replay): ignored.
    Ignored {
        /// The version held.
        current: u64,
        /// The change's version.
        got: u64,
    },
    /// A change that skips versions: some change was missed. Nothing was applied; fetch a
    /// full snapshot.
    Gap {
        /// The version held.
        current: u64,
        /// The change's version.
        got: u64,
    },
    /// A change arrived before any full snapshot: nothing was applied; fetch one.
    NoData,
    /// The client is closed: nothing is applied any more.
    Closed,
}

/// What writers serialise on.
#[derive(Debug)]
struct Writer {
    /// Where the data held came from.
    origin: Option<DataOrigin>,
}

/// The flag store shared by the client handle, the data source and the background tasks.
#[derive(Debug)]
pub(crate) struct Store {
    /// What evaluations read: `None` until the first data arrives.
    current: ArcSwapOption<CompiledSnapshot>,
    /// Serialises writers so that versions are checked and applied atomically; never held
    /// across an `.await`, and never taken by evaluations.
    writer: Mutex<Writer>,
    status: watch::Sender<Status>,
    changes: broadcast::Sender<FlagChange>,
    /// Bumped whenever upstream data changes, for the last-known-good writer.
    persist: watch::Sender<u64>,
    /// Set when the client closes: from then on nothing is applied.
    closed: AtomicBool,
    /// Flag-change notifications sent so far (their sequence numbers).
    changes_sent: AtomicU64,
    /// Flag-change callbacks registered ([`Store::listener_added`]).
    listeners: AtomicUsize,
    /// Receivers of `changes` held by the client's own dispatcher task, which only passes
    /// notifications on to callbacks: with no callback and no other receiver, a notification
    /// is not sent, sparing every update a wake-up of the background thread (a system call).
    dispatchers: AtomicUsize,
}

impl Store {
    pub(crate) fn new() -> Self {
        let (changes, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            current: ArcSwapOption::empty(),
            writer: Mutex::new(Writer { origin: None }),
            status: watch::Sender::new(Status::initial()),
            changes,
            persist: watch::Sender::new(0),
            closed: AtomicBool::new(false),
            changes_sent: AtomicU64::new(0),
            listeners: AtomicUsize::new(0),
            dispatchers: AtomicUsize::new(0),
        }
    }

    /// The sequence number of the last flag-change notification sent (or skipped because
    /// nobody could receive it).
    pub(crate) fn change_seq(&self) -> u64 {
        // SeqCst, paired with `commit`: see `listener_added`.
        self.changes_sent.load(Ordering::SeqCst)
    }

    /// Records a flag-change callback, *before* it reads [`Store::change_seq`]: a commit
    /// that does not see it (and skips sending) numbered its change before that read, so
    /// the callback never expects that change.
    pub(crate) fn listener_added(&self) {
        self.listeners.fetch_add(1, Ordering::SeqCst);
    }

    /// Records that a flag-change callback was removed.
    pub(crate) fn listener_removed(&self) {
        self.listeners.fetch_sub(1, Ordering::SeqCst);
    }

    /// A receiver of flag changes for the client's dispatcher task (see `dispatchers`).
    pub(crate) fn subscribe_dispatch(&self) -> broadcast::Receiver<FlagChange> {
        self.dispatchers.fetch_add(1, Ordering::SeqCst);
        self.changes.subscribe()
    }

    /// Whether the client is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // Writers swap the snapshot last, after everything that can fail: a poisoned lock
        // still guards consistent data.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The snapshot evaluations read. Lock-free and allocation-free.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Option<Arc<CompiledSnapshot>>> {
        self.current.load()
    }

    /// The snapshot held, as an owned handle.
    pub(crate) fn snapshot(&self) -> Option<Arc<CompiledSnapshot>> {
        self.current.load_full()
    }

    /// The environment version held.
    pub(crate) fn version(&self) -> Option<u64> {
        self.current.load().as_ref().map(|s| s.version())
    }

    pub(crate) fn origin(&self) -> Option<DataOrigin> {
        self.writer().origin
    }

    pub(crate) fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    pub(crate) fn subscribe_status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    pub(crate) fn subscribe_changes(&self) -> broadcast::Receiver<FlagChange> {
        self.changes.subscribe()
    }

    pub(crate) fn subscribe_persist(&self) -> watch::Receiver<u64> {
        self.persist.subscribe()
    }

    /// Replaces everything with `snapshot` (a `put`). Always applied, even at a lower
    /// version: a full state from upstream is authoritative (e.g. after a database restore).
    pub(crate) fn replace(&self, snapshot: &EnvironmentSnapshot, origin: DataOrigin) -> Applied {
        self.replace_owned(snapshot.clone(), origin)
    }

    /// [`Store::replace`] with a snapshot the caller no longer needs: its flags move into
    /// the compiled snapshot instead of being copied.
    pub(crate) fn replace_owned(
        &self,
        snapshot: EnvironmentSnapshot,
        origin: DataOrigin,
    ) -> Applied {
        // Compile before taking the lock: a large snapshot takes milliseconds.
        let compiled = CompiledSnapshot::compile_owned(snapshot);
        self.replace_compiled(compiled, origin)
    }

    pub(crate) fn replace_compiled(
        &self,
        compiled: CompiledSnapshot,
        origin: DataOrigin,
    ) -> Applied {
        let mut w = self.writer();
        if self.is_closed() {
            return Applied::Closed;
        }
        let old = self.current.load_full();
        if let Some(old) = &old
            && compiled.version() < old.version()
        {
            tracing::info!(
                from = old.version(),
                to = compiled.version(),
                "the environment version went back; replacing the flags with the full snapshot"
            );
        }
        self.commit(&mut w, old.as_deref(), compiled, origin, Touched::All, None)
    }

    /// Serves `compiled` (the last-known-good snapshot) if nothing else is served yet.
    /// Returns whether it was installed.
    pub(crate) fn install_fallback(&self, compiled: CompiledSnapshot) -> bool {
        let mut w = self.writer();
        if self.is_closed() || self.current.load().is_some() {
            return false;
        }
        self.commit(
            &mut w,
            None,
            compiled,
            DataOrigin::LastKnownGood,
            Touched::All,
            None,
        );
        true
    }

    /// Applies one stream event, in version order.
    pub(crate) fn apply(&self, event: SdkEvent, origin: DataOrigin) -> Applied {
        self.apply_traced(event, origin, None)
    }

    /// [`Store::apply`] for a change that carries the W3C trace context of its write: the
    /// [`FlagChange`] it causes carries it on.
    pub(crate) fn apply_traced(
        &self,
        event: SdkEvent,
        origin: DataOrigin,
        traceparent: Option<Arc<str>>,
    ) -> Applied {
        let change = match event {
            SdkEvent::Put(snapshot) => return self.replace_owned(snapshot, origin),
            SdkEvent::Patch(p) => Change::Patch(p),
            SdkEvent::Delete(d) => Change::Delete(d),
            SdkEvent::Delta(d) => Change::Delta(d),
        };
        let mut w = self.writer();
        if self.is_closed() {
            return Applied::Closed;
        }
        let Some(old) = self.current.load_full() else {
            return Applied::NoData;
        };
        let new = match old.apply(&change) {
            Ok(new) => new,
            Err(ApplyError::Stale { current, got }) => return Applied::Ignored { current, got },
            Err(ApplyError::Gap { current, got }) => return Applied::Gap { current, got },
            // `ApplyError` is non-exhaustive: refuse what this version does not know.
            Err(e) => {
                tracing::warn!(error = %e, "change not applied");
                return Applied::Gap {
                    current: old.version(),
                    got: change.version(),
                };
            }
        };
        let (touched_key, is_flag) = match &change {
            Change::Patch(Patch { item, .. }) => match item {
                PatchItem::Flag(f) => (f.key.as_str(), true),
                PatchItem::Segment(s) => (s.key.as_str(), false),
            },
            Change::Delete(Delete { item, .. }) => match item {
                ItemRef::Flag(k) => (k.as_str(), true),
                ItemRef::Segment(k) => (k.as_str(), false),
            },
            Change::Delta(Delta { item, .. }) => match item {
                DeltaItem::Segment(d) => (d.key.as_str(), false),
                DeltaItem::FlagTargets(d) => (d.key.as_str(), true),
            },
        };
        let touched = if is_flag {
            Touched::Flag(touched_key)
        } else {
            Touched::Segment(touched_key)
        };
        self.commit(&mut w, Some(&old), new, origin, touched, traceparent)
    }

    /// Swaps in `new` and publishes what changed. Called with the writer lock held.
    fn commit(
        &self,
        w: &mut Writer,
        old: Option<&CompiledSnapshot>,
        new: CompiledSnapshot,
        origin: DataOrigin,
        touched: Touched<'_>,
        traceparent: Option<Arc<str>>,
    ) -> Applied {
        let keys = changed_flags(old, &new, touched);
        let version = new.version();
        self.current.store(Some(Arc::new(new)));
        w.origin = Some(origin);
        self.status.send_if_modified(|s| {
            let mut modified = s.version != Some(version) || s.origin != Some(origin);
            s.version = Some(version);
            s.origin = Some(origin);
            // Serving the last-known-good snapshot while still waiting for upstream: stale,
            // in the same update so that no observer sees the snapshot as "initialising".
            if origin == DataOrigin::LastKnownGood && s.state == State::Initializing {
                s.state = State::Stale;
                s.since = SystemTime::now();
                modified = true;
            }
            modified
        });
        if origin == DataOrigin::Upstream {
            self.persist.send_modify(|generation| *generation += 1);
        }
        let changed = keys.len();
        if !keys.is_empty() {
            // Numbered under the writer lock, so in sending order.
            let seq = self.changes_sent.fetch_add(1, Ordering::SeqCst) + 1;
            let audience = self.listeners.load(Ordering::SeqCst) > 0
                || self.changes.receiver_count() > self.dispatchers.load(Ordering::SeqCst);
            if audience {
                // An error only means nobody listens.
                let _ = self.changes.send(FlagChange {
                    version,
                    keys: keys.into(),
                    origin,
                    traceparent,
                    seq,
                });
            }
        }
        Applied::Updated { version, changed }
    }

    /// Records that the data held is confirmed by `origin` (e.g. a last-known-good snapshot
    /// the stream found current). No-op without data.
    pub(crate) fn adopt(&self, origin: DataOrigin) {
        let mut w = self.writer();
        if self.current.load().is_none() || w.origin == Some(origin) {
            return;
        }
        w.origin = Some(origin);
        self.status.send_modify(|s| s.origin = Some(origin));
    }

    /// Moves to `state`, recording `error` (cleared when `None` and the state is `Ready`).
    /// A client that is `Failed` or `Offline` stays so: only a new client leaves them.
    pub(crate) fn set_state(&self, state: State, error: Option<DataSourceError>) {
        self.status.send_if_modified(|s| {
            if matches!(s.state, State::Failed | State::Offline) && s.state != state {
                return false;
            }
            let mut modified = false;
            if s.state != state {
                s.state = state;
                s.since = SystemTime::now();
                modified = true;
            }
            let error = match (error, state) {
                (Some(e), _) => Some(e),
                (None, State::Ready) => None,
                (None, _) => s.last_error.clone(),
            };
            if s.last_error != error {
                s.last_error = error;
                modified = true;
            }
            modified
        });
    }

    /// Closes the store: nothing is applied from now on, and the state is `Offline`.
    pub(crate) fn close(&self) {
        // Taking the writer lock waits for an update in progress to finish.
        let _w = self.writer();
        self.closed.store(true, Ordering::Release);
        self.status.send_if_modified(|s| {
            if s.state == State::Offline {
                return false;
            }
            s.state = State::Offline;
            s.since = SystemTime::now();
            true
        });
    }

    /// A change naming every flag held: for listeners that fell behind.
    pub(crate) fn everything_changed(&self) -> Option<FlagChange> {
        let snapshot = self.snapshot()?;
        let mut keys: Vec<String> = snapshot.flag_keys().map(str::to_owned).collect();
        keys.sort_unstable();
        Some(FlagChange {
            version: snapshot.version(),
            keys: keys.into(),
            origin: self.origin()?,
            traceparent: None,
            seq: self.change_seq(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vexil_schema::{Flag, FlagKey};

    fn flag(key: &str, on: bool) -> Flag {
        serde_json::from_value(json!({
            "key": key, "kind": "boolean",
            "variations": [{"value": true}, {"value": false}],
            "on": on, "off_variation": 1, "fallthrough": {"variation": 0}
        }))
        .unwrap()
    }

    fn put(version: u64, flags: Vec<Flag>) -> SdkEvent {
        SdkEvent::Put(EnvironmentSnapshot {
            version,
            flags,
            segments: vec![],
        })
    }

    fn patch(version: u64, f: Flag) -> SdkEvent {
        SdkEvent::Patch(Patch {
            version,
            item: PatchItem::Flag(f),
        })
    }

    const UP: DataOrigin = DataOrigin::Upstream;

    #[test]
    fn changes_apply_in_version_order_only() {
        let s = Store::new();
        assert_eq!(s.apply(patch(1, flag("a", true)), UP), Applied::NoData);
        assert!(matches!(
            s.apply(put(5, vec![flag("a", false)]), UP),
            Applied::Updated {
                version: 5,
                changed: 1
            }
        ));
        assert_eq!(
            s.apply(patch(5, flag("a", true)), UP),
            Applied::Ignored { current: 5, got: 5 }
        );
        assert_eq!(
            s.apply(patch(4, flag("a", true)), UP),
            Applied::Ignored { current: 5, got: 4 }
        );
        assert_eq!(
            s.apply(patch(7, flag("a", true)), UP),
            Applied::Gap { current: 5, got: 7 }
        );
        assert_eq!(s.version(), Some(5));
        assert!(matches!(
            s.apply(patch(6, flag("a", true)), UP),
            Applied::Updated {
                version: 6,
                changed: 1
            }
        ));
        let del = SdkEvent::Delete(Delete {
            version: 7,
            item: ItemRef::Flag(FlagKey::parse("a").unwrap()),
        });
        assert!(matches!(
            s.apply(del, UP),
            Applied::Updated {
                version: 7,
                changed: 1
            }
        ));
        assert_eq!(s.snapshot().unwrap().len(), 0);
    }

    #[test]
    fn a_lower_put_is_authoritative() {
        let s = Store::new();
        s.apply(put(9, vec![flag("a", true)]), UP);
        assert!(matches!(
            s.apply(put(3, vec![flag("a", false)]), UP),
            Applied::Updated { version: 3, .. }
        ));
        assert_eq!(s.version(), Some(3));
    }

    #[test]
    fn the_dispatcher_alone_is_not_woken_but_numbering_goes_on() {
        let s = Store::new();
        let mut dispatch = s.subscribe_dispatch();
        s.apply(put(1, vec![flag("a", true)]), UP);
        assert!(
            dispatch.try_recv().is_err(),
            "no callback, no other receiver"
        );
        assert_eq!(s.change_seq(), 1, "the change is still numbered");
        s.listener_added();
        s.apply(patch(2, flag("a", false)), UP);
        assert_eq!(dispatch.try_recv().unwrap().seq, 2);
        s.listener_removed();
        let mut other = s.subscribe_changes();
        s.apply(patch(3, flag("a", true)), UP);
        assert_eq!(
            other.try_recv().unwrap().seq,
            3,
            "a public receiver gets it"
        );
        assert_eq!(dispatch.try_recv().unwrap().seq, 3);
    }

    #[test]
    fn updates_publish_changes_status_and_persistence() {
        let s = Store::new();
        let mut changes = s.subscribe_changes();
        let persist = s.subscribe_persist();
        s.apply(put(1, vec![flag("a", true), flag("b", true)]), UP);
        let c = changes.try_recv().unwrap();
        assert_eq!(&*c.keys, ["a", "b"]);
        assert_eq!(s.status().version, Some(1));
        assert_eq!(s.status().origin, Some(UP));
        assert_eq!(*persist.borrow(), 1);

        // Same content, new version: no change notification, but persisted.
        s.apply(put(2, vec![flag("a", true), flag("b", true)]), UP);
        assert!(changes.try_recv().is_err());
        assert_eq!(*persist.borrow(), 2);

        // Test data is never persisted.
        s.apply(patch(3, flag("b", false)), DataOrigin::TestData);
        assert_eq!(&*changes.try_recv().unwrap().keys, ["b"]);
        assert_eq!(*persist.borrow(), 2);
    }

    #[test]
    fn fallback_only_fills_an_empty_store() {
        let s = Store::new();
        let lkg = |v| {
            CompiledSnapshot::compile(&EnvironmentSnapshot {
                version: v,
                flags: vec![flag("a", true)],
                segments: vec![],
            })
        };
        assert!(s.install_fallback(lkg(3)));
        assert_eq!(s.status().origin, Some(DataOrigin::LastKnownGood));
        assert!(!s.install_fallback(lkg(4)));
        assert_eq!(s.version(), Some(3));
    }

    #[test]
    fn failed_is_sticky_and_ready_clears_errors() {
        let s = Store::new();
        s.set_state(State::Stale, Some(DataSourceError::StreamClosed));
        assert_eq!(s.status().last_error, Some(DataSourceError::StreamClosed));
        s.set_state(State::Ready, None);
        assert_eq!(s.status().last_error, None);
        s.set_state(State::Failed, Some(DataSourceError::Unauthorized));
        s.set_state(State::Ready, None);
        assert_eq!(s.status().state, State::Failed);
        s.close();
        assert_eq!(s.status().state, State::Offline);
        assert!(s.is_closed());
        assert_eq!(s.apply(put(9, vec![flag("a", true)]), UP), Applied::Closed);
    }
}
