//! After a restore: the version fence that makes every client resynchronise.
//!
//! Restoring a backup takes each environment's data version back to the backup's. Relays and
//! SDKs that saw later versions resume with a `Last-Event-ID` from the lost timeline, which may
//! be ahead of the restored version or, once new writes land, equal to a version that now
//! names different data. Raising every environment's version by [`RESTORE_FENCE`] (more
//! changes than any installation makes between a backup and its restore) puts the restored
//! timeline above every version issued before it, so every such resume finds its version
//! older than the current one and outside the replay ring: it gets a full `put`, which every
//! client accepts because its version is higher. No wire format changes, so every SDK and
//! relay of any release converges.

use serde_json::json;

use super::changes::{AuditRecord, audit};
use super::{Store, StoreError, WriteContext};
use crate::db::{args, now};

/// How far `vexil-server admin restored` raises every environment's data version: 2^32,
/// more changes than are ever made between a backup and its restore, while 2^21 restores
/// still keep versions below 2^53 (exact in JavaScript numbers).
pub const RESTORE_FENCE: i64 = 1 << 32;

/// What [`Store::fence_restored_versions`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    /// Environments whose version was raised.
    pub environments: u64,
    /// The highest environment version before, and after.
    pub highest: (i64, i64),
}

#[derive(sqlx::FromRow)]
struct Highest {
    n: i64,
    highest: i64,
}

impl Store {
    /// Raises every environment's data version by [`RESTORE_FENCE`] in one transaction,
    /// audited. Run once after a restore and before the servers start (the restore runbook's
    /// last step). Nothing else changes: flags, segments and history stay as restored.
    pub async fn fence_restored_versions(&self, ctx: &WriteContext) -> Result<Fenced, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let before: Highest = c
            .fetch_one(
                "SELECT COUNT(*) AS n, COALESCE(MAX(version), 0) AS highest FROM environments",
                args![],
            )
            .await?;
        c.execute(
            "UPDATE environments SET version = version + $1",
            args![RESTORE_FENCE],
        )
        .await?;
        let after: Highest = c
            .fetch_one(
                "SELECT COUNT(*) AS n, COALESCE(MAX(version), 0) AS highest FROM environments",
                args![],
            )
            .await?;
        let rec = AuditRecord::new("database.restored", "database", "versions")
            .before(json!({"environments": before.n, "highest_version": before.highest}))
            .after(
                json!({"environments": after.n, "highest_version": after.highest,
                          "fence": RESTORE_FENCE}),
            );
        audit(&mut c, ctx, rec, now()).await?;
        tx.commit().await?;
        Ok(Fenced {
            environments: u64::try_from(after.n).unwrap_or(0),
            highest: (before.highest, after.highest),
        })
    }
}
