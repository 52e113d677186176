//! Kill -9 while appends are in flight: everything acknowledged must be
//! readable after restart, and offsets must continue densely.
//!
//! The test re-runs its own binary as the writer process (the child role is
//! chosen by an environment variable), reads the child's acknowledgements
//! from its stdout, SIGKILLs it mid-stream, then reopens the same data.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common::{collect, i64s, orders, orders_schema};
use streamhouse_log::{
    AppendOptions, DataDir, Log, LogConfig, SqliteMetadata, Store, StreamSpec, SystemClock,
};

const CHILD_DIR: &str = "SH_CRASH_CHILD_DIR";
const CHILD_STORE: &str = "SH_CRASH_CHILD_STORE";
const PARTITIONS: u32 = 4;
const ROWS: i64 = 100;

/// Opens the log the way the child does. `store_url` empty: embedded defaults.
async fn open(dir: &std::path::Path, store_url: &str) -> (Log, Option<DataDir>) {
    if store_url.is_empty() {
        let dd = DataDir::open(dir).unwrap();
        let log = dd.open_log().await.unwrap();
        (log, Some(dd))
    } else {
        let store = Store::open(store_url).unwrap();
        let meta = Arc::new(
            SqliteMetadata::open(&dir.join("metadata.db"))
                .await
                .unwrap(),
        );
        let config = LogConfig::for_store(&store);
        (Log::open(store, meta, config, Arc::new(SystemClock)), None)
    }
}

/// The writer process: appends forever from 4 tasks, printing each ack.
async fn child(dir: String, store_url: String) {
    let (log, _dd) = open(dir.as_ref(), &store_url).await;
    let log = Arc::new(log);
    log.create_stream(StreamSpec::new("crash", orders_schema()).with_partitions(PARTITIONS))
        .await
        .unwrap();
    let next = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (log, next) = (log.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(ROWS, Ordering::SeqCst);
                let ack = log
                    .append(
                        "crash",
                        orders(first..first + ROWS, 17, 0),
                        AppendOptions::default(),
                    )
                    .await
                    .unwrap();
                let p = ack.parts[0];
                println!("ACK {} {} {} {}", p.partition, p.base_offset, p.rows, first);
            }
        }));
    }
    // The writers run until the parent kills this process.
    futures::future::join_all(tasks).await;
}

async fn crash_and_recover(test_name: &str, store_url: String) {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        return child(dir, std::env::var(CHILD_STORE).unwrap_or_default()).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_STORE, &store_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    let mut acks: Vec<(u32, u64, u64, i64)> = Vec::new();
    while acks.len() < 300 {
        let line = lines.next().expect("writer ended early").unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            let v: Vec<&str> = rest.split(' ').collect();
            acks.push((
                v[0].parse().unwrap(),
                v[1].parse().unwrap(),
                v[2].parse().unwrap(),
                v[3].parse().unwrap(),
            ));
        }
    }
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();
    // Acks printed before the kill but not yet read count too.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let v: Vec<&str> = rest.split(' ').collect();
            if v.len() == 4 {
                acks.push((
                    v[0].parse().unwrap(),
                    v[1].parse().unwrap(),
                    v[2].parse().unwrap(),
                    v[3].parse().unwrap(),
                ));
            }
        }
    }

    let (log, _dd) = open(dir.path(), &store_url).await;
    if store_url.is_empty() {
        past_start_is_stopped(&log).await;
    }
    let ends = log.partition_ends("crash").await.unwrap();
    for &(p, base, rows, first) in &acks {
        assert!(
            base + rows <= ends[p as usize],
            "acked offsets {base}+{rows} beyond end of partition {p}"
        );
        let got = collect(log.read("crash", p, base..base + rows, None).await.unwrap()).await;
        assert_eq!(
            i64s(&got, "id"),
            (first..first + rows as i64).collect::<Vec<_>>(),
            "ack {p}/{base} lost"
        );
    }
    let mut seen = HashSet::new();
    for p in 0..PARTITIONS {
        let all = collect(log.read("crash", p, 0..u64::MAX, None).await.unwrap()).await;
        let offsets = i64s(&all, "_offset");
        assert_eq!(offsets.len() as u64, ends[p as usize]);
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "dense offsets"
        );
        for id in i64s(&all, "id") {
            assert!(seen.insert(id), "row {id} stored twice");
        }
        // Offsets continue where the crashed process left them.
        let ack = log
            .append(
                "crash",
                orders(-ROWS..0, 3, 0),
                AppendOptions::to_partition(p),
            )
            .await
            .unwrap();
        assert_eq!(ack.parts[0].base_offset, ends[p as usize]);
    }
    log.shutdown().await;
}

/// In a data directory (no other agent), the killed start's registration
/// is marked stopped as the log opens: the restart does not count it live
/// (nor hand it work) until its last heartbeat ages out.
async fn past_start_is_stopped(log: &Log) {
    let me = log.agent().id();
    let deadline = streamhouse_log::monotonic() + std::time::Duration::from_secs(10);
    loop {
        let agents = log.metadata().agents().await.unwrap();
        assert!(
            agents.iter().any(|a| a.id != me),
            "the killed start registered"
        );
        if agents.iter().all(|a| a.id == me || a.stopped_at.is_some()) {
            return;
        }
        assert!(streamhouse_log::monotonic() < deadline, "{agents:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_local_directory() {
    crash_and_recover("sigkill_local_directory", String::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_s3() {
    let url = if std::env::var(CHILD_DIR).is_ok() {
        String::new()
    } else {
        common::s3_url()
    };
    crash_and_recover("sigkill_s3", url).await;
}
