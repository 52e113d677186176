//! The Schema Registry's records, for either store.

use async_trait::async_trait;

use super::super::rows::MetaRow;
use super::super::sql::{Backend, Sql, Statement};
use super::super::{RegisteredSchema, RegistrySettings, RegistryStore, SubjectVersion};
use crate::error::{LogError, Result};

const VERSION_COLUMNS: &str = "subject, version, schema_id, deleted";

fn version(row: &impl MetaRow) -> Result<SubjectVersion> {
    Ok(SubjectVersion {
        subject: row.text("subject")?,
        version: u32::try_from(row.int("version")?)
            .map_err(|_| LogError::Internal("registry version out of range".into()))?,
        schema_id: row.int("schema_id")?,
        deleted: row.int("deleted")? != 0,
    })
}

#[async_trait]
impl<B: Backend> RegistryStore for B {
    async fn registry_schema_id(
        &self,
        fingerprint: &str,
        schema_type: &str,
        schema: &str,
        references: &str,
    ) -> Result<i64> {
        let mut c = self.single().await?;
        c.execute(
            Statement::new(
                "INSERT INTO registry_schemas (fingerprint, schema_type, schema, refs) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (fingerprint) DO NOTHING",
            )
            .text(fingerprint)
            .text(schema_type)
            .text(schema)
            .text(references),
        )
        .await?;
        let row = c
            .fetch_optional(
                Statement::new("SELECT id FROM registry_schemas WHERE fingerprint = $1")
                    .text(fingerprint),
            )
            .await?
            .ok_or_else(|| LogError::Internal("registered schema vanished".into()))?;
        row.int("id")
    }

    async fn registry_schema_with(&self, fingerprint: &str) -> Result<Option<i64>> {
        let row = self
            .reader()
            .await?
            .fetch_optional(
                Statement::new("SELECT id FROM registry_schemas WHERE fingerprint = $1")
                    .text(fingerprint),
            )
            .await?;
        row.map(|r| r.int("id")).transpose()
    }

    async fn registry_schema(&self, id: i64) -> Result<Option<RegisteredSchema>> {
        let row = self
            .reader()
            .await?
            .fetch_optional(
                Statement::new(
                    "SELECT id, schema_type, schema, refs FROM registry_schemas WHERE id = $1",
                )
                .int(id),
            )
            .await?;
        row.map(|r| {
            Ok(RegisteredSchema {
                id: r.int("id")?,
                schema_type: r.text("schema_type")?,
                schema: r.text("schema")?,
                references: r.text("refs")?,
            })
        })
        .transpose()
    }

    async fn subject_versions(&self, subject: &str) -> Result<Vec<SubjectVersion>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(
                Statement::new(format!(
                    "SELECT {VERSION_COLUMNS} FROM registry_versions WHERE subject = $1 \
                     ORDER BY version"
                ))
                .text(subject),
            )
            .await?;
        rows.iter().map(version).collect()
    }

    async fn all_subject_versions(&self) -> Result<Vec<SubjectVersion>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(format!(
                "SELECT {VERSION_COLUMNS} FROM registry_versions ORDER BY subject, version"
            )))
            .await?;
        rows.iter().map(version).collect()
    }

    async fn versions_of_schema(&self, id: i64) -> Result<Vec<SubjectVersion>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(
                Statement::new(format!(
                    "SELECT {VERSION_COLUMNS} FROM registry_versions WHERE schema_id = $1 \
                     ORDER BY subject, version"
                ))
                .int(id),
            )
            .await?;
        rows.iter().map(version).collect()
    }

    async fn add_subject_version(&self, subject: &str, version: u32, schema_id: i64) -> Result<()> {
        let done = self
            .single()
            .await?
            .execute(
                Statement::new(
                    "INSERT INTO registry_versions (subject, version, schema_id, deleted) \
                     VALUES ($1, $2, $3, 0) ON CONFLICT (subject, version) DO NOTHING",
                )
                .text(subject)
                .int(version.into())
                .int(schema_id),
            )
            .await?;
        if done == 0 {
            return Err(LogError::Conflict(format!(
                "version {version} of subject \"{subject}\" was registered meanwhile"
            )));
        }
        Ok(())
    }

    async fn soft_delete_versions(&self, subject: &str, versions: &[u32]) -> Result<()> {
        let mut w = self.writer().await?;
        for v in versions {
            w.execute(
                Statement::new(
                    "UPDATE registry_versions SET deleted = 1 WHERE subject = $1 AND version = $2",
                )
                .text(subject)
                .int((*v).into()),
            )
            .await?;
        }
        B::commit(w).await
    }

    async fn delete_versions(&self, subject: &str, versions: &[u32]) -> Result<()> {
        let mut w = self.writer().await?;
        for v in versions {
            w.execute(
                Statement::new("DELETE FROM registry_versions WHERE subject = $1 AND version = $2")
                    .text(subject)
                    .int((*v).into()),
            )
            .await?;
        }
        B::commit(w).await
    }

    async fn registry_settings(&self, subject: &str) -> Result<RegistrySettings> {
        let row = self
            .reader()
            .await?
            .fetch_optional(
                Statement::new(
                    "SELECT compatibility, mode FROM registry_settings WHERE subject = $1",
                )
                .text(subject),
            )
            .await?;
        Ok(match row {
            Some(r) => RegistrySettings {
                compatibility: r.opt_text("compatibility")?,
                mode: r.opt_text("mode")?,
            },
            None => RegistrySettings::default(),
        })
    }

    async fn put_registry_settings(
        &self,
        subject: &str,
        settings: &RegistrySettings,
    ) -> Result<()> {
        let mut w = self.writer().await?;
        w.execute(Statement::new("DELETE FROM registry_settings WHERE subject = $1").text(subject))
            .await?;
        if settings.compatibility.is_some() || settings.mode.is_some() {
            w.execute(
                Statement::new(
                    "INSERT INTO registry_settings (subject, compatibility, mode) \
                     VALUES ($1, $2, $3)",
                )
                .text(subject)
                .opt_text(settings.compatibility.clone())
                .opt_text(settings.mode.clone()),
            )
            .await?;
        }
        B::commit(w).await
    }
}
