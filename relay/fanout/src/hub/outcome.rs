//! What publishing and subscribing report: outcomes and refusals.

use crate::items::EncodeError;

/// Why a published snapshot or change was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A change arrived for an environment that has no full state yet: publish a snapshot.
    #[error("no snapshot of the environment yet")]
    NoSnapshot,
    /// The change's version is the current version: already applied, ignored.
    #[error("version {version} is already applied")]
    Duplicate {
        /// The version.
        version: u64,
    },
    /// The version is older than the current one: ignored.
    #[error("version {got} is older than the current version {current}")]
    Stale {
        /// The current version.
        current: u64,
        /// The version published.
        got: u64,
    },
    /// The change skips versions: some change was missed. Publish a full snapshot.
    #[error("version {got} does not follow the current version {current}")]
    Gap {
        /// The current version.
        current: u64,
        /// The version published.
        got: u64,
    },
    /// Encoding failed; nothing was changed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl PublishError {
    /// Whether the publisher must send a full snapshot to get this environment back in step
    /// (`false` for harmless duplicates and stale messages).
    pub fn needs_resync(&self) -> bool {
        matches!(
            self,
            PublishError::NoSnapshot | PublishError::Gap { .. } | PublishError::Encode(_)
        )
    }

    pub(super) fn reason(&self) -> &'static str {
        match self {
            PublishError::NoSnapshot => "no_snapshot",
            PublishError::Duplicate { .. } => "duplicate",
            PublishError::Stale { .. } => "stale",
            PublishError::Gap { .. } => "gap",
            PublishError::Encode(_) => "encode",
        }
    }
}

/// What a published snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotOutcome {
    /// It became the current state; subscribers were sent a `put`.
    Replaced {
        /// The version it replaced, if there was one.
        previous: Option<u64>,
    },
    /// The environment is already at that version: nothing was sent.
    Unchanged,
}

/// Why a subscription or snapshot cannot be served now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotServing {
    /// The environment has no full state yet (HTTP 503 with `Retry-After`).
    #[error("the environment's state is not loaded yet")]
    NotReady,
    /// The hub is shutting down (HTTP 503 with `Retry-After`).
    #[error("shutting down")]
    ShuttingDown,
}
