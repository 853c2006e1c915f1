//! OpenTelemetry traces, shared by the control plane and the relay: the OTLP exporter set up
//! from the standard `OTEL_*` variables (off unless they ask for it), HTTP request spans that
//! continue an incoming W3C `traceparent`, and the `traceparent` a flag change carries from
//! the write that made it, through the change log and every hop, to the SDK stream frame.
//!
//! Tracing is on when `OTEL_TRACES_EXPORTER` is `otlp`, or when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set and
//! `OTEL_TRACES_EXPORTER` is not `none`; `OTEL_SDK_DISABLED=true` turns it off whatever
//! else is set. The exporter reads the other `OTEL_EXPORTER_OTLP_*` variables itself
//! (headers, timeout, compression), the SDK reads `OTEL_TRACES_SAMPLER`, `OTEL_SERVICE_NAME`
//! and `OTEL_RESOURCE_ATTRIBUTES`.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::frame::{self, Frame, FrameError};

/// The JSON field of SDK and relay stream frames that carries the change's trace context.
pub const TRACEPARENT_FIELD: &str = "traceparent";

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The OTLP exporter could not be built (a malformed endpoint or header variable).
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Whether the `OTEL_*` variables ask for traces (see the module docs).
pub fn enabled_by_env() -> bool {
    enabled(|name| std::env::var(name).ok())
}

fn enabled(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return false;
    }
    match var("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase()) {
        Some(e) if e == "none" => false,
        Some(e) if e == "otlp" => true,
        _ => set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    }
}

/// A tracer provider exporting over OTLP/HTTP (protobuf) in batches from a thread of its own.
/// `service_name` applies unless `OTEL_SERVICE_NAME` names one. Keep the provider until exit
/// and [`SdkTracerProvider::shutdown`] it, so the last spans are sent.
pub fn otlp_provider(service_name: &'static str) -> Result<SdkTracerProvider, TraceError> {
    otlp_provider_to(service_name, None)
}

/// [`otlp_provider`] sending to `traces_endpoint` (a full URL ending in `/v1/traces`) rather
/// than where `OTEL_EXPORTER_OTLP_*` says (for embedders and tests).
pub fn otlp_provider_to(
    service_name: &'static str,
    traces_endpoint: Option<&str>,
) -> Result<SdkTracerProvider, TraceError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(url) = traces_endpoint {
        builder = builder.with_endpoint(url);
    }
    let exporter = builder.build()?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service_name);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("vexil"))
}

/// Records the environment and version a distribution span is about as OpenTelemetry
/// attributes (`vexil.environment`, `vexil.version`), and makes it a child of `traceparent`
/// when given. Attributes go through the OpenTelemetry extension rather than span fields.
pub fn distribution_span(span: &Span, environment: &str, version: u64, traceparent: Option<&str>) {
    if let Some(tp) = traceparent {
        set_parent(span, tp);
    }
    span.set_attribute("vexil.environment", environment.to_owned());
    span.set_attribute("vexil.version", i64::try_from(version).unwrap_or(i64::MAX));
}

/// The W3C `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`), or `None` when
/// tracing is off (the span has no valid OpenTelemetry context).
pub fn traceparent_of(span: &Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent").filter(|t| is_traceparent(t))
}

/// The `traceparent` of the current span (see [`traceparent_of`]).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&Span::current())
}

/// Makes `span` a child of the remote span `traceparent` names. Does nothing with tracing
/// off, or when `traceparent` is not a valid W3C trace context.
pub fn set_parent(span: &Span, traceparent: &str) {
    if !is_traceparent(traceparent) {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    // Fails only when the span is disabled or already started: then there is nothing to do.
    let _ = span.set_parent(cx);
}

/// Whether `s` is a W3C `traceparent` of version `00`: `00-` 32 lowercase hex digits (not
/// all zero) `-` 16 (not all zero) `-` 2. The strictness matters: the value is written into
/// SSE frames, so it may hold nothing but those characters.
pub fn is_traceparent(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: &[u8]| {
        r.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let nonzero = |r: &[u8]| r.iter().any(|&c| c != b'0');
    b.len() == 55
        && &b[..3] == b"00-"
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(&b[3..35])
        && nonzero(&b[3..35])
        && hex(&b[36..52])
        && nonzero(&b[36..52])
        && hex(&b[53..55])
}

/// The trace id part of a valid `traceparent`.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    is_traceparent(traceparent).then(|| &traceparent[3..35])
}

/// `frame` with `"traceparent":"…"` inserted as the first field of its JSON data, so that
/// readers find it without parsing the (possibly large) rest. `traceparent` must be valid
/// ([`is_traceparent`]); otherwise, or when the frame is not one this crate encoded with a
/// JSON object as data, the frame is returned unchanged.
pub fn frame_with_traceparent(frame: &Frame, traceparent: &str) -> Result<Frame, FrameError> {
    if !is_traceparent(traceparent) {
        return Ok(frame.clone());
    }
    let Some((event, id, data)) = frame::split(frame.bytes()) else {
        return Ok(frame.clone());
    };
    let Some(rest) = data.strip_prefix(b"{") else {
        return Ok(frame.clone());
    };
    let field = format!("{{\"{TRACEPARENT_FIELD}\":\"{traceparent}\"");
    let sep: &[u8] = if rest.starts_with(b"}") { b"" } else { b"," };
    Frame::encode(event, id, &[field.as_bytes(), sep, rest])
}

/// The `traceparent` a frame's JSON data carries, if any: looked for only where
/// [`frame_with_traceparent`] puts it (the first field, or the second after the relay
/// stream's `environment`), and only returned when valid.
pub fn traceparent_in(data: &[u8]) -> Option<&str> {
    let needle = b"\"traceparent\":\"";
    let window = &data[..data.len().min(256)];
    let at = window.windows(needle.len()).position(|w| w == needle)?;
    let start = at + needle.len();
    let value = data.get(start..start + 55)?;
    let value = std::str::from_utf8(value).ok()?;
    (data.get(start + 55) == Some(&b'"') && is_traceparent(value)).then_some(value)
}

/// The `traceparent` of a frame's data bytes (see [`traceparent_in`]).
pub fn traceparent_in_bytes(data: &Bytes) -> Option<String> {
    traceparent_in(data).map(str::to_owned)
}

/// Middleware: one `http.request` span per request, named `METHOD /route/template`, child of
/// the caller's `traceparent` header when it sends one. Add with `Router::layer` after the
/// routes (it reads [`MatchedPath`]). Cheap with tracing off: the span is an ordinary
/// `tracing` span.
pub async fn trace_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        set_parent(&span, tp);
    }
    let res = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", res.status().as_u16());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_are_validated_strictly() {
        assert!(is_traceparent(TP));
        assert_eq!(trace_id_of(TP), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
            "00-4bf92f3577b34da6a3ce929d0e0e473\"-00f067aa0ba902b7-01",
        ] {
            assert!(!is_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_frame_gains_the_traceparent_as_its_first_field() {
        let f = Frame::encode("patch", "7", &[br#"{"version":7,"flag":{"key":"a"}}"#]).unwrap();
        let t = frame_with_traceparent(&f, TP).unwrap();
        let data = t.data();
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(v["traceparent"], TP);
        assert_eq!(v["version"], 7);
        assert_eq!(v["flag"]["key"], "a");
        assert_eq!(traceparent_in(&data), Some(TP));
        assert!(
            t.bytes()
                .starts_with(b"event: patch\nid: 7\ndata: {\"traceparent\"")
        );
        // An invalid one is never written.
        let same = frame_with_traceparent(&f, "00-x\ndata: evil").unwrap();
        assert_eq!(same, f);
        assert_eq!(traceparent_in(&f.data()), None);
        // The relay stream prepends its environment: still found.
        let relay = format!(
            r#"{{"environment":"p/prod",{}"#,
            &std::str::from_utf8(&data).unwrap()[1..]
        );
        assert_eq!(traceparent_in(relay.as_bytes()), Some(TP));
    }

    #[test]
    fn the_otel_variables_decide() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(!enabled(env(&[])));
        assert!(enabled(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://c:4318"
        )])));
        assert!(enabled(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces"
        )])));
        assert!(enabled(env(&[("OTEL_TRACES_EXPORTER", "otlp")])));
        assert!(!enabled(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none")
        ])));
        assert!(!enabled(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true")
        ])));
    }
}
