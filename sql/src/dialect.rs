//! The StreamHouse dialect: statements beyond DataFusion's SQL, parsed with
//! sqlparser's own parser API on the PostgreSQL dialect (never with regexes,
//! never by printing and re-parsing).
//!
//! `CREATE STREAM`, `DROP STREAM`, `SHOW STREAMS` and `DESCRIBE` are ours;
//! every other statement is parsed by sqlparser and handed on unchanged.

use std::time::Duration;

use sqlparser::ast::{
    ColumnDef, DateTimeField, Expr, Ident, SqlOption, Statement as SqlStatement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::error::{Result, SqlError};

mod connectors;
mod streams;
use connectors::{parse_create_sink, parse_create_source};
use streams::{parse_alter_stream, parse_create_stream};

/// One statement of a query string.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    CreateStream(CreateStream),
    DropStream {
        names: Vec<String>,
        if_exists: bool,
    },
    /// `ALTER STREAM name …`: one change of its columns.
    AlterStream {
        name: String,
        change: StreamAlteration,
    },
    ShowStreams,
    Describe {
        name: String,
    },
    /// `CREATE MATERIALIZED VIEW [IF NOT EXISTS] name [WITH (…)] AS query`.
    CreateMaterializedView {
        name: String,
        if_not_exists: bool,
        options: ViewOptions,
        query: Box<sqlparser::ast::Query>,
    },
    /// `SUBSCRIBE [TO] view [WITH (snapshot = false)]`, or
    /// `SELECT … EMIT CHANGES`: a push query.
    Subscribe(Subscribe),
    DropMaterializedView {
        names: Vec<String>,
        if_exists: bool,
    },
    ShowMaterializedViews,
    /// `CREATE TABLE … (…, PRIMARY KEY (…))`: rows kept by key.
    CreateTable(Box<sqlparser::ast::CreateTable>),
    /// `DROP TABLE [IF EXISTS] t, …`.
    DropTable {
        names: Vec<String>,
        if_exists: bool,
    },
    /// `CREATE`, `ALTER` or `DROP ROLE` (or `USER`).
    Role(crate::roles::RoleStatement),
    /// `GRANT` or `REVOKE`.
    Grant(crate::privileges::grant::GrantStatement),
    /// `CREATE SINK [IF NOT EXISTS] name FROM stream INTO format WITH
    /// (key = value, …)`.
    CreateSink {
        name: String,
        if_not_exists: bool,
        from: String,
        format: String,
        /// (lower-case key, value as text).
        options: Vec<(String, String)>,
    },
    /// `DROP SINK [IF EXISTS] name, …`.
    DropSink {
        names: Vec<String>,
        if_exists: bool,
    },
    ShowSinks,
    /// `CREATE SOURCE [IF NOT EXISTS] name FROM kind WITH (key = value, …)
    /// [FOR ALL TABLES | FOR TABLES (t, schema.t, …)] [INTO stream]`.
    CreateSource {
        name: String,
        if_not_exists: bool,
        /// `postgres` or `files`.
        kind: String,
        /// (lower-case key, value as text).
        options: Vec<(String, String)>,
        /// The `FOR TABLES` list (`schema.table` or `table`); empty: all.
        tables: Vec<String>,
        /// The stream after `INTO`.
        into: Option<String>,
    },
    /// `DROP SOURCE [IF EXISTS] name, …`.
    DropSource {
        names: Vec<String>,
        if_exists: bool,
    },
    ShowSources,
    /// Anything else, for DataFusion (or for `INSERT` into a stream).
    Sql(Box<SqlStatement>),
}

/// A change of a stream's columns.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamAlteration {
    /// `ADD [COLUMN] [IF NOT EXISTS] column`.
    AddColumn {
        column: sqlparser::ast::ColumnDef,
        if_not_exists: bool,
    },
    /// `DROP [COLUMN] [IF EXISTS] name`.
    DropColumn { column: String, if_exists: bool },
    /// `RENAME [COLUMN] from TO to`.
    RenameColumn { from: String, to: String },
    /// `ALTER [COLUMN] name [SET DATA] TYPE type`.
    AlterType {
        column: String,
        data_type: sqlparser::ast::DataType,
    },
    /// `ALTER [COLUMN] name DROP NOT NULL`.
    DropNotNull { column: String },
    /// `SET (retention = …, archive_after = …)` / `RESET (retention,
    /// archive_after)`: each option named, its new value (`None`: none).
    SetOptions {
        retention: Option<Option<Duration>>,
        archive_after: Option<Option<Duration>>,
    },
}

impl std::fmt::Display for StreamAlteration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = |n: &str| {
            let plain = n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if plain {
                n.to_string()
            } else {
                Ident::with_quote('"', n).to_string()
            }
        };
        match self {
            StreamAlteration::AddColumn { column, .. } => write!(f, "ADD COLUMN {column}"),
            StreamAlteration::DropColumn { column, .. } => write!(f, "DROP COLUMN {}", q(column)),
            StreamAlteration::RenameColumn { from, to } => {
                write!(f, "RENAME COLUMN {} TO {}", q(from), q(to))
            }
            StreamAlteration::AlterType { column, data_type } => {
                write!(f, "ALTER COLUMN {} TYPE {data_type}", q(column))
            }
            StreamAlteration::DropNotNull { column } => {
                write!(f, "ALTER COLUMN {} DROP NOT NULL", q(column))
            }
            StreamAlteration::SetOptions {
                retention,
                archive_after,
            } => {
                let options = [("retention", retention), ("archive_after", archive_after)];
                let (mut set, mut reset) = (Vec::new(), Vec::new());
                for (key, value) in options {
                    match value {
                        Some(Some(d)) => {
                            set.push(format!("{key} = '{}'", humantime::format_duration(*d)))
                        }
                        Some(None) => reset.push(key.to_string()),
                        None => {}
                    }
                }
                // One statement sets or resets, never both.
                match set.is_empty() {
                    false => write!(f, "SET ({})", set.join(", ")),
                    true => write!(f, "RESET ({})", reset.join(", ")),
                }
            }
        }
    }
}

impl Statement {
    /// The statement as text (for lists of running queries).
    pub fn text(&self) -> String {
        match self {
            Statement::CreateStream(c) => format!("CREATE STREAM {}", c.name),
            Statement::DropStream { names, .. } => format!("DROP STREAM {}", names.join(", ")),
            Statement::AlterStream { name, change } => format!("ALTER STREAM {name} {change}"),
            Statement::ShowStreams => "SHOW STREAMS".into(),
            Statement::Describe { name } => format!("DESCRIBE {name}"),
            Statement::CreateMaterializedView { name, query, .. } => {
                format!("CREATE MATERIALIZED VIEW {name} AS {query}")
            }
            Statement::Subscribe(Subscribe::View { name, .. }) => format!("SUBSCRIBE TO {name}"),
            Statement::Subscribe(Subscribe::Query(q)) => format!("{q} EMIT CHANGES"),
            Statement::DropMaterializedView { names, .. } => {
                format!("DROP MATERIALIZED VIEW {}", names.join(", "))
            }
            Statement::ShowMaterializedViews => "SHOW MATERIALIZED VIEWS".into(),
            Statement::CreateTable(c) => format!("CREATE TABLE {}", c.name),
            Statement::DropTable { names, .. } => format!("DROP TABLE {}", names.join(", ")),
            Statement::Role(r) => r.text(),
            Statement::Grant(g) => g.text(),
            Statement::CreateSink { name, from, .. } => format!("CREATE SINK {name} FROM {from}"),
            Statement::DropSink { names, .. } => format!("DROP SINK {}", names.join(", ")),
            Statement::ShowSinks => "SHOW SINKS".into(),
            Statement::CreateSource { name, kind, .. } => {
                format!("CREATE SOURCE {name} FROM {}", kind.to_uppercase())
            }
            Statement::DropSource { names, .. } => format!("DROP SOURCE {}", names.join(", ")),
            Statement::ShowSources => "SHOW SOURCES".into(),
            Statement::Sql(s) => s.to_string(),
        }
    }

    /// Whether the statement creates, changes or drops an object (streams,
    /// views, roles): what the audit trail records.
    pub fn is_ddl(&self) -> bool {
        matches!(
            self,
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
        )
    }

    /// `COMMIT`/`END`, `ROLLBACK`/`ABORT` or `ROLLBACK TO SAVEPOINT`: what
    /// may run in a failed transaction block.
    pub fn runs_in_failed_block(&self) -> bool {
        matches!(self, Statement::Sql(s)
            if matches!(s.as_ref(), SqlStatement::Commit { .. } | SqlStatement::Rollback { .. }))
    }
}

/// What a push query follows.
#[derive(Debug, Clone, PartialEq)]
pub enum Subscribe {
    /// A materialized view's changelog; `snapshot`: from its beginning
    /// (everything that made the current contents), else from now.
    View { name: String, snapshot: bool },
    /// A one-off query maintained for as long as the client reads.
    Query(Box<sqlparser::ast::Query>),
}

pub use streamhouse_streams::Emit;

/// `WITH (…)` options of a materialized view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewOptions {
    /// `emit = 'on_close' | 'on_update'`; default: on close for windowed
    /// views over streams with watermarks, else on update.
    pub emit: Option<Emit>,
    /// `idle_timeout = '5 seconds'`: after this long without rows a
    /// partition stops holding the watermark back.
    pub idle_timeout: Option<Duration>,
}

impl ViewOptions {
    fn parse(p: &mut Parser) -> Result<ViewOptions> {
        let mut o = ViewOptions::default();
        if !p.peek_keyword(Keyword::WITH) {
            return Ok(o);
        }
        for opt in p.parse_options(Keyword::WITH)? {
            let (key, value) = key_value(opt)?;
            let bad = |what: &str| bad_value(&key, what);
            match key.as_str() {
                "emit" => {
                    let text = match literal(&value) {
                        Some(Value::SingleQuotedString(t)) => t.to_lowercase(),
                        _ => String::new(),
                    };
                    o.emit = Some(match text.as_str() {
                        "on_close" | "on close" => Emit::OnClose,
                        "on_update" | "on update" => Emit::OnUpdate,
                        _ => return Err(bad("expected 'on_close' or 'on_update'")),
                    });
                }
                "idle_timeout" => o.idle_timeout = Some(duration(&value).map_err(|e| bad(&e))?),
                other => {
                    return Err(SqlError::InvalidDefinition(format!(
                        "unknown materialized view option \"{other}\" (known: emit, idle_timeout)"
                    )));
                }
            }
        }
        Ok(o)
    }

    /// The options as a `WITH (…)` clause ("" when all are defaults).
    pub fn to_sql(&self) -> String {
        let mut parts = Vec::new();
        match self.emit {
            Some(Emit::OnClose) => parts.push("emit = 'on_close'".to_string()),
            Some(Emit::OnUpdate) => parts.push("emit = 'on_update'".to_string()),
            None => {}
        }
        if let Some(d) = self.idle_timeout {
            parts.push(format!(
                "idle_timeout = '{}'",
                humantime::format_duration(d)
            ));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("WITH ({}) ", parts.join(", "))
        }
    }
}

/// `CREATE STREAM name (columns…, WATERMARK FOR col AS col - INTERVAL '…') WITH (…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateStream {
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<(String, Duration)>,
    pub partitions: Option<u32>,
    pub key: Vec<String>,
    pub retention: Option<Duration>,
    /// Rows older than this go into the stream's archive (Parquet).
    pub archive_after: Option<Duration>,
    /// How Kafka records' values encode rows (`format = …`): JSON when
    /// absent, or the format of the registered `subject` it follows.
    pub format: Option<String>,
    /// The registered subject whose schema the columns follow.
    pub subject: Option<String>,
}

pub use crate::idents::{normalize, object_name};

/// Splits and parses a query string into statements.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(sql)?;
    let mut out = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        if p.peek_token_ref().token == Token::EOF {
            break;
        }
        out.push(parse_one(&mut p)?);
        if !p.consume_token(&Token::SemiColon) && p.peek_token_ref().token != Token::EOF {
            let t = p.peek_token();
            return Err(SqlError::Syntax(format!(
                "expected end of statement, found {}{}",
                t.token, t.span.start
            )));
        }
    }
    Ok(out)
}

/// Rewrites JDBC/ODBC-style `?` placeholders (which ADBC and the Flight SQL
/// JDBC driver send) to `$1…$n` in order of appearance. `?` inside strings,
/// quoted names and comments is left alone; so is a statement without any.
pub fn numbered_placeholders(sql: &str) -> Result<std::borrow::Cow<'_, str>> {
    use sqlparser::tokenizer::Tokenizer;
    if !sql.contains('?') {
        return Ok(std::borrow::Cow::Borrowed(sql));
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Syntax(e.to_string()))?;
    // Byte offset of each line start, to turn (line, char column) into bytes.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let byte_at = |line: u64, column: u64| -> usize {
        let start = line_starts[(line as usize).saturating_sub(1).min(line_starts.len() - 1)];
        sql[start..]
            .char_indices()
            .nth((column as usize).saturating_sub(1))
            .map_or(sql.len(), |(i, _)| start + i)
    };
    let mut out = String::with_capacity(sql.len() + 8);
    let (mut copied, mut n) = (0, 0);
    for t in tokens {
        if t.token == Token::Question {
            let at = byte_at(t.span.start.line, t.span.start.column);
            n += 1;
            out.push_str(&sql[copied..at]);
            out.push_str(&format!("${n}"));
            copied = at + 1;
        }
    }
    if n == 0 {
        return Ok(std::borrow::Cow::Borrowed(sql));
    }
    out.push_str(&sql[copied..]);
    Ok(std::borrow::Cow::Owned(out))
}

/// Consumes the next token if it is the (non-keyword) word `w`.
/// Removes an unquoted alias `emit` from the query's last table, if it has
/// one.
fn take_emit_alias(q: &mut sqlparser::ast::Query) -> bool {
    use sqlparser::ast::{SetExpr, TableFactor};
    let SetExpr::Select(select) = q.body.as_mut() else {
        return false;
    };
    let Some(from) = select.from.last_mut() else {
        return false;
    };
    let factor = match from.joins.last_mut() {
        Some(j) => &mut j.relation,
        None => &mut from.relation,
    };
    let alias = match factor {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::Function { alias, .. } => alias,
        _ => return false,
    };
    if alias
        .as_ref()
        .is_some_and(|a| a.name.quote_style.is_none() && a.name.value.eq_ignore_ascii_case("emit"))
    {
        *alias = None;
        return true;
    }
    false
}

fn parse_word(p: &mut Parser, w: &str) -> bool {
    if let Token::Word(word) = &p.peek_token_ref().token
        && word.quote_style.is_none()
        && word.value.eq_ignore_ascii_case(w)
    {
        p.next_token();
        return true;
    }
    false
}

fn parse_one(p: &mut Parser) -> Result<Statement> {
    if let Some(role) = crate::roles::parse(p)? {
        return Ok(Statement::Role(role));
    }
    if let Some(grant) = crate::privileges::grant::parse(p)? {
        return Ok(Statement::Grant(grant));
    }
    if p.parse_keywords(&[Keyword::CREATE, Keyword::STREAM]) {
        return parse_create_stream(p).map(Statement::CreateStream);
    }
    if p.parse_keywords(&[Keyword::DROP, Keyword::STREAM]) {
        let (names, if_exists) = parse_drop_names(p)?;
        return Ok(Statement::DropStream { names, if_exists });
    }
    if p.parse_keywords(&[Keyword::ALTER, Keyword::STREAM]) {
        return parse_alter_stream(p);
    }
    if p.parse_keywords(&[Keyword::CREATE, Keyword::MATERIALIZED, Keyword::VIEW]) {
        let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = object_name(&p.parse_object_name(false)?)?;
        let options = ViewOptions::parse(p)?;
        p.expect_keyword(Keyword::AS)?;
        let query = p.parse_query()?;
        return Ok(Statement::CreateMaterializedView {
            name,
            if_not_exists,
            options,
            query,
        });
    }
    if parse_word(p, "SUBSCRIBE") {
        let _ = p.parse_keyword(Keyword::TO);
        let name = object_name(&p.parse_object_name(false)?)?;
        let mut snapshot = true;
        if p.peek_keyword(Keyword::WITH) {
            for opt in p.parse_options(Keyword::WITH)? {
                let (key, value) = key_value(opt)?;
                if key != "snapshot" {
                    return Err(SqlError::InvalidDefinition(format!(
                        "unknown SUBSCRIBE option \"{key}\" (known: snapshot)"
                    )));
                }
                snapshot = match literal(&value) {
                    Some(Value::Boolean(b)) => *b,
                    Some(Value::SingleQuotedString(s)) => {
                        !matches!(s.to_lowercase().as_str(), "false" | "off" | "no")
                    }
                    _ => return Err(bad_value(&key, "expected true or false")),
                };
            }
        }
        return Ok(Statement::Subscribe(Subscribe::View { name, snapshot }));
    }
    if p.parse_keywords(&[Keyword::DROP, Keyword::MATERIALIZED, Keyword::VIEW]) {
        let (names, if_exists) = parse_drop_names(p)?;
        return Ok(Statement::DropMaterializedView { names, if_exists });
    }
    if p.parse_keyword(Keyword::CREATE) {
        if parse_word(p, "SINK") {
            return parse_create_sink(p);
        }
        if parse_word(p, "SOURCE") {
            return parse_create_source(p);
        }
        p.prev_token();
    }
    if p.parse_keyword(Keyword::DROP) {
        if parse_word(p, "SINK") {
            let (names, if_exists) = parse_drop_names(p)?;
            return Ok(Statement::DropSink { names, if_exists });
        }
        if parse_word(p, "SOURCE") {
            let (names, if_exists) = parse_drop_names(p)?;
            return Ok(Statement::DropSource { names, if_exists });
        }
        p.prev_token();
    }
    if p.parse_keyword(Keyword::SHOW) {
        if parse_word(p, "STREAMS") {
            return Ok(Statement::ShowStreams);
        }
        if parse_word(p, "SINKS") {
            return Ok(Statement::ShowSinks);
        }
        if parse_word(p, "SOURCES") {
            return Ok(Statement::ShowSources);
        }
        if p.parse_keyword(Keyword::MATERIALIZED) {
            if parse_word(p, "VIEWS") {
                return Ok(Statement::ShowMaterializedViews);
            }
            p.prev_token();
        }
        if p.parse_keyword(Keyword::COLUMNS) {
            if !p.parse_keyword(Keyword::FROM) {
                p.expect_keyword(Keyword::IN)?;
            }
            let name = object_name(&p.parse_object_name(false)?)?;
            return Ok(Statement::Describe { name });
        }
        p.prev_token();
    }
    if p.parse_keyword(Keyword::DESCRIBE) || p.parse_keyword(Keyword::DESC) {
        let name = object_name(&p.parse_object_name(false)?)?;
        return Ok(Statement::Describe { name });
    }
    let stmt = p.parse_statement()?;
    match stmt {
        SqlStatement::CreateTable(c) => return Ok(Statement::CreateTable(Box::new(c))),
        SqlStatement::Drop {
            object_type: sqlparser::ast::ObjectType::Table,
            if_exists,
            names,
            cascade: false,
            ..
        } => {
            let names = names.iter().map(object_name).collect::<Result<_>>()?;
            return Ok(Statement::DropTable { names, if_exists });
        }
        _ => {}
    }
    if let SqlStatement::Query(mut q) = stmt {
        // `FROM s EMIT CHANGES` parses `EMIT` as the table's alias.
        if matches!(&p.peek_token_ref().token, Token::Word(w) if w.value.eq_ignore_ascii_case("CHANGES"))
            && take_emit_alias(&mut q)
        {
            p.next_token();
            return Ok(Statement::Subscribe(Subscribe::Query(q)));
        }
        if parse_word(p, "EMIT") {
            if !parse_word(p, "CHANGES") {
                return Err(SqlError::Syntax("expected CHANGES after EMIT".into()));
            }
            return Ok(Statement::Subscribe(Subscribe::Query(q)));
        }
        return Ok(Statement::Sql(Box::new(SqlStatement::Query(q))));
    }
    Ok(Statement::Sql(Box::new(stmt)))
}

/// After `DROP <kind>`: `[IF EXISTS] name, …`.
fn parse_drop_names(p: &mut Parser) -> Result<(Vec<String>, bool)> {
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let names = p
        .parse_comma_separated(|p| p.parse_object_name(false))?
        .iter()
        .map(object_name)
        .collect::<Result<_>>()?;
    Ok((names, if_exists))
}

/// A `WITH (key = value)` option: its key (lower case) and value.
fn key_value(opt: SqlOption) -> Result<(String, Expr)> {
    match opt {
        SqlOption::KeyValue { key, value } => Ok((key.value.to_lowercase(), value)),
        other => Err(SqlError::InvalidDefinition(format!(
            "expected key = value in WITH, got {other}"
        ))),
    }
}

fn bad_value(key: &str, what: &str) -> SqlError {
    SqlError::InvalidDefinition(format!("invalid value for {key}: {what}"))
}

fn literal(e: &Expr) -> Option<&Value> {
    match e {
        Expr::Value(v) => Some(&v.value),
        _ => None,
    }
}

/// A duration from `'7 days'` or `INTERVAL '7 days'` (or `INTERVAL '7' DAY`).
pub fn duration(e: &Expr) -> std::result::Result<Duration, String> {
    let (text, unit) = match e {
        Expr::Interval(i) => match (literal(&i.value), &i.leading_field) {
            (Some(Value::SingleQuotedString(s)), f) => (s.clone(), f.clone()),
            (Some(Value::Number(n, _)), f) => (n.clone(), f.clone()),
            _ => return Err(format!("expected an interval literal, got {e}")),
        },
        Expr::Value(_) => match literal(e) {
            Some(Value::SingleQuotedString(s)) => (s.clone(), None),
            _ => {
                return Err(format!(
                    "expected a quoted duration such as '7 days', got {e}"
                ));
            }
        },
        _ => return Err(format!("expected a duration such as '7 days', got {e}")),
    };
    let text = match unit {
        None => text,
        Some(f) => {
            let unit = match f {
                DateTimeField::Week(_) => "weeks",
                DateTimeField::Day | DateTimeField::Days => "days",
                DateTimeField::Hour | DateTimeField::Hours => "hours",
                DateTimeField::Minute | DateTimeField::Minutes => "minutes",
                DateTimeField::Second | DateTimeField::Seconds => "seconds",
                DateTimeField::Millisecond | DateTimeField::Milliseconds => "ms",
                other => return Err(format!("unsupported interval unit {other}")),
            };
            format!("{text} {unit}")
        }
    };
    humantime::parse_duration(text.trim()).map_err(|err| format!("'{text}': {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_stream_with_everything() {
        let s = parse(
            "CREATE STREAM IF NOT EXISTS Orders (order_id BIGINT NOT NULL, \"User\" TEXT, \
             amount DOUBLE PRECISION, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '5 seconds') \
             WITH (partitions = 4, key = 'user_id', retention = '7 days');",
        )
        .unwrap();
        let [Statement::CreateStream(c)] = s.as_slice() else {
            panic!("{s:?}")
        };
        assert_eq!(c.name, "orders");
        assert!(c.if_not_exists);
        let names: Vec<_> = c.columns.iter().map(|c| c.name.value.clone()).collect();
        assert_eq!(names, ["order_id", "User", "amount", "ts"]);
        assert_eq!(c.watermark, Some(("ts".into(), Duration::from_secs(5))));
        assert_eq!(c.partitions, Some(4));
        assert_eq!(c.key, ["user_id"]);
        assert_eq!(c.retention, Some(Duration::from_secs(7 * 86400)));
    }

    #[test]
    fn other_statements_and_several_per_string() {
        let s = parse("drop stream if exists a, b; SHOW STREAMS; describe x; SELECT 1;").unwrap();
        assert_eq!(
            s[0],
            Statement::DropStream {
                names: vec!["a".into(), "b".into()],
                if_exists: true
            }
        );
        assert_eq!(s[1], Statement::ShowStreams);
        assert_eq!(s[2], Statement::Describe { name: "x".into() });
        assert!(matches!(s[3], Statement::Sql(_)));
        assert_eq!(
            parse("show columns from t").unwrap()[0],
            Statement::Describe { name: "t".into() }
        );
        assert!(matches!(
            parse("SHOW search_path").unwrap()[0],
            Statement::Sql(_)
        ));
        assert!(parse(" ; ").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |sql: &str| parse(sql).unwrap_err();
        assert!(matches!(e("SELEC 1"), SqlError::Syntax(_)));
        assert!(
            matches!(e("CREATE STREAM s (a INT) WITH (partitions = 'x')"), SqlError::InvalidDefinition(m) if m.contains("partitions"))
        );
        assert!(
            matches!(e("CREATE STREAM s (a INT) WITH (colour = 1)"), SqlError::InvalidDefinition(m) if m.contains("colour"))
        );
        assert!(matches!(
            e("CREATE STREAM s (t TIMESTAMP, WATERMARK FOR t AS t * 2)"),
            SqlError::NotSupported(_)
        ));
        assert!(matches!(
            e("CREATE STREAM s (a INT DEFAULT 1)"),
            SqlError::NotSupported(_)
        ));
        assert!(matches!(e("SELECT 1 SELECT 2"), SqlError::Syntax(_)));
    }

    #[test]
    fn question_marks_become_numbered_placeholders() {
        let cases = [
            ("SELECT 1", "SELECT 1"),
            (
                "SELECT * FROM t WHERE a = ? AND b IN (?, ?)",
                "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)",
            ),
            (
                "INSERT INTO t VALUES (?, 'wh?t', \"c?\") -- really?\n, (?)",
                "INSERT INTO t VALUES ($1, 'wh?t', \"c?\") -- really?\n, ($2)",
            ),
            ("SELECT 'é', ?", "SELECT 'é', $1"),
            ("SELECT 'it''s ?'", "SELECT 'it''s ?'"),
        ];
        for (sql, want) in cases {
            assert_eq!(numbered_placeholders(sql).unwrap(), want, "{sql}");
        }
    }

    #[test]
    fn subscriptions_and_view_options() {
        let s = parse(
            "SUBSCRIBE TO v; SUBSCRIBE v WITH (snapshot = false); SELECT a FROM s EMIT CHANGES; \
             CREATE MATERIALIZED VIEW m WITH (emit = 'on_update', idle_timeout = '2s') AS SELECT 1",
        )
        .unwrap();
        assert_eq!(
            s[0],
            Statement::Subscribe(Subscribe::View {
                name: "v".into(),
                snapshot: true
            })
        );
        assert_eq!(
            s[1],
            Statement::Subscribe(Subscribe::View {
                name: "v".into(),
                snapshot: false
            })
        );
        assert!(matches!(&s[2], Statement::Subscribe(Subscribe::Query(_))));
        let Statement::CreateMaterializedView { options, .. } = &s[3] else {
            panic!("{:?}", s[3]);
        };
        assert_eq!(options.emit, Some(Emit::OnUpdate));
        assert_eq!(options.idle_timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            options.to_sql(),
            "WITH (emit = 'on_update', idle_timeout = '2s') "
        );
        assert!(parse("CREATE MATERIALIZED VIEW m WITH (emit = 'x') AS SELECT 1").is_err());
        assert!(parse("SELECT a FROM s WHERE a > 1 EMIT").is_err());
    }

    #[test]
    fn durations() {
        let d = |s: &str| {
            let mut p = Parser::new(&PostgreSqlDialect {}).try_with_sql(s).unwrap();
            duration(&p.parse_expr().unwrap())
        };
        assert_eq!(d("INTERVAL '1 minute'").unwrap(), Duration::from_secs(60));
        assert_eq!(
            d("INTERVAL '3' HOUR").unwrap(),
            Duration::from_secs(3 * 3600)
        );
        assert_eq!(d("'500 ms'").unwrap(), Duration::from_millis(500));
        assert!(d("42").is_err());
    }
}
