//! What an edge relay knows beyond its hub: whether it is ready, whether upstream is
//! connected, the environments upstream scoped it to, and a compiled snapshot per
//! environment for remote evaluation. Written by the upstream client, read by the HTTP
//! handlers; cheap to clone.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use vexil_eval::CompiledSnapshot;
use vexil_schema::stream::EnvironmentId;

#[derive(Debug)]
struct Inner {
    /// Set once the relay has held the full state of every environment in its scope; never
    /// cleared (losing upstream later does not make the last state unusable). A watch so
    /// that callers can wait for it.
    ready: watch::Sender<bool>,
    /// Whether the upstream stream is up right now.
    connected: AtomicBool,
    /// Upstream events applied so far: lets callers wait for the relay to catch up.
    applied: watch::Sender<u64>,
    /// Environments upstream sent keys or state for, minus those it removed.
    scope: RwLock<BTreeSet<EnvironmentId>>,
    /// One compiled snapshot per environment, replaced whole on every change (copy on
    /// write of a few `Arc`s): evaluation reads it lock-free.
    evaluators: ArcSwap<HashMap<EnvironmentId, Arc<CompiledSnapshot>>>,
}

/// Shared relay state (see the module docs).
#[derive(Debug, Clone)]
pub struct RelayState {
    inner: Arc<Inner>,
}

impl vexil_fanout::ofrep::EvaluatorSource for RelayState {
    fn evaluator(&self, env: &EnvironmentId) -> Option<Arc<CompiledSnapshot>> {
        RelayState::evaluator(self, env)
    }
}

impl Default for RelayState {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                ready: watch::Sender::new(false),
                connected: AtomicBool::new(false),
                applied: watch::Sender::new(0),
                scope: RwLock::default(),
                evaluators: ArcSwap::default(),
            }),
        }
    }
}

impl RelayState {
    /// An empty, not-ready state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the relay has held the full state of all its environments (it then stays
    /// ready, serving the last state whatever happens upstream).
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Completes once the relay is ready.
    pub async fn wait_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    pub(crate) fn set_ready(&self) {
        self.inner.ready.send_replace(true);
    }

    /// A receiver of the number of upstream events applied, changed after each one: wait on
    /// it for the relay to reflect something upstream did.
    pub fn applied_events(&self) -> watch::Receiver<u64> {
        self.inner.applied.subscribe()
    }

    pub(crate) fn event_applied(&self) {
        self.inner.applied.send_modify(|n| *n += 1);
    }

    /// Whether the upstream stream is connected now.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Release);
    }

    /// The environments upstream scoped this relay to.
    pub fn scope(&self) -> BTreeSet<EnvironmentId> {
        self.inner
            .scope
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds `env` to the scope; returns whether it was new.
    pub(crate) fn add_to_scope(&self, env: &EnvironmentId) -> bool {
        if self.in_scope(env) {
            return false;
        }
        self.inner
            .scope
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(env.clone())
    }

    /// Removes `env` from the scope and forgets its evaluator; returns whether it was there.
    pub(crate) fn remove_from_scope(&self, env: &EnvironmentId) -> bool {
        self.remove_evaluator(env);
        self.inner
            .scope
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(env)
    }

    fn in_scope(&self, env: &EnvironmentId) -> bool {
        self.inner
            .scope
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(env)
    }

    /// The compiled snapshot of `env`, if it has a state.
    pub fn evaluator(&self, env: &EnvironmentId) -> Option<Arc<CompiledSnapshot>> {
        self.inner.evaluators.load().get(env).cloned()
    }

    pub(crate) fn set_evaluator(&self, env: &EnvironmentId, compiled: CompiledSnapshot) {
        let compiled = Arc::new(compiled);
        self.inner.evaluators.rcu(|old| {
            let mut map = HashMap::clone(old);
            map.insert(env.clone(), Arc::clone(&compiled));
            map
        });
    }

    fn remove_evaluator(&self, env: &EnvironmentId) {
        self.inner.evaluators.rcu(|old| {
            let mut map = HashMap::clone(old);
            map.remove(env);
            map
        });
    }
}
