//! The real `vexil-server` binary: no credentials and no colour codes in what it prints, and
//! SIGHUP (the systemd unit's `ExecReload`) harmless without TLS.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use vexil_testkit::{Backend, TestDatabase};

const PASSWORD: &str = "Sup3r-S3cret-Passw0rd";

/// The test database's URL with a password in it (the shared server trusts local users, so
/// the password is sent and ignored).
fn url_with_password(db: &TestDatabase) -> String {
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').unwrap();
    format!("{scheme}://{user}:{PASSWORD}@{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_no_password_and_no_colour_codes() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let url = url_with_password(&db);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vexil-server"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "text"])
        .env("VEXIL_DATABASE_URL", &url)
        .env_remove("RUST_LOG")
        .env_remove("VEXIL_BOOTSTRAP_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start vexil-server");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    // Read until the generated admin token is shown: everything start-up prints is out.
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.trim_start().starts_with("vxa_") {
                return true;
            }
        }
        false
    })
    .await;
    child.start_kill().unwrap();
    let mut rest = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        stdout.get_mut().read_to_string(&mut rest),
    )
    .await;
    printed.push_str(&rest);
    let mut stderr = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        child.stderr.take().unwrap().read_to_string(&mut stderr),
    )
    .await;
    let _ = child.wait().await;
    printed.push_str(&stderr);
    assert_eq!(started, Ok(true), "the server did not start: {printed}");
    assert!(printed.contains("listening"), "{printed}");
    assert!(
        !printed.contains(PASSWORD),
        "the password was printed:\n{printed}"
    );
    assert!(
        printed.contains(":***@"),
        "the URL is shown redacted:\n{printed}"
    );
    assert!(
        !printed.contains("\x1b["),
        "colour codes on a pipe:\n{printed:?}"
    );

    // `--help` shows the variable but not its value.
    let help = Command::new(env!("CARGO_BIN_EXE_vexil-server"))
        .arg("--help")
        .env("VEXIL_DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("VEXIL_DATABASE_URL"), "{help}");
    assert!(
        !help.contains(PASSWORD),
        "--help printed the password:\n{help}"
    );
}

/// Reads `lines` until one contains `needle` (or fails after a minute), returning it.
async fn line_with<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    needle: &str,
    seen: &mut String,
) -> String {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        Ok(None) => panic!("the server exited before printing '{needle}':\n{seen}"),
        Err(_) => panic!("no '{needle}' within a minute:\n{seen}"),
    }
}

/// The systemd unit's `ExecReload` sends SIGHUP, which reloads the TLS files. Started without
/// TLS the server has nothing to reload: it logs so and keeps answering, where the signal's
/// default action would have ended it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_is_logged_and_the_server_keeps_serving() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vexil-server"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("VEXIL_DATABASE_URL", &db.url)
        .env("RUST_LOG", "info")
        .env_remove("VEXIL_BOOTSTRAP_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start vexil-server");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let banner = line_with(&mut stdout, "listening on http://", &mut seen).await;
    let base = banner[banner.find("http://").unwrap()..].trim().to_owned();
    let pid = child.id().expect("running").to_string();
    for _ in 0..2 {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        line_with(&mut stdout, "SIGHUP received: nothing to reload", &mut seen).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server exited on SIGHUP:\n{seen}"
    );
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
