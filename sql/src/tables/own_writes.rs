//! A table read inside a transaction block that wrote it: the table's rows
//! with the block's writes applied — each key the block wrote shows the
//! block's latest write of it (or nothing, when that write deletes).
//!
//! The scan of the table becomes a plan: the table's rows whose key the
//! block did not write (an anti join with the block's keys), then the
//! block's latest row of each key it wrote and did not delete.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::Schema;
use arrow::row::{RowConverter, SortField};
use datafusion::common::{Column, TableReference};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, LogicalPlanBuilder, TableScan};

use super::DELETED;
use crate::error::{Result, SqlError};

/// `scan` (of a table) seeing `writes`, the block's rows for the table's
/// log in the order written; `key` is the table's primary key.
pub(crate) fn table_with_writes(
    scan: TableScan,
    writes: &[RecordBatch],
    key: &[String],
) -> Result<LogicalPlan> {
    let Some(first) = writes.first() else {
        return Ok(LogicalPlan::TableScan(scan));
    };
    let log_schema = first.schema();
    let all = concat_batches(&log_schema, writes)?;
    let key_index = key
        .iter()
        .map(|k| log_schema.index_of(k))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let converter = RowConverter::new(
        key_index
            .iter()
            .map(|&i| SortField::new(log_schema.field(i).data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(
        &key_index
            .iter()
            .map(|&i| all.column(i).clone())
            .collect::<Vec<_>>(),
    )?;
    // The last write of each key wins; keys in the order first written.
    let mut latest: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut order = Vec::new();
    for i in 0..all.num_rows() {
        let k = rows.row(i).as_ref().to_vec();
        if latest.insert(k, i as u32).is_none() {
            order.push(i);
        }
    }
    let keys_at: Vec<u32> = order.iter().map(|&i| i as u32).collect();
    let deleted = all
        .column(log_schema.index_of(DELETED)?)
        .as_boolean()
        .clone();
    let mut kept: Vec<u32> = latest.values().copied().collect();
    kept.sort_unstable();
    kept.retain(|&i| !deleted.value(i as usize));

    let table = scan.table_name.clone();
    let table_schema = scan.source.schema();
    let columns: Vec<String> = table_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();

    // The block's keys, and its latest rows (in the table's columns).
    let key_schema = Arc::new(Schema::new(
        key_index
            .iter()
            .map(|&i| log_schema.field(i).clone())
            .collect::<Vec<_>>(),
    ));
    let keys = take_record_batch(
        &RecordBatch::try_new(
            key_schema.clone(),
            key_index.iter().map(|&i| all.column(i).clone()).collect(),
        )?,
        &UInt32Array::from(keys_at),
    )?;
    let row_index = columns
        .iter()
        .map(|c| log_schema.index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let latest_rows = take_record_batch(&all.project(&row_index)?, &UInt32Array::from(kept))?;
    let staged_schema = latest_rows.schema();

    let keys_name = "__block_keys";
    let rows_name = "__block_rows";
    let keys_scan = LogicalPlanBuilder::scan(
        keys_name,
        provider_as_source(Arc::new(MemTable::try_new(key_schema, vec![vec![keys]])?)),
        None,
    )?
    .build()?;
    let rows_scan = LogicalPlanBuilder::scan(
        rows_name,
        provider_as_source(Arc::new(MemTable::try_new(
            staged_schema,
            vec![vec![latest_rows]],
        )?)),
        None,
    )?
    .project(
        columns
            .iter()
            .map(|c| Expr::Column(Column::new(Some(rows_name), c)).alias(c)),
    )?
    .build()?;

    let qualified = |t: &TableReference, c: &str| Column::new(Some(t.clone()), c);
    let keys_ref = TableReference::bare(keys_name);
    let mut plan = LogicalPlanBuilder::scan(table.clone(), scan.source.clone(), None)?
        .join(
            keys_scan,
            JoinType::LeftAnti,
            (
                key.iter().map(|k| qualified(&table, k)).collect::<Vec<_>>(),
                key.iter()
                    .map(|k| qualified(&keys_ref, k))
                    .collect::<Vec<_>>(),
            ),
            None,
        )?
        .project(
            columns
                .iter()
                .map(|c| Expr::Column(qualified(&table, c)).alias(c)),
        )?
        .union(rows_scan)?
        .alias(table.clone())?;
    if let Some(projection) = &scan.projection {
        plan = plan.project(
            projection
                .iter()
                .map(|&i| Expr::Column(qualified(&table, &columns[i]))),
        )?;
    }
    if let Some(filter) = conjunction(scan.filters.clone()) {
        plan = plan.filter(filter)?;
    }
    if let Some(fetch) = scan.fetch {
        plan = plan.limit(0, Some(fetch))?;
    }
    plan.build().map_err(SqlError::from)
}
