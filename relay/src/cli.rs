//! The `vexil-relay` command: parse the configuration, set up logging, raise the
//! file-descriptor limit, bind (optionally sharing the port), serve until
//! SIGTERM/ctrl-c (then drain subscriber streams over `VEXIL_DRAIN_WINDOW` and exit).
//!
//! It lives in the library so that every binary that is the relay (`src/bin/vexil-relay.rs`,
//! and the end-to-end tests' copy in `relay/e2e`) is one line. It returns `anyhow` errors
//! because its only callers are binaries' `main` functions.

use anyhow::Context as _;
use clap::Parser;

use crate::{RelayConfig, listener, telemetry};

/// The relay's secrets that may be given in files: the variable and its flag. For each,
/// `<VARIABLE>_FILE` names a file holding the value (Docker and Kubernetes secrets, systemd
/// credentials), so the value never sits in the environment or on a command line.
pub const SECRET_FILES: &[(&str, &str)] = &[
    ("VEXIL_RELAY_KEY", "--relay-key"),
    ("VEXIL_DOWNSTREAM_RELAY_KEYS", "--downstream-relay-keys"),
    ("VEXIL_METRICS_TOKEN", "--metrics-token"),
];

/// `args` with each secret of [`SECRET_FILES`] whose `<VARIABLE>_FILE` is set appended as its
/// flag, the value read from the file (one trailing newline removed). The arguments are
/// only parsed in this process, never passed on, so the value does not show in the process
/// list. Giving a secret both as a file and directly (flag or variable) is an error rather
/// than a silent choice.
pub fn args_with_secret_files(
    mut args: Vec<std::ffi::OsString>,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> anyhow::Result<Vec<std::ffi::OsString>> {
    for (variable, flag) in SECRET_FILES {
        let file_var = format!("{variable}_FILE");
        let Some(path) = var(&file_var).filter(|p| !p.is_empty()) else {
            continue;
        };
        let on_command_line = args.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == *flag || a.starts_with(&format!("{flag}=")))
        });
        if on_command_line || var(variable).is_some_and(|v| !v.is_empty()) {
            anyhow::bail!("{file_var} is set, and so is {variable} or {flag}: give one of them");
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {file_var} ({})", path.to_string_lossy()))?;
        let value = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if value.is_empty() {
            anyhow::bail!("{file_var} ({}) is empty", path.to_string_lossy());
        }
        args.push(format!("{flag}={value}").into());
    }
    Ok(args)
}

/// Runs the relay with the configuration from the command line and `VEXIL_*` variables
/// (secrets also from `VEXIL_*_FILE`).
pub async fn main() -> anyhow::Result<()> {
    let args = args_with_secret_files(std::env::args_os().collect(), |n| std::env::var_os(n))?;
    let config = RelayConfig::parse_from(args);
    let traces = telemetry::init_with_traces(config.log_format)
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging and traces")?;
    // One descriptor per SDK stream: use every one the hard limit allows.
    match listener::raise_nofile_limit() {
        Ok(l) => tracing::info!(
            before = l.before,
            soft = l.after,
            hard = l.hard,
            "file-descriptor limit (RLIMIT_NOFILE): each SDK stream holds one"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file-descriptor limit"),
    }
    let listener = listener::bind(config.listen, config.reuse_port).with_context(|| {
        format!(
            "cannot listen on {}{}",
            config.listen,
            if config.reuse_port {
                " (with SO_REUSEPORT)"
            } else {
                ""
            }
        )
    })?;
    if config.tls.files().is_none() {
        vexil_fanout::signal::hangup_reloads_nothing();
    }
    let ran = crate::run(listener, config, vexil_fanout::signal::shutdown_signal()).await;
    if let Some(p) = traces {
        // Blocking: the exporter's thread sends the last batch.
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || p.shutdown()).await {
            tracing::warn!(error = %e, "traces not flushed at exit");
        }
    }
    ran.context("cannot start the relay")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn secrets_are_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "vxr_from_file\n").unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "scrape-me").unwrap();
        let vars = |name: &str| match name {
            "VEXIL_RELAY_KEY_FILE" => Some(key.clone().into_os_string()),
            "VEXIL_METRICS_TOKEN_FILE" => Some(token.clone().into_os_string()),
            _ => None,
        };
        let full =
            args_with_secret_files(args(&["vexil-relay", "--upstream-url", "http://up"]), vars)
                .unwrap();
        let config = RelayConfig::try_parse_from(full).unwrap();
        assert_eq!(config.relay_key, "vxr_from_file");
        assert_eq!(config.metrics_token.as_deref(), Some("scrape-me"));

        // Both a file and a flag, or a file and the variable: refused, not guessed.
        assert!(args_with_secret_files(args(&["vexil-relay", "--relay-key", "x"]), vars).is_err());
        let both = |name: &str| match name {
            "VEXIL_RELAY_KEY" => Some(OsString::from("direct")),
            n => vars(n),
        };
        assert!(args_with_secret_files(args(&["vexil-relay"]), both).is_err());
        // A missing or empty file is an error naming the variable.
        let missing = dir.path().join("missing").into_os_string();
        let err = args_with_secret_files(args(&["vexil-relay"]), |n: &str| {
            (n == "VEXIL_RELAY_KEY_FILE").then(|| missing.clone())
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("VEXIL_RELAY_KEY_FILE"),
            "{err:#}"
        );
        std::fs::write(&key, "\n").unwrap();
        assert!(args_with_secret_files(args(&["vexil-relay"]), vars).is_err());
        // No files: the arguments are unchanged.
        assert_eq!(
            args_with_secret_files(args(&["vexil-relay", "-h"]), |_: &str| None).unwrap(),
            args(&["vexil-relay", "-h"])
        );
    }
}
