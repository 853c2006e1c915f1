//! The sender: a task on the client's background runtime that flushes queued events and the
//! summary every interval, when `flush_at` events are queued, and once more at close;
//! uploads each batch gzip-compressed to `POST {base_url}/events/v1/bulk` with the SDK key,
//! retrying 408, 429, 5xx and network errors with backoff (or the server's `Retry-After`).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use vexil_schema::backoff::Backoff;
use vexil_schema::events::{BulkResponse, EVENTS_SCHEMA_HEADER, EVENTS_SCHEMA_VERSION, EventBatch};

use super::{Delivery, Events};
use crate::source::Shutdown;
use crate::source::http::{Upstream, retry_after};
use crate::store::Store;

/// Path of the bulk endpoint, relative to the base URL.
pub(crate) const BULK_PATH: &str = "events/v1/bulk";

/// Runs until `shutdown`, then flushes once more (the caller bounds that with its close
/// timeout).
pub(crate) async fn run(events: Arc<Events>, store: Arc<Store>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(events.config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = events.wake.notified() => {}
            _ = shutdown.wait() => break,
        }
        flush(&events, &store, Some(&shutdown)).await;
    }
    flush(&events, &store, None).await;
}

/// Sends everything pending. With `shutdown`, retries wait (and stop waiting when it
/// fires); without it, each batch gets one attempt.
pub(crate) async fn flush(events: &Events, store: &Store, shutdown: Option<&Shutdown>) {
    let current = store.snapshot();
    if events.flush_to_sink(current.as_ref()) {
        return;
    }
    let Delivery::Http(upstream) = &events.delivery else {
        return;
    };
    for batch in events.take_batches(current.as_ref()) {
        let n = batch.events.len() as u64;
        match send(events, upstream, &batch, shutdown).await {
            Ok(response) => {
                let rejected = response.rejected.len() as u64;
                if rejected > 0 {
                    tracing::warn!(
                        rejected,
                        first = ?response.rejected.first(),
                        "the receiver rejected some events"
                    );
                }
                events
                    .sent
                    .fetch_add(n - rejected.min(n), Ordering::Relaxed);
                events.failed.fetch_add(rejected.min(n), Ordering::Relaxed);
            }
            Err(reason) => {
                // A server or relay predating the events endpoint answers 404 to every
                // flush: say so once, not every interval.
                let missing = reason.starts_with("HTTP 404");
                if !missing || !events.warned_missing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(events = n, %reason, "events dropped");
                } else {
                    tracing::debug!(events = n, %reason, "events dropped");
                }
                events.failed.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// One batch, with retries. `Err` says why it was given up.
async fn send(
    events: &Events,
    upstream: &Upstream,
    batch: &EventBatch,
    shutdown: Option<&Shutdown>,
) -> Result<BulkResponse, String> {
    let body = gzip(batch).map_err(|e| format!("could not encode the batch: {e}"))?;
    let config = &events.config;
    let mut backoff = Backoff::new(config.retry_initial, config.retry_max, Duration::MAX);
    let url = upstream.endpoint(BULK_PATH);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = upstream
            .http
            .post(url.clone())
            .header(AUTHORIZATION, &*upstream.authorization)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_ENCODING, "gzip")
            .header(EVENTS_SCHEMA_HEADER, EVENTS_SCHEMA_VERSION.to_string())
            .timeout(config.request_timeout)
            .body(body.clone())
            .send()
            .await;
        let (reason, wait) = match result {
            Ok(response) if response.status().is_success() => {
                // The events are stored; an unreadable answer only hides per-event rejections.
                return Ok(response.json().await.unwrap_or_default());
            }
            Ok(response) => {
                let status = response.status().as_u16();
                if !matches!(status, 408 | 429 | 500..=599) {
                    return Err(format!("HTTP {status} from {url}: not retried"));
                }
                (
                    format!("HTTP {status} from {url}"),
                    retry_after(response.headers()),
                )
            }
            Err(e) => (
                crate::status::DataSourceError::network(&e).to_string(),
                None,
            ),
        };
        let Some(shutdown) = shutdown.filter(|s| !s.is_shutdown()) else {
            return Err(reason);
        };
        if attempt >= config.max_attempts {
            return Err(format!("{reason} ({attempt} attempts)"));
        }
        let delay = backoff
            .next_delay(tokio::time::Instant::now().into_std(), rand::random())
            .max(wait.unwrap_or_default());
        tracing::debug!(%reason, ?delay, "event upload failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            // Closing: one last attempt now rather than after the delay.
            _ = shutdown.wait() => {}
        }
    }
}

fn gzip(batch: &EventBatch) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(batch)?;
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::fast());
    encoder.write_all(&json)?;
    encoder.finish()
}
