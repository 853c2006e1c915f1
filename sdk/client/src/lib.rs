//! Vexil's Rust SDK: evaluates feature flags in process, in well under a microsecond,
//! kept current by the server's (or a relay's) SSE stream, and keeps answering when
//! everything upstream is down: from the last flags received, then from a last-known-good
//! file, then from the code's defaults. It never blocks the caller on I/O and never panics.
//!
//! ```no_run
//! use std::time::Duration;
//! use vexil_sdk::{Client, Context};
//!
//! let client = Client::builder("sdk-key")
//!     .base_url("https://flags.example.com")
//!     .last_known_good("/var/lib/myapp/flags.json")
//!     .build()?;
//! let _ = client.wait_for_initialization_blocking(Duration::from_secs(5));
//! let user = Context::builder("user-42").set("plan", "pro").build();
//! let enabled = client.bool_variation("new-checkout", &user, false);
//! # Ok::<(), vexil_sdk::BuildError>(())
//! ```
//!
//! Layout:
//! - [`Client`] (`client`, `evaluate`): the handle, its typed evaluation methods, status,
//!   listeners and shutdown; [`ClientBuilder`] (`builder`) configures and starts it;
//! - `store`: the `ArcSwap`ped compiled snapshot evaluations read, and the writer that
//!   applies updates in version order; `changes`: which flags an update affected; `wire`:
//!   fast decoding of full snapshots;
//! - [`source`]: the [`DataSource`] trait and its streaming, polling, file and [`TestData`]
//!   implementations; reconnection delays are `vexil_schema::backoff`'s;
//! - `persist` and `fallback`: the last-known-good file and when it is served;
//! - [`events`]: exposures, custom events (`track`) and evaluation summaries, queued and
//!   sent in the background to `/events/v1/bulk` (or to an [`EventSink`] in tests);
//! - `runtime`: the background thread with its own Tokio runtime; `listeners`: flag-change
//!   notifications; [`status`]: states and errors; `detail`: owned evaluation results.
//!
//! `docs/sdk.md` is the user guide: initialisation, error handling, failure modes and
//! performance.
#![deny(missing_docs)]

mod builder;
mod changes;
mod client;
mod detail;
mod evaluate;
pub mod events;
mod fallback;
mod listeners;
mod persist;
mod runtime;
pub mod source;
pub mod status;
mod store;
mod wire;

pub use builder::{BuildError, ClientBuilder, DEFAULT_BASE_URL};
pub use client::{Client, InitError};
pub use detail::{AllFlags, EvaluationDetail};
pub use events::{EventSink, EventStats, EventsConfig};
pub use listeners::{FlagChange, ListenerId};
pub use source::polling::PollingConfig;
pub use source::streaming::StreamingConfig;
pub use source::{BoxFuture, DataSource, Shutdown, TestData, TestFlag, Updates};
pub use status::{DataOrigin, DataSourceError, State, Status};
pub use store::Applied;

/// The evaluation context, re-exported from `vexil-schema`.
pub use vexil_schema::{Context, ContextBuilder, ErrorKind, Reason};
