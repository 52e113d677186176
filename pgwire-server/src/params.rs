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
    if let pgwire::api::portal::Format::Individual(codes) = &portal.parameter_format
        && codes.len() != portal.parameters.len()
    {
        return Err(protocol_error(
            "08P01",
            format!(
                "bind message has {} parameter formats but {} parameters",
                codes.len(),
                portal.parameters.len()
            ),
        ));
    }
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
                match &want {
                    Some(DataType::List(f)) => array_text(text, f.data_type()).map_err(|e| {
                        protocol_error(
                            "22P02",
                            format!("malformed array literal for parameter ${}: {e}", i + 1),
                        )
                    })?,
                    _ => ScalarValue::Utf8(Some(text.to_string())),
                }
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
        Type::OID => ScalarValue::UInt32(portal.parameter::<u32>(i, t)?),
        // jsonb's binary format: version 1, then the JSON text.
        Type::JSONB => match portal.parameters.get(i).cloned().flatten() {
            None => ScalarValue::Utf8(None),
            Some(b) if b.first() == Some(&1) => {
                ScalarValue::Utf8(Some(String::from_utf8(b[1..].to_vec()).map_err(|_| {
                    protocol_error("22021", format!("parameter ${} is not valid UTF-8", i + 1))
                })?))
            }
            Some(_) => {
                return Err(protocol_error(
                    "22P03",
                    format!("parameter ${}: unsupported jsonb version", i + 1),
                ));
            }
        },
        Type::INTERVAL => ScalarValue::IntervalMonthDayNano(
            portal
                .parameter::<pg_interval::Interval>(i, t)?
                .map(|v| {
                    let nanos = v.microseconds.checked_mul(1_000).ok_or_else(|| {
                        protocol_error(
                            "22008",
                            format!("parameter ${}: interval out of range", i + 1),
                        )
                    })?;
                    Ok::<_, pgwire::error::PgWireError>(
                        arrow::datatypes::IntervalMonthDayNano::new(v.months, v.days, nanos),
                    )
                })
                .transpose()?,
        ),
        Type::BOOL_ARRAY => list(
            portal.parameter::<Vec<Option<bool>>>(i, t)?,
            ScalarValue::Boolean,
            DataType::Boolean,
        ),
        Type::INT2_ARRAY => list(
            portal.parameter::<Vec<Option<i16>>>(i, t)?,
            ScalarValue::Int16,
            DataType::Int16,
        ),
        Type::INT4_ARRAY => list(
            portal.parameter::<Vec<Option<i32>>>(i, t)?,
            ScalarValue::Int32,
            DataType::Int32,
        ),
        Type::INT8_ARRAY => list(
            portal.parameter::<Vec<Option<i64>>>(i, t)?,
            ScalarValue::Int64,
            DataType::Int64,
        ),
        Type::OID_ARRAY => list(
            portal.parameter::<Vec<Option<u32>>>(i, t)?,
            ScalarValue::UInt32,
            DataType::UInt32,
        ),
        Type::FLOAT4_ARRAY => list(
            portal.parameter::<Vec<Option<f32>>>(i, t)?,
            ScalarValue::Float32,
            DataType::Float32,
        ),
        Type::FLOAT8_ARRAY => list(
            portal.parameter::<Vec<Option<f64>>>(i, t)?,
            ScalarValue::Float64,
            DataType::Float64,
        ),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => list(
            portal.parameter::<Vec<Option<String>>>(i, t)?,
            ScalarValue::Utf8,
            DataType::Utf8,
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

/// A decoded binary array as a list value.
fn list<T>(
    v: Option<Vec<Option<T>>>,
    scalar: impl Fn(Option<T>) -> ScalarValue,
    element: DataType,
) -> ScalarValue {
    match v {
        None => {
            ScalarValue::try_from(&DataType::new_list(element, true)).unwrap_or(ScalarValue::Null)
        }
        Some(items) => {
            let values: Vec<ScalarValue> = items.into_iter().map(scalar).collect();
            ScalarValue::List(ScalarValue::new_list_nullable(&values, &element))
        }
    }
}

/// A one-dimensional array in PostgreSQL's text form (`{1,2,NULL}`,
/// `{"a b","c\"d"}`), its elements cast to `element`.
fn array_text(text: &str, element: &DataType) -> Result<ScalarValue, String> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| format!("\"{text}\": array value must start with \"{{\""))?;
    let mut items: Vec<Option<String>> = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let mut item = String::new();
        let mut quoted = false;
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(format!("\"{text}\": unterminated quoted element")),
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                chars.next();
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                if c == '{' {
                    return Err("multidimensional arrays are not supported".into());
                }
                item.push(c);
                chars.next();
            }
            item = item.trim().to_string();
        }
        chars.next(); // the comma
        if !quoted && item.eq_ignore_ascii_case("null") {
            items.push(None);
        } else {
            items.push(Some(item));
        }
    }
    let values = items
        .into_iter()
        .map(|v| {
            ScalarValue::Utf8(v)
                .cast_to(element)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ScalarValue::List(ScalarValue::new_list_nullable(
        &values, element,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: &[Option<i32>]) -> ScalarValue {
        let values: Vec<_> = v.iter().map(|x| ScalarValue::Int32(*x)).collect();
        ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Int32))
    }

    fn texts(v: &[Option<&str>]) -> ScalarValue {
        let values: Vec<_> = v
            .iter()
            .map(|x| ScalarValue::Utf8(x.map(str::to_string)))
            .collect();
        ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Utf8))
    }

    #[test]
    fn array_text_parses_postgres_literals() {
        assert_eq!(
            array_text("{1, 2,NULL}", &DataType::Int32).unwrap(),
            ints(&[Some(1), Some(2), None])
        );
        assert_eq!(
            array_text(r#"{"a b","c\"d",null,"NULL"}"#, &DataType::Utf8).unwrap(),
            texts(&[Some("a b"), Some("c\"d"), None, Some("NULL")])
        );
        assert_eq!(array_text("{}", &DataType::Int32).unwrap(), ints(&[]));
        assert!(array_text("1,2", &DataType::Int32).is_err());
        assert!(array_text("{x}", &DataType::Int32).is_err());
    }
}
