use std::io::Read;

use vexil_fanout::HubConfig;
use vexil_schema::EnvironmentSnapshot;

use crate::helpers::*;

async fn get(app: &App, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app
        .client
        .get(app.url("/sdk/v1/snapshot"))
        .header("authorization", KEY);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn snapshot_has_an_etag_and_answers_304_when_unchanged() {
    let app = spawn(HubConfig::default()).await;
    let snap = snapshot(4, vec![flag("a", 0)]);
    app.hub.publish_snapshot(&env(), &snap).unwrap();

    let resp = get(&app, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], "\"4\"");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().get("content-encoding").is_none());
    let body: EnvironmentSnapshot = resp.json().await.unwrap();
    assert_eq!(body, snap);

    let resp = get(&app, &[("if-none-match", "\"4\"")]).await;
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], "\"4\"");
    assert!(resp.bytes().await.unwrap().is_empty());

    app.hub.publish_change(&env(), &delete(5, "a")).unwrap();
    let resp = get(&app, &[("if-none-match", "\"4\"")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], "\"5\"");
    let body: EnvironmentSnapshot = resp.json().await.unwrap();
    assert_eq!(body, snapshot(5, vec![]));
}

#[tokio::test]
async fn snapshot_is_gzipped_when_accepted() {
    let app = spawn(HubConfig::default()).await;
    let flags = (0..200)
        .map(|i| flag(&format!("flag-{i:03}"), i % 2))
        .collect();
    let snap = snapshot(7, flags);
    app.hub.publish_snapshot(&env(), &snap).unwrap();

    for _ in 0..2 {
        // Twice: the second answer comes from the cached compression.
        let resp = get(&app, &[("accept-encoding", "br, gzip")]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-encoding"], "gzip");
        assert_eq!(resp.headers()["vary"], "accept-encoding");
        let compressed = resp.bytes().await.unwrap();
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut json)
            .unwrap();
        assert!(
            compressed.len() < json.len() / 4,
            "{} vs {}",
            compressed.len(),
            json.len()
        );
        let body: EnvironmentSnapshot = serde_json::from_slice(&json).unwrap();
        assert_eq!(body, snap);
    }

    let resp = get(&app, &[("accept-encoding", "gzip;q=0")]).await;
    assert!(resp.headers().get("content-encoding").is_none());
    let body: EnvironmentSnapshot = resp.json().await.unwrap();
    assert_eq!(body, snap);
}
