//! Several relay processes on one port (`--reuse-port`): the kernel spreads SDK streams over
//! them, each process serves its share, and losing one leaves the port served.

use crate::harness::*;

#[tokio::test]
async fn two_relay_processes_share_one_port_and_split_the_streams() {
    let mut origin = Origin::start(&["shop/prod"]).await;
    origin.set("shop/prod", "banner", serde_json::json!(true));
    let addr = free_port().await;
    // Started with a soft descriptor limit below the hard one: the relay raises it.
    let mut a = RelayProcess::start_wrapped(
        &["prlimit", "--nofile=256:4096"],
        &origin.url(),
        addr,
        &["--reuse-port", "true"],
    )
    .await;
    assert_eq!(a.nofile_limits(), (4096, 4096));
    a.wait_ready().await;
    let mut b = RelayProcess::start(&origin.url(), addr, &["--reuse-port", "true"]).await;
    b.wait_ready().await;
    assert_eq!((a.addr, b.addr), (addr, addr));

    // A third process without the option cannot take the port: it exits with an error.
    let mut c = tokio::process::Command::new(crate::RELAY_BIN)
        .args([
            "--upstream-url",
            &origin.url(),
            "--listen",
            &addr.to_string(),
        ])
        .env("VEXIL_RELAY_KEY", RELAY_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(WAIT, c.wait()).await.unwrap().unwrap();
    assert!(
        !status.success(),
        "a relay without --reuse-port joined the port"
    );

    // Streams on the shared port: every one gets the state, whichever process took it.
    let url = format!("http://{addr}");
    let mut subs: Vec<Subscriber> = (0..24)
        .map(|_| Subscriber::start(&url, &sdk_key("shop/prod")))
        .collect();
    for s in &mut subs {
        s.wait_version(1).await;
    }
    origin.set("shop/prod", "banner", serde_json::json!(false));
    for s in &mut subs {
        s.wait_version(2).await;
    }

    // Killing one process ends only its share of the streams; those reconnect to the other
    // (the subscribers retry every 50 ms) and every stream gets the next change. A stream that
    // was on the killed process can only reach version 3 after a disconnect.
    a.kill().await;
    origin.set("shop/prod", "banner", serde_json::json!(true));
    for s in &mut subs {
        s.wait_version(3).await;
    }
    let moved = subs.iter().filter(|s| s.seen().disconnects > 0).count();
    assert!(
        moved > 0 && moved < subs.len(),
        "{moved} of {} streams were on the killed process: the port was not shared",
        subs.len()
    );
    assert_eq!(get(&format!("{url}/readyz"), None).await.0, 200);
    b.kill().await;
}

#[tokio::test]
async fn out_of_descriptors_the_relay_counts_accept_errors_and_recovers() {
    let origin = Origin::start(&["shop/prod"]).await;
    // A hard limit of 40 descriptors: the relay's own (runtime, upstream, stdio) take ~15.
    let mut relay = RelayProcess::start_wrapped(
        &["prlimit", "--nofile=40:40"],
        &origin.url(),
        free_port().await,
        &[],
    )
    .await;
    assert_eq!(relay.nofile_limits(), (40, 40));
    relay.wait_ready().await;

    // Idle connections past the limit: the kernel completes them into the backlog, the
    // relay's accepts fail with EMFILE.
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(tokio::net::TcpStream::connect(relay.addr).await.unwrap());
    }
    let line = relay.wait_log("accept failed").await;
    assert_eq!(line["kind"], "emfile", "{line}");

    // Descriptors freed: the relay accepts again (its backoff is at most a second) and the
    // failures are in its metrics.
    drop(idle);
    let (status, _, metrics) = get(&format!("{}/metrics", relay.url()), None).await;
    assert_eq!(status, 200);
    let failed: f64 = metrics
        .lines()
        .find(|l| l.starts_with("vexil_accept_errors_total{kind=\"emfile\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no emfile accept errors in\n{metrics}"));
    assert!(failed >= 1.0, "{failed}");
    let mut sub = Subscriber::start(&relay.url(), &sdk_key("shop/prod"));
    sub.wait_version(1).await;
    relay.kill().await;
}
