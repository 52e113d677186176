//! Top-N: the first N rows of each partition in an order — `ROW_NUMBER()`,
//! `RANK()` or `DENSE_RANK()` over `PARTITION BY … ORDER BY …` filtered to
//! a bound, or `ORDER BY … LIMIT N` over the whole view.
//!
//! The state holds every row of the input (a multiset over signed rows)
//! in the dataflow's state store, ordered within its partition: key `t`,
//! the partition key's length (u32, big-endian) and bytes, the order key
//! (Arrow's row format with the ORDER BY's directions, so byte order is
//! the ORDER BY), the row, and the order key's length (u32) last; value,
//! the row's count. A step applies its rows, and for each partition it
//! touched reads the ranked rows before and after (a scan from the
//! partition's start that stops past the bound): what left is deleted,
//! what came is inserted. A deleted member of the top N is replaced by the
//! next row from the state, without reading the input again. Over inputs
//! that only insert, rows ranked past the bound can never come back and
//! are dropped, so the state holds N rows (and ties) per partition; a
//! step then reads every touched partition once, with one iterator, and
//! merges its new rows in memory.
//!
//! Ties under `ROW_NUMBER()` are ordered by the rows' bytes (the batch
//! query orders them arbitrarily).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, UInt64Array};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::Session as CatalogSession;
use datafusion::common::DFSchemaRef;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, LogicalPlan, SortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use rocksdb::WriteBatch;

mod current;

pub(crate) use current::read_plan;

use super::changes::SIGN;
use crate::error::{Result, StreamsError};
use crate::state::{StateStore, count_of};

/// First byte of every top-N entry.
const TOP: u8 = b't';

/// Which rank bounds the rows, and is output as a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    RowNumber,
    Rank,
    DenseRank,
    /// `ORDER BY … LIMIT N`: positions bound the rows, no column.
    Limit,
}

/// A top-N as compiled: over the input's rows (which end with a sign),
/// the partition and order, the rank and its bound, and the plan above it
/// (run over each step's ranked changes, read from `rows`).
pub struct TopNDescription {
    pub partition: Vec<Expr>,
    pub order: Vec<SortExpr>,
    pub rank: Rank,
    pub limit: u64,
    pub above: LogicalPlan,
    pub rows: Arc<StepRows>,
    /// The input only inserts (its sign is always 1): rows ranked past the
    /// bound can be dropped.
    pub inserts_only: bool,
}

/// The rows a step hands to the plan above a top-N: a table whose
/// contents are set before each run.
pub struct StepRows {
    schema: SchemaRef,
    batches: Mutex<Vec<RecordBatch>>,
}

impl StepRows {
    /// A table of `schema` (the input's columns, the sign among them, then
    /// the rank unless it is a LIMIT), empty until set.
    pub fn new(schema: SchemaRef) -> Arc<StepRows> {
        Arc::new(StepRows {
            schema,
            batches: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, batches: Vec<RecordBatch>) {
        *self.batches.lock().unwrap_or_else(|p| p.into_inner()) = batches;
    }
}

impl fmt::Debug for StepRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StepRows")
    }
}

#[async_trait]
impl TableProvider for StepRows {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = self
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

fn arrow_err(e: arrow::error::ArrowError) -> StreamsError {
    StreamsError::Internal(format!("top-N state: {e}"))
}

/// A running top-N.
pub(super) struct TopN {
    description: TopNDescription,
    store: Arc<StateStore>,
    /// The input's columns but the sign.
    rows: RowConverter,
    /// Position of the sign in the input.
    sign: usize,
    /// The input's schema (for expressions).
    input: DFSchemaRef,
    /// Over inputs that only insert, rows past the bound are dropped.
    inserts_only: bool,
}

/// A ranked row: its bytes and rank.
type Ranked = (Vec<u8>, u64);

/// A row's keys: partition, order, the row itself (each in the row
/// format).
type RowKeys = (Vec<u8>, Vec<u8>, Vec<u8>);

impl TopN {
    pub fn new(
        description: TopNDescription,
        store: Arc<StateStore>,
        input: DFSchemaRef,
    ) -> Result<TopN> {
        let sign = input
            .fields()
            .iter()
            .position(|f| f.name() == SIGN)
            .ok_or_else(|| StreamsError::Internal("top-N over rows without a sign".into()))?;
        let fields = input
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != sign)
            .map(|(_, f)| SortField::new(f.data_type().clone()))
            .collect();
        Ok(TopN {
            inserts_only: description.inserts_only,
            description,
            store,
            rows: RowConverter::new(fields).map_err(arrow_err)?,
            sign,
            input,
        })
    }

    /// The schema of what [`TopN::step`] returns: the plan above's.
    pub fn output_schema(&self) -> SchemaRef {
        self.description.above.schema().inner().clone()
    }

    /// Applies a step's input rows and runs the plan above over the ranked
    /// rows that changed (deletes with sign −1, inserts with +1).
    pub async fn step(
        &self,
        ctx: &SessionContext,
        input: &[RecordBatch],
    ) -> Result<Vec<RecordBatch>> {
        let changes = self.apply(ctx, input)?;
        if changes.num_rows() == 0 {
            return Ok(Vec::new());
        }
        self.description.rows.set(vec![changes]);
        let out = ctx
            .execute_logical_plan(self.description.above.clone())
            .await?
            .collect()
            .await;
        self.description.rows.set(Vec::new());
        Ok(out?)
    }

    /// The keys of a batch's rows: (partition key, order key, row).
    fn keys(&self, ctx: &SessionContext, batch: &RecordBatch) -> Result<Vec<RowKeys>> {
        let state = ctx.state();
        let eval = |e: &Expr| -> Result<ArrayRef> {
            let p = state.create_physical_expr(e.clone(), &self.input)?;
            Ok(p.evaluate(batch)?.into_array(batch.num_rows())?)
        };
        let partition: Vec<ArrayRef> = self
            .description
            .partition
            .iter()
            .map(eval)
            .collect::<Result<_>>()?;
        let order: Vec<ArrayRef> = self
            .description
            .order
            .iter()
            .map(|s| eval(&s.expr))
            .collect::<Result<_>>()?;
        let pconv = RowConverter::new(
            partition
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect(),
        )
        .map_err(arrow_err)?;
        let oconv = RowConverter::new(
            order
                .iter()
                .zip(&self.description.order)
                .map(|(a, s)| {
                    SortField::new_with_options(
                        a.data_type().clone(),
                        SortOptions {
                            descending: !s.asc,
                            nulls_first: s.nulls_first,
                        },
                    )
                })
                .collect(),
        )
        .map_err(arrow_err)?;
        let n = batch.num_rows();
        let pk = (!partition.is_empty())
            .then(|| pconv.convert_columns(&partition))
            .transpose()
            .map_err(arrow_err)?;
        let ok = oconv.convert_columns(&order).map_err(arrow_err)?;
        let stored: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.sign)
            .map(|(_, c)| c.clone())
            .collect();
        let rows = self.rows.convert_columns(&stored).map_err(arrow_err)?;
        Ok((0..n)
            .map(|r| {
                (
                    pk.as_ref()
                        .map_or_else(Vec::new, |p| p.row(r).data().to_vec()),
                    ok.row(r).data().to_vec(),
                    rows.row(r).data().to_vec(),
                )
            })
            .collect())
    }

    /// Applies the rows; returns the ranked rows that changed, in the
    /// step rows' schema.
    fn apply(&self, ctx: &SessionContext, input: &[RecordBatch]) -> Result<RecordBatch> {
        if self.inserts_only && only_inserts(input, self.sign)? {
            return self.apply_inserts(ctx, input);
        }
        let mut updates: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut touched: BTreeSet<Vec<u8>> = BTreeSet::new();
        for b in input {
            let signs =
                arrow::compute::cast(b.column(self.sign), &DataType::Int64).map_err(arrow_err)?;
            let signs = signs.as_primitive::<Int64Type>();
            for (r, (pk, ok, row)) in self.keys(ctx, b)?.into_iter().enumerate() {
                let prefix = partition_prefix(&pk);
                let mut key = prefix.clone();
                key.extend_from_slice(&ok);
                key.extend_from_slice(&row);
                key.extend_from_slice(&(ok.len() as u32).to_be_bytes());
                *updates.entry(key).or_default() += signs.value(r);
                touched.insert(prefix);
            }
        }
        let before: Vec<Vec<Ranked>> = touched
            .iter()
            .map(|p| self.ranked(p, None))
            .collect::<Result<_>>()?;
        let entries: Vec<(Vec<u8>, i64)> = updates.into_iter().filter(|(_, n)| *n != 0).collect();
        let old = self
            .store
            .multi_get(entries.iter().map(|(k, _)| k.as_slice()))?;
        let mut wb = WriteBatch::default();
        for ((k, n), old) in entries.iter().zip(old) {
            let total = old.as_deref().map_or(0, count_of).wrapping_add(*n);
            if total == 0 {
                wb.delete(k);
            } else {
                wb.put(k, total.to_le_bytes());
            }
        }
        self.store.write(wb)?;
        let mut rows: Vec<Vec<u8>> = Vec::new();
        let mut ranks = Vec::new();
        let mut signs = Vec::new();
        for (prefix, before) in touched.iter().zip(before) {
            let mut past = Vec::new();
            let after = self.ranked(prefix, self.inserts_only.then_some(&mut past))?;
            if !past.is_empty() {
                let mut wb = WriteBatch::default();
                for k in past {
                    wb.delete(k);
                }
                self.store.write(wb)?;
            }
            changes(&before, &after, &mut rows, &mut ranks, &mut signs);
        }
        self.batch(&rows, ranks, signs)
    }

    /// [`TopN::apply`] over an input that only inserts: the entries of
    /// every touched partition (the bound's rows, ties and one more, as
    /// nothing past the bound is kept) are read with one iterator, the new
    /// rows merged in memory, and one write batch puts the entries that
    /// rank within the bound and deletes those pushed past it — new rows
    /// past the bound are never written.
    fn apply_inserts(&self, ctx: &SessionContext, input: &[RecordBatch]) -> Result<RecordBatch> {
        // Partition prefix → entry suffix (order key, row, order key's
        // length) → rows inserted.
        let mut news: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, i64>> = BTreeMap::new();
        for b in input {
            for (pk, ok, row) in self.keys(ctx, b)? {
                let mut suffix = ok;
                let ok_len = suffix.len() as u32;
                suffix.extend_from_slice(&row);
                suffix.extend_from_slice(&ok_len.to_be_bytes());
                *news
                    .entry(partition_prefix(&pk))
                    .or_default()
                    .entry(suffix)
                    .or_default() += 1;
            }
        }
        let prefixes: Vec<Vec<u8>> = news.keys().cloned().collect();
        // Per partition: suffix → (count stored, count now).
        let mut merged: Vec<BTreeMap<Vec<u8>, (i64, i64)>> = news
            .into_values()
            .map(|m| m.into_iter().map(|(k, n)| (k, (0, n))).collect())
            .collect();
        self.store.scan_prefixes(&prefixes, |i, k, v| {
            let count = count_of(v);
            if count > 0 {
                let e = merged[i]
                    .entry(k[prefixes[i].len()..].to_vec())
                    .or_insert((0, 0));
                e.0 += count;
                e.1 += count;
            }
            Ok(())
        })?;
        let mut wb = WriteBatch::default();
        let mut rows: Vec<Vec<u8>> = Vec::new();
        let mut ranks = Vec::new();
        let mut signs = Vec::new();
        for (prefix, entries) in prefixes.iter().zip(&merged) {
            let (before, _) = self.rank_entries(
                entries
                    .iter()
                    .filter(|(_, (stored, _))| *stored > 0)
                    .map(|(k, (stored, _))| (k.as_slice(), *stored)),
            )?;
            let (after, kept) =
                self.rank_entries(entries.iter().map(|(k, (_, now))| (k.as_slice(), *now)))?;
            for (j, (suffix, (stored, now))) in entries.iter().enumerate() {
                let mut key = prefix.clone();
                key.extend_from_slice(suffix);
                if j >= kept {
                    if *stored > 0 {
                        wb.delete(key);
                    }
                } else if stored != now {
                    wb.put(key, now.to_le_bytes());
                }
            }
            changes(&before, &after, &mut rows, &mut ranks, &mut signs);
        }
        self.store.write(wb)?;
        self.batch(&rows, ranks, signs)
    }

    /// Ranks a partition's entries (suffixes after the partition prefix,
    /// in key order, with their counts): the rows within the bound, and
    /// how many entries are kept — those up to the one that reached past
    /// the bound (as [`TopN::ranked`] keeps them); the rest can be dropped.
    fn rank_entries<'a>(
        &self,
        entries: impl Iterator<Item = (&'a [u8], i64)>,
    ) -> Result<(Vec<Ranked>, usize)> {
        let mut ranker = Ranker::new(self.description.rank, self.description.limit);
        let mut out = Vec::new();
        let mut kept = 0;
        for (suffix, count) in entries {
            let (order, row) = split_entry(suffix)?;
            kept += 1;
            if !ranker.push(order, count, |value| out.push((row.to_vec(), value))) {
                break;
            }
        }
        Ok((out, kept))
    }

    /// The rows of partition `prefix` within the bound, with their ranks;
    /// with `past`, also the keys of the rows past the bound.
    fn ranked(&self, prefix: &[u8], mut past: Option<&mut Vec<Box<[u8]>>>) -> Result<Vec<Ranked>> {
        let mut ranker = Ranker::new(self.description.rank, self.description.limit);
        let mut out = Vec::new();
        let mut done = false;
        self.store.scan_while(prefix, |k, v| {
            if done && past.is_none() {
                return Ok(false);
            }
            let count = count_of(v);
            if count <= 0 {
                return Ok(true);
            }
            if done {
                if let Some(p) = past.as_mut() {
                    p.push(k.into());
                }
                return Ok(true);
            }
            let (order, row) = split_entry(&k[prefix.len()..])?;
            done = !ranker.push(order, count, |value| out.push((row.to_vec(), value)));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Changed ranked rows in the step rows' schema: the input's columns
    /// (the sign at its place), then the rank unless it is a LIMIT.
    fn batch(&self, rows: &[Vec<u8>], ranks: Vec<u64>, signs: Vec<i64>) -> Result<RecordBatch> {
        let schema = self.description.rows.schema.clone();
        let parser = self.rows.parser();
        let decoded = self
            .rows
            .convert_rows(rows.iter().map(|r| parser.parse(r)))
            .map_err(arrow_err)?;
        let mut decoded = decoded.into_iter();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for i in 0..self.input.fields().len() {
            if i == self.sign {
                columns.push(Arc::new(Int64Array::from(signs.clone())));
            } else {
                columns.push(
                    decoded
                        .next()
                        .ok_or_else(|| StreamsError::Internal("top-N: short row".into()))?,
                );
            }
        }
        if self.description.rank != Rank::Limit {
            let rank: ArrayRef = Arc::new(UInt64Array::from(ranks));
            let field = schema.field(columns.len());
            columns.push(arrow::compute::cast(&rank, field.data_type()).map_err(arrow_err)?);
        }
        // Input columns may differ in nullability from the stored schema.
        let columns = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    arrow::compute::cast(&c, f.data_type()).map_err(arrow_err)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new(schema, columns).map_err(arrow_err)
    }
}

/// Whether every row of `input` inserts (its sign, column `sign`, is 1).
fn only_inserts(input: &[RecordBatch], sign: usize) -> Result<bool> {
    for b in input {
        let signs = arrow::compute::cast(b.column(sign), &DataType::Int64).map_err(arrow_err)?;
        if signs
            .as_primitive::<Int64Type>()
            .iter()
            .any(|s| s != Some(1))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Appends the multiset difference of ranked rows `before` → `after`
/// (deletes first, in a stable order) as rows, ranks and signs.
fn changes(
    before: &[Ranked],
    after: &[Ranked],
    rows: &mut Vec<Vec<u8>>,
    ranks: &mut Vec<u64>,
    signs: &mut Vec<i64>,
) {
    let mut counts: HashMap<&Ranked, i64> = HashMap::new();
    for r in after {
        *counts.entry(r).or_default() += 1;
    }
    for r in before {
        *counts.entry(r).or_default() -= 1;
    }
    let mut changed: Vec<(&Ranked, i64)> = counts.into_iter().filter(|(_, n)| *n != 0).collect();
    changed.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    for ((row, rank), n) in changed {
        for _ in 0..n.unsigned_abs() {
            rows.push(row.clone());
            ranks.push(*rank);
            signs.push(n.signum());
        }
    }
}

/// Ranks one partition's entries, fed in key order: positions, ranks
/// (ties share the first position of their order key) and dense ranks.
/// The one ranking of every top-N path (steps, and reads of the state).
struct Ranker {
    rank: Rank,
    limit: u64,
    position: u64,
    first_of_order: u64,
    dense: u64,
    last_order: Option<Vec<u8>>,
}

impl Ranker {
    fn new(rank: Rank, limit: u64) -> Ranker {
        Ranker {
            rank,
            limit,
            position: 0,
            first_of_order: 0,
            dense: 0,
            last_order: None,
        }
    }

    /// Ranks `count` copies of an entry with order key `order`, calling
    /// `within` with the rank of each copy within the bound; false once a
    /// copy reached past it (nothing after can rank within).
    fn push(&mut self, order: &[u8], count: i64, mut within: impl FnMut(u64)) -> bool {
        if count <= 0 {
            return true;
        }
        if self.last_order.as_deref() != Some(order) {
            self.first_of_order = self.position + 1;
            self.dense += 1;
            self.last_order = Some(order.to_vec());
        }
        for _ in 0..count {
            self.position += 1;
            let value = match self.rank {
                Rank::RowNumber | Rank::Limit => self.position,
                Rank::Rank => self.first_of_order,
                Rank::DenseRank => self.dense,
            };
            if value > self.limit {
                return false;
            }
            within(value);
        }
        true
    }
}

/// An entry's key after its partition prefix, split into the order key
/// and the row (the order key's length is its last four bytes).
fn split_entry(suffix: &[u8]) -> Result<(&[u8], &[u8])> {
    let bad = || StreamsError::Internal("top-N key".into());
    let tail = suffix.len().checked_sub(4).ok_or_else(bad)?;
    let ok_len = u32::from_be_bytes(suffix[tail..].try_into().map_err(|_| bad())?) as usize;
    if ok_len > tail {
        return Err(bad());
    }
    Ok((&suffix[..ok_len], &suffix[ok_len..tail]))
}

/// The key prefix of a partition.
fn partition_prefix(pk: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + pk.len());
    k.push(TOP);
    k.extend_from_slice(&(pk.len() as u32).to_be_bytes());
    k.extend_from_slice(pk);
    k
}
