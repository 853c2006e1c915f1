//! Process signals shared by the relay and server binaries.

/// Completes on ctrl-c or, on Unix, SIGTERM: the graceful-shutdown trigger of both
/// binaries. If a signal cannot be listened for, that is logged and only the other one
/// counts.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Keeps SIGHUP from terminating a process that has nothing to reload on it. The systemd
/// units' `ExecReload` and `kill -HUP` send SIGHUP to reload the TLS certificate files; when
/// TLS is off no one listens for it and the signal's default action would end the process.
/// This listens for it (registered before returning) and logs that nothing was reloaded.
/// Call it from within a tokio runtime, only when TLS is off (the TLS reloader listens
/// otherwise).
pub fn hangup_reloads_nothing() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!(
                        "SIGHUP received: nothing to reload (TLS is off; other settings take a restart)"
                    );
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP: it would end the process"),
    }
}
