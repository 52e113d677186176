//! Console scenario: how long each page of the web console takes to
//! become usable with 100 streams (one of 10 M rows) and 10 views.
//!
//! The 10 M rows are appended in this process; then the `streamhouse`
//! binary serves the same data directory, 99 more streams and 10 views
//! are created through its PostgreSQL door, and `benches/console_pages.py`
//! times the pages in Debian's headless Chromium. Each page's row gives
//! the median and the worst of its runs, in milliseconds.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use crate::{Args, Row};

/// Rows of the stream the message browser opens.
const BIG_ROWS: usize = 10_000_000;
/// Times each page is shown.
const RUNS: usize = 5;

/// The server binary on `dir`, killed when dropped.
struct Server {
    child: Child,
    http: String,
    pg: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Result<Server, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamhouse"))
        .args(["server", "--data-dir"])
        .arg(dir)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--pg-addr",
            "127.0.0.1:0",
            "--flight-addr",
            "127.0.0.1:0",
            "--kafka-addr",
            "127.0.0.1:0",
        ])
        .env_remove("STREAMHOUSE_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("streamhouse: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (mut http, mut pg) = (None, None);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let line = line.trim();
        if line.starts_with("HTTP admin") {
            http = line
                .split_whitespace()
                .nth(2)
                .and_then(|u| u.split_once("://"))
                .map(|(_, a)| a.to_string());
        }
        if line.starts_with("PostgreSQL") {
            pg = line.split('"').nth(1).map(str::to_string);
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    match (http, pg) {
        (Some(http), Some(pg)) => Ok(Server { child, http, pg }),
        _ => {
            let _ = child.kill();
            Err("the server did not print its addresses".into())
        }
    }
}

async fn prepare(dir: &std::path::Path) -> Result<Server, String> {
    let (dd, log) = crate::fresh(dir, 4).await;
    let (row, _) = crate::append(log.clone(), BIG_ROWS, 100_000, 4).await;
    eprintln!(
        "console: {} rows appended in {:.1} s",
        row.rows, row.seconds
    );
    log.shutdown().await;
    drop(log);
    drop(dd);
    let server = start(dir)?;
    let (client, connection) = tokio_postgres::connect(&server.pg, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    for i in 1..100 {
        client
            .batch_execute(&format!(
                "CREATE STREAM s{i:03} (id BIGINT, name TEXT, at TIMESTAMPTZ) WITH (partitions = 2); \
                 INSERT INTO s{i:03} VALUES ({i}, 'n{i}', now())"
            ))
            .await
            .map_err(|e| e.to_string())?;
    }
    for v in 0..10 {
        client
            .batch_execute(&format!(
                "CREATE MATERIALIZED VIEW v{v} AS SELECT name, count(*) AS n FROM s{:03} GROUP BY name",
                v + 1
            ))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(server)
}

pub async fn scenarios(_args: &Args) -> Vec<Row> {
    let skipped = |why: String| {
        vec![Row {
            scenario: "console pages".into(),
            note: Some(format!("did not run: {why}")),
            ..Default::default()
        }]
    };
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return skipped("no /usr/bin/chromium (scripts/setup installs it)".into());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = match prepare(dir.path()).await {
        Ok(s) => s,
        Err(e) => return skipped(e),
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/console_pages.py");
    let mut command = Command::new(crate::bench_python());
    command.args([script, &server.http, "bench", "v0", &RUNS.to_string()]);
    let out = match tokio::task::spawn_blocking(move || command.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return skipped(e.to_string()),
        Err(e) => return skipped(e.to_string()),
    };
    drop(server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(result) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
    else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return skipped(stderr.lines().last().unwrap_or("no result").to_string());
    };
    let mut rows = Vec::new();
    for (page, times) in result.as_object().into_iter().flatten() {
        let mut ms: Vec<f64> = times
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_f64())
            .collect();
        ms.sort_by(f64::total_cmp);
        let (Some(median), Some(worst)) = (ms.get(ms.len() / 2), ms.last()) else {
            continue;
        };
        rows.push(Row {
            scenario: format!("console page usable: {page}"),
            rows: ms.len() as u64,
            seconds: ms.iter().sum::<f64>() / 1000.0,
            latency: Some((*median, *worst)),
            note: Some("100 streams, 10 views; p50 = median, p99 = worst of the runs, ms".into()),
            ..Default::default()
        });
    }
    rows
}
