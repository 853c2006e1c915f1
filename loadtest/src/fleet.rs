//! The parent's side of the subscriber workers: spawns them, merges their observations into a
//! [`Ledger`] (per subscriber: connected or not, the version held, when each version was
//! reached, gaps), and stops them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::subscriber::{Backoff, Kind, Observation, StreamTarget};
use crate::worker::WorkerPlan;

/// How to run the subscribers.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    /// The `vexil-loadtest` binary to run as workers.
    pub exe: PathBuf,
    /// Where subscribers connect.
    pub target: StreamTarget,
    /// Total subscribers.
    pub subscribers: u32,
    /// Subscribers per worker process (each needs one file descriptor per subscriber).
    pub per_worker: u32,
    /// Subscribers per source address.
    pub per_address: u32,
    /// Reconnection policy.
    pub backoff: Backoff,
    /// Concurrent initial connections per worker.
    pub ramp: usize,
}

/// One subscriber's history as seen by the parent.
#[derive(Debug, Clone, Default)]
pub struct SubState {
    /// Connected now (status 200 and not down since).
    pub up: bool,
    /// The version held (last put or change applied).
    pub version: Option<u64>,
    /// `(version, at_ns)` each time the version rose.
    pub reached: Vec<(u64, u64)>,
    /// Full states received.
    pub puts: u32,
    /// Changes received.
    pub changes: u32,
    /// Changes that skipped versions (or arrived before any state): a protocol violation.
    pub gaps: u32,
    /// Versions skipped by those gaps.
    pub missed_versions: u64,
    /// Times the stream went down.
    pub downs: u32,
    /// The last reason it went down.
    pub last_down: Option<String>,
}

/// Every subscriber's state, indexed by subscriber number.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Per subscriber.
    pub subs: Vec<SubState>,
}

impl Ledger {
    /// A ledger for `n` subscribers.
    pub fn new(n: u32) -> Self {
        Self {
            subs: vec![SubState::default(); n as usize],
        }
    }

    /// Applies one observation.
    pub fn apply(&mut self, obs: Observation) {
        match obs {
            Observation::Up { s, .. } => {
                if let Some(sub) = self.subs.get_mut(s as usize) {
                    sub.up = true;
                }
            }
            Observation::Down { s, why, .. } => {
                if let Some(sub) = self.subs.get_mut(s as usize) {
                    sub.up = false;
                    sub.downs += 1;
                    sub.last_down = Some(why);
                }
            }
            Observation::Event { s, k, v, at } => {
                let Some(sub) = self.subs.get_mut(s as usize) else {
                    return;
                };
                match k {
                    Kind::Put => sub.puts += 1,
                    Kind::Change => {
                        sub.changes += 1;
                        match sub.version {
                            Some(cur) if v > cur + 1 => {
                                sub.gaps += 1;
                                sub.missed_versions += v - cur - 1;
                            }
                            None => sub.gaps += 1,
                            _ => {}
                        }
                    }
                }
                if sub.version.is_none_or(|cur| v > cur) {
                    sub.reached.push((v, at));
                }
                // A put may legitimately move a subscriber back (another lineage); follow it.
                if k == Kind::Put || sub.version.is_none_or(|cur| v > cur) {
                    sub.version = Some(v);
                }
            }
        }
    }

    /// Subscribers connected and holding at least `version`.
    pub fn current(&self, version: u64) -> usize {
        self.subs
            .iter()
            .filter(|s| s.up && s.version.is_some_and(|v| v >= version))
            .count()
    }

    /// Subscribers that received a state at all.
    pub fn with_state(&self) -> usize {
        self.subs.iter().filter(|s| s.version.is_some()).count()
    }

    /// When subscriber `s` first held `version` or later (ns since the epoch).
    pub fn reached_at(&self, s: usize, version: u64) -> Option<u64> {
        self.subs
            .get(s)?
            .reached
            .iter()
            .find(|(v, _)| *v >= version)
            .map(|(_, at)| *at)
    }

    /// A few distinct reasons subscribers went down, with counts, for error reports.
    pub fn down_reasons(&self, limit: usize) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for s in &self.subs {
            if let Some(why) = &s.last_down {
                *counts.entry(why.as_str()).or_default() += 1;
            }
        }
        let mut v: Vec<_> = counts.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
        v.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        v.truncate(limit);
        v
    }
}

/// How often a wait prints a progress line.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

/// Running worker processes and the ledger their observations feed.
#[derive(Debug)]
pub struct Fleet {
    workers: Vec<Worker>,
    rx: mpsc::UnboundedReceiver<Observation>,
    /// Everything observed so far (pumped by [`Fleet::wait_until`] and [`Fleet::stop`]).
    pub ledger: Ledger,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Fleet {
    /// Starts `ceil(subscribers / per_worker)` worker processes.
    pub async fn spawn(plan: &FleetPlan) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let per_worker = plan.per_worker.max(1);
        let mut workers = Vec::new();
        let mut first = 0;
        while first < plan.subscribers {
            let count = per_worker.min(plan.subscribers - first);
            let wp = WorkerPlan {
                target: plan.target.clone(),
                first,
                count,
                per_address: plan.per_address,
                backoff: plan.backoff,
                ramp: plan.ramp,
            };
            let mut child = Command::new(&plan.exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start the worker {}", plan.exe.display()))?;
            let mut stdin = child.stdin.take().context("worker has no stdin")?;
            let stdout = child.stdout.take().context("worker has no stdout")?;
            let mut line = serde_json::to_vec(&wp)?;
            line.push(b'\n');
            stdin
                .write_all(&line)
                .await
                .context("cannot send the worker its plan")?;
            stdin.flush().await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Observation>(&line) {
                        Ok(obs) => {
                            if tx.send(obs).is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, %line, "unreadable worker output"),
                    }
                }
            });
            workers.push(Worker { child, stdin });
            first += count;
        }
        Ok(Self {
            workers,
            rx,
            ledger: Ledger::new(plan.subscribers),
        })
    }

    /// Applies observations as they arrive until every subscriber is connected and holds
    /// `version` or later (true) or `deadline` passes (false). Event-driven: it wakes on each
    /// observation, never polls; every [`PROGRESS_EVERY`] it prints a progress line about
    /// `what` to stderr, so that a long wait is never silent.
    pub async fn wait_current(&mut self, deadline: Instant, version: u64, what: &str) -> bool {
        let n = self.ledger.subs.len();
        let started = Instant::now();
        let mut next_progress = started + PROGRESS_EVERY;
        loop {
            self.drain();
            if self.ledger.current(version) == n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if now >= next_progress {
                eprintln!("{}", self.progress(what, version, started));
                next_progress = now + PROGRESS_EVERY;
            }
            let wake = deadline.min(next_progress);
            match tokio::time::timeout(wake.saturating_duration_since(now), self.rx.recv()).await {
                Ok(Some(obs)) => self.ledger.apply(obs),
                Ok(None) => {
                    tracing::warn!("every worker exited");
                    eprintln!(
                        "{} (every worker exited)",
                        self.progress(what, version, started)
                    );
                    return self.ledger.current(version) == n;
                }
                Err(_) => {}
            }
        }
    }

    /// One progress line: how many subscribers hold `version`, are connected, ever got a
    /// state, and why the last ones went down.
    pub fn progress(&self, what: &str, version: u64, since: Instant) -> String {
        let l = &self.ledger;
        let up = l.subs.iter().filter(|s| s.up).count();
        let downs: u32 = l.subs.iter().map(|s| s.downs).sum();
        let mut line = format!(
            "  [{:>6.1} s] {what}: {} of {} at version ≥ {version}, {} connected, {} with a state, {} disconnections",
            since.elapsed().as_secs_f64(),
            l.current(version),
            l.subs.len(),
            up,
            l.with_state(),
            downs
        );
        let reasons = l.down_reasons(2);
        if !reasons.is_empty() {
            line.push_str(&format!(" (last reasons: {reasons:?})"));
        }
        line
    }

    /// Applies whatever has arrived, without waiting.
    pub fn drain(&mut self) {
        while let Ok(obs) = self.rx.try_recv() {
            self.ledger.apply(obs);
        }
    }

    /// Process ids of the workers.
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    /// Stops every worker, waits for them (killing any that hang) and returns the ledger
    /// with everything they reported.
    pub async fn stop(mut self) -> Ledger {
        for w in &mut self.workers {
            let _ = w.stdin.write_all(b"stop\n").await;
            let _ = w.stdin.flush().await;
        }
        for w in &mut self.workers {
            if tokio::time::timeout(Duration::from_secs(15), w.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(pid = ?w.child.id(), "worker did not stop; killing it");
                let _ = w.child.kill().await;
            }
        }
        self.workers.clear();
        // The readers end when the workers' stdout closes.
        while let Some(obs) = self.rx.recv().await {
            self.ledger.apply(obs);
        }
        self.ledger
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: u32, k: Kind, v: u64, at: u64) -> Observation {
        Observation::Event { s, k, v, at }
    }

    #[test]
    fn ledger_tracks_versions_gaps_and_reach_times() {
        let mut l = Ledger::new(3);
        l.apply(Observation::Up { s: 0, at: 1 });
        l.apply(ev(0, Kind::Put, 10, 2));
        l.apply(ev(0, Kind::Change, 11, 3));
        l.apply(ev(0, Kind::Change, 11, 4)); // duplicate: ignored
        l.apply(ev(0, Kind::Change, 14, 5)); // skipped 12 and 13
        assert_eq!(l.subs[0].version, Some(14));
        assert_eq!((l.subs[0].gaps, l.subs[0].missed_versions), (1, 2));
        assert_eq!(l.reached_at(0, 11), Some(3));
        assert_eq!(l.reached_at(0, 12), Some(5));
        assert_eq!(l.reached_at(0, 15), None);
        assert_eq!(l.current(14), 1);

        // A change before any state is a gap; a put resyncs without one.
        l.apply(Observation::Up { s: 1, at: 1 });
        l.apply(ev(1, Kind::Change, 5, 1));
        assert_eq!(l.subs[1].gaps, 1);
        l.apply(ev(1, Kind::Put, 20, 2));
        assert_eq!((l.subs[1].version, l.subs[1].gaps), (Some(20), 1));

        l.apply(Observation::Down {
            s: 0,
            at: 9,
            why: "connection closed".into(),
        });
        assert_eq!(l.current(14), 1, "subscriber 1 holds 20");
        assert_eq!(l.subs[0].downs, 1);
        assert_eq!(l.with_state(), 2);
        assert_eq!(l.down_reasons(5), vec![("connection closed".to_owned(), 1)]);
        // Unknown subscriber numbers are ignored.
        l.apply(ev(99, Kind::Put, 1, 1));
    }
}
