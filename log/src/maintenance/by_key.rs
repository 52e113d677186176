//! Compaction by key of a table's log: each key keeps only its latest row.
//!
//! A round takes a partition's oldest chunks (each older than
//! `compact_after` and written with the stream's current schema) and, in
//! one pass, notes the last offset of every key in them, up to
//! `key_map_bytes` of keys (a longer log is done over several rounds). A
//! second pass rewrites those chunks in offset order, a group of about
//! `target_chunk_bytes` of kept rows at a time, keeping a row only if it is
//! its key's last, and dropping a key's last row too when it is a tombstone
//! (`__deleted`) older than `tombstone_retention`. Nothing older than that
//! row is left for the tombstone to hide: the rewritten chunks start at the
//! partition's first.
//!
//! Offsets do not change: the rewritten chunk covers the same offsets and
//! holds fewer rows, with each row's offset in its last column (a *sparse*
//! chunk; its index row records how many rows it holds). Groups commit in
//! offset order, each as one conditional swap of index rows, and the round
//! stops at the first swap another agent got to first, so a tombstone is
//! never dropped while an older row of its key could still be kept.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int64Type, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};

use crate::chunk::{self, TimeBounds};
use crate::config::MaintenanceConfig;
use crate::error::{LogError, Result};
use crate::log::Log;
use crate::maintenance::{MaintenanceReport, Replacement};
use crate::metadata::ChunkRecord;
use crate::stream::{StreamInfo, TABLE_DELETED_COLUMN, sparse_chunk_schema};

/// Bytes a key costs in the key map beyond its own.
const ENTRY_OVERHEAD: usize = 48;

impl Log {
    /// One round of compaction by key of one partition of a table's log.
    pub(super) async fn compact_by_key(
        &self,
        info: &StreamInfo,
        partition: u32,
        config: &MaintenanceConfig,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        let now = self.now_micros();
        let old_enough = now - config.compact_after.as_micros() as i64;
        let chunks: Vec<ChunkRecord> = self
            .metadata()
            .chunks_by_offset(info.id, partition, 0..u64::MAX)
            .await?
            .into_iter()
            .take_while(|c| {
                c.append_time.max.is_some_and(|t| t < old_enough)
                    && c.schema_version == info.schema_version
            })
            .collect();
        if chunks.is_empty() {
            return Ok(());
        }
        let keys = Keys::new(info)?;
        // Pass 1: the last offset of each key.
        let mut last: HashMap<Box<[u8]>, u64> = HashMap::new();
        let mut bytes = 0usize;
        let mut taken = 0;
        for c in &chunks {
            if bytes > config.key_map_bytes {
                break;
            }
            for (b, offsets) in self.decode(c).await? {
                let rows = keys.rows(&b)?;
                for (i, o) in offsets.values().iter().enumerate() {
                    let key = rows.row(i);
                    match last.get_mut(key.as_ref()) {
                        Some(at) => *at = (*o as u64).max(*at),
                        None => {
                            bytes += key.as_ref().len() + ENTRY_OVERHEAD;
                            last.insert(key.as_ref().into(), *o as u64);
                        }
                    }
                }
            }
            taken += 1;
        }
        // Pass 2: rewrite, a group at a time.
        let expired_before = now - config.tombstone_retention.as_micros() as i64;
        let schema: SchemaRef = sparse_chunk_schema(&info.spec.schema);
        let mut group = Group::default();
        for c in &chunks[..taken] {
            for (b, offsets) in self.decode(c).await? {
                let keep = keys.keep(&b, &offsets, &last, expired_before)?;
                group.dropped += keep.false_count() as u64;
                let kept = filter_record_batch(&with_offsets(&schema, b, offsets)?, &keep)?;
                group.kept_bytes += kept.get_array_memory_size();
                group.rows.push(kept);
            }
            group.chunks.push(c.clone());
            if group.kept_bytes as u64 >= config.target_chunk_bytes
                && !self.commit_group(info, &mut group, report).await?
            {
                return Ok(());
            }
        }
        self.commit_group(info, &mut group, report).await?;
        Ok(())
    }

    /// A whole chunk, decoded: batches of its declared columns and
    /// `_timestamp`, each with its rows' offsets.
    async fn decode(&self, c: &ChunkRecord) -> Result<Vec<(RecordBatch, Int64Array)>> {
        let batches = self.fetch_chunk(c).await?;
        let corrupt = |detail: &str| LogError::CorruptChunk {
            object: c.object.clone(),
            detail: detail.to_string(),
        };
        let mut next = c.base_offset as i64;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            if c.sparse_rows.is_none() {
                let n = b.num_rows() as i64;
                out.push((b, Int64Array::from_iter_values(next..next + n)));
                next += n;
                continue;
            }
            let last = b
                .num_columns()
                .checked_sub(1)
                .ok_or_else(|| corrupt("a sparse chunk without an offsets column"))?;
            let offsets = b
                .column(last)
                .as_primitive_opt::<Int64Type>()
                .filter(|o| o.null_count() == 0)
                .cloned()
                .ok_or_else(|| corrupt("a sparse chunk's offsets column is not BIGINT NOT NULL"))?;
            out.push((b.project(&(0..last).collect::<Vec<_>>())?, offsets));
        }
        Ok(out)
    }

    /// Writes `group`'s kept rows as one chunk in place of its chunks, if
    /// that drops a row or merges chunks; empties it. False when another
    /// agent replaced the chunks first.
    async fn commit_group(
        &self,
        info: &StreamInfo,
        group: &mut Group,
        report: &mut MaintenanceReport,
    ) -> Result<bool> {
        let g = std::mem::take(group);
        if g.chunks.is_empty() || (g.dropped == 0 && g.chunks.len() == 1) {
            return Ok(true);
        }
        let schema: SchemaRef = sparse_chunk_schema(&info.spec.schema);
        let kept: u64 = g.rows.iter().map(|b| b.num_rows() as u64).sum();
        let declared = info.spec.schema.fields().len();
        let event_time = match info.event_time_index() {
            Some(i) => chunk::batches_time_bounds(&g.rows, i)?,
            None => TimeBounds::default(),
        };
        let append_time = chunk::batches_time_bounds(&g.rows, declared)?;
        let (first, last) = (&g.chunks[0], &g.chunks[g.chunks.len() - 1]);
        // A chunk left empty keeps the times of the rows it replaced, so
        // that it ages like them.
        let append_time = if kept == 0 {
            TimeBounds {
                min: first.append_time.min,
                max: last.append_time.max,
            }
        } else {
            append_time
        };
        let replaced = Replacement {
            info,
            old: &g.chunks,
            schema,
            batches: g.rows,
            event_time,
            append_time,
            sparse_rows: Some(kept),
            archive: false,
        };
        if self.write_replacement(replaced).await? {
            report.compactions += 1;
            report.compacted_chunks += g.chunks.len() as u64;
            report.dropped_rows += g.dropped;
            Ok(true)
        } else {
            report.lost_races += 1;
            Ok(false)
        }
    }
}

/// Chunks being rewritten as one, and their kept rows (with offsets).
#[derive(Default)]
struct Group {
    chunks: Vec<ChunkRecord>,
    rows: Vec<RecordBatch>,
    kept_bytes: usize,
    dropped: u64,
}

/// A table's primary key as comparable bytes, and its tombstone column.
struct Keys {
    columns: Vec<usize>,
    converter: RowConverter,
    deleted: Option<usize>,
}

impl Keys {
    fn new(info: &StreamInfo) -> Result<Keys> {
        let columns = info.key_indices();
        if columns.is_empty() {
            return Err(LogError::Internal(format!(
                "table log \"{}\" has no key",
                info.name()
            )));
        }
        let schema = &info.spec.schema;
        let fields = columns
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect();
        Ok(Keys {
            columns,
            converter: RowConverter::new(fields)?,
            deleted: schema.index_of(TABLE_DELETED_COLUMN).ok(),
        })
    }

    fn rows(&self, b: &RecordBatch) -> Result<Rows> {
        let cols: Vec<ArrayRef> = self.columns.iter().map(|&i| b.column(i).clone()).collect();
        Ok(self.converter.convert_columns(&cols)?)
    }

    /// Which rows of `b` (at `offsets`) stay: each key's last, unless that
    /// is a tombstone appended before `expired_before`.
    fn keep(
        &self,
        b: &RecordBatch,
        offsets: &Int64Array,
        last: &HashMap<Box<[u8]>, u64>,
        expired_before: i64,
    ) -> Result<BooleanArray> {
        let rows = self.rows(b)?;
        let deleted = self.deleted.map(|i| b.column(i).as_boolean());
        // `_timestamp` follows the declared columns.
        let appended = chunk::micros(b.column(b.num_columns() - 1).as_ref())?;
        Ok((0..b.num_rows())
            .map(|i| {
                let latest = last.get(rows.row(i).as_ref()) == Some(&(offsets.value(i) as u64));
                let tombstone = deleted.is_some_and(|d| d.is_valid(i) && d.value(i));
                Some(latest && !(tombstone && appended.value(i) < expired_before))
            })
            .collect())
    }
}

/// `b` (declared columns and `_timestamp`) with `offsets` as its last
/// column, in the sparse chunk schema.
fn with_offsets(schema: &SchemaRef, b: RecordBatch, offsets: Int64Array) -> Result<RecordBatch> {
    let mut columns = b.columns().to_vec();
    columns.push(Arc::new(offsets));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
