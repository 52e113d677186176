//! Values kept per group: for `count(DISTINCT x)`, and over rows with a
//! sign (inputs with updates) for `min(x)`/`max(x)` too.
//!
//! Each aggregate of this kind keeps its (group, value) pairs under
//! `d`, its number (one byte), then the group columns and the value in
//! Arrow's row format — ordered by value within a group. Each step reads
//! its distinct pairs (`GROUP BY` groups and value, with the sum of the
//! rows' signs when they have one).
//!
//! - Over inserts only, `count(DISTINCT x)` records each pair once (an
//!   empty value) and its component is the number of values new to the
//!   group.
//! - Over signed rows the value of a pair is how many rows hold it (an
//!   `i64`, the entry deleted at 0): `count(DISTINCT x)` changes by the
//!   values whose count leaves or reaches 0; `min`/`max` of each group the
//!   step touched is the first (last) value of the group's pairs after the
//!   step — one seek, a deleted minimum replaced by the next value without
//!   reading the input again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, filter_record_batch, take};
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::RowConverter;
use rocksdb::WriteBatch;

use super::{AggregateState, SEEN, arrow_err};
use crate::error::Result;
use crate::state::{count_of, successor};

/// What an aggregate over a group's value set computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueSet {
    CountDistinct,
    /// Over signed rows only (over inserts, `min` merges by comparing).
    Min,
    Max,
}

/// An aggregate over a group's value set: the component it fills, the
/// value's type and what it computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distinct {
    pub component: usize,
    pub value_type: DataType,
    pub kind: ValueSet,
}

/// One step's effect on a value set.
#[derive(Default)]
pub(super) struct SetStep {
    /// Per group key, how its number of distinct values changed.
    counts: HashMap<Vec<u8>, i64>,
    /// Over signed rows: the pairs the step touched, with their new counts.
    pending: BTreeMap<Vec<u8>, i64>,
}

impl AggregateState {
    /// Applies each value set's step pairs (recorded in `wb`).
    pub(super) fn set_steps(
        &self,
        pairs: &[Vec<RecordBatch>],
        closed_until: Option<i64>,
        wb: &mut WriteBatch,
    ) -> Result<Vec<SetStep>> {
        let signed = self.retraction.is_some();
        let mut out = Vec::with_capacity(self.distinct.len());
        for (i, (_, conv)) in self.distinct.iter().enumerate() {
            let mut step = SetStep::default();
            for b in pairs.get(i).map(Vec::as_slice).unwrap_or_default() {
                let b = self.drop_late_pairs(b, closed_until)?;
                let value = b.column(self.groups);
                let valid: BooleanArray =
                    (0..b.num_rows()).map(|r| Some(value.is_valid(r))).collect();
                let b = filter_record_batch(&b, &valid).map_err(arrow_err)?;
                if b.num_rows() == 0 {
                    continue;
                }
                let rows = conv
                    .convert_columns(&b.columns()[..=self.groups])
                    .map_err(arrow_err)?;
                let keys: Vec<Vec<u8>> = (0..b.num_rows())
                    .map(|r| {
                        let mut k = vec![SEEN, i as u8];
                        k.extend_from_slice(rows.row(r).data());
                        k
                    })
                    .collect();
                let seen = self.store.multi_get(keys.iter().map(|k| k.as_slice()))?;
                let group_rows = self.key_rows(&b.columns()[..self.groups])?;
                let weights = match signed {
                    true => Some(
                        cast(b.column(self.groups + 1), &DataType::Int64)
                            .map_err(arrow_err)?
                            .as_primitive::<Int64Type>()
                            .clone(),
                    ),
                    false => None,
                };
                for (r, (k, s)) in keys.into_iter().zip(seen).enumerate() {
                    let Some(w) = &weights else {
                        if s.is_none() {
                            wb.put(&k, b"");
                            *step
                                .counts
                                .entry(self.group_key(&group_rows, r))
                                .or_insert(0) += 1;
                        }
                        continue;
                    };
                    let old = s.as_deref().map_or(0, count_of);
                    let new = old.wrapping_add(w.value(r));
                    let change = i64::from(new > 0) - i64::from(old > 0);
                    if change != 0 {
                        *step
                            .counts
                            .entry(self.group_key(&group_rows, r))
                            .or_insert(0) += change;
                    }
                    if new == 0 {
                        wb.delete(&k);
                    } else {
                        wb.put(&k, new.to_le_bytes());
                    }
                    step.pending.insert(k, new);
                }
            }
            out.push(step);
        }
        Ok(out)
    }

    /// A step's partial batch with each value set's component set: the
    /// change of the distinct count, or the group's minimum or maximum
    /// after the step.
    pub(super) fn with_set_values(
        &self,
        batch: RecordBatch,
        steps: &[SetStep],
    ) -> Result<RecordBatch> {
        if self.distinct.is_empty() || batch.num_rows() == 0 {
            return Ok(batch);
        }
        let group_rows = self.key_rows(&batch.columns()[..self.groups])?;
        let mut cols = batch.columns().to_vec();
        for (i, ((d, conv), step)) in self.distinct.iter().zip(steps).enumerate() {
            let at = self.groups + d.component;
            cols[at] = match d.kind {
                ValueSet::CountDistinct => {
                    let values: Int64Array = (0..batch.num_rows())
                        .map(|r| {
                            Some(
                                step.counts
                                    .get(&self.group_key(&group_rows, r))
                                    .copied()
                                    .unwrap_or(0),
                            )
                        })
                        .collect();
                    Arc::new(values)
                }
                ValueSet::Min | ValueSet::Max => {
                    let values = self.extremes(
                        i,
                        conv,
                        &batch.columns()[..self.groups],
                        step,
                        d.kind == ValueSet::Max,
                    )?;
                    cast(&values, cols[at].data_type()).map_err(arrow_err)?
                }
            };
        }
        let fields: Vec<arrow::datatypes::FieldRef> = batch
            .schema()
            .fields()
            .iter()
            .zip(&cols)
            .map(|(f, c)| {
                Arc::new(arrow::datatypes::Field::new(
                    f.name(),
                    c.data_type().clone(),
                    true,
                ))
            })
            .collect();
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols)
            .map_err(arrow_err)
    }

    /// Per row of `groups`, the smallest (largest) value of value set `i`
    /// after the step (NULL: the group has none).
    fn extremes(
        &self,
        i: usize,
        conv: &RowConverter,
        groups: &[ArrayRef],
        step: &SetStep,
        max: bool,
    ) -> Result<ArrayRef> {
        let n = groups.first().map_or(1, |g| g.len());
        let group_rows = match &self.group_conv {
            Some(g) => Some(g.convert_columns(groups).map_err(arrow_err)?),
            None => None,
        };
        let mut found: Vec<Box<[u8]>> = Vec::new();
        let mut index: Vec<Option<u32>> = Vec::with_capacity(n);
        for r in 0..n {
            let mut prefix = vec![SEEN, i as u8];
            if let Some(rows) = &group_rows {
                prefix.extend_from_slice(rows.row(r).data());
            }
            // Stored pairs the step did not take to 0, and the step's new
            // ones: the first (last) of either.
            let stored = self
                .store
                .first_entry(&prefix, max, |k| step.pending.get(k).is_none_or(|&c| c > 0))?;
            let range = match successor(&prefix) {
                Some(end) => step.pending.range(prefix.clone()..end),
                None => step.pending.range(prefix.clone()..),
            };
            let mut touched = range.filter(|(_, c)| **c > 0).map(|(k, _)| k.as_slice());
            let fresh = if max {
                touched.next_back()
            } else {
                touched.next()
            };
            let best = match (stored, fresh) {
                (Some(s), Some(f)) => Some(if (max && f > &s[..]) || (!max && f < &s[..]) {
                    f.into()
                } else {
                    s
                }),
                (s, f) => s.or_else(|| f.map(Into::into)),
            };
            index.push(best.map(|k| {
                found.push(k);
                (found.len() - 1) as u32
            }));
        }
        let parser = conv.parser();
        let decoded = conv
            .convert_rows(found.iter().map(|k| parser.parse(&k[2..])))
            .map_err(arrow_err)?;
        let values = decoded
            .last()
            .ok_or_else(|| crate::error::StreamsError::Internal("empty value set".into()))?;
        take(values, &UInt32Array::from(index), None).map_err(arrow_err)
    }
}
