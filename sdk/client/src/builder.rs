//! [`ClientBuilder`]: configuration, validation, and the start-up of a [`Client`]'s
//! background work.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::client::{Client, Shared};
use crate::events::{Delivery, EventSink, Events, EventsConfig, SDK_NAME};
use crate::fallback::{self, Fallback};
use crate::listeners::{Listeners, dispatch_loop};
use crate::persist::{LastKnownGood, persist_loop};
use crate::runtime::Background;
use crate::source::file::FileSource;
use crate::source::http::{USER_AGENT, Upstream, parse_base_url};
use crate::source::polling::{PollingConfig, PollingSource};
use crate::source::streaming::{StreamingConfig, StreamingSource};
use crate::source::{BoxFuture, DataSource, Shutdown, Updates};
use crate::status::{DataOrigin, DataSourceError, State};
use crate::store::Store;

/// The default base URL: a control plane running locally with its defaults.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The SDK key cannot be sent in an HTTP header.
    #[error("invalid SDK key: {0}")]
    InvalidSdkKey(&'static str),
    /// The base URL is not usable.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be set up (e.g. the TLS backend failed to initialise).
    #[error("could not set up the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// The background thread or its runtime could not be started.
    #[error("could not start the SDK's background thread: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Where the client's flags come from.
enum SourceChoice {
    Streaming(StreamingConfig),
    Polling(PollingConfig),
    File {
        path: PathBuf,
        reload: Option<Duration>,
    },
    Offline,
    Custom(Box<dyn DataSource>),
}

/// Configures a [`Client`]. Start with [`Client::builder`].
///
/// Defaults: streaming from [`DEFAULT_BASE_URL`], no last-known-good file, 5 s init
/// timeout, 10 s connect timeout.
pub struct ClientBuilder {
    sdk_key: String,
    base_url: String,
    source: SourceChoice,
    last_known_good: Option<PathBuf>,
    persist_debounce: Duration,
    init_timeout: Duration,
    connect_timeout: Duration,
    close_timeout: Duration,
    events: EventsConfig,
    event_sink: Option<EventSink>,
    /// The name and version events and the User-Agent give (see [`ClientBuilder::sdk_identity`]).
    sdk: Option<(String, String)>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            SourceChoice::Streaming(_) => "streaming",
            SourceChoice::Polling(_) => "polling",
            SourceChoice::File { .. } => "file",
            SourceChoice::Offline => "offline",
            SourceChoice::Custom(_) => "custom",
        };
        // Never print the SDK key.
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("source", &source)
            .field("last_known_good", &self.last_known_good)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    pub(crate) fn new(sdk_key: String) -> Self {
        Self {
            sdk_key,
            base_url: DEFAULT_BASE_URL.to_owned(),
            source: SourceChoice::Streaming(StreamingConfig::default()),
            last_known_good: None,
            persist_debounce: Duration::from_secs(1),
            init_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            events: EventsConfig::default(),
            event_sink: None,
            sdk: None,
        }
    }

    /// The server's or relay's base URL (e.g. `https://flags.example.com`); the SDK
    /// appends `/sdk/v1/stream` or `/sdk/v1/snapshot`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Streams changes over SSE (the default), tuned by `config`.
    pub fn streaming(mut self, config: StreamingConfig) -> Self {
        self.source = SourceChoice::Streaming(config);
        self
    }

    /// Polls the snapshot endpoint instead of streaming.
    pub fn polling(mut self, config: PollingConfig) -> Self {
        self.source = SourceChoice::Polling(config);
        self
    }

    /// Reads flags from a JSON file instead of the network: an environment snapshot (as
    /// served by `GET /sdk/v1/snapshot`) or a last-known-good file. Read once, at build.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = SourceChoice::File {
            path: path.into(),
            reload: None,
        };
        self
    }

    /// Like [`ClientBuilder::file`], and re-reads the file whenever it changes (checked
    /// every `interval`). A file that fails to parse is reported and the previous flags are
    /// kept.
    pub fn file_watched(mut self, path: impl Into<PathBuf>, interval: Duration) -> Self {
        self.source = SourceChoice::File {
            path: path.into(),
            reload: Some(interval.max(Duration::from_millis(10))),
        };
        self
    }

    /// Connects to nothing. Evaluations use the last-known-good snapshot if one is
    /// configured and valid, and the callers' defaults otherwise.
    pub fn offline(mut self) -> Self {
        self.source = SourceChoice::Offline;
        self
    }

    /// Takes flags from `source` (e.g. a [`crate::TestData`]) instead of the network.
    pub fn data_source(mut self, source: impl DataSource) -> Self {
        self.source = SourceChoice::Custom(Box::new(source));
        self
    }

    /// Persists the flags received from upstream to `path` (atomically, debounced), and
    /// serves that file when upstream cannot be reached within the init timeout at start.
    /// Applies to the streaming and polling sources, and to offline mode (read only).
    pub fn last_known_good(mut self, path: impl Into<PathBuf>) -> Self {
        self.last_known_good = Some(path.into());
        self
    }

    /// The longest time a change waits before the last-known-good file is rewritten (one
    /// write covers every change meanwhile). Default 1 s.
    pub fn persist_debounce(mut self, debounce: Duration) -> Self {
        self.persist_debounce = debounce;
        self
    }

    /// How long after start the last-known-good snapshot is served if upstream has not
    /// delivered flags. Default 5 s.
    pub fn init_timeout(mut self, timeout: Duration) -> Self {
        self.init_timeout = timeout;
        self
    }

    /// Time limit for establishing a connection. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long [`Client::close`] (or dropping the client) waits for background work to
    /// finish. Default 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Configures analytics events: exposures, custom events and evaluation summaries,
    /// sent to `{base_url}/events/v1/bulk` with the SDK key (see [`EventsConfig`];
    /// [`EventsConfig::disabled`] turns them off). Only the streaming and polling sources
    /// send events; offline, file and custom sources (e.g. [`crate::TestData`]) record
    /// nothing unless an [`ClientBuilder::event_sink`] is set.
    pub fn events(mut self, config: EventsConfig) -> Self {
        self.events = config;
        self
    }

    /// Delivers events to `sink` instead of the network, whatever the data source: for
    /// tests that assert on their own exposures and `track` calls.
    pub fn event_sink(mut self, sink: EventSink) -> Self {
        self.event_sink = Some(sink);
        self
    }

    /// Names the SDK that events come from (the `sdk` of every batch sent to
    /// `/events/v1/bulk`, which the server stores with the evaluation summaries) and puts
    /// `name/version` before this crate's own token in the HTTP `User-Agent`. Default:
    /// `vexil-rust` and this crate's version. For SDKs built on this one: the Python
    /// bindings say `vexil-python`, the Node.js addon `vexil-node`, each with its package
    /// version, so that the server can tell them apart.
    pub fn sdk_identity(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.sdk = Some((name.into(), version.into()));
        self
    }

    fn upstream(&self) -> Result<Upstream, BuildError> {
        check_sdk_key(&self.sdk_key)?;
        let base_url =
            parse_base_url(&self.base_url).map_err(|reason| BuildError::InvalidBaseUrl {
                url: self.base_url.clone(),
                reason,
            })?;
        let http = reqwest::Client::builder()
            .user_agent(match &self.sdk {
                Some((name, version)) => format!("{name}/{version} {USER_AGENT}"),
                None => USER_AGENT.to_owned(),
            })
            .connect_timeout(self.connect_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(BuildError::Http)?;
        Ok(Upstream {
            http,
            base_url,
            authorization: format!("Bearer {}", self.sdk_key).into(),
        })
    }

    /// Validates the configuration and starts the client: the data source and the
    /// background thread. Returns at once; see [`Client::wait_for_initialization`].
    pub fn build(self) -> Result<Client, BuildError> {
        let network = match &self.source {
            SourceChoice::Streaming(_) | SourceChoice::Polling(_) => Some(self.upstream()?),
            _ => None,
        };
        let delivery = match (&self.event_sink, &network) {
            _ if !self.events.enabled => None,
            (Some(sink), _) => Some(Delivery::Sink(sink.clone())),
            (None, Some(upstream)) => Some(Delivery::Http(upstream.clone())),
            (None, None) => None,
        };
        let sdk = self
            .sdk
            .clone()
            .unwrap_or_else(|| (SDK_NAME.to_owned(), env!("CARGO_PKG_VERSION").to_owned()));
        let events = delivery.map(|d| Arc::new(Events::new(self.events.clone(), d, sdk)));
        let source: Option<Box<dyn DataSource>> = match (&self.source, network) {
            (SourceChoice::Streaming(config), Some(upstream)) => Some(Box::new(StreamingSource {
                upstream,
                config: config.clone(),
            })),
            (SourceChoice::Polling(config), Some(upstream)) => Some(Box::new(PollingSource {
                upstream,
                config: config.clone(),
            })),
            (SourceChoice::File { path, reload }, _) => Some(Box::new(FileSource {
                path: path.clone(),
                reload: *reload,
            })),
            _ => None,
        };
        let offline = matches!(self.source, SourceChoice::Offline);
        let source = match self.source {
            SourceChoice::Custom(custom) => Some(custom),
            _ => source,
        };
        let origin = source.as_ref().map(|s| s.origin());
        let upstream = origin == Some(DataOrigin::Upstream);
        let lkg = match &self.last_known_good {
            Some(path) if upstream || offline => {
                Some(Arc::new(LastKnownGood::new(path.clone(), &self.sdk_key)))
            }
            Some(path) => {
                tracing::debug!(path = %path.display(), "last-known-good file not used: the source is not upstream");
                None
            }
            None => None,
        };

        let store = Arc::new(Store::new());
        let shared = Arc::new(Shared {
            store: Arc::clone(&store),
            listeners: Arc::new(Listeners::default()),
            status_listeners: Default::default(),
            fallback: Arc::new(if lkg.is_some() {
                Fallback::loading()
            } else {
                Fallback::none()
            }),
            events: events.clone(),
        });
        // Subscribed now, so that changes made before the thread runs reach the listeners.
        let changes = store.subscribe_dispatch();

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shutdown = Shutdown::new(shutdown_rx);
        let source_task = source.map(|s| {
            let updates = Updates::new(Arc::clone(&store), s.origin());
            s.start(updates, shutdown.clone())
        });
        if offline {
            store.set_state(State::Offline, None);
        }
        let init_timeout = if offline {
            Duration::ZERO
        } else {
            self.init_timeout
        };
        let main = background_main(BackgroundWork {
            shared: Arc::clone(&shared),
            source: source_task,
            changes,
            lkg,
            persist: upstream,
            persist_debounce: self.persist_debounce,
            init_timeout,
            close_timeout: self.close_timeout,
            shutdown,
            events,
        });
        let background = Background::spawn(shutdown_tx, main).map_err(BuildError::Runtime)?;
        Ok(Client::from_parts(shared, background, self.close_timeout))
    }
}

/// What the background thread runs.
struct BackgroundWork {
    shared: Arc<Shared>,
    source: Option<BoxFuture>,
    changes: tokio::sync::broadcast::Receiver<crate::FlagChange>,
    lkg: Option<Arc<LastKnownGood>>,
    persist: bool,
    persist_debounce: Duration,
    init_timeout: Duration,
    close_timeout: Duration,
    shutdown: Shutdown,
    events: Option<Arc<Events>>,
}

fn background_main(w: BackgroundWork) -> BoxFuture {
    Box::pin(async move {
        let store = Arc::clone(&w.shared.store);
        let source = w.source.map(|source| {
            let task = tokio::spawn(source);
            let abort = task.abort_handle();
            let store = Arc::clone(&store);
            // A source that panics (a bug) must not leave the client looking healthy.
            tokio::spawn(async move {
                if let Err(e) = task.await
                    && e.is_panic()
                {
                    tracing::error!("the data source panicked; no more updates will arrive");
                    store.set_state(
                        State::Failed,
                        Some(DataSourceError::InvalidConfiguration(
                            "the data source panicked".into(),
                        )),
                    );
                }
            });
            abort
        });
        let resync_store = Arc::clone(&store);
        let dispatcher = tokio::spawn(dispatch_loop(
            Arc::clone(&w.shared.listeners),
            w.changes,
            move || resync_store.everything_changed(),
        ));
        let persist = match (&w.lkg, w.persist) {
            (Some(lkg), true) => Some(tokio::spawn(persist_loop(
                Arc::clone(&store),
                Arc::clone(lkg),
                w.persist_debounce,
                w.shutdown.clone(),
            ))),
            _ => None,
        };
        let fallback = w.lkg.map(|lkg| {
            tokio::spawn(fallback::run(
                Arc::clone(&store),
                Arc::clone(&w.shared.fallback),
                lkg,
                fallback::deadline(w.init_timeout),
            ))
        });

        let events = w.events.map(|events| {
            tokio::spawn(crate::events::sender::run(
                events,
                Arc::clone(&store),
                w.shutdown.clone(),
            ))
        });

        w.shutdown.wait().await;
        tracing::debug!("closing the client");
        if let Some(source) = source {
            source.abort();
        }
        if let Some(fallback) = fallback {
            fallback.abort();
        }
        if let Some(persist) = persist
            && tokio::time::timeout(w.close_timeout, persist)
                .await
                .is_err()
        {
            tracing::warn!("the last-known-good write did not finish in time");
        }
        // The sender flushes once more when it sees the shutdown.
        if let Some(events) = events
            && tokio::time::timeout(w.close_timeout, events).await.is_err()
        {
            tracing::warn!("pending events were not sent in time");
        }
        store.close();
        dispatcher.abort();
    })
}

/// An SDK key must fit in an HTTP header: printable ASCII without spaces.
fn check_sdk_key(key: &str) -> Result<(), BuildError> {
    if key.is_empty() {
        return Err(BuildError::InvalidSdkKey("it is empty"));
    }
    if key.len() > 4096 {
        return Err(BuildError::InvalidSdkKey("it is longer than 4096 bytes"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BuildError::InvalidSdkKey(
            "it may contain only printable ASCII characters, without spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_keys_and_urls_are_refused_with_the_reason() {
        for (key, reason) in [
            ("", "it is empty"),
            ("a b", "printable ASCII"),
            ("k\n", "printable ASCII"),
            ("é", "printable ASCII"),
        ] {
            let err = Client::builder(key).build().unwrap_err();
            assert!(err.to_string().contains(reason), "{key:?}: {err}");
        }
        let err = Client::builder("k")
            .base_url("localhost")
            .build()
            .unwrap_err();
        assert!(matches!(err, BuildError::InvalidBaseUrl { .. }), "{err}");
    }

    #[test]
    fn the_builder_never_prints_the_key() {
        let b = Client::builder("secret-key-123");
        assert!(!format!("{b:?}").contains("secret-key-123"));
    }
}
