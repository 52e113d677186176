//! The sqllogictest suite (`tests/slt/*.slt`) against the real server,
//! through the PostgreSQL protocol twice: the simple query protocol (rows
//! as the server's text) and the extended one (prepared statements, rows in
//! binary, rendered here as PostgreSQL's text output). One expected output
//! serves both, so the two encodings must agree. Each file runs on a fresh
//! server and data directory.

mod common;

use std::error::Error;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use common::Server;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol {
    Simple,
    Extended,
}

struct Pg {
    client: Client,
    protocol: Protocol,
}

#[derive(Debug)]
struct PgError(tokio_postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The server's message, which `statement error <regex>` matches.
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Error for PgError {}

/// Any column value as PostgreSQL's text output, decoded from binary.
struct Text(String);

impl<'a> FromSql<'a> for Text {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let s = match *ty {
            Type::BOOL => if bool::from_sql(ty, raw)? { "t" } else { "f" }.to_string(),
            Type::INT2 => i16::from_sql(ty, raw)?.to_string(),
            Type::INT4 => i32::from_sql(ty, raw)?.to_string(),
            Type::INT8 => i64::from_sql(ty, raw)?.to_string(),
            Type::OID => u32::from_sql(ty, raw)?.to_string(),
            Type::FLOAT4 => float(f32::from_sql(ty, raw)? as f64, true),
            Type::FLOAT8 => float(f64::from_sql(ty, raw)?, false),
            Type::NUMERIC => numeric(raw)?,
            Type::DATE => NaiveDate::from_sql(ty, raw)?.to_string(),
            Type::TIMESTAMP => timestamp(&NaiveDateTime::from_sql(ty, raw)?),
            Type::TIMESTAMPTZ => {
                format!(
                    "{}+00",
                    timestamp(&DateTime::<Utc>::from_sql(ty, raw)?.naive_utc())
                )
            }
            Type::BYTEA => {
                let b = <&[u8]>::from_sql(ty, raw)?;
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!("\\x{hex}")
            }
            _ => String::from_sql(&Type::TEXT, raw)?,
        };
        Ok(Text(s))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn float(v: f64, single: bool) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if single {
        (v as f32).to_string()
    } else {
        v.to_string()
    }
}

fn timestamp(t: &NaiveDateTime) -> String {
    let base = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let micros = t.and_utc().timestamp_subsec_micros();
    if micros == 0 {
        base
    } else {
        let frac = format!("{micros:06}");
        format!("{base}.{}", frac.trim_end_matches('0'))
    }
}

/// PostgreSQL's binary numeric (base-10000 digits) as its text form.
fn numeric(raw: &[u8]) -> Result<String, Box<dyn Error + Sync + Send>> {
    let word = |i: usize| i16::from_be_bytes([raw[i], raw[i + 1]]);
    let (ndigits, weight, sign, dscale) = (word(0) as usize, word(2) as i32, word(4), word(6));
    if sign as u16 == 0xC000 {
        return Ok("NaN".into());
    }
    let digits: Vec<i32> = (0..ndigits).map(|i| word(8 + 2 * i) as i32).collect();
    let mut int = String::new();
    for g in 0..=weight.max(0) {
        let d = if g <= weight {
            digits.get(g as usize).copied().unwrap_or(0)
        } else {
            0
        };
        if int.is_empty() {
            if g <= weight && d != 0 {
                int = d.to_string();
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() || weight < 0 {
        int = "0".into();
    }
    let mut frac = String::new();
    let mut g = weight + 1;
    while (frac.len() as i16) < dscale {
        let d = if g >= 0 {
            digits.get(g as usize).copied().unwrap_or(0)
        } else {
            0
        };
        frac.push_str(&format!("{d:04}"));
        g += 1;
    }
    frac.truncate(dscale as usize);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

fn column_type(t: &Type) -> DefaultColumnType {
    match *t {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => DefaultColumnType::Integer,
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => DefaultColumnType::FloatingPoint,
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn cell(v: Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) if s.is_empty() => "(empty)".into(),
        Some(s) => s,
    }
}

#[async_trait]
impl AsyncDB for Pg {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        match self.protocol {
            Protocol::Simple => {
                let messages = self.client.simple_query(sql).await.map_err(PgError)?;
                let mut rows = Vec::new();
                let mut width = None;
                let mut count = 0;
                for m in messages {
                    match m {
                        SimpleQueryMessage::RowDescription(cols) => width = Some(cols.len()),
                        SimpleQueryMessage::Row(r) => {
                            width = Some(r.len());
                            rows.push(
                                (0..r.len())
                                    .map(|i| cell(r.get(i).map(str::to_string)))
                                    .collect(),
                            )
                        }
                        SimpleQueryMessage::CommandComplete(n) => count = n,
                        _ => {}
                    }
                }
                Ok(match width {
                    Some(w) => DBOutput::Rows {
                        types: vec![DefaultColumnType::Any; w],
                        rows,
                    },
                    None => DBOutput::StatementComplete(count),
                })
            }
            Protocol::Extended => {
                let stmt = self.client.prepare(sql).await.map_err(PgError)?;
                if stmt.columns().is_empty() {
                    let n = self.client.execute(&stmt, &[]).await.map_err(PgError)?;
                    return Ok(DBOutput::StatementComplete(n));
                }
                let types = stmt
                    .columns()
                    .iter()
                    .map(|c| column_type(c.type_()))
                    .collect();
                let rows = self
                    .client
                    .query(&stmt, &[])
                    .await
                    .map_err(PgError)?
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| cell(r.get::<_, Option<Text>>(i).map(|t| t.0)))
                            .collect()
                    })
                    .collect();
                Ok(DBOutput::Rows { types, rows })
            }
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        match self.protocol {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
        }
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }

    fn error_sql_state(err: &PgError) -> Option<String> {
        err.0.code().map(|c| c.code().to_string())
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

async fn run_all(protocol: Protocol) {
    let mut failures = Vec::new();
    for file in slt_files() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &[], &[]);
        let url = server.pg_url();
        let mut runner = Runner::new(move || {
            let url = url.clone();
            async move {
                let (client, conn) = tokio_postgres::connect(&url, NoTls)
                    .await
                    .map_err(PgError)?;
                tokio::spawn(conn);
                Ok(Pg { client, protocol })
            }
        });
        runner.add_label(match protocol {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
        });
        if let Err(e) = runner.run_file_async(&file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
        drop(server);
    }
    assert!(
        failures.is_empty(),
        "{:?} protocol:\n{}",
        protocol,
        failures.join("\n\n")
    );
}

#[tokio::test]
async fn slt_simple_protocol() {
    run_all(Protocol::Simple).await;
}

#[tokio::test]
async fn slt_extended_protocol() {
    run_all(Protocol::Extended).await;
}
