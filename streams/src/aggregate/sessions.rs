//! Session windows in an aggregate's state. A session is a maximal run of
//! a key's rows whose times are at most a gap apart; its window is
//! `[first time, last time + gap]`. Each step brings the sessions found
//! among its own rows (with their partial aggregates); a step session that
//! overlaps stored sessions of the same key merges with them into one —
//! two windows overlap exactly when some row of one is within the gap of
//! some row of the other, so merging overlapping windows yields the
//! sessions of all rows.
//!
//! Besides the group entries, an index per key ordered by window end
//! finds the stored sessions a step session can touch with one seek:
//! `s`, the key columns in row format, the end (8 bytes, order-preserving)
//! → the start (same encoding) and the group entry's key.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, interleave, take};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use arrow::row::{RowConverter, SortField};
use rocksdb::WriteBatch;

use super::{AggregateState, arrow_err, merge};
use crate::error::Result;

/// Prefix of the session index.
const INDEX: u8 = b's';

/// Which group columns make a session: its key, its start and its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sessions {
    pub keys: Vec<usize>,
    pub start_column: usize,
    pub end_column: usize,
}

/// The session layout of a state, with the converter of its key columns.
pub(super) struct SessionLayout {
    pub(super) spec: Sessions,
    keys: Option<RowConverter>,
}

impl SessionLayout {
    pub(super) fn new(spec: Sessions, output: &arrow::datatypes::Schema) -> Result<Self> {
        let keys = if spec.keys.is_empty() {
            None
        } else {
            Some(
                RowConverter::new(
                    spec.keys
                        .iter()
                        .map(|&c| SortField::new(output.field(c).data_type().clone()))
                        .collect(),
                )
                .map_err(arrow_err)?,
            )
        };
        Ok(SessionLayout { spec, keys })
    }

    /// The session keys of rows with group columns `group_cols`, in row
    /// format (none for sessions without keys).
    fn key_rows(&self, group_cols: &[ArrayRef]) -> Result<Option<arrow::row::Rows>> {
        let Some(k) = &self.keys else { return Ok(None) };
        let cols: Vec<ArrayRef> = self
            .spec
            .keys
            .iter()
            .map(|&c| group_cols[c].clone())
            .collect();
        Ok(Some(k.convert_columns(&cols).map_err(arrow_err)?))
    }
}

/// An order-preserving encoding of a time in µs.
fn enc(micros: i64) -> [u8; 8] {
    ((micros as u64) ^ (1 << 63)).to_be_bytes()
}

fn dec(bytes: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

fn micros(col: &ArrayRef) -> Result<Int64Array> {
    let m = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(arrow_err)?;
    let m = cast(&m, &DataType::Int64).map_err(arrow_err)?;
    Ok(m.as_primitive::<Int64Type>().clone())
}

/// A session taking part in a merge.
#[derive(Clone, Copy)]
struct Member {
    start: i64,
    end: i64,
    /// A row of the step, or the stored session at this index.
    step: Option<usize>,
    stored: Option<usize>,
}

/// A stored session found through the index.
struct Stored {
    index_key: Vec<u8>,
    group_key: Vec<u8>,
}

/// What merging one step's sessions does.
#[derive(Default)]
pub(super) struct SessionMerge {
    pub(super) late_rows: u64,
    pub(super) changes: Option<(RecordBatch, RecordBatch)>,
}

impl AggregateState {
    /// Merges a step's sessions (each row a session of the step's own rows,
    /// group columns then components) with the stored ones. Step sessions
    /// that would merge into a session closed by `closed_until` are late.
    pub(super) fn merge_sessions(
        &self,
        layout: &SessionLayout,
        batch: &RecordBatch,
        closed_until: Option<i64>,
        wb: &mut WriteBatch,
        want_changes: bool,
    ) -> Result<SessionMerge> {
        let mut out = SessionMerge::default();
        let n = batch.num_rows();
        if n == 0 {
            return Ok(out);
        }
        let spec = &layout.spec;
        let (group_cols, delta) = batch.columns().split_at(self.groups);
        let delta = self.components_of(delta)?;
        let starts = micros(&group_cols[spec.start_column])?;
        let ends = micros(&group_cols[spec.end_column])?;
        // The step's sessions by key.
        let key_rows = layout.key_rows(group_cols)?;
        let mut by_key: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            if starts.is_null(i) || ends.is_null(i) {
                continue;
            }
            let mut k = vec![INDEX];
            if let Some(rows) = &key_rows {
                k.extend_from_slice(rows.row(i).data());
            }
            by_key.entry(k).or_default().push(i);
        }
        // Per key: the stored sessions in reach, then the merged groups.
        let mut stored: Vec<Stored> = Vec::new();
        let mut groups: Vec<Vec<Member>> = Vec::new();
        for (prefix, rows) in &by_key {
            let lo = rows.iter().map(|&i| starts.value(i)).min().unwrap_or(0);
            let hi = rows.iter().map(|&i| ends.value(i)).max().unwrap_or(0);
            let mut members: Vec<Member> = rows
                .iter()
                .map(|&i| Member {
                    start: starts.value(i),
                    end: ends.value(i),
                    step: Some(i),
                    stored: None,
                })
                .collect();
            let mut from = prefix.clone();
            from.extend_from_slice(&enc(lo));
            for kv in self.store.scan_from(prefix, &from) {
                let (k, v) = kv?;
                let start = dec(&v);
                if start > hi {
                    break;
                }
                members.push(Member {
                    start,
                    end: dec(&k[prefix.len()..]),
                    step: None,
                    stored: Some(stored.len()),
                });
                stored.push(Stored {
                    index_key: k.to_vec(),
                    group_key: v[8..].to_vec(),
                });
            }
            members.sort_by_key(|m| (m.start, m.end));
            let mut current: Vec<Member> = Vec::new();
            let mut end = i64::MIN;
            for m in members {
                if !current.is_empty() && m.start > end {
                    groups.push(std::mem::take(&mut current));
                }
                end = if current.is_empty() {
                    m.end
                } else {
                    end.max(m.end)
                };
                current.push(m);
            }
            groups.push(current);
        }
        // Stored sessions' components, fetched at once.
        let stored_values = self
            .store
            .multi_get(stored.iter().map(|s| s.group_key.as_slice()))?;
        let present: Vec<usize> = (0..stored.len())
            .filter(|&i| stored_values[i].is_some())
            .collect();
        let stored_components = if present.is_empty() {
            None
        } else {
            let parser = self.values.parser();
            Some(
                self.values
                    .convert_rows(
                        present
                            .iter()
                            .map(|&i| parser.parse(stored_values[i].as_deref().unwrap_or(&[]))),
                    )
                    .map_err(arrow_err)?,
            )
        };
        // Where each stored session's components are: (array 1, row).
        let mut stored_row = vec![None; stored.len()];
        for (row, &i) in present.iter().enumerate() {
            stored_row[i] = Some(row);
        }
        let rows_component = self.windowing.map(|w| w.rows_component);
        let rows = match rows_component {
            Some(c) => Some(cast(&delta[c], &DataType::Int64).map_err(arrow_err)?),
            None => None,
        };
        // The merged sessions: members as (source array, row), new bounds.
        let mut merged_members: Vec<Vec<(usize, usize)>> = Vec::new();
        let mut bounds: Vec<(i64, i64, usize)> = Vec::new();
        let mut replaced: Vec<usize> = Vec::new();
        for g in groups {
            let steps: Vec<usize> = g.iter().filter_map(|m| m.step).collect();
            if steps.is_empty() {
                continue;
            }
            let closed = g
                .iter()
                .any(|m| m.stored.is_some() && closed_until.is_some_and(|until| m.end <= until));
            if closed {
                if let Some(r) = &rows {
                    let r = r.as_primitive::<Int64Type>();
                    out.late_rows += steps.iter().map(|&i| r.value(i).max(0) as u64).sum::<u64>();
                }
                continue;
            }
            let mut sources = Vec::new();
            for m in &g {
                match (m.step, m.stored) {
                    (Some(i), _) => sources.push((0, i)),
                    (None, Some(s)) => {
                        replaced.push(s);
                        if let Some(r) = stored_row[s] {
                            sources.push((1, r));
                        }
                    }
                    (None, None) => {}
                }
            }
            let start = g.iter().map(|m| m.start).min().unwrap_or(0);
            let end = g.iter().map(|m| m.end).max().unwrap_or(0);
            merged_members.push(sources);
            bounds.push((start, end, steps[0]));
        }
        if bounds.is_empty() {
            return Ok(out);
        }
        // Fold the members' components, one member of every session per
        // round.
        let sources: Vec<Vec<ArrayRef>> = match &stored_components {
            Some(s) => vec![delta.clone(), s.clone()],
            None => vec![delta.clone()],
        };
        let column = |c: usize, picks: &[(usize, usize)]| -> Result<ArrayRef> {
            let arrays: Vec<&dyn Array> = sources.iter().map(|s| s[c].as_ref()).collect();
            interleave(&arrays, picks).map_err(arrow_err)
        };
        let firsts: Vec<(usize, usize)> = merged_members.iter().map(|m| m[0]).collect();
        let mut acc: Vec<ArrayRef> = (0..self.component_types.len())
            .map(|c| column(c, &firsts))
            .collect::<Result<_>>()?;
        let most = merged_members.iter().map(Vec::len).max().unwrap_or(1);
        for round in 1..most {
            let which: Vec<usize> = (0..merged_members.len())
                .filter(|&j| merged_members[j].len() > round)
                .collect();
            let picks: Vec<(usize, usize)> =
                which.iter().map(|&j| merged_members[j][round]).collect();
            let at = UInt32Array::from_iter_values(which.iter().map(|&j| j as u32));
            let mut position = vec![None; merged_members.len()];
            for (p, &j) in which.iter().enumerate() {
                position[j] = Some(p);
            }
            for (c, m) in self.merges.iter().enumerate() {
                let old = take(&acc[c], &at, None).map_err(arrow_err)?;
                let new = merge(m, &old, &column(c, &picks)?)?;
                let back: Vec<(usize, usize)> = (0..merged_members.len())
                    .map(|j| match position[j] {
                        Some(p) => (1, p),
                        None => (0, j),
                    })
                    .collect();
                acc[c] = interleave(&[acc[c].as_ref(), new.as_ref()], &back).map_err(arrow_err)?;
            }
        }
        // The merged sessions' group columns: a step row's, with the new
        // bounds.
        let first_rows = UInt32Array::from_iter_values(bounds.iter().map(|b| b.2 as u32));
        let mut columns: Vec<ArrayRef> = group_cols
            .iter()
            .map(|c| take(c, &first_rows, None).map_err(arrow_err))
            .collect::<Result<_>>()?;
        for (col, pick) in [(spec.start_column, 0usize), (spec.end_column, 1usize)] {
            let values: ArrayRef =
                Arc::new(arrow::array::TimestampMicrosecondArray::from_iter_values(
                    bounds.iter().map(|b| if pick == 0 { b.0 } else { b.1 }),
                ));
            columns[col] = cast(&values, group_cols[col].data_type()).map_err(arrow_err)?;
        }
        // Write: the replaced sessions go, the merged ones come.
        let before = if want_changes {
            let keys: Vec<&[u8]> = replaced
                .iter()
                .filter(|&&s| stored_row[s].is_some())
                .map(|&s| stored[s].group_key.as_slice())
                .collect();
            let values: Vec<&[u8]> = replaced
                .iter()
                .filter_map(|&s| stored_values[s].as_deref())
                .collect();
            Some(if keys.is_empty() {
                RecordBatch::new_empty(self.output.clone())
            } else {
                self.decode(&keys, &values)?
            })
        } else {
            None
        };
        for &s in &replaced {
            wb.delete(&stored[s].index_key);
            wb.delete(&stored[s].group_key);
        }
        let key_rows = self.key_rows(&columns)?;
        let values = self.values.convert_columns(&acc).map_err(arrow_err)?;
        let session_keys = layout.key_rows(&columns)?;
        for (j, (start, end, _)) in bounds.iter().enumerate() {
            let group_key = self.group_key(&key_rows, j);
            wb.put(&group_key, values.row(j).data());
            let mut index_key = vec![INDEX];
            if let Some(k) = &session_keys {
                index_key.extend_from_slice(k.row(j).data());
            }
            index_key.extend_from_slice(&enc(*end));
            let mut index_value = enc(*start).to_vec();
            index_value.extend_from_slice(&group_key);
            wb.put(&index_key, &index_value);
        }
        if let Some(before) = before {
            let after = self.output_rows(columns, &acc)?;
            out.changes = Some((before, after));
        }
        Ok(out)
    }
}
