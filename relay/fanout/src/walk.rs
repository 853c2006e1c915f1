//! The lean path's fan-out: one writer per environment and shard walks its subscribers'
//! sockets with non-blocking writes, instead of one task per connection waking for each
//! change.
//!
//! With a task per connection, a change wakes every subscriber's task through the broadcast
//! channel, schedules it, polls its stream and re-registers its waiter: that machinery cost
//! more CPU than the `write(2)` calls themselves (`docs/benchmarks.md`, issue 18). Here each
//! environment has up to one writer per shard (shards: the host's cores, so that walks run
//! on every worker thread), holding the environment's single broadcast receiver for that
//! shard. For each message it walks its subscribers and writes the pre-encoded frame to each
//! socket with `try_write`: the floor's loop.
//!
//! - A subscriber whose socket does not take the whole frame (a slow reader, a full send
//!   buffer) is handed back to its connection's task with the bytes left to write, from the
//!   exact offset; the task writes them (with the 30 s write timeout) and continues as an
//!   ordinary [`crate::Subscription`] from the version its client then holds: the ring's
//!   changes after it, or a `put` (see [`crate::Hub`]'s resume rules). It stays there.
//! - Each subscriber carries the sequence number its client is at (`floor`); a message at or
//!   below it is skipped, so one registering while a change is walked gets it exactly once.
//!   The writer remembers the last sequence number it walked: a subscriber registering
//!   behind it (it chose its start before a change the writer has already walked) is handed
//!   back at once to catch up through the ring.
//! - The connection's task stays parked while its socket is walked: it wakes only when the
//!   client sends something (a close: the subscriber ends at once, counted out) or when the
//!   writer hands the socket back (closing: drain, removal, revoked key; or slow).
//! - Keep-alives, drain tickets, key revocation (`EndsWhen`) and a writer that lags its own
//!   receiver (every subscriber behind gets the current `put`) work as for subscriptions.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use metrics::Counter;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::frame::KEEP_ALIVE;
use crate::hub::{Current, EnvChannel, Shared, Signal};
use crate::metrics::SubscriberGauge;
use crate::subscriber::{EndsWhen, Start};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent: a poisoned lock is still valid.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How many writers an environment may have: one per core, so walks spread over the
/// runtime's worker threads.
fn shard_count() -> usize {
    static SHARDS: OnceLock<usize> = OnceLock::new();
    *SHARDS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(64)
    })
}

/// One environment's writers and counts.
#[derive(Debug)]
pub(crate) struct Walkers {
    /// Each shard's writer, by its inbox; `None` while none runs. Registration and a writer
    /// retiring meet under this lock, so no registration is left in a retired inbox.
    shards: Mutex<Vec<Option<Arc<Inbox>>>>,
    /// Subscribers in the walked state (created, not yet ended or handed back).
    walked: AtomicUsize,
    /// Broadcast receivers the writers hold (not subscribers).
    writers: AtomicUsize,
}

impl Walkers {
    pub(crate) fn new() -> Self {
        Self {
            shards: Mutex::new(vec![None; shard_count()]),
            walked: AtomicUsize::new(0),
            writers: AtomicUsize::new(0),
        }
    }

    /// Open streams, given the channel's broadcast receiver count.
    pub(crate) fn streams(&self, receivers: usize) -> usize {
        (receivers + self.walked.load(Ordering::Acquire))
            .saturating_sub(self.writers.load(Ordering::Acquire))
    }
}

/// Subscribers waiting for a writer to take them.
#[derive(Debug, Default)]
struct Inbox {
    pending: Mutex<Vec<Arc<Slot>>>,
    /// Set when a client closed: the writer drops ended slots (closing their sockets) at
    /// once rather than at its next message.
    departed: AtomicBool,
    notify: Notify,
}

/// A walked subscriber's state: where its client stands, and the counts it holds.
#[derive(Debug)]
pub(crate) struct Walked {
    chan: Arc<EnvChannel>,
    /// The version the client holds once every byte handed to the socket is written.
    version: u64,
    /// Sequence number of the last message the client has (or is being written).
    floor: u64,
    /// The version the fleet view counts it at, once it joined (after its start).
    held: Option<u64>,
    ends: EndsWhen,
    events_sent: Counter,
    _gauge: SubscriberGauge,
}

impl Walked {
    pub(crate) fn new(chan: Arc<EnvChannel>, start: &Start, seq: u64, ends: EndsWhen) -> Box<Self> {
        let version = match start {
            Start::Put(c) => c.version,
            Start::Replay { version, .. } | Start::Current { version } => *version,
        };
        chan.walk.walked.fetch_add(1, Ordering::AcqRel);
        Box::new(Self {
            version,
            floor: seq,
            held: None,
            ends,
            events_sent: chan.metrics.events_sent.clone(),
            _gauge: SubscriberGauge::enter(&chan.metrics.subscribers),
            chan,
        })
    }

    pub(crate) fn channel(&self) -> &Arc<EnvChannel> {
        &self.chan
    }

    /// The version the client holds once the bytes handed over are written.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn ends(&self) -> EndsWhen {
        self.ends
    }

    /// Counts a frame written (keep-alives are not events).
    pub(crate) fn sent(&self) {
        self.events_sent.increment(1);
    }

    /// The client now holds [`Walked::version`]: the fleet view counts it there.
    pub(crate) fn settle(&mut self) {
        match self.held {
            None => self.chan.fleet.joined(self.version),
            Some(from) if self.version > from => self.chan.fleet.moved(from, self.version),
            Some(_) => return,
        }
        self.held = Some(self.version);
    }
}

impl Drop for Walked {
    fn drop(&mut self) {
        if let Some(v) = self.held {
            self.chan.fleet.left(v);
        }
        self.chan.walk.walked.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why the writer hands a socket back to its connection's task.
#[derive(Debug)]
pub(crate) enum Exit {
    /// The stream ends (drain, removal, revoked key, environment without state, or a write
    /// error).
    Close,
    /// Write `rest` (possibly nothing) and continue as a subscription.
    Continue { rest: Bytes },
}

#[derive(Debug)]
enum Phase {
    /// The writer walks it.
    Walked(Box<Walked>),
    /// The writer handed it back; the connection's task takes it.
    Out(Exit, Box<Walked>),
    /// Ended or taken.
    Gone,
}

/// One walked connection, shared by its writer and its own (parked) task.
#[derive(Debug)]
pub(crate) struct Slot {
    tcp: TcpStream,
    phase: Mutex<Phase>,
    /// Wakes the connection's task when the writer hands the socket back.
    handed: Notify,
    /// The writer's inbox, once registered.
    inbox: OnceLock<Arc<Inbox>>,
}

impl Slot {
    pub(crate) fn new(tcp: TcpStream, walked: Box<Walked>) -> Arc<Self> {
        Arc::new(Self {
            tcp,
            phase: Mutex::new(Phase::Walked(walked)),
            handed: Notify::new(),
            inbox: OnceLock::new(),
        })
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The connection's side while walked: returns when the writer hands the socket back,
    /// or `None` once the client closed (the subscriber then ends here).
    pub(crate) async fn parked(&self) -> Option<(Exit, Box<Walked>)> {
        loop {
            tokio::select! {
                () = self.handed.notified() => {
                    let mut phase = lock(&self.phase);
                    if matches!(*phase, Phase::Out(..))
                        && let Phase::Out(exit, walked) = std::mem::replace(&mut *phase, Phase::Gone)
                    {
                        return Some((exit, walked));
                    }
                }
                // The client sends nothing on an SSE connection: readable means it closed
                // (or sent junk, which is discarded).
                ready = self.tcp.readable() => {
                    if client_gone(&self.tcp, ready) {
                        let ended = std::mem::replace(&mut *lock(&self.phase), Phase::Gone);
                        drop(ended);
                        if let Some(inbox) = self.inbox.get() {
                            inbox.departed.store(true, Ordering::Release);
                            inbox.notify.notify_one();
                        }
                        return None;
                    }
                }
            }
        }
    }

    /// Hands the socket back (under the phase lock the caller holds).
    fn hand_back(&self, phase: &mut Phase, exit: Exit) {
        if let Phase::Walked(w) = std::mem::replace(phase, Phase::Gone) {
            *phase = Phase::Out(exit, w);
            self.handed.notify_one();
        }
    }
}

/// Whether a readable socket means the client is gone (reads and discards what it sent).
pub(crate) fn client_gone(tcp: &TcpStream, ready: io::Result<()>) -> bool {
    if ready.is_err() {
        return true;
    }
    let mut sink = [0u8; 64];
    match tcp.try_read(&mut sink) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

/// Gives `slot` (its starting frames written) to a writer of its environment, starting one
/// if its shard has none.
pub(crate) fn register(shared: &Arc<Shared>, slot: Arc<Slot>) {
    let (chan, ticket) = {
        let phase = lock(&slot.phase);
        let Phase::Walked(w) = &*phase else { return };
        (Arc::clone(&w.chan), w.ends.ticket)
    };
    let shard = ticket as usize % shard_count();
    let mut shards = lock(&chan.walk.shards);
    let inbox = match &shards[shard] {
        Some(inbox) => Arc::clone(inbox),
        None => {
            let inbox = Arc::new(Inbox::default());
            chan.walk.writers.fetch_add(1, Ordering::AcqRel);
            let (rx, walked) = chan.subscribe_at();
            let writer = Writer {
                shared: Arc::clone(shared),
                chan: Arc::clone(&chan),
                inbox: Arc::clone(&inbox),
                shard,
                slots: Vec::new(),
                walked,
            };
            tokio::spawn(writer.run(rx));
            shards[shard] = Some(Arc::clone(&inbox));
            inbox
        }
    };
    let _ = slot.inbox.set(Arc::clone(&inbox));
    // Pushed before the registry lock is released: a writer retires under that lock, after
    // finding its inbox empty.
    lock(&inbox.pending).push(slot);
    drop(shards);
    inbox.notify.notify_one();
}

/// What to do with one walked subscriber for one message.
enum Step<'a> {
    Skip,
    Close,
    /// Write `bytes`; the client then holds `version` at sequence `seq` (both `None` for a
    /// keep-alive).
    Write {
        bytes: &'a Bytes,
        seq: Option<u64>,
        version: Option<u64>,
    },
}

/// One writer: an environment's shard of walked subscribers.
struct Writer {
    shared: Arc<Shared>,
    chan: Arc<EnvChannel>,
    inbox: Arc<Inbox>,
    shard: usize,
    slots: Vec<Arc<Slot>>,
    /// Sequence number of the last change or snapshot walked: every subscriber walked has
    /// everything up to it.
    walked: u64,
}

impl Writer {
    async fn run(mut self, mut rx: broadcast::Receiver<Signal>) {
        loop {
            let received = tokio::select! {
                biased;
                received = rx.recv() => Some(received),
                () = self.inbox.notify.notified() => None,
            };
            self.admit();
            if self.inbox.departed.swap(false, Ordering::AcqRel) {
                self.slots
                    .retain(|slot| matches!(*lock(&slot.phase), Phase::Walked(_)));
            }
            match received {
                Some(Ok(signal)) => self.walk(&signal),
                Some(Err(RecvError::Lagged(missed))) => {
                    tracing::debug!(environment = %self.chan.id, missed, "a stream writer lagged: resyncing its subscribers");
                    self.resync();
                }
                Some(Err(RecvError::Closed)) => self.each(|_, _| Step::Close),
                None => {}
            }
            if self.slots.is_empty() && self.retire() {
                break;
            }
        }
        drop(rx);
        self.chan.walk.writers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Takes the pending subscribers; one behind the last message walked catches up on its
    /// own task.
    fn admit(&mut self) {
        let pending = std::mem::take(&mut *lock(&self.inbox.pending));
        for slot in pending {
            let mut phase = lock(&slot.phase);
            let Phase::Walked(w) = &*phase else { continue };
            if w.floor < self.walked {
                slot.hand_back(&mut phase, Exit::Continue { rest: Bytes::new() });
                continue;
            }
            drop(phase);
            self.slots.push(slot);
        }
    }

    /// Stops if nothing is left to walk and nobody is registering; false if someone is.
    fn retire(&mut self) -> bool {
        let mut shards = lock(&self.chan.walk.shards);
        if !lock(&self.inbox.pending).is_empty() {
            return false;
        }
        shards[self.shard] = None;
        true
    }

    fn walk(&mut self, signal: &Signal) {
        match signal {
            Signal::Change {
                seq,
                version,
                frame,
            } => {
                let (seq, version) = (*seq, *version);
                self.each(|_, w| {
                    if w.floor >= seq {
                        Step::Skip
                    } else {
                        Step::Write {
                            bytes: frame,
                            seq: Some(seq),
                            version: Some(version),
                        }
                    }
                });
                self.walked = self.walked.max(seq);
            }
            Signal::Snapshot { seq } => {
                let seq = *seq;
                let current = self.chan.current();
                self.put_to(current.as_deref(), |w| w.floor < seq);
                self.walked = self.walked.max(seq);
            }
            Signal::KeepAlive => {
                let bytes = Bytes::from_static(KEEP_ALIVE);
                self.each(|_, _| Step::Write {
                    bytes: &bytes,
                    seq: None,
                    version: None,
                });
            }
            Signal::Close => {
                let (shared, chan) = (Arc::clone(&self.shared), Arc::clone(&self.chan));
                self.each(|_, w| {
                    if w.ends.now(&shared, &chan) {
                        Step::Close
                    } else {
                        Step::Skip
                    }
                });
            }
        }
    }

    /// This writer missed messages: every subscriber that is not current gets the `put`
    /// (the writer's lag, not theirs: it does not count towards their lag limit).
    fn resync(&mut self) {
        let current = self.chan.current();
        let (shared, chan) = (Arc::clone(&self.shared), Arc::clone(&self.chan));
        if let Some(c) = &current {
            self.chan
                .metrics
                .lag_resyncs
                .increment(self.slots.len() as u64);
            self.walked = self.walked.max(c.seq);
        }
        let put = current.as_deref().and_then(Current::put);
        self.each(|_, w| {
            if w.ends.now(&shared, &chan) {
                return Step::Close;
            }
            match (&current, put) {
                (Some(c), _) if c.seq <= w.floor => Step::Skip,
                (Some(c), Some(put)) => Step::Write {
                    bytes: put.bytes(),
                    seq: Some(c.seq),
                    version: Some(c.version),
                },
                _ => Step::Close,
            }
        });
    }

    /// Writes `current`'s `put` to every subscriber `behind` says needs it (closing them
    /// all if the environment has no state to send).
    fn put_to(&mut self, current: Option<&Current>, behind: impl Fn(&Walked) -> bool) {
        let put = current.and_then(|c| Some((c, c.put()?)));
        self.each(|_, w| {
            if !behind(w) {
                return Step::Skip;
            }
            match put {
                Some((c, put)) if c.seq > w.floor => Step::Write {
                    bytes: put.bytes(),
                    seq: Some(c.seq),
                    version: Some(c.version),
                },
                Some(_) => Step::Skip,
                None => Step::Close,
            }
        });
    }

    /// Walks every subscriber with `step`, writing, handing back and dropping as it says.
    fn each<'a>(&mut self, mut step: impl FnMut(&Slot, &Walked) -> Step<'a>) {
        let mut i = 0;
        while i < self.slots.len() {
            if visit(&self.slots[i], &mut step) {
                i += 1;
            } else {
                // Order does not matter; the slot's last reference may be this one.
                self.slots.swap_remove(i);
            }
        }
    }
}

/// One subscriber, one message; false once the writer no longer walks it.
fn visit<'a>(slot: &Slot, step: &mut impl FnMut(&Slot, &Walked) -> Step<'a>) -> bool {
    let mut phase = lock(&slot.phase);
    let Phase::Walked(w) = &mut *phase else {
        return false;
    };
    let (bytes, seq, version) = match step(slot, w) {
        Step::Skip => return true,
        Step::Close => {
            slot.hand_back(&mut phase, Exit::Close);
            return false;
        }
        Step::Write {
            bytes,
            seq,
            version,
        } => (bytes, seq, version),
    };
    if let Some(seq) = seq {
        w.floor = seq;
    }
    if let Some(v) = version {
        w.version = v;
    }
    let written = match slot.tcp.try_write(bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => {
            slot.hand_back(&mut phase, Exit::Close);
            return false;
        }
    };
    if written == bytes.len() {
        if version.is_some() {
            w.sent();
            w.settle();
        }
        return true;
    }
    if version.is_some() {
        w.sent();
    }
    slot.hand_back(
        &mut phase,
        Exit::Continue {
            rest: bytes.slice(written..),
        },
    );
    false
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
