//! Experiments of an environment and the results page of one: per metric, the variations
//! with their units, conversions and means, the lift against control with its interval drawn
//! as a server-rendered SVG chart, and the sample-ratio-mismatch warning.
//!
//! The numbers come from [`crate::store::Store::experiment_results`], the function the
//! API's results endpoint calls: the console computes nothing of its own.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{self, Nav};
use super::session::Session;
use super::{ConsoleError, enc};
use crate::app::AppState;
use crate::experiments::model::{
    AnalysisMethod, ExperimentResults, ExperimentStatus, ExperimentView, MetricResult, MetricRole,
    VariationResult,
};
use crate::store::StoreError;

/// `GET /projects/{project}/environments/{environment}/experiments`.
pub async fn list(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, Some(&project), Some(&environment), "experiments").await?;
    let items = app
        .store
        .list_experiments(&project, &environment, None, Some(100))
        .await?
        .items;
    let base = format!(
        "/projects/{}/environments/{}/experiments",
        enc(&project),
        enc(&environment)
    );
    let body = html! {
        h1 { "Experiments in " (environment) }
        @if items.is_empty() {
            (page::empty("No experiments yet", html! {
                "Define metrics and an experiment on a flag through the API ("
                code { "POST /api/v1/projects/" (project) "/environments/" (environment) "/experiments" }
                "); its results appear here once it has started."
            }))
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Experiment" } th scope="col" { "Flag" }
                    th scope="col" { "Primary metric" } th scope="col" { "Status" } th scope="col" { "Iterations" }
                } }
                tbody {
                    @for x in &items {
                        tr {
                            td { a href=(format!("{base}/{}", enc(&x.experiment.key))) { strong { (x.experiment.name) } } br; code.muted { (x.experiment.key) } }
                            td { a href=(format!("/projects/{}/flags/{}", enc(&project), enc(&x.experiment.flag))) { code { (x.experiment.flag) } } }
                            td { code { (x.experiment.primary_metric) } }
                            td { (status_badge(x.status)) }
                            td { (x.iterations.len()) }
                        }
                    }
                }
            }
        }
    };
    Ok(page::layout(&session, &nav, "Experiments", body).into_response())
}

fn status_badge(s: ExperimentStatus) -> Markup {
    html! {
        @match s {
            ExperimentStatus::Running => span.badge.on { "Running" },
            ExperimentStatus::Draft => span.badge.off { "Draft" },
            ExperimentStatus::Stopped => span.badge.off { "Stopped" },
        }
    }
}

/// Query of the results page.
#[derive(Debug, Default, Deserialize)]
pub struct ResultsQuery {
    /// The iteration to show (default: the latest).
    #[serde(default)]
    pub iteration: Option<u64>,
}

/// `GET …/experiments/{experiment}`: the results of an iteration.
pub async fn results(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment, key)): Path<(String, String, String)>,
    Query(q): Query<ResultsQuery>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, Some(&project), Some(&environment), "experiments").await?;
    let view = app
        .store
        .get_experiment(&project, &environment, &key)
        .await?;
    let results = match app
        .store
        .experiment_results(&project, &environment, &key, q.iteration, None)
        .await
    {
        Ok(r) => Some(r),
        // Never started: no iteration to analyse yet.
        Err(StoreError::Conflict { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let base = format!(
        "/projects/{}/environments/{}/experiments",
        enc(&project),
        enc(&environment)
    );
    let body = html! {
        p.muted { a href=(base) { "Experiments" } " / " code { (key) } }
        h1 { (view.experiment.name) " " (status_badge(view.status)) }
        @if !view.experiment.hypothesis.is_empty() { p { "Hypothesis: " (view.experiment.hypothesis) } }
        p.muted {
            "Flag " a href=(format!("/projects/{}/flags/{}", enc(&project), enc(&view.experiment.flag))) { code { (view.experiment.flag) } }
            " · " (method_text(view.experiment.method)) " · α = " (view.experiment.alpha)
        }
        @if view.iterations.len() > 1 {
            nav.row aria-label="Iterations" {
                span { "Iteration:" }
                @for it in &view.iterations {
                    @let current = results.as_ref().is_some_and(|r| r.iteration == it.number);
                    a href=(format!("{base}/{}?iteration={}", enc(&key), it.number)) aria-current=[current.then_some("page")] {
                        (it.number) @if current { " (shown)" }
                    }
                }
            }
        }
        @match &results {
            None => (page::empty("No results yet", html! { "The experiment has not started: start it through the API and exposures are counted from then on." })),
            Some(r) => (render_results(&view, r)),
        }
    };
    Ok(page::layout(&session, &nav, &view.experiment.name, body).into_response())
}

fn method_text(m: AnalysisMethod) -> &'static str {
    match m {
        AnalysisMethod::FixedHorizon => "fixed-horizon frequentist analysis",
        AnalysisMethod::Sequential => "sequential analysis (always-valid intervals)",
        AnalysisMethod::Bayesian => "Bayesian analysis",
    }
}

/// A variation's name: its index and value under the iteration's allocation.
fn variation_name(view: &ExperimentView, r: &ExperimentResults, i: usize) -> String {
    let value = view
        .iterations
        .iter()
        .find(|it| it.number == r.iteration)
        .and_then(|it| it.allocation.variations.get(i))
        .map(|v| format!(" ({v})"))
        .unwrap_or_default();
    let control = if i == r.control { ", control" } else { "" };
    format!("Variation {i}{value}{control}")
}

fn render_results(view: &ExperimentView, r: &ExperimentResults) -> Markup {
    html! {
        @if let Some(srm) = &r.srm {
            @if srm.mismatch {
                (page::notice("error", html! {
                    strong { "Sample ratio mismatch." }
                    " Units were not split the way the weights say (χ² p " (p_relation(srm.p_value)) "; observed "
                    @for (i, n) in srm.observed.iter().enumerate() { @if i > 0 { " / " } (n) }
                    ", expected shares "
                    @for (i, s) in srm.expected_shares.iter().enumerate() { @if i > 0 { " / " } (pct(*s, 1)) }
                    "). Assignment or exposure logging is broken: do not trust these results until the cause is found."
                }))
            } @else {
                p.muted { "Sample ratio check passed (χ² p " (p_relation(srm.p_value)) ")." }
            }
        }
        p {
            "Iteration " (r.iteration) ": "
            @for (i, n) in r.units.iter().enumerate() { @if i > 0 { ", " } (n) " units in variation " (i) }
            @if r.excluded_units > 0 { "; " (r.excluded_units) " units exposed to several variations are excluded" }
            "."
        }
        @for m in &r.metrics {
            (render_metric(view, r, m))
        }
    }
}

fn role_text(role: MetricRole) -> &'static str {
    match role {
        MetricRole::Primary => "primary metric",
        MetricRole::Secondary => "secondary metric",
        MetricRole::Guardrail => "guardrail",
    }
}

fn render_metric(view: &ExperimentView, r: &ExperimentResults, m: &MetricResult) -> Markup {
    let id = format!("metric-{}", m.metric);
    let conversion = m.variations.iter().any(|v| v.conversions.is_some());
    let bayes = r.method == AnalysisMethod::Bayesian;
    html! {
        section.card aria-labelledby=(id) {
            h2 #(id) { code { (m.metric) } " " span.muted { "(" (role_text(m.role)) ")" } }
            table {
                thead { tr {
                    th scope="col" { "Variation" }
                    th scope="col" { "Exposures (units)" }
                    @if conversion { th scope="col" { "Conversions" } th scope="col" { "Rate" } }
                    @else { th scope="col" { "Mean per unit" } }
                    th scope="col" { "Lift vs control" }
                    th scope="col" { (if bayes { "Chance to beat control" } else { "p-value (adjusted)" }) }
                    th scope="col" { "Verdict" }
                } }
                tbody {
                    @for v in &m.variations {
                        tr {
                            th scope="row" { (variation_name(view, r, v.variation)) }
                            td { (v.units) }
                            @if conversion {
                                td { (v.conversions.unwrap_or(0)) }
                                td { (pct(v.mean, 2)) }
                            } @else { td { (format!("{:.3}", v.mean)) } }
                            @match &v.vs_control {
                                None => { td.muted { "—" } td.muted { "—" } td.muted { "control" } }
                                Some(c) => {
                                    td { (signed_pct(c.relative_lift)) " " span.muted { "[" (signed_pct(c.interval_low)) ", " (signed_pct(c.interval_high)) "]" } }
                                    td {
                                        @if bayes { (c.chance_to_beat_control.map(|p| pct(p, 1)).unwrap_or_default()) }
                                        @else { (c.p_value_adjusted.or(c.p_value).map(fmt_p).unwrap_or_default()) }
                                    }
                                    td { (verdict(v)) }
                                }
                            }
                        }
                    }
                }
            }
            (lift_chart(view, r, m))
        }
    }
}

fn verdict(v: &VariationResult) -> Markup {
    html! {
        @match &v.vs_control {
            Some(c) if c.significant && c.better => span.badge.on { "Better" },
            Some(c) if c.significant => span.bad { "Worse" },
            Some(_) => span.muted { "Not significant" },
            None => {},
        }
    }
}

/// The lift of each treatment with its interval, as a horizontal interval chart around 0.
fn lift_chart(view: &ExperimentView, r: &ExperimentResults, m: &MetricResult) -> Markup {
    let rows: Vec<(String, f64, f64, f64, bool, bool)> = m
        .variations
        .iter()
        .filter_map(|v| {
            v.vs_control.as_ref().map(|c| {
                (
                    variation_name(view, r, v.variation),
                    c.relative_lift,
                    c.interval_low,
                    c.interval_high,
                    c.significant,
                    c.better,
                )
            })
        })
        .filter(|(_, l, lo, hi, _, _)| l.is_finite() && lo.is_finite() && hi.is_finite())
        .collect();
    if rows.is_empty() {
        return html! { p.muted { "No lift to chart yet: control or the treatments have no units." } };
    }
    // A symmetric axis around 0 that holds every interval, with a little room.
    let reach = rows
        .iter()
        .flat_map(|(_, l, lo, hi, _, _)| [l.abs(), lo.abs(), hi.abs()])
        .fold(0.01_f64, f64::max)
        * 1.1;
    let (left, width, row_h) = (260.0_f64, 460.0_f64, 34.0_f64);
    let x = |v: f64| left + (v + reach) / (2.0 * reach) * width;
    let height = 30.0 + row_h * rows.len() as f64;
    let summary: Vec<String> = rows
        .iter()
        .map(|(n, l, lo, hi, _, _)| {
            format!(
                "{n}: lift {} (interval {} to {})",
                signed_pct(*l),
                signed_pct(*lo),
                signed_pct(*hi)
            )
        })
        .collect();
    let title = format!("Relative lift of {} against control", m.metric);
    html! {
        figure {
            svg.chart role="img" aria-label=(format!("{title}. {}", summary.join("; "))) viewBox=(format!("0 0 {} {height}", left + width + 40.0)) width="100%" style="max-width:740px" {
                title { (title) }
                // Axis: ticks at −reach, 0 and +reach.
                @for t in [-reach, 0.0, reach] {
                    line x1=(fmt1(x(t))) x2=(fmt1(x(t))) y1="18" y2=(fmt1(height - 4.0)) stroke=(if t == 0.0 { "#1a1d23" } else { "#d7dbe0" }) stroke-width="1" {}
                    text x=(fmt1(x(t))) y="12" text-anchor="middle" { (signed_pct(t)) }
                }
                @for (i, (name, lift, lo, hi, significant, better)) in rows.iter().enumerate() {
                    @let y = 30.0 + row_h * i as f64 + row_h / 2.0 - 6.0;
                    @let colour = match (significant, better) { (true, true) => "#0b5e2a", (true, false) => "#9f1239", _ => "#4b5563" };
                    text x=(fmt1(left - 8.0)) y=(fmt1(y + 4.0)) text-anchor="end" { (name) }
                    rect x=(fmt1(x(*lo))) y=(fmt1(y - 5.0)) width=(fmt1((x(*hi) - x(*lo)).max(1.0))) height="10" rx="3" fill=(colour) fill-opacity="0.3" stroke=(colour) {}
                    circle cx=(fmt1(x(*lift))) cy=(fmt1(y)) r="5" fill=(colour) {}
                }
            }
            figcaption.muted {
                "Dots: relative lift against control; bars: the " (pct(1.0 - r.alpha, 0)) " interval. "
                "Green: significantly better; red: significantly worse; grey: not significant."
            }
        }
    }
}

fn fmt1(v: f64) -> String {
    format!("{v:.1}")
}

fn pct(v: f64, digits: usize) -> String {
    format!("{:.*} %", digits, v * 100.0)
}

fn signed_pct(v: f64) -> String {
    format!("{:+.1} %", v * 100.0)
}

/// A p-value after "p": "= 0.0389", or "< 0.0001" (never "= < 0.0001").
fn p_relation(p: f64) -> String {
    let f = fmt_p(p);
    if f.starts_with('<') {
        f
    } else {
        format!("= {f}")
    }
}

fn fmt_p(p: f64) -> String {
    if p < 0.0001 {
        "< 0.0001".to_owned()
    } else {
        format!("{p:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(pct(0.1234, 1), "12.3 %");
        assert_eq!(signed_pct(-0.05), "-5.0 %");
        assert_eq!(signed_pct(0.2), "+20.0 %");
        assert_eq!(fmt_p(0.00001), "< 0.0001");
        assert_eq!(fmt_p(0.0312), "0.0312");
    }
}
