//! Sources: another system's data copied into streams, exactly once.
//!
//! `CREATE SOURCE name FROM POSTGRES WITH (url = 'postgres://…',
//! publication = '…') [FOR ALL TABLES | FOR TABLES (a, b)]` copies the
//! tables of a PostgreSQL publication — their rows at the start (a
//! snapshot), then every change — into one changelog stream per table:
//! the table's columns, then `_op` (`insert`, `update`, `delete` or
//! `truncate`) and `_lsn` (where the change's transaction committed
//! upstream; 0 for snapshot rows). How: [`postgres`]. The options:
//! [`PostgresSpec`].
//!
//! `CREATE SOURCE name FROM FILES WITH (path = '…', format = '…') INTO
//! stream` loads CSV, JSON-lines or Parquet files from a directory or an
//! object-store prefix, each file once: [`files`]. `CREATE SOURCE name FROM
//! KAFKA WITH (bootstrap = '…', topic = '…') INTO stream` copies a topic's
//! JSON records: [`kafka`].

pub mod files;
pub mod kafka;
pub mod pgoutput;
pub mod postgres;
pub mod tables;
pub mod truncate;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use streamhouse_log::LogError;

pub use files::FilesSpec;
pub use kafka::KafkaSpec;

use crate::status::Status;
use crate::text::{self, quoted};

/// Rows a source appended, by `source`.
pub const ROWS_METRIC: &str = "streamhouse_source_rows_total";

/// How long a failed run waits before it starts again (doubling up to
/// the most, back to the least after a run that got going).
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The idempotent producer a source appends as.
pub fn producer_id(source: &str) -> String {
    format!("source:{source}")
}

/// What a run's error means for the source: true when it cannot go on
/// (status `failed`: its stream is gone, what it reads cannot be read
/// again, or a newer owner fenced it), false when it tries again (status
/// `retrying` with the cause).
fn stops(name: &str, progress: &SourceProgress, e: &SourceError) -> bool {
    match e {
        SourceError::Fatal(_) | SourceError::Log(LogError::UnknownStream(_)) => {
            tracing::warn!(source = %name, error = %e, "source stopped");
            progress.set_status(Status::Failed(e.to_string()));
            true
        }
        SourceError::Log(LogError::Fenced(_)) => {
            tracing::warn!(source = %name, error = %e, "source fenced by a newer owner");
            progress.set_status(Status::Failed(e.to_string()));
            true
        }
        _ => {
            tracing::warn!(source = %name, error = %e, "source retrying");
            progress.set_status(Status::Retrying(e.to_string()));
            false
        }
    }
}

/// Runs a source's attempts (`attempt`) until one ends without an error
/// (then `done`, if given, is its status) or an error stops the source;
/// after any other error it waits, backing off unless the failed attempt
/// appended rows.
async fn supervise<F, Fut>(
    name: &str,
    progress: &SourceProgress,
    done: Option<Status>,
    mut attempt: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut backoff = RETRY_MIN;
    loop {
        let before = progress.rows();
        match attempt().await {
            Ok(()) => {
                if let Some(s) = done {
                    progress.set_status(s);
                }
                return;
            }
            Err(e) => {
                if stops(name, progress, &e) {
                    return;
                }
                if progress.rows() > before {
                    backoff = RETRY_MIN;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// A source of any kind, from its statement's parts.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Postgres(PostgresSpec),
    Files(FilesSpec),
    Kafka(KafkaSpec),
}

impl SourceSpec {
    /// `kind` is the word after `FROM` (lower case), `tables` the `FOR
    /// TABLES` list, `into` the stream after `INTO`.
    pub fn new(
        name: &str,
        kind: &str,
        options: &[(String, String)],
        tables: &[String],
        into: Option<&str>,
    ) -> Result<SourceSpec> {
        match kind {
            "postgres" => {
                if into.is_some() {
                    return Err(SourceError::Invalid(
                        "a PostgreSQL source makes a stream per table: it takes no INTO".into(),
                    ));
                }
                Ok(SourceSpec::Postgres(PostgresSpec::new(
                    name, options, tables,
                )?))
            }
            "files" => {
                if !tables.is_empty() {
                    return Err(SourceError::Invalid(
                        "a file source takes no FOR TABLES: it loads into the stream after INTO"
                            .into(),
                    ));
                }
                Ok(SourceSpec::Files(FilesSpec::new(name, options, into)?))
            }
            "kafka" => {
                if !tables.is_empty() {
                    return Err(SourceError::Invalid(
                        "a Kafka source takes no FOR TABLES: it copies into the stream after INTO"
                            .into(),
                    ));
                }
                Ok(SourceSpec::Kafka(KafkaSpec::new(name, options, into)?))
            }
            other => Err(SourceError::Invalid(format!(
                "source kind {} is not one StreamHouse reads (known: POSTGRES, FILES, KAFKA)",
                other.to_uppercase()
            ))),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            SourceSpec::Postgres(s) => &s.name,
            SourceSpec::Files(s) => &s.name,
            SourceSpec::Kafka(s) => &s.name,
        }
    }

    /// The kind, as written after `FROM`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Postgres(_) => "POSTGRES",
            SourceSpec::Files(_) => "FILES",
            SourceSpec::Kafka(_) => "KAFKA",
        }
    }

    /// Where it reads, secrets masked.
    pub fn location(&self) -> String {
        match self {
            SourceSpec::Postgres(s) => s.shown_url(),
            SourceSpec::Files(s) => s.path.clone(),
            SourceSpec::Kafka(s) => format!("kafka://{}/{}", s.brokers.join(","), s.topic),
        }
    }

    /// The streams it writes.
    pub fn streams(&self) -> Vec<String> {
        match self {
            SourceSpec::Postgres(s) => s.tables.iter().map(|t| s.stream_of(t)).collect(),
            SourceSpec::Files(s) => vec![s.stream.clone()],
            SourceSpec::Kafka(s) => vec![s.stream.clone()],
        }
    }

    /// The statement that makes it, with its secrets shown or masked.
    pub fn to_sql(&self, secrets: bool) -> String {
        match self {
            SourceSpec::Postgres(s) => s.to_sql(secrets),
            SourceSpec::Files(s) => s.to_sql(),
            SourceSpec::Kafka(s) => s.to_sql(),
        }
    }
}

/// Errors of a source's definition or its run.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An option is unknown, missing or malformed.
    #[error("{0}")]
    Invalid(String),
    /// The upstream system cannot be reached or refused a request.
    #[error("{0}")]
    Upstream(String),
    /// The upstream system sent what cannot be decoded.
    #[error("{0}")]
    Protocol(String),
    /// The source cannot go on without losing or repeating changes (its
    /// replication slot is gone, its stream was dropped).
    #[error("{0}")]
    Fatal(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = SourceError> = std::result::Result<T, E>;

impl From<sqlx::Error> for SourceError {
    fn from(e: sqlx::Error) -> Self {
        SourceError::Upstream(format!("PostgreSQL: {e}"))
    }
}

/// What a PostgreSQL source copies: `CREATE SOURCE name FROM POSTGRES
/// WITH (url, publication, slot, partitions, prefix, poll_interval) FOR
/// TABLES (…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresSpec {
    pub name: String,
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// The publication whose tables it copies.
    pub publication: String,
    /// Its replication slot (created by the source): `streamhouse_<name>`
    /// unless named.
    pub slot: String,
    /// Upstream tables (`schema.table`); empty: every table of the
    /// publication (resolved when the source is created).
    pub tables: Vec<String>,
    /// Partitions of each stream it creates (rows are partitioned by the
    /// table's primary key, so each key's changes stay in order).
    pub partitions: u32,
    /// Put before each stream's name.
    pub prefix: String,
    /// How long to wait before asking again when there were no changes.
    pub poll_interval: Duration,
}

/// The options a PostgreSQL source knows, for error messages.
const KNOWN: &str = "url, publication, slot, partitions, prefix, poll_interval";

impl PostgresSpec {
    /// A source from its statement's parts; `options` are (lower-case key,
    /// value) pairs, `tables` the `FOR TABLES` list (empty: all). Checks
    /// every option; does not connect.
    pub fn new(
        name: &str,
        options: &[(String, String)],
        tables: &[String],
    ) -> Result<PostgresSpec> {
        let mut spec = PostgresSpec {
            name: name.to_string(),
            url: String::new(),
            publication: String::new(),
            slot: format!("streamhouse_{}", name.to_ascii_lowercase()),
            tables: tables.iter().map(|t| qualified(t)).collect(),
            partitions: 1,
            prefix: String::new(),
            poll_interval: Duration::from_millis(100),
        };
        let bad = |k: &str, v: &str, why: &str| {
            let shown = if k == "url" {
                masked_url(v)
            } else {
                v.to_string()
            };
            SourceError::Invalid(format!("source option {k} = '{shown}': {why}"))
        };
        for (k, v) in options {
            match k.as_str() {
                "url" => {
                    if !(v.starts_with("postgres://") || v.starts_with("postgresql://")) {
                        return Err(bad(k, v, "expected postgres://user:password@host/database"));
                    }
                    v.parse::<sqlx::postgres::PgConnectOptions>()
                        .map_err(|e| bad(k, v, &e.to_string()))?;
                    spec.url = v.clone();
                }
                "publication" => {
                    if v.is_empty() || v.len() > 63 {
                        return Err(bad(k, v, "expected a publication's name"));
                    }
                    spec.publication = v.clone();
                }
                "slot" => spec.slot = v.clone(),
                "partitions" => {
                    spec.partitions = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| bad(k, v, "expected a number from 1 to 1024"))?;
                }
                "prefix" => spec.prefix = v.clone(),
                "poll_interval" => {
                    spec.poll_interval = humantime::parse_duration(v)
                        .ok()
                        .filter(|d| *d >= Duration::from_millis(1) && *d <= Duration::from_secs(60))
                        .ok_or_else(|| {
                            bad(k, v, "expected a duration from 1ms to 60s, e.g. '100ms'")
                        })?;
                }
                other => {
                    return Err(SourceError::Invalid(format!(
                        "unknown source option \"{other}\" (known: {KNOWN})"
                    )));
                }
            }
        }
        if spec.url.is_empty() || spec.publication.is_empty() {
            return Err(SourceError::Invalid(
                "a PostgreSQL source needs WITH (url = 'postgres://…', publication = '…')".into(),
            ));
        }
        // Slot names: lower-case letters, digits and underscores (the
        // server's rule), at most 63 bytes.
        let slot_ok = !spec.slot.is_empty()
            && spec.slot.len() <= 63
            && spec
                .slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !slot_ok {
            return Err(bad(
                "slot",
                &spec.slot,
                "a replication slot's name has 1 to 63 lower-case letters, digits or underscores \
                 (name it with WITH (slot = '…'))",
            ));
        }
        Ok(spec)
    }

    /// The stream that receives upstream table `table` (`schema.table`):
    /// the prefix and the table's name, with its schema when that is not
    /// `public`.
    pub fn stream_of(&self, table: &str) -> String {
        let name = match table.split_once('.') {
            Some(("public", t)) => t.to_string(),
            Some((s, t)) => format!("{s}_{t}"),
            None => table.to_string(),
        };
        format!("{}{name}", self.prefix)
    }

    /// The statement that makes this source, with its password shown or
    /// masked.
    pub fn to_sql(&self, secrets: bool) -> String {
        let url = if secrets {
            self.url.clone()
        } else {
            masked_url(&self.url)
        };
        let options = [
            ("url", url),
            ("publication", self.publication.clone()),
            ("slot", self.slot.clone()),
            ("partitions", self.partitions.to_string()),
            ("prefix", self.prefix.clone()),
            (
                "poll_interval",
                humantime::format_duration(self.poll_interval).to_string(),
            ),
        ];
        let tables = if self.tables.is_empty() {
            "FOR ALL TABLES".to_string()
        } else {
            let names: Vec<String> = self
                .tables
                .iter()
                .map(|t| match t.split_once('.') {
                    Some((s, n)) => format!("{}.{}", quoted(s), quoted(n)),
                    None => quoted(t),
                })
                .collect();
            format!("FOR TABLES ({})", names.join(", "))
        };
        format!(
            "CREATE SOURCE {} FROM POSTGRES WITH ({}) {tables}",
            quoted(&self.name),
            text::options(&options)
        )
    }

    /// The URL with its password masked (what may be shown).
    pub fn shown_url(&self) -> String {
        masked_url(&self.url)
    }
}

/// `schema.table`, with `public` when no schema is named.
fn qualified(table: &str) -> String {
    if table.contains('.') {
        table.to_string()
    } else {
        format!("public.{table}")
    }
}

/// A connection URL with its password replaced by `****` (also in a
/// `password=` parameter).
pub fn masked_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            let end = scheme_end + 3 + at;
            out.replace_range(start..end, "****");
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
                _ => p.to_string(),
            })
            .collect();
        out = format!("{head}{}", params.join("&"));
    }
    out
}

/// A running source's progress, shared with whoever shows it.
#[derive(Debug)]
pub struct SourceProgress {
    status: Mutex<Status>,
    /// Changes (and snapshot rows) appended by this run.
    rows: AtomicU64,
    /// Upstream position confirmed (every change before it is in the
    /// streams).
    confirmed: AtomicU64,
    /// Bytes of upstream log (or files) not yet read, at the last look.
    lag_bytes: AtomicU64,
    /// Records of upstream topics not yet read, at the last look.
    lag_records: AtomicU64,
}

impl Default for SourceProgress {
    fn default() -> Self {
        SourceProgress {
            status: Mutex::new(Status::Starting),
            rows: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            lag_records: AtomicU64::new(0),
        }
    }
}

impl SourceProgress {
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_status(&self, s: Status) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// A run starts: `starting`, unless the last run failed — then the
    /// status keeps showing why (`retrying` and its cause) until the new run
    /// gets going.
    fn starting(&self) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*s, Status::Retrying(_)) {
            *s = Status::Starting;
        }
    }

    /// Rows appended by this run.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// The confirmed upstream position, as PostgreSQL prints an LSN.
    pub fn confirmed(&self) -> String {
        lsn_text(self.confirmed.load(Ordering::Relaxed))
    }

    /// Upstream log bytes not yet copied, at the last look.
    pub fn lag_bytes(&self) -> u64 {
        self.lag_bytes.load(Ordering::Relaxed)
    }

    /// Upstream records not yet copied, at the last look.
    pub fn lag_records(&self) -> u64 {
        self.lag_records.load(Ordering::Relaxed)
    }
}

/// An LSN as PostgreSQL prints it (`16/B374D848`).
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// An LSN from PostgreSQL's text.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(hi << 32 | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_checked() {
        let ok = opts(&[
            ("url", "postgres://u:secret@h:5432/db"),
            ("publication", "shop"),
        ]);
        let spec = PostgresSpec::new("Shop", &ok, &["orders".into()]).unwrap();
        assert_eq!(spec.slot, "streamhouse_shop");
        assert_eq!(spec.tables, ["public.orders"]);
        assert_eq!(spec.stream_of("public.orders"), "orders");
        assert_eq!(spec.stream_of("sales.orders"), "sales_orders");
        let sql = spec.to_sql(false);
        assert!(!sql.contains("secret") && sql.contains("u:****@h"), "{sql}");
        assert!(spec.to_sql(true).contains("secret"));
        for (bad, why) in [
            (
                vec![("url", "mysql://x"), ("publication", "p")],
                "postgres://",
            ),
            (vec![("publication", "p")], "needs"),
            (vec![("url", "postgres://h/d")], "needs"),
            (
                vec![("url", "postgres://h/d"), ("publication", "p"), ("x", "1")],
                "unknown source option",
            ),
            (
                vec![
                    ("url", "postgres://h/d"),
                    ("publication", "p"),
                    ("partitions", "0"),
                ],
                "1 to 1024",
            ),
            (
                vec![
                    ("url", "postgres://h/d"),
                    ("publication", "p"),
                    ("slot", "A-b"),
                ],
                "replication slot",
            ),
            (
                vec![
                    ("url", "postgres://h/d"),
                    ("publication", "p"),
                    ("poll_interval", "500us"),
                ],
                "1ms to 60s",
            ),
            (
                vec![
                    ("url", "postgres://h/d"),
                    ("publication", "p"),
                    ("poll_interval", "61s"),
                ],
                "1ms to 60s",
            ),
        ] {
            let e = PostgresSpec::new("s", &opts(&bad), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            masked_url("postgres://me:p%40ss@db:5432/x?sslmode=require&password=zz"),
            "postgres://me:****@db:5432/x?sslmode=require&password=****"
        );
        assert_eq!(masked_url("postgres://db/x"), "postgres://db/x");
        assert_eq!(masked_url("postgres://me@db/x"), "postgres://me@db/x");
    }

    #[test]
    fn lsns_read_and_print() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("x"), None);
    }
}
