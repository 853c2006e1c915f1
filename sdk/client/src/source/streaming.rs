//! The streaming source: `GET /sdk/v1/stream` (SSE), the default. Its very first state
//! comes from the gzip-compressed snapshot endpoint, and the stream resumes from there
//! (see `StreamingSource::bootstrap`).
//!
//! eventsource-client parses the stream; everything around it is done here, because its
//! own reconnection cannot do what this protocol needs:
//! - its backoff has half jitter, measures health with `std::time::Instant` (untestable with
//!   Tokio's paused clock) and retries every status alike, 401 included;
//! - a resynchronisation after a version gap or a malformed event needs a connection
//!   *without* `Last-Event-ID`, and it offers no way to drop it;
//! - it has no read timeout, so a silently dead connection would hang for ever.
//!
//! So each connection is made with `reconnect(false)` and lives for one attempt; this loop
//! decides what comes next: the error decides between retrying (with full-jitter backoff,
//! honouring `Retry-After`) and failing for good (401, 403, other 4xx); every read is bounded
//! by [`StreamingConfig::read_timeout`] (the server sends a keep-alive every 15 s); and the
//! `Last-Event-ID` sent is the version the client *holds*, tracked here rather than read
//! from the library, which keeps no getter for it.

use std::time::Duration;

use eventsource_client::{self as es, Client as _, ReconnectOptions, SSE};
use futures::StreamExt;
use vexil_schema::stream::{SdkEvent, StreamError};

use crate::source::http::{
    ReqwestTransport, STREAM_PATH, Upstream, problem_detail, read_error_body, status_error,
};
use crate::source::polling::{Polled, fetch_snapshot};
use crate::source::{BoxFuture, DataSource, Shutdown, Updates};
use crate::status::{DataOrigin, DataSourceError};
use crate::store::Applied;
use vexil_schema::backoff::Backoff;

/// A stream connection that stayed up this long resets the reconnection backoff.
const RESET_AFTER: Duration = Duration::from_secs(60);
use crate::wire::decode_event;

/// Tuning of the streaming source.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamingConfig {
    /// Upper bound of the first reconnection delay; doubles with every consecutive failure.
    /// Default 1 s.
    pub initial_reconnect_delay: Duration,
    /// Upper bound of every reconnection delay. Default 30 s.
    pub max_reconnect_delay: Duration,
    /// How long the stream may stay silent (no event, no keep-alive) before the connection
    /// is presumed dead and replaced. The server sends a keep-alive every 15 s. Default 45 s.
    pub read_timeout: Duration,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            initial_reconnect_delay: Duration::from_secs(1),
            max_reconnect_delay: Duration::from_secs(30),
            read_timeout: Duration::from_secs(45),
        }
    }
}

impl StreamingConfig {
    /// Sets [`StreamingConfig::initial_reconnect_delay`] and
    /// [`StreamingConfig::max_reconnect_delay`].
    pub fn reconnect_delay(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_reconnect_delay = initial;
        self.max_reconnect_delay = max.max(initial);
        self
    }

    /// Sets [`StreamingConfig::read_timeout`] (at least 10 ms).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout.max(Duration::from_millis(10));
        self
    }
}

/// The streaming data source.
#[derive(Debug)]
pub(crate) struct StreamingSource {
    pub(crate) upstream: Upstream,
    pub(crate) config: StreamingConfig,
}

impl DataSource for StreamingSource {
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

/// Why one connection ended and what to do next.
#[derive(Debug)]
struct Ended {
    error: DataSourceError,
    /// Whether to send `Last-Event-ID` next time (no: a full snapshot is needed).
    resume: bool,
    /// The server's `Retry-After`, a floor for the next delay.
    retry_after: Option<Duration>,
}

impl Ended {
    fn retry(error: DataSourceError) -> Self {
        Self {
            error,
            resume: true,
            retry_after: None,
        }
    }

    fn resync(error: DataSourceError) -> Self {
        Self {
            error,
            resume: false,
            retry_after: None,
        }
    }
}

impl StreamingSource {
    /// Connects, and reconnects, until a fatal error (then returns) or shutdown (then is
    /// dropped).
    async fn run(&self, updates: &Updates) {
        let transport = ReqwestTransport {
            http: self.upstream.http.clone(),
        };
        let mut backoff = Backoff::new(
            self.config.initial_reconnect_delay,
            self.config.max_reconnect_delay,
            RESET_AFTER,
        );
        if !self.bootstrap(updates).await {
            return;
        }
        let mut resume = true;
        let mut failures = 0u32;
        loop {
            let last_event_id = if resume { updates.version() } else { None };
            let ended = self
                .connect(&transport, updates, last_event_id, &mut backoff)
                .await;
            if updates.is_ready() {
                // This connection had been delivering: a new run of failures starts.
                failures = 0;
            }
            if ended.error.is_fatal() {
                tracing::error!(error = %ended.error, "flag stream failed; not retrying");
                updates.failed(ended.error);
                return;
            }
            failures = failures.saturating_add(1);
            let delay = backoff
                .next_delay(tokio::time::Instant::now().into_std(), rand::random())
                .max(ended.retry_after.unwrap_or_default());
            if failures == 1 || failures.is_multiple_of(20) {
                tracing::warn!(error = %ended.error, ?delay, failures, "flag stream interrupted; reconnecting");
            } else {
                tracing::debug!(error = %ended.error, ?delay, failures, "flag stream interrupted; reconnecting");
            }
            updates.interrupted(ended.error);
            resume = ended.resume;
            tokio::time::sleep(delay).await;
        }
    }

    /// The first load: the snapshot endpoint, gzip-compressed (a 7.9 MB `put` of 10,000
    /// flags is 0.3 MB that way), after which the stream resumes from its version with
    /// `Last-Event-ID`. Any failure but a refused key falls back to the stream's own `put`.
    /// Returns `false` if the key was refused (the source has failed).
    async fn bootstrap(&self, updates: &Updates) -> bool {
        if updates.version().is_some() {
            return true;
        }
        let timeout = self.config.read_timeout.min(Duration::from_secs(15));
        match fetch_snapshot(&self.upstream, None, timeout).await {
            Ok(Polled::Modified { snapshot, .. }) => {
                let applied = updates.init_owned(snapshot);
                tracing::debug!(?applied, "initial flags loaded from the snapshot endpoint");
            }
            Ok(Polled::NotModified) => {}
            Err(e)
                if matches!(
                    e.error,
                    DataSourceError::Unauthorized | DataSourceError::Forbidden { .. }
                ) =>
            {
                tracing::error!(error = %e.error, "flag stream failed; not retrying");
                updates.failed(e.error);
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e.error, "no initial snapshot; the stream will send one");
            }
        }
        true
    }

    /// One connection, from request to its end.
    async fn connect(
        &self,
        transport: &ReqwestTransport,
        updates: &Updates,
        last_event_id: Option<u64>,
        backoff: &mut Backoff,
    ) -> Ended {
        let url = self.upstream.endpoint(STREAM_PATH);
        let client = match es::ClientBuilder::for_url(url.as_str())
            .and_then(|b| b.header("Authorization", &self.upstream.authorization))
        {
            Ok(b) => {
                let b = b.reconnect(ReconnectOptions::reconnect(false).build());
                match last_event_id {
                    Some(v) => b.last_event_id(v.to_string()),
                    None => b,
                }
            }
            Err(e) => {
                return Ended::retry(DataSourceError::InvalidConfiguration(
                    format!("stream request: {e}").into(),
                ));
            }
        }
        .build_with_transport(transport.clone());
        tracing::debug!(url = %url, ?last_event_id, "connecting to the flag stream");
        let mut stream = client.stream();
        loop {
            let item = match tokio::time::timeout(self.config.read_timeout, stream.next()).await {
                Err(_) => {
                    return Ended::retry(DataSourceError::ReadTimeout(self.config.read_timeout));
                }
                Ok(None) => return Ended::retry(DataSourceError::StreamClosed),
                Ok(Some(item)) => item,
            };
            match item {
                Ok(SSE::Connected(_)) => {
                    backoff.connected(tokio::time::Instant::now().into_std());
                    tracing::debug!(?last_event_id, "flag stream connected");
                    if last_event_id.is_some() {
                        // Resuming: the server replays what was missed right away, or
                        // nothing if the version held is current.
                        updates.ready();
                    }
                }
                Ok(SSE::Comment(_)) => {}
                Ok(SSE::Event(event)) => {
                    if let Some(ended) = handle_event(updates, &event) {
                        return ended;
                    }
                }
                Err(e) => return classify(e, &url).await,
            }
        }
    }
}

/// Applies one event; `Some` when the connection must be replaced.
fn handle_event(updates: &Updates, event: &es::Event) -> Option<Ended> {
    let decoded = match decode_event(&event.event_type, &event.data) {
        Ok(decoded) => decoded,
        Err(StreamError::UnknownEvent(name)) => {
            // Newer servers may add events: skip them.
            tracing::debug!(event = %name, "ignoring an unknown stream event");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "malformed stream event; requesting a full snapshot");
            return Some(Ended::resync(DataSourceError::malformed(e)));
        }
    };
    let is_put = matches!(decoded, SdkEvent::Put(_));
    // A change from a tracing server carries the trace of its write: applying it is a span
    // of that trace (for an OpenTelemetry layer the application installs) and listeners get
    // the context in `FlagChange::traceparent`.
    let traceparent = crate::wire::traceparent_in(&event.data);
    let span = tracing::debug_span!(
        "vexil.sdk.apply",
        event = %event.event_type,
        traceparent = traceparent.unwrap_or(""),
    );
    let _entered = span.enter();
    match updates.apply_traced(decoded, traceparent) {
        Applied::Updated { version, changed } => {
            tracing::debug!(
                version,
                changed,
                put = is_put,
                "flags updated from the stream"
            );
            if is_put {
                updates.ready();
            }
            None
        }
        Applied::Ignored { current, got } => {
            tracing::debug!(current, got, "ignoring a stale or duplicate change");
            None
        }
        Applied::Gap { current, got } => {
            tracing::warn!(current, got, "missed a change; requesting a full snapshot");
            Some(Ended::resync(DataSourceError::VersionGap { current, got }))
        }
        // The client is closing; the source is about to be stopped.
        Applied::Closed => None,
        Applied::NoData => {
            tracing::warn!("a change arrived before any snapshot; requesting a full snapshot");
            Some(Ended::resync(DataSourceError::Malformed(
                "a change arrived before the full snapshot".into(),
            )))
        }
    }
}

/// What an error from eventsource-client means for this source.
async fn classify(error: es::Error, url: &reqwest::Url) -> Ended {
    match error {
        es::Error::UnexpectedResponse(response, body) => {
            let status = response.status();
            let retry_after = response
                .get_header_value("retry-after")
                .ok()
                .flatten()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(3600)));
            let detail = if status == 403 {
                let body = read_error_body(body.into_stream(), 4096, Duration::from_secs(2)).await;
                problem_detail(&body)
            } else {
                None
            };
            Ended {
                error: status_error(status, url, detail),
                resume: true,
                retry_after,
            }
        }
        es::Error::Eof => Ended::retry(DataSourceError::StreamClosed),
        es::Error::InvalidParameter(e) => {
            Ended::retry(DataSourceError::InvalidConfiguration(e.to_string().into()))
        }
        es::Error::Transport(e) => Ended::retry(DataSourceError::network(&e)),
        other => Ended::retry(DataSourceError::network(&other)),
    }
}
