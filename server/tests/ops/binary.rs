//! The real `vexil-server` binary: no credentials and no colour codes in what it prints.

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
