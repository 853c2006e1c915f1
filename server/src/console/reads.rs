//! Reads only the console needs: the flags list with each environment's on/off state and an
//! on/off filter, in one query whose cost does not grow with the number of flags.

use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use vexil_schema::FlagDefinition;

use crate::db::{Arg, Conn, args};
use crate::store::{Page, Store, StoreError, environment_row, paginate, project_row};

/// Filters of the console's flags list.
#[derive(Debug, Clone, Default)]
pub struct FlagListFilter {
    /// Case-insensitive substring of the key or name.
    pub q: Option<String>,
    /// Only flags with this tag.
    pub tag: Option<String>,
    /// Archived (`true`), live (`false`) or both.
    pub archived: Option<bool>,
    /// Temporary (`true`), permanent (`false`) or both.
    pub temporary: Option<bool>,
    /// Only flags on (`true`) or off (`false`) in [`Self::environment`].
    pub on: Option<bool>,
    /// The environment the on/off filter looks at.
    pub environment: Option<String>,
    /// The key to start after.
    pub cursor: Option<String>,
    /// Page size (default 50, at most 100).
    pub limit: Option<u32>,
}

/// A flag in the console's list.
#[derive(Debug, Clone)]
pub struct FlagListItem {
    /// Key.
    pub key: String,
    /// Name.
    pub name: String,
    /// Kind of value.
    pub kind: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Temporary (release) flag.
    pub temporary: bool,
    /// Archived.
    pub archived: bool,
    /// When the definition last changed.
    pub updated_at: OffsetDateTime,
    /// On/off per environment key, in key order.
    pub states: Vec<(String, bool)>,
}

#[derive(sqlx::FromRow)]
struct Row {
    definition: Json<Value>,
    archived: bool,
    updated_at: OffsetDateTime,
    states: Option<String>,
}

/// Parses `env=true,env2=0,…` (PostgreSQL writes booleans as `true`, SQLite as `1`).
fn parse_states(s: &str) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = s
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v == "true" || v == "1"))
        .collect();
    out.sort();
    out
}

macro_rules! list_sql {
    ($temporary:literal, $agg:literal) => {
        concat!(
            "SELECT f.definition, f.archived, f.updated_at, (SELECT ",
            $agg,
            " FROM flag_configs c JOIN environments e ON e.id = c.environment_id
                 WHERE c.flag_id = f.id) AS states
             FROM flags f
             WHERE f.project_id = $1 AND f.key > $2
               AND ($3 IS NULL OR EXISTS (SELECT 1 FROM flag_tags t WHERE t.flag_id = f.id AND t.tag = $3))
               AND ($4 IS NULL OR LOWER(f.key) LIKE $4 ESCAPE '\\' OR LOWER(f.name) LIKE $4 ESCAPE '\\')
               AND ($5 IS NULL OR f.archived = $5)
               AND ($6 IS NULL OR ",
            $temporary,
            " = $6)
               AND ($7 IS NULL OR EXISTS (SELECT 1 FROM flag_configs c WHERE c.flag_id = f.id
                     AND c.environment_id = $7 AND ",
            "COALESCE(CAST(c.config->>'on' AS BOOLEAN), FALSE)",
            " = $8))
             ORDER BY f.key LIMIT $9"
        )
    };
}

/// The page of flags `filter` selects, with their on/off state in every environment.
pub async fn list_flags(
    store: &Store,
    project: &str,
    filter: &FlagListFilter,
) -> Result<Page<FlagListItem>, StoreError> {
    let limit = crate::store::page_limit(filter.limit);
    let pattern = filter.q.as_deref().filter(|q| !q.is_empty()).map(|q| {
        let escaped = q
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let mut pc = store.db().acquire().await?;
    let mut c = pc.conn();
    let p = project_row(&mut c, project).await?;
    let env_id = match (&filter.environment, filter.on) {
        (Some(e), Some(_)) => Some(environment_row(&mut c, p.id, e).await?.id),
        _ => None,
    };
    let sql = match &c {
        Conn::Pg(_) => list_sql!(
            "COALESCE((f.definition->>'temporary')::boolean, FALSE)",
            "string_agg(e.key || '=' || COALESCE(c.config->>'on', 'false'), ',')"
        ),
        Conn::Lite(_) => lite_sql(),
    };
    let rows: Vec<Row> = c
        .fetch_all(
            sql,
            args![
                p.id,
                filter.cursor.as_deref().unwrap_or(""),
                filter.tag.clone().filter(|t| !t.is_empty()),
                pattern,
                Arg::OptBool(filter.archived),
                Arg::OptBool(filter.temporary),
                env_id,
                Arg::OptBool(filter.on.map(|on| on && env_id.is_some())),
                limit + 1
            ],
        )
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let def: FlagDefinition = crate::store::decode("flag definition", r.definition.0)?;
        items.push(FlagListItem {
            key: def.key.to_string(),
            name: def.name,
            kind: def.kind.as_str().to_owned(),
            tags: def.tags,
            temporary: def.temporary,
            archived: r.archived,
            updated_at: r.updated_at,
            states: r.states.as_deref().map(parse_states).unwrap_or_default(),
        });
    }
    Ok(paginate(&mut items, limit, |f| f.key.clone()))
}

/// SQLite's form of the list query: `json_extract` instead of `->>`, `group_concat`
/// instead of `string_agg`.
fn lite_sql() -> &'static str {
    "SELECT f.definition, f.archived, f.updated_at, (SELECT group_concat(e.key || '=' || COALESCE(json_extract(c.config, '$.on'), 0), ',')
             FROM flag_configs c JOIN environments e ON e.id = c.environment_id
             WHERE c.flag_id = f.id) AS states
         FROM flags f
         WHERE f.project_id = $1 AND f.key > $2
           AND ($3 IS NULL OR EXISTS (SELECT 1 FROM flag_tags t WHERE t.flag_id = f.id AND t.tag = $3))
           AND ($4 IS NULL OR LOWER(f.key) LIKE $4 ESCAPE '\\' OR LOWER(f.name) LIKE $4 ESCAPE '\\')
           AND ($5 IS NULL OR f.archived = $5)
           AND ($6 IS NULL OR COALESCE(json_extract(f.definition, '$.temporary'), 0) = $6)
           AND ($7 IS NULL OR EXISTS (SELECT 1 FROM flag_configs c WHERE c.flag_id = f.id
                 AND c.environment_id = $7 AND COALESCE(json_extract(c.config, '$.on'), 0) = $8))
         ORDER BY f.key LIMIT $9"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_from_both_engines() {
        assert_eq!(
            parse_states("prod=true,dev=false"),
            vec![("dev".to_owned(), false), ("prod".to_owned(), true)]
        );
        assert_eq!(
            parse_states("prod=1,dev=0"),
            vec![("dev".to_owned(), false), ("prod".to_owned(), true)]
        );
        assert!(parse_states("").is_empty());
    }
}
