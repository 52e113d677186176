//! The Flight SQL service: statements through the same [`Database`] the
//! PostgreSQL door uses.
//!
//! `GetFlightInfo(CommandStatementQuery)` plans the query (so errors and
//! the result schema come back at once) and answers one endpoint whose
//! ticket carries the SQL; `DoGet` on that ticket runs it and streams the
//! batches. A command sent that way (DDL, INSERT) runs at once and answers
//! an empty schema with no endpoints. `DoPut(CommandStatementUpdate)` runs INSERT and DDL and answers
//! the row count. GetSqlInfo, GetCatalogs, GetDbSchemas, GetTables (with
//! each table's Arrow schema) and GetTableTypes describe the catalog the
//! PostgreSQL door shows. Calls not offered answer UNIMPLEMENTED, which
//! clients such as ADBC take as "not supported" and carry on.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandStatementQuery, CommandStatementUpdate, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use futures::{Stream, TryStreamExt};
use prost::Message;
use streamhouse_sql::session::DATABASE;
use streamhouse_sql::{Database, QueryResult, Session, SqlError};
use tonic::{Request, Response, Status, Streaming};

/// Flight SQL over a [`Database`].
#[derive(Clone)]
pub struct FlightSql {
    db: Arc<Database>,
}

impl FlightSql {
    pub fn new(db: Arc<Database>) -> Self {
        FlightSql { db }
    }
}

/// A gRPC status for a SQL error: the code by SQLSTATE class, the message
/// as the PostgreSQL door words it, with the SQLSTATE.
pub fn status(e: SqlError) -> Status {
    let state = e.sqlstate();
    let message = format!("{e} (SQLSTATE {state})");
    match state {
        "42P01" | "42703" | "42883" | "42704" | "34000" => Status::not_found(message),
        "42P07" => Status::already_exists(message),
        "0A000" => Status::unimplemented(message),
        "57014" => Status::cancelled(message),
        s if s.starts_with("42") || s.starts_with("22") || s.starts_with("23") => {
            Status::invalid_argument(message)
        }
        _ => Status::internal(message),
    }
}

fn sql_of(bytes: &[u8]) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL"))
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
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
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
        let prepared = self
            .db
            .prepare(&query.query)
            .await
            .map_err(status)?
            .ok_or_else(|| Status::invalid_argument("empty statement"))?;
        let Some(schema) = prepared.schema.clone() else {
            // A command (DDL, INSERT) sent as a query — ADBC's execute()
            // does that: it runs now, and its result is no rows.
            let rows = match self
                .db
                .execute_prepared(&Session::default(), &prepared, Vec::new())
                .await
                .map_err(status)?
            {
                QueryResult::Command { rows, .. } => rows.unwrap_or(0) as i64,
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
            statement_handle: query.query.into_bytes().into(),
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
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = sql_of(&ticket.statement_handle)?;
        let stmt = self
            .db
            .parse(&sql)
            .map_err(status)?
            .pop()
            .ok_or_else(|| Status::invalid_argument("empty statement"))?;
        let result = self
            .db
            .execute_statement(&Session::default(), stmt)
            .await
            .map_err(status)?;
        let QueryResult::Rows(rows) = result else {
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
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let mut rows = 0i64;
        for result in self.db.execute(&command.query).await.map_err(status)? {
            match result {
                QueryResult::Command { rows: Some(n), .. } => rows += n as i64,
                QueryResult::Command { .. } => {}
                QueryResult::Rows(s) => {
                    // A query sent as an update runs, and counts nothing.
                    let _ = s.try_collect::<Vec<_>>().await;
                }
                QueryResult::CopyIn(_) | QueryResult::CopyOut { .. } => {
                    return Err(Status::unimplemented(
                        "COPY is a PostgreSQL-protocol statement; use DoPut on a stream",
                    ));
                }
            }
        }
        Ok(rows)
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
            .map_err(status)?
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
        let tables = self.db.tables().await.map_err(status)?;
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
