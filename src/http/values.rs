//! Arrow rows as JSON for the REST API: booleans, integers within ±2^53
//! and finite floats as JSON numbers (what a browser's numbers hold
//! exactly), everything else as its text (as psql prints it), NULL as
//! `null`.

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Number, Value, json};

/// The columns of a schema: name and type.
pub fn columns(schema: &Schema) -> Value {
    Value::Array(
        schema
            .fields()
            .iter()
            .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
            .collect(),
    )
}

/// How a column's values are written.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Int,
    Float,
    Text,
}

fn kind(t: &DataType) -> Kind {
    match t {
        DataType::Boolean => Kind::Bool,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Kind::Int,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Kind::Float,
        _ => Kind::Text,
    }
}

fn value(kind: Kind, text: String) -> Value {
    match kind {
        Kind::Bool => Value::Bool(text == "true"),
        Kind::Int => match text.parse::<i64>() {
            Ok(v) if v.unsigned_abs() <= 1 << 53 => Value::from(v),
            _ => Value::String(text),
        },
        Kind::Float => match text.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Value::Number(n),
            None => Value::String(text),
        },
        Kind::Text => Value::String(text),
    }
}

/// The rows of `batch`, `skip` rows in, at most `take`, each an array of
/// its values in column order.
pub fn rows(batch: &RecordBatch, skip: usize, take: usize) -> Result<Vec<Value>, ArrowError> {
    let options = FormatOptions::default();
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            Ok((
                c,
                kind(c.data_type()),
                ArrayFormatter::try_new(c, &options)?,
            ))
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let end = batch.num_rows().min(skip.saturating_add(take));
    let mut out = Vec::with_capacity(end.saturating_sub(skip));
    for r in skip..end {
        out.push(Value::Array(
            columns
                .iter()
                .map(|(c, k, f)| {
                    if c.is_null(r) {
                        Value::Null
                    } else {
                        value(*k, f.value(r).to_string())
                    }
                })
                .collect(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn numbers_stay_numbers_while_a_browser_holds_them_exactly() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, false),
            Field::new("b", DataType::Boolean, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(7), None, Some(i64::MAX)])),
                Arc::new(Float64Array::from(vec![1.5, f64::NAN, -2.0])),
                Arc::new(BooleanArray::from(vec![true, false, true])),
                Arc::new(StringArray::from(vec!["a", "1", "c"])),
            ],
        )
        .unwrap();
        let got = rows(&batch, 0, 10).unwrap();
        assert_eq!(got[0], json!([7, 1.5, true, "a"]));
        assert_eq!(got[1], json!([null, "NaN", false, "1"]));
        assert_eq!(got[2], json!([i64::MAX.to_string(), -2.0, true, "c"]));
        assert_eq!(rows(&batch, 1, 1).unwrap().len(), 1);
        assert!(rows(&batch, 5, 1).unwrap().is_empty());
    }
}
