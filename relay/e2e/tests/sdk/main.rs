//! The Rust SDK against the real control plane (`vexil-testkit`: the server in process on a
//! real socket, on PostgreSQL and SQLite), with the SDK tests' harness.

#[allow(dead_code)]
#[path = "../../../../sdk/client/tests/sdk/harness.rs"]
mod harness;

mod server;
