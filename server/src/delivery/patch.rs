//! Configuration patches shared by scheduled changes and change requests: strict parsing,
//! and the conflict rule (a patch conflicts when a field it touches changed since the version
//! it was written against). Pure: no I/O.

use serde_json::Value;
use vexil_schema::FlagConfig;

use crate::store::{ConfigPatch, StoreError};

/// The fields a configuration patch may name.
const PATCH_FIELDS: [&str; 6] = [
    "on",
    "off_variation",
    "targets",
    "rules",
    "fallthrough",
    "prerequisites",
];

/// Parses a patch strictly: an object naming only configuration fields, each of its type.
pub(crate) fn parse_patch(v: &Value) -> Result<ConfigPatch, StoreError> {
    let Some(obj) = v.as_object() else {
        return Err(StoreError::invalid(
            "patch",
            "type",
            "a patch is an object of configuration fields",
        ));
    };
    if obj.is_empty() {
        return Err(StoreError::invalid(
            "patch",
            "empty",
            "a patch sets at least one field",
        ));
    }
    if let Some(k) = obj.keys().find(|k| !PATCH_FIELDS.contains(&k.as_str())) {
        return Err(StoreError::invalid(
            format!("patch.{k}"),
            "unknown_field",
            format!("'{k}' is not a configuration field"),
        ));
    }
    serde_json::from_value(v.clone()).map_err(|e| {
        StoreError::invalid("patch", "type", format!("not a configuration patch: {e}"))
    })
}

/// Applies the fields a patch names (what `Store::patch_config` does to the current
/// configuration), for comparing the result with what is stored.
fn apply(mut cfg: FlagConfig, patch: &ConfigPatch) -> FlagConfig {
    let p = patch.clone();
    if let Some(v) = p.on {
        cfg.on = v;
    }
    if let Some(v) = p.off_variation {
        cfg.off_variation = v;
    }
    if let Some(v) = p.targets {
        cfg.targets = v;
    }
    if let Some(v) = p.rules {
        cfg.rules = v;
    }
    if let Some(v) = p.fallthrough {
        cfg.fallthrough = v;
    }
    if let Some(v) = p.prerequisites {
        cfg.prerequisites = v;
    }
    cfg
}

/// What to do with a due patch, given the configuration it was written against, the current
/// one and the fields it touches.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Every touched field already holds the target value: nothing to write.
    AlreadyApplied,
    /// These touched fields changed since the base version.
    Conflict(Vec<String>),
    /// Write it.
    Apply,
}

/// Decides what to do with `patch` (touching `touched`), written against `base`, now that
/// the configuration is `current`; `force` overwrites touched fields that moved.
pub(crate) fn decide(
    base: &FlagConfig,
    current: &FlagConfig,
    patch: &ConfigPatch,
    touched: &[String],
    force: bool,
) -> Decision {
    let target = crate::store::encode(&apply(current.clone(), patch));
    let current_json = crate::store::encode(current);
    let base_json = crate::store::encode(base);
    if touched.iter().all(|f| current_json.get(f) == target.get(f)) {
        return Decision::AlreadyApplied;
    }
    let changed: Vec<String> = touched
        .iter()
        .filter(|f| current_json.get(f.as_str()) != base_json.get(f.as_str()))
        .cloned()
        .collect();
    if changed.is_empty() || force {
        Decision::Apply
    } else {
        Decision::Conflict(changed)
    }
}

/// The configuration fields a patch names.
pub(crate) fn touched_fields(patch: &Value) -> Vec<String> {
    patch
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> FlagConfig {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> FlagConfig {
        cfg(json!({"on": false, "off_variation": 1, "fallthrough": {"variation": 1}, "salt": "s"}))
    }

    #[test]
    fn a_patch_applies_when_its_fields_did_not_move() {
        let patch = json!({"on": true});
        let p = parse_patch(&patch).unwrap();
        let mut current = base();
        // Another field moved: no conflict.
        current.off_variation = 0;
        assert_eq!(
            decide(&base(), &current, &p, &touched_fields(&patch), false),
            Decision::Apply
        );
    }

    #[test]
    fn a_touched_field_that_moved_is_a_conflict_unless_forced() {
        let patch = json!({"fallthrough": {"variation": 0}, "on": true});
        let p = parse_patch(&patch).unwrap();
        let mut current = base();
        current.fallthrough = serde_json::from_value(json!({"rollout": {"variations": [{"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}})).unwrap();
        assert_eq!(
            decide(&base(), &current, &p, &touched_fields(&patch), false),
            Decision::Conflict(vec!["fallthrough".into()])
        );
        assert_eq!(
            decide(&base(), &current, &p, &touched_fields(&patch), true),
            Decision::Apply
        );
    }

    #[test]
    fn a_patch_already_in_place_is_not_written_again() {
        let patch = json!({"on": true});
        let p = parse_patch(&patch).unwrap();
        let mut current = base();
        current.on = true;
        assert_eq!(
            decide(&base(), &current, &p, &touched_fields(&patch), false),
            Decision::AlreadyApplied
        );
    }

    #[test]
    fn patches_are_parsed_strictly() {
        assert!(parse_patch(&json!({"on": "yes"})).is_err());
        assert!(parse_patch(&json!({"onn": true})).is_err());
        assert!(parse_patch(&json!({})).is_err());
        assert!(parse_patch(&json!([1])).is_err());
        assert!(parse_patch(&json!({"on": true, "rules": []})).is_ok());
    }
}
