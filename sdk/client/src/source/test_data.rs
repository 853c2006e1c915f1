//! [`TestData`]: a data source whose flags are set from code, so that applications can test
//! their own behaviour under any flag configuration without a server.
//!
//! ```
//! use vexil_sdk::{Client, Context, TestData, TestFlag};
//!
//! let td = TestData::new();
//! td.update(TestFlag::boolean("new-checkout").serve_value(true)).unwrap();
//! let client = Client::builder("unused").data_source(td.clone()).build().unwrap();
//! let user = Context::new("user-1");
//! assert!(client.bool_variation("new-checkout", &user, false));
//!
//! // Changes are visible at once (and to flag-change listeners).
//! td.update(
//!     TestFlag::boolean("new-checkout")
//!         .serve_value(false)
//!         .target(0, ["user-1"]),
//! )
//! .unwrap();
//! assert!(client.bool_variation("new-checkout", &user, false));
//! assert!(!client.bool_variation("new-checkout", &Context::new("user-2"), true));
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use vexil_schema::stream::{Delete, ItemRef, Patch, PatchItem, SdkEvent};
use vexil_schema::{
    Clause, EnvironmentSnapshot, Flag, FlagConfig, FlagKey, FlagKind, KeyError, Operator,
    Prerequisite, Rollout, Rule, Segment, SegmentKey, Serve, Target, Variation, WeightedVariation,
};

use crate::source::{BoxFuture, DataSource, Shutdown, Updates};
use crate::status::DataOrigin;
use crate::store::Applied;

#[derive(Debug, Default)]
struct Inner {
    /// The environment version: bumped by every change.
    version: u64,
    flags: BTreeMap<String, Flag>,
    segments: BTreeMap<String, Segment>,
    /// Attached clients, by attachment id.
    sinks: Vec<(u64, Updates)>,
    next_sink: u64,
}

impl Inner {
    fn snapshot(&self) -> EnvironmentSnapshot {
        EnvironmentSnapshot {
            version: self.version,
            flags: self.flags.values().cloned().collect(),
            segments: self.segments.values().cloned().collect(),
        }
    }

    /// Applies `event` to every attached client, synchronously, forgetting closed ones.
    fn publish(&mut self, event: SdkEvent) {
        self.sinks
            .retain(|(_, sink)| !matches!(sink.apply(event.clone()), Applied::Closed));
    }
}

/// A data source for tests: flags and segments set programmatically, applied to every client
/// built with it immediately and in order (flag-change listeners see each change).
///
/// Cheap to clone; clones share the same flags. One `TestData` may feed several clients.
#[derive(Debug, Clone, Default)]
pub struct TestData {
    inner: Arc<Mutex<Inner>>,
}

impl TestData {
    /// An empty source (version 0, no flags).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change is applied fully before the lock is released.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates or replaces a flag built with [`TestFlag`]; returns the new environment
    /// version. Fails only if a key in it is invalid.
    pub fn update(&self, flag: TestFlag) -> Result<u64, KeyError> {
        Ok(self.update_flag(flag.build()?))
    }

    /// Creates or replaces a flag given in full (any targeting the model allows); returns
    /// the new environment version.
    pub fn update_flag(&self, mut flag: Flag) -> u64 {
        let mut inner = self.lock();
        inner.version += 1;
        let version = inner.version;
        flag.config.version = version;
        inner.flags.insert(flag.key.to_string(), flag.clone());
        inner.publish(SdkEvent::Patch(Patch {
            version,
            item: PatchItem::Flag(flag),
        }));
        version
    }

    /// Creates or replaces a segment; returns the new environment version.
    pub fn update_segment(&self, mut segment: Segment) -> u64 {
        let mut inner = self.lock();
        inner.version += 1;
        let version = inner.version;
        segment.version = version;
        inner
            .segments
            .insert(segment.key.to_string(), segment.clone());
        inner.publish(SdkEvent::Patch(Patch {
            version,
            item: PatchItem::Segment(segment),
        }));
        version
    }

    /// Deletes a flag (a no-op, still versioned, if absent); returns the new version.
    pub fn delete(&self, key: &str) -> Result<u64, KeyError> {
        let key = FlagKey::parse(key)?;
        let mut inner = self.lock();
        inner.version += 1;
        let version = inner.version;
        inner.flags.remove(key.as_str());
        inner.publish(SdkEvent::Delete(Delete {
            version,
            item: ItemRef::Flag(key),
        }));
        Ok(version)
    }

    /// Deletes a segment; returns the new version.
    pub fn delete_segment(&self, key: &str) -> Result<u64, KeyError> {
        let key = SegmentKey::parse(key)?;
        let mut inner = self.lock();
        inner.version += 1;
        let version = inner.version;
        inner.segments.remove(key.as_str());
        inner.publish(SdkEvent::Delete(Delete {
            version,
            item: ItemRef::Segment(key),
        }));
        Ok(version)
    }

    /// Replaces every flag and segment with `snapshot` (e.g. one of the shared evaluation
    /// fixtures). Its version is kept if it is ahead, otherwise the current version plus
    /// one is used; returns the version.
    pub fn load(&self, mut snapshot: EnvironmentSnapshot) -> u64 {
        let mut inner = self.lock();
        let version = snapshot.version.max(inner.version + 1);
        snapshot.version = version;
        inner.version = version;
        inner.flags = snapshot
            .flags
            .iter()
            .map(|f| (f.key.to_string(), f.clone()))
            .collect();
        inner.segments = snapshot
            .segments
            .iter()
            .map(|s| (s.key.to_string(), s.clone()))
            .collect();
        inner.publish(SdkEvent::Put(snapshot));
        version
    }

    /// Everything held, as a snapshot.
    pub fn snapshot(&self) -> EnvironmentSnapshot {
        self.lock().snapshot()
    }
}

impl DataSource for TestData {
    fn origin(&self) -> DataOrigin {
        DataOrigin::TestData
    }

    fn start(self: Box<Self>, updates: Updates, shutdown: Shutdown) -> BoxFuture {
        let id = {
            let mut inner = self.lock();
            updates.init(&inner.snapshot());
            updates.ready();
            let id = inner.next_sink;
            inner.next_sink += 1;
            inner.sinks.push((id, updates));
            id
        };
        Box::pin(async move {
            shutdown.wait().await;
            self.lock().sinks.retain(|(i, _)| *i != id);
        })
    }
}

/// Builds a flag for [`TestData::update`]. New flags are on and serve their first
/// variation; boolean flags serve `true` when on and `false` when off.
#[derive(Debug, Clone)]
pub struct TestFlag {
    key: Result<FlagKey, KeyError>,
    kind: FlagKind,
    variations: Vec<Variation>,
    config: FlagConfig,
}

impl TestFlag {
    fn new(key: &str, kind: FlagKind, values: Vec<Value>) -> Self {
        let mut config = FlagConfig::serving(0);
        config.on = true;
        Self {
            key: FlagKey::parse(key),
            kind,
            variations: values.into_iter().map(Variation::new).collect(),
            config,
        }
    }

    /// A boolean flag: variations `[true, false]`, serving `true` when on, `false` when off.
    pub fn boolean(key: &str) -> Self {
        let mut f = Self::new(key, FlagKind::Boolean, vec![true.into(), false.into()]);
        f.config.off_variation = 1;
        f
    }

    /// A string flag with these variations.
    pub fn string<S: Into<String>>(key: &str, values: impl IntoIterator<Item = S>) -> Self {
        let values = values
            .into_iter()
            .map(|s| Value::String(s.into()))
            .collect();
        Self::new(key, FlagKind::String, values)
    }

    /// A number flag with these variations.
    pub fn number(key: &str, values: impl IntoIterator<Item = f64>) -> Self {
        let values = values
            .into_iter()
            .map(|n| serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
            .collect();
        Self::new(key, FlagKind::Number, values)
    }

    /// A JSON flag with these variations.
    pub fn json(key: &str, values: impl IntoIterator<Item = Value>) -> Self {
        Self::new(key, FlagKind::Json, values.into_iter().collect())
    }

    /// Switches targeting on or off (off serves the off variation to everyone).
    pub fn on(mut self, on: bool) -> Self {
        self.config.on = on;
        self
    }

    /// The variation served when no target or rule matches.
    pub fn fallthrough(mut self, variation: usize) -> Self {
        self.config.fallthrough = Serve::Variation(variation);
        self
    }

    /// The variation served while off.
    pub fn off_variation(mut self, variation: usize) -> Self {
        self.config.off_variation = variation;
        self
    }

    /// Serves `variation` to everyone: on, no targets, no rules.
    pub fn serve(mut self, variation: usize) -> Self {
        self.config.on = true;
        self.config.targets.clear();
        self.config.rules.clear();
        self.config.fallthrough = Serve::Variation(variation);
        self
    }

    /// Serves `value` to everyone, adding it as a variation if it is not one.
    pub fn serve_value(self, value: impl Into<Value>) -> Self {
        let (this, index) = self.variation_of(value.into());
        this.serve(index)
    }

    fn variation_of(mut self, value: Value) -> (Self, usize) {
        match self.variations.iter().position(|v| v.value == value) {
            Some(i) => (self, i),
            None => {
                self.variations.push(Variation::new(value));
                let i = self.variations.len() - 1;
                (self, i)
            }
        }
    }

    /// Names a variation (reported as `variation_name` in details).
    pub fn variation_name(mut self, variation: usize, name: &str) -> Self {
        if let Some(v) = self.variations.get_mut(variation) {
            v.name = Some(name.to_owned());
        }
        self
    }

    /// Serves `variation` to contexts with these keys.
    pub fn target<S: Into<String>>(
        mut self,
        variation: usize,
        keys: impl IntoIterator<Item = S>,
    ) -> Self {
        self.config.targets.push(Target {
            variation,
            values: keys.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Adds a rule: contexts matching every clause get `variation`.
    pub fn rule(mut self, clauses: Vec<Clause>, variation: usize) -> Self {
        let id = format!("rule-{}", self.config.rules.len());
        self.config.rules.push(Rule {
            id,
            description: None,
            clauses,
            serve: Serve::Variation(variation),
        });
        self
    }

    /// Adds a one-clause rule: contexts whose `attribute` matches `op` against any of
    /// `values` get `variation`.
    pub fn rule_matching(
        self,
        attribute: &str,
        op: Operator,
        values: Vec<Value>,
        variation: usize,
    ) -> Self {
        let clause = Clause {
            attribute: attribute.to_owned(),
            op,
            values,
            negate: false,
        };
        self.rule(vec![clause], variation)
    }

    /// Splits the fallthrough between variations: `(variation, weight)` with weights in
    /// thousandths of a percent summing to 100,000.
    pub fn rollout(mut self, weights: &[(usize, u32)]) -> Self {
        self.config.fallthrough = Serve::Rollout(Rollout {
            variations: weights
                .iter()
                .map(|&(variation, weight)| WeightedVariation { variation, weight })
                .collect(),
            bucket_by: None,
            experiment: false,
        });
        self
    }

    /// Requires flag `key` to be on and serve `variation` first.
    pub fn prerequisite(mut self, key: &str, variation: usize) -> Self {
        match FlagKey::parse(key) {
            Ok(key) => self
                .config
                .prerequisites
                .push(Prerequisite { key, variation }),
            Err(e) => self.key = Err(e),
        }
        self
    }

    /// The flag, or why its key (or a prerequisite's) is invalid.
    pub fn build(self) -> Result<Flag, KeyError> {
        Ok(Flag {
            key: self.key?,
            kind: self.kind,
            variations: self.variations,
            client_side: false,
            config: self.config,
        })
    }
}

impl TryFrom<TestFlag> for Flag {
    type Error = KeyError;

    fn try_from(f: TestFlag) -> Result<Flag, KeyError> {
        f.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builders_produce_the_expected_flags() {
        let f = TestFlag::boolean("b").build().unwrap();
        assert_eq!(f.variations.len(), 2);
        assert!(f.config.on);
        assert_eq!(f.config.off_variation, 1);

        let f = TestFlag::string("s", ["a", "b"])
            .serve_value("c")
            .variation_name(2, "third")
            .build()
            .unwrap();
        assert_eq!(f.variations[2].value, json!("c"));
        assert_eq!(f.variations[2].name.as_deref(), Some("third"));
        assert_eq!(f.config.fallthrough, Serve::Variation(2));

        assert!(TestFlag::boolean("bad key").build().is_err());
        assert!(
            TestFlag::boolean("ok")
                .prerequisite("bad key", 0)
                .build()
                .is_err()
        );
    }

    #[test]
    fn versions_increase_with_every_change() {
        let td = TestData::new();
        assert_eq!(td.update(TestFlag::boolean("a")), Ok(1));
        assert_eq!(td.update(TestFlag::boolean("b")), Ok(2));
        assert_eq!(td.delete("a"), Ok(3));
        assert_eq!(td.snapshot().flags.len(), 1);
        assert_eq!(td.snapshot().flags[0].config.version, 2);
        assert_eq!(
            td.load(EnvironmentSnapshot {
                version: 1,
                ..Default::default()
            }),
            4
        );
        assert!(td.update(TestFlag::boolean("no good")).is_err());
    }
}
