//! Windows closed by the watermark, in an aggregate's state: a windowed
//! aggregate's keys start with the window's end, so rows of windows the
//! watermark already closed are dropped as late (and counted) before they
//! reach the state, and closing windows is one range scan from where the
//! last close stopped. (Session windows merge in `sessions`.)

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use arrow::row::{RowConverter, SortField};

use super::{AggregateState, GROUP, Windowing, arrow_err};
use crate::error::Result;

impl AggregateState {
    /// The window ends of a batch's rows, in µs.
    fn window_ends(&self, batch: &RecordBatch, w: Windowing) -> Result<Int64Array> {
        let col = batch.column(w.end_column);
        let micros =
            cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(arrow_err)?;
        let ends = cast(&micros, &DataType::Int64).map_err(arrow_err)?;
        Ok(ends.as_primitive::<Int64Type>().clone())
    }

    /// Which rows of a step's batch belong to windows still open; `None`
    /// when nothing can be late (not windowed, or no watermark yet).
    fn open_rows(
        &self,
        batch: &RecordBatch,
        closed_until: Option<i64>,
    ) -> Result<Option<(Windowing, BooleanArray)>> {
        let (Some(w), Some(until)) = (self.windowing, closed_until) else {
            return Ok(None);
        };
        let ends = self.window_ends(batch, w)?;
        let open = ends
            .iter()
            .map(|e| Some(e.is_none_or(|e| e > until)))
            .collect();
        Ok(Some((w, open)))
    }

    /// Drops (group, value) pairs of closed windows.
    pub(super) fn drop_late_pairs(
        &self,
        batch: &RecordBatch,
        closed_until: Option<i64>,
    ) -> Result<RecordBatch> {
        match self.open_rows(batch, closed_until)? {
            Some((_, open)) => filter_record_batch(batch, &open).map_err(arrow_err),
            None => Ok(batch.clone()),
        }
    }

    /// Drops rows of closed windows, adding how many they were to
    /// `late_rows`.
    pub(super) fn drop_late(
        &self,
        batch: &RecordBatch,
        closed_until: Option<i64>,
        late_rows: &mut u64,
    ) -> Result<RecordBatch> {
        let Some((w, open)) = self.open_rows(batch, closed_until)? else {
            return Ok(batch.clone());
        };
        if open.true_count() == batch.num_rows() {
            return Ok(batch.clone());
        }
        let rows = cast(
            batch.column(self.groups + w.rows_component),
            &DataType::Int64,
        )
        .map_err(arrow_err)?;
        let rows = rows.as_primitive::<Int64Type>();
        for (i, o) in open.iter().enumerate() {
            if o == Some(false) {
                *late_rows += rows.value(i).max(0) as u64;
            }
        }
        filter_record_batch(batch, &open).map_err(arrow_err)
    }

    /// The key prefix of windows ending at `micros` (the row format of
    /// the window-end column alone).
    fn end_prefix(&self, w: Windowing, micros: i64) -> Result<Vec<u8>> {
        let t = self.output.field(w.end_column).data_type().clone();
        let at: ArrayRef = Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![micros]));
        let at = cast(&at, &t).map_err(arrow_err)?;
        let conv = RowConverter::new(vec![SortField::new(t)]).map_err(arrow_err)?;
        let rows = conv.convert_columns(&[at]).map_err(arrow_err)?;
        let mut k = vec![GROUP];
        k.extend_from_slice(rows.row(0).data());
        Ok(k)
    }

    /// Windows ending at or before `micros` count as closed already (a
    /// restored state: the checkpoint's watermark had closed them).
    pub fn set_closed_until(&self, micros: i64) {
        self.closed_until
            .fetch_max(micros, std::sync::atomic::Ordering::Relaxed);
    }

    /// Output rows of the groups whose window ends at or before `until`
    /// (µs) and after the previous close: one range scan over the keys,
    /// which start with the window's end.
    pub fn close_windows(&self, until: i64) -> Result<RecordBatch> {
        let Some(w) = self.windowing else {
            return Ok(RecordBatch::new_empty(self.output.clone()));
        };
        let last = self.closed_until.load(std::sync::atomic::Ordering::Relaxed);
        if until <= last {
            return Ok(RecordBatch::new_empty(self.output.clone()));
        }
        let bound = self.end_prefix(w, until.saturating_add(1))?;
        let from = if last == i64::MIN {
            vec![GROUP]
        } else {
            self.end_prefix(w, last.saturating_add(1))?
        };
        let (mut keys, mut vals) = (Vec::new(), Vec::new());
        for kv in self.store.scan_from(&[GROUP], &from) {
            let (k, v) = kv?;
            if k.len() >= bound.len() && k[..bound.len()] >= bound[..] {
                break;
            }
            keys.push(k);
            vals.push(v);
        }
        self.set_closed_until(until);
        if keys.is_empty() {
            return Ok(RecordBatch::new_empty(self.output.clone()));
        }
        self.decode(&keys, &vals)
    }
}
