//! The outbox: the store's audit function queues one delivery per matching enabled
//! subscription in the transaction of each change, so a committed change always has its
//! deliveries and a crash loses nothing.

use serde_json::{Value, json};
use sqlx::types::Json;
use time::OffsetDateTime;

use super::EVENTS;
use crate::db::{Conn, args};
use crate::store::{AuditRecord, StoreError, WriteContext};

/// Whether `filter` asks for `event`.
pub(crate) fn matches(filter: &[String], event: &str) -> bool {
    filter.iter().any(|f| {
        f == "*"
            || f == event
            || f.strip_suffix(".*")
                .is_some_and(|p| event.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
    })
}

/// Queues a webhook delivery of an audited change for every enabled subscription of its
/// project that asks for it, in the caller's transaction: the delivery commits with the
/// change or not at all. Called by the store's audit function for every audited write.
pub(crate) async fn enqueue(
    conn: &mut Conn<'_>,
    ctx: &WriteContext,
    rec: &AuditRecord<'_>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let Some(project) = rec.project else {
        return Ok(());
    };
    if !EVENTS.contains(&rec.action) {
        return Ok(());
    }
    let subs: Vec<(i64, Json<Value>)> = conn
        .fetch_all(
            "SELECT w.id, w.events FROM webhook_subscriptions w
             JOIN projects p ON p.id = w.project_id
             WHERE p.key = $1 AND w.enabled",
            args![project],
        )
        .await?;
    if subs.is_empty() {
        return Ok(());
    }
    let payload = json!({
        "event": rec.action,
        "occurred_at": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "project": project,
        "environment": rec.environment,
        "resource": rec.resource,
        "key": rec.key,
        "actor": ctx.actor.name,
        "request_id": ctx.request_id,
        "before": rec.before,
        "after": rec.after,
    });
    let payload = bounded(payload);
    for (id, filter) in subs {
        let filter: Vec<String> = serde_json::from_value(filter.0).unwrap_or_default();
        if !matches(&filter, rec.action) {
            continue;
        }
        conn.execute(
            "INSERT INTO webhook_deliveries (subscription_id, event, payload, state, attempts, created_at)
             VALUES ($1, $2, $3, 'pending', 0, $4)",
            args![id, rec.action, payload.clone(), now],
        )
        .await?;
    }
    Ok(())
}

/// The largest event document queued as is (a segment with 100,000 keys would otherwise make
/// each delivery several megabytes).
const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// The event document, without `before` and `after` (and with `truncated: true`) when it
/// is larger than [`MAX_PAYLOAD_BYTES`]; the audit log keeps the whole change.
fn bounded(mut payload: Value) -> Value {
    let size = serde_json::to_vec(&payload).map_or(usize::MAX, |b| b.len());
    if size > MAX_PAYLOAD_BYTES
        && let Some(o) = payload.as_object_mut()
    {
        o.insert("before".into(), Value::Null);
        o.insert("after".into(), Value::Null);
        o.insert("truncated".into(), Value::Bool(true));
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_names_prefixes_and_everything() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(&f(&["*"]), "flag.kill"));
        assert!(matches(&f(&["flag.*"]), "flag.config.update"));
        assert!(!matches(&f(&["flag.*"]), "schedule.failed"));
        assert!(!matches(&f(&["fla.*"]), "flag.kill"));
        assert!(matches(&f(&["schedule.failed"]), "schedule.failed"));
        assert!(!matches(&f(&["schedule.failed"]), "schedule.executed"));
    }

    #[test]
    fn large_documents_are_sent_without_their_sides() {
        let small = json!({"event": "segment.update", "before": {"a": 1}, "after": {"a": 2}});
        assert_eq!(bounded(small.clone()), small);
        let keys: Vec<String> = (0..40_000).map(|i| format!("user-{i}")).collect();
        let big = json!({"event": "segment.update", "before": null, "after": {"included": keys}});
        let b = bounded(big);
        assert_eq!(b["truncated"], true);
        assert!(b["after"].is_null());
        assert_eq!(b["event"], "segment.update");
    }
}
