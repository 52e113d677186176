//! The columns of a stream that follows an Avro record schema: one per
//! field of the record, in its order, typed as arrow-avro decodes the field
//! and then as the stream stores it (timestamps in microseconds in UTC,
//! enums as text, fixed as bytes), NULL allowed where the field is a union
//! with null, and the field's default as the column's default, so rows
//! written before a field existed read as the default. [`conform`] makes
//! decoded rows rows of the stream, and rows of the stream rows of a
//! schema to encode.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use streamhouse_log::stream::{DEFAULT_KEY, default_array};

use crate::decode::AvroValues;
use crate::error::RegistryError;

/// The stream columns of Avro record schema `text`.
pub fn avro_columns(text: &str) -> Result<Schema, RegistryError> {
    let decoded = AvroValues::new(text, &[(0, text.to_string())])?.schema();
    let document: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| RegistryError::InvalidSchema(format!("not JSON: {e}")))?;
    let defaults = document.get("fields").and_then(|f| f.as_array());
    let mut fields = Vec::with_capacity(decoded.fields().len());
    for field in decoded.fields() {
        let data_type = stored(field.name(), field.data_type())?;
        let mut column = Field::new(field.name(), data_type, field.is_nullable());
        let default = defaults
            .into_iter()
            .flatten()
            .find(|f| f.get("name").and_then(|n| n.as_str()) == Some(field.name()))
            .and_then(|f| f.get("default"));
        if let Some(text) = default.and_then(default_text) {
            column = column.with_metadata([(DEFAULT_KEY.to_string(), text)].into());
        }
        fields.push(column);
    }
    Ok(Schema::new(fields))
}

/// `rows` as rows of `to`: each of its columns taken from the column of
/// the same name, cast to its type; one `rows` lacks is its default, or
/// NULL where it may be (otherwise an error naming it). Columns of `rows`
/// that `to` lacks are left out.
pub fn conform(rows: &RecordBatch, to: &SchemaRef) -> Result<RecordBatch, RegistryError> {
    let n = rows.num_rows();
    let bad = |m: String| RegistryError::InvalidSchema(m);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(to.fields().len());
    for field in to.fields() {
        let column = match rows.column_by_name(field.name()) {
            Some(c) => cast(c, field.data_type()).map_err(|e| {
                bad(format!(
                    "field \"{}\" cannot be read as {}: {e}",
                    field.name(),
                    field.data_type()
                ))
            })?,
            None => match default_array(field, n).map_err(|e| bad(e.to_string()))? {
                Some(d) => d,
                None if field.is_nullable() => new_null_array(field.data_type(), n),
                None => {
                    return Err(bad(format!(
                        "the schema has no field \"{}\", which may not be NULL",
                        field.name()
                    )));
                }
            },
        };
        if column.null_count() > 0 && !field.is_nullable() {
            return Err(bad(format!("field \"{}\" is null", field.name())));
        }
        columns.push(column);
    }
    RecordBatch::try_new_with_options(
        to.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| bad(e.to_string()))
}

/// A field's default as a column default's text (cast to the column's
/// type when read); a null default is no default.
fn default_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        // Records, arrays and maps as defaults: not column types here.
        _ => None,
    }
}

/// The type a stream stores a decoded field of type `t` as.
fn stored(name: &str, t: &DataType) -> Result<DataType, RegistryError> {
    Ok(match t {
        DataType::Boolean
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::Binary
        | DataType::Date32
        | DataType::Decimal128(..) => t.clone(),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::FixedSizeBinary(_) | DataType::LargeBinary | DataType::BinaryView => {
            DataType::Binary
        }
        DataType::Dictionary(_, v) if v.is_string() => DataType::Utf8,
        DataType::Timestamp(_, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into()))
        }
        DataType::Time32(_) | DataType::Time64(_) => DataType::Time64(TimeUnit::Microsecond),
        DataType::List(item) => DataType::List(Arc::new(Field::new_list_field(
            stored(name, item.data_type())?,
            true,
        ))),
        other => {
            return Err(RegistryError::InvalidSchema(format!(
                "field \"{name}\" decodes as {other}, which a stream column cannot hold yet \
                 (records, maps and unions other than with null)"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_columns_with_their_defaults() {
        let schema = avro_columns(
            r#"{"type":"record","name":"Order","fields":[
                {"name":"id","type":"long"},
                {"name":"item","type":"string"},
                {"name":"qty","type":"int","default":1},
                {"name":"note","type":["null","string"],"default":null},
                {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"]}}
            ]}"#,
        )
        .unwrap();
        let shape: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
            .collect();
        assert_eq!(
            shape,
            [
                ("id", DataType::Int64, false),
                ("item", DataType::Utf8, false),
                ("qty", DataType::Int32, false),
                ("note", DataType::Utf8, true),
                (
                    "at",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false
                ),
                ("kind", DataType::Utf8, false),
            ]
        );
        let default = |n: &str| {
            schema
                .field_with_name(n)
                .unwrap()
                .metadata()
                .get(DEFAULT_KEY)
                .cloned()
        };
        assert_eq!(default("qty").as_deref(), Some("1"));
        assert_eq!(default("note"), None, "a null default is NULL");
        assert_eq!(default("id"), None);
    }

    #[test]
    fn nested_records_are_refused_by_name() {
        let e = avro_columns(
            r#"{"type":"record","name":"R","fields":[{"name":"inner","type":
                {"type":"record","name":"I","fields":[{"name":"x","type":"int"}]}}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"inner\""), "{e}");
    }
}
