//! End to end through arrow-flight's own clients against the real binary:
//! Flight SQL statements and prepared statements with parameters, the
//! producer (DoPut on a stream path) and consumer (DoGet with JSON tickets)
//! APIs, Flight SQL transactions, errors as gRPC codes, and acknowledged
//! rows surviving SIGKILL.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use bytes::Bytes;
use common::Server;
use futures::{StreamExt, TryStreamExt};
use tonic::Code;
use tonic::transport::Channel;

fn flight_uri(server: &Server) -> String {
    let l = server.line("Flight");
    l.split_whitespace()
        .next()
        .unwrap()
        .replace("grpc://", "http://")
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(flight_uri(server))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
    ]))
}

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| format!("n{i}")),
            )),
            Arc::new(Float64Array::from_iter_values(ids.map(|i| i as f64 / 2.0))),
        ],
    )
    .unwrap()
}

fn code(e: &FlightError) -> Code {
    match e {
        FlightError::Tonic(s) => s.code(),
        other => panic!("not a status: {other:?}"),
    }
}

/// Produces batches to a stream; returns the acknowledgements as JSON.
async fn produce(
    client: &mut FlightClient,
    stream: &str,
    batches: Vec<RecordBatch>,
) -> Result<Vec<serde_json::Value>, FlightError> {
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![
            "streams".into(),
            stream.into(),
        ])))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let acks: Vec<_> = client.do_put(data).await?.try_collect().await?;
    Ok(acks
        .iter()
        .map(|a| serde_json::from_slice(&a.app_metadata).unwrap())
        .collect())
}

async fn consume(
    client: &mut FlightClient,
    ticket: serde_json::Value,
) -> Result<Vec<RecordBatch>, FlightError> {
    client
        .do_get(Ticket::new(ticket.to_string()))
        .await?
        .try_collect()
        .await
}

fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_statements_and_prepared_statements() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let mut sql = FlightSqlServiceClient::new(channel(&server).await);

    sql.execute_update(
        "CREATE STREAM t (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION)".into(),
        None,
    )
    .await
    .unwrap();

    // INSERT through a prepared statement: `?` placeholders, several rows
    // bound at once, one run per row; the dataset schema of DML is empty.
    let mut insert = sql
        .prepare(
            "INSERT INTO t (id, name, amount) VALUES (?, ?, ?)".into(),
            None,
        )
        .await
        .unwrap();
    assert!(insert.dataset_schema().unwrap().fields().is_empty());
    let params = insert.parameter_schema().unwrap().clone();
    assert_eq!(
        params
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect::<Vec<_>>(),
        vec![DataType::Int64, DataType::Utf8, DataType::Float64]
    );
    let rows = batch(0..5);
    insert
        .set_parameters(RecordBatch::try_new(Arc::new(params), rows.columns().to_vec()).unwrap())
        .unwrap();
    assert_eq!(insert.execute_update().await.unwrap(), 5);
    insert.close().await.unwrap();

    // A query with `$n` parameters: the exact result schema up front.
    let mut query = sql
        .prepare(
            "SELECT id, name FROM t WHERE id >= $1 ORDER BY id".into(),
            None,
        )
        .await
        .unwrap();
    let ds = query.dataset_schema().unwrap().clone();
    assert_eq!(ds.field(0).name(), "id");
    assert_eq!(ds.field(1).data_type(), &DataType::Utf8);
    let p = Arc::new(query.parameter_schema().unwrap().clone());
    query
        .set_parameters(RecordBatch::try_new(p, vec![Arc::new(Int64Array::from(vec![3]))]).unwrap())
        .unwrap();
    let info = query.execute().await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let got: Vec<RecordBatch> = sql
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(&got), vec![3, 4]);
    assert_eq!(got[0].column(1).as_string::<i32>().value(0), "n3");

    // Plain statements, and errors as status codes with the SQLSTATE.
    assert_eq!(flight_count(&mut sql, "t", None).await, 5);
    let e = sql
        .execute("SELECT * FROM missing".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound);
    assert!(e.to_string().contains("42P01"), "{e}");
    // The type table (JDBC's getTypeInfo), whole and filtered by type.
    for (filter, want) in [(None, 16), (Some(-5), 1)] {
        let info = sql
            .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: filter })
            .await
            .unwrap();
        let got: Vec<RecordBatch> = sql
            .do_get(info.endpoint[0].ticket.clone().unwrap())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let names = got[0].column(0).as_string::<i32>();
        assert_eq!(names.len(), want);
        assert!(names.iter().any(|n| n == Some("bigint")));
    }

    let e = sql
        .prepare("INSERT INTO t VALUES (?, ?, ?, ?)".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
}

/// `SELECT count(*) FROM stream` through Flight SQL, in a transaction or not.
async fn flight_count(
    sql: &mut FlightSqlServiceClient<Channel>,
    stream: &str,
    transaction: Option<Bytes>,
) -> i64 {
    let info = sql
        .execute(format!("SELECT count(*) FROM {stream}"), transaction)
        .await
        .unwrap();
    let got: Vec<RecordBatch> = sql
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    got[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_transactions_span_statements_and_ingest() {
    use arrow_flight::sql::{
        CommandStatementIngest, EndTransaction, TableDefinitionOptions, TableExistsOption,
        TableNotExistOption,
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let mut sql = FlightSqlServiceClient::new(channel(&server).await);
    sql.execute_update(
        "CREATE STREAM t (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION)".into(),
        None,
    )
    .await
    .unwrap();
    sql.execute_update(
        "CREATE STREAM u (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION)".into(),
        None,
    )
    .await
    .unwrap();
    let ingest = |txn: Bytes| CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Fail as i32,
            if_exists: TableExistsOption::Append as i32,
        }),
        table: "u".into(),
        transaction_id: Some(txn),
        ..Default::default()
    };

    let txn = sql.begin_transaction().await.unwrap();
    let n = sql
        .execute_update(
            "INSERT INTO t VALUES (1, 'a', 1.0), (2, 'b', 2.0)".into(),
            Some(txn.clone()),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let rows = futures::stream::iter([Ok(batch(0..3))]);
    assert_eq!(
        sql.execute_ingest(ingest(txn.clone()), rows).await.unwrap(),
        3
    );
    // The transaction sees its writes; others do not, until it commits.
    assert_eq!(flight_count(&mut sql, "t", Some(txn.clone())).await, 2);
    assert_eq!(flight_count(&mut sql, "u", Some(txn.clone())).await, 3);
    assert_eq!(flight_count(&mut sql, "t", None).await, 0);
    assert_eq!(flight_count(&mut sql, "u", None).await, 0);
    let e = sql
        .execute_update("DROP STREAM u".into(), Some(txn.clone()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("25001"), "{e}");
    sql.end_transaction(txn.clone(), EndTransaction::Commit)
        .await
        .unwrap();
    assert_eq!(flight_count(&mut sql, "t", None).await, 2);
    assert_eq!(flight_count(&mut sql, "u", None).await, 3);
    // Ended: the id is gone.
    let e = sql
        .end_transaction(txn.clone(), EndTransaction::Commit)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound);
    let e = sql
        .execute_update("INSERT INTO t VALUES (9, 'z', 0)".into(), Some(txn))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound);

    // Rolled back: nothing of it.
    let txn = sql.begin_transaction().await.unwrap();
    sql.execute_update(
        "INSERT INTO t VALUES (3, 'c', 3.0)".into(),
        Some(txn.clone()),
    )
    .await
    .unwrap();
    let rows = futures::stream::iter([Ok(batch(10..12))]);
    sql.execute_ingest(ingest(txn.clone()), rows).await.unwrap();
    sql.end_transaction(txn, EndTransaction::Rollback)
        .await
        .unwrap();
    assert_eq!(flight_count(&mut sql, "t", None).await, 2);
    assert_eq!(flight_count(&mut sql, "u", None).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_follow_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let mut sql = FlightSqlServiceClient::new(channel(&server).await);
    sql.execute_update(
        "CREATE STREAM s (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION) WITH (partitions = 2)"
            .into(),
        None,
    )
    .await
    .unwrap();
    let mut client = FlightClient::new(channel(&server).await);

    let acks = produce(&mut client, "s", vec![batch(0..10), batch(10..30)])
        .await
        .unwrap();
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0]["rows"], 10);
    assert_eq!(acks[1]["rows"], 20);
    assert_eq!(acks[1]["partitions"][0]["base_offset"], 0);

    let all = consume(&mut client, serde_json::json!({"stream": "s"}))
        .await
        .unwrap();
    assert_eq!(ids(&all), (0..30).collect::<Vec<_>>());
    let schema = all[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "name",
            "amount",
            "_partition",
            "_offset",
            "_timestamp"
        ]
    );

    // Follow: a read that waits for new rows gets them as they commit.
    let mut follower = FlightClient::new(channel(&server).await);
    let mut tail = follower
        .do_get(Ticket::new(
            serde_json::json!({"stream": "s", "from": "latest", "follow": true}).to_string(),
        ))
        .await
        .unwrap();
    produce(&mut client, "s", vec![batch(100..103)])
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("the follower got nothing")
        .unwrap()
        .unwrap();
    assert_eq!(ids(&[next]), vec![100, 101, 102]);
    // The follower goes away mid-stream; the server carries on.
    drop(tail);

    let e = consume(&mut client, serde_json::json!({"stream": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound);
    let e = client
        .do_get(Ticket::new("{\"stream\": 1}"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    let e = consume(
        &mut client,
        serde_json::json!({"stream": "s", "partition": 5}),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&e), Code::OutOfRange);

    // A batch of another schema is refused whole.
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["x"]))],
    )
    .unwrap();
    let e = produce(&mut client, "s", vec![other]).await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    let e = produce(&mut client, "nope", vec![batch(0..1)])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound);

    let all = consume(&mut client, serde_json::json!({"stream": "s"}))
        .await
        .unwrap();
    assert_eq!(all.iter().map(|b| b.num_rows()).sum::<usize>(), 33);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let mut sql = FlightSqlServiceClient::new(channel(&server).await);
    sql.execute_update(
        "CREATE STREAM k (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION) WITH (partitions = 4)"
            .into(),
        None,
    )
    .await
    .unwrap();
    let mut client = FlightClient::new(channel(&server).await);
    let batches: Vec<RecordBatch> = (0..50).map(|i| batch(i * 100..i * 100 + 100)).collect();
    let acks = produce(&mut client, "k", batches).await.unwrap();
    assert_eq!(acks.len(), 50);
    server.signal(libc::SIGKILL);

    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let mut client = FlightClient::new(channel(&server).await);
    let all = consume(&mut client, serde_json::json!({"stream": "k"}))
        .await
        .unwrap();
    assert_eq!(ids(&all), (0..5000).collect::<Vec<_>>());
    let offsets = all.iter().map(|b| b.column(4).len()).sum::<usize>();
    assert_eq!(offsets, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_through_flight_sql_streams_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let mut sql = FlightSqlServiceClient::new(channel(&server).await);
    for stmt in [
        "CREATE STREAM sub (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION)",
        "INSERT INTO sub VALUES (1, 'a', 1), (2, 'b', 2), (3, 'a', 3)",
        "CREATE MATERIALIZED VIEW by_name AS SELECT name, count(*) AS n FROM sub GROUP BY name",
    ] {
        sql.execute_update(stmt.into(), None).await.unwrap();
    }
    // The statement's schema comes first; its DoGet streams until dropped.
    let info = sql
        .execute("SUBSCRIBE TO by_name".into(), None)
        .await
        .unwrap();
    let names: Vec<String> = info
        .clone()
        .try_decode_schema()
        .unwrap()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["op", "name", "n"]);
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut rows = sql.do_get(ticket).await.unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut inserted = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 {
        let next = tokio::time::timeout_at(deadline, rows.next())
            .await
            .expect("changes within 20 s")
            .expect("stream open")
            .unwrap();
        for i in 0..next.num_rows() {
            seen.push(format!(
                "{} {} {}",
                next.column(0).as_string::<i32>().value(i),
                next.column(1).as_string::<i32>().value(i),
                next.column(2).as_primitive::<Int64Type>().value(i)
            ));
        }
        if seen.len() >= 2 && !inserted {
            // A change while the subscription is open.
            let mut other = FlightSqlServiceClient::new(channel(&server).await);
            other
                .execute_update("INSERT INTO sub VALUES (4, 'b', 4)".into(), None)
                .await
                .unwrap();
            inserted = true;
        }
    }
    seen[..2].sort();
    assert_eq!(
        seen,
        ["insert a 2", "insert b 1", "delete b 1", "insert b 2"]
    );
    drop(rows);
    // The server goes on.
    let info = sql
        .execute("SELECT count(*) FROM sub".into(), None)
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1);
}

/// A compressed IPC buffer declares its uncompressed length, and the
/// decoder allocated that much at once: a DoPut naming a terabyte reserved
/// a terabyte (and answered INTERNAL), one naming 2^62 bytes panicked the
/// call and broke the connection. Such messages, and one whose buffers lie
/// past its body, are refused with INVALID_ARGUMENT; compressed batches that
/// tell the truth still go in, and the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_ipc_buffers_are_refused_and_the_server_goes_on() {
    use arrow::ipc::writer::IpcWriteOptions;
    use arrow::ipc::{CompressionType, root_as_message};
    use arrow_flight::FlightData;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let mut sql = FlightSqlServiceClient::new(channel(&server).await);
    sql.execute_update(
        "CREATE STREAM z (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION)".into(),
        None,
    )
    .await
    .unwrap();
    let encode = |batches: Vec<RecordBatch>| async move {
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .unwrap();
        FlightDataEncoderBuilder::new()
            .with_options(options)
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![
                "streams".into(),
                "z".into(),
            ])))
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .try_collect::<Vec<FlightData>>()
            .await
            .unwrap()
    };
    // The first buffer of the batch message with at least 8 bytes.
    let first_buffer = |d: &FlightData| {
        let m = root_as_message(&d.data_header).ok()?;
        let b = m.header_as_record_batch()?;
        let found = b.buffers()?.iter().find(|b| b.length() >= 8)?;
        Some((found.offset() as usize, found.length() as usize))
    };
    let mut client = FlightClient::new(channel(&server).await);
    let tamper = |mut messages: Vec<FlightData>, how: &dyn Fn(&mut Vec<u8>, usize, usize)| {
        for d in messages.iter_mut() {
            if let Some((offset, length)) = first_buffer(d) {
                let mut body = d.data_body.to_vec();
                how(&mut body, offset, length);
                d.data_body = body.into();
            }
        }
        messages
    };
    let terabyte = tamper(encode(vec![batch(0..100)]).await, &|body, offset, _| {
        body[offset..offset + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    });
    let exabytes = tamper(encode(vec![batch(0..100)]).await, &|body, offset, _| {
        body[offset..offset + 8].copy_from_slice(&(1i64 << 62).to_le_bytes());
    });
    let truncated = tamper(encode(vec![batch(0..100)]).await, &|body, offset, _| {
        body.truncate(offset + 4);
    });
    for (what, messages) in [
        ("terabyte", terabyte),
        ("exabytes", exabytes),
        ("truncated", truncated),
    ] {
        let e = async {
            let acks: Vec<_> = client
                .do_put(futures::stream::iter(messages.into_iter().map(Ok)))
                .await?
                .try_collect()
                .await?;
            Ok::<_, FlightError>(acks)
        }
        .await
        .expect_err(what);
        assert_eq!(code(&e), Code::InvalidArgument, "{what}: {e}");
        assert!(
            e.to_string().contains("bad Arrow IPC message"),
            "{what}: {e}"
        );
    }
    // Honest compressed batches are taken, and nothing of the others was.
    let honest = encode(vec![batch(0..100), batch(100..150)]).await;
    let acks: Vec<_> = client
        .do_put(futures::stream::iter(honest.into_iter().map(Ok)))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(acks.len(), 2);
    let all = consume(&mut client, serde_json::json!({"stream": "z"}))
        .await
        .unwrap();
    assert_eq!(ids(&all), (0..150).collect::<Vec<_>>());
}
