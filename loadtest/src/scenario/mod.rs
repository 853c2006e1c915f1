//! The scenarios, each a function from its arguments to a [`Report`](crate::report::Report).
//!
//! - [`propagation`]: write → every subscriber, through the server and a relay;
//! - [`capacity`]: idle subscribers one relay process holds, and its memory per subscriber;
//! - [`ofrep`]: remote-evaluation throughput and latency against the relay and the server;
//! - [`reconnect_storm`]: every subscriber reconnecting to a restarted relay;
//! - [`events`]: sustained event ingestion through a relay into PostgreSQL, 0 acknowledged
//!   events lost.

use std::path::PathBuf;
use std::time::Instant;

use crate::fleet::FleetPlan;
use crate::subscriber::{Backoff, StreamTarget};
use crate::system::{Stack, StackOptions};

pub mod capacity;
pub mod events;
pub mod ofrep;
pub mod propagation;
pub mod reconnect_storm;
pub mod segment_edit;

/// How subscribers are spread over processes and source addresses.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetOptions {
    /// Subscribers per worker process (one file descriptor each; the limit is 20,000 per
    /// process here).
    #[arg(long, default_value_t = 5_000)]
    pub per_worker: u32,
    /// Subscribers per loopback source address (127.0.0.2, .3, …): each address has about
    /// 28,000 ephemeral ports.
    #[arg(long, default_value_t = 8_000)]
    pub per_address: u32,
    /// Concurrent initial connections per worker.
    #[arg(long, default_value_t = 256)]
    pub ramp: usize,
    /// The executable run as workers (default: this one).
    #[arg(long, hide = true)]
    pub worker_exe: Option<PathBuf>,
}

impl FleetOptions {
    /// Checks the machine's descriptor and port limits for `subscribers` over `relays` relay
    /// processes ([`crate::preflight`]); fails fast, naming the numbers needed.
    pub fn preflight(
        &self,
        subscribers: u32,
        relays: u32,
    ) -> anyhow::Result<crate::preflight::Limits> {
        crate::preflight::run(crate::preflight::Needs {
            subscribers,
            per_worker: self.per_worker,
            per_address: self.per_address,
            relays,
        })
    }

    /// The fleet plan for `subscribers` subscribers of `target`.
    pub fn plan(
        &self,
        target: StreamTarget,
        subscribers: u32,
        backoff: Backoff,
    ) -> anyhow::Result<FleetPlan> {
        let exe = match &self.worker_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        Ok(FleetPlan {
            exe,
            target,
            subscribers,
            per_worker: self.per_worker,
            per_address: self.per_address,
            backoff,
            ramp: self.ramp,
        })
    }
}

/// Starts the system under test with one relay, and returns it with the SDK stream on that
/// relay that subscribers open (with the stack's first SDK key).
pub(crate) async fn stack_with_relay(
    options: &StackOptions,
) -> anyhow::Result<(Stack, StreamTarget)> {
    stack_with_relays(options, 1).await
}

/// [`stack_with_relay`] with `relays` relay processes sharing the port.
pub(crate) async fn stack_with_relays(
    options: &StackOptions,
    relays: usize,
) -> anyhow::Result<(Stack, StreamTarget)> {
    let mut stack = Stack::start(options, 1).await?;
    let relay = stack
        .start_relays(options.relay_bin.as_deref(), relays)
        .await?;
    let target = StreamTarget {
        addr: relay,
        path: "/sdk/v1/stream".into(),
        sdk_key: stack.sdk_keys[0].clone(),
    };
    Ok((stack, target))
}

/// Seconds since `start`.
pub(crate) fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// The command line, for reports.
pub(crate) fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    crate::subscriber::now_ns() / 1_000_000_000
}
