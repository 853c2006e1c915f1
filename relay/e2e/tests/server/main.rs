//! The relay against the real control plane (`vexil-testkit`: the server in process on a
//! real socket, PostgreSQL): propagation server → relay → subscriber and through a chain,
//! the upstream killed and restarted while changes are made, keys checked at the relay.

#[allow(dead_code)]
#[path = "../relay/harness.rs"]
mod harness;

mod cable;
mod control_plane;
