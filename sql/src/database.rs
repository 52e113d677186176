//! [`Database`]: the front door every adapter calls.
//!
//! It parses a query string into statements (our dialect on sqlparser),
//! plans them ([`Prepared`]) and dispatches: queries go to DataFusion
//! through the [`Planner`], in whose session each stream is a table; our
//! own statements are run by their modules — `insert` (INSERT, COPY),
//! `stream_ddl` (CREATE STREAM, SHOW STREAMS, DESCRIBE), `settings` (SET,
//! SHOW), and the [`Views`] service (materialized views, SUBSCRIBE).
//! Parameter typing and binding are in `prepared`; results are a
//! [`QueryResult`]. Here too: `access` (logins, tokens, the privilege
//! check, ownership), `blocks` (BEGIN, COMMIT, ROLLBACK, savepoints) and
//! `results` (wrappers of result streams).

mod access;
mod blocks;
mod results;

use std::sync::Arc;

use results::{fail_block_on_error, hold_while_read, with_schema};

use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::prelude::{SessionConfig, SessionContext};
use sqlparser::ast::Statement as SqlStatement;
use streamhouse_log::Log;

use crate::audit::{Audit, AuditEvent};
use crate::catalog::{self, Compat};
use crate::dialect::{self, Statement};
use crate::error::{Result, SqlError};
use crate::functions;
use crate::limits;
use crate::names::output_names;
pub use crate::options::DatabaseOptions;
use crate::planner::Planner;
use crate::prepared::{Action, Prepared, Verb, bind, param_types, with_session_settings};
use crate::privileges::{Object, Privileges, needs};
use crate::result::{CommandTag, QueryResult, describe_schema, rename, show_streams_schema};
use crate::session::Session;
use crate::settings::{assignments, setting_name, show, show_schema};
use crate::transaction::overlay::with_own_writes;
use crate::transaction::{BlockState, Control};
use crate::views::{ViewTimings, Views};
use crate::window::{Kind, Tables, WindowFunction};

/// The SQL engine over the log.
pub struct Database {
    pub(crate) log: Arc<Log>,
    /// The session, with every stream registered as a table.
    pub(crate) planner: Arc<Planner>,
    /// Materialized views: running here, elsewhere, or failed to load.
    pub(crate) views: Arc<Views>,
    /// Sinks and sources: running here, or elsewhere.
    pub(crate) connectors: Arc<crate::connectors::Connectors>,
    pub(crate) options: DatabaseOptions,
    /// Statements running now.
    pub(crate) running: Arc<crate::system::Running>,
    /// Settings used by [`Database::execute`] (embedded use, tests).
    default_session: Session,
    /// Rewrites of client catalog queries.
    compat: Compat,
    /// The pool every query's memory is also reserved from.
    pub(crate) query_memory: limits::ServerMemory,
    /// Bearer tokens issued to doors' clients.
    tokens: crate::roles::tokens::Tokens,
    /// The audit trail.
    audit: Audit,
    /// What each role may do.
    privileges: Arc<Privileges>,
    /// How values of streams that follow a subject decode and encode.
    pub(crate) codecs: crate::typed::codecs::Codecs,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("log", &self.log).finish()
    }
}

impl Database {
    /// A database over `log`, with every existing stream registered.
    pub async fn open(log: Arc<Log>) -> Result<Database> {
        Self::open_with(log, DatabaseOptions::default()).await
    }

    /// [`Database::open`] with settings.
    pub async fn open_with(log: Arc<Log>, options: DatabaseOptions) -> Result<Database> {
        // `information_schema` is PostgreSQL's (views over pg_catalog), not
        // DataFusion's.
        let mut config = SessionConfig::new()
            .with_information_schema(false)
            .with_default_catalog_and_schema("streamhouse", "public");
        // `now()` is a `timestamptz` in UTC, as the TimeZone setting says.
        config.options_mut().execution.time_zone = Some("UTC".into());
        let ctx = SessionContext::new_with_config(config);
        let privileges = Arc::new(Privileges::new(log.clone()));
        let compat = catalog::install(
            &ctx,
            crate::session::DATABASE,
            log.clone(),
            privileges.clone(),
        )
        .await?;
        functions::register(&ctx);
        crate::bounded::register(&ctx)?;
        let planner = Arc::new(Planner::new(log.clone(), ctx));
        let changelogs = Tables::default();
        let views = Arc::new(Views::new(
            log.clone(),
            planner.clone(),
            changelogs.clone(),
            options.state_dir.clone(),
            ViewTimings {
                checkpoint_interval: options.checkpoint_interval,
                idle_timeout: options.idle_timeout,
                lease_duration: options.lease_duration,
            },
        )?);
        let running = Arc::new(crate::system::Running::new(log.clock().clone()));
        let connectors = Arc::new(crate::connectors::Connectors::new(
            log.clone(),
            options.lease_duration,
        ));
        let sources = Arc::new(crate::system::Sources {
            log: log.clone(),
            views: views.clone(),
            connectors: connectors.clone(),
            running: running.clone(),
        });
        let ctx = &planner.ctx;
        if let Some(catalog) = ctx.catalog(crate::session::DATABASE) {
            catalog.register_schema(
                crate::system::SCHEMA,
                crate::system::schema(crate::system::tables(sources))?,
            )?;
        }
        let tables = planner.tables();
        ctx.register_udtf(
            "tumble",
            Arc::new(WindowFunction::new(Kind::Tumble, tables.clone())),
        );
        ctx.register_udtf(
            "hop",
            Arc::new(WindowFunction::new(Kind::Hop, tables.clone())),
        );
        ctx.register_udtf(
            "session",
            Arc::new(WindowFunction::new(Kind::Session, tables.clone())),
        );
        ctx.register_udf(crate::window::ProcTime::udf());
        ctx.register_udtf(
            "changes",
            Arc::new(crate::matview::changes::ChangesFunction::new(changelogs)),
        );
        for info in log.sql_streams().await? {
            planner.register(info)?;
        }
        let (audit, trail) = Audit::open(log.clone()).await?;
        if let Some(schema) = ctx
            .catalog(crate::session::DATABASE)
            .and_then(|c| c.schema(crate::system::SCHEMA))
        {
            schema.register_table(
                "audit".to_string(),
                Arc::new(streamhouse_streams::scan::StreamTable::new(
                    log.clone(),
                    trail,
                )),
            )?;
        }
        views.load().await?;
        connectors.load().await?;
        Ok(Database {
            connectors,
            planner,
            running,
            default_session: Session::default(),
            compat,
            views,
            query_memory: limits::ServerMemory::new(options.server_query_memory),
            audit,
            privileges,
            tokens: crate::roles::tokens::Tokens::new(
                log.clock().clone(),
                crate::roles::tokens::TOKEN_LIFETIME,
            ),
            log,
            options,
            codecs: Default::default(),
        })
    }

    /// Every table a client can list: (schema, name, type, columns).
    /// Streams are `TABLE`s in `public`; the catalog's own tables are
    /// `SYSTEM TABLE`s (`pg_catalog`) and `VIEW`s (`information_schema`).
    pub async fn tables(&self) -> Result<Vec<(String, String, &'static str, SchemaRef)>> {
        let mut out = Vec::new();
        let Some(catalog) = self.planner.ctx.catalog(crate::session::DATABASE) else {
            return Ok(out);
        };
        let mut schemas = catalog.schema_names();
        schemas.sort();
        for schema_name in schemas {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let kind = match schema_name.as_str() {
                "pg_catalog" => "SYSTEM TABLE",
                "information_schema" => "VIEW",
                _ => "TABLE",
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                if let Some(t) = schema.table(&name).await? {
                    let kind = match t.table_type() {
                        datafusion::datasource::TableType::View if kind == "TABLE" => "VIEW",
                        _ => kind,
                    };
                    out.push((schema_name.clone(), name, kind, t.schema()));
                }
            }
        }
        Ok(out)
    }

    /// The log underneath.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The materialized views: the server keeps their leases
    /// ([`Views::maintain`]) and releases them at shutdown.
    pub fn views(&self) -> &Arc<Views> {
        &self.views
    }

    /// The sinks and sources: the server keeps their leases
    /// ([`crate::connectors::Connectors::maintain`]) and releases them at
    /// shutdown.
    pub fn connectors(&self) -> &Arc<crate::connectors::Connectors> {
        &self.connectors
    }

    /// Sets the gauges that describe views and consumer groups now; called
    /// when metrics are scraped.
    pub async fn refresh_metrics(&self) -> Result<()> {
        self.views.refresh_metrics().await;
        for g in self.log.group_lags().await? {
            metrics::gauge!(
                crate::metrics::CONSUMER_LAG_ROWS,
                "group" => g.group,
                "stream" => g.stream,
                "partition" => g.partition.to_string()
            )
            .set(g.lag as f64);
        }
        Ok(())
    }

    /// Runs every statement of `sql` in order, in the database's own
    /// session. Statements run one after the other; a failing statement
    /// stops the rest.
    pub async fn execute(&self, sql: &str) -> Result<Vec<QueryResult>> {
        let mut out = Vec::new();
        for stmt in self.parse(sql)? {
            out.push(self.execute_statement(&self.default_session, stmt).await?);
        }
        Ok(out)
    }

    /// The statements of a query string: our dialect, with client catalog
    /// queries made plannable ([`Compat`]).
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        self.compat.parse(sql)
    }

    /// Runs one parsed statement without parameters in `session`.
    pub async fn execute_statement(
        &self,
        session: &Session,
        stmt: Statement,
    ) -> Result<QueryResult> {
        let started = streamhouse_log::Stopwatch::start();
        let planned = match session.transaction().state() {
            BlockState::Failed if !stmt.runs_in_failed_block() => {
                Err(SqlError::InFailedTransaction)
            }
            _ => self.prepare_statement(stmt).await,
        };
        match planned {
            Ok(prepared) => self.execute_prepared(session, &prepared, Vec::new()).await,
            Err(e) => {
                session.transaction().fail();
                crate::metrics::query_done(session.door(), started.elapsed(), Some(&e));
                Err(e)
            }
        }
    }

    /// Parses and plans one statement with `$n` parameters, for the
    /// extended protocols. `None` for an empty string.
    pub async fn prepare(&self, sql: &str) -> Result<Option<Prepared>> {
        let mut stmts = self.parse(sql)?;
        if stmts.len() > 1 {
            return Err(SqlError::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        match stmts.pop() {
            None => Ok(None),
            Some(stmt) => self.prepare_statement(stmt).await.map(Some),
        }
    }

    /// Plans a parsed statement: its parameter types and result schema. A
    /// name not found is looked up again after the catalog catches up with
    /// streams other agents created.
    pub async fn prepare_statement(&self, stmt: Statement) -> Result<Prepared> {
        self.planner.sync_schemas().await?;
        match self.plan_statement(stmt.clone()).await {
            Err(SqlError::UndefinedTable(_)) if self.sync_catalog().await? => {
                self.plan_statement(stmt).await
            }
            planned => planned,
        }
    }

    /// Learns streams and views created (or dropped) through other agents;
    /// whether anything changed.
    pub async fn sync_catalog(&self) -> Result<bool> {
        let streams = self.planner.sync_streams().await?;
        let views = self.views.learn().await?;
        Ok(streams || views)
    }

    async fn plan_statement(&self, stmt: Statement) -> Result<Prepared> {
        let text = stmt.text();
        let (action, schema) = match stmt {
            Statement::ShowStreams => (Action::Statement(stmt), Some(show_streams_schema())),
            Statement::ShowMaterializedViews => (
                Action::Statement(stmt),
                Some(crate::views::show_views_schema()),
            ),
            Statement::ShowSinks => (
                Action::Statement(stmt),
                Some(crate::connectors::show_sinks_schema()),
            ),
            Statement::ShowSources => (
                Action::Statement(stmt),
                Some(crate::connectors::show_sources_schema()),
            ),
            Statement::Describe { .. } => (Action::Statement(stmt), Some(describe_schema())),
            Statement::Subscribe(ref s) => {
                let schema = self.views.subscription_schema(s).await?;
                (Action::Statement(stmt), Some(schema))
            }
            Statement::Sql(sql) => match *sql {
                SqlStatement::Insert(insert) => (self.prepare_insert(insert).await?, None),
                SqlStatement::Update(update) => (self.prepare_update(update).await?, None),
                SqlStatement::Delete(delete) => (self.prepare_delete(delete).await?, None),
                q @ (SqlStatement::Query(_) | SqlStatement::Explain { .. }) => {
                    let names = match &q {
                        SqlStatement::Query(query) => output_names(query),
                        _ => None,
                    };
                    let plan = self.planner.plan(q).await?;
                    let schema = rename(plan.schema().as_arrow(), names.as_deref());
                    (Action::Query(plan), Some(schema))
                }
                copy @ SqlStatement::Copy { .. } => (Action::Copy(Box::new(copy)), None),
                SqlStatement::Set(set) => (Action::Set(assignments(set)?), None),
                SqlStatement::Reset(r) => (
                    Action::Reset(match r.reset {
                        sqlparser::ast::Reset::ALL => None,
                        sqlparser::ast::Reset::ConfigurationParameter(n) => Some(n.to_string()),
                    }),
                    None,
                ),
                SqlStatement::ShowVariable { variable } => {
                    let name = setting_name(&variable);
                    let schema = show_schema(&self.default_session, &name);
                    (Action::Show(name), Some(schema))
                }
                SqlStatement::Savepoint { name } => (
                    Action::Transaction(Control::Savepoint(dialect::normalize(&name))),
                    None,
                ),
                SqlStatement::ReleaseSavepoint { name } => (
                    Action::Transaction(Control::Release(dialect::normalize(&name))),
                    None,
                ),
                SqlStatement::Rollback {
                    savepoint: Some(name),
                    ..
                } => (
                    Action::Transaction(Control::RollbackTo(dialect::normalize(&name))),
                    None,
                ),
                // What connection pools send when a connection is returned
                // (asyncpg: CLOSE ALL; UNLISTEN *; RESET ALL): there are no
                // SQL cursors or notification channels to release.
                SqlStatement::Close {
                    cursor: sqlparser::ast::CloseCursor::All,
                } => (Action::Tag(CommandTag::CloseCursorAll), None),
                SqlStatement::Close { cursor } => {
                    return Err(SqlError::InvalidCursor(format!(
                        "cursor \"{cursor}\" does not exist"
                    )));
                }
                SqlStatement::UNLISTEN { .. } => (Action::Tag(CommandTag::Unlisten), None),
                // What psycopg sends after a rollback to forget the statements
                // it prepared. Prepared statements live in the door's
                // per-connection store, named by the client, and end with
                // the connection; a client that deallocates makes fresh
                // names afterwards, so there is nothing to do here.
                SqlStatement::Deallocate { name, .. } => (
                    Action::Tag(if name.value.eq_ignore_ascii_case("all") {
                        CommandTag::DeallocateAll
                    } else {
                        CommandTag::Deallocate
                    }),
                    None,
                ),
                SqlStatement::Discard { .. } => (Action::Reset(None), None),
                SqlStatement::StartTransaction { .. } => {
                    (Action::Transaction(Control::Begin), None)
                }
                SqlStatement::Commit { .. } => (Action::Transaction(Control::Commit), None),
                SqlStatement::Rollback { .. } => (Action::Transaction(Control::Rollback), None),
                other => {
                    return Err(SqlError::NotSupported(format!(
                        "statement {}",
                        statement_kind(&other)
                    )));
                }
            },
            other => (Action::Statement(other), None),
        };
        let param_types = match &action {
            Action::Query(plan) => param_types(plan)?,
            Action::Insert {
                source,
                param_hints,
                ..
            } => {
                let mut types = param_types(source)?;
                for (n, t) in param_hints {
                    if let Some(slot @ None) = types.get_mut(n - 1) {
                        *slot = Some(t.clone());
                    }
                }
                types
            }
            _ => Vec::new(),
        };
        let needs = match &action {
            Action::Query(plan) => self.reads(plan),
            Action::Insert { source, .. } => self.reads(source),
            _ => Vec::new(),
        };
        Ok(Prepared {
            text,
            needs,
            action,
            param_types,
            schema,
        })
    }

    /// Runs a prepared statement with values for its parameters (counted
    /// in the metrics of the session's door).
    pub async fn execute_prepared(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult> {
        let started = streamhouse_log::Stopwatch::start();
        let running = self.running.begin(session.door(), prepared.text.clone());
        let span = tracing::debug_span!("query", door = session.door(), query = %prepared.text);
        // A write is not cut short: once its append has begun it may land,
        // and a timeout must not report a failure for rows that did.
        let deadline = session
            .statement_timeout()
            .filter(|_| !prepared.action.writes())
            .map(|t| streamhouse_log::monotonic() + t);
        let result = tracing::Instrument::instrument(
            limits::within(deadline, self.run_prepared(session, prepared, params)),
            span,
        )
        .await;
        crate::metrics::query_done(session.door(), started.elapsed(), result.as_ref().err());
        // A statement whose rows stream runs until they are read; an error
        // while they are read fails the block it ran in.
        let block = session.transaction().block_id();
        let rows_of = |rows| {
            let rows = match deadline {
                Some(d) => limits::until(rows, d),
                None => rows,
            };
            match block {
                Some(id) => fail_block_on_error(rows, session.transaction().clone(), id),
                None => rows,
            }
        };
        Ok(match result? {
            QueryResult::Rows(rows) => QueryResult::Rows(hold_while_read(rows_of(rows), running)),
            QueryResult::Subscription(rows) => {
                self.running.subscription(&running);
                QueryResult::Subscription(hold_while_read(rows, running))
            }
            other => other,
        })
    }

    async fn run_prepared(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult> {
        if params.len() != prepared.param_types.len() {
            return Err(SqlError::Syntax(format!(
                "bind message supplies {} parameters, but prepared statement requires {}",
                params.len(),
                prepared.param_types.len()
            )));
        }
        let block = session.transaction().state();
        match (&prepared.action, block) {
            (Action::Transaction(control), _) => {
                let result = self.control(session, control).await;
                if result.is_err() && *control != Control::Commit {
                    session.transaction().fail();
                }
                return result;
            }
            (_, BlockState::Failed) => return Err(SqlError::InFailedTransaction),
            (action, BlockState::Open) if !action.may_run_in_block() => {
                return Err(SqlError::ActiveTransaction(format!(
                    "{} cannot run inside a transaction block: it could not be rolled back; \
                     COMMIT or ROLLBACK first",
                    action.name()
                )));
            }
            _ => {}
        }
        let result = self.run_action(session, prepared, params).await;
        if result.is_err() {
            session.transaction().fail();
        }
        result
    }

    async fn run_action(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult> {
        if let Some(role) = session.role() {
            match &prepared.action {
                Action::Statement(stmt) => {
                    let mut all = needs::of_statement(stmt, role);
                    all.extend(prepared.needs.iter().cloned());
                    self.authorize_session(session, &all).await?;
                }
                _ => self.authorize_session(session, &prepared.needs).await?,
            }
        }
        match &prepared.action {
            Action::Transaction(control) => self.control(session, control).await,
            Action::Query(plan) => {
                // The catalog's privilege functions read the cached snapshot.
                self.privileges.snapshot().await?;
                let plan = with_session_settings(bind(plan, params)?, session)?;
                let plan = with_own_writes(plan, session.transaction())?;
                let ctx = limits::query_context(
                    &self.planner.ctx,
                    self.memory_limit(session),
                    &self.query_memory,
                )?;
                let df = ctx.execute_logical_plan(plan).await?;
                let stream = df.execute_stream().await?;
                Ok(QueryResult::Rows(match &prepared.schema {
                    Some(schema) if schema.fields().len() == stream.schema().fields().len() => {
                        with_schema(stream, schema.clone())
                    }
                    _ => stream,
                }))
            }
            Action::Insert {
                stream,
                targets,
                source,
                verb,
                ..
            } => {
                let source = bind(source, params)?;
                let source = with_own_writes(source, session.transaction())?;
                self.run_insert(session, stream, targets, *verb, source)
                    .await
            }
            Action::InsertRows {
                stream,
                targets,
                rows,
            } => {
                let info = self.log.stream(stream).await?;
                let n = self
                    .append_rows(
                        session,
                        stream,
                        &info.spec.schema,
                        targets,
                        Verb::Insert,
                        std::slice::from_ref(rows),
                    )
                    .await?;
                Ok(QueryResult::command(CommandTag::Insert(n)))
            }
            Action::Tag(tag) => Ok(QueryResult::command(*tag)),
            Action::Set(assignments) => {
                for (name, value) in assignments {
                    match value {
                        Some(v) => session
                            .set(name, v.clone())
                            .map_err(SqlError::InvalidInput)?,
                        None => session.reset(Some(name)),
                    }
                }
                Ok(QueryResult::command(CommandTag::Set))
            }
            Action::Reset(name) => {
                session.reset(name.as_deref());
                Ok(QueryResult::command(CommandTag::Reset))
            }
            Action::Show(name) => show(session, name),
            Action::Copy(stmt) => self.copy(session, stmt.as_ref().clone()).await,
            Action::Statement(stmt) => {
                let done = self.run_statement(session, stmt.clone()).await;
                if done.is_ok() && stmt.is_ddl() {
                    self.record_ddl(session, &prepared.text).await;
                }
                done
            }
        }
    }

    /// Puts a DDL statement that ran into the audit trail (a failure to
    /// write it is logged: the statement has already taken effect).
    async fn record_ddl(&self, session: &Session, text: &str) {
        let event = AuditEvent {
            event: "ddl",
            user: session.user().map(str::to_string),
            door: session.door().to_string(),
            object: Some(text.to_string()),
            success: true,
            ..AuditEvent::default()
        };
        if let Err(e) = self.audit.record(event).await {
            tracing::warn!(error = %e, statement = text, "DDL not written to the audit trail");
        }
    }

    /// Puts a security event of a door (a login, a failed one, a refused
    /// connection) into the audit trail, without waiting for it.
    pub fn audit(&self, event: AuditEvent) {
        self.audit.record_later(event);
    }

    /// The memory a query of `session` may reserve.
    pub(crate) fn memory_limit(&self, session: &Session) -> usize {
        session
            .query_memory_limit()
            .unwrap_or(self.options.query_memory_limit)
    }

    /// BEGIN, COMMIT, ROLLBACK and savepoints (see [`crate::transaction`]).
    async fn run_statement(&self, session: &Session, stmt: Statement) -> Result<QueryResult> {
        match stmt {
            Statement::CreateStream(c) => {
                let name = c.name.clone();
                let done = self.create_stream(c).await?;
                self.record_owner(session, Object::table(name)).await?;
                Ok(done)
            }
            Statement::DropStream { names, if_exists } => {
                self.refuse_tables(&names, "DROP STREAM").await?;
                self.connectors.refuse_dropping(&names).await?;
                self.connectors.refuse_dropping_written(&names).await?;
                for name in &names {
                    self.views.refuse_dropping_stream(name)?;
                }
                for name in &names {
                    match self.log.drop_stream(name).await {
                        Ok(()) => self.planner.deregister(name)?,
                        Err(streamhouse_log::LogError::UnknownStream(_)) if if_exists => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.forget_grants(&names).await?;
                Ok(QueryResult::command(CommandTag::DropStream))
            }
            Statement::AlterStream { name, change } => self.alter_stream(&name, change).await,
            Statement::ShowStreams => self.show_streams().await,
            Statement::Describe { name } => self.describe(&name).await,
            Statement::CreateMaterializedView {
                name,
                if_not_exists,
                options,
                query,
            } => {
                let done = self
                    .views
                    .create(name.clone(), if_not_exists, options, *query)
                    .await?;
                self.record_owner(session, Object::table(name)).await?;
                Ok(done)
            }
            Statement::Subscribe(s) => self.views.subscribe(s).await,
            Statement::DropMaterializedView { names, if_exists } => {
                self.refuse_tables(&names, "DROP MATERIALIZED VIEW").await?;
                self.connectors.refuse_dropping(&names).await?;
                let done = self.views.drop_views(names.clone(), if_exists).await?;
                self.forget_grants(&names).await?;
                Ok(done)
            }
            Statement::ShowMaterializedViews => self.views.show().await,
            stmt @ (Statement::CreateSink { .. }
            | Statement::DropSink { .. }
            | Statement::ShowSinks
            | Statement::CreateSource { .. }
            | Statement::DropSource { .. }
            | Statement::ShowSources) => {
                let (done, streams) = self.connectors.execute(stmt, self).await?;
                for stream in streams {
                    self.record_owner(session, Object::table(stream)).await?;
                }
                Ok(done)
            }
            Statement::CreateTable(c) => {
                let name = crate::idents::object_name(&c.name)?;
                let done = self.create_table(*c).await?;
                self.record_owner(session, Object::table(name)).await?;
                Ok(done)
            }
            Statement::DropTable { names, if_exists } => self.drop_tables(&names, if_exists).await,
            Statement::Role(r) => {
                if let crate::roles::RoleStatement::Drop { names, .. } = &r {
                    let held = self.privileges.snapshot().await?;
                    crate::privileges::grant::check_owns_nothing(&held, names)?;
                }
                let done = crate::roles::run(&self.log, &self.tokens, r).await;
                self.log.roles_changed();
                done
            }
            Statement::Grant(g) => {
                let held = self.privileges.snapshot().await?;
                let grantor = session.role().unwrap_or(crate::roles::FIRST_SUPERUSER);
                let exists = |n: &str| self.planner.ctx.table_exist(n).unwrap_or(false);
                crate::privileges::grant::run(&self.log, &held, grantor, g, exists).await
            }
            Statement::Sql(other) => Err(SqlError::Internal(format!(
                "unprepared statement {}",
                statement_kind(&other)
            ))),
        }
    }
}

fn statement_kind(s: &SqlStatement) -> String {
    let text = s.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}
