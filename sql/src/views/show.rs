//! `SHOW MATERIALIZED VIEWS` and the gauges that describe views.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::Views;
use crate::dialect::Emit;
use crate::error::Result;
use crate::matview::MatView;
use crate::result::QueryResult;
use streamhouse_streams::Status;

impl Views {
    /// Sets the gauges that describe views now (lag, freshness, state
    /// size, watermark, late rows); called when metrics are scraped.
    pub async fn refresh_metrics(&self) {
        use crate::metrics as m;
        for v in self.by_name() {
            let (status, lag) = v.progress(&self.log).await;
            let view = v.name.clone();
            metrics::gauge!(m::VIEW_LAG_ROWS, "view" => view.clone()).set(lag as f64);
            metrics::gauge!(m::VIEW_FRESHNESS_SECONDS, "view" => view.clone())
                .set(v.freshness(lag));
            metrics::gauge!(m::VIEW_STATE_BYTES, "view" => view.clone())
                .set(v.state_bytes() as f64);
            metrics::gauge!(m::VIEW_RUNNING, "view" => view.clone())
                .set(if status == Status::Running { 1.0 } else { 0.0 });
            metrics::counter!(m::VIEW_LATE_ROWS, "view" => view.clone()).absolute(v.late_rows());
            if let Some(w) = v.watermark() {
                metrics::gauge!(m::VIEW_WATERMARK_SECONDS, "view" => view).set(w as f64 / 1e6);
            }
        }
        for name in self.failed.read().unwrap_or_else(|p| p.into_inner()).keys() {
            metrics::gauge!(m::VIEW_RUNNING, "view" => name.clone()).set(0.0);
        }
    }

    /// What view `v` reads, as listings name it: a stage it reads stands
    /// for the stage's own inputs.
    pub fn inputs_of(&self, v: &MatView) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for input in v.input_names() {
            let names = match stage_read(&input).and_then(|s| self.running(s)) {
                Some(stage) => self.inputs_of(&stage),
                None => vec![input],
            };
            for n in names {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// The stages view `v` reads that run here.
    fn stages_read(&self, v: &MatView) -> Vec<Arc<MatView>> {
        v.input_names()
            .iter()
            .filter_map(|i| self.running(stage_read(i)?))
            .collect()
    }

    /// View `v`'s watermark: its own, or (a view over stages, without
    /// event time of its own) the least of its stages'.
    pub fn watermark_of(&self, v: &MatView) -> Option<i64> {
        v.watermark().or_else(|| {
            self.stages_read(v)
                .iter()
                .filter_map(|s| self.watermark_of(s))
                .min()
        })
    }

    /// View `v`'s status, lag in rows and freshness in seconds, its
    /// stages' counted in: the first stage not running gives the status,
    /// and lags and freshness add up (an event is at most that old when
    /// the view does not reflect it yet).
    pub async fn progress_of(&self, v: &MatView) -> (Status, i64, f64) {
        let (mut status, mut lag) = v.progress(&self.log).await;
        let mut fresh = v.freshness(lag);
        let mut stages = self.stages_read(v);
        while let Some(stage) = stages.pop() {
            let (s, l) = stage.progress(&self.log).await;
            if status == Status::Running && s != Status::Running {
                status = s;
            }
            lag = lag.saturating_add(l);
            fresh += stage.freshness(l);
            stages.extend(self.stages_read(&stage));
        }
        (status, lag, fresh)
    }

    /// The rows of `SHOW MATERIALIZED VIEWS`.
    pub(crate) async fn show(&self) -> Result<QueryResult> {
        let mut rows: Vec<ShowRow> = Vec::new();
        for v in &self.listed() {
            let (status, lag, _) = self.progress_of(v).await;
            rows.push(ShowRow {
                name: v.name.clone(),
                status: status.to_string(),
                lag,
                checkpoint: v.checkpoints() as i64,
                origin: v.origin(),
                inputs: self.inputs_of(v).join(", "),
                emit: match v.emit() {
                    Emit::OnClose => "on_close",
                    Emit::OnUpdate => "on_update",
                }
                .into(),
                watermark: self.watermark_of(v).map(format_micros),
                late_rows: v.late_rows() as i64,
                definition: format!("{}{}", v.options.to_sql(), v.definition),
            });
        }
        for (name, definition, error) in self.failed_rows() {
            rows.push(ShowRow {
                name,
                status: format!("failed: {error}"),
                definition,
                ..ShowRow::default()
            });
        }
        for (name, status, definition, _) in self.remote_rows() {
            rows.push(ShowRow {
                name,
                status,
                definition,
                ..ShowRow::default()
            });
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.name))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.status),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.lag))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.checkpoint),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.origin),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.inputs),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.emit))),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.watermark.clone()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.late_rows),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.definition),
            )),
        ];
        QueryResult::rows(RecordBatch::try_new(show_views_schema(), cols)?)
    }
}

/// One row of SHOW MATERIALIZED VIEWS.
#[derive(Default)]
struct ShowRow {
    name: String,
    status: String,
    lag: i64,
    checkpoint: i64,
    origin: String,
    inputs: String,
    emit: String,
    watermark: Option<String>,
    late_rows: i64,
    definition: String,
}

/// µs since the epoch as a timestamp (UTC).
fn format_micros(us: i64) -> String {
    arrow::temporal_conversions::timestamp_us_to_datetime(us)
        .map(|t| t.to_string())
        .unwrap_or_else(|| us.to_string())
}

/// The columns of SHOW MATERIALIZED VIEWS.
pub fn show_views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("lag_rows", DataType::Int64, false),
        Field::new("checkpoint", DataType::Int64, false),
        Field::new("restored_from", DataType::Utf8, false),
        Field::new("inputs", DataType::Utf8, false),
        Field::new("emit", DataType::Utf8, false),
        Field::new("watermark", DataType::Utf8, true),
        Field::new("late_rows", DataType::Int64, false),
        Field::new("definition", DataType::Utf8, false),
    ]))
}

/// The stage an input (as `input_names` lists it) reads, if it is a stage's
/// changelog.
fn stage_read(input: &str) -> Option<&str> {
    let name = input.strip_prefix("changes(")?.strip_suffix(')')?;
    super::stages::stage_of(name).map(|_| name)
}
