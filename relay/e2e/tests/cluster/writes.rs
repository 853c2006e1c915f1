//! Concurrent writes through two server processes: every write is answered 200, 409 or 412
//! (never 500), `If-Match` admits exactly one writer, and no version is lost or reused. A
//! write that changes nothing creates no version.

use futures::future::join_all;
use serde_json::json;

use crate::harness::*;

const WRITES: usize = 40;

/// The flag's configuration version and the environment's version.
async fn versions(cluster: &Cluster, flag: &str) -> (u64, u64) {
    let body = cluster
        .expect(1, "GET", &config_path(flag), None, 200)
        .await;
    let cfg = body["config"]["version"]
        .as_u64()
        .or_else(|| body["version"].as_u64())
        .unwrap_or_else(|| panic!("a configuration version in {body}"));
    (cfg, cluster.environment_version().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_patches_on_two_servers_are_all_applied() {
    let cluster = Cluster::start(2, &["f"]).await;
    let (initial, _) = versions(&cluster, "f").await;
    let path = config_path("f");
    let results = join_all((0..WRITES).map(|i| {
        let body = json!({"targets": [{"variation": 0, "values": [format!("user-{i}")]}]});
        cluster.send(i % 2, "PATCH", &path, Some(body), None)
    }))
    .await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert!(
        statuses.iter().all(|s| [200, 409, 412].contains(s)),
        "only 200, 409 or 412: {results:?}\nserver 0:\n{}\nserver 1:\n{}",
        cluster.servers[0].logs(),
        cluster.servers[1].logs()
    );
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    let (last, _) = versions(&cluster, "f").await;
    assert_eq!(last, initial + ok, "one version per acknowledged write");
    // Without a precondition, nothing stands in a writer's way.
    assert_eq!(ok, WRITES as u64, "{statuses:?}");
    // Every acknowledged write got its own version.
    let mut seen: Vec<u64> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b["config"]["version"].as_u64().expect("version"))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len() as u64, ok, "no version given twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_if_match_admits_exactly_one_writer_across_servers() {
    let cluster = Cluster::start(2, &["f"]).await;
    let (initial, _) = versions(&cluster, "f").await;
    let path = config_path("f");
    let results = join_all((0..WRITES).map(|i| {
        let body = json!({"targets": [{"variation": 0, "values": [format!("user-{i}")]}]});
        cluster.send(i % 2, "PATCH", &path, Some(body), Some(initial))
    }))
    .await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "exactly one writer wins: {results:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        WRITES - 1,
        "every other writer gets 412: {results:?}"
    );
    let (last, _) = versions(&cluster, "f").await;
    assert_eq!(last, initial + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_changes_nothing_creates_no_version() {
    let cluster = Cluster::start(2, &["f"]).await;
    let (_, key) = cluster.sdk_key(0).await;
    let mut stream = Sse::open(&cluster.servers[1].base_url, &key).await;
    let put = stream.next().await.expect("the initial state");
    assert_eq!(put.event, "put");
    let (cfg, env) = versions(&cluster, "f").await;
    let audit_before = cluster
        .expect(0, "GET", "/api/v1/audit?limit=500", None, 200)
        .await["items"]
        .as_array()
        .map(Vec::len);

    // An empty patch, values equal to the current ones, and a PUT of the current
    // configuration: 200 with the unchanged configuration, and nothing else happens.
    let current = cluster.expect(0, "GET", &config_path("f"), None, 200).await;
    let same_on = current["on"].clone();
    for (i, (method, body)) in [
        ("PATCH", json!({})),
        ("PATCH", json!({"on": same_on})),
        ("PUT", current.clone()),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, answer) = cluster
            .send(i % 2, method, &config_path("f"), Some(body), None)
            .await;
        assert_eq!(status, 200, "{method}: {answer}");
        assert_eq!(
            answer["config"], current,
            "{method} answers the unchanged object"
        );
        assert_eq!(
            answer["environment_version"].as_u64(),
            Some(env),
            "{method}"
        );
    }
    assert_eq!(
        versions(&cluster, "f").await,
        (cfg, env),
        "no version was created"
    );
    let audit_after = cluster
        .expect(0, "GET", "/api/v1/audit?limit=500", None, 200)
        .await["items"]
        .as_array()
        .map(Vec::len);
    assert_eq!(audit_before, audit_after, "no audit entry");

    // The next event subscribers see is the next real change, one version later.
    let body = cluster
        .expect(
            0,
            "PATCH",
            &config_path("f"),
            Some(json!({"on": true})),
            200,
        )
        .await;
    assert_eq!(body["environment_version"].as_u64(), Some(env + 1));
    let next = stream.next().await.expect("the next change");
    assert_eq!(next.event, "patch");
    assert_eq!(next.version(), Some(env + 1), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putting_the_current_segment_or_environment_names_changes_nothing() {
    let cluster = Cluster::start(2, &[]).await;
    let base = "/api/v1/projects/p/environments/prod/segments";
    let created = cluster
        .expect(
            0,
            "POST",
            base,
            Some(json!({"key": "beta", "name": "Beta", "included": ["a", "b"]})),
            201,
        )
        .await;
    let env = cluster.environment_version().await;
    let audit_before = audit_len(&cluster).await;

    // The segment as it is (its salt and version included, or the salt left out).
    let mut same = created["segment"].clone();
    let put = cluster
        .expect(1, "PUT", &format!("{base}/beta"), Some(same.clone()), 200)
        .await;
    assert_eq!(put["segment"], created["segment"]);
    same["salt"] = json!("");
    let put = cluster
        .expect(0, "PUT", &format!("{base}/beta"), Some(same), 200)
        .await;
    assert_eq!(put["segment"]["version"], created["segment"]["version"]);
    assert_eq!(put["environment_version"].as_u64(), Some(env));

    // An environment's current name and description.
    let current = cluster
        .expect(0, "GET", "/api/v1/projects/p/environments/prod", None, 200)
        .await;
    let patched = cluster
        .expect(
            1,
            "PATCH",
            "/api/v1/projects/p/environments/prod",
            Some(json!({"name": current["name"], "description": current["description"]})),
            200,
        )
        .await;
    assert_eq!(patched["updated_at"], current["updated_at"]);

    assert_eq!(cluster.environment_version().await, env, "no version");
    assert_eq!(audit_len(&cluster).await, audit_before, "no audit entry");
    // A real change still is one.
    let changed = cluster
        .expect(
            1,
            "PUT",
            &format!("{base}/beta"),
            Some(json!({"key": "beta", "name": "Beta 2"})),
            200,
        )
        .await;
    assert_eq!(changed["environment_version"].as_u64(), Some(env + 1));
}

/// How many audit entries there are (at most 500).
async fn audit_len(cluster: &Cluster) -> Option<usize> {
    cluster
        .expect(0, "GET", "/api/v1/audit?limit=500", None, 200)
        .await["items"]
        .as_array()
        .map(Vec::len)
}
