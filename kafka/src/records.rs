//! Kafka record batches and Arrow rows, both ways.
//!
//! A produced partition's batches (v2, any compression, CRC-32C checked by
//! the codec) become one Arrow batch in the record shape of
//! `streamhouse_sql::topics` — key, value, headers, timestamp — with the
//! idempotent producer's identity and sequence run if it has one. Rows
//! read from a partition become one uncompressed v2 batch per Arrow batch,
//! at their log offsets.
//!
//! A stream with typed columns is written and read as JSON values: each
//! produced value must be one JSON object of the stream's columns (a batch
//! with one that is not is refused whole), and each row read is fetched as
//! its JSON object, with a null key and its append time. (A stream that
//! follows a registered subject takes Avro values instead:
//! `streamhouse_sql::typed`.)

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Int64Array, ListBuilder, RecordBatch, StringBuilder,
    StructBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder, new_null_array,
};
use arrow::datatypes::{DataType, Field, SchemaRef, TimestampMicrosecondType};
use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError as E;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, Record,
    RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use streamhouse_sql::topics::{header_fields, record_schema};

/// An idempotent producer's run of sequences in one produced partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequences {
    pub producer_id: i64,
    pub epoch: i16,
    pub first: i32,
    pub last: i32,
}

/// One produced partition's records, decoded.
#[derive(Debug)]
pub struct Produced {
    pub batch: RecordBatch,
    pub sequences: Option<Sequences>,
    /// The records belong to a transaction (all of them, with sequences).
    pub transactional: bool,
}

/// Why produced records are refused.
pub type Refusal = (E, String);

/// Decodes a produced partition's record batches into rows of the record
/// shape; `now_ms` stamps records whose producer left the time out.
pub fn decode(mut raw: Bytes, now_ms: i64) -> Result<Produced, Refusal> {
    let sets = RecordBatchDecoder::decode_all(&mut raw).map_err(|e| {
        let message = format!("{e:#}");
        (E::CorruptMessage, format!("record batch: {message}"))
    })?;
    let n: usize = sets.iter().map(|s| s.records.len()).sum();
    let payload: usize = sets
        .iter()
        .flat_map(|s| &s.records)
        .map(|r| r.value.as_ref().map_or(0, Bytes::len))
        .sum();
    let mut keys = BinaryBuilder::with_capacity(n, 0);
    let mut values = BinaryBuilder::with_capacity(n, payload);
    let item = Arc::new(Field::new("item", DataType::Struct(header_fields()), false));
    let mut headers =
        ListBuilder::new(StructBuilder::from_fields(header_fields(), 0)).with_field(item);
    let mut times = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut sequences: Option<Sequences> = None;
    let transactional = sets
        .first()
        .and_then(|s| s.records.first())
        .is_some_and(|r| r.transactional);
    for set in &sets {
        for r in &set.records {
            if r.control {
                return Err((
                    E::InvalidRecord,
                    "control records are written by brokers, not produced".into(),
                ));
            }
            if r.transactional != transactional {
                return Err((
                    E::InvalidRecord,
                    "transactional and plain records mixed in one partition".into(),
                ));
            }
            if transactional && r.producer_id == NO_PRODUCER_ID {
                return Err((
                    E::InvalidRecord,
                    "transactional records without a producer id".into(),
                ));
            }
            if r.producer_id != NO_PRODUCER_ID {
                let first = sequences.is_none();
                let s = sequences.get_or_insert(Sequences {
                    producer_id: r.producer_id,
                    epoch: r.producer_epoch,
                    first: r.sequence,
                    last: r.sequence,
                });
                if !first && (s.producer_id != r.producer_id || s.epoch != r.producer_epoch) {
                    return Err((
                        E::InvalidRecord,
                        "one partition's records come from one producer".into(),
                    ));
                }
                s.last = r.sequence;
            } else if sequences.is_some() {
                return Err((
                    E::InvalidRecord,
                    "idempotent and plain records mixed in one partition".into(),
                ));
            }
            keys.append_option(r.key.as_deref());
            values.append_option(r.value.as_deref());
            let list = headers.values();
            for (k, v) in &r.headers {
                list.field_builder::<StringBuilder>(0)
                    .expect("header key builder")
                    .append_value(k.as_str());
                list.field_builder::<BinaryBuilder>(1)
                    .expect("header value builder")
                    .append_option(v.as_deref());
                list.append(true);
            }
            headers.append(true);
            let ms = if r.timestamp_type == TimestampType::LogAppend || r.timestamp < 0 {
                now_ms
            } else {
                r.timestamp
            };
            let micros = ms.checked_mul(1_000).ok_or_else(|| {
                (
                    E::InvalidTimestamp,
                    format!("timestamp {ms} ms is out of range"),
                )
            })?;
            times.append_value(micros);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(keys.finish()),
        Arc::new(values.finish()),
        Arc::new(headers.finish()),
        Arc::new(times.finish()),
    ];
    let batch = RecordBatch::try_new(record_schema(), columns)
        .map_err(|e| (E::InvalidRecord, e.to_string()))?;
    Ok(Produced {
        batch,
        sequences,
        transactional,
    })
}

/// The read projection of a record-shaped stream: its four columns and
/// `_offset`.
pub const READ_PROJECTION: [usize; 5] = [0, 1, 2, 3, 5];

/// The read projection of a stream with `declared` typed columns: they,
/// `_offset` and `_timestamp`.
pub fn typed_projection(declared: usize) -> Vec<usize> {
    (0..declared).chain([declared + 1, declared + 2]).collect()
}

/// Produced record-shaped rows as rows of a typed stream of `schema`: each
/// value one JSON object of its columns, none missing that may not be null
/// and none it does not have.
pub fn json_to_typed(records: &RecordBatch, schema: SchemaRef) -> Result<RecordBatch, Refusal> {
    let bad = |m: String| (E::InvalidRecord, m);
    let values = records.column(1).as_binary::<i32>();
    if values.null_count() > 0 {
        return Err(bad(
            "a record without a value cannot be a row of a stream with typed columns".into(),
        ));
    }
    let n = values.len();
    let mut buf = Vec::with_capacity(values.value_data().len() + n);
    for v in values.iter().flatten() {
        buf.extend_from_slice(v);
        buf.push(b'\n');
    }
    let mut decoder = arrow_json::ReaderBuilder::new(schema)
        .with_strict_mode(true)
        .with_batch_size(n.max(1))
        .build_decoder()
        .map_err(|e| bad(e.to_string()))?;
    let mut at = 0;
    while at < buf.len() {
        let used = decoder
            .decode(&buf[at..])
            .map_err(|e| bad(format!("a value is not a row of this stream: {e}")))?;
        if used == 0 {
            break;
        }
        at += used;
    }
    let rows = decoder
        .flush()
        .map_err(|e| bad(format!("a value is not a row of this stream: {e}")))?
        .ok_or_else(|| bad("no rows".into()))?;
    if rows.num_rows() != n || at < buf.len() {
        return Err(bad("each value must be exactly one JSON object".into()));
    }
    Ok(rows)
}

/// Rows of a typed stream, read with [`typed_projection`], as JSON objects
/// of their `declared` columns, one value each.
pub fn json_values(rows: &RecordBatch, declared: usize) -> anyhow::Result<ArrayRef> {
    let n = rows.num_rows();
    let data = rows.project(&(0..declared).collect::<Vec<_>>())?;
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    writer.write(&data)?;
    writer.finish()?;
    let json = writer.into_inner();
    let mut values = BinaryBuilder::with_capacity(n, json.len());
    for line in json.split(|b| *b == b'\n').take(n) {
        values.append_value(line);
    }
    Ok(Arc::new(values.finish()))
}

/// Rows of a typed stream, read with [`typed_projection`], in the layout
/// [`encode`] takes: a null key, `values` (one a row), no headers, the
/// append time, the offset.
pub fn typed_to_records(
    rows: &RecordBatch,
    declared: usize,
    values: ArrayRef,
) -> anyhow::Result<RecordBatch> {
    let n = rows.num_rows();
    anyhow::ensure!(values.len() == n, "{} values for {n} rows", values.len());
    let item = Arc::new(Field::new("item", DataType::Struct(header_fields()), false));
    let columns: Vec<ArrayRef> = vec![
        new_null_array(&DataType::Binary, n),
        values,
        new_null_array(&DataType::List(item), n),
        rows.column(declared + 1).clone(),
        rows.column(declared).clone(),
    ];
    Ok(RecordBatch::try_from_iter(
        ["key", "value", "headers", "timestamp", "_offset"]
            .into_iter()
            .zip(columns),
    )?)
}

/// The bytes a (possibly sliced) binary column's `offsets` span.
fn bytes_of(data: &arrow::buffer::Buffer, offsets: &[i32]) -> Bytes {
    let (first, last) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
    Bytes::from_owner(Shared(data.slice_with_length(first, last - first)))
}

/// An Arrow buffer lent to `Bytes` without a copy.
struct Shared(arrow::buffer::Buffer);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Record `i`'s bytes, out of [`bytes_of`] the same `offsets`.
fn slice_of(data: &Bytes, offsets: &[i32], i: usize) -> Bytes {
    let first = offsets[0] as usize;
    data.slice(offsets[i] as usize - first..offsets[i + 1] as usize - first)
}

/// Appends rows read with [`READ_PROJECTION`] to `out` as one v2 record
/// batch at their offsets, timestamps in milliseconds.
pub fn encode(rows: &RecordBatch, out: &mut BytesMut) -> anyhow::Result<()> {
    if rows.num_rows() == 0 {
        return Ok(());
    }
    let keys = rows.column(0).as_binary::<i32>();
    let values = rows.column(1).as_binary::<i32>();
    let headers = rows.column(2).as_list::<i32>();
    let times: &TimestampMicrosecondArray =
        rows.column(3).as_primitive::<TimestampMicrosecondType>();
    let offsets: &Int64Array = rows
        .column(4)
        .as_any()
        .downcast_ref()
        .ok_or_else(|| anyhow::anyhow!("_offset is not BIGINT"))?;
    let base = offsets.value(0);
    // Each column's bytes shared with the Arrow buffer, sliced per record
    // (no copy and no allocation per record).
    let key_offsets = keys.value_offsets();
    let key_data = bytes_of(keys.values(), key_offsets);
    let value_offsets = values.value_offsets();
    let value_data = bytes_of(values.values(), value_offsets);
    // Headers are read in place through the list's offsets: slicing each
    // row's list would cost more than the rest of the record.
    let header_offsets = headers.value_offsets();
    let entries = headers.values().as_struct();
    let (header_keys, header_values) = (
        entries.column(0).as_string::<i32>(),
        entries.column(1).as_binary::<i32>(),
    );
    let mut records = Vec::with_capacity(rows.num_rows());
    for i in 0..rows.num_rows() {
        let mut hs = IndexMap::new();
        let (from, to) = (header_offsets[i] as usize, header_offsets[i + 1] as usize);
        if headers.is_valid(i) && to > from {
            for j in from..to {
                let v = header_values
                    .is_valid(j)
                    .then(|| Bytes::copy_from_slice(header_values.value(j)));
                hs.insert(StrBytes::from_string(header_keys.value(j).to_string()), v);
            }
        }
        let offset = offsets.value(i);
        records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset,
            // Keeps the rows in one batch (the encoder splits a batch where
            // offset minus sequence changes); the base sequence is -1.
            sequence: (offset - base - 1) as i32,
            timestamp: times.value(i).div_euclid(1_000),
            key: keys
                .is_valid(i)
                .then(|| slice_of(&key_data, key_offsets, i)),
            value: values
                .is_valid(i)
                .then(|| slice_of(&value_data, value_offsets, i)),
            headers: hs,
        });
    }
    // The batch header, and per record its varints and attributes, at most.
    out.reserve(61 + key_data.len() + value_data.len() + 40 * rows.num_rows());
    RecordBatchEncoder::encode(
        out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> Record {
        let mut headers = IndexMap::new();
        headers.insert(
            StrBytes::from_static_str("h"),
            Some(Bytes::from_static(b"1")),
        );
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32,
            timestamp: 1_700_000_000_000 + offset,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers,
        }
    }

    #[test]
    fn produced_batches_become_rows_and_rows_become_batches_again() {
        let produced = [
            record(0, None, Some(b"a")),
            record(1, Some(b""), None),
            record(2, Some(b"k"), Some(b"c")),
        ];
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut raw = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut raw,
                &produced,
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .unwrap();
            let p = decode(raw.freeze(), 0).unwrap();
            assert_eq!(
                p.sequences,
                Some(Sequences {
                    producer_id: 7,
                    epoch: 0,
                    first: 0,
                    last: 2
                })
            );
            let keys = p.batch.column(0).as_binary::<i32>();
            assert!(keys.is_null(0), "a null key stays null");
            assert_eq!(keys.value(1), b"", "an empty key stays empty");
            assert!(p.batch.column(1).is_null(1), "a tombstone stays null");
            // Read back at offsets 40..43, as a fetch encodes them.
            let offsets: ArrayRef = Arc::new(Int64Array::from(vec![40, 41, 42]));
            let mut cols: Vec<ArrayRef> = p.batch.columns().to_vec();
            cols.push(offsets);
            let read = RecordBatch::try_from_iter(
                ["key", "value", "headers", "timestamp", "_offset"]
                    .into_iter()
                    .zip(cols),
            )
            .unwrap();
            let mut out = BytesMut::new();
            encode(&read, &mut out).unwrap();
            let sets = RecordBatchDecoder::decode_all(&mut out.freeze()).unwrap();
            assert_eq!(sets.len(), 1, "one batch per read batch");
            let back = &sets[0].records;
            assert_eq!(
                back.iter().map(|r| r.offset).collect::<Vec<_>>(),
                [40, 41, 42]
            );
            assert_eq!(back[0].key, None);
            assert_eq!(back[1].key.as_deref(), Some(&b""[..]));
            assert_eq!(back[1].value, None);
            assert_eq!(back[2].timestamp, 1_700_000_000_002);
            let h: Vec<_> = back[2]
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            assert_eq!(h, [("h", Some(&b"1"[..]))]);
            // A slice of the rows (as a fetch's byte budget cuts them).
            let mut out = BytesMut::new();
            encode(&read.slice(2, 1), &mut out).unwrap();
            let sets = RecordBatchDecoder::decode_all(&mut out.freeze()).unwrap();
            let back = &sets[0].records;
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].offset, 42);
            assert_eq!(back[0].key.as_deref(), Some(&b"k"[..]));
            assert_eq!(back[0].value.as_deref(), Some(&b"c"[..]));
        }
    }

    #[test]
    fn a_corrupt_batch_is_refused_whole() {
        let mut raw = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut raw,
            &[record(0, None, Some(b"a"))],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        let (code, message) = decode(raw.freeze(), 0).unwrap_err();
        assert_eq!(code, E::CorruptMessage);
        assert!(message.contains("Cyclic redundancy check"), "{message}");
    }
}
