//! Writing streams and chunks back into the embedded store as recovery
//! found them in the object store (see [`crate::recover`]): a stream under
//! its old id (the chunks' manifests name it by id; SQLite's
//! AUTOINCREMENT then gives later streams larger ids), and chunks at the
//! offsets their manifests give.

use super::SqliteMetadata;
use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::metadata::ChunkRecord;
use crate::metadata::rows::{CHUNK_COLUMNS, SCHEMA_VERSION_COLUMNS, STREAM_COLUMNS};
use crate::metadata::sql::{Backend, Sql, Statement};
use crate::stream::{SchemaVersion, StreamInfo, encode_schema};

impl SqliteMetadata {
    /// Makes stream `info` under its id, with its schema `versions` and
    /// empty partitions.
    pub async fn restore_stream(
        &self,
        info: &StreamInfo,
        versions: &[SchemaVersion],
    ) -> Result<()> {
        let spec = &info.spec;
        let key = serde_json::to_string(&spec.key)
            .map_err(|e| LogError::Internal(format!("encode key: {e}")))?;
        let mut w = self.writer().await?;
        w.execute(
            Statement::new(format!(
                "INSERT INTO streams ({STREAM_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .int(info.id)
            .text(&spec.name)
            .bytes(encode_schema(&spec.schema)?)
            .int(spec.partitions as i64)
            .text(key)
            .opt_text(spec.event_time.as_ref().map(|e| e.column.clone()))
            .opt_int(
                spec.event_time
                    .as_ref()
                    .map(|e| e.watermark_delay.as_micros() as i64),
            )
            .opt_int(spec.retention.map(|r| r.as_micros() as i64))
            .int(info.created_at)
            .int(info.schema_version.into())
            .opt_int(spec.archive_after.map(|a| a.as_micros() as i64)),
        )
        .await?;
        for v in versions {
            w.execute(
                Statement::new(format!(
                    "INSERT INTO schema_versions ({SCHEMA_VERSION_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5)"
                ))
                .int(info.id)
                .int(v.version.into())
                .bytes(encode_schema(&v.schema)?)
                .text(&v.change)
                .int(v.created_at),
            )
            .await?;
        }
        for p in 0..spec.partitions {
            w.execute(
                Statement::new(
                    "INSERT INTO partitions (stream_id, partition_no, next_offset) \
                     VALUES ($1, $2, 0)",
                )
                .int(info.id)
                .int(p as i64),
            )
            .await?;
        }
        Self::commit(w).await
    }

    /// Indexes `chunks` (each with its object's size) in one transaction,
    /// and moves each partition's next offset past them.
    pub async fn restore_chunks(&self, chunks: &[(ChunkRecord, u64)], at: Micros) -> Result<()> {
        let mut w = self.writer().await?;
        for (c, object_size) in chunks {
            w.execute(
                Statement::new(
                    "INSERT INTO objects (object_key, size_bytes, created_at_us) \
                     VALUES ($1, $2, $3) ON CONFLICT (object_key) DO NOTHING",
                )
                .text(&c.object)
                .uint(*object_size)
                .int(at),
            )
            .await?;
            w.execute(
                Statement::new(format!(
                    "INSERT INTO chunks ({CHUNK_COLUMNS}, row_count) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                ))
                .int(c.stream_id)
                .int(c.partition as i64)
                .uint(c.base_offset)
                .uint(c.end_offset)
                .text(&c.object)
                .uint(c.byte_range.start)
                .uint(c.byte_range.end - c.byte_range.start)
                .opt_int(c.event_time.min)
                .opt_int(c.event_time.max)
                .int(c.append_time.min.unwrap_or(at))
                .int(c.append_time.max.unwrap_or(at))
                .int(c.schema_version.into())
                .opt_int(c.sparse_rows.map(|n| n as i64)),
            )
            .await?;
            w.execute(
                Statement::new(
                    "UPDATE partitions SET next_offset = max(next_offset, $3) \
                     WHERE stream_id = $1 AND partition_no = $2",
                )
                .int(c.stream_id)
                .int(c.partition as i64)
                .uint(c.end_offset),
            )
            .await?;
        }
        Self::commit(w).await
    }
}
