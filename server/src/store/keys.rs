//! SDK keys (read access to one environment's SDK endpoints) and relay keys (a set of
//! environments). Secrets are stored hashed; listings show a hint. Rotation issues a new
//! secret and may keep the previous one valid for a grace period.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::changes::{AuditRecord, audit};
use super::environments::environment_row;
use super::projects::paginate;
use super::projects::project_row;
use super::{OrGone, Page, Store, StoreError, WriteContext, encode, id_cursor, page_limit};
use crate::auth::{
    CLIENT_KEY_PREFIX, RELAY_KEY_PREFIX, SDK_KEY_PREFIX, digests_equal, generate_secret,
    hash_secret, hint,
};
use crate::db::{Conn, args, now};

/// The two kinds of access key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessKeyKind {
    /// Server-side SDK key for one environment (`vxs_`).
    Sdk,
    /// Relay key for a set of environments (`vxr_`).
    Relay,
    /// Client-side key for one environment (`vxc_`): public, reads only evaluated values of
    /// client-side flags.
    Client,
}

impl AccessKeyKind {
    fn as_str(self) -> &'static str {
        match self {
            AccessKeyKind::Sdk => "sdk",
            AccessKeyKind::Relay => "relay",
            AccessKeyKind::Client => "client",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            AccessKeyKind::Sdk => SDK_KEY_PREFIX,
            AccessKeyKind::Relay => RELAY_KEY_PREFIX,
            AccessKeyKind::Client => CLIENT_KEY_PREFIX,
        }
    }

    fn resource(self) -> &'static str {
        match self {
            AccessKeyKind::Sdk => "sdk_key",
            AccessKeyKind::Relay => "relay_key",
            AccessKeyKind::Client => "client_key",
        }
    }

    /// The audit action for `verb` on a key of this kind (`sdk_key.create`, …).
    fn action(self, verb: &str) -> String {
        format!("{}.{verb}", self.resource())
    }
}

/// An environment named by project and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct RelayEnvironment {
    /// Project key.
    pub project: String,
    /// Environment key.
    pub environment: String,
}

/// An access key as listed: never its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccessKeyView {
    /// Key id.
    pub id: i64,
    /// SDK or relay key.
    pub kind: AccessKeyKind,
    /// Name.
    pub name: String,
    /// Prefix and last characters of the current secret.
    pub hint: String,
    /// The environments it gives access to.
    pub environments: Vec<RelayEnvironment>,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last rotated.
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
    /// Until when the secret before the last rotation still works.
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A key just created or rotated: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedAccessKey {
    /// The key.
    #[serde(flatten)]
    pub key: AccessKeyView,
    /// The secret. Shown once.
    pub secret: String,
}

/// What a presented SDK or relay key gives access to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    /// Key id.
    pub id: i64,
    /// SDK or relay key.
    pub kind: AccessKeyKind,
    /// The environments it may read.
    pub environments: Vec<RelayEnvironment>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: i64,
    kind: String,
    name: String,
    hint: String,
    created_by: String,
    created_at: OffsetDateTime,
    rotated_at: Option<OffsetDateTime>,
    previous_expires_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
}

#[derive(sqlx::FromRow)]
struct KeyAuthRow {
    id: i64,
    kind: String,
    secret_hash: Vec<u8>,
    previous_hash: Option<Vec<u8>>,
    previous_expires_at: Option<OffsetDateTime>,
}

fn parse_kind(s: &str) -> Result<AccessKeyKind, StoreError> {
    match s {
        "sdk" => Ok(AccessKeyKind::Sdk),
        "relay" => Ok(AccessKeyKind::Relay),
        "client" => Ok(AccessKeyKind::Client),
        other => Err(StoreError::Corrupt(format!("access key kind '{other}'"))),
    }
}

async fn key_environments(c: &mut Conn<'_>, id: i64) -> Result<Vec<RelayEnvironment>, StoreError> {
    Ok(c.fetch_all(
        "SELECT p.key AS project, e.key AS environment FROM access_key_environments k
         JOIN environments e ON e.id = k.environment_id JOIN projects p ON p.id = e.project_id
         WHERE k.key_id = $1 ORDER BY p.key, e.key",
        args![id],
    )
    .await?)
}

async fn key_view(c: &mut Conn<'_>, row: KeyRow) -> Result<AccessKeyView, StoreError> {
    let environments = key_environments(c, row.id).await?;
    Ok(AccessKeyView {
        id: row.id,
        kind: parse_kind(&row.kind)?,
        name: row.name,
        hint: row.hint,
        environments,
        created_by: row.created_by,
        created_at: row.created_at,
        rotated_at: row.rotated_at,
        previous_expires_at: row.previous_expires_at,
        revoked_at: row.revoked_at,
    })
}

async fn key_row(c: &mut Conn<'_>, kind: AccessKeyKind, id: i64) -> Result<KeyRow, StoreError> {
    c.fetch_optional(
        "SELECT id, kind, name, hint, created_by, created_at, rotated_at, previous_expires_at, revoked_at
         FROM access_keys WHERE id = $1 AND kind = $2",
        args![id, kind.as_str()],
    )
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("{} {id}", kind.resource())))
}

/// Audits a change (`verb`: `rotate`, `revoke`) to an existing key, with its views either
/// side of it.
async fn audit_key_change(
    c: &mut Conn<'_>,
    ctx: &WriteContext,
    kind: AccessKeyKind,
    verb: &str,
    before: &AccessKeyView,
    after: &AccessKeyView,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let action = kind.action(verb);
    let key = after.id.to_string();
    let rec = AuditRecord::new(&action, kind.resource(), &key)
        .before(encode(before))
        .after(encode(after));
    audit(c, ctx, rec, now).await
}

const MAX_KEY_NAME: usize = 128;

impl Store {
    /// Creates an SDK key (one environment) or a relay key (the given environments).
    pub async fn create_access_key(
        &self,
        ctx: &WriteContext,
        kind: AccessKeyKind,
        name: &str,
        environments: &[RelayEnvironment],
    ) -> Result<CreatedAccessKey, StoreError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_KEY_NAME {
            return Err(StoreError::invalid(
                "name",
                "length",
                format!("must be 1 to {MAX_KEY_NAME} characters"),
            ));
        }
        if environments.is_empty() {
            return Err(StoreError::invalid(
                "environments",
                "required",
                "a key needs at least one environment",
            ));
        }
        let secret = generate_secret(kind.prefix());
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let mut env_ids = Vec::with_capacity(environments.len());
        for (i, re) in environments.iter().enumerate() {
            let p = project_row(&mut c, &re.project)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound(_) => StoreError::invalid(
                        format!("environments[{i}].project"),
                        "unknown_project",
                        format!("project '{}' does not exist", re.project),
                    ),
                    e => e,
                })?;
            let e = environment_row(&mut c, p.id, &re.environment)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound(_) => StoreError::invalid(
                        format!("environments[{i}].environment"),
                        "unknown_environment",
                        format!(
                            "environment '{}' does not exist in project '{}'",
                            re.environment, re.project
                        ),
                    ),
                    e => e,
                })?;
            env_ids.push(e.id);
        }
        env_ids.sort_unstable();
        env_ids.dedup();
        let t = now();
        let row: KeyRow = c
            .fetch_one(
                "INSERT INTO access_keys (kind, name, secret_hash, hint, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING id, kind, name, hint, created_by, created_at, rotated_at,
                           previous_expires_at, revoked_at",
                args![
                    kind.as_str(),
                    name,
                    hash_secret(&secret),
                    hint(&secret),
                    ctx.actor.name.as_str(),
                    t
                ],
            )
            .await?;
        for env_id in env_ids {
            c.execute(
                "INSERT INTO access_key_environments (key_id, environment_id) VALUES ($1, $2)",
                args![row.id, env_id],
            )
            .await?;
        }
        let view = key_view(&mut c, row).await?;
        let id = view.id.to_string();
        let action = kind.action("create");
        let rec = AuditRecord::new(&action, kind.resource(), &id)
            .scoped(
                (kind != AccessKeyKind::Relay).then(|| environments[0].project.as_str()),
                (kind != AccessKeyKind::Relay).then(|| environments[0].environment.as_str()),
            )
            .after(encode(&view));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(CreatedAccessKey { key: view, secret })
    }

    /// Keys of a kind, optionally only those covering one environment, by id, a page at a
    /// time.
    pub async fn list_access_keys(
        &self,
        kind: AccessKeyKind,
        environment: Option<&RelayEnvironment>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<AccessKeyView>, StoreError> {
        let after = id_cursor(cursor)?;
        let limit = page_limit(limit);
        let mut items = self
            .access_keys(kind, environment, after, limit + 1)
            .await?;
        Ok(paginate(&mut items, limit, |k| k.id.to_string()))
    }

    /// Up to `limit` keys of a kind with ids above `after`, optionally only those covering
    /// one environment, by id.
    async fn access_keys(
        &self,
        kind: AccessKeyKind,
        environment: Option<&RelayEnvironment>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AccessKeyView>, StoreError> {
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let rows: Vec<KeyRow> = match environment {
            Some(re) => {
                let p = project_row(&mut c, &re.project).await?;
                let e = environment_row(&mut c, p.id, &re.environment).await?;
                c.fetch_all(
                    "SELECT id, kind, name, hint, created_by, created_at, rotated_at,
                            previous_expires_at, revoked_at
                     FROM access_keys WHERE kind = $1 AND id IN
                         (SELECT key_id FROM access_key_environments WHERE environment_id = $2)
                       AND id > $3
                     ORDER BY id LIMIT $4",
                    args![kind.as_str(), e.id, after, limit],
                )
                .await?
            }
            None => {
                c.fetch_all(
                    "SELECT id, kind, name, hint, created_by, created_at, rotated_at,
                            previous_expires_at, revoked_at
                     FROM access_keys WHERE kind = $1 AND id > $2 ORDER BY id LIMIT $3",
                    args![kind.as_str(), after, limit],
                )
                .await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(key_view(&mut c, r).await?);
        }
        Ok(out)
    }

    /// Checks that key `id` of `kind` covers `environment` (for SDK keys addressed under an
    /// environment's path).
    pub async fn access_key_in(
        &self,
        kind: AccessKeyKind,
        id: i64,
        environment: &RelayEnvironment,
    ) -> Result<(), StoreError> {
        let keys = self
            .access_keys(kind, Some(environment), 0, i64::MAX)
            .await?;
        if keys.iter().any(|k| k.id == id) {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("{} {id}", kind.resource())))
        }
    }

    /// Issues a new secret for a key. With a grace period, the previous secret keeps working
    /// until it ends; otherwise it stops at once.
    pub async fn rotate_access_key(
        &self,
        ctx: &WriteContext,
        kind: AccessKeyKind,
        id: i64,
        grace_seconds: u32,
    ) -> Result<CreatedAccessKey, StoreError> {
        let secret = generate_secret(kind.prefix());
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let before = key_row(&mut c, kind, id).await?;
        if before.revoked_at.is_some() {
            return Err(StoreError::Conflict {
                message: format!("{} {id} is revoked", kind.resource()),
                blockers: Vec::new(),
            });
        }
        let before = key_view(&mut c, before).await?;
        let t = now();
        let expires =
            (grace_seconds > 0).then(|| t + time::Duration::seconds(i64::from(grace_seconds)));
        let row: KeyRow = c
            .fetch_one(
                "UPDATE access_keys SET
                     previous_hash = CASE WHEN $3 IS NULL THEN NULL ELSE secret_hash END,
                     previous_expires_at = $3,
                     secret_hash = $2, hint = $4, rotated_at = $5
                 WHERE id = $1
                 RETURNING id, kind, name, hint, created_by, created_at, rotated_at,
                           previous_expires_at, revoked_at",
                args![id, hash_secret(&secret), expires, hint(&secret), t],
            )
            .await
            .or_gone(|| format!("{} {id}", kind.resource()))?;
        let after = key_view(&mut c, row).await?;
        audit_key_change(&mut c, ctx, kind, "rotate", &before, &after, t).await?;
        tx.commit().await?;
        Ok(CreatedAccessKey { key: after, secret })
    }

    /// Revokes a key: every secret of it stops working at once.
    pub async fn revoke_access_key(
        &self,
        ctx: &WriteContext,
        kind: AccessKeyKind,
        id: i64,
    ) -> Result<AccessKeyView, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let before = key_row(&mut c, kind, id).await?;
        let before = key_view(&mut c, before).await?;
        if before.revoked_at.is_some() {
            return Ok(before);
        }
        let t = now();
        let row: KeyRow = c
            .fetch_one(
                "UPDATE access_keys SET revoked_at = $2, previous_hash = NULL, previous_expires_at = NULL
                 WHERE id = $1
                 RETURNING id, kind, name, hint, created_by, created_at, rotated_at,
                           previous_expires_at, revoked_at",
                args![id, t],
            )
            .await
            .or_gone(|| format!("{} {id}", kind.resource()))?;
        let after = key_view(&mut c, row).await?;
        audit_key_change(&mut c, ctx, kind, "revoke", &before, &after, t).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// What a presented SDK or relay key may read, if it is live (its current secret, or its
    /// previous one within the rotation grace period).
    pub async fn authenticate_access_key(
        &self,
        secret: &str,
    ) -> Result<Option<KeyScope>, StoreError> {
        if !(secret.starts_with(SDK_KEY_PREFIX) || secret.starts_with(RELAY_KEY_PREFIX)) {
            return Ok(None);
        }
        let digest = hash_secret(secret);
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let row: Option<KeyAuthRow> = c
            .fetch_optional(
                "SELECT id, kind, secret_hash, previous_hash, previous_expires_at FROM access_keys
                 WHERE (secret_hash = $1 OR previous_hash = $1) AND revoked_at IS NULL",
                args![digest.clone()],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let current = digests_equal(&row.secret_hash, &digest);
        let previous = row
            .previous_hash
            .as_deref()
            .is_some_and(|h| digests_equal(h, &digest))
            && row.previous_expires_at.is_some_and(|t| t > now());
        if !(current || previous) {
            return Ok(None);
        }
        let kind = parse_kind(&row.kind)?;
        let environments = key_environments(&mut c, row.id).await?;
        Ok(Some(KeyScope {
            id: row.id,
            kind,
            environments,
        }))
    }
}
