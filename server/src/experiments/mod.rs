//! Experiments: metrics, experiment definitions and iterations, the per-unit aggregates that
//! event ingestion maintains, and the analysis that reads them.
//!
//! Event ingestion (`crate::events`) calls [`on_ingest`] inside the transaction that stores a
//! batch, so aggregates commit together with the raw events they summarise: an acknowledged
//! event is counted exactly once.

use vexil_schema::events::Event;

use crate::db::Conn;
use crate::store::StoreError;

/// Folds one validated batch of `environment_id`'s events into the experiment aggregates,
/// inside the caller's transaction. `received_at_ms` is the server's clock at receipt.
#[allow(dead_code)] // wired by event ingestion, which lands with it
pub(crate) async fn on_ingest(
    conn: &mut Conn<'_>,
    environment_id: i64,
    received_at_ms: u64,
    events: &[Event],
) -> Result<(), StoreError> {
    // Nothing is aggregated until experiments exist; the parameters are the contract.
    let _ = (conn, environment_id, received_at_ms, events);
    Ok(())
}
