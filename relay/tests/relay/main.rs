//! Integration tests of the edge relay over real sockets: an origin serving the library's
//! relay stream, relays in process (`Relay::serve` on port 0) and as child processes of the
//! built `vexil-relay` binary, and SDK subscribers reading real SSE streams.

/// The relay binary the harness starts as a child process.
const RELAY_BIN: &str = env!("CARGO_BIN_EXE_vexil-relay");

mod chain;
mod client;
mod faults;
mod gate;
mod harness;
mod ofrep;
mod output;
mod reuse_port;
mod sdk_client;
