//! Analytics events: exposures (recorded automatically for evaluations in an experiment),
//! custom events ([`Client::track`](crate::Client::track)) and evaluation summaries, queued
//! in memory and delivered in the background to `POST /events/v1/bulk` on the server or
//! relay (or to an [`EventSink`] in tests).
//!
//! - `summary`: lock-free evaluation counters per flag × variation × reason;
//! - `dedup`: the bounded cache that sends each context × flag × variation exposure once;
//! - `sender`: the background loop: flush every interval or at N events, gzip, POST, retry;
//! - [`EventSink`]: an inspectable recorder for tests.
//!
//! Guarantees: recording never blocks, never allocates on a deduplicated exposure or a
//! plain evaluation, never fails an evaluation and never panics. The queue is bounded: when
//! full, the oldest event is dropped and counted ([`EventStats::dropped`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;
use vexil_eval::{CompiledSnapshot, Evaluation};
use vexil_schema::Context;
use vexil_schema::events::{
    CustomEvent, EVENTS_SCHEMA_VERSION, Event, EventBatch, Exposure, MAX_EVENT_KEY_LEN,
    MAX_EVENTS_PER_BATCH, MAX_SUMMARY_COUNTERS, RawEvent, SdkInfo, Summary,
};

mod dedup;
pub(crate) mod sender;
mod summary;

use dedup::ExposureCache;
use summary::Summaries;

/// The SDK name sent in every batch, unless [`crate::ClientBuilder::sdk_identity`] gives
/// another.
pub const SDK_NAME: &str = "vexil-rust";

/// Configures analytics events ([`crate::ClientBuilder::events`]).
///
/// Defaults: on, flush every 5 s or at 500 queued events, a queue of 10,000 events, 10,000
/// remembered exposures, summaries on, 3 attempts per batch.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    pub(crate) enabled: bool,
    pub(crate) flush_interval: Duration,
    pub(crate) flush_at: usize,
    pub(crate) capacity: usize,
    pub(crate) dedup_capacity: usize,
    pub(crate) summaries: bool,
    pub(crate) max_attempts: u32,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            flush_interval: Duration::from_secs(5),
            flush_at: 500,
            capacity: 10_000,
            dedup_capacity: 10_000,
            summaries: true,
            max_attempts: 3,
            request_timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl EventsConfig {
    /// No events at all: nothing is recorded, counted or sent.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// How often queued events and summaries are sent. Default 5 s (at least 10 ms).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Sends as soon as this many events are queued. Default 500.
    pub fn flush_at(mut self, events: usize) -> Self {
        self.flush_at = events.max(1);
        self
    }

    /// The most events queued; beyond it the oldest is dropped (and counted). Default 10,000.
    pub fn capacity(mut self, events: usize) -> Self {
        self.capacity = events.max(1);
        self
    }

    /// How many context × flag × variation exposures are remembered so that each is sent
    /// once. Default 10,000 (rounded up to a power of two).
    pub fn dedup_capacity(mut self, entries: usize) -> Self {
        self.dedup_capacity = entries;
        self
    }

    /// Whether evaluation summaries are counted and sent. Default on.
    pub fn summaries(mut self, on: bool) -> Self {
        self.summaries = on;
        self
    }

    /// Attempts per batch before it is dropped (and counted in [`EventStats::failed`]).
    /// Default 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Delays between attempts: exponential backoff with full jitter from `initial` up to
    /// `max`, or the server's `Retry-After` when it is longer. Default 1 s to 30 s.
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max.max(initial);
        self
    }

    /// Time limit of one upload. Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// Counters of the event pipeline, in [`crate::Status::events`] and
/// [`crate::Client::event_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventStats {
    /// Exposures and custom events queued since start.
    pub recorded: u64,
    /// Events waiting in the queue now.
    pub queued: u64,
    /// Events dropped because the queue was full (the oldest go first).
    pub dropped: u64,
    /// Events the receiver accepted.
    pub sent: u64,
    /// Events given up on: refused by the receiver (4xx), rejected one by one in its answer,
    /// or still failing after every attempt.
    pub failed: u64,
    /// Custom events refused at `track` (empty or over-long key, non-finite value).
    pub invalid: u64,
}

/// Records the events a client would send, for tests ([`crate::ClientBuilder::event_sink`]).
///
/// With a sink, events go to it instead of the network, in every mode (offline, file,
/// [`crate::TestData`]); [`crate::Client::flush`] delivers everything pending before it
/// returns.
///
/// ```
/// use vexil_sdk::{Client, Context, EventSink, TestData, TestFlag};
///
/// let td = TestData::new();
/// td.update(TestFlag::boolean("new-checkout").serve_value(true)).unwrap();
/// let sink = EventSink::new();
/// let client = Client::builder("unused")
///     .data_source(td)
///     .event_sink(sink.clone())
///     .build()
///     .unwrap();
/// let user = Context::new("user-1");
/// client.bool_variation("new-checkout", &user, false);
/// client.track_value("purchase", &user, 39.5);
/// client.flush();
/// assert_eq!(sink.custom_events()[0].event_key, "purchase");
/// assert_eq!(sink.summaries()[0].counters[0].count, 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    events: Arc<Mutex<Vec<Event>>>,
}

impl EventSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, events: impl IntoIterator<Item = Event>) {
        self.lock().extend(events);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every event delivered so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    /// Takes every event delivered so far, leaving the sink empty.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.lock())
    }

    /// The exposures delivered so far.
    pub fn exposures(&self) -> Vec<Exposure> {
        self.filter(|e| match e {
            Event::Exposure(x) => Some(x.clone()),
            _ => None,
        })
    }

    /// The custom events delivered so far.
    pub fn custom_events(&self) -> Vec<CustomEvent> {
        self.filter(|e| match e {
            Event::Custom(x) => Some(x.clone()),
            _ => None,
        })
    }

    /// The summaries delivered so far.
    pub fn summaries(&self) -> Vec<Summary> {
        self.filter(|e| match e {
            Event::Summary(x) => Some(x.clone()),
            _ => None,
        })
    }

    fn filter<T>(&self, f: impl Fn(&Event) -> Option<T>) -> Vec<T> {
        self.lock().iter().filter_map(f).collect()
    }
}

/// Where flushed events go.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// `POST /events/v1/bulk` upstream.
    Http(crate::source::http::Upstream),
    /// A test recorder.
    Sink(EventSink),
}

/// One client's event pipeline, shared by the evaluation path and the sender.
#[derive(Debug)]
pub(crate) struct Events {
    pub(crate) config: EventsConfig,
    queue: ArrayQueue<Event>,
    dedup: ExposureCache,
    summaries: Summaries,
    /// Wakes the sender when the queue reaches `flush_at`, or on [`crate::Client::flush`].
    pub(crate) wake: Notify,
    pub(crate) delivery: Delivery,
    pub(crate) sdk: SdkInfo,
    /// Start of the current summary interval (ms since the epoch).
    summary_start: AtomicU64,
    /// Serialises flushes (the sender's and `Client::flush` to a sink).
    flushing: Mutex<()>,
    recorded: AtomicU64,
    dropped: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) failed: AtomicU64,
    invalid: AtomicU64,
    /// Whether a 404 from the receiver was logged at warning level already.
    pub(crate) warned_missing: AtomicBool,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Events {
    /// `sdk` is the sender's name and version, stamped on every batch.
    pub(crate) fn new(config: EventsConfig, delivery: Delivery, sdk: (String, String)) -> Self {
        Self {
            queue: ArrayQueue::new(config.capacity.max(1)),
            dedup: ExposureCache::new(config.dedup_capacity),
            summaries: Summaries::default(),
            wake: Notify::new(),
            delivery,
            sdk: SdkInfo {
                name: sdk.0,
                version: sdk.1,
                instance_id: uuid::Uuid::new_v4().to_string(),
            },
            summary_start: AtomicU64::new(now_ms()),
            flushing: Mutex::new(()),
            recorded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            warned_missing: AtomicBool::new(false),
            config,
        }
    }

    /// Records an evaluation: counts it for the summary and, if it is in an experiment,
    /// queues an exposure unless this context × flag × variation was sent recently.
    #[inline]
    pub(crate) fn evaluated(
        &self,
        snapshot: &Arc<CompiledSnapshot>,
        pos: Option<u32>,
        e: &Evaluation<'_>,
        flag_key: &str,
        ctx: &Context,
    ) {
        let Some(pos) = pos else {
            return;
        };
        if self.config.summaries {
            self.summaries.count(snapshot, pos, e.variation, &e.reason);
        }
        if e.in_experiment {
            self.exposure(snapshot, pos, e, flag_key, ctx);
        }
    }

    #[inline]
    fn exposure(
        &self,
        snapshot: &CompiledSnapshot,
        pos: u32,
        e: &Evaluation<'_>,
        flag_key: &str,
        ctx: &Context,
    ) {
        // The context key is the experiment's unit: an anonymous context has none.
        let (Some(variation), Some(key)) = (e.variation, ctx.key()) else {
            return;
        };
        let kind = ctx.kind().unwrap_or("user");
        if self
            .dedup
            .insert(ExposureCache::hash(kind, key, flag_key, variation))
        {
            self.new_exposure(snapshot, pos, variation, flag_key, key, kind);
        }
    }

    #[cold]
    fn new_exposure(
        &self,
        snapshot: &CompiledSnapshot,
        pos: u32,
        variation: usize,
        flag_key: &str,
        key: &str,
        kind: &str,
    ) {
        let flag_version = snapshot.flag_at(pos).map_or(0, |f| f.config.version);
        self.push(Event::Exposure(Exposure {
            time: now_ms(),
            flag_key: flag_key.to_owned(),
            flag_version,
            environment_version: snapshot.version(),
            variation: u32::try_from(variation).unwrap_or(u32::MAX),
            context_key: key.to_owned(),
            context_kind: kind.to_owned(),
        }));
    }

    /// Queues a custom event.
    pub(crate) fn track(&self, event_key: &str, ctx: &Context, value: Option<f64>) {
        let valid_key = !event_key.is_empty() && event_key.len() <= MAX_EVENT_KEY_LEN;
        let valid_value = value.is_none_or(f64::is_finite);
        let Some(context_key) = ctx.key().filter(|_| valid_key && valid_value) else {
            self.invalid.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                event_key,
                "custom event not recorded: it needs a key of 1 to 256 bytes, a finite value \
                 and a context with a key"
            );
            return;
        };
        self.push(Event::Custom(CustomEvent {
            time: now_ms(),
            event_key: event_key.to_owned(),
            context_key: context_key.to_owned(),
            context_kind: ctx.kind().unwrap_or("user").to_owned(),
            value,
        }));
    }

    fn push(&self, event: Event) {
        self.recorded.fetch_add(1, Ordering::Relaxed);
        if self.queue.force_push(event).is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if self.queue.len() >= self.config.flush_at {
            self.wake.notify_one();
        }
    }

    /// The pipeline's counters.
    pub(crate) fn stats(&self) -> EventStats {
        EventStats {
            recorded: self.recorded.load(Ordering::Relaxed),
            queued: self.queue.len() as u64,
            dropped: self.dropped.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
        }
    }

    /// Takes everything pending, as batches of at most [`MAX_EVENTS_PER_BATCH`] events: the
    /// queued events, then the summary of the interval just ended (`current` is the
    /// snapshot served now, whose version the summary reports).
    pub(crate) fn take_batches(&self, current: Option<&Arc<CompiledSnapshot>>) -> Vec<EventBatch> {
        let mut events: Vec<Event> = Vec::with_capacity(self.queue.len());
        while let Some(e) = self.queue.pop() {
            events.push(e);
        }
        if self.config.summaries {
            let end = now_ms();
            let start = self.summary_start.swap(end, Ordering::Relaxed).min(end);
            let counters = self.summaries.drain(current);
            let environment_version = current.map_or(0, |s| s.version());
            for chunk in counters.chunks(MAX_SUMMARY_COUNTERS) {
                events.push(Event::Summary(Summary {
                    start,
                    end,
                    environment_version,
                    sdk: None,
                    counters: chunk.to_vec(),
                }));
            }
        }
        events
            .chunks(MAX_EVENTS_PER_BATCH)
            .map(|chunk| EventBatch {
                schema_version: EVENTS_SCHEMA_VERSION,
                sdk: Some(self.sdk.clone()),
                events: chunk.iter().map(RawEvent::from).collect(),
            })
            .collect()
    }

    /// Delivers everything pending to the sink, if this pipeline has one (`false` if not).
    pub(crate) fn flush_to_sink(&self, current: Option<&Arc<CompiledSnapshot>>) -> bool {
        let Delivery::Sink(sink) = &self.delivery else {
            return false;
        };
        let _one_at_a_time = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
        for batch in self.take_batches(current) {
            let n = batch.events.len() as u64;
            sink.push(batch.events.iter().filter_map(|e| e.decode().ok()));
            self.sent.fetch_add(n, Ordering::Relaxed);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(capacity: usize) -> Events {
        Events::new(
            EventsConfig::default().capacity(capacity),
            Delivery::Sink(EventSink::new()),
            (SDK_NAME.to_owned(), "0".to_owned()),
        )
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts() {
        let ev = events(2);
        let ctx = Context::new("u");
        for key in ["a", "b", "c"] {
            ev.track(key, &ctx, None);
        }
        let stats = ev.stats();
        assert_eq!((stats.recorded, stats.queued, stats.dropped), (3, 2, 1));
        let batches = ev.take_batches(None);
        let keys: Vec<_> = batches[0]
            .events
            .iter()
            .filter_map(|e| match e.decode() {
                Ok(Event::Custom(c)) => Some(c.event_key),
                _ => None,
            })
            .collect();
        assert_eq!(keys, ["b", "c"]);
    }

    #[test]
    fn invalid_custom_events_are_refused_and_counted() {
        let ev = events(10);
        ev.track("", &Context::new("u"), None);
        ev.track("k", &Context::new("u"), Some(f64::NAN));
        ev.track(&"k".repeat(257), &Context::new("u"), None);
        ev.track("k", &Context::anonymous(), None);
        assert_eq!(ev.stats().invalid, 4);
        assert_eq!(ev.stats().queued, 0);
    }
}
