//! Push queries: `SUBSCRIBE TO view` follows a view's changelog; `SELECT …
//! EMIT CHANGES` runs the query as a view of its own while the client
//! reads.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use streamhouse_log::StreamInfo;
use streamhouse_streams::Output;
use streamhouse_streams::dataflow::changes;

use super::Views;
use crate::dialect::{Subscribe, ViewOptions};
use crate::error::{Result, SqlError};
use crate::matview::MatView;
use crate::result::QueryResult;

impl Views {
    /// The columns a push query returns.
    pub(crate) async fn subscription_schema(&self, s: &Subscribe) -> Result<SchemaRef> {
        match s {
            // The changelog's declared columns: `op`, then the view's.
            Subscribe::View { name, .. } => {
                Ok(self.view_changelog(name).await?.spec.schema.clone())
            }
            Subscribe::Query(q) => {
                let plan = self.plan_view(q).await?;
                Ok(changes::changes_schema(plan.schema().as_arrow())?)
            }
        }
    }

    /// The changelog stream of view `name`, wherever it runs.
    async fn view_changelog(&self, name: &str) -> Result<Arc<StreamInfo>> {
        if let Some(view) = self.running(name) {
            return view
                .changelog()
                .cloned()
                .ok_or_else(|| SqlError::Internal(format!("view \"{name}\" has no changelog")));
        }
        match self.changelog_of(name) {
            Some(changelog) => Ok(self.log.stream(&changelog).await?),
            None => Err(SqlError::UndefinedTable(name.to_string())),
        }
    }

    /// `SUBSCRIBE TO view` follows its changelog; `SELECT … EMIT CHANGES`
    /// maintains the query as a view of its own for as long as the client
    /// reads.
    pub(crate) async fn subscribe(&self, s: Subscribe) -> Result<QueryResult> {
        match s {
            Subscribe::View { name, snapshot } => {
                let info = self.view_changelog(&name).await?;
                let from = if snapshot {
                    0
                } else {
                    self.log.partition_ends(info.name()).await?[0]
                };
                Ok(QueryResult::Subscription(changes::follow(
                    self.log.clone(),
                    info,
                    from,
                )))
            }
            Subscribe::Query(q) => {
                let plan = self.plan_view(&q).await?;
                let schema = changes::changes_schema(plan.schema().as_arrow())?;
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                let dataflow = format!("push-{:x}", self.log.now_micros());
                let view = MatView::compile(
                    &self.log,
                    &dataflow,
                    q.to_string(),
                    ViewOptions::default(),
                    plan,
                    self.placement(&dataflow, None, Some(Output::Channel(tx))),
                    self.timings.idle_timeout,
                )
                .await?;
                view.flow.start(self.log.clone(), self.planner.ctx.clone());
                // The stream owns the query: when the client goes away it is
                // dropped, and with it the query and its local state.
                let guard = PushQuery(view);
                let first = futures::stream::iter([Ok(RecordBatch::new_empty(schema.clone()))]);
                let rest = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
                    rx.recv().await.map(|b| (Ok(b), (rx, guard)))
                });
                Ok(QueryResult::Subscription(Box::pin(
                    RecordBatchStreamAdapter::new(schema, first.chain(rest)),
                )))
            }
        }
    }
}

/// A push query's view, removed when its stream is dropped.
struct PushQuery(Arc<MatView>);

impl Drop for PushQuery {
    fn drop(&mut self) {
        self.0.stop();
        self.0.remove_local_state();
    }
}
