//! `SET` and `SHOW`: setting names and assignments, and the value of a
//! setting as a one-row result.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{Result, SqlError};
use crate::session::Session;

use crate::result::QueryResult;

/// The setting a `SHOW a b c` names (`transaction isolation level` is
/// `transaction_isolation`, `time zone` is `TimeZone`).
pub(crate) fn setting_name(words: &[sqlparser::ast::Ident]) -> String {
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
pub(crate) fn assignments(set: sqlparser::ast::Set) -> Result<Vec<(String, Option<String>)>> {
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

pub(crate) fn show_schema(session: &Session, name: &str) -> SchemaRef {
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

pub(crate) fn show(session: &Session, name: &str) -> Result<QueryResult> {
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
