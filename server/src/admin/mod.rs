//! `vexil-server admin …`: operations that need the database rather than the API — the way
//! back in when the only admin token is lost, listing and revoking tokens and keys, running
//! migrations alone, checking a configuration, and flags as code (export and import).
//!
//! Every change goes through the same [`Store`] functions as the API, so it is validated,
//! audited (the actor is `admin-cli:<operating-system user>`) and distributed: on PostgreSQL
//! running servers hear of it at once through `NOTIFY`; on SQLite, within their resync
//! interval. A token revoked here stops authenticating on running servers within their token
//! cache lifetime (`VEXIL_TOKEN_CACHE_MS`).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::auth::{Actor, Grant, Role};
use crate::config::Config;
use crate::db::{Db, DbOptions};
use crate::portable::ProjectDocument;
use crate::store::{AccessKeyKind, Store, StoreError, WriteContext};

/// `vexil-server admin`: its options and which command.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Database URL, overriding `--database-url`/`VEXIL_DATABASE_URL` given before `admin`.
    #[arg(long = "database-url", global = true, hide_env_values = true)]
    pub database: Option<String>,

    /// The command.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The admin commands.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Creates an API token and prints its secret once (recovery when every admin token is
    /// lost: needs only database access; audited).
    CreateToken {
        /// Unique name, recorded as the actor of every change made with the token.
        #[arg(long)]
        name: String,
        /// Role.
        #[arg(long, value_enum, default_value_t = RoleArg::Admin)]
        role: RoleArg,
        /// Limits the token to a project or an environment, with a role there:
        /// `PROJECT=ROLE` or `PROJECT/ENVIRONMENT=ROLE` (repeatable).
        #[arg(long = "scope", value_parser = parse_grant)]
        scopes: Vec<Grant>,
    },
    /// Lists API tokens (never their secrets), revoked ones included.
    ListTokens {
        /// Print JSON, one token per line.
        #[arg(long)]
        json: bool,
    },
    /// Revokes an API token by id; it stops working at once.
    RevokeToken {
        /// Token id (see `list-tokens`).
        id: i64,
    },
    /// Lists SDK, client and relay keys (never their secrets).
    ListKeys {
        /// Only keys of this kind.
        #[arg(long, value_enum)]
        kind: Option<KeyKindArg>,
        /// Print JSON, one key per line.
        #[arg(long)]
        json: bool,
    },
    /// Revokes an SDK, client or relay key by kind and id.
    RevokeKey {
        /// The key's kind.
        #[arg(long, value_enum)]
        kind: KeyKindArg,
        /// Key id (see `list-keys`).
        id: i64,
    },
    /// Applies pending database migrations, then exits (for a migration step before a
    /// rolling upgrade).
    Migrate,
    /// Checks the configuration: the database answers, migrations are applied, secrets are
    /// well-formed. Exits non-zero on any problem.
    CheckConfig,
    /// The last step of restoring a backup, before the servers start: raises every
    /// environment's data version above any issued before the restore, so relays and SDKs
    /// that saw the lost versions resynchronise with a full state (audited).
    Restored,
    /// Exports a project as a JSON document (flags as code).
    Export {
        /// Project key.
        #[arg(long)]
        project: String,
        /// Write here instead of to standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Imports a project document: prints the plan, then applies it unless `--dry-run`.
    Import {
        /// The document (`-`: standard input).
        #[arg(long, short)]
        file: PathBuf,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Read only.
    Viewer,
    /// Read and write flags, segments, projects, environments.
    Editor,
    /// Everything.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Editor => Role::Editor,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// A key kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyKindArg {
    /// Server-side SDK keys (`vxs_`).
    Sdk,
    /// Client-side keys (`vxc_`).
    Client,
    /// Relay keys (`vxr_`).
    Relay,
}

impl From<KeyKindArg> for AccessKeyKind {
    fn from(k: KeyKindArg) -> Self {
        match k {
            KeyKindArg::Sdk => AccessKeyKind::Sdk,
            KeyKindArg::Client => AccessKeyKind::Client,
            KeyKindArg::Relay => AccessKeyKind::Relay,
        }
    }
}

/// Parses `PROJECT=ROLE` or `PROJECT/ENVIRONMENT=ROLE`.
pub fn parse_grant(s: &str) -> Result<Grant, String> {
    let (place, role) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected PROJECT[/ENVIRONMENT]=ROLE, got '{s}'"))?;
    let role = Role::parse(role.trim())
        .ok_or_else(|| format!("unknown role '{role}' (viewer, editor or admin)"))?;
    let (project, environment) = match place.split_once('/') {
        Some((p, e)) => (p, Some(e.to_owned())),
        None => (place, None),
    };
    if project.is_empty() || environment.as_deref() == Some("") {
        return Err(format!("expected PROJECT[/ENVIRONMENT]=ROLE, got '{s}'"));
    }
    Ok(Grant {
        project: project.to_owned(),
        environment,
        role,
    })
}

/// Who the command line acts as in the audit log.
fn cli_context() -> WriteContext {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    WriteContext {
        actor: Actor {
            name: format!("admin-cli:{user}"),
            ..Actor::system()
        },
        request_id: None,
    }
}

/// Opens the configured database (without migrating).
async fn open(config: &Config) -> anyhow::Result<Db> {
    Db::connect(&DbOptions {
        url: config.database_url.clone(),
        max_connections: 2,
    })
    .await
    .with_context(|| {
        format!(
            "cannot open the database {}",
            config.database_url_redacted()
        )
    })
}

/// Opens the database and checks its schema is this server's (commands that read or write
/// data refuse a database with pending migrations rather than half-working on it).
async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let db = open(config).await?;
    match db.ready().await {
        Ok(true) => {}
        // A database never migrated has no migration table at all.
        Ok(false) | Err(_) => bail!(
            "the database schema is not this server's (not migrated, or older): run `vexil-server admin migrate` first"
        ),
    }
    Ok(Store::new(db))
}

fn store_error(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Invalid(v) => {
            let lines: Vec<String> = v
                .errors
                .iter()
                .map(|f| format!("{}: {}", f.path, f.message))
                .collect();
            anyhow::anyhow!("invalid: {}", lines.join("; "))
        }
        e => anyhow::Error::new(e),
    }
}

/// Runs an admin command with `config` (the server's, from the same flags and variables).
/// What it prints on standard output is the command's result.
pub async fn run(mut config: Config, args: AdminArgs) -> anyhow::Result<()> {
    if let Some(url) = args.database {
        config.database_url = url;
    }
    let out = &mut std::io::stdout().lock();
    match args.command {
        AdminCommand::CreateToken { name, role, scopes } => {
            let store = open_store(&config).await?;
            let scopes = (!scopes.is_empty()).then_some(scopes);
            let created = store
                .create_scoped_token(&cli_context(), &name, role.into(), scopes)
                .await
                .map_err(store_error)?;
            tracing::info!(token = created.token.id, name = %created.token.name, "API token created from the command line");
            writeln!(
                out,
                "Created API token {} '{}' ({}). Its secret, shown once:",
                created.token.id,
                created.token.name,
                created.token.role.as_str()
            )?;
            writeln!(out, "{}", created.secret)?;
        }
        AdminCommand::ListTokens { json } => {
            let store = open_store(&config).await?;
            let mut cursor: Option<String> = None;
            loop {
                let page = store
                    .list_tokens(cursor.as_deref(), Some(500))
                    .await
                    .map_err(store_error)?;
                for t in &page.items {
                    if json {
                        writeln!(out, "{}", serde_json::to_string(t)?)?;
                    } else {
                        let scope = t
                            .scopes
                            .as_ref()
                            .map(|g| format!(" scopes={}", serde_json::json!(g)))
                            .unwrap_or_default();
                        let state = if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "live"
                        };
                        writeln!(
                            out,
                            "{}\t{}\t{}\t{}\t{}{}",
                            t.id,
                            t.name,
                            t.role.as_str(),
                            t.hint,
                            state,
                            scope
                        )?;
                    }
                }
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
        }
        AdminCommand::RevokeToken { id } => {
            let store = open_store(&config).await?;
            let t = store
                .revoke_token(&cli_context(), id)
                .await
                .map_err(store_error)?;
            writeln!(out, "Revoked API token {} '{}'", t.id, t.name)?;
        }
        AdminCommand::ListKeys { kind, json } => {
            let store = open_store(&config).await?;
            let kinds: Vec<AccessKeyKind> = match kind {
                Some(k) => vec![k.into()],
                None => vec![
                    AccessKeyKind::Sdk,
                    AccessKeyKind::Client,
                    AccessKeyKind::Relay,
                ],
            };
            for kind in kinds {
                let mut cursor: Option<String> = None;
                loop {
                    let page = store
                        .list_access_keys(kind, None, cursor.as_deref(), Some(500))
                        .await
                        .map_err(store_error)?;
                    for k in &page.items {
                        if json {
                            writeln!(out, "{}", serde_json::to_string(k)?)?;
                        } else {
                            let envs: Vec<String> = k
                                .environments
                                .iter()
                                .map(|e| format!("{}/{}", e.project, e.environment))
                                .collect();
                            let state = if k.revoked_at.is_some() {
                                "revoked"
                            } else {
                                "live"
                            };
                            writeln!(
                                out,
                                "{}\t{}\t{}\t{}\t{}\t{}",
                                k.id,
                                serde_json::to_value(k.kind)?.as_str().unwrap_or_default(),
                                k.name,
                                k.hint,
                                state,
                                envs.join(",")
                            )?;
                        }
                    }
                    cursor = page.next_cursor;
                    if cursor.is_none() {
                        break;
                    }
                }
            }
        }
        AdminCommand::RevokeKey { kind, id } => {
            let store = open_store(&config).await?;
            let k = store
                .revoke_access_key(&cli_context(), kind.into(), id)
                .await
                .map_err(store_error)?;
            writeln!(out, "Revoked key {} '{}'", k.id, k.name)?;
        }
        AdminCommand::Migrate => {
            let db = open(&config).await?;
            let was_ready = db.ready().await.unwrap_or(false);
            db.migrate().await.context("migration failed")?;
            db.close().await;
            writeln!(
                out,
                "{}",
                if was_ready {
                    "The database schema was already current."
                } else {
                    "Migrations applied: the database schema is current."
                }
            )?;
        }
        AdminCommand::CheckConfig => {
            let problems = check_config(&config, out).await?;
            if problems > 0 {
                bail!("{problems} problem(s) found");
            }
        }
        AdminCommand::Restored => {
            let store = open_store(&config).await?;
            let fenced = store
                .fence_restored_versions(&cli_context())
                .await
                .map_err(store_error)?;
            writeln!(
                out,
                "Restore fenced: {} environment version(s) raised by {} (highest {} -> {}); \
                 relays and SDKs resynchronise when the servers start.",
                fenced.environments,
                crate::store::RESTORE_FENCE,
                fenced.highest.0,
                fenced.highest.1
            )?;
        }
        AdminCommand::Export { project, output } => {
            let store = open_store(&config).await?;
            let doc = store.export_project(&project).await.map_err(store_error)?;
            let text = doc.to_pretty_json();
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => out.write_all(text.as_bytes())?,
            }
        }
        AdminCommand::Import { file, dry_run } => {
            let bytes = if file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                b
            } else {
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let doc: ProjectDocument = crate::extract::parse_strict(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let store = open_store(&config).await?;
            let report = store
                .import_project(&cli_context(), &doc, dry_run)
                .await
                .map_err(store_error)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
    }
    Ok(())
}

/// Prints one line per check; returns how many failed.
async fn check_config(config: &Config, out: &mut impl std::io::Write) -> anyhow::Result<u32> {
    let mut problems = 0;
    let mut report = |ok: bool, what: String| -> std::io::Result<()> {
        if !ok {
            problems += 1;
        }
        writeln!(out, "{} {what}", if ok { "ok     " } else { "PROBLEM" })
    };
    report(true, format!("listen address {}", config.listen))?;
    if let Some(t) = &config.bootstrap_token {
        let ok = t.starts_with(crate::auth::API_TOKEN_PREFIX)
            && t.len() >= crate::auth::API_TOKEN_PREFIX.len() + 32;
        report(
            ok,
            "bootstrap token: must start with 'vxa_' and carry at least 32 more characters"
                .to_owned(),
        )?;
    }
    let database = config.database_url_redacted();
    match open(config).await {
        Err(e) => report(false, format!("database {database}: {e:#}"))?,
        Ok(db) => {
            report(true, format!("database {database} answers"))?;
            match db.ready().await {
                Ok(true) => report(true, "database schema is current".to_owned())?,
                Ok(false) => report(
                    false,
                    "database migrations are pending: run `vexil-server admin migrate` (the server also migrates on start)".to_owned(),
                )?,
                Err(e) => report(
                    false,
                    format!("database migrations are pending (no migration state: {e}): run `vexil-server admin migrate`"),
                )?,
            }
            db.close().await;
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_from_the_command_line() {
        assert_eq!(
            parse_grant("web/staging=editor").unwrap(),
            Grant {
                project: "web".into(),
                environment: Some("staging".into()),
                role: Role::Editor
            }
        );
        assert_eq!(parse_grant("web=viewer").unwrap().environment, None);
        assert!(parse_grant("web").is_err());
        assert!(parse_grant("web/=viewer").is_err());
        assert!(parse_grant("=viewer").is_err());
        assert!(parse_grant("web=root").is_err());
    }
}
