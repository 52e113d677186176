//! `TUMBLE(stream, time_col, size)`, `HOP(stream, time_col, slide, size)`
//! and `SESSION(stream, time_col, gap [, key_col …])`: table functions that
//! add `window_start` and `window_end` to a stream's rows, for bounded
//! queries now and as the window vocabulary continuous queries reuse.
//!
//! Each call returns a view over the stream (a DataFusion `ViewTable`), so
//! filters and projections still reach the stream's scan and prune chunks.
//! Windows are aligned to the Unix epoch: `window_start = date_bin(slide,
//! time_col)`. A HOP row belongs to `size / slide` windows, produced as that
//! many shifted copies under a UNION ALL; `size` must be a multiple of
//! `slide`. SESSION windows come from window functions over the rows in
//! time order (per key): a gap longer than `gap` starts a new session. The
//! view shows the declared columns (not the system columns) followed by
//! `window_start` and `window_end`.
//!
//! `PROCTIME()` as the time column windows by processing time, which here
//! is the time each row was appended to the log: its `_timestamp`. It is
//! fixed once the row is written, so a view over it equals the same query
//! run later, and a replay after a restart puts every row in the window it
//! was in before (a wall-clock reading as each operator sees the row, as
//! some engines define it, would not). Anywhere else `PROCTIME()` is an
//! error.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::datatypes::{DataType, IntervalMonthDayNano};
use datafusion::catalog::Session;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::Result;
use datafusion::functions::expr_fn::date_bin;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TableProviderFilterPushDown, Volatility, lit,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::col;

use streamhouse_streams::scan::StreamTable;

/// Tables the functions can window, by stream name.
pub type Tables = Arc<RwLock<HashMap<String, Arc<StreamTable>>>>;

/// Which window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tumble,
    Hop,
    Session,
}

/// The table function of one window kind.
#[derive(Debug)]
pub struct WindowFunction {
    kind: Kind,
    tables: Tables,
}

impl WindowFunction {
    pub fn new(kind: Kind, tables: Tables) -> Self {
        Self { kind, tables }
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Tumble => "TUMBLE",
            Kind::Hop => "HOP",
            Kind::Session => "SESSION",
        }
    }
}

/// The processing-time function (see the module doc).
const PROCTIME: &str = "proctime";
/// The system column holding a row's append time.
const APPEND_TIME: &str = "_timestamp";

/// `PROCTIME()`: names the append time as a window's time column; an
/// error if ever evaluated.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ProcTime {
    signature: Signature,
}

impl ProcTime {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(ProcTime {
            signature: Signature::exact(vec![], Volatility::Stable),
        })
    }
}

impl ScalarUDFImpl for ProcTime {
    fn name(&self) -> &str {
        PROCTIME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        ))
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        plan_err!(
            "PROCTIME() is a window's time column only, e.g. TUMBLE(stream, PROCTIME(), \
             INTERVAL '10 seconds'); a row's append time is its _timestamp column"
        )
    }
}

/// Most windows one HOP row may belong to.
const MAX_HOPS: i64 = 1000;

fn ident(e: &Expr, what: &str, f: &str) -> Result<String> {
    match e {
        Expr::Column(c) => Ok(c.name.clone()),
        Expr::ScalarFunction(call) if call.name() == PROCTIME && call.args.is_empty() => {
            Ok(APPEND_TIME.to_string())
        }
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => Ok(s.clone()),
        other => plan_err!("{f}: expected {what} name, got {other}"),
    }
}

/// An interval literal, in nanoseconds (months cannot be binned).
fn nanos(e: &Expr, f: &str) -> Result<i64> {
    let v = match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) => *v,
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            IntervalMonthDayNano::new(0, v.days, v.milliseconds as i64 * 1_000_000)
        }
        other => {
            return plan_err!("{f}: expected an INTERVAL such as INTERVAL '1 minute', got {other}");
        }
    };
    if v.months != 0 {
        return plan_err!("{f}: window sizes in months or years are not supported; use days");
    }
    // A client's number: checked, not wrapped (213,504 days wrapped to a
    // few nanoseconds).
    let Some(n) = (v.days as i64)
        .checked_mul(86_400_000_000_000)
        .and_then(|d| d.checked_add(v.nanoseconds))
    else {
        return plan_err!("{f}: the window size is out of range (at most about 106,000 days)");
    };
    if n <= 0 {
        return plan_err!("{f}: the window size must be positive");
    }
    Ok(n)
}

/// The Unix epoch in a timestamp column's own type.
fn epoch(unit: &arrow::datatypes::TimeUnit, tz: Option<Arc<str>>) -> ScalarValue {
    use arrow::datatypes::TimeUnit as U;
    match unit {
        U::Second => ScalarValue::TimestampSecond(Some(0), tz),
        U::Millisecond => ScalarValue::TimestampMillisecond(Some(0), tz),
        U::Microsecond => ScalarValue::TimestampMicrosecond(Some(0), tz),
        U::Nanosecond => ScalarValue::TimestampNanosecond(Some(0), tz),
    }
}

fn interval(n: i64) -> Expr {
    lit(ScalarValue::IntervalMonthDayNano(Some(
        IntervalMonthDayNano::new(0, 0, n),
    )))
}

/// `n` nanoseconds as a duration in the time column's unit, which a
/// timestamp adds as one integer (an interval goes through calendar
/// arithmetic per row); an interval when the unit cannot hold it exactly.
fn span(n: i64, time_type: &DataType) -> Expr {
    use arrow::datatypes::TimeUnit as U;
    let DataType::Timestamp(unit, _) = time_type else {
        return interval(n);
    };
    let per = match unit {
        U::Second => 1_000_000_000,
        U::Millisecond => 1_000_000,
        U::Microsecond => 1_000,
        U::Nanosecond => 1,
    };
    if n % per != 0 {
        return interval(n);
    }
    let v = Some(n / per);
    lit(match unit {
        U::Second => ScalarValue::DurationSecond(v),
        U::Millisecond => ScalarValue::DurationMillisecond(v),
        U::Microsecond => ScalarValue::DurationMicrosecond(v),
        U::Nanosecond => ScalarValue::DurationNanosecond(v),
    })
}

/// The stream behind a window function's first argument, and its time
/// column (which must be a timestamp).
fn stream_and_time(
    tables: &Tables,
    f: &str,
    exprs: &[Expr],
) -> Result<(Arc<StreamTable>, String, String, DataType)> {
    let stream = ident(&exprs[0], "a stream", f)?;
    let time = ident(&exprs[1], "a time column", f)?;
    let table = tables
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&stream)
        .cloned();
    let Some(table) = table else {
        return plan_err!("table '{stream}' not found");
    };
    let read = table.info().read_schema();
    let t = match read.field_with_name(&time) {
        Ok(field) => field.data_type().clone(),
        Err(_) => return plan_err!("{f}: No field named {time} in stream {stream}"),
    };
    if !matches!(t, DataType::Timestamp(_, _)) {
        return plan_err!("{f}: the time column {time} must be a TIMESTAMP, not {t}");
    }
    Ok((table, stream, time, t))
}

/// The stream's declared columns (the view shows no system columns).
fn declared_columns(table: &StreamTable) -> Vec<Expr> {
    table
        .info()
        .spec
        .schema
        .fields()
        .iter()
        .map(|f| col(datafusion::common::Column::from_name(f.name())))
        .collect()
}

/// An aggregate function used as a window function.
fn over(f: Arc<datafusion::logical_expr::AggregateUDF>, arg: Expr) -> Expr {
    Expr::from(datafusion::logical_expr::expr::WindowFunction::new(
        datafusion::logical_expr::WindowFunctionDefinition::AggregateUDF(f),
        vec![arg],
    ))
}

/// `SESSION(stream, time_col, gap [, key_col …])`: rows (per key) whose
/// times are at most `gap` apart form one session; `window_start` is its
/// first time and `window_end` its last time plus `gap`. Rows with no time
/// belong to no session and are left out.
fn session(tables: &Tables, exprs: &[Expr]) -> Result<Arc<dyn TableProvider>> {
    use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::functions_window::expr_fn::lag;
    use datafusion::logical_expr::{ExprFunctionExt, WindowFrame, WindowFrameBound, when};
    const F: &str = "SESSION";
    if exprs.len() < 3 {
        return plan_err!(
            "SESSION(stream, time_column, gap [, key_column …]) takes at least 3 arguments"
        );
    }
    let (table, stream, time, time_type) = stream_and_time(tables, F, exprs)?;
    let gap = span(nanos(&exprs[2], F)?, &time_type);
    let keys = exprs[3..]
        .iter()
        .map(|e| ident(e, "a key column", F).map(|k| col(datafusion::common::Column::from_name(k))))
        .collect::<Result<Vec<_>>>()?;
    let t = || col(datafusion::common::Column::from_name(&time));
    let declared = declared_columns(&table);
    let by_time = vec![t().sort(true, true)];
    // 1. Each row's previous time (per key).
    let prev = lag(t(), Some(1), None)
        .partition_by(keys.clone())
        .order_by(by_time.clone())
        .build()?
        .alias("_session_prev");
    // 2. A row starts a session when it is the first or the gap has passed.
    let starts = when(
        col("_session_prev")
            .is_null()
            .or((col("_session_prev") + gap.clone()).lt(t())),
        lit(1i64),
    )
    .otherwise(lit(0i64))?;
    // 3. Running count of starts = the session's number.
    let running = WindowFrame::new_bounds(
        datafusion::logical_expr::WindowFrameUnits::Rows,
        WindowFrameBound::Preceding(ScalarValue::UInt64(None)),
        WindowFrameBound::CurrentRow,
    );
    let number = over(sum_udaf(), col("_session_start"))
        .partition_by(keys.clone())
        .order_by(by_time)
        .window_frame(running)
        .build()?
        .alias("_session");
    let mut per_session = keys.clone();
    per_session.push(col("_session"));
    let first = over(min_udaf(), t())
        .partition_by(per_session.clone())
        .build()?
        .alias("window_start");
    let last = over(max_udaf(), t())
        .partition_by(per_session)
        .build()?
        .alias("_session_last");
    let mut with_start = declared.clone();
    with_start.push(col("_session_prev"));
    with_start.push(starts.alias("_session_start"));
    let mut out = declared;
    out.push(col("window_start"));
    out.push((col("_session_last") + gap).alias("window_end"));
    let plan = LogicalPlanBuilder::scan(stream.as_str(), provider_as_source(table), None)?
        .filter(t().is_not_null())?
        .window(vec![prev])?
        .project(with_start)?
        .window(vec![number])?
        .window(vec![first, last])?
        .project(out)?
        .build()?;
    Ok(Arc::new(SessionTable {
        view: ViewTable::new(plan, None),
        keys: exprs[3..]
            .iter()
            .map(|e| ident(e, "a key column", F))
            .collect::<Result<_>>()?,
    }))
}

/// What `SESSION(…)` returns: the windowed rows as a view, and the key
/// columns sessions are formed per (a materialized view needs them). Not
/// inlined into the query's plan when planned (it offers no logical
/// plan), so that a materialized view sees the window as such.
#[derive(Debug)]
pub struct SessionTable {
    pub view: ViewTable,
    pub keys: Vec<String>,
}

#[async_trait::async_trait]
impl TableProvider for SessionTable {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.view.schema()
    }

    fn table_type(&self) -> TableType {
        self.view.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.view.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.view.scan(state, projection, filters, limit).await
    }
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = self.name();
        let exprs = args.exprs();
        if self.kind == Kind::Session {
            return session(&self.tables, exprs);
        }
        let want = if self.kind == Kind::Hop { 4 } else { 3 };
        if exprs.len() != want {
            return match self.kind {
                Kind::Hop => plan_err!("HOP(stream, time_column, slide, size) takes 4 arguments"),
                _ => plan_err!("TUMBLE(stream, time_column, size) takes 3 arguments"),
            };
        }
        let (slide, size) = match self.kind {
            Kind::Hop => (nanos(&exprs[2], f)?, nanos(&exprs[3], f)?),
            _ => {
                let s = nanos(&exprs[2], f)?;
                (s, s)
            }
        };
        if size % slide != 0 {
            return plan_err!("{f}: the size must be a multiple of the slide");
        }
        let hops = size / slide;
        if hops > MAX_HOPS {
            return plan_err!("{f}: a row would belong to {hops} windows (at most {MAX_HOPS})");
        }
        let (table, stream, time, time_type) = stream_and_time(&self.tables, f, exprs)?;
        let DataType::Timestamp(unit, tz) = &time_type else {
            return plan_err!("{f}: the time column {time} must be a TIMESTAMP");
        };
        let origin = epoch(unit, tz.clone());
        let declared = declared_columns(&table);
        let mut plan: Option<LogicalPlanBuilder> = None;
        for i in 0..hops {
            let binned = date_bin(
                interval(slide),
                col(datafusion::common::Column::from_name(&time)),
                lit(origin.clone()),
            );
            let start = match i {
                0 => binned,
                _ => binned - span(i * slide, &time_type),
            };
            let mut exprs = declared.clone();
            exprs.push(start.clone().alias("window_start"));
            exprs.push((start + span(size, &time_type)).alias("window_end"));
            let branch =
                LogicalPlanBuilder::scan(stream.as_str(), provider_as_source(table.clone()), None)?
                    .project(exprs)?;
            plan = Some(match plan {
                None => branch,
                Some(p) => p.union(branch.build()?)?,
            });
        }
        let plan = match plan {
            Some(p) => p.build()?,
            None => return plan_err!("{f}: no windows"),
        };
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}
