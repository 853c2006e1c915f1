//! Shared helpers: the `both!` macro and small request helpers.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// Defines each test once and runs it against both backends:
/// `both! { async fn name(app) { ... } }` expands to `name::postgres` and `name::sqlite`.
#[macro_export]
macro_rules! both {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($app: vexil_testkit::TestApp) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    run(vexil_testkit::spawn_app(vexil_testkit::Backend::Postgres).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run(vexil_testkit::spawn_app(vexil_testkit::Backend::Sqlite).await).await;
                }
            }
        )*
    };
}

/// Asserts the status, returning the JSON body (or `null` for an empty one).
pub async fn expect(res: Response, status: u16) -> Value {
    let got = res.status();
    let text = res.text().await.expect("response body");
    assert_eq!(got, StatusCode::from_u16(status).unwrap(), "body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// A boolean flag definition.
pub fn bool_flag(key: &str) -> Value {
    json!({"key": key, "name": key, "kind": "boolean", "variations": [{"value": true}, {"value": false}]})
}

/// The path of a flag's configuration in an environment.
pub fn config_path(project: &str, flag: &str, env: &str) -> String {
    format!("/api/v1/projects/{project}/flags/{flag}/environments/{env}")
}
