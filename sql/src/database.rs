//! [`Database`]: the front door every adapter calls.
//!
//! It parses a query string into statements (our dialect on sqlparser),
//! runs StreamHouse statements itself (streams, INSERT into the log), and
//! hands every query to DataFusion over a catalog in which each stream is a
//! table. Results are a stream of Arrow batches or a command tag.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use arrow::array::{
    ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringArray, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use datafusion::common::{ScalarValue, TableReference};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlparser::ast::{
    CopySource, CopyTarget, Insert, ObjectName, Statement as SqlStatement, TableObject,
};
use streamhouse_log::stream::is_system_column;
use streamhouse_log::{AppendOptions, Log, StreamInfo, StreamSpec};
use tracing::debug;

use crate::catalog::{self, Compat};
use crate::copy::{CopyFormat, CopyIn, copy_out};
use crate::dialect::{self, CreateStream, Statement, object_name};
use crate::error::{Result, SqlError};
use crate::functions;
use crate::names::output_names;
use crate::registry::Views;
use crate::rewrite::{fold_table_function_names, hide_system_columns, integer_literals};
use crate::session::Session;
use crate::types::{SQL_TYPE_KEY, arrow_type, bytea_from_text, sql_type_name};
use crate::window::{Kind, Tables, WindowFunction};
use streamhouse_streams::scan::StreamTable;

/// What a statement produced.
pub enum QueryResult {
    /// Rows, produced lazily as the stream is polled.
    Rows(SendableRecordBatchStream),
    /// A push query's rows: each batch as soon as it is produced (a door
    /// sends it at once), until the client goes away.
    Subscription(SendableRecordBatchStream),
    /// A command's completion: the PostgreSQL command tag and, for INSERT,
    /// the rows it wrote.
    Command { tag: String, rows: Option<u64> },
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
            QueryResult::Command { tag, .. } => write!(f, "Command({tag})"),
            QueryResult::CopyIn(c) => write!(f, "{c:?}"),
            QueryResult::CopyOut { columns, .. } => write!(f, "CopyOut({columns} columns)"),
        }
    }
}

impl QueryResult {
    pub(crate) fn command(tag: impl Into<String>) -> Self {
        QueryResult::Command {
            tag: tag.into(),
            rows: None,
        }
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

/// A planned statement, ready to run with parameter values.
#[derive(Debug, Clone)]
pub struct Prepared {
    action: Action,
    /// Types of `$1…$n` as inferred (None: unknown, send text).
    pub param_types: Vec<Option<DataType>>,
    /// Columns of the rows it returns; `None` for commands.
    pub schema: Option<SchemaRef>,
    /// The statement as text.
    pub text: String,
}

#[derive(Debug, Clone)]
enum Action {
    Query(LogicalPlan),
    Insert {
        stream: String,
        targets: Vec<usize>,
        source: LogicalPlan,
        /// (parameter number, type) of bare `$n` cells of a VALUES list.
        param_hints: Vec<(usize, DataType)>,
    },
    /// `INSERT … VALUES` of literals only: the rows, as text columns, cast
    /// to the stream's types at execution (no planner involved).
    InsertRows {
        stream: String,
        targets: Vec<usize>,
        rows: RecordBatch,
    },
    Tag(&'static str),
    /// (setting, value); `None` resets to the default (`SET x TO DEFAULT`).
    Set(Vec<(String, Option<String>)>),
    Reset(Option<String>),
    Show(String),
    Copy(Box<SqlStatement>),
    Statement(Statement),
}

/// PostgreSQL's arity rules for INSERT.
fn check_arity(width: usize, targets: usize, explicit_columns: bool) -> Result<()> {
    if width > targets {
        return Err(SqlError::Syntax(
            "INSERT has more expressions than target columns".into(),
        ));
    }
    if width < targets && explicit_columns {
        return Err(SqlError::Syntax(
            "INSERT has more target columns than expressions".into(),
        ));
    }
    Ok(())
}

/// The rows of a `VALUES` list whose every cell is a literal (number,
/// string, boolean, NULL, or a negated number), as one text column per
/// position; `None` when any cell needs the planner. Text is what a
/// PostgreSQL literal is until it meets its column's type, and casting each
/// column once is far cheaper than planning thousands of expressions.
fn literal_values(q: &sqlparser::ast::Query) -> Result<Option<Vec<ArrayRef>>> {
    use sqlparser::ast::{Expr, SetExpr, UnaryOperator, Value};
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() {
        return Ok(None);
    }
    let SetExpr::Values(values) = q.body.as_ref() else {
        return Ok(None);
    };
    let width = values.rows.first().map(|r| r.len()).unwrap_or(0);
    let mut cols: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(values.rows.len()); width];
    for row in &values.rows {
        if row.len() != width {
            return Err(SqlError::Syntax(
                "VALUES lists must all be the same length".into(),
            ));
        }
        for (col, e) in cols.iter_mut().zip(row.iter()) {
            let v = match e {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => Some(n.clone()),
                    Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => {
                        Some(s.clone())
                    }
                    Value::Boolean(b) => Some(b.to_string()),
                    Value::Null => None,
                    _ => return Ok(None),
                },
                Expr::UnaryOp {
                    op: UnaryOperator::Minus,
                    expr,
                } => match expr.as_ref() {
                    Expr::Value(v) => match &v.value {
                        Value::Number(n, _) => Some(format!("-{n}")),
                        _ => return Ok(None),
                    },
                    _ => return Ok(None),
                },
                _ => return Ok(None),
            };
            col.push(v);
        }
    }
    Ok(Some(
        cols.into_iter()
            .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
            .collect(),
    ))
}

/// (column position, parameter number) of every VALUES cell that is a bare
/// `$n` placeholder.
fn values_placeholders(q: &sqlparser::ast::Query) -> Vec<(usize, usize)> {
    let sqlparser::ast::SetExpr::Values(values) = q.body.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for row in &values.rows {
        for (col, e) in row.iter().enumerate() {
            if let sqlparser::ast::Expr::Value(v) = e
                && let sqlparser::ast::Value::Placeholder(p) = &v.value
                && let Ok(n) = parameter_number(p)
            {
                out.push((col, n));
            }
        }
    }
    out
}

impl Prepared {
    /// `COMMIT` or `ROLLBACK`: allowed in a failed transaction block.
    pub fn ends_transaction(&self) -> bool {
        matches!(self.action, Action::Tag("COMMIT" | "ROLLBACK"))
    }
}

/// Types of placeholders that appear directly under a cast (`$1::bigint`),
/// which the planner leaves untyped and PostgreSQL types by the cast.
fn cast_placeholder_types(plan: &LogicalPlan) -> HashMap<String, DataType> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Cast, Expr, TryCast};
    let mut found = HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let (inner, to) = match e {
                    Expr::Cast(Cast { expr, field }) => (expr.as_ref(), field.data_type()),
                    Expr::TryCast(TryCast { expr, field }) => (expr.as_ref(), field.data_type()),
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                if let Expr::Placeholder(p) = inner {
                    found.entry(p.id.clone()).or_insert_with(|| to.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The most parameters a statement may have: a Bind message counts them in
/// 16 bits, so no client can supply more (PostgreSQL's limit too).
pub const MAX_PARAMETERS: usize = u16::MAX as usize;

/// The number of a `$n` placeholder, 1 ≤ n ≤ [`MAX_PARAMETERS`]. Checked
/// before anything is sized by it: `$99999999999` is a statement any client
/// can send.
fn parameter_number(name: &str) -> Result<usize> {
    let digits = name.strip_prefix('$').unwrap_or(name);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SqlError::NotSupported(format!(
            "parameter {name}: use $1, $2, …"
        )));
    }
    match digits.parse::<u64>() {
        Ok(0) => Err(SqlError::Syntax("there is no parameter $0".into())),
        Ok(n) if n <= MAX_PARAMETERS as u64 => Ok(n as usize),
        _ => Err(SqlError::Syntax(format!(
            "parameter number too large: {name} (at most ${MAX_PARAMETERS})"
        ))),
    }
}

/// `$1…$n` in order, with their inferred types.
fn param_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
    let mut types = plan.get_parameter_types()?;
    for (id, t) in cast_placeholder_types(plan) {
        if let Some(slot @ None) = types.get_mut(&id) {
            *slot = Some(t);
        }
    }
    // A parameter the statement no longer reads (a catalog rewrite can drop
    // one) keeps its place, with no type.
    let mut numbered = Vec::with_capacity(types.len());
    for (name, t) in types {
        numbered.push((parameter_number(&name)?, t));
    }
    let mut out = vec![None; numbered.iter().map(|(i, _)| *i).max().unwrap_or(0)];
    for (i, t) in numbered {
        out[i - 1] = t;
    }
    Ok(out)
}

/// `current_setting('name')` with a literal name answers from `session`
/// (what `SET` changed there); the function itself knows only the server
/// defaults, since the planner is shared by every session.
fn with_session_settings(plan: LogicalPlan, session: &Session) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::Expr;
    let replaced = plan.transform_up_with_subqueries(|p| {
        p.map_expressions(|e| {
            e.transform_up(|e| {
                if let Expr::ScalarFunction(f) = &e
                    && f.name() == "current_setting"
                    && let [Expr::Literal(ScalarValue::Utf8(Some(name)), _)] = f.args.as_slice()
                    && let Some((_, value)) = session.get(name)
                {
                    return Ok(Transformed::yes(Expr::Literal(
                        ScalarValue::Utf8(Some(value)),
                        None,
                    )));
                }
                Ok(Transformed::no(e))
            })
        })
    })?;
    Ok(replaced.data)
}

fn bind(plan: &LogicalPlan, params: Vec<ScalarValue>) -> Result<LogicalPlan> {
    if params.is_empty() {
        return Ok(plan.clone());
    }
    Ok(plan.clone().with_param_values(params)?)
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

/// Re-labels a result stream's columns (same types, new names).
fn with_schema(stream: SendableRecordBatchStream, schema: SchemaRef) -> SendableRecordBatchStream {
    let s = schema.clone();
    let mapped = stream.map(move |b| {
        let b = b?;
        Ok(RecordBatch::try_new_with_options(
            s.clone(),
            b.columns().to_vec(),
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
        )?)
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, mapped))
}

/// The setting a `SHOW a b c` names (`transaction isolation level` is
/// `transaction_isolation`, `time zone` is `TimeZone`).
fn setting_name(words: &[sqlparser::ast::Ident]) -> String {
    let joined = words
        .iter()
        .map(|w| w.value.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    match joined.as_str() {
        "transaction isolation level" => "transaction_isolation".into(),
        "time zone" => "timezone".into(),
        _ => joined.replace(' ', "_"),
    }
}

/// `SET` assignments as (name, value) pairs.
fn assignments(set: sqlparser::ast::Set) -> Result<Vec<(String, Option<String>)>> {
    use sqlparser::ast::{Expr, Set, Value};
    let text = |e: &Expr| -> Option<String> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
                Value::Number(n, _) => Some(n.clone()),
                Value::Boolean(b) => Some(if *b { "on" } else { "off" }.into()),
                other => Some(other.to_string()),
            },
            Expr::Identifier(i) if i.value.eq_ignore_ascii_case("default") => None,
            Expr::Identifier(i) => Some(i.value.clone()),
            other => Some(other.to_string()),
        }
    };
    Ok(match set {
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let vals: Vec<Option<String>> = values.iter().map(text).collect();
            let value = if vals.iter().any(Option::is_none) {
                None
            } else {
                Some(vals.into_iter().flatten().collect::<Vec<_>>().join(", "))
            };
            vec![(variable.to_string(), value)]
        }
        Set::SetTimeZone { value, .. } => vec![("TimeZone".into(), text(&value))],
        // SET SESSION CHARACTERISTICS, SET ROLE, SET NAMES …: accepted, no effect
        // (one role, one encoding, autocommit).
        _ => Vec::new(),
    })
}

fn show_schema(session: &Session, name: &str) -> SchemaRef {
    if name == "all" {
        return Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, false),
        ]));
    }
    let col = session
        .get(name)
        .map(|(n, _)| n)
        .unwrap_or_else(|| name.to_string());
    Arc::new(Schema::new(vec![Field::new(col, DataType::Utf8, false)]))
}

fn show(session: &Session, name: &str) -> Result<QueryResult> {
    let schema = show_schema(session, name);
    let cols: Vec<ArrayRef> = if name == "all" {
        let all = session.all();
        vec![
            Arc::new(StringArray::from_iter_values(
                all.iter().map(|(n, _)| n.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                all.iter().map(|(_, v)| v.as_str()),
            )),
        ]
    } else {
        let (_, v) = session.get(name).ok_or_else(|| {
            SqlError::UndefinedObject(format!("unrecognized configuration parameter \"{name}\""))
        })?;
        vec![Arc::new(StringArray::from(vec![v]))]
    };
    QueryResult::rows(RecordBatch::try_new(schema, cols)?)
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

/// The SQL engine over the log.
pub struct Database {
    log: Arc<Log>,
    pub(crate) ctx: SessionContext,
    /// Materialized views: running here, elsewhere, or failed to load.
    pub(crate) views: Arc<Views>,
    pub(crate) options: DatabaseOptions,
    /// Where views keep local state.
    pub(crate) state_dir: std::path::PathBuf,
    /// The temporary state directory, when none was given.
    _temp_state: Option<tempfile::TempDir>,
    /// Names of the streams registered as tables (for the `*` rewrite).
    streams: RwLock<HashSet<String>>,
    /// The same tables, for the window table functions.
    tables: Tables,
    /// Views' changelogs as tables, by view name (for `changes(view)`).
    pub(crate) changelogs: Tables,
    /// Statements running now.
    pub(crate) running: Arc<crate::system::Running>,
    /// Settings used by [`Database::execute`] (embedded use, tests).
    default_session: Session,
    /// Rewrites of client catalog queries.
    compat: Compat,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("log", &self.log).finish()
    }
}

/// `rows`, keeping `guard` until they have been read or dropped.
fn hold_while_read(
    rows: SendableRecordBatchStream,
    guard: crate::system::RunningGuard,
) -> SendableRecordBatchStream {
    let schema = rows.schema();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        rows.map(move |b| {
            let _ = &guard;
            b
        }),
    ))
}

/// Settings of a [`Database`].
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// Local directory for the state of materialized views (a cache of
    /// what their checkpoints hold in the object store); none: a temporary
    /// directory removed with the database.
    pub state_dir: Option<std::path::PathBuf>,
    /// How often a changing view is checkpointed.
    pub checkpoint_interval: std::time::Duration,
    /// After this long without rows, an input partition stops holding a
    /// view's watermark back (a view's `idle_timeout` option overrides it).
    pub idle_timeout: std::time::Duration,
    /// How long a view's lease lasts unless renewed: an agent that stops
    /// renewing (killed, paused) loses its views to others after this.
    pub lease_duration: std::time::Duration,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            state_dir: None,
            checkpoint_interval: std::time::Duration::from_secs(2),
            idle_timeout: std::time::Duration::from_secs(5),
            lease_duration: std::time::Duration::from_secs(10),
        }
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
        let compat = catalog::install(&ctx, crate::session::DATABASE).await?;
        let (state_dir, temp_state) = match &options.state_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("streamhouse-state-")
                    .tempdir()
                    .map_err(|e| {
                        SqlError::Unavailable(format!("temporary state directory: {e}"))
                    })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let running = Arc::new(crate::system::Running::new(log.clock().clone()));
        let db = Database {
            log,
            ctx,
            streams: RwLock::new(HashSet::new()),
            tables: Tables::default(),
            changelogs: Tables::default(),
            running,
            default_session: Session::default(),
            compat,
            views: Arc::new(Views::default()),
            options,
            state_dir,
            _temp_state: temp_state,
        };
        functions::register(&db.ctx);
        let sources = Arc::new(crate::system::Sources {
            log: db.log.clone(),
            views: db.views.clone(),
            running: db.running.clone(),
        });
        if let Some(catalog) = db.ctx.catalog(crate::session::DATABASE) {
            catalog.register_schema(
                crate::system::SCHEMA,
                crate::system::schema(crate::system::tables(sources))?,
            )?;
        }
        db.ctx.register_udtf(
            "tumble",
            Arc::new(WindowFunction::new(Kind::Tumble, db.tables.clone())),
        );
        db.ctx.register_udtf(
            "hop",
            Arc::new(WindowFunction::new(Kind::Hop, db.tables.clone())),
        );
        db.ctx.register_udtf(
            "session",
            Arc::new(WindowFunction::new(Kind::Session, db.tables.clone())),
        );
        db.ctx.register_udtf(
            "changes",
            Arc::new(crate::matview::changes::ChangesFunction::new(
                db.changelogs.clone(),
            )),
        );
        for info in db.log.streams().await? {
            db.register(info)?;
        }
        db.load_views().await?;
        Ok(db)
    }

    /// Every table a client can list: (schema, name, type, columns).
    /// Streams are `TABLE`s in `public`; the catalog's own tables are
    /// `SYSTEM TABLE`s (`pg_catalog`) and `VIEW`s (`information_schema`).
    pub async fn tables(&self) -> Result<Vec<(String, String, &'static str, SchemaRef)>> {
        let mut out = Vec::new();
        let Some(catalog) = self.ctx.catalog(crate::session::DATABASE) else {
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

    pub(crate) fn register(&self, info: Arc<StreamInfo>) -> Result<()> {
        let name = info.name().to_string();
        let table = Arc::new(StreamTable::new(self.log.clone(), info));
        self.ctx
            .register_table(TableReference::bare(name.clone()), table.clone())?;
        self.tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), table);
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
        Ok(())
    }

    pub(crate) fn deregister(&self, name: &str) -> Result<()> {
        self.ctx.deregister_table(TableReference::bare(name))?;
        self.tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
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
        match self.prepare_statement(stmt).await {
            Ok(prepared) => self.execute_prepared(session, &prepared, Vec::new()).await,
            Err(e) => {
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
        let streams = self.sync_streams().await?;
        let views = self.learn_views().await?;
        Ok(streams || views)
    }

    /// Brings the registered stream tables in line with the metadata store
    /// (streams created or dropped through other agents); whether anything
    /// changed.
    pub async fn sync_streams(&self) -> Result<bool> {
        let current: HashMap<String, Arc<StreamInfo>> = self
            .log
            .streams()
            .await?
            .into_iter()
            .map(|s| (s.name().to_string(), s))
            .collect();
        let registered: HashMap<String, i64> = {
            let names = self.streams.read().unwrap_or_else(|p| p.into_inner());
            let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
            names
                .iter()
                .filter_map(|n| tables.get(n).map(|t| (n.clone(), t.info().id)))
                .collect()
        };
        let mut changed = false;
        for (name, id) in &registered {
            if current.get(name).map(|s| s.id) != Some(*id) {
                self.deregister(name)?;
                changed = true;
            }
        }
        for (name, info) in current {
            if registered.get(&name) != Some(&info.id) {
                self.register(info)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    async fn plan_statement(&self, stmt: Statement) -> Result<Prepared> {
        let text = stmt.text();
        let (action, schema) = match stmt {
            Statement::ShowStreams => (Action::Statement(stmt), Some(show_streams_schema())),
            Statement::ShowMaterializedViews => (
                Action::Statement(stmt),
                Some(crate::registry::show_views_schema()),
            ),
            Statement::Describe { .. } => (Action::Statement(stmt), Some(describe_schema())),
            Statement::Subscribe(ref s) => {
                let schema = self.subscription_schema(s).await?;
                (Action::Statement(stmt), Some(schema))
            }
            Statement::Sql(sql) => match *sql {
                SqlStatement::Insert(insert) => (self.prepare_insert(insert).await?, None),
                SqlStatement::CreateTable(_) => {
                    return Err(SqlError::NotSupported(
                        "CREATE TABLE: StreamHouse stores streams; use CREATE STREAM".into(),
                    ));
                }
                q @ (SqlStatement::Query(_) | SqlStatement::Explain { .. }) => {
                    let names = match &q {
                        SqlStatement::Query(query) => output_names(query),
                        _ => None,
                    };
                    let plan = self.plan(q).await?;
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
                // Statements are durable when they return (autocommit), so a
                // savepoint marks nothing to undo; accepted for drivers that
                // wrap probes in one.
                SqlStatement::Savepoint { .. } => (Action::Tag("SAVEPOINT"), None),
                SqlStatement::ReleaseSavepoint { .. } => (Action::Tag("RELEASE"), None),
                SqlStatement::Rollback {
                    savepoint: Some(_), ..
                } => (Action::Tag("ROLLBACK TO SAVEPOINT"), None),
                // What connection pools send when a connection is returned
                // (asyncpg: CLOSE ALL; UNLISTEN *; RESET ALL): there are no
                // SQL cursors or notification channels to release.
                SqlStatement::Close {
                    cursor: sqlparser::ast::CloseCursor::All,
                } => (Action::Tag("CLOSE CURSOR ALL"), None),
                SqlStatement::Close { cursor } => {
                    return Err(SqlError::InvalidCursor(format!(
                        "cursor \"{cursor}\" does not exist"
                    )));
                }
                SqlStatement::UNLISTEN { .. } => (Action::Tag("UNLISTEN"), None),
                SqlStatement::Discard { .. } => (Action::Reset(None), None),
                SqlStatement::StartTransaction { .. } => (Action::Tag("BEGIN"), None),
                SqlStatement::Commit { .. } => (Action::Tag("COMMIT"), None),
                SqlStatement::Rollback { .. } => (Action::Tag("ROLLBACK"), None),
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
        Ok(Prepared {
            text,
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
        let result =
            tracing::Instrument::instrument(self.run_prepared(session, prepared, params), span)
                .await;
        crate::metrics::query_done(session.door(), started.elapsed(), result.as_ref().err());
        // A statement whose rows stream runs until they are read.
        Ok(match result? {
            QueryResult::Rows(rows) => QueryResult::Rows(hold_while_read(rows, running)),
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
        match &prepared.action {
            Action::Query(plan) => {
                let plan = with_session_settings(bind(plan, params)?, session)?;
                let df = self.ctx.execute_logical_plan(plan).await?;
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
                ..
            } => {
                let source = bind(source, params)?;
                self.run_insert(stream, targets, source).await
            }
            Action::InsertRows {
                stream,
                targets,
                rows,
            } => {
                let info = self.log.stream(stream).await?;
                let n = self
                    .append_rows(
                        stream,
                        &info.spec.schema,
                        targets,
                        std::slice::from_ref(rows),
                    )
                    .await?;
                Ok(QueryResult::Command {
                    tag: format!("INSERT 0 {n}"),
                    rows: Some(n),
                })
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
                Ok(QueryResult::command("SET"))
            }
            Action::Reset(name) => {
                session.reset(name.as_deref());
                Ok(QueryResult::command("RESET"))
            }
            Action::Show(name) => show(session, name),
            Action::Copy(stmt) => self.copy(stmt.as_ref().clone()).await,
            Action::Statement(stmt) => self.run_statement(stmt.clone()).await,
        }
    }

    async fn run_statement(&self, stmt: Statement) -> Result<QueryResult> {
        match stmt {
            Statement::CreateStream(c) => self.create_stream(c).await,
            Statement::DropStream { names, if_exists } => {
                for name in names {
                    match self.log.drop_stream(&name).await {
                        Ok(()) => self.deregister(&name)?,
                        Err(streamhouse_log::LogError::UnknownStream(_)) if if_exists => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(QueryResult::command("DROP STREAM"))
            }
            Statement::ShowStreams => self.show_streams().await,
            Statement::Describe { name } => self.describe(&name).await,
            Statement::CreateMaterializedView {
                name,
                if_not_exists,
                options,
                query,
            } => {
                self.create_materialized_view(name, if_not_exists, options, *query)
                    .await
            }
            Statement::Subscribe(s) => self.subscribe(s).await,
            Statement::DropMaterializedView { names, if_exists } => {
                self.drop_materialized_views(names, if_exists).await
            }
            Statement::ShowMaterializedViews => self.show_materialized_views().await,
            Statement::Sql(other) => Err(SqlError::Internal(format!(
                "unprepared statement {}",
                statement_kind(&other)
            ))),
        }
    }

    /// Plans a query (after hiding system columns from `*`).
    pub async fn plan(&self, mut stmt: SqlStatement) -> Result<LogicalPlan> {
        {
            let streams = self.streams.read().unwrap_or_else(|p| p.into_inner());
            hide_system_columns(&mut stmt, &streams);
            fold_table_function_names(&mut stmt);
            integer_literals(&mut stmt);
        }
        debug!(sql = %stmt, "planning");
        let state = self.ctx.state();
        Ok(state
            .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
            .await?)
    }

    async fn copy(&self, stmt: SqlStatement) -> Result<QueryResult> {
        let SqlStatement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            values,
        } = stmt
        else {
            return Err(SqlError::Internal("not a COPY".into()));
        };
        let format = CopyFormat::from_options(&options, &legacy_options)?;
        if !to {
            if target != CopyTarget::Stdin {
                return Err(SqlError::NotSupported(
                    "COPY FROM a file or program: use COPY … FROM STDIN (psql: \\copy)".into(),
                ));
            }
            if !values.is_empty() {
                return Err(SqlError::NotSupported(
                    "COPY data inline in the statement".into(),
                ));
            }
            let CopySource::Table {
                table_name,
                columns,
            } = source
            else {
                return Err(SqlError::Syntax("COPY FROM needs a stream name".into()));
            };
            let name = object_name(&table_name)?;
            let info = self.log.stream(&name).await?;
            let cols: Vec<ObjectName> = columns.into_iter().map(ObjectName::from).collect();
            let targets = target_columns(&info, &cols)?;
            let copy = CopyIn::new(name, info.spec.schema.clone(), targets, format)?;
            return Ok(QueryResult::CopyIn(Box::new(copy)));
        }
        if target != CopyTarget::Stdout {
            return Err(SqlError::NotSupported(
                "COPY TO a file or program: use COPY … TO STDOUT (psql: \\copy)".into(),
            ));
        }
        let stream = match source {
            CopySource::Query(q) => {
                let plan = self.plan(SqlStatement::Query(q)).await?;
                self.ctx
                    .execute_logical_plan(plan)
                    .await?
                    .execute_stream()
                    .await?
            }
            CopySource::Table {
                table_name,
                columns,
            } => {
                let name = object_name(&table_name)?;
                let info = self.log.stream(&name).await?;
                let cols: Vec<String> = if columns.is_empty() {
                    info.spec
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect()
                } else {
                    columns.iter().map(dialect::normalize).collect()
                };
                let df = self.ctx.table(TableReference::bare(name)).await?;
                let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
                df.select_columns(&cols)?.execute_stream().await?
            }
        };
        let columns = stream.schema().fields().len();
        let binary = format.binary;
        Ok(QueryResult::CopyOut {
            columns,
            binary,
            data: copy_out(stream, format),
        })
    }

    /// Ends a copy-in: appends every row it decoded, in one atomic append.
    /// Returns the row count.
    pub async fn finish_copy(&self, copy: Box<CopyIn>) -> Result<u64> {
        let d = copy.finish()?;
        self.append_rows(&d.stream, &d.declared, &d.targets, &d.batches)
            .await
    }

    /// Casts rows to the stream's columns (`targets` say where each source
    /// column goes) and appends them all in one atomic append. The shared
    /// end of INSERT and COPY.
    async fn append_rows(
        &self,
        stream: &str,
        declared: &SchemaRef,
        targets: &[usize],
        batches: &[RecordBatch],
    ) -> Result<u64> {
        let rows = batches
            .iter()
            .map(|b| conform_insert(stream, declared, targets, b))
            .collect::<Result<Vec<_>>>()?;
        let ack = self
            .log
            .append_batches(stream, rows, AppendOptions::default())
            .await?;
        Ok(ack.rows())
    }

    async fn create_stream(&self, c: CreateStream) -> Result<QueryResult> {
        let mut fields = Vec::with_capacity(c.columns.len());
        for col in &c.columns {
            let (dt, sql_type) = arrow_type(&col.data_type)?;
            let not_null = col
                .options
                .iter()
                .any(|o| matches!(o.option, sqlparser::ast::ColumnOption::NotNull));
            let mut field = Field::new(col.name.value.clone(), dt, !not_null);
            if let Some(t) = sql_type {
                field = field.with_metadata([(SQL_TYPE_KEY.to_string(), t.to_string())].into());
            }
            fields.push(field);
        }
        let mut spec = StreamSpec::new(c.name.clone(), Arc::new(Schema::new(fields)))
            .with_partitions(c.partitions.unwrap_or(1))
            .with_key(c.key);
        if let Some((col, delay)) = c.watermark {
            spec = spec.with_event_time(col, delay);
        }
        if let Some(r) = c.retention {
            spec = spec.with_retention(r);
        }
        match self.log.create_stream(spec).await {
            Ok(info) => self.register(info)?,
            Err(streamhouse_log::LogError::StreamExists(_)) if c.if_not_exists => {}
            Err(e) => return Err(e.into()),
        }
        Ok(QueryResult::command("CREATE STREAM"))
    }

    async fn show_streams(&self) -> Result<QueryResult> {
        let streams = self.log.streams().await?;
        let mut rows = Vec::with_capacity(streams.len());
        for s in &streams {
            let ends = self.log.metadata().partition_ends(s.id).await?;
            rows.push(ends.iter().sum::<u64>() as i64);
        }
        let human =
            |d: Option<std::time::Duration>| d.map(|d| humantime::format_duration(d).to_string());
        let schema = show_streams_schema();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                streams.iter().map(|s| s.name()),
            )),
            Arc::new(Int32Array::from_iter_values(
                streams.iter().map(|s| s.spec.partitions as i32),
            )),
            Arc::new(StringArray::from_iter(streams.iter().map(|s| {
                (!s.spec.key.is_empty()).then(|| s.spec.key.join(", "))
            }))),
            Arc::new(StringArray::from_iter(
                streams
                    .iter()
                    .map(|s| s.spec.event_time.as_ref().map(|e| e.column.clone())),
            )),
            Arc::new(StringArray::from_iter(streams.iter().map(|s| {
                human(s.spec.event_time.as_ref().map(|e| e.watermark_delay))
            }))),
            Arc::new(StringArray::from_iter(
                streams.iter().map(|s| human(s.spec.retention)),
            )),
            Arc::new(Int64Array::from(rows)),
        ];
        QueryResult::rows(RecordBatch::try_new(schema, cols)?)
    }

    async fn describe(&self, name: &str) -> Result<QueryResult> {
        let info = self.log.stream(name).await?;
        let read = info.read_schema();
        let note = |f: &Field| -> Option<String> {
            let n = f.name();
            if is_system_column(n) {
                return Some("system".into());
            }
            let mut parts = Vec::new();
            if info.spec.key.iter().any(|k| k == n) {
                parts.push("key".to_string());
            }
            if let Some(et) = info.spec.event_time.as_ref().filter(|e| &e.column == n) {
                parts.push(format!(
                    "event time, watermark {}",
                    humantime::format_duration(et.watermark_delay)
                ));
            }
            (!parts.is_empty()).then(|| parts.join("; "))
        };
        let schema = describe_schema();
        let fields = read.fields();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                fields.iter().map(|f| f.name().clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                fields.iter().map(|f| sql_type_name(f)),
            )),
            Arc::new(StringArray::from_iter_values(
                fields
                    .iter()
                    .map(|f| if f.is_nullable() { "YES" } else { "NO" }),
            )),
            Arc::new(StringArray::from_iter(fields.iter().map(|f| note(f)))),
        ];
        QueryResult::rows(RecordBatch::try_new(schema, cols)?)
    }

    async fn prepare_insert(&self, insert: Insert) -> Result<Action> {
        let TableObject::TableName(target) = &insert.table else {
            return Err(SqlError::NotSupported(
                "INSERT INTO a table function".into(),
            ));
        };
        let name = object_name(target)?;
        let info = self.log.stream(&name).await?;
        if insert.returning.is_some() || insert.on.is_some() || insert.overwrite {
            return Err(SqlError::NotSupported(
                "INSERT … RETURNING / ON CONFLICT / OVERWRITE into a stream".into(),
            ));
        }
        let Some(source) = insert.source else {
            return Err(SqlError::NotSupported(
                "INSERT without VALUES or a query".into(),
            ));
        };
        let targets = target_columns(&info, &insert.columns)?;
        if let Some(columns) = literal_values(&source)? {
            check_arity(columns.len(), targets.len(), !insert.columns.is_empty())?;
            let fields: Vec<Field> = (0..columns.len())
                .map(|i| Field::new(format!("column{}", i + 1), DataType::Utf8, true))
                .collect();
            let rows = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
            return Ok(Action::InsertRows {
                stream: name,
                targets: targets[..rows.num_columns()].to_vec(),
                rows,
            });
        }
        let value_params = values_placeholders(&source);
        let source = self.plan(SqlStatement::Query(source)).await?;
        let width = source.schema().fields().len();
        check_arity(width, targets.len(), !insert.columns.is_empty())?;
        // `VALUES ($1, $2)` gives the planner no types; the target columns do.
        let mut param_hints = Vec::new();
        for (col, n) in value_params {
            if let Some(&t) = targets.get(col) {
                param_hints.push((n, info.spec.schema.field(t).data_type().clone()));
            }
        }
        Ok(Action::Insert {
            stream: name,
            targets: targets[..width].to_vec(),
            source,
            param_hints,
        })
    }

    async fn run_insert(
        &self,
        name: &str,
        targets: &[usize],
        source: LogicalPlan,
    ) -> Result<QueryResult> {
        let info = self.log.stream(name).await?;
        let declared = info.spec.schema.clone();
        let df = self.ctx.execute_logical_plan(source).await?;
        let batches = df.collect().await?;
        let rows = self.append_rows(name, &declared, targets, &batches).await?;
        Ok(QueryResult::Command {
            tag: format!("INSERT 0 {rows}"),
            rows: Some(rows),
        })
    }
}

/// Declared-column indices an INSERT writes, in source order.
fn target_columns(info: &StreamInfo, columns: &[ObjectName]) -> Result<Vec<usize>> {
    let schema = &info.spec.schema;
    if columns.is_empty() {
        return Ok((0..schema.fields().len()).collect());
    }
    let mut out = Vec::with_capacity(columns.len());
    for c in columns {
        let n = object_name(c)?;
        if is_system_column(&n) {
            return Err(SqlError::InvalidInput(format!(
                "cannot insert into system column \"{n}\""
            )));
        }
        let i = schema.index_of(&n).map_err(|_| {
            SqlError::UndefinedColumn(format!(
                "column \"{n}\" of relation \"{}\" does not exist",
                info.name()
            ))
        })?;
        if out.contains(&i) {
            return Err(SqlError::Syntax(format!(
                "column \"{n}\" specified more than once"
            )));
        }
        out.push(i);
    }
    Ok(out)
}

/// Casts an INSERT's source batch to the stream's declared columns; columns
/// not written are NULL.
pub(crate) fn conform_insert(
    stream: &str,
    declared: &SchemaRef,
    targets: &[usize],
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let opts = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut cols: Vec<ArrayRef> = declared
        .fields()
        .iter()
        .map(|f| new_null_array(f.data_type(), n))
        .collect();
    for (src, &t) in targets.iter().enumerate() {
        let field = declared.field(t);
        let col = batch.column(src);
        cols[t] = if col.data_type() == field.data_type() {
            col.clone()
        } else if field.data_type() == &DataType::Binary && col.data_type() == &DataType::Utf8 {
            // bytea literals: '\x00ff' is two bytes, not six characters.
            let text = col.as_string::<i32>();
            let bytes = text
                .iter()
                .map(|v| v.map(bytea_from_text).transpose())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(SqlError::InvalidInput)?;
            Arc::new(arrow::array::BinaryArray::from_iter(bytes))
        } else {
            cast_with_options(col, field.data_type(), &opts).map_err(|e| {
                SqlError::InvalidInput(format!(
                    "invalid input for column \"{}\" of type {}: {e}",
                    field.name(),
                    sql_type_name(field)
                ))
            })?
        };
    }
    for (f, c) in declared.fields().iter().zip(&cols) {
        if !f.is_nullable() && c.null_count() > 0 {
            return Err(SqlError::NotNullViolation(format!(
                "null value in column \"{}\" of relation \"{stream}\" violates not-null constraint",
                f.name()
            )));
        }
    }
    Ok(RecordBatch::try_new(declared.clone(), cols)?)
}

fn statement_kind(s: &SqlStatement) -> String {
    let text = s.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}
