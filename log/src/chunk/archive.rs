//! Archive chunks: a run of one partition's rows as one Parquet file, the
//! form a stream's rows take once they are older than its `archive_after`
//! (maintenance rewrites them; see `maintenance/archive.rs`).
//!
//! The file holds the chunk schema — declared columns, then `_timestamp`
//! — with the Arrow schema in its footer, so types and field ids come back
//! exactly; offsets stay implicit (the chunk's base offset plus the row's
//! position), as in an IPC chunk. Row groups of [`ROW_GROUP_ROWS`] rows,
//! zstd: smaller than the log's chunks, and readable by any Parquet
//! reader. A reader tells the two forms apart by the file's first bytes.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{LogError, Result};

/// The first bytes of a Parquet file (an IPC stream starts with
/// `0xFFFFFFFF`).
const MAGIC: &[u8; 4] = b"PAR1";
/// Rows per row group.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// zstd level: archives are written once and kept long.
const ZSTD_LEVEL: i32 = 3;
/// Rows per decoded batch.
const BATCH_ROWS: usize = 64 * 1024;

/// Whether `bytes` are an archive chunk.
pub fn is_archive(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// `batches` (all of `schema`, the chunk schema) as one Parquet file,
/// with `metadata` as key-value pairs of its footer; `Unsupported` when
/// Parquet cannot hold them (a type it has no form for).
pub fn encode(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    metadata: Vec<(String, String)>,
) -> Result<Vec<u8>> {
    let failed =
        |e: parquet::errors::ParquetError| LogError::Unsupported(format!("rows as Parquet: {e}"));
    let level = ZstdLevel::try_new(ZSTD_LEVEL).map_err(failed)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(
            metadata
                .into_iter()
                .map(|(k, v)| parquet::file::metadata::KeyValue::new(k, v))
                .collect(),
        ))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(props)).map_err(failed)?;
    for b in batches {
        writer.write(b).map_err(failed)?;
    }
    writer.close().map_err(failed)?;
    Ok(out)
}

/// The rows of an archive chunk, only the columns `projection` names (of
/// the chunk schema), in its order; the error says what is wrong.
pub fn decode(bytes: Bytes, projection: Option<&[usize]>) -> Result<Vec<RecordBatch>, String> {
    let text = |e: parquet::errors::ParquetError| e.to_string();
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(text)?
        .with_batch_size(BATCH_ROWS);
    // A mask reads columns in the file's order; put them back in the
    // projection's.
    let mut order = None;
    if let Some(p) = projection {
        let columns = builder.schema().fields().len();
        if let Some(bad) = p.iter().find(|&&i| i >= columns) {
            return Err(format!("column {bad} of {columns} projected"));
        }
        let mut sorted = p.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mask = ProjectionMask::roots(builder.parquet_schema(), sorted.iter().copied());
        builder = builder.with_projection(mask);
        order = Some(
            p.iter()
                .map(|i| sorted.binary_search(i).unwrap_or_default())
                .collect::<Vec<usize>>(),
        );
    }
    let mut out = Vec::new();
    for batch in builder.build().map_err(text)? {
        let batch = batch.map_err(|e| e.to_string())?;
        out.push(match &order {
            Some(order) => batch.project(order).map_err(|e| e.to_string())?,
            None => batch,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    #[test]
    fn an_archive_reads_back_exactly_in_any_projection() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false)
                .with_metadata([("streamhouse.field_id".into(), "1".into())].into()),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let n = ROW_GROUP_ROWS as i64 + 10;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (i % 3 != 0).then(|| format!("n{i}"))),
                )),
                Arc::new(TimestampMicrosecondArray::from_iter_values(0..n).with_timezone("UTC")),
            ],
        )
        .unwrap();
        let bytes = Bytes::from(encode(&schema, std::slice::from_ref(&batch), vec![]).unwrap());
        assert!(is_archive(&bytes));
        let all = decode(bytes.clone(), None).unwrap();
        let all = arrow::compute::concat_batches(&all[0].schema(), &all).unwrap();
        assert_eq!(all.schema(), schema, "types and field metadata kept");
        assert_eq!(all, batch);
        // Columns in the projection's order, not the file's.
        let some = decode(bytes.clone(), Some(&[2, 0])).unwrap();
        let some = arrow::compute::concat_batches(&some[0].schema(), &some).unwrap();
        assert_eq!(some, batch.project(&[2, 0]).unwrap());
        assert!(decode(bytes.clone(), Some(&[3])).is_err());
        assert!(decode(bytes.slice(0..bytes.len() - 9), None).is_err());
    }
}
