//! Cluster scenarios: agents (each a log with its own flush loop) over the
//! S3-compatible server and PostgreSQL that `./scripts/test` starts (the
//! same environment variables), in this process.
//!
//! For 1 and 2 agents and for 4 and 64 partitions: PUTs per second per
//! agent at rest (nothing to write) and under load, PostgreSQL transactions
//! per flush (from `pg_stat_database`, so everything the agents did counts:
//! flush commits, heartbeats every 2 s, stream lookups), S3 requests per GB
//! written, and ingest throughput with 8 closed-loop producers per agent
//! appending 10,000-row batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use streamhouse_log::{
    AppendOptions, Log, LogConfig, MetadataStore, PostgresMetadata, Store, StreamSpec, SystemClock,
};

use crate::{Args, Row, batch, schema};

/// How long PostgreSQL's idle backends may hold back their statistics.
const STATS_SETTLE: Duration = Duration::from_secs(11);

/// One measured configuration.
struct Measured {
    agents: usize,
    partitions: u32,
    rest_puts_per_s: f64,
    rows: u64,
    seconds: f64,
    put_bytes: u64,
    puts: u64,
    gets: u64,
    xacts: i64,
}

async fn xacts(admin: &tokio_postgres::Client, db: &str) -> i64 {
    admin
        .query_one(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
            &[&db],
        )
        .await
        .expect("pg_stat_database")
        .get(0)
}

async fn measure(pg: &str, bucket: &str, agents: usize, partitions: u32, rows: usize) -> Measured {
    let (admin, conn) = tokio_postgres::connect(&format!("{pg}/postgres"), tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let db = format!("bench_{stamp}");
    admin
        .simple_query(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create database");
    let url = format!("s3://{bucket}/bench-{stamp}");
    let mut logs: Vec<Arc<Log>> = Vec::new();
    let mut stores = Vec::new();
    for _ in 0..agents {
        let store = Store::open(&url).expect("store");
        let meta: Arc<dyn MetadataStore> = Arc::new(
            PostgresMetadata::connect(&format!("{pg}/{db}"))
                .await
                .expect("metadata"),
        );
        let config = LogConfig::for_store(&store);
        stores.push(store.clone());
        logs.push(Arc::new(Log::open(
            store,
            meta,
            config,
            Arc::new(SystemClock),
        )));
    }
    logs[0]
        .create_stream(StreamSpec::new("bench", schema()).with_partitions(partitions))
        .await
        .expect("create stream");

    // At rest: agents running, nothing to write.
    let puts = |s: &[Store]| s.iter().map(|s| s.stats().puts()).sum::<u64>();
    let before = puts(&stores);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rest_puts_per_s = (puts(&stores) - before) as f64 / 3.0 / agents as f64;

    // Under load: 8 producers per agent, 10,000-row batches spread over the
    // partitions.
    let batch_rows = 10_000;
    let pool: Arc<Vec<RecordBatch>> = Arc::new(
        (0..16)
            .map(|k| batch(k * batch_rows as i64, batch_rows))
            .collect(),
    );
    let batches = rows / batch_rows;
    let producers = 8 * agents;
    let puts_before = puts(&stores);
    let put_bytes_before: u64 = stores.iter().map(|s| s.stats().put_bytes()).sum();
    let gets_before: u64 = stores.iter().map(|s| s.stats().gets()).sum();
    tokio::time::sleep(STATS_SETTLE).await;
    let xacts_before = xacts(&admin, &db).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let log = logs[p % agents].clone();
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = p;
            while i < batches {
                let options = AppendOptions::to_partition((i as u32) % partitions);
                log.append("bench", pool[i % pool.len()].clone(), options)
                    .await
                    .expect("append");
                i += producers;
            }
        }));
    }
    for t in tasks {
        t.await.expect("producer");
    }
    let seconds = started.elapsed().as_secs_f64();
    // Idle backends report their transaction counts up to 10 s late; let
    // them settle (the agents' heartbeats during the wait count).
    tokio::time::sleep(STATS_SETTLE).await;
    let measured = Measured {
        agents,
        partitions,
        rest_puts_per_s,
        rows: (batches * batch_rows) as u64,
        seconds,
        put_bytes: stores.iter().map(|s| s.stats().put_bytes()).sum::<u64>() - put_bytes_before,
        puts: puts(&stores) - puts_before,
        gets: stores.iter().map(|s| s.stats().gets()).sum::<u64>() - gets_before,
        xacts: xacts(&admin, &db).await - xacts_before,
    };
    for log in &logs {
        log.shutdown().await;
    }
    measured
}

pub async fn scenarios(args: &Args) -> Vec<Row> {
    let (Ok(pg), Ok(bucket)) = (
        std::env::var("STREAMHOUSE_TEST_POSTGRES"),
        std::env::var("STREAMHOUSE_TEST_S3_BUCKET"),
    ) else {
        eprintln!(
            "cluster scenarios need STREAMHOUSE_TEST_POSTGRES, STREAMHOUSE_TEST_S3_BUCKET and \
             AWS_ENDPOINT_URL (a PostgreSQL and an S3-compatible server, as ./scripts/test \
             starts them); not run"
        );
        return Vec::new();
    };
    let rows = args.rows.min(2_000_000);
    let mut out = Vec::new();
    let mut lines = Vec::new();
    for agents in [1, 2] {
        for partitions in [4, 64] {
            let m = measure(&pg, &bucket, agents, partitions, rows).await;
            let per_agent_puts = m.puts as f64 / m.seconds / agents as f64;
            // Heartbeats (one transaction per agent every 2 s) in the
            // window: the load plus the settling wait after it.
            let beats = ((m.seconds + STATS_SETTLE.as_secs_f64()) / 2.0 * agents as f64) as i64;
            lines.push(format!(
                "{:>6} {:>10} {:>13.1} {:>13.1} {:>12.2} {:>14.2} {:>13.0} {:>12.0}",
                m.agents,
                m.partitions,
                m.rest_puts_per_s,
                per_agent_puts,
                m.xacts as f64 / m.puts.max(1) as f64,
                (m.xacts - beats) as f64 / m.puts.max(1) as f64,
                (m.puts + m.gets) as f64 / (m.put_bytes as f64 / 1e9),
                m.rows as f64 / m.seconds,
            ));
            out.push(Row {
                scenario: format!("cluster: {agents} agent(s), {partitions} partitions, S3+PG"),
                rows: m.rows,
                seconds: m.seconds,
                bytes: m.rows * (pool_bytes_per_row() as u64),
                latency: None,
                ..Default::default()
            });
        }
    }
    println!();
    println!(
        "{:>6} {:>10} {:>13} {:>13} {:>12} {:>14} {:>13} {:>12}",
        "agents",
        "partitions",
        "PUT/s rest",
        "PUT/s load",
        "PG txn/flush",
        "w/o heartbeat",
        "S3 req/GB",
        "rows/s"
    );
    for l in lines {
        println!("{l}");
    }
    println!("(PUT/s per agent; S3 requests per GB of compressed chunk bytes written)");
    out
}

/// Arrow bytes per row of the benchmark batches.
fn pool_bytes_per_row() -> usize {
    let b = batch(0, 10_000);
    b.get_array_memory_size() / b.num_rows()
}
