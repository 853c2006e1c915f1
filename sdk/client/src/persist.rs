//! The last-known-good snapshot: the flags last received from upstream, kept on disk so that
//! a process starting while upstream is unreachable still serves real values.
//!
//! - Writes are atomic (temporary file in the same directory, `fsync`, rename, `fsync` of
//!   the directory), so a crash mid-write leaves the previous file intact, and debounced, so
//!   a burst of changes costs one write.
//! - The file records a SHA-256 fingerprint of the SDK key that produced it: a file written
//!   for another environment (another key) is never served.
//! - A missing, unreadable, corrupt or foreign file is ignored with a logged error, never a
//!   panic; the next successful write replaces it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vexil_eval::CompiledSnapshot;
use vexil_schema::EnvironmentSnapshot;

use crate::source::Shutdown;
use crate::store::Store;

/// The `format` field of a last-known-good file.
pub(crate) const FORMAT: &str = "vexil-sdk/last-known-good/1";

/// Files larger than this are refused (a guard against reading something that is not ours).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// A last-known-good file, as written.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LkgFile<S> {
    /// Always [`FORMAT`].
    pub(crate) format: String,
    /// Hex SHA-256 of the SDK key the snapshot was received with.
    pub(crate) sdk_key_sha256: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub(crate) saved_at_unix_ms: u64,
    /// The flags.
    pub(crate) snapshot: S,
}

/// Why a last-known-good file was not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("no file yet")]
    Missing,
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("unknown format {0:?}")]
    Format(String),
    #[error("written for another SDK key")]
    OtherKey,
}

/// Where the last-known-good snapshot lives and whose it is.
#[derive(Debug, Clone)]
pub(crate) struct LastKnownGood {
    pub(crate) path: PathBuf,
    fingerprint: String,
}

/// Hex SHA-256 of an SDK key.
pub(crate) fn key_fingerprint(sdk_key: &str) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(sdk_key.as_bytes());
    let mut s = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl LastKnownGood {
    pub(crate) fn new(path: PathBuf, sdk_key: &str) -> Self {
        Self {
            path,
            fingerprint: key_fingerprint(sdk_key),
        }
    }

    /// Reads and compiles the file, logging why it cannot be used.
    pub(crate) fn load(&self) -> Option<CompiledSnapshot> {
        match self.read() {
            Ok(file) => {
                let age = SystemTime::now()
                    .duration_since(UNIX_EPOCH + Duration::from_millis(file.saved_at_unix_ms))
                    .unwrap_or_default();
                tracing::info!(
                    path = %self.path.display(),
                    version = file.snapshot.version,
                    age_secs = age.as_secs(),
                    "last-known-good snapshot loaded"
                );
                Some(CompiledSnapshot::compile(&file.snapshot))
            }
            Err(LoadError::Missing) => {
                tracing::debug!(path = %self.path.display(), "no last-known-good snapshot yet");
                None
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "ignoring the last-known-good snapshot");
                None
            }
        }
    }

    fn read(&self) -> Result<LkgFile<EnvironmentSnapshot>, LoadError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
            Err(e) => return Err(e.into()),
        };
        if file.metadata()?.len() > MAX_FILE_BYTES {
            return Err(LoadError::TooLarge);
        }
        let mut bytes = Vec::new();
        BufReader::new(file.take(MAX_FILE_BYTES)).read_to_end(&mut bytes)?;
        let parsed: LkgFile<crate::wire::WireSnapshot> = serde_json::from_slice(&bytes)?;
        let parsed = LkgFile {
            format: parsed.format,
            sdk_key_sha256: parsed.sdk_key_sha256,
            saved_at_unix_ms: parsed.saved_at_unix_ms,
            snapshot: EnvironmentSnapshot::from(parsed.snapshot),
        };
        if parsed.format != FORMAT {
            return Err(LoadError::Format(parsed.format));
        }
        if parsed.sdk_key_sha256 != self.fingerprint {
            return Err(LoadError::OtherKey);
        }
        Ok(parsed)
    }

    /// Writes `snapshot` atomically, replacing the previous file.
    pub(crate) fn write(&self, snapshot: &EnvironmentSnapshot) -> std::io::Result<()> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)?;
        let body = LkgFile {
            format: FORMAT.to_owned(),
            sdk_key_sha256: self.fingerprint.clone(),
            saved_at_unix_ms: u64::try_from(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
            snapshot,
        };
        // Created with mode 0600: flag rules can name users.
        let mut tmp = tempfile::Builder::new()
            .prefix(".vexil-lkg-")
            .suffix(".tmp")
            .tempfile_in(&dir)?;
        {
            let mut w = BufWriter::new(tmp.as_file_mut());
            serde_json::to_writer(&mut w, &body)?;
            w.flush()?;
        }
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        sync_dir(&dir);
        Ok(())
    }
}

/// Makes a rename in `dir` durable. Best effort: not every platform can open a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "could not fsync the directory");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Writes the store's snapshot whenever upstream data changed, at most once per `debounce`,
/// and once more at shutdown if anything is pending.
pub(crate) async fn persist_loop(
    store: Arc<Store>,
    lkg: Arc<LastKnownGood>,
    debounce: Duration,
    shutdown: Shutdown,
) {
    let mut rx = store.subscribe_persist();
    // Generation 0 is "no upstream data yet"; data may have arrived before this task ran.
    let mut written = 0;
    loop {
        if *rx.borrow_and_update() == written {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                _ = shutdown.wait() => break,
            }
        }
        // Let a burst of changes settle; on shutdown, write at once.
        tokio::select! {
            _ = tokio::time::sleep(debounce) => {}
            _ = shutdown.wait() => {}
        }
        let generation = *rx.borrow_and_update();
        if generation != written {
            write(&store, &lkg).await;
            written = generation;
        }
        if shutdown.is_shutdown() {
            return;
        }
    }
    if *rx.borrow() != written {
        write(&store, &lkg).await;
    }
}

async fn write(store: &Store, lkg: &Arc<LastKnownGood>) {
    let Some(compiled) = store.snapshot() else {
        return;
    };
    let lkg = Arc::clone(lkg);
    // Serialising thousands of flags and fsync take milliseconds: off the async thread.
    let result = tokio::task::spawn_blocking(move || {
        let snapshot = compiled.to_snapshot();
        lkg.write(&snapshot).map(|()| (snapshot.version, lkg))
    })
    .await;
    match result {
        Ok(Ok((version, lkg))) => {
            tracing::debug!(path = %lkg.path.display(), version, "last-known-good snapshot written");
        }
        Ok(Err(e)) => tracing::error!(error = %e, "could not write the last-known-good snapshot"),
        Err(e) => tracing::error!(error = %e, "the last-known-good writer stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vexil_schema::Context;

    fn snapshot(version: u64) -> EnvironmentSnapshot {
        serde_json::from_value(json!({
            "version": version,
            "flags": [{
                "key": "f", "kind": "string",
                "variations": [{"value": "lkg"}], "on": true,
                "off_variation": 0, "fallthrough": {"variation": 0}
            }]
        }))
        .unwrap()
    }

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let lkg = LastKnownGood::new(dir.path().join("sub/flags.json"), "key-1");
        assert!(matches!(lkg.read(), Err(LoadError::Missing)));
        lkg.write(&snapshot(3)).unwrap();
        lkg.write(&snapshot(4)).unwrap();
        let loaded = lkg.load().unwrap();
        assert_eq!(loaded.version(), 4);
        let e = loaded.evaluate("f", &Context::new("u"));
        assert_eq!(e.value, Some(&json!("lkg")));
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["flags.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let lkg = LastKnownGood::new(dir.path().join("flags.json"), "k");
        lkg.write(&snapshot(1)).unwrap();
        let mode = std::fs::metadata(&lkg.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }

    #[test]
    fn corrupt_foreign_and_unknown_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        let lkg = LastKnownGood::new(path.clone(), "key-1");

        std::fs::write(
            &path,
            b"{\"format\": \"vexil-sdk/last-known-good/1\", \"snap",
        )
        .unwrap();
        assert!(matches!(lkg.read(), Err(LoadError::Corrupt(_))));
        assert!(lkg.load().is_none());

        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert!(lkg.load().is_none());

        LastKnownGood::new(path.clone(), "key-2")
            .write(&snapshot(1))
            .unwrap();
        assert!(matches!(lkg.read(), Err(LoadError::OtherKey)));

        let other = json!({"format": "v2", "sdk_key_sha256": key_fingerprint("key-1"),
            "saved_at_unix_ms": 0, "snapshot": {}});
        std::fs::write(&path, other.to_string()).unwrap();
        assert!(matches!(lkg.read(), Err(LoadError::Format(f)) if f == "v2"));
    }

    #[test]
    fn fingerprints_are_hex_sha256() {
        assert_eq!(
            key_fingerprint("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
