//! A join's step: the sides' new rows meet the stored ones, and the rows
//! an outer, semi or anti join outputs for unmatched or matched rows.
//!
//! The step runs in two phases: the right side's new rows probe the stored
//! left rows and are stored, then the left side's new rows probe the
//! stored right rows (now including the step's) and are stored. In each
//! phase every (probing row, stored row) pair with equal keys is checked
//! against the residual condition; a passing pair is an output row (inner
//! and outer joins), once per time the side holds the stored row.
//!
//! A *tracked* side (the preserved side of a LEFT/RIGHT/FULL join, the
//! side a semi or anti join outputs) keeps, per stored row, how many rows
//! of the other side match it. A passing pair adds the probing row's sign
//! to the stored row's matches, and a probing row is stored with the
//! matches it found. A row is *visible* — output NULL-padded by an outer
//! join, output by an anti join — while it has no match, and output by a
//! semi join while it has one: a new row is output when visible, and a
//! stored row whose visibility changes is output again with its count as
//! the sign (+ when it becomes visible, − when it stops being visible). So
//! a row that gains its first match takes its NULL-padded row back, and
//! one that loses its last match gets it again.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array, new_null_array,
};
use arrow::compute::take;
use arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;

use super::side::{Entry, Matches};
use super::{DeltaJoin, keys};
use crate::error::StreamsError;

type Exprs = Arc<dyn PhysicalExpr>;

/// Which rows of a tracked side are output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::dataflow) enum Track {
    /// Rows without a match (outer joins' NULL-padded rows, anti joins).
    Unmatched,
    /// Rows with a match (semi joins).
    Matched,
}

impl Track {
    fn visible(self, matches: i64) -> bool {
        match self {
            Track::Unmatched => matches <= 0,
            Track::Matched => matches > 0,
        }
    }
}

/// What a join outputs.
#[derive(Debug, Clone, Copy)]
pub(in crate::dataflow) struct Kind {
    /// Matching pairs (inner and outer joins).
    pub pairs: bool,
    pub left: Option<Track>,
    pub right: Option<Track>,
}

fn state_err(e: StreamsError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Rows `idx` of every column.
fn take_all(columns: &[ArrayRef], idx: &UInt32Array) -> DfResult<Vec<ArrayRef>> {
    Ok(columns
        .iter()
        .map(|c| take(c, idx, None))
        .collect::<Result<_, _>>()?)
}

impl DeltaJoin {
    /// One phase: `batches` (new rows of the left side or not) probe the
    /// other side's stored rows, then are stored; output rows go to `out`.
    /// `probe`: the probing side's key expressions and time bounds.
    pub(super) fn phase(
        &self,
        batches: Vec<RecordBatch>,
        probe: (&[Exprs], &[Exprs]),
        types: &[DataType],
        probe_is_left: bool,
        filter: Option<&Arc<dyn PhysicalExpr>>,
        out: &mut Vec<RecordBatch>,
    ) -> DfResult<()> {
        let [left, right] = &self.sides;
        let (probing, stored) = if probe_is_left {
            (left, right)
        } else {
            (right, left)
        };
        let (probe_track, stored_track) = if probe_is_left {
            (self.kind.left, self.kind.right)
        } else {
            (self.kind.right, self.kind.left)
        };
        let (key_exprs, until) = probe;
        let store = self.store.as_ref();
        // Stored rows that passing pairs met, with the sum of the probing
        // rows' signs.
        let mut met: HashMap<Box<[u8]>, (Entry, i64)> = HashMap::new();
        let mut keyed = Vec::with_capacity(batches.len());
        for b in batches {
            let (k, valid) = keys(key_exprs, types, &b)?;
            let m = stored.probe(store, &k, &valid).map_err(state_err)?;
            let pairs = self.pairs_of(&b, &m, probe_is_left)?;
            let pass = match (filter, &pairs) {
                (Some(f), Some(p)) => Some(
                    f.evaluate(p)?
                        .into_array(p.num_rows())?
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| {
                            DataFusionError::Internal("join condition not boolean".into())
                        })?
                        .clone(),
                ),
                _ => None,
            };
            let passes = |i: usize| pass.as_ref().is_none_or(|p| p.is_valid(i) && p.value(i));
            if let (true, Some(p)) = (self.kind.pairs, &pairs) {
                // Each passing pair once per copy of its stored row.
                let mut idx = Vec::new();
                for (i, &e) in m.entry.iter().enumerate() {
                    if passes(i) {
                        let copies = m.entries[e as usize].count.unsigned_abs();
                        idx.extend(std::iter::repeat_n(i as u32, copies as usize));
                    }
                }
                if !idx.is_empty() {
                    let columns = take_all(p.columns(), &UInt32Array::from(idx))?;
                    out.push(RecordBatch::try_new(self.schema.clone(), columns)?);
                }
            }
            let weights = probing.weights(&b).map_err(state_err)?;
            let mut found = probe_track.map(|_| vec![0i64; b.num_rows()]);
            let Matches {
                probe,
                entry,
                entries,
                ..
            } = m;
            let mut deltas = vec![0i64; entries.len()];
            for (i, (&p, &e)) in probe.iter().zip(&entry).enumerate() {
                if !passes(i) {
                    continue;
                }
                let (p, e) = (p as usize, e as usize);
                if let Some(found) = found.as_mut() {
                    found[p] += entries[e].count;
                }
                deltas[e] += weights.as_ref().map_or(1, |w| w.value(p));
            }
            if stored_track.is_some() {
                for (x, d) in entries.into_iter().zip(deltas) {
                    if d != 0 {
                        met.entry(x.key.clone()).or_insert((x, 0)).1 += d;
                    }
                }
            }
            keyed.push((b, k, valid, found));
        }
        if let Some(track) = stored_track {
            let changed: Vec<(&Entry, i64)> = met
                .values()
                .filter(|(_, d)| *d != 0)
                .map(|(e, d)| (e, e.matches + d))
                .collect();
            let mut rows = Vec::new();
            let mut signs = Vec::new();
            for (e, now) in &changed {
                let (was, is) = (track.visible(e.matches), track.visible(*now));
                if was != is {
                    let sign = if is {
                        e.count.signum()
                    } else {
                        -e.count.signum()
                    };
                    for _ in 0..e.count.unsigned_abs() {
                        rows.push(e.row());
                        signs.push(sign);
                    }
                }
            }
            if !rows.is_empty() {
                let columns = stored
                    .columns(rows.into_iter(), &signs)
                    .map_err(state_err)?;
                out.push(self.side_rows(columns, !probe_is_left)?);
            }
            stored.set_matches(store, changed).map_err(state_err)?;
        }
        for (b, k, valid, found) in keyed {
            if let (Some(track), Some(found)) = (probe_track, &found) {
                let idx: Vec<u32> = (0..b.num_rows())
                    .filter(|&r| track.visible(found[r]))
                    .map(|r| r as u32)
                    .collect();
                if !idx.is_empty() {
                    let columns = take_all(b.columns(), &UInt32Array::from(idx))?;
                    out.push(self.side_rows(columns, probe_is_left)?);
                }
            }
            let expires = DeltaJoin::expiry_of(until, &b)?;
            probing
                .insert(store, &b, &k, &valid, found.as_deref(), expires.as_deref())
                .map_err(state_err)?;
        }
        Ok(())
    }

    /// The pairs of a probe, in the pair layout (left columns, then right
    /// ones); `None` without any.
    fn pairs_of(
        &self,
        batch: &RecordBatch,
        m: &Matches,
        probe_is_left: bool,
    ) -> DfResult<Option<RecordBatch>> {
        if m.probe.is_empty() {
            return Ok(None);
        }
        let probed = take_all(batch.columns(), &UInt32Array::from(m.probe.clone()))?;
        let columns = if probe_is_left {
            [probed, m.columns.clone()].concat()
        } else {
            [m.columns.clone(), probed].concat()
        };
        Ok(Some(RecordBatch::try_new(
            self.pair_schema.clone(),
            columns,
        )?))
    }

    /// Output rows of one side alone: with the other side's columns NULL
    /// (its sign 1) for an outer join, as they are for a semi or anti
    /// join.
    fn side_rows(&self, columns: Vec<ArrayRef>, left: bool) -> DfResult<RecordBatch> {
        if !self.kind.pairs {
            return Ok(RecordBatch::try_new(self.schema.clone(), columns)?);
        }
        let n = columns.first().map_or(0, |c| c.len());
        let [l, r] = &self.sides;
        let (other, offset) = if left { (r, l.width) } else { (l, 0) };
        let padding: Vec<ArrayRef> = (0..other.width)
            .map(|c| {
                if Some(c) == other.sign {
                    Arc::new(Int64Array::from(vec![1i64; n])) as ArrayRef
                } else {
                    new_null_array(self.pair_schema.field(offset + c).data_type(), n)
                }
            })
            .collect();
        let all = if left {
            [columns, padding].concat()
        } else {
            [padding, columns].concat()
        };
        Ok(RecordBatch::try_new(self.schema.clone(), all)?)
    }
}
