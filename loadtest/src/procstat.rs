//! Resident memory and CPU time of a process, from `/proc/<pid>/status` and `/proc/<pid>/stat`,
//! and a sampler that tracks their peaks while a scenario runs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Kernel clock ticks per second for `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Converts clock ticks of CPU time to milliseconds.
pub fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / TICKS_PER_SECOND
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// User + system CPU time, clock ticks.
    pub cpu_ticks: u64,
}

/// Reads `pid`'s memory and CPU time; `None` if the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcSample {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:").unwrap_or(0),
        cpu_ticks: cpu_ticks(&stat)?,
    })
}

/// utime + stime from a `/proc/<pid>/stat` line (fields 14 and 15; the command name in
/// parentheses may hold spaces, so fields are counted after the last `)`).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3, so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peaks seen by a [`Sampler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Peaks {
    /// Highest CPU use over one sampling interval, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Highest resident set size sampled, KiB.
    pub rss_kib: u64,
    /// Number of samples taken.
    pub samples: u64,
}

/// Samples a process every `interval` in a background task until dropped or the process
/// exits; [`Sampler::peaks`] reads what it found. Switching to another pid (a restarted
/// process) keeps the peaks.
#[derive(Debug)]
pub struct Sampler {
    pid: Arc<Mutex<u32>>,
    peaks: Arc<Mutex<Peaks>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32, interval: Duration) -> Self {
        let pid = Arc::new(Mutex::new(pid));
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let (p, k) = (Arc::clone(&pid), Arc::clone(&peaks));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut last: Option<(u32, ProcSample, Instant)> = None;
            loop {
                tick.tick().await;
                let current = *p.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(s) = sample(current) else {
                    last = None;
                    continue;
                };
                let now = Instant::now();
                let mut peaks = k.lock().unwrap_or_else(PoisonError::into_inner);
                peaks.samples += 1;
                peaks.rss_kib = peaks.rss_kib.max(s.rss_kib);
                if let Some((lp, ls, lt)) = last
                    && lp == current
                {
                    let secs = now.duration_since(lt).as_secs_f64();
                    if secs > 0.0 {
                        let cores = s.cpu_ticks.saturating_sub(ls.cpu_ticks) as f64
                            / TICKS_PER_SECOND
                            / secs;
                        peaks.cpu_cores = peaks.cpu_cores.max(cores);
                    }
                }
                drop(peaks);
                last = Some((current, s, now));
            }
        });
        Self { pid, peaks, task }
    }

    /// Follows another process from now on (e.g. the restarted relay).
    pub fn follow(&self, pid: u32) {
        *self.pid.lock().unwrap_or_else(PoisonError::into_inner) = pid;
    }

    /// The peaks so far.
    pub fn peaks(&self) -> Peaks {
        *self.peaks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_times_after_the_command_name() {
        let line = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100";
        assert_eq!(cpu_ticks(line), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        assert_eq!(sample(u32::MAX), None);
    }
}
