//! [`Registry`]: the operations of Confluent's Schema Registry API over
//! the metadata store. Schema ids are global: a schema registered again,
//! under any subject, gets the id it had. Versions number each subject's
//! schemas from 1; a soft-deleted version keeps its number and is hidden
//! unless asked for; a permanently deleted one (soft-deleted first) is
//! gone. Registering checks the new schema against the subject's earlier
//! versions at the subject's compatibility level (or the registry's).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use streamhouse_log::{
    LogError, MetadataStore, RegisteredSchema, RegistrySettings, SubjectVersion,
};

use crate::error::RegistryError;
use crate::formats::{self, Parsed, SchemaType};
use crate::levels::{Compatibility, Mode};

type Result<T> = std::result::Result<T, RegistryError>;

/// Versions register again when another writer took the number first.
const REGISTER_ATTEMPTS: usize = 8;

/// A schema sent to register, look up or check.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SchemaRequest {
    pub schema: String,
    #[serde(rename = "schemaType", default)]
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Vec<Reference>,
}

/// A schema another one names: `subject` at `version`, by `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

/// A version in a path: a number, or `latest` (also `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl VersionRef {
    pub fn parse(text: &str) -> Result<VersionRef> {
        if text.eq_ignore_ascii_case("latest") || text == "-1" {
            return Ok(VersionRef::Latest);
        }
        match text.parse::<u32>() {
            Ok(n) if n >= 1 && n <= i32::MAX as u32 => Ok(VersionRef::Number(n)),
            _ => Err(RegistryError::InvalidVersion(text.to_string())),
        }
    }
}

/// One version of a subject, with its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub subject: String,
    pub version: u32,
    pub id: i64,
    pub schema_type: String,
    pub schema: String,
    pub references: Vec<Reference>,
}

/// A schema by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaInfo {
    pub id: i64,
    pub schema_type: String,
    pub schema: String,
    pub references: Vec<Reference>,
}

/// The registry, over a metadata store every agent shares.
#[derive(Clone)]
pub struct Registry {
    meta: Arc<dyn MetadataStore>,
}

impl Registry {
    pub fn new(meta: Arc<dyn MetadataStore>) -> Registry {
        Registry { meta }
    }

    /// Registers `request` under `subject`: the id of the schema (the same
    /// one when this schema is already a version of the subject, or of any
    /// subject), after checking it against the earlier versions.
    pub async fn register(&self, subject: &str, request: &SchemaRequest) -> Result<i64> {
        match self.mode(Some(subject), true).await? {
            Mode::ReadWrite => {}
            Mode::ReadOnly => return Err(RegistryError::ReadOnly(subject.to_string())),
            Mode::Import => {
                return Err(RegistryError::Unsupported(
                    "IMPORT mode (registering with given ids) is not supported".into(),
                ));
            }
        }
        let candidate = self.candidate(request).await?;
        for _ in 0..REGISTER_ATTEMPTS {
            let versions = self.meta.subject_versions(subject).await?;
            // A schema's id is its fingerprint's: one lookup, not a hash of
            // every version.
            let known = self
                .meta
                .registry_schema_with(&candidate.fingerprint)
                .await?;
            if let Some(id) = known
                && versions.iter().any(|v| !v.deleted && v.schema_id == id)
            {
                return Ok(id);
            }
            let level = self.compatibility(Some(subject), true).await?;
            let messages = self
                .incompatibilities(&candidate, &versions, level, false)
                .await?;
            if !messages.is_empty() {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_string(),
                    messages,
                });
            }
            let id = self
                .meta
                .registry_schema_id(
                    &candidate.fingerprint,
                    candidate.schema_type.name(),
                    &request.schema,
                    &candidate.references,
                )
                .await?;
            let next = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
            match self.meta.add_subject_version(subject, next, id).await {
                Ok(()) => return Ok(id),
                Err(LogError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::Store(LogError::Conflict(format!(
            "subject \"{subject}\" kept changing while registering; try again"
        ))))
    }

    /// The version of `subject` that is `request`'s schema.
    pub async fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        deleted: bool,
    ) -> Result<VersionInfo> {
        let versions = self.meta.subject_versions(subject).await?;
        if !versions.iter().any(|v| deleted || !v.deleted) {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        let candidate = self.candidate(request).await?;
        let known = self
            .meta
            .registry_schema_with(&candidate.fingerprint)
            .await?;
        if let Some(v) = versions
            .iter()
            .rev()
            .find(|v| (deleted || !v.deleted) && Some(v.schema_id) == known)
        {
            return self.info(v).await;
        }
        Err(RegistryError::SchemaNotFound(
            "with this content under the subject".into(),
        ))
    }

    /// Version `version` of `subject` (soft-deleted ones when `deleted`).
    pub async fn version(
        &self,
        subject: &str,
        version: VersionRef,
        deleted: bool,
    ) -> Result<VersionInfo> {
        let v = self.find(subject, version, deleted).await?;
        self.info(&v).await
    }

    /// The version numbers of `subject`.
    pub async fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>> {
        let versions: Vec<u32> = self
            .meta
            .subject_versions(subject)
            .await?
            .into_iter()
            .filter(|v| deleted || !v.deleted)
            .map(|v| v.version)
            .collect();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        Ok(versions)
    }

    /// Every subject with a version (a soft-deleted one when `deleted`).
    pub async fn subjects(&self, deleted: bool) -> Result<Vec<String>> {
        let mut subjects: Vec<String> = self
            .meta
            .all_subject_versions()
            .await?
            .into_iter()
            .filter(|v| deleted || !v.deleted)
            .map(|v| v.subject)
            .collect();
        subjects.dedup();
        Ok(subjects)
    }

    /// The ids of the live schemas that reference version `version` of
    /// `subject`.
    pub async fn referenced_by(&self, subject: &str, version: VersionRef) -> Result<Vec<i64>> {
        let v = self.find(subject, version, false).await?;
        self.referencing(subject, &[v.version]).await
    }

    /// The ids of live schemas whose references name one of `versions` of
    /// `subject`.
    async fn referencing(&self, subject: &str, versions: &[u32]) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        for v in self.meta.all_subject_versions().await? {
            if v.deleted || ids.contains(&v.schema_id) {
                continue;
            }
            let s = self.stored(v.schema_id).await?;
            if references_of(&s)?.iter().any(|r| {
                r.subject == subject
                    && u32::try_from(r.version).is_ok_and(|n| versions.contains(&n))
            }) {
                ids.push(v.schema_id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Refuses to delete `versions` of `subject` while live schemas
    /// reference them.
    async fn unreferenced(&self, subject: &str, versions: &[u32]) -> Result<()> {
        let ids = self.referencing(subject, versions).await?;
        if ids.is_empty() {
            return Ok(());
        }
        Err(RegistryError::ReferenceExists(format!(
            "One or more references exist to the schema {{subject={subject}, versions={versions:?}}}: \
             schema ids {ids:?} reference it"
        )))
    }

    /// Deletes every version of `subject`: soft, or (after a soft delete)
    /// permanently, with its settings. The versions deleted. Refused while
    /// live schemas reference one of them.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>> {
        let versions = self.meta.subject_versions(subject).await?;
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        let numbers: Vec<u32> = versions.iter().map(|v| v.version).collect();
        self.unreferenced(subject, &numbers).await?;
        let live: Vec<u32> = versions
            .iter()
            .filter(|v| !v.deleted)
            .map(|v| v.version)
            .collect();
        if permanent {
            if !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_string()));
            }
            let all: Vec<u32> = versions.iter().map(|v| v.version).collect();
            self.meta.delete_versions(subject, &all).await?;
            self.meta
                .put_registry_settings(subject, &RegistrySettings::default())
                .await?;
            return Ok(all);
        }
        if live.is_empty() {
            return Err(RegistryError::SubjectSoftDeleted(subject.to_string()));
        }
        self.meta.soft_delete_versions(subject, &live).await?;
        Ok(live)
    }

    /// Deletes one version of `subject`: soft, or (after a soft delete)
    /// permanently. Refused while live schemas reference it.
    pub async fn delete_version(
        &self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<u32> {
        let v = self.find(subject, version, permanent).await?;
        self.unreferenced(subject, &[v.version]).await?;
        if permanent {
            if !v.deleted {
                return Err(RegistryError::VersionNotSoftDeleted {
                    subject: subject.to_string(),
                    version: v.version,
                });
            }
            self.meta.delete_versions(subject, &[v.version]).await?;
        } else {
            self.meta
                .soft_delete_versions(subject, &[v.version])
                .await?;
        }
        Ok(v.version)
    }

    /// The schema with id `id`.
    pub async fn schema(&self, id: i64) -> Result<SchemaInfo> {
        let s = self.stored(id).await?;
        Ok(SchemaInfo {
            id,
            references: references_of(&s)?,
            schema_type: s.schema_type,
            schema: s.schema,
        })
    }

    /// The subject versions that are schema `id`.
    pub async fn versions_of(&self, id: i64, deleted: bool) -> Result<Vec<(String, u32)>> {
        self.stored(id).await?;
        Ok(self
            .meta
            .versions_of_schema(id)
            .await?
            .into_iter()
            .filter(|v| deleted || !v.deleted)
            .map(|v| (v.subject, v.version))
            .collect())
    }

    /// Why `request` could not be registered under `subject` at its
    /// compatibility level (empty: it could) — against `version` only when
    /// given.
    pub async fn check(
        &self,
        subject: &str,
        version: Option<VersionRef>,
        request: &SchemaRequest,
    ) -> Result<Vec<String>> {
        let candidate = self.candidate(request).await?;
        let level = self.compatibility(Some(subject), true).await?;
        let versions = match version {
            Some(v) => vec![self.find(subject, v, false).await?],
            None => self.meta.subject_versions(subject).await?,
        };
        self.incompatibilities(&candidate, &versions, level, version.is_some())
            .await
    }

    /// The compatibility level of `subject` (`None`: the registry's);
    /// falling back to the registry's, or else the default, when
    /// `fallback`.
    pub async fn compatibility(
        &self,
        subject: Option<&str>,
        fallback: bool,
    ) -> Result<Compatibility> {
        if let Some(s) = subject {
            if let Some(level) = self.meta.registry_settings(s).await?.compatibility {
                return Compatibility::parse(&level);
            }
            if !fallback {
                return Err(RegistryError::SubjectCompatibilityNotConfigured(
                    s.to_string(),
                ));
            }
        }
        match self.meta.registry_settings("").await?.compatibility {
            Some(level) => Compatibility::parse(&level),
            None => Ok(Compatibility::DEFAULT),
        }
    }

    /// Sets the compatibility level of `subject` (`None`: the registry's).
    pub async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Option<Compatibility>,
    ) -> Result<()> {
        let key = subject.unwrap_or("");
        let mut settings = self.meta.registry_settings(key).await?;
        settings.compatibility = level.map(|l| l.name().to_string());
        Ok(self.meta.put_registry_settings(key, &settings).await?)
    }

    /// The mode of `subject` (`None`: the registry's), with the same
    /// fallback as [`Registry::compatibility`].
    pub async fn mode(&self, subject: Option<&str>, fallback: bool) -> Result<Mode> {
        if let Some(s) = subject {
            if let Some(mode) = self.meta.registry_settings(s).await?.mode {
                return Mode::parse(&mode);
            }
            if !fallback {
                return Err(RegistryError::SubjectModeNotConfigured(s.to_string()));
            }
        }
        match self.meta.registry_settings("").await?.mode {
            Some(mode) => Mode::parse(&mode),
            None => Ok(Mode::DEFAULT),
        }
    }

    /// Sets the mode of `subject` (`None`: the registry's).
    pub async fn set_mode(&self, subject: Option<&str>, mode: Option<Mode>) -> Result<()> {
        let key = subject.unwrap_or("");
        let mut settings = self.meta.registry_settings(key).await?;
        settings.mode = mode.map(|m| m.name().to_string());
        Ok(self.meta.put_registry_settings(key, &settings).await?)
    }

    async fn find(
        &self,
        subject: &str,
        version: VersionRef,
        deleted: bool,
    ) -> Result<SubjectVersion> {
        let versions = self.meta.subject_versions(subject).await?;
        let visible: Vec<&SubjectVersion> =
            versions.iter().filter(|v| deleted || !v.deleted).collect();
        if visible.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        let found = match version {
            VersionRef::Latest => visible.last().copied(),
            VersionRef::Number(n) => visible.iter().copied().find(|v| v.version == n),
        };
        found
            .cloned()
            .ok_or_else(|| RegistryError::VersionNotFound {
                subject: subject.to_string(),
                version: match version {
                    VersionRef::Latest => "latest".into(),
                    VersionRef::Number(n) => n.to_string(),
                },
            })
    }

    async fn info(&self, v: &SubjectVersion) -> Result<VersionInfo> {
        let s = self.stored(v.schema_id).await?;
        Ok(VersionInfo {
            subject: v.subject.clone(),
            version: v.version,
            id: v.schema_id,
            references: references_of(&s)?,
            schema_type: s.schema_type,
            schema: s.schema,
        })
    }

    async fn stored(&self, id: i64) -> Result<RegisteredSchema> {
        self.meta
            .registry_schema(id)
            .await?
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    /// A request parsed, with its references resolved and its identity.
    async fn candidate(&self, request: &SchemaRequest) -> Result<Candidate> {
        let schema_type = SchemaType::parse(request.schema_type.as_deref())?;
        let references = serde_json::to_string(&request.references)
            .map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
        let texts = self.referenced_texts(&request.references).await?;
        let parsed = formats::parse(schema_type, &request.schema, &texts)?;
        let fingerprint = formats::fingerprint(schema_type, &request.schema, &references)?;
        Ok(Candidate {
            schema_type,
            parsed,
            references,
            fingerprint,
        })
    }

    /// The schemas `references` name (and theirs, first), as (name, text).
    pub async fn referenced(&self, references: &[Reference]) -> Result<Vec<(String, String)>> {
        self.referenced_texts(references).await
    }

    async fn referenced_texts(&self, references: &[Reference]) -> Result<Vec<(String, String)>> {
        let mut texts = Vec::new();
        let mut pending: Vec<Reference> = references.to_vec();
        let mut seen = std::collections::HashSet::new();
        while let Some(r) = pending.pop() {
            if !seen.insert((r.subject.clone(), r.version)) || seen.len() > 1000 {
                continue;
            }
            let version = u32::try_from(r.version)
                .ok()
                .filter(|v| *v >= 1)
                .map(VersionRef::Number)
                .unwrap_or(VersionRef::Latest);
            let v = self
                .version(&r.subject, version, false)
                .await
                .map_err(|e| {
                    RegistryError::InvalidSchema(format!(
                        "reference {} ({} version {}): {e}",
                        r.name, r.subject, r.version
                    ))
                })?;
            pending.extend(v.references);
            texts.push((r.name, v.schema));
        }
        texts.reverse();
        Ok(texts)
    }

    /// What keeps `candidate` from the live `versions` at `level`: against
    /// the latest one, or every one for a transitive level or when `every`.
    async fn incompatibilities(
        &self,
        candidate: &Candidate,
        versions: &[SubjectVersion],
        level: Compatibility,
        every: bool,
    ) -> Result<Vec<String>> {
        if level == Compatibility::None {
            return Ok(Vec::new());
        }
        let live: Vec<&SubjectVersion> = versions.iter().filter(|v| !v.deleted).collect();
        let against: Vec<&SubjectVersion> = if level.transitive() || every {
            live
        } else {
            live.last().copied().into_iter().collect()
        };
        let mut messages = Vec::new();
        for v in against {
            let old = self.stored(v.schema_id).await?;
            let old_type = SchemaType::parse(Some(&old.schema_type))?;
            if old_type != candidate.schema_type {
                messages.push(format!(
                    "version {} is a {} schema, the new one {}",
                    v.version,
                    old_type.name(),
                    candidate.schema_type.name()
                ));
                continue;
            }
            let texts = self.referenced_texts(&references_of(&old)?).await?;
            let old = formats::parse(old_type, &old.schema, &texts)?;
            if level.backward() {
                for m in formats::cannot_read(&old, &candidate.parsed) {
                    messages.push(format!(
                        "the new schema cannot read data written with version {}: {m}",
                        v.version
                    ));
                }
            }
            if level.forward() {
                for m in formats::cannot_read(&candidate.parsed, &old) {
                    messages.push(format!(
                        "version {} cannot read data written with the new schema: {m}",
                        v.version
                    ));
                }
            }
        }
        Ok(messages)
    }
}

struct Candidate {
    schema_type: SchemaType,
    parsed: Parsed,
    /// As stored: JSON.
    references: String,
    fingerprint: String,
}

fn references_of(s: &RegisteredSchema) -> Result<Vec<Reference>> {
    serde_json::from_str(&s.references)
        .map_err(|e| RegistryError::Store(LogError::Internal(format!("bad references: {e}"))))
}

#[cfg(test)]
mod tests;
