//! `vexil-server admin …`, the real binary against a running server's database: recovery
//! of a lost admin token, listing and revoking tokens and keys, migrations alone, checking a
//! configuration, and flags as code between two installations.

use std::process::Output;

use serde_json::{Value, json};
use tokio::process::Command;
use vexil_testkit::{Backend, TestDatabase, spawn_app_with};

use crate::expect;

async fn admin(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vexil-server"))
        .arg("admin")
        .args(args)
        .env("VEXIL_DATABASE_URL", database_url)
        .env("USER", "ops-test")
        .env_remove("RUST_LOG")
        .env_remove("VEXIL_BOOTSTRAP_TOKEN")
        .output()
        .await
        .expect("run vexil-server admin")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_recover_list_revoke_and_move_projects() {
    // Answers from the database on every request, so revocations show at once.
    let app = spawn_app_with(Backend::Postgres, |c| c.token_cache_ms = 0).await;
    let url = app.database.url.clone();

    // Migrations and the configuration check on a current database.
    assert!(stdout(&admin(&url, &["migrate"]).await).contains("already current"));
    let check = stdout(&admin(&url, &["check-config"]).await);
    assert!(
        check.contains("schema is current") && !check.contains("PROBLEM"),
        "{check}"
    );
    // A database that does not answer is a problem, and a non-zero exit.
    let bad = admin("postgres://postgres@127.0.0.1:1/none", &["check-config"]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("PROBLEM"));

    // Every admin token lost: the command line makes a new one, which the running server
    // accepts at once, and the audit log says who made it.
    expect(app.delete("/api/v1/tokens/1").send().await.unwrap(), 200).await;
    expect(app.get("/api/v1/me").send().await.unwrap(), 401).await;
    let out = stdout(&admin(&url, &["create-token", "--name", "rescue"]).await);
    let secret = out.lines().last().unwrap().trim().to_owned();
    assert!(secret.starts_with("vxa_"), "{out}");
    let me = expect(
        app.client
            .get(app.url("/api/v1/me"))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("rescue"), Some("admin"))
    );
    let audit = expect(
        app.client
            .get(app.url("/api/v1/audit?action=token.create"))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "admin-cli:ops-test"),
        "{audit}"
    );

    // A scoped token from the command line.
    let as_admin =
        |m: reqwest::Method, p: &str| app.client.request(m, app.url(p)).bearer_auth(&secret);
    expect(
        as_admin(reqwest::Method::POST, "/api/v1/projects")
            .json(&json!({"key": "shop", "name": "Shop"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    expect(
        as_admin(reqwest::Method::POST, "/api/v1/projects/shop/environments")
            .json(&json!({"key": "prod", "name": "Prod"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let out = stdout(
        &admin(
            &url,
            &[
                "create-token",
                "--name",
                "shop-ci",
                "--role",
                "editor",
                "--scope",
                "shop/prod=viewer",
            ],
        )
        .await,
    );
    let scoped = out.lines().last().unwrap().trim().to_owned();
    let me = expect(
        app.client
            .get(app.url("/api/v1/me"))
            .bearer_auth(&scoped)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        me["scopes"],
        json!([{"project": "shop", "environment": "prod", "role": "viewer"}])
    );
    assert!(
        !admin(
            &url,
            &["create-token", "--name", "x", "--scope", "nope=viewer"]
        )
        .await
        .status
        .success()
    );

    // Listing and revoking.
    let tokens = stdout(&admin(&url, &["list-tokens", "--json"]).await);
    let tokens: Vec<Value> = tokens
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(tokens.iter().all(|t| t.get("secret").is_none()));
    let ci = tokens.iter().find(|t| t["name"] == "shop-ci").unwrap();
    stdout(&admin(&url, &["revoke-token", &ci["id"].to_string()]).await);
    expect(
        app.client
            .get(app.url("/api/v1/me"))
            .bearer_auth(&scoped)
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    let key = expect(
        as_admin(
            reqwest::Method::POST,
            "/api/v1/projects/shop/environments/prod/sdk-keys",
        )
        .json(&json!({"name": "svc"}))
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let keys = stdout(&admin(&url, &["list-keys", "--kind", "sdk"]).await);
    assert!(
        keys.contains("svc") && keys.contains("shop/prod") && keys.contains("live"),
        "{keys}"
    );
    assert!(!keys.contains(key["secret"].as_str().unwrap()));
    stdout(
        &admin(
            &url,
            &["revoke-key", "--kind", "sdk", &key["id"].to_string()],
        )
        .await,
    );
    assert!(stdout(&admin(&url, &["list-keys"]).await).contains("revoked"));

    // Flags as code: export from PostgreSQL, import into a SQLite installation.
    expect(as_admin(reqwest::Method::POST, "/api/v1/projects/shop/flags")
        .json(&json!({"key": "f", "name": "F", "kind": "boolean", "variations": [{"value": true}, {"value": false}]}))
        .send().await.unwrap(), 201).await;
    let path = std::env::temp_dir().join(format!(
        "vexil-export-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    let file = path.to_str().unwrap();
    stdout(&admin(&url, &["export", "--project", "shop", "--output", file]).await);
    let exported = std::fs::read_to_string(file).unwrap();
    // The same project exports to the same bytes; to stdout, with no log lines mixed in.
    assert_eq!(
        stdout(&admin(&url, &["export", "--project", "shop"]).await),
        exported
    );
    // Importing into the installation it came from changes nothing.
    let report: Value =
        serde_json::from_str(&stdout(&admin(&url, &["import", "--file", file]).await)).unwrap();
    assert_eq!(report["changes"], json!([]));

    let target = TestDatabase::create(Backend::Sqlite).await;
    assert!(stdout(&admin(&target.url, &["migrate"]).await).contains("applied"));
    let plan: Value = serde_json::from_str(&stdout(
        &admin(&target.url, &["import", "--file", file, "--dry-run"]).await,
    ))
    .unwrap();
    assert_eq!(plan["dry_run"], true);
    assert!(!plan["changes"].as_array().unwrap().is_empty());
    stdout(&admin(&target.url, &["import", "--file", file]).await);
    assert_eq!(
        stdout(&admin(&target.url, &["export", "--project", "shop"]).await),
        exported
    );
    let _ = std::fs::remove_file(&path);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_refuse_a_database_that_is_not_migrated() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let out = admin(&db.url, &["list-tokens"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin migrate"),
        "{out:?}"
    );
    let check = admin(&db.url, &["check-config"]).await;
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("migrations are pending"));
}
