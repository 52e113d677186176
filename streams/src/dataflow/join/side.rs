//! One side of a join in the state store: the rows it produced so far, a
//! multiset indexed by join key.
//!
//! Each distinct row is one RocksDB entry. Key: `j`, the join's number
//! (u16, big-endian), the side (`l` or `r`), the join key's length (u32,
//! big-endian) and bytes (Arrow's row format), then the row — every column
//! but the sign — in the row format. Value: how many times the side holds
//! the row (an `i64` count).
//!
//! Over inserts only, counts are added with the store's merge operator (a
//! write without a read). Over rows with a [`SIGN`](crate::dataflow::changes::SIGN),
//! a batch reads the counts of the rows it touches and writes the sums,
//! deleting a row whose count reaches 0: a row inserted and later deleted
//! leaves nothing behind. A probe seeks once per distinct key of the
//! probing rows and reads that key's rows; memory holds only RocksDB's
//! caches and the step's rows.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, Schema};
use arrow::row::{RowConverter, Rows, SortField};
use rocksdb::WriteBatch;

use crate::error::{Result, StreamsError};
use crate::state::{StateStore, count_of};

/// First byte of every join entry.
const JOIN: u8 = b'j';

/// A join side's rows.
pub(super) struct SideState {
    /// `j`, join number, side.
    prefix: Vec<u8>,
    /// The stored columns (every column but the sign).
    rows: RowConverter,
    /// Position of the sign column in the side's batches, if it has one.
    sign: Option<usize>,
    /// Number of columns of the side's batches.
    width: usize,
}

/// Stored rows matching probing rows.
pub(super) struct Matches {
    /// Per match, the probing row.
    pub probe: Vec<u32>,
    /// Per match, the stored row's columns (the sign column included, ±1).
    pub columns: Vec<ArrayRef>,
}

fn arrow_err(e: arrow::error::ArrowError) -> StreamsError {
    StreamsError::Internal(format!("join state: {e}"))
}

impl SideState {
    /// The state of side `side` (`b'l'` or `b'r'`) of join `join`, whose
    /// batches have `schema` (a column named `sign_column` is the sign).
    pub fn new(join: u16, side: u8, schema: &Schema, sign_column: &str) -> Result<SideState> {
        let sign = schema.fields().iter().position(|f| f.name() == sign_column);
        let fields = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != sign)
            .map(|(_, f)| SortField::new(f.data_type().clone()))
            .collect();
        let mut prefix = vec![JOIN];
        prefix.extend_from_slice(&join.to_be_bytes());
        prefix.push(side);
        Ok(SideState {
            prefix,
            rows: RowConverter::new(fields).map_err(arrow_err)?,
            sign,
            width: schema.fields().len(),
        })
    }

    /// The prefix of every row stored under join key `key`.
    fn key_prefix(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 4 + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(&(key.len() as u32).to_be_bytes());
        k.extend_from_slice(key);
        k
    }

    /// The batch's columns that are stored, and each row's weight (its
    /// sign, or 1).
    fn split(&self, batch: &RecordBatch) -> Result<(Vec<ArrayRef>, Option<Int64Array>)> {
        let mut columns = Vec::with_capacity(self.width);
        let mut weights = None;
        for (i, c) in batch.columns().iter().enumerate() {
            if Some(i) == self.sign {
                let signs = arrow::compute::cast(c, &DataType::Int64).map_err(arrow_err)?;
                weights = Some(signs.as_primitive::<Int64Type>().clone());
            } else {
                columns.push(c.clone());
            }
        }
        Ok((columns, weights))
    }

    /// Adds the rows of `batch` whose key is valid (`keys`: their join
    /// keys in the row format).
    pub fn insert(
        &self,
        store: &StateStore,
        batch: &RecordBatch,
        keys: &Rows,
        valid: &[bool],
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let (columns, weights) = self.split(batch)?;
        let rows = self.rows.convert_columns(&columns).map_err(arrow_err)?;
        // Equal rows of the batch add up first.
        let mut added: HashMap<Vec<u8>, i64> = HashMap::new();
        for (r, key) in keys.iter().enumerate() {
            if !valid[r] {
                continue;
            }
            let weight = weights.as_ref().map_or(1, |w| w.value(r));
            let mut k = self.key_prefix(key.as_ref());
            k.extend_from_slice(rows.row(r).as_ref());
            let n = added.entry(k).or_default();
            *n = n.wrapping_add(weight);
        }
        let mut wb = WriteBatch::default();
        if self.sign.is_none() {
            for (k, n) in &added {
                StateStore::add(&mut wb, k, *n);
            }
        } else {
            let entries: Vec<(Vec<u8>, i64)> = added.into_iter().filter(|(_, n)| *n != 0).collect();
            let old = store.multi_get(entries.iter().map(|(k, _)| k.as_slice()))?;
            for ((k, n), old) in entries.iter().zip(old) {
                let total = old.as_deref().map_or(0, count_of).wrapping_add(*n);
                if total == 0 {
                    wb.delete(k);
                } else {
                    wb.put(k, total.to_le_bytes());
                }
            }
        }
        store.write(wb)
    }

    /// The stored rows whose key equals a valid key of `keys`, once per
    /// time the side holds them (a row with a negative count — deleted
    /// before it was inserted — comes with sign −1).
    pub fn probe(&self, store: &StateStore, keys: &Rows, valid: &[bool]) -> Result<Matches> {
        // One seek per distinct key, in key order.
        let mut by_key: HashMap<&[u8], Vec<u32>> = HashMap::new();
        for (r, key) in keys.iter().enumerate() {
            if valid[r] {
                by_key.entry(key.data()).or_default().push(r as u32);
            }
        }
        let mut distinct: Vec<(&[u8], Vec<u32>)> = by_key.into_iter().collect();
        distinct.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let prefixes: Vec<Vec<u8>> = distinct.iter().map(|(k, _)| self.key_prefix(k)).collect();
        let mut probe = Vec::new();
        let mut stored: Vec<Box<[u8]>> = Vec::new();
        let mut signs = Vec::new();
        // Per stored row, the match entries it makes.
        store.scan_prefixes(&prefixes, |i, k, v| {
            let count = count_of(v);
            if count == 0 {
                return Ok(());
            }
            let row = stored.len() as u32;
            stored.push(k[prefixes[i].len()..].into());
            for &p in &distinct[i].1 {
                for _ in 0..count.unsigned_abs() {
                    probe.push(p);
                    signs.push((row, count.signum()));
                }
            }
            Ok(())
        })?;
        let parser = self.rows.parser();
        let decoded = self
            .rows
            .convert_rows(stored.iter().map(|b| parser.parse(b)))
            .map_err(arrow_err)?;
        let idx = arrow::array::UInt32Array::from_iter_values(signs.iter().map(|(r, _)| *r));
        let mut columns = Vec::with_capacity(self.width);
        let mut decoded = decoded.into_iter();
        for c in 0..self.width {
            if Some(c) == self.sign {
                let s = Int64Array::from_iter_values(signs.iter().map(|(_, s)| *s));
                columns.push(Arc::new(s) as ArrayRef);
            } else {
                let col = decoded
                    .next()
                    .ok_or_else(|| StreamsError::Internal("join state: short row".into()))?;
                columns.push(arrow::compute::take(&col, &idx, None).map_err(arrow_err)?);
            }
        }
        Ok(Matches { probe, columns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::Field;

    fn keyed(batch: &RecordBatch) -> (Rows, Vec<bool>) {
        let conv = RowConverter::new(vec![SortField::new(DataType::Int64)]).unwrap();
        let keys = conv.convert_columns(&[batch.column(0).clone()]).unwrap();
        let valid = (0..batch.num_rows())
            .map(|r| batch.column(0).is_valid(r))
            .collect();
        (keys, valid)
    }

    fn matched(side: &SideState, store: &StateStore, probe: &[Option<i64>]) -> Vec<String> {
        let b = RecordBatch::try_from_iter([(
            "k",
            Arc::new(Int64Array::from(probe.to_vec())) as ArrayRef,
        )])
        .unwrap();
        let (keys, valid) = keyed(&b);
        let m = side.probe(store, &keys, &valid).unwrap();
        let mut out: Vec<String> = (0..m.probe.len())
            .map(|i| {
                let cells: Vec<String> = m
                    .columns
                    .iter()
                    .map(|c| arrow::util::display::array_value_to_string(c, i).unwrap())
                    .collect();
                format!("{}:{}", m.probe[i], cells.join(","))
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn rows_add_up_retract_and_match_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "t").unwrap();
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("__sign", DataType::Int64, false),
        ]);
        let side = SideState::new(1, b'l', &schema, "__sign").unwrap();
        let batch = |k: Vec<Option<i64>>, v: Vec<&str>, s: Vec<i64>| {
            RecordBatch::try_new(
                Arc::new(schema.clone()),
                vec![
                    Arc::new(Int64Array::from(k)),
                    Arc::new(StringArray::from(v)),
                    Arc::new(Int64Array::from(s)),
                ],
            )
            .unwrap()
        };
        let b = batch(
            vec![Some(1), Some(1), Some(2), None, Some(1)],
            vec!["a", "b", "c", "n", "a"],
            vec![1, 1, 1, 1, 1],
        );
        let (k, v) = keyed(&b);
        side.insert(&store, &b, &k, &v).unwrap();
        assert_eq!(
            matched(&side, &store, &[Some(1), None, Some(3), Some(2)]),
            ["0:1,a,1", "0:1,a,1", "0:1,b,1", "3:2,c,1"]
        );
        // A delete takes one copy back; deleting a row twice more leaves a
        // negative count, which matches with sign -1.
        let d = batch(vec![Some(1), Some(2)], vec!["a", "c"], vec![-1, -1]);
        let (k, v) = keyed(&d);
        side.insert(&store, &d, &k, &v).unwrap();
        assert_eq!(
            matched(&side, &store, &[Some(1), Some(2)]),
            ["0:1,a,1", "0:1,b,1"]
        );
        side.insert(&store, &d, &k, &v).unwrap();
        side.insert(&store, &d, &k, &v).unwrap();
        assert_eq!(
            matched(&side, &store, &[Some(1), Some(2)]),
            ["0:1,a,-1", "0:1,b,1", "1:2,c,-1", "1:2,c,-1"]
        );
        // The other side of another join is apart.
        let other = SideState::new(1, b'r', &schema, "__sign").unwrap();
        assert!(matched(&other, &store, &[Some(1)]).is_empty());
    }

    #[test]
    fn inserts_only_count_equal_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "t").unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let side = SideState::new(2, b'r', &schema, "__sign").unwrap();
        for _ in 0..3 {
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(vec![7, 7, 8]))],
            )
            .unwrap();
            let (k, v) = keyed(&b);
            side.insert(&store, &b, &k, &v).unwrap();
        }
        assert_eq!(matched(&side, &store, &[Some(7)]).len(), 6);
        assert_eq!(matched(&side, &store, &[Some(8), Some(8)]).len(), 6);
    }
}
