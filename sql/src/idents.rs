//! Identifiers as PostgreSQL folds them: what every statement parser
//! (ours, and the GRANT and role statements') names objects by.

use sqlparser::ast::{Ident, ObjectName};

use crate::error::{Result, SqlError};

/// The identifier as PostgreSQL sees it: unquoted folds to lower case.
pub fn normalize(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The last part of a (possibly qualified) name, normalized.
pub fn object_name(name: &ObjectName) -> Result<String> {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(normalize)
        .ok_or_else(|| SqlError::Syntax(format!("invalid name {name}")))
}
