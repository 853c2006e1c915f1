//! What each relay event does to the relay's local state, and when the relay becomes ready.
//!
//! - `keys` → [`Hub::set_environment_keys`] (SDK authentication and downstream `keys`);
//!   the environment joins the scope.
//! - `env-put` → [`Hub::publish_snapshot`] and a freshly compiled snapshot. A put older than
//!   the local state replaces it all the same: upstream is the source of truth (its database
//!   was restored, or it is a replica that is behind and will catch up).
//! - `env-patch` / `env-delete` / `env-delta` → [`Hub::publish_change`] and an incremental update of the
//!   compiled snapshot. Duplicates and stale changes are ignored; a gap is a [`Desync`]: the
//!   caller reconnects with the hub's cursor and upstream replays or sends a put.
//! - `env-remove` → [`Hub::remove_environment`]; the environment leaves the scope.
//!
//! Ready: the upstream sends `keys` for its whole scope before any versioned event, so once
//! the scope is not empty and every environment in it has a state, the relay holds the full
//! state of all its environments. Readiness is then kept for the life of the process.

use vexil_eval::CompiledSnapshot;
use vexil_schema::stream::{
    Change, EnvDelete, EnvDelta, EnvPatch, EnvPut, EnvironmentId, RelayEvent, StreamError,
};

use super::sse::SseEvent;
pub(crate) use crate::relay_state::RelayState;
use vexil_fanout::hub::{Hub, PublishError, SnapshotOutcome};

/// Why an event could not be applied: local state no longer follows upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Desync {
    /// The event's data could not be decoded.
    #[error("malformed event: {0}")]
    Malformed(#[from] StreamError),
    /// The hub refused the change (a gap, or no state yet).
    #[error("{environment}: {source}")]
    Publish {
        environment: EnvironmentId,
        #[source]
        source: PublishError,
    },
}

/// Applies upstream events to the hub and the relay state.
#[derive(Debug)]
pub(crate) struct Applier {
    hub: Hub,
    state: RelayState,
}

impl Applier {
    pub(crate) fn new(hub: Hub, state: RelayState) -> Self {
        Self { hub, state }
    }

    pub(crate) fn state(&self) -> &RelayState {
        &self.state
    }

    /// Applies one SSE event. Unknown event names are ignored (newer upstreams may add
    /// events).
    pub(crate) fn apply(&mut self, sse: &SseEvent) -> Result<(), Desync> {
        let event = match RelayEvent::decode(&sse.event, &sse.data) {
            Ok(e) => e,
            Err(StreamError::UnknownEvent(name)) => {
                tracing::debug!(event = %name, "ignoring an unknown upstream event");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        // The trace of the write upstream, when the change carries one (issue 16).
        let traceparent = vexil_fanout::trace::traceparent_in(sse.data.as_bytes());
        match event {
            RelayEvent::Keys(k) => {
                self.hub
                    .set_environment_keys(&k.environment, &k.sdk_key_hashes);
                self.hub.set_client_access(
                    &k.environment,
                    vexil_fanout::ClientEnv {
                        key_hashes: k.client_key_hashes.clone(),
                        allowed_origins: k.allowed_origins.clone(),
                    },
                );
                self.join_scope(&k.environment);
            }
            RelayEvent::EnvPut(put) => self.put(put)?,
            RelayEvent::EnvPatch(EnvPatch { environment, patch }) => {
                self.change(&environment, Change::Patch(patch), traceparent)?;
            }
            RelayEvent::EnvDelete(EnvDelete {
                environment,
                delete,
            }) => {
                self.change(&environment, Change::Delete(delete), traceparent)?;
            }
            RelayEvent::EnvDelta(EnvDelta { environment, delta }) => {
                self.change(&environment, Change::Delta(delta), traceparent)?;
            }
            RelayEvent::EnvRemove(r) => {
                self.hub.remove_environment(&r.environment);
                if self.state.remove_from_scope(&r.environment) {
                    self.hub.notify_relay_scopes_changed();
                }
                tracing::info!(environment = %r.environment, "environment removed by upstream");
            }
        }
        self.check_ready();
        self.state.event_applied();
        Ok(())
    }

    fn join_scope(&self, env: &EnvironmentId) {
        if self.state.add_to_scope(env) {
            self.hub.notify_relay_scopes_changed();
        }
    }

    fn put(&mut self, put: EnvPut) -> Result<(), Desync> {
        let EnvPut {
            environment,
            snapshot,
        } = put;
        let published = match self.hub.publish_snapshot(&environment, &snapshot) {
            Err(PublishError::Stale { current, got }) => {
                tracing::warn!(
                    environment = %environment, current, upstream = got,
                    "upstream's version is behind the relay's; taking upstream's state"
                );
                self.hub.replace_snapshot(&environment, &snapshot)
            }
            other => other,
        };
        match published {
            Ok(SnapshotOutcome::Unchanged) if self.state.evaluator(&environment).is_some() => {}
            Ok(_) => {
                self.state
                    .set_evaluator(&environment, CompiledSnapshot::compile(&snapshot));
            }
            Err(source) => {
                return Err(Desync::Publish {
                    environment,
                    source,
                });
            }
        }
        tracing::debug!(environment = %environment, version = snapshot.version, "environment state received");
        self.join_scope(&environment);
        Ok(())
    }

    fn change(
        &mut self,
        env: &EnvironmentId,
        change: Change,
        traceparent: Option<&str>,
    ) -> Result<(), Desync> {
        // The relay's fan-out of the change, a child of upstream's publish span; SDK frames
        // carry this span's context in turn.
        let span = tracing::info_span!("relay.fanout", otel.kind = "producer");
        vexil_fanout::trace::distribution_span(&span, env.as_str(), change.version(), traceparent);
        let _entered = span.enter();
        let traced = vexil_fanout::trace::traceparent_of(&span);
        match self
            .hub
            .publish_change_traced(env, &change, traced.as_deref())
        {
            Ok(_) => {
                if let Some(current) = self.state.evaluator(env) {
                    match current.apply(&change) {
                        Ok(next) => self.state.set_evaluator(env, next),
                        // The hub took the change, so the compiled snapshot was at the same
                        // version: a broken invariant, not an upstream fault.
                        Err(e) => tracing::error!(environment = %env, error = %e,
                            "the compiled snapshot is out of step with the hub"),
                    }
                }
                Ok(())
            }
            Err(e) if !e.needs_resync() => Ok(()), // duplicate or stale: already applied
            Err(source) => Err(Desync::Publish {
                environment: env.clone(),
                source,
            }),
        }
    }

    fn check_ready(&self) {
        if self.state.is_ready() {
            return;
        }
        let scope = self.state.scope();
        if !scope.is_empty() && scope.iter().all(|env| self.hub.version(env).is_some()) {
            self.state.set_ready();
            tracing::info!(
                environments = scope.len(),
                "relay ready: every environment loaded"
            );
        }
    }
}
