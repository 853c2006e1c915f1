//! Start-up and serving: open and migrate the database, bootstrap the admin token, build the
//! router with its middleware, serve until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode};
use axum::middleware::from_fn;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use vexil_fanout::Hub;
use vexil_fanout::exposures::ExposureRecorder;

use crate::config::Config;
use crate::db::{Db, DbOptions};
use crate::delivery::{Clock, Workers};
use crate::error::Problem;
use crate::events::{self, EventStore};
use crate::feed::Feed;
use crate::health::{self, Health};
use crate::store::{Store, StoreError};
use crate::throttle::AuthThrottle;
use crate::{api, distribution, middleware};

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The storage handle.
    pub store: Store,
    /// The configuration the server was started with.
    pub config: Arc<Config>,
    /// The change feed: in-memory compiled snapshots and the stream hub.
    pub feed: Feed,
    /// The Prometheus recorder behind `/metrics`, when metrics are on.
    pub metrics: Option<PrometheusHandle>,
    /// Whether the database is reachable (probed in the background).
    pub health: Health,
    /// Failed authentications per client address.
    pub auth_throttle: Arc<AuthThrottle>,
    /// Raw analytics event storage (`/events/v1/bulk`).
    pub events: EventStore,
    /// Records the exposures of OFREP evaluations of experiment flags.
    pub exposures: Arc<ExposureRecorder>,
    /// The time scheduled changes and webhook retries run by (tests move a manual one).
    pub clock: Clock,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// Migrations failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The bootstrap admin token could not be created.
    #[error("cannot create the bootstrap admin token: {0}")]
    Bootstrap(#[source] StoreError),
    /// The environments could not be loaded into memory.
    #[error("cannot load the environments: {0}")]
    Load(#[source] StoreError),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
    /// The metrics listener (`VEXIL_METRICS_LISTEN`) could not be bound.
    #[error("cannot listen for metrics: {0}")]
    MetricsListen(#[source] std::io::Error),
    /// The event partitions could not be prepared.
    #[error("cannot prepare event storage: {0}")]
    Events(#[source] StoreError),
    /// The TLS certificate or key (`VEXIL_TLS_CERT`, `VEXIL_TLS_KEY`) could not be loaded.
    #[error("cannot load the TLS certificate: {0}")]
    Tls(#[source] vexil_fanout::tls::TlsError),
}

/// A server ready to serve: database open and migrated, admin token bootstrapped.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    /// The admin token generated at this start, if one was (shown once, then only its hash
    /// is kept).
    generated_admin_token: Option<String>,
    /// The listener of `/metrics` when it is served apart (`VEXIL_METRICS_LISTEN`), bound at
    /// build so that its address is known before serving.
    metrics_listener: Option<TcpListener>,
    /// The HTTPS configuration when `VEXIL_TLS_CERT` and `VEXIL_TLS_KEY` are set.
    tls: Option<vexil_fanout::tls::ReloadingTls>,
}

impl Server {
    /// Opens and migrates the database and bootstraps the admin token.
    pub async fn build(mut config: Config) -> Result<Self, StartError> {
        // Loaded first: a wrong certificate fails the start before anything else happens.
        let tls = match config.tls.files() {
            Some((cert, key)) => Some(
                vexil_fanout::tls::ReloadingTls::load(&cert, &key, &[b"h2", b"http/1.1"])
                    .map_err(StartError::Tls)?,
            ),
            None => None,
        };
        // Behind its own TLS every request is HTTPS: the console cookie is always `Secure`.
        config.console_secure_cookie |= tls.is_some();
        let db = Db::connect(&DbOptions {
            url: config.database_url.clone(),
            max_connections: config.database_max_connections,
        })
        .await
        .map_err(StartError::Connect)?;
        db.migrate().await.map_err(StartError::Migrate)?;
        let store =
            Store::new(db).with_token_cache_ttl(Duration::from_millis(config.token_cache_ms));
        let generated_admin_token = store
            .bootstrap_admin(config.bootstrap_token.as_deref())
            .await
            .map_err(StartError::Bootstrap)?;
        // Before the hub: it registers its per-environment handles with the recorder.
        let metrics = if config.metrics {
            vexil_fanout::metrics::install_prometheus()
        } else {
            None
        };
        if metrics.is_some() {
            crate::metrics::register(store.db());
        }
        let hub = Hub::new(config.distribution.hub_config());
        let feed = Feed::load(store.clone(), hub, config.feed_config())
            .await
            .map_err(StartError::Load)?;
        let auth_throttle = Arc::new(AuthThrottle::new(
            config.auth_failure_limit,
            Duration::from_secs(config.auth_failure_window_secs),
        ));
        let events = EventStore::new(store.db().clone(), config.events_retention_days);
        events
            .maintain(events::now_ms())
            .await
            .map_err(StartError::Events)?;
        let metrics_listener = match (config.metrics_listen, &metrics) {
            (Some(addr), Some(_)) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(StartError::MetricsListen)?,
            ),
            _ => None,
        };
        let exposures = Arc::new(ExposureRecorder::new(
            Arc::new(events::ServerExposures::spawn(
                feed.clone(),
                events.clone(),
                config.events_exposure_cache,
            )),
            config.events_exposure_cache,
        ));
        Ok(Self {
            state: AppState {
                store,
                config: Arc::new(config),
                feed,
                metrics,
                health: Health::default(),
                auth_throttle,
                events,
                exposures,
                clock: Clock::system(),
            },
            generated_admin_token,
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

    /// Runs scheduled changes and webhook retries by `clock` instead of the system clock
    /// (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.state.clock = clock;
        self
    }

    /// The admin token generated on this first start, if any.
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    /// The storage handle.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The change feed (in-memory snapshots and the stream hub).
    pub fn feed(&self) -> &Feed {
        &self.state.feed
    }

    /// The router, with every route and middleware.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, with the change feed running. Then
    /// closes SDK and relay streams (spread over the drain window), finishes in-flight
    /// requests, stops the feed and closes the database pool.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let app = self.router();
        let store = self.state.store.clone();
        let purge = tokio::spawn(purge_idempotency_keys(store.clone()));
        let probe = tokio::spawn(health::probe(
            store.db().clone(),
            self.state.health.clone(),
            Duration::from_millis(self.state.config.database_probe_ms.max(10)),
        ));
        let events = tokio::spawn(events::maintenance(self.state.events.clone()));
        let (metrics_stop, metrics_stopped) = tokio::sync::watch::channel(false);
        let metrics_server = match (self.metrics_listener, self.state.metrics.clone()) {
            (Some(listener), Some(handle)) => {
                let router = crate::metrics::router(
                    handle,
                    store.db().clone(),
                    self.state.config.metrics_token.clone(),
                );
                let mut stopped = metrics_stopped;
                Some(tokio::spawn(vexil_fanout::metrics::serve_metrics(
                    listener,
                    router,
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                )))
            }
            _ => None,
        };
        let delivery = Workers::spawn(store.clone(), self.state.clock.clone(), &self.state.config);
        let feed = self.state.feed.start();
        let fleet =
            crate::fleet::Reporter::spawn(store.db().clone(), self.state.feed.hub().clone());
        let hub = self.state.feed.hub().clone();
        let drain = Duration::from_millis(self.state.config.drain_ms);
        // The peer address is the key of authentication throttling.
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let shutdown = async move {
            shutdown.await;
            hub.shutdown(drain).await;
        };
        let result = match self.tls {
            Some(tls) => {
                tls.watch(self.state.config.tls.tls_reload_interval);
                // `tap_io` gives the TLS listener axum's peer-address `ConnectInfo`.
                let listener = vexil_fanout::tls::TlsListener::new(listener, tls).tap_io(|_| {});
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
        .map_err(StartError::Serve);
        purge.abort();
        probe.abort();
        events.abort();
        let _ = metrics_stop.send(true);
        if let Some(m) = metrics_server {
            match m.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
                Err(e) => tracing::warn!(error = %e, "the metrics listener task failed"),
                Ok(Ok(())) => {}
            }
        }
        delivery.stop();
        fleet.stop().await;
        feed.stop().await;
        store.db().close().await;
        result
    }
}

/// Builds the server from `config` and serves on `listener` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    Server::build(config).await?.serve(listener, shutdown).await
}

/// Deletes expired idempotency records every hour. Owned by [`Server::serve`], aborted when
/// it returns.
async fn purge_idempotency_keys(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match store.purge_idempotency_keys().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "could not purge idempotency keys"),
        }
    }
}

/// `/healthz`: the process is alive.
async fn healthz() -> &'static str {
    "ok"
}

/// `/readyz`: the database answers and every migration is applied. Answers within
/// [`health::PROBE_TIMEOUT`]: at once while the probe knows the database is down, otherwise
/// after one bounded check. Not ready is a `503` problem saying why.
async fn readyz(State(app): State<AppState>) -> axum::response::Response {
    let not_ready = |slug: &str, detail: &str| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            slug,
            Some(detail.to_owned()),
        )
        .into_response_with_status()
    };
    const UNREACHABLE: &str = "the database does not answer";
    if app.health.is_down() {
        return not_ready("database-unreachable", UNREACHABLE);
    }
    match tokio::time::timeout(health::PROBE_TIMEOUT, app.store.db().ready()).await {
        Ok(Ok(true)) => (StatusCode::OK, "ready").into_response(),
        Ok(Ok(false)) => not_ready("migrations-pending", "database migrations are pending"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            not_ready("database-unreachable", UNREACHABLE)
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            not_ready("database-unreachable", UNREACHABLE)
        }
    }
}

/// The problem+json layer, except on the SDK, relay and OFREP endpoints, which answer in
/// their own formats (OFREP's JSON errors, bodiless 401s).
async fn problem_context_outside_distribution(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if distribution::is_distribution_path(req.uri().path()) || is_console_path(req.uri().path()) {
        next.run(req).await
    } else {
        middleware::problem_context(req, next).await
    }
}

/// Whether `path` is one of the admin console's (HTML) routes.
fn is_console_path(path: &str) -> bool {
    path == "/"
        || [
            "/sign-in",
            "/sign-out",
            "/switch",
            "/assets/",
            "/projects",
            "/audit",
            "/tokens",
        ]
        .iter()
        .any(|p| path.starts_with(p))
}

/// Builds the whole router for `state`.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let (api, swagger) = api::routes(state.clone());
    let public: Router<AppState> = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    let mut public = public.with_state(state.clone());
    if let Some(handle) = state.metrics.clone()
        && state.config.metrics_listen.is_none()
    {
        public = public.merge(crate::metrics::router(
            handle,
            state.store.db().clone(),
            state.config.metrics_token.clone(),
        ));
    }
    let control = Router::new()
        .merge(public)
        .merge(api.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            distribution::settle_writes,
        )))
        .merge(swagger)
        .layer(DefaultBodyLimit::max(max_body));
    Router::new()
        .merge(control)
        .merge(distribution::routes(&state))
        .merge(events::routes(&state))
        .merge(crate::fleet::api::relay_routes(&state))
        // The admin console answers in HTML, its error pages too: the problem layer skips its
        // paths, and still answers every unknown path (the fallback) with problem+json.
        .merge(crate::console::routes(&state))
        .layer(from_fn(problem_context_outside_distribution))
        // Outside the problem layer, so it records the status the client gets.
        .layer(from_fn(vexil_fanout::metrics::track_http))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let request_id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("unmatched", |p| p.as_str());
                    let span = tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %request_id,
                        actor = tracing::field::Empty,
                        otel.name = %format_args!("{} {route}", req.method()),
                        otel.kind = "server",
                        http.route = %route,
                    );
                    // A caller's trace continues through the write and its distribution.
                    if let Some(tp) = req
                        .headers()
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                    {
                        vexil_fanout::trace::set_parent(&span, tp);
                    }
                    span
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
