//! Per-environment flag configuration: reading and writing it (put, patch, rollback),
//! the kill switch across environments, and the version history.

use vexil_schema::FlagKey;
use vexil_schema::delta::{TargetDelta, TargetsDelta};

use super::*;

#[derive(sqlx::FromRow)]
struct VersionRow {
    version: i64,
    environment_version: i64,
    actor: String,
    action: String,
    created_at: OffsetDateTime,
    config: Json<Value>,
}

/// Where a configuration write goes.
struct ConfigTarget<'a> {
    project: &'a str,
    flag_key: &'a str,
    flag_id: i64,
    environment: &'a str,
    environment_id: i64,
    /// For an edit of individual targets: the requested edit, so that the change log and
    /// the audit record the keys added and removed (a `delta`) instead of the whole flag.
    targets_delta: Option<&'a TargetsDelta>,
}

#[derive(sqlx::FromRow)]
struct LockedConfigRow {
    definition: Json<Value>,
    archived: bool,
    config: Json<Value>,
    config_version: i64,
}

/// Takes the environment's write lock, then reads the flag and its configuration.
///
/// Two statements on purpose: under READ COMMITTED a statement that waited for a row lock
/// re-checks only the locked row and keeps its snapshot of every other table, so a joined
/// read of the configuration would return the version a concurrent writer (in another
/// process) has just replaced, and this write would reuse its version number. A statement
/// started after the lock is granted sees every commit made before it.
async fn lock_config(
    c: &mut Conn<'_>,
    environment_id: i64,
    flag_id: i64,
) -> Result<(i64, Option<LockedConfigRow>), StoreError> {
    let environment_version = c.lock_environment(environment_id).await?;
    let row = c
        .fetch_optional(
            "SELECT f.definition, f.archived, c.config, c.version AS config_version
             FROM flag_configs c JOIN flags f ON f.id = c.flag_id
             WHERE c.environment_id = $1 AND c.flag_id = $2",
            args![environment_id, flag_id],
        )
        .await?;
    Ok((environment_version, row))
}

/// The outcome of a configuration write, for the caller to cache after commit.
struct Written {
    config: FlagConfig,
    environment_version: i64,
    /// The validation index after the write; `None` when the write changed nothing.
    index: Option<EnvironmentIndex>,
}

impl Store {
    /// A flag's configuration in one environment.
    pub async fn get_config(
        &self,
        project: &str,
        key: &str,
        environment: &str,
    ) -> Result<FlagConfig, StoreError> {
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let (e, f) = config_rows(&mut c, project, key, environment).await?;
        Ok(config_row(&mut c, f.id, e.id).await?.0)
    }

    /// Replaces a flag's configuration in one environment. An empty `salt` keeps the current
    /// one; `version` is assigned by the server.
    pub async fn put_config(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
        environment: &str,
        config: FlagConfig,
        if_match: Option<u64>,
    ) -> Result<FlagConfigView, StoreError> {
        self.change_config(
            ctx,
            (project, key, environment),
            if_match,
            "flag.config.update",
            |_| Ok(config),
        )
        .await
    }

    /// Changes the fields of a flag's configuration that `patch` names.
    pub async fn patch_config(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
        environment: &str,
        patch: ConfigPatch,
        if_match: Option<u64>,
    ) -> Result<FlagConfigView, StoreError> {
        self.change_config(
            ctx,
            (project, key, environment),
            if_match,
            "flag.config.update",
            |mut cfg| {
                if let Some(on) = patch.on {
                    cfg.on = on;
                }
                if let Some(v) = patch.off_variation {
                    cfg.off_variation = v;
                }
                if let Some(v) = patch.targets {
                    cfg.targets = v;
                }
                if let Some(v) = patch.rules {
                    cfg.rules = v;
                }
                if let Some(v) = patch.fallthrough {
                    cfg.fallthrough = v;
                }
                if let Some(v) = patch.prerequisites {
                    cfg.prerequisites = v;
                }
                Ok(cfg)
            },
        )
        .await
    }

    /// Makes an earlier version of a flag's configuration current again, as a new version.
    pub async fn rollback_config(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
        environment: &str,
        to_version: u64,
        if_match: Option<u64>,
    ) -> Result<FlagConfigView, StoreError> {
        let old = self
            .get_version(project, key, environment, to_version)
            .await?;
        self.change_config(
            ctx,
            (project, key, environment),
            if_match,
            "flag.rollback",
            move |_| Ok(old.config),
        )
        .await
    }

    /// Adds and removes individually targeted keys of a flag in one environment, per
    /// variation, by the canonical list rules ([`vexil_schema::delta`]): a variation without
    /// a target gets one appended, a target left empty is dropped. Idempotent (an edit that
    /// changes nothing makes no version); honours `If-Match` with the configuration version.
    /// The change log and the audit log record the keys actually added and removed, and
    /// subscribers receive them as a `delta` event.
    pub async fn edit_flag_targets(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
        environment: &str,
        targets: Vec<TargetDelta>,
        if_match: Option<u64>,
    ) -> Result<FlagConfigView, StoreError> {
        for (i, t) in targets.iter().enumerate() {
            super::super::segments::check_list_edit(&format!("targets[{i}]"), &t.keys)?;
        }
        let edit = TargetsDelta {
            key: FlagKey::parse(key).map_err(|_| StoreError::NotFound(format!("flag '{key}'")))?,
            version: 0,
            targets,
        };
        self.change_config_as(
            ctx,
            (project, key, environment),
            if_match,
            "flag.targets.update",
            Some(&edit),
            |cfg| {
                let mut flag = Flag {
                    key: edit.key.clone(),
                    kind: vexil_schema::FlagKind::Boolean,
                    variations: Vec::new(),
                    // A scratch flag: only its configuration is kept.
                    client_side: false,
                    config: cfg,
                };
                let version = flag.config.version;
                edit.apply(&mut flag);
                flag.config.version = version;
                Ok(flag.config)
            },
        )
        .await
    }

    async fn change_config(
        &self,
        ctx: &WriteContext,
        target: (&str, &str, &str),
        if_match: Option<u64>,
        action: &str,
        make: impl FnOnce(FlagConfig) -> Result<FlagConfig, StoreError>,
    ) -> Result<FlagConfigView, StoreError> {
        self.change_config_as(ctx, target, if_match, action, None, make)
            .await
    }

    async fn change_config_as(
        &self,
        ctx: &WriteContext,
        (project, key, environment): (&str, &str, &str),
        if_match: Option<u64>,
        action: &str,
        targets_delta: Option<&TargetsDelta>,
        make: impl FnOnce(FlagConfig) -> Result<FlagConfig, StoreError>,
    ) -> Result<FlagConfigView, StoreError> {
        let (flag_id, env_id) = self.resolve_config(project, key, environment).await?;
        let _local = self.local_locks(vec![env_id]).await;
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let at = ConfigTarget {
            project,
            flag_key: key,
            flag_id,
            environment,
            environment_id: env_id,
            targets_delta,
        };
        let written = self
            .write_config(&mut c, ctx, &at, if_match, action, make)
            .await?;
        match written.index {
            Some(index) => {
                tx.commit().await?;
                self.put_index(env_id, written.environment_version, index);
            }
            // Nothing changed: nothing to commit, version, notify or audit.
            None => drop(tx),
        }
        Ok(FlagConfigView {
            config: written.config,
            environment_version: written.environment_version,
        })
    }

    /// Writes one configuration under the environment lock: precondition, validation, row,
    /// version bump, change log, history, audit. The environment lock is held from the first
    /// statement to the commit, so this is the section every writer of the environment
    /// queues for. A configuration equal to the current one is no write at all: the current
    /// one is returned and nothing is versioned, logged, notified or audited.
    async fn write_config(
        &self,
        c: &mut Conn<'_>,
        ctx: &WriteContext,
        at: &ConfigTarget<'_>,
        if_match: Option<u64>,
        action: &str,
        make: impl FnOnce(FlagConfig) -> Result<FlagConfig, StoreError>,
    ) -> Result<Written, StoreError> {
        let (from, locked) = lock_config(c, at.environment_id, at.flag_id).await?;
        let locked =
            locked.ok_or_else(|| StoreError::NotFound(format!("flag '{}'", at.flag_key)))?;
        let definition: FlagDefinition = decode("flag definition", locked.definition.0)?;
        if locked.archived {
            return Err(StoreError::Conflict {
                message: format!(
                    "flag '{}' is archived: unarchive it before changing its configuration",
                    at.flag_key
                ),
                blockers: Vec::new(),
            });
        }
        let mut current: FlagConfig = decode("flag configuration", locked.config.0)?;
        current.version = to_u64(locked.config_version);
        check_if_match(if_match, locked.config_version)?;
        let mut cfg = make(current.clone())?;
        cfg.version = current.version;
        if cfg.salt.is_empty() {
            cfg.salt = current.salt.clone();
        }
        if cfg == current {
            return Ok(Written {
                config: current,
                environment_version: from,
                index: None,
            });
        }
        // An environment under an approval policy takes changes only from change requests.
        let path = (at.project, at.flag_key, at.environment);
        let now = now();
        crate::delivery::approvals::check_config_write(c, ctx, at.environment_id, path, now)
            .await?;
        cfg.version = current.version + 1;
        let mut ix = self.take_index(c, at.environment_id, from).await?;
        let cfg = validate_config(&definition, cfg, &ix)?.into_inner();
        c.execute(
            "UPDATE flag_configs SET config = $3, version = $4, updated_at = $5
             WHERE flag_id = $1 AND environment_id = $2",
            args![
                at.flag_id,
                at.environment_id,
                encode(&cfg),
                i64::try_from(cfg.version).unwrap_or(i64::MAX),
                now
            ],
        )
        .await?;
        // An edit of targets is logged as the effective delta: what the request changes
        // when applied to the current configuration by the canonical rules (the same
        // function that produced `cfg`).
        let delta = at.targets_delta.map(|edit| {
            let mut flag = Flag::new(&definition, current.clone());
            let mut edit = edit.clone();
            edit.version = cfg.version;
            encode(&edit.apply(&mut flag))
        });
        let change = match &delta {
            Some(d) => (
                Op::Delta,
                Entity::Flag,
                at.flag_key.to_owned(),
                Some(d.clone()),
            ),
            None => (
                Op::Put,
                Entity::Flag,
                at.flag_key.to_owned(),
                Some(encode(&Flag::new(&definition, cfg.clone()))),
            ),
        };
        let environment_version = record_changes(c, at.environment_id, vec![change], now).await?;
        // A running experiment on this flag starts a new iteration if its allocation changed.
        crate::experiments::on_flag_config_written(
            c,
            at.flag_id,
            at.environment_id,
            &definition,
            &cfg,
            now,
        )
        .await?;
        let rec = HistoryRecord {
            flag_id: at.flag_id,
            environment_id: at.environment_id,
            config: &cfg,
            environment_version,
            action,
        };
        history(c, ctx, rec, now).await?;
        let rec = AuditRecord::new(action, "flag", at.flag_key)
            .scoped(Some(at.project), Some(at.environment));
        let rec = match delta {
            Some(d) => rec.after(d),
            None => rec.before(encode(&current)).after(encode(&cfg)),
        };
        audit(c, ctx, rec, now).await?;
        ix.insert_flag_config(&definition, &cfg);
        Ok(Written {
            config: cfg,
            environment_version,
            index: Some(ix),
        })
    }

    /// Turns a flag off in every environment of its project, in one transaction.
    pub async fn kill_flag(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
    ) -> Result<KillResult, StoreError> {
        let (_local, mut tx) = self.begin_flag_write(project, key).await?;
        let mut c = tx.conn();
        // The flag's lock first (the order definition writes take), so that its definition
        // and archived state are read as committed, not as before a concurrent change.
        let (p, _) = locked_flag(&mut c, project, key).await?;
        let f = flag_row(&mut c, p.id, key).await?;
        let def: FlagDefinition = decode("flag definition", f.definition.0.clone())?;
        let envs = environment_rows(&mut c, p.id).await?;
        let mut result = KillResult {
            turned_off: Vec::new(),
            already_off: Vec::new(),
        };
        let mut advanced = Vec::new();
        let t = now();
        for e in &envs {
            let from = c.lock_environment(e.id).await?;
            let (current, current_version) = config_row(&mut c, f.id, e.id).await?;
            if !current.on {
                result.already_off.push(e.key.clone());
                continue;
            }
            // Exempt from approval policies unless one says otherwise (audited as a bypass).
            let path = (project, key, e.key.as_str());
            crate::delivery::approvals::check_kill(&mut c, ctx, e.id, path, t).await?;
            let mut cfg = current.clone();
            cfg.on = false;
            cfg.version = to_u64(current_version) + 1;
            c.execute(
                "UPDATE flag_configs SET config = $3, version = $4, updated_at = $5
                 WHERE flag_id = $1 AND environment_id = $2",
                args![f.id, e.id, encode(&cfg), current_version + 1, t],
            )
            .await?;
            let changes = if f.archived {
                Vec::new()
            } else {
                let flag = Flag::new(&def, cfg.clone());
                vec![(Op::Put, Entity::Flag, key.to_owned(), Some(encode(&flag)))]
            };
            let to = record_changes(&mut c, e.id, changes, t).await?;
            let rec = HistoryRecord {
                flag_id: f.id,
                environment_id: e.id,
                config: &cfg,
                environment_version: to,
                action: "flag.kill",
            };
            history(&mut c, ctx, rec, t).await?;
            let rec = AuditRecord::new("flag.kill", "flag", key)
                .scoped(Some(project), Some(&e.key))
                .before(encode(&current))
                .after(encode(&cfg));
            audit(&mut c, ctx, rec, t).await?;
            result.turned_off.push(KilledEnvironment {
                environment: e.key.clone(),
                version: cfg.version,
                environment_version: to,
            });
            advanced.push((e.id, from, to));
        }
        tx.commit().await?;
        for (env_id, from, to) in advanced {
            // Turning a flag off changes nothing validation looks at.
            self.advance_index(env_id, from, to, |_| {});
        }
        Ok(result)
    }

    /// The versions of a flag's configuration in an environment, newest first.
    pub async fn list_versions(
        &self,
        project: &str,
        key: &str,
        environment: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<FlagVersion>, StoreError> {
        let limit = page_limit(limit);
        let before = match cursor {
            Some(c) => c.parse::<i64>().map_err(|_| {
                StoreError::invalid("cursor", "cursor", "not a cursor from this API")
            })?,
            None => i64::MAX,
        };
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let (e, f) = config_rows(&mut c, project, key, environment).await?;
        let rows: Vec<VersionRow> = c
            .fetch_all(
                "SELECT version, environment_version, actor, action, created_at, config
                 FROM flag_config_versions
                 WHERE flag_id = $1 AND environment_id = $2 AND version < $3
                 ORDER BY version DESC LIMIT $4",
                args![f.id, e.id, before, limit + 1],
            )
            .await?;
        let mut items = rows
            .into_iter()
            .map(version_of)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(&mut items, limit, |v| v.version.to_string()))
    }

    /// One version of a flag's configuration in an environment.
    pub async fn get_version(
        &self,
        project: &str,
        key: &str,
        environment: &str,
        version: u64,
    ) -> Result<FlagVersion, StoreError> {
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let (e, f) = config_rows(&mut c, project, key, environment).await?;
        let row: VersionRow = c
            .fetch_optional(
                "SELECT version, environment_version, actor, action, created_at, config
                 FROM flag_config_versions
                 WHERE flag_id = $1 AND environment_id = $2 AND version = $3",
                args![f.id, e.id, i64::try_from(version).unwrap_or(i64::MAX)],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("version {version} of flag '{key}'")))?;
        version_of(row)
    }
}

fn version_of(r: VersionRow) -> Result<FlagVersion, StoreError> {
    let mut config: FlagConfig = decode("flag configuration", r.config.0)?;
    config.version = to_u64(r.version);
    Ok(FlagVersion {
        version: r.version,
        environment_version: r.environment_version,
        actor: r.actor,
        action: r.action,
        created_at: r.created_at,
        config,
    })
}

impl Store {
    /// Sets a flag's fallthrough in one environment through the one configuration write
    /// (validation, version, change log, history, audit, distribution), then runs `then` in
    /// the same transaction before it commits: a caller's own record of the change (a release
    /// plan rolled back by its guardrail) commits with the configuration or not at all.
    /// `then` runs, and commits, even when the fallthrough is already the one asked for.
    pub(crate) async fn write_fallthrough_then<T, F>(
        &self,
        ctx: &WriteContext,
        (project, key, environment): (&str, &str, &str),
        fallthrough: Serve,
        then: F,
    ) -> Result<(FlagConfigView, T), StoreError>
    where
        F: for<'a, 'b> FnOnce(
                &'a mut Conn<'b>,
            ) -> futures::future::BoxFuture<'a, Result<T, StoreError>>
            + Send,
    {
        let (flag_id, env_id) = self.resolve_config(project, key, environment).await?;
        let _local = self.local_locks(vec![env_id]).await;
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let at = ConfigTarget {
            project,
            flag_key: key,
            flag_id,
            environment,
            environment_id: env_id,
            targets_delta: None,
        };
        let written = self
            .write_config(&mut c, ctx, &at, None, "flag.config.update", |mut cfg| {
                cfg.fallthrough = fallthrough;
                Ok(cfg)
            })
            .await?;
        let out = then(&mut c).await?;
        tx.commit().await?;
        if let Some(index) = written.index {
            self.put_index(env_id, written.environment_version, index);
        }
        Ok((
            FlagConfigView {
                config: written.config,
                environment_version: written.environment_version,
            },
            out,
        ))
    }
}
