//! Vexil's flag data model, shared by the server, the relay and the SDKs.
//!
//! - [`key`]: validated identifiers (`FlagKey`, `SegmentKey`, …).
//! - [`model`]: projects, environments, flag definitions and configurations, segments, and
//!   the [`model::EnvironmentSnapshot`] an SDK evaluates.
//! - [`context`]: the evaluation context.
//! - [`keylist`]: [`KeyList`], the compact form of a segment's key lists.
//! - [`events`]: analytics events (exposures, custom events, summaries) and their bulk upload.
//! - [`fixture`]: the shared evaluation and benchmark fixtures (`testdata/`) and their loader.
//! - [`operand`]: parsers for clause operands (dates, semvers, size-limited regexes).
//! - [`reason`]: evaluation reasons in wire form, and their mapping to OpenFeature's.
//! - [`stream`]: the streaming protocol's event payloads (SDK and relay streams);
//!   [`backoff`]: the reconnection delays every stream client uses (a pure calculator).
//! - [`validate`]: every rule a document must pass before it is stored, with field paths and
//!   stable rule codes; [`limits`] holds the size limits it enforces.
//!
//! This crate holds serde types only: no HTTP, database or runtime types appear in its API.
#![deny(missing_docs)]

pub mod backoff;
pub mod context;
pub mod delta;
pub mod events;
pub mod fixture;
pub mod fleet;
pub mod key;
pub mod keylist;
pub mod limits;
pub mod model;
pub mod operand;
pub mod reason;
pub mod stream;
pub mod validate;

pub use context::{AttributeName, Context, ContextBuilder};
pub use key::{EnvironmentKey, FlagKey, KeyError, ProjectKey, SegmentKey};
pub use keylist::KeyList;
pub use model::{
    Clause, Environment, EnvironmentSnapshot, Flag, FlagConfig, FlagDefinition, FlagKind, Operator,
    Prerequisite, Project, Rollout, Rule, Segment, SegmentRule, Serve, Target, Variation,
    WEIGHT_SCALE, WeightedVariation,
};
pub use reason::{ErrorKind, Reason};
pub use validate::{
    EnvironmentIndex, FieldError, Valid, ValidationErrors, validate_config, validate_definition,
    validate_segment, validate_snapshot,
};
