//! The relay against the real control plane (`vexil-testkit`: the server in process on a
//! real socket, PostgreSQL): propagation server → relay → subscriber and through a chain,
//! the upstream killed and restarted while changes are made, keys checked at the relay.

#[allow(dead_code)]
#[path = "../../../tests/relay/harness.rs"]
mod harness;

/// The relay binary the harness starts as a child process.
const RELAY_BIN: &str = env!("CARGO_BIN_EXE_vexil-e2e-relay");

mod cable;
mod control_plane;
mod events;
mod experiments;
mod observability;
