//! Avro values in Confluent's wire format (magic byte 0, the writer
//! schema's id as 4 big-endian bytes, then the Avro binary body) decoded
//! into Arrow record batches with arrow-avro. Values written with any of
//! the known writer schemas are resolved to one reader schema (Avro's
//! schema resolution: a field the writer lacks takes the reader's default),
//! so records of every version of a subject land in the same columns.
//!
//! Each value must be exactly one record: a truncated body, trailing
//! bytes, an unknown id or a missing magic byte is an error naming the
//! value.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};

use crate::error::RegistryError;

/// Rows per batch the decoder builds before handing one out.
const BATCH_ROWS: usize = 8192;

/// A decoder of framed Avro values into batches of one reader schema.
pub struct AvroValues {
    decoder: Decoder,
}

impl std::fmt::Debug for AvroValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroValues")
            .field("schema", &self.decoder.schema())
            .finish()
    }
}

impl AvroValues {
    /// Decodes values written with `writers` (schema id, Avro schema text)
    /// as `reader` (an Avro record schema).
    pub fn new(reader: &str, writers: &[(u32, String)]) -> Result<AvroValues, RegistryError> {
        let invalid = |e: arrow::error::ArrowError| RegistryError::InvalidSchema(e.to_string());
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        for (id, text) in writers {
            store
                .set(Fingerprint::Id(*id), AvroSchema::new(text.clone()))
                .map_err(invalid)?;
        }
        let decoder = ReaderBuilder::new()
            .with_writer_schema_store(store)
            .with_reader_schema(AvroSchema::new(reader.to_string()))
            .with_batch_size(BATCH_ROWS)
            .build_decoder()
            .map_err(invalid)?;
        Ok(AvroValues { decoder })
    }

    /// The Arrow schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.decoder.schema()
    }

    /// Decodes `values`, one record each, into batches (in order). After
    /// an error the decoder may hold part of a record: make a new one.
    pub fn decode<'a>(
        &mut self,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<RecordBatch>, RegistryError> {
        let mut out = Vec::new();
        let mut count = 0usize;
        for (i, value) in values.into_iter().enumerate() {
            count += 1;
            let bad = |detail: String| {
                RegistryError::InvalidSchema(format!("record {i} does not decode: {detail}"))
            };
            if value.len() <= 5 || value[0] != 0 {
                return Err(bad(
                    "not in the Confluent wire format (magic byte 0, a 4-byte schema id, then \
                     a non-empty Avro body)"
                        .into(),
                ));
            }
            let mut at = 0;
            while at < value.len() {
                if self.decoder.batch_is_full() {
                    // Full, or a new writer schema begins a new batch.
                    out.extend(self.flush()?);
                }
                let n = self
                    .decoder
                    .decode(&value[at..])
                    .map_err(|e| bad(e.to_string()))?;
                at += n;
                if n == 0 && !self.decoder.batch_is_full() {
                    break;
                }
            }
            if at != value.len() {
                return Err(bad(format!(
                    "its body ends early ({at} of {} bytes decode)",
                    value.len()
                )));
            }
        }
        out.extend(self.flush()?);
        let rows: usize = out.iter().map(RecordBatch::num_rows).sum();
        if rows != count {
            return Err(RegistryError::InvalidSchema(format!(
                "{count} values hold {rows} records: a value has bytes after its record"
            )));
        }
        Ok(out)
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, RegistryError> {
        self.decoder
            .flush()
            .map_err(|e| RegistryError::InvalidSchema(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
