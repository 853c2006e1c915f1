//! The invalid-payload corpus: `schema/testdata/invalid/*.json`, one case per validation rule.
//!
//! Each file holds one [`InvalidCase`]:
//!
//! ```json
//! {
//!   "name": "rollout weights must sum to 100,000",
//!   "target": "flag_config",
//!   "environment": { "flags": [], "segments": [] },
//!   "definition": { "key": "checkout", "kind": "boolean", "variations": [] },
//!   "payload": { "off_variation": 1, "fallthrough": { "variation": 0 } },
//!   "expect": [{ "path": "fallthrough.rollout.variations", "rule": "weights_sum" }]
//! }
//! ```
//!
//! `environment` (optional, default empty) is the state that exists before the write and is
//! valid on its own. `definition` is required for `flag_config` cases: the flag whose
//! configuration `payload` is; it exists in the environment (if `environment` also lists a
//! flag with its key, that is the configuration being replaced). `payload` is the document
//! written, as raw JSON, and deserialises into its target type: every case breaks a
//! validation rule, not the JSON shape. `expect` lists every error validation reports, by path
//! (relative to the payload) and rule, in any order.
//!
//! The schema crate's tests run every case through [`crate::validate`]; the server's tests
//! send every payload to the API and expect a 4xx naming the same paths and rules, with
//! nothing stored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{EnvironmentIndex, ValidationErrors};
use crate::model::{EnvironmentSnapshot, FlagConfig, FlagDefinition, Segment};

/// What kind of document a case's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CorpusTarget {
    /// A [`FlagDefinition`], checked by [`super::validate_definition`].
    FlagDefinition,
    /// A [`FlagConfig`] of the case's `definition`, checked by [`super::validate_config`].
    FlagConfig,
    /// A [`Segment`], checked by [`super::validate_segment`].
    Segment,
}

/// One error a case expects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedError {
    /// Path relative to the payload.
    pub path: String,
    /// Rule code.
    pub rule: String,
}

/// One invalid payload and the errors validation must report for it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidCase {
    /// What the case shows, as a sentence.
    pub name: String,
    /// The payload's document type.
    pub target: CorpusTarget,
    /// The environment before the write (valid on its own).
    #[serde(default)]
    pub environment: EnvironmentSnapshot,
    /// For `flag_config` cases: the definition of the flag being configured.
    #[serde(default)]
    pub definition: Option<FlagDefinition>,
    /// The invalid document, as sent to the API.
    pub payload: serde_json::Value,
    /// Every error expected, in any order.
    pub expect: Vec<ExpectedError>,
    /// The file the case was read from (set by the loader).
    #[serde(skip)]
    pub file: PathBuf,
}

/// Why the corpus could not be loaded or a case could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    /// A file or the directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not a well-formed case.
    #[error("parsing {path}: {source}")]
    Case {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A case's payload does not deserialise into its target type.
    #[error("case {name:?}: payload is not a {target:?}: {source}")]
    Payload {
        /// The case name.
        name: String,
        /// The target type.
        target: CorpusTarget,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A `flag_config` case has no `definition`.
    #[error("case {0:?}: a flag_config case needs a definition")]
    MissingDefinition(String),
}

impl InvalidCase {
    /// Runs the payload through validation against the case's environment. `Ok(None)` means
    /// it passed, which for this corpus is a failure of the case.
    pub fn run(&self) -> Result<Option<ValidationErrors>, CorpusError> {
        let env = EnvironmentIndex::from_snapshot(&self.environment);
        let payload_err = |source| CorpusError::Payload {
            name: self.name.clone(),
            target: self.target,
            source,
        };
        let result = match self.target {
            CorpusTarget::FlagDefinition => {
                let def: FlagDefinition =
                    serde_json::from_value(self.payload.clone()).map_err(payload_err)?;
                super::validate_definition(def).map(drop)
            }
            CorpusTarget::FlagConfig => {
                let def = self
                    .definition
                    .as_ref()
                    .ok_or_else(|| CorpusError::MissingDefinition(self.name.clone()))?;
                let cfg: FlagConfig =
                    serde_json::from_value(self.payload.clone()).map_err(payload_err)?;
                super::validate_config(def, cfg, &env).map(drop)
            }
            CorpusTarget::Segment => {
                let seg: Segment =
                    serde_json::from_value(self.payload.clone()).map_err(payload_err)?;
                super::validate_segment(seg, &env).map(drop)
            }
        };
        Ok(result.err())
    }

    /// The expected errors as a set of `(path, rule)`.
    pub fn expected(&self) -> BTreeSet<(String, String)> {
        self.expect
            .iter()
            .map(|e| (e.path.clone(), e.rule.clone()))
            .collect()
    }
}

impl ValidationErrors {
    /// The errors as a set of `(path, rule)`, to compare with [`InvalidCase::expected`].
    pub fn path_rules(&self) -> BTreeSet<(String, String)> {
        self.errors
            .iter()
            .map(|e| (e.path.clone(), e.rule.to_string()))
            .collect()
    }
}

/// The corpus directory in this source tree: `schema/testdata/invalid`.
pub fn invalid_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/invalid")
}

/// Loads every case of the corpus, sorted by file name.
pub fn load_invalid_corpus() -> Result<Vec<InvalidCase>, CorpusError> {
    load_corpus_from(&invalid_corpus_dir())
}

/// Loads every `*.json` case in `dir`, sorted by file name.
pub fn load_corpus_from(dir: &Path) -> Result<Vec<InvalidCase>, CorpusError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CorpusError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            let mut case: InvalidCase =
                serde_json::from_str(&text).map_err(|source| CorpusError::Case {
                    path: path.clone(),
                    source,
                })?;
            case.file = path;
            Ok(case)
        })
        .collect()
}
