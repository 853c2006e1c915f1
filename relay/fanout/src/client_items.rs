//! The items of the per-context evaluated stream (`/client/v1/stream`, see [`crate::client`]):
//! encoding one flag's answer for a context, the initial `put`, and applying a change by
//! re-evaluating only the flags it can affect.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};
use vexil_eval::{AffectedFlags, CompiledSnapshot};
use vexil_schema::stream::EnvironmentId;

/// One flag's evaluated item for the stream, encoded: `identity` is
/// `{"value","variant","reason"[,"inExperiment","variationIndex"]}` (what decides whether the
/// context's answer changed) and `json` the same with `flagVersion` added (for exposures). A
/// no-op edit of a flag bumps its version but leaves the identity alone: nothing is sent.
#[derive(Debug)]
pub(crate) struct SentItem {
    /// The item without `flagVersion`.
    pub(crate) identity: Box<str>,
    /// The item as sent.
    pub(crate) json: Box<str>,
}

pub(crate) fn item(
    compiled: &CompiledSnapshot,
    key: &str,
    ctx: &vexil_schema::Context,
) -> SentItem {
    let eval = compiled.evaluate(key, ctx);
    let flag = compiled.flag(key);
    let variant = match (eval.variation, flag) {
        (Some(i), Some(f)) => f
            .variations
            .get(i)
            .and_then(|v| v.name.clone())
            .unwrap_or_else(|| i.to_string()),
        (Some(i), None) => i.to_string(),
        (None, _) => String::new(),
    };
    let mut identity = String::with_capacity(96);
    identity.push_str("{\"value\":");
    identity.push_str(&eval.value.cloned().unwrap_or(Value::Null).to_string());
    identity.push_str(",\"variant\":");
    identity.push_str(&Value::String(variant).to_string());
    identity.push_str(",\"reason\":\"");
    // Reasons are upper-case ASCII identifiers: nothing to escape.
    identity.push_str(eval.openfeature_reason());
    identity.push('"');
    if eval.in_experiment {
        identity.push_str(",\"inExperiment\":true");
    }
    if let Some(i) = eval.variation {
        identity.push_str(",\"variationIndex\":");
        identity.push_str(&i.to_string());
    }
    let mut json = identity.clone();
    identity.push('}');
    json.push_str(",\"flagVersion\":");
    json.push_str(&flag.map_or(0, |f| f.config.version).to_string());
    json.push('}');
    SentItem {
        identity: identity.into(),
        json: json.into(),
    }
}

/// Every client-side flag's item for `ctx` (the initial `put`).
pub(crate) fn evaluate_all(
    compiled: &CompiledSnapshot,
    keys: &[Box<str>],
    ctx: &vexil_schema::Context,
) -> BTreeMap<Box<str>, SentItem> {
    keys.iter()
        .map(|k| (k.clone(), item(compiled, k, ctx)))
        .collect()
}

/// Applies a change to a stream's last items: re-evaluates only the `affected` flags, and
/// returns the keys whose item *for this context* changed (or appeared) and those no longer
/// readable (gone, or no longer client-side).
pub(crate) fn apply_change(
    compiled: &CompiledSnapshot,
    affected: &AffectedFlags,
    ctx: &vexil_schema::Context,
    sent: &mut BTreeMap<Box<str>, SentItem>,
) -> (Vec<Box<str>>, Vec<Box<str>>) {
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    for k in &affected.changed {
        if compiled.flag(k).is_some_and(|f| f.client_side) {
            let now = item(compiled, k, ctx);
            match sent.get_mut(k) {
                Some(old) if old.identity == now.identity => {
                    // Same answer: nothing to send; keep the newer flag version.
                    *old = now;
                }
                _ => {
                    sent.insert(k.clone(), now);
                    changed.push(k.clone());
                }
            }
        } else if sent.remove(k).is_some() {
            removed.push(k.clone());
        }
    }
    for k in &affected.removed {
        if sent.remove(k).is_some() {
            removed.push(k.clone());
        }
    }
    changed.sort_unstable();
    removed.sort_unstable();
    (changed, removed)
}

/// The affected flags of the last change of each environment, computed once and shared by
/// every stream that makes the same step (streams that lagged compute their own).
#[derive(Debug, Default)]
pub(crate) struct AffectedCache {
    /// Per environment: the snapshots of the step (kept, so that their addresses identify
    /// them) and its affected flags.
    last: std::sync::Mutex<HashMap<EnvironmentId, AffectedStep>>,
}

/// One step between two compiled snapshots and the flags it affects.
type AffectedStep = (
    Arc<CompiledSnapshot>,
    Arc<CompiledSnapshot>,
    Arc<AffectedFlags>,
);

impl AffectedCache {
    pub(crate) fn get(
        &self,
        env: &EnvironmentId,
        prev: &Arc<CompiledSnapshot>,
        next: &Arc<CompiledSnapshot>,
    ) -> Arc<AffectedFlags> {
        let mut map = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((p, n, a)) = map.get(env)
            && Arc::ptr_eq(p, prev)
            && Arc::ptr_eq(n, next)
        {
            return Arc::clone(a);
        }
        // Computed under the lock: the other streams of the step wait for it instead of
        // computing it again (O(flags), a fraction of a millisecond at 10,000 flags).
        let affected = Arc::new(next.flags_affected_since(prev));
        map.insert(
            env.clone(),
            (Arc::clone(prev), Arc::clone(next), Arc::clone(&affected)),
        );
        affected
    }
}

/// `{"version":N,"flags":{...}[,"removed":[...]]}` from encoded items.
pub(crate) fn payload<'a>(
    version: u64,
    flags: impl Iterator<Item = (&'a str, &'a str)>,
    removed: &[Box<str>],
) -> Vec<u8> {
    let mut out = format!("{{\"version\":{version},\"flags\":{{");
    for (i, (k, v)) in flags.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.to_owned()).to_string());
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    if !removed.is_empty() {
        let list: Vec<&str> = removed.iter().map(AsRef::as_ref).collect();
        out.push_str(",\"removed\":");
        out.push_str(&json!(list).to_string());
    }
    out.push('}');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::client_flag_keys;

    fn snapshot_flag(
        key: &str,
        client_side: bool,
        targets: &[&str],
        version: u64,
    ) -> vexil_schema::Flag {
        serde_json::from_value(json!({
            "key": key, "kind": "boolean", "client_side": client_side,
            "variations": [{"value": true}, {"value": false}],
            "on": true, "off_variation": 1, "fallthrough": {"variation": 1},
            "targets": [{"variation": 0, "values": targets}],
            "version": version
        }))
        .unwrap()
    }

    #[test]
    fn a_change_sends_only_answers_that_moved_for_this_context() {
        let base = CompiledSnapshot::compile(&vexil_schema::EnvironmentSnapshot {
            version: 1,
            flags: vec![
                snapshot_flag("a", true, &["u1"], 1),
                snapshot_flag("b", true, &[], 1),
                snapshot_flag("internal", false, &["u1"], 1),
            ],
            segments: vec![],
        });
        let u1 = vexil_schema::Context::new("u1");
        let u2 = vexil_schema::Context::new("u2");
        let keys = client_flag_keys(&base);
        assert_eq!(&*keys, [Box::from("a"), Box::from("b")]);
        let mut s1 = evaluate_all(&base, &keys, &u1);
        let mut s2 = evaluate_all(&base, &keys, &u2);
        assert!(s1["a"].json.contains("\"flagVersion\":1"));
        assert!(s1["a"].json.contains("\"variationIndex\":0"));
        assert!(!s1.contains_key("internal"), "never in a client stream");

        // A no-op edit (version bump only): nothing for anyone, the version is kept.
        let noop = base.with_flag(snapshot_flag("a", true, &["u1"], 2), 2);
        let affected = noop.flags_affected_since(&base);
        assert_eq!(
            apply_change(&noop, &affected, &u1, &mut s1),
            (vec![], vec![])
        );
        assert!(s1["a"].json.contains("\"flagVersion\":2"));

        // u2 targeted: u2's answer moves, u1's does not.
        let next = noop.with_flag(snapshot_flag("a", true, &["u1", "u2"], 3), 3);
        let affected = next.flags_affected_since(&noop);
        assert_eq!(
            apply_change(&next, &affected, &u1, &mut s1),
            (vec![], vec![])
        );
        let (changed, removed) = apply_change(&next, &affected, &u2, &mut s2);
        assert_eq!((changed, removed), (vec![Box::from("a")], vec![]));

        // b leaves the client side, the internal flag joins it.
        let next2 = next
            .with_flag(snapshot_flag("b", false, &[], 2), 4)
            .with_flag(snapshot_flag("internal", true, &["u1"], 2), 5);
        let affected = next2.flags_affected_since(&next);
        let (changed, removed) = apply_change(&next2, &affected, &u1, &mut s1);
        assert_eq!(changed, vec![Box::from("internal")]);
        assert_eq!(removed, vec![Box::from("b")]);
        // Removed outright.
        let next3 = next2.without_flag("a", 6);
        let affected = next3.flags_affected_since(&next2);
        let (changed, removed) = apply_change(&next3, &affected, &u1, &mut s1);
        assert!(changed.is_empty());
        assert_eq!(removed, vec![Box::from("a")]);
        assert_eq!(s1.keys().map(|k| &**k).collect::<Vec<_>>(), ["internal"]);
    }

    #[test]
    fn payload_lists_flags_and_removed() {
        let p = payload(3, [("a", r#"{"value":1}"#)].into_iter(), &["b".into()]);
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(
            v,
            json!({"version":3,"flags":{"a":{"value":1}},"removed":["b"]})
        );
    }
}
