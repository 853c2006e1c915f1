//! The relay's upstream client: one relay stream (`GET /relay/v1/stream`) from the control
//! plane or a parent relay, applied to the local [`Hub`], key registry and evaluators.
//!
//! - [`sse`]: the incremental SSE parser; reconnection delays are
//!   [`vexil_schema::backoff`]'s.
//! - [`apply`]: what each relay event does to local state, and when the relay is ready.
//! - this module: the connection loop. It reconnects after any failure with exponential
//!   backoff and full jitter, resuming with a `Last-Event-ID` cursor built from the versions
//!   the hub holds (so a change applied is never requested again and a change not applied
//!   is never skipped). 401/403/404 mean an operator must act: one loud error and a long
//!   wait. A read timeout catches a silent upstream (half-open connection). Whatever
//!   happens upstream, the hub keeps serving its last state.

pub(crate) mod apply;
pub(crate) mod sse;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use metrics::{counter, gauge};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, RETRY_AFTER};
use tokio::sync::watch;
use vexil_schema::stream::RelayCursor;

use crate::config::RelayConfig;
use vexil_fanout::hub::Hub;
use vexil_fanout::telemetry::redact_url;

pub(crate) use apply::{Applier, RelayState};
use sse::SseParser;
use vexil_schema::backoff::Backoff;

/// Gauge: 1 while the upstream stream is connected, else 0.
pub const UPSTREAM_CONNECTED: &str = "vexil_relay_upstream_connected";
/// Counter: upstream connections lost or refused, by `reason`.
pub const UPSTREAM_RECONNECTS: &str = "vexil_relay_upstream_reconnects_total";
/// Counter: events received from upstream, by `event`.
pub const UPSTREAM_EVENTS: &str = "vexil_relay_upstream_events_total";

/// Largest SSE event accepted from upstream (an `env-put` of a very large environment).
const MAX_EVENT_BYTES: usize = 256 * 1024 * 1024;

/// How one upstream connection ended.
#[derive(Debug)]
enum Ended {
    /// Could not connect, or the upstream answered 5xx/429/408: retry with backoff, no
    /// sooner than `retry_after` if the upstream said so.
    Unavailable {
        reason: &'static str,
        retry_after: Option<Duration>,
    },
    /// 401/403/404 and other 4xx: an operator must act.
    Refused(StatusCode),
    /// The stream ended, failed or went silent after connecting.
    Lost(&'static str),
    /// The local state no longer follows the upstream's (a missed version, a malformed
    /// event): reconnect at once with the hub's cursor, which brings a replay or a put.
    Desync,
    /// Shutting down.
    Stopped,
}

/// Runs the upstream connection until `stop` turns true.
pub(crate) async fn run(
    client: reqwest::Client,
    config: Arc<RelayConfig>,
    hub: Hub,
    state: RelayState,
    mut stop: watch::Receiver<bool>,
) {
    let url = config.stream_url();
    // Logs never show credentials a URL may carry.
    let shown = redact_url(&url);
    let mut backoff = Backoff::new(
        config.upstream_backoff_initial,
        config.upstream_backoff_max,
        config.upstream_healthy_after,
    );
    let mut applier = Applier::new(hub.clone(), state);
    let connected = gauge!(UPSTREAM_CONNECTED);
    connected.set(0.0);
    // Registered at zero so that alerts on their increase see a series from the start.
    for reason in ["refused", "resync"] {
        counter!(UPSTREAM_RECONNECTS, "reason" => reason).increment(0);
    }
    let mut desyncs_in_a_row = 0u32;
    loop {
        let ended = tokio::select! {
            ended = connect(&client, &url, &config, &hub, &mut applier, &mut backoff) => ended,
            _ = stop.wait_for(|s| *s) => Ended::Stopped,
        };
        connected.set(0.0);
        applier.state().set_connected(false);
        if matches!(ended, Ended::Stopped) {
            return;
        }
        desyncs_in_a_row = if matches!(ended, Ended::Desync) {
            desyncs_in_a_row + 1
        } else {
            0
        };
        let delay = delay_after(
            &ended,
            &mut backoff,
            &config,
            desyncs_in_a_row,
            tokio::time::Instant::now().into_std(),
            rand::random::<f64>(),
        );
        log_end(&ended, &shown, delay, &config);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The HTTP client for the upstream stream: no overall timeout (the stream lasts hours;
/// reads are bounded by the read timeout instead).
pub(crate) fn client(roots: &[reqwest::Certificate]) -> Result<reqwest::Client, reqwest::Error> {
    roots
        .iter()
        .fold(reqwest::Client::builder(), |b, c| {
            b.add_root_certificate(c.clone())
        })
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Duration::from_secs(30))
        .build()
}

/// How long to wait after `ended` at `now`, `unit` being a random draw in `[0, 1)` for the
/// jitter.
fn delay_after(
    ended: &Ended,
    backoff: &mut Backoff,
    config: &RelayConfig,
    desyncs_in_a_row: u32,
    now: std::time::Instant,
    unit: f64,
) -> Duration {
    match ended {
        Ended::Stopped => Duration::ZERO,
        Ended::Unavailable { retry_after, .. } => {
            let delay = backoff.next_delay(now, unit);
            // Honour the upstream's Retry-After, within the backoff cap.
            retry_after.map_or(delay, |r| delay.max(r.min(config.upstream_backoff_max)))
        }
        // Retrying sooner cannot help until an operator acts: no retry storm.
        Ended::Refused(_) => config.upstream_auth_backoff,
        Ended::Lost(_) => backoff.next_delay(now, unit),
        // At once the first time; if resyncing does not help, back off like any failure.
        Ended::Desync if desyncs_in_a_row <= 1 => Duration::ZERO,
        Ended::Desync => backoff.next_delay(now, unit),
    }
}

fn log_end(ended: &Ended, url: &str, delay: Duration, config: &RelayConfig) {
    match ended {
        Ended::Stopped => {}
        Ended::Unavailable { reason, .. } => {
            counter!(UPSTREAM_RECONNECTS, "reason" => *reason).increment(1);
            tracing::warn!(%url, reason, ?delay, "upstream unavailable; retrying");
        }
        Ended::Refused(status) => {
            counter!(UPSTREAM_RECONNECTS, "reason" => "refused").increment(1);
            tracing::error!(
                %url,
                status = status.as_u16(),
                retry_in = ?config.upstream_auth_backoff,
                "upstream refused this relay (check VEXIL_RELAY_KEY and VEXIL_UPSTREAM_URL); \
                 serving the last state meanwhile"
            );
        }
        Ended::Lost(reason) => {
            counter!(UPSTREAM_RECONNECTS, "reason" => *reason).increment(1);
            tracing::warn!(%url, reason, ?delay, "upstream connection lost; reconnecting");
        }
        Ended::Desync => {
            counter!(UPSTREAM_RECONNECTS, "reason" => "resync").increment(1);
            tracing::warn!(%url, ?delay, "local state out of step with upstream; resyncing");
        }
    }
}

/// What a non-success status means.
fn classify(status: StatusCode, retry_after: Option<Duration>) -> Ended {
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Ended::Unavailable {
            reason: "status",
            retry_after,
        }
    } else {
        Ended::Refused(status)
    }
}

/// One connection: request, then apply events until it ends.
async fn connect(
    client: &reqwest::Client,
    url: &str,
    config: &RelayConfig,
    hub: &Hub,
    applier: &mut Applier,
    backoff: &mut Backoff,
) -> Ended {
    let mut request = client
        .get(url)
        .header(ACCEPT, HeaderValue::from_static("text/event-stream"));
    match HeaderValue::from_str(&format!("Bearer {}", config.relay_key)) {
        Ok(mut v) => {
            v.set_sensitive(true);
            request = request.header(AUTHORIZATION, v);
        }
        Err(_) => return Ended::Refused(StatusCode::UNAUTHORIZED),
    }
    let cursor = cursor(hub);
    if !cursor.0.is_empty() {
        request = request.header("last-event-id", cursor.to_string());
    }
    tracing::debug!(url = %redact_url(url), cursor = %cursor, "connecting to upstream");
    let response = match tokio::time::timeout(config.upstream_read_timeout, request.send()).await {
        Err(_) => {
            return Ended::Unavailable {
                reason: "connect_timeout",
                retry_after: None,
            };
        }
        Ok(Err(e)) => {
            // The URL is logged once, redacted, with the outcome; the error's copy may carry
            // credentials.
            tracing::debug!(error = %e.without_url(), "upstream request failed");
            return Ended::Unavailable {
                reason: "connect",
                retry_after: None,
            };
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return classify(status, retry_after);
    }
    tracing::info!(url = %redact_url(url), resumed = !cursor.0.is_empty(), "connected to upstream");
    backoff.connected(tokio::time::Instant::now().into_std());
    gauge!(UPSTREAM_CONNECTED).set(1.0);
    applier.state().set_connected(true);
    let mut body = response.bytes_stream();
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let mut events = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(config.upstream_read_timeout, body.next()).await {
            Err(_) => return Ended::Lost("read_timeout"),
            Ok(None) => return Ended::Lost("closed"),
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e.without_url(), "upstream stream failed");
                return Ended::Lost("error");
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if let Err(e) = parser.feed(&chunk, &mut events) {
            tracing::error!(error = %e, "upstream sent an unreadable stream");
            return Ended::Desync;
        }
        for event in events.drain(..) {
            counter!(UPSTREAM_EVENTS, "event" => event_label(&event.event)).increment(1);
            if let Err(e) = applier.apply(&event) {
                tracing::warn!(error = %e, event = %event.event, "upstream event not applied");
                return Ended::Desync;
            }
        }
    }
}

/// What the relay holds: the resume point it sends as `Last-Event-ID`.
fn cursor(hub: &Hub) -> RelayCursor {
    RelayCursor(hub.environments().into_iter().collect())
}

/// A bounded label for the events metric.
fn event_label(name: &str) -> &'static str {
    use vexil_schema::stream::event;
    match name {
        event::ENV_PUT => event::ENV_PUT,
        event::ENV_PATCH => event::ENV_PATCH,
        event::ENV_DELETE => event::ENV_DELETE,
        event::ENV_REMOVE => event::ENV_REMOVE,
        event::KEYS => event::KEYS,
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn now() -> std::time::Instant {
        std::time::Instant::now()
    }

    fn config() -> RelayConfig {
        RelayConfig::new("http://up", "vxr_k")
    }

    #[test]
    fn refusals_wait_long_and_do_not_touch_the_backoff() {
        let c = config();
        let mut b = Backoff::new(S, 30 * S, 60 * S);
        for status in [401, 403, 404, 400] {
            let ended = classify(StatusCode::from_u16(status).unwrap(), None);
            assert!(matches!(ended, Ended::Refused(_)), "{status}");
            assert_eq!(delay_after(&ended, &mut b, &c, 0, now(), 0.5), 300 * S);
        }
        assert_eq!(
            b.ceiling(),
            S,
            "refusals are not counted as backoff failures"
        );
    }

    #[test]
    fn unavailable_upstreams_back_off_exponentially_with_retry_after_as_a_floor() {
        let c = config();
        let mut b = Backoff::new(S, 30 * S, 60 * S);
        for status in [500, 502, 503, 429, 408] {
            assert!(matches!(
                classify(StatusCode::from_u16(status).unwrap(), None),
                Ended::Unavailable { .. }
            ));
        }
        let lost = Ended::Lost("closed");
        let delays: Vec<_> = (0..7)
            .map(|_| delay_after(&lost, &mut b, &c, 0, now(), 1.0))
            .collect();
        assert_eq!(delays, [S, 2 * S, 4 * S, 8 * S, 16 * S, 30 * S, 30 * S]);

        let mut b = Backoff::new(S, 30 * S, 60 * S);
        let busy = classify(StatusCode::SERVICE_UNAVAILABLE, Some(10 * S));
        assert_eq!(delay_after(&busy, &mut b, &c, 0, now(), 0.0), 10 * S);
        let very_busy = classify(StatusCode::SERVICE_UNAVAILABLE, Some(3600 * S));
        assert_eq!(
            delay_after(&very_busy, &mut b, &c, 0, now(), 0.0),
            30 * S,
            "capped"
        );
    }

    #[test]
    fn a_desync_reconnects_at_once_then_backs_off() {
        let c = config();
        let mut b = Backoff::new(S, 30 * S, 60 * S);
        assert_eq!(
            delay_after(&Ended::Desync, &mut b, &c, 1, now(), 1.0),
            Duration::ZERO
        );
        assert_eq!(delay_after(&Ended::Desync, &mut b, &c, 2, now(), 1.0), S);
        assert_eq!(
            delay_after(&Ended::Desync, &mut b, &c, 3, now(), 1.0),
            2 * S
        );
    }
}
