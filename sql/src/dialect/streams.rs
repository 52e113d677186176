//! `CREATE STREAM` and `ALTER STREAM`: their clauses and `WITH` options.

use std::time::Duration;

use sqlparser::ast::{BinaryOperator, ColumnDef, ColumnOption, Expr, Ident, SqlOption, Value};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::{
    CreateStream, Statement, StreamAlteration, bad_value, duration, key_value, literal, normalize,
    object_name, parse_word,
};
use crate::error::{Result, SqlError};

/// `ALTER STREAM name` then one of `ADD [COLUMN] [IF NOT EXISTS] name type
/// [NULL | NOT NULL] [DEFAULT constant]`, `DROP [COLUMN] [IF EXISTS] name`,
/// `RENAME [COLUMN] a TO b`, `ALTER [COLUMN] name [SET DATA] TYPE type`,
/// `ALTER [COLUMN] name DROP NOT NULL`, `SET (retention = …, archive_after =
/// …)`, `RESET (retention | archive_after, …)`; anything else is refused
/// (0A000) by name.
pub(super) fn parse_alter_stream(p: &mut Parser) -> Result<Statement> {
    let name = object_name(&p.parse_object_name(false)?)?;
    let column_name = |p: &mut Parser| -> Result<String> { Ok(normalize(&p.parse_identifier()?)) };
    let change = if p.peek_keyword(Keyword::SET) {
        let mut set = StreamAlteration::SetOptions {
            retention: None,
            archive_after: None,
        };
        for opt in p.parse_options(Keyword::SET)? {
            let (key, value) = key_value(opt)?;
            let d = duration(&value).map_err(|e| bad_value(&key, &e))?;
            set_option(&mut set, &key, Some(d))?;
        }
        set
    } else if p.parse_keyword(Keyword::RESET) {
        let mut set = StreamAlteration::SetOptions {
            retention: None,
            archive_after: None,
        };
        p.expect_token(&Token::LParen)?;
        for key in p.parse_comma_separated(|p| p.parse_identifier())? {
            set_option(&mut set, &normalize(&key), None)?;
        }
        p.expect_token(&Token::RParen)?;
        set
    } else if p.parse_keyword(Keyword::ADD) {
        let _ = p.parse_keyword(Keyword::COLUMN);
        let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let mut column = p.parse_column_def()?;
        column.name = Ident::new(normalize(&column.name));
        for o in &column.options {
            match o.option {
                ColumnOption::Null | ColumnOption::NotNull | ColumnOption::Default(_) => {}
                ref other => {
                    return Err(SqlError::NotSupported(format!(
                        "column option {other} on stream column \"{}\"",
                        column.name
                    )));
                }
            }
        }
        StreamAlteration::AddColumn {
            column,
            if_not_exists,
        }
    } else if p.parse_keyword(Keyword::DROP) {
        let _ = p.parse_keyword(Keyword::COLUMN);
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let column = column_name(p)?;
        if p.parse_keyword(Keyword::CASCADE) {
            return Err(SqlError::NotSupported(
                "DROP COLUMN … CASCADE: drop the materialized views that read the column first"
                    .into(),
            ));
        }
        // RESTRICT is what happens anyway.
        let _ = p.parse_keyword(Keyword::RESTRICT);
        StreamAlteration::DropColumn { column, if_exists }
    } else if p.parse_keyword(Keyword::RENAME) {
        if p.parse_keyword(Keyword::TO) {
            return Err(SqlError::NotSupported(
                "ALTER STREAM … RENAME TO: a stream keeps its name (views, consumers and Kafka \
                 clients find it by name)"
                    .into(),
            ));
        }
        let _ = p.parse_keyword(Keyword::COLUMN);
        let from = column_name(p)?;
        p.expect_keyword(Keyword::TO)?;
        let to = column_name(p)?;
        StreamAlteration::RenameColumn { from, to }
    } else if p.parse_keyword(Keyword::ALTER) {
        let _ = p.parse_keyword(Keyword::COLUMN);
        let column = column_name(p)?;
        if p.parse_keywords(&[Keyword::DROP, Keyword::NOT, Keyword::NULL]) {
            StreamAlteration::DropNotNull { column }
        } else if p.parse_keywords(&[Keyword::SET, Keyword::DATA, Keyword::TYPE])
            || p.parse_keyword(Keyword::TYPE)
        {
            let data_type = p.parse_data_type()?;
            if p.parse_keyword(Keyword::USING) {
                return Err(SqlError::NotSupported(
                    "ALTER COLUMN … TYPE … USING: rows already written are read as the new \
                     type, not rewritten, so only widening changes are allowed"
                        .into(),
                ));
            }
            StreamAlteration::AlterType { column, data_type }
        } else {
            let what = p.peek_token().to_string().to_uppercase();
            return Err(SqlError::NotSupported(format!(
                "ALTER STREAM … ALTER COLUMN … {what}: a stream column's type can be widened \
                 (TYPE) and NOT NULL dropped (DROP NOT NULL); its default stays what rows \
                 written before the column existed read as"
            )));
        }
    } else {
        let what = p.peek_token().to_string().to_uppercase();
        return Err(SqlError::NotSupported(format!(
            "ALTER STREAM … {what}: a stream's columns can be added (ADD COLUMN), dropped (DROP \
             COLUMN), renamed (RENAME COLUMN) and widened (ALTER COLUMN … TYPE), and its \
             retention and archive_after SET or RESET"
        )));
    };
    Ok(Statement::AlterStream { name, change })
}

/// Records option `key`'s new value in `set` (an `ALTER STREAM … SET |
/// RESET`).
fn set_option(set: &mut StreamAlteration, key: &str, value: Option<Duration>) -> Result<()> {
    let StreamAlteration::SetOptions {
        retention,
        archive_after,
    } = set
    else {
        return Err(SqlError::Internal("not a SET".into()));
    };
    match key {
        "retention" => *retention = Some(value),
        "archive_after" => *archive_after = Some(value),
        other => {
            return Err(SqlError::InvalidDefinition(format!(
                "stream option \"{other}\" cannot be changed (ALTER STREAM … SET / RESET \
                 changes retention and archive_after)"
            )));
        }
    }
    Ok(())
}

pub(super) fn parse_create_stream(p: &mut Parser) -> Result<CreateStream> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&p.parse_object_name(false)?)?;
    // Without a column list the columns come from a registered subject.
    let (columns, watermark) = if p.consume_token(&Token::LParen) {
        parse_columns(p)?
    } else {
        (Vec::new(), None)
    };
    let mut stream = CreateStream {
        name,
        if_not_exists,
        columns,
        watermark,
        partitions: None,
        key: Vec::new(),
        retention: None,
        archive_after: None,
        format: None,
        subject: None,
    };
    if p.peek_keyword(Keyword::WITH) {
        for opt in p.parse_options(Keyword::WITH)? {
            apply_option(&mut stream, opt)?;
        }
    }
    for c in &stream.columns {
        for o in &c.options {
            match o.option {
                ColumnOption::Null | ColumnOption::NotNull => {}
                ref other => {
                    return Err(SqlError::NotSupported(format!(
                        "column option {other} on stream column \"{}\"",
                        c.name
                    )));
                }
            }
        }
    }
    Ok(stream)
}

fn apply_option(s: &mut CreateStream, opt: SqlOption) -> Result<()> {
    let (key, value) = key_value(opt)?;
    let bad = |what: &str| bad_value(&key, what);
    match key.as_str() {
        "partitions" => {
            let n = match literal(&value) {
                Some(Value::Number(n, _)) => n.parse::<u32>().ok(),
                Some(Value::SingleQuotedString(n)) => n.parse::<u32>().ok(),
                _ => None,
            };
            s.partitions = Some(n.ok_or_else(|| bad("expected a positive integer"))?);
        }
        "key" => {
            let Some(Value::SingleQuotedString(k)) = literal(&value) else {
                return Err(bad(
                    "expected a quoted list of column names, e.g. 'user_id'",
                ));
            };
            s.key = k
                .split(',')
                .map(|c| c.trim().to_lowercase())
                .filter(|c| !c.is_empty())
                .collect();
        }
        "retention" => s.retention = Some(duration(&value).map_err(|e| bad(&e))?),
        "archive_after" => s.archive_after = Some(duration(&value).map_err(|e| bad(&e))?),
        "format" | "subject" => {
            let Some(Value::SingleQuotedString(text)) = literal(&value) else {
                return Err(bad("expected a quoted string"));
            };
            if key == "format" {
                s.format = Some(text.to_lowercase());
            } else {
                s.subject = Some(text.clone());
            }
        }
        other => {
            return Err(SqlError::InvalidDefinition(format!(
                "unknown stream option \"{other}\" (known: partitions, key, retention, \
                 archive_after, format, subject)"
            )));
        }
    }
    Ok(())
}

/// The delay of `WATERMARK FOR col AS col - INTERVAL '…'` (or `AS col`).
fn watermark_delay(col: &str, e: &Expr) -> Result<Duration> {
    let is_col = |e: &Expr| matches!(e, Expr::Identifier(i) if normalize(i) == col);
    if is_col(e) {
        return Ok(Duration::ZERO);
    }
    if let Expr::BinaryOp {
        left,
        op: BinaryOperator::Minus,
        right,
    } = e
        && is_col(left)
    {
        return duration(right).map_err(SqlError::InvalidDefinition);
    }
    Err(SqlError::NotSupported(format!(
        "watermark expression {e}: use `{col} - INTERVAL '5 seconds'` or `{col}`"
    )))
}

/// A stream's column list after its `(`, through its `)`: the columns and
/// the `WATERMARK FOR` clause if there is one.
#[allow(clippy::type_complexity)]
fn parse_columns(p: &mut Parser) -> Result<(Vec<ColumnDef>, Option<(String, Duration)>)> {
    let mut columns = Vec::new();
    let mut watermark = None;
    loop {
        if parse_word(p, "WATERMARK") {
            p.expect_keyword(Keyword::FOR)?;
            let col = normalize(&p.parse_identifier()?);
            p.expect_keyword(Keyword::AS)?;
            let expr = p.parse_expr()?;
            let delay = watermark_delay(&col, &expr)?;
            if watermark.replace((col, delay)).is_some() {
                return Err(SqlError::InvalidDefinition(
                    "a stream has at most one WATERMARK clause".into(),
                ));
            }
        } else {
            let mut col = p.parse_column_def()?;
            col.name = Ident::new(normalize(&col.name));
            columns.push(col);
        }
        if p.consume_token(&Token::RParen) {
            return Ok((columns, watermark));
        }
        p.expect_token(&Token::Comma)?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Statement, StreamAlteration, parse};
    use crate::error::SqlError;

    #[test]
    fn alter_stream_sets_and_resets_options() {
        let set = parse("ALTER STREAM s SET (archive_after = '1 day', retention = '30 days')")
            .unwrap()
            .remove(0);
        let Statement::AlterStream { name, change } = &set else {
            panic!("{set:?}")
        };
        assert_eq!(name, "s");
        assert_eq!(
            *change,
            StreamAlteration::SetOptions {
                retention: Some(Some(Duration::from_secs(30 * 86400))),
                archive_after: Some(Some(Duration::from_secs(86400))),
            }
        );
        assert_eq!(
            set.text(),
            "ALTER STREAM s SET (retention = '30days', archive_after = '1day')"
        );
        let reset = parse("alter stream s reset (ARCHIVE_AFTER)")
            .unwrap()
            .remove(0);
        assert_eq!(reset.text(), "ALTER STREAM s RESET (archive_after)");
        for bad in [
            "ALTER STREAM s SET (partitions = '2s')",
            "ALTER STREAM s SET (retention = 'soon')",
            "ALTER STREAM s RESET (key)",
        ] {
            assert!(
                matches!(parse(bad), Err(SqlError::InvalidDefinition(_))),
                "{bad}"
            );
        }
    }
}
