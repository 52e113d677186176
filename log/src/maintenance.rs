//! Background upkeep of the log: retention, compaction and garbage
//! collection. Each is safe with several agents running it at once: every
//! change is one conditional metadata transaction, and deleting an object
//! twice is harmless.
//!
//! - Retention deletes a stream's whole chunks older than its retention,
//!   oldest first per partition.
//! - Compaction rewrites runs of small chunks of one partition (each older
//!   than `compact_after`, so the tail stays in the writer's cache) as one
//!   chunk in a new per-partition object, then swaps the index rows in one
//!   transaction that checks the old rows are still there; an agent that
//!   loses the race leaves an object nobody references.
//! - A table's log is compacted by key instead (see [`by_key`]): each key
//!   keeps only its latest row.
//! - A stream with `archive_after` has its chunks older than that
//!   rewritten as Parquet archive chunks (see [`archive`]), swapped in the
//!   same way; compaction leaves archive chunks alone.
//! - Stream definitions missing from the object store are written there
//!   (see [`crate::definitions`]).
//! - Garbage collection deletes objects no chunk references once they have
//!   been unreferenced for the grace period (a reader that listed their
//!   chunks just before can still fetch them), and objects the index never
//!   knew (a flush whose commit failed) once they are older than the grace
//!   period.

mod archive;
mod by_key;

use arrow::array::RecordBatch;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::chunk::{self, TimeBounds};
use crate::config::MaintenanceConfig;
use crate::definitions;
use crate::error::Result;
use crate::log::Log;
use crate::manifest::{self, Manifest, ManifestChunk};
use crate::metadata::ChunkRecord;
use crate::path::DataObjectPath;
use crate::stream::{StreamInfo, StreamKind, chunk_schema};

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub expired_chunks: u64,
    pub compacted_chunks: u64,
    pub compactions: u64,
    /// Compactions another agent got to first.
    pub lost_races: u64,
    pub deleted_objects: u64,
    /// Objects deleted that the index never knew.
    pub deleted_strays: u64,
    /// Rows of tables' logs dropped by compaction by key.
    pub dropped_rows: u64,
    /// Archive chunks written, and the chunks they replaced.
    pub archives: u64,
    pub archived_chunks: u64,
    /// Stream definitions written to the object store that were missing.
    pub kept_definitions: u64,
}

impl Log {
    /// Runs [`Log::maintain`] every `interval` while the log lives.
    pub fn start_maintenance(self: &std::sync::Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let interval = self.maintenance_config().interval;
        if interval.is_zero() {
            return None;
        }
        let weak = std::sync::Arc::downgrade(self);
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(log) = weak.upgrade() else { return };
                if let Err(e) = log.maintain().await {
                    tracing::warn!(error = %e, "log maintenance failed; retrying next round");
                }
            }
        }))
    }

    /// One round of retention, compaction and garbage collection.
    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        let config = self.maintenance_config().clone();
        let now = self.now_micros();
        let mut report = MaintenanceReport::default();
        let streams = self.all_streams().await?;
        self.keep_missing_definitions(&streams, &mut report).await?;
        for info in streams {
            if let Some(retention) = info.spec.retention {
                let before = now - retention.as_micros() as i64;
                report.expired_chunks += self.metadata().expire_chunks(info.id, before).await?;
            }
            let by_key = StreamKind::of(info.name()) == StreamKind::Table;
            for partition in 0..info.spec.partitions {
                if by_key {
                    self.compact_by_key(&info, partition, &config, &mut report)
                        .await?;
                } else {
                    self.compact_partition(&info, partition, &config, &mut report)
                        .await?;
                    if let Some(age) = info.spec.archive_after {
                        self.archive_partition(&info, partition, age, &config, &mut report)
                            .await?;
                    }
                }
            }
        }
        self.collect_garbage(&config, &mut report).await?;
        if report != MaintenanceReport::default() {
            tracing::info!(?report, "log maintenance");
        }
        Ok(report)
    }

    /// Writes the definitions of streams that have none in the object
    /// store (see [`crate::definitions`]).
    async fn keep_missing_definitions(
        &self,
        streams: &[std::sync::Arc<StreamInfo>],
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        let kept: std::collections::HashSet<_> =
            definitions::ids(self.store()).await?.into_iter().collect();
        for info in streams.iter().filter(|s| !kept.contains(&s.id)) {
            let versions = self.metadata().schema_versions(info.id).await?;
            definitions::write(self.store(), info, &versions).await?;
            report.kept_definitions += 1;
        }
        Ok(())
    }

    async fn compact_partition(
        &self,
        info: &StreamInfo,
        partition: u32,
        config: &MaintenanceConfig,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        let old_enough = self.now_micros() - config.compact_after.as_micros() as i64;
        let chunks = self
            .metadata()
            .chunks_by_offset(info.id, partition, 0..u64::MAX)
            .await?;
        let small = |c: &ChunkRecord| {
            c.byte_range.end - c.byte_range.start < config.small_chunk_bytes
                && is_plain(c, info, old_enough)
        };
        for mut run in runs(chunks, small, config.target_chunk_bytes) {
            self.compact_run(info, &mut run, config, report).await?;
        }
        Ok(())
    }

    /// Rewrites `run` as one chunk if it is long enough; empties it.
    async fn compact_run(
        &self,
        info: &StreamInfo,
        run: &mut Vec<ChunkRecord>,
        config: &MaintenanceConfig,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        let old = std::mem::take(run);
        if old.len() < config.min_run.max(2) {
            return Ok(());
        }
        let mut batches = Vec::new();
        for c in &old {
            batches.extend(self.fetch_chunk(c).await?);
        }
        let merge = |f: fn(&ChunkRecord) -> TimeBounds| TimeBounds {
            min: old.iter().filter_map(|c| f(c).min).min(),
            max: old.iter().filter_map(|c| f(c).max).max(),
        };
        let (event_time, append_time) = (merge(|c| c.event_time), merge(|c| c.append_time));
        let schema = chunk_schema(&info.spec.schema);
        let replaced = Replacement {
            info,
            old: &old,
            schema,
            batches,
            event_time,
            append_time,
            sparse_rows: None,
            archive: false,
        };
        if self.write_replacement(replaced).await? {
            report.compactions += 1;
            report.compacted_chunks += old.len() as u64;
        } else {
            report.lost_races += 1;
        }
        Ok(())
    }

    /// The rows of chunk `c`, fetched and decoded off the runtime.
    async fn fetch_chunk(&self, c: &ChunkRecord) -> Result<Vec<RecordBatch>> {
        let path = DataObjectPath::parse(&c.object);
        let bytes: Bytes = self
            .store()
            .get_range(path.as_path(), c.byte_range.clone())
            .await?;
        let object = c.object.clone();
        tokio::task::spawn_blocking(move || chunk::decode(&object, bytes, None))
            .await
            .map_err(|e| crate::LogError::Internal(format!("decode task: {e}")))?
    }

    /// Writes `r.batches` as one chunk (an IPC chunk, or an archive
    /// chunk) in a new object and swaps it for the chunks `r.old` in one
    /// conditional transaction; false (and the new object deleted) when
    /// another agent changed those chunks first.
    async fn write_replacement(&self, r: Replacement<'_>) -> Result<bool> {
        let level = self.zstd_level();
        let (first, last) = (&r.old[0], &r.old[r.old.len() - 1]);
        // What the object says of itself (see `crate::manifest`); an
        // archive chunk is its whole object, so its byte range is left 0..0.
        let mut described = ManifestChunk {
            stream: r.info.id,
            partition: first.partition,
            schema_version: r.info.schema_version,
            bytes: [0, 0],
            offsets: [first.base_offset, last.end_offset],
            exact: true,
            sparse_rows: r.sparse_rows,
            event_time: manifest::bounds(r.event_time),
            append_time: manifest::bounds(r.append_time),
        };
        let (schema, batches, archive) = (r.schema, r.batches, r.archive);
        let encoded = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, u64)> {
            if archive {
                let m = Manifest {
                    chunks: vec![described],
                };
                let kv = vec![(
                    manifest::PARQUET_KEY.to_string(),
                    manifest::to_parquet_value(&m)?,
                )];
                let bytes = chunk::archive::encode(&schema, &batches, kv)?;
                let len = bytes.len() as u64;
                return Ok((bytes, len));
            }
            let mut bytes = chunk::encode(&schema, &chunk::coalesce(&schema, batches)?, level)?;
            let len = bytes.len() as u64;
            described.bytes = [0, len];
            manifest::append(
                &mut bytes,
                &Manifest {
                    chunks: vec![described],
                },
            )?;
            Ok((bytes, len))
        })
        .await
        .map_err(|e| crate::LogError::Internal(format!("encode task: {e}")))??;
        let (encoded, chunk_len) = encoded;
        let path = match archive {
            true => DataObjectPath::new_archive(),
            false => DataObjectPath::new_unique(),
        };
        let size = encoded.len() as u64;
        self.store()
            .put_durable(path.as_path(), Bytes::from(encoded))
            .await?;
        let new = ChunkRecord {
            stream_id: r.info.id,
            partition: first.partition,
            base_offset: first.base_offset,
            end_offset: last.end_offset,
            object: path.as_str().to_string(),
            byte_range: 0..chunk_len,
            event_time: r.event_time,
            append_time: r.append_time,
            schema_version: r.info.schema_version,
            sparse_rows: r.sparse_rows,
        };
        let swapped = self
            .metadata()
            .replace_chunks(r.old, &new, size, self.now_micros())
            .await?;
        if !swapped {
            // Another agent changed these first: ours is garbage now.
            let _ = self.store().object_store().delete(path.as_path()).await;
        }
        Ok(swapped)
    }

    async fn collect_garbage(
        &self,
        config: &MaintenanceConfig,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        let now = self.now_micros();
        let cutoff = now - config.grace.as_micros() as i64;
        let store = self.store().object_store().clone();
        for key in self.metadata().orphaned_objects(now, cutoff).await? {
            delete(&store, &key).await?;
            self.metadata().forget_object(&key).await?;
            report.deleted_objects += 1;
        }
        // Objects of flushes whose commit failed (in the store, not
        // indexed), and staged transactional rows whose transaction ended
        // (or whose recording failed).
        for (prefix, staged) in [
            (DataObjectPath::PREFIX, false),
            (crate::path::STAGED_PREFIX, true),
        ] {
            let prefix = object_store::path::Path::from(prefix);
            let listed: Vec<object_store::ObjectMeta> =
                store.list(Some(&prefix)).try_collect().await?;
            for meta in listed {
                let key = meta.location.as_ref();
                if meta.last_modified.timestamp_micros() >= cutoff {
                    continue;
                }
                let known = if staged {
                    self.metadata().knows_staged(key).await?
                } else {
                    self.metadata().knows_object(key).await?
                };
                if !known {
                    delete(&store, key).await?;
                    report.deleted_strays += 1;
                }
            }
        }
        Ok(())
    }
}

/// Whether chunk `c` may join a run rewritten with the stream's current
/// schema: written with it, appended before `old_enough`, dense, not an
/// archive chunk.
fn is_plain(c: &ChunkRecord, info: &StreamInfo, old_enough: crate::clock::Micros) -> bool {
    c.append_time.max.is_some_and(|t| t < old_enough)
        && c.schema_version == info.schema_version
        && c.sparse_rows.is_none()
        && !DataObjectPath::is_archive(&c.object)
}

/// `chunks` (a partition's, in offset order) cut into runs of consecutive
/// chunks that `joins`, each up to `max_bytes` (a first chunk larger than
/// that is a run of its own).
fn runs(
    chunks: Vec<ChunkRecord>,
    joins: impl Fn(&ChunkRecord) -> bool,
    max_bytes: u64,
) -> Vec<Vec<ChunkRecord>> {
    let mut out = Vec::new();
    let mut run: Vec<ChunkRecord> = Vec::new();
    let mut bytes = 0;
    for c in chunks {
        let len = c.byte_range.end - c.byte_range.start;
        let joining = joins(&c);
        if joining && (run.is_empty() || bytes + len <= max_bytes) {
            bytes += len;
            run.push(c);
            continue;
        }
        if !run.is_empty() {
            out.push(std::mem::take(&mut run));
        }
        bytes = 0;
        if joining {
            bytes = len;
            run.push(c);
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// One chunk written to replace a run of chunks of one partition.
struct Replacement<'a> {
    info: &'a StreamInfo,
    /// The chunks replaced, in offset order (at least one).
    old: &'a [ChunkRecord],
    schema: arrow::datatypes::SchemaRef,
    batches: Vec<RecordBatch>,
    event_time: TimeBounds,
    append_time: TimeBounds,
    sparse_rows: Option<u64>,
    /// Written as an archive chunk (Parquet).
    archive: bool,
}

/// Deletes an object; one already gone is fine.
async fn delete(store: &std::sync::Arc<dyn ObjectStore>, key: &str) -> Result<()> {
    match store.delete(&object_store::path::Path::from(key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
