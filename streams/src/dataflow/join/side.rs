//! One side of a join in the state store: the rows it produced so far, a
//! multiset indexed by join key.
//!
//! Every key starts with `j`, the join's number (u16, big-endian), the side
//! (`l` or `r`), the join key's length (u32, big-endian) and bytes (Arrow's
//! row format).
//!
//! - Over inserts only, each row is appended: the key ends with the side's
//!   next sequence number (u64, big-endian; the side's counter is stored
//!   under the key length `u32::MAX`), the value is the row — every column
//!   but the sign — in the row format. A write without a read, with short
//!   keys.
//! - Over rows with a [`SIGN`](crate::dataflow::changes::SIGN), each
//!   distinct row is one entry: the key ends with the row, the value is
//!   how many times the side holds it (an `i64` count), and for a *tracked*
//!   side (the preserved side of an outer join, the side a semi or anti
//!   join outputs) how many rows of the other side it matches (an `i64`
//!   after the count). A batch reads the values of the rows it touches and
//!   writes the sums, deleting a row whose count reaches 0: a row inserted
//!   and later deleted leaves nothing behind.
//!
//! - A side whose rows expire (see [`bounds`](super::bounds); inserts
//!   only) also keeps a time index: under the side's letter in upper case,
//!   the time its row expires (i64 µs, sign bit flipped, big-endian), then
//!   the rest of the row's key. [`SideState::evict`] reads the index up to
//!   the watermark and deletes both entries.
//!
//! A probe seeks once per distinct key of the probing rows and reads that
//! key's rows; memory holds only RocksDB's caches and the step's rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::take;
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
    pub sign: Option<usize>,
    /// Number of columns of the side's batches.
    pub width: usize,
    /// Each row's matches are kept.
    tracked: bool,
    /// Over inserts only: the next sequence number, once read.
    next: Mutex<Option<u64>>,
    /// The watermark rows were last evicted at (`i64::MIN`: not yet by
    /// this instance): the time index holds nothing earlier.
    evicted: Mutex<i64>,
}

/// A stored row a probe met.
pub(super) struct Entry {
    /// Its RocksDB key.
    pub key: Box<[u8]>,
    /// The row, in the row format.
    row: Box<[u8]>,
    /// How many times the side holds it (never 0).
    pub count: i64,
    /// Rows of the other side it matches (tracked sides).
    pub matches: i64,
}

impl Entry {
    /// The row, in the row format.
    pub fn row(&self) -> &[u8] {
        &self.row
    }
}

/// Stored rows with the same key as probing rows: one pair per (probing
/// row, stored row), whatever the stored row's count.
pub(super) struct Matches {
    /// Per pair, the probing row.
    pub probe: Vec<u32>,
    /// Per pair, the stored row (an index into `entries`).
    pub entry: Vec<u32>,
    pub entries: Vec<Entry>,
    /// Per pair, the stored row's columns (its sign column, if the side
    /// has one, is the sign of its count).
    pub columns: Vec<ArrayRef>,
}

fn arrow_err(e: arrow::error::ArrowError) -> StreamsError {
    StreamsError::Internal(format!("join state: {e}"))
}

fn value(count: i64, matches: Option<i64>) -> Vec<u8> {
    let mut v = count.to_le_bytes().to_vec();
    if let Some(m) = matches {
        v.extend_from_slice(&m.to_le_bytes());
    }
    v
}

/// A time (µs) as a key part that sorts like the time.
fn time_key(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn matches_of(value: &[u8]) -> i64 {
    value.get(8..).map_or(0, count_of)
}

impl SideState {
    /// The state of side `side` (`b'l'` or `b'r'`) of join `join`, whose
    /// batches have `schema` (a column named `sign_column` is the sign);
    /// `tracked`: keep each row's matches.
    pub fn new(
        join: u16,
        side: u8,
        schema: &Schema,
        sign_column: &str,
        tracked: bool,
    ) -> Result<SideState> {
        let sign = schema.fields().iter().position(|f| f.name() == sign_column);
        if tracked && sign.is_none() {
            return Err(StreamsError::Internal(
                "join state: a side whose matches are kept needs signed rows".into(),
            ));
        }
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
            tracked,
            next: Mutex::new(None),
            evicted: Mutex::new(i64::MIN),
        })
    }

    /// The prefix of the side's time index.
    fn index_prefix(&self) -> Vec<u8> {
        let mut k = self.prefix.clone();
        if let Some(side) = k.last_mut() {
            *side = side.to_ascii_uppercase();
        }
        k
    }

    /// Deletes the rows whose expiry time is before `watermark` (µs);
    /// returns how many.
    pub fn evict(&self, store: &StateStore, watermark: i64) -> Result<u64> {
        let mut evicted = self.evicted.lock().unwrap_or_else(|p| p.into_inner());
        if watermark <= *evicted {
            return Ok(0);
        }
        let index = self.index_prefix();
        let mut from = index.clone();
        from.extend_from_slice(&time_key(*evicted));
        let end = time_key(watermark);
        let mut wb = WriteBatch::default();
        let mut n = 0u64;
        store.scan_while_from(&index, &from, |k, _| {
            let rest = &k[index.len()..];
            if rest.len() < 8 || rest[..8] >= end[..] {
                return Ok(false);
            }
            let mut row = self.prefix.clone();
            row.extend_from_slice(&rest[8..]);
            wb.delete(k);
            wb.delete(&row);
            n += 1;
            Ok(true)
        })?;
        store.write(wb)?;
        *evicted = watermark;
        Ok(n)
    }

    /// The key of the side's sequence counter (inserts only).
    fn counter_key(&self) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(&u32::MAX.to_be_bytes());
        k
    }

    /// Appends rows of an inserts-only side (`until`: when each expires).
    fn append(
        &self,
        store: &StateStore,
        keys: &Rows,
        valid: &[bool],
        rows: &Rows,
        until: Option<&[i64]>,
    ) -> Result<()> {
        // A row already past the last eviction goes at its start: it
        // leaves at the next one.
        let evicted = *self.evicted.lock().unwrap_or_else(|p| p.into_inner());
        let index = until.map(|_| self.index_prefix());
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let mut seq = match *next {
            Some(n) => n,
            None => store.get(&self.counter_key())?.as_deref().map_or(0, |v| {
                v.try_into().map(u64::from_be_bytes).unwrap_or_default()
            }),
        };
        let mut wb = WriteBatch::default();
        let mut k = Vec::new();
        for (r, key) in keys.iter().enumerate() {
            if !valid[r] {
                continue;
            }
            k.clear();
            k.extend_from_slice(&self.prefix);
            k.extend_from_slice(&(key.as_ref().len() as u32).to_be_bytes());
            k.extend_from_slice(key.as_ref());
            k.extend_from_slice(&seq.to_be_bytes());
            seq += 1;
            wb.put(&k, rows.row(r).as_ref());
            if let (Some(until), Some(index)) = (until, &index) {
                let mut t = index.clone();
                t.extend_from_slice(&time_key(until[r].max(evicted)));
                t.extend_from_slice(&k[self.prefix.len()..]);
                wb.put(&t, []);
            }
        }
        wb.put(self.counter_key(), seq.to_be_bytes());
        store.write(wb)?;
        *next = Some(seq);
        Ok(())
    }

    /// The prefix of every row stored under join key `key`.
    fn key_prefix(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 4 + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(&(key.len() as u32).to_be_bytes());
        k.extend_from_slice(key);
        k
    }

    /// Each row's weight: its sign, or 1.
    pub fn weights(&self, batch: &RecordBatch) -> Result<Option<Int64Array>> {
        let Some(i) = self.sign else { return Ok(None) };
        let signs = arrow::compute::cast(batch.column(i), &DataType::Int64).map_err(arrow_err)?;
        Ok(Some(signs.as_primitive::<Int64Type>().clone()))
    }

    /// The batch's columns that are stored.
    fn stored_columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        batch
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.sign)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Adds the rows of `batch` whose key is valid (`keys`: their join
    /// keys in the row format); `matches`: for a tracked side, each row's
    /// matches; `until`: for a side whose rows expire (inserts only), the
    /// watermark (µs) each row leaves at.
    pub fn insert(
        &self,
        store: &StateStore,
        batch: &RecordBatch,
        keys: &Rows,
        valid: &[bool],
        matches: Option<&[i64]>,
        until: Option<&[i64]>,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let weights = self.weights(batch)?;
        let rows = self
            .rows
            .convert_columns(&self.stored_columns(batch))
            .map_err(arrow_err)?;
        if self.sign.is_none() {
            return self.append(store, keys, valid, &rows, until);
        }
        // Equal rows of the batch add up first.
        let mut added: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        for (r, key) in keys.iter().enumerate() {
            if !valid[r] {
                continue;
            }
            let weight = weights.as_ref().map_or(1, |w| w.value(r));
            let mut k = self.key_prefix(key.as_ref());
            k.extend_from_slice(rows.row(r).as_ref());
            let e = added.entry(k).or_default();
            e.0 = e.0.wrapping_add(weight);
            e.1 = matches.map_or(0, |m| m[r]);
        }
        let mut wb = WriteBatch::default();
        let entries: Vec<(Vec<u8>, (i64, i64))> = added.into_iter().collect();
        let old = store.multi_get(entries.iter().map(|(k, _)| k.as_slice()))?;
        for ((k, (n, m)), old) in entries.iter().zip(old) {
            let total = old.as_deref().map_or(0, count_of).wrapping_add(*n);
            if total == 0 {
                wb.delete(k);
            } else {
                wb.put(k, value(total, self.tracked.then_some(*m)));
            }
        }
        store.write(wb)
    }

    /// Sets the matches of stored rows (a tracked side).
    pub fn set_matches<'a>(
        &self,
        store: &StateStore,
        rows: impl IntoIterator<Item = (&'a Entry, i64)>,
    ) -> Result<()> {
        let mut wb = WriteBatch::default();
        for (e, matches) in rows {
            wb.put(&e.key, value(e.count, Some(matches)));
        }
        store.write(wb)
    }

    /// The stored rows whose key equals a valid key of `keys`.
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
        let (mut probe, mut entry, mut entries) = (Vec::new(), Vec::new(), Vec::new());
        let appended = self.sign.is_none();
        store.scan_prefixes(&prefixes, |i, k, v| {
            let (count, row, matches) = match appended {
                // Key ends with a sequence number, value is the row.
                true if k.len() == prefixes[i].len() + 8 => (1, v, 0),
                true => return Ok(()),
                false => (count_of(v), &k[prefixes[i].len()..], matches_of(v)),
            };
            if count == 0 {
                return Ok(());
            }
            let at = entries.len() as u32;
            entries.push(Entry {
                key: k.into(),
                row: row.into(),
                count,
                matches,
            });
            for &p in &distinct[i].1 {
                probe.push(p);
                entry.push(at);
            }
            Ok(())
        })?;
        let signs: Vec<i64> = entries.iter().map(|e| e.count.signum()).collect();
        let decoded = self.columns(entries.iter().map(Entry::row), &signs)?;
        let idx = UInt32Array::from(entry.clone());
        let columns = decoded
            .iter()
            .map(|c| take(c, &idx, None).map_err(arrow_err))
            .collect::<Result<_>>()?;
        Ok(Matches {
            probe,
            entry,
            entries,
            columns,
        })
    }

    /// The side's columns of stored rows `rows`, each with the sign in
    /// `signs` (the sign column, if the side has one).
    pub fn columns<'a>(
        &self,
        rows: impl Iterator<Item = &'a [u8]>,
        signs: &[i64],
    ) -> Result<Vec<ArrayRef>> {
        let parser = self.rows.parser();
        let decoded = self
            .rows
            .convert_rows(rows.map(|b| parser.parse(b)))
            .map_err(arrow_err)?;
        let mut decoded = decoded.into_iter();
        let mut columns = Vec::with_capacity(self.width);
        for c in 0..self.width {
            if Some(c) == self.sign {
                columns.push(Arc::new(Int64Array::from(signs.to_vec())) as ArrayRef);
            } else {
                columns.push(
                    decoded
                        .next()
                        .ok_or_else(|| StreamsError::Internal("join state: short row".into()))?,
                );
            }
        }
        Ok(columns)
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

    /// "probing row:stored row's cells×count/matches" per pair.
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
                let e = &m.entries[m.entry[i] as usize];
                format!(
                    "{}:{}×{}/{}",
                    m.probe[i],
                    cells.join(","),
                    e.count,
                    e.matches
                )
            })
            .collect();
        out.sort();
        out
    }

    fn signed_schema() -> Schema {
        Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("__sign", DataType::Int64, false),
        ])
    }

    fn batch(k: Vec<Option<i64>>, v: Vec<&str>, s: Vec<i64>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(signed_schema()),
            vec![
                Arc::new(Int64Array::from(k)),
                Arc::new(StringArray::from(v)),
                Arc::new(Int64Array::from(s)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_add_up_retract_and_match_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "t").unwrap();
        let side = SideState::new(1, b'l', &signed_schema(), "__sign", false).unwrap();
        let b = batch(
            vec![Some(1), Some(1), Some(2), None, Some(1)],
            vec!["a", "b", "c", "n", "a"],
            vec![1, 1, 1, 1, 1],
        );
        let (k, v) = keyed(&b);
        side.insert(&store, &b, &k, &v, None, None).unwrap();
        assert_eq!(
            matched(&side, &store, &[Some(1), None, Some(3), Some(2)]),
            ["0:1,a,1×2/0", "0:1,b,1×1/0", "3:2,c,1×1/0"]
        );
        // A delete takes one copy back; deleting a row twice more leaves a
        // negative count, which matches with sign -1.
        let d = batch(vec![Some(1), Some(2)], vec!["a", "c"], vec![-1, -1]);
        let (k, v) = keyed(&d);
        side.insert(&store, &d, &k, &v, None, None).unwrap();
        assert_eq!(
            matched(&side, &store, &[Some(1), Some(2)]),
            ["0:1,a,1×1/0", "0:1,b,1×1/0"]
        );
        side.insert(&store, &d, &k, &v, None, None).unwrap();
        side.insert(&store, &d, &k, &v, None, None).unwrap();
        assert_eq!(
            matched(&side, &store, &[Some(1), Some(2)]),
            ["0:1,a,-1×-1/0", "0:1,b,1×1/0", "1:2,c,-1×-2/0"]
        );
        // The other side of the join is apart.
        let other = SideState::new(1, b'r', &signed_schema(), "__sign", false).unwrap();
        assert!(matched(&other, &store, &[Some(1)]).is_empty());
    }

    #[test]
    fn tracked_rows_keep_their_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "t").unwrap();
        let side = SideState::new(3, b'r', &signed_schema(), "__sign", true).unwrap();
        let b = batch(vec![Some(1), Some(2)], vec!["a", "b"], vec![1, 1]);
        let (k, v) = keyed(&b);
        side.insert(&store, &b, &k, &v, Some(&[0, 4]), None)
            .unwrap();
        assert_eq!(
            matched(&side, &store, &[Some(1), Some(2)]),
            ["0:1,a,1×1/0", "1:2,b,1×1/4"]
        );
        let m = {
            let probe = batch(vec![Some(1)], vec!["x"], vec![1]);
            let (k, v) = keyed(&probe);
            side.probe(&store, &k, &v).unwrap()
        };
        side.set_matches(&store, m.entries.iter().map(|e| (e, 2)))
            .unwrap();
        // Another copy of a row keeps the matches it was given.
        let (k, v) = keyed(&b);
        side.insert(&store, &b, &k, &v, Some(&[2, 4]), None)
            .unwrap();
        assert_eq!(
            matched(&side, &store, &[Some(1), Some(2)]),
            ["0:1,a,1×2/2", "1:2,b,1×2/4"]
        );
        // Deleting every copy removes the row and its matches.
        let d = batch(vec![Some(1), Some(1)], vec!["a", "a"], vec![-1, -1]);
        let (k, v) = keyed(&d);
        side.insert(&store, &d, &k, &v, Some(&[2, 2]), None)
            .unwrap();
        assert_eq!(matched(&side, &store, &[Some(1)]), Vec::<String>::new());
    }

    #[test]
    fn inserts_only_append_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "t").unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let side = SideState::new(2, b'r', &schema, "__sign", false).unwrap();
        for _ in 0..3 {
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(vec![7, 7, 8]))],
            )
            .unwrap();
            let (k, v) = keyed(&b);
            side.insert(&store, &b, &k, &v, None, None).unwrap();
        }
        // Each row appended once: equal rows are separate entries.
        assert_eq!(matched(&side, &store, &[Some(7)]), vec!["0:7×1/0"; 6]);
        let eights = matched(&side, &store, &[Some(8), Some(8)]);
        assert_eq!(eights, [vec!["0:8×1/0"; 3], vec!["1:8×1/0"; 3]].concat());
        // The sequence goes on in another instance of the side.
        let again = SideState::new(2, b'r', &schema, "__sign", false).unwrap();
        let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![8]))])
            .unwrap();
        let (k, v) = keyed(&b);
        again.insert(&store, &b, &k, &v, None, None).unwrap();
        assert_eq!(matched(&side, &store, &[Some(8)]).len(), 4);
        // A side without signs cannot keep matches.
        assert!(SideState::new(2, b'l', &schema, "__sign", true).is_err());
    }

    #[test]
    fn rows_leave_as_the_watermark_passes_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "t").unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let side = SideState::new(4, b'l', &schema, "__sign", false).unwrap();
        let other = SideState::new(4, b'r', &schema, "__sign", false).unwrap();
        let add = |side: &SideState, keys: Vec<Option<i64>>, until: &[i64]| {
            let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(keys))])
                .unwrap();
            let (k, v) = keyed(&b);
            side.insert(&store, &b, &k, &v, None, Some(until)).unwrap();
        };
        // Key 1 at times 10 and 30, key 2 at 20; a NULL key is not stored.
        add(
            &side,
            vec![Some(1), Some(2), Some(1), None],
            &[10, 20, 30, 5],
        );
        add(&other, vec![Some(1)], &[0]);
        let all = || matched(&side, &store, &[Some(1), Some(2)]).len();
        assert_eq!(all(), 3);
        assert_eq!(side.evict(&store, 10).unwrap(), 0, "10 is not past 10");
        assert_eq!(side.evict(&store, 21).unwrap(), 2);
        assert_eq!(matched(&side, &store, &[Some(1), Some(2)]), ["0:1×1/0"]);
        // A watermark that did not move evicts nothing; the other side and
        // the sequence counter are untouched.
        assert_eq!(side.evict(&store, 21).unwrap(), 0);
        assert_eq!(matched(&other, &store, &[Some(1)]).len(), 1);
        // A row whose time is already past leaves at the next eviction.
        add(&side, vec![Some(2)], &[15]);
        assert_eq!(all(), 2);
        assert_eq!(side.evict(&store, 22).unwrap(), 1);
        assert_eq!(side.evict(&store, 31).unwrap(), 1);
        assert_eq!(all(), 0);
        // Nothing of the index is left; the counter goes on.
        let mut left = 0;
        store
            .scan_while(&[JOIN, 0, 4, b'L'], |_, _| {
                left += 1;
                Ok(true)
            })
            .unwrap();
        assert_eq!(left, 0);
        add(&side, vec![Some(3)], &[i64::MIN]);
        assert_eq!(matched(&side, &store, &[Some(3)]).len(), 1);
        // A new instance (after a restart) finds every row from the start
        // of the index.
        let again = SideState::new(4, b'l', &schema, "__sign", false).unwrap();
        assert_eq!(again.evict(&store, 31).unwrap(), 0);
        assert_eq!(again.evict(&store, 32).unwrap(), 1);
        assert!(matched(&again, &store, &[Some(3)]).is_empty());
    }
}
