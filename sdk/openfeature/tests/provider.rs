//! The shared evaluation fixtures through the OpenFeature provider, and the provider behind
//! the `open-feature` client API.

use std::sync::Arc;

use open_feature::provider::{FeatureProvider, ProviderStatus};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationErrorCode, EvaluationReason,
    OpenFeature, StructValue, Value,
};
use serde_json::{Value as Json, json};
use vexil_openfeature::{VexilProvider, to_vexil_context};
use vexil_schema::fixture::load_eval_fixtures;
use vexil_schema::{ErrorKind, Reason};
use vexil_sdk::{Client, Context, TestData, TestFlag};

/// The OpenFeature context an application would pass for a Vexil context.
fn of_context(ctx: &Context) -> EvaluationContext {
    let mut of = EvaluationContext::default();
    if let Some(key) = ctx.key() {
        of = of.with_targeting_key(key);
    }
    if let Some(kind) = ctx.kind() {
        of.add_custom_field("kind", kind);
    }
    for (name, value) in ctx.attributes() {
        let field = match value {
            Json::Bool(b) => EvaluationContextFieldValue::Bool(*b),
            Json::String(s) => EvaluationContextFieldValue::String(s.clone()),
            Json::Number(n) if n.is_i64() => EvaluationContextFieldValue::Int(n.as_i64().unwrap()),
            Json::Number(n) if n.is_f64() => {
                EvaluationContextFieldValue::Float(n.as_f64().unwrap())
            }
            other => EvaluationContextFieldValue::Struct(Arc::new(other.clone())),
        };
        of.add_custom_field(name, field);
    }
    of
}

fn code(kind: ErrorKind) -> EvaluationErrorCode {
    match kind {
        ErrorKind::FlagNotFound => EvaluationErrorCode::FlagNotFound,
        ErrorKind::Malformed => EvaluationErrorCode::ParseError,
        ErrorKind::WrongType => EvaluationErrorCode::TypeMismatch,
        ErrorKind::ClientNotReady => EvaluationErrorCode::ProviderNotReady,
        other => panic!("unmapped {other:?}"),
    }
}

fn of_reason(reason: &Reason, split: bool) -> EvaluationReason {
    match reason.openfeature_reason(split) {
        "DEFAULT" => EvaluationReason::Default,
        "TARGETING_MATCH" => EvaluationReason::TargetingMatch,
        "SPLIT" => EvaluationReason::Split,
        "DISABLED" => EvaluationReason::Disabled,
        "STATIC" => EvaluationReason::Static,
        other => panic!("unexpected reason {other}"),
    }
}

#[tokio::test]
async fn every_fixture_through_the_provider() {
    let files = load_eval_fixtures().unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in &files {
        let td = TestData::new();
        td.load(file.snapshot.clone());
        let client = Client::builder("unused").data_source(td).build().unwrap();
        let provider = VexilProvider::new(client.clone());
        for case in &file.cases {
            cases += 1;
            let name = format!("{}/{}", file.name, case.name);
            let of = of_context(&case.context);
            if to_vexil_context(&of) != case.context {
                failures.push(format!("{name}: context did not round-trip"));
            }
            let expected = &case.expected;
            // Whether the value came from a rollout, which only the SDK's detail tells.
            let split = client
                .json_variation_detail(&case.flag, &case.context, Json::Null)
                .split;

            if let Reason::Error { error_kind } = expected.reason {
                let err = provider
                    .resolve_bool_value(&case.flag, &of)
                    .await
                    .unwrap_err();
                if err.code != code(error_kind) || err.message.is_none() {
                    failures.push(format!("{name}: error {err:?}, expected {error_kind:?}"));
                }
                continue;
            }
            let want_reason = Some(of_reason(&expected.reason, split));
            // The variant is the variation's name, or its index when it has none.
            let want_variant = expected.variation.map(|i| {
                file.snapshot
                    .flags
                    .iter()
                    .find(|f| f.key == case.flag.as_str())
                    .and_then(|f| f.variations[i].name.clone())
                    .unwrap_or_else(|| i.to_string())
            });
            let variant_ok = |v: &Option<String>| *v == want_variant;
            match &expected.value {
                Json::Bool(b) => {
                    let r = provider.resolve_bool_value(&case.flag, &of).await;
                    match r {
                        Ok(r)
                            if r.value == *b
                                && r.reason == want_reason
                                && variant_ok(&r.variant) => {}
                        other => failures.push(format!("{name}: {other:?}, expected {expected:?}")),
                    }
                    // Asking for another type is a type mismatch.
                    let wrong = provider.resolve_string_value(&case.flag, &of).await;
                    if !matches!(&wrong, Err(e) if e.code == EvaluationErrorCode::TypeMismatch) {
                        failures.push(format!("{name}: string of a bool flag gave {wrong:?}"));
                    }
                }
                Json::String(s) => match provider.resolve_string_value(&case.flag, &of).await {
                    Ok(r) if r.value == *s && r.reason == want_reason && variant_ok(&r.variant) => {
                    }
                    other => failures.push(format!("{name}: {other:?}, expected {expected:?}")),
                },
                Json::Number(n) => {
                    match provider.resolve_float_value(&case.flag, &of).await {
                        Ok(r)
                            if Some(r.value) == n.as_f64()
                                && r.reason == want_reason
                                && variant_ok(&r.variant) => {}
                        other => failures.push(format!("{name}: {other:?}, expected {expected:?}")),
                    }
                    let int = provider.resolve_int_value(&case.flag, &of).await;
                    match (n.as_i64(), &int) {
                        (Some(i), Ok(r)) if r.value == i => {}
                        (None, Err(e)) if e.code == EvaluationErrorCode::TypeMismatch => {}
                        _ => failures.push(format!("{name}: int gave {int:?} for {n}")),
                    }
                }
                Json::Object(_) => match provider.resolve_struct_value(&case.flag, &of).await {
                    Ok(r) if r.reason == want_reason && variant_ok(&r.variant) => {}
                    other => failures.push(format!("{name}: {other:?}, expected {expected:?}")),
                },
                // Arrays and null are JSON values OpenFeature has no top-level type for:
                // resolving them as a structure is a type mismatch.
                _ => {
                    let r = provider.resolve_struct_value(&case.flag, &of).await;
                    if !matches!(&r, Err(e) if e.code == EvaluationErrorCode::TypeMismatch) {
                        failures.push(format!("{name}: struct of {} gave {r:?}", expected.value));
                    }
                }
            }
        }
    }
    assert!(cases > 100, "only {cases} cases");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn through_the_open_feature_api() {
    let td = TestData::new();
    td.update(
        TestFlag::string("banner", ["blue", "green"])
            .variation_name(1, "spring")
            .target(1, ["vip"]),
    )
    .unwrap();
    td.update(TestFlag::json(
        "limits",
        [json!({"rps": 100, "burst": [1, 2]})],
    ))
    .unwrap();
    let client = Client::builder("unused")
        .data_source(td.clone())
        .build()
        .unwrap();
    let provider = VexilProvider::new(client);
    assert_eq!(provider.status(), ProviderStatus::Ready);
    assert_eq!(provider.metadata().name, "vexil");

    let mut api = OpenFeature::singleton_mut().await;
    api.set_provider(provider).await;
    let of = api.create_client();
    drop(api);

    let vip = EvaluationContext::default().with_targeting_key("vip");
    let d = of
        .get_string_details("banner", Some(&vip), None)
        .await
        .unwrap();
    assert_eq!(d.value, "green");
    assert_eq!(d.variant.as_deref(), Some("spring"));
    assert_eq!(d.reason, Some(EvaluationReason::TargetingMatch));
    let d = of.get_string_details("banner", None, None).await.unwrap();
    assert_eq!(d.value, "blue");
    assert_eq!(d.variant.as_deref(), Some("0"));
    assert_eq!(d.reason, Some(EvaluationReason::Default));

    let s: StructValue = of.get_struct_value("limits", None, None).await.unwrap();
    assert_eq!(s.fields["rps"], Value::Int(100));

    let err = of.get_bool_value("missing", None, None).await.unwrap_err();
    assert_eq!(err.code, EvaluationErrorCode::FlagNotFound);
    let err = of.get_bool_value("banner", None, None).await.unwrap_err();
    assert_eq!(err.code, EvaluationErrorCode::TypeMismatch);

    // Changes made through TestData are visible to the OpenFeature client at once.
    td.update(TestFlag::string("banner", ["blue", "green"]).serve(1))
        .unwrap();
    assert_eq!(
        of.get_string_value("banner", None, None).await.unwrap(),
        "green"
    );
}

#[tokio::test]
async fn a_client_without_flags_is_not_ready() {
    let client = Client::builder("k")
        .base_url("http://127.0.0.1:9")
        .init_timeout(std::time::Duration::from_secs(3600))
        .build()
        .unwrap();
    let provider = VexilProvider::new(client);
    assert_eq!(provider.status(), ProviderStatus::NotReady);
    let err = provider
        .resolve_bool_value("any", &EvaluationContext::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, EvaluationErrorCode::ProviderNotReady);
}
