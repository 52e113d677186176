//! What statements produce: [`QueryResult`] (rows, a command tag, a COPY
//! in progress, a subscription), and the fixed result schemas of our own
//! statements.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::memory::MemoryStream;
use futures::stream::BoxStream;

use crate::copy::CopyIn;
use crate::error::Result;

/// What a command did, as each door reports it (PostgreSQL's command tag
/// through [`fmt::Display`], the affected rows for Flight SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandTag {
    /// Rows appended by INSERT.
    Insert(u64),
    /// Rows a table's UPDATE changed.
    Update(u64),
    /// Rows a table's DELETE removed.
    Delete(u64),
    Begin,
    Commit,
    Rollback,
    Savepoint,
    Release,
    RollbackToSavepoint,
    Set,
    Reset,
    CloseCursorAll,
    Unlisten,
    Deallocate,
    DeallocateAll,
    CreateStream,
    DropStream,
    AlterStream,
    CreateMaterializedView,
    DropMaterializedView,
    CreateSink,
    DropSink,
    CreateSource,
    DropSource,
    CreateTable,
    DropTable,
    CreateRole,
    AlterRole,
    DropRole,
    Grant,
    Revoke,
    GrantRole,
    RevokeRole,
}

impl CommandTag {
    /// Rows the command wrote, for the commands that count them.
    pub fn rows(&self) -> Option<u64> {
        match self {
            CommandTag::Insert(n) | CommandTag::Update(n) | CommandTag::Delete(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether the command starts (`Some(true)`) or ends (`Some(false)`) a
    /// transaction block.
    pub fn transaction(&self) -> Option<bool> {
        match self {
            CommandTag::Begin => Some(true),
            CommandTag::Commit | CommandTag::Rollback => Some(false),
            _ => None,
        }
    }

    /// The tag's first word(s), without a row count.
    pub fn word(&self) -> &'static str {
        match self {
            CommandTag::Insert(_) => "INSERT",
            CommandTag::Update(_) => "UPDATE",
            CommandTag::Delete(_) => "DELETE",
            CommandTag::Begin => "BEGIN",
            CommandTag::Commit => "COMMIT",
            CommandTag::Rollback => "ROLLBACK",
            CommandTag::Savepoint => "SAVEPOINT",
            CommandTag::Release => "RELEASE",
            // PostgreSQL's tag for ROLLBACK TO SAVEPOINT.
            CommandTag::RollbackToSavepoint => "ROLLBACK",
            CommandTag::Set => "SET",
            CommandTag::Reset => "RESET",
            CommandTag::CloseCursorAll => "CLOSE CURSOR ALL",
            CommandTag::Unlisten => "UNLISTEN",
            CommandTag::Deallocate => "DEALLOCATE",
            CommandTag::DeallocateAll => "DEALLOCATE ALL",
            CommandTag::CreateStream => "CREATE STREAM",
            CommandTag::DropStream => "DROP STREAM",
            CommandTag::AlterStream => "ALTER STREAM",
            CommandTag::CreateMaterializedView => "CREATE MATERIALIZED VIEW",
            CommandTag::DropMaterializedView => "DROP MATERIALIZED VIEW",
            CommandTag::CreateSink => "CREATE SINK",
            CommandTag::DropSink => "DROP SINK",
            CommandTag::CreateSource => "CREATE SOURCE",
            CommandTag::DropSource => "DROP SOURCE",
            CommandTag::CreateTable => "CREATE TABLE",
            CommandTag::DropTable => "DROP TABLE",
            CommandTag::CreateRole => "CREATE ROLE",
            CommandTag::AlterRole => "ALTER ROLE",
            CommandTag::DropRole => "DROP ROLE",
            CommandTag::Grant => "GRANT",
            CommandTag::Revoke => "REVOKE",
            CommandTag::GrantRole => "GRANT ROLE",
            CommandTag::RevokeRole => "REVOKE ROLE",
        }
    }
}

impl fmt::Display for CommandTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // PostgreSQL's INSERT tag carries an (always zero) oid.
            CommandTag::Insert(n) => write!(f, "INSERT 0 {n}"),
            CommandTag::Update(n) => write!(f, "UPDATE {n}"),
            CommandTag::Delete(n) => write!(f, "DELETE {n}"),
            other => f.write_str(other.word()),
        }
    }
}

/// What a statement produced.
pub enum QueryResult {
    /// Rows, produced lazily as the stream is polled.
    Rows(SendableRecordBatchStream),
    /// A push query's rows: each batch as soon as it is produced (a door
    /// sends it at once), until the client goes away.
    Subscription(SendableRecordBatchStream),
    /// A command's completion.
    Command(CommandTag),
    /// `COPY … FROM STDIN`: feed the client's data, then
    /// [`Database::finish_copy`].
    CopyIn(Box<CopyIn>),
    /// `COPY … TO STDOUT`: the encoded data, a chunk at a time.
    CopyOut {
        columns: usize,
        /// The data is in the binary format.
        binary: bool,
        data: BoxStream<'static, Result<Bytes>>,
    },
}

impl std::fmt::Debug for QueryResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryResult::Rows(s) => write!(f, "Rows({:?})", s.schema()),
            QueryResult::Subscription(s) => write!(f, "Subscription({:?})", s.schema()),
            QueryResult::Command(tag) => write!(f, "Command({tag})"),
            QueryResult::CopyIn(c) => write!(f, "{c:?}"),
            QueryResult::CopyOut { columns, .. } => write!(f, "CopyOut({columns} columns)"),
        }
    }
}

impl QueryResult {
    pub(crate) fn command(tag: CommandTag) -> Self {
        QueryResult::Command(tag)
    }

    pub(crate) fn rows(batch: RecordBatch) -> Result<Self> {
        let schema = batch.schema();
        Ok(QueryResult::Rows(Box::pin(MemoryStream::try_new(
            vec![batch],
            schema,
            None,
        )?)))
    }
}

/// `schema` with the PostgreSQL names where `names` has one.
pub(crate) fn rename(schema: &Schema, names: Option<&[Option<String>]>) -> SchemaRef {
    let Some(names) = names.filter(|n| n.len() == schema.fields().len()) else {
        return Arc::new(schema.clone());
    };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, n)| match n {
            Some(n) => f.as_ref().clone().with_name(n),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Columns of `SHOW STREAMS`.
pub fn show_streams_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("partitions", DataType::Int32, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("event_time", DataType::Utf8, true),
        Field::new("watermark_delay", DataType::Utf8, true),
        Field::new("retention", DataType::Utf8, true),
        Field::new("rows", DataType::Int64, false),
    ]))
}

/// Columns of `DESCRIBE`.
pub fn describe_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("column_name", DataType::Utf8, false),
        Field::new("data_type", DataType::Utf8, false),
        Field::new("is_nullable", DataType::Utf8, false),
        Field::new("note", DataType::Utf8, true),
    ]))
}
