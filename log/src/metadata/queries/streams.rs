//! Streams and their partitions, for either store.

use async_trait::async_trait;

use super::super::rows::{self, MetaRow, SCHEMA_VERSION_COLUMNS, STREAM_COLUMNS};
use super::super::sql::{Backend, Sql, Statement};
use super::super::{PartitionStats, StreamStore};
use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::stream::{SchemaVersion, StreamId, StreamInfo, StreamSpec, encode_schema};

/// What partitions hold, before its WHERE and GROUP BY.
const PARTITION_STATS: &str = "SELECT p.stream_id, p.partition_no, p.next_offset, \
     min(c.base_offset) AS first_offset, \
     CAST(coalesce(sum(coalesce(c.row_count, c.end_offset - c.base_offset)), 0) AS BIGINT) AS rows_held, \
     CAST(coalesce(sum(c.byte_len), 0) AS BIGINT) AS bytes, \
     count(c.base_offset) AS chunks, max(c.max_append_time_us) AS last_append \
     FROM partitions p LEFT JOIN chunks c \
       ON c.stream_id = p.stream_id AND c.partition_no = p.partition_no";

/// Stream `name`, its row locked for the transaction.
async fn locked_stream<B: Backend>(c: &mut B::Conn, name: &str) -> Result<Option<StreamInfo>> {
    let row = c
        .fetch_optional(
            Statement::new(format!(
                "SELECT {STREAM_COLUMNS} FROM streams WHERE name = $1{}",
                B::FOR_UPDATE
            ))
            .text(name),
        )
        .await?;
    row.as_ref().map(rows::stream).transpose()
}

#[async_trait]
impl<B: Backend> StreamStore for B {
    async fn create_stream(&self, spec: &StreamSpec, created_at: Micros) -> Result<StreamInfo> {
        spec.validate()?;
        let key = serde_json::to_string(&spec.key)
            .map_err(|e| LogError::Internal(format!("encode key: {e}")))?;
        let schema_ipc = encode_schema(&spec.schema)?;
        let mut w = self.writer().await?;
        let row = w
            .fetch_optional(
                Statement::new(
                    "INSERT INTO streams (name, schema_ipc, partitions, key_columns, \
                     event_time_column, watermark_delay_us, retention_us, created_at_us, \
                     archive_after_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (name) DO NOTHING RETURNING id",
                )
                .text(&spec.name)
                .bytes(schema_ipc.clone())
                .int(spec.partitions as i64)
                .text(key)
                .opt_text(spec.event_time.as_ref().map(|e| e.column.clone()))
                .opt_int(
                    spec.event_time
                        .as_ref()
                        .map(|e| e.watermark_delay.as_micros() as i64),
                )
                .opt_int(spec.retention.map(|r| r.as_micros() as i64))
                .int(created_at)
                .opt_int(spec.archive_after.map(|a| a.as_micros() as i64)),
            )
            .await?;
        let Some(row) = row else {
            return Err(LogError::StreamExists(spec.name.clone()));
        };
        let id = row.int("id")?;
        w.execute(
            Statement::new(format!(
                "INSERT INTO schema_versions ({SCHEMA_VERSION_COLUMNS}) \
                 VALUES ($1, 1, $2, 'CREATE STREAM', $3)"
            ))
            .int(id)
            .bytes(schema_ipc)
            .int(created_at),
        )
        .await?;
        for p in 0..spec.partitions {
            w.execute(
                Statement::new(
                    "INSERT INTO partitions (stream_id, partition_no, next_offset) \
                     VALUES ($1, $2, 0)",
                )
                .int(id)
                .int(p as i64),
            )
            .await?;
        }
        B::commit(w).await?;
        Ok(StreamInfo {
            id,
            spec: spec.clone(),
            created_at,
            schema_version: 1,
        })
    }

    async fn drop_stream(&self, name: &str) -> Result<StreamInfo> {
        let mut w = self.writer().await?;
        let info = locked_stream::<B>(&mut w, name)
            .await?
            .ok_or_else(|| LogError::UnknownStream(name.to_string()))?;
        // Wait for flushes committing to it (they hold its partition rows).
        w.fetch_all(
            Statement::new(format!(
                "SELECT 1 AS one FROM partitions WHERE stream_id = $1 \
                 ORDER BY partition_no{}",
                B::FOR_UPDATE
            ))
            .int(info.id),
        )
        .await?;
        // Children first, without relying on the schema's cascades.
        for table in [
            "chunks",
            "partitions",
            "producers",
            "group_offsets",
            "consumer_groups",
            "schema_versions",
        ] {
            w.execute(
                Statement::new(format!("DELETE FROM {table} WHERE stream_id = $1")).int(info.id),
            )
            .await?;
        }
        w.execute(Statement::new("DELETE FROM streams WHERE id = $1").int(info.id))
            .await?;
        B::announce(&mut w, &[format!("d:{}", info.id)]).await?;
        B::commit(w).await?;
        Ok(info)
    }

    async fn stream(&self, name: &str) -> Result<Option<StreamInfo>> {
        let row = self
            .reader()
            .await?
            .fetch_optional(
                Statement::new(format!(
                    "SELECT {STREAM_COLUMNS} FROM streams WHERE name = $1"
                ))
                .text(name),
            )
            .await?;
        row.as_ref().map(rows::stream).transpose()
    }

    async fn schema_versions(&self, stream_id: StreamId) -> Result<Vec<SchemaVersion>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(
                Statement::new(format!(
                    "SELECT {SCHEMA_VERSION_COLUMNS} FROM schema_versions \
                     WHERE stream_id = $1 ORDER BY version"
                ))
                .int(stream_id),
            )
            .await?;
        rows.iter().map(rows::schema_version).collect()
    }

    async fn evolve_stream(
        &self,
        name: &str,
        expected: u32,
        schema: &arrow::datatypes::Schema,
        change: &str,
        at: Micros,
    ) -> Result<StreamInfo> {
        let schema_ipc = encode_schema(schema)?;
        let mut w = self.writer().await?;
        let mut info = locked_stream::<B>(&mut w, name)
            .await?
            .ok_or_else(|| LogError::UnknownStream(name.to_string()))?;
        if info.schema_version != expected {
            return Err(LogError::SchemaChanged {
                stream: name.to_string(),
                version: info.schema_version,
            });
        }
        let version = expected + 1;
        w.execute(
            Statement::new(format!(
                "INSERT INTO schema_versions ({SCHEMA_VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
            ))
            .int(info.id)
            .int(version.into())
            .bytes(schema_ipc.clone())
            .text(change)
            .int(at),
        )
        .await?;
        w.execute(
            Statement::new("UPDATE streams SET schema_ipc = $1, schema_version = $2 WHERE id = $3")
                .bytes(schema_ipc)
                .int(version.into())
                .int(info.id),
        )
        .await?;
        B::announce(&mut w, &[format!("s:{}", info.id)]).await?;
        B::commit(w).await?;
        info.spec.schema = std::sync::Arc::new(schema.clone());
        info.schema_version = version;
        Ok(info)
    }

    async fn set_stream_options(
        &self,
        name: &str,
        retention: Option<std::time::Duration>,
        archive_after: Option<std::time::Duration>,
    ) -> Result<StreamInfo> {
        let mut w = self.writer().await?;
        let mut info = locked_stream::<B>(&mut w, name)
            .await?
            .ok_or_else(|| LogError::UnknownStream(name.to_string()))?;
        info.spec.retention = retention;
        info.spec.archive_after = archive_after;
        info.spec.validate()?;
        let micros = |d: Option<std::time::Duration>| d.map(|d| d.as_micros() as i64);
        w.execute(
            Statement::new(
                "UPDATE streams SET retention_us = $1, archive_after_us = $2 WHERE id = $3",
            )
            .opt_int(micros(retention))
            .opt_int(micros(archive_after))
            .int(info.id),
        )
        .await?;
        B::announce(&mut w, &[format!("s:{}", info.id)]).await?;
        B::commit(w).await?;
        Ok(info)
    }

    async fn streams(&self) -> Result<Vec<StreamInfo>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(format!(
                "SELECT {STREAM_COLUMNS} FROM streams ORDER BY name"
            )))
            .await?;
        rows.iter().map(rows::stream).collect()
    }

    async fn partition_ends(&self, stream_id: StreamId) -> Result<Vec<u64>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(
                Statement::new(
                    "SELECT next_offset FROM partitions WHERE stream_id = $1 \
                     ORDER BY partition_no",
                )
                .int(stream_id),
            )
            .await?;
        rows.iter()
            .map(|r| Ok(r.int("next_offset")? as u64))
            .collect()
    }

    async fn partition_stats(&self, stream_id: StreamId) -> Result<Vec<PartitionStats>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(
                Statement::new(format!(
                    "{PARTITION_STATS} WHERE p.stream_id = $1 \
                     GROUP BY p.stream_id, p.partition_no, p.next_offset ORDER BY p.partition_no"
                ))
                .int(stream_id),
            )
            .await?;
        rows.iter().map(rows::partition_stats).collect()
    }

    async fn all_partition_stats(&self) -> Result<Vec<(StreamId, PartitionStats)>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(format!(
                "{PARTITION_STATS} GROUP BY p.stream_id, p.partition_no, p.next_offset \
                 ORDER BY p.stream_id, p.partition_no"
            )))
            .await?;
        rows.iter()
            .map(|r| Ok((r.int("stream_id")?, rows::partition_stats(r)?)))
            .collect()
    }
}
