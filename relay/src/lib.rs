//! Vexil's edge relay (binary `vexil-relay`): it follows an upstream (the control plane or
//! another relay) over one relay stream and serves SDKs and the relays chained below it with
//! the fan-out engine of [`vexil_fanout`], which holds everything it serves.
//!
//! - [`config`]: [`RelayConfig`], flags and `VEXIL_*` variables.
//! - [`upstream`]: the upstream client (SSE parser, backoff, applying relay events).
//! - [`relay_state`]: readiness, scope and compiled snapshots ([`RelayState`]).
//! - [`events`]: analytics events (`/events/v1/bulk`, OFREP exposures) forwarded upstream,
//!   acknowledged only once upstream acknowledged.
//! - [`fleet`]: fleet reports (SDK streams, versions, change delivery) sent upstream.
//! - [`app`]: [`Relay`] and [`run`]: routes, readiness gate, probes, metrics, drain.
//! - [`listener`]: the listening socket (`SO_REUSEPORT`) and the raised `RLIMIT_NOFILE`.
//! - [`telemetry`]: logging setup; [`cli`]: the command, which `src/bin/vexil-relay.rs`
//!   calls.
//!
//! The wire payloads live in [`vexil_schema::stream`]; `docs/design.md` ("Distribution
//! protocol") describes ordering, resume and failure modes.
#![deny(missing_docs)]

pub mod app;
pub mod cli;
pub mod config;
pub mod events;
pub mod fleet;
pub mod listener;
pub mod relay_state;
pub mod telemetry;
pub mod upstream;

pub use app::{Relay, RelayError, run};
pub use config::{LogFormat, RelayConfig};
pub use relay_state::RelayState;
