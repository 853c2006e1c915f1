//! Integration tests of the fan-out engine over real sockets: axum on port 0, real HTTP
//! clients reading real SSE streams.

mod errors;
mod helpers;
mod lagging;
mod lifecycle;
mod resume;
mod snapshot;
mod stream;
