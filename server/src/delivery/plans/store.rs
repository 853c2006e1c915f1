//! The store functions of release plans: create, list, get and the manual actions.

use super::*;
use crate::delivery::approvals::safety_action;

impl Store {
    /// Creates a release plan and applies its first step (under an approval policy: proposes
    /// it as a change request, and the plan waits for its approval).
    pub async fn create_release_plan(
        &self,
        ctx: &WriteContext,
        (project, flag, environment): (&str, &str, &str),
        req: NewReleasePlan,
        now: OffsetDateTime,
    ) -> Result<ReleasePlan, StoreError> {
        check_steps(&req.steps)?;
        for (i, g) in req.guardrails.iter().enumerate() {
            g.validate(i)?;
            if let Guardrail::Metric { metric, .. } = g {
                self.get_metric(project, metric)
                    .await
                    .map_err(|e| match e {
                        StoreError::NotFound(_) => StoreError::invalid(
                            format!("guardrails[{i}].metric"),
                            "exists",
                            format!("the project has no metric '{metric}'"),
                        ),
                        other => other,
                    })?;
            }
        }
        if req.guardrails.len() > 10 {
            return Err(StoreError::invalid(
                "guardrails",
                "length",
                "at most 10 guardrails",
            ));
        }
        {
            // Said first: while a plan runs, the fallthrough is the plan's rollout.
            let mut pc = self.db().acquire().await?;
            let mut c = pc.conn();
            let (_, environment_id, flag_id) = ids(&mut c, project, flag, environment).await?;
            active_plan(&mut c, flag_id, environment_id).await?;
        }
        let current = self.get_config(project, flag, environment).await?;
        let from = match (req.from_variation, &current.fallthrough) {
            (Some(v), _) => v,
            (None, Serve::Variation(v)) => *v,
            (None, Serve::Rollout(_)) => {
                return Err(StoreError::invalid(
                    "from_variation",
                    "required",
                    "the fallthrough is a rollout: name the variation contexts move from",
                ));
            }
        };
        let variations = self
            .get_flag(project, flag)
            .await?
            .definition
            .variations
            .len();
        for (field, v) in [("from_variation", from), ("to_variation", req.to_variation)] {
            if v >= variations {
                return Err(StoreError::invalid(
                    field,
                    "variation",
                    format!("the flag has {variations} variations"),
                ));
            }
        }
        if from == req.to_variation {
            return Err(StoreError::invalid(
                "to_variation",
                "distinct",
                "the plan moves contexts to another variation",
            ));
        }
        let me = format!("request-{}", uuid::Uuid::new_v4().simple());
        let id = {
            let mut tx = self.db().begin().await?;
            let mut c = tx.conn();
            let (project_id, environment_id, flag_id) =
                ids(&mut c, project, flag, environment).await?;
            active_plan(&mut c, flag_id, environment_id).await?;
            let (id,): (i64,) = c
                .fetch_one(
                    "INSERT INTO release_plans
                         (project_id, environment_id, flag_id, from_variation, to_variation,
                          steps, current_step, state, pre_fallthrough, last_fallthrough,
                          description, author, author_token_id, claimed_by, lease_until,
                          version, created_at, updated_at, guardrails)
                     VALUES ($1, $2, $3, $4, $5, $6, -1, 'running', $7, $7, $8, $9, $10,
                             $11, $12, 1, $13, $13, $14)
                     RETURNING id",
                    args![
                        project_id,
                        environment_id,
                        flag_id,
                        i64::try_from(from).unwrap_or(i64::MAX),
                        i64::try_from(req.to_variation).unwrap_or(i64::MAX),
                        json!(req.steps),
                        encode(&current.fallthrough),
                        req.description.as_str(),
                        ctx.actor.name.as_str(),
                        ctx.actor.token_id,
                        me.as_str(),
                        now + LEASE,
                        now,
                        json!(req.guardrails)
                    ],
                )
                .await?;
            let view = fetch(&mut c, id).await?.view()?;
            let key = id.to_string();
            let rec = AuditRecord::new("plan.create", "release_plan", &key)
                .scoped(Some(project), Some(environment))
                .after(encode(&view));
            audit(&mut c, ctx, rec, now).await?;
            tx.commit().await?;
            id
        };
        let row = {
            let mut pc = self.db().acquire().await?;
            fetch(&mut pc.conn(), id).await?
        };
        step_to(self, ctx, &row, &me, 0, now).await
    }

    /// The plans of a flag in an environment, newest first.
    pub async fn list_release_plans(
        &self,
        (project, flag, environment): (&str, &str, &str),
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<ReleasePlan>, StoreError> {
        let limit = crate::store::page_limit(limit);
        let before = id_cursor(cursor)?;
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let (_, environment_id, flag_id) = ids(&mut c, project, flag, environment).await?;
        let rows: Vec<Row> = c
            .fetch_all(
                select!(
                    "WHERE r.flag_id = $1 AND r.environment_id = $2 AND r.id < $3
                     ORDER BY r.id DESC LIMIT $4"
                ),
                args![flag_id, environment_id, before, limit + 1],
            )
            .await?;
        let mut items = rows
            .into_iter()
            .map(Row::view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(&mut items, limit, |p| p.id.to_string()))
    }

    /// One plan of a flag in an environment.
    pub async fn get_release_plan(
        &self,
        path: (&str, &str, &str),
        id: i64,
    ) -> Result<ReleasePlan, StoreError> {
        self.plan_row(path, id).await?.view()
    }

    async fn plan_row(
        &self,
        (project, flag, environment): (&str, &str, &str),
        id: i64,
    ) -> Result<Row, StoreError> {
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let (_, environment_id, flag_id) = ids(&mut c, project, flag, environment).await?;
        c.fetch_optional(
            select!("WHERE r.id = $1 AND r.flag_id = $2 AND r.environment_id = $3"),
            args![id, flag_id, environment_id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("release plan {id}")))
    }

    /// Advances, pauses, resumes or aborts a plan. 409 if the action does not apply to its
    /// state or the plan is being changed at this moment.
    pub async fn act_on_release_plan(
        &self,
        ctx: &WriteContext,
        path: (&str, &str, &str),
        id: i64,
        action: PlanAction,
        now: OffsetDateTime,
    ) -> Result<ReleasePlan, StoreError> {
        self.plan_row(path, id).await?;
        let me = format!("request-{}", uuid::Uuid::new_v4().simple());
        if !lease(self, id, &me, now).await? {
            return Err(StoreError::Conflict {
                message: format!("release plan {id} is being changed right now: retry"),
                blockers: Vec::new(),
            });
        }
        let result = self.act_leased(ctx, id, &me, action, now).await;
        if result.is_err() {
            unlease(self, id, &me).await?;
        }
        result
    }

    async fn act_leased(
        &self,
        ctx: &WriteContext,
        id: i64,
        me: &str,
        action: PlanAction,
        now: OffsetDateTime,
    ) -> Result<ReleasePlan, StoreError> {
        let row = {
            let mut pc = self.db().acquire().await?;
            fetch(&mut pc.conn(), id).await?
        };
        let state = PlanState::parse(&row.state)?;
        let refuse = |what: &str| StoreError::Conflict {
            message: format!(
                "release plan {id} is {}: it cannot be {what}",
                state.as_str()
            ),
            blockers: Vec::new(),
        };
        let next = usize::try_from(row.current_step + 1).unwrap_or(0);
        match (action, state) {
            (PlanAction::Advance, PlanState::Running) => {
                step_to(self, ctx, &row, me, next, now).await
            }
            (PlanAction::Advance, _) => Err(refuse("advanced")),
            (PlanAction::Pause, PlanState::Running | PlanState::WaitingForApproval) => {
                // Waiting, the hold is over: resuming proposes the step again.
                let left = row
                    .next_step_at
                    .map_or(0, |t| (t - now).whole_milliseconds().max(0));
                let t = Transition {
                    remaining_ms: Some(i64::try_from(left).unwrap_or(0)),
                    ..Transition::to(PlanState::Paused, &row, "plan.pause")
                };
                transition(self, ctx, &row, me, t, now).await
            }
            (PlanAction::Pause, _) => Err(refuse("paused")),
            (PlanAction::Resume, PlanState::Paused) => {
                // Resuming after the plan paused itself (the fallthrough changed by hand)
                // takes the current fallthrough as the plan's own.
                let current = self
                    .get_config(&row.project, &row.flag, &row.environment)
                    .await?;
                let left = time::Duration::milliseconds(row.remaining_ms.unwrap_or(0));
                let t = Transition {
                    next_step_at: Some(now + left),
                    last_fallthrough: Some(encode(&current.fallthrough)),
                    ..Transition::to(PlanState::Running, &row, "plan.resume")
                };
                transition(self, ctx, &row, me, t, now).await
            }
            (PlanAction::Resume, _) => Err(refuse("resumed")),
            (
                PlanAction::Abort,
                PlanState::Running | PlanState::Paused | PlanState::WaitingForApproval,
            ) => {
                let pre: Serve =
                    crate::store::decode("plan fallthrough", row.pre_fallthrough.0.clone())?;
                let patch = ConfigPatch {
                    fallthrough: Some(pre),
                    ..ConfigPatch::default()
                };
                // Restoring the configuration from before the plan is a safety action: it
                // passes a policy that exempts the kill switch (audited as a bypass).
                let (project, flag, environment) = row.path();
                safety_action(
                    "plan.abort",
                    self.patch_config(ctx, project, flag, environment, patch, None),
                )
                .await?;
                let t = Transition::to(PlanState::Aborted, &row, "plan.abort");
                transition(self, ctx, &row, me, t, now).await
            }
            (PlanAction::Abort, _) => Err(refuse("aborted")),
        }
    }
}
