//! Webhooks: per-project subscriptions, the outbox written in the transaction of each change
//! ([`enqueue`], called by the store's one audit function), and the delivery worker (signed
//! POSTs, exponential backoff for up to a day, auto-disable after persistent failure).
//!
//! - this file: the subscriptions, their delivery log and their store functions;
//! - [`outbox`]: the events, filters and the outbox rows queued with each change;
//! - [`sender`]: the worker that claims due deliveries, signs and sends them, and retries.
//!
//! Signature: `Vexil-Signature: v1=<hex>` where `<hex>` is HMAC-SHA256, keyed with the
//! subscription's secret, of `<timestamp>.<body>`, `<timestamp>` being the value of the
//! `Vexil-Timestamp` header (Unix seconds). A receiver recomputes it over the raw body,
//! compares in constant time and rejects timestamps more than a few minutes old.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;

mod outbox;
mod sender;

pub(crate) use outbox::enqueue;
pub use sender::sign;
pub(crate) use sender::{Sender, http_client, run_due};

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
    "plan.waiting_for_approval",
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
