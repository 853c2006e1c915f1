//! Integration tests of the control plane over real sockets, each run against PostgreSQL and
//! SQLite (see the `both!` macro). One test binary with modules links once.

mod helpers;

mod audit;
mod auth;
mod concurrency;
mod corpus;
mod edges;
mod environments;
mod errors;
mod experiments;
mod flags;
mod idempotency;
mod keys;
mod kill_rollback;
mod openapi;
mod portable;
mod schema_check;
mod segment_storage;
mod segments;
