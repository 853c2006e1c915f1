//! `vexil-loadtest`: end-to-end measurements of Vexil's real binaries on one machine.
//!
//! The `vexil-loadtest` binary runs one scenario per invocation against a `vexil-server` and
//! a `vexil-relay` it starts as child processes on loopback ports (see [`system`]), prints a
//! summary table and writes the same figures as JSON (`--out`). Every scenario is bounded in
//! count and time, sends traffic to loopback addresses only, and stops by itself.
//!
//! Layout:
//! - [`scenario`]: `propagation`, `capacity`, `ofrep`, `reconnect-storm`;
//! - [`system`]: starting the server and relay binaries, populating an environment;
//!   [`api`]: the control-plane calls it makes;
//! - [`worker`] and [`fleet`]: subscriber worker processes (the binary re-executes itself as
//!   `vexil-loadtest worker`, past the per-process file-descriptor limit) and the parent's
//!   [`fleet::Ledger`] of what every subscriber saw; [`subscriber`]: one raw HTTP/1.1 SSE
//!   subscriber bound to a chosen 127.0.0.x source address (past the ephemeral-port limit);
//!   [`sse`]: the incremental HTTP/chunked/SSE decoder it uses;
//! - [`preflight`]: descriptor and port limits checked before a run; [`floor`]: the cost of
//!   plain `write(2)` calls to idle sockets, the floor fan-out is compared with; [`edge`]:
//!   Unleash Edge as a peer for `ofrep`;
//! - [`stats`]: HDR-histogram percentiles; [`procstat`]: `/proc` memory and CPU sampling;
//!   [`report`]: the summary table and JSON.
//!
//! `tests/smoke/` runs every scenario small (a few hundred subscribers, a few seconds) so
//! they build and work in `cargo test --workspace`; the full runs and their figures are in
//! `docs/benchmarks.md`.
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod edge;
pub mod fleet;
pub mod floor;
pub mod otlp;
pub mod preflight;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod sse;
pub mod stats;
pub mod subscriber;
pub mod system;
pub mod worker;
