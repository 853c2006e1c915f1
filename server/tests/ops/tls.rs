//! TLS: the control plane and a relay serving HTTPS with certificates generated here by a
//! private CA; the relay trusts that CA for its upstream (`VEXIL_UPSTREAM_CA`). Rotating the
//! certificate files reloads them (the server on SIGHUP, the relay on file change): new
//! connections get the new certificate while streams opened before keep flowing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use reqwest::tls::TlsInfo;
use serde_json::json;
use tokio::net::TcpListener;
use vexil_relay::{Relay, RelayConfig};
use vexil_server::Config;
use vexil_testkit::sse::SseReader;

use crate::expect;

const ADMIN: &str = "vxa_abababababababababababababababab";
const WAIT: Duration = Duration::from_secs(20);

/// A certificate for 127.0.0.1 signed by `ca`: (PEM chain, PEM key, DER of the leaf).
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>) -> (String, String, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Writes a certificate and key as a rotation tool would: each file replaced by a rename.
fn install(
    dir: &Path,
    name: &str,
    (cert, key, _): &(String, String, Vec<u8>),
) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}.crt"));
    let k = dir.join(format!("{name}.key"));
    for (path, text) in [(&k, key), (&c, cert)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    (c, k)
}

/// A client that trusts `ca` and has never connected: its first request makes a full
/// handshake (a client that connected before could resume its TLS session, and a resumed
/// session reports the certificate of the session it resumes).
fn fresh(ca: &reqwest::Certificate) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .tls_info(true)
        .build()
        .unwrap()
}

/// The DER of the certificate a full handshake with `url` is served.
async fn served_cert(ca: &reqwest::Certificate, url: &str) -> Vec<u8> {
    let res = fresh(ca).get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    res.extensions()
        .get::<TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS peer certificate")
        .to_vec()
}

/// Polls until a full handshake with `url` is served `want` (or fails after [`WAIT`]).
async fn until_served(ca: &reqwest::Certificate, url: &str, want: &[u8]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while served_cert(ca, url).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} still serves the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_event(sse: &mut SseReader) -> vexil_testkit::sse::Event {
    tokio::time::timeout(WAIT, sse.next_event())
        .await
        .expect("an event arrives in time")
        .expect("the stream stays open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_on_server_and_relay_with_certificate_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let (server_v1, relay_v1) = (leaf(&ca), leaf(&ca));
    let (server_cert, server_key) = install(dir.path(), "server", &server_v1);
    let (relay_cert, relay_key_file) = install(dir.path(), "relay", &relay_v1);

    // The control plane on HTTPS; its files are re-read on SIGHUP only (the check interval
    // is an hour), so the rotation below proves the signal path.
    let mut config = Config::with_database(dir.path().join("vexil.db").to_string_lossy());
    config.bootstrap_token = Some(ADMIN.to_owned());
    config.drain_ms = 100;
    config.tls.tls_cert = Some(server_cert);
    config.tls.tls_key = Some(server_key);
    config.tls.tls_reload_interval = Duration::from_secs(3600);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let built = vexil_server::Server::build(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(built.serve(listener, async {
        let _ = stopped.await;
    }));
    let base = format!("https://{addr}");

    // Clients trust the private CA only through the certificate given here.
    let ca_cert = reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca_cert.clone())
        .tls_info(true)
        .build()
        .unwrap();
    assert_eq!(
        served_cert(&ca_cert, &format!("{base}/readyz")).await,
        server_v1.2
    );
    // Plain HTTP on the TLS port is not served.
    assert!(
        !reqwest::get(format!("http://{addr}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    );
    // A client without the CA refuses the certificate.
    assert!(reqwest::get(format!("{base}/readyz")).await.is_err());

    let api = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(ADMIN)
    };
    use reqwest::Method;
    expect(
        api(Method::POST, "/api/v1/projects")
            .json(&json!({"key": "p", "name": "P"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    expect(
        api(Method::POST, "/api/v1/projects/p/environments")
            .json(&json!({"key": "prod", "name": "Prod"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    expect(
        api(Method::POST, "/api/v1/projects/p/flags")
            .json(&json!({"key": "f", "name": "F", "kind": "boolean",
        "variations": [{"value": true}, {"value": false}]}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let sdk = expect(
        api(
            Method::POST,
            "/api/v1/projects/p/environments/prod/sdk-keys",
        )
        .json(&json!({"name": "sdk"}))
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let sdk = sdk["secret"].as_str().unwrap().to_owned();
    let relay_key = expect(
        api(Method::POST, "/api/v1/relay-keys")
            .json(&json!({"name": "edge",
        "environments": [{"project": "p", "environment": "prod"}]}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let relay_key = relay_key["secret"].as_str().unwrap().to_owned();

    // The relay: upstream over HTTPS trusting the CA file, HTTPS for SDKs, files checked
    // every 50 ms.
    let mut rc = RelayConfig::new(base.clone(), relay_key);
    rc.upstream_ca = Some(ca_path);
    rc.tls.tls_cert = Some(relay_cert);
    rc.tls.tls_key = Some(relay_key_file);
    rc.tls.tls_reload_interval = Duration::from_millis(50);
    rc.metrics = false;
    rc.drain_window = Duration::from_millis(100);
    let relay_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_base = format!("https://{}", relay_listener.local_addr().unwrap());
    let relay = Relay::new(rc).unwrap();
    let (relay_stop, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(relay.serve(relay_listener, async {
        let _ = relay_stopped.await;
    }));
    // Ready once its upstream stream (TLS to the control plane) delivered the environments.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let res = fresh(&ca_cert)
            .get(format!("{relay_base}/readyz"))
            .send()
            .await;
        if res.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served_cert(&ca_cert, &format!("{relay_base}/readyz")).await,
        relay_v1.2
    );

    // An SDK stream over TLS from the relay, opened before any rotation.
    let res = client
        .get(format!("{relay_base}/sdk/v1/stream"))
        .header("authorization", &sdk)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut sse = SseReader::new(res);
    let put = next_event(&mut sse).await;
    assert_eq!(put.event, "put");
    assert_eq!(put.json()["flags"][0]["key"], "f");
    assert_eq!(put.json()["flags"][0]["on"], false);

    // Rotate both certificates. The relay notices the file change; the server reloads on
    // SIGHUP.
    let (server_v2, relay_v2) = (leaf(&ca), leaf(&ca));
    install(dir.path(), "relay", &relay_v2);
    until_served(&ca_cert, &format!("{relay_base}/readyz"), &relay_v2.2).await;
    install(dir.path(), "server", &server_v2);
    assert_eq!(
        served_cert(&ca_cert, &format!("{base}/readyz")).await,
        server_v1.2,
        "no reload before the signal (the check interval is an hour)"
    );
    let pid = std::process::id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    until_served(&ca_cert, &format!("{base}/readyz"), &server_v2.2).await;

    // The streams opened before the rotations still flow: a change made now travels the
    // relay's upstream TLS stream and the SDK's TLS stream, both from before.
    expect(
        api(
            Method::PATCH,
            "/api/v1/projects/p/flags/f/environments/prod",
        )
        .json(&json!({"on": true}))
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let patch = next_event(&mut sse).await;
    assert_eq!(patch.event, "patch", "{patch:?}");
    assert_eq!(patch.json()["flag"]["on"], true);

    let _ = relay_stop.send(());
    relay_task.await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
