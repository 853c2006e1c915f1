//! An [OpenFeature](https://openfeature.dev) provider for Vexil: the `open-feature` crate's
//! [`FeatureProvider`] over a [`vexil_sdk::Client`], so applications written against the
//! vendor-neutral API evaluate Vexil flags in process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use open_feature::{EvaluationContext, OpenFeature};
//! use vexil_openfeature::VexilProvider;
//!
//! let client = vexil_sdk::Client::builder("sdk-key")
//!     .base_url("http://localhost:8080")
//!     .build()?;
//! let mut api = OpenFeature::singleton_mut().await;
//! api.set_provider(VexilProvider::new(client)).await;
//! let of = api.create_client();
//! let ctx = EvaluationContext::default().with_targeting_key("user-42");
//! let enabled = of.get_bool_value("new-checkout", Some(&ctx), None).await.unwrap_or(false);
//! # Ok(()) }
//! ```
//!
//! Layout: [`provider`] holds [`VexilProvider`]; `context` maps OpenFeature's
//! `EvaluationContext` to a Vexil [`vexil_sdk::Context`]; `mapping` turns Vexil results into
//! OpenFeature resolutions, reasons and error codes, through the schema's one mapping
//! ([`vexil_schema::Reason::openfeature_reason`], [`vexil_schema::ErrorKind::openfeature_code`]).
#![deny(missing_docs)]

mod context;
mod mapping;
pub mod provider;

pub use context::to_vexil_context;
pub use provider::VexilProvider;

/// `open-feature`'s `FeatureProvider` trait, re-exported for convenience.
pub use open_feature::provider::FeatureProvider;
