//! Arrow to the PostgreSQL wire: column types and data rows.
//!
//! This is where rows become rows: everything before it is columnar. Each
//! batch gets one typed accessor per column, chosen once; the row loop only
//! reads values and hands them to pgwire, which writes text or binary per the
//! client's requested format.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch};
use arrow::datatypes::*;
use arrow::temporal_conversions::{as_date, as_datetime, as_time};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};

use crate::error::protocol_error;
use pgwire::messages::data::DataRow;
use streamhouse_sql::types::SQL_TYPE_KEY;

/// The PostgreSQL type a column is sent as.
pub fn pg_type(field: &Field) -> Type {
    match field.metadata().get(SQL_TYPE_KEY).map(String::as_str) {
        Some("json") => return Type::JSON,
        Some("jsonb") => return Type::JSONB,
        _ => {}
    }
    pg_type_of(field.data_type())
}

/// The PostgreSQL type of an Arrow type.
pub fn pg_type_of(t: &DataType) -> Type {
    match t {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 => Type::INT8,
        // Only `oid` plans as UInt32.
        DataType::UInt32 => Type::OID,
        DataType::UInt64 => Type::NUMERIC,
        // NUMERIC where rust_decimal can carry the value (binary format);
        // wider decimals are sent as text.
        DataType::Decimal32(_, s) | DataType::Decimal64(_, s) | DataType::Decimal128(_, s)
            if (0..=28).contains(s) =>
        {
            Type::NUMERIC
        }
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Interval(_) | DataType::Duration(_) => Type::INTERVAL,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            match element_type(f.data_type()) {
                DataType::Boolean => Type::BOOL_ARRAY,
                DataType::Int16 => Type::INT2_ARRAY,
                DataType::Int32 => Type::INT4_ARRAY,
                DataType::Int64 => Type::INT8_ARRAY,
                DataType::UInt32 => Type::OID_ARRAY,
                DataType::Float32 => Type::FLOAT4_ARRAY,
                DataType::Float64 => Type::FLOAT8_ARRAY,
                _ => Type::TEXT_ARRAY,
            }
        }
        _ => Type::TEXT,
    }
}

/// The Arrow type an array's elements are sent as: the element types with
/// a PostgreSQL array type of their own, else text.
fn element_type(t: &DataType) -> DataType {
    match t {
        DataType::Boolean => DataType::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => DataType::Int16,
        DataType::Int32 | DataType::UInt16 => DataType::Int32,
        DataType::Int64 => DataType::Int64,
        DataType::UInt32 => DataType::UInt32,
        DataType::Float16 | DataType::Float32 => DataType::Float32,
        DataType::Float64 => DataType::Float64,
        _ => DataType::Utf8,
    }
}

/// Row description of a schema, in the requested formats. A Bind names
/// no format, one for every column, or one per column; any other count is
/// the client's protocol error (08P01), not an index past the end.
pub fn fields(schema: &Schema, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    let columns = schema.fields().len();
    if let Format::Individual(codes) = format
        && codes.len() != columns
    {
        return Err(protocol_error(
            "08P01",
            format!(
                "bind message has {} result formats but query has {columns} columns",
                codes.len()
            ),
        ));
    }
    Ok(schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f),
                format.format_for(i),
            )
        })
        .collect())
}

/// Typed access to one column of a batch.
enum Col<'a> {
    Bool(&'a BooleanArray),
    I16(ArrayRef),
    I32(ArrayRef),
    I64(ArrayRef),
    F32(ArrayRef),
    F64(&'a Float64Array),
    Str(ArrayRef),
    Bytes(ArrayRef),
    Date(ArrayRef),
    Time(ArrayRef),
    Ts(ArrayRef),
    TsTz(ArrayRef),
    /// NUMERIC that fits rust_decimal (scale ≤ 28): text or binary.
    Dec(ArrayRef, u32),
    /// `interval`, as months, days and nanoseconds.
    Interval(ArrayRef),
    /// `oid`.
    Oid(&'a arrow::array::UInt32Array),
    /// The NULL type: every value is NULL.
    Null,
    /// An array (Arrow list) of [`element_type`] elements.
    List(ArrayRef),
    /// Anything else, sent as its text rendering.
    Text(&'a dyn Array, ArrayFormatter<'a>),
}

fn cast(a: &ArrayRef, t: &DataType) -> PgWireResult<ArrayRef> {
    arrow::compute::cast(a, t).map_err(|e| PgWireError::ApiError(Box::new(e)))
}

impl<'a> Col<'a> {
    fn new(a: &'a ArrayRef, opts: &'a FormatOptions<'a>) -> PgWireResult<Col<'a>> {
        let us = DataType::Timestamp(TimeUnit::Microsecond, None);
        Ok(match a.data_type() {
            DataType::Null => Col::Null,
            DataType::Interval(_) | DataType::Duration(_) => {
                Col::Interval(cast(a, &DataType::Interval(IntervalUnit::MonthDayNano))?)
            }
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                let element = Field::new("item", element_type(f.data_type()), true);
                Col::List(cast(a, &DataType::List(Arc::new(element)))?)
            }
            DataType::Boolean => Col::Bool(a.as_boolean()),
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => {
                Col::I16(cast(a, &DataType::Int16)?)
            }
            DataType::Int32 | DataType::UInt16 => Col::I32(cast(a, &DataType::Int32)?),
            DataType::Int64 => Col::I64(cast(a, &DataType::Int64)?),
            DataType::UInt32 => Col::Oid(a.as_primitive::<UInt32Type>()),
            DataType::Float16 | DataType::Float32 => Col::F32(cast(a, &DataType::Float32)?),
            DataType::Float64 => Col::F64(a.as_primitive::<Float64Type>()),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Col::Str(cast(a, &DataType::Utf8)?)
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                Col::Bytes(cast(a, &DataType::Binary)?)
            }
            DataType::Date32 | DataType::Date64 => Col::Date(cast(a, &DataType::Date32)?),
            DataType::Time32(_) | DataType::Time64(_) => {
                Col::Time(cast(a, &DataType::Time64(TimeUnit::Microsecond))?)
            }
            DataType::Decimal32(_, s) | DataType::Decimal64(_, s) | DataType::Decimal128(_, s)
                if (0..=28).contains(s) =>
            {
                Col::Dec(cast(a, &DataType::Decimal128(38, *s))?, *s as u32)
            }
            DataType::UInt64 => Col::Dec(cast(a, &DataType::Decimal128(20, 0))?, 0),
            DataType::Timestamp(_, None) => Col::Ts(cast(a, &us)?),
            // Instants in UTC: drop the zone name, keep the instant.
            DataType::Timestamp(_, Some(_)) => Col::TsTz(cast(a, &us)?),
            _ => Col::Text(
                a.as_ref(),
                ArrayFormatter::try_new(a.as_ref(), opts)
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?,
            ),
        })
    }

    /// Encodes one value; `text` selects PostgreSQL's text output, which
    /// this module writes itself where pgwire's differs from PostgreSQL's.
    fn encode(&self, row: usize, text: bool, enc: &mut DataRowEncoder) -> PgWireResult<()> {
        macro_rules! prim {
            ($arr:expr, $t:ty) => {{
                let a = $arr.as_primitive::<$t>();
                enc.encode_field(&(a.is_valid(row).then(|| a.value(row))))
            }};
        }
        match self {
            Col::Bool(a) => enc.encode_field(&(a.is_valid(row).then(|| a.value(row)))),
            Col::I16(a) => prim!(a, Int16Type),
            Col::I32(a) => prim!(a, Int32Type),
            Col::I64(a) => prim!(a, Int64Type),
            Col::F32(a) if text => {
                let a = a.as_primitive::<Float32Type>();
                enc.encode_field(&(a.is_valid(row).then(|| float4_text(a.value(row)))))
            }
            Col::F32(a) => prim!(a, Float32Type),
            Col::F64(a) if text => {
                enc.encode_field(&(a.is_valid(row).then(|| float_text(a.value(row)))))
            }
            Col::F64(a) => enc.encode_field(&(a.is_valid(row).then(|| a.value(row)))),
            Col::Str(a) => {
                let a = a.as_string::<i32>();
                enc.encode_field(&(a.is_valid(row).then(|| a.value(row))))
            }
            Col::Bytes(a) => {
                let a = a.as_binary::<i32>();
                enc.encode_field(&(a.is_valid(row).then(|| a.value(row))))
            }
            Col::Date(a) => {
                let a = a.as_primitive::<Date32Type>();
                let v: Option<NaiveDate> = a
                    .is_valid(row)
                    .then(|| as_date::<Date32Type>(a.value(row) as i64))
                    .flatten();
                enc.encode_field(&v)
            }
            Col::Time(a) => {
                let a = a.as_primitive::<Time64MicrosecondType>();
                let v: Option<NaiveTime> = a
                    .is_valid(row)
                    .then(|| as_time::<Time64MicrosecondType>(a.value(row)))
                    .flatten();
                enc.encode_field(&v)
            }
            Col::Ts(a) => {
                let a = a.as_primitive::<TimestampMicrosecondType>();
                let v: Option<NaiveDateTime> = a
                    .is_valid(row)
                    .then(|| as_datetime::<TimestampMicrosecondType>(a.value(row)))
                    .flatten();
                if text {
                    enc.encode_field(&v.map(|d| timestamp_text(&d, false)))
                } else {
                    enc.encode_field(&v)
                }
            }
            Col::TsTz(a) => {
                let a = a.as_primitive::<TimestampMicrosecondType>();
                let v: Option<DateTime<Utc>> = a
                    .is_valid(row)
                    .then(|| as_datetime::<TimestampMicrosecondType>(a.value(row)))
                    .flatten()
                    .map(|d| d.and_utc());
                if text {
                    enc.encode_field(&v.map(|d| timestamp_text(&d.naive_utc(), true)))
                } else {
                    enc.encode_field(&v)
                }
            }
            Col::Dec(a, scale) => {
                let a = a.as_primitive::<Decimal128Type>();
                let v = a
                    .is_valid(row)
                    .then(|| rust_decimal::Decimal::try_from_i128_with_scale(a.value(row), *scale))
                    .transpose()
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                if text {
                    enc.encode_field(&v.map(|d| d.to_string()))
                } else {
                    enc.encode_field(&v)
                }
            }
            Col::Null => enc.encode_field(&None::<&str>),
            Col::Interval(a) => {
                let a = a.as_primitive::<IntervalMonthDayNanoType>();
                let v = a.is_valid(row).then(|| {
                    let v = a.value(row);
                    pg_interval::Interval::new(v.months, v.days, v.nanoseconds / 1_000)
                });
                enc.encode_field(&v)
            }
            Col::Oid(a) => enc.encode_field(&(a.is_valid(row).then(|| a.value(row)))),
            Col::List(a) => {
                let lists = a.as_list::<i32>();
                if lists.is_null(row) {
                    return enc.encode_field(&None::<Vec<Option<i32>>>);
                }
                let v = lists.value(row);
                match v.data_type() {
                    DataType::Boolean => {
                        enc.encode_field(&v.as_boolean().iter().collect::<Vec<_>>())
                    }
                    DataType::Int16 => {
                        enc.encode_field(&v.as_primitive::<Int16Type>().iter().collect::<Vec<_>>())
                    }
                    DataType::Int32 => {
                        enc.encode_field(&v.as_primitive::<Int32Type>().iter().collect::<Vec<_>>())
                    }
                    DataType::Int64 => {
                        enc.encode_field(&v.as_primitive::<Int64Type>().iter().collect::<Vec<_>>())
                    }
                    DataType::UInt32 => {
                        enc.encode_field(&v.as_primitive::<UInt32Type>().iter().collect::<Vec<_>>())
                    }
                    DataType::Float32 => enc
                        .encode_field(&v.as_primitive::<Float32Type>().iter().collect::<Vec<_>>()),
                    DataType::Float64 => enc
                        .encode_field(&v.as_primitive::<Float64Type>().iter().collect::<Vec<_>>()),
                    _ => enc.encode_field(
                        &v.as_string::<i32>()
                            .iter()
                            .map(|s| s.map(str::to_string))
                            .collect::<Vec<_>>(),
                    ),
                }
            }
            Col::Text(a, f) => {
                let v = a.is_valid(row).then(|| f.value(row).to_string());
                enc.encode_field(&v)
            }
        }
    }
}

/// PostgreSQL's float8 output: the shortest digits that round-trip, in
/// exponent form when the decimal exponent is below -4 or at least 15
/// (`1e+20`, `1.5e-07`), `NaN`, `Infinity`.
fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        pg_float(&format!("{v:e}"), 15)
    }
}

/// float4's: the same, with the exponent form from 6 digits on.
fn float4_text(v: f32) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        pg_float(&format!("{v:e}"), 6)
    }
}

/// Lays out Rust's shortest scientific form (`1.5e-7`) as PostgreSQL does.
fn pg_float(sci: &str, max_exp: i32) -> String {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    if exp < -4 || exp >= max_exp {
        let e_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{e_sign}{:02}", exp.abs());
    }
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if exp < 0 {
        return format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize));
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        format!("{sign}{digits}{}", "0".repeat(int_len - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
    }
}

/// PostgreSQL's ISO timestamp output: fractional seconds only when non-zero,
/// trailing zeros trimmed; `+00` for timestamptz (the session zone is UTC).
fn timestamp_text(d: &NaiveDateTime, tz: bool) -> String {
    use chrono::Timelike;
    let mut s = d.format("%Y-%m-%d %H:%M:%S").to_string();
    let micros = d.nanosecond() / 1_000;
    if micros > 0 {
        let frac = format!("{micros:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if tz {
        s.push_str("+00");
    }
    s
}

/// Encodes every row of `batch` for a row description.
pub fn rows(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let opts = FormatOptions::default().with_null("");
    let cols = batch
        .columns()
        .iter()
        .map(|c| Col::new(c, &opts))
        .collect::<PgWireResult<Vec<_>>>()?;
    let text: Vec<bool> = fields
        .iter()
        .map(|f| f.format() == pgwire::api::results::FieldFormat::Text)
        .collect();
    // jsonb's binary format is a version byte, then the text.
    let jsonb: Vec<bool> = fields
        .iter()
        .map(|f| f.datatype() == &Type::JSONB)
        .collect();
    let mut enc = DataRowEncoder::new(fields.clone());
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut buf = Vec::new();
    for row in 0..batch.num_rows() {
        for ((c, &t), &j) in cols.iter().zip(&text).zip(&jsonb) {
            if j && !t
                && let Col::Str(a) = c
            {
                let a = a.as_string::<i32>();
                let v = a.is_valid(row).then(|| {
                    buf.clear();
                    buf.push(1u8);
                    buf.extend_from_slice(a.value(row).as_bytes());
                    buf.as_slice()
                });
                enc.encode_field(&v)?;
                continue;
            }
            c.encode(row, t, &mut enc)?;
        }
        out.push(enc.take_row());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;

    #[test]
    fn text_output_matches_postgres() {
        assert_eq!(float_text(20.0), "20");
        assert_eq!(float_text(1e20), "1e+20");
        assert_eq!(float_text(1e15), "1e+15");
        assert_eq!(float_text(123456789012345.0), "123456789012345");
        assert_eq!(float_text(1.5e-7), "1.5e-07");
        assert_eq!(float_text(0.0001), "0.0001");
        assert_eq!(float_text(-0.00123), "-0.00123");
        assert_eq!(float_text(0.0), "0");
        assert_eq!(float_text(-2.5), "-2.5");
        assert_eq!(float4_text(1.1), "1.1");
        assert_eq!(float4_text(1e6), "1e+06");
        assert_eq!(float4_text(123456.0), "123456");
        assert_eq!(float_text(10.5), "10.5");
        assert_eq!(float_text(f64::NAN), "NaN");
        assert_eq!(float_text(f64::NEG_INFINITY), "-Infinity");
        let d = NaiveDate::from_ymd_opt(2026, 1, 2)
            .unwrap()
            .and_hms_micro_opt(3, 4, 5, 120_000)
            .unwrap();
        assert_eq!(timestamp_text(&d, false), "2026-01-02 03:04:05.12");
        assert_eq!(
            timestamp_text(&d.with_nanosecond(0).unwrap(), true),
            "2026-01-02 03:04:05+00"
        );
    }
}
