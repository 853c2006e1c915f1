//! The control plane's [`ExposureSink`]: exposures recorded by OFREP evaluations go through a
//! bounded queue to a writer task that stores them in batches, like any other events.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use vexil_fanout::exposures::ExposureSink;
use vexil_schema::events::{Event, Exposure};
use vexil_schema::stream::EnvironmentId;

use super::{EXPOSURES_DROPPED, STORED, now_ms};
use crate::events::EventStore;
use crate::feed::Feed;

/// Most exposures stored in one transaction.
const BATCH: usize = 5_000;
/// How long the writer gathers exposures after the first of a batch.
const LINGER: Duration = Duration::from_millis(100);
/// Attempts to store a batch before it is dropped (counted).
const ATTEMPTS: u32 = 3;

/// Queues exposures for the writer; full queue: dropped and counted, never waiting.
#[derive(Debug)]
pub struct ServerExposures {
    tx: mpsc::Sender<(EnvironmentId, Exposure)>,
}

impl ExposureSink for ServerExposures {
    fn record(&self, env: &EnvironmentId, exposure: Exposure) {
        if self.tx.try_send((env.clone(), exposure)).is_err() {
            metrics::counter!(EXPOSURES_DROPPED).increment(1);
        }
    }
}

impl ServerExposures {
    /// A sink with a queue of `capacity` exposures and its writer task (which ends when the
    /// sink is dropped). Must be called inside a Tokio runtime.
    pub fn spawn(feed: Feed, store: EventStore, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(writer(rx, feed, store));
        Self { tx }
    }
}

async fn writer(mut rx: mpsc::Receiver<(EnvironmentId, Exposure)>, feed: Feed, store: EventStore) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                _ => break,
            }
        }
        let mut by_env: HashMap<EnvironmentId, Vec<Event>> = HashMap::new();
        for (env, e) in batch {
            by_env.entry(env).or_default().push(Event::Exposure(e));
        }
        for (env, events) in by_env {
            let Some(id) = feed.environment_id(&env) else {
                metrics::counter!(EXPOSURES_DROPPED).increment(events.len() as u64);
                continue;
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                match store.store(id, now_ms(), &events, None).await {
                    Ok(()) => {
                        metrics::counter!(STORED).increment(events.len() as u64);
                        break;
                    }
                    Err(e) if attempt < ATTEMPTS => {
                        tracing::warn!(error = %e, attempt, "cannot store OFREP exposures; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, dropped = events.len(), "OFREP exposures dropped");
                        metrics::counter!(EXPOSURES_DROPPED).increment(events.len() as u64);
                        break;
                    }
                }
            }
        }
    }
}
