//! Prepared statements: what planning a statement yields ([`Prepared`] and
//! its action), the types of its `$n` parameters, binding values to them,
//! and the session settings applied to a plan.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use sqlparser::ast::Statement as SqlStatement;

use crate::dialect::Statement;
use crate::error::{Result, SqlError};
use crate::result::CommandTag;
use crate::session::Session;
use crate::transaction::Control;

/// A planned statement, ready to run with parameter values.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub(crate) action: Action,
    /// Types of `$1…$n` as inferred (None: unknown, send text).
    pub param_types: Vec<Option<DataType>>,
    /// Columns of the rows it returns; `None` for commands.
    pub schema: Option<SchemaRef>,
    /// The statement as text.
    pub text: String,
    /// What it needs of its caller that its plan decides (the relations a
    /// query reads); checked on every execution.
    pub(crate) needs: Vec<crate::privileges::Need>,
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    Query(LogicalPlan),
    Insert {
        stream: String,
        targets: Vec<usize>,
        source: LogicalPlan,
        /// (parameter number, type) of bare `$n` cells of a VALUES list.
        param_hints: Vec<(usize, DataType)>,
        /// The statement the rows come from (a table's UPDATE and DELETE
        /// append rows too).
        verb: Verb,
    },
    /// `INSERT … VALUES` of literals only: the rows, as text columns, cast
    /// to the stream's types at execution (no planner involved).
    InsertRows {
        stream: String,
        targets: Vec<usize>,
        rows: RecordBatch,
    },
    Tag(CommandTag),
    /// BEGIN, COMMIT, ROLLBACK and savepoints.
    Transaction(Control),
    /// (setting, value); `None` resets to the default (`SET x TO DEFAULT`).
    Set(Vec<(String, Option<String>)>),
    Reset(Option<String>),
    Show(String),
    Copy(Box<SqlStatement>),
    Statement(Statement),
}

/// Which statement appends rows: INSERT (and COPY), or a table's UPDATE
/// or DELETE, which append the changed rows to the table's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Insert,
    Update,
    Delete,
}

impl Verb {
    /// The privilege the statement takes on its target.
    pub(crate) fn privilege(self) -> crate::privileges::Privilege {
        use crate::privileges::Privilege;
        match self {
            Verb::Insert => Privilege::Insert,
            Verb::Update => Privilege::Update,
            Verb::Delete => Privilege::Delete,
        }
    }

    /// The statement's completion for `rows` rows.
    pub(crate) fn tag(self, rows: u64) -> CommandTag {
        match self {
            Verb::Insert => CommandTag::Insert(rows),
            Verb::Update => CommandTag::Update(rows),
            Verb::Delete => CommandTag::Delete(rows),
        }
    }
}

/// (column position, parameter number) of every VALUES cell that is a bare
/// `$n` placeholder.
pub(crate) fn values_placeholders(q: &sqlparser::ast::Query) -> Vec<(usize, usize)> {
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

impl Action {
    /// Whether the statement may run inside a transaction block: reads,
    /// writes (held until COMMIT) and settings may; what could not be
    /// rolled back (creating or dropping streams, views and roles) may not.
    pub(crate) fn may_run_in_block(&self) -> bool {
        match self {
            Action::Query(_)
            | Action::Insert { .. }
            | Action::InsertRows { .. }
            | Action::Tag(_)
            | Action::Transaction(_)
            | Action::Set(_)
            | Action::Reset(_)
            | Action::Show(_)
            | Action::Copy(_) => true,
            Action::Statement(s) => match s {
                Statement::ShowStreams
                | Statement::ShowMaterializedViews
                | Statement::ShowSinks
                | Statement::ShowSources
                | Statement::Describe { .. }
                | Statement::Subscribe(_) => true,
                Statement::CreateStream(_)
                | Statement::DropStream { .. }
                | Statement::AlterStream { .. }
                | Statement::CreateMaterializedView { .. }
                | Statement::DropMaterializedView { .. }
                | Statement::CreateTable(_)
                | Statement::DropTable { .. }
                | Statement::Role(_)
                | Statement::Grant(_)
                | Statement::CreateSink { .. }
                | Statement::DropSink { .. }
                | Statement::CreateSource { .. }
                | Statement::DropSource { .. }
                | Statement::Sql(_) => false,
            },
        }
    }

    /// Whether the statement appends to the log (INSERT, COPY FROM, or a
    /// COMMIT that appends a block's writes).
    pub(crate) fn writes(&self) -> bool {
        matches!(
            self,
            Action::Insert { .. }
                | Action::InsertRows { .. }
                | Action::Copy(_)
                | Action::Transaction(Control::Commit)
        )
    }

    /// What the statement is, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Action::Statement(Statement::CreateStream(_)) => "CREATE STREAM",
            Action::Statement(Statement::DropStream { .. }) => "DROP STREAM",
            Action::Statement(Statement::AlterStream { .. }) => "ALTER STREAM",
            Action::Statement(Statement::CreateMaterializedView { .. }) => {
                "CREATE MATERIALIZED VIEW"
            }
            Action::Statement(Statement::DropMaterializedView { .. }) => "DROP MATERIALIZED VIEW",
            Action::Statement(Statement::CreateTable(_)) => "CREATE TABLE",
            Action::Statement(Statement::DropTable { .. }) => "DROP TABLE",
            Action::Statement(Statement::CreateSink { .. }) => "CREATE SINK",
            Action::Statement(Statement::DropSink { .. }) => "DROP SINK",
            Action::Statement(Statement::CreateSource { .. }) => "CREATE SOURCE",
            Action::Statement(Statement::DropSource { .. }) => "DROP SOURCE",
            _ => "this statement",
        }
    }
}

/// Types of placeholders that appear directly under a cast (`$1::bigint`),
/// which the planner leaves untyped and PostgreSQL types by the cast.
pub(crate) fn cast_placeholder_types(plan: &LogicalPlan) -> HashMap<String, DataType> {
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
pub(crate) fn parameter_number(name: &str) -> Result<usize> {
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
pub(crate) fn param_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
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
pub(crate) fn with_session_settings(plan: LogicalPlan, session: &Session) -> Result<LogicalPlan> {
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
                let user = session.role().unwrap_or(crate::session::USER);
                let trusted = session.role().is_none();
                let (e, bound) = crate::catalog::privileges::bind_current_user(e, user, trusted)?;
                Ok(if bound {
                    Transformed::yes(e)
                } else {
                    Transformed::no(e)
                })
            })
        })
    })?;
    Ok(replaced.data)
}

pub(crate) fn bind(plan: &LogicalPlan, params: Vec<ScalarValue>) -> Result<LogicalPlan> {
    if params.is_empty() {
        return Ok(plan.clone());
    }
    Ok(plan.clone().with_param_values(params)?)
}
