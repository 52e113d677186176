//! The protocol handlers: simple query, extended query (parse, bind,
//! describe, execute) and start-up, all translating to `Database` calls.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::{Sink, SinkExt, StreamExt, TryStreamExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, DEFAULT_NAME, PgWireServerHandlers, Type,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{Describe, Sync as PgSync, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
use pgwire::messages::simplequery::Query;
use streamhouse_sql::copy::CopyIn;
use streamhouse_sql::transaction::BlockState;
use streamhouse_sql::{CommandTag, Database, Prepared, QueryResult, Session, SqlError};

use crate::DOOR;
use crate::encode;
use crate::error::pg_error;
use crate::startup::{Startup, StartupConfig};

/// The `server_version` clients see: PostgreSQL's major line (drivers parse
/// it), then ours.
pub use streamhouse_sql::session::SERVER_VERSION;

/// Copy-ins in progress, by connection.
type Copies = Arc<Mutex<HashMap<SocketAddr, CopyState>>>;

/// Each connection's settings, by connection.
#[derive(Default)]
struct Sessions {
    map: Mutex<HashMap<SocketAddr, Arc<Session>>>,
    /// Clients logged in with a password: their sessions are checked
    /// against their role's privileges. Otherwise (trust) they are not.
    checked: bool,
}

impl Sessions {
    /// The connection's session, working until the guard is dropped (a
    /// session with work in hand is not idle).
    #[cfg(test)]
    fn of(&self, peer: SocketAddr) -> Working {
        let session = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer)
            .or_insert_with(|| Arc::new(Session::for_door(DOOR)))
            .clone();
        session.work_started();
        Working(session)
    }

    /// The session of `client`'s connection, working until the guard is
    /// dropped (a session with work in hand is not idle); a new one is of
    /// the user the client named at startup, checked against that role's
    /// privileges when passwords are required.
    fn of_client<C: ClientInfo>(&self, client: &C) -> Working {
        let session = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(client.socket_addr())
            .or_insert_with(|| {
                let user = client.metadata().get("user").cloned();
                Arc::new(match user {
                    Some(role) if self.checked => Session::for_role(DOOR, role),
                    user => Session::for_user(DOOR, user),
                })
            })
            .clone();
        session.work_started();
        Working(session)
    }

    /// The connection's session, if it has one, without touching it.
    fn get(&self, peer: SocketAddr) -> Option<Arc<Session>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .cloned()
    }

    fn forget(&self, peer: SocketAddr) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A session while one message of its connection is handled.
struct Working(Arc<Session>);

impl std::ops::Deref for Working {
    type Target = Arc<Session>;

    fn deref(&self) -> &Arc<Session> {
        &self.0
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.work_ended();
    }
}

enum CopyState {
    Active(Box<CopyIn>),
    /// Bad data arrived: the rest is ignored until CopyDone or CopyFail,
    /// which report this error (as PostgreSQL does).
    Failed(SqlError),
}

/// Handlers of every connection, sharing one `Database`.
pub struct Handlers {
    db: Arc<Database>,
    parser: Arc<Parser>,
    copies: Copies,
    sessions: Arc<Sessions>,
    /// Running connections by (pid, secret key), for cancel requests.
    connections: Arc<ConnectionManager>,
    /// Connections past the cap: their startup is answered 53300.
    refused: Arc<Mutex<std::collections::HashSet<SocketAddr>>>,
    /// How connections start (authentication, TLS).
    startup: Arc<Startup>,
}

impl Handlers {
    pub fn new(db: Arc<Database>, config: &StartupConfig) -> PgWireResult<Arc<Self>> {
        let sessions = Arc::new(Sessions {
            map: Mutex::default(),
            checked: config.auth == crate::startup::Auth::Password,
        });
        let connections = Arc::new(ConnectionManager::new());
        let refused: Arc<Mutex<std::collections::HashSet<SocketAddr>>> = Arc::default();
        let startup = Arc::new(Startup::new(
            db.clone(),
            config,
            connections.clone(),
            refused.clone(),
        )?);
        Ok(Arc::new(Self {
            parser: Arc::new(Parser {
                db: db.clone(),
                sessions: sessions.clone(),
            }),
            db,
            copies: Arc::default(),
            sessions,
            connections,
            refused,
            startup,
        }))
    }

    /// Drops what a finished connection left behind: its COPY and its
    /// session (settings), so the maps hold live connections only and a
    /// later connection from the same address starts afresh.
    pub fn forget(&self, peer: SocketAddr) {
        self.copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer);
        self.sessions.forget(peer);
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer);
    }

    /// Marks a connection past the cap: its startup is answered with
    /// 53300 and the connection closed.
    pub fn refuse(&self, peer: SocketAddr) {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer);
    }

    /// A connection's session, if it has one.
    pub fn session(&self, peer: SocketAddr) -> Option<Arc<Session>> {
        self.sessions.get(peer)
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(Simple {
            db: self.db.clone(),
            copies: self.copies.clone(),
            sessions: self.sessions.clone(),
        })
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::new(Copy {
            db: self.db.clone(),
            copies: self.copies.clone(),
            sessions: self.sessions.clone(),
        })
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(Extended {
            db: self.db.clone(),
            parser: self.parser.clone(),
            sessions: self.sessions.clone(),
            copies: self.copies.clone(),
        })
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.connections.clone()))
    }
}

/// Sends a push query's rows to the client as they come, each batch
/// flushed at once, until the query ends, fails or the client goes away.
/// `describe`: send the row description first (the simple protocol).
async fn push<C>(
    client: &mut C,
    mut stream: streamhouse_sql::SendableRecordBatchStream,
    format: &Format,
    describe: bool,
) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let fields = Arc::new(encode::fields(&stream.schema(), format)?);
    if describe {
        let desc =
            pgwire::messages::data::RowDescription::new(fields.iter().map(Into::into).collect());
        client
            .send(PgWireBackendMessage::RowDescription(desc))
            .await?;
    }
    let mut sent = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| pg_error(e.into()))?;
        for row in encode::rows(&batch, &fields)? {
            client.feed(PgWireBackendMessage::DataRow(row)).await?;
            sent += 1;
        }
        client.flush().await?;
    }
    Ok(Response::Execution(Tag::new("SUBSCRIBE").with_rows(sent)))
}

/// Turns a statement's result into a wire response; a copy-in is parked
/// for the copy handler under the client's address.
async fn respond(
    result: QueryResult,
    format: &Format,
    peer: SocketAddr,
    copies: &Copies,
) -> PgWireResult<Response> {
    Ok(match result {
        QueryResult::CopyIn(copy) => {
            let columns = copy.columns();
            let format = i8::from(copy.binary());
            copies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(peer, CopyState::Active(copy));
            Response::CopyIn(CopyResponse::new(format, columns, futures::stream::empty()))
        }
        QueryResult::CopyOut {
            columns,
            binary,
            data,
        } => {
            // pgwire ends a binary copy with the trailer itself.
            let trailer = streamhouse_sql::copy_binary::trailer();
            let data = data.map_ok(move |mut chunk| {
                if binary && chunk.ends_with(&trailer) {
                    let header_only =
                        chunk.len() == streamhouse_sql::copy_binary::header().len() + 2;
                    if chunk.len() == 2 || header_only {
                        chunk.truncate(chunk.len() - 2);
                    }
                }
                CopyData::new(chunk)
            });
            Response::CopyOut(CopyResponse::new(
                i8::from(binary),
                columns,
                data.map_err(pg_error),
            ))
        }
        QueryResult::Command(command) => {
            let tag = match command {
                CommandTag::Insert(rows) => Tag::new("INSERT").with_oid(0).with_rows(rows as usize),
                CommandTag::Update(rows) => Tag::new("UPDATE").with_rows(rows as usize),
                CommandTag::Delete(rows) => Tag::new("DELETE").with_rows(rows as usize),
                other => Tag::new(&other.to_string()),
            };
            match command.transaction() {
                Some(true) => Response::TransactionStart(tag),
                Some(false) => Response::TransactionEnd(tag),
                None => Response::Execution(tag),
            }
        }
        QueryResult::Subscription(_) => {
            return Err(pg_error(SqlError::Internal(
                "a push query must be sent by the connection".into(),
            )));
        }
        QueryResult::Rows(mut stream) => {
            // Compute the first batch here: aggregates and sorts do their
            // work before it, and this future is what a CancelRequest stops.
            let first = stream.next().await;
            let schema = stream.schema();
            let stream = futures::stream::iter(first).chain(stream);
            let fields = Arc::new(encode::fields(&schema, format)?);
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
    copies: Copies,
    sessions: Arc<Sessions>,
}

/// The status ReadyForQuery reports: where the session's transaction block
/// stands. pgwire infers one from the responses, which cannot tell a
/// refusal that leaves the block usable (25001) from one that fails it, nor
/// see ROLLBACK TO revive a failed block.
fn block_status(session: &Session) -> TransactionStatus {
    match session.transaction().state() {
        BlockState::Idle => TransactionStatus::Idle,
        BlockState::Open => TransactionStatus::Transaction,
        BlockState::Failed => TransactionStatus::Error,
    }
}

#[async_trait]
impl SimpleQueryHandler for Simple {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.sessions.of_client(client);
        client.set_transaction_status(block_status(&session));
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let peer = client.socket_addr();
        let session = self.sessions.of_client(client);
        let stmts = match self.db.parse(query) {
            Ok(s) => s,
            Err(e) => {
                streamhouse_sql::metrics::query_done(DOOR, std::time::Duration::ZERO, Some(&e));
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
            match self.db.execute_statement(&session, stmt).await {
                Ok(QueryResult::Subscription(rows)) => {
                    match push(client, rows, &Format::UnifiedText, true).await {
                        Ok(r) => out.push(r),
                        Err(PgWireError::UserError(e)) => {
                            out.push(Response::Error(e));
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(r) => {
                    let copying = matches!(r, QueryResult::CopyIn(_));
                    out.push(respond(r, &Format::UnifiedText, peer, &self.copies).await?);
                    if copying {
                        // The rest of the string waits for the copy to end;
                        // PostgreSQL does not run it either.
                        break;
                    }
                }
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
    sessions: Arc<Sessions>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        match self.db.prepare(sql).await {
            Ok(p) => Ok(p.map(Arc::new)),
            Err(e) => {
                // A statement that does not parse fails the block, as
                // PostgreSQL's does.
                self.sessions.of_client(client).transaction().fail();
                Err(pg_error(e))
            }
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
            Some(s) => encode::fields(s, column_format.unwrap_or(&Format::UnifiedText))?,
            None => Vec::new(),
        })
    }
}

struct Extended {
    db: Arc<Database>,
    parser: Arc<Parser>,
    sessions: Arc<Sessions>,
    copies: Copies,
}

#[async_trait]
impl ExtendedQueryHandler for Extended {
    type Statement = Arc<Prepared>;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.portal_store().rm_portal(DEFAULT_NAME);
        let status = block_status(&self.sessions.of_client(client));
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        client.flush().await?;
        Ok(())
    }

    /// Describing a statement that returns no rows (INSERT, DDL …) answers
    /// ParameterDescription then NoData, as PostgreSQL does; pgwire's
    /// default sends an empty RowDescription once there are parameters,
    /// which pgjdbc takes for a query (its batches then count 0 rows).
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
            if let Some(Entry::Value(stmt)) = client.portal_store().get_statement(name)
                && stmt.statement.schema.is_none()
            {
                let described = self.do_describe_statement(client, &stmt).await?;
                let oids = described.parameters.iter().map(|t| t.oid()).collect();
                client
                    .send(PgWireBackendMessage::ParameterDescription(
                        ParameterDescription::new(oids),
                    ))
                    .await?;
                client
                    .send(PgWireBackendMessage::NoData(NoData::new()))
                    .await?;
                return Ok(());
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let session = self.sessions.of_client(client);
        let params = match crate::params::decode(portal, &prepared.param_types) {
            Ok(p) => p,
            Err(e) => {
                session.transaction().fail();
                return Err(e);
            }
        };
        match self.db.execute_prepared(&session, prepared, params).await {
            Ok(QueryResult::Subscription(rows)) => {
                push(client, rows, &portal.result_column_format, false).await
            }
            Ok(r) => {
                let peer = client.socket_addr();
                respond(r, &portal.result_column_format, peer, &self.copies).await
            }
            Err(e) => Err(pg_error(e)),
        }
    }
}

/// The COPY sub-protocol: data in, then done (or fail).
struct Copy {
    db: Arc<Database>,
    copies: Copies,
    sessions: Arc<Sessions>,
}

#[async_trait]
impl CopyHandler for Copy {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // The connection's COPY is taken out of the shared map while its
        // data decodes, so COPYs on other connections are not held up by
        // the map's lock (a connection's messages arrive one at a time).
        let peer = client.socket_addr();
        let taken = self
            .copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer);
        let next = match taken {
            Some(CopyState::Active(mut copy)) => match copy.feed(&copy_data.data) {
                Ok(()) => CopyState::Active(copy),
                Err(e) => CopyState::Failed(e),
            },
            Some(failed @ CopyState::Failed(_)) => failed,
            None => return Ok(()),
        };
        self.copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, next);
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = self
            .copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&client.socket_addr());
        let session = self.sessions.of_client(client);
        let rows = match state {
            Some(CopyState::Active(copy)) => self
                .db
                .finish_copy(&session, copy)
                .await
                .map_err(pg_error)?,
            Some(CopyState::Failed(e)) => {
                session.transaction().fail();
                return Err(pg_error(e));
            }
            None => return Err(pg_error(SqlError::Internal("no COPY in progress".into()))),
        };
        let tag = Tag::new("COPY").with_rows(rows as usize);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&client.socket_addr());
        self.sessions.of_client(client).transaction().fail();
        crate::error::protocol_error("57014", format!("COPY from stdin failed: {}", fail.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session ends with its connection: the map does not grow, and a
    /// new connection from the same address does not inherit its `SET`s.
    #[test]
    fn sessions_end_with_their_connection() {
        let sessions = Sessions::default();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        sessions
            .of(peer)
            .set("application_name", "old".into())
            .unwrap();
        assert_eq!(sessions.of(peer).get("application_name").unwrap().1, "old");
        sessions.forget(peer);
        assert_eq!(sessions.len(), 0);
        assert_ne!(sessions.of(peer).get("application_name").unwrap().1, "old");
    }
}
