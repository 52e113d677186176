//! The read path: chunks from the index, bytes by ranged GET (or from the
//! cache), decoded Arrow batches with the system columns added.
//!
//! Readers see committed data only: they start from chunk rows, and a chunk
//! row exists only after its flush committed. Rows come back in offset order
//! within a partition; chunks are fetched a few at a time ahead of the
//! consumer, and decoding runs off the async workers.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, RecordBatch, RecordBatchOptions,
};
use arrow::compute::kernels::cmp::{gt_eq, lt};
use arrow::compute::{and, cast, filter, filter_record_batch};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use futures::{Stream, StreamExt, TryStreamExt};

use crate::cache::ChunkCache;
use crate::chunk;
use crate::error::{LogError, Result};
use crate::evolve::ThroughError;
use crate::metadata::{ChunkRecord, TimeFilter};
use crate::path::DataObjectPath;
use crate::store::Store;
use crate::stream::StreamInfo;

/// A stream of record batches from the log.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// Chunks fetched ahead of the consumer, per partition read.
const PREFETCH: usize = 4;

/// Which rows of the fetched chunks a read returns: those with offsets in
/// `offsets` and, if given, event/append times in `time`'s ranges.
#[derive(Debug, Clone)]
pub struct RowFilter {
    pub offsets: Range<u64>,
    pub time: Option<TimeFilter>,
}

/// Everything a partition read needs, resolved up front.
#[derive(Clone)]
pub struct PartitionRead {
    pub stream: Arc<StreamInfo>,
    pub partition: u32,
    /// Indices into the read schema; `None` reads every column.
    pub projection: Option<Vec<usize>>,
    pub filter: RowFilter,
}

impl PartitionRead {
    /// Schema of the batches this read yields.
    pub fn output_schema(&self) -> Result<SchemaRef> {
        let full = self.stream.read_schema();
        match &self.projection {
            None => Ok(full),
            Some(p) => Ok(Arc::new(full.project(p)?)),
        }
    }
}

/// Streams the rows of `chunks` (all of one partition, by offset) that
/// `read` selects.
pub fn read_chunks(
    store: Store,
    cache: Arc<ChunkCache>,
    read: PartitionRead,
    chunks: Vec<ChunkRecord>,
) -> Result<BatchStream> {
    let declared = read.stream.spec.schema.fields().len();
    let width = declared + 3;
    let projection: Vec<usize> = read
        .projection
        .clone()
        .unwrap_or_else(|| (0..width).collect());
    if let Some(bad) = projection.iter().find(|&&i| i >= width) {
        return Err(LogError::InvalidArgument(format!(
            "projection index {bad} is out of range ({width} columns)"
        )));
    }
    // Chunk columns to decode: declared ones projected, plus what the row
    // filter needs (event time / `_timestamp`).
    let mut need: Vec<usize> = projection
        .iter()
        .filter_map(|&i| match i {
            i if i < declared => Some(i),
            i if i == declared + 2 => Some(declared),
            _ => None,
        })
        .collect();
    if let Some(tf) = &read.filter.time {
        if tf.event_time.is_some() {
            let et = read.stream.event_time_index().ok_or_else(|| {
                LogError::InvalidArgument(format!(
                    "stream \"{}\" has no event-time column",
                    read.stream.name()
                ))
            })?;
            need.push(et);
        }
        if tf.append_time.is_some() {
            need.push(declared);
        }
    }
    need.sort_unstable();
    need.dedup();
    let out_schema = read.output_schema()?;
    let ctx = Arc::new(Ctx {
        store,
        cache,
        read,
        declared,
        need,
        projection,
        out_schema,
    });
    let stream = ctx.read.stream.name().to_string();
    let s = futures::stream::iter(chunks)
        .map(move |c| {
            let ctx = ctx.clone();
            async move { ctx.rows_of(c).await }
        })
        .buffered(PREFETCH)
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
        .try_flatten()
        .inspect_ok(move |b| {
            metrics::counter!(crate::metrics::READ_ROWS, "stream" => stream.clone())
                .increment(b.num_rows() as u64);
        });
    Ok(Box::pin(s))
}

struct Ctx {
    store: Store,
    cache: Arc<ChunkCache>,
    read: PartitionRead,
    declared: usize,
    /// Chunk columns decoded, ascending.
    need: Vec<usize>,
    /// Read-schema columns output, in order.
    projection: Vec<usize>,
    out_schema: SchemaRef,
}

/// A chunk's rows as fetched: batches of `need` columns and, for a sparse
/// chunk, each batch's offsets.
#[derive(Default)]
struct Fetched {
    batches: Vec<RecordBatch>,
    offsets: Option<Vec<ArrayRef>>,
}

impl Ctx {
    /// The chunk's batches restricted to `need` columns. A chunk written
    /// with another version of the schema is decoded whole and read
    /// through this read's version (see [`Ctx::through_version`]), as is a
    /// sparse chunk, whose offsets column is split off.
    async fn fetch(&self, c: &ChunkRecord) -> Result<Fetched> {
        let key: (Arc<str>, u64) = (Arc::from(c.object.as_str()), c.byte_range.start);
        let same_version = c.schema_version == self.read.stream.schema_version;
        let sparse = c.sparse_rows.is_some();
        let whole = !same_version || sparse || self.need.len() == self.declared + 1;
        if let Some(hit) = self.cache.get(&key) {
            return self.of_whole_chunk(c, &hit);
        }
        if self.need.is_empty() && !sparse {
            return Ok(Fetched::default());
        }
        let path = DataObjectPath::parse(&c.object);
        let bytes = self
            .store
            .get_range(path.as_path(), c.byte_range.clone())
            .await?;
        let object = c.object.clone();
        let proj = (!whole).then(|| self.need.clone());
        let batches = tokio::task::spawn_blocking(move || chunk::decode(&object, bytes, proj))
            .await
            .map_err(|e| LogError::Internal(format!("decode task: {e}")))??;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows as u64 != c.rows() {
            return Err(LogError::CorruptChunk {
                object: c.object.clone(),
                detail: format!("index says {} rows, chunk holds {rows}", c.rows()),
            });
        }
        if !whole {
            return Ok(Fetched {
                batches,
                offsets: None,
            });
        }
        self.cache.insert(key, Arc::new(batches.clone()));
        self.of_whole_chunk(c, &batches)
    }

    /// The `need` columns of a whole chunk's batches, read through this
    /// read's schema version, and a sparse chunk's offsets.
    fn of_whole_chunk(&self, c: &ChunkRecord, whole: &[RecordBatch]) -> Result<Fetched> {
        let mut offsets = None;
        let mut split;
        let data = if c.sparse_rows.is_some() {
            split = Vec::with_capacity(whole.len());
            let mut offs = Vec::with_capacity(whole.len());
            for b in whole {
                let last =
                    b.num_columns()
                        .checked_sub(1)
                        .ok_or_else(|| LogError::CorruptChunk {
                            object: c.object.clone(),
                            detail: "a sparse chunk without an offsets column".into(),
                        })?;
                offs.push(b.column(last).clone());
                split.push(b.project(&(0..last).collect::<Vec<_>>())?);
            }
            offsets = Some(offs);
            &split[..]
        } else {
            whole
        };
        let batches = if c.schema_version != self.read.stream.schema_version {
            self.through_version(c, data)?
        } else {
            project_cached(data, &self.need, self.need.len() == self.declared + 1)?
        };
        Ok(Fetched { batches, offsets })
    }

    /// The `need` columns of a whole chunk written with another version of
    /// the stream's schema, read through this read's version (columns
    /// matched by field id; see [`crate::evolve`]).
    fn through_version(
        &self,
        c: &ChunkRecord,
        batches: &[RecordBatch],
    ) -> Result<Vec<RecordBatch>> {
        let read = &self.read.stream.spec.schema;
        batches
            .iter()
            .map(|b| {
                crate::evolve::through(read, &self.need, b).map_err(|e| match e {
                    ThroughError::Corrupt(detail) => LogError::CorruptChunk {
                        object: c.object.clone(),
                        detail: format!(
                            "schema version {} read as version {}: {detail}",
                            c.schema_version, self.read.stream.schema_version
                        ),
                    },
                    ThroughError::Narrower(_) => {
                        LogError::StreamChanged(self.read.stream.name().to_string())
                    }
                })
            })
            .collect()
    }

    /// The selected rows of one chunk, in the output schema.
    async fn rows_of(&self, c: ChunkRecord) -> Result<Vec<RecordBatch>> {
        let fetched = self.fetch(&c).await?;
        if let Some(offsets) = &fetched.offsets {
            return self.sparse_rows_of(&c, &fetched.batches, offsets);
        }
        let decoded = fetched.batches;
        // Row counts per batch: from the data, or (nothing decoded) the index.
        let lens: Vec<usize> = if decoded.is_empty() {
            vec![c.rows() as usize]
        } else {
            decoded.iter().map(RecordBatch::num_rows).collect()
        };
        let mut out = Vec::with_capacity(lens.len());
        let mut base = c.base_offset;
        for (i, len) in lens.into_iter().enumerate() {
            let first = base;
            base += len as u64;
            let cols: &[ArrayRef] = decoded.get(i).map(|b| b.columns()).unwrap_or(&[]);
            // Rows `first..first+len` hold consecutive offsets: slice the
            // read's range out of them.
            let r = &self.read.filter.offsets;
            let lo = r.start.saturating_sub(first).min(len as u64) as usize;
            let hi = r.end.saturating_sub(first).min(len as u64) as usize;
            if lo >= hi {
                continue;
            }
            let n = hi - lo;
            let cols: Vec<ArrayRef> = cols.iter().map(|a| a.slice(lo, n)).collect();
            let start = (first + lo as u64) as i64;
            if let Some(b) = self.assemble(&cols, n, Offsets::Dense(start))? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// [`Ctx::rows_of`] for a sparse chunk: its rows whose offsets (its
    /// last column) are in the read's range.
    fn sparse_rows_of(
        &self,
        c: &ChunkRecord,
        batches: &[RecordBatch],
        offsets: &[ArrayRef],
    ) -> Result<Vec<RecordBatch>> {
        let r = &self.read.filter.offsets;
        let clamp = |o: u64| o.min(i64::MAX as u64) as i64;
        let mut out = Vec::with_capacity(batches.len());
        for (b, o) in batches.iter().zip(offsets) {
            let o = o
                .as_primitive_opt::<Int64Type>()
                .filter(|o| o.null_count() == 0 && o.len() == b.num_rows())
                .ok_or_else(|| LogError::CorruptChunk {
                    object: c.object.clone(),
                    detail: "a sparse chunk's offsets column is not BIGINT NOT NULL".into(),
                })?;
            let keep = and(
                &gt_eq(o, &Int64Array::new_scalar(clamp(r.start)))?,
                &lt(o, &Int64Array::new_scalar(clamp(r.end)))?,
            )?;
            let kept = filter(o, &keep)?;
            let n = kept.len();
            if n == 0 {
                continue;
            }
            let cols = b
                .columns()
                .iter()
                .map(|a| filter(a, &keep))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            if let Some(b) = self.assemble(&cols, n, Offsets::Listed(kept))? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// Builds the output batch from `n` rows of decoded chunk columns
    /// (`need` order) at `offsets`, then applies the time filter.
    fn assemble(
        &self,
        cols: &[ArrayRef],
        n: usize,
        offsets: Offsets,
    ) -> Result<Option<RecordBatch>> {
        let chunk_col = |i: usize| -> Result<ArrayRef> {
            let pos = self
                .need
                .binary_search(&i)
                .map_err(|_| LogError::Internal(format!("chunk column {i} not decoded")))?;
            Ok(cols[pos].clone())
        };
        let d = self.declared;
        let mut columns = Vec::with_capacity(self.projection.len());
        for &i in &self.projection {
            columns.push(match i {
                i if i < d => chunk_col(i)?,
                i if i == d => {
                    Arc::new(Int32Array::from_value(self.read.partition as i32, n)) as ArrayRef
                }
                i if i == d + 1 => match &offsets {
                    Offsets::Dense(start) => {
                        Arc::new(Int64Array::from_iter_values(*start..*start + n as i64))
                    }
                    Offsets::Listed(listed) => listed.clone(),
                },
                _ => chunk_col(d)?,
            });
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(n));
        let batch = RecordBatch::try_new_with_options(self.out_schema.clone(), columns, &opts)?;
        let Some(tf) = &self.read.filter.time else {
            return Ok(Some(batch));
        };
        let mut mask: Option<BooleanArray> = None;
        if let Some(r) = &tf.event_time {
            let et = self.read.stream.event_time_index().unwrap_or(0);
            mask = Some(in_range(&chunk_col(et)?, r)?);
        }
        if let Some(r) = &tf.append_time {
            let m = in_range(&chunk_col(d)?, r)?;
            mask = Some(match mask {
                Some(prev) => and(&prev, &m)?,
                None => m,
            });
        }
        let filtered = match mask {
            Some(m) => filter_record_batch(&batch, &m)?,
            None => batch,
        };
        Ok((filtered.num_rows() > 0).then_some(filtered))
    }
}

/// `start <= t < end` for a timestamp column, in µs.
fn in_range(col: &ArrayRef, r: &Range<i64>) -> Result<BooleanArray> {
    let micros = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let micros = cast(&micros, &DataType::Int64)?;
    let v = micros.as_primitive::<Int64Type>();
    let lo = gt_eq(v, &Int64Array::new_scalar(r.start))?;
    let hi = lt(v, &Int64Array::new_scalar(r.end))?;
    Ok(and(&lo, &hi)?)
}

/// Whole-chunk batches restricted to the `need` columns (`all`: every one).
fn project_cached(hit: &[RecordBatch], need: &[usize], all: bool) -> Result<Vec<RecordBatch>> {
    if all {
        return Ok(hit.to_vec());
    }
    if need.is_empty() {
        // Keep the row counts: zero-column batches.
        return hit
            .iter()
            .map(|b| {
                let opts = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
                Ok(RecordBatch::try_new_with_options(
                    Arc::new(arrow::datatypes::Schema::empty()),
                    vec![],
                    &opts,
                )?)
            })
            .collect();
    }
    hit.iter().map(|b| Ok(b.project(need)?)).collect()
}

/// The offsets of the rows [`Ctx::assemble`] builds a batch of: from
/// `start` on, one per row (a dense chunk; the column is only built when
/// the read asks for it), or listed (a sparse chunk's).
enum Offsets {
    Dense(i64),
    Listed(ArrayRef),
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_range_is_half_open() {
        let col: ArrayRef = Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![
            Some(1),
            Some(5),
            None,
            Some(9),
        ]));
        let m = in_range(&col, &(5..9)).unwrap();
        let got: Vec<_> = m.iter().collect();
        assert_eq!(got, [Some(false), Some(true), None, Some(false)]);
    }
}
