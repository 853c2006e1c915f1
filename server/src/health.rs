//! Database health: a background probe on a connection of its own (never waiting behind a
//! busy pool) decides whether the database is reachable. `/readyz` reports it, and while the
//! database is known down, API writes are refused at once with `503` and `Retry-After`
//! instead of each waiting for a connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::db::Db;

/// How long one probe (connecting included) may take before the database counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Whether the database is reachable, as last probed. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// `true` while the last probe (or readiness check) failed.
    down: Arc<AtomicBool>,
}

impl Health {
    /// Whether the database is known to be unreachable.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Records a probe result, logging changes.
    pub fn set_reachable(&self, reachable: bool) {
        let was_down = self.down.swap(!reachable, Ordering::AcqRel);
        if was_down && reachable {
            tracing::info!("database reachable again");
        } else if !was_down && !reachable {
            tracing::warn!("database unreachable: failing writes fast until it answers");
        }
        metrics::gauge!("vexil_database_up").set(if reachable { 1.0 } else { 0.0 });
    }
}

/// Probes the database every `every` until aborted (owned by `Server::serve`).
pub(crate) async fn probe(db: Db, health: Health, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    match db {
        Db::Postgres(pool) => {
            let options = pool.connect_options();
            let mut conn: Option<PgConnection> = None;
            loop {
                tick.tick().await;
                let ok = matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, ping(&options, &mut conn)).await,
                    Ok(Ok(()))
                );
                if !ok {
                    // Half-open or mid-ping: start over with a new connection.
                    conn = None;
                }
                health.set_reachable(ok);
            }
        }
        Db::Sqlite(..) => loop {
            tick.tick().await;
            let ok = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, db.ready()).await,
                Ok(Ok(_))
            );
            health.set_reachable(ok);
        },
    }
}

async fn ping(
    options: &PgConnectOptions,
    conn: &mut Option<PgConnection>,
) -> Result<(), sqlx::Error> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(PgConnection::connect_with(options).await?),
    };
    c.ping().await
}
