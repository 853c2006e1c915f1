//! SDK and relay key authentication for the distribution endpoints.
//!
//! SDK keys are checked against an in-memory index of key hashes (current secrets, and
//! previous secrets until their rotation grace period ends), reloaded whenever keys change
//! (a `keys` notification, or any commit on SQLite) and when a grace period ends. A key the
//! index does not know is looked up in the database before being refused, so a key created a
//! moment ago on another server works at once. The same hashes feed the hub's key registry,
//! which relay streams send to relays.
//!
//! Relay keys are checked in the database on every (rare) relay stream authentication.

use std::collections::{BTreeSet, HashMap};

use time::OffsetDateTime;
use vexil_fanout::{AuthError, ClientEnv, RelayAuth, SdkAuth};
use vexil_schema::stream::{EnvironmentId, SdkKeyHash};

use super::{Feed, Inner};
use crate::auth::{RELAY_KEY_PREFIX, SDK_KEY_PREFIX, hash_secret};
use crate::db::{args, now};
use crate::store::{AccessKeyKind, StoreError};

/// One live SDK key secret.
#[derive(Debug, Clone)]
pub(crate) struct KeyEntry {
    env: EnvironmentId,
    /// When a previous (rotated) secret stops working; `None` for current secrets.
    expires_at: Option<OffsetDateTime>,
}

/// The live SDK key secrets by SHA-256 hash.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    by_hash: HashMap<[u8; 32], KeyEntry>,
    by_env: HashMap<EnvironmentId, Vec<SdkKeyHash>>,
    /// The earliest end of a rotation grace period: reload then.
    pub next_expiry: Option<OffsetDateTime>,
}

/// Counts and maxima of the key tables: any key created, revoked, rotated or rescoped
/// changes it.
#[derive(sqlx::FromRow)]
struct KeyFingerprint {
    keys: i64,
    max_id: i64,
    revoked: i64,
    rotated: Option<String>,
    scopes: i64,
    origins: i64,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    secret_hash: Vec<u8>,
    previous_hash: Option<Vec<u8>>,
    previous_expires_at: Option<OffsetDateTime>,
    project: String,
    environment: String,
}

type ClientKeyRow = KeyRow;

#[derive(sqlx::FromRow)]
struct OriginsRow {
    project: String,
    environment: String,
    allowed_origins: sqlx::types::Json<Vec<String>>,
}

fn digest(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

impl KeyIndex {
    fn build(rows: Vec<KeyRow>, at: OffsetDateTime) -> Self {
        let mut ix = KeyIndex::default();
        for row in rows {
            let Ok(env) = EnvironmentId::parse(&format!("{}/{}", row.project, row.environment))
            else {
                continue;
            };
            let mut add = |hash: [u8; 32], expires_at: Option<OffsetDateTime>| {
                ix.by_env
                    .entry(env.clone())
                    .or_default()
                    .push(SdkKeyHash(hash));
                ix.by_hash.insert(
                    hash,
                    KeyEntry {
                        env: env.clone(),
                        expires_at,
                    },
                );
            };
            if let Some(h) = digest(&row.secret_hash) {
                add(h, None);
            }
            if let (Some(h), Some(t)) = (
                row.previous_hash.as_deref().and_then(digest),
                row.previous_expires_at,
            ) && t > at
            {
                add(h, Some(t));
                ix.next_expiry = Some(ix.next_expiry.map_or(t, |n| n.min(t)));
            }
        }
        ix
    }

    /// The environment a key hash reads at `at`, if it is live.
    fn lookup(&self, hash: &[u8; 32], at: OffsetDateTime) -> Option<&EnvironmentId> {
        let e = self.by_hash.get(hash)?;
        match e.expires_at {
            Some(t) if t <= at => None,
            _ => Some(&e.env),
        }
    }
}

impl Inner {
    /// Reloads every live SDK key and hands each environment's hashes to the hub, if any
    /// key changed since the last load (or `force`, e.g. a grace period ended). Open relay
    /// streams are then asked to authenticate their keys again.
    pub(crate) async fn reload_keys(&self, force: bool) -> Result<(), StoreError> {
        let mut pc = self.store.db().acquire().await?;
        let fingerprint: KeyFingerprint = pc
            .conn()
            .fetch_one(
                "SELECT (SELECT COUNT(*) FROM access_keys) AS keys,
                        (SELECT COALESCE(MAX(id), 0) FROM access_keys) AS max_id,
                        (SELECT COUNT(revoked_at) FROM access_keys) AS revoked,
                        (SELECT CAST(MAX(rotated_at) AS TEXT) FROM access_keys) AS rotated,
                        (SELECT COUNT(*) FROM access_key_environments) AS scopes,
                        (SELECT CAST(COALESCE(SUM(origins_changes), 0) AS BIGINT) FROM environments) AS origins",
                args![],
            )
            .await?;
        let fingerprint = format!(
            "{}/{}/{}/{}/{}/{}",
            fingerprint.keys,
            fingerprint.max_id,
            fingerprint.revoked,
            fingerprint.rotated.unwrap_or_default(),
            fingerprint.scopes,
            fingerprint.origins
        );
        {
            let last = self
                .key_fingerprint
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !force && last.as_deref() == Some(fingerprint.as_str()) {
                return Ok(());
            }
        }
        let rows: Vec<KeyRow> = {
            pc.conn()
                .fetch_all(
                    "SELECT k.secret_hash, k.previous_hash, k.previous_expires_at,
                            p.key AS project, e.key AS environment
                     FROM access_keys k
                     JOIN access_key_environments ke ON ke.key_id = k.id
                     JOIN environments e ON e.id = ke.environment_id
                     JOIN projects p ON p.id = e.project_id
                     WHERE k.kind = 'sdk' AND k.revoked_at IS NULL",
                    args![],
                )
                .await?
        };
        self.keys
            .store(std::sync::Arc::new(KeyIndex::build(rows, now())));
        let envs: Vec<EnvironmentId> = {
            let envs = self.envs.read().unwrap_or_else(|p| p.into_inner());
            envs.by_key.keys().cloned().collect()
        };
        for env in &envs {
            self.set_hub_keys(env);
        }
        self.reload_client_access(&mut pc, &envs).await?;
        // Relay keys may have changed too: open relay streams check theirs again.
        self.hub.notify_relay_scopes_changed();
        *self
            .key_fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(fingerprint);
        Ok(())
    }

    /// Hands the hub every environment's client-side key hashes and allowed origins.
    async fn reload_client_access(
        &self,
        pc: &mut crate::db::Pooled,
        envs: &[EnvironmentId],
    ) -> Result<(), StoreError> {
        let keys: Vec<ClientKeyRow> = pc
            .conn()
            .fetch_all(
                "SELECT k.secret_hash, k.previous_hash, k.previous_expires_at,
                        p.key AS project, e.key AS environment
                 FROM access_keys k
                 JOIN access_key_environments ke ON ke.key_id = k.id
                 JOIN environments e ON e.id = ke.environment_id
                 JOIN projects p ON p.id = e.project_id
                 WHERE k.kind = 'client' AND k.revoked_at IS NULL",
                args![],
            )
            .await?;
        let origins: Vec<OriginsRow> = pc
            .conn()
            .fetch_all(
                "SELECT p.key AS project, e.key AS environment, e.allowed_origins
                 FROM environments e JOIN projects p ON p.id = e.project_id",
                args![],
            )
            .await?;
        let at = now();
        let mut access: HashMap<EnvironmentId, ClientEnv> = HashMap::new();
        for row in keys {
            let Ok(env) = EnvironmentId::parse(&format!("{}/{}", row.project, row.environment))
            else {
                continue;
            };
            let entry = access.entry(env).or_default();
            if let Some(h) = digest(&row.secret_hash) {
                entry.key_hashes.push(SdkKeyHash(h));
            }
            if let (Some(h), Some(t)) = (
                row.previous_hash.as_deref().and_then(digest),
                row.previous_expires_at,
            ) && t > at
            {
                entry.key_hashes.push(SdkKeyHash(h));
            }
        }
        for row in origins {
            let Ok(env) = EnvironmentId::parse(&format!("{}/{}", row.project, row.environment))
            else {
                continue;
            };
            access.entry(env).or_default().allowed_origins = row.allowed_origins.0;
        }
        for env in envs {
            self.hub
                .set_client_access(env, access.remove(env).unwrap_or_default());
        }
        Ok(())
    }

    /// Hands the hub the SDK key hashes of `env` (for relay streams).
    pub(crate) fn set_hub_keys(&self, env: &EnvironmentId) {
        let keys = self.keys.load();
        let hashes = keys.by_env.get(env).map(Vec::as_slice).unwrap_or(&[]);
        self.hub.set_environment_keys(env, hashes);
    }
}

impl SdkAuth for Feed {
    async fn authenticate(&self, sdk_key: &str) -> Result<EnvironmentId, AuthError> {
        if sdk_key.starts_with(RELAY_KEY_PREFIX) {
            return Err(AuthError::Forbidden(
                "a relay key cannot read SDK endpoints: use an SDK key".to_owned(),
            ));
        }
        if !sdk_key.starts_with(SDK_KEY_PREFIX) {
            return Err(AuthError::Unauthorized);
        }
        let hash = hash_secret(sdk_key);
        if let Some(h) = digest(&hash)
            && let Some(env) = self.inner.keys.load().lookup(&h, now())
        {
            return Ok(env.clone());
        }
        // Not in the index: perhaps created a moment ago on another server.
        match self.inner.store.authenticate_access_key(sdk_key).await {
            Ok(Some(scope)) if scope.kind == AccessKeyKind::Sdk => {
                let Some(e) = scope.environments.first() else {
                    return Err(AuthError::Unauthorized);
                };
                EnvironmentId::parse(&format!("{}/{}", e.project, e.environment))
                    .map_err(|_| AuthError::Unauthorized)
            }
            Ok(_) => Err(AuthError::Unauthorized),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check an SDK key");
                Err(AuthError::Unavailable)
            }
        }
    }
}

impl RelayAuth for Feed {
    async fn authenticate(&self, relay_key: &str) -> Result<BTreeSet<EnvironmentId>, AuthError> {
        if relay_key.starts_with(SDK_KEY_PREFIX) {
            return Err(AuthError::Forbidden(
                "an SDK key cannot open a relay stream: use a relay key".to_owned(),
            ));
        }
        if !relay_key.starts_with(RELAY_KEY_PREFIX) {
            return Err(AuthError::Unauthorized);
        }
        match self.inner.store.authenticate_access_key(relay_key).await {
            Ok(Some(scope)) if scope.kind == AccessKeyKind::Relay => Ok(scope
                .environments
                .iter()
                .filter_map(|e| {
                    EnvironmentId::parse(&format!("{}/{}", e.project, e.environment)).ok()
                })
                .collect()),
            Ok(_) => Err(AuthError::Unauthorized),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a relay key");
                Err(AuthError::Unavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(current: [u8; 32], previous: Option<([u8; 32], OffsetDateTime)>) -> KeyRow {
        KeyRow {
            secret_hash: current.to_vec(),
            previous_hash: previous.map(|p| p.0.to_vec()),
            previous_expires_at: previous.map(|p| p.1),
            project: "shop".to_owned(),
            environment: "prod".to_owned(),
        }
    }

    #[test]
    fn previous_secrets_work_until_their_grace_period_ends() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let later = t0 + time::Duration::minutes(5);
        let ix = KeyIndex::build(vec![row([1; 32], Some(([2; 32], later)))], t0);
        let env = EnvironmentId::parse("shop/prod").unwrap();
        assert_eq!(ix.lookup(&[1; 32], t0), Some(&env));
        assert_eq!(ix.lookup(&[2; 32], t0), Some(&env));
        assert_eq!(ix.lookup(&[2; 32], later), None);
        assert_eq!(ix.lookup(&[1; 32], later), Some(&env));
        assert_eq!(ix.lookup(&[3; 32], t0), None);
        assert_eq!(ix.next_expiry, Some(later));
        assert_eq!(ix.by_env[&env].len(), 2);
    }

    #[test]
    fn expired_previous_secrets_are_left_out() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let ix = KeyIndex::build(vec![row([1; 32], Some(([2; 32], t0)))], t0);
        assert_eq!(ix.by_hash.len(), 1);
        assert_eq!(ix.next_expiry, None);
    }
}
