//! Exposures of OFREP evaluations: an evaluation whose result has `in_experiment = true` is an
//! exposure of its context to a variation of an experiment flag. [`ExposureRecorder`]
//! deduplicates them per environment × context × flag × variation in a bounded set and
//! hands the first of each to an [`ExposureSink`]: the control plane stores them, the relay
//! forwards them upstream with the events SDKs send.
//!
//! Recording never blocks or fails an evaluation: sinks take an exposure without waiting
//! (dropping it, counted, when they are behind).

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use vexil_eval::{CompiledSnapshot, Evaluation};
use vexil_schema::Context;
use vexil_schema::events::Exposure;
use vexil_schema::stream::EnvironmentId;

/// Exposures recorded by OFREP evaluations (after deduplication).
pub const EXPOSURES_RECORDED: &str = "vexil_ofrep_exposures_recorded_total";

/// Where recorded exposures go. Must not block.
pub trait ExposureSink: Debug + Send + Sync + 'static {
    /// Takes one exposure of `env`.
    fn record(&self, env: &EnvironmentId, exposure: Exposure);
}

/// Deduplicates exposures and passes the first of each to a sink. Cheap to share.
#[derive(Debug)]
pub struct ExposureRecorder {
    sink: Arc<dyn ExposureSink>,
    seen: Mutex<Seen>,
}

/// A bounded, approximately least-recently-used set of hashes: two generations of at most
/// `capacity / 2` entries each; when the current one fills up it becomes the previous one and
/// the previous one is forgotten. A hash found in the previous generation moves back to the
/// current one.
#[derive(Debug)]
struct Seen {
    half: usize,
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

impl Seen {
    fn new(capacity: usize) -> Self {
        Self {
            half: (capacity / 2).max(1),
            current: HashSet::new(),
            previous: HashSet::new(),
        }
    }

    /// Whether `h` is new (and remembers it).
    fn insert(&mut self, h: u64) -> bool {
        if self.current.contains(&h) {
            return false;
        }
        let known = self.previous.remove(&h);
        if self.current.len() >= self.half {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(h);
        !known
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ExposureRecorder {
    /// A recorder remembering about `capacity` exposures, feeding `sink`.
    pub fn new(sink: Arc<dyn ExposureSink>, capacity: usize) -> Self {
        Self {
            sink,
            seen: Mutex::new(Seen::new(capacity)),
        }
    }

    /// Records the exposure of `eval` (flag `key` of `compiled`, for `ctx`) if it is one:
    /// `in_experiment`, a variation served, a context with a key; once per environment ×
    /// context × flag × variation while remembered.
    pub fn observe(
        &self,
        env: &EnvironmentId,
        compiled: &CompiledSnapshot,
        key: &str,
        ctx: &Context,
        eval: &Evaluation<'_>,
    ) {
        if !eval.in_experiment {
            return;
        }
        let (Some(variation), Some(context_key)) = (eval.variation, ctx.key()) else {
            return;
        };
        let context_kind = ctx.kind().unwrap_or("user");
        let mut h = DefaultHasher::new();
        (env.as_str(), key, context_kind, context_key, variation).hash(&mut h);
        let new = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(h.finish());
        if !new {
            return;
        }
        metrics::counter!(EXPOSURES_RECORDED).increment(1);
        self.sink.record(
            env,
            Exposure {
                time: now_ms(),
                flag_key: key.to_owned(),
                flag_version: compiled.flag(key).map_or(0, |f| f.config.version),
                environment_version: compiled.version(),
                variation: u32::try_from(variation).unwrap_or(u32::MAX),
                context_key: context_key.to_owned(),
                context_kind: context_kind.to_owned(),
            },
        );
    }

    /// How many exposures are remembered now.
    pub fn remembered(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_forgets_the_oldest_generation_and_stays_bounded() {
        let mut s = Seen::new(4);
        assert!(s.insert(1));
        assert!(!s.insert(1));
        assert!(s.insert(2));
        // 3 starts a new generation: {1, 2} become the previous one.
        assert!(s.insert(3));
        assert!(!s.insert(1), "still remembered, and refreshed");
        assert!(s.insert(4));
        assert!(s.insert(5));
        assert!(s.len() <= 4);
        // 2 was in the generation now forgotten.
        assert!(s.insert(2));
        for i in 100..10_000 {
            s.insert(i);
        }
        assert!(s.len() <= 4);
    }
}
