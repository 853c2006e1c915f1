//! Vexil's model translated into LaunchDarkly's (`launchdarkly-server-sdk-evaluation` 2.2.1),
//! evaluated with LaunchDarkly's own evaluator.
//!
//! The two models are close: flags with variations, individual targets, ordered rules of
//! clauses (any-of operands, `negate`), a fallthrough, percentage rollouts on a 100,000 scale
//! and segments with included/excluded keys and rules. The translation goes through
//! LaunchDarkly's JSON wire format, so LaunchDarkly's own deserializer validates it.
//!
//! What differs by design: LaunchDarkly buckets with SHA-1 of `flag.salt.key` (or of
//! `seed.key`), Vexil with xxh3, so the same salt cannot put a context in the same slice.
//! [`Prepared::prepare`] therefore picks the rollout seed for which LaunchDarkly buckets the
//! benchmark context into the slice Vexil serves (the weights stay the same).

use std::collections::HashMap;

use launchdarkly_server_sdk_evaluation as ld;
use serde_json::{Map, Value, json};
use vexil_schema::fixture::BenchFixture;
use vexil_schema::{Clause, EnvironmentSnapshot, Flag, Operator, Segment, Serve};

use crate::{ALIGNMENT_TRIES, TranslateError, vexil_outcome};

const PEER: &str = "launchdarkly";

/// Flags and segments in LaunchDarkly's model: the data store its evaluator reads.
#[derive(Debug, Clone)]
pub struct LaunchDarkly {
    /// Flags by key.
    flags: HashMap<String, ld::Flag>,
    /// Segments by key.
    segments: HashMap<String, ld::Segment>,
}

impl ld::Store for LaunchDarkly {
    // The trait returns owned items, so every store (LaunchDarkly's SDK included) clones
    // the flag or segment on each lookup during evaluation: part of the measured cost.
    fn flag(&self, flag_key: &str) -> Option<ld::Flag> {
        self.flags.get(flag_key).cloned()
    }

    fn segment(&self, segment_key: &str) -> Option<ld::Segment> {
        self.segments.get(segment_key).cloned()
    }
}

impl LaunchDarkly {
    /// Translates a whole snapshot. `seeds` gives a rollout seed per flag key (see the module
    /// documentation); flags absent from it bucket by LaunchDarkly's default (key and salt).
    pub fn translate(
        snapshot: &EnvironmentSnapshot,
        seeds: &HashMap<String, i64>,
    ) -> Result<Self, TranslateError> {
        let mut flags = HashMap::with_capacity(snapshot.flags.len());
        for flag in &snapshot.flags {
            let doc = flag_json(flag, seeds.get(flag.key.as_str()).copied())?;
            let parsed: ld::Flag =
                serde_json::from_value(doc).map_err(|e| rejected(&flag.key, e))?;
            flags.insert(flag.key.to_string(), parsed);
        }
        let mut segments = HashMap::with_capacity(snapshot.segments.len());
        for segment in &snapshot.segments {
            let doc = segment_json(segment)?;
            let parsed: ld::Segment =
                serde_json::from_value(doc).map_err(|e| rejected(&segment.key, e))?;
            segments.insert(segment.key.to_string(), parsed);
        }
        Ok(Self { flags, segments })
    }

    /// Evaluates `flag_key` for `context` with LaunchDarkly's evaluator (the flag lookup
    /// included, as in Vexil's `evaluate`).
    pub fn evaluate<'a>(
        &'a self,
        flag_key: &str,
        context: &'a ld::Context,
    ) -> ld::Detail<&'a ld::FlagValue> {
        match self.flags.get(flag_key) {
            Some(flag) => ld::evaluate(self, flag, context, None),
            None => ld::Detail::err(ld::Error::FlagNotFound),
        }
    }
}

/// A Vexil context as a LaunchDarkly context of the same kind (default `user`), key and
/// attributes. LaunchDarkly requires a key, so anonymous contexts cannot be translated.
pub fn context(ctx: &vexil_schema::Context) -> Result<ld::Context, TranslateError> {
    let key = ctx
        .key()
        .ok_or_else(|| unsupported("a context without a key"))?;
    let mut builder = ld::ContextBuilder::new(key);
    builder.kind(ctx.kind().unwrap_or("user"));
    for (name, value) in ctx.attributes() {
        if !builder.try_set_value(name, attribute_value(value)?) {
            return Err(unsupported(format!("context attribute `{name}`")));
        }
    }
    builder.build().map_err(|message| TranslateError::Rejected {
        peer: PEER,
        item: "context".into(),
        message,
    })
}

fn attribute_value(value: &Value) -> Result<ld::AttributeValue, TranslateError> {
    Ok(match value {
        Value::String(s) => ld::AttributeValue::String(s.clone()),
        Value::Bool(b) => ld::AttributeValue::Bool(*b),
        Value::Number(n) => ld::AttributeValue::Number(
            n.as_f64()
                .ok_or_else(|| unsupported(format!("number {n}")))?,
        ),
        Value::Array(items) => ld::AttributeValue::Array(
            items
                .iter()
                .map(attribute_value)
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => ld::AttributeValue::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), attribute_value(v)?)))
                .collect::<Result<_, TranslateError>>()?,
        ),
        Value::Null => return Err(unsupported("a null attribute")),
    })
}

fn flag_json(flag: &Flag, seed: Option<i64>) -> Result<Value, TranslateError> {
    let config = &flag.config;
    let mut doc = Map::new();
    doc.insert("key".into(), json!(flag.key.as_str()));
    doc.insert("version".into(), json!(config.version));
    doc.insert("on".into(), json!(config.on));
    doc.insert("offVariation".into(), json!(config.off_variation));
    doc.insert(
        "variations".into(),
        Value::Array(flag.variations.iter().map(|v| v.value.clone()).collect()),
    );
    doc.insert(
        "targets".into(),
        Value::Array(
            config
                .targets
                .iter()
                .map(|t| json!({"values": t.values, "variation": t.variation}))
                .collect(),
        ),
    );
    doc.insert("contextTargets".into(), json!([]));
    doc.insert(
        "prerequisites".into(),
        Value::Array(
            config
                .prerequisites
                .iter()
                .map(|p| json!({"key": p.key.as_str(), "variation": p.variation}))
                .collect(),
        ),
    );
    let mut rules = Vec::with_capacity(config.rules.len());
    for rule in &config.rules {
        let mut r = serve_json(&rule.serve, seed);
        r.insert("id".into(), json!(rule.id));
        r.insert("clauses".into(), clauses_json(&rule.clauses)?);
        r.insert("trackEvents".into(), json!(false));
        rules.push(Value::Object(r));
    }
    doc.insert("rules".into(), Value::Array(rules));
    doc.insert(
        "fallthrough".into(),
        Value::Object(serve_json(&config.fallthrough, seed)),
    );
    // Vexil uses the key when the salt is empty; so does this translation.
    let salt = if config.salt.is_empty() {
        flag.key.as_str()
    } else {
        config.salt.as_str()
    };
    doc.insert("salt".into(), json!(salt));
    doc.insert("trackEvents".into(), json!(false));
    doc.insert("trackEventsFallthrough".into(), json!(false));
    doc.insert("clientSide".into(), json!(false));
    Ok(Value::Object(doc))
}

fn serve_json(serve: &Serve, seed: Option<i64>) -> Map<String, Value> {
    let mut out = Map::new();
    match serve {
        Serve::Variation(v) => {
            out.insert("variation".into(), json!(v));
        }
        Serve::Rollout(rollout) => {
            // Both models weigh slices in thousandths of a percent (sum 100,000).
            let mut r = Map::new();
            r.insert(
                "variations".into(),
                Value::Array(
                    rollout
                        .variations
                        .iter()
                        .map(|w| json!({"variation": w.variation, "weight": w.weight}))
                        .collect(),
                ),
            );
            if rollout.experiment {
                r.insert("kind".into(), json!("experiment"));
            }
            if let Some(attr) = &rollout.bucket_by {
                r.insert("bucketBy".into(), json!(attr));
            }
            if let Some(seed) = seed {
                r.insert("seed".into(), json!(seed));
            }
            out.insert("rollout".into(), Value::Object(r));
        }
    }
    out
}

fn clauses_json(clauses: &[Clause]) -> Result<Value, TranslateError> {
    clauses
        .iter()
        .map(clause_json)
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn clause_json(clause: &Clause) -> Result<Value, TranslateError> {
    let op = match clause.op {
        Operator::In => "in",
        Operator::StartsWith => "startsWith",
        Operator::EndsWith => "endsWith",
        Operator::Contains => "contains",
        Operator::Matches => "matches",
        Operator::Lt => "lessThan",
        Operator::Lte => "lessThanOrEqual",
        Operator::Gt => "greaterThan",
        Operator::Gte => "greaterThanOrEqual",
        Operator::Before => "before",
        Operator::After => "after",
        Operator::SemverEq => "semVerEqual",
        Operator::SemverLt => "semVerLessThan",
        Operator::SemverGt => "semVerGreaterThan",
        Operator::SegmentMatch => "segmentMatch",
        other => return Err(unsupported(format!("operator {other:?}"))),
    };
    // A segment_match clause ignores its attribute in both models; LaunchDarkly still
    // parses it as a reference, so give it a valid one.
    let attribute = if clause.op == Operator::SegmentMatch {
        "key"
    } else {
        clause.attribute.as_str()
    };
    Ok(json!({
        "contextKind": "user",
        "attribute": attribute,
        "op": op,
        "values": clause.values,
        "negate": clause.negate,
    }))
}

fn segment_json(segment: &Segment) -> Result<Value, TranslateError> {
    let mut rules = Vec::with_capacity(segment.rules.len());
    for rule in &segment.rules {
        let mut r = Map::new();
        r.insert("id".into(), json!(rule.id));
        r.insert("clauses".into(), clauses_json(&rule.clauses)?);
        if let Some(weight) = rule.weight {
            r.insert("weight".into(), json!(weight));
        }
        if let Some(attr) = &rule.bucket_by {
            r.insert("bucketBy".into(), json!(attr));
        }
        rules.push(Value::Object(r));
    }
    let salt = if segment.salt.is_empty() {
        segment.key.as_str()
    } else {
        segment.salt.as_str()
    };
    Ok(json!({
        "key": segment.key.as_str(),
        "version": segment.version,
        "included": segment.included,
        "excluded": segment.excluded,
        "includedContexts": [],
        "excludedContexts": [],
        "rules": rules,
        "salt": salt,
        "unbounded": false,
    }))
}

/// One benchmark fixture, translated and ready to evaluate with LaunchDarkly's evaluator.
#[derive(Debug)]
pub struct Prepared {
    /// The translated snapshot.
    engine: LaunchDarkly,
    /// The flag evaluated.
    flag: String,
    /// The translated context.
    context: ld::Context,
}

impl Prepared {
    /// Translates the fixture's snapshot and context. When Vexil serves the fixture's flag
    /// from a rollout, searches rollout seeds (the Vexil salt first, then seeds 0, 1, …) for
    /// the first that gives the context the same variation, so both evaluators take the same
    /// path.
    pub fn prepare(fixture: &BenchFixture) -> Result<Self, TranslateError> {
        let context = context(&fixture.context)?;
        let vexil = vexil_outcome(fixture);
        let mut seeds = HashMap::new();
        let mut engine = LaunchDarkly::translate(&fixture.snapshot, &seeds)?;
        if vexil.split {
            let mut seed = 0;
            while index(engine.evaluate(&fixture.flag, &context).variation_index) != vexil.variation
            {
                if seed >= ALIGNMENT_TRIES {
                    return Err(TranslateError::Alignment {
                        peer: PEER,
                        flag: fixture.flag.clone(),
                    });
                }
                seeds.insert(fixture.flag.clone(), seed);
                engine = LaunchDarkly::translate(&fixture.snapshot, &seeds)?;
                seed += 1;
            }
        }
        Ok(Self {
            engine,
            flag: fixture.flag.clone(),
            context,
        })
    }

    /// The evaluation as LaunchDarkly returns it: what the benchmark measures.
    pub fn evaluate(&self) -> ld::Detail<&ld::FlagValue> {
        self.engine.evaluate(&self.flag, &self.context)
    }

    /// The variation index served (`None` on error), for comparison with Vexil.
    pub fn variation(&self) -> Option<usize> {
        index(self.evaluate().variation_index)
    }

    /// The value served, as JSON (`None` on error), for comparison with Vexil.
    pub fn value(&self) -> Option<Value> {
        self.evaluate().value.map(|v| match v {
            ld::FlagValue::Bool(b) => Value::Bool(*b),
            ld::FlagValue::Str(s) => Value::String(s.clone()),
            ld::FlagValue::Number(n) => json!(n),
            ld::FlagValue::Json(j) => j.clone(),
        })
    }

    /// Whether LaunchDarkly counts the evaluation as an experiment exposure.
    pub fn in_experiment(&self) -> bool {
        self.evaluate().reason.is_in_experiment()
    }
}

/// LaunchDarkly's variation index (an `isize`) as Vexil's.
fn index(i: Option<isize>) -> Option<usize> {
    i.and_then(|i| usize::try_from(i).ok())
}

fn unsupported(what: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported {
        peer: PEER,
        what: what.into(),
    }
}

fn rejected(item: &impl std::fmt::Display, e: serde_json::Error) -> TranslateError {
    TranslateError::Rejected {
        peer: PEER,
        item: item.to_string(),
        message: e.to_string(),
    }
}
