//! Test harness for Vexil: throwaway databases and a real control plane on a real socket.
//!
//! - [`TestDatabase`]: a fresh PostgreSQL database (dropped afterwards, best effort) or a
//!   SQLite file in a temporary directory, one per test.
//! - [`spawn_app`]: starts the real server in process on `127.0.0.1:0` against a fresh
//!   database, with a known admin token, and hands back a [`TestApp`] to talk to it over HTTP.
//! - [`ServerTask`]: a server serving in the background of a test; if it fails there (an
//!   error or a panic), stopping or dropping it fails the test.
//! - [`sse`]: the one Server-Sent Events reader every harness reads streams with.
//!
//! PostgreSQL is found in this order: `VEXIL_TEST_DATABASE_URL` (a URL to a server where the
//! user may create databases); a server answering on `127.0.0.1:5432` (user `postgres`, trust
//! auth); a throwaway cluster started with `initdb`/`pg_ctl` from `PATH` or
//! `/usr/lib/postgresql/*/bin` (as the `postgres` user when running as root), stopped when the
//! test process exits. If none works the harness panics saying what to install: it never
//! skips. `VEXIL_TEST_THROWAWAY_PG=1` forces the throwaway cluster. A test that stops
//! PostgreSQL starts a [`PostgresCluster`] of its own.

pub mod sse;
mod task;
pub use task::ServerTask;

#[cfg(feature = "server")]
mod harness;
#[cfg(feature = "server")]
pub use harness::*;
