//! Nexmark as materialized views.
//!
//! On a fresh data directory, a server in this process (log, SQL, Flight
//! on loopback): the `person`, `auction` and `bid` streams are created with
//! SQL, `--nexmark-events` events (see `nexmark/generator.rs`) are produced
//! into them through the Flight producer API (`DoPut`, one call per stream,
//! 10,000-event blocks), and then each query of `benches/nexmark/q*.sql` is
//! created as a materialized view over the events already in the log.
//!
//! Per query: the time `CREATE MATERIALIZED VIEW` takes (it returns once
//! the view reflects everything its inputs held), the CPU time the process
//! used meanwhile (from the OS), its peak resident memory, and the view's
//! rows. Events/s count every Nexmark event ingested (persons, auctions and
//! bids), whichever streams the query reads. Each view is checked against
//! the same query run as a bounded batch query: its contents (aggregate
//! views), and its changelog applied in order (views that announce every
//! change); a query the views cannot run yet is reported with the reason.
//! A query whose view feeds a sink (q10) is timed until the sink has
//! copied everything, and its files are read back and checked the same
//! way.

#[path = "nexmark/generator.rs"]
mod generator;
#[path = "nexmark/live.rs"]
mod live;

pub use live::live;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use arrow::row::{RowConverter, SortField};
use futures::SinkExt;
use streamhouse_log::DataDir;
use streamhouse_sql::Database;

use crate::{Args, Row, collect, cpu_seconds, reset_peak_memory, resident_mib};
use generator::{Generator, STREAMS};

/// Event time of event 0: 2026-11-01 00:00:00 UTC.
const BASE_US: i64 = 1_793_491_200_000_000;
/// Events per generated block (and per `DoPut` message of the bid stream,
/// roughly).
const BLOCK: u64 = 10_000;

/// The Nexmark scenarios: ingest, then every query of `benches/nexmark`.
pub async fn scenarios(args: &Args) -> Vec<Row> {
    let (_tmp, _dd, log, db, uri) = server().await;
    let mut rows = vec![ingest(&db, &uri, args.nexmark_events, args.nexmark_rate, None).await];
    let n = args.nexmark_events;
    for (stream, share) in [("person", 1), ("auction", 3), ("bid", 46)] {
        let have = count(&db, &format!("SELECT count(*) FROM {stream}")).await;
        let want = (0..n)
            .filter(|i| {
                let o = i % 50;
                match stream {
                    "person" => o < 1,
                    "auction" => (1..4).contains(&o),
                    _ => o >= 4,
                }
            })
            .count() as u64;
        assert_eq!(have, want, "{stream}: {share}/50 of the events");
    }

    let wanted = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    for q in queries() {
        let scenario = format!("nexmark {}", q.name);
        if !wanted(&scenario) {
            continue;
        }
        let row = query(&db, &scenario, &q, n).await;
        eprintln!(
            "{scenario}: {} events/s, {} events/CPU-s, {}",
            row.per_second().map_or("-".into(), |v| format!("{v:.0}")),
            row.cpu
                .map_or("-".into(), |c| format!("{:.0}", n as f64 / c)),
            row.note.as_deref().unwrap_or("")
        );
        rows.push(row);
    }
    log.shutdown().await;
    rows
}

/// A server in this process on a fresh data directory, with the Nexmark
/// streams: (its directory, data dir, log, database, Flight URI).
async fn server() -> (
    tempfile::TempDir,
    DataDir,
    Arc<streamhouse_log::Log>,
    Arc<Database>,
    String,
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dd = DataDir::open(tmp.path()).expect("data dir");
    let log = Arc::new(dd.open_log().await.expect("log"));
    let db = Arc::new(Database::open(log.clone()).await.expect("database"));
    for create in STREAMS {
        db.execute(create).await.expect("create stream");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let uri = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(streamhouse_flight::serve(
        listener,
        db.clone(),
        streamhouse_flight::FlightConfig::default(),
        std::future::pending(),
    ));
    (tmp, dd, log, db, uri)
}

/// One query file: the query (also the bounded batch reference) and,
/// when the views cannot run it as one view, the views that do.
struct Query {
    name: String,
    reference: String,
    /// The statements that make the view: `CREATE TABLE` and `INSERT`s of
    /// a side table, then `CREATE MATERIALIZED VIEW nexmark_<name>`, then
    /// perhaps a `CREATE SINK` of it into `'{files}'` (a directory of the
    /// query's own) (none: the view is the reference query itself).
    views: Vec<String>,
}

/// The query files, in query order. A file holds the query (its view is
/// the query, without a line that bounds it to the closed windows); after
/// it, it may hold the statements that make the view instead: a side table
/// the query reads (`CREATE TABLE`, filled by `INSERT`s; dropped after the
/// query), then the view.
fn queries() -> Vec<Query> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nexmark");
    let mut out: Vec<(u32, Query)> = std::fs::read_dir(&dir)
        .expect("benches/nexmark")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_stem()?.to_str()?.to_string();
            let number: u32 = name.strip_prefix('q')?.parse().ok()?;
            let text = std::fs::read_to_string(&path).ok()?;
            let code = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            let mut statements = code
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let reference = statements.next()?;
            Some((
                number,
                Query {
                    name,
                    reference,
                    views: statements.collect(),
                },
            ))
        })
        .collect();
    out.sort_by_key(|(n, _)| *n);
    out.into_iter().map(|(_, q)| q).collect()
}

/// The statements that make query `q`'s view `nexmark_<name>`: those of
/// its file, or the reference query itself without the line that bounds
/// it to the closed windows (`{closed}`).
fn statements(q: &Query) -> Vec<String> {
    if q.views.is_empty() {
        let query: Vec<&str> = q
            .reference
            .lines()
            .filter(|l| !l.contains("{closed}"))
            .collect();
        vec![format!(
            "CREATE MATERIALIZED VIEW nexmark_{} AS {}",
            q.name,
            query.join("\n")
        )]
    } else {
        q.views.clone()
    }
}

/// Generates the events and produces them through `DoPut`, one call per
/// stream, while generating (a thread of its own).
/// With `pace`, events are sent at that many per second of wall-clock
/// time (blocks of 50 ms of events), else as fast as they go.
async fn ingest(db: &Database, uri: &str, n: u64, rate: u64, pace: Option<u64>) -> Row {
    let schemas: [SchemaRef; 3] = {
        let mut s = Vec::new();
        for name in ["person", "auction", "bid"] {
            s.push(
                db.log()
                    .stream(name)
                    .await
                    .expect("stream")
                    .spec
                    .schema
                    .clone(),
            );
        }
        s.try_into().expect("three schemas")
    };
    let (mut txs, rxs): (Vec<_>, Vec<_>) = (0..3)
        .map(|_| futures::channel::mpsc::channel::<RecordBatch>(16))
        .unzip();
    reset_peak_memory();
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    let gen_schemas = schemas.clone();
    let generator = std::thread::spawn(move || {
        let mut g = Generator::new(42, rate, BASE_US, gen_schemas);
        let mut bytes = 0u64;
        let mut done = 0;
        let block = pace.map_or(BLOCK, |p| (p / 20).clamp(1, BLOCK));
        let began = Instant::now();
        while done < n {
            if let Some(p) = pace {
                let due = std::time::Duration::from_secs_f64(done as f64 / p as f64);
                if let Some(wait) = due.checked_sub(began.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let k = block.min(n - done);
            let b = g.block(k);
            done += k;
            for (tx, batch) in txs.iter_mut().zip([b.person, b.auction, b.bid]) {
                bytes += batch.get_array_memory_size() as u64;
                if batch.num_rows() > 0 {
                    futures::executor::block_on(tx.send(batch)).expect("producer gone");
                }
            }
        }
        bytes
    });
    let mut calls = Vec::new();
    for ((name, schema), rx) in ["person", "auction", "bid"]
        .into_iter()
        .zip(schemas)
        .zip(rxs)
    {
        let uri = uri.to_string();
        calls.push(tokio::spawn(async move {
            let mut client = crate::flight::client(&uri).await;
            crate::flight::put(&mut client, name, schema, rx).await
        }));
    }
    for c in calls {
        c.await.expect("producer");
    }
    let bytes = generator.join().expect("generator");
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    Row {
        scenario: "nexmark generate + ingest (Flight DoPut)".into(),
        rows: n,
        seconds,
        bytes,
        cpu: Some(cpu),
        peak_mib: Some(resident_mib().1),
        note: Some(format!("{rate} events/s of event time")),
        ..Default::default()
    }
}

/// Creates the views of one query, measures them, checks the last one,
/// drops them.
async fn query(db: &Database, scenario: &str, q: &Query, events: u64) -> Row {
    let view = format!("nexmark_{}", q.name);
    // A sink's files go to a directory of their own (`{files}`).
    let files = tempfile::tempdir().expect("tempdir");
    let files_url = format!("file://{}", files.path().display());
    let creates: Vec<String> = statements(q)
        .into_iter()
        .map(|c| c.replace("{files}", &files_url))
        .collect();
    reset_peak_memory();
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    let mut created = Vec::new();
    let mut tables = Vec::new();
    let mut sinks = Vec::new();
    let mut failure = None;
    for c in &creates {
        match db.execute(c).await {
            Ok(_) if c.starts_with("CREATE MATERIALIZED VIEW") => created.push(created_name(c)),
            Ok(_) if c.starts_with("CREATE TABLE") => tables.push(created_name(c)),
            Ok(_) if c.starts_with("CREATE SINK") => sinks.push(created_name(c)),
            Ok(_) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // CREATE returns once the view has caught up; the lag says so too.
    // A sink is done when it has copied the whole changelog into files.
    if failure.is_none() {
        for v in &created {
            while crate::views::lag(db, v).await > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        for s in &sinks {
            while sink_lag(db, s).await != Some(0) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let peak = resident_mib().1;
    if let Some(e) = failure {
        drop_all(db, &sinks, &created, &tables).await;
        return Row {
            scenario: scenario.to_string(),
            note: Some(format!("not run: {e}")),
            ..Default::default()
        };
    }
    let view_rows = count(db, &format!("SELECT count(*) FROM {view}")).await;
    let (emit, state_bytes, _) = describe(db, &view).await;
    // Windows the watermark has not closed are not in a view emitting on
    // close yet: a query over such views is compared up to the earliest
    // of their watermarks (`{closed}` in the reference query).
    let mut reference = q.reference.clone();
    if reference.contains("{closed}") {
        let mut closed: Option<String> = None;
        for v in &created {
            if let (_, _, Some(w)) = describe(db, v).await {
                closed = Some(match closed {
                    Some(c) if c < w => c,
                    _ => w,
                });
            }
        }
        let closed = closed.expect("a view with a watermark");
        reference = reference.replace("{closed}", &format!("TIMESTAMP '{closed}'"));
    }
    let reference = collect(db, &reference).await;
    let mut checks = Vec::new();
    if state_bytes > 0 {
        // An aggregate view: its contents are its state.
        let contents = collect(db, &format!("SELECT * FROM {view}")).await;
        checks.push(("contents", same_rows(&contents, &reference)));
    }
    if emit == "on_update" {
        // Every change is announced: the changelog applied in order is
        // the result.
        let columns = reference
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| format!("\"{}\"", f.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let changes = collect(db, &format!("SELECT op, {columns} FROM changes({view})")).await;
        checks.push(("changelog", folded_equal(&changes, &reference)));
    }
    if !sinks.is_empty() {
        // The files hold the changelog: applied in order, the result.
        checks.push((
            "files",
            folded_equal(&read_files(files.path(), &reference), &reference),
        ));
    }
    drop_all(db, &sinks, &created, &tables).await;
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|(what, r)| r.as_ref().err().map(|e| format!("{what}: {e}")))
        .collect();
    let mut note = if failed.is_empty() {
        format!(
            "= batch query ({})",
            checks
                .iter()
                .map(|(w, _)| *w)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!("DIFFERS from batch query: {}", failed.join("; "))
    };
    if created.len() > 1 {
        note = format!("{} views; {note}", created.len());
    }
    Row {
        scenario: scenario.to_string(),
        rows: events,
        seconds,
        cpu: Some(cpu),
        peak_mib: Some(peak),
        view_rows: Some(view_rows),
        note: Some(note),
        ..Default::default()
    }
}

/// `SHOW SINKS`: sink `name`'s lag in rows, once known.
async fn sink_lag(db: &Database, name: &str) -> Option<i64> {
    for b in collect(db, "SHOW SINKS").await {
        let names = text(b.column(0));
        let lags = b.column(6).as_primitive::<Int64Type>();
        if let Some(i) = (0..b.num_rows()).find(|&i| names.value(i) == name) {
            return lags.is_valid(i).then(|| lags.value(i));
        }
    }
    None
}

/// Every Parquet file under `dir` as batches of `op` and the reference's
/// columns.
fn read_files(dir: &std::path::Path, reference: &[RecordBatch]) -> Vec<RecordBatch> {
    let Some(schema) = reference.first().map(RecordBatch::schema) else {
        return Vec::new();
    };
    let mut names = vec!["op".to_string()];
    names.extend(schema.fields().iter().map(|f| f.name().clone()));
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("files").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "parquet") {
                continue;
            }
            let file = std::fs::File::open(&path).expect("file");
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .expect("parquet")
                    .build()
                    .expect("reader");
            for b in reader {
                let b = b.expect("batch");
                let columns = names
                    .iter()
                    .map(|n| b.column_by_name(n).expect("column in the file").clone())
                    .collect();
                let fields: Vec<arrow::datatypes::Field> = names
                    .iter()
                    .map(|n| b.schema().field_with_name(n).expect("field").clone())
                    .collect();
                let schema = Arc::new(arrow::datatypes::Schema::new(fields));
                out.push(RecordBatch::try_new(schema, columns).expect("batch"));
            }
        }
    }
    out
}

/// Drops sinks, then views, the last created first, then the tables they
/// read.
async fn drop_all(db: &Database, sinks: &[String], views: &[String], tables: &[String]) {
    for s in sinks {
        db.execute(&format!("DROP SINK {s}"))
            .await
            .expect("drop sink");
    }
    for v in views.iter().rev() {
        db.execute(&format!("DROP MATERIALIZED VIEW {v}"))
            .await
            .expect("drop view");
    }
    for t in tables {
        db.execute(&format!("DROP TABLE {t}"))
            .await
            .expect("drop table");
    }
}

/// The relation a `CREATE MATERIALIZED VIEW name …` or `CREATE TABLE
/// name …` statement creates.
fn created_name(create: &str) -> String {
    let words: Vec<&str> = create.split_whitespace().collect();
    let at = if matches!(words.get(1), Some(&"TABLE" | &"SINK")) {
        2
    } else {
        3
    };
    words
        .get(at)
        .map(|w| w.trim_end_matches('(').to_string())
        .expect("CREATE MATERIALIZED VIEW name / CREATE TABLE name")
}

/// The view's emit mode, state size and watermark (`streamhouse.views`).
async fn describe(db: &Database, view: &str) -> (String, u64, Option<String>) {
    let b = collect(
        db,
        &format!(
            "SELECT emit, state_bytes, CAST(watermark AS TEXT) FROM streamhouse.views \
             WHERE name = '{view}'"
        ),
    )
    .await;
    let b = b
        .iter()
        .find(|b| b.num_rows() > 0)
        .expect("the view is listed");
    let emit = text(b.column(0)).value(0).to_string();
    let bytes = b.column(1).as_primitive::<Int64Type>().value(0);
    let w = text(b.column(2));
    let watermark = w.is_valid(0).then(|| w.value(0).to_string());
    (emit, bytes.max(0) as u64, watermark)
}

/// A text column as `Utf8`, whichever string type it came as.
fn text(c: &dyn Array) -> arrow::array::StringArray {
    cast(c, &DataType::Utf8)
        .expect("text")
        .as_string::<i32>()
        .clone()
}

async fn count(db: &Database, sql: &str) -> u64 {
    collect(db, sql)
        .await
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.column(0).as_primitive::<Int64Type>().value(0) as u64)
        .unwrap_or(0)
}

/// Rows as comparable byte strings, typed like the reference's columns;
/// floating-point values rounded to 9 significant digits (an incremental
/// sum adds in another order than a batch one).
fn keys(batches: &[RecordBatch], types: &[DataType], skip: usize) -> Vec<Vec<u8>> {
    let fields: Vec<SortField> = types
        .iter()
        .map(|t| {
            SortField::new(if is_float(t) {
                DataType::Float64
            } else {
                t.clone()
            })
        })
        .collect();
    let converter = RowConverter::new(fields).expect("row converter");
    let mut out = Vec::new();
    for b in batches {
        let columns: Vec<Arc<dyn Array>> = types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let c = b.column(i + skip);
                if is_float(t) {
                    let f = cast(c, &DataType::Float64).expect("cast to float");
                    let rounded: arrow::array::Float64Array = f
                        .as_primitive::<Float64Type>()
                        .unary(|v| round_significant(v, 9));
                    Arc::new(rounded) as Arc<dyn Array>
                } else {
                    cast(c, t).expect("cast to the reference's type")
                }
            })
            .collect();
        let rows = converter.convert_columns(&columns).expect("rows");
        out.extend(rows.iter().map(|r| r.as_ref().to_vec()));
    }
    out
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

fn round_significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

fn types_of(batches: &[RecordBatch]) -> Option<Vec<DataType>> {
    batches.first().map(|b| {
        b.schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect()
    })
}

/// `rows` and `reference` hold the same rows, as
/// multisets.
fn same_rows(rows: &[RecordBatch], reference: &[RecordBatch]) -> Result<(), String> {
    let Some(types) = types_of(reference) else {
        let n: usize = rows.iter().map(RecordBatch::num_rows).sum();
        return if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} rows, reference none"))
        };
    };
    let mut counts: HashMap<Vec<u8>, i64> = HashMap::new();
    for k in keys(rows, &types, 0) {
        *counts.entry(k).or_default() += 1;
    }
    compare(counts, reference, &types)
}

/// `changes` (`op` first) applied in order yields `reference`.
fn folded_equal(changes: &[RecordBatch], reference: &[RecordBatch]) -> Result<(), String> {
    let Some(types) = types_of(reference) else {
        // No rows: every insert must have been taken back.
        let net: i64 = changes
            .iter()
            .map(|b| {
                let ops = text(b.column(0));
                (0..b.num_rows())
                    .map(|i| if ops.value(i) == "delete" { -1 } else { 1 })
                    .sum::<i64>()
            })
            .sum();
        return if net == 0 {
            Ok(())
        } else {
            Err(format!("{net} rows left by the changes, reference none"))
        };
    };
    let mut counts: HashMap<Vec<u8>, i64> = HashMap::new();
    for b in changes {
        let ops = text(b.column(0));
        let keys = keys(std::slice::from_ref(b), &types, 1);
        for (i, k) in keys.into_iter().enumerate() {
            *counts.entry(k).or_default() += if ops.value(i) == "delete" { -1 } else { 1 };
        }
    }
    compare(counts, reference, &types)
}

fn compare(
    mut counts: HashMap<Vec<u8>, i64>,
    reference: &[RecordBatch],
    types: &[DataType],
) -> Result<(), String> {
    let expected: usize = reference.iter().map(RecordBatch::num_rows).sum();
    for k in keys(reference, types, 0) {
        *counts.entry(k).or_default() -= 1;
    }
    let extra: i64 = counts.values().filter(|&&c| c > 0).sum();
    let missing: i64 = -counts.values().filter(|&&c| c < 0).sum::<i64>();
    if extra == 0 && missing == 0 {
        Ok(())
    } else {
        Err(format!(
            "{missing} of {expected} rows missing, {extra} rows extra"
        ))
    }
}
