//! The protocol handlers: simple query, extended query (parse, bind,
//! describe, execute) and start-up, all translating to `Database` calls.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt, TryStreamExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::startup::ParameterStatus;
use streamhouse_sql::{Database, Prepared, QueryResult, dialect};

use crate::encode;
use crate::error::pg_error;

/// The `server_version` clients see: PostgreSQL's major line (drivers parse
/// it), then ours.
pub const SERVER_VERSION: &str = concat!("16.6 (StreamHouse ", env!("CARGO_PKG_VERSION"), ")");

/// Handlers of every connection, sharing one `Database`.
pub struct Handlers {
    db: Arc<Database>,
    parser: Arc<Parser>,
}

impl Handlers {
    pub fn new(db: Arc<Database>) -> Arc<Self> {
        Arc::new(Self {
            parser: Arc::new(Parser { db: db.clone() }),
            db,
        })
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(Simple {
            db: self.db.clone(),
        })
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(Extended {
            db: self.db.clone(),
            parser: self.parser.clone(),
        })
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup)
    }
}

/// Trust authentication (loopback by default); announces our settings.
struct Startup;

#[async_trait]
impl NoopStartupHandler for Startup {
    async fn post_startup<C>(
        &self,
        client: &mut C,
        _message: pgwire::messages::PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Values drivers check; later ParameterStatus messages override the
        // defaults sent during authentication.
        for (name, value) in [
            ("server_version", SERVER_VERSION),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
            ("application_name", ""),
        ] {
            client
                .send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                    name.to_string(),
                    value.to_string(),
                )))
                .await?;
        }
        Ok(())
    }
}

/// Turns a statement's result into a wire response.
async fn respond(result: QueryResult, format: &Format) -> PgWireResult<Response> {
    Ok(match result {
        QueryResult::Command { tag, rows } => {
            let word = tag.split_whitespace().next().unwrap_or("OK").to_string();
            match word.as_str() {
                "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
                "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(&word)),
                "INSERT" => Response::Execution(
                    Tag::new("INSERT")
                        .with_oid(0)
                        .with_rows(rows.unwrap_or(0) as usize),
                ),
                _ => Response::Execution(Tag::new(&tag)),
            }
        }
        QueryResult::Rows(stream) => {
            let fields = Arc::new(encode::fields(&stream.schema(), format));
            let f = fields.clone();
            let rows = stream
                .map_err(|e| pg_error(e.into()))
                .and_then(move |batch| {
                    let f = f.clone();
                    async move { encode::rows(&batch, &f) }
                })
                .map_ok(|rows| futures::stream::iter(rows.into_iter().map(Ok)))
                .try_flatten();
            Response::Query(QueryResponse::new(fields, rows))
        }
    })
}

struct Simple {
    db: Arc<Database>,
}

#[async_trait]
impl SimpleQueryHandler for Simple {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let stmts = match dialect::parse(query) {
            Ok(s) => s,
            Err(e) => {
                return Ok(vec![Response::Error(Box::new(crate::error::error_info(
                    &e,
                )))]);
            }
        };
        if stmts.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in stmts {
            match self.db.execute_statement(stmt).await {
                Ok(r) => out.push(respond(r, &Format::UnifiedText).await?),
                Err(e) => {
                    // Like PostgreSQL: report the error, skip the rest.
                    out.push(Response::Error(Box::new(crate::error::error_info(&e))));
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Parses and plans statements for the extended protocol.
pub struct Parser {
    db: Arc<Database>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        match self.db.prepare(sql).await {
            Ok(p) => Ok(p.map(Arc::new)),
            Err(e) => Err(pg_error(e)),
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .param_types
            .iter()
            .map(|t| t.as_ref().map(encode::pg_type_of).unwrap_or(Type::TEXT))
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &stmt.schema {
            Some(s) => encode::fields(s, column_format.unwrap_or(&Format::UnifiedText)),
            None => Vec::new(),
        })
    }
}

struct Extended {
    db: Arc<Database>,
    parser: Arc<Parser>,
}

#[async_trait]
impl ExtendedQueryHandler for Extended {
    type Statement = Arc<Prepared>;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let prepared = &portal.statement.statement;
        let params = crate::params::decode(portal, &prepared.param_types)?;
        match self.db.execute_prepared(prepared, params).await {
            Ok(r) => respond(r, &portal.result_column_format).await,
            Err(e) => Err(pg_error(e)),
        }
    }
}
