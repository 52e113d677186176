//! `TUMBLE(stream, time_col, size)` and `HOP(stream, time_col, slide, size)`:
//! table functions that add `window_start` and `window_end` to a stream's
//! rows, for bounded queries now and as the window vocabulary continuous
//! queries reuse.
//!
//! Each call returns a view over the stream (a DataFusion `ViewTable`), so
//! filters and projections still reach the stream's scan and prune chunks.
//! Windows are aligned to the Unix epoch: `window_start = date_bin(slide,
//! time_col)`. A HOP row belongs to `size / slide` windows, produced as that
//! many shifted copies under a UNION ALL; `size` must be a multiple of
//! `slide`. The view shows the declared columns (not the system columns)
//! followed by `window_start` and `window_end`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::datatypes::{DataType, IntervalMonthDayNano};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::Result;
use datafusion::functions::expr_fn::date_bin;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, lit};
use datafusion::prelude::col;

use crate::table::StreamTable;

/// Tables the functions can window, by stream name.
pub type Tables = Arc<RwLock<HashMap<String, Arc<StreamTable>>>>;

/// Which window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tumble,
    Hop,
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
        }
    }
}

/// Most windows one HOP row may belong to.
const MAX_HOPS: i64 = 1000;

fn ident(e: &Expr, what: &str, f: &str) -> Result<String> {
    match e {
        Expr::Column(c) => Ok(c.name.clone()),
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
    let n = v.days as i64 * 86_400_000_000_000 + v.nanoseconds;
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

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = self.name();
        let exprs = args.exprs();
        let want = match self.kind {
            Kind::Tumble => 3,
            Kind::Hop => 4,
        };
        if exprs.len() != want {
            return match self.kind {
                Kind::Tumble => plan_err!("TUMBLE(stream, time_column, size) takes 3 arguments"),
                Kind::Hop => plan_err!("HOP(stream, time_column, slide, size) takes 4 arguments"),
            };
        }
        let stream = ident(&exprs[0], "a stream", f)?;
        let time = ident(&exprs[1], "a time column", f)?;
        let (slide, size) = match self.kind {
            Kind::Tumble => {
                let s = nanos(&exprs[2], f)?;
                (s, s)
            }
            Kind::Hop => (nanos(&exprs[2], f)?, nanos(&exprs[3], f)?),
        };
        if size % slide != 0 {
            return plan_err!("{f}: the size must be a multiple of the slide");
        }
        let hops = size / slide;
        if hops > MAX_HOPS {
            return plan_err!("{f}: a row would belong to {hops} windows (at most {MAX_HOPS})");
        }
        let table = self
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&stream)
            .cloned();
        let Some(table) = table else {
            return plan_err!("table '{stream}' not found");
        };
        let info = table.info().clone();
        let read = info.read_schema();
        let time_field = match read.field_with_name(&time) {
            Ok(f) => f.clone(),
            Err(_) => return plan_err!("{f}: No field named {time} in stream {stream}"),
        };
        let DataType::Timestamp(unit, tz) = time_field.data_type() else {
            return plan_err!(
                "{f}: the time column {time} must be a TIMESTAMP, not {}",
                time_field.data_type()
            );
        };
        let origin = epoch(unit, tz.clone());
        let declared: Vec<Expr> = info
            .spec
            .schema
            .fields()
            .iter()
            .map(|f| col(datafusion::common::Column::from_name(f.name())))
            .collect();
        let mut plan: Option<LogicalPlanBuilder> = None;
        for i in 0..hops {
            let start = date_bin(
                interval(slide),
                col(datafusion::common::Column::from_name(&time)),
                lit(origin.clone()),
            ) - interval(i * slide);
            let mut exprs = declared.clone();
            exprs.push(start.clone().alias("window_start"));
            exprs.push((start + interval(size)).alias("window_end"));
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
