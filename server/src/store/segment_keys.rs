//! A segment's key lists, stored one key per row (`segment_keys`, migration 0013): an edit of
//! a few keys reads and writes a few rows (by the primary key `(segment_id, list, key)`), and a
//! list is read in order through the covering index on `(segment_id, list, pos)`.
//!
//! `pos` keeps the canonical list order of [`vexil_schema::delta`]: removing keys leaves the
//! others' positions alone, added keys take positions after the largest one.

use std::collections::{HashMap, HashSet};

use vexil_schema::KeyList;
use vexil_schema::delta::ListDelta;
use vexil_schema::limits::MAX_SEGMENT_KEYS;

use super::StoreError;
use crate::db::{Conn, args};

/// `list` of the `included` keys.
pub(super) const INCLUDED: i64 = 0;
/// `list` of the `excluded` keys.
pub(super) const EXCLUDED: i64 = 1;

/// A segment row with both lists aggregated in order (as JSON arrays): one segment by
/// `(environment_id, key)`.
pub(super) fn row_by_key_sql(c: &Conn<'_>) -> &'static str {
    match c {
        Conn::Pg(_) => {
            "SELECT s.id, s.body, s.version, s.included_count, s.excluded_count,
                    s.created_at, s.updated_at,
                    COALESCE((SELECT json_agg(k.key ORDER BY k.pos) FROM segment_keys k
                              WHERE k.segment_id = s.id AND k.list = 0), '[]') AS included,
                    COALESCE((SELECT json_agg(k.key ORDER BY k.pos) FROM segment_keys k
                              WHERE k.segment_id = s.id AND k.list = 1), '[]') AS excluded
             FROM segments s WHERE s.environment_id = $1 AND s.key = $2"
        }
        Conn::Lite(_) => {
            "SELECT s.id, s.body, s.version, s.included_count, s.excluded_count,
                    s.created_at, s.updated_at,
                    (SELECT json_group_array(k.key ORDER BY k.pos) FROM segment_keys k
                     WHERE k.segment_id = s.id AND k.list = 0) AS included,
                    (SELECT json_group_array(k.key ORDER BY k.pos) FROM segment_keys k
                     WHERE k.segment_id = s.id AND k.list = 1) AS excluded
             FROM segments s WHERE s.environment_id = $1 AND s.key = $2"
        }
    }
}

/// Every segment row of an environment (`$1`) with both lists, by key.
pub(super) fn rows_of_environment_sql(c: &Conn<'_>) -> &'static str {
    match c {
        Conn::Pg(_) => {
            "SELECT s.id, s.body, s.version, s.included_count, s.excluded_count,
                    s.created_at, s.updated_at,
                    COALESCE((SELECT json_agg(k.key ORDER BY k.pos) FROM segment_keys k
                              WHERE k.segment_id = s.id AND k.list = 0), '[]') AS included,
                    COALESCE((SELECT json_agg(k.key ORDER BY k.pos) FROM segment_keys k
                              WHERE k.segment_id = s.id AND k.list = 1), '[]') AS excluded
             FROM segments s WHERE s.environment_id = $1 ORDER BY s.key"
        }
        Conn::Lite(_) => {
            "SELECT s.id, s.body, s.version, s.included_count, s.excluded_count,
                    s.created_at, s.updated_at,
                    (SELECT json_group_array(k.key ORDER BY k.pos) FROM segment_keys k
                     WHERE k.segment_id = s.id AND k.list = 0) AS included,
                    (SELECT json_group_array(k.key ORDER BY k.pos) FROM segment_keys k
                     WHERE k.segment_id = s.id AND k.list = 1) AS excluded
             FROM segments s WHERE s.environment_id = $1 ORDER BY s.key"
        }
    }
}

/// Writes `keys` as list `list` of segment `segment_id` (which holds no key in that list),
/// in order: one statement, however long the list.
pub(super) async fn insert_list(
    c: &mut Conn<'_>,
    segment_id: i64,
    list: i64,
    keys: &KeyList,
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    insert_json(c, segment_id, list, 0, serde_json::json!(keys)).await
}

/// Inserts `keys` at positions `after + 1`, `after + 2`, ….
async fn insert_after(
    c: &mut Conn<'_>,
    segment_id: i64,
    list: i64,
    after: i64,
    keys: &[String],
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    insert_json(c, segment_id, list, after, serde_json::json!(keys)).await
}

/// Inserts the keys of the JSON array `keys` at positions `after + 1`, `after + 2`, ….
async fn insert_json(
    c: &mut Conn<'_>,
    segment_id: i64,
    list: i64,
    after: i64,
    keys: serde_json::Value,
) -> Result<(), StoreError> {
    let sql = match c {
        Conn::Pg(_) => {
            "INSERT INTO segment_keys (segment_id, list, pos, key)
             SELECT $1, $2, $3 + e.ord, e.k
             FROM jsonb_array_elements_text($4) WITH ORDINALITY AS e (k, ord)"
        }
        Conn::Lite(_) => {
            "INSERT INTO segment_keys (segment_id, list, pos, key)
             SELECT $1, $2, $3 + j.key + 1, j.value FROM json_each($4) AS j"
        }
    };
    c.execute(sql, args![segment_id, list, after, keys]).await?;
    Ok(())
}

/// Removes every key of segment `segment_id`.
pub(super) async fn clear(c: &mut Conn<'_>, segment_id: i64) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM segment_keys WHERE segment_id = $1",
        args![segment_id],
    )
    .await?;
    Ok(())
}

/// Copies the key lists of environment `from`'s segments to the same-keyed segments of
/// environment `to` (a new environment copied from another). Returns the rows copied.
pub(super) async fn copy_environment(
    c: &mut Conn<'_>,
    from: i64,
    to: i64,
) -> Result<u64, StoreError> {
    let copied = c
        .execute(
            "INSERT INTO segment_keys (segment_id, list, pos, key)
         SELECT n.id, k.list, k.pos, k.key
         FROM segments o
         JOIN segments n ON n.environment_id = $1 AND n.key = o.key
         JOIN segment_keys k ON k.segment_id = o.id
         WHERE o.environment_id = $2",
            args![to, from],
        )
        .await?;
    Ok(copied)
}

#[derive(sqlx::FromRow)]
struct Present {
    key: String,
    pos: i64,
}

/// Applies `edit` to list `list` (holding `count` keys) of segment `segment_id` by the
/// canonical rules, reading and writing only the keys it names. Returns the effective delta
/// (keys actually added, in `edit.add`'s order; keys actually removed, in list order) and the
/// list's new length. Refuses (before writing) an edit that would take the list past
/// [`MAX_SEGMENT_KEYS`]; `field` names the list in that error.
pub(super) async fn edit_list(
    c: &mut Conn<'_>,
    (segment_id, list, count): (i64, i64, i64),
    field: &str,
    edit: &ListDelta,
) -> Result<(ListDelta, i64), StoreError> {
    if edit.is_empty() {
        return Ok((ListDelta::default(), count));
    }
    let named: Vec<&str> = edit
        .add
        .iter()
        .chain(&edit.remove)
        .map(String::as_str)
        .collect();
    let sql = match c {
        Conn::Pg(_) => {
            "SELECT key, pos FROM segment_keys
             WHERE segment_id = $1 AND list = $2
               AND key IN (SELECT jsonb_array_elements_text($3))"
        }
        Conn::Lite(_) => {
            "SELECT key, pos FROM segment_keys
             WHERE segment_id = $1 AND list = $2 AND key IN (SELECT value FROM json_each($3))"
        }
    };
    let present: Vec<Present> = c
        .fetch_all(sql, args![segment_id, list, serde_json::json!(named)])
        .await?;
    let at: HashMap<&str, i64> = present.iter().map(|p| (p.key.as_str(), p.pos)).collect();
    let mut removed: Vec<(i64, &str)> = edit
        .remove
        .iter()
        .filter_map(|k| at.get(k.as_str()).map(|pos| (*pos, k.as_str())))
        .collect();
    removed.sort_unstable();
    removed.dedup();
    let mut seen: HashSet<&str> = HashSet::with_capacity(edit.add.len());
    let added: Vec<String> = edit
        .add
        .iter()
        .filter(|k| !at.contains_key(k.as_str()) && seen.insert(k.as_str()))
        .cloned()
        .collect();
    let len = count - removed.len() as i64 + added.len() as i64;
    if usize::try_from(len).unwrap_or(usize::MAX) > MAX_SEGMENT_KEYS {
        return Err(StoreError::invalid(
            field,
            "limit_exceeded",
            format!("a list holds at most {MAX_SEGMENT_KEYS} keys; this edit makes it {len}"),
        ));
    }
    let effective = ListDelta {
        add: added,
        remove: removed.iter().map(|(_, k)| (*k).to_owned()).collect(),
    };
    if !effective.remove.is_empty() {
        let sql = match c {
            Conn::Pg(_) => {
                "DELETE FROM segment_keys
                 WHERE segment_id = $1 AND list = $2
                   AND key IN (SELECT jsonb_array_elements_text($3))"
            }
            Conn::Lite(_) => {
                "DELETE FROM segment_keys
                 WHERE segment_id = $1 AND list = $2 AND key IN (SELECT value FROM json_each($3))"
            }
        };
        c.execute(
            sql,
            args![segment_id, list, serde_json::json!(effective.remove)],
        )
        .await?;
    }
    if !effective.add.is_empty() {
        let (last,): (i64,) = c
            .fetch_one(
                "SELECT COALESCE(MAX(pos), 0) FROM segment_keys WHERE segment_id = $1 AND list = $2",
                args![segment_id, list],
            )
            .await?;
        insert_after(c, segment_id, list, last, &effective.add).await?;
    }
    Ok((effective, len))
}
