//! PostgreSQL's identity and settings functions, as DataFusion UDFs:
//! `version()`, `current_schema()`, `current_database()`, `current_user`,
//! `session_user`, `pg_backend_pid()`, `pg_advisory_unlock_all()` and
//! `current_setting(name)` and `pg_typeof(x)`, each also as
//! `pg_catalog.<name>`.
//!
//! `current_setting` reads the server defaults (the catalog is shared by
//! every session; per-session values are what `SHOW` reports).

use std::sync::Arc;

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;

use crate::session::{DATABASE, USER, VERSION, default_of};
use crate::types::sql_type_name;

fn constant(ctx: &SessionContext, name: &str, qualified: &'static str, value: ScalarValue) {
    let ret = value.data_type();
    ctx.register_udf(
        create_udf(
            name,
            vec![],
            ret,
            Volatility::Stable,
            Arc::new(move |_args: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()))),
        )
        .with_aliases([qualified]),
    );
}

/// `pg_typeof(x)`: the PostgreSQL name of the argument's type, spelled as
/// PostgreSQL's `format_type` spells it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof {
    signature: Signature,
    aliases: Vec<String>,
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let name = match sql_type_name(&args.arg_fields[0]).as_str() {
            "timestamptz" => "timestamp with time zone".to_string(),
            "timestamp" => "timestamp without time zone".to_string(),
            "time" => "time without time zone".to_string(),
            n if n.starts_with("numeric(") => "numeric".to_string(),
            n => n.to_string(),
        };
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))))
    }
}

/// Registers the functions on a session context.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(PgTypeof {
        signature: Signature::any(1, Volatility::Immutable),
        aliases: vec!["pg_catalog.pg_typeof".to_string()],
    }));
    let text = |s: &str| ScalarValue::Utf8(Some(s.to_string()));
    constant(ctx, "version", "pg_catalog.version", text(VERSION));
    constant(
        ctx,
        "current_schema",
        "pg_catalog.current_schema",
        text("public"),
    );
    constant(
        ctx,
        "current_database",
        "pg_catalog.current_database",
        text(DATABASE),
    );
    constant(ctx, "current_user", "pg_catalog.current_user", text(USER));
    constant(ctx, "session_user", "pg_catalog.session_user", text(USER));
    // No advisory locks are ever taken, so none are held to release.
    constant(
        ctx,
        "pg_advisory_unlock_all",
        "pg_catalog.pg_advisory_unlock_all",
        ScalarValue::Null,
    );
    let pid = ScalarValue::Int32(Some(std::process::id() as i32));
    constant(ctx, "pg_backend_pid", "pg_catalog.pg_backend_pid", pid);
    ctx.register_udf(
        create_udf(
            "current_setting",
            vec![DataType::Utf8],
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(|args: &[ColumnarValue]| {
                let lookup = |name: &str| {
                    default_of(name).map(|(_, v)| v.to_string()).ok_or_else(|| {
                        DataFusionError::Execution(format!(
                            "unrecognized configuration parameter \"{name}\""
                        ))
                    })
                };
                match &args[0] {
                    ColumnarValue::Scalar(ScalarValue::Utf8(Some(n))) => {
                        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(lookup(n)?))))
                    }
                    ColumnarValue::Scalar(_) => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
                    ColumnarValue::Array(a) => {
                        let names = a.as_string::<i32>();
                        let out = (0..names.len())
                            .map(|i| {
                                names
                                    .is_valid(i)
                                    .then(|| lookup(names.value(i)))
                                    .transpose()
                            })
                            .collect::<Result<StringArray, _>>()?;
                        Ok(ColumnarValue::Array(Arc::new(out)))
                    }
                }
            }),
        )
        .with_aliases(["pg_catalog.current_setting"]),
    );
}
