//! What the control plane and the relay share about their own output: the log format and
//! subscriber set-up (text logs coloured only on a terminal, so piped output carries no escape
//! codes), and [`redact_url`], which every URL goes through before it is logged or printed.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global `tracing` subscriber on stdout: the filter from `RUST_LOG`, else
/// `default_filter`. Returns an error if one is already installed.
pub fn init(
    format: LogFormat,
    default_filter: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
}

/// Like [`init`], and with OpenTelemetry traces exported over OTLP when the `OTEL_*`
/// variables ask for them ([`crate::trace::enabled_by_env`]). The filter (`RUST_LOG`, else
/// `default_filter`) applies to both: spans and events it lets through become OpenTelemetry
/// spans and span events. (A global filter on purpose: per-layer filters lose the first span
/// created after an event they filtered out.) Returns the tracer provider to shut down at exit
/// (flushing the last spans), if tracing is on.
pub fn init_with_traces(
    format: LogFormat,
    default_filter: &str,
    service_name: &'static str,
) -> Result<
    Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::stdout().is_terminal();
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_ansi(ansi).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
    };
    let provider = if crate::trace::enabled_by_env() {
        Some(crate::trace::otlp_provider(service_name)?)
    } else {
        None
    };
    let otel = provider.as_ref().map(crate::trace::layer);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(provider)
}

/// Query parameters whose values are secrets (libpq and sqlx accept credentials there too).
const SECRET_PARAMS: &[&str] = &["password", "sslpassword", "passfile", "sslkey"];

/// `url` with any password replaced by `***`: the one in the user-info part
/// (`scheme://user:password@host`) and those given as query parameters (`?password=…`).
/// Anything that is not a `scheme://` URL (a SQLite file path) is returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    // A password may hold '/' or '@' when not percent-encoded; a query or fragment cannot
    // start before it ends. So user-info ends at the last '@' before the first '?' or '#'.
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before_query, tail) = rest.split_at(query_start);
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..scheme_end]);
    match before_query.rfind('@') {
        Some(at) => {
            let (userinfo, host_and_path) = before_query.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(host_and_path);
        }
        None => out.push_str(before_query),
    }
    let (query, fragment) = match tail.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (tail, None),
    };
    if let Some(query) = query.strip_prefix('?') {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str()) => {
                    format!("{name}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://vexil:s3cret@db.internal:5432/vexil"),
            "postgres://vexil:***@db.internal:5432/vexil"
        );
        // A password may contain '@' (percent-encoding is not always used) and ':'.
        assert_eq!(
            redact_url("postgresql://u:p@ss:w@rd@h/db?sslmode=require"),
            "postgresql://u:***@h/db?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=s3cret&sslmode=disable"),
            "postgres://h/db?user=u&password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://u:pa/ss@h/db?user=a@b&password=x"),
            "postgres://u:***@h/db?user=a@b&password=***"
        );
        assert_eq!(
            redact_url("postgres://u:pw@h?PassWord=x#frag"),
            "postgres://u:***@h?PassWord=***#frag"
        );
        // Nothing secret: unchanged.
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("https://relay.example/x"),
            "https://relay.example/x"
        );
        assert_eq!(redact_url("vexil.db"), "vexil.db");
        assert_eq!(
            redact_url("sqlite:///var/lib/vexil.db"),
            "sqlite:///var/lib/vexil.db"
        );
    }
}
