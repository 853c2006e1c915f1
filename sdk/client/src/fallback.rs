//! Serving the last-known-good snapshot when upstream cannot be reached at start.
//!
//! The file is read and compiled in the background as soon as the client starts, but only
//! served once the init timeout passes (or the data source fails for good, or a caller's
//! `wait_for_initialization` gives up) without upstream data: a client that reaches upstream
//! in time never flips from old values to new ones. Once upstream data is served the loaded
//! snapshot is dropped.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use vexil_eval::CompiledSnapshot;

use crate::persist::LastKnownGood;
use crate::status::State;
use crate::store::Store;

#[derive(Debug)]
enum Slot {
    /// Still reading the file; `activate` records a request that came meanwhile.
    Loading { activate: bool },
    /// Read, waiting for a reason to serve it.
    Loaded(CompiledSnapshot),
    /// Served, discarded, or there was nothing to load.
    Done,
}

/// The last-known-good snapshot waiting to be served, if one is configured.
#[derive(Debug)]
pub(crate) struct Fallback {
    slot: Mutex<Slot>,
}

impl Fallback {
    /// A fallback whose snapshot is being loaded.
    pub(crate) fn loading() -> Self {
        Self {
            slot: Mutex::new(Slot::Loading { activate: false }),
        }
    }

    /// No fallback at all.
    pub(crate) fn none() -> Self {
        Self {
            slot: Mutex::new(Slot::Done),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the loaded snapshot (or that there is none), serving it at once if that was
    /// already asked for.
    pub(crate) fn loaded(&self, store: &Store, snapshot: Option<CompiledSnapshot>) {
        let mut slot = self.slot();
        let activate = matches!(*slot, Slot::Loading { activate: true });
        *slot = match snapshot {
            Some(s) if activate => {
                serve(store, s);
                Slot::Done
            }
            Some(s) if matches!(*slot, Slot::Loading { .. }) => Slot::Loaded(s),
            _ => Slot::Done,
        };
    }

    /// Serves the snapshot if there is one and nothing else is served yet (now, or as soon
    /// as it is loaded).
    pub(crate) fn activate(&self, store: &Store) {
        let mut slot = self.slot();
        match std::mem::replace(&mut *slot, Slot::Done) {
            Slot::Loading { .. } => *slot = Slot::Loading { activate: true },
            Slot::Loaded(s) => serve(store, s),
            Slot::Done => {}
        }
    }

    /// Drops the snapshot: upstream data arrived first.
    pub(crate) fn discard(&self) {
        *self.slot() = Slot::Done;
    }
}

fn serve(store: &Store, snapshot: CompiledSnapshot) {
    let version = snapshot.version();
    if store.install_fallback(snapshot) {
        tracing::warn!(
            version,
            "upstream not reachable in time: serving the last-known-good snapshot"
        );
    }
}

/// Loads the snapshot, then serves it at `deadline` or when the source fails, unless
/// upstream data arrives first.
pub(crate) async fn run(
    store: Arc<Store>,
    fallback: Arc<Fallback>,
    lkg: Arc<LastKnownGood>,
    deadline: Instant,
) {
    let loaded = tokio::task::spawn_blocking(move || lkg.load())
        .await
        .ok()
        .flatten();
    fallback.loaded(&store, loaded);
    let mut status = store.subscribe_status();
    tokio::select! {
        _ = tokio::time::sleep_until(deadline) => fallback.activate(&store),
        s = status.wait_for(|s| s.has_data() || s.state == State::Failed) => {
            let failed_empty = s.is_ok_and(|s| s.state == State::Failed && !s.has_data());
            if failed_empty {
                fallback.activate(&store);
            } else {
                fallback.discard();
            }
        }
    }
}

/// The deadline `init_timeout` from now.
pub(crate) fn deadline(init_timeout: Duration) -> Instant {
    Instant::now() + init_timeout
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_schema::EnvironmentSnapshot;

    fn compiled(version: u64) -> CompiledSnapshot {
        CompiledSnapshot::compile(&EnvironmentSnapshot {
            version,
            ..Default::default()
        })
    }

    #[test]
    fn activation_before_loading_serves_on_load() {
        let store = Store::new();
        let f = Fallback::loading();
        f.activate(&store);
        assert_eq!(store.version(), None);
        f.loaded(&store, Some(compiled(4)));
        assert_eq!(store.version(), Some(4));
        assert_eq!(store.status().state, State::Stale);
    }

    #[test]
    fn loading_then_activation_serves_once() {
        let store = Store::new();
        let f = Fallback::loading();
        f.loaded(&store, Some(compiled(4)));
        assert_eq!(store.version(), None);
        f.activate(&store);
        f.activate(&store);
        assert_eq!(store.version(), Some(4));
    }

    #[test]
    fn discarded_or_empty_fallbacks_serve_nothing() {
        let store = Store::new();
        let f = Fallback::loading();
        f.loaded(&store, Some(compiled(4)));
        f.discard();
        f.activate(&store);
        assert_eq!(store.version(), None);
        let f = Fallback::loading();
        f.loaded(&store, None);
        f.activate(&store);
        assert_eq!(store.version(), None);
        Fallback::none().activate(&store);
        assert_eq!(store.version(), None);
    }
}
