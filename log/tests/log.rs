//! The log's behaviour through its public API, against every object-store
//! backend: in-memory, a local directory, and a real S3-compatible server.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimestampMicrosecondType};
use common::{Backend, Fixture, collect, i64s, orders, orders_schema};
use streamhouse_log::{
    AppendOptions, ErrorKind, LogError, ProducerSeq, SchemaChange, StreamKind, StreamSpec,
    TimeFilter,
};

const T0: i64 = 1_700_000_000_000_000;

fn spec(name: &str, partitions: u32) -> StreamSpec {
    StreamSpec::new(name, orders_schema())
        .with_partitions(partitions)
        .with_key(["user"])
        .with_event_time("ts", Duration::from_secs(5))
}

async fn read_all(f: &Fixture, stream: &str, partition: u32) -> Vec<RecordBatch> {
    collect(
        f.log
            .read(stream, partition, 0..u64::MAX, None)
            .await
            .unwrap(),
    )
    .await
}

async fn round_trip_by_key(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("orders", 4)).await.unwrap();
    let mut acked = 0;
    for i in 0..5 {
        let ack = f
            .log
            .append(
                "orders",
                orders(i * 200..(i + 1) * 200, 13, T0),
                AppendOptions::default(),
            )
            .await
            .unwrap();
        assert!(!ack.duplicate);
        acked += ack.rows();
    }
    assert_eq!(acked, 1000);

    let mut ids = Vec::new();
    let mut user_partition = BTreeMap::new();
    for p in 0..4 {
        let batches = read_all(&f, "orders", p).await;
        let offsets = i64s(&batches, "_offset");
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "dense from 0"
        );
        for b in &batches {
            assert_eq!(b.num_columns(), 8, "declared + 3 system columns");
            let parts = b
                .column_by_name("_partition")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int32Type>();
            assert!(parts.values().iter().all(|&x| x as u32 == p));
            let ts = b
                .column_by_name("_timestamp")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            assert!(
                ts.values().iter().all(|&t| t == T0),
                "append time from the injected clock"
            );
            for u in b.column_by_name("user").unwrap().as_string::<i32>().iter() {
                let prev = user_partition.insert(u.unwrap().to_string(), p);
                assert!(
                    prev.is_none() || prev == Some(p),
                    "a key lives in one partition"
                );
            }
        }
        ids.extend(i64s(&batches, "id"));
    }
    ids.sort();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>(), "every row exactly once");
    assert_eq!(user_partition.len(), 13);
}

async fn concurrent_appenders_get_dense_unique_offsets(b: Backend) {
    let f = Arc::new(Fixture::new(b).await);
    f.log.create_stream(spec("c", 1)).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8i64 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..10i64 {
                let first = (t * 10 + i) * 50;
                let ack = f
                    .log
                    .append(
                        "c",
                        orders(first..first + 50, 5, T0),
                        AppendOptions::to_partition(0),
                    )
                    .await
                    .unwrap();
                acks.push((ack.parts[0].base_offset, first));
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.unwrap());
    }
    acks.sort();
    let bases: Vec<u64> = acks.iter().map(|a| a.0).collect();
    assert_eq!(
        bases,
        (0..80).map(|i| i * 50).collect::<Vec<_>>(),
        "unique, dense, no overlap"
    );
    // Each acknowledged range holds exactly that append's rows.
    let batches = read_all(&f, "c", 0).await;
    let ids = i64s(&batches, "id");
    for (base, first) in acks {
        let got = &ids[base as usize..base as usize + 50];
        assert_eq!(got, (first..first + 50).collect::<Vec<_>>().as_slice());
    }
}

async fn one_put_per_flush(b: Backend) {
    let f = Arc::new(
        Fixture::with_config(b, |c| c.flush.flush_interval = Duration::from_millis(500)).await,
    );
    f.log
        .create_stream(spec("a", 16).with_key(Vec::<String>::new()))
        .await
        .unwrap();
    f.log
        .create_stream(spec("b", 8).with_key(Vec::<String>::new()))
        .await
        .unwrap();
    let before = f.store.stats().puts();
    let mut tasks = Vec::new();
    for (stream, parts) in [("a", 16u32), ("b", 8)] {
        for p in 0..parts {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                f.log
                    .append(stream, orders(0..10, 3, T0), AppendOptions::to_partition(p))
                    .await
                    .unwrap()
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().rows(), 10);
    }
    assert_eq!(
        f.store.stats().puts() - before,
        1,
        "24 partitions of 2 streams, one PUT"
    );
    let objects: HashSet<String> = {
        let a = f.log.stream("a").await.unwrap();
        let mut set = HashSet::new();
        for p in 0..16 {
            for c in f
                .log
                .metadata()
                .chunks_by_offset(a.id, p, 0..u64::MAX)
                .await
                .unwrap()
            {
                set.insert(c.object);
            }
        }
        set
    };
    assert_eq!(objects.len(), 1);
}

async fn failed_put_fails_append_without_gap(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("f", 2)).await.unwrap();
    f.faults.fail_next_puts(1);
    let err = f
        .log
        .append("f", orders(0..100, 7, T0), AppendOptions::to_partition(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("injected PUT failure"), "{err}");
    assert_eq!(
        f.log.partition_ends("f").await.unwrap(),
        [0, 0],
        "nothing visible"
    );
    assert!(read_all(&f, "f", 1).await.is_empty());

    let ack = f
        .log
        .append("f", orders(100..150, 7, T0), AppendOptions::to_partition(1))
        .await
        .unwrap();
    assert_eq!(
        ack.parts[0].base_offset, 0,
        "no offset was consumed by the failure"
    );
    assert_eq!(
        i64s(&read_all(&f, "f", 1).await, "id"),
        (100..150).collect::<Vec<_>>()
    );
}

/// A create that landed but whose answer was lost is retried by the store
/// client and answered "already exists": the append still succeeds, once.
/// An object under the key with other bytes stays an error.
async fn a_lost_put_answer_is_not_a_failed_append(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("l", 1)).await.unwrap();
    f.faults.lose_next_put_answers(1);
    let ack = f
        .log
        .append("l", orders(0..100, 7, T0), AppendOptions::to_partition(0))
        .await
        .unwrap();
    assert_eq!(ack.parts[0].base_offset, 0);
    assert_eq!(f.log.partition_ends("l").await.unwrap(), [100]);
    assert_eq!(
        i64s(&read_all(&f, "l", 0).await, "id"),
        (0..100).collect::<Vec<_>>()
    );

    let path = object_store::path::Path::from("elsewhere/one");
    f.store
        .put_durable(&path, bytes::Bytes::from_static(b"first"))
        .await
        .unwrap();
    f.faults.lose_next_put_answers(1);
    f.store
        .put_durable(
            &object_store::path::Path::from("elsewhere/two"),
            bytes::Bytes::from_static(b"same"),
        )
        .await
        .unwrap();
    let err = f
        .store
        .put_durable(&path, bytes::Bytes::from_static(b"second"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::ObjectStore(object_store::Error::AlreadyExists { .. })
        ),
        "{err}"
    );
    assert_eq!(f.store.get(&path).await.unwrap(), &b"first"[..]);
}

/// A create cut off mid-request (a connection reset, before or after the
/// object landed) is not resent by the store client, being create-only; the
/// log sends it again, and the append succeeds, once.
async fn a_put_cut_off_mid_request_is_sent_again(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("c", 1)).await.unwrap();
    f.faults.cut_next_puts(2);
    let ack = f
        .log
        .append("c", orders(0..100, 7, T0), AppendOptions::to_partition(0))
        .await
        .unwrap();
    assert_eq!(ack.parts[0].base_offset, 0);
    assert_eq!(
        f.faults.cut_puts.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    f.log
        .append("c", orders(100..150, 7, T0), AppendOptions::to_partition(0))
        .await
        .unwrap();
    assert_eq!(f.log.partition_ends("c").await.unwrap(), [150]);
    assert_eq!(
        i64s(&read_all(&f, "c", 0).await, "id"),
        (0..150).collect::<Vec<_>>()
    );
}

async fn bad_input_gets_typed_errors_and_writes_nothing(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("s", 2)).await.unwrap();
    let puts = f.store.stats().puts();

    // Durations stored as i64 microseconds: one that would wrap (a
    // retention of 300,000 years read back as 0 expired every chunk) or a
    // zero retention is refused.
    let ages = Duration::from_secs(300_000 * 365 * 86_400);
    for bad in [
        spec("r", 1).with_retention(ages),
        spec("r", 1).with_retention(Duration::ZERO),
        spec("r", 1).with_event_time("ts", ages),
    ] {
        let e = f.log.create_stream(bad).await.unwrap_err();
        assert!(matches!(e, LogError::InvalidSpec(_)), "{e}");
    }

    let e = f
        .log
        .append("nope", orders(0..1, 1, T0), AppendOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, LogError::UnknownStream(s) if s == "nope"),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let e = f
        .log
        .append("s", orders(0..1, 1, T0), AppendOptions::to_partition(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            LogError::PartitionOutOfRange {
                partition: 2,
                partitions: 2,
                ..
            }
        ),
        "{e}"
    );

    // Wrong type.
    let wrong = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
    let bad = RecordBatch::try_new(wrong, vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
    let e = f
        .log
        .append("s", bad, AppendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::SchemaMismatch { .. }), "{e}");
    assert!(e.to_string().contains("expected 5 columns"), "{e}");

    // Right names, one type off.
    let good = orders(0..3, 1, T0);
    let mut fields: Vec<Field> = orders_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[3] = Field::new("amount", DataType::Int64, true);
    let mut cols = good.columns().to_vec();
    cols[3] = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let e = f
        .log
        .append("s", bad, AppendOptions::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("column \"amount\" has type Int64"),
        "{e}"
    );

    // NULL in a NOT NULL column.
    let mut fields: Vec<Field> = orders_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[0] = Field::new("id", DataType::Int64, true);
    let mut cols = good.columns().to_vec();
    cols[0] = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
    let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let e = f
        .log
        .append("s", bad, AppendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::SchemaMismatch { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);

    assert_eq!(f.store.stats().puts(), puts, "nothing was written");
    assert_eq!(f.log.partition_ends("s").await.unwrap(), [0, 0]);

    let e = f.log.create_stream(spec("s", 1)).await.unwrap_err();
    assert!(matches!(e, LogError::StreamExists(_)), "{e}");
    let e = f.log.read("s", 9, 0..10, None).await.err().unwrap();
    assert!(matches!(e, LogError::PartitionOutOfRange { .. }), "{e}");
}

async fn idempotent_producer_retries_are_not_written_twice(b: Backend) {
    let f = Arc::new(Fixture::new(b).await);
    f.log.create_stream(spec("i", 3)).await.unwrap();
    let producer = |seq| AppendOptions {
        partition: None,
        key: None,
        internal: false,
        producer: Some(ProducerSeq {
            producer_id: "p-1".into(),
            sequence: seq,
            progress: None,
            epoch: None,
            first: None,
        }),
    };
    let first = f
        .log
        .append("i", orders(0..60, 9, T0), producer(1))
        .await
        .unwrap();
    assert!(!first.duplicate);
    // A retry after a lost acknowledgement.
    let retry = f
        .log
        .append("i", orders(0..60, 9, T0), producer(1))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        retry.parts, first.parts,
        "the retry learns the original offsets"
    );
    let ends: u64 = f.log.partition_ends("i").await.unwrap().iter().sum();
    assert_eq!(ends, 60);

    // A retry racing the original inside one buffer joins it.
    let (a, b2) = tokio::join!(
        f.log.append("i", orders(60..90, 9, T0), producer(2)),
        f.log.append("i", orders(60..90, 9, T0), producer(2)),
    );
    assert_eq!(a.unwrap().parts, b2.unwrap().parts);
    // An older sequence is acknowledged as a duplicate, written nowhere.
    let old = f
        .log
        .append("i", orders(0..60, 9, T0), producer(1))
        .await
        .unwrap();
    assert!(old.duplicate && old.parts.is_empty());

    let ends: u64 = f.log.partition_ends("i").await.unwrap().iter().sum();
    assert_eq!(ends, 90);
    let mut ids = Vec::new();
    for p in 0..3 {
        ids.extend(i64s(&read_all(&f, "i", p).await, "id"));
    }
    ids.sort();
    assert_eq!(ids, (0..90).collect::<Vec<_>>());
}

async fn time_range_reads_fetch_only_matching_chunks(b: Backend) {
    let mut f = Fixture::new(b).await;
    f.log.create_stream(spec("t", 1)).await.unwrap();
    // Three flushes, far apart in event time and append time.
    for k in 0..3i64 {
        f.clock.set(T0 + k * 60_000_000);
        f.log
            .append(
                "t",
                orders(k * 100..k * 100 + 100, 4, T0 + k * 3_600_000_000),
                AppendOptions::default(),
            )
            .await
            .unwrap();
    }
    f.reopen().await; // cold cache: every chunk read is a GET
    let gets = f.store.stats().gets();
    // Event times of batch 1: T0 + 1h + id ms, ids 100..200: ask for ids 120..130.
    let lo = T0 + 3_600_000_000 + 120 * 1000;
    let filter = TimeFilter {
        event_time: Some(lo..lo + 10_000),
        append_time: None,
    };
    let rows = collect(
        f.log
            .read_time("t", 0, 0..u64::MAX, filter, None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(i64s(&rows, "id"), (120..130).collect::<Vec<_>>());
    assert_eq!(
        f.store.stats().gets() - gets,
        1,
        "one chunk fetched, two pruned"
    );

    let filter = TimeFilter {
        event_time: None,
        append_time: Some(T0 + 60_000_000..T0 + 180_000_000),
    };
    let rows = collect(
        f.log
            .read_time("t", 0, 0..u64::MAX, filter, None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(i64s(&rows, "id"), (100..300).collect::<Vec<_>>());
}

async fn projection_and_offset_ranges(b: Backend) {
    let mut f = Fixture::new(b).await;
    f.log.create_stream(spec("p", 1)).await.unwrap();
    for k in 0..4i64 {
        f.log
            .append(
                "p",
                orders(k * 10..k * 10 + 10, 2, T0),
                AppendOptions::default(),
            )
            .await
            .unwrap();
    }
    for cold in [false, true] {
        if cold {
            f.reopen().await;
        }
        // `_offset` (index 6) then `id` (index 0), offsets 5..25.
        let rows = collect(f.log.read("p", 0, 5..25, Some(vec![6, 0])).await.unwrap()).await;
        assert_eq!(rows[0].schema().field(0).name(), "_offset");
        assert_eq!(rows[0].num_columns(), 2);
        assert_eq!(i64s(&rows, "_offset"), (5..25).collect::<Vec<_>>());
        assert_eq!(i64s(&rows, "id"), (5..25).collect::<Vec<_>>());
        // Nothing but a row count.
        let rows = collect(f.log.read("p", 0, 0..40, Some(vec![])).await.unwrap()).await;
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 40);
        // Past the end: only committed rows.
        let rows = collect(f.log.read("p", 0, 35..1000, None).await.unwrap()).await;
        assert_eq!(i64s(&rows, "_offset"), (35..40).collect::<Vec<_>>());
    }
}

/// Orders rows with the columns added later: `qty` (its default 1) and,
/// with `note`, `note` (no default).
fn orders_with(ids: std::ops::Range<i64>, note: bool) -> RecordBatch {
    let base = orders(ids.clone(), 2, T0);
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols = base.columns().to_vec();
    fields.push(qty_field());
    cols.push(Arc::new(Int64Array::from_iter_values(
        ids.clone().map(|i| i * 10),
    )));
    if note {
        fields.push(Field::new("note", DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from_iter_values(
            ids.map(|i| format!("n{i}")),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

fn qty_field() -> Field {
    Field::new("qty", DataType::Int64, false).with_metadata(
        [(
            streamhouse_log::stream::DEFAULT_KEY.to_string(),
            "1".to_string(),
        )]
        .into(),
    )
}

/// Columns added to a stream: rows written before read the new column as
/// its default or NULL, without being rewritten, warm and cold; one flush
/// may hold rows of two versions; a read pinned to the older version still
/// reads newer chunks' columns it knows; and the refusals.
async fn added_columns_read_old_chunks_through_the_new_schema(b: Backend) {
    // Flushes far apart, so that rows of two versions share one.
    let mut f = Fixture::with_config(b, |c| {
        c.flush.flush_interval = Duration::from_millis(500);
    })
    .await;
    f.log.create_stream(spec("evolving", 1)).await.unwrap();
    f.log
        .append("evolving", orders(0..10, 2, T0), AppendOptions::default())
        .await
        .unwrap();
    let v1 = f.log.stream("evolving").await.unwrap();

    // NOT NULL without a default, a name taken: refused, nothing changes.
    for bad in [
        Field::new("qty", DataType::Int64, false),
        Field::new("user", DataType::Utf8, true),
        Field::new("_offset", DataType::Int64, true),
    ] {
        let e = f
            .log
            .alter_stream("evolving", &[SchemaChange::AddColumn(bad)], "ADD COLUMN")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
    let bad_default = Field::new("n", DataType::Int64, true).with_metadata(
        [(
            streamhouse_log::stream::DEFAULT_KEY.to_string(),
            "one".to_string(),
        )]
        .into(),
    );
    let e = f
        .log
        .alter_stream(
            "evolving",
            &[SchemaChange::AddColumn(bad_default)],
            "ADD COLUMN",
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("default 'one'"), "{e}");
    assert_eq!(f.log.stream("evolving").await.unwrap().schema_version, 1);

    let v2 = f
        .log
        .alter_stream(
            "evolving",
            &[SchemaChange::AddColumn(qty_field())],
            "ADD COLUMN qty",
        )
        .await
        .unwrap();
    assert_eq!(v2.schema_version, 2);
    // Rows of no version are refused; rows of one version each may share
    // a flush.
    let v1_rows = orders(10..20, 2, T0);
    let e = f
        .log
        .append(
            "evolving",
            v1_rows.project(&[0, 1, 2]).unwrap(),
            AppendOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::SchemaMismatch { .. }), "{e}");
    let under_v2 = f
        .log
        .submit(
            "evolving",
            vec![orders_with(10..15, false)],
            AppendOptions::default(),
        )
        .await
        .unwrap()
        .unwrap();
    let v3 = f
        .log
        .alter_stream(
            "evolving",
            &[SchemaChange::AddColumn(Field::new(
                "note",
                DataType::Utf8,
                true,
            ))],
            "ADD COLUMN note",
        )
        .await
        .unwrap();
    assert_eq!(v3.schema_version, 3);
    let under_v3 = f
        .log
        .submit(
            "evolving",
            vec![orders_with(15..20, true)],
            AppendOptions::default(),
        )
        .await
        .unwrap()
        .unwrap();
    under_v2.durable().await.unwrap();
    under_v3.durable().await.unwrap();
    let versions = f.log.metadata().schema_versions(v3.id).await.unwrap();
    let changes: Vec<&str> = versions.iter().map(|v| v.change.as_str()).collect();
    assert_eq!(
        changes,
        ["CREATE STREAM", "ADD COLUMN qty", "ADD COLUMN note"]
    );

    for cold in [false, true] {
        if cold {
            f.reopen().await;
        }
        let rows = read_all(&f, "evolving", 0).await;
        assert_eq!(i64s(&rows, "id"), (0..20).collect::<Vec<_>>());
        assert_eq!(i64s(&rows, "_offset"), (0..20).collect::<Vec<_>>());
        let qty: Vec<i64> = (0..10).map(|_| 1).chain((10..20).map(|i| i * 10)).collect();
        assert_eq!(i64s(&rows, "qty"), qty);
        let notes: Vec<Option<String>> = rows
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name("note").unwrap().as_string::<i32>().clone();
                (0..c.len()).map(move |i| c.is_valid(i).then(|| c.value(i).to_string()))
            })
            .collect();
        let want: Vec<Option<String>> = (0..20)
            .map(|i| (i >= 15).then(|| format!("n{i}")))
            .collect();
        assert_eq!(notes, want);
        // A projection of the new column and `_timestamp` only.
        let stream = f.log.stream("evolving").await.unwrap();
        let declared = stream.spec.schema.fields().len();
        let rows = collect(
            f.log
                .read("evolving", 0, 5..15, Some(vec![declared + 2, 5]))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 10);
        assert_eq!(
            i64s(&rows, "qty"),
            vec![1, 1, 1, 1, 1, 100, 110, 120, 130, 140]
        );
    }
    // A read through version 1 (a plan made before the columns were added)
    // reads the newer rows' columns it knows, in its own schema.
    assert_eq!(v1.schema_version, 1);
    let chunks = f
        .log
        .metadata()
        .chunks_by_offset(v1.id, 0, 0..u64::MAX)
        .await
        .unwrap();
    // The rows of versions 2 and 3 went in one flush: one object, a chunk
    // for each.
    assert_eq!(
        chunks.iter().map(|c| c.schema_version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(chunks[1].object, chunks[2].object);
    let v1_schema = v1.spec.schema.clone();
    let rows = collect(f.log.read_as(v1, 0, 0..u64::MAX, None).await.unwrap()).await;
    assert_eq!(rows[0].num_columns(), 8);
    assert_eq!(i64s(&rows, "id"), (0..20).collect::<Vec<_>>());
    assert_eq!(i64s(&rows, "_offset"), (0..20).collect::<Vec<_>>());

    // A column dropped and one renamed: every chunk, cold, reads through
    // the newest version; the old versions stay what they were.
    f.log
        .alter_stream(
            "evolving",
            &[SchemaChange::DropColumn("note".into())],
            "DROP COLUMN note",
        )
        .await
        .unwrap();
    let v5 = f
        .log
        .alter_stream(
            "evolving",
            &[SchemaChange::RenameColumn {
                from: "qty".into(),
                to: "quantity".into(),
            }],
            "RENAME COLUMN qty TO quantity",
        )
        .await
        .unwrap();
    assert_eq!(v5.schema_version, 5);
    f.reopen().await;
    let rows = read_all(&f, "evolving", 0).await;
    assert!(rows[0].column_by_name("note").is_none());
    assert!(rows[0].column_by_name("qty").is_none());
    let qty: Vec<i64> = (0..10).map(|_| 1).chain((10..20).map(|i| i * 10)).collect();
    assert_eq!(i64s(&rows, "quantity"), qty);
    assert_eq!(
        f.log.stream_at("evolving", 1).await.unwrap().spec.schema,
        v1_schema
    );
    let e = f.log.stream_at("evolving", 9).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

async fn tail_waiters_wake_on_commit(b: Backend) {
    let f = Arc::new(Fixture::new(b).await);
    f.log.create_stream(spec("w", 2)).await.unwrap();
    let waiter = {
        let f = f.clone();
        tokio::spawn(async move { f.log.wait_for("w", 1, 0).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "nothing committed yet");
    f.log
        .append("w", orders(0..7, 1, T0), AppendOptions::to_partition(1))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(end, 7);
    // Already satisfied: returns at once.
    assert_eq!(f.log.wait_for("w", 1, 3).await.unwrap(), 7);
}

async fn reopen_keeps_data_and_continues_offsets(b: Backend) {
    let mut f = Fixture::new(b).await;
    f.log.create_stream(spec("r", 2)).await.unwrap();
    f.log
        .append("r", orders(0..500, 11, T0), AppendOptions::default())
        .await
        .unwrap();
    let ends = f.log.partition_ends("r").await.unwrap();
    f.reopen().await;
    assert_eq!(f.log.partition_ends("r").await.unwrap(), ends);
    let ack = f
        .log
        .append(
            "r",
            orders(500..501, 11, T0),
            AppendOptions::to_partition(0),
        )
        .await
        .unwrap();
    assert_eq!(ack.parts[0].base_offset, ends[0]);
    let mut ids = Vec::new();
    for p in 0..2 {
        ids.extend(i64s(&read_all(&f, "r", p).await, "id"));
    }
    ids.sort();
    assert_eq!(ids, (0..501).collect::<Vec<_>>());
}

async fn drop_stream_forgets_it(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("d", 1)).await.unwrap();
    f.log
        .append("d", orders(0..10, 1, T0), AppendOptions::default())
        .await
        .unwrap();
    let names: Vec<String> = f
        .log
        .streams()
        .await
        .unwrap()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    assert_eq!(names, ["d"]);
    f.log.drop_stream("d").await.unwrap();
    assert!(f.log.streams().await.unwrap().is_empty());
    let e = f
        .log
        .append("d", orders(0..1, 1, T0), AppendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::UnknownStream(_)));
    let e = f.log.drop_stream("d").await.unwrap_err();
    assert!(matches!(e, LogError::UnknownStream(_)));
    // Same name again: a new, empty stream.
    f.log.create_stream(spec("d", 1)).await.unwrap();
    assert!(read_all(&f, "d", 0).await.is_empty());
    assert_eq!(f.log.partition_ends("d").await.unwrap(), [0]);
}

/// Names under `__` belong to the system: a user can neither create nor
/// write nor drop such a stream (a user stream called like a view's
/// changelog used to be taken for an orphaned changelog and deleted at the
/// next start-up, with its rows).
async fn reserved_names_and_internal_streams(b: Backend) {
    let f = Fixture::new(b).await;
    for name in ["__changelog__x", "__x", "__"] {
        let e = f.log.create_stream(spec(name, 1)).await.unwrap_err();
        assert!(matches!(e, LogError::ReservedName(_)), "{name}: {e}");
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    }
    assert!(f.log.streams().await.unwrap().is_empty());
    // One underscore, or `__` inside a name, is a user's.
    f.log.create_stream(spec("_x", 1)).await.unwrap();
    f.log.create_stream(spec("a__b", 1)).await.unwrap();
    assert_eq!(StreamKind::of("a__b"), StreamKind::User);
    // The system creates its own; users may not write or drop them.
    let name = "__changelog__v-1";
    f.log
        .create_internal_stream(StreamKind::ViewChangelog, spec(name, 1))
        .await
        .unwrap();
    let wrong = f
        .log
        .create_internal_stream(StreamKind::ViewChangelog, spec("__y", 1))
        .await
        .unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::Internal, "{wrong}");
    let e = f
        .log
        .append(name, orders(0..3, 1, T0), AppendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::InternalStream(_)), "{e}");
    assert_eq!(f.log.partition_ends(name).await.unwrap(), [0]);
    let e = f.log.drop_stream(name).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let internal = AppendOptions {
        internal: true,
        ..AppendOptions::default()
    };
    f.log
        .append(name, orders(0..3, 1, T0), internal)
        .await
        .unwrap();
    assert_eq!(f.log.partition_ends(name).await.unwrap(), [3]);
    f.log
        .drop_internal_stream(StreamKind::ViewChangelog, name)
        .await
        .unwrap();
    assert_eq!(f.log.streams().await.unwrap().len(), 2);
}

async fn shutdown_flushes_buffered_appends(b: Backend) {
    // A flush interval far beyond the test: only shutdown can flush.
    let mut f =
        Fixture::with_config(b, |c| c.flush.flush_interval = Duration::from_secs(3600)).await;
    f.log.create_stream(spec("z", 1)).await.unwrap();
    let log = Arc::new(std::mem::replace(
        &mut f.log,
        Fixture::new(Backend::Memory).await.log,
    ));
    let pending = {
        let log = log.clone();
        tokio::spawn(async move {
            log.append("z", orders(0..25, 2, T0), AppendOptions::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "held in the buffer");
    log.shutdown().await;
    let ack = pending.await.unwrap().unwrap();
    assert_eq!(ack.rows(), 25);
    let e = log
        .append("z", orders(0..1, 1, T0), AppendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::ShuttingDown), "{e}");
    f.log = Arc::try_unwrap(log).unwrap();
    f.reopen().await;
    assert_eq!(
        i64s(&read_all(&f, "z", 0).await, "id"),
        (0..25).collect::<Vec<_>>()
    );
}

async fn a_flush_of_small_batches_is_cached_as_one(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("s", 1)).await.unwrap();
    let batches: Vec<RecordBatch> = (0..50).map(|i| orders(i..i + 1, 1, T0)).collect();
    f.log
        .append_batches("s", batches, AppendOptions::default())
        .await
        .unwrap();
    let gets = f.store.stats().gets();
    let read = read_all(&f, "s", 0).await;
    assert_eq!(f.store.stats().gets(), gets, "read from the writer's cache");
    assert_eq!(i64s(&read, "id"), (0..50).collect::<Vec<_>>());
    assert_eq!(read.len(), 1, "one batch for the chunk, not one per INSERT");
}

async fn append_batches_is_one_atomic_append(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("m", 3)).await.unwrap();
    let batches = vec![
        orders(0..40, 5, T0),
        orders(40..41, 5, T0),
        orders(41..100, 5, T0),
    ];
    let ack = f
        .log
        .append_batches("m", batches, AppendOptions::default())
        .await
        .unwrap();
    assert_eq!(ack.rows(), 100);
    let mut parts: Vec<u32> = ack.parts.iter().map(|p| p.partition).collect();
    parts.sort();
    parts.dedup();
    assert_eq!(
        parts.len(),
        ack.parts.len(),
        "one slice per partition: {:?}",
        ack.parts
    );
    // Nothing partial: a failed flush commits none of the batches.
    f.faults.fail_next_puts(1);
    let e = f
        .log
        .append_batches(
            "m",
            vec![orders(100..110, 5, T0), orders(110..120, 5, T0)],
            AppendOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let total: u64 = f.log.partition_ends("m").await.unwrap().iter().sum();
    assert_eq!(total, 100);
    // A bad batch anywhere refuses the whole append.
    let e = f
        .log
        .append_batches(
            "m",
            vec![
                orders(0..1, 1, T0),
                RecordBatch::new_empty(Arc::new(Schema::empty())),
            ],
            AppendOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::SchemaMismatch { .. }), "{e}");
    let total: u64 = f.log.partition_ends("m").await.unwrap().iter().sum();
    assert_eq!(total, 100);
}

async fn total(f: &Fixture, stream: &str) -> u64 {
    f.log.partition_ends(stream).await.unwrap().iter().sum()
}

/// A transaction's writes: rows staged for several streams become visible
/// in one commit, or none do.
async fn staged_appends_to_several_streams_commit_together(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("a", 2)).await.unwrap();
    f.log.create_stream(spec("b", 3)).await.unwrap();
    let opts = AppendOptions::default();
    let a = f
        .log
        .stage("a", vec![orders(0..30, 4, T0)], &opts)
        .await
        .unwrap()
        .unwrap();
    let b1 = f
        .log
        .stage("b", vec![orders(0..20, 4, T0)], &opts)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.rows(), b1.rows()), (30, 20));
    assert_eq!(
        (total(&f, "a").await, total(&f, "b").await),
        (0, 0),
        "staging writes nothing"
    );
    let acks = f.log.append_staged(vec![a, b1]).await.unwrap();
    assert_eq!(acks.iter().map(|a| a.rows()).collect::<Vec<_>>(), [30, 20]);
    assert_eq!((total(&f, "a").await, total(&f, "b").await), (30, 20));

    // A failed flush commits neither.
    let a = f
        .log
        .stage("a", vec![orders(30..40, 4, T0)], &opts)
        .await
        .unwrap()
        .unwrap();
    let b1 = f
        .log
        .stage("b", vec![orders(20..25, 4, T0)], &opts)
        .await
        .unwrap()
        .unwrap();
    f.faults.fail_next_puts(1);
    let e = f.log.append_staged(vec![a, b1]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!((total(&f, "a").await, total(&f, "b").await), (30, 20));

    // One stream dropped before the commit: the other's rows are not
    // written either, and the error names the dropped one.
    let a = f
        .log
        .stage("a", vec![orders(40..50, 4, T0)], &opts)
        .await
        .unwrap()
        .unwrap();
    let b1 = f
        .log
        .stage("b", vec![orders(25..30, 4, T0)], &opts)
        .await
        .unwrap()
        .unwrap();
    f.log.drop_stream("b").await.unwrap();
    let e = f.log.append_staged(vec![a, b1]).await.unwrap_err();
    assert!(matches!(&e, LogError::UnknownStream(s) if s == "b"), "{e}");
    assert_eq!(total(&f, "a").await, 30);
    // The log goes on.
    f.log
        .append("a", orders(50..51, 1, T0), AppendOptions::default())
        .await
        .unwrap();
    assert_eq!(total(&f, "a").await, 31);
}

/// Rows made for an older version (a write planned, or a produced value
/// decoded, just before a change landed) are appended as rows of the
/// current one, through any door: a column added since takes its default.
async fn rows_of_an_older_version_are_carried_over(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("carried", 1)).await.unwrap();
    let before = orders(0..5, 2, T0);
    f.log
        .alter_stream(
            "carried",
            &[SchemaChange::AddColumn(qty_field())],
            "ADD COLUMN qty",
        )
        .await
        .unwrap();
    f.log
        .append("carried", before, AppendOptions::default())
        .await
        .unwrap();
    let staged = f
        .log
        .stage(
            "carried",
            vec![orders(5..10, 2, T0)],
            &AppendOptions::default(),
        )
        .await
        .unwrap()
        .unwrap();
    f.log.append_staged(vec![staged]).await.unwrap();
    let rows = read_all(&f, "carried", 0).await;
    assert_eq!(i64s(&rows, "id"), (0..10).collect::<Vec<_>>());
    assert_eq!(i64s(&rows, "qty"), vec![1; 10]);
    // Across two changes: a nullable column added since reads NULL.
    f.log
        .alter_stream(
            "carried",
            &[SchemaChange::AddColumn(Field::new(
                "note",
                DataType::Utf8,
                true,
            ))],
            "ADD COLUMN note",
        )
        .await
        .unwrap();
    f.log
        .append("carried", orders(10..12, 2, T0), AppendOptions::default())
        .await
        .unwrap();
    let rows = read_all(&f, "carried", 0).await;
    assert_eq!(i64s(&rows, "id"), (0..12).collect::<Vec<_>>());
}

per_backend!(
    rows_of_an_older_version_are_carried_over,
    added_columns_read_old_chunks_through_the_new_schema,
    staged_appends_to_several_streams_commit_together,
    append_batches_is_one_atomic_append,
    a_flush_of_small_batches_is_cached_as_one,
    shutdown_flushes_buffered_appends,
    round_trip_by_key,
    concurrent_appenders_get_dense_unique_offsets,
    one_put_per_flush,
    failed_put_fails_append_without_gap,
    a_lost_put_answer_is_not_a_failed_append,
    a_put_cut_off_mid_request_is_sent_again,
    bad_input_gets_typed_errors_and_writes_nothing,
    idempotent_producer_retries_are_not_written_twice,
    time_range_reads_fetch_only_matching_chunks,
    projection_and_offset_ranges,
    tail_waiters_wake_on_commit,
    reopen_keeps_data_and_continues_offsets,
    drop_stream_forgets_it,
    reserved_names_and_internal_streams,
);
