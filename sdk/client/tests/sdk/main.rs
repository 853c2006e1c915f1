//! Integration tests of the Rust SDK: real sockets, real SSE, the real hub and SDK endpoints
//! of `vexil-fanout` (which the server and the relay both mount). The SDK against the real
//! control plane is in the end-to-end crate (`relay/e2e`).

mod events;
mod fallback;
mod file;
mod fixtures;
mod harness;
mod polling;
mod protocol;
mod streaming;
mod sync_host;
mod test_data;
