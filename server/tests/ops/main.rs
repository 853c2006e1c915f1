//! Operational behaviour of the control plane: what the binary prints, authentication
//! throttling, and a database outage on a throwaway PostgreSQL cluster the test stops and
//! restarts (never the shared server).

mod admin;
mod backup;
mod binary;
mod deploy;
mod outage;
mod throttle;
mod tls;
mod upgrade;

use reqwest::{Response, StatusCode};
use serde_json::Value;

/// Asserts the status, returning the JSON body (or `null` for an empty one).
pub async fn expect(res: Response, status: u16) -> Value {
    let got = res.status();
    let text = res.text().await.expect("response body");
    assert_eq!(got, StatusCode::from_u16(status).unwrap(), "body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}
