//! [`VexilProvider`]: the OpenFeature provider.

use std::time::Duration;

use async_trait::async_trait;
use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{EvaluationContext, EvaluationResult, StructValue};
use serde_json::Value as Json;
use vexil_sdk::{Client, State};

use crate::context::to_vexil_context;
use crate::mapping::{json_to_struct, resolve};

/// An OpenFeature provider evaluating through a [`vexil_sdk::Client`]: in process, with no
/// network round trip per evaluation.
///
/// Errors (`FLAG_NOT_FOUND`, `TYPE_MISMATCH`, `PARSE_ERROR` for a malformed flag,
/// `PROVIDER_NOT_READY` before the client has flags) are returned as OpenFeature errors, so
/// the OpenFeature client serves the caller's default.
#[derive(Debug, Clone)]
pub struct VexilProvider {
    client: Client,
    metadata: ProviderMetadata,
    init_timeout: Duration,
}

impl VexilProvider {
    /// A provider over `client`. `initialize` waits up to 5 s for it to be ready.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            metadata: ProviderMetadata::new("vexil"),
            init_timeout: Duration::from_secs(5),
        }
    }

    /// Sets how long `initialize` waits for the client.
    pub fn init_timeout(mut self, timeout: Duration) -> Self {
        self.init_timeout = timeout;
        self
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// OpenFeature's tracking API (`track(trackingEventName, evaluationContext,
    /// trackingEventDetails)`): records a custom event for the context, with the details'
    /// numeric `value` if given, through [`Client::track`] / [`Client::track_value`], so
    /// that experiment metrics count it.
    ///
    /// The `open-feature` crate (0.3) has no tracking hook in its `FeatureProvider` trait or
    /// its client yet, so applications call this on the provider (keep a clone of it, or of
    /// its [`VexilProvider::client`]). Never blocks or fails; see [`Client::track`] for what
    /// is dropped.
    pub fn track(&self, tracking_event_name: &str, ctx: &EvaluationContext, value: Option<f64>) {
        let ctx = to_vexil_context(ctx);
        match value {
            Some(v) => self.client.track_value(tracking_event_name, &ctx, v),
            None => self.client.track(tracking_event_name, &ctx),
        }
    }
}

#[async_trait]
impl FeatureProvider for VexilProvider {
    async fn initialize(&mut self, _context: &EvaluationContext) {
        if let Err(e) = self.client.wait_for_initialization(self.init_timeout).await {
            tracing::warn!(error = %e, "Vexil provider starting without fresh flags");
        }
    }

    fn status(&self) -> ProviderStatus {
        let status = self.client.status();
        match status.state {
            State::Ready => ProviderStatus::Ready,
            State::Stale => ProviderStatus::STALE,
            State::Offline if status.has_data() => ProviderStatus::Ready,
            State::Failed if status.has_data() => ProviderStatus::STALE,
            State::Failed | State::Offline => ProviderStatus::Error,
            _ => ProviderStatus::NotReady,
        }
    }

    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        let detail = self
            .client
            .bool_variation_detail(flag_key, &to_vexil_context(ctx), false);
        resolve(flag_key, detail, Ok)
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        let detail = self
            .client
            .int_variation_detail(flag_key, &to_vexil_context(ctx), 0);
        resolve(flag_key, detail, Ok)
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        let detail = self
            .client
            .number_variation_detail(flag_key, &to_vexil_context(ctx), 0.0);
        resolve(flag_key, detail, Ok)
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        let detail = self
            .client
            .string_variation_detail(flag_key, &to_vexil_context(ctx), "");
        resolve(flag_key, detail, Ok)
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        let detail =
            self.client
                .json_variation_detail(flag_key, &to_vexil_context(ctx), Json::Null);
        resolve(flag_key, detail, |v| json_to_struct(flag_key, v))
    }
}
