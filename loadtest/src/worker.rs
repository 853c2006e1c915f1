//! Subscriber worker processes. One process may hold at most ~20,000 sockets (the file
//! descriptor limit) and a single tokio runtime reads them on the machine's cores, so the
//! load test re-executes its own binary as `vexil-loadtest worker`, each worker holding a
//! slice of the subscribers.
//!
//! Protocol (JSON lines): the parent writes one [`WorkerPlan`] to the worker's stdin, then
//! `stop` (or closes stdin) to end it. The worker writes one
//! [`Observation`](crate::subscriber::Observation) per line to
//! stdout as they happen.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::subscriber::{Backoff, StreamTarget, Subscriber, source_address};

/// What one worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPlan {
    /// Where subscribers connect.
    pub target: StreamTarget,
    /// Number of this worker's first subscriber.
    pub first: u32,
    /// How many subscribers it runs.
    pub count: u32,
    /// Subscribers per source address (see [`source_address`]).
    pub per_address: u32,
    /// Reconnection policy.
    pub backoff: Backoff,
    /// Concurrent initial connections (until each has its first event).
    pub ramp: usize,
}

/// Runs a worker: reads the plan from stdin, streams observations to stdout, stops on
/// `stop` or end of input.
pub async fn run_worker() -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let line = stdin
        .next_line()
        .await?
        .context("no worker plan on stdin")?;
    let plan: WorkerPlan = serde_json::from_str(&line).context("invalid worker plan")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ramp = Arc::new(Semaphore::new(plan.ramp.max(1)));
    let target = Arc::new(plan.target.clone());
    let mut tasks = JoinSet::new();
    for id in plan.first..plan.first.saturating_add(plan.count) {
        let sub = Subscriber {
            id,
            target: Arc::clone(&target),
            source: source_address(id, plan.per_address),
            backoff: plan.backoff,
        };
        tasks.spawn(sub.run(Arc::clone(&ramp), tx.clone(), stop_rx.clone()));
    }
    drop(tx);

    // Forward observations as JSON lines, flushing whenever the queue is drained.
    let forward = tokio::spawn(async move {
        let mut out = BufWriter::new(tokio::io::stdout());
        let mut line = Vec::with_capacity(128);
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(obs) = next {
                line.clear();
                serde_json::to_writer(&mut line, &obs)?;
                line.push(b'\n');
                out.write_all(&line).await?;
                next = rx.try_recv().ok();
            }
            out.flush().await?;
        }
        out.flush().await?;
        anyhow::Ok(())
    });

    // Stop on command or when the parent goes away.
    loop {
        match stdin.next_line().await {
            Ok(Some(cmd)) if cmd.trim() == "stop" => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let _ = stop_tx.send(true);
    // Every subscriber returns promptly once stopped; bound the wait anyway.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    drop(tasks);
    forward.await.context("the output task panicked")??;
    Ok(())
}
