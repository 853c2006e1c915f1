//! The wrapper's options → a [`ClientBuilder`].

use std::time::Duration;

use napi_derive::napi;
use vexil_sdk::{Client, ClientBuilder, EventsConfig, PollingConfig, StreamingConfig};

/// How a client connects, as the JavaScript wrapper passes it (its defaults are the SDK's).
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// The server's or relay's base URL.
    pub base_url: Option<String>,
    /// Where to persist the flags received, and serve them from when upstream is unreachable
    /// at start.
    pub last_known_good: Option<String>,
    /// Connect to nothing: serve the last-known-good file, else the callers' defaults.
    pub offline: Option<bool>,
    /// Read flags from this snapshot file instead of the network.
    pub file: Option<String>,
    /// With `file`: re-read it when it changes, checked this often (milliseconds).
    pub file_watch_interval_ms: Option<u32>,
    /// Poll the snapshot endpoint this often (milliseconds) instead of streaming.
    pub poll_interval_ms: Option<u32>,
    /// Streaming: the first and the longest delay between reconnection attempts
    /// (milliseconds).
    pub reconnect_initial_delay_ms: Option<u32>,
    /// See `reconnect_initial_delay_ms`.
    pub reconnect_max_delay_ms: Option<u32>,
    /// After this long without upstream data, the last-known-good snapshot is served
    /// (milliseconds).
    pub init_timeout_ms: Option<u32>,
    /// Time limit for establishing a connection (milliseconds).
    pub connect_timeout_ms: Option<u32>,
    /// How long closing waits for pending writes and events (milliseconds).
    pub close_timeout_ms: Option<u32>,
    /// Send analytics events (exposures, `track`, summaries). Default on.
    pub send_events: Option<bool>,
    /// How often events are sent (milliseconds).
    pub events_flush_interval_ms: Option<u32>,
    /// The most events queued.
    pub events_capacity: Option<u32>,
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

/// The builder `options` describe.
pub(crate) fn builder(sdk_key: String, o: ClientOptions) -> ClientBuilder {
    // Events and the User-Agent name this addon, not the Rust SDK it wraps.
    let mut b = Client::builder(sdk_key).sdk_identity("vexil-node", env!("CARGO_PKG_VERSION"));
    if let Some(url) = o.base_url {
        b = b.base_url(url);
    }
    if let Some(path) = o.file {
        b = match o.file_watch_interval_ms {
            Some(interval) => b.file_watched(path, ms(interval)),
            None => b.file(path),
        };
    } else if o.offline == Some(true) {
        b = b.offline();
    } else if let Some(interval) = o.poll_interval_ms {
        b = b.polling(PollingConfig::default().interval(ms(interval)));
    } else if o.reconnect_initial_delay_ms.is_some() || o.reconnect_max_delay_ms.is_some() {
        let initial = ms(o.reconnect_initial_delay_ms.unwrap_or(1_000));
        let max = ms(o.reconnect_max_delay_ms.unwrap_or(30_000)).max(initial);
        b = b.streaming(StreamingConfig::default().reconnect_delay(initial, max));
    }
    if let Some(path) = o.last_known_good {
        b = b.last_known_good(path);
    }
    if let Some(t) = o.init_timeout_ms {
        b = b.init_timeout(ms(t));
    }
    if let Some(t) = o.connect_timeout_ms {
        b = b.connect_timeout(ms(t));
    }
    if let Some(t) = o.close_timeout_ms {
        b = b.close_timeout(ms(t));
    }
    let mut events = if o.send_events == Some(false) {
        EventsConfig::disabled()
    } else {
        EventsConfig::default()
    };
    if let Some(t) = o.events_flush_interval_ms {
        events = events.flush_interval(ms(t));
    }
    if let Some(n) = o.events_capacity {
        events = events.capacity(n as usize);
    }
    b.events(events)
}
