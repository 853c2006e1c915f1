//! The edge relay as a whole: the hub fed by the upstream client, the HTTP routes, readiness,
//! metrics and the drain on shutdown.
//!
//! Routes (one listener, HTTP/1.1; SDK streams on the lean path of [`vexil_fanout::lean`], everything
//! else through hyper and axum):
//! - `GET /sdk/v1/stream`, `GET /sdk/v1/snapshot`: SDKs, authenticated with the SDK key
//!   hashes received from upstream ([`Hub::keys`]);
//! - `POST /ofrep/v1/evaluate/flags/{key}`, `POST /ofrep/v1/evaluate/flags`: remote
//!   evaluation on the relay's compiled snapshots;
//! - `GET /relay/v1/stream`: relays chained below this one (this relay's own key or one of
//!   `VEXIL_DOWNSTREAM_RELAY_KEYS`; scope: everything this relay serves);
//! - `POST /relay/v1/fleet` (relay key, from relays chained below): their fleet reports,
//!   forwarded upstream ([`crate::fleet`]);
//! - `POST /events/v1/bulk` (SDK key), `POST /relay/v1/events/{project}/{environment}`
//!   (relay key, from relays chained below): analytics events, forwarded upstream
//!   ([`crate::events`]);
//! - `GET /healthz` (liveness), `GET /readyz` (ready to serve), `GET /metrics` (Prometheus;
//!   on its own listener with `VEXIL_METRICS_LISTEN`, behind `VEXIL_METRICS_TOKEN`).
//!
//! Until the relay holds the full state of every environment in its scope, the SDK, OFREP
//! and relay routes answer 503 with `Retry-After` and `/readyz` fails: it never serves an
//! empty or partial state as if it were current.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use vexil_fanout::telemetry::redact_url;
use vexil_schema::stream::{EnvironmentId, SdkKeyHash};

use vexil_fanout::auth::{AuthError, SdkAuth, SdkKeyTable, hash_sdk_key};
use vexil_fanout::exposures::ExposureRecorder;
use vexil_fanout::hub::Hub;
use vexil_fanout::lean::{LeanSse, serve_lean};
use vexil_fanout::relay_stream::{RelayAuth, relay_router};
use vexil_fanout::{ofrep, sdk_router};

use crate::config::RelayConfig;
use crate::events::{self, EventRoutes, Forwarder, ForwarderConfig};
use crate::relay_state::RelayState;
use crate::upstream;

/// Why the relay cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// `VEXIL_UPSTREAM_URL` is not an absolute `http(s)` URL.
    #[error("invalid upstream URL {url:?}: {reason}")]
    UpstreamUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `VEXIL_RELAY_KEY` is empty or holds characters an HTTP header cannot carry.
    #[error("the relay key is empty or not a valid header value")]
    RelayKey,
    /// The HTTP client cannot be built (its TLS backend failed to initialise).
    #[error("cannot build the upstream HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The metrics listener (`VEXIL_METRICS_LISTEN`) could not be bound.
    #[error("cannot listen for metrics: {0}")]
    MetricsListen(#[source] std::io::Error),
    /// `VEXIL_UPSTREAM_CA` cannot be read or holds no PEM certificate.
    #[error("cannot use the upstream CA file {path}: {reason}")]
    UpstreamCa {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The TLS certificate or key (`VEXIL_TLS_CERT`, `VEXIL_TLS_KEY`) could not be loaded.
    #[error("cannot load the TLS certificate: {0}")]
    Tls(#[source] vexil_fanout::tls::TlsError),
}

/// A configured relay, not yet serving. Cheap handles to its hub and state let tests and
/// embedders watch it.
#[derive(Debug)]
pub struct Relay {
    config: Arc<RelayConfig>,
    hub: Hub,
    state: RelayState,
    metrics: Option<PrometheusHandle>,
    client: reqwest::Client,
    forwarder: Forwarder,
    exposures: Arc<ExposureRecorder>,
    /// The listener of `/metrics` when it is served apart (`VEXIL_METRICS_LISTEN`), bound
    /// in [`Relay::new`] so that its address is known before serving.
    metrics_listener: Option<std::net::TcpListener>,
    /// HTTPS for SDKs and chained relays, when configured.
    tls: Option<vexil_fanout::tls::ReloadingTls>,
}

impl Relay {
    /// Checks `config` and builds the hub (installing the Prometheus recorder first, once
    /// per process, if metrics are on). Must be called inside a Tokio runtime.
    pub fn new(config: RelayConfig) -> Result<Self, RelayError> {
        let url =
            reqwest::Url::parse(&config.stream_url()).map_err(|e| RelayError::UpstreamUrl {
                url: config.upstream_url.clone(),
                reason: e.to_string(),
            })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RelayError::UpstreamUrl {
                url: config.upstream_url.clone(),
                reason: "the scheme must be http or https".into(),
            });
        }
        if config.relay_key.trim().is_empty()
            || HeaderValue::from_str(&format!("Bearer {}", config.relay_key)).is_err()
        {
            return Err(RelayError::RelayKey);
        }
        let roots = match &config.upstream_ca {
            Some(path) => {
                let bad = |reason: String| RelayError::UpstreamCa {
                    path: path.clone(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
                let roots =
                    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
                if roots.is_empty() {
                    return Err(bad("no CERTIFICATE in the file".into()));
                }
                roots
            }
            None => Vec::new(),
        };
        let tls = match config.tls.files() {
            Some((cert, key)) => Some(
                vexil_fanout::tls::ReloadingTls::load(&cert, &key, &[b"http/1.1"])
                    .map_err(RelayError::Tls)?,
            ),
            None => None,
        };
        let client = upstream::client(&roots).map_err(RelayError::HttpClient)?;
        let metrics = if config.metrics {
            vexil_fanout::metrics::install_prometheus()
        } else {
            None
        };
        let hub = Hub::new(config.distribution.hub_config());
        let forwarder = Forwarder::new(ForwarderConfig {
            upstream_url: config.upstream_url.clone(),
            relay_key: config.relay_key.clone(),
            buffer: config.events_buffer,
            concurrency: config.events_upstream_concurrency,
            attempts: config.events_upstream_attempts,
            timeout: config.events_upstream_timeout,
            roots,
        })
        .map_err(RelayError::HttpClient)?;
        let exposures = Arc::new(ExposureRecorder::new(
            Arc::new(forwarder.clone()),
            config.events_exposure_cache,
        ));
        let metrics_listener = match (config.metrics_listen, &metrics) {
            (Some(addr), Some(_)) => {
                let l = std::net::TcpListener::bind(addr).map_err(RelayError::MetricsListen)?;
                l.set_nonblocking(true).map_err(RelayError::MetricsListen)?;
                Some(l)
            }
            _ => None,
        };
        Ok(Self {
            config: Arc::new(config),
            hub,
            state: RelayState::new(),
            metrics,
            client,
            forwarder,
            exposures,
            metrics_listener,
            tls,
        })
    }

    /// The address `/metrics` is served on when it has a listener of its own
    /// (`VEXIL_METRICS_LISTEN`).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The `/metrics` route (behind `VEXIL_METRICS_TOKEN` when set).
    fn metrics_router(&self, handle: PrometheusHandle) -> Router {
        vexil_fanout::metrics::prometheus_router_with(
            handle,
            vexil_fanout::metrics::MetricsOptions {
                token: self.config.metrics_token.clone(),
                refresh: None,
            },
        )
    }

    /// The relay's hub (its environments, versions and subscribers).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The event forwarder (`/events/v1/bulk` and OFREP exposures, upstream).
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// The relay's state (readiness, upstream connection, scope, evaluators).
    pub fn state(&self) -> &RelayState {
        &self.state
    }

    /// The HTTP application (see the module docs).
    pub fn router(&self) -> Router {
        let sdk_auth = self.sdk_auth();
        let downstream = DownstreamAuth {
            hashes: Arc::clone(&sdk_auth.relay_keys),
            state: self.state.clone(),
        };
        let events = events::router(EventRoutes {
            forwarder: self.forwarder.clone(),
            sdk_auth: sdk_auth.clone(),
            relay_auth: downstream.clone(),
            max_body_bytes: self.config.events_max_body_bytes,
            client_keys: self.hub.client_keys().clone(),
        });
        let gated = sdk_router(self.hub.clone(), sdk_auth.clone())
            .merge(ofrep::ofrep_router_with(
                self.state.clone(),
                sdk_auth,
                self.config
                    .distribution
                    .ofrep_config()
                    .exposures(Arc::clone(&self.exposures))
                    .client_keys(self.hub.client_keys().clone()),
            ))
            .merge(vexil_fanout::client_router(
                self.hub.clone(),
                self.state.clone(),
            ))
            .merge(relay_router(self.hub.clone(), downstream.clone()))
            .merge(events)
            .layer(middleware::from_fn_with_state(
                Gate {
                    state: self.state.clone(),
                    retry_after: self.hub.config().retry_after,
                },
                gate,
            ));
        let probes = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(Probe {
                hub: self.hub.clone(),
                state: self.state.clone(),
            });
        // Chained relays' fleet reports are forwarded even while this relay loads: they
        // say nothing of its own state.
        let fleet = crate::fleet::router(self.client.clone(), Arc::clone(&self.config), downstream);
        let mut app = gated.merge(probes).merge(fleet);
        if let Some(handle) = self.metrics.clone()
            && self.metrics_listener.is_none()
        {
            app = app.merge(self.metrics_router(handle));
        }
        app.layer(middleware::from_fn(vexil_fanout::trace::trace_http))
            .layer(middleware::from_fn(vexil_fanout::metrics::track_http))
    }

    /// Hashes of the relay keys this relay accepts from child relays: its own and
    /// `VEXIL_DOWNSTREAM_RELAY_KEYS`.
    fn sdk_auth(&self) -> EdgeSdkAuth {
        let relay_keys = std::iter::once(&self.config.relay_key)
            .chain(&self.config.downstream_relay_keys)
            .filter(|k| !k.trim().is_empty())
            .map(|k| hash_sdk_key(k.trim()))
            .collect();
        EdgeSdkAuth {
            keys: self.hub.keys().clone(),
            relay_keys: Arc::new(relay_keys),
        }
    }

    /// Connects upstream and serves on `listener` until `shutdown` completes. Then it stops
    /// accepting connections, closes subscriber streams spread over the drain window, waits
    /// for every connection to finish and stops the upstream client.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, upstream = %redact_url(&self.config.upstream_url), "vexil relay listening");
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let metrics_stop = stop_rx.clone();
        let upstream = tokio::spawn(upstream::run(
            self.client.clone(),
            Arc::clone(&self.config),
            self.hub.clone(),
            self.state.clone(),
            stop_rx.clone(),
        ));
        let fleet = tokio::spawn(crate::fleet::run(
            self.client.clone(),
            Arc::clone(&self.config),
            self.hub.clone(),
            self.state.clone(),
            stop_rx,
        ));
        let app = self.router();
        let metrics_server = match (&self.metrics_listener, self.metrics.clone()) {
            (Some(l), Some(handle)) => match l.try_clone().and_then(TcpListener::from_std) {
                Ok(listener) => {
                    let mut stopped = metrics_stop;
                    Some(tokio::spawn(vexil_fanout::metrics::serve_metrics(
                        listener,
                        self.metrics_router(handle),
                        async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        },
                    )))
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot serve metrics on their own listener");
                    None
                }
            },
            _ => None,
        };
        let state = self.state.clone();
        let lean =
            LeanSse::new(self.hub.clone(), self.sdk_auth()).ready_when(move || state.is_ready());
        let (signal_tx, signal_rx) = watch::channel(false);
        let signalled = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let drain = async {
            signalled(signal_rx.clone()).await;
            self.hub.shutdown(self.config.drain_window).await;
        };
        let trigger = async {
            shutdown.await;
            tracing::info!(drain = ?self.config.drain_window, "shutting down: draining streams");
            let _ = signal_tx.send(true);
        };
        let serving = async {
            match &self.tls {
                // TLS sessions hold rustls buffers per connection anyway: the lean path's
                // saving does not apply, and hyper serves every route.
                Some(tls) => {
                    tls.watch(self.config.tls.tls_reload_interval);
                    let listener = vexil_fanout::tls::TlsListener::new(listener, tls.clone());
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(signalled(signal_rx.clone()))
                        .await
                    {
                        tracing::error!(error = %e, "serving over TLS failed");
                    }
                }
                None => serve_lean(listener, app, lean, signalled(signal_rx.clone())).await,
            }
        };
        tokio::join!(trigger, serving, drain);
        let _ = stop_tx.send(true);
        if let Err(e) = upstream.await {
            tracing::error!(error = %e, "upstream task failed");
        }
        if let Err(e) = fleet.await {
            tracing::error!(error = %e, "fleet report task failed");
        }
        if let Some(m) = metrics_server {
            match m.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
                Err(e) => tracing::warn!(error = %e, "the metrics listener task failed"),
                Ok(Ok(())) => {}
            }
        }
        tracing::info!("relay stopped");
    }
}

/// Builds a relay from `config` and serves it on `listener` until `shutdown` completes
/// (see [`Relay::serve`]).
pub async fn run(
    listener: TcpListener,
    config: RelayConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RelayError> {
    Relay::new(config)?.serve(listener, shutdown).await;
    Ok(())
}

/// Authenticates relays chained below this one: this relay's key or a configured one, by
/// SHA-256; the scope is everything this relay serves.
#[derive(Debug, Clone)]
struct DownstreamAuth {
    hashes: Arc<Vec<SdkKeyHash>>,
    state: RelayState,
}

impl RelayAuth for DownstreamAuth {
    fn authenticate(
        &self,
        relay_key: &str,
    ) -> impl Future<Output = Result<BTreeSet<EnvironmentId>, AuthError>> + Send {
        let hash = hash_sdk_key(relay_key);
        let result = if self.hashes.contains(&hash) {
            Ok(self.state.scope())
        } else {
            Err(AuthError::Unauthorized)
        };
        std::future::ready(result)
    }
}

/// SDK authentication at the relay: the SDK key hashes from upstream. A relay key is
/// recognised and refused with 403 rather than 401, so a misconfigured SDK says why.
#[derive(Debug, Clone)]
struct EdgeSdkAuth {
    keys: SdkKeyTable,
    relay_keys: Arc<Vec<SdkKeyHash>>,
}

impl SdkAuth for EdgeSdkAuth {
    fn authenticate(
        &self,
        sdk_key: &str,
    ) -> impl Future<Output = Result<EnvironmentId, AuthError>> + Send {
        let hash = hash_sdk_key(sdk_key);
        let result = match self.keys.lookup_hash(&hash) {
            Some(env) => Ok(env),
            None if self.relay_keys.contains(&hash) => Err(AuthError::Forbidden(
                "a relay key cannot read SDK endpoints; use an SDK key".into(),
            )),
            None => Err(AuthError::Unauthorized),
        };
        std::future::ready(result)
    }
}

#[derive(Debug, Clone)]
struct Gate {
    state: RelayState,
    retry_after: Duration,
}

/// Refuses SDK, OFREP and relay requests until the relay is ready.
async fn gate(State(g): State<Gate>, request: Request, next: Next) -> Response {
    if g.state.is_ready() {
        return next.run(request).await;
    }
    let body = json!({
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "the relay is loading its environments from upstream; retry shortly",
    });
    let secs = g.retry_after.as_secs().max(1);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            ),
            (RETRY_AFTER, HeaderValue::from(secs)),
        ],
        body.to_string(),
    )
        .into_response()
}

#[derive(Debug, Clone)]
struct Probe {
    hub: Hub,
    state: RelayState,
}

/// 200 when the relay is ready to serve and not draining, else 503; the body says why.
async fn readyz(State(p): State<Probe>) -> Response {
    let scope = p.state.scope();
    let loaded = scope.iter().filter(|e| p.hub.version(e).is_some()).count();
    let status = if p.hub.is_draining() {
        "draining"
    } else if p.state.is_ready() {
        "ready"
    } else {
        "loading"
    };
    let body = json!({
        "status": status,
        "upstream": if p.state.is_connected() { "connected" } else { "disconnected" },
        "environments": scope.len(),
        "loaded": loaded,
    });
    let code = if status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}
