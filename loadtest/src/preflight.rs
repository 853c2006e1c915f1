//! Checks before a scenario starts, so that a run the machine cannot hold fails at once and
//! says which limit to raise, instead of running silently into its deadline.
//!
//! Every subscriber costs one file descriptor in a worker process and one in a relay
//! process, and one ephemeral port of its source address. The load test raises its own soft
//! `RLIMIT_NOFILE` to the hard limit (workers and the relays it starts inherit it; the relay
//! raises its own too), then compares what the plan needs with what the machine allows.

use std::fmt;

/// Descriptors a process needs beside its sockets (runtime, pipes, logs, upstream, probes).
pub const SPARE_DESCRIPTORS: u64 = 256;
/// Ephemeral ports of one source address left unused (other programs, `TIME_WAIT`).
pub const SPARE_PORTS: u64 = 1_000;
/// Source addresses the workers use (`127.0.0.2 ..= 127.0.0.254`).
pub const SOURCE_ADDRESSES: u64 = 253;

/// The limits of this machine that bound a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Soft `RLIMIT_NOFILE` of this process, after raising it.
    pub nofile_soft: u64,
    /// Hard `RLIMIT_NOFILE` (what children may raise theirs to).
    pub nofile_hard: u64,
    /// `net.ipv4.ip_local_port_range`, inclusive.
    pub ports: (u16, u16),
}

impl Limits {
    /// Raises this process's soft `RLIMIT_NOFILE` to the hard limit and reads the limits.
    pub fn detect() -> anyhow::Result<Self> {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
            && soft < hard
        {
            let mut raised = limit;
            raised.current = Some(hard);
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(error = %e, "cannot raise the file-descriptor limit");
            }
        }
        let now = getrlimit(Resource::Nofile);
        let range =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        Ok(Self {
            nofile_soft: now.current.unwrap_or(u64::MAX),
            nofile_hard: now.maximum.unwrap_or(u64::MAX),
            ports: parse_port_range(&range).unwrap_or((32_768, 60_999)),
        })
    }

    /// Ephemeral ports per source address.
    pub fn port_count(&self) -> u64 {
        u64::from(self.ports.1.saturating_sub(self.ports.0)) + 1
    }
}

/// What a run needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Subscribers in all.
    pub subscribers: u32,
    /// Subscribers per worker process.
    pub per_worker: u32,
    /// Subscribers per source address.
    pub per_address: u32,
    /// Relay processes sharing them (0: no relay of ours, e.g. a relay given by URL).
    pub relays: u32,
}

/// Why a run cannot start: each line names the limit and the number needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub Vec<String>);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "preflight: {}", self.0.join("; "))
    }
}

impl std::error::Error for Refusal {}

/// Compares `needs` with `limits`.
pub fn check(needs: Needs, limits: Limits) -> Result<(), Refusal> {
    let mut problems = Vec::new();
    let per_worker = u64::from(needs.per_worker.min(needs.subscribers.max(1)));
    let worker_need = per_worker + SPARE_DESCRIPTORS;
    if worker_need > limits.nofile_soft {
        problems.push(format!(
            "a worker holds {per_worker} subscribers and needs {worker_need} file descriptors, \
             RLIMIT_NOFILE allows {}: lower --per-worker to {} or raise the limit (ulimit -n / \
             LimitNOFILE)",
            limits.nofile_soft,
            limits.nofile_soft.saturating_sub(SPARE_DESCRIPTORS)
        ));
    }
    if needs.relays > 0 {
        let per_relay = u64::from(needs.subscribers).div_ceil(u64::from(needs.relays));
        let relay_need = per_relay + SPARE_DESCRIPTORS;
        if relay_need > limits.nofile_hard {
            let usable = limits.nofile_hard.saturating_sub(SPARE_DESCRIPTORS).max(1);
            problems.push(format!(
                "each of {} relay process(es) would hold {per_relay} streams and need \
                 {relay_need} file descriptors, the hard RLIMIT_NOFILE is {}: use --relays {} \
                 or more, or raise the hard limit",
                needs.relays,
                limits.nofile_hard,
                u64::from(needs.subscribers).div_ceil(usable)
            ));
        }
    }
    let usable_ports = limits.port_count().saturating_sub(SPARE_PORTS);
    if u64::from(needs.per_address) > usable_ports {
        problems.push(format!(
            "--per-address {} needs that many ephemeral ports per source address, the range \
             {}-{} leaves {usable_ports}: lower --per-address or widen \
             net.ipv4.ip_local_port_range",
            needs.per_address, limits.ports.0, limits.ports.1
        ));
    }
    let addresses = u64::from(needs.subscribers).div_ceil(u64::from(needs.per_address.max(1)));
    if addresses > SOURCE_ADDRESSES {
        problems.push(format!(
            "{} subscribers at --per-address {} need {addresses} source addresses, loopback \
             offers {SOURCE_ADDRESSES}: raise --per-address",
            needs.subscribers, needs.per_address
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Refusal(problems))
    }
}

/// Detects the limits, checks `needs` against them and says what it found (stderr).
pub fn run(needs: Needs) -> anyhow::Result<Limits> {
    let limits = Limits::detect()?;
    eprintln!(
        "preflight: RLIMIT_NOFILE {} (hard {}), ephemeral ports {}-{}; {} subscribers, {} per \
         worker, {} per source address, {} relay process(es)",
        limits.nofile_soft,
        limits.nofile_hard,
        limits.ports.0,
        limits.ports.1,
        needs.subscribers,
        needs.per_worker,
        needs.per_address,
        needs.relays
    );
    check(needs, limits)?;
    Ok(limits)
}

fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    let lo = it.next()?.ok()?;
    let hi = it.next()?.ok()?;
    (lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Limits = Limits {
        nofile_soft: 20_000,
        nofile_hard: 20_000,
        ports: (32_768, 60_999),
    };

    fn needs(subscribers: u32, relays: u32) -> Needs {
        Needs {
            subscribers,
            per_worker: 5_000,
            per_address: 8_000,
            relays,
        }
    }

    #[test]
    fn a_run_that_fits_passes() {
        assert_eq!(check(needs(18_000, 1), HERE), Ok(()));
        assert_eq!(check(needs(50_000, 3), HERE), Ok(()));
        assert_eq!(HERE.port_count(), 28_232);
    }

    #[test]
    fn too_many_streams_for_one_relay_names_the_relays_needed() {
        let Err(Refusal(p)) = check(needs(50_000, 1), HERE) else {
            panic!("50,000 streams fit one relay of 20,000 descriptors")
        };
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("50256 file descriptors"), "{}", p[0]);
        assert!(p[0].contains("--relays 3"), "{}", p[0]);
    }

    #[test]
    fn workers_ports_and_addresses_are_checked() {
        let n = Needs {
            subscribers: 100_000,
            per_worker: 19_900,
            per_address: 30_000,
            relays: 10,
        };
        let Err(Refusal(p)) = check(n, HERE) else {
            panic!("accepted")
        };
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("needs 20156 file descriptors"), "{}", p[0]);
        assert!(p[1].contains("leaves 27232"), "{}", p[1]);

        let n = Needs {
            subscribers: 100_000,
            per_worker: 5_000,
            per_address: 100,
            relays: 10,
        };
        let Err(Refusal(p)) = check(n, HERE) else {
            panic!("accepted")
        };
        assert!(p[0].contains("need 1000 source addresses"), "{p:?}");
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32_768, 60_999)));
        assert_eq!(parse_port_range("9 1"), None);
        assert_eq!(parse_port_range(""), None);
        let l = Limits::detect().unwrap();
        assert!(l.nofile_soft <= l.nofile_hard && l.port_count() > 0);
    }
}
