//! Incremental aggregate state in the [`StateStore`].
//!
//! One RocksDB entry per group: the key is the group's columns in Arrow's
//! row format (compact and order-preserving), the value the group's
//! aggregate *components* in the same format. Components are what merges
//! across steps: a `count` or `sum` adds, `min`/`max` compare (an average
//! is a sum and a count). Each step's partial results — one row per group
//! touched — are merged column-wise with Arrow kernels against the stored
//! components of those groups, fetched with one `multi_get`, and written
//! back in one batch. Reading turns every entry into the aggregate's
//! output: group columns, then each aggregate's value.
//!
//! State lives on local disk (memory holds only RocksDB's caches), and
//! [`AggregateState::snapshot`] puts a consistent copy in the object store.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, new_null_array,
};
use arrow::compute::kernels::{cmp, numeric, zip::zip};
use arrow::compute::{cast, is_null};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use arrow::row::{RowConverter, SortField};
use rocksdb::WriteBatch;
use streamhouse_log::Store;

use crate::error::{Result, StreamsError};
use crate::state::StateStore;

/// How a component merges with the same component of another step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    Sum,
    Min,
    Max,
}

/// How one aggregate's value comes from the components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// The component as is; a `count` is 0 for a group of no rows.
    Same { component: usize, is_count: bool },
    /// `sum / count` as a double.
    Avg { sum: usize, count: usize },
}

/// The key of the one group of an aggregate without GROUP BY.
const GLOBAL_KEY: &[u8] = b"\x00";

/// A grouped aggregate's state.
pub struct AggregateState {
    store: StateStore,
    /// Group columns (none for a global aggregate).
    keys: Option<RowConverter>,
    values: RowConverter,
    component_types: Vec<DataType>,
    merges: Vec<Merge>,
    finals: Vec<Final>,
    /// Group columns, then one column per aggregate.
    output: SchemaRef,
    groups: usize,
}

fn arrow_err(e: arrow::error::ArrowError) -> StreamsError {
    StreamsError::Internal(format!("aggregate state: {e}"))
}

impl AggregateState {
    /// State over `store` for an aggregate whose steps produce the group
    /// columns of `output` followed by components of `component_types`.
    pub fn new(
        store: StateStore,
        output: SchemaRef,
        groups: usize,
        component_types: Vec<DataType>,
        merges: Vec<Merge>,
        finals: Vec<Final>,
    ) -> Result<AggregateState> {
        let keys = if groups == 0 {
            None
        } else {
            Some(
                RowConverter::new(
                    output.fields()[..groups]
                        .iter()
                        .map(|f| SortField::new(f.data_type().clone()))
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
        })
    }

    /// Merges one step's partial results (group columns, then components;
    /// each group at most once in the whole step) in one atomic write, so
    /// a reader sees the state before the step or after it.
    pub fn merge(&self, batches: &[RecordBatch]) -> Result<()> {
        let mut wb = WriteBatch::default();
        for b in batches {
            self.merge_into(b, &mut wb)?;
        }
        if wb.is_empty() {
            return Ok(());
        }
        self.store.write(wb)
    }

    fn merge_into(&self, batch: &RecordBatch, wb: &mut WriteBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let cols = batch.columns();
        let (group_cols, delta) = cols.split_at(self.groups);
        let delta: Vec<ArrayRef> = delta
            .iter()
            .zip(&self.component_types)
            .map(|(c, t)| {
                if c.data_type() == t {
                    Ok(c.clone())
                } else {
                    cast(c, t).map_err(arrow_err)
                }
            })
            .collect::<Result<_>>()?;
        let key_rows = match &self.keys {
            Some(k) => Some(k.convert_columns(group_cols).map_err(arrow_err)?),
            None => None,
        };
        let key = |i: usize| -> &[u8] {
            match &key_rows {
                Some(rows) => rows.row(i).data(),
                None => GLOBAL_KEY,
            }
        };
        let old_bytes = self.store.multi_get((0..n).map(key))?;
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
            .map(|((o, d), m)| merge(*m, o, d))
            .collect::<Result<Vec<_>>>()?;
        let rows = self.values.convert_columns(&merged).map_err(arrow_err)?;
        for i in 0..n {
            wb.put(key(i), rows.row(i).data());
        }
        Ok(())
    }

    /// The current contents: group columns, then each aggregate's value.
    pub fn contents(&self) -> Result<RecordBatch> {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for kv in self.store.scan(b"") {
            let (k, v) = kv?;
            keys.push(k);
            values.push(v);
        }
        let global_empty = self.groups == 0 && values.is_empty();
        let components: Vec<ArrayRef> = if global_empty {
            // A global aggregate over no rows is one row (count 0).
            self.component_types
                .iter()
                .map(|t| new_null_array(t, 1))
                .collect()
        } else {
            let parser = self.values.parser();
            self.values
                .convert_rows(values.iter().map(|v| parser.parse(v)))
                .map_err(arrow_err)?
        };
        let mut columns: Vec<ArrayRef> = match &self.keys {
            Some(k) => {
                let parser = k.parser();
                k.convert_rows(keys.iter().map(|key| parser.parse(key)))
                    .map_err(arrow_err)?
            }
            None => Vec::new(),
        };
        for (f, field) in self.finals.iter().zip(&self.output.fields()[self.groups..]) {
            let v = final_value(*f, &components)?;
            columns.push(if v.data_type() == field.data_type() {
                v
            } else {
                cast(&v, field.data_type()).map_err(arrow_err)?
            });
        }
        RecordBatch::try_new(self.output.clone(), columns).map_err(arrow_err)
    }

    /// Group columns, then one column per aggregate.
    pub fn schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Uploads a consistent snapshot; see [`StateStore::snapshot`].
    pub async fn snapshot(&self, store: &Store, id: u64) -> Result<String> {
        self.store.snapshot(store, id).await
    }
}

/// Merges stored components `old` with a step's `delta`, row by row; a
/// NULL on either side leaves the other.
fn merge(m: Merge, old: &ArrayRef, delta: &ArrayRef) -> Result<ArrayRef> {
    let old_null = is_null(old).map_err(arrow_err)?;
    let delta_null = is_null(delta).map_err(arrow_err)?;
    let combined: ArrayRef = match m {
        Merge::Sum => numeric::add(old, delta).map_err(arrow_err)?,
        Merge::Min | Merge::Max => {
            let better = if m == Merge::Min {
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

fn final_value(f: Final, components: &[ArrayRef]) -> Result<ArrayRef> {
    Ok(match f {
        Final::Same {
            component,
            is_count,
        } => {
            let c = components[component].clone();
            if is_count {
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
            let s = cast(&components[sum], &DataType::Float64).map_err(arrow_err)?;
            let n = cast(&components[count], &DataType::Int64).map_err(arrow_err)?;
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use arrow::util::pretty::pretty_format_batches;

    fn state(dir: &std::path::Path, groups: usize) -> AggregateState {
        let mut fields = Vec::new();
        if groups == 1 {
            fields.push(Field::new("k", DataType::Utf8, true));
        }
        fields.extend([
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
            Field::new("lo", DataType::Float64, true),
            Field::new("hi", DataType::Float64, true),
            Field::new("mean", DataType::Float64, true),
        ]);
        AggregateState::new(
            StateStore::open(dir, "t").unwrap(),
            Arc::new(Schema::new(fields)),
            groups,
            vec![
                DataType::Int64,
                DataType::Int64,
                DataType::Float64,
                DataType::Float64,
                DataType::Float64,
                DataType::Int64,
            ],
            vec![
                Merge::Sum,
                Merge::Sum,
                Merge::Min,
                Merge::Max,
                Merge::Sum,
                Merge::Sum,
            ],
            vec![
                Final::Same {
                    component: 0,
                    is_count: true,
                },
                Final::Same {
                    component: 1,
                    is_count: false,
                },
                Final::Same {
                    component: 2,
                    is_count: false,
                },
                Final::Same {
                    component: 3,
                    is_count: false,
                },
                Final::Avg { sum: 4, count: 5 },
            ],
        )
        .unwrap()
    }

    fn step(keys: Option<Vec<&str>>, cols: [Vec<Option<f64>>; 6]) -> RecordBatch {
        let mut arrays: Vec<ArrayRef> = Vec::new();
        let mut fields = Vec::new();
        if let Some(k) = keys {
            arrays.push(Arc::new(arrow::array::StringArray::from(k)));
            fields.push(Field::new("k", DataType::Utf8, true));
        }
        for (i, c) in cols.into_iter().enumerate() {
            let is_int = matches!(i, 0 | 1 | 5);
            arrays.push(if is_int {
                Arc::new(Int64Array::from_iter(
                    c.into_iter().map(|v| v.map(|v| v as i64)),
                ))
            } else {
                Arc::new(Float64Array::from(c))
            });
            fields.push(Field::new(
                format!("c{i}"),
                if is_int {
                    DataType::Int64
                } else {
                    DataType::Float64
                },
                true,
            ));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }

    #[test]
    fn merges_steps_like_one_aggregate() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path(), 1);
        s.merge(&[step(
            Some(vec!["a", "b"]),
            [
                vec![Some(2.0), Some(1.0)],
                vec![Some(10.0), None],
                vec![Some(1.5), None],
                vec![Some(4.0), None],
                vec![Some(5.5), None],
                vec![Some(2.0), Some(0.0)],
            ],
        )])
        .unwrap();
        s.merge(&[step(
            Some(vec!["b", "a"]),
            [
                vec![Some(3.0), Some(1.0)],
                vec![Some(7.0), Some(-1.0)],
                vec![Some(2.0), Some(0.5)],
                vec![Some(9.0), Some(3.0)],
                vec![Some(9.0), Some(0.5)],
                vec![Some(3.0), Some(1.0)],
            ],
        )])
        .unwrap();
        let text = pretty_format_batches(&[s.contents().unwrap()])
            .unwrap()
            .to_string();
        assert_eq!(
            text,
            "+---+---+---+-----+-----+------+\n\
             | k | n | s | lo  | hi  | mean |\n\
             +---+---+---+-----+-----+------+\n\
             | a | 3 | 9 | 0.5 | 4.0 | 2.0  |\n\
             | b | 4 | 7 | 2.0 | 9.0 | 3.0  |\n\
             +---+---+---+-----+-----+------+"
        );
    }

    #[test]
    fn a_global_aggregate_has_one_row_even_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path(), 0);
        let empty = s.contents().unwrap();
        assert_eq!(empty.num_rows(), 1);
        assert_eq!(empty.column(0).as_primitive::<Int64Type>().value(0), 0);
        assert!(empty.column(1).is_null(0));
        s.merge(&[step(
            None,
            [
                vec![Some(2.0)],
                vec![Some(3.0)],
                vec![Some(1.0)],
                vec![Some(2.0)],
                vec![Some(3.0)],
                vec![Some(2.0)],
            ],
        )])
        .unwrap();
        let one = s.contents().unwrap();
        assert_eq!(one.num_rows(), 1);
        assert_eq!(one.column(0).as_primitive::<Int64Type>().value(0), 2);
    }
}
