//! Bulk ingest of Arrow batches into a stream (Flight SQL's
//! `CommandStatementIngest`, ADBC's `adbc_ingest`), and binding Arrow
//! parameter rows to prepared statements.
//!
//! Ingest matches columns by name, casts them to the stream's types like
//! INSERT does, and appends everything as one atomic append: all rows become
//! visible together, or none do.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use streamhouse_log::{LogError, StreamKind, StreamSpec};

use crate::database::Database;
use crate::error::{Result, SqlError};
use crate::insert::conform_insert;
use crate::prepared::Prepared;
use crate::privileges::{Need, Object, Privilege};
use crate::session::Session;
use crate::transaction::BlockState;

/// What ingest does when the stream exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    Fail,
    Append,
    /// Drop it and create it anew from the incoming schema.
    Replace,
}

/// How an ingest treats the target stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestMode {
    /// Create the stream from the incoming schema when it does not exist.
    pub create: bool,
    pub if_exists: IfExists,
}

/// The Arrow type a created stream stores for an incoming column type.
fn stored_type(t: &DataType) -> DataType {
    match t {
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, v) => stored_type(v),
        other => other.clone(),
    }
}

impl Database {
    /// Appends `batches` (all of `schema`) to `stream` as one append and
    /// returns the rows written. In a transaction block the rows wait for
    /// its COMMIT, and creating or replacing the stream is refused (25001).
    pub async fn ingest(
        &self,
        session: &Session,
        stream: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        mode: IngestMode,
    ) -> Result<u64> {
        let result = self
            .ingest_rows(session, stream, schema, batches, mode)
            .await;
        if let Err(e) = &result
            && !matches!(e, SqlError::ActiveTransaction(_))
        {
            session.transaction().fail();
        }
        result
    }

    async fn ingest_rows(
        &self,
        session: &Session,
        stream: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        mode: IngestMode,
    ) -> Result<u64> {
        if session.transaction().state() == BlockState::Failed {
            return Err(SqlError::InFailedTransaction);
        }
        if StreamKind::of(stream).is_internal() {
            return Err(LogError::ReservedName(stream.to_string()).into());
        }
        let exists = match self.log().stream(stream).await {
            Ok(_) => true,
            Err(LogError::UnknownStream(_)) => false,
            Err(e) => return Err(e.into()),
        };
        let in_block = session.transaction().state() != BlockState::Idle;
        let creates = match (exists, mode.if_exists) {
            (true, IfExists::Replace) => true,
            (false, _) => mode.create,
            _ => false,
        };
        if in_block && creates {
            return Err(SqlError::ActiveTransaction(
                "an ingest that creates or replaces a stream cannot run inside a transaction \
                 block: it could not be rolled back"
                    .into(),
            ));
        }
        if creates && session.role().is_some() {
            let mut needs = vec![Need::Privilege(
                Privilege::Create,
                Object::schema(crate::privileges::SCHEMA),
            )];
            if exists {
                needs.push(Need::Privilege(Privilege::Drop, Object::table(stream)));
            }
            self.authorize_session(session, &needs).await?;
        }
        match (exists, mode.if_exists) {
            (true, IfExists::Fail) => {
                return Err(SqlError::DuplicateTable(stream.to_string()));
            }
            (true, IfExists::Replace) => {
                self.log().drop_stream(stream).await?;
                self.planner.deregister(stream)?;
                self.forget_grants(&[stream.to_string()]).await?;
                self.create_from_schema(stream, &schema).await?;
                self.record_owner(session, Object::table(stream)).await?;
            }
            (true, IfExists::Append) => {}
            (false, _) if mode.create => {
                self.create_from_schema(stream, &schema).await?;
                self.record_owner(session, Object::table(stream)).await?;
            }
            (false, _) => {
                return Err(SqlError::UndefinedTable(stream.to_string()));
            }
        }
        let info = self.log().stream(stream).await?;
        let declared = &info.spec.schema;
        let targets = schema
            .fields()
            .iter()
            .map(|f| {
                declared
                    .index_of(f.name())
                    .or_else(|_| declared.index_of(&f.name().to_lowercase()))
                    .map_err(|_| {
                        SqlError::UndefinedColumn(format!(
                            "column \"{}\" of stream \"{stream}\" does not exist",
                            f.name()
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = batches
            .iter()
            .map(|b| conform_insert(stream, declared, &targets, b))
            .collect::<Result<Vec<_>>>()?;
        self.write(session, stream, crate::prepared::Verb::Insert, rows)
            .await
    }

    async fn create_from_schema(&self, stream: &str, schema: &Schema) -> Result<()> {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), stored_type(f.data_type()), f.is_nullable()))
            .collect();
        let info = self
            .log()
            .create_stream(StreamSpec::new(
                stream.to_string(),
                Arc::new(Schema::new(fields)),
            ))
            .await?;
        self.planner.register(info)
    }
}

impl Prepared {
    /// Row `row` of an Arrow parameter batch as this statement's parameter
    /// values, cast to the inferred parameter types.
    pub fn params_from_row(&self, batch: &RecordBatch, row: usize) -> Result<Vec<ScalarValue>> {
        if batch.num_columns() != self.param_types.len() {
            return Err(SqlError::Syntax(format!(
                "{} parameters were bound, but the prepared statement requires {}",
                batch.num_columns(),
                self.param_types.len()
            )));
        }
        batch
            .columns()
            .iter()
            .zip(&self.param_types)
            .enumerate()
            .map(|(i, (col, want))| {
                let v = ScalarValue::try_from_array(col, row)?;
                match want {
                    Some(t) if &v.data_type() != t => v.cast_to(t).map_err(|e| {
                        SqlError::InvalidInput(format!(
                            "parameter ${} ({}) cannot be used as {t}: {e}",
                            i + 1,
                            v.data_type()
                        ))
                    }),
                    _ => Ok(v),
                }
            })
            .collect()
    }

    /// The parameters as an Arrow schema (`$1…$n`; text where the type
    /// could not be inferred).
    pub fn param_schema(&self) -> Schema {
        Schema::new(
            self.param_types
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Field::new(
                        format!("${}", i + 1),
                        t.clone().unwrap_or(DataType::Utf8),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        )
    }
}
