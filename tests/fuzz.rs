//! Structure-aware fuzzing of everything the network reaches, against the
//! real server binary: PostgreSQL messages (startup parameters, simple and
//! extended queries, parameters in text and binary of every type, COPY in
//! text, CSV and binary), SQL built from the dialect's words, Flight
//! tickets, descriptors, actions and batch `app_metadata`, and HTTP admin
//! requests.
//!
//! Cases come from `bolero` (random generation from typed models, so most
//! cases get past the framing into the decoders). Each target sends its
//! cases, then checks that the server still answers on every door and that
//! its log holds no panic. A bounded run is part of the test suite; a longer
//! one is `BOLERO_RANDOM_ITERATIONS=100000 cargo test --test fuzz`, and
//! `BOLERO_RANDOM_SEED=…` replays a failure.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use bolero::{TypeGenerator, check};
use bytes::Bytes;
use common::Server;
use futures::{StreamExt, TryStreamExt};

/// Cases per target in the test suite's bounded run.
const CASES: usize = 400;

fn start(dir: &Path) -> Server {
    let server = Server::start_logged(
        dir,
        &["--data-dir", "data"],
        &[("STREAMHOUSE_LOG_LEVEL", "warn")],
        &dir.join("server.log"),
    );
    let mut c = pg(&server).expect("connect");
    for sql in [
        "CREATE STREAM fz (i BIGINT, s TEXT, d DOUBLE PRECISION, b BOOLEAN, t TIMESTAMP, \
         dt DATE, n NUMERIC(12, 3), by BYTEA, j JSONB, sm SMALLINT, r REAL, iv INTERVAL) \
         WITH (partitions = 2)",
        "CREATE STREAM f2 (id BIGINT NOT NULL, name TEXT)",
    ] {
        let out = simple(&mut c, sql);
        assert_eq!(
            out.first(),
            Some(&b'C'),
            "{sql}: {}",
            String::from_utf8_lossy(&out)
        );
    }
    server
}

/// Every door answers, and the log holds no panic.
fn assert_healthy(server: &Server, dir: &Path, cases: u64) {
    let mut c = pg(server).expect("the PostgreSQL door answers");
    let out = simple(&mut c, "SELECT 41 + 1");
    assert!(out.windows(2).any(|w| w == b"42"), "SELECT after fuzzing");
    let (status, _) = common::get(&server.http(), "/health");
    assert_eq!(status, 200);
    let rt = runtime();
    rt.block_on(async {
        let mut f = flight(server).await;
        let got: Vec<RecordBatch> = f
            .do_get(Ticket::new(r#"{"stream": "f2"}"#))
            .await
            .expect("the Flight port answers")
            .try_collect()
            .await
            .expect("read f2");
        drop(got);
    });
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "the server panicked during fuzzing:\n{log}"
    );
    assert!(cases > 0, "no case ran");
    eprintln!("{cases} cases, no crash");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- pgwire

fn pg_addr(server: &Server) -> String {
    let url = server.pg_url();
    let host = url.split('@').nth(1).unwrap();
    host.split('/').next().unwrap().to_string()
}

fn frame(tag: Option<u8>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    frame(None, &body)
}

/// A connection past startup (ReadyForQuery read).
fn pg(server: &Server) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(pg_addr(server))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&startup_message(&[
        ("user", "streamhouse"),
        ("database", "streamhouse"),
    ]))?;
    read_until_ready(&mut s);
    Ok(s)
}

/// Reads until ReadyForQuery, EOF or the timeout; what was read.
fn read_until_ready(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if buf.windows(5).any(|w| w == b"Z\0\0\0\x05") {
            return buf;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn simple(s: &mut TcpStream, sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    s.write_all(&frame(Some(b'Q'), &body)).unwrap();
    read_until_ready(s)
}

/// Words SQL is built from: the dialect's keywords, names the catalog
/// knows, literals and punctuation.
#[derive(Debug, TypeGenerator)]
enum Word {
    Keyword(#[generator(0..KEYWORDS.len())] usize),
    Name(#[generator(0..NAMES.len())] usize),
    Int(i64),
    Float(f64),
    Text(#[generator(bolero::generator::produce::<String>().with().len(0usize..12))] String),
    Param(#[generator(0u32..70_000)] u32),
    Punct(#[generator(0..PUNCT.len())] usize),
}

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "INSERT INTO",
    "VALUES",
    "AS",
    "CAST",
    "JOIN",
    "ON",
    "UNION ALL",
    "WITH",
    "CREATE STREAM",
    "CREATE MATERIALIZED VIEW",
    "DROP STREAM",
    "COPY",
    "TO STDOUT",
    "FROM STDIN",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "SET",
    "SHOW",
    "NULL",
    "TRUE",
    "NOT",
    "AND",
    "OR",
    "IS",
    "IN",
    "EXISTS",
    "CASE WHEN",
    "THEN",
    "ELSE",
    "END",
    "INTERVAL",
    "TUMBLE",
    "HOP",
    "SESSION",
    "count(*)",
    "sum",
    "repeat",
    "lpad",
    "now()",
    "EXPLAIN",
    "SUBSCRIBE",
    "FETCH",
    "DECLARE",
    "OVER",
    "PARTITION BY",
    "DISTINCT",
];
const NAMES: &[&str] = &[
    "fz",
    "f2",
    "i",
    "s",
    "d",
    "b",
    "t",
    "dt",
    "n",
    "by",
    "j",
    "sm",
    "r",
    "iv",
    "id",
    "name",
    "_offset",
    "_partition",
    "_timestamp",
    "pg_catalog.pg_class",
    "information_schema.tables",
    "streamhouse.streams",
    "streamhouse.partitions",
    "generate_series(1, 3)",
    "x",
    "bigint",
    "text",
    "timestamptz",
    "numeric(40, 2)",
    "int[]",
];
const PUNCT: &[&str] = &[
    "(", ")", ",", ";", "*", "+", "-", "/", "%", "=", "<>", "<", ">", "::", ".", "[", "]", "'",
    "\"", "||", "->>",
];

fn sql(words: &[Word]) -> String {
    let mut out = String::new();
    for w in words {
        match w {
            Word::Keyword(k) => out.push_str(KEYWORDS[*k]),
            Word::Name(n) => out.push_str(NAMES[*n]),
            Word::Int(i) => out.push_str(&i.to_string()),
            Word::Float(f) => out.push_str(&f.to_string()),
            Word::Text(t) => {
                out.push('\'');
                out.push_str(&t.replace('\'', "''"));
                out.push('\'');
            }
            Word::Param(p) => out.push_str(&format!("${p}")),
            Word::Punct(p) => out.push_str(PUNCT[*p]),
        }
        out.push(' ');
    }
    out
}

/// Statements with holes, to get past the parser into planning, binding
/// and COPY decoding.
#[derive(Debug, TypeGenerator)]
enum Template {
    Words(#[generator(bolero::generator::produce::<Vec<Word>>().with().len(0usize..24))] Vec<Word>),
    SelectWhere(
        #[generator(bolero::generator::produce::<Vec<Word>>().with().len(0usize..10))] Vec<Word>,
    ),
    InsertParams(#[generator(1usize..13)] usize),
    CopyIn(#[generator(0u8..3)] u8),
    CopyOut(#[generator(0u8..3)] u8),
}

impl Template {
    fn text(&self) -> String {
        const COLS: [&str; 12] = [
            "i", "s", "d", "b", "t", "dt", "n", "by", "j", "sm", "r", "iv",
        ];
        let format = |f: u8| ["text", "csv", "binary"][f as usize % 3];
        match self {
            Template::Words(w) => sql(w),
            Template::SelectWhere(w) => format!("SELECT * FROM fz WHERE {}", sql(w)),
            Template::InsertParams(n) => {
                let cols = &COLS[..*n];
                let params: Vec<String> = (1..=*n).map(|i| format!("${i}")).collect();
                format!(
                    "INSERT INTO fz ({}) VALUES ({})",
                    cols.join(", "),
                    params.join(", ")
                )
            }
            Template::CopyIn(f) => format!("COPY fz FROM STDIN WITH (FORMAT {})", format(*f)),
            Template::CopyOut(f) => format!("COPY fz TO STDOUT WITH (FORMAT {})", format(*f)),
        }
    }
}

/// The types a parameter may be declared as (OIDs), 0 for "infer".
const OIDS: &[u32] = &[
    0, 16, 17, 20, 21, 23, 25, 114, 700, 701, 1043, 1082, 1083, 1114, 1184, 1186, 1700, 3802, 1007,
    1009, 1016, 2950, 99999,
];

/// A parameter value: raw bytes, or bytes shaped like the binary form of
/// a type (right length, edge values), or absent (NULL).
#[derive(Debug, TypeGenerator)]
enum Value {
    Null,
    Raw(#[generator(bolero::generator::produce::<Vec<u8>>().with().len(0usize..40))] Vec<u8>),
    I64(i64),
    I32(i32),
    I16(i16),
    F64(f64),
    Numeric {
        ndigits: i16,
        weight: i16,
        sign: u16,
        dscale: i16,
        #[generator(bolero::generator::produce::<Vec<i16>>().with().len(0usize..6))]
        digits: Vec<i16>,
    },
    Interval(i64, i32, i32),
    Text(#[generator(bolero::generator::produce::<String>().with().len(0usize..24))] String),
}

impl Value {
    fn bytes(&self) -> Option<Vec<u8>> {
        Some(match self {
            Value::Null => return None,
            Value::Raw(b) => b.clone(),
            Value::I64(v) => v.to_be_bytes().to_vec(),
            Value::I32(v) => v.to_be_bytes().to_vec(),
            Value::I16(v) => v.to_be_bytes().to_vec(),
            Value::F64(v) => v.to_be_bytes().to_vec(),
            Value::Numeric {
                ndigits,
                weight,
                sign,
                dscale,
                digits,
            } => {
                let mut b = Vec::new();
                for x in [*ndigits, *weight] {
                    b.extend_from_slice(&x.to_be_bytes());
                }
                b.extend_from_slice(&sign.to_be_bytes());
                b.extend_from_slice(&dscale.to_be_bytes());
                for d in digits {
                    b.extend_from_slice(&d.to_be_bytes());
                }
                b
            }
            Value::Interval(us, days, months) => {
                let mut b = us.to_be_bytes().to_vec();
                b.extend_from_slice(&days.to_be_bytes());
                b.extend_from_slice(&months.to_be_bytes());
                b
            }
            Value::Text(t) => t.as_bytes().to_vec(),
        })
    }
}

/// COPY data: raw bytes, or rows shaped like the chosen format.
#[derive(Debug, TypeGenerator)]
enum CopyData {
    Raw(#[generator(bolero::generator::produce::<Vec<u8>>().with().len(0usize..64))] Vec<u8>),
    /// Text/CSV lines of fields.
    Lines(
        #[generator(bolero::generator::produce::<Vec<Vec<String>>>().with().len(0usize..4))]
        Vec<Vec<String>>,
    ),
    /// A binary COPY: header (maybe broken), tuples of fields with
    /// declared lengths that may lie.
    Binary {
        good_header: bool,
        extension: i32,
        #[generator(bolero::generator::produce::<Vec<(i16, Vec<(i32, Value)>)>>().with().len(0usize..3))]
        tuples: Vec<(i16, Vec<(i32, Value)>)>,
    },
    End,
}

impl CopyData {
    fn bytes(&self) -> Vec<u8> {
        match self {
            CopyData::Raw(b) => b.clone(),
            CopyData::Lines(rows) => {
                let mut out = String::new();
                for r in rows {
                    out.push_str(&r.join("\t"));
                    out.push('\n');
                }
                out.into_bytes()
            }
            CopyData::Binary {
                good_header,
                extension,
                tuples,
            } => {
                let mut out = Vec::new();
                if *good_header {
                    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
                    out.extend_from_slice(&0i32.to_be_bytes());
                    out.extend_from_slice(&(extension % 64).to_be_bytes());
                }
                for (count, fields) in tuples {
                    out.extend_from_slice(&count.to_be_bytes());
                    for (len, v) in fields {
                        let bytes = v.bytes().unwrap_or_default();
                        // Mostly honest lengths, sometimes lies.
                        let declared = if len % 4 == 0 {
                            *len
                        } else {
                            bytes.len() as i32
                        };
                        out.extend_from_slice(&declared.to_be_bytes());
                        out.extend_from_slice(&bytes);
                    }
                }
                out
            }
            CopyData::End => b"\xff\xff".to_vec(),
        }
    }
}

/// One frontend message.
#[derive(Debug, TypeGenerator)]
enum Message {
    Query(Template),
    Parse {
        statement: Template,
        #[generator(bolero::generator::produce::<Vec<usize>>().with().len(0usize..6))]
        types: Vec<usize>,
    },
    Bind {
        #[generator(bolero::generator::produce::<Vec<i16>>().with().len(0usize..4))]
        formats: Vec<i16>,
        #[generator(bolero::generator::produce::<Vec<Value>>().with().len(0usize..13))]
        values: Vec<Value>,
        #[generator(bolero::generator::produce::<Vec<i16>>().with().len(0usize..3))]
        result_formats: Vec<i16>,
    },
    Describe(bool),
    Execute(i32),
    Sync,
    Flush,
    CopyData(CopyData),
    CopyDone,
    CopyFail,
    Close(bool),
    /// Any tag, any body: framing and unknown messages.
    Raw(
        u8,
        #[generator(bolero::generator::produce::<Vec<u8>>().with().len(0usize..32))] Vec<u8>,
    ),
}

impl Message {
    fn bytes(&self) -> Vec<u8> {
        let cstr = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            b.retain(|c| *c != 0);
            b.push(0);
            b
        };
        match self {
            Message::Query(t) => frame(Some(b'Q'), &cstr(&t.text())),
            Message::Parse { statement, types } => {
                let mut body = cstr("");
                body.extend(cstr(&statement.text()));
                body.extend_from_slice(&(types.len() as i16).to_be_bytes());
                for t in types {
                    body.extend_from_slice(&OIDS[t % OIDS.len()].to_be_bytes());
                }
                frame(Some(b'P'), &body)
            }
            Message::Bind {
                formats,
                values,
                result_formats,
            } => {
                let mut body = cstr("");
                body.extend(cstr(""));
                body.extend_from_slice(&(formats.len() as i16).to_be_bytes());
                for f in formats {
                    body.extend_from_slice(&(f.rem_euclid(3)).to_be_bytes());
                }
                body.extend_from_slice(&(values.len() as i16).to_be_bytes());
                for v in values {
                    match v.bytes() {
                        None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(b) => {
                            body.extend_from_slice(&(b.len() as i32).to_be_bytes());
                            body.extend_from_slice(&b);
                        }
                    }
                }
                body.extend_from_slice(&(result_formats.len() as i16).to_be_bytes());
                for f in result_formats {
                    body.extend_from_slice(&(f.rem_euclid(3)).to_be_bytes());
                }
                frame(Some(b'B'), &body)
            }
            Message::Describe(portal) => {
                let mut body = vec![if *portal { b'P' } else { b'S' }];
                body.extend(cstr(""));
                frame(Some(b'D'), &body)
            }
            Message::Execute(max) => {
                let mut body = cstr("");
                body.extend_from_slice(&max.to_be_bytes());
                frame(Some(b'E'), &body)
            }
            Message::Sync => frame(Some(b'S'), &[]),
            Message::Flush => frame(Some(b'H'), &[]),
            Message::CopyData(d) => frame(Some(b'd'), &d.bytes()),
            Message::CopyDone => frame(Some(b'c'), &[]),
            Message::CopyFail => frame(Some(b'f'), &cstr("stop")),
            Message::Close(portal) => {
                let mut body = vec![if *portal { b'P' } else { b'S' }];
                body.extend(cstr(""));
                frame(Some(b'C'), &body)
            }
            Message::Raw(tag, body) => frame(Some(*tag), body),
        }
    }
}

/// A session: startup parameters (some odd), then messages.
#[derive(Debug, TypeGenerator)]
struct Session {
    #[generator(bolero::generator::produce::<Vec<(String, String)>>().with().len(0usize..3))]
    extra_params: Vec<(String, String)>,
    #[generator(bolero::generator::produce::<Vec<Message>>().with().len(1usize..10))]
    messages: Vec<Message>,
}

/// The tags of the backend messages in `buf`.
fn tags(mut buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        out.push(buf[0]);
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        buf = &buf[(1 + len).min(buf.len())..];
    }
    out
}

#[test]
fn pgwire_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = pg_addr(&server);
    let cases = AtomicU64::new(0);
    let [completed, bound, copies, errors] = [0; 4].map(AtomicU64::new);
    check!()
        .with_type::<Session>()
        .with_iterations(CASES)
        .for_each(|session| {
            cases.fetch_add(1, Ordering::Relaxed);
            let Ok(mut s) = TcpStream::connect(&addr) else {
                panic!("the server stopped accepting connections");
            };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut params = vec![
                ("user".to_string(), "streamhouse".to_string()),
                ("database".to_string(), "streamhouse".to_string()),
            ];
            params.extend(session.extra_params.iter().cloned());
            let params: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let _ = s.write_all(&startup_message(&params));
            read_until_ready(&mut s);
            let mut all = Vec::new();
            for m in &session.messages {
                all.extend(m.bytes());
            }
            all.extend(frame(Some(b'S'), &[]));
            let _ = s.write_all(&all);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
            for tag in tags(&sink) {
                match tag {
                    b'C' => completed.fetch_add(1, Ordering::Relaxed),
                    b'2' => bound.fetch_add(1, Ordering::Relaxed),
                    b'G' => copies.fetch_add(1, Ordering::Relaxed),
                    b'E' => errors.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        });
    let [completed, bound, copies, errors] =
        [completed, bound, copies, errors].map(|c| c.load(Ordering::Relaxed));
    eprintln!(
        "pgwire: {completed} statements completed, {bound} binds, {copies} COPYs begun, \
         {errors} errors answered"
    );
    // The models reach past framing into planning, binding and COPY.
    assert!(completed > 0 && bound > 0 && copies > 0 && errors > 0);
    assert_healthy(&server, dir.path(), cases.load(Ordering::Relaxed));
}

// ---------------------------------------------------------------- Flight

async fn flight(server: &Server) -> FlightClient {
    let uri = server
        .line("Flight")
        .split_whitespace()
        .next()
        .unwrap()
        .replace("grpc://", "http://");
    let channel = tonic::transport::Channel::from_shared(uri)
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightClient::new(channel)
}

/// JSON shaped like the API's bodies: known keys with values of any type.
#[derive(Debug, TypeGenerator)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(#[generator(bolero::generator::produce::<String>().with().len(0usize..12))] String),
    Key(#[generator(0..KEYS.len())] usize),
    List(#[generator(bolero::generator::produce::<Vec<u8>>().with().len(0usize..4))] Vec<u8>),
    Object(
        #[generator(bolero::generator::produce::<Vec<(usize, Json2)>>().with().len(0usize..6))]
        Vec<(usize, Json2)>,
    ),
}

/// A leaf value inside an object (keeps the model finite).
#[derive(Debug, TypeGenerator)]
enum Json2 {
    Null,
    Bool(bool),
    Int(i64),
    Small(#[generator(0u32..4)] u32),
    Text(#[generator(bolero::generator::produce::<String>().with().len(0usize..12))] String),
    Key(#[generator(0..KEYS.len())] usize),
    Ints(#[generator(bolero::generator::produce::<Vec<i64>>().with().len(0usize..4))] Vec<i64>),
    Offsets(
        #[generator(bolero::generator::produce::<Vec<(u8, i64)>>().with().len(0usize..3))]
        Vec<(u8, i64)>,
    ),
}

const KEYS: &[&str] = &[
    "stream",
    "partition",
    "from",
    "follow",
    "group",
    "member",
    "strategy",
    "session_timeout_ms",
    "offsets",
    "generation",
    "to",
    "key",
    "producer_id",
    "sequence",
    "transactional_id",
    "epoch",
    "timeout_ms",
    "f2",
    "fz",
    "earliest",
    "latest",
    "range",
    "round_robin",
    "2026-11-26T10:00:00Z",
];

fn leaf(v: &Json2) -> serde_json::Value {
    use serde_json::json;
    match v {
        Json2::Null => json!(null),
        Json2::Bool(b) => json!(b),
        Json2::Int(i) => json!(i),
        Json2::Small(i) => json!(i),
        Json2::Text(t) => json!(t),
        Json2::Key(k) => json!(KEYS[*k]),
        Json2::Ints(v) => json!(v),
        Json2::Offsets(v) => {
            let m: serde_json::Map<String, serde_json::Value> =
                v.iter().map(|(p, o)| (p.to_string(), json!(o))).collect();
            serde_json::Value::Object(m)
        }
    }
}

fn json(v: &Json) -> Vec<u8> {
    use serde_json::json;
    let value = match v {
        Json::Null => json!(null),
        Json::Bool(b) => json!(b),
        Json::Int(i) => json!(i),
        Json::Float(f) => json!(f),
        Json::Text(t) => json!(t),
        Json::Key(k) => json!(KEYS[*k]),
        Json::List(l) => json!(l),
        Json::Object(fields) => {
            let m: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| (KEYS[k % KEYS.len()].to_string(), leaf(v)))
                .collect();
            serde_json::Value::Object(m)
        }
    };
    serde_json::to_vec(&value).unwrap()
}

const ACTIONS: &[&str] = &[
    "join_group",
    "heartbeat",
    "leave_group",
    "commit_offsets",
    "list_groups",
    "describe_group",
    "reset_offsets",
    "init_transactions",
    "commit_transaction",
    "abort_transaction",
    "CreatePreparedStatement",
    "ClosePreparedStatement",
    "BeginTransaction",
    "EndTransaction",
    "unknown",
];

/// One Flight call.
#[derive(Debug, TypeGenerator)]
enum Call {
    Get(Json),
    GetRaw(#[generator(bolero::generator::produce::<Vec<u8>>().with().len(0usize..48))] Vec<u8>),
    Action(#[generator(0..ACTIONS.len())] usize, Json),
    ActionRaw(
        #[generator(0..ACTIONS.len())] usize,
        #[generator(bolero::generator::produce::<Vec<u8>>().with().len(0usize..48))] Vec<u8>,
    ),
    /// An upload to a path, batches carrying metadata.
    Put {
        #[generator(bolero::generator::produce::<Vec<usize>>().with().len(0usize..3))]
        path: Vec<usize>,
        metadata: Json,
        rows: u8,
    },
}

fn batch(rows: u8) -> RecordBatch {
    let n = rows as i64 % 8;
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("n{i}")),
            )),
        ],
    )
    .unwrap()
}

async fn call(client: &mut FlightClient, c: &Call) {
    match c {
        Call::Get(j) => {
            if let Ok(s) = client.do_get(Ticket::new(json(j))).await {
                let _ = s.try_collect::<Vec<RecordBatch>>().await;
            }
        }
        Call::GetRaw(b) => {
            if let Ok(s) = client.do_get(Ticket::new(b.clone())).await {
                let _ = s.try_collect::<Vec<RecordBatch>>().await;
            }
        }
        Call::Action(a, j) => {
            let action = Action::new(ACTIONS[*a], json(j));
            if let Ok(s) = client.do_action(action).await {
                let _ = s.try_collect::<Vec<Bytes>>().await;
            }
        }
        Call::ActionRaw(a, b) => {
            let action = Action::new(ACTIONS[*a], b.clone());
            if let Ok(s) = client.do_action(action).await {
                let _ = s.try_collect::<Vec<Bytes>>().await;
            }
        }
        Call::Put {
            path,
            metadata,
            rows,
        } => {
            let path: Vec<String> = path
                .iter()
                .map(|k| KEYS[k % KEYS.len()].to_string())
                .collect();
            let meta = Bytes::from(json(metadata));
            // The options ride on the batch's own message, after the schema.
            let data = FlightDataEncoderBuilder::new()
                .with_flight_descriptor(Some(FlightDescriptor::new_path(path)))
                .build(futures::stream::iter([Ok(batch(*rows))]))
                .enumerate()
                .map(move |(i, r)| {
                    r.map(|mut d| {
                        if i > 0 {
                            d.app_metadata = meta.clone();
                        }
                        d
                    })
                });
            if let Ok(s) = client.do_put(data).await {
                let _ = s.try_collect::<Vec<_>>().await;
            }
        }
    }
}

#[test]
fn flight_calls() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let rt = runtime();
    let client = rt.block_on(flight(&server));
    // A failed case is reported by the checker; the client is not reused after.
    let state = std::panic::AssertUnwindSafe((rt, std::sync::Mutex::new(client)));
    let cases = AtomicU64::new(0);
    check!()
        .with_type::<Vec<Call>>()
        .with_iterations(CASES)
        .for_each(|calls| {
            cases.fetch_add(1, Ordering::Relaxed);
            let (rt, client) = &*state;
            let mut client = client.lock().unwrap_or_else(|p| p.into_inner());
            rt.block_on(async {
                for c in calls.iter().take(6) {
                    tokio::time::timeout(Duration::from_secs(10), call(&mut client, c))
                        .await
                        .unwrap_or_else(|_| panic!("a Flight call hung: {c:?}"));
                }
            });
        });
    assert_healthy(&server, dir.path(), cases.load(Ordering::Relaxed));
}

// ---------------------------------------------------------------- HTTP

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "BREW"];
const PATHS: &[&str] = &[
    "/",
    "/health",
    "/ready",
    "/live",
    "/metrics",
    "/v1/streams",
    "/v1/agents",
    "/v1/streams/f2",
    "/v1/../etc/passwd",
    "/%00",
    "/v1/streams?x=1",
];

#[derive(Debug, TypeGenerator)]
struct HttpRequest {
    #[generator(0..METHODS.len())]
    method: usize,
    #[generator(0..PATHS.len())]
    path: usize,
    #[generator(bolero::generator::produce::<String>().with().len(0usize..16))]
    suffix: String,
    #[generator(bolero::generator::produce::<Vec<(String, String)>>().with().len(0usize..3))]
    headers: Vec<(String, String)>,
    #[generator(bolero::generator::produce::<Vec<u8>>().with().len(0usize..64))]
    body: Vec<u8>,
}

#[test]
fn http_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.http();
    let cases = AtomicU64::new(0);
    check!()
        .with_type::<HttpRequest>()
        .with_iterations(CASES)
        .for_each(|r| {
            cases.fetch_add(1, Ordering::Relaxed);
            let mut s = TcpStream::connect(&addr).expect("the HTTP door accepts");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = format!(
                "{} {}{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n",
                METHODS[r.method],
                PATHS[r.path],
                r.suffix.replace(['\r', '\n', ' '], "")
            )
            .into_bytes();
            for (k, v) in &r.headers {
                req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
            req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", r.body.len()).as_bytes());
            req.extend_from_slice(&r.body);
            let _ = s.write_all(&req);
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
        });
    assert_healthy(&server, dir.path(), cases.load(Ordering::Relaxed));
}
