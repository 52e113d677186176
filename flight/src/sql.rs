//! The Flight SQL service: statements through the same [`Database`] the
//! PostgreSQL door uses.
//!
//! `GetFlightInfo(CommandStatementQuery)` plans the query (so errors and
//! the result schema come back at once) and answers one endpoint whose
//! ticket carries the SQL; `DoGet` on that ticket runs it and streams the
//! batches. A command sent that way (DDL, INSERT) runs at once and answers
//! an empty schema with no endpoints. `DoPut(CommandStatementUpdate)` runs
//! INSERT and DDL and answers the row count.
//!
//! Prepared statements (see [`crate::prepared`]) take `?` or `$n`
//! placeholders, answer their exact result schema (empty for commands) and
//! parameter schema, take parameter rows by `DoPut`, and run once per row.
//! `DoPut(CommandStatementIngest)` appends a whole upload as one append.
//!
//! Transactions (see [`crate::transactions`]): `BeginTransaction` answers
//! an id; every statement, prepared statement and ingest that names it runs
//! in the transaction's session, and its writes become visible together at
//! `EndTransaction(commit)`, or never.
//!
//! GetSqlInfo, GetCatalogs, GetDbSchemas, GetTables (with each table's
//! Arrow schema), GetTableTypes and GetXdbcTypeInfo describe the catalog the
//! PostgreSQL door shows. Calls not offered answer UNIMPLEMENTED, which clients such as
//! ADBC take as "not supported" and carry on. `DoPut` on a stream path and
//! the consumer-group actions fall through to [`crate::produce`] and
//! [`crate::groups`].

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};

use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginTransactionRequest, ActionBeginTransactionResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionEndTransactionRequest, Any, CommandGetCatalogs,
    CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use streamhouse_sql::dialect::numbered_placeholders;
use streamhouse_sql::session::DATABASE;
use streamhouse_sql::transaction::BlockState;
use streamhouse_sql::{Database, IfExists, IngestMode, QueryResult, Session, SqlError};

use crate::prepared::Statements;
use crate::status::sql_status;
use crate::transactions::{Transactions, parse_ticket_handle, ticket_handle};
use tonic::{Request, Response, Status, Streaming};

/// Flight SQL over a [`Database`].
#[derive(Clone)]
pub struct FlightSql {
    db: Arc<Database>,
    statements: Arc<Statements>,
    transactions: Arc<Transactions>,
}

impl FlightSql {
    pub fn new(db: Arc<Database>) -> Self {
        FlightSql {
            db,
            statements: Arc::new(Statements::default()),
            transactions: Arc::new(Transactions::default()),
        }
    }
}

/// A transaction is used only by the role that began it.
fn own(session: &Session, role: Option<&str>) -> Result<(), Status> {
    if session.role() == role {
        Ok(())
    } else {
        Err(Status::permission_denied(
            "the transaction belongs to another user",
        ))
    }
}

/// A session of a Flight SQL client (labels its metrics), checked against
/// `role`'s privileges (`None`: trusted).
fn session(role: Option<String>) -> Session {
    match role {
        Some(role) => Session::for_role("flight", role),
        None => Session::for_door("flight"),
    }
}

impl FlightSql {
    /// The session a call runs in: its transaction's (which must be the
    /// caller's), or a fresh one of the caller when it names none (every
    /// statement then commits on its own).
    fn session_of<T>(
        &self,
        request: &Request<T>,
        transaction: Option<&[u8]>,
    ) -> Result<Arc<Session>, Status> {
        let role = crate::auth::role_of(request)?;
        match transaction {
            Some(id) if !id.is_empty() => {
                let session = self.transactions.get(id)?;
                own(&session, role.as_deref())?;
                Ok(session)
            }
            _ => Ok(Arc::new(session(role))),
        }
    }

    /// Runs every statement of `sql` in `session`, stopping at the first
    /// error; the rows they wrote, summed.
    async fn run_all(&self, session: &Session, sql: &str) -> Result<i64, Status> {
        let mut rows = 0i64;
        for stmt in self.db.parse(sql).map_err(|e| {
            session.transaction().fail();
            sql_status(e)
        })? {
            let result = self
                .db
                .execute_statement(session, stmt)
                .await
                .map_err(sql_status)?;
            rows += drain_rows(result).await?;
        }
        Ok(rows)
    }

    /// Runs a prepared command once per bound parameter row, for the
    /// caller of `request`; the rows it wrote, summed.
    async fn run_command<T>(
        &self,
        request: &Request<T>,
        statement: &crate::prepared::Statement,
    ) -> Result<i64, Status> {
        let session = self.session_of(request, statement.transaction.as_deref())?;
        let mut rows = 0;
        for params in statement.param_rows()? {
            let result = self
                .db
                .execute_prepared(&session, &statement.prepared, params)
                .await
                .map_err(sql_status)?;
            rows += drain_rows(result).await?;
        }
        Ok(rows)
    }
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// What GetSqlInfo answers: who we are, and that we speak SQL.
fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "StreamHouse");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        b.append(SqlInfo::FlightSqlServerReadOnly, false);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        // SQL_SUPPORTED_TRANSACTION_TRANSACTION: transactions, no savepoints
        // through Flight (they are SQL statements in a transaction).
        b.append(SqlInfo::FlightSqlServerTransaction, 1i32);
        b.append(SqlInfo::SqlTransactionsSupported, true);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.build().expect("static SqlInfo")
    })
}

fn table_types_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "table_type",
        DataType::Utf8,
        false,
    )]))
}

/// A FlightInfo with one endpoint whose ticket is the command itself.
fn flight_info_for(
    ticket: Vec<u8>,
    schema: &Schema,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket {
        ticket: ticket.into(),
    });
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(endpoint)
        .with_descriptor(request.into_inner());
    Ok(Response::new(info))
}

/// The batches of a `DoPut` upload, and their schema.
pub(crate) async fn uploaded(
    request: Request<PeekableFlightDataStream>,
) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
    // A message with only a descriptor (how clients send "no parameters")
    // carries no IPC header; it is not data.
    let data = request
        .into_inner()
        .try_filter(|d| std::future::ready(!d.data_header.is_empty()))
        .map(|d| d.and_then(|d| crate::ipc_guard::check(&d).map(|()| d)))
        .map_err(FlightError::from);
    let mut stream = FlightRecordBatchStream::new_from_flight_data(data);
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.map_err(Status::from)?);
    }
    let schema = stream
        .schema()
        .cloned()
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    Ok((schema, batches))
}

/// An Arrow schema as the IPC bytes Flight SQL messages carry.
fn ipc_schema(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

/// The rows of a statement's result (a command's result is no rows).
async fn drain_rows(result: QueryResult) -> Result<i64, Status> {
    match result {
        QueryResult::Command(tag) => Ok(tag.rows().unwrap_or(0) as i64),
        QueryResult::Subscription(_) => Err(Status::invalid_argument(
            "a push query returns rows; run it with GetFlightInfo and DoGet",
        )),
        QueryResult::Rows(mut s) => {
            // A query sent as an update runs, and counts nothing: its rows
            // are read and dropped one batch at a time, never held.
            while let Some(batch) = s.next().await {
                batch.map_err(|e| sql_status(SqlError::from(e)))?;
            }
            Ok(0)
        }
        QueryResult::CopyIn(_) | QueryResult::CopyOut { .. } => Err(Status::unimplemented(
            "COPY is a PostgreSQL-protocol statement; use DoPut on a stream",
        )),
    }
}

/// One batch as a DoGet response.
fn one_batch(
    schema: SchemaRef,
    batch: Result<RecordBatch, FlightError>,
) -> Result<Response<DoGetStream>, Status> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(stream)))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// No authentication (loopback by default): the handshake succeeds
    /// without a token.
    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(reply)]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let transaction = query.transaction_id.as_deref().filter(|t| !t.is_empty());
        let session = self.session_of(&request, transaction)?;
        let prepared = match self.db.prepare(&query.query).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(Status::invalid_argument("empty statement")),
            Err(e) => {
                session.transaction().fail();
                return Err(sql_status(e));
            }
        };
        let Some(schema) = prepared.schema.clone() else {
            // A command (DDL, INSERT) sent as a query — ADBC's execute()
            // does that: it runs now, and its result is no rows.
            let rows = match self
                .db
                .execute_prepared(&session, &prepared, Vec::new())
                .await
                .map_err(sql_status)?
            {
                QueryResult::Command(tag) => tag.rows().unwrap_or(0) as i64,
                _ => 0,
            };
            let info = FlightInfo::new()
                .try_with_schema(&arrow::datatypes::Schema::empty())
                .map_err(|e| Status::internal(e.to_string()))?
                .with_total_records(rows)
                .with_descriptor(request.into_inner());
            return Ok(Response::new(info));
        };
        let ticket = TicketStatementQuery {
            statement_handle: ticket_handle(transaction, &query.query).into(),
        };
        let endpoint = FlightEndpoint::new().with_ticket(Ticket {
            ticket: ticket.as_any().encode_to_vec().into(),
        });
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (transaction, sql) = parse_ticket_handle(&ticket.statement_handle)?;
        let session = self.session_of(&request, transaction)?;
        let stmt = self
            .db
            .parse(&sql)
            .map_err(sql_status)?
            .pop()
            .ok_or_else(|| Status::invalid_argument("empty statement"))?;
        let result = self
            .db
            .execute_statement(&session, stmt)
            .await
            .map_err(sql_status)?;
        let (QueryResult::Rows(rows) | QueryResult::Subscription(rows)) = result else {
            return Err(Status::invalid_argument("the statement returns no rows"));
        };
        let schema = rows.schema();
        let batches = rows.map_err(|e| FlightError::from(arrow::error::ArrowError::from(e)));
        let stream: DoGetStream = Box::pin(
            FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .build(batches)
                .map_err(Status::from),
        );
        Ok(Response::new(stream))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = self.session_of(&request, command.transaction_id.as_deref())?;
        self.run_all(&session, &command.query).await
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        use arrow_flight::sql::{TableExistsOption, TableNotExistOption};
        if command.temporary {
            return Err(Status::unimplemented(
                "temporary tables: StreamHouse stores streams; ingest into a stream",
            ));
        }
        let options = command.table_definition_options.unwrap_or_default();
        let create = options.if_not_exist == TableNotExistOption::Create as i32;
        let if_exists = match TableExistsOption::try_from(options.if_exists) {
            Ok(TableExistsOption::Append) => IfExists::Append,
            Ok(TableExistsOption::Replace) => IfExists::Replace,
            Ok(TableExistsOption::Fail) => IfExists::Fail,
            // Unspecified: append when the stream is there (ADBC's default
            // "create" mode sets Fail explicitly).
            _ => IfExists::Append,
        };
        let session = self.session_of(&request, command.transaction_id.as_deref())?;
        let (schema, batches) = uploaded(request).await?;
        let rows = self
            .db
            .ingest(
                &session,
                &command.table.to_lowercase(),
                schema,
                batches,
                IngestMode { create, if_exists },
            )
            .await
            .map_err(sql_status)?;
        Ok(rows as i64)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let transaction = query
            .transaction_id
            .filter(|t| !t.is_empty())
            .map(|t| t.to_vec());
        let session = self.session_of(&request, transaction.as_deref())?;
        let sql = numbered_placeholders(&query.query).map_err(sql_status)?;
        let prepared = match self.db.prepare(&sql).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(Status::invalid_argument("empty statement")),
            Err(e) => {
                session.transaction().fail();
                return Err(sql_status(e));
            }
        };
        let dataset_schema = ipc_schema(prepared.schema.as_deref().unwrap_or(&Schema::empty()))?;
        let parameter_schema = ipc_schema(&prepared.param_schema())?;
        let handle = self.statements.add(prepared, transaction)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle,
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        self.statements.close(&query.prepared_statement_handle)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let statement = self.statements.get(&query.prepared_statement_handle)?;
        let (schema, batches) = uploaded(request).await?;
        statement.bind(schema, batches)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let statement = self.statements.get(&query.prepared_statement_handle)?;
        let role = crate::auth::role_of(&request)?;
        let (schema, batches) = uploaded(request).await?;
        if !batches.is_empty() {
            statement.bind(schema, batches)?;
        }
        let mut caller = Request::new(());
        caller.extensions_mut().insert(crate::auth::Caller(role));
        self.run_command(&caller, &statement).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = self.statements.get(&query.prepared_statement_handle)?;
        let Some(schema) = statement.prepared.schema.clone() else {
            // A command run through the query path (ADBC's execute with
            // parameters): it runs now, once per parameter row.
            let rows = self.run_command(&request, &statement).await?;
            let info = FlightInfo::new()
                .try_with_schema(&Schema::empty())
                .map_err(|e| Status::internal(e.to_string()))?
                .with_total_records(rows)
                .with_descriptor(request.into_inner());
            return Ok(Response::new(info));
        };
        // Parameters are checked now, so a wrong binding fails here and not
        // halfway through DoGet.
        statement.param_rows()?;
        flight_info_for(query.as_any().encode_to_vec(), &schema, request)
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let statement = self.statements.get(&query.prepared_statement_handle)?;
        let schema = statement
            .prepared
            .schema
            .clone()
            .ok_or_else(|| Status::invalid_argument("the statement returns no rows"))?;
        let db = self.db.clone();
        let session = self.session_of(&request, statement.transaction.as_deref())?;
        let runs = statement.param_rows()?;
        let batches = futures::stream::iter(runs)
            .then(move |params| {
                let db = db.clone();
                let statement = statement.clone();
                let session = session.clone();
                async move {
                    match db
                        .execute_prepared(&session, &statement.prepared, params)
                        .await
                    {
                        Ok(QueryResult::Rows(rows) | QueryResult::Subscription(rows)) => {
                            Ok(rows
                                .map_err(|e| FlightError::from(arrow::error::ArrowError::from(e))))
                        }
                        Ok(_) => Err(FlightError::ProtocolError(
                            "the statement returns no rows".into(),
                        )),
                        Err(e) => Err(FlightError::Tonic(Box::new(sql_status(e)))),
                    }
                }
            })
            .try_flatten();
        let stream: DoGetStream = Box::pin(
            FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .build(batches)
                .map_err(Status::from),
        );
        Ok(Response::new(stream))
    }

    async fn do_put_fallback(
        &self,
        request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        crate::produce::do_put(self.db.clone(), request, message).await
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let role = crate::auth::role_of(&request)?;
        let mut action = request.into_inner();
        crate::access::authorize(&self.db, role.as_deref(), &action).await?;
        // A view's name stands for its changelog stream.
        if let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&action.body)
            && let Some(name) = body.get("stream").and_then(|s| s.as_str())
            && let Some(changelog) = self.db.views().changelog_of(name)
        {
            body["stream"] = serde_json::Value::String(changelog);
            action.body = serde_json::to_vec(&body)
                .map_err(|e| Status::internal(e.to_string()))?
                .into();
        }
        let kind = action.r#type.as_str();
        if crate::groups::answers(kind) {
            crate::groups::do_action(self.db.log(), action).await
        } else if crate::txn_actions::answers(kind) {
            crate::txn_actions::do_action(self.db.log(), action).await
        } else {
            let known: Vec<String> = crate::groups::action_types()
                .into_iter()
                .chain(crate::txn_actions::action_types())
                .map(|a| a.r#type)
                .collect();
            Err(Status::invalid_argument(format!(
                "unknown action \"{kind}\"; this server answers the Flight SQL actions and {}",
                known.join(", ")
            )))
        }
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        let session = Arc::new(session(crate::auth::role_of(&request)?));
        self.run_all(&session, "BEGIN").await?;
        let id = self.transactions.add(session)?;
        Ok(ActionBeginTransactionResult {
            transaction_id: id.into(),
        })
    }

    async fn do_action_end_transaction(
        &self,
        query: ActionEndTransactionRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        use arrow_flight::sql::EndTransaction;
        let end = EndTransaction::try_from(query.action)
            .ok()
            .filter(|e| *e != EndTransaction::Unspecified)
            .ok_or_else(|| Status::invalid_argument("EndTransaction: say commit or rollback"))?;
        own(
            &*self.transactions.get(&query.transaction_id)?,
            crate::auth::role_of(&request)?.as_deref(),
        )?;
        let session = self.transactions.take(&query.transaction_id)?;
        if end == EndTransaction::Rollback {
            self.run_all(&session, "ROLLBACK").await?;
            return Ok(());
        }
        let failed = session.transaction().state() == BlockState::Failed;
        self.run_all(&session, "COMMIT").await?;
        if failed {
            // PostgreSQL answers such a COMMIT with ROLLBACK; a Flight client
            // has only the status to tell.
            return Err(Status::aborted(
                "the transaction failed earlier and was rolled back: nothing of it was written",
            ));
        }
        Ok(())
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(
            crate::groups::action_types()
                .into_iter()
                .chain(crate::txn_actions::action_types())
                .map(Ok)
                .collect(),
        )
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(sql_info()).schema();
        flight_info_for(query.as_any().encode_to_vec(), &schema, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(sql_info());
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(crate::xdbc::type_info()).schema();
        flight_info_for(query.as_any().encode_to_vec(), &schema, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(crate::xdbc::type_info());
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info_for(query.as_any().encode_to_vec(), &schema, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(DATABASE);
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info_for(query.as_any().encode_to_vec(), &schema, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut schemas: Vec<String> = self
            .db
            .tables()
            .await
            .map_err(sql_status)?
            .into_iter()
            .map(|t| t.0)
            .collect();
        schemas.dedup();
        let mut builder = query.into_builder();
        for s in schemas {
            builder.append(DATABASE, s);
        }
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info_for(query.as_any().encode_to_vec(), &schema, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let tables = self.db.tables().await.map_err(sql_status)?;
        let mut builder = query.into_builder();
        for (schema, name, kind, columns) in tables {
            builder
                .append(DATABASE, schema, name, kind, &columns)
                .map_err(Status::from)?;
        }
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info_for(
            query.as_any().encode_to_vec(),
            &table_types_schema(),
            request,
        )
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let schema = table_types_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![
                "SYSTEM TABLE",
                "TABLE",
                "VIEW",
            ]))],
        )
        .map_err(|e| Status::internal(e.to_string()));
        one_batch(schema, batch.map_err(|s| FlightError::Tonic(Box::new(s))))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
