//! Vexil's model translated into Unleash's (`unleash-yggdrasil` 0.21.7, the engine under
//! Unleash's server-side SDKs), evaluated with Yggdrasil's `EngineState`.
//!
//! Unleash has no ordered rules serving variations; the faithful equivalent is one
//! `flexibleRollout` strategy per Vexil target, rule and the fallthrough, in order, each
//! with *strategy variants* (the first matching strategy's variants decide, which is Vexil's
//! "first matching rule serves"). Variants are named by Vexil variation index. A boolean
//! flag that is simply on (no targets or rules, serving `true`) becomes an enabled toggle
//! with the `default` strategy, evaluated with `is_enabled`: Unleash's native boolean flag.
//!
//! Clause operators map to constraint operators (`in` → `IN`, `ends_with` → `STR_ENDS_WITH`,
//! `gte` → `NUM_GTE`, `semver_lt` → `SEMVER_LT`, …; `negate` → `inverted`). Unleash's numeric,
//! date and semver constraints take a single value, and "any operand" reduces to one
//! (`x ≥ any(v)` ⇔ `x ≥ min(v)`), which is exactly what Vexil precomputes too.
//!
//! Unleash segments are conjunctions of constraints with no key lists, while a Vexil segment
//! is `included ∨ (¬excluded ∧ (rule₁ ∨ rule₂ …))`. So a Vexil segment becomes one Unleash
//! segment per disjunct (`userId IN included`; `userId NOT_IN excluded` and each rule's
//! clauses), and a Vexil rule with a `segment_match` becomes one strategy per disjunct,
//! serving the same variation.
//!
//! Unleash buckets variants with murmur3 of `groupId:userId`; [`Prepared::prepare`] picks the
//! `groupId` for which Unleash buckets the benchmark context into the slice Vexil serves.

use std::collections::HashMap;

use serde_json::{Value, json};
use unleash_yggdrasil::{ClientFeatures, Context, EngineState, ExtendedVariantDef};
use vexil_schema::fixture::BenchFixture;
use vexil_schema::operand::{parse_date_millis, parse_number, parse_semver};
use vexil_schema::{Clause, EnvironmentSnapshot, Flag, FlagKind, Operator, Segment, Serve};

use crate::{ALIGNMENT_TRIES, TranslateError, vexil_outcome};

const PEER: &str = "unleash";

/// Unleash's context fields that are not free-form properties: a Vexil attribute with one of
/// these names cannot be translated.
const RESERVED: [&str; 7] = [
    "userId",
    "sessionId",
    "environment",
    "appName",
    "currentTime",
    "remoteAddress",
    "properties",
];

/// How a translated flag is read back.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// An Unleash boolean toggle: `is_enabled` true serves `on`, false serves `off`.
    Boolean { on: usize, off: usize },
    /// Strategy variants named by variation index; a disabled toggle serves `off`.
    Variants { off: usize },
}

/// Flags and segments in Unleash's model, compiled by Yggdrasil.
pub struct Unleash {
    /// Yggdrasil's engine holding the compiled toggles.
    engine: EngineState,
    /// How each flag's result maps back to a Vexil variation.
    shapes: HashMap<String, Shape>,
}

/// Yggdrasil's answer, in the form its API returns it.
#[derive(Debug)]
pub enum Answer {
    /// `is_enabled` for a boolean toggle.
    Enabled(bool),
    /// `get_variant` for a multi-variant toggle.
    Variant(ExtendedVariantDef),
}

impl std::fmt::Debug for Unleash {
    // Yggdrasil's engine has no Debug; its compiled toggles are closures.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unleash")
            .field("flags", &self.shapes)
            .finish_non_exhaustive()
    }
}

impl Unleash {
    /// Translates a whole snapshot. `group_ids` overrides the variant `groupId` per flag
    /// key (see the module documentation); otherwise it is the flag's salt (or key).
    pub fn translate(
        snapshot: &EnvironmentSnapshot,
        group_ids: &HashMap<String, String>,
    ) -> Result<Self, TranslateError> {
        let mut segments = SegmentTable::new(&snapshot.segments);
        let mut features = Vec::with_capacity(snapshot.flags.len());
        let mut shapes = HashMap::with_capacity(snapshot.flags.len());
        for flag in &snapshot.flags {
            let group_id = group_ids.get(flag.key.as_str()).cloned();
            let (feature, shape) = feature_json(flag, group_id, &mut segments)?;
            features.push(feature);
            shapes.insert(flag.key.to_string(), shape);
        }
        let doc = json!({"version": 2, "features": features, "segments": segments.used});
        let state: ClientFeatures =
            serde_json::from_value(doc).map_err(|e| TranslateError::Rejected {
                peer: PEER,
                item: "client features".into(),
                message: e.to_string(),
            })?;
        let engine = EngineState::default();
        if let Some(warnings) = engine.apply_client_features(state)
            && let Some(first) = warnings.first()
        {
            return Err(TranslateError::Rejected {
                peer: PEER,
                item: first.toggle_name.clone(),
                message: first.message.clone(),
            });
        }
        Ok(Self { engine, shapes })
    }

    /// Evaluates `flag_key` the way an Unleash SDK would for its shape.
    pub fn evaluate(&self, flag_key: &str, context: &Context) -> Answer {
        match self.shapes.get(flag_key) {
            Some(Shape::Boolean { .. }) => {
                Answer::Enabled(self.engine.is_enabled(flag_key, context, &None))
            }
            _ => Answer::Variant(self.engine.get_variant(flag_key, context, &None)),
        }
    }

    /// The Vexil variation index an answer stands for (`None` when it names none).
    pub fn variation(&self, flag_key: &str, answer: &Answer) -> Option<usize> {
        match (self.shapes.get(flag_key)?, answer) {
            (Shape::Boolean { on, off }, Answer::Enabled(enabled)) => {
                Some(if *enabled { *on } else { *off })
            }
            (Shape::Variants { off }, Answer::Variant(variant)) => {
                if variant.feature_enabled {
                    variant.name.parse().ok()
                } else {
                    Some(*off)
                }
            }
            _ => None,
        }
    }
}

/// A Vexil context as an Unleash context: the key as `userId`, attributes as string
/// properties (Unleash's properties are strings; its numeric and semver constraints parse
/// them).
pub fn context(ctx: &vexil_schema::Context) -> Result<Context, TranslateError> {
    let mut properties = HashMap::with_capacity(ctx.attribute_count());
    for (name, value) in ctx.attributes() {
        if RESERVED.contains(&name) {
            return Err(unsupported(format!("the attribute name `{name}`")));
        }
        properties.insert(name.to_owned(), scalar(value)?);
    }
    Ok(Context {
        user_id: ctx.key().map(str::to_owned),
        session_id: None,
        environment: None,
        app_name: None,
        current_time: None,
        remote_address: None,
        properties: Some(properties),
    })
}

fn scalar(value: &Value) -> Result<String, TranslateError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(unsupported(format!("the non-scalar value {other}"))),
    }
}

fn field(attribute: &str) -> Result<&str, TranslateError> {
    match attribute {
        "key" => Ok("userId"),
        "kind" => Err(unsupported("a clause on the context kind")),
        name if RESERVED.contains(&name) => {
            Err(unsupported(format!("the attribute name `{name}`")))
        }
        name => Ok(name),
    }
}

/// The Unleash segments built so far, and each Vexil segment's disjuncts (Unleash segment ids).
struct SegmentTable<'a> {
    source: HashMap<&'a str, &'a Segment>,
    disjuncts: HashMap<&'a str, Vec<i32>>,
    used: Vec<Value>,
}

impl<'a> SegmentTable<'a> {
    fn new(segments: &'a [Segment]) -> Self {
        Self {
            source: segments.iter().map(|s| (s.key.as_str(), s)).collect(),
            disjuncts: HashMap::new(),
            used: Vec::new(),
        }
    }

    /// The Unleash segment ids whose union is membership of Vexil segment `key`; empty when
    /// the segment is absent (Vexil: not a match).
    fn disjuncts(&mut self, key: &str) -> Result<Vec<i32>, TranslateError> {
        if let Some(ids) = self.disjuncts.get(key) {
            return Ok(ids.clone());
        }
        let Some(&segment) = self.source.get(key) else {
            return Ok(Vec::new());
        };
        let mut alternatives = Vec::new();
        if !segment.included.is_empty() {
            alternatives.push(vec![json!({
                "contextName": "userId", "operator": "IN", "values": segment.included,
                "inverted": false, "caseInsensitive": false,
            })]);
        }
        for rule in &segment.rules {
            if rule.weight.is_some() {
                return Err(unsupported(
                    "a weighted segment rule (Unleash segments have no rollout)",
                ));
            }
            let mut constraints = Vec::with_capacity(rule.clauses.len() + 1);
            if !segment.excluded.is_empty() {
                constraints.push(json!({
                    "contextName": "userId", "operator": "NOT_IN", "values": segment.excluded,
                    "inverted": false, "caseInsensitive": false,
                }));
            }
            for clause in &rule.clauses {
                constraints.push(constraint(clause)?);
            }
            alternatives.push(constraints);
        }
        let mut ids = Vec::with_capacity(alternatives.len());
        for constraints in alternatives {
            let id = i32::try_from(self.used.len() + 1)
                .map_err(|_| unsupported("this many segments"))?;
            self.used
                .push(json!({"id": id, "constraints": constraints}));
            ids.push(id);
        }
        self.disjuncts.insert(segment.key.as_str(), ids.clone());
        Ok(ids)
    }
}

fn feature_json(
    flag: &Flag,
    group_id: Option<String>,
    segments: &mut SegmentTable<'_>,
) -> Result<(Value, Shape), TranslateError> {
    let config = &flag.config;
    if !config.prerequisites.is_empty() {
        return Err(unsupported("prerequisites"));
    }
    let serves_true = |serve: &Serve| match serve {
        Serve::Variation(v) => flag
            .variations
            .get(*v)
            .is_some_and(|x| x.value == Value::Bool(true)),
        Serve::Rollout(_) => false,
    };
    let off_is_false = flag
        .variations
        .get(config.off_variation)
        .is_some_and(|x| x.value == Value::Bool(false));
    if flag.kind == FlagKind::Boolean
        && config.targets.is_empty()
        && config.rules.is_empty()
        && serves_true(&config.fallthrough)
        && off_is_false
        && let Serve::Variation(on) = config.fallthrough
    {
        let feature = json!({
            "name": flag.key.as_str(), "type": "release", "enabled": config.on,
            "project": "default", "impressionData": false,
            "strategies": [{"name": "default", "parameters": {}, "constraints": []}],
        });
        return Ok((
            feature,
            Shape::Boolean {
                on,
                off: config.off_variation,
            },
        ));
    }

    let group_id = group_id.unwrap_or_else(|| {
        if config.salt.is_empty() {
            flag.key.to_string()
        } else {
            config.salt.clone()
        }
    });
    let mut strategies = Vec::new();
    let mut push = |constraints: Vec<Value>,
                    segment_ids: Vec<i32>,
                    serve: &Serve|
     -> Result<(), TranslateError> {
        let (variants, stickiness) = variants_json(serve)?;
        strategies.push(json!({
            "name": "flexibleRollout",
            "sortOrder": strategies.len(),
            "parameters": {"rollout": "100", "stickiness": stickiness, "groupId": group_id},
            "constraints": constraints,
            "segments": segment_ids,
            "variants": variants,
        }));
        Ok(())
    };
    for target in &config.targets {
        let c = json!({"contextName": "userId", "operator": "IN", "values": target.values,
                       "inverted": false, "caseInsensitive": false});
        push(vec![c], Vec::new(), &Serve::Variation(target.variation))?;
    }
    for rule in &config.rules {
        let mut constraints = Vec::new();
        // Each segment_match clause is a choice among disjuncts; the rule becomes one
        // strategy per combination.
        let mut combinations: Vec<Vec<i32>> = vec![Vec::new()];
        for clause in &rule.clauses {
            if clause.op != Operator::SegmentMatch {
                constraints.push(constraint(clause)?);
                continue;
            }
            if clause.negate {
                return Err(unsupported("a negated segment_match"));
            }
            let mut choices = Vec::new();
            for key in &clause.values {
                let key = key
                    .as_str()
                    .ok_or_else(|| unsupported("a non-string segment key"))?;
                choices.extend(segments.disjuncts(key)?);
            }
            combinations = combinations
                .into_iter()
                .flat_map(|combo| {
                    choices.iter().map(move |id| {
                        let mut next = combo.clone();
                        next.push(*id);
                        next
                    })
                })
                .collect();
            if combinations.len() > 64 {
                return Err(unsupported("a rule expanding into more than 64 strategies"));
            }
        }
        for combo in combinations {
            push(constraints.clone(), combo, &rule.serve)?;
        }
    }
    push(Vec::new(), Vec::new(), &config.fallthrough)?;
    let experiment = matches!(&config.fallthrough, Serve::Rollout(r) if r.experiment);
    let feature = json!({
        "name": flag.key.as_str(),
        "type": if experiment { "experiment" } else { "release" },
        "enabled": config.on, "project": "default", "impressionData": false,
        "strategies": strategies, "variants": [],
    });
    Ok((
        feature,
        Shape::Variants {
            off: config.off_variation,
        },
    ))
}

/// Strategy variants for a serve, and the stickiness (bucketing attribute) they use.
fn variants_json(serve: &Serve) -> Result<(Vec<Value>, String), TranslateError> {
    match serve {
        Serve::Variation(v) => Ok((
            vec![json!({"name": v.to_string(), "weight": 1000, "stickiness": "default"})],
            "default".into(),
        )),
        Serve::Rollout(rollout) => {
            let stickiness = match &rollout.bucket_by {
                None => "userId".to_owned(),
                Some(attr) => field(attr)?.to_owned(),
            };
            let mut variants = Vec::with_capacity(rollout.variations.len());
            for w in &rollout.variations {
                // Vexil weighs in thousandths of a percent, Unleash in tenths.
                if w.weight % 100 != 0 {
                    return Err(unsupported(format!(
                        "the weight {} (Unleash has 0.1 % steps)",
                        w.weight
                    )));
                }
                variants.push(
                    json!({"name": w.variation.to_string(), "weight": w.weight / 100,
                                     "stickiness": stickiness}),
                );
            }
            Ok((variants, stickiness))
        }
    }
}

fn constraint(clause: &Clause) -> Result<Value, TranslateError> {
    let context_name = field(&clause.attribute)?;
    let strings = || {
        clause
            .values
            .iter()
            .map(scalar)
            .collect::<Result<Vec<_>, _>>()
    };
    let extreme = |pick_max: bool, what: &str| -> Result<String, TranslateError> {
        let mut best: Option<(f64, &Value)> = None;
        for v in &clause.values {
            let n =
                parse_number(v).ok_or_else(|| unsupported(format!("the {what} operand {v}")))?;
            if best.is_none_or(|(b, _)| if pick_max { n > b } else { n < b }) {
                best = Some((n, v));
            }
        }
        best.map(|(_, v)| scalar(v))
            .ok_or_else(|| unsupported("an empty operand list"))?
    };
    let version = |pick_max: bool| -> Result<String, TranslateError> {
        let mut best: Option<(semver::Version, &Value)> = None;
        for v in &clause.values {
            let parsed = v
                .as_str()
                .and_then(parse_semver)
                .ok_or_else(|| unsupported(format!("the version {v}")))?;
            let better = best.as_ref().is_none_or(|(b, _)| {
                let ord = parsed.cmp_precedence(b);
                if pick_max { ord.is_gt() } else { ord.is_lt() }
            });
            if better {
                best = Some((parsed, v));
            }
        }
        best.map(|(parsed, _)| parsed.to_string())
            .ok_or_else(|| unsupported("an empty operand list"))
    };
    let date = |pick_max: bool| -> Result<String, TranslateError> {
        let mut best: Option<(i64, &str)> = None;
        for v in &clause.values {
            let (Some(ms), Some(s)) = (parse_date_millis(v), v.as_str()) else {
                return Err(unsupported(format!(
                    "the date {v} (Unleash takes RFC 3339 strings)"
                )));
            };
            if best.is_none_or(|(b, _)| if pick_max { ms > b } else { ms < b }) {
                best = Some((ms, s));
            }
        }
        best.map(|(_, s)| s.to_owned())
            .ok_or_else(|| unsupported("an empty operand list"))
    };
    let (operator, values, value) = match clause.op {
        Operator::In => ("IN", Some(strings()?), None),
        Operator::StartsWith => ("STR_STARTS_WITH", Some(strings()?), None),
        Operator::EndsWith => ("STR_ENDS_WITH", Some(strings()?), None),
        Operator::Contains => ("STR_CONTAINS", Some(strings()?), None),
        // x < any(v) ⇔ x < max(v); x > any(v) ⇔ x > min(v).
        Operator::Lt => ("NUM_LT", None, Some(extreme(true, "lt")?)),
        Operator::Lte => ("NUM_LTE", None, Some(extreme(true, "lte")?)),
        Operator::Gt => ("NUM_GT", None, Some(extreme(false, "gt")?)),
        Operator::Gte => ("NUM_GTE", None, Some(extreme(false, "gte")?)),
        Operator::SemverLt => ("SEMVER_LT", None, Some(version(true)?)),
        Operator::SemverGt => ("SEMVER_GT", None, Some(version(false)?)),
        Operator::SemverEq if clause.values.len() == 1 => ("SEMVER_EQ", None, Some(version(true)?)),
        Operator::Before => ("DATE_BEFORE", None, Some(date(true)?)),
        Operator::After => ("DATE_AFTER", None, Some(date(false)?)),
        other => return Err(unsupported(format!("the operator {other:?}"))),
    };
    Ok(json!({
        "contextName": context_name,
        "operator": operator,
        "values": values,
        "value": value,
        "inverted": clause.negate,
        "caseInsensitive": false,
    }))
}

/// One benchmark fixture, translated and ready to evaluate with Yggdrasil.
#[derive(Debug)]
pub struct Prepared {
    /// The translated snapshot.
    engine: Unleash,
    /// The flag evaluated.
    flag: String,
    /// The translated context.
    context: Context,
}

impl Prepared {
    /// Translates the fixture's snapshot and context. When Vexil serves the fixture's flag
    /// from a rollout, searches `groupId`s (the Vexil salt first, then `salt-0`, `salt-1`, …)
    /// for the first that gives the context the same variation.
    pub fn prepare(fixture: &BenchFixture) -> Result<Self, TranslateError> {
        let context = context(&fixture.context)?;
        let vexil = vexil_outcome(fixture);
        let mut group_ids = HashMap::new();
        let mut engine = Unleash::translate(&fixture.snapshot, &group_ids)?;
        if vexil.split {
            let salt = fixture
                .snapshot
                .flags
                .iter()
                .find(|f| f.key.as_str() == fixture.flag)
                .map_or_else(|| fixture.flag.clone(), |f| f.config.salt.clone());
            let mut n = 0;
            while engine.variation(&fixture.flag, &engine.evaluate(&fixture.flag, &context))
                != vexil.variation
            {
                if n >= ALIGNMENT_TRIES {
                    return Err(TranslateError::Alignment {
                        peer: PEER,
                        flag: fixture.flag.clone(),
                    });
                }
                group_ids.insert(fixture.flag.clone(), format!("{salt}-{n}"));
                engine = Unleash::translate(&fixture.snapshot, &group_ids)?;
                n += 1;
            }
        }
        Ok(Self {
            engine,
            flag: fixture.flag.clone(),
            context,
        })
    }

    /// The evaluation as Yggdrasil returns it: what the benchmark measures.
    pub fn evaluate(&self) -> Answer {
        self.engine.evaluate(&self.flag, &self.context)
    }

    /// The Vexil variation index the answer stands for, for comparison with Vexil.
    pub fn variation(&self) -> Option<usize> {
        self.engine.variation(&self.flag, &self.evaluate())
    }
}

fn unsupported(what: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported {
        peer: PEER,
        what: what.into(),
    }
}
