//! Vexil results → OpenFeature resolutions.
//!
//! Reasons and error codes go through the schema's single mapping
//! ([`vexil_schema::Reason::openfeature_reason`] and [`vexil_schema::ErrorKind::openfeature_code`]);
//! this module only turns those strings into the `open-feature` crate's enums.

use open_feature::provider::ResolutionDetails;
use open_feature::{
    EvaluationError, EvaluationErrorCode, EvaluationReason, EvaluationResult, FlagMetadata,
    StructValue, Value,
};
use serde_json::Value as Json;
use vexil_sdk::{ErrorKind, EvaluationDetail};

/// The `open-feature` reason for an OpenFeature reason string.
pub(crate) fn reason(name: &str) -> EvaluationReason {
    match name {
        "STATIC" => EvaluationReason::Static,
        "DEFAULT" => EvaluationReason::Default,
        "TARGETING_MATCH" => EvaluationReason::TargetingMatch,
        "SPLIT" => EvaluationReason::Split,
        "CACHED" => EvaluationReason::Cached,
        "DISABLED" => EvaluationReason::Disabled,
        "ERROR" => EvaluationReason::Error,
        "UNKNOWN" => EvaluationReason::Unknown,
        other => EvaluationReason::Other(other.to_owned()),
    }
}

/// The `open-feature` error code for a Vexil error.
pub(crate) fn error_code(kind: ErrorKind) -> EvaluationErrorCode {
    match kind.openfeature_code() {
        "PROVIDER_NOT_READY" => EvaluationErrorCode::ProviderNotReady,
        "FLAG_NOT_FOUND" => EvaluationErrorCode::FlagNotFound,
        "PARSE_ERROR" => EvaluationErrorCode::ParseError,
        "TYPE_MISMATCH" => EvaluationErrorCode::TypeMismatch,
        "TARGETING_KEY_MISSING" => EvaluationErrorCode::TargetingKeyMissing,
        "INVALID_CONTEXT" => EvaluationErrorCode::InvalidContext,
        other => EvaluationErrorCode::General(other.to_owned()),
    }
}

fn error_message(kind: ErrorKind, flag_key: &str) -> String {
    match kind {
        ErrorKind::FlagNotFound => format!("no flag {flag_key:?} in this environment"),
        ErrorKind::Malformed => format!("flag {flag_key:?} is malformed; see the SDK's logs"),
        ErrorKind::WrongType => format!("flag {flag_key:?} serves another type"),
        ErrorKind::ClientNotReady => "the Vexil client has no flags yet".to_owned(),
        other => format!("flag {flag_key:?}: {other:?}"),
    }
}

/// A resolution from a Vexil detail; `convert` turns the value into the OpenFeature type.
pub(crate) fn resolve<T, U>(
    flag_key: &str,
    detail: EvaluationDetail<T>,
    convert: impl FnOnce(T) -> EvaluationResult<U>,
) -> EvaluationResult<ResolutionDetails<U>> {
    if let Some(kind) = detail.error_kind() {
        return Err(EvaluationError {
            code: error_code(kind),
            message: Some(error_message(kind, flag_key)),
        });
    }
    let reason = reason(detail.openfeature_reason());
    let variant = detail
        .variation_name
        .clone()
        .or_else(|| detail.variation.map(|i| i.to_string()));
    let mut metadata = FlagMetadata::default();
    if detail.in_experiment {
        metadata.add_value("inExperiment", true);
    }
    Ok(ResolutionDetails {
        value: convert(detail.value)?,
        variant,
        reason: Some(reason),
        flag_metadata: (!metadata.values.is_empty()).then_some(metadata),
    })
}

/// A JSON object as an OpenFeature structure. Null fields are left out (OpenFeature has no
/// null); anything but an object is a type mismatch.
pub(crate) fn json_to_struct(flag_key: &str, value: Json) -> EvaluationResult<StructValue> {
    match json_to_value(&value) {
        Some(Value::Struct(s)) => Ok(s),
        _ => Err(EvaluationError {
            code: EvaluationErrorCode::TypeMismatch,
            message: Some(format!(
                "flag {flag_key:?} does not serve a JSON object (or holds a null in an array)"
            )),
        }),
    }
}

fn json_to_value(value: &Json) -> Option<Value> {
    Some(match value {
        Json::Null => return None,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(json_to_value).collect::<Option<_>>()?),
        Json::Object(o) => {
            let mut s = StructValue::default();
            for (k, v) in o {
                if !v.is_null() {
                    s.add_field(k.clone(), json_to_value(v)?);
                }
            }
            Value::Struct(s)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_vexil_error_has_a_specific_code() {
        assert_eq!(
            error_code(ErrorKind::FlagNotFound),
            EvaluationErrorCode::FlagNotFound
        );
        assert_eq!(
            error_code(ErrorKind::Malformed),
            EvaluationErrorCode::ParseError
        );
        assert_eq!(
            error_code(ErrorKind::WrongType),
            EvaluationErrorCode::TypeMismatch
        );
        assert_eq!(
            error_code(ErrorKind::ClientNotReady),
            EvaluationErrorCode::ProviderNotReady
        );
    }

    #[test]
    fn reasons_map_by_name() {
        for (name, r) in [
            ("DEFAULT", EvaluationReason::Default),
            ("TARGETING_MATCH", EvaluationReason::TargetingMatch),
            ("SPLIT", EvaluationReason::Split),
            ("DISABLED", EvaluationReason::Disabled),
            ("ERROR", EvaluationReason::Error),
            ("STATIC", EvaluationReason::Static),
        ] {
            assert_eq!(reason(name), r);
            assert_eq!(reason(name).to_string(), name);
        }
    }

    #[test]
    fn json_objects_become_structures() {
        let s = json_to_struct(
            "f",
            json!({"a": 1, "b": 2.5, "c": [true, "x"], "d": {"e": null}, "n": null, "big": u64::MAX}),
        )
        .unwrap();
        assert_eq!(s.fields["a"], Value::Int(1));
        assert_eq!(s.fields["b"], Value::Float(2.5));
        assert_eq!(
            s.fields["c"],
            Value::Array(vec![Value::Bool(true), Value::String("x".into())])
        );
        assert_eq!(s.fields["d"], Value::Struct(StructValue::default()));
        assert!(!s.fields.contains_key("n"));
        assert!(matches!(s.fields["big"], Value::Float(_)));
        assert!(json_to_struct("f", json!([1])).is_err());
        assert!(json_to_struct("f", json!({"a": [null]})).is_err());
    }
}
