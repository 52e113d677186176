//! Bound parameters of the extended protocol, as DataFusion values.
//!
//! Text-format values (what most drivers send) become strings and are cast
//! to the type the planner inferred for the placeholder, with the same rules
//! as a SQL cast; binary-format values are decoded by their declared type.

use arrow::datatypes::DataType;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use pgwire::api::Type;
use pgwire::api::portal::Portal;
use pgwire::error::PgWireResult;
use streamhouse_sql::ScalarValue;

use crate::encode::pg_type_of;
use crate::error::protocol_error;

/// The values of a portal's parameters, typed as the statement expects.
pub fn decode<S: Clone>(
    portal: &Portal<S>,
    inferred: &[Option<DataType>],
) -> PgWireResult<Vec<ScalarValue>> {
    let mut out = Vec::with_capacity(portal.parameters.len());
    for (i, raw) in portal.parameters.iter().enumerate() {
        let want = inferred.get(i).cloned().flatten();
        let declared = portal.statement.parameter_types.get(i).cloned().flatten();
        let value = match raw {
            None => ScalarValue::try_from(want.as_ref().unwrap_or(&DataType::Utf8))
                .unwrap_or(ScalarValue::Utf8(None)),
            Some(bytes) if !portal.parameter_format.is_binary(i) => {
                let text = std::str::from_utf8(bytes).map_err(|_| {
                    protocol_error("22021", format!("parameter ${} is not valid UTF-8", i + 1))
                })?;
                ScalarValue::Utf8(Some(text.to_string()))
            }
            Some(_) => {
                let t = declared
                    .clone()
                    .or_else(|| want.as_ref().map(pg_type_of))
                    .unwrap_or(Type::TEXT);
                binary(portal, i, &t)?
            }
        };
        let value = match want {
            Some(t) if value.data_type() != t => value.cast_to(&t).map_err(|e| {
                protocol_error(
                    "22P02",
                    format!("invalid input for parameter ${} of type {t}: {e}", i + 1),
                )
            })?,
            _ => value,
        };
        out.push(value);
    }
    Ok(out)
}

fn binary<S: Clone>(portal: &Portal<S>, i: usize, t: &Type) -> PgWireResult<ScalarValue> {
    Ok(match *t {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, t)?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, t)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, t)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, t)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, t)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, t)?),
        Type::BYTEA => ScalarValue::Binary(portal.parameter::<Vec<u8>>(i, t)?),
        Type::NUMERIC => match portal.parameter::<rust_decimal::Decimal>(i, t)? {
            Some(d) => ScalarValue::Decimal128(Some(d.mantissa()), 38, d.scale() as i8),
            None => ScalarValue::Decimal128(None, 38, 0),
        },
        Type::DATE => ScalarValue::Date32(portal.parameter::<NaiveDate>(i, t)?.map(|d| {
            (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
        })),
        Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<NaiveDateTime>(i, t)?
                .map(|d| d.and_utc().timestamp_micros()),
            None,
        ),
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<DateTime<FixedOffset>>(i, t)?
                .map(|d| d.timestamp_micros()),
            Some("UTC".into()),
        ),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
            ScalarValue::Utf8(portal.parameter::<String>(i, t)?)
        }
        ref other => {
            return Err(protocol_error(
                "0A000",
                format!(
                    "binary format for parameters of type {other} is not supported; send it as text"
                ),
            ));
        }
    })
}
