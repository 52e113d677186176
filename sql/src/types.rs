//! SQL column types of `CREATE STREAM`, as Arrow types.
//!
//! One table maps every accepted SQL type to the Arrow type the log stores;
//! a type not in it is refused with a message naming it (0A000). JSON is
//! stored as text with field metadata saying so, so the wire can report
//! `json`/`jsonb` again.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use sqlparser::ast::{ArrayElemTypeDef, DataType as SqlType, ExactNumberInfo, TimezoneInfo};

use crate::error::{Result, SqlError};

/// Field metadata key naming the SQL type a column was declared with, when
/// Arrow alone cannot tell it (json, jsonb).
pub const SQL_TYPE_KEY: &str = "streamhouse.sql_type";

/// Default precision and scale of a bare NUMERIC/DECIMAL.
const DEFAULT_DECIMAL: (u8, i8) = (38, 10);

/// The Arrow type of a declared SQL type, plus field metadata to keep.
pub fn arrow_type(t: &SqlType) -> Result<(DataType, Option<&'static str>)> {
    use SqlType as S;
    let dt = match t {
        S::Bool | S::Boolean => DataType::Boolean,
        S::SmallInt(_) | S::Int2(_) => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) => DataType::Int32,
        S::BigInt(_) | S::Int8(_) => DataType::Int64,
        S::Real | S::Float4 => DataType::Float32,
        S::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => DataType::Float32,
        S::Float(_) | S::Float8 | S::Double(_) | S::DoublePrecision => DataType::Float64,
        S::Numeric(info) | S::Decimal(info) | S::Dec(info) => {
            // Checked before narrowing: NUMERIC(266, 2) used to become
            // NUMERIC(10, 2).
            let (p, s) = match info {
                ExactNumberInfo::None => (DEFAULT_DECIMAL.0 as u64, DEFAULT_DECIMAL.1 as i64),
                ExactNumberInfo::Precision(p) => (*p, 0),
                ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
            };
            if p == 0 || p > 38 {
                return Err(SqlError::InvalidDefinition(format!(
                    "NUMERIC precision {p} must be between 1 and 38"
                )));
            }
            if !(-38..=38).contains(&s) {
                return Err(SqlError::InvalidDefinition(format!(
                    "NUMERIC scale {s} must be between -38 and 38"
                )));
            }
            DataType::Decimal128(p as u8, s as i8)
        }
        S::Text
        | S::Varchar(_)
        | S::CharacterVarying(_)
        | S::CharVarying(_)
        | S::Char(_)
        | S::Character(_)
        | S::String(_)
        | S::Uuid => DataType::Utf8,
        S::Bytea => DataType::Binary,
        S::Date => DataType::Date32,
        S::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        S::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        S::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            DataType::Time64(TimeUnit::Microsecond)
        }
        S::Interval { .. } => DataType::Interval(IntervalUnit::MonthDayNano),
        S::JSON => return Ok((DataType::Utf8, Some("json"))),
        S::JSONB => return Ok((DataType::Utf8, Some("jsonb"))),
        S::Custom(name, args) if args.is_empty() => {
            match name.to_string().to_ascii_lowercase().as_str() {
                "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "float" => DataType::Float64,
                other => {
                    return Err(SqlError::NotSupported(format!("column type {other}")));
                }
            }
        }
        S::Array(elem) => {
            let inner = match elem {
                ArrayElemTypeDef::AngleBracket(t)
                | ArrayElemTypeDef::SquareBracket(t, _)
                | ArrayElemTypeDef::Parenthesis(t) => t,
                ArrayElemTypeDef::None => {
                    return Err(SqlError::NotSupported(
                        "ARRAY without an element type".into(),
                    ));
                }
            };
            let (inner, _) = arrow_type(inner)?;
            DataType::List(Arc::new(Field::new_list_field(inner, true)))
        }
        other => return Err(SqlError::NotSupported(format!("column type {other}"))),
    };
    Ok((dt, None))
}

/// The SQL name of a column's type, as `DESCRIBE` and the catalogs show it.
pub fn sql_type_name(field: &Field) -> String {
    if let Some(t) = field.metadata().get(SQL_TYPE_KEY) {
        return t.clone();
    }
    sql_name(field.data_type())
}

fn sql_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        // Only `oid` plans as UInt32.
        DataType::UInt32 => "oid".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("{}[]", sql_type_name(f)),
        other => other.to_string(),
    }
}

/// `bytea` input as PostgreSQL reads it: `\x` followed by hex digits, or
/// the escape format (`\\` for a backslash, `\ooo` octal, anything else
/// as is).
pub fn bytea_from_text(text: &str) -> Result<Vec<u8>, String> {
    if let Some(hex) = text.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(format!(
                "invalid hexadecimal data: odd number of digits in \"{text}\""
            ));
        }
        return digits
            .chunks(2)
            .map(|p| {
                std::str::from_utf8(p)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid hexadecimal digit in \"{text}\""))
            })
            .collect();
    }
    let mut out = Vec::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if b.len() >= i + 4 && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u16 * 64
                + (b[i + 2] - b'0') as u16 * 8
                + (b[i + 3] - b'0') as u16;
            out.push(
                u8::try_from(v)
                    .map_err(|_| format!("invalid input syntax for type bytea: \"{text}\""))?,
            );
            i += 4;
        } else {
            return Err(format!("invalid input syntax for type bytea: \"{text}\""));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytea_text_forms() {
        use super::bytea_from_text;
        assert_eq!(bytea_from_text("\\x00ff10").unwrap(), vec![0, 255, 16]);
        assert_eq!(
            bytea_from_text("ab\\\\c\\001").unwrap(),
            b"ab\\c\x01".to_vec()
        );
        assert!(bytea_from_text("\\x0").is_err());
        assert!(bytea_from_text("\\xzz").is_err());
        assert!(bytea_from_text("bad\\q").is_err());
    }

    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn parse(t: &str) -> Result<DataType> {
        let mut p = Parser::new(&PostgreSqlDialect {}).try_with_sql(t).unwrap();
        arrow_type(&p.parse_data_type().unwrap()).map(|(t, _)| t)
    }

    #[test]
    fn every_documented_type_maps() {
        assert_eq!(parse("bigint").unwrap(), DataType::Int64);
        assert_eq!(parse("int").unwrap(), DataType::Int32);
        assert_eq!(parse("smallint").unwrap(), DataType::Int16);
        assert_eq!(parse("double precision").unwrap(), DataType::Float64);
        assert_eq!(parse("real").unwrap(), DataType::Float32);
        assert_eq!(parse("numeric(10,2)").unwrap(), DataType::Decimal128(10, 2));
        assert_eq!(parse("varchar(20)").unwrap(), DataType::Utf8);
        assert_eq!(parse("bytea").unwrap(), DataType::Binary);
        assert_eq!(parse("date").unwrap(), DataType::Date32);
        assert_eq!(
            parse("timestamp").unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        let tz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(parse("timestamptz").unwrap(), tz);
        assert_eq!(parse("timestamp with time zone").unwrap(), tz);
        assert_eq!(
            parse("interval").unwrap(),
            DataType::Interval(IntervalUnit::MonthDayNano)
        );
        assert_eq!(parse("jsonb").unwrap(), DataType::Utf8);
        assert!(matches!(parse("int[]").unwrap(), DataType::List(_)));
        assert!(matches!(parse("geometry"), Err(SqlError::NotSupported(_))));
    }

    #[test]
    fn names_round_trip() {
        for t in [
            "bigint",
            "integer",
            "smallint",
            "double precision",
            "real",
            "numeric(10,2)",
            "text",
            "bytea",
            "date",
            "timestamp",
            "timestamptz",
            "interval",
            "boolean",
            "bigint[]",
        ] {
            let f = Field::new("c", parse(t).unwrap(), true);
            assert_eq!(sql_type_name(&f), t);
        }
    }
}
