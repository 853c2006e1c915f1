//! API tokens: created, listed and revoked by admins; authenticated on every API request.
//!
//! Authentication goes through a small in-memory cache of token digests ([`TokenCache`]):
//! a token verified (or refused) less than the cache's lifetime ago is not looked up again,
//! so API traffic costs no database query per request and keeps authenticating from memory
//! while the database is briefly unreachable. A revocation takes effect at once on the
//! server that made it and within the cache's lifetime on the others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration as StdDuration, Instant};

use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::changes::{AuditRecord, audit};
use super::projects::paginate;
use super::{Page, Store, StoreError, WriteContext, encode, id_cursor, page_limit, unique_or};
use crate::auth::{
    API_TOKEN_PREFIX, Actor, Grant, Role, Scope, digests_equal, generate_secret,
    hash_scoped_secret, hash_secret, hint,
};
use crate::db::{args, now};

/// An API token as listed: never its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    /// Token id.
    pub id: i64,
    /// Name: the actor recorded in the audit log.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Prefix and last characters of the secret, to recognise it.
    pub hint: String,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Where the role applies, for a scoped token; absent: everywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Grant>>,
}

/// A token just created: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token.
    #[serde(flatten)]
    pub token: TokenView,
    /// The secret to send as `Authorization: Bearer …`. Shown once.
    pub secret: String,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    name: String,
    role: String,
    hint: String,
    created_by: String,
    created_at: OffsetDateTime,
    revoked_at: Option<OffsetDateTime>,
    scopes: Option<Json<Value>>,
}

/// A stored scope list: `None` for an unscoped token.
fn parse_scopes(stored: Option<Json<Value>>) -> Result<Option<Vec<Grant>>, StoreError> {
    stored
        .map(|Json(v)| {
            serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("token scopes: {e}")))
        })
        .transpose()
}

impl TokenRow {
    fn view(self) -> Result<TokenView, StoreError> {
        Ok(TokenView {
            scopes: parse_scopes(self.scopes)?,
            id: self.id,
            role: Role::parse(&self.role)
                .ok_or_else(|| StoreError::Corrupt(format!("token role '{}'", self.role)))?,
            name: self.name,
            hint: self.hint,
            created_by: self.created_by,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AuthRow {
    id: i64,
    name: String,
    role: String,
    secret_hash: Vec<u8>,
    scopes: Option<Json<Value>>,
}

const MAX_TOKEN_NAME: usize = 128;

/// Most grants one scoped token may carry.
const MAX_GRANTS: usize = 100;

/// Most digests the cache holds; past it, it starts afresh (a flood of random tokens must not
/// grow memory).
const MAX_CACHED_TOKENS: usize = 10_000;

/// How long past its lifetime a verified token still authenticates while the database cannot
/// be reached (revocation is a database write, so none can happen meanwhile).
const STALE_WHILE_UNAVAILABLE: StdDuration = StdDuration::from_secs(300);

/// What the database said about a token digest (its caller, or `None`: refused), and when.
type CachedAnswer = (Option<Actor>, Instant);

/// Recently verified and refused API token digests (see the module documentation).
#[derive(Debug)]
pub(crate) struct TokenCache {
    /// How long an answer is used without asking the database again.
    ttl: StdDuration,
    /// Digest → the token's caller (`None`: refused) and when the database said so.
    entries: Mutex<HashMap<Vec<u8>, CachedAnswer>>,
}

impl TokenCache {
    pub(crate) fn new(ttl: StdDuration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, digest: &[u8]) -> Option<CachedAnswer> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(digest).cloned()
    }

    fn put(&self, digest: Vec<u8>, actor: Option<Actor>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED_TOKENS {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= MAX_CACHED_TOKENS {
                entries.clear();
            }
        }
        entries.insert(digest, (actor, Instant::now()));
    }

    fn forget_digest(&self, digest: &[u8]) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(digest);
    }

    fn forget_token(&self, id: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (actor, _)| actor.as_ref().is_none_or(|a| a.token_id != Some(id)));
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.ttl
    }
}

/// Checks a scoped token's grants against its role: at least one, at most [`MAX_GRANTS`],
/// none above the token's role, no place named twice.
fn check_grants(role: Role, grants: &[Grant]) -> Result<(), StoreError> {
    if grants.is_empty() || grants.len() > MAX_GRANTS {
        return Err(StoreError::invalid(
            "scopes",
            "length",
            format!(
                "a scoped token needs 1 to {MAX_GRANTS} grants (omit `scopes` for an unscoped token)"
            ),
        ));
    }
    for (i, g) in grants.iter().enumerate() {
        if g.role > role {
            return Err(StoreError::invalid(
                format!("scopes[{i}].role"),
                "exceeds_token_role",
                format!(
                    "a grant cannot give more than the token's own role ('{}')",
                    role.as_str()
                ),
            ));
        }
        if grants[..i]
            .iter()
            .any(|o| o.project == g.project && o.environment == g.environment)
        {
            return Err(StoreError::invalid(
                format!("scopes[{i}]"),
                "duplicate",
                "another grant names the same project and environment",
            ));
        }
    }
    Ok(())
}

impl Store {
    async fn insert_token(
        &self,
        ctx: &WriteContext,
        name: &str,
        role: Role,
        scopes: Option<Vec<Grant>>,
        secret: String,
    ) -> Result<CreatedToken, StoreError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME {
            return Err(StoreError::invalid(
                "name",
                "length",
                format!("must be 1 to {MAX_TOKEN_NAME} characters"),
            ));
        }
        if let Some(grants) = &scopes {
            check_grants(role, grants)?;
        }
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        // A grant naming a project or environment that does not exist is a typo that would
        // leave the token powerless there: refuse it now.
        for (i, g) in scopes.iter().flatten().enumerate() {
            let p = super::projects::project_row(&mut c, &g.project)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound(what) => StoreError::invalid(
                        format!("scopes[{i}].project"),
                        "not_found",
                        format!("{what} does not exist"),
                    ),
                    e => e,
                })?;
            if let Some(env) = &g.environment {
                super::environments::environment_row(&mut c, p.id, env)
                    .await
                    .map_err(|e| match e {
                        StoreError::NotFound(what) => StoreError::invalid(
                            format!("scopes[{i}].environment"),
                            "not_found",
                            format!("{what} does not exist in project '{}'", g.project),
                        ),
                        e => e,
                    })?;
            }
        }
        let digest = match scopes {
            Some(_) => hash_scoped_secret(&secret),
            None => hash_secret(&secret),
        };
        let stored_scopes = scopes.as_ref().map(encode);
        let t = now();
        let row: TokenRow = c
            .fetch_one(
                "INSERT INTO api_tokens (name, role, secret_hash, hint, created_by, created_at, scopes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 RETURNING id, name, role, hint, created_by, created_at, revoked_at, scopes",
                args![
                    name,
                    role.as_str(),
                    digest,
                    hint(&secret),
                    ctx.actor.name.as_str(),
                    t,
                    stored_scopes
                ],
            )
            .await
            .map_err(|e| unique_or(e, || format!("token named '{name}'")))?;
        let view = row.view()?;
        let id = view.id.to_string();
        let rec = AuditRecord::new("token.create", "token", &id).after(encode(&view));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        // Someone may have tried this secret before it existed.
        self.tokens.forget_digest(&hash_secret(&secret));
        Ok(CreatedToken {
            token: view,
            secret,
        })
    }

    /// Creates an API token with a fresh random secret.
    pub async fn create_token(
        &self,
        ctx: &WriteContext,
        name: &str,
        role: Role,
    ) -> Result<CreatedToken, StoreError> {
        self.insert_token(ctx, name, role, None, generate_secret(API_TOKEN_PREFIX))
            .await
    }

    /// Creates an API token with a fresh random secret whose role is limited to `scopes`
    /// (`None`: unscoped, as [`Store::create_token`]). Each grant's role is at most `role`.
    pub async fn create_scoped_token(
        &self,
        ctx: &WriteContext,
        name: &str,
        role: Role,
        scopes: Option<Vec<Grant>>,
    ) -> Result<CreatedToken, StoreError> {
        self.insert_token(ctx, name, role, scopes, generate_secret(API_TOKEN_PREFIX))
            .await
    }

    /// API tokens, revoked ones included, by id, a page at a time.
    pub async fn list_tokens(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<TokenView>, StoreError> {
        let after = id_cursor(cursor)?;
        let limit = page_limit(limit);
        let mut pc = self.db.acquire().await?;
        let rows: Vec<TokenRow> = pc
            .conn()
            .fetch_all(
                "SELECT id, name, role, hint, created_by, created_at, revoked_at, scopes FROM api_tokens
                 WHERE id > $1 ORDER BY id LIMIT $2",
                args![after, limit + 1],
            )
            .await?;
        let mut items = rows
            .into_iter()
            .map(TokenRow::view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(&mut items, limit, |t| t.id.to_string()))
    }

    /// Revokes an API token: it stops authenticating at once.
    pub async fn revoke_token(&self, ctx: &WriteContext, id: i64) -> Result<TokenView, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let before: TokenRow = c
            .fetch_optional(
                "SELECT id, name, role, hint, created_by, created_at, revoked_at, scopes FROM api_tokens
                 WHERE id = $1",
                args![id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
        let before = before.view()?;
        if before.revoked_at.is_some() {
            return Ok(before);
        }
        let t = now();
        let after: TokenRow = c
            .fetch_one(
                "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1
                 RETURNING id, name, role, hint, created_by, created_at, revoked_at, scopes",
                args![id, t],
            )
            .await?;
        let after = after.view()?;
        let key = id.to_string();
        let rec = AuditRecord::new("token.revoke", "token", &key)
            .before(encode(&before))
            .after(encode(&after));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        self.tokens.forget_token(id);
        Ok(after)
    }

    /// The caller of a token verified less than the cache lifetime ago, without asking the
    /// database (`None`: not known to be valid right now). With `database_down`, a token
    /// verified in the last few minutes counts too (no revocation can be written meanwhile).
    pub fn cached_token(&self, secret: &str, database_down: bool) -> Option<Actor> {
        match self.tokens.get(&hash_secret(secret)) {
            Some((actor @ Some(_), at))
                if self.tokens.fresh(at)
                    || (database_down && at.elapsed() < STALE_WHILE_UNAVAILABLE) =>
            {
                actor
            }
            _ => None,
        }
    }

    /// The caller a presented API token belongs to, if it is a live token: from the cache if
    /// the database answered for this token recently, else from the database. While the
    /// database fails, a token verified in the last few minutes keeps authenticating.
    pub async fn authenticate_token(&self, secret: &str) -> Result<Option<Actor>, StoreError> {
        if !secret.starts_with(API_TOKEN_PREFIX) {
            return Ok(None);
        }
        let digest = hash_secret(secret);
        let cached = self.tokens.get(&digest);
        if let Some((actor, at)) = &cached
            && self.tokens.fresh(*at)
        {
            return Ok(actor.clone());
        }
        match self.lookup_token(secret, &digest).await {
            Ok(actor) => {
                self.tokens.put(digest, actor.clone());
                Ok(actor)
            }
            Err(StoreError::Database(e)) => match cached {
                Some((Some(actor), at)) if at.elapsed() < STALE_WHILE_UNAVAILABLE => {
                    tracing::debug!(error = %e, "database unavailable: using a recently verified token");
                    Ok(Some(actor))
                }
                _ => Err(StoreError::Database(e)),
            },
            Err(e) => Err(e),
        }
    }

    async fn lookup_token(&self, secret: &str, digest: &[u8]) -> Result<Option<Actor>, StoreError> {
        let scoped_digest = hash_scoped_secret(secret);
        let mut pc = self.db.acquire().await?;
        let row: Option<AuthRow> = pc
            .conn()
            .fetch_optional(
                "SELECT id, name, role, secret_hash, scopes FROM api_tokens
                 WHERE secret_hash IN ($1, $2) AND revoked_at IS NULL",
                args![digest.to_vec(), scoped_digest.clone()],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let grants = parse_scopes(row.scopes)?;
        // Compare again in constant time, with the digest of the token's own kind.
        let expected: &[u8] = if grants.is_some() {
            &scoped_digest
        } else {
            digest
        };
        if !digests_equal(&row.secret_hash, expected) {
            return Ok(None);
        }
        let role = Role::parse(&row.role)
            .ok_or_else(|| StoreError::Corrupt(format!("token role '{}'", row.role)))?;
        Ok(Some(Actor {
            token_id: Some(row.id),
            name: row.name,
            role,
            scope: grants.map(Scope::limited).unwrap_or_default(),
        }))
    }

    async fn live_admin_exists(&self) -> Result<bool, StoreError> {
        let mut pc = self.db.acquire().await?;
        let existing: Option<(i64,)> = pc
            .conn()
            .fetch_optional(
                "SELECT id FROM api_tokens
                 WHERE role = 'admin' AND revoked_at IS NULL AND scopes IS NULL LIMIT 1",
                args![],
            )
            .await?;
        Ok(existing.is_some())
    }

    /// On start with no live admin token (first start, or every admin token revoked): creates
    /// the admin token `bootstrap-admin` (or `bootstrap-admin-<time>` if that name is taken) with
    /// `secret` if given, else with a generated one. Returns the secret when it generated one
    /// (for the caller to print once), and `None` when nothing was created or the secret was
    /// supplied.
    pub async fn bootstrap_admin(
        &self,
        secret: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        if self.live_admin_exists().await? {
            return Ok(None);
        }
        let ctx = WriteContext {
            actor: Actor::system(),
            request_id: None,
        };
        let (secret, generated) = match secret {
            Some(s) => {
                if !s.starts_with(API_TOKEN_PREFIX) || s.len() < API_TOKEN_PREFIX.len() + 32 {
                    return Err(StoreError::invalid(
                        "bootstrap_token",
                        "key_format",
                        format!(
                            "the bootstrap token must start with '{API_TOKEN_PREFIX}' and carry at least 32 more characters (128 bits as hex)"
                        ),
                    ));
                }
                (s.to_owned(), false)
            }
            None => (generate_secret(API_TOKEN_PREFIX), true),
        };
        match self
            .insert_token(&ctx, "bootstrap-admin", Role::Admin, None, secret.clone())
            .await
        {
            Ok(created) => Ok(generated.then_some(created.secret)),
            Err(StoreError::AlreadyExists(_)) => {
                if self.live_admin_exists().await? {
                    // Another process bootstrapped at the same moment.
                    return Ok(None);
                }
                // The earlier bootstrap token was revoked and no admin is left: recover with
                // a new one under a fresh name.
                let name = format!("bootstrap-admin-{}", now().unix_timestamp());
                let created = self
                    .insert_token(&ctx, &name, Role::Admin, None, secret)
                    .await?;
                Ok(generated.then_some(created.secret))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: i64) -> Actor {
        Actor {
            token_id: Some(id),
            name: format!("t{id}"),
            role: Role::Viewer,
            scope: Scope::unrestricted(),
        }
    }

    #[test]
    fn the_cache_forgets_revoked_tokens_and_stays_bounded() {
        let cache = TokenCache::new(StdDuration::from_secs(60));
        cache.put(vec![1], Some(actor(1)));
        cache.put(vec![2], Some(actor(2)));
        cache.put(vec![3], None);
        let (a, at) = cache.get(&[1]).unwrap();
        assert_eq!(a, Some(actor(1)));
        assert!(cache.fresh(at));
        cache.forget_token(1);
        assert!(cache.get(&[1]).is_none());
        assert!(cache.get(&[2]).is_some(), "other tokens stay");
        cache.forget_digest(&[3]);
        assert!(cache.get(&[3]).is_none());
        for i in 0..(MAX_CACHED_TOKENS as u32 + 5) {
            cache.put(i.to_be_bytes().to_vec(), None);
        }
        assert!(cache.entries.lock().unwrap().len() <= MAX_CACHED_TOKENS);
        // A zero lifetime never answers from memory.
        let off = TokenCache::new(StdDuration::ZERO);
        off.put(vec![1], Some(actor(1)));
        assert!(!off.fresh(off.get(&[1]).unwrap().1));
    }
}
