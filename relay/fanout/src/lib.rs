//! Vexil's fan-out engine. It turns "environment E is now at version V" into SSE streams and
//! snapshot responses for every connected SDK and relay; the control plane (`vexil-server`)
//! and the edge relay (`vexil-relay`) both serve with it, and it knows nothing of databases
//! or upstreams.
//!
//! - [`hub`]: [`Hub`], the per-environment state (current `put` frame, ring of recent
//!   changes, one broadcast channel) and the publishing and subscribing API.
//! - [`subscriber`]: one SDK stream ([`Subscription`]), with lag handling.
//! - [`frame`] and `ring`/`items` (private): byte-exact SSE frames, the ring of recent
//!   changes and the per-item JSON cache, each encoded once per version.
//! - [`http`]: the axum routes `GET /sdk/v1/stream` and `GET /sdk/v1/snapshot`.
//! - [`relay_stream`]: the relay stream `GET /relay/v1/stream` (every environment of a relay
//!   key on one connection, resumable with a cursor), served by the control plane and by
//!   relays to the relays chained below them; the pluggable [`RelayAuth`] trait.
//! - [`ofrep`]: the OpenFeature Remote Evaluation Protocol endpoints on compiled snapshots
//!   from any [`ofrep::EvaluatorSource`]; [`exposures`]: the exposures they record for
//!   experiment flags.
//! - [`client`]: client-side keys, allowed origins, CORS and the per-context evaluated
//!   stream `GET /client/v1/stream` (browsers and mobile apps).
//! - [`auth`]: the pluggable [`SdkAuth`] trait and [`SdkKeyTable`], the SDK key hash
//!   registry each hub carries ([`Hub::keys`]).
//! - [`evaluations`]: evaluation counts by flag, variation and reason, exported at scrape
//!   time.
//! - [`metrics`]: metric names (recorded through the `metrics` facade) and the Prometheus
//!   recorder and `/metrics` route both binaries install.
//! - [`serve`]: an HTTP/1-only server loop that halves the memory of idle SSE connections
//!   compared with `axum::serve`; `lean` (feature `lean`): a leaner one still, writing SDK
//!   streams straight to the socket with no per-connection buffers (used by the relay).
//! - [`trace`]: OpenTelemetry traces (OTLP set-up from `OTEL_*`, HTTP spans, the
//!   `traceparent` a change carries to SDK frames).
//! - [`tls`]: HTTPS for both binaries, the certificate reloaded on SIGHUP and file change.
//! - [`signal`]: the shutdown signal both binaries wait for; [`config`]: the distribution
//!   options both binaries take ([`DistributionArgs`]); [`telemetry`]: their log set-up and
//!   [`telemetry::redact_url`].
//!
//! The wire payloads live in [`vexil_schema::stream`]; `docs/design.md` ("Distribution
//! protocol") describes ordering, resume and failure modes.
//!
//! ```no_run
//! # async fn demo() {
//! use vexil_fanout::{Hub, HubConfig, SdkKeyTable, hash_sdk_key, sdk_router};
//! use vexil_schema::{EnvironmentSnapshot, stream::EnvironmentId};
//!
//! let hub = Hub::new(HubConfig::default());
//! let env = EnvironmentId::parse("shop/production").unwrap();
//! let keys = SdkKeyTable::new();
//! keys.set_environment_keys(&env, &[hash_sdk_key("sdk-123")]);
//! hub.publish_snapshot(&env, &EnvironmentSnapshot { version: 1, ..Default::default() })
//!     .unwrap();
//! let app = sdk_router(hub.clone(), keys);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async move { hub.shutdown(std::time::Duration::from_secs(5)).await })
//!     .await
//!     .unwrap();
//! # }
//! ```
#![deny(missing_docs)]

pub mod auth;
pub mod client;
mod client_events;
mod client_items;
pub mod config;
pub mod evaluations;
pub mod exposures;
pub mod frame;
pub mod http;
pub mod hub;
mod items;
#[cfg(feature = "lean")]
pub mod lean;
pub mod metrics;
pub mod ofrep;
mod ofrep_bulk;
pub mod relay_stream;
mod ring;
pub mod serve;
pub mod signal;
pub mod subscriber;
pub mod telemetry;
pub mod tls;
pub mod trace;
#[cfg(feature = "lean")]
mod walk;

pub use auth::{AuthError, SdkAuth, SdkKeyTable, hash_sdk_key};
pub use client::{ClientEnv, ClientKeyTable, client_router, cors};
pub use client_events::{EventsCaller, events_caller};
pub use config::DistributionArgs;
pub use frame::FrameError;
pub use http::sdk_router;
pub use hub::{Hub, HubConfig, NotServing, PublishError, SnapshotOutcome};
pub use items::EncodeError;
pub use relay_stream::{RelayAuth, RelayStreamConfig, relay_router, relay_router_with};
pub use serve::serve_http1;
pub use subscriber::{StartKind, Subscription};
