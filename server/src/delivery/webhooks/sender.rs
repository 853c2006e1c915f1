//! The delivery worker: claims due deliveries (the scheduler's `SKIP LOCKED` claim and
//! lease), signs and POSTs them, retries with exponential backoff for the retry window, then
//! fails them for good and disables the subscription.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::types::Json;
use time::OffsetDateTime;

use super::WebhookFormat;
use crate::db::{Conn, args};
use crate::store::{Store, StoreError};

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
