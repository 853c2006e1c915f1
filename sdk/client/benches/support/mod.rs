//! Shared by `benches/client.rs` and `examples/client_loop.rs`: 10,000 generated flags and a
//! local hub serving them.

use std::future::IntoFuture;

use serde_json::json;
use vexil_fanout::{Hub, HubConfig, SdkKeyTable, hash_sdk_key, sdk_router};
use vexil_schema::stream::EnvironmentId;
use vexil_schema::{EnvironmentSnapshot, Flag};

/// `n` flags of a realistic shape: a boolean with ten targets, two rules of two clauses
/// and a percentage rollout.
pub fn many_flags(n: usize, version: u64) -> EnvironmentSnapshot {
    let flags = (0..n)
        .map(|i| {
            let f = json!({
                "key": format!("flag-{i:05}"),
                "kind": "boolean",
                "variations": [{"value": true}, {"value": false}],
                "on": true,
                "off_variation": 1,
                "targets": [{"variation": 0, "values": (0..10).map(|t| format!("user-{i}-{t}")).collect::<Vec<_>>()}],
                "rules": [
                    {"id": "internal", "serve": {"variation": 0}, "clauses": [
                        {"attribute": "email", "op": "ends_with", "values": ["@example.com"]},
                        {"attribute": "country", "op": "in", "values": ["FR", "DE", "NL"]}
                    ]},
                    {"id": "beta", "serve": {"variation": 0}, "clauses": [
                        {"attribute": "plan", "op": "in", "values": ["beta", "enterprise"]},
                        {"attribute": "version", "op": "semver_gt", "values": ["2.1.0"]}
                    ]}
                ],
                "fallthrough": {"rollout": {"variations": [
                    {"variation": 0, "weight": 25000}, {"variation": 1, "weight": 75000}
                ]}},
                "salt": format!("salt-{i}"),
                "version": 1
            });
            match serde_json::from_value::<Flag>(f) {
                Ok(f) => f,
                Err(e) => panic!("generated flag: {e}"),
            }
        })
        .collect();
    EnvironmentSnapshot {
        version,
        flags,
        segments: vec![],
    }
}

/// The SDK key the hub accepts.
pub const KEY: &str = "sdk-bench-key";

/// A hub holding 10,000 flags, served on a local socket by its own runtime.
pub struct LocalHub {
    /// The hub's base URL.
    pub url: String,
    _runtime: tokio::runtime::Runtime,
}

/// Starts the hub (it stops when the returned value is dropped).
pub fn local_hub() -> LocalHub {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => panic!("runtime: {e}"),
    };
    let url = runtime.block_on(async {
        let env = match EnvironmentId::parse("bench/production") {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        };
        let hub = Hub::new(HubConfig::default());
        if let Err(e) = hub.publish_snapshot(&env, &many_flags(10_000, 1)) {
            panic!("publish: {e}");
        }
        let keys = SdkKeyTable::new();
        keys.set_environment_keys(&env, &[hash_sdk_key(KEY)]);
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let url = match listener.local_addr() {
            Ok(a) => format!("http://{a}"),
            Err(e) => panic!("{e}"),
        };
        tokio::spawn(axum::serve(listener, sdk_router(hub, keys)).into_future());
        url
    });
    LocalHub {
        url,
        _runtime: runtime,
    }
}
