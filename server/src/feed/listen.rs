//! The PostgreSQL side of the feed: `LISTEN vexil_changes`, with gap detection and a
//! heartbeat.
//!
//! `PgListener` reconnects on its own but loses the notifications sent while it was
//! disconnected; `try_recv` reports such a reconnect as `Ok(None)`, which is treated as a gap:
//! every environment is resynchronised from the change log. A half-open connection (the
//! server gone without a reset) would never report anything, so the listener sends
//! `NOTIFY vexil_changes, 'ping:<process>:<n>'` every heartbeat interval through the pool and
//! expects to receive it within the heartbeat timeout; if it does not, it drops the
//! connection, connects again and resynchronises.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::metrics as feed_metrics;
use super::{CHANNEL, Inner, Mark};

/// What one notification asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    /// The environment moved to this version (or was created).
    Version(i64, u64),
    /// The environment was deleted.
    Removed(i64),
    /// Keys changed.
    Keys,
    /// A heartbeat: the process that sent it and its sequence number.
    Ping(String, u64),
}

/// Parses a notification payload; `None` for anything unknown (ignored, so newer servers
/// can add payloads).
pub(crate) fn parse(payload: &str) -> Option<Payload> {
    if payload == "keys" {
        return Some(Payload::Keys);
    }
    if let Some(rest) = payload.strip_prefix("ping:") {
        let (process, n) = rest.rsplit_once(':')?;
        return Some(Payload::Ping(process.to_owned(), n.parse().ok()?));
    }
    let (id, what) = payload.split_once(':')?;
    let id: i64 = id.parse().ok()?;
    if what == "removed" {
        return Some(Payload::Removed(id));
    }
    Some(Payload::Version(id, what.parse().ok()?))
}

/// Listens until `stop` turns true, reconnecting (and resynchronising) as needed.
pub(crate) async fn run(
    inner: std::sync::Arc<Inner>,
    pool: PgPool,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        match session(&inner, &pool, &mut stop).await {
            Ok(()) => return,
            Err(why) => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(100); // it had been working: retry soon
                }
                metrics::gauge!(feed_metrics::LISTENER_CONNECTED).set(0.0);
                metrics::counter!(feed_metrics::LISTENER_RESTARTS).increment(1);
                tracing::warn!(reason = %why, retry_in = ?backoff, "change listener restarting");
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One listener connection: returns `Ok` on shutdown, `Err` when it must reconnect.
async fn session(
    inner: &Inner,
    pool: &PgPool,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    listener.eager_reconnect(true);
    listener
        .listen(CHANNEL)
        .await
        .map_err(|e| format!("listen: {e}"))?;
    // Whatever was committed while no connection listened is caught up from the log.
    inner.mark(Mark::All);
    tracing::info!("change listener connected");
    metrics::gauge!(feed_metrics::LISTENER_CONNECTED).set(1.0);
    let notifications = metrics::counter!(feed_metrics::NOTIFICATIONS);

    let cfg = &inner.config;
    let mut heartbeat = tokio::time::interval(cfg.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: u64 = 0;
    let mut received: u64 = 0;
    // The deadline of the oldest ping not yet received.
    let mut deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = heartbeat.tick() => {
                sent += 1;
                let payload = format!("ping:{}:{sent}", inner.process);
                if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&payload)
                    .execute(pool)
                    .await
                {
                    // The pool's trouble, not necessarily the listener's: keep listening.
                    tracing::warn!(error = %e, "cannot send the listener heartbeat");
                    sent -= 1;
                } else if deadline.is_none() {
                    deadline = Some(Instant::now() + cfg.heartbeat_timeout);
                }
            }
            _ = async {
                match deadline {
                    Some(d) => sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                return Err(format!("heartbeat {} not received within {:?}: connection presumed dead",
                    received + 1, cfg.heartbeat_timeout));
            }
            n = listener.try_recv() => match n {
                Ok(Some(n)) => match parse(n.payload()).inspect(|_| notifications.increment(1)) {
                    Some(Payload::Ping(process, k)) if process == inner.process => {
                        received = received.max(k);
                        deadline = (received < sent).then(|| Instant::now() + cfg.heartbeat_timeout);
                    }
                    Some(Payload::Ping(..)) => {}
                    Some(Payload::Keys) => {
                        inner.mark(Mark::Keys);
                    }
                    Some(Payload::Removed(id)) => {
                        inner.mark(Mark::Environment(id));
                    }
                    Some(Payload::Version(id, v)) => {
                        let behind = inner.entry_by_id(id).is_none_or(|e| e.version() < v);
                        if behind {
                            inner.mark(Mark::Environment(id));
                        }
                    }
                    None => tracing::debug!(payload = n.payload(), "unknown notification ignored"),
                },
                Ok(None) => {
                    // Reconnected: notifications sent meanwhile are lost.
                    metrics::counter!(feed_metrics::LISTENER_GAPS).increment(1);
                    tracing::warn!("change listener reconnected: resynchronising every environment");
                    inner.mark(Mark::All);
                    sent = received;
                    deadline = None;
                }
                Err(e) => return Err(format!("receive: {e}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(parse("12:40"), Some(Payload::Version(12, 40)));
        assert_eq!(parse("12:removed"), Some(Payload::Removed(12)));
        assert_eq!(parse("keys"), Some(Payload::Keys));
        assert_eq!(
            parse("ping:ab-cd:3"),
            Some(Payload::Ping("ab-cd".to_owned(), 3))
        );
        assert_eq!(parse("12"), None);
        assert_eq!(parse("x:1"), None);
        assert_eq!(parse("12:-1"), None);
        assert_eq!(parse(""), None);
    }
}
