//! A Parquet sink's files: `partition=<p>/<first offset, 20 digits>.parquet`
//! under the sink's path (Hive-style, so DuckDB, Spark or DataFusion read
//! the partition as a column), each holding the declared columns of the
//! rows of offsets `[first, end)` of its partition, with `_offset` and
//! `_timestamp`, zstd-compressed. The footer's key-value metadata holds
//! `streamhouse.stream`, `streamhouse.first_offset` and
//! `streamhouse.end_offset`: where the next file starts. Files are created
//! with a conditional PUT (create only), which is the sink's commit.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, SchemaRef};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use streamhouse_log::Store;
use tokio::time::Instant;

use super::{Result, SinkError};

/// Footer keys.
pub const STREAM_KEY: &str = "streamhouse.stream";
pub const FIRST_KEY: &str = "streamhouse.first_offset";
pub const END_KEY: &str = "streamhouse.end_offset";

/// Rows per row group: large enough for analytics, small enough to read
/// one group at a time.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Rows read but not yet written, for one partition.
#[derive(Debug, Default)]
pub(super) struct Buffer {
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// Bytes of Arrow data held.
    pub bytes: usize,
    /// When the first row arrived.
    pub first_at: Option<Instant>,
    /// Every offset before this was read into the buffer (or an earlier
    /// file); `None` while a read is under way.
    pub end: Option<u64>,
}

impl Buffer {
    pub fn push(&mut self, batch: RecordBatch) {
        self.end = None;
        if batch.num_rows() == 0 {
            return;
        }
        self.first_at.get_or_insert_with(streamhouse_log::monotonic);
        self.rows += batch.num_rows();
        self.bytes += batch.get_array_memory_size();
        self.batches.push(batch);
    }

    /// Whether `batch` has other columns than the buffered rows (the
    /// stream's schema changed): a file holds one schema.
    pub fn schema_differs(&self, batch: &RecordBatch) -> bool {
        self.batches
            .first()
            .is_some_and(|b| b.schema().fields() != batch.schema().fields())
    }

    /// Where a file of the buffered rows ends: where the read ended, or
    /// after the last row while a read is under way; `None` without rows.
    pub fn covered_end(&self) -> Option<u64> {
        if self.rows == 0 {
            return None;
        }
        if let Some(end) = self.end {
            return Some(end);
        }
        let last = self.batches.last()?;
        let offsets = last
            .column_by_name("_offset")?
            .as_primitive_opt::<Int64Type>()?;
        let at = offsets.len().checked_sub(1)?;
        u64::try_from(offsets.value(at)).ok()?.checked_add(1)
    }
}

/// Rows as one Parquet file covering offsets `[first, end)` of `stream`.
pub(super) fn encode(batches: &[RecordBatch], first: u64, end: u64, stream: &str) -> Result<Bytes> {
    let schema: SchemaRef = batches
        .first()
        .map(RecordBatch::schema)
        .ok_or_else(|| SinkError::Invalid("a file without rows".into()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props))?;
    for b in batches {
        writer.write(b)?;
    }
    for (k, v) in [
        (STREAM_KEY, stream.to_string()),
        (FIRST_KEY, first.to_string()),
        (END_KEY, end.to_string()),
    ] {
        writer.append_key_value_metadata(KeyValue::new(k.to_string(), v));
    }
    Ok(Bytes::from(writer.into_inner()?))
}

/// One partition's directory of files.
pub(super) struct PartitionDir {
    prefix: Path,
}

impl PartitionDir {
    pub fn new(partition: u32) -> PartitionDir {
        PartitionDir {
            prefix: Path::from(format!("partition={partition}")),
        }
    }

    fn file(&self, first: u64) -> Path {
        self.prefix.clone().join(format!("{first:020}.parquet"))
    }

    /// Where the copy goes on: the end of the last file, or 0.
    pub async fn resume(&self, store: &Store) -> Result<u64> {
        let files: Vec<_> = store
            .object_store()
            .list(Some(&self.prefix))
            .try_collect()
            .await?;
        let last = files
            .into_iter()
            .filter(|m| first_offset(&m.location).is_some())
            .max_by_key(|m| first_offset(&m.location));
        let Some(last) = last else {
            return Ok(0);
        };
        let (first, end) = range_of(store, &last.location, last.size).await?;
        if Some(first) != first_offset(&last.location) || end < first {
            return Err(SinkError::Invalid(format!(
                "file {} says it covers offsets {first}..{end}",
                last.location
            )));
        }
        Ok(end)
    }

    /// Creates the file starting at `first`; refused if it exists with
    /// other contents.
    pub async fn create(&self, store: &Store, first: u64, bytes: Bytes) -> Result<()> {
        store.put_durable(&self.file(first), bytes).await?;
        Ok(())
    }
}

/// The first offset a file's name says it holds.
fn first_offset(path: &Path) -> Option<u64> {
    let name = path.filename()?.strip_suffix(".parquet")?;
    (name.len() == 20).then(|| name.parse().ok()).flatten()
}

/// The offsets a file's footer says it covers.
pub async fn range_of(store: &Store, path: &Path, size: u64) -> Result<(u64, u64)> {
    let bad = |what: &str| SinkError::Invalid(format!("file {path}: {what}"));
    // The footer: metadata, its length (u32, little-endian), `PAR1`.
    let tail_at = size
        .checked_sub(8)
        .ok_or_else(|| bad("too short for Parquet"))?;
    let tail = store.get_range(path, tail_at..size).await?;
    if tail.len() != 8 || &tail[4..] != b"PAR1" {
        return Err(bad("not a Parquet file"));
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    let meta_at = tail_at
        .checked_sub(len)
        .ok_or_else(|| bad("footer longer than the file"))?;
    let meta =
        ParquetMetaDataReader::decode_metadata(&store.get_range(path, meta_at..tail_at).await?)?;
    let kv = meta.file_metadata().key_value_metadata();
    let get = |key: &str| -> Result<u64> {
        kv.and_then(|kv| kv.iter().find(|e| e.key == key))
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(&format!("no {key} in its footer")))
    };
    Ok((get(FIRST_KEY)?, get(END_KEY)?))
}

/// Every file of a sink's destination, for checks: (partition, first, end).
pub async fn files(store: &Store) -> Result<Vec<(u32, u64, u64)>> {
    let metas: Vec<_> = store.object_store().list(None).try_collect().await?;
    let mut out = Vec::new();
    for m in metas {
        let Some(partition) = m.location.parts().next().and_then(|p| {
            p.as_ref()
                .strip_prefix("partition=")
                .and_then(|n| n.parse().ok())
        }) else {
            continue;
        };
        if first_offset(&m.location).is_none() {
            continue;
        }
        let (first, end) = range_of(store, &m.location, m.size).await?;
        out.push((partition, first, end));
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::rows;

    #[test]
    fn a_file_ends_where_the_read_ended_or_after_its_last_row() {
        let mut b = Buffer::default();
        assert_eq!(b.covered_end(), None);
        b.push(rows(5..9));
        assert_eq!(b.covered_end(), Some(9));
        b.end = Some(20);
        assert_eq!(b.covered_end(), Some(20));
        b.push(rows(0..0));
        assert_eq!(b.covered_end(), Some(9), "a read under way");
    }

    #[test]
    fn file_names_are_their_first_offset() {
        let d = PartitionDir::new(3);
        let f = d.file(42);
        assert_eq!(f.as_ref(), "partition=3/00000000000000000042.parquet");
        assert_eq!(first_offset(&f), Some(42));
        assert_eq!(first_offset(&Path::from("partition=3/x.parquet")), None);
    }

    #[tokio::test]
    async fn a_partition_resumes_at_its_last_files_end_and_a_range_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("file://{}", dir.path().display())).unwrap();
        let d = PartitionDir::new(0);
        assert_eq!(d.resume(&store).await.unwrap(), 0);
        d.create(&store, 0, encode(&[rows(0..10)], 0, 12, "s").unwrap())
            .await
            .unwrap();
        d.create(&store, 12, encode(&[rows(12..20)], 12, 20, "s").unwrap())
            .await
            .unwrap();
        assert_eq!(d.resume(&store).await.unwrap(), 20);
        // Another run that resumed before the second file: refused.
        let e = d
            .create(&store, 12, encode(&[rows(12..15)], 12, 15, "s").unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exists"), "{e}");
        assert_eq!(files(&store).await.unwrap(), vec![(0, 0, 12), (0, 12, 20)]);
    }
}
