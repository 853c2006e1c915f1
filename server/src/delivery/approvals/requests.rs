//! Change requests: a proposed configuration patch of one flag in one environment, reviewed
//! (approve, reject, comment) and applied once approved.
//!
//! States: `open` → `approved` (enough distinct approvals of the required role) → `applied`;
//! `open` or `approved` → `rejected`. The author cannot approve their own request; one
//! approval per reviewer (API token). Applying re-checks the approvals against the policy in
//! force, then writes through the store's ordinary [`Store::patch_config`] (validation,
//! history, audit, distribution, webhooks) with `If-Match` on the version it checked, after
//! the scheduler's conflict rule ([`crate::delivery::patch::decide`]): if a field the patch
//! touches changed since the request's base version, applying fails with 409 and names them.
//! Every state change is audited (`change_request.*`), which also queues its webhooks.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use vexil_schema::FlagConfig;

use super::{Requirement, applying, requirement};
use crate::auth::Role;
use crate::db::{Conn, args};
use crate::delivery::patch::{Decision, decide, parse_patch, touched_fields};
use crate::delivery::shared::{id_cursor, ids};
use crate::store::{
    AuditRecord, ConfigPatch, Page, Store, StoreError, WriteContext, audit, paginate,
};

/// A change request to open.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChangeRequest {
    /// The configuration fields to set, as for `PATCH` of the configuration.
    #[schema(value_type = ConfigPatch)]
    pub patch: Value,
    /// Why; shown to reviewers and in the audit log.
    #[serde(default)]
    pub description: String,
    /// The configuration version the patch is written against (default: the current one).
    #[serde(default)]
    pub base_version: Option<u64>,
}

/// A review's optional comment.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewInput {
    /// Free text (at most 4096 bytes); required for `comment`.
    #[serde(default)]
    pub comment: String,
}

/// A review to record: what it does, the reviewer's role in the environment (checked by the
/// caller against what the review needs) and the comment.
#[derive(Debug, Clone)]
pub struct NewReview {
    /// Approve, reject or comment.
    pub kind: ReviewKind,
    /// The reviewer's role in the environment.
    pub role: Role,
    /// The comment (may be empty except for a comment).
    pub comment: String,
}

/// Where a change request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeRequestState {
    /// Waiting for approvals.
    Open,
    /// Has its approvals; can be applied.
    Approved,
    /// Rejected by a reviewer; can no longer be approved or applied.
    Rejected,
    /// Applied to the flag's configuration.
    Applied,
}

impl ChangeRequestState {
    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "open" => Self::Open,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "applied" => Self::Applied,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "change request state '{other}'"
                )));
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Applied => "applied",
        }
    }
}

/// What a review did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewKind {
    /// An approval.
    Approve,
    /// A rejection.
    Reject,
    /// A comment.
    Comment,
}

impl ReviewKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Comment => "comment",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "approve" => Self::Approve,
            "reject" => Self::Reject,
            "comment" => Self::Comment,
            other => return Err(StoreError::Corrupt(format!("review kind '{other}'"))),
        })
    }
}

/// One review of a change request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Review {
    /// Approve, reject or comment.
    pub kind: ReviewKind,
    /// Who (the API token's name).
    pub actor: String,
    /// The reviewer's role in the environment at the time.
    pub role: Role,
    /// The comment (may be empty).
    pub comment: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A change request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChangeRequest {
    /// Id, unique on the server.
    pub id: i64,
    /// Project key.
    pub project: String,
    /// Environment key.
    pub environment: String,
    /// Flag key.
    pub flag: String,
    /// The proposed patch.
    #[schema(value_type = ConfigPatch)]
    pub patch: Value,
    /// Why.
    pub description: String,
    /// Who proposed it.
    pub author: String,
    /// The configuration version it was written against.
    pub base_version: i64,
    /// Its state.
    pub state: ChangeRequestState,
    /// Approvals needed under the environment's policy now (1 without a policy).
    pub required_approvals: i64,
    /// The least role whose approval counts.
    pub approver_role: Role,
    /// The approvals that count, by reviewer name.
    pub approved_by: Vec<String>,
    /// Every review, oldest first.
    pub reviews: Vec<Review>,
    /// The configuration version its application produced (or found in place).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<i64>,
    /// Who applied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_by: Option<String>,
    /// When it was opened.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    project: String,
    environment: String,
    environment_id: i64,
    flag: String,
    patch: Json<Value>,
    base_version: i64,
    base_config: Json<Value>,
    description: String,
    author: String,
    author_token_id: Option<i64>,
    state: String,
    applied_version: Option<i64>,
    applied_by: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

#[derive(Debug, sqlx::FromRow)]
struct ReviewRow {
    kind: String,
    actor: String,
    reviewer_key: String,
    role: String,
    comment: String,
    created_at: OffsetDateTime,
}

/// The columns of a change request, followed by the given SQL tail.
macro_rules! select {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, p.key AS project, e.key AS environment, r.environment_id,
                f.key AS flag, r.patch, r.base_version, r.base_config, r.description, r.author,
                r.author_token_id, r.state, r.applied_version, r.applied_by, r.created_at,
                r.updated_at
             FROM change_requests r
             JOIN projects p ON p.id = r.project_id
             JOIN environments e ON e.id = r.environment_id
             JOIN flags f ON f.id = r.flag_id ",
            $tail
        )
    };
}

/// Who a reviewer is, for counting distinct approvers: the token, else the name.
fn reviewer_key(ctx: &WriteContext) -> String {
    match ctx.actor.token_id {
        Some(id) => format!("t:{id}"),
        None => format!("n:{}", ctx.actor.name),
    }
}

fn author_key(row: &Row) -> String {
    match row.author_token_id {
        Some(id) => format!("t:{id}"),
        None => format!("n:{}", row.author),
    }
}

/// The distinct approvers (names) whose role counts under `req`.
fn counted(reviews: &[ReviewRow], req: &Requirement) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    let mut names = Vec::new();
    for r in reviews {
        if r.kind != "approve" || keys.contains(&r.reviewer_key) {
            continue;
        }
        let role = Role::parse(&r.role)
            .ok_or_else(|| StoreError::Corrupt(format!("reviewer role '{}'", r.role)))?;
        if role >= req.role {
            keys.push(r.reviewer_key.clone());
            names.push(r.actor.clone());
        }
    }
    Ok(names)
}

async fn reviews_of(c: &mut Conn<'_>, id: i64) -> Result<Vec<ReviewRow>, StoreError> {
    Ok(c.fetch_all(
        "SELECT kind, actor, reviewer_key, role, comment, created_at
         FROM change_request_reviews WHERE change_request_id = $1 ORDER BY id",
        args![id],
    )
    .await?)
}

/// The full view of a change request, with its reviews and the requirement in force.
async fn view(c: &mut Conn<'_>, row: Row) -> Result<ChangeRequest, StoreError> {
    let req = requirement(c, row.environment_id).await?;
    let reviews = reviews_of(c, row.id).await?;
    let approved_by = counted(&reviews, &req)?;
    let reviews = reviews
        .into_iter()
        .map(|r| {
            Ok(Review {
                kind: ReviewKind::parse(&r.kind)?,
                role: Role::parse(&r.role)
                    .ok_or_else(|| StoreError::Corrupt(format!("reviewer role '{}'", r.role)))?,
                actor: r.actor,
                comment: r.comment,
                created_at: r.created_at,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(ChangeRequest {
        id: row.id,
        project: row.project,
        environment: row.environment,
        flag: row.flag,
        patch: row.patch.0,
        description: row.description,
        author: row.author,
        base_version: row.base_version,
        state: ChangeRequestState::parse(&row.state)?,
        required_approvals: req.approvals,
        approver_role: req.role,
        approved_by,
        reviews,
        applied_version: row.applied_version,
        applied_by: row.applied_by,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// The change request `id` of the flag path (404 when it is another flag's).
async fn row_in(
    c: &mut Conn<'_>,
    (project, flag, environment): (&str, &str, &str),
    id: i64,
) -> Result<Row, StoreError> {
    let (_, environment_id, flag_id) = ids(c, project, flag, environment).await?;
    c.fetch_optional(
        select!("WHERE r.id = $1 AND r.flag_id = $2 AND r.environment_id = $3"),
        args![id, flag_id, environment_id],
    )
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("change request {id}")))
}

fn not_in(state: &str, id: i64, what: &str) -> StoreError {
    StoreError::Conflict {
        message: format!("change request {id} is {state}: it cannot be {what}"),
        blockers: Vec::new(),
    }
}

fn check_comment(comment: &str) -> Result<(), StoreError> {
    if comment.len() > 4096 {
        return Err(StoreError::invalid(
            "comment",
            "max_length",
            "at most 4096 bytes",
        ));
    }
    Ok(())
}

/// A change request to insert: the patch, the configuration it is written against, why.
pub(crate) struct Proposal<'a> {
    /// The configuration fields to set (already checked by `parse_patch`).
    pub patch: &'a Value,
    /// The configuration the patch is written against.
    pub base: &'a FlagConfig,
    /// Why.
    pub description: &'a str,
}

/// Opens a change request in the caller's transaction and audits `change_request.create`
/// as `ctx` (a person over the API, or a release plan on behalf of its author).
pub(crate) async fn propose_in(
    c: &mut Conn<'_>,
    ctx: &WriteContext,
    path: (&str, &str, &str),
    p: Proposal<'_>,
    now: OffsetDateTime,
) -> Result<ChangeRequest, StoreError> {
    let (project, flag, environment) = path;
    let (project_id, environment_id, flag_id) = ids(c, project, flag, environment).await?;
    let (id,): (i64,) = c
        .fetch_one(
            "INSERT INTO change_requests (project_id, environment_id, flag_id, patch,
                 base_version, base_config, description, author, author_token_id, state,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, $10)
             RETURNING id",
            args![
                project_id,
                environment_id,
                flag_id,
                p.patch.clone(),
                i64::try_from(p.base.version).unwrap_or(i64::MAX),
                crate::store::encode(p.base),
                p.description,
                ctx.actor.name.as_str(),
                ctx.actor.token_id,
                now
            ],
        )
        .await?;
    let row = row_in(c, path, id).await?;
    let view = view(c, row).await?;
    let key = id.to_string();
    let rec = AuditRecord::new("change_request.create", "change_request", &key)
        .scoped(Some(project), Some(environment))
        .after(crate::store::encode(&view));
    audit(c, ctx, rec, now).await?;
    Ok(view)
}

/// Inserts one review row.
async fn record_review(
    c: &mut Conn<'_>,
    ctx: &WriteContext,
    id: i64,
    (kind, role): (ReviewKind, Role),
    comment: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO change_request_reviews (change_request_id, kind, actor, actor_token_id,
             reviewer_key, role, comment, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        args![
            id,
            kind.as_str(),
            ctx.actor.name.as_str(),
            ctx.actor.token_id,
            reviewer_key(ctx),
            role.as_str(),
            comment,
            now
        ],
    )
    .await?;
    Ok(())
}

/// Rejects change request `id` in the caller's transaction if it is still open or approved
/// (a release plan withdrawing the request of its pending step when aborted, paused or
/// rolled back), audited as `change_request.reject` by `ctx` with `comment`. Returns
/// whether it did.
pub(crate) async fn withdraw_in(
    c: &mut Conn<'_>,
    ctx: &WriteContext,
    id: i64,
    comment: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let Some(row): Option<Row> = c
        .fetch_optional(select!("WHERE r.id = $1"), args![id])
        .await?
    else {
        return Ok(false);
    };
    let (project, environment) = (row.project.clone(), row.environment.clone());
    let before = view(c, row).await?;
    if !matches!(
        before.state,
        ChangeRequestState::Open | ChangeRequestState::Approved
    ) {
        return Ok(false);
    }
    record_review(
        c,
        ctx,
        id,
        (ReviewKind::Reject, ctx.actor.role),
        comment,
        now,
    )
    .await?;
    c.execute(
        "UPDATE change_requests SET state = 'rejected', updated_at = $2
         WHERE id = $1 AND state IN ('open', 'approved')",
        args![id, now],
    )
    .await?;
    let row: Row = c
        .fetch_optional(select!("WHERE r.id = $1"), args![id])
        .await?
        .ok_or_else(|| StoreError::Gone(format!("change request {id}")))?;
    let after = view(c, row).await?;
    let key = id.to_string();
    let rec = AuditRecord::new("change_request.reject", "change_request", &key)
        .scoped(Some(&project), Some(&environment))
        .before(crate::store::encode(&before))
        .after(crate::store::encode(&after));
    audit(c, ctx, rec, now).await?;
    Ok(true)
}

impl Store {
    /// Opens a change request: a patch of a flag's configuration in one environment, written
    /// against `base_version` (default: the current version). Audited as
    /// `change_request.create`.
    pub async fn create_change_request(
        &self,
        ctx: &WriteContext,
        path: (&str, &str, &str),
        req: NewChangeRequest,
        now: OffsetDateTime,
    ) -> Result<ChangeRequest, StoreError> {
        parse_patch(&req.patch)?;
        if req.description.len() > 4096 {
            return Err(StoreError::invalid(
                "description",
                "max_length",
                "at most 4096 bytes",
            ));
        }
        let base = self.base_config(path, req.base_version).await?;
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let proposal = Proposal {
            patch: &req.patch,
            base: &base,
            description: &req.description,
        };
        let view = propose_in(&mut c, ctx, path, proposal, now).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// The change requests of a flag in an environment, newest first, optionally only those
    /// in `state`.
    pub async fn list_change_requests(
        &self,
        path: (&str, &str, &str),
        state: Option<ChangeRequestState>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<ChangeRequest>, StoreError> {
        let (project, flag, environment) = path;
        let limit = crate::store::page_limit(limit);
        let before = id_cursor(cursor)?;
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let (_, environment_id, flag_id) = ids(&mut c, project, flag, environment).await?;
        let rows: Vec<Row> = c
            .fetch_all(
                select!(
                    "WHERE r.flag_id = $1 AND r.environment_id = $2 AND r.id < $3
                     AND ($4 IS NULL OR r.state = $4) ORDER BY r.id DESC LIMIT $5"
                ),
                args![
                    flag_id,
                    environment_id,
                    before,
                    state.map(|s| s.as_str()),
                    limit + 1
                ],
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            items.push(view(&mut c, r).await?);
        }
        Ok(paginate(&mut items, limit, |r| r.id.to_string()))
    }

    /// One change request of a flag in an environment.
    pub async fn get_change_request(
        &self,
        path: (&str, &str, &str),
        id: i64,
    ) -> Result<ChangeRequest, StoreError> {
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let row = row_in(&mut c, path, id).await?;
        view(&mut c, row).await
    }

    /// Records a review. The caller's role in the environment (`role`) was checked by the
    /// handler against what the review needs. An approval by the author is refused, one
    /// per reviewer counts, and the request turns `approved` once the distinct approvals of
    /// the required role reach the policy's number (audited `change_request.approved` as well).
    /// A rejection ends the request. A comment changes no state.
    pub async fn review_change_request(
        &self,
        ctx: &WriteContext,
        path: (&str, &str, &str),
        id: i64,
        review: NewReview,
        now: OffsetDateTime,
    ) -> Result<ChangeRequest, StoreError> {
        let NewReview {
            kind,
            role,
            comment,
        } = review;
        let input = ReviewInput { comment };
        check_comment(&input.comment)?;
        if kind == ReviewKind::Comment && input.comment.trim().is_empty() {
            return Err(StoreError::invalid(
                "comment",
                "required",
                "a comment needs some text",
            ));
        }
        let (project, _, environment) = path;
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let row = row_in(&mut c, path, id).await?;
        let (author, author_name, environment_id) =
            (author_key(&row), row.author.clone(), row.environment_id);
        let before = view(&mut c, row).await?;
        let open = matches!(
            before.state,
            ChangeRequestState::Open | ChangeRequestState::Approved
        );
        match kind {
            ReviewKind::Approve | ReviewKind::Reject if !open => {
                let what = if kind == ReviewKind::Approve {
                    "approved"
                } else {
                    "rejected"
                };
                return Err(not_in(before.state.as_str(), id, what));
            }
            _ => {}
        }
        if kind == ReviewKind::Approve && author == reviewer_key(ctx) {
            return Err(StoreError::Conflict {
                message: format!(
                    "change request {id} was proposed by this token ('{author_name}'): its author cannot approve it"
                ),
                blockers: Vec::new(),
            });
        }
        if kind == ReviewKind::Approve {
            let already: Option<(i64,)> = c
                .fetch_optional(
                    "SELECT id FROM change_request_reviews
                     WHERE change_request_id = $1 AND reviewer_key = $2 AND kind = 'approve'",
                    args![id, reviewer_key(ctx)],
                )
                .await?;
            if already.is_some() {
                return Err(StoreError::Conflict {
                    message: format!(
                        "'{}' has already approved change request {id}: approvals count once per reviewer",
                        ctx.actor.name
                    ),
                    blockers: Vec::new(),
                });
            }
        }
        record_review(&mut c, ctx, id, (kind, role), &input.comment, now).await?;
        let mut reached = false;
        match kind {
            ReviewKind::Approve => {
                let req = requirement(&mut c, environment_id).await?;
                let n = counted(&reviews_of(&mut c, id).await?, &req)?.len();
                if i64::try_from(n).unwrap_or(i64::MAX) >= req.approvals {
                    reached = c
                        .execute(
                            "UPDATE change_requests SET state = 'approved', updated_at = $2
                             WHERE id = $1 AND state = 'open'",
                            args![id, now],
                        )
                        .await?
                        > 0;
                }
            }
            ReviewKind::Reject => {
                let n = c
                    .execute(
                        "UPDATE change_requests SET state = 'rejected', updated_at = $2
                         WHERE id = $1 AND state IN ('open', 'approved')",
                        args![id, now],
                    )
                    .await?;
                if n == 0 {
                    return Err(not_in("no longer open", id, "rejected"));
                }
            }
            ReviewKind::Comment => {}
        }
        if !reached {
            c.execute(
                "UPDATE change_requests SET updated_at = $2 WHERE id = $1",
                args![id, now],
            )
            .await?;
        }
        let row = row_in(&mut c, path, id).await?;
        let after = view(&mut c, row).await?;
        let key = id.to_string();
        let action = match kind {
            ReviewKind::Approve => "change_request.approve",
            ReviewKind::Reject => "change_request.reject",
            ReviewKind::Comment => "change_request.comment",
        };
        let rec = AuditRecord::new(action, "change_request", &key)
            .scoped(Some(project), Some(environment))
            .before(crate::store::encode(&before))
            .after(crate::store::encode(&after));
        audit(&mut c, ctx, rec, now).await?;
        if reached {
            let rec = AuditRecord::new("change_request.approved", "change_request", &key)
                .scoped(Some(project), Some(environment))
                .after(crate::store::encode(&after));
            audit(&mut c, ctx, rec, now).await?;
        }
        tx.commit().await?;
        Ok(after)
    }

    /// Applies an approved change request through [`Store::patch_config`]. Fails with 409
    /// when it is not approved, when the approvals no longer meet the policy in force, or
    /// when a field the patch touches changed since its base version (the request stays
    /// approved; nothing is written). Audited as `change_request.apply`.
    pub async fn apply_change_request(
        &self,
        ctx: &WriteContext,
        path: (&str, &str, &str),
        id: i64,
        now: OffsetDateTime,
    ) -> Result<ChangeRequest, StoreError> {
        let (project, flag, environment) = path;
        let before = self.get_change_request(path, id).await?;
        if before.state != ChangeRequestState::Approved {
            return Err(not_in(before.state.as_str(), id, "applied"));
        }
        let have = i64::try_from(before.approved_by.len()).unwrap_or(i64::MAX);
        if have < before.required_approvals {
            return Err(StoreError::Conflict {
                message: format!(
                    "change request {id} has {have} of the {} approvals (role '{}') the policy now requires",
                    before.required_approvals,
                    before.approver_role.as_str()
                ),
                blockers: Vec::new(),
            });
        }
        let (base_config, patch_json) = {
            let mut pc = self.db().acquire().await?;
            let row = row_in(&mut pc.conn(), path, id).await?;
            (row.base_config.0, row.patch.0)
        };
        let patch: ConfigPatch = parse_patch(&patch_json)?;
        let base: FlagConfig = crate::store::decode("change request base", base_config)?;
        let current = self.get_config(project, flag, environment).await?;
        let version = match decide(&base, &current, &patch, &touched_fields(&patch_json), false) {
            Decision::AlreadyApplied => current.version,
            Decision::Conflict(fields) => {
                return Err(StoreError::Conflict {
                    message: format!(
                        "change request {id} conflicts: {} changed since version {} it was \
                         written against; propose a new change request on the current version",
                        fields.join(", "),
                        before.base_version
                    ),
                    blockers: fields,
                });
            }
            Decision::Apply => {
                applying(
                    id,
                    self.patch_config(
                        ctx,
                        project,
                        flag,
                        environment,
                        patch,
                        Some(current.version),
                    ),
                )
                .await?
                .config
                .version
            }
        };
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let n = c
            .execute(
                "UPDATE change_requests SET state = 'applied', applied_version = $2,
                     applied_by = $3, updated_at = $4
                 WHERE id = $1 AND state = 'approved'",
                args![
                    id,
                    i64::try_from(version).unwrap_or(i64::MAX),
                    ctx.actor.name.as_str(),
                    now
                ],
            )
            .await?;
        if n == 0 {
            return Err(not_in("no longer approved", id, "applied"));
        }
        let row = row_in(&mut c, path, id).await?;
        let after = view(&mut c, row).await?;
        let key = id.to_string();
        let rec = AuditRecord::new("change_request.apply", "change_request", &key)
            .scoped(Some(project), Some(environment))
            .before(crate::store::encode(&before))
            .after(crate::store::encode(&after));
        audit(&mut c, ctx, rec, now).await?;
        tx.commit().await?;
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(kind: &str, key: &str, name: &str, role: &str) -> ReviewRow {
        ReviewRow {
            kind: kind.into(),
            actor: name.into(),
            reviewer_key: key.into(),
            role: role.into(),
            comment: String::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn approvals_count_once_per_reviewer_and_only_from_the_required_role() {
        let reviews = vec![
            review("approve", "t:1", "ann", "editor"),
            review("approve", "t:1", "ann", "editor"),
            review("comment", "t:2", "bob", "admin"),
            review("approve", "t:3", "cy", "admin"),
            review("reject", "t:4", "dee", "admin"),
        ];
        let editors = Requirement {
            approvals: 2,
            role: Role::Editor,
            governed: true,
            kill_switch_exempt: true,
        };
        assert_eq!(counted(&reviews, &editors).unwrap(), vec!["ann", "cy"]);
        let admins = Requirement {
            role: Role::Admin,
            ..editors
        };
        assert_eq!(counted(&reviews, &admins).unwrap(), vec!["cy"]);
    }
}
