//! Change distribution end to end: real servers, real PostgreSQL or SQLite, real sockets and
//! SSE streams.

mod client;
mod client_events;
mod evaluate;
mod events;
mod fixtures;
mod helpers;
mod observability;
mod ofrep;
mod streams;
