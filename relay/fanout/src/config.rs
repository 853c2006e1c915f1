//! The distribution options both binaries take ([`DistributionArgs`], flattened into the
//! server's and the relay's clap configuration), so that the same `VEXIL_*` variable tunes
//! the hub and OFREP the same way wherever they run; and [`parse_without_env`], which
//! derives configuration defaults from the clap declarations alone.

use std::time::Duration;

use clap::{Args, Parser};

use crate::hub::HubConfig;
use crate::ofrep::OfrepConfig;

/// Hub and OFREP options shared by `vexil-server` and `vexil-relay`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[non_exhaustive]
pub struct DistributionArgs {
    /// Recent changes kept per environment in memory for `Last-Event-ID` resume.
    #[arg(long, env = "VEXIL_STREAM_RING_CAPACITY", default_value_t = 1024)]
    pub stream_ring_capacity: usize,

    /// Interval between keep-alive comments on every SSE stream served.
    #[arg(long, env = "VEXIL_KEEP_ALIVE", default_value = "15s", value_parser = parse_duration)]
    pub keep_alive: Duration,

    /// OFREP requests per second allowed per SDK key (0: unlimited).
    #[arg(long, env = "VEXIL_OFREP_RATE_LIMIT", default_value_t = 10_000)]
    pub ofrep_rate_limit: u32,
}

/// Only to parse the defaults of [`DistributionArgs`] alone.
#[derive(Parser)]
struct Alone {
    #[command(flatten)]
    args: DistributionArgs,
}

impl Default for DistributionArgs {
    /// The clap defaults (no variable read).
    fn default() -> Self {
        match parse_without_env::<Alone>(&["vexil"]) {
            Ok(alone) => alone.args,
            // Every option has a default that parses: covered by a unit test.
            Err(e) => unreachable!("distribution defaults do not parse: {e}"),
        }
    }
}

impl DistributionArgs {
    /// The hub's tuning from these options (other settings at their defaults).
    pub fn hub_config(&self) -> HubConfig {
        HubConfig::default()
            .ring_capacity(self.stream_ring_capacity)
            .keep_alive(self.keep_alive)
    }

    /// The OFREP endpoints' tuning from these options.
    pub fn ofrep_config(&self) -> OfrepConfig {
        OfrepConfig::default().rate_limit(self.ofrep_rate_limit)
    }
}

/// Parses `args` (the first being the program name) with clap, without reading any
/// environment variable: every option not in `args` takes its declared default. Lets
/// `Config::with_database`-style constructors take their defaults from the declarations
/// instead of repeating them.
pub fn parse_without_env<T: Parser>(args: &[&str]) -> Result<T, clap::Error> {
    let command = T::command().mut_args(|a| a.env(None::<&'static str>));
    let matches = command.try_get_matches_from(args)?;
    T::from_arg_matches(&matches)
}

/// Parses `250ms`, `15s`, `5m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 15s, 5m or 1h"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        other => Err(format!(
            "unknown unit {other:?} in {s:?}: use ms, s, m or h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "1.5s", "-1s", "3d", "ms5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_are_the_engines_defaults() {
        let d = DistributionArgs::default();
        assert_eq!(d.stream_ring_capacity, HubConfig::default().ring_capacity);
        assert_eq!(d.keep_alive, HubConfig::default().keep_alive);
        assert_eq!(d.ofrep_rate_limit, OfrepConfig::default().rate_limit);
    }

    #[test]
    fn flags_set_the_hub_and_ofrep() {
        let d = parse_without_env::<Alone>(&[
            "vexil",
            "--stream-ring-capacity",
            "8",
            "--keep-alive",
            "2s",
            "--ofrep-rate-limit",
            "0",
        ])
        .unwrap()
        .args;
        assert_eq!(d.hub_config().ring_capacity, 8);
        assert_eq!(d.hub_config().keep_alive, Duration::from_secs(2));
        assert_eq!(d.ofrep_config().rate_limit, 0);
    }

    #[test]
    fn options_read_their_variables_except_when_parsing_defaults() {
        let command = <Alone as clap::CommandFactory>::command();
        let ours = |a: &&clap::Arg| a.get_id() != "help";
        assert!(
            command
                .get_arguments()
                .filter(ours)
                .all(|a| a.get_env().is_some())
        );
        let cleared = command.mut_args(|a| a.env(None::<&'static str>));
        assert!(cleared.get_arguments().all(|a| a.get_env().is_none()));
    }
}
