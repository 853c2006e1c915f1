//! Progressive delivery: scheduled changes and webhooks, and the background workers that run
//! them against an injectable [`Clock`].
//!
//! - [`clock`]: the server's "now" ([`Clock`], [`ManualClock`] for tests);
//! - [`schedule`]: scheduled configuration changes, claimed exactly once across servers and
//!   executed through the store's ordinary writes;
//! - [`plans`]: release plans, stepped ramps of a flag's fallthrough advanced by the same
//!   scheduler;
//! - [`approvals`]: per-environment approval policies and change requests, the only way to
//!   change a flag's configuration where a policy applies;
//! - [`guardrails`]: metric and PromQL checks of running plans, whose breach rolls the plan
//!   back (run by the scheduler worker, [`plans::Checker`]);
//! - [`webhooks`]: subscriptions, the outbox the store's audit function fills in the
//!   transaction of each change, and the signed, retried deliveries.
//!
//! The HTTP handlers live in `api.rs` here and are mounted by [`crate::api`]. The workers are
//! owned by [`crate::Server::serve`] ([`Workers::spawn`]) and stop with it.

pub mod approvals;
pub mod clock;
pub mod guardrails;
pub(crate) mod patch;
pub mod plans;
pub mod schedule;
pub(crate) mod shared;
pub mod webhooks;

use std::time::Duration;

use tokio::task::JoinHandle;

pub use clock::{Clock, ClockChanges, ManualClock};

use crate::config::Config;
use crate::store::Store;

/// The background workers of one server: the scheduler and the webhook sender.
#[derive(Debug)]
pub struct Workers {
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts both workers. Each runs a round at start (overdue work), then whenever the
    /// poll interval passes or the clock is moved.
    pub fn spawn(store: Store, clock: Clock, config: &Config) -> Self {
        let poll = Duration::from_millis(config.delivery_poll_ms.max(10));
        let me = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let runner = schedule::Runner {
            me,
            grace: time::Duration::seconds(
                i64::try_from(config.schedule_grace_secs).unwrap_or(i64::MAX),
            ),
            lease: time::Duration::seconds(60),
        };
        let sender = webhooks::Sender {
            http: webhooks::http_client(Duration::from_millis(config.webhook_timeout_ms.max(1))),
            retry_for: time::Duration::hours(
                i64::try_from(config.webhook_retry_hours).unwrap_or(24),
            ),
            lease: time::Duration::milliseconds(
                i64::try_from(config.webhook_timeout_ms)
                    .unwrap_or(10_000)
                    .saturating_mul(3),
            ),
        };
        let checker = plans::Checker::new(
            config.prometheus_url.clone(),
            Duration::from_millis(config.webhook_timeout_ms.max(1)),
            time::Duration::seconds(i64::try_from(config.guardrail_check_secs).unwrap_or(60)),
        );
        let scheduler = tokio::spawn(every(poll, clock.clone(), {
            let store = store.clone();
            move |now| {
                let store = store.clone();
                let runner = runner.clone();
                let checker = checker.clone();
                async move {
                    match schedule::run_due(&store, &runner, now).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(finished = n, "scheduled changes run"),
                        Err(e) => tracing::warn!(error = %e, "scheduler round failed"),
                    }
                    match plans::run_due(&store, &runner.me, now).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(advanced = n, "release plan steps applied"),
                        Err(e) => tracing::warn!(error = %e, "release plan round failed"),
                    }
                    match plans::check_due(&store, &checker, &runner.me, now).await {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(rolled_back = n, "guardrails rolled plans back"),
                        Err(e) => tracing::warn!(error = %e, "guardrail round failed"),
                    }
                }
            }
        }));
        let webhooks = tokio::spawn(every(poll, clock, move |now| {
            let store = store.clone();
            let sender = sender.clone();
            async move {
                if let Err(e) = webhooks::run_due(&store, &sender, now).await {
                    tracing::warn!(error = %e, "webhook round failed");
                }
            }
        }));
        Self {
            tasks: vec![scheduler, webhooks],
        }
    }

    /// Stops the workers (a round in progress is abandoned; its claims expire and another
    /// round or server finishes the work).
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Runs `round(now)` at start, then after each poll interval or clock move.
async fn every<F, Fut>(poll: Duration, clock: Clock, mut round: F)
where
    F: FnMut(time::OffsetDateTime) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut changes = clock.changes();
    loop {
        round(clock.now()).await;
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = changes.next() => {}
        }
    }
}
