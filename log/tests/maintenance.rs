//! Retention, compaction and garbage collection against every object-store
//! backend, including two logs (agents) running them at once.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Fixture, collect, i64s, orders};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use streamhouse_log::path::DataObjectPath;
use streamhouse_log::{AppendOptions, Log, LogConfig, MaintenanceReport, StreamSpec};

const T0: i64 = 1_700_000_000_000_000;
const MINUTE: i64 = 60_000_000;

fn spec(name: &str, retention: Option<Duration>) -> StreamSpec {
    let mut s = StreamSpec::new(name, common::orders_schema()).with_partitions(1);
    s.retention = retention;
    s
}

/// Appends `batches` batches of 10 rows, one flush (one chunk) each,
/// `step` µs of the log's clock apart.
async fn append_chunks(f: &Fixture, stream: &str, batches: i64, step: i64) {
    for i in 0..batches {
        f.log
            .append(
                stream,
                orders(i * 10..i * 10 + 10, 3, T0),
                AppendOptions::to_partition(0),
            )
            .await
            .unwrap();
        f.clock.advance(step);
    }
}

async fn ids(log: &Log, stream: &str) -> Vec<i64> {
    let rows = collect(log.read(stream, 0, 0..u64::MAX, None).await.unwrap()).await;
    i64s(&rows, "id")
}

async fn data_objects(f: &Fixture) -> usize {
    let prefix = object_store::path::Path::from(DataObjectPath::PREFIX);
    f.objects
        .list(Some(&prefix))
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len()
}

fn config(grace: Duration) -> impl FnOnce(&mut LogConfig) {
    move |c: &mut LogConfig| {
        c.maintenance.grace = grace;
        c.maintenance.compact_after = Duration::from_secs(60);
    }
}

async fn retention_deletes_old_chunks_oldest_first(b: Backend) {
    let f = Fixture::with_config(b, config(Duration::ZERO)).await;
    f.log
        .create_stream(spec("o", Some(Duration::from_secs(3600))))
        .await
        .unwrap();
    // Six chunks, 20 minutes apart: at T0 + 120 min the first three are
    // older than an hour.
    append_chunks(&f, "o", 6, 20 * MINUTE).await;
    f.clock.set(T0 + 120 * MINUTE);
    let r = f.log.maintain().await.unwrap();
    assert_eq!(r.expired_chunks, 3, "{r:?}");
    assert_eq!(ids(&f.log, "o").await, (30..60).collect::<Vec<_>>());
    let stats = f
        .log
        .metadata()
        .partition_stats(f.log.stream("o").await.unwrap().id);
    let st = stats.await.unwrap();
    assert_eq!((st[0].first_offset, st[0].next_offset), (Some(30), 60));
    // The expired chunks' objects go with the next round (grace zero); by
    // then the chunk appended at T0 + 60 min is past the hour too.
    let before = data_objects(&f).await;
    f.clock.advance(1);
    let r = f.log.maintain().await.unwrap();
    assert_eq!((r.expired_chunks, r.deleted_objects), (1, 3), "{r:?}");
    assert_eq!(data_objects(&f).await, before - 3);
    assert_eq!(ids(&f.log, "o").await, (40..60).collect::<Vec<_>>());
}

async fn compaction_merges_small_chunks_and_gc_deletes_the_old(b: Backend) {
    let mut f = Fixture::with_config(b, config(Duration::from_secs(300))).await;
    f.log.create_stream(spec("o", None)).await.unwrap();
    append_chunks(&f, "o", 10, 1_000_000).await;
    let before = chunks(&f.log, "o").await;
    assert_eq!(before.len(), 10);
    // Too young: left alone.
    assert_eq!(
        f.log.maintain().await.unwrap(),
        MaintenanceReport::default()
    );

    f.clock.advance(2 * MINUTE);
    let r = f.log.maintain().await.unwrap();
    assert_eq!((r.compactions, r.compacted_chunks), (1, 10), "{r:?}");
    let after = chunks(&f.log, "o").await;
    assert_eq!(after.len(), 1);
    assert_eq!((after[0].base_offset, after[0].end_offset), (0, 100));
    assert_eq!(after[0].event_time.min, before[0].event_time.min);
    assert_eq!(after[0].append_time.max, before[9].append_time.max);
    assert_eq!(ids(&f.log, "o").await, (0..100).collect::<Vec<_>>());
    // A time-range read still finds its rows in the merged chunk.
    let rows = collect(f.log.read("o", 0, 35..45, None).await.unwrap()).await;
    assert_eq!(i64s(&rows, "_offset"), (35..45).collect::<Vec<_>>());

    // The old objects stay through the grace period, then go.
    let objects = data_objects(&f).await;
    assert_eq!(f.log.maintain().await.unwrap().deleted_objects, 0);
    f.clock.advance(10 * MINUTE);
    let r = f.log.maintain().await.unwrap();
    assert_eq!(r.deleted_objects, 10, "{r:?}");
    assert_eq!(data_objects(&f).await, objects - 10);
    f.reopen().await;
    assert_eq!(ids(&f.log, "o").await, (0..100).collect::<Vec<_>>());
}

async fn two_agents_maintaining_at_once_lose_nothing(b: Backend) {
    let f = Fixture::with_config(b, config(Duration::ZERO)).await;
    f.log.create_stream(spec("o", None)).await.unwrap();
    append_chunks(&f, "o", 12, 1_000_000).await;
    f.clock.advance(2 * MINUTE);
    // A second log over the same objects and metadata.
    let meta = f.log.metadata().clone();
    let mut config = LogConfig::for_store(&f.store);
    config.maintenance.grace = Duration::ZERO;
    let other = Arc::new(Log::open(f.store.clone(), meta, config, f.clock.clone()));
    let (a, b2) = tokio::join!(f.log.maintain(), other.maintain());
    let (a, b2) = (a.unwrap(), b2.unwrap());
    assert_eq!(a.compactions + b2.compactions, 1, "{a:?} {b2:?}");
    for _ in 0..2 {
        f.clock.advance(1);
        let (x, y) = tokio::join!(f.log.maintain(), other.maintain());
        x.unwrap();
        y.unwrap();
    }
    assert_eq!(ids(&f.log, "o").await, (0..120).collect::<Vec<_>>());
    assert_eq!(ids(&other, "o").await, (0..120).collect::<Vec<_>>());
    // Only the merged object is left (the loser's, if any, was deleted).
    assert_eq!(data_objects(&f).await, 1);
}

async fn objects_of_failed_commits_are_collected_after_the_grace_period(b: Backend) {
    let f = Fixture::with_config(b, config(Duration::from_secs(300))).await;
    f.log.create_stream(spec("o", None)).await.unwrap();
    append_chunks(&f, "o", 2, 1_000_000).await;
    // An object a flush wrote before its commit failed.
    let stray = DataObjectPath::new_unique();
    f.objects
        .put(
            stray.as_path(),
            bytes::Bytes::from_static(b"not indexed").into(),
        )
        .await
        .unwrap();
    // Written now (wall clock): young until the grace period has passed.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    f.clock.set(wall);
    assert_eq!(f.log.maintain().await.unwrap().deleted_strays, 0);
    f.clock.set(wall + 6 * MINUTE);
    let r = f.log.maintain().await.unwrap();
    assert_eq!(r.deleted_strays, 1, "{r:?}");
    assert!(f.objects.head(stray.as_path()).await.is_err());
    assert_eq!(ids(&f.log, "o").await, (0..20).collect::<Vec<_>>());
}

/// A table's log: `id` keys it, `__deleted` marks tombstones.
fn table_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
        Field::new(
            streamhouse_log::TABLE_DELETED_COLUMN,
            DataType::Boolean,
            false,
        ),
    ]))
}

/// One chunk of table writes: `(id, v)` rows, `None` deleting the key.
async fn write_table(f: &Fixture, rows: &[(i64, Option<i64>)]) {
    use arrow::array::{BooleanArray, Int64Array};
    let batch = arrow::array::RecordBatch::try_new(
        table_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.1.is_none())),
            )),
        ],
    )
    .unwrap();
    let options = AppendOptions {
        internal: true,
        ..AppendOptions::to_partition(0)
    };
    f.log.append("__table__t", batch, options).await.unwrap();
    f.clock.advance(1_000_000);
}

/// `(offset, id, v)` of the rows a read of the table's log from `from`
/// returns (`v` NULL for a tombstone).
async fn table_rows(log: &Log, from: u64) -> Vec<(i64, i64, Option<i64>)> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    let batches = collect(
        log.read("__table__t", 0, from..u64::MAX, None)
            .await
            .unwrap(),
    )
    .await;
    let mut out = Vec::new();
    for b in &batches {
        let col = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        let (o, id, v) = (col("_offset"), col("id"), col("v"));
        for i in 0..b.num_rows() {
            out.push((o.value(i), id.value(i), v.is_valid(i).then(|| v.value(i))));
        }
    }
    out
}

async fn a_tables_log_keeps_each_keys_latest_row(b: Backend) {
    let f = Fixture::with_config(b, |c| {
        c.maintenance.grace = Duration::from_secs(300);
        c.maintenance.compact_after = Duration::from_secs(60);
        c.maintenance.tombstone_retention = Duration::from_secs(3600);
    })
    .await;
    let spec = StreamSpec::new("__table__t", table_schema())
        .with_partitions(1)
        .with_key(["id"]);
    f.log
        .create_internal_stream(streamhouse_log::StreamKind::Table, spec)
        .await
        .unwrap();
    // Offsets 0..4, 4..8, 8..12.
    write_table(
        &f,
        &[(1, Some(10)), (2, Some(20)), (3, Some(30)), (4, Some(40))],
    )
    .await;
    write_table(
        &f,
        &[(1, Some(11)), (2, None), (5, Some(50)), (1, Some(12))],
    )
    .await;
    write_table(
        &f,
        &[(3, Some(31)), (6, Some(60)), (2, Some(21)), (4, None)],
    )
    .await;
    let everything = table_rows(&f.log, 0).await;
    assert_eq!(everything.len(), 12);
    // Too young: left alone.
    assert_eq!(f.log.maintain().await.unwrap().dropped_rows, 0);

    f.clock.advance(2 * MINUTE);
    let r = f.log.maintain().await.unwrap();
    assert_eq!(
        (r.compactions, r.compacted_chunks, r.dropped_rows),
        (1, 3, 6),
        "{r:?}"
    );
    let latest = vec![
        (6, 5, Some(50)),
        (7, 1, Some(12)),
        (8, 3, Some(31)),
        (9, 6, Some(60)),
        (10, 2, Some(21)),
        (11, 4, None),
    ];
    assert_eq!(table_rows(&f.log, 0).await, latest);
    // A reader that stopped part way resumes at its offset.
    assert_eq!(table_rows(&f.log, 8).await, latest[2..].to_vec());
    let rows = collect(f.log.read("__table__t", 0, 7..9, None).await.unwrap()).await;
    assert_eq!(i64s(&rows, "_offset"), vec![7, 8]);
    // Offsets and the partition's end are unchanged; the index counts rows.
    let info = f.log.stream("__table__t").await.unwrap();
    let chunks = f
        .log
        .metadata()
        .chunks_by_offset(info.id, 0, 0..u64::MAX)
        .await
        .unwrap();
    assert_eq!(chunks.len(), 1);
    let c = &chunks[0];
    assert_eq!(
        (c.base_offset, c.end_offset, c.sparse_rows),
        (0, 12, Some(6))
    );
    let st = f.log.metadata().partition_stats(info.id).await.unwrap();
    assert_eq!((st[0].next_offset, st[0].rows), (12, 6));

    // Nothing more to drop: the next round leaves the chunk alone.
    f.clock.advance(1);
    assert_eq!(f.log.maintain().await.unwrap().compactions, 0);

    // New writes supersede compacted rows; once old, the two chunks become
    // one, and the tombstone, now past its retention, goes with its key.
    write_table(&f, &[(5, Some(51)), (7, Some(70))]).await;
    f.clock.advance(2 * MINUTE);
    let r = f.log.maintain().await.unwrap();
    assert_eq!(
        (r.compactions, r.compacted_chunks, r.dropped_rows),
        (1, 2, 1),
        "{r:?}"
    );
    f.clock.advance(2 * 3600 * 1_000_000);
    let r = f.log.maintain().await.unwrap();
    assert_eq!((r.compactions, r.dropped_rows), (1, 1), "{r:?}");
    let expect = vec![
        (7, 1, Some(12)),
        (8, 3, Some(31)),
        (9, 6, Some(60)),
        (10, 2, Some(21)),
        (12, 5, Some(51)),
        (13, 7, Some(70)),
    ];
    assert_eq!(table_rows(&f.log, 0).await, expect);
    // The index and the objects agree after a restart too.
    let mut f = f;
    f.reopen().await;
    assert_eq!(table_rows(&f.log, 0).await, expect);
    let ids = collect(
        f.log
            .read("__table__t", 0, 0..u64::MAX, Some(vec![0]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(i64s(&ids, "id"), vec![1, 3, 6, 2, 5, 7]);
}

/// The index's chunks of partition 0 of `stream`.
async fn chunks(log: &Log, stream: &str) -> Vec<streamhouse_log::metadata::ChunkRecord> {
    let info = log.stream(stream).await.unwrap();
    log.metadata()
        .chunks_by_offset(info.id, 0, 0..u64::MAX)
        .await
        .unwrap()
}

/// Every row of `batches` as one batch (of the read schema).
fn one(batches: &[arrow::array::RecordBatch]) -> arrow::array::RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

async fn old_rows_go_into_the_archive_and_read_the_same(b: Backend) {
    let mut f = Fixture::with_config(b, config(Duration::from_secs(300))).await;
    let hour = Duration::from_secs(3600);
    f.log
        .create_stream(spec("o", None).with_archive_after(hour))
        .await
        .unwrap();
    // Six chunks a minute apart, then two hours later six more.
    append_chunks(&f, "o", 6, MINUTE).await;
    f.clock.advance(2 * 60 * MINUTE);
    let young = |i: i64| orders(i * 10..i * 10 + 10, 3, T0);
    for i in 6..12 {
        f.log
            .append("o", young(i), AppendOptions::to_partition(0))
            .await
            .unwrap();
        f.clock.advance(1_000_000);
    }
    async fn read(
        log: &Log,
        range: std::ops::Range<u64>,
        projection: Option<Vec<usize>>,
    ) -> arrow::array::RecordBatch {
        one(&collect(log.read("o", 0, range, projection).await.unwrap()).await)
    }
    async fn timed(log: &Log) -> Vec<i64> {
        let filter = streamhouse_log::TimeFilter {
            event_time: None,
            append_time: Some(T0 + 2 * MINUTE..T0 + 4 * MINUTE),
        };
        let rows = log.read_time("o", 0, 0..u64::MAX, filter, None);
        i64s(&collect(rows.await.unwrap()).await, "id")
    }
    let whole = read(&f.log, 0..u64::MAX, None).await;
    let part = read(&f.log, 25..45, Some(vec![6, 0, 4])).await;
    let by_time = timed(&f.log).await;
    assert_eq!(by_time, (20..40).collect::<Vec<_>>());

    // The old chunks are compacted into one, which is then old enough:
    // archived. The young ones stay as they are.
    let r = f.log.maintain().await.unwrap();
    assert_eq!((r.archives, r.archived_chunks), (1, 1), "{r:?}");
    let chunks = chunks(&f.log, "o").await;
    assert_eq!(chunks.len(), 7, "{chunks:?}");
    assert!(DataObjectPath::is_archive(&chunks[0].object));
    assert_eq!((chunks[0].base_offset, chunks[0].end_offset), (0, 60));
    assert!(
        chunks[1..]
            .iter()
            .all(|c| !DataObjectPath::is_archive(&c.object))
    );

    // The same rows at the same offsets, however read; after a restart too.
    for _ in 0..2 {
        assert_eq!(read(&f.log, 0..u64::MAX, None).await, whole);
        assert_eq!(read(&f.log, 25..45, Some(vec![6, 0, 4])).await, part);
        assert_eq!(timed(&f.log).await, by_time);
        f.reopen().await;
    }
    // An archive chunk is a Parquet file any reader opens.
    let bytes = f
        .objects
        .get(&object_store::path::Path::from(chunks[0].object.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let parquet = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = parquet.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 60);

    // Compaction leaves the archive alone; the young chunks merge, and
    // are archived once old.
    f.clock.advance(2 * MINUTE);
    let r = f.log.maintain().await.unwrap();
    assert_eq!((r.compactions, r.archives), (1, 0), "{r:?}");
    f.clock.advance(2 * 60 * MINUTE);
    let r = f.log.maintain().await.unwrap();
    assert_eq!((r.archives, r.archived_chunks), (1, 1), "{r:?}");
    assert_eq!(read(&f.log, 0..u64::MAX, None).await, whole);
    // The replaced objects go after the grace period.
    assert!(r.deleted_objects > 0, "{r:?}");
}

per_backend!(
    old_rows_go_into_the_archive_and_read_the_same,
    a_tables_log_keeps_each_keys_latest_row,
    retention_deletes_old_chunks_oldest_first,
    compaction_merges_small_chunks_and_gc_deletes_the_old,
    two_agents_maintaining_at_once_lose_nothing,
    objects_of_failed_commits_are_collected_after_the_grace_period,
);
