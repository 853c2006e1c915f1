//! Experiments: metrics, experiment definitions and iterations, the per-unit aggregates that
//! event ingestion maintains, and the analysis that reads them.
//!
//! - [`model`]: the API documents (metrics, experiments, iterations, results);
//! - `store`: metrics and experiments in the database, start and stop, and the iteration hook
//!   the flag-configuration writes call ([`on_flag_config_written`]);
//! - `ingest`: [`on_ingest`] folds event batches into per-unit aggregates, set-based;
//! - `analysis`: results from the aggregates with `vexil-stats`.
//!
//! The HTTP handlers live in `api.rs` here and are mounted by [`crate::api`].
//!
//! Event ingestion (`crate::events`) calls [`on_ingest`] inside the transaction that stores a
//! batch, so aggregates commit together with the raw events they summarise: an acknowledged
//! event is counted exactly once.

mod analysis;
mod ingest;
pub mod model;
mod store;

use vexil_schema::events::Event;

use crate::db::Conn;
use crate::store::StoreError;

pub(crate) use store::on_flag_config_written;

/// Folds one validated batch of `environment_id`'s events into the experiment aggregates,
/// inside the caller's transaction. `received_at_ms` is the server's clock at receipt.
///
/// Events are attributed by their own time (see `ingest`), so a late event lands in the
/// iteration and window it belongs to.
pub(crate) async fn on_ingest(
    conn: &mut Conn<'_>,
    environment_id: i64,
    received_at_ms: u64,
    events: &[Event],
) -> Result<(), StoreError> {
    let _ = received_at_ms;
    ingest::fold(conn, environment_id, events).await
}

/// Folds a batch of events of `project`'s `environment` in its own transaction: for tests
/// and tools that feed events without the ingestion endpoint. Events should be validated
/// ([`Event::validate`]) first.
pub async fn ingest_batch(
    store: &crate::Store,
    project: &str,
    environment: &str,
    events: &[Event],
) -> Result<(), StoreError> {
    let mut tx = store.db().begin().await?;
    let mut c = tx.conn();
    let p = crate::store::project_row(&mut c, project).await?;
    let e = crate::store::environment_row(&mut c, p.id, environment).await?;
    on_ingest(&mut c, e.id, 0, events).await?;
    tx.commit().await?;
    Ok(())
}
