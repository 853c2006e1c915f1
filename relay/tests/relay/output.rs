//! What the relay binary writes: no credential of its upstream URL, and no terminal colour
//! codes when its output is not a terminal (a file, a pipe, a log collector).

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::harness::{RELAY_KEY, WAIT, free_port};

#[tokio::test]
async fn piped_text_logs_carry_no_upstream_password_and_no_colour_codes() {
    // Nothing listens there: the relay logs the URL when it starts and on every retry.
    let upstream_port = free_port().await.port();
    let upstream =
        format!("http://relay:s3cret-pw@127.0.0.1:{upstream_port}/?password=also-secret");
    let mut child = Command::new(crate::RELAY_BIN)
        .args(["--upstream-url", &upstream, "--listen", "127.0.0.1:0"])
        .args(["--log-format", "text", "--upstream-backoff-initial", "50ms"])
        .env("VEXIL_RELAY_KEY", RELAY_KEY)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start the relay binary");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let (mut listening, mut retried) = (false, false);
    tokio::time::timeout(WAIT, async {
        while !(listening && retried) {
            let Some(line) = stdout.next_line().await.unwrap() else {
                break;
            };
            listening |= line.contains("vexil relay listening");
            retried |= line.contains("upstream unavailable");
            seen.push(line);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the relay logged its start and a retry in time: {seen:#?}"));
    child.kill().await.unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        tokio::io::AsyncReadExt::read_to_string(&mut e, &mut stderr)
            .await
            .unwrap();
    }
    assert!(listening && retried, "{seen:#?}");
    let all = format!("{}\n{stderr}", seen.join("\n"));
    assert!(
        all.contains(&format!("127.0.0.1:{upstream_port}")),
        "the URL is logged (redacted), not dropped: {all}"
    );
    assert!(!all.contains("s3cret-pw"), "a password was logged: {all}");
    assert!(!all.contains("also-secret"), "a password was logged: {all}");
    assert!(
        !all.contains('\x1b'),
        "colour codes in piped output: {all:?}"
    );
}
