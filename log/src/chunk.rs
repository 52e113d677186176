//! The chunk: one (stream, partition)'s rows of one flush, as a
//! self-describing Arrow IPC *stream* with zstd-compressed buffers.
//!
//! A data object is a plain concatenation of chunks; the metadata store
//! records each chunk's byte range, so a reader fetches exactly one chunk with
//! one ranged GET and decodes it without reading anything else. A chunk holds
//! the declared columns plus `_timestamp` (append time); offsets are not
//! stored, because they are assigned by the metadata commit after the bytes
//! are written, and are recomputed on read from the chunk's base offset.
//! The exception is a chunk of a table's log compacted by key, which holds
//! rows at only some of its offsets and lists them in a last column
//! (`_offset`; see [`crate::stream::sparse_chunk_schema`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::buffer::Buffer;
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use arrow::ipc::CompressionType;
use arrow::ipc::MessageHeader;
use arrow::ipc::reader::RecordBatchDecoder;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use bytes::Bytes;

pub mod archive;

use crate::clock::Micros;
use crate::error::{LogError, Result};

/// zstd level for freshly flushed chunks: fast; compaction may recompress.
pub const FLUSH_ZSTD_LEVEL: i32 = 1;

/// Batches smaller than this (on average) are merged before encoding, so a
/// flush of many single-row INSERTs becomes one IPC message, not thousands.
const COALESCE_BELOW_ROWS: usize = 4096;

/// Min/max of a chunk's time columns, in µs since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeBounds {
    pub min: Option<Micros>,
    pub max: Option<Micros>,
}

impl TimeBounds {
    fn merge(self, other: TimeBounds) -> TimeBounds {
        TimeBounds {
            min: opt_fold(self.min, other.min, i64::min),
            max: opt_fold(self.max, other.max, i64::max),
        }
    }
}

fn opt_fold(a: Option<i64>, b: Option<i64>, f: fn(i64, i64) -> i64) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A timestamp column (any unit) as µs since the epoch.
pub fn micros(col: &dyn Array) -> Result<Int64Array> {
    let micros = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let micros = cast(&micros, &DataType::Int64)?;
    Ok(micros.as_primitive::<Int64Type>().clone())
}

/// Bounds of a timestamp column (any unit), ignoring NULLs.
pub fn time_bounds(col: &dyn Array) -> Result<TimeBounds> {
    let a = micros(col)?;
    Ok(TimeBounds {
        min: arrow::compute::min(&a),
        max: arrow::compute::max(&a),
    })
}

/// Bounds over a column of every batch.
pub fn batches_time_bounds(batches: &[RecordBatch], column: usize) -> Result<TimeBounds> {
    batches.iter().try_fold(TimeBounds::default(), |acc, b| {
        Ok(acc.merge(time_bounds(b.column(column))?))
    })
}

/// Merges `batches` (all of `schema`) into one when they are small on
/// average, so a flush of many single-row INSERTs is one batch: one IPC
/// message when encoded, one entry's worth of bookkeeping when cached.
/// Larger batches are kept as they are, without a copy.
pub fn coalesce(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if batches.len() > 1 && rows / batches.len() < COALESCE_BELOW_ROWS {
        Ok(vec![concat_batches(schema, &batches)?])
    } else {
        Ok(batches)
    }
}

/// Encodes `batches` (all of `schema`) as one IPC stream chunk, one message
/// per batch ([`coalesce`] them first).
pub fn encode(schema: &SchemaRef, batches: &[RecordBatch], zstd_level: i32) -> Result<Vec<u8>> {
    let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))?
        .try_with_compression_level(Some(zstd_level))?;
    let mut out = Vec::with_capacity(bytes / 3 + 1024);
    let mut writer = StreamWriter::try_new_with_options(&mut out, schema, options)?;
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Decodes a chunk fetched from `object` (an IPC stream, or an archive
/// chunk's Parquet file: [`archive`]). `projection` selects columns of the
/// chunk schema (declared columns, then `_timestamp`), in its order;
/// unprojected buffers are not decompressed.
///
/// The messages are framed here rather than by arrow's `StreamReader`,
/// which copies every message body into a fresh zeroed buffer: bodies are
/// decoded straight out of the fetched bytes.
pub fn decode(
    object: &str,
    bytes: Bytes,
    projection: Option<Vec<usize>>,
) -> Result<Vec<RecordBatch>> {
    // arrow's decoder panics on some malformed buffer layouts (a length
    // past the body); a corrupt object is an error, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if archive::is_archive(&bytes) {
            return archive::decode(bytes, projection.as_deref()).map_err(|detail| {
                LogError::CorruptChunk {
                    object: object.to_string(),
                    detail,
                }
            });
        }
        decode_messages(object, bytes, projection)
    }))
    .unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "undecodable".into());
        Err(LogError::CorruptChunk {
            object: object.to_string(),
            detail,
        })
    })
}

fn decode_messages(
    object: &str,
    bytes: Bytes,
    projection: Option<Vec<usize>>,
) -> Result<Vec<RecordBatch>> {
    let corrupt = |detail: String| LogError::CorruptChunk {
        object: object.to_string(),
        detail,
    };
    let buf = Buffer::from(bytes);
    let no_dictionaries = HashMap::new();
    let mut schema: Option<SchemaRef> = None;
    let mut out = Vec::new();
    let mut at = 0usize;
    let word = |at: usize| -> Option<u32> {
        buf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    while at < buf.len() {
        // Encapsulated message: 0xFFFFFFFF, metadata length, metadata, body.
        let mut meta_len = word(at).ok_or_else(|| corrupt("truncated message".into()))?;
        at += 4;
        if meta_len == u32::MAX {
            meta_len = word(at).ok_or_else(|| corrupt("truncated message".into()))?;
            at += 4;
        }
        if meta_len == 0 {
            break; // end of stream
        }
        let meta = buf
            .get(at..at + meta_len as usize)
            .ok_or_else(|| corrupt("truncated message metadata".into()))?;
        let message =
            arrow::ipc::root_as_message(meta).map_err(|e| corrupt(format!("bad message: {e}")))?;
        at += meta_len as usize;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| corrupt("negative body length".into()))?;
        if at + body_len > buf.len() {
            return Err(corrupt("truncated message body".into()));
        }
        let body = buf.slice_with_length(at, body_len);
        at += body_len;
        match message.header_type() {
            MessageHeader::Schema => {
                let fb = message
                    .header_as_schema()
                    .ok_or_else(|| corrupt("unreadable schema".into()))?;
                schema = Some(Arc::new(arrow::ipc::convert::fb_to_schema(fb)));
            }
            MessageHeader::RecordBatch => {
                let fb = message
                    .header_as_record_batch()
                    .ok_or_else(|| corrupt("unreadable record batch".into()))?;
                let schema = schema
                    .clone()
                    .ok_or_else(|| corrupt("record batch before the schema".into()))?;
                let batch = RecordBatchDecoder::try_new(
                    &body,
                    fb,
                    schema,
                    &no_dictionaries,
                    &message.version(),
                )
                .and_then(|d| {
                    d.with_projection(projection.as_deref())
                        .with_require_alignment(false)
                        .read_record_batch()
                })
                .map_err(|e| corrupt(e.to_string()))?;
                out.push(batch);
            }
            other => return Err(corrupt(format!("unexpected {other:?} message"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("n{i}")),
                )),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    (0..n).map(|i| 1000 + i),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn round_trip_with_projection_and_coalescing() {
        let schema = batch(1).schema();
        let parts = coalesce(&schema, vec![batch(3), batch(5)]).unwrap();
        let bytes = encode(&schema, &parts, FLUSH_ZSTD_LEVEL).unwrap();
        let all = decode("x", Bytes::from(bytes.clone()), None).unwrap();
        assert_eq!(all.len(), 1, "small batches are coalesced");
        assert_eq!(all[0].num_rows(), 8);
        let proj = decode("x", Bytes::from(bytes), Some(vec![1])).unwrap();
        assert_eq!(proj[0].num_columns(), 1);
        assert_eq!(proj[0].column(0).as_string::<i32>().value(4), "n1");
    }

    #[test]
    fn coalesce_merges_only_small_batches() {
        let schema = batch(1).schema();
        let small = coalesce(&schema, (0..100).map(|_| batch(10)).collect()).unwrap();
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].num_rows(), 1000);
        let large = vec![batch(5000), batch(6000)];
        let first = large[0].column(0).to_data().buffers()[0].as_ptr();
        let kept = coalesce(&schema, large).unwrap();
        assert_eq!(kept.len(), 2, "large batches are kept as they are");
        assert_eq!(
            kept[0].column(0).to_data().buffers()[0].as_ptr(),
            first,
            "without a copy"
        );
    }

    #[test]
    fn corrupt_bytes_are_a_typed_error() {
        let err = decode("obj", Bytes::from_static(b"not arrow at all"), None).unwrap_err();
        assert!(matches!(err, LogError::CorruptChunk { .. }), "{err}");
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let parts = [batch(5000), batch(5000)];
        let bytes = encode(&parts[0].schema(), &parts, FLUSH_ZSTD_LEVEL).unwrap();
        let whole = decode("x", Bytes::from(bytes.clone()), None).unwrap();
        assert_eq!(
            whole.iter().map(RecordBatch::num_rows).sum::<usize>(),
            10_000
        );
        for cut in (0..bytes.len()).step_by(97) {
            // A prefix either decodes (it ends on a message boundary) or is
            // refused as corrupt.
            match decode("x", Bytes::from(bytes[..cut].to_vec()), None) {
                Ok(b) => assert!(b.iter().map(RecordBatch::num_rows).sum::<usize>() <= 10_000),
                Err(e) => assert!(matches!(e, LogError::CorruptChunk { .. }), "{e}"),
            }
        }
        for at in (0..bytes.len()).step_by(131) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x5a;
            if let Err(e) = decode("x", Bytes::from(flipped), None) {
                assert!(matches!(e, LogError::CorruptChunk { .. }), "{e}");
            }
        }
    }

    #[test]
    fn time_bounds_are_in_micros() {
        let b = batch(10);
        let tb = batches_time_bounds(&[b], 2).unwrap();
        assert_eq!(tb.min, Some(1_000_000));
        assert_eq!(tb.max, Some(1_009_000));
    }
}
