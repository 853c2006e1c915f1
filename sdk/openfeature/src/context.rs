//! OpenFeature's `EvaluationContext` → Vexil's [`Context`].
//!
//! The targeting key becomes the context key (none: an anonymous context). Custom fields
//! become attributes: booleans, integers, floats and strings as JSON; date-times as RFC 3339
//! strings (what the `before`/`after` operators read); structures as JSON when they hold a
//! `serde_json::Value` or an OpenFeature `Value`/`StructValue`, and are skipped (logged at
//! debug level) otherwise. A custom field `kind` (a string) sets the context kind; a custom
//! field `key` is ignored, the targeting key being the only key.

use open_feature::{EvaluationContext, EvaluationContextFieldValue, StructValue, Value};
use serde_json::Value as Json;
use time::format_description::well_known::Rfc3339;
use vexil_sdk::Context;

/// Maps an OpenFeature evaluation context to a Vexil context.
pub fn to_vexil_context(ctx: &EvaluationContext) -> Context {
    let mut out = match &ctx.targeting_key {
        Some(key) => Context::new(key.clone()),
        None => Context::anonymous(),
    };
    for (name, value) in &ctx.custom_fields {
        match name.as_str() {
            "key" => continue,
            "kind" => {
                if let Some(kind) = value.as_str() {
                    out.set_kind(Some(kind.to_owned()));
                }
                continue;
            }
            _ => {}
        }
        match field_to_json(value) {
            Some(json) => out.set(name.clone(), json),
            None => {
                tracing::debug!(field = %name, "skipping a context field of an unsupported type")
            }
        }
    }
    out
}

fn field_to_json(value: &EvaluationContextFieldValue) -> Option<Json> {
    Some(match value {
        EvaluationContextFieldValue::Bool(b) => Json::Bool(*b),
        EvaluationContextFieldValue::Int(i) => Json::from(*i),
        EvaluationContextFieldValue::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number)
        }
        EvaluationContextFieldValue::String(s) => Json::String(s.clone()),
        EvaluationContextFieldValue::DateTime(t) => Json::String(t.format(&Rfc3339).ok()?),
        EvaluationContextFieldValue::Struct(any) => {
            if let Some(v) = any.downcast_ref::<Json>() {
                v.clone()
            } else if let Some(v) = any.downcast_ref::<Value>() {
                of_value_to_json(v)
            } else if let Some(s) = any.downcast_ref::<StructValue>() {
                struct_to_json(s)
            } else {
                return None;
            }
        }
    })
}

/// An OpenFeature value as JSON.
pub(crate) fn of_value_to_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::Array(a) => Json::Array(a.iter().map(of_value_to_json).collect()),
        Value::Struct(s) => struct_to_json(s),
    }
}

fn struct_to_json(s: &StructValue) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), of_value_to_json(v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;
    use time::macros::datetime;

    #[test]
    fn maps_key_kind_and_every_field_type() {
        let mut fields = HashMap::new();
        fields.insert(
            "tags".to_owned(),
            Value::Array(vec![Value::String("a".into()), Value::Int(2)]),
        );
        let ctx = EvaluationContext::default()
            .with_targeting_key("user-1")
            .with_custom_field("kind", "device")
            .with_custom_field("key", "ignored")
            .with_custom_field("beta", true)
            .with_custom_field("age", 42)
            .with_custom_field("score", 0.5)
            .with_custom_field("email", "a@example.com")
            .with_custom_field("signup", datetime!(2024-03-01 12:00 UTC))
            .with_custom_field(
                "json",
                EvaluationContextFieldValue::new_struct(json!({"org": "acme"})),
            )
            .with_custom_field(
                "of",
                EvaluationContextFieldValue::new_struct(StructValue { fields }),
            )
            .with_custom_field("opaque", EvaluationContextFieldValue::new_struct(7u8));
        let c = to_vexil_context(&ctx);
        assert_eq!(c.key(), Some("user-1"));
        assert_eq!(c.kind(), Some("device"));
        assert_eq!(c.attribute("key"), None);
        assert_eq!(c.attribute("beta"), Some(&json!(true)));
        assert_eq!(c.attribute("age"), Some(&json!(42)));
        assert_eq!(c.attribute("score"), Some(&json!(0.5)));
        assert_eq!(c.attribute("email"), Some(&json!("a@example.com")));
        assert_eq!(c.attribute("signup"), Some(&json!("2024-03-01T12:00:00Z")));
        assert_eq!(c.attribute("json"), Some(&json!({"org": "acme"})));
        assert_eq!(c.attribute("of"), Some(&json!({"tags": ["a", 2]})));
        assert_eq!(c.attribute("opaque"), None);
    }

    #[test]
    fn no_targeting_key_is_anonymous() {
        let c = to_vexil_context(&EvaluationContext::default().with_custom_field("a", 1));
        assert_eq!(c.key(), None);
        assert_eq!(c.attribute("a"), Some(&json!(1)));
    }
}
