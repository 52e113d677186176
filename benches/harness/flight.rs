//! Flight scenarios: the producer API (`DoPut` on `["streams", name]`),
//! the consumer API (`DoGet` with a JSON ticket), and the latency from a
//! produce call to a following consumer receiving the rows — all through
//! arrow-flight's client against a server in this process on loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use streamhouse_log::{DataDir, Log};
use tonic::transport::Channel;

use crate::{Args, Row, batch, schema};

async fn flight_server(dir: &std::path::Path, as_user: bool) -> (DataDir, Arc<Log>, String) {
    let dd = DataDir::open(dir).expect("data dir");
    let log = Arc::new(dd.open_log().await.expect("log"));
    let db = Arc::new(
        streamhouse_sql::Database::open(log.clone())
            .await
            .expect("database"),
    );
    crate::prepare(&log, &db, as_user).await;
    let uri = listen(db, as_user).await;
    (dd, log, uri)
}

async fn listen(db: Arc<streamhouse_sql::Database>, as_user: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = streamhouse_flight::FlightConfig {
        require_password: as_user,
        ..Default::default()
    };
    tokio::spawn(streamhouse_flight::serve(
        listener,
        db,
        config,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// A Flight server for `db` on loopback, without passwords; its URI.
pub async fn serve(db: Arc<streamhouse_sql::Database>) -> String {
    listen(db, false).await
}

/// `clients` producers, each sending `per_client` 100-row batches, one
/// `DoPut` call after another: each call's time to its acknowledgement,
/// in µs.
pub async fn put_latencies(uri: &str, clients: usize, per_client: usize) -> Histogram<u64> {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let uri = uri.to_string();
            tokio::spawn(async move {
                let mut client = connect(&uri, false).await;
                let mut hist = Histogram::<u64>::new(3).expect("histogram");
                for k in 0..per_client {
                    let first = 2_000_000_000 + ((c * per_client + k) * 100) as i64;
                    let started = Instant::now();
                    let acks = put(
                        &mut client,
                        "bench",
                        schema(),
                        futures::stream::iter([batch(first, 100)]),
                    )
                    .await;
                    assert_eq!(acks, 1);
                    hist.record(started.elapsed().as_micros() as u64)
                        .expect("record");
                }
                hist
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        all.add(t.await.expect("producer")).expect("merge");
    }
    all
}

pub async fn client(uri: &str) -> FlightClient {
    let channel = Channel::from_shared(uri.to_string())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    FlightClient::new(channel)
}

/// A client; with `as_user`, logged in as the benchmark user (Basic
/// credentials for a bearer token that every later call carries).
async fn connect(uri: &str, as_user: bool) -> FlightClient {
    use base64::Engine;
    let mut c = client(uri).await;
    if as_user {
        let (user, password) = crate::BENCH_USER;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        c.add_header("authorization", &format!("Basic {basic}"))
            .expect("header");
        let token = c.handshake(bytes::Bytes::new()).await.expect("handshake");
        let token = String::from_utf8(token.to_vec()).expect("token");
        c.add_header("authorization", &format!("Bearer {token}"))
            .expect("header");
    }
    c
}

fn descriptor() -> Option<FlightDescriptor> {
    Some(FlightDescriptor::new_path(vec![
        "streams".into(),
        "bench".into(),
    ]))
}

/// Produces `batches` into `stream` in one `DoPut` call; how many batches
/// were acknowledged (each once durable).
pub async fn put(
    client: &mut FlightClient,
    stream: &str,
    schema: arrow::datatypes::SchemaRef,
    batches: impl futures::Stream<Item = arrow::array::RecordBatch> + Send + 'static,
) -> usize {
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![
            "streams".into(),
            stream.into(),
        ])))
        .build(batches.map(Ok));
    let acks: Vec<_> = client
        .do_put(data)
        .await
        .expect("do_put")
        .try_collect()
        .await
        .expect("acknowledgements");
    acks.len()
}

/// The Flight scenarios, on one fresh data directory.
pub async fn scenarios(args: &Args) -> Vec<Row> {
    let mut rows = Vec::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_dd, log, uri) = flight_server(tmp.path(), args.as_user).await;
    let as_user = args.as_user;
    let batch_rows = 10_000usize;
    let bytes_per_row = batch(0, batch_rows).get_array_memory_size() as u64 / batch_rows as u64;

    // DoPut ingest: 2 producers, each one DoPut call streaming batches of
    // 10,000 rows, acknowledged per batch once durable.
    let producers = 2usize;
    let per_producer = args.rows / producers / batch_rows;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&uri, as_user).await;
            let first = (p * per_producer * batch_rows) as i64;
            let batches = futures::stream::iter(0..per_producer)
                .map(move |k| batch(first + (k * batch_rows) as i64, batch_rows));
            let acks = put(&mut c, "bench", schema(), batches).await;
            assert_eq!(acks, per_producer);
        }));
    }
    for t in tasks {
        t.await.expect("producer");
    }
    let secs = start.elapsed().as_secs_f64();
    let n = (producers * per_producer * batch_rows) as u64;
    eprintln!("flight DoPut: {:.0} rows/s", n as f64 / secs);
    rows.push(Row {
        scenario: format!("flight DoPut {batch_rows}-row batches x{producers}"),
        rows: n,
        seconds: secs,
        bytes: n * bytes_per_row,
        latency: None,
        ..Default::default()
    });

    // DoGet consume: every partition from the earliest offset, one call.
    for label in [
        "flight DoGet consume, all partitions",
        "flight DoGet consume, again",
    ] {
        let mut c = connect(&uri, as_user).await;
        let start = Instant::now();
        let mut got = 0u64;
        let mut s = c
            .do_get(Ticket::new(r#"{"stream": "bench", "from": "earliest"}"#))
            .await
            .expect("do_get");
        while let Some(b) = s.next().await {
            got += b.expect("batch").num_rows() as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(got, n);
        eprintln!("{label}: {:.0} rows/s", got as f64 / secs);
        rows.push(Row {
            scenario: label.into(),
            rows: got,
            seconds: secs,
            bytes: got * bytes_per_row,
            latency: None,
            ..Default::default()
        });
    }

    let batches = 1_000usize;
    let small = 100usize;
    let (hist, secs) = follow_latencies_as(&uri, as_user, batches).await;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    eprintln!(
        "flight produce->consume latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
    rows.push(Row {
        scenario: "flight produce->follow latency (100 rows/5ms)".into(),
        rows: (batches * small) as u64,
        seconds: secs,
        bytes: (batches * small) as u64 * bytes_per_row,
        latency: Some((ms(0.5), ms(0.99))),
        ..Default::default()
    });
    log.shutdown().await;
    rows
}

/// Produce → consume: a follower from the tail; a producer sends `batches`
/// 100-row batches, one every 5 ms; each batch's time from its send to the
/// follower's receipt of its rows, in µs.
pub async fn follow_latencies(uri: &str, batches: usize) -> Histogram<u64> {
    follow_latencies_as(uri, false, batches).await.0
}

async fn follow_latencies_as(uri: &str, as_user: bool, batches: usize) -> (Histogram<u64>, f64) {
    let uri = uri.to_string();
    let sent: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let mut follower = connect(&uri, as_user).await;
    let mut tail = follower
        .do_get(Ticket::new(
            r#"{"stream": "bench", "from": "latest", "follow": true}"#,
        ))
        .await
        .expect("follow");
    let small = 100usize;
    let base = 1_000_000_000i64;
    let producer = {
        let uri = uri.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut c = connect(&uri, as_user).await;
            let (tx, rx) = futures::channel::mpsc::unbounded();
            let data = FlightDataEncoderBuilder::new()
                .with_schema(schema())
                .with_flight_descriptor(descriptor())
                .build(rx);
            let acks = tokio::spawn(async move {
                c.do_put(data)
                    .await
                    .expect("do_put")
                    .try_collect::<Vec<_>>()
                    .await
                    .expect("acks")
                    .len()
            });
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for k in 0..batches {
                tick.tick().await;
                let first = base + (k * small) as i64;
                sent.lock().unwrap().insert(first, Instant::now());
                tx.unbounded_send(Ok(batch(first, small))).expect("send");
            }
            drop(tx);
            acks.await.expect("acks")
        })
    };
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let start = Instant::now();
    let mut seen = 0usize;
    while seen < batches * small {
        let b = tail.next().await.expect("tail ended").expect("batch");
        let now = Instant::now();
        let ids = b.column(0).as_primitive::<Int64Type>();
        for i in 0..ids.len() {
            let id = ids.value(i);
            if (id - base) % small as i64 == 0
                && let Some(t) = sent.lock().unwrap().get(&id)
            {
                hist.record(now.duration_since(*t).as_micros() as u64)
                    .expect("record");
            }
        }
        seen += b.num_rows();
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(producer.await.expect("producer"), batches);
    (hist, secs)
}
