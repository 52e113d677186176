//! `CREATE SINK` and `CREATE SOURCE`: their names, what they read or
//! write, and their `WITH` options (kept as text for the connectors to
//! check).

use sqlparser::ast::Value;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::{Statement, bad_value, key_value, literal, object_name};
use crate::error::{Result, SqlError};

/// After `CREATE SINK`: `[IF NOT EXISTS] name FROM stream INTO format
/// WITH (key = value, …)`; values are literals, kept as text.
pub(super) fn parse_create_sink(p: &mut Parser) -> Result<Statement> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&p.parse_object_name(false)?)?;
    p.expect_keyword(Keyword::FROM)?;
    let from = object_name(&p.parse_object_name(false)?)?;
    p.expect_keyword(Keyword::INTO)?;
    let format = p.parse_identifier()?.value.to_lowercase();
    let options = parse_connector_options(p, "sink")?;
    Ok(Statement::CreateSink {
        name,
        if_not_exists,
        from,
        format,
        options,
    })
}

/// After `CREATE SOURCE`: `[IF NOT EXISTS] name FROM kind WITH (key =
/// value, …) [FOR ALL TABLES | FOR TABLES (name, …)] [INTO stream]`.
pub(super) fn parse_create_source(p: &mut Parser) -> Result<Statement> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&p.parse_object_name(false)?)?;
    p.expect_keyword(Keyword::FROM)?;
    let kind = p.parse_identifier()?.value.to_lowercase();
    let options = parse_connector_options(p, "source")?;
    let mut tables = Vec::new();
    if p.parse_keyword(Keyword::FOR) {
        if p.parse_keyword(Keyword::ALL) {
            p.expect_keyword(Keyword::TABLES)?;
        } else {
            p.expect_keyword(Keyword::TABLES)?;
            p.expect_token(&Token::LParen)?;
            for n in p.parse_comma_separated(|p| p.parse_object_name(false))? {
                let parts: Vec<String> =
                    n.0.iter()
                        .map(|part| {
                            part.as_ident()
                                .map(crate::idents::normalize)
                                .ok_or_else(|| SqlError::Syntax(format!("invalid table name {n}")))
                        })
                        .collect::<Result<_>>()?;
                if parts.len() > 2 {
                    return Err(SqlError::Syntax(format!(
                        "a table is named as table or schema.table, not {n}"
                    )));
                }
                tables.push(parts.join("."));
            }
            p.expect_token(&Token::RParen)?;
        }
    }
    let into = if p.parse_keyword(Keyword::INTO) {
        Some(object_name(&p.parse_object_name(false)?)?)
    } else {
        None
    };
    Ok(Statement::CreateSource {
        name,
        if_not_exists,
        kind,
        options,
        tables,
        into,
    })
}

/// `WITH (key = value, …)` of a sink or source (`what`); values are
/// literals, kept as text. None: no options.
fn parse_connector_options(p: &mut Parser, what: &str) -> Result<Vec<(String, String)>> {
    let mut options = Vec::new();
    if p.peek_keyword(Keyword::WITH) {
        for opt in p.parse_options(Keyword::WITH)? {
            let (key, value) = key_value(opt)?;
            let text = match literal(&value) {
                Some(Value::SingleQuotedString(s)) => s.clone(),
                Some(Value::Number(n, _)) => n.to_string(),
                Some(Value::Boolean(b)) => b.to_string(),
                _ => return Err(bad_value(&key, "expected a literal")),
            };
            if options.iter().any(|(k, _)| *k == key) {
                return Err(SqlError::InvalidDefinition(format!(
                    "{what} option \"{key}\" given twice"
                )));
            }
            options.push((key, text));
        }
    }
    Ok(options)
}
