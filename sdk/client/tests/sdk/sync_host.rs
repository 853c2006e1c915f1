//! A synchronous host program: no async runtime on the caller's side at all. The server
//! under test runs on a runtime of its own thread.

use std::sync::mpsc;

use vexil_fanout::HubConfig;
use vexil_sdk::{Client, Context, State};

use crate::harness::*;

#[test]
fn a_synchronous_program_initialises_and_follows_changes() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let server = server_rt.block_on(TestServer::start(
        HubConfig::default(),
        Some(snapshot(1, vec![bool_flag("f", false)])),
    ));

    assert!(tokio::runtime::Handle::try_current().is_err());
    let client = Client::builder(SDK_KEY)
        .base_url(server.url())
        .build()
        .unwrap();
    client.wait_for_initialization_blocking(PATIENCE).unwrap();
    assert_eq!(client.status().state, State::Ready);
    let user = Context::new("u");
    assert!(!client.bool_variation("f", &user, true));

    let (tx, rx) = mpsc::channel();
    client.on_flag_change(move |c| {
        let _ = tx.send(c.clone());
    });
    server.patch(2, bool_flag("f", true));
    let change = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(change.version, 2);
    assert!(change.contains("f"));
    assert!(client.bool_variation("f", &user, false));

    drop(client);
    drop(server);
    server_rt.shutdown_timeout(PATIENCE);
}
