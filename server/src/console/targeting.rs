//! The targeting editor of one flag in one environment: on/off, individual targets, ordered
//! rules with clauses for every operator (segments picked from a list), rollouts with their
//! percentages, the default rule, prerequisites and the off variation.
//!
//! The form is the whole configuration; its field names are the configuration's JSON paths
//! (`rules[0].clauses[1].values`), so the store's validation errors land on the field they
//! name. Nothing is saved without a review: "Review changes" shows a side-by-side diff of
//! the current and the edited configuration, and "Save" sends it with `If-Match` (the
//! version the editor started from) to the same `put_config` the API's `PUT` calls. A save
//! over a version changed meanwhile shows the conflict view: what the other change did,
//! what yours would do on top of it, and a way to re-apply yours or reload.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::Value;
use vexil_schema::{
    Clause, FlagConfig, FlagKey, Operator, Prerequisite, Rollout, Rule, Serve, Target,
    WeightedVariation,
};

use super::diff;
use super::flags::variation_label;
use super::page::{self, Nav};
use super::session::Session;
use super::{ConsoleError, enc, settle};
use crate::app::AppState;
use crate::auth::Role;
use crate::store::{FlagFilter, FlagView, StoreError};

/// Rollout weights are in thousandths of a percent.
const SCALE: f64 = 1000.0;

/// A sentence for what a serve does: a variation, or a split with percentages.
pub fn serve_text(view: &FlagView, serve: &Serve) -> String {
    match serve {
        Serve::Variation(v) => format!("serves {}", variation_label(view, *v)),
        Serve::Rollout(r) => {
            let parts: Vec<String> = r
                .variations
                .iter()
                .map(|w| {
                    format!(
                        "{}% {}",
                        f64::from(w.weight) / SCALE,
                        variation_label(view, w.variation)
                    )
                })
                .collect();
            format!("splits {}", parts.join(" / "))
        }
    }
}

fn op_name(op: Operator) -> &'static str {
    match op {
        Operator::In => "in",
        Operator::StartsWith => "starts_with",
        Operator::EndsWith => "ends_with",
        Operator::Contains => "contains",
        Operator::Matches => "matches",
        Operator::Lt => "lt",
        Operator::Lte => "lte",
        Operator::Gt => "gt",
        Operator::Gte => "gte",
        Operator::Before => "before",
        Operator::After => "after",
        Operator::SemverEq => "semver_eq",
        Operator::SemverLt => "semver_lt",
        Operator::SemverGt => "semver_gt",
        Operator::SegmentMatch => "segment_match",
        Operator::Exists => "exists",
    }
}

fn op_label(op: Operator) -> &'static str {
    match op {
        Operator::In => "is one of",
        Operator::StartsWith => "starts with",
        Operator::EndsWith => "ends with",
        Operator::Contains => "contains",
        Operator::Matches => "matches regex",
        Operator::Lt => "<",
        Operator::Lte => "≤",
        Operator::Gt => ">",
        Operator::Gte => "≥",
        Operator::Before => "is before (date)",
        Operator::After => "is after (date)",
        Operator::SemverEq => "semver =",
        Operator::SemverLt => "semver <",
        Operator::SemverGt => "semver >",
        Operator::SegmentMatch => "is in segment",
        Operator::Exists => "exists",
    }
}

fn parse_op(s: &str) -> Option<Operator> {
    Operator::ALL.into_iter().find(|o| op_name(*o) == s)
}

/// A clause value as typed: numbers and booleans for the numeric operators and `in`, a
/// quoted string stays a string, anything else is a string.
fn parse_value(op: Operator, line: &str) -> Value {
    let numeric = matches!(
        op,
        Operator::In
            | Operator::Lt
            | Operator::Lte
            | Operator::Gt
            | Operator::Gte
            | Operator::Before
            | Operator::After
    );
    if line.starts_with('"') {
        if let Ok(v @ Value::String(_)) = serde_json::from_str::<Value>(line) {
            return v;
        }
    } else if numeric
        && let Ok(v @ (Value::Number(_) | Value::Bool(_))) = serde_json::from_str::<Value>(line)
    {
        return v;
    }
    Value::String(line.to_owned())
}

/// A clause value as shown in its textarea (inverse of [`parse_value`]).
fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let looks_typed = serde_json::from_str::<Value>(s)
                .is_ok_and(|v| v.is_number() || v.is_boolean())
                || s.starts_with('"');
            if looks_typed {
                v.to_string()
            } else {
                s.clone()
            }
        }
        other => other.to_string(),
    }
}

/// The submitted form, as its pairs (names are JSON-like paths).
struct Fields(BTreeMap<String, Vec<String>>);

impl Fields {
    fn new(pairs: Vec<(String, String)>) -> Self {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            m.entry(k).or_default().push(v);
        }
        Self(m)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.first()).map(String::as_str)
    }
    fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or(&[])
    }
    /// The indexes `i` for which a field `{prefix}[i]…` exists, in order.
    fn indexes(&self, prefix: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(prefix)?.strip_prefix('['))
            .filter_map(|rest| rest.split(']').next()?.parse().ok())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Errors found while reading the form (before the store validates): `(path, message)`.
type Errors = Vec<(String, String)>;

fn parse_serve(f: &Fields, prefix: &str, variations: usize, errors: &mut Errors) -> Serve {
    let choice = f.get(&format!("{prefix}.serve")).unwrap_or("v:0");
    if let Some(v) = choice.strip_prefix("v:") {
        return Serve::Variation(v.parse().unwrap_or(0));
    }
    let mut weights = Vec::new();
    for i in 0..variations {
        let name = format!("{prefix}.rollout.{i}");
        let raw = f.get(&name).unwrap_or("0").trim();
        let pct = if raw.is_empty() {
            Ok(0.0)
        } else {
            raw.parse::<f64>()
        };
        match pct {
            Ok(p) if (0.0..=100.0).contains(&p) => weights.push(WeightedVariation {
                variation: i,
                weight: (p * SCALE).round() as u32,
            }),
            _ => errors.push((
                format!("{prefix}.rollout.variations[{i}]"),
                format!("'{raw}' is not a percentage between 0 and 100"),
            )),
        }
    }
    let bucket_by = f
        .get(&format!("{prefix}.bucket_by"))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Serve::Rollout(Rollout {
        variations: weights,
        bucket_by,
        experiment: f.get(&format!("{prefix}.experiment")).is_some(),
    })
}

fn split_keys(s: &str) -> Vec<String> {
    s.split(['\n', ','])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads the whole configuration from the form.
fn parse_config(f: &Fields, variations: usize) -> (FlagConfig, Errors) {
    let mut errors = Errors::new();
    let targets = f
        .indexes("targets")
        .into_iter()
        .map(|k| Target {
            variation: f
                .get(&format!("targets[{k}].variation"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            values: split_keys(f.get(&format!("targets[{k}].values")).unwrap_or("")),
        })
        .filter(|t| !t.values.is_empty())
        .collect();
    let mut rules = Vec::new();
    for i in f.indexes("rules") {
        let p = format!("rules[{i}]");
        let mut clauses = Vec::new();
        for j in f.indexes(&format!("{p}.clauses")) {
            let c = format!("{p}.clauses[{j}]");
            let op_raw = f.get(&format!("{c}.op")).unwrap_or("in");
            let op = parse_op(op_raw).unwrap_or_else(|| {
                errors.push((format!("{c}.op"), format!("unknown operator '{op_raw}'")));
                Operator::In
            });
            let values: Vec<Value> = if op == Operator::SegmentMatch {
                f.all(&format!("{c}.segments"))
                    .iter()
                    .map(|s| Value::String(s.clone()))
                    .collect()
            } else if op == Operator::Exists {
                Vec::new()
            } else {
                f.get(&format!("{c}.values"))
                    .unwrap_or("")
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| parse_value(op, l))
                    .collect()
            };
            clauses.push(Clause {
                attribute: f
                    .get(&format!("{c}.attribute"))
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
                op,
                values,
                negate: f.get(&format!("{c}.negate")).is_some(),
            });
        }
        rules.push(Rule {
            id: f
                .get(&format!("{p}.id"))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(new_rule_id),
            description: f
                .get(&format!("{p}.description"))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            clauses,
            serve: parse_serve(f, &p, variations, &mut errors),
        });
    }
    let mut prerequisites = Vec::new();
    for k in f.indexes("prerequisites") {
        let key = f
            .get(&format!("prerequisites[{k}].key"))
            .unwrap_or("")
            .trim();
        if key.is_empty() {
            continue;
        }
        match FlagKey::parse(key) {
            Ok(key) => prerequisites.push(Prerequisite {
                key,
                variation: f
                    .get(&format!("prerequisites[{k}].variation"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            }),
            Err(e) => errors.push((format!("prerequisites[{k}].key"), e.to_string())),
        }
    }
    let config = FlagConfig {
        on: f.get("on").is_some(),
        off_variation: f
            .get("off_variation")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        targets,
        rules,
        fallthrough: parse_serve(f, "fallthrough", variations, &mut errors),
        prerequisites,
        // Empty: the store keeps the current salt.
        salt: String::new(),
        version: 0,
    };
    (config, errors)
}

fn new_rule_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("rule-{}", &id[..8])
}

/// The editable part of a configuration, as compared in the diff (without salt and
/// version, which the editor does not change).
fn comparable(c: &FlagConfig) -> String {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("salt");
        m.remove("version");
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// `mine` re-applied on `current`: each field `mine` changed against `base` takes its value,
/// every other field keeps the current one.
fn reapply(base: &FlagConfig, mine: &FlagConfig, current: &FlagConfig) -> FlagConfig {
    fn pick<T: Clone + PartialEq>(base: &T, mine: &T, current: &T) -> T {
        if mine != base {
            mine.clone()
        } else {
            current.clone()
        }
    }
    FlagConfig {
        on: pick(&base.on, &mine.on, &current.on),
        off_variation: pick(
            &base.off_variation,
            &mine.off_variation,
            &current.off_variation,
        ),
        targets: pick(&base.targets, &mine.targets, &current.targets),
        rules: pick(&base.rules, &mine.rules, &current.rules),
        fallthrough: pick(&base.fallthrough, &mine.fallthrough, &current.fallthrough),
        prerequisites: pick(
            &base.prerequisites,
            &mine.prerequisites,
            &current.prerequisites,
        ),
        salt: String::new(),
        version: 0,
    }
}

/// What the editor page needs besides the configuration.
struct Editor<'a> {
    session: &'a Session,
    project: &'a str,
    flag: &'a FlagView,
    environment: &'a str,
    /// The version the edit started from (`If-Match`).
    base: u64,
    segments: Vec<(String, String)>,
    flags: Vec<String>,
    errors: Errors,
    editable: bool,
}

impl Editor<'_> {
    fn action(&self) -> String {
        format!(
            "/projects/{}/flags/{}/environments/{}/targeting",
            enc(self.project),
            enc(self.flag.definition.key.as_ref()),
            enc(self.environment)
        )
    }

    fn invalid(&self, path: &str) -> Option<&'static str> {
        self.errors
            .iter()
            .any(|(p, _)| {
                p == path
                    || p.strip_prefix(path)
                        .is_some_and(|r| r.starts_with('[') || r.starts_with('.'))
            })
            .then_some("true")
    }

    fn variation_select(&self, name: &str, id: &str, selected: usize, label: &str) -> Markup {
        html! {
            select id=(id) name=(name) aria-label=(label) disabled[!self.editable] aria-invalid=[self.invalid(name)] {
                @for i in 0..self.flag.definition.variations.len() {
                    option value=(i) selected[i == selected] { (variation_label(self.flag, i)) }
                }
            }
        }
    }

    fn serve(&self, prefix: &str, serve: &Serve, label: &str) -> Markup {
        let n = self.flag.definition.variations.len();
        let (choice, weights, bucket_by, experiment) = match serve {
            Serve::Variation(v) => (format!("v:{v}"), vec![0u32; n], None, false),
            Serve::Rollout(r) => {
                let mut w = vec![0u32; n];
                for x in &r.variations {
                    if let Some(slot) = w.get_mut(x.variation) {
                        *slot += x.weight;
                    }
                }
                ("rollout".to_owned(), w, r.bucket_by.clone(), r.experiment)
            }
        };
        let id = prefix.replace(['[', ']', '.'], "-");
        html! {
            div.row {
                div {
                    label for=(format!("{id}-serve")) { (label) }
                    select id=(format!("{id}-serve")) name=(format!("{prefix}.serve")) disabled[!self.editable] aria-invalid=[self.invalid(&format!("{prefix}.variation"))] {
                        @for i in 0..n {
                            option value=(format!("v:{i}")) selected[choice == format!("v:{i}")] { "Serve " (variation_label(self.flag, i)) }
                        }
                        option value="rollout" selected[choice == "rollout"] { "Percentage rollout" }
                    }
                }
            }
            details.rollout data-rollout open[choice == "rollout"] {
                summary { "Rollout percentages (used when “Percentage rollout” is chosen)" }
                div.row {
                    @for i in 0..n {
                        @let name = format!("{prefix}.rollout.{i}");
                        div {
                            label for=(format!("{id}-w{i}")) { (variation_label(self.flag, i)) " %" }
                            input id=(format!("{id}-w{i}")) type="number" step="0.001" min="0" max="100" name=(name) data-weight
                                value=(f64::from(weights[i]) / SCALE) disabled[!self.editable]
                                aria-invalid=[self.invalid(&format!("{prefix}.rollout.variations[{i}]"))];
                        }
                    }
                    div {
                        label for=(format!("{id}-bucket")) { "Bucket by attribute" }
                        input id=(format!("{id}-bucket")) type="text" name=(format!("{prefix}.bucket_by")) value=[bucket_by.as_deref()] placeholder="key" disabled[!self.editable] size="10";
                    }
                    div { label { input type="checkbox" name=(format!("{prefix}.experiment")) checked[experiment] disabled[!self.editable]; " Experiment" } }
                }
                p.muted data-total aria-live="polite" {
                    "Total " (f64::from(weights.iter().sum::<u32>()) / SCALE) "%"
                }
                (page::field_errors(&self.errors, &format!("{prefix}.rollout")))
            }
            (page::field_errors(&self.errors, &format!("{prefix}.variation")))
        }
    }

    fn clause(&self, i: usize, j: usize, c: &Clause) -> Markup {
        let p = format!("rules[{i}].clauses[{j}]");
        let id = format!("r{i}c{j}");
        let values: Vec<String> = if c.op == Operator::SegmentMatch {
            Vec::new()
        } else {
            c.values.iter().map(show_value).collect()
        };
        let chosen: Vec<&str> = c.values.iter().filter_map(Value::as_str).collect();
        html! {
            div.row.clause {
                div {
                    label for=(format!("{id}-attr")) { "Attribute" }
                    input id=(format!("{id}-attr")) type="text" name=(format!("{p}.attribute")) value=(c.attribute) size="12"
                        disabled[!self.editable] aria-invalid=[self.invalid(&format!("{p}.attribute"))];
                    (page::field_errors(&self.errors, &format!("{p}.attribute")))
                }
                div {
                    label for=(format!("{id}-op")) { "Operator" }
                    select id=(format!("{id}-op")) name=(format!("{p}.op")) disabled[!self.editable] aria-invalid=[self.invalid(&format!("{p}.op"))] {
                        @for op in Operator::ALL { option value=(op_name(op)) selected[op == c.op] { (op_label(op)) } }
                    }
                }
                div {
                    label for=(format!("{id}-values")) { "Values (one per line)" }
                    textarea.code id=(format!("{id}-values")) name=(format!("{p}.values")) rows="2" cols="22"
                        disabled[!self.editable] aria-invalid=[self.invalid(&format!("{p}.values"))] { (values.join("\n")) }
                    (page::field_errors(&self.errors, &format!("{p}.values")))
                }
                div {
                    label for=(format!("{id}-segs")) { "Segments (for “is in segment”)" }
                    select id=(format!("{id}-segs")) name=(format!("{p}.segments")) multiple size="3" disabled[!self.editable] {
                        @for (key, name) in &self.segments {
                            option value=(key) selected[c.op == Operator::SegmentMatch && chosen.contains(&key.as_str())] { (name) " (" (key) ")" }
                        }
                    }
                    @if self.segments.is_empty() { span.muted { "No segments in this environment." } }
                }
                div { label { input type="checkbox" name=(format!("{p}.negate")) checked[c.negate] disabled[!self.editable]; " Negate" } }
                @if self.editable {
                    div { button.secondary.small type="submit" name="action" value=(format!("remove_clause:{i}:{j}")) aria-label=(format!("Remove condition {} of rule {}", j + 1, i + 1)) { "Remove" } }
                }
            }
        }
    }

    fn render(&self, cfg: &FlagConfig, review: Option<Markup>) -> Markup {
        let key = self.flag.definition.key.to_string();
        let back = format!(
            "/projects/{}/flags/{}?env={}",
            enc(self.project),
            enc(&key),
            enc(self.environment)
        );
        html! {
            p.muted { a href=(format!("/projects/{}/flags", enc(self.project))) { "Flags" } " / " a href=(back) { code { (key) } } " / " (self.environment) }
            h1 { "Targeting in " (self.environment) }
            @if !self.errors.is_empty() {
                (page::notice("error", html! {
                    "Nothing was saved: " (self.errors.len()) " problem" @if self.errors.len() != 1 { "s" } " marked below."
                    ul { @for (p, m) in &self.errors { li { code { (if p.is_empty() { "(configuration)" } else { p.as_str() }) } ": " (m) } } }
                }))
            }
            @if !self.editable {
                (page::notice("warn", html! { "Read only: your role (" (self.session.actor.role.as_str()) ") cannot change flags." }))
            }
            @if let Some(r) = review { (r) }
            form.stack method="post" action=(self.action()) {
                (page::csrf(self.session))
                input type="hidden" name="base" value=(self.base);
                fieldset {
                    legend { "State" }
                    div.row {
                        div { label { input type="checkbox" name="on" checked[cfg.on] disabled[!self.editable]; " Targeting on" } }
                        div {
                            label for="off_variation" { "When off, serve" }
                            (self.variation_select("off_variation", "off_variation", cfg.off_variation, "Off variation"))
                            (page::field_errors(&self.errors, "off_variation"))
                        }
                    }
                }
                fieldset {
                    legend { "Prerequisites" }
                    p.muted { "Flags that must be on and serve a given variation first; otherwise this flag serves its off variation." }
                    datalist #flag-keys { @for k in &self.flags { option value=(k) {} } }
                    @for (k, pr) in cfg.prerequisites.iter().enumerate().chain(std::iter::once((cfg.prerequisites.len(), &Prerequisite { key: self.flag.definition.key.clone(), variation: usize::MAX }))) {
                        @let blank = pr.variation == usize::MAX;
                        @if self.editable || !blank {
                            div.row {
                                div {
                                    label for=(format!("pre{k}-key")) { @if blank { "Add prerequisite flag" } @else { "Flag" } }
                                    input id=(format!("pre{k}-key")) type="text" list="flag-keys" name=(format!("prerequisites[{k}].key"))
                                        value=(if blank { String::new() } else { pr.key.to_string() }) disabled[!self.editable]
                                        aria-invalid=[self.invalid(&format!("prerequisites[{k}]"))];
                                }
                                div {
                                    label for=(format!("pre{k}-var")) { "must serve variation #" }
                                    input id=(format!("pre{k}-var")) type="number" min="0" name=(format!("prerequisites[{k}].variation"))
                                        value=(if blank { 0 } else { pr.variation }) disabled[!self.editable];
                                }
                                (page::field_errors(&self.errors, &format!("prerequisites[{k}]")))
                            }
                        }
                    }
                }
                fieldset {
                    legend { "Individual targets" }
                    @for i in 0..self.flag.definition.variations.len() {
                        @let values = cfg.targets.iter().filter(|t| t.variation == i).flat_map(|t| t.values.iter().cloned()).collect::<Vec<_>>();
                        div {
                            input type="hidden" name=(format!("targets[{i}].variation")) value=(i);
                            label for=(format!("t{i}")) { "Context keys served " (variation_label(self.flag, i)) " (one per line or comma-separated)" }
                            textarea.code id=(format!("t{i}")) name=(format!("targets[{i}].values")) rows="2" disabled[!self.editable] aria-invalid=[self.invalid(&format!("targets[{i}]"))] { (values.join("\n")) }
                        }
                    }
                    (page::field_errors(&self.errors, "targets"))
                }
                h2 { "Rules" }
                p.muted { "Evaluated in order; the first rule whose conditions all match decides." }
                @if cfg.rules.is_empty() {
                    (page::empty("No rules", html! { "Everyone who is not individually targeted gets the default rule below." }))
                }
                @for (i, r) in cfg.rules.iter().enumerate() {
                    section.card.rule aria-labelledby=(format!("rule{i}-h")) {
                        h3 #(format!("rule{i}-h")) { "Rule " (i + 1) }
                        input type="hidden" name=(format!("rules[{i}].id")) value=(r.id);
                        div.row {
                            div {
                                label for=(format!("rule{i}-desc")) { "Description" }
                                input id=(format!("rule{i}-desc")) type="text" name=(format!("rules[{i}].description")) value=[r.description.as_deref()] size="40" disabled[!self.editable];
                            }
                            @if self.editable {
                                @if i > 0 { button.secondary.small type="submit" name="action" value=(format!("move_up:{i}")) aria-label=(format!("Move up rule {}", i + 1)) { "Move up" } }
                                button.secondary.small type="submit" name="action" value=(format!("remove_rule:{i}")) aria-label=(format!("Remove rule {}", i + 1)) { "Remove rule" }
                            }
                        }
                        (page::field_errors(&self.errors, &format!("rules[{i}].id")))
                        p { strong { "If all of these match" } }
                        @for (j, c) in r.clauses.iter().enumerate() { (self.clause(i, j, c)) }
                        (page::field_errors(&self.errors, &format!("rules[{i}].clauses")))
                        @if self.editable {
                            button.secondary.small type="submit" name="action" value=(format!("add_clause:{i}")) aria-label=(format!("Add condition to rule {}", i + 1)) { "Add condition" }
                        }
                        (self.serve(&format!("rules[{i}]"), &r.serve, "Then"))
                    }
                }
                @if self.editable {
                    button.secondary type="submit" name="action" value="add_rule" { "Add rule" }
                }
                h2 { "Default rule" }
                section.card {
                    (self.serve("fallthrough", &cfg.fallthrough, "Everyone else"))
                }
                @if self.editable {
                    div.row {
                        button type="submit" name="action" value="preview" { "Review changes" }
                        a href=(self.action()) { "Discard edits" }
                    }
                }
            }
        }
    }
}

/// `GET …/targeting`: the editor on the current configuration.
pub async fn edit(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment)): Path<(String, String, String)>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, Some(&project), Some(&environment), "flags").await?;
    let view = app.store.get_flag(&project, &flag).await?;
    let cfg = view
        .environments
        .get(&environment)
        .cloned()
        .ok_or_else(|| StoreError::NotFound(format!("flag '{flag}' in '{environment}'")))?;
    let ed = editor(
        &app,
        &session,
        &project,
        &view,
        &environment,
        cfg.version,
        Errors::new(),
    )
    .await?;
    Ok(page::layout(&session, &nav, "Targeting", ed.render(&cfg, None)).into_response())
}

async fn editor<'a>(
    app: &AppState,
    session: &'a Session,
    project: &'a str,
    view: &'a FlagView,
    environment: &'a str,
    base: u64,
    errors: Errors,
) -> Result<Editor<'a>, ConsoleError> {
    let segments = app
        .store
        .list_segments(project, environment, None, Some(100))
        .await?
        .items
        .into_iter()
        .map(|s| (s.key, s.name))
        .collect();
    let flags = app
        .store
        .list_flags(
            project,
            &FlagFilter {
                archived: Some(false),
                limit: Some(100),
                ..FlagFilter::default()
            },
        )
        .await?
        .items
        .into_iter()
        .map(|f| f.key)
        .filter(|k| *k != view.definition.key.to_string())
        .collect();
    Ok(Editor {
        session,
        project,
        flag: view,
        environment,
        base,
        segments,
        flags,
        errors,
        editable: session.can(Role::Editor) && !view.archived,
    })
}

/// `POST …/targeting`: an edit of the form's structure (add or remove a rule, a condition),
/// a review (diff), or a save.
pub async fn submit(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment)): Path<(String, String, String)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let fields = Fields::new(pairs);
    let ctx = session.write(Role::Editor, fields.get("csrf").unwrap_or(""))?;
    let nav = Nav::load(&app, Some(&project), Some(&environment), "flags").await?;
    let view = app.store.get_flag(&project, &flag).await?;
    let current = view
        .environments
        .get(&environment)
        .cloned()
        .ok_or_else(|| StoreError::NotFound(format!("flag '{flag}' in '{environment}'")))?;
    let base: u64 = fields
        .get("base")
        .and_then(|b| b.parse().ok())
        .ok_or_else(|| ConsoleError::BadForm("the form lacks its base version".into()))?;
    let (mut cfg, errors) = parse_config(&fields, view.definition.variations.len());
    let action = fields.get("action").unwrap_or("preview").to_owned();
    let page_with =
        |cfg: FlagConfig, errors: Errors, base: u64, status: StatusCode, review: Option<Markup>| {
            let app = app.clone();
            let session = &session;
            let nav = &nav;
            let view = &view;
            let project = &project;
            let environment = &environment;
            async move {
                let ed = editor(&app, session, project, view, environment, base, errors).await?;
                Ok::<Response, ConsoleError>(
                    (
                        status,
                        page::layout(session, nav, "Targeting", ed.render(&cfg, review)),
                    )
                        .into_response(),
                )
            }
        };
    // Structural edits re-render the editor with the change applied; nothing is saved.
    let index = |s: &str| s.parse::<usize>().ok();
    let structural = match action.split(':').collect::<Vec<_>>().as_slice() {
        ["add_rule"] => {
            cfg.rules.push(Rule {
                id: new_rule_id(),
                description: None,
                clauses: vec![Clause {
                    attribute: "key".into(),
                    op: Operator::In,
                    values: Vec::new(),
                    negate: false,
                }],
                serve: Serve::Variation(0),
            });
            true
        }
        ["remove_rule", i] => {
            if let Some(i) = index(i).filter(|i| *i < cfg.rules.len()) {
                cfg.rules.remove(i);
            }
            true
        }
        ["move_up", i] => {
            if let Some(i) = index(i).filter(|i| *i > 0 && *i < cfg.rules.len()) {
                cfg.rules.swap(i - 1, i);
            }
            true
        }
        ["add_clause", i] => {
            if let Some(r) = index(i).and_then(|i| cfg.rules.get_mut(i)) {
                r.clauses.push(Clause {
                    attribute: String::new(),
                    op: Operator::In,
                    values: Vec::new(),
                    negate: false,
                });
            }
            true
        }
        ["remove_clause", i, j] => {
            if let (Some(r), Some(j)) = (index(i).and_then(|i| cfg.rules.get_mut(i)), index(j))
                && j < r.clauses.len()
            {
                r.clauses.remove(j);
            }
            true
        }
        _ => false,
    };
    if structural {
        return page_with(cfg, errors, base, StatusCode::OK, None).await;
    }
    if !errors.is_empty() {
        return page_with(cfg, errors, base, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    }
    if current.version != base {
        // Someone saved meanwhile: show what they changed and what this edit would do on
        // top of the current version; re-applying makes the current version the base.
        let started = app
            .store
            .get_version(&project, &flag, &environment, base)
            .await
            .map(|v| v.config)
            .ok();
        let theirs = started.as_ref().map(comparable).unwrap_or_default();
        // Re-applying keeps the other change: the fields this edit changed (against the
        // version it started from) over the current version.
        if let Some(started) = &started {
            cfg = reapply(started, &cfg, &current);
        }
        let review = html! {
            section #conflict aria-labelledby="conflict-h" {
                h2 #conflict-h { "This flag changed while you were editing" }
                (page::notice("warn", html! {
                    "You started from version " (base) "; version " (current.version) " was saved since. Nothing of yours was saved. "
                    "Review both changes, then re-apply yours on the latest version or discard it."
                }))
                h3 { "What changed meanwhile" }
                (diff::side_by_side(&format!("Version {base} (yours started here)"), &format!("Version {} (current)", current.version), &theirs, &comparable(&current)))
                h3 { "What your edit would change on top of it" }
                (diff::side_by_side(&format!("Version {} (current)", current.version), "Your edit", &comparable(&current), &comparable(&cfg)))
                div.row {
                    a.button.secondary href=(format!("/projects/{}/flags/{}/environments/{}/targeting", enc(&project), enc(&flag), enc(&environment))) { "Discard mine and reload" }
                    span.muted { "or press “Review changes” below to re-apply your edit on version " (current.version) "." }
                }
            }
        };
        return page_with(
            cfg,
            errors,
            current.version,
            StatusCode::PRECONDITION_FAILED,
            Some(review),
        )
        .await;
    }
    if action == "save" {
        return match app
            .store
            .put_config(&ctx, &project, &flag, &environment, cfg.clone(), Some(base))
            .await
        {
            Ok(_) => {
                settle(&app).await;
                Ok(Redirect::to(&format!(
                    "/projects/{}/flags/{}?env={}&done=saved",
                    enc(&project),
                    enc(&flag),
                    enc(&environment)
                ))
                .into_response())
            }
            Err(StoreError::Invalid(v)) => {
                let errors = v.errors.into_iter().map(|e| (e.path, e.message)).collect();
                page_with(cfg, errors, base, StatusCode::UNPROCESSABLE_ENTITY, None).await
            }
            Err(StoreError::PreconditionFailed { .. }) => {
                // Lost a race after the check above: the next review shows the conflict.
                page_with(
                    cfg,
                    vec![(
                        String::new(),
                        "This flag changed meanwhile: review again.".into(),
                    )],
                    base,
                    StatusCode::PRECONDITION_FAILED,
                    None,
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
    }
    // Review: the diff and the save button (the store validates on save; its errors come
    // back onto the fields).
    let (old, new) = (comparable(&current), comparable(&cfg));
    let changed = diff::changes(&diff::lines(&old, &new));
    let review = html! {
        section #review aria-labelledby="review-h" {
            h2 #review-h { "Review before saving" }
            (diff::side_by_side(&format!("Version {} (current)", current.version), "After saving", &old, &new))
            @if changed {
                form method="post" action=(format!("/projects/{}/flags/{}/environments/{}/targeting", enc(&project), enc(&flag), enc(&environment))) data-save {
                    (page::csrf(&session))
                    @for (k, vs) in &fields.0 {
                        @if k != "csrf" && k != "action" {
                            @for v in vs { input type="hidden" name=(k) value=(v); }
                        }
                    }
                    div.row {
                        button type="submit" name="action" value="save" { "Save version " (current.version + 1) }
                        span.muted { "or keep editing below." }
                    }
                }
            } @else {
                (page::notice("ok", html! { "Nothing to save: the edit matches the current version." }))
            }
        }
    };
    page_with(cfg, errors, base, StatusCode::OK, Some(review)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn the_form_reads_back_into_a_configuration() {
        let f = fields(&[
            ("on", "on"),
            ("off_variation", "1"),
            ("targets[0].variation", "0"),
            ("targets[0].values", "alice, bob\ncarol"),
            ("rules[0].id", "r1"),
            ("rules[0].clauses[0].attribute", "plan"),
            ("rules[0].clauses[0].op", "in"),
            ("rules[0].clauses[0].values", "pro\n42\n\"7\""),
            ("rules[0].clauses[1].attribute", ""),
            ("rules[0].clauses[1].op", "segment_match"),
            ("rules[0].clauses[1].segments", "beta"),
            ("rules[0].clauses[1].segments", "staff"),
            ("rules[0].serve", "rollout"),
            ("rules[0].rollout.0", "12.5"),
            ("rules[0].rollout.1", "87.5"),
            ("fallthrough.serve", "v:1"),
            ("prerequisites[0].key", "base-flag"),
            ("prerequisites[0].variation", "0"),
            ("prerequisites[1].key", ""),
        ]);
        let (c, errors) = parse_config(&f, 2);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(c.on);
        assert_eq!(c.off_variation, 1);
        assert_eq!(c.targets[0].values, vec!["alice", "bob", "carol"]);
        let r = &c.rules[0];
        assert_eq!(r.id, "r1");
        assert_eq!(
            r.clauses[0].values,
            vec![Value::from("pro"), Value::from(42), Value::from("7")]
        );
        assert_eq!(r.clauses[1].op, Operator::SegmentMatch);
        assert_eq!(
            r.clauses[1].values,
            vec![Value::from("beta"), Value::from("staff")]
        );
        let Serve::Rollout(ro) = &r.serve else {
            panic!("a rollout")
        };
        assert_eq!(
            ro.variations.iter().map(|w| w.weight).collect::<Vec<_>>(),
            vec![12_500, 87_500]
        );
        assert_eq!(c.fallthrough, Serve::Variation(1));
        assert_eq!(c.prerequisites.len(), 1);
    }

    #[test]
    fn unreadable_fields_are_errors_on_their_path() {
        let f = fields(&[
            ("rules[0].clauses[0].op", "bogus"),
            ("fallthrough.serve", "rollout"),
            ("fallthrough.rollout.0", "abc"),
        ]);
        let (_, errors) = parse_config(&f, 2);
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "rules[0].clauses[0].op",
                "fallthrough.rollout.variations[0]"
            ]
        );
    }

    #[test]
    fn reapplying_keeps_the_other_change() {
        let base = FlagConfig::serving(1);
        let mut mine = base.clone();
        mine.on = true;
        let mut current = base.clone();
        current.off_variation = 0;
        let merged = reapply(&base, &mine, &current);
        assert!(merged.on);
        assert_eq!(merged.off_variation, 0);
    }

    #[test]
    fn values_round_trip_through_the_textarea() {
        for v in [
            Value::from("pro"),
            Value::from(3),
            Value::from("3"),
            Value::from(true),
        ] {
            assert_eq!(parse_value(Operator::In, &show_value(&v)), v, "{v}");
        }
    }
}
