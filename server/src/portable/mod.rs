//! Flags as code: a project exported to one readable, deterministic JSON document (its
//! environments, segments, flag definitions and every flag's configuration per environment,
//! salts included) and imported back, here or into another installation.
//!
//! JSON rather than YAML: `serde_yaml` is archived and unmaintained and its forks are young;
//! JSON needs no new dependency, is read by every YAML tool (it is a subset of YAML 1.2), and
//! goes through the API's strict parser, so a misspelt field is an error naming its path. The
//! export is pretty-printed with keys in a fixed order and lists sorted by key, and carries no
//! versions or timestamps, so exporting an unchanged project twice gives the same bytes and a
//! change shows up in `git diff` as the lines that changed.
//!
//! An import is planned first ([`Store::plan_import`]: what would be created and updated, and
//! what exists that the document does not name) and then applied through the same store
//! functions the API uses, so every change is validated, audited, versioned and streamed to
//! SDKs and relays. Importing the same document again changes nothing. Salts are written as
//! exported, so bucketing does not move between installations. Nothing is deleted: flags and
//! segments the document does not name are reported and left alone.
//!
//! The HTTP routes are in `portable/api.rs` (mounted by [`crate::api`]); the command line in
//! [`crate::admin`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vexil_schema::{FlagConfig, FlagDefinition, Project, Segment};

use crate::store::{
    CreateEnvironment, FlagFilter, Store, StoreError, UpdateEnvironment, UpdateProject,
    WriteContext,
};

/// The `format` of a project document this server writes and reads.
pub const FORMAT: &str = "vexil.project/v1";

/// Most pages of 500 read while exporting one kind of thing (a guard against a cursor loop).
const MAX_PAGES: usize = 10_000;

/// A project as code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectDocument {
    /// Always `vexil.project/v1`.
    pub format: String,
    /// The project's key, name and description.
    pub project: ProjectMeta,
    /// Its environments, by key, each with its segments.
    pub environments: Vec<EnvironmentDocument>,
    /// Its flags, by key, each with its configuration in every environment.
    pub flags: Vec<FlagDocument>,
}

/// A project's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProjectMeta {
    /// Key.
    pub key: String,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

/// An environment and its segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentDocument {
    /// Key.
    pub key: String,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Browser origins allowed to use its client-side keys.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Its segments, by key, with their salts (`version` is ignored on import).
    #[serde(default)]
    #[schema(value_type = Vec<crate::openapi::SegmentDoc>)]
    pub segments: Vec<Segment>,
}

/// A flag: its definition, whether it is archived, and its configuration per environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlagDocument {
    /// The definition shared by every environment.
    #[schema(value_type = crate::openapi::FlagDefinitionDoc)]
    pub definition: FlagDefinition,
    /// Whether it is archived.
    #[serde(default)]
    pub archived: bool,
    /// Configuration per environment key, with its salt (`version` is ignored on import).
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, crate::openapi::FlagConfigDoc>)]
    pub environments: BTreeMap<String, FlagConfig>,
}

/// What an import does (or, in a dry run, would do) to one thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    /// Created.
    Create,
    /// Changed.
    Update,
    /// Archived.
    Archive,
    /// Unarchived.
    Unarchive,
}

/// One change of an import plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlannedChange {
    /// What happens.
    pub action: ChangeAction,
    /// To what: `project`, `environment`, `segment`, `flag` or `flag_config`.
    pub resource: String,
    /// Its key.
    pub key: String,
    /// The environment, for segments and flag configurations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The fields that differ, for updates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// The outcome of an import: the changes made (or planned, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// The changes, in the order they are applied; empty when the installation already
    /// matches the document.
    pub changes: Vec<PlannedChange>,
    /// Flags and segments (`flag:key`, `segment:environment/key`) that exist but that the
    /// document does not name: left alone.
    pub not_in_document: Vec<String>,
}

/// Why an import cannot proceed.
fn invalid(path: impl Into<String>, rule: &'static str, msg: impl Into<String>) -> StoreError {
    StoreError::invalid(path, rule, msg)
}

impl ProjectDocument {
    /// Checks the document's own consistency: its format, unique keys, and configurations
    /// only for environments it lists.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.format != FORMAT {
            return Err(invalid(
                "format",
                "unsupported",
                format!("expected \"{FORMAT}\""),
            ));
        }
        let mut envs = BTreeSet::new();
        for (i, e) in self.environments.iter().enumerate() {
            if !envs.insert(e.key.as_str()) {
                return Err(invalid(
                    format!("environments[{i}].key"),
                    "duplicate",
                    format!("environment '{}' is listed twice", e.key),
                ));
            }
            let mut segs = BTreeSet::new();
            for (j, s) in e.segments.iter().enumerate() {
                if !segs.insert(s.key.as_str()) {
                    return Err(invalid(
                        format!("environments[{i}].segments[{j}].key"),
                        "duplicate",
                        format!("segment '{}' is listed twice", s.key),
                    ));
                }
            }
        }
        let mut flags = BTreeSet::new();
        for (i, f) in self.flags.iter().enumerate() {
            if !flags.insert(f.definition.key.as_str()) {
                return Err(invalid(
                    format!("flags[{i}].definition.key"),
                    "duplicate",
                    format!("flag '{}' is listed twice", f.definition.key),
                ));
            }
            for env in f.environments.keys() {
                if !envs.contains(env.as_str()) {
                    return Err(invalid(
                        format!("flags[{i}].environments.{env}"),
                        "unknown_environment",
                        format!("environment '{env}' is not in the document's environments"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The document as pretty-printed JSON, ending with a newline.
    pub fn to_pretty_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_owned());
        s.push('\n');
        s
    }
}

/// A segment as compared and exported: no version; an empty salt matches any.
fn segment_for_doc(mut s: Segment) -> Segment {
    s.version = 0;
    s
}

/// A configuration as compared and exported: no version.
fn config_for_doc(mut c: FlagConfig) -> FlagConfig {
    c.version = 0;
    c
}

/// Whether the stored `current` already is what the document's `wanted` asks for (an empty
/// salt in the document keeps whatever salt is stored).
fn config_matches(current: &FlagConfig, wanted: &FlagConfig) -> bool {
    let mut w = config_for_doc(wanted.clone());
    if w.salt.is_empty() {
        w.salt = current.salt.clone();
    }
    config_for_doc(current.clone()) == w
}

fn segment_matches(current: &Segment, wanted: &Segment) -> bool {
    let mut w = segment_for_doc(wanted.clone());
    if w.salt.is_empty() {
        w.salt = current.salt.clone();
    }
    segment_for_doc(current.clone()) == w
}

/// The names of the top-level fields in which two serialisable values differ.
fn differing_fields<T: Serialize>(a: &T, b: &T) -> Vec<String> {
    let (a, b) = (crate::store::encode(a), crate::store::encode(b));
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k) && k.as_str() != "version")
        .cloned()
        .collect()
}

fn change(action: ChangeAction, resource: &str, key: &str, env: Option<&str>) -> PlannedChange {
    PlannedChange {
        action,
        resource: resource.to_owned(),
        key: key.to_owned(),
        environment: env.map(str::to_owned),
        fields: Vec::new(),
    }
}

impl Store {
    /// Exports a project: everything [`ProjectDocument`] holds, sorted by key, without
    /// versions or timestamps.
    pub async fn export_project(&self, project: &str) -> Result<ProjectDocument, StoreError> {
        let p = self.get_project(project).await?;
        let mut environments = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .list_environments(project, cursor.as_deref(), Some(500))
                .await?;
            for e in page.items {
                let snapshot = self.environment_snapshot(project, &e.key).await?;
                let mut segments: Vec<Segment> =
                    snapshot.segments.into_iter().map(segment_for_doc).collect();
                segments.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
                environments.push(EnvironmentDocument {
                    key: e.key,
                    name: e.name,
                    description: e.description,
                    allowed_origins: e.allowed_origins,
                    segments,
                });
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        let mut flags = Vec::new();
        let mut filter = FlagFilter {
            limit: Some(500),
            ..FlagFilter::default()
        };
        for _ in 0..MAX_PAGES {
            let page = self.list_flags(project, &filter).await?;
            for summary in page.items {
                let view = self.get_flag(project, &summary.key).await?;
                flags.push(FlagDocument {
                    definition: view.definition,
                    archived: view.archived,
                    environments: view
                        .environments
                        .into_iter()
                        .map(|(k, c)| (k, config_for_doc(c)))
                        .collect(),
                });
            }
            filter.cursor = page.next_cursor;
            if filter.cursor.is_none() {
                break;
            }
        }
        Ok(ProjectDocument {
            format: FORMAT.to_owned(),
            project: ProjectMeta {
                key: p.key,
                name: p.name,
                description: p.description,
            },
            environments,
            flags,
        })
    }

    /// What importing `doc` would change: compares it with the project as it is now.
    pub async fn plan_import(&self, doc: &ProjectDocument) -> Result<ImportReport, StoreError> {
        doc.check()?;
        let key = doc.project.key.as_str();
        let current = match self.export_project(key).await {
            Ok(c) => Some(c),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let empty = ProjectDocument {
            format: FORMAT.to_owned(),
            project: doc.project.clone(),
            environments: Vec::new(),
            flags: Vec::new(),
        };
        let cur = current.as_ref().unwrap_or(&empty);
        let mut changes = Vec::new();
        let mut not_in_document = Vec::new();
        if current.is_none() {
            changes.push(change(ChangeAction::Create, "project", key, None));
        } else if cur.project != doc.project {
            let mut c = change(ChangeAction::Update, "project", key, None);
            c.fields = differing_fields(&cur.project, &doc.project);
            changes.push(c);
        }
        let cur_envs: BTreeMap<&str, &EnvironmentDocument> = cur
            .environments
            .iter()
            .map(|e| (e.key.as_str(), e))
            .collect();
        for e in &doc.environments {
            match cur_envs.get(e.key.as_str()) {
                None => {
                    changes.push(change(ChangeAction::Create, "environment", &e.key, None));
                    if !e.allowed_origins.is_empty() || !e.description.is_empty() {
                        let mut c = change(ChangeAction::Update, "environment", &e.key, None);
                        c.fields = vec!["allowed_origins".into(), "description".into()];
                        changes.push(c);
                    }
                }
                Some(c) => {
                    let mut fields = Vec::new();
                    if c.name != e.name {
                        fields.push("name".to_owned());
                    }
                    if c.description != e.description {
                        fields.push("description".to_owned());
                    }
                    if c.allowed_origins != e.allowed_origins {
                        fields.push("allowed_origins".to_owned());
                    }
                    if !fields.is_empty() {
                        let mut ch = change(ChangeAction::Update, "environment", &e.key, None);
                        ch.fields = fields;
                        changes.push(ch);
                    }
                }
            }
        }
        for e in &cur.environments {
            let wanted: BTreeSet<&str> = doc
                .environments
                .iter()
                .find(|d| d.key == e.key)
                .map(|d| d.segments.iter().map(|s| s.key.as_str()).collect())
                .unwrap_or_default();
            for s in &e.segments {
                if !wanted.contains(s.key.as_str()) {
                    not_in_document.push(format!("segment:{}/{}", e.key, s.key));
                }
            }
        }
        for e in &doc.environments {
            let existing: BTreeMap<&str, &Segment> = cur_envs
                .get(e.key.as_str())
                .map(|c| c.segments.iter().map(|s| (s.key.as_str(), s)).collect())
                .unwrap_or_default();
            for s in &e.segments {
                match existing.get(s.key.as_str()) {
                    None => changes.push(change(
                        ChangeAction::Create,
                        "segment",
                        s.key.as_str(),
                        Some(&e.key),
                    )),
                    Some(c) if !segment_matches(c, s) => {
                        let mut ch = change(
                            ChangeAction::Update,
                            "segment",
                            s.key.as_str(),
                            Some(&e.key),
                        );
                        ch.fields = differing_fields(*c, s);
                        changes.push(ch);
                    }
                    Some(_) => {}
                }
            }
        }
        let cur_flags: BTreeMap<&str, &FlagDocument> = cur
            .flags
            .iter()
            .map(|f| (f.definition.key.as_str(), f))
            .collect();
        let wanted_flags: BTreeSet<&str> = doc
            .flags
            .iter()
            .map(|f| f.definition.key.as_str())
            .collect();
        for f in &cur.flags {
            if !wanted_flags.contains(f.definition.key.as_str()) {
                not_in_document.push(format!("flag:{}", f.definition.key));
            }
        }
        // Unarchiving first (archived flags are frozen), then definitions (a created flag gets
        // a configuration in every environment), configurations, and archiving last.
        let mut unarchive = Vec::new();
        let mut definitions = Vec::new();
        let mut configs = Vec::new();
        let mut archive = Vec::new();
        for f in &doc.flags {
            let fkey = f.definition.key.as_str();
            let existing = cur_flags.get(fkey);
            match existing {
                None => definitions.push(change(ChangeAction::Create, "flag", fkey, None)),
                Some(c) if c.definition != f.definition => {
                    let mut ch = change(ChangeAction::Update, "flag", fkey, None);
                    ch.fields = differing_fields(&c.definition, &f.definition);
                    definitions.push(ch);
                }
                Some(_) => {}
            }
            let was_archived = existing.is_some_and(|c| c.archived);
            if was_archived && !f.archived {
                unarchive.push(change(ChangeAction::Unarchive, "flag", fkey, None));
            }
            if f.archived && !was_archived {
                archive.push(change(ChangeAction::Archive, "flag", fkey, None));
            }
            for (env, cfg) in &f.environments {
                let stored = existing.and_then(|c| c.environments.get(env));
                match stored {
                    Some(c) if config_matches(c, cfg) => {}
                    Some(c) => {
                        let mut ch = change(ChangeAction::Update, "flag_config", fkey, Some(env));
                        ch.fields = differing_fields(c, cfg);
                        configs.push(ch);
                    }
                    // A new flag or environment starts with a default configuration that
                    // the document's replaces.
                    None => {
                        configs.push(change(ChangeAction::Update, "flag_config", fkey, Some(env)))
                    }
                }
            }
        }
        changes.extend(unarchive);
        changes.extend(definitions);
        changes.extend(configs);
        changes.extend(archive);
        Ok(ImportReport {
            dry_run: true,
            changes,
            not_in_document,
        })
    }

    /// Imports `doc`: plans it ([`Store::plan_import`]) and, unless `dry_run`, applies every
    /// planned change through the store's own write functions, in plan order. A change that
    /// fails stops the import there with its error; the changes before it stay applied (each
    /// is a transaction of its own), and importing again continues where it stopped.
    pub async fn import_project(
        &self,
        ctx: &WriteContext,
        doc: &ProjectDocument,
        dry_run: bool,
    ) -> Result<ImportReport, StoreError> {
        let mut report = self.plan_import(doc).await?;
        report.dry_run = dry_run;
        if dry_run {
            return Ok(report);
        }
        let project = doc.project.key.as_str();
        let envs: BTreeMap<&str, &EnvironmentDocument> = doc
            .environments
            .iter()
            .map(|e| (e.key.as_str(), e))
            .collect();
        let flags: BTreeMap<&str, &FlagDocument> = doc
            .flags
            .iter()
            .map(|f| (f.definition.key.as_str(), f))
            .collect();
        // New segments are created without their rules first and given them once every new
        // segment exists, as their rules may refer to each other.
        let mut pending_rules: Vec<(&str, Segment)> = Vec::new();
        for ch in &report.changes {
            let env = ch.environment.as_deref();
            if ch.resource != "segment" {
                for (env, segment) in pending_rules.drain(..) {
                    let key = segment.key.to_string();
                    self.put_segment(ctx, project, env, &key, segment, None)
                        .await?;
                }
            }
            match (ch.resource.as_str(), ch.action) {
                ("project", ChangeAction::Create) => {
                    let p: Project = serde_json::from_value(serde_json::json!({
                        "key": doc.project.key,
                        "name": doc.project.name,
                        "description": doc.project.description,
                    }))
                    .map_err(|e| invalid("project.key", "invalid_key", e.to_string()))?;
                    self.create_project(ctx, p).await?;
                }
                ("project", _) => {
                    let update = UpdateProject {
                        name: Some(doc.project.name.clone()),
                        description: Some(doc.project.description.clone()),
                    };
                    self.update_project(ctx, project, update).await?;
                }
                ("environment", ChangeAction::Create) => {
                    let e = envs
                        .get(ch.key.as_str())
                        .ok_or_else(|| StoreError::NotFound(format!("environment '{}'", ch.key)))?;
                    let req: CreateEnvironment = serde_json::from_value(serde_json::json!({
                        "key": e.key, "name": e.name, "description": e.description,
                    }))
                    .map_err(|err| invalid("environments.key", "invalid_key", err.to_string()))?;
                    self.create_environment(ctx, project, req).await?;
                }
                ("environment", _) => {
                    let e = envs
                        .get(ch.key.as_str())
                        .ok_or_else(|| StoreError::NotFound(format!("environment '{}'", ch.key)))?;
                    let update = UpdateEnvironment {
                        name: Some(e.name.clone()),
                        description: Some(e.description.clone()),
                        allowed_origins: Some(e.allowed_origins.clone()),
                    };
                    self.update_environment(ctx, project, &e.key, update)
                        .await?;
                }
                ("segment", action) => {
                    let env = env.unwrap_or_default();
                    let segment = envs
                        .get(env)
                        .and_then(|e| e.segments.iter().find(|s| s.key.as_str() == ch.key))
                        .cloned()
                        .ok_or_else(|| StoreError::NotFound(format!("segment '{}'", ch.key)))?;
                    if action == ChangeAction::Create {
                        let mut bare = segment.clone();
                        bare.rules.clear();
                        self.create_segment(ctx, project, env, bare).await?;
                        if !segment.rules.is_empty() {
                            pending_rules.push((env, segment));
                        }
                    } else {
                        self.put_segment(ctx, project, env, &ch.key, segment, None)
                            .await?;
                    }
                }
                ("flag", action) => {
                    let f = flags
                        .get(ch.key.as_str())
                        .ok_or_else(|| StoreError::NotFound(format!("flag '{}'", ch.key)))?;
                    match action {
                        ChangeAction::Create => {
                            self.create_flag(ctx, project, f.definition.clone()).await?;
                        }
                        ChangeAction::Update => {
                            self.update_definition(
                                ctx,
                                project,
                                &ch.key,
                                f.definition.clone(),
                                None,
                            )
                            .await?;
                        }
                        ChangeAction::Archive => {
                            self.set_archived(ctx, project, &ch.key, true).await?;
                        }
                        ChangeAction::Unarchive => {
                            self.set_archived(ctx, project, &ch.key, false).await?;
                        }
                    }
                }
                ("flag_config", _) => {
                    let env = env.unwrap_or_default();
                    let cfg = flags
                        .get(ch.key.as_str())
                        .and_then(|f| f.environments.get(env))
                        .cloned()
                        .ok_or_else(|| StoreError::NotFound(format!("flag '{}'", ch.key)))?;
                    self.put_config(ctx, project, &ch.key, env, cfg, None)
                        .await?;
                }
                (other, _) => {
                    return Err(StoreError::Corrupt(format!(
                        "an import plan names an unknown resource '{other}'"
                    )));
                }
            }
        }
        for (env, segment) in pending_rules {
            let key = segment.key.to_string();
            self.put_segment(ctx, project, env, &key, segment, None)
                .await?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> ProjectDocument {
        serde_json::from_value(serde_json::json!({
            "format": FORMAT,
            "project": {"key": "p", "name": "P"},
            "environments": [{"key": "prod", "name": "Prod", "segments": [
                {"key": "beta", "name": "Beta", "included": ["u1"], "salt": "s"}
            ]}],
            "flags": [{
                "definition": {"key": "f", "name": "F", "kind": "boolean",
                               "variations": [{"value": true}, {"value": false}]},
                "environments": {"prod": {"off_variation": 1, "fallthrough": {"variation": 0},
                                          "salt": "abc"}}
            }]
        }))
        .unwrap()
    }

    #[test]
    fn documents_check_their_own_consistency() {
        let d = doc();
        d.check().unwrap();
        let mut bad = d.clone();
        bad.format = "vexil.project/v0".into();
        assert!(bad.check().is_err());
        let mut bad = d.clone();
        let prod = bad.flags[0].environments["prod"].clone();
        bad.flags[0].environments.insert("staging".into(), prod);
        let StoreError::Invalid(e) = bad.check().unwrap_err() else {
            panic!("expected a validation error")
        };
        assert_eq!(e.errors[0].path, "flags[0].environments.staging");
        let mut bad = d.clone();
        bad.environments.push(bad.environments[0].clone());
        assert!(bad.check().is_err());
    }

    #[test]
    fn versions_do_not_count_and_an_empty_salt_keeps_the_stored_one() {
        let d = doc();
        let stored = d.flags[0].environments["prod"].clone();
        let mut newer = stored.clone();
        newer.version = 7;
        assert!(config_matches(&newer, &stored));
        let mut unsalted = stored.clone();
        unsalted.salt.clear();
        assert!(config_matches(&stored, &unsalted));
        let mut other_salt = stored.clone();
        other_salt.salt = "zzz".into();
        assert!(!config_matches(&stored, &other_salt));
        assert_eq!(differing_fields(&stored, &other_salt), ["salt"]);
        let seg = d.environments[0].segments[0].clone();
        let mut seg2 = seg.clone();
        seg2.version = 3;
        assert!(segment_matches(&seg2, &seg));
        seg2.included.push("u2");
        assert!(!segment_matches(&seg2, &seg));
    }

    #[test]
    fn the_pretty_form_parses_back_to_the_same_document() {
        let d = doc();
        let text = d.to_pretty_json();
        assert!(text.ends_with("}\n"));
        let back: ProjectDocument = serde_json::from_str(&text).unwrap();
        assert_eq!(back, d);
    }
}
