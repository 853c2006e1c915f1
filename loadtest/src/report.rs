//! Scenario results: a summary table on stdout and the same data as JSON (`--out`).

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

/// The machine a run was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Online cores.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// Load averages (1, 5, 15 min) when the report was made: other work on a shared
    /// machine inflates latencies.
    pub load_average: Option<[f64; 3]>,
}

impl Machine {
    /// Describes this machine.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            memory_mib,
            load_average: load_average(),
        }
    }
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`): how busy the shared machine was.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// One line of the summary: a figure, and the goal it is held to if there is one.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is measured.
    pub metric: String,
    /// The figure, formatted.
    pub value: String,
    /// The goal, formatted (empty if none).
    pub goal: String,
    /// Whether the goal is met (`None`: no goal).
    pub met: Option<bool>,
}

impl Row {
    /// A figure without a goal.
    pub fn info(metric: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            value: value.into(),
            goal: String::new(),
            met: None,
        }
    }

    /// A figure held to a goal.
    pub fn goal(
        metric: impl Into<String>,
        value: impl Into<String>,
        goal: impl Into<String>,
        met: bool,
    ) -> Self {
        Self {
            metric: metric.into(),
            value: value.into(),
            goal: goal.into(),
            met: Some(met),
        }
    }
}

/// A scenario's complete result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The command-line arguments it ran with.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Unix time the run started.
    pub started_unix: u64,
    /// Wall-clock duration, seconds.
    pub duration_s: f64,
    /// The summary.
    pub rows: Vec<Row>,
    /// Every figure, machine-readable.
    pub details: Value,
    /// Whether the run itself is valid (e.g. no missed versions); goals may still be unmet.
    pub passed: bool,
    /// Why the run is not valid, if it is not.
    pub failures: Vec<String>,
}

impl Report {
    /// Prints the summary table.
    pub fn print(&self) {
        println!();
        println!(
            "vexil-loadtest {}  ({} cores, {}; load average {})",
            self.scenario,
            self.machine.cores,
            self.machine.cpu_model,
            self.machine
                .load_average
                .map_or_else(|| "unknown".to_owned(), |l| format!("{:.1}", l[0]))
        );
        println!("  {}", self.command);
        let w = self
            .rows
            .iter()
            .map(|r| r.metric.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let v = self
            .rows
            .iter()
            .map(|r| r.value.len())
            .max()
            .unwrap_or(5)
            .max(5);
        println!("  {:<w$}  {:>v$}  goal", "metric", "value");
        for r in &self.rows {
            let mark = match r.met {
                Some(true) => "  met",
                Some(false) => "  NOT MET",
                None => "",
            };
            println!("  {:<w$}  {:>v$}  {}{mark}", r.metric, r.value, r.goal);
        }
        if self.passed {
            println!("  run valid ({:.1} s)", self.duration_s);
        } else {
            println!("  RUN INVALID:");
            for f in &self.failures {
                println!("    - {f}");
            }
        }
    }

    /// Writes the report as pretty JSON.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Formats milliseconds with a sensible precision.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// Formats a count with thousands separators.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_counts_and_milliseconds() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(18_000), "18,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(ms(1.234), "1.2 ms");
        assert_eq!(ms(123.4), "123 ms");
    }

    #[test]
    fn reads_the_load_average() {
        let l = load_average().unwrap();
        assert!(l.iter().all(|v| *v >= 0.0));
    }

    #[test]
    fn detects_the_machine() {
        let m = Machine::detect();
        assert!(m.cores >= 1);
        assert!(m.memory_mib > 0);
    }
}
