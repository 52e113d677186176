//! Streams that follow a registered subject: `CREATE STREAM s [(…)] WITH
//! (format = 'avro' | 'json_schema' | 'protobuf', subject = 's-value')`.
//! The stream's columns are the fields of the subject's latest schema (or
//! the listed subset of them; see `streamhouse_registry::values` for each
//! type); Kafka records' values in Confluent's wire format, written with
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

use std::sync::Arc;

use arrow::array::{Array, BinaryArray, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use streamhouse_log::{LogError, SchemaChange, StreamInfo};
use streamhouse_registry::formats::SchemaType;
use streamhouse_registry::registry::VersionInfo;
use streamhouse_registry::values::{ValueCodec, columns};
use streamhouse_registry::{Registry, RegistryError, VersionRef};

use crate::database::Database;
use crate::dialect::CreateStream;
use crate::error::{Result, SqlError};

pub(crate) mod codecs;
use codecs::Codec;

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
    pub schema_type: SchemaType,
    pub subject: String,
    /// The subject's version the columns are at.
    pub version: u32,
}

/// A `format` option's schema type.
fn schema_type_of(format: &str) -> Option<SchemaType> {
    match format {
        "avro" => Some(SchemaType::Avro),
        "json_schema" => Some(SchemaType::Json),
        "protobuf" => Some(SchemaType::Protobuf),
        _ => None,
    }
}

/// The subject a stream's schema follows, if it follows one.
pub fn follows(schema: &Schema) -> Option<Follows> {
    let m = schema.metadata();
    Some(Follows {
        schema_type: schema_type_of(m.get(FORMAT)?)?,
        subject: m.get(SUBJECT)?.clone(),
        version: m.get(SUBJECT_VERSION)?.parse().ok()?,
    })
}

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
             schema id, then the body)"
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
            (Some(f), Some(_)) if schema_type_of(f).is_some() => {}
            (Some(f), None) if schema_type_of(f).is_some() => {
                return Err(SqlError::InvalidDefinition(format!(
                    "format '{f}' needs the subject whose schema the stream follows: WITH \
                     (format = '{f}', subject = '…')"
                )));
            }
            (None | Some("json"), Some(_)) => {
                return Err(SqlError::InvalidDefinition(
                    "a subject needs its format: WITH (format = 'avro' | 'json_schema' | \
                     'protobuf', subject = '…')"
                        .into(),
                ));
            }
            (Some(other), _) => {
                return Err(SqlError::InvalidDefinition(format!(
                    "unknown format '{other}' (known: json, avro, json_schema, protobuf)"
                )));
            }
        }
        let format = format.unwrap_or_default();
        let schema_type = schema_type_of(format).unwrap_or(SchemaType::Avro);
        let subject = c.subject.clone().unwrap_or_default();
        let latest = self
            .registry()
            .version(&subject, VersionRef::Latest, false)
            .await
            .map_err(registry_error)?;
        if latest.schema_type != schema_type.name() {
            return Err(SqlError::InvalidDefinition(format!(
                "subject '{subject}' holds {} schemas, not {format}",
                latest.schema_type
            )));
        }
        let fields = self.columns_of(&latest).await?;
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
            (FORMAT.to_string(), format.to_string()),
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
            self.columns_of(&old).await?,
            self.columns_of(&latest).await?,
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
        let mut versions = Vec::new();
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
            if version.schema_type != f.schema_type.name() {
                continue;
            }
            if v == f.version {
                reader = Some(version.clone());
            }
            if version.references.is_empty() || f.schema_type != SchemaType::Avro {
                versions.push((id, version.schema));
            }
        }
        let Some(reader) = reader else {
            return Err(SqlError::UndefinedObject(format!(
                "version {} of subject '{}', which stream \"{}\" follows, is gone",
                f.version,
                f.subject,
                info.name()
            )));
        };
        let references = registry
            .referenced(&reader.references)
            .await
            .map_err(registry_error)?;
        let values = ValueCodec::new(
            f.schema_type,
            (reader.id as u32, &reader.schema),
            versions,
            &references,
        )
        .map_err(registry_error)?;
        let codec = Arc::new(Codec {
            stream_version: info.schema_version,
            values,
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
        if !ids.iter().all(|id| codec.values.knows(*id)) {
            info = self.follow(&info).await?;
            f = follows(&info.spec.schema).unwrap_or(f);
            codec = self.codec(&info, &f).await?;
            if let Some(id) = ids.iter().find(|id| !codec.values.knows(**id)) {
                return Err(SqlError::DataException(format!(
                    "schema id {id} is not a {} version of subject '{}', which stream \
                     \"{name}\" follows",
                    f.schema_type.name(),
                    f.subject
                )));
            }
        }
        let declared: SchemaRef = info.spec.schema.clone();
        let rows = codec
            .values
            .decode(values, &declared)
            .map_err(|e| SqlError::DataException(e.to_string()))?;
        Ok((info, rows))
    }

    /// The stream columns of a registered version.
    async fn columns_of(&self, v: &VersionInfo) -> Result<Schema> {
        let schema_type = SchemaType::parse(Some(&v.schema_type)).map_err(registry_error)?;
        if schema_type == SchemaType::Avro && !v.references.is_empty() {
            return Err(SqlError::NotSupported(format!(
                "version {} of subject '{}' names other schemas; a stream cannot follow an Avro \
                 schema with references yet",
                v.version, v.subject
            )));
        }
        let references = self
            .registry()
            .referenced(&v.references)
            .await
            .map_err(registry_error)?;
        columns(schema_type, &v.schema, &references).map_err(registry_error)
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
            .values
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
                schema_type: SchemaType::Avro,
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
