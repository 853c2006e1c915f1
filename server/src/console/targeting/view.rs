//! The editor page: the whole configuration as a form whose field names are its JSON paths,
//! the review (diff) and the conflict view around it.

use maud::{Markup, html};
use serde_json::Value;
use vexil_schema::{Clause, FlagConfig, Operator, Prerequisite, Serve};

use super::super::flags::variation_label;
use super::super::session::Session;
use super::super::{enc, page};
use super::form::{Errors, SCALE, op_label, op_name, show_value};
use crate::store::FlagView;

/// What the editor page needs besides the configuration.
pub(super) struct Editor<'a> {
    pub(super) session: &'a Session,
    pub(super) project: &'a str,
    pub(super) flag: &'a FlagView,
    pub(super) environment: &'a str,
    /// The version the edit started from (`If-Match`).
    pub(super) base: u64,
    pub(super) segments: Vec<(String, String)>,
    pub(super) flags: Vec<String>,
    pub(super) errors: Errors,
    pub(super) editable: bool,
}

impl Editor<'_> {
    pub(super) fn action(&self) -> String {
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

    pub(super) fn render(&self, cfg: &FlagConfig, review: Option<Markup>) -> Markup {
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
