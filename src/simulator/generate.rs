//! Rows for a simulated producer, made from a stream's columns.
//!
//! Each column gets values of its type that read well and group well:
//! integers uniform in `0..1,000` (or the type's range, if smaller),
//! floats in `0..1,000` with two decimals, text as `<column>-<n>` with
//! `n` in `0..1,000`, binary as the JSON text `{"n": <n>}`, timestamps and
//! dates at the time of the batch (an event-time column moves with the
//! clock, so watermarks advance), decimals within their precision,
//! booleans either way. A nullable column of a type without a generator
//! (lists, maps, structs, …) is NULL; a NOT NULL one refuses the stream
//! before anything is written ([`Generator::new`]).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, SchemaRef};

/// How many distinct values a column takes.
const SPREAD: u64 = 1_000;

/// What one column is made from, before the cast to its type.
#[derive(Debug, Clone)]
enum Source {
    /// Integers in `0..bound`.
    Int {
        bound: u64,
    },
    Float,
    Bool,
    /// `<prefix>-<n>`.
    Text {
        prefix: String,
    },
    /// `{"n": <n>}` as bytes.
    Json,
    /// The batch's time, in microseconds.
    Now,
    Null,
}

/// Makes batches of rows with a stream's columns.
#[derive(Debug)]
pub struct Generator {
    schema: SchemaRef,
    sources: Vec<Source>,
    rng: fastrand::Rng,
}

/// A column no generator can fill.
#[derive(Debug, thiserror::Error)]
#[error("column \"{column}\" of type {data_type} is NOT NULL and has no generator")]
pub struct Ungeneratable {
    pub column: String,
    pub data_type: DataType,
}

fn source(name: &str, t: &DataType) -> Option<Source> {
    use DataType::*;
    Some(match t {
        Int8 | UInt8 => Source::Int { bound: 100 },
        Int16 | Int32 | Int64 | UInt16 | UInt32 | UInt64 => Source::Int { bound: SPREAD },
        Float16 | Float32 | Float64 => Source::Float,
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => {
            // Whole digits the type allows, as an integer part below 10^d.
            let whole = (*p as i32 - *s as i32).clamp(0, 3) as u32;
            if whole == 0 {
                Source::Int { bound: 1 }
            } else {
                Source::Int {
                    bound: 10u64.pow(whole),
                }
            }
        }
        Boolean => Source::Bool,
        Utf8 | LargeUtf8 | Utf8View => Source::Text {
            prefix: name.to_string(),
        },
        Binary | LargeBinary | BinaryView => Source::Json,
        Timestamp(_, _) | Date32 | Date64 => Source::Now,
        _ => return None,
    })
}

impl Generator {
    /// A generator for `schema`'s columns, or the first NOT NULL column it
    /// cannot fill.
    pub fn new(schema: SchemaRef, seed: u64) -> Result<Generator, Ungeneratable> {
        let mut sources = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            match source(f.name(), f.data_type()) {
                Some(s) => sources.push(s),
                None if f.is_nullable() => sources.push(Source::Null),
                None => {
                    return Err(Ungeneratable {
                        column: f.name().clone(),
                        data_type: f.data_type().clone(),
                    });
                }
            }
        }
        Ok(Generator {
            schema,
            sources,
            rng: fastrand::Rng::with_seed(seed),
        })
    }

    /// `rows` rows stamped `now_us` (microseconds since the epoch).
    pub fn batch(&mut self, rows: usize, now_us: i64) -> arrow::error::Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.sources.len());
        for (field, source) in self.schema.fields().iter().zip(&self.sources) {
            let raw: ArrayRef = match source {
                Source::Int { bound } => Arc::new(Int64Array::from_iter_values(
                    (0..rows).map(|_| self.rng.u64(0..*bound) as i64),
                )),
                Source::Float => Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|_| self.rng.u32(0..100_000) as f64 / 100.0),
                )),
                Source::Bool => Arc::new(BooleanArray::from_iter(
                    (0..rows).map(|_| Some(self.rng.bool())),
                )),
                Source::Text { prefix } => Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|_| format!("{prefix}-{}", self.rng.u64(0..SPREAD))),
                )),
                Source::Json => Arc::new(BinaryArray::from_iter_values(
                    (0..rows).map(|_| format!("{{\"n\": {}}}", self.rng.u64(0..SPREAD))),
                )),
                Source::Now => {
                    let a = TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(
                        now_us, rows,
                    ));
                    // The zone is set, not cast to: the instant stays.
                    match field.data_type() {
                        DataType::Timestamp(_, Some(tz)) => Arc::new(a.with_timezone(tz.clone())),
                        _ => Arc::new(a),
                    }
                }
                Source::Null => new_null_array(field.data_type(), rows),
            };
            columns.push(to_type(raw, field.data_type())?);
        }
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

/// `raw` as `t`, refusing values that do not fit.
fn to_type(raw: ArrayRef, t: &DataType) -> arrow::error::Result<ArrayRef> {
    if raw.data_type() == t {
        return Ok(raw);
    }
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    cast_with_options(&raw, t, &strict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Field, Int32Type, Schema, TimeUnit};

    fn schema(fields: Vec<Field>) -> SchemaRef {
        Arc::new(Schema::new(fields))
    }

    #[test]
    fn every_scalar_type_is_filled_with_values_of_its_type() {
        let s = schema(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("small", DataType::Int8, false),
            Field::new("qty", DataType::Int32, false),
            Field::new("price", DataType::Float64, false),
            Field::new("amount", DataType::Decimal128(10, 2), false),
            Field::new("ok", DataType::Boolean, false),
            Field::new("user", DataType::Utf8, false),
            Field::new("blob", DataType::Binary, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("+05:00".into())),
                false,
            ),
            Field::new("day", DataType::Date32, false),
        ]);
        let mut g = Generator::new(s.clone(), 7).unwrap();
        let now = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
        let b = g.batch(500, now).unwrap();
        assert_eq!(b.num_rows(), 500);
        assert_eq!(b.schema(), s);
        for c in b.columns() {
            assert_eq!(c.null_count(), 0);
        }
        let qty = b.column(2).as_primitive::<Int32Type>();
        assert!(qty.values().iter().all(|v| (0..1_000).contains(v)));
        assert!(qty.values().iter().any(|v| *v != qty.value(0)));
        let user = b.column(6).as_string::<i32>();
        assert!(user.value(0).starts_with("user-"));
        let blob = b.column(7).as_binary::<i32>();
        let parsed: serde_json::Value = serde_json::from_slice(blob.value(0)).unwrap();
        assert!(parsed["n"].is_u64());
        let ts = b
            .column(8)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(ts.value(0), now / 1_000);
        let day = b.column(9).as_primitive::<arrow::datatypes::Date32Type>();
        assert_eq!(day.value(0), 20_454);
    }

    #[test]
    fn a_column_without_a_generator_is_null_or_refused() {
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int32, true)));
        let mut g =
            Generator::new(schema(vec![Field::new("tags", list.clone(), true)]), 1).unwrap();
        let b = g.batch(3, 0).unwrap();
        assert_eq!(b.column(0).null_count(), 3);
        let e = Generator::new(schema(vec![Field::new("tags", list, false)]), 1).unwrap_err();
        assert!(e.to_string().contains("\"tags\""), "{e}");
    }

    #[test]
    fn the_same_seed_makes_the_same_rows() {
        let s = schema(vec![Field::new("n", DataType::Int64, false)]);
        let a = Generator::new(s.clone(), 3).unwrap().batch(10, 0).unwrap();
        let b = Generator::new(s, 3).unwrap().batch(10, 0).unwrap();
        assert_eq!(a, b);
    }
}
