//! `CREATE MATERIALIZED VIEW`, `DROP MATERIALIZED VIEW`, `SHOW MATERIALIZED
//! VIEWS`, and bringing views back at start-up (see [`crate::matview`]).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use sqlparser::ast::{Query, Statement as SqlStatement};

use crate::database::{Database, QueryResult};
use crate::dialect::{self, Statement};
use crate::error::{Result, SqlError};
use crate::matview::{MatView, Placement, now_micros};
use crate::names::output_names;
use streamhouse_log::{ViewCheckpoint, ViewRecord};

/// Columns of `SHOW MATERIALIZED VIEWS`.
pub fn show_views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("lag_rows", DataType::Int64, false),
        Field::new("checkpoint", DataType::Int64, false),
        Field::new("restored_from", DataType::Utf8, false),
        Field::new("inputs", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
    ]))
}

/// The plan with its output columns named as PostgreSQL names them
/// (`count`, `sum`, …), so the view's columns have those names.
fn with_output_names(plan: LogicalPlan, query: &Query) -> Result<LogicalPlan> {
    let Some(names) = output_names(query) else {
        return Ok(plan);
    };
    if names.len() != plan.schema().fields().len() {
        return Ok(plan);
    }
    let exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .zip(&names)
        .map(|((q, f), n)| {
            let col = Expr::Column(datafusion::common::Column::new(q.cloned(), f.name()));
            match n {
                Some(n) if n != f.name() => col.alias(n),
                _ => col,
            }
        })
        .collect();
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

impl Database {
    fn placement(&self, dataflow: &str, restore: Option<ViewCheckpoint>) -> Placement {
        Placement {
            dir: self.options.state_dir.join(dataflow),
            dataflow: dataflow.to_string(),
            restore,
            checkpoint_interval: self.options.checkpoint_interval,
        }
    }

    /// Plans and compiles a view definition.
    async fn compile_view(
        &self,
        name: &str,
        query: Query,
        placement: Placement,
    ) -> Result<Arc<MatView>> {
        let definition = query.to_string();
        let plan = self
            .plan(SqlStatement::Query(Box::new(query.clone())))
            .await?;
        let plan = with_output_names(plan, &query)?;
        MatView::compile(self.log(), name, definition, plan, placement).await
    }

    fn install_view(&self, view: Arc<MatView>) -> Result<()> {
        self.ctx
            .register_table(TableReference::bare(view.name.clone()), view.table())?;
        view.start(self.log().clone(), self.ctx.clone());
        self.views
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(view.name.clone(), view);
        Ok(())
    }

    pub(crate) async fn create_materialized_view(
        &self,
        name: String,
        if_not_exists: bool,
        query: Query,
    ) -> Result<QueryResult> {
        let exists = self
            .views
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&name);
        if exists {
            if if_not_exists {
                return Ok(QueryResult::command("CREATE MATERIALIZED VIEW"));
            }
            return Err(SqlError::DuplicateTable(format!(
                "materialized view \"{name}\" already exists"
            )));
        }
        if self.log().stream(&name).await.is_ok() {
            return Err(SqlError::DuplicateTable(format!(
                "a stream named \"{name}\" already exists"
            )));
        }
        let dataflow = format!("{name}-{:x}", now_micros());
        let view = self
            .compile_view(&name, query, self.placement(&dataflow, None))
            .await?;
        // Like a CREATE INDEX, the statement returns once the view holds
        // everything its inputs held when it started, checkpointed.
        view.backfill(self.log(), &self.ctx).await?;
        let record = ViewRecord {
            name: name.clone(),
            dataflow,
            definition: view.definition.clone(),
            checkpoint: None,
        };
        if let Err(e) = self
            .log()
            .metadata()
            .create_view(&record, now_micros())
            .await
        {
            view.remove_local_state();
            return Err(e.into());
        }
        view.checkpoint(self.log()).await?;
        self.install_view(view)?;
        Ok(QueryResult::command("CREATE MATERIALIZED VIEW"))
    }

    pub(crate) async fn drop_materialized_views(
        &self,
        names: Vec<String>,
        if_exists: bool,
    ) -> Result<QueryResult> {
        for name in names {
            let view = self
                .views
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            match view {
                Some(v) => {
                    v.stop();
                    self.ctx
                        .deregister_table(TableReference::bare(name.clone()))?;
                    self.log().metadata().drop_view(&name).await?;
                }
                None if if_exists => {}
                None => {
                    return Err(SqlError::UndefinedTable(format!(
                        "materialized view \"{name}\" does not exist"
                    )));
                }
            }
        }
        Ok(QueryResult::command("DROP MATERIALIZED VIEW"))
    }

    pub(crate) async fn show_materialized_views(&self) -> Result<QueryResult> {
        let mut views: Vec<Arc<MatView>> = self
            .views
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        let (mut status, mut lag) = (Vec::new(), Vec::new());
        for v in &views {
            let (s, l) = v.progress(self.log()).await;
            status.push(s.to_string());
            lag.push(l);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                views.iter().map(|v| v.name.as_str()),
            )),
            Arc::new(StringArray::from(status)),
            Arc::new(Int64Array::from(lag)),
            Arc::new(Int64Array::from_iter_values(
                views.iter().map(|v| v.checkpoints() as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                views.iter().map(|v| v.origin()),
            )),
            Arc::new(StringArray::from_iter_values(
                views.iter().map(|v| v.input_names().join(", ")),
            )),
            Arc::new(StringArray::from_iter_values(
                views.iter().map(|v| v.definition.as_str()),
            )),
        ];
        QueryResult::rows(RecordBatch::try_new(show_views_schema(), cols)?)
    }

    /// Brings back every stored view: from its last checkpoint, or — when
    /// it has none, or it cannot be restored — from the beginning of its
    /// inputs (the result is the same; only the time differs).
    pub(crate) async fn load_views(&self) -> Result<()> {
        for record in self.log().metadata().views().await? {
            let name = record.name.clone();
            let query = match dialect::parse(&record.definition)?.pop() {
                Some(Statement::Sql(s)) => match *s {
                    SqlStatement::Query(q) => *q,
                    other => {
                        tracing::warn!(view = %name, statement = %other, "stored view is not a query");
                        continue;
                    }
                },
                _ => continue,
            };
            let restored = self
                .compile_view(
                    &name,
                    query.clone(),
                    self.placement(&record.dataflow, record.checkpoint.clone()),
                )
                .await;
            let view = match (restored, &record.checkpoint) {
                (Ok(v), _) => Ok(v),
                (Err(e), Some(cp)) => {
                    tracing::warn!(view = %name, error = %e, "checkpoint not restored; rebuilding from the log");
                    let v = self
                        .compile_view(&name, query, self.placement(&record.dataflow, None))
                        .await;
                    if let Ok(v) = &v {
                        v.rebuilt_after(cp.number, &e.to_string());
                    }
                    v
                }
                (Err(e), None) => Err(e),
            };
            match view {
                Ok(view) => self.install_view(view)?,
                Err(e) => {
                    tracing::warn!(view = %name, error = %e, "materialized view not restored")
                }
            }
        }
        Ok(())
    }
}
