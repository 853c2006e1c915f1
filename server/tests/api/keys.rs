//! API tokens, SDK keys and relay keys.

use serde_json::json;
use vexil_server::Store;
use vexil_server::db::{Db, DbOptions};
use vexil_server::store::{AccessKeyKind, RelayEnvironment};

use crate::both;
use crate::helpers::expect;

both! {
    async fn tokens_are_shown_once_and_listed_without_secrets(app) {
        let created = expect(app.post("/api/v1/tokens", &json!({"name": "ci", "role": "editor"})).send().await.unwrap(), 201).await;
        let secret = created["secret"].as_str().unwrap();
        assert!(secret.starts_with("vxa_") && secret.len() == 68, "{secret}");
        assert_eq!(created["role"], "editor");
        let list = expect(app.get("/api/v1/tokens").send().await.unwrap(), 200).await;
        let text = list.to_string();
        assert!(!text.contains(secret));
        assert!(!text.contains(&app.admin_token));
        let names: Vec<_> = list["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(names, ["bootstrap-admin", "ci"]);
        assert!(list.get("next_cursor").is_none());
        assert!(list["items"][1]["hint"].as_str().unwrap().ends_with(&secret[secret.len() - 4..]));
        expect(app.post("/api/v1/tokens", &json!({"name": "ci", "role": "viewer"})).send().await.unwrap(), 409).await;
        expect(app.post("/api/v1/tokens", &json!({"name": "x", "role": "root"})).send().await.unwrap(), 422).await;
        expect(app.delete("/api/v1/tokens/999999").send().await.unwrap(), 404).await;
    }

    async fn sdk_and_relay_keys_are_masked_rotated_and_revoked(app) {
        app.project("p", &["dev", "prod"]).await;
        let sdk = expect(app.post("/api/v1/projects/p/environments/prod/sdk-keys", &json!({"name": "web"})).send().await.unwrap(), 201).await;
        let secret = sdk["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("vxs_"));
        assert_eq!(sdk["environments"], json!([{"project": "p", "environment": "prod"}]));
        let list = expect(app.get("/api/v1/projects/p/environments/prod/sdk-keys").send().await.unwrap(), 200).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert!(!list.to_string().contains(&secret));
        let other_env = expect(app.get("/api/v1/projects/p/environments/dev/sdk-keys").send().await.unwrap(), 200).await;
        assert!(other_env["items"].as_array().unwrap().is_empty());
        let id = sdk["id"].as_i64().unwrap();
        // Addressed under the wrong environment, the key does not exist.
        expect(app.post(&format!("/api/v1/projects/p/environments/dev/sdk-keys/{id}/rotate"), &json!({})).send().await.unwrap(), 404).await;
        let rotated = expect(app.post(&format!("/api/v1/projects/p/environments/prod/sdk-keys/{id}/rotate"), &json!({"grace_seconds": 300})).send().await.unwrap(), 200).await;
        let new_secret = rotated["secret"].as_str().unwrap().to_owned();
        assert_ne!(new_secret, secret);
        assert!(rotated["previous_expires_at"].is_string());

        let relay = expect(app.post("/api/v1/relay-keys", &json!({"name": "edge-eu", "environments": [
            {"project": "p", "environment": "dev"}, {"project": "p", "environment": "prod"}]})).send().await.unwrap(), 201).await;
        let relay_secret = relay["secret"].as_str().unwrap().to_owned();
        assert!(relay_secret.starts_with("vxr_"));
        let bad = expect(app.post("/api/v1/relay-keys", &json!({"name": "x", "environments": [{"project": "p", "environment": "nope"}]})).send().await.unwrap(), 422).await;
        assert_eq!(bad["errors"][0]["path"], "environments[0].environment");

        // What the keys open, as the SDK endpoints will check it.
        let store = Store::new(Db::connect(&DbOptions { url: app.database.url.clone(), max_connections: 2 }).await.unwrap());
        let scope = store.authenticate_access_key(&new_secret).await.unwrap().expect("new secret works");
        assert_eq!(scope.kind, AccessKeyKind::Sdk);
        assert_eq!(scope.environments, vec![RelayEnvironment { project: "p".into(), environment: "prod".into() }]);
        assert!(store.authenticate_access_key(&secret).await.unwrap().is_some(), "old secret works during the grace period");
        let scope = store.authenticate_access_key(&relay_secret).await.unwrap().expect("relay key works");
        assert_eq!(scope.environments.len(), 2);
        assert!(store.authenticate_access_key("vxs_nope").await.unwrap().is_none());
        assert!(store.authenticate_access_key(&app.admin_token).await.unwrap().is_none());

        // Rotating without grace ends the old secret at once; revoking ends every secret.
        let again = expect(app.post(&format!("/api/v1/projects/p/environments/prod/sdk-keys/{id}/rotate"), &json!({})).send().await.unwrap(), 200).await;
        assert!(store.authenticate_access_key(&new_secret).await.unwrap().is_none());
        let newest = again["secret"].as_str().unwrap().to_owned();
        assert!(store.authenticate_access_key(&newest).await.unwrap().is_some());
        let revoked = expect(app.delete(&format!("/api/v1/projects/p/environments/prod/sdk-keys/{id}")).send().await.unwrap(), 200).await;
        assert!(revoked["revoked_at"].is_string());
        assert!(store.authenticate_access_key(&newest).await.unwrap().is_none());
        expect(app.post(&format!("/api/v1/projects/p/environments/prod/sdk-keys/{id}/rotate"), &json!({})).send().await.unwrap(), 409).await;
        let rid = relay["id"].as_i64().unwrap();
        expect(app.delete(&format!("/api/v1/relay-keys/{rid}")).send().await.unwrap(), 200).await;
        assert!(store.authenticate_access_key(&relay_secret).await.unwrap().is_none());
        let relays = expect(app.get("/api/v1/relay-keys").send().await.unwrap(), 200).await;
        assert!(relays["items"][0]["revoked_at"].is_string());
        store.db().close().await;
    }
}

both! {
    async fn a_restart_recovers_when_every_admin_token_was_revoked(app) {
        let me = expect(app.get("/api/v1/me").send().await.unwrap(), 200).await;
        // The only admin revokes itself: nobody can manage tokens any more.
        expect(app.delete(&format!("/api/v1/tokens/{}", me["token_id"])).send().await.unwrap(), 200).await;
        expect(app.get("/api/v1/me").send().await.unwrap(), 401).await;
        // A restart with a bootstrap token creates a new admin under a fresh name.
        let mut config = vexil_server::Config::with_database(app.database.url.clone());
        let fresh = format!("vxa_{}", "ab".repeat(32));
        config.bootstrap_token = Some(fresh.clone());
        let server = vexil_server::Server::build(config).await.unwrap();
        assert!(server.generated_admin_token().is_none(), "the supplied token is not printed");
        let actor = server.store().authenticate_token(&fresh).await.unwrap().expect("new admin");
        assert_eq!(actor.role, vexil_server::auth::Role::Admin);
        assert!(actor.name.starts_with("bootstrap-admin-"), "{}", actor.name);
        // With a live admin, another restart creates nothing.
        let mut config = vexil_server::Config::with_database(app.database.url.clone());
        config.bootstrap_token = Some(format!("vxa_{}", "cd".repeat(32)));
        let again = vexil_server::Server::build(config).await.unwrap();
        assert!(again.store().authenticate_token(&format!("vxa_{}", "cd".repeat(32))).await.unwrap().is_none());
    }
}
