//! What a stream is: its declared schema, partitions, key, event time and
//! retention, and the system columns every read adds.
//!
//! A [`StreamSpec`] is what a user asks for; it is validated once, at
//! creation. A [`StreamInfo`] is what the metadata store returns: the spec
//! plus the id that chunk rows reference. Ids are never reused, so a stream
//! dropped and created again under the same name never sees the old data.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::clock::Micros;
use crate::error::{LogError, Result};

/// Id of a stream in the metadata store.
pub type StreamId = i64;

/// Name of the partition system column (INT).
pub const PARTITION_COLUMN: &str = "_partition";
/// Name of the offset system column (BIGINT, dense per partition from 0).
pub const OFFSET_COLUMN: &str = "_offset";
/// Name of the append-time system column (TIMESTAMP WITH TIME ZONE).
pub const TIMESTAMP_COLUMN: &str = "_timestamp";

/// The longest retention or watermark delay: durations are stored as
/// microseconds in an `i64`, and a longer one would wrap (a retention of
/// 300,000 years read back as zero expired every chunk).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 4096;

/// The data type of `_timestamp`: microseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Whether `name` is one of the system columns.
pub fn is_system_column(name: &str) -> bool {
    matches!(name, PARTITION_COLUMN | OFFSET_COLUMN | TIMESTAMP_COLUMN)
}

/// Names beginning with this belong to the system: users can neither create
/// nor write such a stream, whatever door they use.
pub const RESERVED_PREFIX: &str = "__";

/// Field metadata holding a column's default (its text, cast to the
/// column's type): what rows written before the column was added read as,
/// and what writes that leave the column out store.
pub const DEFAULT_KEY: &str = "streamhouse.default";

/// Names of views' changelog streams begin with this.
pub const CHANGELOG_PREFIX: &str = "__changelog__";

/// Names of tables' logs begin with this: the log of table `t` is
/// `__table__t`, every write to `t` as a row.
pub const TABLE_PREFIX: &str = "__table__";

/// The column of a table's log that marks a row as the key's deletion
/// (a tombstone).
pub const TABLE_DELETED_COLUMN: &str = "__deleted";

/// The name of table `table`'s log.
pub fn table_log_name(table: &str) -> String {
    format!("{TABLE_PREFIX}{table}")
}

/// Whose a stream is. The kind is a function of the name (internal streams
/// live under [`RESERVED_PREFIX`], which users cannot create), so it needs
/// no column of its own and cannot disagree with the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Created and written by users.
    User,
    /// A materialized view's changelog, written only by the view.
    ViewChangelog,
    /// A table's log: written through the table's statements (INSERT,
    /// UPDATE, DELETE, COPY), read by the view that keeps its rows by key.
    Table,
    /// Any other stream the system keeps for itself.
    System,
}

impl StreamKind {
    /// The kind of the stream called `name`.
    pub fn of(name: &str) -> Self {
        if name.starts_with(CHANGELOG_PREFIX) {
            StreamKind::ViewChangelog
        } else if name.starts_with(TABLE_PREFIX) {
            StreamKind::Table
        } else if name.starts_with(RESERVED_PREFIX) {
            StreamKind::System
        } else {
            StreamKind::User
        }
    }

    /// The kind's name in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::User => "user",
            StreamKind::ViewChangelog => "view_changelog",
            StreamKind::Table => "table",
            StreamKind::System => "system",
        }
    }

    /// Whether streams of this kind belong to the system.
    pub fn is_internal(self) -> bool {
        !matches!(self, StreamKind::User)
    }
}

/// A stream as a user defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    /// Unique name.
    pub name: String,
    /// Declared columns (no system columns).
    pub schema: SchemaRef,
    /// Number of partitions, at least 1.
    pub partitions: u32,
    /// Columns hashed to choose a partition; empty means round-robin.
    pub key: Vec<String>,
    /// Event-time column and its watermark delay.
    pub event_time: Option<EventTime>,
    /// How long data is kept; `None` keeps it forever.
    pub retention: Option<Duration>,
    /// Rows older than this are kept as Parquet (the stream's archive,
    /// still read at their offsets); `None` keeps every chunk as written.
    pub archive_after: Option<Duration>,
}

/// The event-time column of a stream and how far the watermark trails it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    pub column: String,
    pub watermark_delay: Duration,
}

impl StreamSpec {
    /// A spec with one partition, no key, no event time, kept forever.
    pub fn new(name: impl Into<String>, schema: SchemaRef) -> Self {
        Self {
            name: name.into(),
            schema,
            partitions: 1,
            key: Vec::new(),
            event_time: None,
            retention: None,
            archive_after: None,
        }
    }

    /// Sets the partition count.
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sets the key columns.
    pub fn with_key<S: Into<String>>(mut self, key: impl IntoIterator<Item = S>) -> Self {
        self.key = key.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the event-time column and watermark delay.
    pub fn with_event_time(mut self, column: impl Into<String>, delay: Duration) -> Self {
        self.event_time = Some(EventTime {
            column: column.into(),
            watermark_delay: delay,
        });
        self
    }

    /// Sets the retention.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Sets the age after which rows go into the archive (Parquet).
    pub fn with_archive_after(mut self, age: Duration) -> Self {
        self.archive_after = Some(age);
        self
    }

    /// Checks the spec; every rule a stream must satisfy lives here.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(LogError::InvalidSpec(m));
        if self.name.is_empty() || self.name.len() > 255 {
            return invalid("a stream name must have 1 to 255 characters".into());
        }
        if self.name.chars().any(|c| c.is_control()) {
            return invalid("a stream name must not contain control characters".into());
        }
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return invalid(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, got {}",
                self.partitions
            ));
        }
        if self.schema.fields().is_empty() {
            return invalid("a stream needs at least one column".into());
        }
        let mut seen = std::collections::HashSet::new();
        for field in self.schema.fields() {
            if is_system_column(field.name()) {
                return invalid(format!(
                    "column name \"{}\" is reserved for a system column",
                    field.name()
                ));
            }
            if !seen.insert(field.name().as_str()) {
                return invalid(format!("column \"{}\" is declared twice", field.name()));
            }
        }
        for k in &self.key {
            let field = self.schema.field_with_name(k).map_err(|_| {
                LogError::InvalidSpec(format!("key column \"{k}\" is not a column of the stream"))
            })?;
            if !crate::partitioner::is_hashable(field.data_type()) {
                return invalid(format!(
                    "key column \"{k}\" has type {} which cannot be hashed for partitioning",
                    field.data_type()
                ));
            }
        }
        if let Some(et) = &self.event_time {
            let field = self.schema.field_with_name(&et.column).map_err(|_| {
                LogError::InvalidSpec(format!(
                    "event-time column \"{}\" is not a column of the stream",
                    et.column
                ))
            })?;
            if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
                return invalid(format!(
                    "event-time column \"{}\" must be a TIMESTAMP, not {}",
                    et.column,
                    field.data_type()
                ));
            }
            if et.watermark_delay > MAX_DURATION {
                return invalid(format!(
                    "a watermark delay must be at most {} days",
                    MAX_DURATION.as_secs() / 86_400
                ));
            }
        }
        if let Some(r) = self.retention
            && (r > MAX_DURATION || r.is_zero())
        {
            return invalid(format!(
                "retention must be between 1 µs and {} days (leave it out to keep data forever)",
                MAX_DURATION.as_secs() / 86_400
            ));
        }
        if let Some(a) = self.archive_after
            && (a > MAX_DURATION || a.is_zero())
        {
            return invalid(format!(
                "archive_after must be between 1 µs and {} days",
                MAX_DURATION.as_secs() / 86_400
            ));
        }
        Ok(())
    }
}

/// A stream as stored: its spec plus its id.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub id: StreamId,
    pub spec: StreamSpec,
    /// When it was created (µs since epoch).
    pub created_at: Micros,
    /// The version of `spec.schema` (1: the schema it was created with).
    /// Chunks record the version they were written with.
    pub schema_version: u32,
}

/// One version of a stream's schema, as the metadata store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaVersion {
    pub stream_id: StreamId,
    pub version: u32,
    /// The declared columns.
    pub schema: SchemaRef,
    /// What made this version (`CREATE STREAM` for version 1).
    pub change: String,
    /// When (µs since epoch).
    pub created_at: Micros,
}

impl StreamInfo {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Schema of what reads return: the declared columns followed by
    /// `_partition`, `_offset` and `_timestamp`.
    pub fn read_schema(&self) -> SchemaRef {
        read_schema(&self.spec.schema)
    }

    /// Index of the event-time column in the declared schema.
    pub fn event_time_index(&self) -> Option<usize> {
        let et = self.spec.event_time.as_ref()?;
        self.spec.schema.index_of(&et.column).ok()
    }

    /// Indices of the key columns in the declared schema.
    pub fn key_indices(&self) -> Vec<usize> {
        self.spec
            .key
            .iter()
            .filter_map(|k| self.spec.schema.index_of(k).ok())
            .collect()
    }
}

/// `len` copies of `field`'s default ([`DEFAULT_KEY`]), or `None` when it
/// has none; a default that is not a value of the column's type is an
/// error.
pub fn default_array(field: &Field, len: usize) -> Result<Option<arrow::array::ArrayRef>> {
    let Some(text) = field.metadata().get(DEFAULT_KEY) else {
        return Ok(None);
    };
    let one = arrow::array::StringArray::from(vec![text.as_str()]);
    let value = arrow::compute::cast_with_options(
        &one,
        field.data_type(),
        &arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        },
    )
    .map_err(|e| {
        LogError::InvalidSpec(format!(
            "default '{text}' of column \"{}\" is not a {}: {e}",
            field.name(),
            field.data_type()
        ))
    })?;
    if value.is_null(0) {
        return Ok(Some(arrow::array::new_null_array(field.data_type(), len)));
    }
    let indices = arrow::array::UInt32Array::from(vec![0u32; len]);
    Ok(Some(arrow::compute::take(&value, &indices, None)?))
}

/// The declared schema followed by the three system columns.
pub fn read_schema(declared: &Schema) -> SchemaRef {
    with_columns(
        declared,
        [
            Field::new(PARTITION_COLUMN, DataType::Int32, false),
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
            Field::new(TIMESTAMP_COLUMN, timestamp_type(), false),
        ],
    )
}

/// Schema of a stored chunk: the declared columns followed by `_timestamp`
/// (append time is fixed when a row is accepted; offsets are not, since they
/// are assigned at commit, after the bytes are written).
pub fn chunk_schema(declared: &Schema) -> SchemaRef {
    with_columns(
        declared,
        [Field::new(TIMESTAMP_COLUMN, timestamp_type(), false)],
    )
}

/// The schema of a sparse chunk (a table's log compacted by key): the
/// chunk schema and each row's offset last, as [`OFFSET_COLUMN`].
pub fn sparse_chunk_schema(declared: &Schema) -> SchemaRef {
    with_columns(
        declared,
        [
            Field::new(TIMESTAMP_COLUMN, timestamp_type(), false),
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
        ],
    )
}

fn with_columns<const N: usize>(declared: &Schema, extra: [Field; N]) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = declared.fields().iter().cloned().collect();
    fields.extend(extra.into_iter().map(Arc::new));
    Arc::new(Schema::new_with_metadata(
        fields,
        declared.metadata().clone(),
    ))
}

/// Serializes a schema as an Arrow IPC stream holding only the schema
/// message: a stable, self-describing format for the metadata store.
pub fn encode_schema(schema: &Schema) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, schema)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

/// Inverse of [`encode_schema`].
pub fn decode_schema(bytes: &[u8]) -> Result<SchemaRef> {
    let reader = StreamReader::try_new(bytes, None)?;
    Ok(reader.schema())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("user", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    #[test]
    fn schema_round_trips_through_ipc() {
        let s = schema();
        assert_eq!(decode_schema(&encode_schema(&s).unwrap()).unwrap(), s);
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = StreamSpec::new("orders", schema())
            .with_partitions(4)
            .with_key(["user"])
            .with_event_time("ts", Duration::from_secs(5));
        ok.validate().unwrap();

        let err = |spec: StreamSpec| spec.validate().unwrap_err().to_string();
        assert!(err(ok.clone().with_partitions(0)).contains("partitions"));
        assert!(err(ok.clone().with_key(["nope"])).contains("\"nope\""));
        assert!(
            err(ok.clone().with_event_time("user", Duration::ZERO)).contains("must be a TIMESTAMP")
        );
        let reserved = Arc::new(Schema::new(vec![Field::new(
            "_offset",
            DataType::Int64,
            false,
        )]));
        assert!(err(StreamSpec::new("s", reserved)).contains("reserved"));
        assert!(err(StreamSpec::new("", schema())).contains("name"));
    }

    #[test]
    fn read_schema_appends_system_columns() {
        let names: Vec<_> = read_schema(&schema())
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            ["id", "user", "ts", "_partition", "_offset", "_timestamp"]
        );
    }
}
