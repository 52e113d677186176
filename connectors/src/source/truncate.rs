//! A `TRUNCATE` upstream, applied to a table: a delete of every key the
//! table holds at that point. Those keys are the ones its log leaves
//! alive — a key's latest row, unless that row deletes — read back from
//! the log (only the key columns and `__deleted`), then changed by the
//! rows gathered earlier in the same round and not appended yet. One key
//! lives in one partition, in offset order, so reading the partitions one
//! after another and the gathered rows last sees each key's writes in
//! order. Memory: one entry per live key.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, new_null_array};
use arrow::row::{OwnedRow, RowConverter, SortField};
use futures::TryStreamExt;
use streamhouse_log::{Log, StreamInfo, TABLE_DELETED_COLUMN};

use super::{Result, SourceError};

/// The rows of the table's log (`info`) that delete every key alive after
/// its rows and then `pending` (batches of the log's declared columns);
/// `None` when no key is alive.
pub async fn deletes(
    log: &Log,
    info: Arc<StreamInfo>,
    pending: &[RecordBatch],
) -> Result<Option<RecordBatch>> {
    let schema = info.spec.schema.clone();
    let key: Vec<usize> = info
        .spec
        .key
        .iter()
        .map(|k| schema.index_of(k))
        .collect::<std::result::Result<_, _>>()?;
    let deleted = schema.index_of(TABLE_DELETED_COLUMN)?;
    if key.is_empty() {
        return Err(SourceError::Fatal(format!(
            "\"{}\" has no key: not a table's log",
            info.name()
        )));
    }
    let converter = RowConverter::new(
        key.iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?;
    let mut alive: HashSet<OwnedRow> = HashSet::new();
    let mut apply = |keys: &[ArrayRef], gone: &BooleanArray| -> Result<()> {
        let rows = converter.convert_columns(keys)?;
        for (i, row) in rows.iter().enumerate() {
            if gone.is_valid(i) && gone.value(i) {
                alive.remove(&row.owned());
            } else {
                alive.insert(row.owned());
            }
        }
        Ok(())
    };
    let ends = log.partition_ends(info.name()).await?;
    // The read schema's first columns are the declared ones.
    let projection: Vec<usize> = key.iter().copied().chain([deleted]).collect();
    for (p, end) in ends.into_iter().enumerate() {
        let mut read = log
            .read_as(info.clone(), p as u32, 0..end, Some(projection.clone()))
            .await?;
        while let Some(batch) = read.try_next().await? {
            let n = key.len();
            apply(&batch.columns()[..n], batch.column(n).as_boolean())?;
        }
    }
    for batch in pending {
        let keys: Vec<ArrayRef> = key.iter().map(|&i| batch.column(i).clone()).collect();
        apply(&keys, batch.column(deleted).as_boolean())?;
    }
    if alive.is_empty() {
        return Ok(None);
    }
    let keys = converter.convert_rows(alive.iter().map(|r| r.row()))?;
    let n = alive.len();
    let columns: Vec<ArrayRef> = (0..schema.fields().len())
        .map(|i| {
            if i == deleted {
                Arc::new(BooleanArray::from(vec![true; n])) as ArrayRef
            } else if let Some(k) = key.iter().position(|&c| c == i) {
                keys[k].clone()
            } else {
                new_null_array(schema.field(i).data_type(), n)
            }
        })
        .collect();
    Ok(Some(RecordBatch::try_new(schema, columns)?))
}
