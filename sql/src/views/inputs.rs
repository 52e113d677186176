//! What views read of their input streams: the schema version of each,
//! fixed when the view is made and used whenever it is planned again, and
//! the columns a view's plan reads, so that `ALTER STREAM` refuses a change
//! that would break a view (dropping or retyping a column it reads) and
//! allows the rest (adding or renaming: the view keeps reading its
//! version).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{ViewTable, source_as_provider};
use datafusion::logical_expr::LogicalPlan;
use sqlparser::ast::{Query, Statement as SqlStatement};
use streamhouse_log::evolve::field_id;
use streamhouse_log::{StreamId, StreamInfo, ViewRecord};
use streamhouse_streams::scan::stream_of;

use super::Views;
use super::definition::{parse_stored, with_output_names};
use crate::error::Result;
use crate::window::SessionTable;

/// A stream scan of a plan: the stream (at the version the plan reads) and
/// the declared columns it reads.
struct Scan {
    info: Arc<StreamInfo>,
    columns: Vec<usize>,
}

/// The schema version of each stream `plan` reads.
pub(super) fn input_versions(plan: &LogicalPlan) -> BTreeMap<StreamId, u32> {
    scans(plan)
        .into_iter()
        .map(|s| (s.info.id, s.info.schema_version))
        .collect()
}

/// Every stream scan of `plan`, including those inside views over streams
/// (the window table functions).
fn scans(plan: &LogicalPlan) -> Vec<Scan> {
    let mut out = Vec::new();
    collect(plan, &mut out);
    out
}

fn collect(plan: &LogicalPlan, out: &mut Vec<Scan>) {
    let _ = plan.apply_with_subqueries(|node| {
        let LogicalPlan::TableScan(scan) = node else {
            return Ok(TreeNodeRecursion::Continue);
        };
        if let Some(info) = stream_of(scan) {
            let declared = info.spec.schema.fields().len();
            let mut columns: Vec<usize> = match &scan.projection {
                Some(p) => p.iter().copied().filter(|&i| i < declared).collect(),
                None => (0..declared).collect(),
            };
            for f in &scan.filters {
                for c in f.column_refs() {
                    if let Ok(i) = info.spec.schema.index_of(&c.name) {
                        columns.push(i);
                    }
                }
            }
            columns.sort_unstable();
            columns.dedup();
            out.push(Scan { info, columns });
        } else if let Ok(provider) = source_as_provider(&scan.source) {
            let inner = provider
                .downcast_ref::<ViewTable>()
                .map(|v| v.logical_plan().clone())
                .or_else(|| {
                    provider
                        .downcast_ref::<SessionTable>()
                        .map(|s| s.view.logical_plan().clone())
                });
            if let Some(inner) = inner {
                collect(&inner, out);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

impl Views {
    /// Plans a stored view's query against the schema versions it was made
    /// with. A stream the record names no version for is read at version
    /// 1: views made before streams had versions could read no other.
    pub(super) async fn plan_stored(
        &self,
        record: &ViewRecord,
        query: &Query,
    ) -> Result<LogicalPlan> {
        let mut pinned = Vec::new();
        for stream in self.log.sql_streams().await? {
            let version = record.input_versions.get(&stream.id).copied().unwrap_or(1);
            if version != stream.schema_version {
                pinned.push(self.log.stream_at(stream.name(), version).await?);
            }
        }
        let plan = self
            .planner
            .plan_pinned(SqlStatement::Query(Box::new(query.clone())), pinned)
            .await?;
        with_output_names(plan, query)
    }

    /// The views (here or on any agent) whose plans read column `column`
    /// of `stream`'s current version, by name. A view whose definition no
    /// longer plans is left out: it cannot run, whatever the change.
    pub(crate) async fn readers_of_column(
        &self,
        stream: &StreamInfo,
        column: &str,
    ) -> Result<Vec<String>> {
        let schema = &stream.spec.schema;
        let Ok(i) = schema.index_of(column) else {
            return Ok(Vec::new());
        };
        let id = field_id(schema, i);
        let mut names = Vec::new();
        for record in self.log.metadata().views().await? {
            let Ok((_, query)) = parse_stored(&record.definition) else {
                continue;
            };
            let Ok(plan) = self.plan_stored(&record, &query).await else {
                continue;
            };
            // Optimized, so that each scan lists only the columns it reads.
            let plan = self.planner.ctx.state().optimize(&plan).unwrap_or(plan);
            let reads = scans(&plan).iter().any(|s| {
                s.info.id == stream.id
                    && s.columns
                        .iter()
                        .any(|&c| field_id(&s.info.spec.schema, c) == id)
            });
            if reads {
                // A stage reads for its view.
                names.push(match super::stages::stage_of(&record.name) {
                    Some((view, _)) => view.to_string(),
                    None => record.name,
                });
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}
