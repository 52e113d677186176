//! Catalog functions PostgreSQL clients call that DataFusion and the
//! catalog crate lack: visibility tests, descriptions, `to_regtype`,
//! `json_build_object`, `set_config`, `pg_get_userbyid`.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, Int32Array};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;

use crate::session::USER;

/// Registers the functions on `ctx`.
pub(super) fn register(ctx: &SessionContext) {
    // Visibility of functions, types, operators … : every object of the
    // catalog is on the search path (there is one user schema, `public`).
    for (name, qualified) in [
        (
            "pg_function_is_visible",
            "pg_catalog.pg_function_is_visible",
        ),
        ("pg_type_is_visible", "pg_catalog.pg_type_is_visible"),
        (
            "pg_operator_is_visible",
            "pg_catalog.pg_operator_is_visible",
        ),
        ("pg_opclass_is_visible", "pg_catalog.pg_opclass_is_visible"),
        (
            "pg_collation_is_visible",
            "pg_catalog.pg_collation_is_visible",
        ),
        (
            "pg_conversion_is_visible",
            "pg_catalog.pg_conversion_is_visible",
        ),
        (
            "pg_ts_config_is_visible",
            "pg_catalog.pg_ts_config_is_visible",
        ),
    ] {
        ctx.register_udf(
            create_udf(
                name,
                vec![DataType::Int64],
                DataType::Boolean,
                Volatility::Stable,
                Arc::new(|args: &[ColumnarValue]| match &args[0] {
                    ColumnarValue::Scalar(s) => Ok(ColumnarValue::Scalar(ScalarValue::Boolean(
                        Some(!s.is_null()),
                    ))),
                    ColumnarValue::Array(a) => {
                        let out: BooleanArray = (0..a.len()).map(|i| Some(a.is_valid(i))).collect();
                        Ok(ColumnarValue::Array(Arc::new(out)))
                    }
                }),
            )
            .with_aliases([qualified]),
        );
    }
    // No object has a comment, and there are no user-defined functions.
    let null_text = ScalarValue::Utf8(None);
    for name in [
        "obj_description",
        "col_description",
        "shobj_description",
        "pg_get_function_arguments",
        "pg_get_function_identity_arguments",
        "pg_get_function_result",
        "pg_get_indexdef",
        "pg_get_viewdef",
        "pg_get_triggerdef",
        "pg_get_ruledef",
    ] {
        ctx.register_udf(Fixed::udf(name, null_text.clone()));
    }
    ctx.register_udf(
        create_udf(
            "to_regtype",
            vec![DataType::Utf8],
            DataType::Int32,
            Volatility::Stable,
            Arc::new(|args: &[ColumnarValue]| match &args[0] {
                ColumnarValue::Scalar(s) => Ok(ColumnarValue::Scalar(ScalarValue::Int32(
                    s.try_as_str().flatten().and_then(type_oid),
                ))),
                ColumnarValue::Array(a) => {
                    let names = a.as_string::<i32>();
                    let out: Int32Array = names.iter().map(|n| n.and_then(type_oid)).collect();
                    Ok(ColumnarValue::Array(Arc::new(out)))
                }
            }),
        )
        .with_aliases(["pg_catalog.to_regtype"]),
    );
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject::default()));
    // `set_config(name, value, is_local)` returns the value. Drivers call it
    // for planner settings StreamHouse does not have (asyncpg turns `jit`
    // off around its type introspection); settings that matter go through
    // `SET`, which sessions keep.
    ctx.register_udf(
        create_udf(
            "set_config",
            vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
            DataType::Utf8,
            Volatility::Volatile,
            Arc::new(|args: &[ColumnarValue]| Ok(args[1].clone())),
        )
        .with_aliases(["pg_catalog.set_config"]),
    );
    // There are no sequences.
    ctx.register_udf(Fixed::udf(
        "pg_get_serial_sequence",
        ScalarValue::Utf8(None),
    ));
    // One role owns everything.
    ctx.register_udf(Fixed::udf(
        "pg_get_userbyid",
        ScalarValue::Utf8(Some(USER.to_string())),
    ));
}

/// PostgreSQL's built-in types: (oid, array type oid, names it answers to).
const TYPES: &[(i32, i32, &[&str])] = &[
    (16, 1000, &["bool", "boolean"]),
    (17, 1001, &["bytea"]),
    (18, 1002, &["char", "\"char\""]),
    (19, 1003, &["name"]),
    (20, 1016, &["int8", "bigint"]),
    (21, 1005, &["int2", "smallint"]),
    (23, 1007, &["int4", "integer", "int"]),
    (25, 1009, &["text"]),
    (26, 1028, &["oid"]),
    (114, 199, &["json"]),
    (142, 143, &["xml"]),
    (700, 1021, &["float4", "real"]),
    (701, 1022, &["float8", "double precision"]),
    (790, 791, &["money"]),
    (1042, 1014, &["bpchar", "character", "char"]),
    (1043, 1015, &["varchar", "character varying"]),
    (1082, 1182, &["date"]),
    (1083, 1183, &["time", "time without time zone"]),
    (1114, 1115, &["timestamp", "timestamp without time zone"]),
    (1184, 1185, &["timestamptz", "timestamp with time zone"]),
    (1186, 1187, &["interval"]),
    (1266, 1270, &["timetz", "time with time zone"]),
    (1560, 1561, &["bit"]),
    (1562, 1563, &["varbit", "bit varying"]),
    (1700, 1231, &["numeric", "decimal"]),
    (2249, 2287, &["record"]),
    (2950, 2951, &["uuid"]),
    (3802, 3807, &["jsonb"]),
    (4072, 4073, &["jsonpath"]),
];

/// `to_regtype(name)`: the type's oid, or NULL when there is no such type.
fn type_oid(name: &str) -> Option<i32> {
    let name = name.trim().to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    // A type modifier does not change the type: `varchar(10)`.
    let (base, array) = match name.strip_suffix("[]") {
        Some(b) => (b, true),
        None => (name, false),
    };
    let base = base.split('(').next().unwrap_or(base).trim();
    let base = base.strip_prefix('_').map_or((base, array), |b| (b, true));
    TYPES
        .iter()
        .find(|(_, _, names)| names.contains(&base.0))
        .map(|(oid, arr, _)| if base.1 { *arr } else { *oid })
}

/// `json_build_object(key, value, …)`: a JSON object as text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
    aliases: Vec<String>,
}

impl Default for JsonBuildObject {
    fn default() -> Self {
        JsonBuildObject {
            signature: Signature::variadic_any(Volatility::Immutable),
            aliases: vec!["pg_catalog.json_build_object".to_string()],
        }
    }
}

fn json_value(v: &ScalarValue) -> serde_json::Value {
    use serde_json::Value;
    if v.is_null() {
        return Value::Null;
    }
    match v {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(Some(i)) => Value::from(*i),
        ScalarValue::Int16(Some(i)) => Value::from(*i),
        ScalarValue::Int32(Some(i)) => Value::from(*i),
        ScalarValue::Int64(Some(i)) => Value::from(*i),
        ScalarValue::UInt8(Some(i)) => Value::from(*i),
        ScalarValue::UInt16(Some(i)) => Value::from(*i),
        ScalarValue::UInt32(Some(i)) => Value::from(*i),
        ScalarValue::UInt64(Some(i)) => Value::from(*i),
        ScalarValue::Float32(Some(f)) => Value::from(*f),
        ScalarValue::Float64(Some(f)) => Value::from(*f),
        other => match other.try_as_str() {
            Some(Some(s)) => Value::String(s.to_string()),
            _ => Value::String(other.to_string()),
        },
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
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
        if !args.args.len().is_multiple_of(2) {
            return Err(datafusion::error::DataFusionError::Execution(
                "argument list must have even number of elements".into(),
            ));
        }
        let rows = args.number_rows;
        let columns: Vec<_> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<datafusion::error::Result<_>>()?;
        let mut out = arrow::array::StringBuilder::new();
        for row in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in columns.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return Err(datafusion::error::DataFusionError::Execution(
                        "null value not allowed for object key".into(),
                    ));
                }
                let key = match key.try_as_str() {
                    Some(Some(k)) => k.to_string(),
                    _ => key.to_string(),
                };
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                object.insert(key, json_value(&value));
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// A catalog function whose answer does not depend on its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Fixed {
    name: String,
    aliases: Vec<String>,
    value: ScalarValue,
    signature: Signature,
}

impl Fixed {
    fn udf(name: &str, value: ScalarValue) -> ScalarUDF {
        ScalarUDF::new_from_impl(Fixed {
            name: name.to_string(),
            aliases: vec![format!("pg_catalog.{name}")],
            value,
            signature: Signature::variadic_any(Volatility::Stable),
        })
    }
}

impl ScalarUDFImpl for Fixed {
    fn name(&self) -> &str {
        &self.name
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(self.value.data_type())
    }
    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_resolve_like_postgres() {
        assert_eq!(type_oid("integer"), Some(23));
        assert_eq!(type_oid("INT4[]"), Some(1007));
        assert_eq!(type_oid("_int4"), Some(1007));
        assert_eq!(type_oid("character varying(10)"), Some(1043));
        assert_eq!(type_oid("pg_catalog.timestamptz"), Some(1184));
        assert_eq!(type_oid("hstore"), None);
    }
}
