//! Streams that follow a registered subject: `CREATE STREAM s [(…)] WITH
//! (format = 'avro', subject = 's-value')`. The stream's columns are the
//! fields of the subject's latest Avro schema (or the listed subset of
//! them); Kafka records' values in Confluent's wire format, written with
//! any version of the subject, are decoded into those columns, and rows
//! read through the Kafka door are encoded with the version the stream
//! follows, under its id.
//!
//! A new version of the subject *evolves* the stream, as `ALTER STREAM`
//! would, in one schema version: a field it adds becomes a column (its
//! default the column's; not for a stream created with a list of columns,
//! which keeps to them), a field whose type widens widens its column, and
//! a column whose field is gone may hold NULL from then on. The version the
//! stream follows is a property of its schema, so every agent reads the
//! same one. Streams follow when a version is registered through this
//! server's registry, and when a produced value names a version newer than
//! the one followed (a schema registered elsewhere, or by another agent).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, BinaryArray, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use streamhouse_log::{LogError, SchemaChange, StreamId, StreamInfo};
use streamhouse_registry::columns::{avro_columns, conform};
use streamhouse_registry::decode::AvroValues;
use streamhouse_registry::encode::AvroEncoder;
use streamhouse_registry::{Registry, RegistryError, VersionRef};

use crate::database::Database;
use crate::dialect::CreateStream;
use crate::error::{Result, SqlError};

/// Schema properties of a stream that follows a subject.
const FORMAT: &str = "streamhouse.property.format";
const SUBJECT: &str = "streamhouse.property.subject";
const SUBJECT_VERSION: &str = "streamhouse.property.subject_version";
/// `listed` when the stream was created with a list of columns: fields a
/// later version adds are not added to it.
const COLUMNS: &str = "streamhouse.property.columns";

/// What a stream follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follows {
    pub subject: String,
    /// The subject's version the columns are at.
    pub version: u32,
}

/// The subject a stream's schema follows, if it follows one.
pub fn follows(schema: &Schema) -> Option<Follows> {
    let m = schema.metadata();
    if m.get(FORMAT).map(String::as_str) != Some("avro") {
        return None;
    }
    Some(Follows {
        subject: m.get(SUBJECT)?.clone(),
        version: m.get(SUBJECT_VERSION)?.parse().ok()?,
    })
}

/// How values of one stream decode and encode, at one schema version of
/// the stream.
struct Codec {
    /// The stream's schema version this was made for.
    stream_version: u32,
    /// The followed version's schema: what values are resolved to.
    reader: String,
    /// Every version of the subject (id, schema), deleted ones too: values
    /// written with any of them are read.
    writers: Vec<(u32, String)>,
    encoder: AvroEncoder,
}

/// Codecs by stream (made again when the stream's schema changes).
#[derive(Default)]
pub struct Codecs(Mutex<HashMap<StreamId, Arc<Codec>>>);

fn registry_error(e: RegistryError) -> SqlError {
    match e {
        RegistryError::SubjectNotFound(_)
        | RegistryError::VersionNotFound { .. }
        | RegistryError::SchemaNotFound(_) => SqlError::UndefinedObject(e.to_string()),
        RegistryError::Store(e) => e.into(),
        RegistryError::Unsupported(m) => SqlError::NotSupported(m),
        other => SqlError::InvalidDefinition(other.to_string()),
    }
}

/// A value's schema id, from its Confluent framing.
fn schema_id(i: usize, value: &[u8]) -> Result<u32> {
    match value {
        [0, a, b, c, d, _, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(SqlError::DataException(format!(
            "record {i}: its value is not in the Confluent wire format (magic byte 0, a 4-byte \
             schema id, then the Avro body)"
        ))),
    }
}

impl Database {
    /// The registry, over this database's metadata store.
    pub fn registry(&self) -> Registry {
        Registry::new(self.log.metadata().clone())
    }

    /// The declared schema of a `CREATE STREAM` that names a format: the
    /// columns it lists, checked against the subject's latest schema, or
    /// that schema's fields; with the properties that make it follow.
    pub(crate) async fn followed_schema(&self, c: &CreateStream) -> Result<Option<Schema>> {
        let format = c.format.as_deref();
        match (format, &c.subject) {
            (None | Some("json"), None) => {
                if c.columns.is_empty() {
                    return Err(SqlError::InvalidDefinition(
                        "a stream needs columns, or WITH (format = 'avro', subject = '…') to \
                         take them from a registered schema"
                            .into(),
                    ));
                }
                return Ok(None);
            }
            (Some("avro"), Some(_)) => {}
            (Some("avro"), None) => {
                return Err(SqlError::InvalidDefinition(
                    "format 'avro' needs the subject whose schema the stream follows: WITH \
                     (format = 'avro', subject = '…')"
                        .into(),
                ));
            }
            (None | Some("json"), Some(_)) => {
                return Err(SqlError::InvalidDefinition(
                    "a subject needs its format: WITH (format = 'avro', subject = '…')".into(),
                ));
            }
            (Some(f @ ("protobuf" | "json_schema")), _) => {
                return Err(SqlError::NotSupported(format!(
                    "format '{f}' is not supported yet: streams follow Avro subjects"
                )));
            }
            (Some(other), _) => {
                return Err(SqlError::InvalidDefinition(format!(
                    "unknown format '{other}' (known: json, avro)"
                )));
            }
        }
        let subject = c.subject.clone().unwrap_or_default();
        let latest = self
            .registry()
            .version(&subject, VersionRef::Latest, false)
            .await
            .map_err(registry_error)?;
        if latest.schema_type != "AVRO" {
            return Err(SqlError::NotSupported(format!(
                "subject '{subject}' holds {} schemas; streams follow Avro subjects",
                latest.schema_type
            )));
        }
        if !latest.references.is_empty() {
            return Err(SqlError::NotSupported(format!(
                "subject '{subject}' version {} names other schemas; a stream cannot follow a \
                 schema with references yet",
                latest.version
            )));
        }
        let fields = avro_columns(&latest.schema).map_err(registry_error)?;
        let mut columns: Vec<Field> = Vec::new();
        if c.columns.is_empty() {
            columns = fields.fields().iter().map(|f| f.as_ref().clone()).collect();
        } else {
            for col in &c.columns {
                let (dt, _) = crate::types::arrow_type(&col.data_type)?;
                let name = &col.name.value;
                let Ok(field) = fields.field_with_name(name) else {
                    return Err(SqlError::UndefinedColumn(format!(
                        "column \"{name}\" is not a field of subject '{subject}' version {}",
                        latest.version
                    )));
                };
                if !arrow::compute::can_cast_types(field.data_type(), &dt) {
                    return Err(SqlError::DatatypeMismatch(format!(
                        "column \"{name}\" is {}, but the field is {}",
                        crate::types::sql_type_name(&Field::new("", dt, true)),
                        crate::types::sql_type_name(field)
                    )));
                }
                columns.push(
                    Field::new(name, dt, field.is_nullable())
                        .with_metadata(field.metadata().clone()),
                );
            }
        }
        let properties = [
            (FORMAT.to_string(), "avro".to_string()),
            (SUBJECT.to_string(), subject),
            (SUBJECT_VERSION.to_string(), latest.version.to_string()),
            (
                COLUMNS.to_string(),
                if c.columns.is_empty() {
                    "all"
                } else {
                    "listed"
                }
                .to_string(),
            ),
        ];
        Ok(Some(Schema::new_with_metadata(
            columns,
            properties.into_iter().collect(),
        )))
    }

    /// Evolves every stream that follows `subject` to its latest version;
    /// the names of those that changed. A stream that cannot follow (the
    /// change is not one its columns can make) is left as it is and named
    /// in the error, after the others have followed.
    pub async fn follow_subject(&self, subject: &str) -> Result<Vec<String>> {
        let mut changed = Vec::new();
        let mut failed = Vec::new();
        for info in self.log.streams().await? {
            if follows(&info.spec.schema).is_some_and(|f| f.subject == subject) {
                match self.follow(&info).await {
                    Ok(new) if new.schema_version != info.schema_version => {
                        changed.push(info.name().to_string())
                    }
                    Ok(_) => {}
                    Err(e) => failed.push(format!("\"{}\": {e}", info.name())),
                }
            }
        }
        if !failed.is_empty() {
            return Err(SqlError::NotSupported(format!(
                "cannot follow subject '{subject}': {}",
                failed.join("; ")
            )));
        }
        Ok(changed)
    }

    /// Stream `info` at its subject's latest version (itself when it is
    /// there already).
    async fn follow(&self, info: &StreamInfo) -> Result<Arc<StreamInfo>> {
        let name = info.name().to_string();
        let Some(f) = follows(&info.spec.schema) else {
            return self.log.stream(&name).await.map_err(Into::into);
        };
        let registry = self.registry();
        let latest = registry
            .version(&f.subject, VersionRef::Latest, false)
            .await
            .map_err(registry_error)?;
        if latest.version <= f.version {
            return self.log.stream(&name).await.map_err(Into::into);
        }
        let old = registry
            .version(&f.subject, VersionRef::Number(f.version), true)
            .await
            .map_err(registry_error)?;
        let (was, will) = (
            avro_columns(&old.schema).map_err(registry_error)?,
            avro_columns(&latest.schema).map_err(registry_error)?,
        );
        let schema = &info.spec.schema;
        let listed = schema.metadata().get(COLUMNS).map(String::as_str) == Some("listed");
        let mut changes = Vec::new();
        for field in will.fields() {
            let before = was.field_with_name(field.name()).ok();
            match (before, schema.field_with_name(field.name()).ok()) {
                // A new field: a new column (unless one has its name).
                (None, None) if !listed => {
                    changes.push(SchemaChange::AddColumn(field.as_ref().clone()))
                }
                // A field whose type changed: its column follows, unless
                // it was declared with a type of its own.
                (Some(b), Some(column))
                    if b.data_type() != field.data_type()
                        && column.data_type() == b.data_type() =>
                {
                    changes.push(SchemaChange::AlterType {
                        column: field.name().clone(),
                        to: Field::new("", field.data_type().clone(), true),
                    });
                }
                _ => {}
            }
        }
        for field in was.fields() {
            if will.field_with_name(field.name()).is_err()
                && schema
                    .field_with_name(field.name())
                    .is_ok_and(|c| !c.is_nullable())
            {
                changes.push(SchemaChange::DropNotNull(field.name().clone()));
            }
        }
        for change in &changes {
            if matches!(change, SchemaChange::AddColumn(_)) {
                continue;
            }
            let column = change.column().unwrap_or_default();
            let readers = self.views().readers_of_column(info, column).await?;
            if !readers.is_empty() {
                return Err(SqlError::DependentObjects(format!(
                    "version {} of subject '{}' changes column \"{column}\" of stream \"{name}\", \
                     which materialized view(s) {} read",
                    latest.version,
                    f.subject,
                    readers.join(", ")
                )));
            }
        }
        changes.push(SchemaChange::SetProperty {
            key: SUBJECT_VERSION.to_string(),
            value: latest.version.to_string(),
        });
        let text = format!(
            "follows version {} of subject '{}'",
            latest.version, f.subject
        );
        match self.log.alter_stream(&name, &changes, &text).await {
            Ok(new) => {
                self.planner.deregister(&name)?;
                self.planner.register(new.clone())?;
                Ok(new)
            }
            // Another agent followed first: its version is the same.
            Err(LogError::SchemaChanged { .. }) => {
                let now = self.log.stream(&name).await?;
                match follows(&now.spec.schema) {
                    Some(g) if g.version >= latest.version => {
                        self.planner.deregister(&name)?;
                        self.planner.register(now.clone())?;
                        Ok(now)
                    }
                    _ => Err(SqlError::Conflict(format!(
                        "stream \"{name}\" changed while following subject '{}'",
                        f.subject
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The codec of stream `info`, made again when its schema changed.
    async fn codec(&self, info: &StreamInfo, f: &Follows) -> Result<Arc<Codec>> {
        if let Some(c) = self.codecs.0.lock().expect("codecs").get(&info.id)
            && c.stream_version == info.schema_version
        {
            return Ok(c.clone());
        }
        let registry = self.registry();
        let mut writers = Vec::new();
        let mut reader = None;
        for v in registry
            .versions(&f.subject, true)
            .await
            .map_err(registry_error)?
        {
            let version = registry
                .version(&f.subject, VersionRef::Number(v), true)
                .await
                .map_err(registry_error)?;
            let id = u32::try_from(version.id).map_err(|_| {
                SqlError::Internal(format!("schema id {} out of range", version.id))
            })?;
            if v == f.version {
                reader = Some((id, version.schema.clone()));
            }
            if version.references.is_empty() && version.schema_type == "AVRO" {
                writers.push((id, version.schema));
            }
        }
        let Some((id, reader)) = reader else {
            return Err(SqlError::UndefinedObject(format!(
                "version {} of subject '{}', which stream \"{}\" follows, is gone",
                f.version,
                f.subject,
                info.name()
            )));
        };
        let codec = Arc::new(Codec {
            stream_version: info.schema_version,
            encoder: AvroEncoder::new(id, &reader).map_err(registry_error)?,
            reader,
            writers,
        });
        self.codecs
            .0
            .lock()
            .expect("codecs")
            .insert(info.id, codec.clone());
        Ok(codec)
    }

    /// Kafka record values produced to stream `name`, which follows a
    /// subject, as rows of it (and the stream they are rows of: it follows
    /// a newer version first when a value names one). Every value must
    /// decode, or nothing is: the error names the first that does not.
    pub async fn decode_values(
        &self,
        name: &str,
        values: &BinaryArray,
    ) -> Result<(Arc<StreamInfo>, RecordBatch)> {
        let mut info = self.log.stream(name).await?;
        let Some(mut f) = follows(&info.spec.schema) else {
            return Err(SqlError::Internal(format!(
                "stream \"{name}\" follows no subject"
            )));
        };
        if values.null_count() > 0 {
            return Err(SqlError::DataException(
                "a record without a value cannot be a row of a stream that follows a subject"
                    .into(),
            ));
        }
        let mut ids = Vec::new();
        for (i, value) in values.iter().flatten().enumerate() {
            let id = schema_id(i, value)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut codec = self.codec(&info, &f).await?;
        let known = |c: &Codec| ids.iter().all(|id| c.writers.iter().any(|(w, _)| w == id));
        if !known(&codec) {
            info = self.follow(&info).await?;
            f = follows(&info.spec.schema).unwrap_or(f);
            codec = self.codec(&info, &f).await?;
            if let Some(id) = ids
                .iter()
                .find(|id| !codec.writers.iter().any(|(w, _)| w == *id))
            {
                return Err(SqlError::DataException(format!(
                    "schema id {id} is not an Avro version of subject '{}', which stream \
                     \"{name}\" follows",
                    f.subject
                )));
            }
        }
        let mut decoder = AvroValues::new(&codec.reader, &codec.writers).map_err(registry_error)?;
        let batches = decoder
            .decode(values.iter().flatten())
            .map_err(|e| SqlError::DataException(e.to_string()))?;
        let declared: SchemaRef = info.spec.schema.clone();
        let mut rows = Vec::with_capacity(batches.len());
        for b in &batches {
            rows.push(conform(b, &declared).map_err(|e| SqlError::DataException(e.to_string()))?);
        }
        let rows = arrow::compute::concat_batches(&declared, &rows)?;
        Ok((info, rows))
    }

    /// Rows of stream `info`, which follows a subject, as Kafka record
    /// values of the version it follows, under that version's id.
    pub async fn encode_rows(&self, info: &StreamInfo, rows: &RecordBatch) -> Result<BinaryArray> {
        let Some(f) = follows(&info.spec.schema) else {
            return Err(SqlError::Internal(format!(
                "stream \"{}\" follows no subject",
                info.name()
            )));
        };
        let codec = self.codec(info, &f).await?;
        codec
            .encoder
            .encode(rows)
            .map_err(|e| SqlError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_stream_follows_is_a_settable_property_of_its_schema() {
        for key in [FORMAT, SUBJECT, SUBJECT_VERSION, COLUMNS] {
            assert!(
                key.starts_with(streamhouse_log::evolve::PROPERTY_PREFIX),
                "{key}"
            );
        }
        let schema = |pairs: &[(&str, &str)]| {
            Schema::new_with_metadata(
                Vec::<Field>::new(),
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(
            follows(&schema(&[
                (FORMAT, "avro"),
                (SUBJECT, "o-value"),
                (SUBJECT_VERSION, "3")
            ])),
            Some(Follows {
                subject: "o-value".into(),
                version: 3
            })
        );
        assert_eq!(follows(&schema(&[(SUBJECT, "o-value")])), None);
    }

    #[test]
    fn values_must_carry_the_confluent_framing() {
        assert_eq!(schema_id(0, &[0, 0, 0, 1, 2, 9]).unwrap(), 258);
        for bad in [&b""[..], &[0, 0, 0, 0, 1], &[1, 0, 0, 0, 1, 9]] {
            let e = schema_id(4, bad).unwrap_err();
            assert!(e.to_string().contains("record 4"), "{e}");
        }
    }
}
