//! What scheduled changes, release plans and change requests share: the ids of a flag path,
//! the actor of work done later on behalf of its author, the configuration a patch is
//! written against, and the cursor of their lists.

use vexil_schema::FlagConfig;

use crate::auth::{Actor, Role, Scope};
use crate::db::{Conn, args};
use crate::store::{Store, StoreError, WriteContext, environment_row, project_row};

/// The ids of a flag path: `(project, environment, flag)`.
pub(crate) async fn ids(
    c: &mut Conn<'_>,
    project: &str,
    flag: &str,
    environment: &str,
) -> Result<(i64, i64, i64), StoreError> {
    let p = project_row(c, project).await?;
    let e = environment_row(c, p.id, environment).await?;
    let f: Option<(i64,)> = c
        .fetch_optional(
            "SELECT id FROM flags WHERE project_id = $1 AND key = $2",
            args![p.id, flag],
        )
        .await?;
    let (f,) = f.ok_or_else(|| StoreError::NotFound(format!("flag '{flag}'")))?;
    Ok((p.id, e.id, f))
}

/// The actor of work that writes later on behalf of its author (`schedule 7`, `release plan
/// 3`): named `{what} (on behalf of {author})`, with the author's token id, so the audit log
/// links the change to a person and the author cannot approve the work's change requests.
pub(crate) fn on_behalf(what: String, author: &str, token_id: Option<i64>) -> WriteContext {
    WriteContext {
        actor: Actor {
            token_id,
            name: format!("{what} (on behalf of {author})"),
            role: Role::Editor,
            // Checked against the author's scope when the work was created.
            scope: Scope::unrestricted(),
        },
        request_id: None,
    }
}

/// The cursor of a list by id, newest first: the id to list below.
pub(crate) fn id_cursor(cursor: Option<&str>) -> Result<i64, StoreError> {
    match cursor {
        None => Ok(i64::MAX),
        Some(c) => c
            .parse::<i64>()
            .map_err(|_| StoreError::invalid("cursor", "cursor", "not a cursor from this API")),
    }
}

impl Store {
    /// The configuration a patch is written against: version `base_version` of the flag path,
    /// or the current one when none is given.
    pub(crate) async fn base_config(
        &self,
        (project, flag, environment): (&str, &str, &str),
        base_version: Option<u64>,
    ) -> Result<FlagConfig, StoreError> {
        let current = self.get_config(project, flag, environment).await?;
        Ok(match base_version {
            Some(v) if v != current.version => {
                self.get_version(project, flag, environment, v)
                    .await?
                    .config
            }
            _ => current,
        })
    }
}
