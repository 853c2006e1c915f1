//! The polling source: `GET /sdk/v1/snapshot` every interval, with `If-None-Match` so that
//! an unchanged environment costs a `304` and no body. For networks where a long-lived
//! stream is not an option (some proxies, serverless hosts).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, ETAG, IF_NONE_MATCH};
use vexil_schema::EnvironmentSnapshot;

use crate::source::http::{SNAPSHOT_PATH, Upstream, problem_detail, retry_after, status_error};
use crate::source::{BoxFuture, DataSource, Shutdown, Updates};
use crate::status::{DataOrigin, DataSourceError};
use crate::wire::decode_snapshot;
use vexil_schema::backoff::Backoff;

/// Tuning of the polling source.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PollingConfig {
    /// Time between polls. Default 30 s.
    pub interval: Duration,
    /// Time limit of one request, body included. Default 30 s.
    pub request_timeout: Duration,
}

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl PollingConfig {
    /// Polls every `interval` (at least 10 ms; anything below a second is meant for tests).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Sets [`PollingConfig::request_timeout`] (at least 10 ms).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_millis(10));
        self
    }
}

/// The polling data source.
#[derive(Debug)]
pub(crate) struct PollingSource {
    pub(crate) upstream: Upstream,
    pub(crate) config: PollingConfig,
}

impl DataSource for PollingSource {
    fn origin(&self) -> DataOrigin {
        DataOrigin::Upstream
    }

    fn start(self: Box<Self>, updates: Updates, shutdown: Shutdown) -> BoxFuture {
        Box::pin(async move {
            tokio::select! {
                _ = shutdown.wait() => {}
                _ = self.run(&updates) => {}
            }
        })
    }
}

/// What one fetch of the snapshot endpoint brought.
pub(crate) enum Polled {
    Modified {
        snapshot: EnvironmentSnapshot,
        etag: Option<String>,
    },
    NotModified,
}

/// Why a fetch of the snapshot endpoint failed.
pub(crate) struct PollError {
    pub(crate) error: DataSourceError,
    /// The server's `Retry-After`, a floor for the next attempt.
    pub(crate) retry_after: Option<Duration>,
}

impl From<DataSourceError> for PollError {
    fn from(error: DataSourceError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

impl PollingSource {
    async fn run(&self, updates: &Updates) {
        let interval = self.config.interval;
        // Failed polls are retried sooner than the interval, but never later.
        // Reset after every successful poll, so `reset_after` never comes into play.
        let mut backoff = Backoff::new(interval.min(Duration::from_secs(1)), interval, interval);
        let mut etag: Option<String> = None;
        loop {
            let fetched =
                fetch_snapshot(&self.upstream, etag.as_deref(), self.config.request_timeout).await;
            let delay = match fetched {
                Ok(Polled::Modified {
                    snapshot,
                    etag: new_etag,
                }) => {
                    let applied = updates.init_owned(snapshot);
                    tracing::debug!(?applied, "flags polled");
                    updates.ready();
                    etag = new_etag;
                    backoff.reset();
                    interval
                }
                Ok(Polled::NotModified) => {
                    updates.ready();
                    backoff.reset();
                    interval
                }
                Err(e) if e.error.is_fatal() => {
                    tracing::error!(error = %e.error, "flag polling failed; not retrying");
                    updates.failed(e.error);
                    return;
                }
                Err(e) => {
                    let delay = backoff
                        .next_delay(tokio::time::Instant::now().into_std(), rand::random())
                        .max(e.retry_after.unwrap_or_default());
                    tracing::warn!(error = %e.error, ?delay, "flag poll failed; retrying");
                    updates.interrupted(e.error);
                    delay
                }
            };
            tokio::time::sleep(delay).await;
        }
    }
}

/// `GET /sdk/v1/snapshot` (gzip when the server offers it), with `If-None-Match` if `etag`
/// is given.
pub(crate) async fn fetch_snapshot(
    upstream: &Upstream,
    etag: Option<&str>,
    timeout: Duration,
) -> Result<Polled, PollError> {
    let url = upstream.endpoint(SNAPSHOT_PATH);
    let mut request = upstream
        .http
        .get(url.clone())
        .header(AUTHORIZATION, &*upstream.authorization)
        .timeout(timeout);
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    let response = request
        .send()
        .await
        .map_err(|e| DataSourceError::network(&e))?;
    match response.status() {
        StatusCode::NOT_MODIFIED => Ok(Polled::NotModified),
        StatusCode::OK => {
            let etag = response
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .bytes()
                .await
                .map_err(|e| DataSourceError::network(&e))?;
            let snapshot = decode_snapshot(&body)
                .map_err(|e| DataSourceError::malformed(format!("snapshot from {url}: {e}")))?;
            Ok(Polled::Modified { snapshot, etag })
        }
        status => {
            let retry_after = retry_after(response.headers());
            let detail = if status == StatusCode::FORBIDDEN {
                response.bytes().await.ok().and_then(|b| problem_detail(&b))
            } else {
                None
            };
            Err(PollError {
                error: status_error(status.as_u16(), &url, detail),
                retry_after,
            })
        }
    }
}
