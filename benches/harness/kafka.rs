//! Kafka scenarios: produce and consume throughput and produce-to-consume
//! latency through librdkafka (confluent-kafka, `benches/kafka_clients.py`
//! in the test venv) against the Kafka door served in this process on
//! loopback. The clients run in their own process, so this process's CPU
//! time is the server's: rows per CPU-second say what the server does per
//! core, whatever the clients manage.

use streamhouse_log::DataDir;

use crate::{Args, Row, cpu_seconds};

async fn kafka_server(dir: &std::path::Path) -> (DataDir, String) {
    let (dd, _log, db) = crate::open_database(dir).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(streamhouse_kafka::serve(
        listener,
        db,
        streamhouse_kafka::KafkaConfig::default(),
        std::future::pending(),
    ));
    (dd, addr.to_string())
}

/// Runs the client script; its `result` line, or why it could not run.
async fn client(
    python: &str,
    what: &str,
    addr: &str,
    records: usize,
) -> Result<serde_json::Value, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/kafka_clients.py");
    let mut command = std::process::Command::new(python);
    command.args([script, what, addr, &records.to_string()]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or_else(|| {
            format!(
                "{what} did not finish: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )
        })
}

pub async fn scenarios(args: &Args) -> Vec<Row> {
    let python = crate::bench_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_dd, addr) = kafka_server(dir.path()).await;
    let records = args.rows.min(2_000_000);
    let mut rows = Vec::new();
    let cpu = cpu_seconds();
    match client(&python, "throughput", &addr, records).await {
        Ok(r) => {
            let n = r["records"].as_u64().unwrap_or(0);
            let (p, c) = (
                r["produce_seconds"].as_f64().unwrap_or(f64::NAN),
                r["consume_seconds"].as_f64().unwrap_or(f64::NAN),
            );
            let server_cpu = cpu_seconds() - cpu;
            let note = format!(
                "MB/s of 100-byte records; one Python librdkafka process each way; the \
                 server used {server_cpu:.2} CPU-s for both"
            );
            rows.push(Row {
                scenario: "kafka produce acks=all 100 B (librdkafka)".into(),
                rows: n,
                seconds: p,
                bytes: n * 100,
                note: Some(note),
                ..Default::default()
            });
            rows.push(Row {
                scenario: "kafka consume from the start (librdkafka)".into(),
                rows: n,
                seconds: c,
                bytes: n * 100,
                ..Default::default()
            });
        }
        Err(why) => eprintln!("Kafka throughput skipped: {why} (run ./scripts/setup for the venv)"),
    }
    match client(&python, "latency", &addr, 5_000).await {
        Ok(r) => rows.push(Row {
            scenario: "kafka produce-to-consume, a record a ms".into(),
            rows: r["records"].as_u64().unwrap_or(0),
            seconds: 5.0,
            latency: Some((
                r["p50_ms"].as_f64().unwrap_or(f64::NAN),
                r["p99_ms"].as_f64().unwrap_or(f64::NAN),
            )),
            ..Default::default()
        }),
        Err(why) => eprintln!("Kafka latency skipped: {why}"),
    }
    rows
}
