//! Rows as Avro values in Confluent's wire format (magic byte 0, the
//! schema's id as 4 big-endian bytes, the Avro binary body), one value a
//! row, with arrow-avro's encoder: what a Kafka consumer of a stream that
//! follows a subject reads with Confluent's deserialisers.

use std::sync::Arc;

use arrow::array::{BinaryArray, RecordBatch};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow_avro::schema::{FingerprintStrategy, SCHEMA_METADATA_KEY};
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::AvroSoeFormat;

use streamhouse_log::stream::DEFAULT_KEY;

use crate::columns::{avro_columns, conform};
use crate::decode::AvroValues;
use crate::error::RegistryError;

/// An encoder of rows as values of one registered Avro schema.
#[derive(Debug, Clone)]
pub struct AvroEncoder {
    id: u32,
    /// The schema's fields as arrow-avro reads them, with the schema text.
    schema: SchemaRef,
}

impl AvroEncoder {
    /// Encodes as the Avro record schema `text`, registered as `id`.
    pub fn new(id: u32, text: &str) -> Result<AvroEncoder, RegistryError> {
        let decoded = AvroValues::new(text, &[(id, text.to_string())])?.schema();
        // Each field with its default, for rows that lack the column.
        let columns = avro_columns(text)?;
        let fields: Vec<Field> = decoded
            .fields()
            .iter()
            .map(|f| {
                let mut metadata = f.metadata().clone();
                if let Some(d) = columns
                    .field_with_name(f.name())
                    .ok()
                    .and_then(|c| c.metadata().get(DEFAULT_KEY))
                {
                    metadata.insert(DEFAULT_KEY.to_string(), d.clone());
                }
                f.as_ref().clone().with_metadata(metadata)
            })
            .collect();
        let mut metadata = decoded.metadata().clone();
        metadata.insert(SCHEMA_METADATA_KEY.to_string(), text.to_string());
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        Ok(AvroEncoder { id, schema })
    }

    /// One value per row of `rows` (columns matched to fields by name, see
    /// [`conform`]).
    pub fn encode(&self, rows: &RecordBatch) -> Result<BinaryArray, RegistryError> {
        let rows = conform(rows, &self.schema)?;
        let failed = |e: arrow_avro::errors::AvroError| {
            RegistryError::InvalidSchema(format!("rows do not encode: {e}"))
        };
        let mut encoder = WriterBuilder::new(self.schema.as_ref().clone())
            .with_fingerprint_strategy(FingerprintStrategy::Id(self.id))
            .build_encoder::<AvroSoeFormat>()
            .map_err(failed)?;
        encoder.encode(&rows).map_err(failed)?;
        let encoded = encoder.flush();
        let offsets = encoded
            .offsets()
            .iter()
            .map(|o| i32::try_from(*o))
            .collect::<Result<Vec<i32>, _>>()
            .map_err(|_| RegistryError::InvalidSchema("rows encode past 2 GiB".into()))?;
        let data = Buffer::from(encoded.bytes().clone());
        BinaryArray::try_new(OffsetBuffer::new(ScalarBuffer::from(offsets)), data, None)
            .map_err(|e| RegistryError::InvalidSchema(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array, StringArray};
    use arrow::datatypes::DataType;

    const V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"qty","type":"int","default":1}]}"#;

    #[test]
    fn rows_encode_as_framed_values_that_decode_again() {
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("note", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![7, 8])),
                Arc::new(StringArray::from(vec![Some("x"), None])),
            ],
        )
        .unwrap();
        let values = AvroEncoder::new(12, V2).unwrap().encode(&rows).unwrap();
        assert_eq!(values.len(), 2);
        assert_eq!(&values.value(0)[..5], &[0, 0, 0, 0, 12]);
        let mut decoder = AvroValues::new(V2, &[(12, V2.to_string())]).unwrap();
        let back = decoder.decode(values.iter().flatten()).unwrap();
        let back = &back[0];
        let ids = back.column(0).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(ids.values(), &[7, 8]);
        let qty = back.column(1).as_primitive::<arrow::datatypes::Int32Type>();
        assert_eq!(
            qty.values(),
            &[1, 1],
            "a field the rows lack is its default"
        );
    }
}
