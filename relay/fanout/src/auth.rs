//! Pluggable SDK authentication: which environment an SDK key reads.
//!
//! The control plane implements [`SdkAuth`] with its database; the relay uses
//! [`SdkKeyTable`], filled from the SHA-256 key hashes its upstream sends, so it never holds
//! SDK keys and never asks upstream per request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use vexil_schema::stream::{EnvironmentId, SdkKeyHash};

/// Why a request's SDK key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No key, or a key nobody knows: HTTP 401, no body.
    #[error("missing or unknown SDK key")]
    Unauthorized,
    /// A known key that may not read this resource (e.g. disabled, or of another kind): HTTP
    /// 403. The message is shown to the client.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The key cannot be checked right now (e.g. the database is down): HTTP 503 with
    /// `Retry-After`. The cause is logged by the implementation, not shown.
    #[error("authentication temporarily unavailable")]
    Unavailable,
}

/// Maps an SDK key (from the `Authorization` header) to the environment it reads.
pub trait SdkAuth: Clone + Send + Sync + 'static {
    /// The environment `sdk_key` may read, or why not.
    fn authenticate(
        &self,
        sdk_key: &str,
    ) -> impl Future<Output = Result<EnvironmentId, AuthError>> + Send;
}

/// Any cloneable synchronous function is an [`SdkAuth`] (handy for fixed key sets).
impl<F> SdkAuth for F
where
    F: Fn(&str) -> Result<EnvironmentId, AuthError> + Clone + Send + Sync + 'static,
{
    fn authenticate(
        &self,
        sdk_key: &str,
    ) -> impl Future<Output = Result<EnvironmentId, AuthError>> + Send {
        std::future::ready(self(sdk_key))
    }
}

/// SHA-256 of an SDK key, as stored by the server and sent to relays.
pub fn hash_sdk_key(sdk_key: &str) -> SdkKeyHash {
    SdkKeyHash(Sha256::digest(sdk_key.as_bytes()).into())
}

#[derive(Debug, Default)]
struct KeyIndex {
    by_hash: HashMap<SdkKeyHash, EnvironmentId>,
    by_env: HashMap<EnvironmentId, Vec<SdkKeyHash>>,
}

/// SDK keys known by their SHA-256 hashes, per environment: the relay's [`SdkAuth`].
///
/// Lookups are lock-free; updates (rare: a key created, rotated or revoked) copy the index.
/// A key is found by hashing it and looking the hash up, so lookup time does not depend on
/// how much of a guessed key is right.
#[derive(Debug, Clone, Default)]
pub struct SdkKeyTable {
    index: Arc<ArcSwap<KeyIndex>>,
}

impl SdkKeyTable {
    /// An empty table: every key is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the set of key hashes that read `env`.
    pub fn set_environment_keys(&self, env: &EnvironmentId, hashes: &[SdkKeyHash]) {
        self.index.rcu(|old| {
            let mut by_hash = old.by_hash.clone();
            let mut by_env = old.by_env.clone();
            if let Some(previous) = by_env.remove(env) {
                for h in previous {
                    if by_hash.get(&h) == Some(env) {
                        by_hash.remove(&h);
                    }
                }
            }
            for h in hashes {
                by_hash.insert(*h, env.clone());
            }
            by_env.insert(env.clone(), hashes.to_vec());
            KeyIndex { by_hash, by_env }
        });
    }

    /// Forgets every key of `env`.
    pub fn remove_environment(&self, env: &EnvironmentId) {
        self.set_environment_keys(env, &[]);
        self.index.rcu(|old| {
            let mut by_env = old.by_env.clone();
            by_env.remove(env);
            KeyIndex {
                by_hash: old.by_hash.clone(),
                by_env,
            }
        });
    }

    /// Whether a key set (possibly empty) is recorded for `env`.
    pub fn has_environment(&self, env: &EnvironmentId) -> bool {
        self.index.load().by_env.contains_key(env)
    }

    /// The key hashes of `env` (empty if unknown).
    pub fn environment_keys(&self, env: &EnvironmentId) -> Vec<SdkKeyHash> {
        self.index
            .load()
            .by_env
            .get(env)
            .cloned()
            .unwrap_or_default()
    }

    /// The environment `sdk_key` reads, if known.
    pub fn lookup(&self, sdk_key: &str) -> Option<EnvironmentId> {
        self.lookup_hash(&hash_sdk_key(sdk_key))
    }

    /// The environment the key with this hash reads, if known.
    pub fn lookup_hash(&self, hash: &SdkKeyHash) -> Option<EnvironmentId> {
        self.index.load().by_hash.get(hash).cloned()
    }

    /// Whether the key with this hash (still) reads `env`.
    pub fn reads(&self, hash: &SdkKeyHash, env: &EnvironmentId) -> bool {
        self.index.load().by_hash.get(hash) == Some(env)
    }
}

impl SdkAuth for SdkKeyTable {
    fn authenticate(
        &self,
        sdk_key: &str,
    ) -> impl Future<Output = Result<EnvironmentId, AuthError>> + Send {
        std::future::ready(self.lookup(sdk_key).ok_or(AuthError::Unauthorized))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(s: &str) -> EnvironmentId {
        EnvironmentId::parse(s).unwrap()
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_sdk_key("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_map_to_their_environment_and_can_be_replaced() {
        let t = SdkKeyTable::new();
        let prod = env("p/prod");
        let dev = env("p/dev");
        t.set_environment_keys(&prod, &[hash_sdk_key("k1"), hash_sdk_key("k2")]);
        t.set_environment_keys(&dev, &[hash_sdk_key("k3")]);
        assert_eq!(t.lookup("k1"), Some(prod.clone()));
        assert_eq!(t.lookup("k3"), Some(dev.clone()));
        assert_eq!(t.lookup("nope"), None);
        assert!(t.reads(&hash_sdk_key("k1"), &prod));
        assert!(!t.reads(&hash_sdk_key("k1"), &dev));

        // Rotation: k1 revoked, k4 added.
        t.set_environment_keys(&prod, &[hash_sdk_key("k2"), hash_sdk_key("k4")]);
        assert_eq!(t.lookup("k1"), None);
        assert_eq!(t.lookup("k4"), Some(prod.clone()));
        assert_eq!(t.environment_keys(&prod).len(), 2);

        t.remove_environment(&prod);
        assert_eq!(t.lookup("k2"), None);
        assert!(t.environment_keys(&prod).is_empty());
        assert_eq!(t.lookup("k3"), Some(dev));
    }
}
