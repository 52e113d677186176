//! How connectors' statements are written back as SQL text (`SHOW SINKS`,
//! `SHOW SOURCES`, the stored definitions): quoted names and `WITH`
//! options.

/// `name` as a quoted SQL identifier.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `k = 'v', …`: options as a `WITH (…)` list holds them.
pub fn options<K: AsRef<str>>(options: &[(K, String)]) -> String {
    options
        .iter()
        .map(|(k, v)| format!("{} = '{}'", k.as_ref(), v.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}
