//! Topics: streams with the Kafka record shape, created and dropped by the
//! Kafka door's admin calls with the same privilege checks and ownership
//! as `CREATE STREAM` and `DROP STREAM`.
//!
//! A Kafka-shaped stream has the columns `key BYTEA`, `value BYTEA`,
//! `headers` (a list of `{key TEXT, value BYTEA}`) and `timestamp
//! TIMESTAMPTZ`, the record's timestamp and the stream's event time. Any
//! other stream is read and written by Kafka clients as JSON values.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use streamhouse_log::{StreamInfo, StreamSpec};

use crate::database::Database;
use crate::error::{Result, SqlError};
use crate::privileges::{Need, Object, Privilege, SCHEMA};
use crate::session::Session;

pub const KEY: &str = "key";
pub const VALUE: &str = "value";
pub const HEADERS: &str = "headers";
pub const TIMESTAMP: &str = "timestamp";

/// How far the watermark of a topic trails its newest record timestamp.
pub const WATERMARK_DELAY: Duration = Duration::from_secs(5);

/// The fields of one header.
pub fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

/// The columns of a Kafka-shaped stream.
pub fn record_schema() -> SchemaRef {
    let header = Field::new("item", DataType::Struct(header_fields()), false);
    Arc::new(Schema::new(vec![
        Field::new(KEY, DataType::Binary, true),
        Field::new(VALUE, DataType::Binary, true),
        Field::new(HEADERS, DataType::List(Arc::new(header)), true),
        Field::new(
            TIMESTAMP,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// Whether a stream has the Kafka record shape.
pub fn is_record_shaped(info: &StreamInfo) -> bool {
    let want = record_schema();
    let have = &info.spec.schema;
    have.fields().len() == want.fields().len()
        && have
            .fields()
            .iter()
            .zip(want.fields())
            .all(|(h, w)| h.name() == w.name() && h.data_type() == w.data_type())
}

impl Database {
    /// Creates a Kafka-shaped stream of `partitions` partitions, kept for
    /// `retention` (forever when `None`), owned by the session's role,
    /// which needs CREATE on the schema.
    pub async fn create_topic(
        &self,
        session: &Session,
        name: &str,
        partitions: u32,
        retention: Option<Duration>,
    ) -> Result<()> {
        self.authorize_session(
            session,
            &[Need::Privilege(Privilege::Create, Object::schema(SCHEMA))],
        )
        .await?;
        if partitions == 0 {
            return Err(SqlError::InvalidDefinition(
                "a topic needs at least one partition".into(),
            ));
        }
        let mut spec = StreamSpec::new(name.to_string(), record_schema())
            .with_partitions(partitions)
            .with_event_time(TIMESTAMP.to_string(), WATERMARK_DELAY);
        if let Some(r) = retention {
            spec = spec.with_retention(r);
        }
        let info = self.log.create_stream(spec).await?;
        self.planner.register(info)?;
        self.record_owner(session, Object::table(name.to_string()))
            .await
    }

    /// Drops a stream as `DROP STREAM` does: the session's role needs DROP
    /// on it (its owner has it).
    pub async fn drop_topic(&self, session: &Session, name: &str) -> Result<()> {
        self.authorize_session(
            session,
            &[Need::Privilege(
                Privilege::Drop,
                Object::table(name.to_string()),
            )],
        )
        .await?;
        self.log.drop_stream(name).await?;
        self.planner.deregister(name)?;
        self.forget_grants(&[name.to_string()]).await
    }
}
