//! The file source: flags from a JSON file, for bootstrapping, air-gapped hosts and local
//! development. The file is an environment snapshot as `GET /sdk/v1/snapshot` serves it (so
//! `curl -H "Authorization: $KEY" $URL/sdk/v1/snapshot > flags.json` makes one), or a
//! last-known-good file written by the SDK.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use vexil_schema::EnvironmentSnapshot;

use crate::source::{BoxFuture, DataSource, Shutdown, Updates};
use crate::status::{DataOrigin, DataSourceError};
use crate::wire::decode_snapshot_file;

/// The file data source.
#[derive(Debug)]
pub(crate) struct FileSource {
    pub(crate) path: PathBuf,
    /// Re-read the file when it changes, checking this often.
    pub(crate) reload: Option<Duration>,
}

/// What identifies a version of the file on disk.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl DataSource for FileSource {
    fn origin(&self) -> DataOrigin {
        DataOrigin::File
    }

    fn start(self: Box<Self>, updates: Updates, shutdown: Shutdown) -> BoxFuture {
        // Read at build time, so the flags are there as soon as the client is.
        let mut last = stamp(&self.path);
        load(&self.path, &updates, self.reload.is_some());
        Box::pin(async move {
            let Some(interval) = self.reload else {
                return;
            };
            loop {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let now = stamp(&self.path);
                if now == last {
                    continue;
                }
                last = now;
                let path = self.path.clone();
                let updates = updates.clone();
                let _ = tokio::task::spawn_blocking(move || load(&path, &updates, true)).await;
            }
        })
    }
}

/// Reads the file into the client. A failure keeps the flags held; it is fatal only when
/// the file is not watched (it would never be read again).
fn load(path: &Path, updates: &Updates, watched: bool) {
    match read_snapshot_file(path) {
        Ok(snapshot) => {
            let applied = updates.init_owned(snapshot);
            tracing::info!(path = %path.display(), ?applied, "flags loaded from file");
            updates.ready();
        }
        Err(message) => {
            tracing::error!(path = %path.display(), error = %message, "cannot load flags from file");
            let error = DataSourceError::File {
                path: path.display().to_string().into(),
                message: message.into(),
            };
            if watched {
                updates.interrupted(error);
            } else {
                updates.failed(error);
            }
        }
    }
}

/// Reads an environment snapshot or a last-known-good file.
pub(crate) fn read_snapshot_file(path: &Path) -> Result<EnvironmentSnapshot, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    parse_snapshot_file(&bytes)
}

fn parse_snapshot_file(bytes: &[u8]) -> Result<EnvironmentSnapshot, String> {
    decode_snapshot_file(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::LastKnownGood;
    use serde_json::json;

    #[test]
    fn reads_snapshots_and_last_known_good_files() {
        let s = parse_snapshot_file(br#"{"version": 3, "flags": []}"#).unwrap();
        assert_eq!(s.version, 3);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lkg.json");
        let snapshot: EnvironmentSnapshot = serde_json::from_value(json!({"version": 9})).unwrap();
        LastKnownGood::new(path.clone(), "any key")
            .write(&snapshot)
            .unwrap();
        assert_eq!(read_snapshot_file(&path).unwrap().version, 9);
    }

    #[test]
    fn refuses_what_is_not_a_snapshot() {
        for (bad, why) in [
            (&b"nope"[..], "not a valid snapshot file: expected ident"),
            (b"[1]", "not a valid snapshot file"),
            (b"{\"name\": \"config\"}", "not an environment snapshot"),
            (b"{\"flags\": [{\"key\": \"bad key\"}]}", "may contain only"),
            (b"{\"format\": \"vexil-sdk/last-known-good/1\"}", "without a snapshot"),
            (b"{\"format\": \"other\", \"sdk_key_sha256\": \"\", \"saved_at_unix_ms\": 0, \"snapshot\": {}}", "unknown format"),
        ] {
            let err = parse_snapshot_file(bad).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        assert!(read_snapshot_file(Path::new("/nonexistent/flags.json")).is_err());
    }
}
