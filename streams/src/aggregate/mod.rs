//! Incremental aggregate state in the [`StateStore`].
//!
//! One RocksDB entry per group: the key is the group's columns in Arrow's
//! row format (compact and order-preserving), the value the group's
//! aggregate *components* in the same format. Components are what merges
//! across steps: a `count` or `sum` adds, `min`/`max` compare (an average
//! is a sum and a count), and any other aggregate function merges its own
//! partial state ([`PartialState`]). Each step's partial results — one row per group
//! touched — are merged column-wise with Arrow kernels against the stored
//! components of those groups, fetched with one `multi_get`, and written
//! back in one batch. Reading turns every entry into the aggregate's
//! output: group columns, then each aggregate's value.
//!
//! A windowed aggregate's key starts with the window's end (the other
//! group columns follow), so the windows a watermark closes are one range
//! scan from where the last close stopped, and a step's rows for windows
//! already closed are dropped as late (`windows`; session windows merge in
//! `sessions`).
//!
//! A step can report what it changed — each touched group's output row
//! before and after — which is what a view's changelog is made of.
//!
//! State lives on local disk (memory holds only RocksDB's caches); the
//! dataflow snapshots its store into the object store.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, new_null_array,
};
use arrow::compute::kernels::{cmp, numeric, zip::zip};
use arrow::compute::{cast, filter_record_batch, is_null};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use arrow::row::{RowConverter, SortField};
use rocksdb::WriteBatch;

use crate::error::{Result, StreamsError};
use crate::state::StateStore;

mod distinct;
mod sessions;
mod windows;
pub use distinct::{Distinct, ValueSet};
pub use sessions::Sessions;

/// An aggregate's partial state as one component, merged and finished by
/// the aggregate function itself (the query engine provides it): for
/// aggregates whose state is not a plain sum, minimum or maximum.
pub trait PartialState: Send + Sync + std::fmt::Debug {
    /// Row by row, `old` (NULL: the group had no state yet) merged with
    /// `delta` (a step's partial state of the same group).
    fn merge(&self, old: &ArrayRef, delta: &ArrayRef) -> Result<ArrayRef>;
    /// The aggregate's value of each row's state (NULL: no rows).
    fn finish(&self, state: &ArrayRef) -> Result<ArrayRef>;
}

/// How a component merges with the same component of another step.
#[derive(Debug, Clone)]
pub enum Merge {
    Sum,
    Min,
    Max,
    /// By the aggregate function whose partial state the component is.
    Partial(Arc<dyn PartialState>),
    /// The step's value replaces the stored one (a value set's `min` or
    /// `max` over signed rows, computed from the whole set).
    Replace,
}

/// How one aggregate's value comes from the components.
#[derive(Debug, Clone)]
pub enum Final {
    /// The component as is; a `count` is 0 for a group of no rows.
    Same { component: usize, is_count: bool },
    /// `sum / count` as a double.
    Avg { sum: usize, count: usize },
    /// A sum that retractions can bring back to no value: NULL where the
    /// count of the summed non-NULL values is 0.
    SumIfAny { sum: usize, count: usize },
    /// The aggregate function's value of its partial state.
    Partial {
        component: usize,
        state: Arc<dyn PartialState>,
    },
}

/// Prefix of group entries.
const GROUP: u8 = b'g';
/// Prefix of the values seen per group by a `count(DISTINCT …)` (then the
/// distinct aggregate's number, then group columns and value).
const SEEN: u8 = b'd';

/// What a step changed: the output rows of the groups it touched, before
/// (groups that existed) and after.
#[derive(Debug, Clone)]
pub struct Changes {
    pub before: RecordBatch,
    pub after: RecordBatch,
}

/// What [`AggregateState::merge`] did.
#[derive(Debug, Default)]
pub struct Merged {
    /// Rows dropped because their window had closed.
    pub late_rows: u64,
    /// Present when asked for.
    pub changes: Option<Changes>,
}

/// Windowing of an aggregate: which group column is the window end, and
/// which component counts a group's rows (to count late ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowing {
    pub end_column: usize,
    pub rows_component: usize,
}

/// A grouped aggregate's state.
pub struct AggregateState {
    store: Arc<StateStore>,
    /// Group columns in key order (none for a global aggregate).
    keys: Option<RowConverter>,
    /// The group column of each key position (a window's end first).
    key_order: Vec<usize>,
    values: RowConverter,
    component_types: Vec<DataType>,
    merges: Vec<Merge>,
    finals: Vec<Final>,
    /// Group columns, then one column per aggregate.
    output: SchemaRef,
    groups: usize,
    windowing: Option<Windowing>,
    /// Aggregates over value sets, each with the converter of its (group
    /// columns, value) pairs.
    distinct: Vec<(Distinct, RowConverter)>,
    /// The group columns alone (in output order), for value sets.
    group_conv: Option<RowConverter>,
    /// For inputs with retractions: the component counting a group's rows
    /// (inserts less deletes); a group whose count falls to zero is gone.
    retraction: Option<usize>,
    /// Session windows: step sessions merge with the stored ones they
    /// overlap.
    sessions: Option<sessions::SessionLayout>,
    /// Windows ending up to here (µs) were closed by this process.
    closed_until: std::sync::atomic::AtomicI64,
}

fn arrow_err(e: arrow::error::ArrowError) -> StreamsError {
    StreamsError::Internal(format!("aggregate state: {e}"))
}

impl AggregateState {
    /// State over `store` for an aggregate whose steps produce the group
    /// columns of `output` followed by components of `component_types`.
    pub fn new(
        store: Arc<StateStore>,
        output: SchemaRef,
        groups: usize,
        component_types: Vec<DataType>,
        merges: Vec<Merge>,
        finals: Vec<Final>,
        windowing: Option<Windowing>,
    ) -> Result<AggregateState> {
        let mut key_order: Vec<usize> = (0..groups).collect();
        if let Some(w) = windowing {
            key_order.retain(|&c| c != w.end_column);
            key_order.insert(0, w.end_column);
        }
        let keys = if groups == 0 {
            None
        } else {
            Some(
                RowConverter::new(
                    key_order
                        .iter()
                        .map(|&c| SortField::new(output.field(c).data_type().clone()))
                        .collect(),
                )
                .map_err(arrow_err)?,
            )
        };
        let values = RowConverter::new(
            component_types
                .iter()
                .map(|t| SortField::new(t.clone()))
                .collect(),
        )
        .map_err(arrow_err)?;
        Ok(AggregateState {
            store,
            keys,
            values,
            component_types,
            merges,
            finals,
            output,
            groups,
            key_order,
            windowing,
            distinct: Vec::new(),
            group_conv: None,
            retraction: None,
            sessions: None,
            closed_until: std::sync::atomic::AtomicI64::new(i64::MIN),
        })
    }

    /// Steps may retract rows (negative counts): component `rows` counts
    /// each group's rows, and a group left with none is removed (a global
    /// aggregate keeps its one row).
    pub fn with_retraction(mut self, rows: usize) -> AggregateState {
        self.retraction = Some(rows);
        self
    }

    /// Groups are session windows (see [`Sessions`]).
    pub fn with_sessions(mut self, spec: Sessions) -> Result<AggregateState> {
        self.sessions = Some(sessions::SessionLayout::new(spec, &self.output)?);
        Ok(self)
    }

    /// Adds aggregates over each group's value set (see [`Distinct`]):
    /// `count(DISTINCT …)`, and over signed rows `min`/`max`.
    pub fn with_distinct(mut self, specs: Vec<Distinct>) -> Result<AggregateState> {
        if self.groups > 0 && !specs.is_empty() {
            let fields = self.output.fields()[..self.groups]
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            self.group_conv = Some(RowConverter::new(fields).map_err(arrow_err)?);
        }
        for d in specs {
            let mut fields: Vec<SortField> = self.output.fields()[..self.groups]
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            fields.push(SortField::new(d.value_type.clone()));
            let conv = RowConverter::new(fields).map_err(arrow_err)?;
            self.distinct.push((d, conv));
        }
        Ok(self)
    }

    /// Merges one step's partial results (group columns, then components;
    /// each group at most once in the whole step) in one atomic write, so
    /// a reader sees the state before the step or after it. Rows of windows
    /// that end at or before `closed_until` (µs) are dropped as late.
    /// `distinct`: per `count(DISTINCT …)`, the step's distinct (group
    /// columns, value) pairs.
    pub fn merge(
        &self,
        batches: &[RecordBatch],
        distinct: &[Vec<RecordBatch>],
        closed_until: Option<i64>,
        want_changes: bool,
    ) -> Result<Merged> {
        let mut wb = WriteBatch::default();
        let mut merged = Merged::default();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        if let Some(layout) = &self.sessions {
            // A key's step sessions must merge together: one batch.
            let all = arrow::compute::concat_batches(
                &batches.first().map_or(self.output.clone(), |b| b.schema()),
                batches,
            )
            .map_err(arrow_err)?;
            let b = self.drop_late(&all, closed_until, &mut merged.late_rows)?;
            let m = self.merge_sessions(layout, &b, closed_until, &mut wb, want_changes)?;
            merged.late_rows += m.late_rows;
            if let Some((old, new)) = m.changes {
                before.push(old);
                after.push(new);
            }
        }
        let sets = self.set_steps(distinct, closed_until, &mut wb)?;
        for b in batches.iter().filter(|_| self.sessions.is_none()) {
            let b = self.drop_late(b, closed_until, &mut merged.late_rows)?;
            let b = self.with_set_values(b, &sets)?;
            if let Some((old, new)) = self.merge_into(&b, &mut wb, want_changes)? {
                before.push(old);
                after.push(new);
            }
        }
        if want_changes {
            let concat = |v: Vec<RecordBatch>| {
                arrow::compute::concat_batches(&self.output, &v).map_err(arrow_err)
            };
            merged.changes = Some(Changes {
                before: concat(before)?,
                after: concat(after)?,
            });
        }
        if !wb.is_empty() {
            self.store.write(wb)?;
        }
        Ok(merged)
    }

    /// Group columns (in output order) as keys.
    fn key_rows(&self, group_cols: &[ArrayRef]) -> Result<Option<arrow::row::Rows>> {
        let Some(k) = &self.keys else { return Ok(None) };
        let ordered: Vec<ArrayRef> = self
            .key_order
            .iter()
            .map(|&c| group_cols[c].clone())
            .collect();
        Ok(Some(k.convert_columns(&ordered).map_err(arrow_err)?))
    }

    /// Group columns (in output order) from stored keys.
    fn key_columns<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<ArrayRef>> {
        let Some(k) = &self.keys else {
            return Ok(Vec::new());
        };
        let parser = k.parser();
        let ordered = k
            .convert_rows(keys.iter().map(|key| parser.parse(&key.as_ref()[1..])))
            .map_err(arrow_err)?;
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.groups];
        for (pos, col) in self.key_order.iter().zip(ordered) {
            columns[*pos] = Some(col);
        }
        Ok(columns.into_iter().flatten().collect())
    }

    fn group_key(&self, rows: &Option<arrow::row::Rows>, i: usize) -> Vec<u8> {
        let mut k = vec![GROUP];
        if let Some(rows) = rows {
            k.extend_from_slice(rows.row(i).data());
        }
        k
    }

    fn merge_into(
        &self,
        batch: &RecordBatch,
        wb: &mut WriteBatch,
        want_changes: bool,
    ) -> Result<Option<(RecordBatch, RecordBatch)>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(None);
        }
        let cols = batch.columns();
        let (group_cols, delta) = cols.split_at(self.groups);
        let delta = self.components_of(delta)?;
        let key_rows = self.key_rows(group_cols)?;
        let keys: Vec<Vec<u8>> = (0..n).map(|i| self.group_key(&key_rows, i)).collect();
        let old_bytes = self.store.multi_get(keys.iter().map(|k| k.as_slice()))?;
        // Groups never seen decode from an all-null row.
        let nulls: Vec<ArrayRef> = self
            .component_types
            .iter()
            .map(|t| new_null_array(t, 1))
            .collect();
        let null_row = self.values.convert_columns(&nulls).map_err(arrow_err)?;
        let parser = self.values.parser();
        let old = self
            .values
            .convert_rows(old_bytes.iter().map(|b| match b {
                Some(b) => parser.parse(b),
                None => null_row.row(0),
            }))
            .map_err(arrow_err)?;
        let merged = old
            .iter()
            .zip(&delta)
            .zip(&self.merges)
            .map(|((o, d), m)| merge(m, o, d))
            .collect::<Result<Vec<_>>>()?;
        let rows = self.values.convert_columns(&merged).map_err(arrow_err)?;
        let remains = self.remaining_groups(&merged)?;
        for (i, k) in keys.iter().enumerate() {
            if remains.value(i) {
                wb.put(k, rows.row(i).data());
            } else {
                wb.delete(k);
            }
        }
        if !want_changes {
            return Ok(None);
        }
        let existed: BooleanArray = old_bytes.iter().map(|b| Some(b.is_some())).collect();
        let group_cols = group_cols.to_vec();
        let before = filter_record_batch(&self.output_rows(group_cols.clone(), &old)?, &existed)
            .map_err(arrow_err)?;
        let after = filter_record_batch(&self.output_rows(group_cols, &merged)?, &remains)
            .map_err(arrow_err)?;
        Ok(Some((before, after)))
    }

    /// A step's component columns in the stored types.
    fn components_of(&self, delta: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        delta
            .iter()
            .zip(&self.component_types)
            .map(|(c, t)| {
                if c.data_type() == t {
                    Ok(c.clone())
                } else {
                    cast(c, t).map_err(arrow_err)
                }
            })
            .collect()
    }

    /// Which merged groups still have rows (all, without retractions; a
    /// global aggregate's one group always remains).
    fn remaining_groups(&self, merged: &[ArrayRef]) -> Result<BooleanArray> {
        let n = merged.first().map_or(0, |c| c.len());
        let Some(rows) = self.retraction.filter(|_| self.groups > 0) else {
            return Ok(BooleanArray::from(vec![true; n]));
        };
        let rows = cast(&merged[rows], &DataType::Int64).map_err(arrow_err)?;
        Ok(rows
            .as_primitive::<Int64Type>()
            .iter()
            .map(|r| Some(r.unwrap_or(0) != 0))
            .collect())
    }

    /// Output rows (group columns, then each aggregate's value) from group
    /// columns and components.
    fn output_rows(
        &self,
        mut columns: Vec<ArrayRef>,
        components: &[ArrayRef],
    ) -> Result<RecordBatch> {
        for (f, field) in self.finals.iter().zip(&self.output.fields()[self.groups..]) {
            let v = final_value(f, components)?;
            columns.push(if v.data_type() == field.data_type() {
                v
            } else {
                cast(&v, field.data_type()).map_err(arrow_err)?
            });
        }
        RecordBatch::try_new(self.output.clone(), columns).map_err(arrow_err)
    }

    /// Output rows from stored group entries.
    fn decode<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        keys: &[K],
        values: &[V],
    ) -> Result<RecordBatch> {
        let parser = self.values.parser();
        let components = self
            .values
            .convert_rows(values.iter().map(|v| parser.parse(v.as_ref())))
            .map_err(arrow_err)?;
        let columns = self.key_columns(keys)?;
        self.output_rows(columns, &components)
    }

    /// The current contents: group columns, then each aggregate's value.
    pub fn contents(&self) -> Result<RecordBatch> {
        let mut pages = Vec::new();
        self.contents_pages(64 * 1024, |b| {
            pages.push(b);
            true
        })?;
        arrow::compute::concat_batches(&self.output, &pages).map_err(arrow_err)
    }

    /// The current contents, `page_rows` groups at a time, from one
    /// consistent view of the state; `emit` returns `false` to stop.
    /// Memory holds one page, whatever the number of groups.
    pub fn contents_pages(
        &self,
        page_rows: usize,
        mut emit: impl FnMut(RecordBatch) -> bool,
    ) -> Result<()> {
        let mut keys = Vec::with_capacity(page_rows);
        let mut values = Vec::with_capacity(page_rows);
        let mut any = false;
        for kv in self.store.scan(&[GROUP]) {
            let (k, v) = kv?;
            keys.push(k);
            values.push(v);
            any = true;
            if keys.len() == page_rows {
                if !emit(self.decode(&keys, &values)?) {
                    return Ok(());
                }
                keys.clear();
                values.clear();
            }
        }
        if self.groups == 0 && !any {
            // A global aggregate over no rows is one row (count 0).
            let nulls: Vec<ArrayRef> = self
                .component_types
                .iter()
                .map(|t| new_null_array(t, 1))
                .collect();
            emit(self.output_rows(Vec::new(), &nulls)?);
        } else if !keys.is_empty() {
            emit(self.decode(&keys, &values)?);
        }
        Ok(())
    }

    /// Group columns, then one column per aggregate.
    pub fn schema(&self) -> SchemaRef {
        self.output.clone()
    }
}

/// Merges stored components `old` with a step's `delta`, row by row; a
/// NULL on either side leaves the other.
fn merge(m: &Merge, old: &ArrayRef, delta: &ArrayRef) -> Result<ArrayRef> {
    match m {
        Merge::Partial(state) => return state.merge(old, delta),
        Merge::Replace => return Ok(delta.clone()),
        _ => {}
    }
    let old_null = is_null(old).map_err(arrow_err)?;
    let delta_null = is_null(delta).map_err(arrow_err)?;
    let combined: ArrayRef = match m {
        Merge::Sum => numeric::add(old, delta).map_err(arrow_err)?,
        Merge::Partial(_) | Merge::Replace => unreachable!("merged above"),
        Merge::Min | Merge::Max => {
            let better = if matches!(m, Merge::Min) {
                cmp::lt(delta, old)
            } else {
                cmp::gt(delta, old)
            }
            .map_err(arrow_err)?;
            let better: BooleanArray = better.iter().map(|b| Some(b.unwrap_or(false))).collect();
            zip(&better, delta, old).map_err(arrow_err)?
        }
    };
    // Where old is NULL take delta; else where delta is NULL take old.
    let otherwise = zip(&delta_null, old, &combined).map_err(arrow_err)?;
    zip(&old_null, delta, &otherwise).map_err(arrow_err)
}

fn final_value(f: &Final, components: &[ArrayRef]) -> Result<ArrayRef> {
    Ok(match f {
        Final::Same {
            component,
            is_count,
        } => {
            let c = components[*component].clone();
            if *is_count {
                let c = cast(&c, &DataType::Int64).map_err(arrow_err)?;
                let counts: Int64Array = c
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|v| Some(v.unwrap_or(0)))
                    .collect();
                Arc::new(counts)
            } else {
                c
            }
        }
        Final::Avg { sum, count } => {
            let s = cast(&components[*sum], &DataType::Float64).map_err(arrow_err)?;
            let n = cast(&components[*count], &DataType::Int64).map_err(arrow_err)?;
            let avg: Float64Array = s
                .as_primitive::<Float64Type>()
                .iter()
                .zip(n.as_primitive::<Int64Type>().iter())
                .map(|(s, n)| match (s, n) {
                    (Some(s), Some(n)) if n > 0 => Some(s / n as f64),
                    _ => None,
                })
                .collect();
            Arc::new(avg)
        }
        Final::SumIfAny { sum, count } => {
            let n = cast(&components[*count], &DataType::Int64).map_err(arrow_err)?;
            let none: BooleanArray = n
                .as_primitive::<Int64Type>()
                .iter()
                .map(|n| Some(n.unwrap_or(0) == 0))
                .collect();
            let s = &components[*sum];
            zip(&none, &new_null_array(s.data_type(), s.len()), s).map_err(arrow_err)?
        }
        Final::Partial { component, state } => state.finish(&components[*component])?,
    })
}

#[cfg(test)]
mod tests;
