//! Archiving: a stream's chunks older than its `archive_after` rewritten
//! as archive chunks (Parquet, [`crate::chunk::archive`]) — consecutive
//! chunks of a partition, up to `target_chunk_bytes` of them at a time,
//! each run as one file — and swapped in like a compaction: one
//! conditional transaction replaces the run's index rows with the
//! archive's, so readers find the same rows at the same offsets, and the
//! old objects go after the grace period.
//!
//! Chunks written under an earlier version of the stream's columns and a
//! table's log (compacted by key) are left as they are. A stream whose
//! rows Parquet cannot hold (a type it has no form for) is left as it is,
//! with a warning each round.

use std::time::Duration;

use crate::config::MaintenanceConfig;
use crate::error::{LogError, Result};
use crate::log::Log;
use crate::maintenance::{MaintenanceReport, Replacement, is_plain, runs};
use crate::metadata::ChunkRecord;
use crate::stream::{StreamInfo, chunk_schema};

impl Log {
    /// Archives a partition's chunks older than `age`, oldest first.
    pub(super) async fn archive_partition(
        &self,
        info: &StreamInfo,
        partition: u32,
        age: Duration,
        config: &MaintenanceConfig,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        let old_enough = self.now_micros() - age.as_micros().min(i64::MAX as u128) as i64;
        let chunks = self
            .metadata()
            .chunks_by_offset(info.id, partition, 0..u64::MAX)
            .await?;
        let due = |c: &ChunkRecord| is_plain(c, info, old_enough);
        for run in runs(chunks, due, config.target_chunk_bytes) {
            if !self.archive_run(info, run, report).await? {
                break;
            }
        }
        Ok(())
    }

    /// Writes `old` as one archive chunk. False when the stream's rows
    /// cannot be archived (nothing more is tried this round).
    async fn archive_run(
        &self,
        info: &StreamInfo,
        old: Vec<ChunkRecord>,
        report: &mut MaintenanceReport,
    ) -> Result<bool> {
        let mut batches = Vec::new();
        for c in &old {
            batches.extend(self.fetch_chunk(c).await?);
        }
        let merge = |f: fn(&ChunkRecord) -> crate::chunk::TimeBounds| crate::chunk::TimeBounds {
            min: old.iter().filter_map(|c| f(c).min).min(),
            max: old.iter().filter_map(|c| f(c).max).max(),
        };
        let replaced = Replacement {
            info,
            old: &old,
            schema: chunk_schema(&info.spec.schema),
            batches,
            event_time: merge(|c| c.event_time),
            append_time: merge(|c| c.append_time),
            sparse_rows: None,
            archive: true,
        };
        match self.write_replacement(replaced).await {
            Ok(true) => {
                report.archives += 1;
                report.archived_chunks += old.len() as u64;
                Ok(true)
            }
            Ok(false) => {
                report.lost_races += 1;
                Ok(true)
            }
            Err(LogError::Unsupported(e)) => {
                tracing::warn!(stream = %info.name(), error = %e, "cannot archive the stream's rows");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}
