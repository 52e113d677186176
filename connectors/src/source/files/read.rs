//! Reading one file of a file source into batches of its stream's columns.
//!
//! CSV and JSON lines are fetched in ranges of [`SEGMENT`] bytes and
//! decoded by arrow's push decoders off the async workers, so a file of
//! any size takes a segment and a batch of memory. Parquet is read row
//! group by row group through its footer, only the stream's columns.
//!
//! Columns are matched by name (exactly, else ignoring case): a CSV header
//! names them (without one they are the stream's, in order), JSON objects
//! by their keys, Parquet by its schema. A column of the file the stream
//! lacks is ignored; a stream column the file lacks is NULL (an error when
//! the column is NOT NULL). Values take the stream's types — parsed from
//! text, or cast from Parquet's types; a value that does not fit is an
//! error, never a silent NULL.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, TryFutureExt};
use object_store::ObjectMeta;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use streamhouse_log::Store;

use super::{FileFormat, FilesSpec};

/// Bytes of a text file fetched and decoded at a time.
const SEGMENT: u64 = 8 << 20;
/// Rows per decoded batch.
const BATCH_ROWS: usize = 32_768;
/// The longest CSV header line read.
const MAX_HEADER: usize = 1 << 20;

/// Why a file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// It is no longer there.
    Gone,
    /// Its contents are not what its format and the stream expect.
    Bad(String),
    /// The store failed.
    Store(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Gone => f.write_str("the file is gone"),
            ReadError::Bad(m) | ReadError::Store(m) => f.write_str(m),
        }
    }
}

impl From<ArrowError> for ReadError {
    fn from(e: ArrowError) -> Self {
        ReadError::Bad(e.to_string())
    }
}

impl From<object_store::Error> for ReadError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => ReadError::Gone,
            other => ReadError::Store(other.to_string()),
        }
    }
}

impl From<parquet::errors::ParquetError> for ReadError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        match e {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<object_store::Error>() {
                    Ok(store) => (*store).into(),
                    Err(other) => ReadError::Bad(other.to_string()),
                }
            }
            other => ReadError::Bad(other.to_string()),
        }
    }
}

type Read<T> = std::result::Result<T, ReadError>;

/// A push decoder of a text format.
enum Decoder {
    Csv(Box<arrow::csv::reader::Decoder>),
    Json(arrow::json::reader::Decoder),
}

impl Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        match self {
            Decoder::Csv(d) => d.decode(buf),
            Decoder::Json(d) => d.decode(buf),
        }
    }

    fn full(&self) -> bool {
        match self {
            Decoder::Csv(d) => d.capacity() == 0,
            Decoder::Json(d) => d.len() >= BATCH_ROWS,
        }
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        match self {
            Decoder::Csv(d) => d.flush(),
            Decoder::Json(d) => d.flush(),
        }
    }

    /// Decodes all of `buf` (the file's last bytes when `end`).
    fn decode_all(&mut self, mut buf: &[u8], end: bool) -> Result<Vec<RecordBatch>, ArrowError> {
        let mut out = Vec::new();
        loop {
            let n = self.decode(buf)?;
            buf = &buf[n..];
            if self.full() {
                out.extend(self.flush()?);
            } else if buf.is_empty() {
                break;
            } else if n == 0 {
                return Err(ArrowError::ParseError(
                    "the decoder made no progress".into(),
                ));
            }
        }
        if end {
            match self {
                // The end of the input ends a last line without a newline.
                Decoder::Csv(d) => {
                    d.decode(&[])?;
                }
                Decoder::Json(d) if d.has_partial_record() => {
                    return Err(ArrowError::JsonError(
                        "the file ends inside a JSON object".into(),
                    ));
                }
                Decoder::Json(_) => {}
            }
            out.extend(self.flush()?);
        }
        Ok(out)
    }
}

/// A text file being read segment by segment.
struct Text {
    store: Store,
    path: Path,
    size: u64,
    /// The next byte to fetch.
    at: u64,
    /// Taken while a segment decodes off the async workers.
    decoder: Option<Decoder>,
    ready: std::collections::VecDeque<RecordBatch>,
}

/// One file's rows, as batches of the stream's columns.
pub struct FileReader {
    source: Rows,
    target: SchemaRef,
}

enum Rows {
    Text(Box<Text>),
    Parquet(ParquetRecordBatchStream<ParquetFile>),
}

impl FileReader {
    /// Opens `file` to read rows of `target` (the stream's columns).
    pub async fn open(
        store: &Store,
        file: &ObjectMeta,
        spec: &FilesSpec,
        target: SchemaRef,
    ) -> Read<FileReader> {
        let source = match spec.format {
            FileFormat::Parquet => {
                let reader = ParquetFile {
                    store: store.object_store().clone(),
                    path: file.location.clone(),
                    size: file.size,
                };
                let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
                let file_schema = builder.schema().clone();
                let roots: Vec<usize> = target
                    .fields()
                    .iter()
                    .filter_map(|f| column_of(&file_schema, f.name()))
                    .collect();
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                Rows::Parquet(
                    builder
                        .with_projection(mask)
                        .with_batch_size(BATCH_ROWS)
                        .build()?,
                )
            }
            FileFormat::Json => {
                let decoder = arrow::json::ReaderBuilder::new(target.clone())
                    .with_batch_size(BATCH_ROWS)
                    .build_decoder()?;
                Rows::Text(Box::new(Text::new(store, file, Decoder::Json(decoder))))
            }
            FileFormat::Csv => {
                let file_schema = if spec.header {
                    let head = header_line(store, file).await?;
                    csv_file_schema(&head, spec.delimiter, &target)?
                } else {
                    target.clone()
                };
                let mut builder = arrow::csv::ReaderBuilder::new(file_schema.clone())
                    .with_header(spec.header)
                    .with_delimiter(spec.delimiter)
                    .with_batch_size(BATCH_ROWS);
                if spec.header {
                    let wanted: Vec<usize> = (0..file_schema.fields().len())
                        .filter(|i| column_of(&target, file_schema.field(*i).name()).is_some())
                        .collect();
                    builder = builder.with_projection(wanted);
                }
                let decoder = Decoder::Csv(Box::new(builder.build_decoder()));
                Rows::Text(Box::new(Text::new(store, file, decoder)))
            }
        };
        Ok(FileReader { source, target })
    }

    /// The next batch, None at the end of the file.
    pub async fn next(&mut self) -> Read<Option<RecordBatch>> {
        let batch = match &mut self.source {
            Rows::Parquet(stream) => match stream.next().await {
                Some(b) => b?,
                None => return Ok(None),
            },
            Rows::Text(text) => match text.next().await? {
                Some(b) => b,
                None => return Ok(None),
            },
        };
        Ok(Some(conform(&batch, &self.target)?))
    }
}

impl Text {
    fn new(store: &Store, file: &ObjectMeta, decoder: Decoder) -> Text {
        Text {
            store: store.clone(),
            path: file.location.clone(),
            size: file.size,
            at: 0,
            decoder: Some(decoder),
            ready: Default::default(),
        }
    }

    async fn next(&mut self) -> Read<Option<RecordBatch>> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Some(b));
            }
            let Some(mut decoder) = self.decoder.take() else {
                return Ok(None);
            };
            let end = self.size.min(self.at + SEGMENT);
            let bytes = if end > self.at {
                self.store
                    .object_store()
                    .get_range(&self.path, self.at..end)
                    .await?
            } else {
                Bytes::new()
            };
            self.at = end;
            let last = end >= self.size;
            // Decoding is CPU work: off the async workers, which serve
            // the doors.
            let (decoder, batches) = tokio::task::spawn_blocking(move || {
                let batches = decoder.decode_all(&bytes, last);
                (decoder, batches)
            })
            .await
            .map_err(|e| ReadError::Store(format!("decoding a file: {e}")))?;
            self.ready.extend(batches?);
            if !last {
                self.decoder = Some(decoder);
            }
        }
    }
}

/// A Parquet file in an object store, read by byte ranges (its size known
/// from the listing, so the footer takes one request).
struct ParquetFile {
    store: Arc<dyn object_store::ObjectStore>,
    path: Path,
    size: u64,
}

fn parquet_error(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ParquetFile {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(parquet_error)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// A CSV file's first line.
async fn header_line(store: &Store, file: &ObjectMeta) -> Read<Bytes> {
    let end = file.size.min(MAX_HEADER as u64);
    let head = store
        .object_store()
        .get_range(&file.location, 0..end)
        .await?;
    match head.iter().position(|b| *b == b'\n') {
        Some(n) => Ok(head.slice(..n)),
        None if end == file.size => Ok(head),
        None => Err(ReadError::Bad(format!(
            "the header line is longer than {MAX_HEADER} bytes"
        ))),
    }
}

/// The columns of a CSV file as its header names them: the stream's type
/// where the stream has the column, text otherwise (and not read).
fn csv_file_schema(head: &[u8], delimiter: u8, target: &Schema) -> Read<SchemaRef> {
    let format = arrow::csv::reader::Format::default()
        .with_header(true)
        .with_delimiter(delimiter);
    let (names, _) = format.infer_schema(std::io::Cursor::new(head), Some(0))?;
    let mut taken = vec![false; target.fields().len()];
    let mut fields = Vec::new();
    for f in names.fields() {
        // A byte-order mark (as spreadsheets write) is not part of a name.
        let name = f.name().trim_start_matches('\u{feff}');
        let field = match column_of(target, name) {
            Some(i) => {
                if std::mem::replace(&mut taken[i], true) {
                    return Err(ReadError::Bad(format!(
                        "the header names column \"{}\" twice",
                        target.field(i).name()
                    )));
                }
                Field::new(name, target.field(i).data_type().clone(), true)
            }
            None => Field::new(name, DataType::Utf8, true),
        };
        fields.push(field);
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The column of `schema` called `name`: exactly, else ignoring case.
fn column_of(schema: &Schema, name: &str) -> Option<usize> {
    schema.index_of(name).ok().or_else(|| {
        schema
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name))
    })
}

/// `batch` as the stream's columns: matched by name, cast to the stream's
/// types (a value that does not fit is an error), NULL where the file has
/// no such column.
pub fn conform(batch: &RecordBatch, target: &SchemaRef) -> Read<RecordBatch> {
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let schema = batch.schema();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let column = match column_of(&schema, field.name()) {
            Some(i) => {
                let c = batch.column(i);
                if c.data_type() == field.data_type() {
                    c.clone()
                } else {
                    cast_with_options(c, field.data_type(), &strict)
                        .map_err(|e| ReadError::Bad(format!("column \"{}\": {e}", field.name())))?
                }
            }
            None if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
            None => {
                return Err(ReadError::Bad(format!(
                    "the file has no column \"{}\" (NOT NULL in the stream)",
                    field.name()
                )));
            }
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    fn target() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]))
    }

    fn decode(mut d: Decoder, text: &str, split: usize) -> Result<Vec<RecordBatch>, ArrowError> {
        // Split anywhere: a record may straddle two segments.
        let (a, b) = text.as_bytes().split_at(split);
        let mut out = d.decode_all(a, false)?;
        out.extend(d.decode_all(b, true)?);
        Ok(out)
    }

    #[test]
    fn csv_by_header_names_in_any_order() {
        let text = "\u{feff}Score,extra,ID,name\n1.5,x,1,a\n2.5,y,2,\"b,c\"\n,z,3,d";
        let head = text.split('\n').next().unwrap();
        let file = csv_file_schema(head.as_bytes(), b',', &target()).unwrap();
        for split in [0, 7, 25, text.len()] {
            let d = arrow::csv::ReaderBuilder::new(file.clone())
                .with_header(true)
                .with_batch_size(2)
                .with_projection(vec![0, 2, 3])
                .build_decoder();
            let batches = decode(Decoder::Csv(Box::new(d)), text, split).unwrap();
            let rows: Vec<RecordBatch> = batches
                .iter()
                .map(|b| conform(b, &target()).unwrap())
                .collect();
            let all = arrow::compute::concat_batches(&target(), &rows).unwrap();
            assert_eq!(all.num_rows(), 3, "split at {split}");
            let ids = all.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            assert_eq!(ids.values(), &[1, 2, 3]);
            let names = all
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            assert_eq!(names.value(1), "b,c");
            assert!(all.column(2).is_null(2));
        }
    }

    #[test]
    fn json_lines_and_their_errors() {
        let text = "{\"id\": 1, \"name\": \"a\", \"other\": true}\n{\"id\": 2, \"score\": 3}\n";
        let d = arrow::json::ReaderBuilder::new(target())
            .build_decoder()
            .unwrap();
        let batches = decode(Decoder::Json(d), text, 10).unwrap();
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(n, 2);
        // Cut inside an object: an error, not a lost row.
        let d = arrow::json::ReaderBuilder::new(target())
            .build_decoder()
            .unwrap();
        let e = decode(Decoder::Json(d), "{\"id\": 1}\n{\"id\": ", 5).unwrap_err();
        assert!(e.to_string().contains("ends inside"), "{e}");
        // A value of the wrong type: an error naming it.
        let d = arrow::json::ReaderBuilder::new(target())
            .build_decoder()
            .unwrap();
        assert!(decode(Decoder::Json(d), "{\"id\": \"x\"}\n", 3).is_err());
    }

    #[test]
    fn conform_casts_strictly_and_fills_nulls() {
        let file = Arc::new(Schema::new(vec![Field::new("ID", DataType::Utf8, true)]));
        let ok = RecordBatch::try_new(
            file.clone(),
            vec![Arc::new(StringArray::from(vec!["7", "8"]))],
        )
        .unwrap();
        let out = conform(&ok, &target()).unwrap();
        assert_eq!(out.num_rows(), 2);
        assert!(out.column(1).is_null(0));
        let bad =
            RecordBatch::try_new(file, vec![Arc::new(StringArray::from(vec!["7", "x"]))]).unwrap();
        let e = match conform(&bad, &target()) {
            Err(ReadError::Bad(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(e.contains("\"id\""), "{e}");
        let none = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["a"]))],
        )
        .unwrap();
        assert!(
            matches!(conform(&none, &target()), Err(ReadError::Bad(m)) if m.contains("NOT NULL"))
        );
    }
}
