//! Reading a stream's partitions on [`Log`]: offset ranges (through the
//! stream's current or a chosen schema), bounded scans, time ranges,
//! waiting for rows past an offset, and the offset at a time.

use std::ops::Range;
use std::sync::Arc;

use super::Log;
use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::metadata::TimeFilter;
use crate::reader::{self, BatchStream, PartitionRead, RowFilter};
use crate::stream::StreamInfo;

impl Log {
    /// Reads offsets `range` of a partition (committed rows only; the end may
    /// lie beyond the partition's end). `projection` indexes the read schema
    /// (declared columns, then `_partition`, `_offset`, `_timestamp`).
    pub async fn read(
        &self,
        stream: &str,
        partition: u32,
        range: Range<u64>,
        projection: Option<Vec<usize>>,
    ) -> Result<BatchStream> {
        let info = self.stream(stream).await?;
        self.read_as(info, partition, range, projection).await
    }

    /// [`Log::read`] through the version of the stream's schema `info`
    /// holds (a plan's, made before a column was added): the projection
    /// indexes its read schema, and every chunk is read through it.
    pub async fn read_as(
        &self,
        info: Arc<StreamInfo>,
        partition: u32,
        range: Range<u64>,
        projection: Option<Vec<usize>>,
    ) -> Result<BatchStream> {
        Self::check_partition(&info, partition)?;
        let chunks = self
            .meta
            .chunks_by_offset(info.id, partition, range.clone())
            .await?;
        let read = PartitionRead {
            stream: info,
            partition,
            projection,
            filter: RowFilter {
                offsets: range,
                time: None,
            },
        };
        reader::read_chunks(self.store.clone(), self.cache.clone(), read, chunks)
    }

    /// Where a bounded read of a partition from `from` (a commit boundary)
    /// should end: at the last commit boundary within `max_rows` of it (at
    /// least one chunk), never past `end`; and the latest event time of the
    /// rows it covers (from the index alone, exact because both ends are
    /// commit boundaries; `None` without rows or event-time column).
    pub async fn bounded_read(
        &self,
        info: &StreamInfo,
        partition: u32,
        from: u64,
        end: u64,
        max_rows: u64,
    ) -> Result<(u64, Option<Micros>)> {
        if end <= from {
            return Ok((from, None));
        }
        let want = end.min(from.saturating_add(max_rows));
        let chunks = self
            .meta
            .chunks_by_offset(info.id, partition, from..want.max(from + 1))
            .await?;
        if chunks.is_empty() {
            return Ok((end, None));
        }
        let mut stop = from;
        let mut max_event = None;
        for c in &chunks {
            if c.end_offset > want && stop > from {
                break;
            }
            stop = c.end_offset.min(end);
            max_event = max_event.max(c.event_time.max);
        }
        if info.spec.event_time.is_none() {
            max_event = None;
        }
        Ok((stop.max(from), max_event))
    }

    /// Reads the rows of a partition within `offsets` whose event time
    /// and/or append time fall in the filter's half-open ranges. Chunks whose
    /// bounds miss the ranges are never fetched.
    pub async fn read_time(
        &self,
        stream: &str,
        partition: u32,
        offsets: Range<u64>,
        filter: TimeFilter,
        projection: Option<Vec<usize>>,
    ) -> Result<BatchStream> {
        let info = self.stream(stream).await?;
        self.read_time_as(info, partition, offsets, filter, projection)
            .await
    }

    /// [`Log::read_time`] through the version of the stream's schema
    /// `info` holds (see [`Log::read_as`]).
    pub async fn read_time_as(
        &self,
        info: Arc<StreamInfo>,
        partition: u32,
        offsets: Range<u64>,
        filter: TimeFilter,
        projection: Option<Vec<usize>>,
    ) -> Result<BatchStream> {
        Self::check_partition(&info, partition)?;
        let mut chunks = self
            .meta
            .chunks_by_time(info.id, partition, &filter)
            .await?;
        chunks.retain(|c| c.end_offset > offsets.start && c.base_offset < offsets.end);
        let read = PartitionRead {
            stream: info,
            partition,
            projection,
            filter: RowFilter {
                offsets,
                time: Some(filter),
            },
        };
        reader::read_chunks(self.store.clone(), self.cache.clone(), read, chunks)
    }

    /// Waits until the partition holds an offset at or beyond `offset` (its
    /// end exceeds `offset`) and returns the end. Sleeps on commit
    /// notifications (this agent's, and other agents' as the metadata store
    /// announces them); re-reads the end every `tail_poll` in case an
    /// announcement was lost.
    pub async fn wait_for(&self, stream: &str, partition: u32, offset: u64) -> Result<u64> {
        let info = self.stream(stream).await?;
        Self::check_partition(&info, partition)?;
        let mut rx = self.tail.subscribe(info.id, partition);
        let end = self
            .meta
            .partition_ends(info.id)
            .await?
            .get(partition as usize)
            .copied()
            .ok_or_else(|| LogError::UnknownStream(stream.to_string()))?;
        if end > offset {
            return Ok(end);
        }
        loop {
            let end = *rx.borrow_and_update();
            if end > offset {
                return Ok(end);
            }
            match tokio::time::timeout(self.tail_poll, rx.changed()).await {
                Ok(changed) => changed.map_err(|_| LogError::UnknownStream(stream.to_string()))?,
                Err(_) => match self.meta.partition_ends(info.id).await {
                    Ok(ends) => match ends.get(partition as usize) {
                        Some(&end) if end > offset => return Ok(end),
                        Some(_) => {}
                        None => return Err(LogError::UnknownStream(stream.to_string())),
                    },
                    // The store is unreachable for now: keep waiting.
                    Err(e) => tracing::debug!(error = %e, "tail poll failed"),
                },
            }
        }
    }

    /// The first offset of a partition appended at or after `at` (µs since
    /// the epoch); the partition's end when nothing is that recent.
    pub async fn offset_for_time(&self, stream: &str, partition: u32, at: Micros) -> Result<u64> {
        let info = self.stream(stream).await?;
        Self::check_partition(&info, partition)?;
        let end = self.partition_end(&info, partition).await?;
        let filter = TimeFilter {
            event_time: None,
            append_time: Some(at..Micros::MAX),
        };
        let offset_col = info.spec.schema.fields().len() + 1;
        let mut rows = self
            .read_time(stream, partition, 0..end, filter, Some(vec![offset_col]))
            .await?;
        use futures::StreamExt;
        while let Some(batch) = rows.next().await {
            let batch = batch?;
            if batch.num_rows() > 0 {
                let offsets = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .ok_or_else(|| LogError::Internal("_offset is not Int64".into()))?;
                return Ok(offsets.value(0) as u64);
            }
        }
        Ok(end)
    }

    async fn partition_end(&self, info: &StreamInfo, partition: u32) -> Result<u64> {
        self.meta
            .partition_ends(info.id)
            .await?
            .get(partition as usize)
            .copied()
            .ok_or_else(|| LogError::UnknownStream(info.name().to_string()))
    }
}
