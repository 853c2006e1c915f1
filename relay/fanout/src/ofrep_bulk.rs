//! The hot path of OFREP bulk evaluation (`POST /ofrep/v1/evaluate/flags`): the answer's
//! JSON written straight into one buffer.
//!
//! Building a `serde_json::Value` per item (a map of four entries, each key and string
//! allocated) and then serialising the tree cost more than evaluating the flags. Here what
//! depends only on the snapshot is prepared once per compiled snapshot ([`BulkPlan`]: the
//! flag keys in order, each key and each variant name already JSON-escaped), and a request
//! only appends bytes: the reason (a static string), the value and the prepared pieces. The
//! output is byte for byte what the `Value` path produced (keys in `serde_json`'s sorted
//! order), which a unit test holds it to.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use serde_json::Value;
use vexil_eval::{CompiledSnapshot, Evaluation};
use vexil_schema::Flag;
use vexil_schema::stream::EnvironmentId;

/// What a bulk answer needs from one compiled snapshot, prepared once.
#[derive(Debug)]
pub(crate) struct BulkPlan {
    /// The snapshot this plan was made from (not kept alive by it).
    snapshot: Weak<CompiledSnapshot>,
    /// Every flag, in key order.
    pub(crate) entries: Vec<Entry>,
    /// Size of the last answer, to allocate the next one at once.
    size_hint: std::sync::atomic::AtomicUsize,
}

/// One flag of a [`BulkPlan`].
#[derive(Debug)]
pub(crate) struct Entry {
    /// The flag key.
    pub(crate) key: Box<str>,
    /// `{"key":"<key>"`: every success item starts so.
    head: Box<[u8]>,
    /// Each variation's variant, as a JSON string (its name, or its index).
    variants: Vec<Box<[u8]>>,
    /// Whether client-side keys may read it.
    pub(crate) client_side: bool,
    /// The flag configuration's version (in experiment items' metadata, for exposures).
    flag_version: u64,
}

impl BulkPlan {
    fn new(compiled: &Arc<CompiledSnapshot>) -> Self {
        let mut keys: Vec<&str> = compiled.flag_keys().collect();
        keys.sort_unstable();
        let entries = keys
            .into_iter()
            .map(|key| {
                let flag: Option<&Flag> = compiled.flag(key);
                let mut head = b"{\"key\":".to_vec();
                push_json_str(&mut head, key);
                let variants = flag
                    .map(|f| {
                        f.variations
                            .iter()
                            .enumerate()
                            .map(|(i, v)| {
                                let mut out = Vec::new();
                                match &v.name {
                                    Some(name) => push_json_str(&mut out, name),
                                    None => push_json_str(&mut out, &i.to_string()),
                                }
                                out.into_boxed_slice()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Entry {
                    key: key.into(),
                    head: head.into_boxed_slice(),
                    variants,
                    client_side: flag.is_some_and(|f| f.client_side),
                    flag_version: flag.map_or(0, |f| f.config.version),
                }
            })
            .collect();
        Self {
            snapshot: Arc::downgrade(compiled),
            entries,
            size_hint: std::sync::atomic::AtomicUsize::new(256),
        }
    }

    fn is_for(&self, compiled: &Arc<CompiledSnapshot>) -> bool {
        std::ptr::eq(self.snapshot.as_ptr(), Arc::as_ptr(compiled))
            && self.snapshot.strong_count() > 0
    }

    /// The entry of flag `key`.
    pub(crate) fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| (*e.key).cmp(key))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// A buffer sized for an answer like the last one.
    pub(crate) fn buffer(&self) -> Vec<u8> {
        Vec::with_capacity(self.size_hint.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Remembers the size of an answer for the next [`BulkPlan::buffer`].
    pub(crate) fn used(&self, len: usize) {
        self.size_hint
            .store(len + len / 8, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Entry {
    /// Appends the success item of `eval` (this flag's evaluation) to `out`; with
    /// `version`, the item carries `metadata.environmentVersion` (a single-flag answer). An
    /// evaluation in an experiment carries `metadata.{flagVersion,inExperiment,
    /// variationIndex}`, what a client needs to record its exposure; other items carry no
    /// per-item metadata, so that they change only when the flag's value does.
    pub(crate) fn push_success(
        &self,
        out: &mut Vec<u8>,
        eval: &Evaluation<'_>,
        version: Option<u64>,
    ) {
        out.extend_from_slice(&self.head);
        let experiment = eval.in_experiment.then_some(eval.variation).flatten();
        if version.is_some() || experiment.is_some() {
            out.extend_from_slice(b",\"metadata\":{");
            if let Some(v) = version {
                out.extend_from_slice(b"\"environmentVersion\":");
                out.extend_from_slice(v.to_string().as_bytes());
            }
            if let Some(i) = experiment {
                if version.is_some() {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"flagVersion\":");
                out.extend_from_slice(self.flag_version.to_string().as_bytes());
                out.extend_from_slice(b",\"inExperiment\":true,\"variationIndex\":");
                out.extend_from_slice(i.to_string().as_bytes());
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"reason\":\"");
        // Reasons are upper-case ASCII identifiers: nothing to escape.
        out.extend_from_slice(eval.openfeature_reason().as_bytes());
        out.extend_from_slice(b"\",\"value\":");
        match eval.value {
            Some(Value::Bool(true)) => out.extend_from_slice(b"true"),
            Some(Value::Bool(false)) => out.extend_from_slice(b"false"),
            Some(v) => push_json(out, v),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"variant\":");
        match eval.variation {
            Some(i) => match self.variants.get(i) {
                Some(v) => out.extend_from_slice(v),
                None => push_json_str(out, &i.to_string()),
            },
            None => out.extend_from_slice(b"\"\""),
        }
        out.push(b'}');
    }
}

/// Bulk plans per environment, replaced whenever an environment's compiled snapshot changes.
/// Reads are lock-free; a miss (a new version) builds the plan and swaps in a new map.
#[derive(Debug, Default)]
pub(crate) struct BulkPlans {
    plans: ArcSwap<HashMap<EnvironmentId, Arc<BulkPlan>>>,
}

impl BulkPlans {
    /// The plan for `compiled`, the current snapshot of `env`.
    pub(crate) fn get(
        &self,
        env: &EnvironmentId,
        compiled: &Arc<CompiledSnapshot>,
    ) -> Arc<BulkPlan> {
        if let Some(plan) = self.plans.load().get(env)
            && plan.is_for(compiled)
        {
            return Arc::clone(plan);
        }
        let plan = Arc::new(BulkPlan::new(compiled));
        self.plans.rcu(|map| {
            let mut map = HashMap::clone(map);
            // Plans of snapshots no longer alive (replaced, environment removed) go too.
            map.retain(|_, p| p.snapshot.strong_count() > 0);
            map.insert(env.clone(), Arc::clone(&plan));
            map
        });
        plan
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends any JSON value.
pub(crate) fn push_json(out: &mut Vec<u8>, v: &Value) {
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}
