//! Vexil's control plane: the HTTP API where operators and tools manage projects,
//! environments, flags, segments, tokens and keys, backed by PostgreSQL or embedded SQLite.
//!
//! Layout:
//! - [`config`], [`telemetry`], [`app`]: configuration, logging, start-up and serving
//!   ([`run`] takes a bound listener so tests can use port 0);
//! - [`db`]: one SQL dialect over the two sqlx drivers; [`store`]: the transaction scripts
//!   (every environment change locks the environment, bumps its version, appends to the
//!   change log and the audit log in one transaction);
//! - [`feed`]: change distribution: `LISTEN`/`NOTIFY` (or the in-process SQLite signal),
//!   the change log applied to in-memory compiled snapshots and to the `vexil-fanout` hub that
//!   serves `/sdk/v1/*`, `/relay/v1/stream` and OFREP (`/ofrep/v1/*`);
//! - [`api`]: the `/api/v1` handlers with their OpenAPI descriptions ([`openapi`]);
//! - [`auth`]: secrets and roles; [`middleware`]: authentication, idempotency, problem
//!   context; [`throttle`]: failed-authentication limits; [`health`]: the database probe;
//!   [`extract`]: strict JSON, `If-Match`, the caller; [`error`]: the one
//!   [`error::ApiError`] and its RFC 9457 form;
//! - [`metrics`]: database and `/metrics` instrumentation (HTTP and evaluation counts come
//!   from `vexil-fanout`, shared with the relay);
//! - [`events`]: analytics event ingestion (`/events/v1/bulk`), storage and retention;
//! - [`delivery`]: scheduled changes and webhooks, their workers and the injectable clock.
//! - [`portable`]: flags as code (project export and import); [`admin`]: the
//!   `vexil-server admin …` commands ([`cli`] parses them).
//! - [`console`]: the admin console, server-rendered HTML at `/`.
#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod delivery;
pub mod distribution;
pub mod error;
pub mod events;
pub mod experiments;
pub mod extract;
pub mod feed;
pub mod fleet;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod portable;
pub mod store;
pub mod telemetry;
pub mod throttle;

pub use app::{AppState, Server, StartError, run};
pub use config::Config;
pub use store::Store;
