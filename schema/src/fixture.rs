//! Shared evaluation fixtures: data files every implementation that evaluates flags (the
//! engine, server, relay, SDKs, the OpenFeature provider) runs, so they can never disagree.
//!
//! - `testdata/eval/*.json`: [`FixtureFile`]s, each a snapshot and cases (flag, context,
//!   expected value, variation, reason and experiment flag). Load them with
//!   [`load_eval_fixtures`].
//! - `testdata/bench/*.json`: [`BenchFixture`]s, the flags benchmarks measure (a snapshot, a
//!   flag key and a context). Load them with [`load_bench_fixtures`].
//!
//! Expected rollout buckets were computed independently of the Rust engine (with Python's
//! `xxhash` package, `testdata/eval/bucketing.py`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::Context;
use crate::model::EnvironmentSnapshot;
use crate::reason::Reason;

/// One fixture file: a snapshot and the cases evaluated against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureFile {
    /// Short name, unique across files.
    pub name: String,
    /// What the file covers.
    #[serde(default)]
    pub description: String,
    /// The environment every case evaluates in.
    pub snapshot: EnvironmentSnapshot,
    /// The cases.
    pub cases: Vec<FixtureCase>,
}

/// One evaluation and its expected result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureCase {
    /// Short name, unique within the file.
    pub name: String,
    /// The flag evaluated.
    pub flag: String,
    /// The context evaluated for.
    pub context: Context,
    /// What the evaluation must produce.
    pub expected: Expected,
}

/// The expected result of a [`FixtureCase`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The value served; `null` on error (the caller's default applies).
    pub value: Value,
    /// The variation index served; `null` on error.
    pub variation: Option<usize>,
    /// The reason, in wire form.
    pub reason: Reason,
    /// Whether the evaluation counts as an experiment exposure.
    #[serde(default)]
    pub in_experiment: bool,
}

/// A flag that benchmarks measure, with the snapshot it lives in and the context evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchFixture {
    /// Short name (the file name without `.json`).
    pub name: String,
    /// What the benchmark measures and why its shape is representative.
    #[serde(default)]
    pub description: String,
    /// The flag evaluated.
    pub flag: String,
    /// The environment.
    pub snapshot: EnvironmentSnapshot,
    /// The context evaluated for.
    pub context: Context,
    /// What the evaluation must produce, so a benchmark can check it measures the right path.
    pub expected: Expected,
}

/// Why fixtures could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// A directory or file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not a valid fixture.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The cause, with line and column.
        source: serde_json::Error,
    },
}

/// The directory holding the evaluation fixtures (`schema/testdata/eval`).
pub fn eval_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/eval")
}

/// The directory holding the benchmark fixtures (`schema/testdata/bench`).
pub fn bench_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/bench")
}

/// Every evaluation fixture file, sorted by file name.
pub fn load_eval_fixtures() -> Result<Vec<FixtureFile>, FixtureError> {
    load_dir(&eval_fixture_dir())
}

/// Every benchmark fixture, sorted by file name.
pub fn load_bench_fixtures() -> Result<Vec<BenchFixture>, FixtureError> {
    load_dir(&bench_fixture_dir())
}

fn load_dir<T: for<'de> Deserialize<'de>>(dir: &Path) -> Result<Vec<T>, FixtureError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FixtureError::Io { path, source }
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_some_and(|e| e == "json") {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            serde_json::from_str(&text).map_err(|source| FixtureError::Parse { path, source })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_fixtures_load_with_unique_names() {
        let files = load_eval_fixtures().unwrap();
        assert!(!files.is_empty());
        let mut names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), files.len(), "file names must be unique");
        for f in &files {
            let mut cases: Vec<&str> = f.cases.iter().map(|c| c.name.as_str()).collect();
            cases.sort_unstable();
            cases.dedup();
            assert_eq!(
                cases.len(),
                f.cases.len(),
                "case names unique in {}",
                f.name
            );
        }
    }

    #[test]
    fn bench_fixtures_load() {
        let benches = load_bench_fixtures().unwrap();
        assert_eq!(benches.len(), 3);
        for b in &benches {
            assert!(
                b.snapshot.flags.iter().any(|f| f.key == b.flag.as_str()),
                "{}",
                b.name
            );
        }
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let err = load_dir::<FixtureFile>(Path::new("/nonexistent/vexil")).unwrap_err();
        assert!(matches!(err, FixtureError::Io { .. }), "{err}");
    }
}
