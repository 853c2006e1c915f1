//! What the client is doing: its [`State`], where the flags it serves came from
//! ([`DataOrigin`]) and the last [`DataSourceError`], bundled in a [`Status`] that the client
//! publishes through a `tokio::sync::watch` channel.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The client's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Starting: no flag data from the data source yet. Evaluations return the caller's
    /// default with `ERROR(CLIENT_NOT_READY)`, unless a last-known-good snapshot is served.
    Initializing,
    /// Connected and current: evaluations use the latest flags.
    Ready,
    /// Serving flags that may be out of date: the connection was lost and is being retried,
    /// or the flags come from the last-known-good snapshot while upstream is unreachable.
    Stale,
    /// Not connecting to anything, by configuration (offline mode) or because the client was
    /// closed. Evaluations use whatever was loaded last.
    Offline,
    /// The data source gave up and will not retry (e.g. the SDK key was refused). Evaluations
    /// keep using whatever was loaded last; [`Status::last_error`] says why.
    Failed,
}

impl State {
    /// The lower-case name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initializing => "initializing",
            State::Ready => "ready",
            State::Stale => "stale",
            State::Offline => "offline",
            State::Failed => "failed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the flags being served came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataOrigin {
    /// The server or relay (streaming or polling).
    Upstream,
    /// The last-known-good snapshot persisted by an earlier run.
    LastKnownGood,
    /// A snapshot file configured with [`crate::ClientBuilder::file`].
    File,
    /// A [`crate::TestData`] source.
    TestData,
    /// A custom [`crate::DataSource`].
    Custom,
}

/// Why the data source could not deliver flags (the latest problem, kept in
/// [`Status::last_error`]). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataSourceError {
    /// The SDK key was refused (HTTP 401). Not retried: fix the key.
    #[error("the SDK key was refused (HTTP 401): check that it is an SDK key of this environment")]
    Unauthorized,
    /// The SDK key may not read flags (HTTP 403). Not retried.
    #[error("the SDK key may not read flags (HTTP 403): {detail}")]
    Forbidden {
        /// The server's explanation, if it gave one.
        detail: Arc<str>,
    },
    /// An HTTP status other than 401/403. `retryable` says whether the source keeps trying
    /// (400, 408, 429 and 5xx are retried; other 4xx mean a misconfiguration and are not).
    #[error("unexpected HTTP status {status} from {url}")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The URL requested.
        url: Arc<str>,
        /// Whether the source keeps retrying.
        retryable: bool,
    },
    /// The connection failed or broke (DNS, refused, reset, TLS…).
    #[error("network error: {0}")]
    Network(Arc<str>),
    /// Nothing arrived on the stream for this long, not even a keep-alive: the connection is
    /// presumed dead and is replaced.
    #[error("no data or keep-alive received for {0:?}")]
    ReadTimeout(Duration),
    /// The server ended the stream (e.g. it is restarting).
    #[error("the server closed the stream")]
    StreamClosed,
    /// A payload could not be decoded; the source asks for a full snapshot again.
    #[error("malformed data: {0}")]
    Malformed(Arc<str>),
    /// A change skipped versions; the source asks for a full snapshot again.
    #[error("version {got} does not follow the current version {current}: resynchronising")]
    VersionGap {
        /// The version held.
        current: u64,
        /// The version received.
        got: u64,
    },
    /// The client's configuration cannot work (reported instead of panicking).
    #[error("invalid configuration: {0}")]
    InvalidConfiguration(Arc<str>),
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: Arc<str>,
        /// What went wrong.
        message: Arc<str>,
    },
}

impl DataSourceError {
    /// Whether the source gives up after this error (the client moves to [`State::Failed`]).
    pub fn is_fatal(&self) -> bool {
        match self {
            DataSourceError::Unauthorized
            | DataSourceError::Forbidden { .. }
            | DataSourceError::InvalidConfiguration(_) => true,
            DataSourceError::HttpStatus { retryable, .. } => !retryable,
            _ => false,
        }
    }

    /// A network error, with its whole chain of causes (reqwest's own message alone says
    /// "error sending request" and hides "connection refused").
    pub(crate) fn network(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        DataSourceError::Network(message.into())
    }

    pub(crate) fn malformed(e: impl fmt::Display) -> Self {
        DataSourceError::Malformed(e.to_string().into())
    }
}

/// A point-in-time view of the client, as published on its status channel.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Status {
    /// The lifecycle state.
    pub state: State,
    /// The environment version of the flags being served, if any.
    pub version: Option<u64>,
    /// Where the flags being served came from, if any are.
    pub origin: Option<DataOrigin>,
    /// The most recent data source problem; cleared when the source becomes ready again.
    pub last_error: Option<DataSourceError>,
    /// When `state` last changed.
    pub since: SystemTime,
    /// The event pipeline's counters (queued, dropped, sent…), as of
    /// [`crate::Client::status`]; zero in the values published on
    /// [`crate::Client::status_receiver`].
    pub events: crate::events::EventStats,
}

impl Status {
    pub(crate) fn initial() -> Self {
        Self {
            state: State::Initializing,
            version: None,
            origin: None,
            last_error: None,
            since: SystemTime::now(),
            events: crate::events::EventStats::default(),
        }
    }

    /// Whether flags are being served (from any origin). Without flags, evaluations return
    /// the caller's default with `ERROR(CLIENT_NOT_READY)`.
    pub fn has_data(&self) -> bool {
        self.version.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_errors_are_the_ones_that_cannot_heal() {
        assert!(DataSourceError::Unauthorized.is_fatal());
        assert!(
            DataSourceError::Forbidden {
                detail: "disabled".into()
            }
            .is_fatal()
        );
        let status = |retryable| DataSourceError::HttpStatus {
            status: 404,
            url: "http://x".into(),
            retryable,
        };
        assert!(status(false).is_fatal());
        assert!(!status(true).is_fatal());
        assert!(!DataSourceError::StreamClosed.is_fatal());
        assert!(!DataSourceError::ReadTimeout(Duration::from_secs(1)).is_fatal());
    }

    #[test]
    fn messages_are_actionable() {
        assert!(
            DataSourceError::Unauthorized
                .to_string()
                .contains("check that it is an SDK key")
        );
        assert_eq!(State::Stale.to_string(), "stale");
    }
}
