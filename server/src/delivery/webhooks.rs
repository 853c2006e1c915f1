//! Webhooks: per-project subscriptions, the outbox written in the transaction of each change
//! ([`enqueue`], called by the store's one audit function), and the delivery worker (signed
//! POSTs, exponential backoff for up to a day, auto-disable after persistent failure).
//!
//! Signature: `Vexil-Signature: v1=<hex>` where `<hex>` is HMAC-SHA256, keyed with the
//! subscription's secret, of `<timestamp>.<body>`, `<timestamp>` being the value of the
//! `Vexil-Timestamp` header (Unix seconds). A receiver recomputes it over the raw body,
//! compares in constant time and rejects timestamps more than a few minutes old.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::db::{Conn, args};
use crate::store::{
    AuditRecord, Page, Store, StoreError, WriteContext, audit, paginate, project_row,
};

/// The events a subscription can ask for: audit actions of a project's resources. A filter
/// entry is an event name, a prefix ending in `.*` (`flag.*`), or `*`.
pub const EVENTS: &[&str] = &[
    "flag.config.update",
    "flag.targets.update",
    "flag.rollback",
    "flag.kill",
    "flag.create",
    "flag.update",
    "flag.archive",
    "flag.unarchive",
    "flag.delete",
    "segment.create",
    "segment.update",
    "segment.keys",
    "segment.delete",
    "approval_policy.update",
    "approval_policy.delete",
    "approval.bypass",
    "change_request.create",
    "change_request.approve",
    "change_request.approved",
    "change_request.reject",
    "change_request.comment",
    "change_request.apply",
    "schedule.create",
    "schedule.cancel",
    "schedule.executed",
    "schedule.failed",
    "plan.create",
    "plan.step",
    "plan.pause",
    "plan.resume",
    "plan.abort",
    "plan.completed",
    "plan.rolled_back",
];

/// How the body is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The event document (see `docs/progressive-delivery.md`).
    #[default]
    Json,
    /// A Slack incoming-webhook message (`{"text": …}`), also accepted by Mattermost and
    /// Teams' Slack-compatible endpoints.
    Slack,
}

impl WebhookFormat {
    fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Slack => "slack",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "slack" => Self::Slack,
            _ => Self::Json,
        }
    }
}

/// A subscription to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where to POST (`http` or `https`).
    pub url: String,
    /// The events to send (names, `prefix.*` or `*`).
    pub events: Vec<String>,
    /// Body format (default `json`).
    #[serde(default)]
    pub format: WebhookFormat,
    /// The signing secret (16 to 256 bytes); generated when absent. Returned only in this
    /// response.
    #[serde(default)]
    pub secret: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A change to a subscription: each field present replaces the current one. Setting
/// `enabled: true` re-enables an auto-disabled subscription and resets its failure count.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    /// New URL.
    #[serde(default)]
    pub url: Option<String>,
    /// New event filter.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// New format.
    #[serde(default)]
    pub format: Option<WebhookFormat>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// Turn deliveries on or off.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A webhook subscription (its secret is never shown again after creation).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Webhook {
    /// Id.
    pub id: i64,
    /// Project key.
    pub project: String,
    /// Where deliveries go.
    pub url: String,
    /// Event filter.
    pub events: Vec<String>,
    /// Body format.
    pub format: WebhookFormat,
    /// Free text.
    pub description: String,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why it was disabled automatically.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: i64,
    /// Version; the `ETag`.
    pub version: i64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A created subscription, with its secret (shown this once).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// The subscription.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The signing secret.
    pub secret: String,
}

/// One event's delivery to one subscription.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// Id (also sent as `Vexil-Delivery`).
    pub id: i64,
    /// The event name.
    pub event: String,
    /// `pending`, `delivered` or `failed` (gave up).
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last response's status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i64>,
    /// The last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it was queued (the change's commit).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was delivered or given up.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub finished_at: Option<OffsetDateTime>,
    /// The event document.
    pub payload: Value,
}

#[derive(sqlx::FromRow)]
struct SubRow {
    id: i64,
    project: String,
    url: String,
    events: Json<Value>,
    format: String,
    description: String,
    enabled: bool,
    disabled_reason: Option<String>,
    consecutive_failures: i64,
    version: i64,
    created_at: OffsetDateTime,
}

impl SubRow {
    fn view(self) -> Webhook {
        Webhook {
            id: self.id,
            project: self.project,
            url: self.url,
            events: serde_json::from_value(self.events.0).unwrap_or_default(),
            format: WebhookFormat::parse(&self.format),
            description: self.description,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            consecutive_failures: self.consecutive_failures,
            version: self.version,
            created_at: self.created_at,
        }
    }
}

macro_rules! select_sub {
    ($tail:literal) => {
        concat!(
            "SELECT w.id, p.key AS project, w.url, w.events, w.format, w.description, w.enabled,
                w.disabled_reason, w.consecutive_failures, w.version, w.created_at
             FROM webhook_subscriptions w JOIN projects p ON p.id = w.project_id ",
            $tail
        )
    };
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    event: String,
    state: String,
    attempts: i64,
    last_status: Option<i64>,
    last_error: Option<String>,
    next_attempt_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
    payload: Json<Value>,
}

impl DeliveryRow {
    fn view(self) -> WebhookDelivery {
        WebhookDelivery {
            id: self.id,
            event: self.event,
            state: self.state,
            attempts: self.attempts,
            last_status: self.last_status,
            last_error: self.last_error,
            next_attempt_at: self.next_attempt_at,
            created_at: self.created_at,
            finished_at: self.finished_at,
            payload: self.payload.0,
        }
    }
}

/// Whether `filter` asks for `event`.
pub(crate) fn matches(filter: &[String], event: &str) -> bool {
    filter.iter().any(|f| {
        f == "*"
            || f == event
            || f.strip_suffix(".*")
                .is_some_and(|p| event.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
    })
}

fn check_url(path: &str, url: &str) -> Result<(), StoreError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && reqwest::Url::parse(url).is_ok_and(|u| u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            path,
            "url",
            "an absolute http(s) URL of at most 2048 bytes",
        ))
    }
}

fn check_events(path: &str, events: &[String]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::invalid(
            path,
            "min_items",
            "name at least one event",
        ));
    }
    for (i, e) in events.iter().enumerate() {
        let known = e == "*"
            || EVENTS.contains(&e.as_str())
            || e.strip_suffix(".*").is_some_and(|p| {
                EVENTS
                    .iter()
                    .any(|k| k.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
            });
        if !known {
            return Err(StoreError::invalid(
                format!("{path}[{i}]"),
                "event",
                format!("'{e}' is not an event (see the list in the API description)"),
            ));
        }
    }
    Ok(())
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

fn new_secret() -> String {
    let mut b = [0u8; 24];
    rand::fill(&mut b);
    format!("whsec_{}", crate::auth::hex(&b))
}

impl Store {
    /// Creates a webhook subscription of a project.
    pub async fn create_webhook(
        &self,
        ctx: &WriteContext,
        project: &str,
        req: NewWebhook,
        now: OffsetDateTime,
    ) -> Result<CreatedWebhook, StoreError> {
        check_url("url", &req.url)?;
        check_events("events", &req.events)?;
        let secret = match req.secret {
            Some(s) if (16..=256).contains(&s.len()) => s,
            Some(_) => {
                return Err(StoreError::invalid(
                    "secret",
                    "length",
                    "a secret has 16 to 256 bytes",
                ));
            }
            None => new_secret(),
        };
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        let (id,): (i64,) = c
            .fetch_one(
                "INSERT INTO webhook_subscriptions
                     (project_id, url, secret, events, format, description, enabled,
                      consecutive_failures, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, TRUE, 0, 1, $7, $7) RETURNING id",
                args![
                    p.id,
                    req.url.as_str(),
                    secret.as_str(),
                    json!(req.events),
                    req.format.as_str(),
                    req.description.as_str(),
                    now
                ],
            )
            .await?;
        let webhook = sub(&mut c, project, id).await?;
        let key = id.to_string();
        let rec = AuditRecord::new("webhook.create", "webhook", &key)
            .scoped(Some(project), None)
            .after(crate::store::encode(&webhook));
        audit(&mut c, ctx, rec, now).await?;
        tx.commit().await?;
        Ok(CreatedWebhook { webhook, secret })
    }

    /// A project's webhook subscriptions by id.
    pub async fn list_webhooks(
        &self,
        project: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Webhook>, StoreError> {
        let limit = crate::store::page_limit(limit);
        let after = crate::store::id_cursor(cursor)?;
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let rows: Vec<SubRow> = c
            .fetch_all(
                select_sub!("WHERE w.project_id = $1 AND w.id > $2 ORDER BY w.id LIMIT $3"),
                args![p.id, after, limit + 1],
            )
            .await?;
        let mut items: Vec<Webhook> = rows.into_iter().map(SubRow::view).collect();
        Ok(paginate(&mut items, limit, |w| w.id.to_string()))
    }

    /// One webhook subscription.
    pub async fn get_webhook(&self, project: &str, id: i64) -> Result<Webhook, StoreError> {
        let mut pc = self.db().acquire().await?;
        sub(&mut pc.conn(), project, id).await
    }

    /// Changes a subscription. Honours `If-Match` with its version.
    pub async fn update_webhook(
        &self,
        ctx: &WriteContext,
        project: &str,
        id: i64,
        patch: WebhookPatch,
        if_match: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<Webhook, StoreError> {
        if let Some(u) = &patch.url {
            check_url("url", u)?;
        }
        if let Some(e) = &patch.events {
            check_events("events", e)?;
        }
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let before = sub(&mut c, project, id).await?;
        if let Some(v) = if_match
            && v != crate::store::to_u64(before.version)
        {
            return Err(StoreError::PreconditionFailed {
                current: crate::store::to_u64(before.version),
            });
        }
        let enabled = patch.enabled.unwrap_or(before.enabled);
        let reenabled = enabled && !before.enabled;
        let n = c
            .execute(
                "UPDATE webhook_subscriptions SET url = $3, events = $4, format = $5,
                     description = $6, enabled = $7,
                     disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END,
                     consecutive_failures = CASE WHEN $8 THEN 0 ELSE consecutive_failures END,
                     version = version + 1, updated_at = $9
                 WHERE id = $1 AND version = $2",
                args![
                    id,
                    before.version,
                    patch.url.unwrap_or_else(|| before.url.clone()),
                    json!(patch.events.unwrap_or_else(|| before.events.clone())),
                    patch.format.unwrap_or(before.format).as_str(),
                    patch
                        .description
                        .unwrap_or_else(|| before.description.clone()),
                    enabled,
                    reenabled,
                    now
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict {
                message: "a concurrent change got there first: retry".into(),
                blockers: Vec::new(),
            });
        }
        let after = sub(&mut c, project, id).await?;
        let key = id.to_string();
        let rec = AuditRecord::new("webhook.update", "webhook", &key)
            .scoped(Some(project), None)
            .before(crate::store::encode(&before))
            .after(crate::store::encode(&after));
        audit(&mut c, ctx, rec, now).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Deletes a subscription and its delivery log.
    pub async fn delete_webhook(
        &self,
        ctx: &WriteContext,
        project: &str,
        id: i64,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let before = sub(&mut c, project, id).await?;
        c.execute("DELETE FROM webhook_subscriptions WHERE id = $1", args![id])
            .await?;
        let key = id.to_string();
        let rec = AuditRecord::new("webhook.delete", "webhook", &key)
            .scoped(Some(project), None)
            .before(crate::store::encode(&before));
        audit(&mut c, ctx, rec, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A subscription's deliveries, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        project: &str,
        id: i64,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<WebhookDelivery>, StoreError> {
        let limit = crate::store::page_limit(limit);
        let before = match cursor {
            None => i64::MAX,
            Some(c) => c.parse::<i64>().map_err(|_| {
                StoreError::invalid("cursor", "cursor", "not a cursor from this API")
            })?,
        };
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        sub(&mut c, project, id).await?;
        let rows: Vec<DeliveryRow> = c
            .fetch_all(
                "SELECT id, event, state, attempts, last_status, last_error, next_attempt_at,
                        created_at, finished_at, payload
                 FROM webhook_deliveries WHERE subscription_id = $1 AND id < $2
                 ORDER BY id DESC LIMIT $3",
                args![id, before, limit + 1],
            )
            .await?;
        let mut items: Vec<WebhookDelivery> = rows.into_iter().map(DeliveryRow::view).collect();
        Ok(paginate(&mut items, limit, |d| d.id.to_string()))
    }
}

async fn sub(c: &mut Conn<'_>, project: &str, id: i64) -> Result<Webhook, StoreError> {
    let p = project_row(c, project).await?;
    let row: SubRow = c
        .fetch_optional(
            select_sub!("WHERE w.id = $1 AND w.project_id = $2"),
            args![id, p.id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("webhook {id}")))?;
    Ok(row.view())
}

/// The signature of a delivery: hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    crate::auth::hex(&mac.finalize().into_bytes())
}

/// How the delivery worker runs.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    /// The HTTP client (timeouts set).
    pub http: reqwest::Client,
    /// How long deliveries are retried before they fail for good (and disable their
    /// subscription).
    pub retry_for: time::Duration,
    /// How long a claim keeps other servers off a delivery.
    pub lease: time::Duration,
}

/// The delay before attempt `n + 1` after `n` failed attempts: 10 s doubling, at most 1 h.
pub(crate) fn backoff(attempts: i64) -> time::Duration {
    let exp = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    let secs = 10i64.saturating_mul(1i64 << exp).min(3600);
    time::Duration::seconds(secs)
}

#[derive(sqlx::FromRow)]
struct Due {
    id: i64,
    event: String,
    payload: Json<Value>,
    attempts: i64,
    created_at: OffsetDateTime,
    subscription_id: i64,
    url: String,
    secret: String,
    format: String,
    enabled: bool,
}

/// Sends every delivery due at `now` (at most 32 per round, concurrently); returns how many
/// were attempted.
pub(crate) async fn run_due(
    store: &Store,
    sender: &Sender,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let due = claim(store, sender, now).await?;
    let n = due.len();
    let attempts = due.into_iter().map(|d| async move {
        let result = if d.enabled {
            send(sender, &d, now).await
        } else {
            Err((None, "the subscription is disabled".to_owned()))
        };
        (d, result)
    });
    for (d, result) in futures::future::join_all(attempts).await {
        record(store, sender, &d, result, now).await?;
    }
    Ok(n)
}

async fn claim(
    store: &Store,
    sender: &Sender,
    now: OffsetDateTime,
) -> Result<Vec<Due>, StoreError> {
    let mut tx = store.db().begin().await?;
    let mut c = tx.conn();
    let sql = match c {
        Conn::Pg(_) => {
            "UPDATE webhook_deliveries SET lease_until = $2, attempts = attempts + 1
             WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $1)
                   AND (lease_until IS NULL OR lease_until < $1)
                 ORDER BY id LIMIT 32
                 FOR UPDATE SKIP LOCKED)
             RETURNING id"
        }
        Conn::Lite(_) => {
            "UPDATE webhook_deliveries SET lease_until = $2, attempts = attempts + 1
             WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $1)
                   AND (lease_until IS NULL OR lease_until < $1)
                 ORDER BY id LIMIT 32)
             RETURNING id"
        }
    };
    let ids: Vec<(i64,)> = c.fetch_all(sql, args![now, now + sender.lease]).await?;
    let mut due = Vec::with_capacity(ids.len());
    for (id,) in ids {
        let row: Option<Due> = c
            .fetch_optional(
                "SELECT d.id, d.event, d.payload, d.attempts, d.created_at, d.subscription_id,
                        w.url, w.secret, w.format, w.enabled
                 FROM webhook_deliveries d JOIN webhook_subscriptions w ON w.id = d.subscription_id
                 WHERE d.id = $1",
                args![id],
            )
            .await?;
        due.extend(row);
    }
    tx.commit().await?;
    Ok(due)
}

/// The body of a delivery in a subscription's format.
fn body(format: WebhookFormat, payload: &Value) -> Value {
    match format {
        WebhookFormat::Json => payload.clone(),
        WebhookFormat::Slack => {
            let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("");
            let place = match payload.get("environment").and_then(Value::as_str) {
                Some(env) => format!("{}/{env}", s("project")),
                None => s("project").to_owned(),
            };
            let mut text = format!(
                "*{}* `{}` {} in {place} by {}",
                s("event"),
                s("key"),
                s("resource"),
                s("actor")
            );
            if let Some(reason) = payload.pointer("/after/reason").and_then(Value::as_str) {
                text.push_str(&format!("\n> {reason}"));
            }
            json!({ "text": text })
        }
    }
}

/// One attempt: `Ok(status)` for a 2xx, else the status (if any) and what went wrong.
async fn send(sender: &Sender, d: &Due, now: OffsetDateTime) -> Result<i64, (Option<i64>, String)> {
    let body = body(WebhookFormat::parse(&d.format), &d.payload.0);
    let bytes = serde_json::to_vec(&body).map_err(|e| (None, e.to_string()))?;
    let ts = now.unix_timestamp();
    let signature = sign(&d.secret, ts, &bytes);
    let res = sender
        .http
        .post(&d.url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("vexil-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .header("vexil-event", &d.event)
        .header("vexil-delivery", d.id.to_string())
        .header("vexil-timestamp", ts.to_string())
        .header("vexil-signature", format!("v1={signature}"))
        .body(bytes)
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => Ok(i64::from(r.status().as_u16())),
        Ok(r) => Err((
            Some(i64::from(r.status().as_u16())),
            format!("the receiver answered {}", r.status()),
        )),
        Err(e) => Err((None, format!("cannot reach the receiver: {e}"))),
    }
}

async fn record(
    store: &Store,
    sender: &Sender,
    d: &Due,
    result: Result<i64, (Option<i64>, String)>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut tx = store.db().begin().await?;
    let mut c = tx.conn();
    match result {
        Ok(status) => {
            c.execute(
                "UPDATE webhook_deliveries SET state = 'delivered', last_status = $2,
                     last_error = NULL, finished_at = $3, lease_until = NULL, next_attempt_at = NULL
                 WHERE id = $1",
                args![d.id, status, now],
            )
            .await?;
            c.execute(
                "UPDATE webhook_subscriptions SET consecutive_failures = 0 WHERE id = $1",
                args![d.subscription_id],
            )
            .await?;
        }
        Err((status, error)) => {
            let give_up = !d.enabled || now - d.created_at >= sender.retry_for;
            tracing::warn!(delivery = d.id, attempts = d.attempts, %error, give_up, "webhook delivery failed");
            if give_up {
                c.execute(
                    "UPDATE webhook_deliveries SET state = 'failed', last_status = $2,
                         last_error = $3, finished_at = $4, lease_until = NULL, next_attempt_at = NULL
                     WHERE id = $1",
                    args![d.id, status, error.as_str(), now],
                )
                .await?;
            } else {
                c.execute(
                    "UPDATE webhook_deliveries SET last_status = $2, last_error = $3,
                         next_attempt_at = $4, lease_until = NULL
                     WHERE id = $1",
                    args![d.id, status, error.as_str(), now + backoff(d.attempts)],
                )
                .await?;
            }
            if d.enabled {
                c.execute(
                    "UPDATE webhook_subscriptions SET consecutive_failures = consecutive_failures + 1
                     WHERE id = $1",
                    args![d.subscription_id],
                )
                .await?;
            }
            if give_up && d.enabled {
                let hours = sender.retry_for.whole_hours();
                let reason = format!("deliveries failed for {hours} h: {error}");
                tracing::warn!(subscription = d.subscription_id, %reason, "webhook disabled");
                c.execute(
                    "UPDATE webhook_subscriptions SET enabled = FALSE, disabled_reason = $2,
                         version = version + 1
                     WHERE id = $1 AND enabled",
                    args![d.subscription_id, reason],
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Keeps the worker's HTTP timeouts in one place.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
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
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Key and message of RFC 4231 test case 2 ("Jefe"), the message prefixed with the
        // timestamp "0."; the digest was computed independently with
        // `printf '0.what do ya want for nothing?' | openssl dgst -sha256 -hmac Jefe`.
        assert_eq!(
            sign("Jefe", 0, b"what do ya want for nothing?"),
            "37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
        assert_ne!(
            sign("Jefe", 1, b"what do ya want for nothing?"),
            sign("Jefe", 0, b"what do ya want for nothing?")
        );
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

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_an_hour() {
        assert_eq!(backoff(1).whole_seconds(), 10);
        assert_eq!(backoff(2).whole_seconds(), 20);
        assert_eq!(backoff(5).whole_seconds(), 160);
        assert_eq!(backoff(30).whole_seconds(), 3600);
    }

    #[test]
    fn slack_messages_carry_text() {
        let p = json!({"event": "flag.kill", "key": "checkout", "resource": "flag",
                       "project": "shop", "environment": "prod", "actor": "ops"});
        let b = body(WebhookFormat::Slack, &p);
        assert_eq!(b["text"], "*flag.kill* `checkout` flag in shop/prod by ops");
    }
}
