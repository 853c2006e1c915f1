//! The file source, watched (`ClientBuilder::file_watched`): the file re-read when it
//! changes, a broken file reported while the last good flags keep being served.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use vexil_schema::EnvironmentSnapshot;
use vexil_sdk::{Client, DataOrigin, DataSourceError, State};

use crate::harness::*;

/// Replaces the file at once (written beside it, then renamed), as a deployment tool would:
/// the watcher never sees half a file.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn replace_with(path: &Path, snapshot: &EnvironmentSnapshot) {
    replace(path, &serde_json::to_vec(snapshot).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_file_is_picked_up_when_it_changes_and_a_broken_one_keeps_the_last_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    replace_with(&path, &snapshot(1, vec![string_flag("banner", "blue")]));
    let client = Client::builder(SDK_KEY)
        .file_watched(&path, Duration::from_millis(20))
        .build()
        .unwrap();
    // Read at build: ready at once.
    let status = client.status();
    assert_eq!(
        (status.state, status.version, status.origin),
        (State::Ready, Some(1), Some(DataOrigin::File))
    );
    assert_eq!(json_of(&client, "banner"), json!("blue"));
    let mut changes = client.flag_changes();

    // Changed on disk: picked up and announced.
    replace_with(
        &path,
        &snapshot(
            2,
            vec![string_flag("banner", "green"), string_flag("added", "yes")],
        ),
    );
    let change = wait_change(&mut changes, "banner", PATIENCE).await;
    assert_eq!((change.version, change.origin), (2, DataOrigin::File));
    assert!(change.contains("added"), "{change:?}");
    assert_eq!(json_of(&client, "banner"), json!("green"));
    assert_eq!(json_of(&client, "added"), json!("yes"));

    // Broken: reported, and the last good flags are still served.
    replace(&path, br#"{"version": 3, "flags": ["#);
    let broken = wait_status(&client, "the broken file reported", |s| {
        s.last_error.is_some()
    })
    .await;
    assert!(
        matches!(&broken.last_error, Some(DataSourceError::File { path, .. }) if path.ends_with("flags.json")),
        "{broken:?}"
    );
    assert_eq!((broken.state, broken.version), (State::Stale, Some(2)));
    assert_eq!(json_of(&client, "banner"), json!("green"));
    assert_eq!(json_of(&client, "added"), json!("yes"));

    // Fixed: current again, the error cleared.
    replace_with(&path, &snapshot(4, vec![string_flag("banner", "red")]));
    let change = wait_change(&mut changes, "banner", PATIENCE).await;
    assert_eq!(change.version, 4);
    assert!(
        change.contains("added"),
        "the removed flag is announced too"
    );
    let fixed = wait_state(&client, State::Ready).await;
    assert_eq!((fixed.version, fixed.last_error), (Some(4), None));
    assert_eq!(json_of(&client, "banner"), json!("red"));
    assert_eq!(json_of(&client, "added"), Value::Null);
    client.close();
}
