//! `/api/v1/projects/{project}/metrics` and
//! `/api/v1/projects/{project}/environments/{environment}/experiments`: metrics, experiments,
//! start and stop, and results. Mounted by [`crate::api`] (this file is its `experiments`
//! module). Reads need the viewer role, writes the editor role.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::query::{PageQuery, opaque};
use super::{Created, Tagged, Versioned};
use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::experiments::model::{
    Experiment, ExperimentResults, ExperimentView, Metric, MetricView,
};
use crate::extract::{Caller, IfMatch, StrictJson, StrictQuery};
use crate::store::Page;

/// Creates a metric.
#[utoipa::path(post, path = "/api/v1/projects/{project}/metrics", tag = "experiments",
    params(("project" = String, Path, description = "Project key")),
    request_body = Metric,
    responses((status = 201, body = MetricView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_metric(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    StrictJson(body): StrictJson<Metric>,
) -> Result<Created<MetricView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app.store.create_metric(&ctx, &project, body).await?;
    let location = format!("/api/v1/projects/{project}/metrics/{}", view.metric.key);
    Ok(Created::tagged(location, view))
}

/// Lists a project's metrics by key.
#[utoipa::path(get, path = "/api/v1/projects/{project}/metrics", tag = "experiments",
    params(("project" = String, Path, description = "Project key"), PageQuery),
    responses((status = 200, body = Page<MetricView>), (status = 404, body = Problem)))]
pub(crate) async fn list_metrics(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<MetricView>>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(opaque(
        app.store
            .list_metrics(&project, q.cursor(), q.limit())
            .await?,
    )))
}

/// One metric. `ETag`: its version.
#[utoipa::path(get, path = "/api/v1/projects/{project}/metrics/{metric}", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("metric" = String, Path, description = "Metric key")),
    responses((status = 200, body = MetricView), (status = 404, body = Problem)))]
pub(crate) async fn get_metric(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, metric)): Path<(String, String)>,
) -> Result<Tagged<MetricView>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Tagged::of(app.store.get_metric(&project, &metric).await?))
}

/// Replaces a metric (the key cannot change). Honours `If-Match` with the metric version.
#[utoipa::path(put, path = "/api/v1/projects/{project}/metrics/{metric}", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("metric" = String, Path, description = "Metric key"),
           ("If-Match" = Option<String>, Header, description = "Metric version, e.g. \"3\"")),
    request_body = Metric,
    responses((status = 200, body = MetricView), (status = 404, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn put_metric(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, metric)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
    StrictJson(body): StrictJson<Metric>,
) -> Result<Tagged<MetricView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .put_metric(&ctx, &project, &metric, body, if_match)
        .await?;
    Ok(Tagged::of(view))
}

/// Deletes a metric. 409 while experiments use it (listed in `blockers`).
#[utoipa::path(delete, path = "/api/v1/projects/{project}/metrics/{metric}", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("metric" = String, Path, description = "Metric key")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn delete_metric(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, metric)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    app.store.delete_metric(&ctx, &project, &metric).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates an experiment on a flag in an environment, as a draft.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/experiments", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    request_body = Experiment,
    responses((status = 201, body = ExperimentView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_experiment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictJson(body): StrictJson<Experiment>,
) -> Result<Created<ExperimentView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .create_experiment(&ctx, &project, &environment, body)
        .await?;
    let location = format!(
        "/api/v1/projects/{project}/environments/{environment}/experiments/{}",
        view.experiment.key
    );
    Ok(Created::tagged(location, view))
}

/// Lists an environment's experiments by key.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/experiments", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"), PageQuery),
    responses((status = 200, body = Page<ExperimentView>), (status = 404, body = Problem)))]
pub(crate) async fn list_experiments(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<ExperimentView>>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(opaque(
        app.store
            .list_experiments(&project, &environment, q.cursor(), q.limit())
            .await?,
    )))
}

/// One experiment with its iterations. `ETag`: its version.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/experiments/{experiment}", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("experiment" = String, Path, description = "Experiment key")),
    responses((status = 200, body = ExperimentView), (status = 404, body = Problem)))]
pub(crate) async fn get_experiment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, experiment)): Path<(String, String, String)>,
) -> Result<Tagged<ExperimentView>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Tagged::of(
        app.store
            .get_experiment(&project, &environment, &experiment)
            .await?,
    ))
}

/// Replaces an experiment's definition (the key cannot change, nor the flag or control once
/// started). Honours `If-Match` with the experiment version.
#[utoipa::path(put, path = "/api/v1/projects/{project}/environments/{environment}/experiments/{experiment}", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("experiment" = String, Path, description = "Experiment key"),
           ("If-Match" = Option<String>, Header, description = "Experiment version, e.g. \"3\"")),
    request_body = Experiment,
    responses((status = 200, body = ExperimentView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 412, body = Problem),
              (status = 422, body = Problem)))]
pub(crate) async fn put_experiment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, experiment)): Path<(String, String, String)>,
    IfMatch(if_match): IfMatch,
    StrictJson(body): StrictJson<Experiment>,
) -> Result<Tagged<ExperimentView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .put_experiment(&ctx, &project, &environment, &experiment, body, if_match)
        .await?;
    Ok(Tagged::of(view))
}

/// Deletes an experiment with its aggregates.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/environments/{environment}/experiments/{experiment}", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("experiment" = String, Path, description = "Experiment key")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn delete_experiment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, experiment)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    app.store
        .delete_experiment(&ctx, &project, &environment, &experiment)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts (or restarts) an experiment: a new iteration begins under the flag's current
/// allocation. 409 while it runs.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/experiments/{experiment}/start", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("experiment" = String, Path, description = "Experiment key")),
    responses((status = 200, body = ExperimentView), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(crate) async fn start_experiment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, experiment)): Path<(String, String, String)>,
) -> Result<Tagged<ExperimentView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .start_experiment(&ctx, &project, &environment, &experiment)
        .await?;
    Ok(Tagged::of(view))
}

/// Stops a running experiment: its iteration ends and its results freeze. 409 unless it runs.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/experiments/{experiment}/stop", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("experiment" = String, Path, description = "Experiment key")),
    responses((status = 200, body = ExperimentView), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(crate) async fn stop_experiment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, experiment)): Path<(String, String, String)>,
) -> Result<Tagged<ExperimentView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .stop_experiment(&ctx, &project, &environment, &experiment)
        .await?;
    Ok(Tagged::of(view))
}

/// Which iteration to analyse, and the sample-size question.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResultsQuery {
    /// Iteration number (default: the latest).
    #[param(minimum = 1)]
    pub iteration: Option<u64>,
    /// Minimum detectable effect, relative (0.05 for 5 %): adds a sample-size estimate.
    #[param(exclusive_minimum = 0)]
    pub mde: Option<f64>,
}

/// The results of an iteration (default the latest): per metric and variation against
/// control, the SRM check, and with `mde` a sample-size estimate. 409 before the experiment
/// has started.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/experiments/{experiment}/results", tag = "experiments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("experiment" = String, Path, description = "Experiment key"), ResultsQuery),
    responses((status = 200, body = ExperimentResults), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(crate) async fn get_results(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, experiment)): Path<(String, String, String)>,
    StrictQuery(q): StrictQuery<ResultsQuery>,
) -> Result<Json<ExperimentResults>, ApiError> {
    caller.check(Role::Viewer)?;
    if let Some(mde) = q.mde
        && !(mde.is_finite() && mde > 0.0 && mde < 10.0)
    {
        return Err(super::query::parameter_error(
            "mde",
            "invalid_parameter",
            "must be a relative effect between 0 and 10, e.g. 0.05".to_owned(),
        ));
    }
    Ok(Json(
        app.store
            .experiment_results(&project, &environment, &experiment, q.iteration, q.mde)
            .await?,
    ))
}

impl Versioned for MetricView {
    /// The metric version.
    fn etag(&self) -> u64 {
        self.version
    }
}

impl Versioned for ExperimentView {
    /// The experiment version.
    fn etag(&self) -> u64 {
        self.version
    }
}
