//! Several real `vexil-server` processes on one PostgreSQL database, with an edge relay in
//! front of each: what only shows with more than one instance (concurrent writers, the change
//! feed under interleaved commits, delivery and revocation across instances), and PostgreSQL
//! stopped and restarted under writes.

mod delivery;
mod fault;
mod harness;
mod writes;
