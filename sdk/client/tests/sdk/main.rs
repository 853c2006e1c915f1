//! Integration tests of the Rust SDK: real sockets, real SSE, the real hub and SDK endpoints
//! of `vexil-relay` (which the server and the relay both mount), and the real control plane
//! (`server`, on PostgreSQL and SQLite).

mod fallback;
mod file;
mod fixtures;
mod harness;
mod polling;
mod protocol;
mod server;
mod streaming;
mod sync_host;
mod test_data;
