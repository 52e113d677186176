//! `repeat`, `lpad` and `rpad` with their output bounded: each is
//! DataFusion's own function, called only after checking that a batch's
//! results would fit in [`MAX_RESULT_BYTES`] (PostgreSQL's limit for one
//! value, 1 GB). Past it the statement fails with 54000 instead of the
//! server trying to allocate what a client's number asks for
//! (`repeat('x', 2000000000)`).

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

use crate::error::SqlError;

/// The most bytes the results of one call may take, over a whole batch.
pub const MAX_RESULT_BYTES: u64 = 1 << 30;

/// How a function's result size follows from its arguments.
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Growth {
    /// `repeat(s, n)`: `len(s) × n` bytes.
    Repeat,
    /// `lpad(s, n [, fill])`: `n` characters, up to 4 bytes each.
    Pad,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
}

/// The value of an integer argument in each row (one for a scalar); nulls
/// count as 0.
fn counts(arg: &ColumnarValue, rows: usize) -> Result<Vec<i64>> {
    let arg = arg.cast_to(&DataType::Int64, None)?;
    Ok(match arg {
        ColumnarValue::Scalar(ScalarValue::Int64(v)) => vec![v.unwrap_or(0); rows.max(1)],
        ColumnarValue::Scalar(_) => vec![0; rows.max(1)],
        ColumnarValue::Array(a) => {
            let a = a.as_primitive::<Int64Type>();
            (0..a.len())
                .map(|i| if a.is_null(i) { 0 } else { a.value(i) })
                .collect()
        }
    })
}

/// The byte length of a string argument in each row (one for a scalar).
fn lengths(arg: &ColumnarValue, rows: usize) -> Result<Vec<u64>> {
    let arg = arg.cast_to(&DataType::Utf8, None)?;
    Ok(match arg {
        ColumnarValue::Scalar(ScalarValue::Utf8(v)) => {
            vec![v.map_or(0, |s| s.len() as u64); rows.max(1)]
        }
        ColumnarValue::Scalar(_) => vec![0; rows.max(1)],
        ColumnarValue::Array(a) => {
            let a = a.as_string::<i32>();
            (0..a.len()).map(|i| a.value(i).len() as u64).collect()
        }
    })
}

impl Bounded {
    /// Fails when the batch's results would exceed [`MAX_RESULT_BYTES`].
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let rows = args.number_rows;
        let [first, n, ..] = args.args.as_slice() else {
            return Ok(());
        };
        let n = counts(n, rows)?;
        let total = match self.growth {
            Growth::Repeat => {
                let lens = lengths(first, rows)?;
                lens.iter().zip(&n).try_fold(0u64, |acc, (len, n)| {
                    len.checked_mul((*n).max(0) as u64)
                        .and_then(|b| acc.checked_add(b))
                })
            }
            Growth::Pad => n.iter().try_fold(0u64, |acc, n| {
                ((*n).max(0) as u64)
                    .checked_mul(4)
                    .and_then(|b| acc.checked_add(b))
            }),
        };
        match total {
            Some(t) if t <= MAX_RESULT_BYTES => Ok(()),
            _ => Err(DataFusionError::External(Box::new(
                SqlError::ProgramLimitExceeded(format!(
                    "{}: requested length too large (results are limited to {} bytes)",
                    self.inner.name(),
                    MAX_RESULT_BYTES
                )),
            ))),
        }
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(args)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }
}

/// Replaces `repeat`, `lpad` and `rpad` on `ctx` with their bounded forms.
pub fn register(ctx: &SessionContext) -> Result<()> {
    for (name, growth) in [
        ("repeat", Growth::Repeat),
        ("lpad", Growth::Pad),
        ("rpad", Growth::Pad),
    ] {
        let inner = ctx.udf(name)?;
        ctx.register_udf(ScalarUDF::new_from_impl(Bounded { inner, growth }));
    }
    Ok(())
}
