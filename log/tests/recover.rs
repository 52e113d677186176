//! Losing the metadata store: the index rebuilt from the objects alone, or
//! a backup rolled forward with the objects written after it — every
//! acknowledged row back at its offset, on every object-store backend.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, TimestampMicrosecondArray};
use bytes::Bytes;
use common::{Backend, Fixture, collect, i64s, orders};
use streamhouse_log::manifest::{self, Manifest, ManifestChunk};
use streamhouse_log::path::DataObjectPath;
use streamhouse_log::recover::{self, Recovered};
use streamhouse_log::stream::chunk_schema;
use streamhouse_log::{
    AppendOptions, Clock, LogConfig, MetadataStore, SchemaChange, SqliteMetadata, StreamSpec,
    backup,
};

const MINUTE: i64 = 60_000_000;

fn config(c: &mut LogConfig) {
    c.maintenance.grace = Duration::ZERO;
    c.maintenance.compact_after = Duration::from_secs(60);
}

/// Appends `flushes` flushes of 10 rows to a partition, ids from `first`;
/// the offsets each got.
async fn append(f: &Fixture, stream: &str, partition: u32, first: i64, flushes: i64) -> Vec<u64> {
    let mut offsets = Vec::new();
    for i in 0..flushes {
        let ids = first + i * 10..first + i * 10 + 10;
        let ack = f
            .log
            .append(
                stream,
                orders(ids, 3, 1_700_000_000_000_000),
                AppendOptions::to_partition(partition),
            )
            .await
            .unwrap();
        offsets.push(ack.parts[0].base_offset);
        f.clock.advance(1_000_000);
    }
    offsets
}

/// Every (offset, id) of every partition of `streams`.
async fn contents(f: &Fixture, streams: &[(&str, u32)]) -> Vec<(String, u32, Vec<(i64, i64)>)> {
    let mut out = Vec::new();
    for &(stream, partitions) in streams {
        for p in 0..partitions {
            let rows = collect(f.log.read(stream, p, 0..u64::MAX, None).await.unwrap()).await;
            let pairs = i64s(&rows, "_offset")
                .into_iter()
                .zip(i64s(&rows, "id"))
                .collect();
            out.push((stream.to_string(), p, pairs));
        }
    }
    out
}

/// Stops the log, loses its metadata file, restores backup `backup_key`
/// (or nothing) in its place, rolls it forward and opens the log on it.
async fn lose_and_recover(f: &mut Fixture, backup_key: Option<&str>) -> Recovered {
    f.log.shutdown().await;
    let file = f.dir.path().join("metadata.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    if let Some(key) = backup_key {
        backup::restore(&f.store, Some(key), &file).await.unwrap();
    }
    let meta = SqliteMetadata::open(&file).await.unwrap();
    let recovered = recover::roll_forward(&meta, &f.store, f.clock.now_micros())
        .await
        .unwrap();
    meta.close().await;
    f.reopen().await;
    recovered
}

/// A flush whose commit never happened (its process died): an object
/// holding rows for the partition's end that the index never got.
async fn orphan_flush(f: &Fixture, stream: &str, partition: u32, at: u64) {
    let info = f.log.stream(stream).await.unwrap();
    let rows = orders(900_000..900_005, 3, 0);
    let mut cols = rows.columns().to_vec();
    cols.push(Arc::new(
        TimestampMicrosecondArray::from_value(0, rows.num_rows()).with_timezone("UTC"),
    ));
    let schema = chunk_schema(&info.spec.schema);
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut object = streamhouse_log::chunk::encode(&schema, &[batch], 1).unwrap();
    let len = object.len() as u64;
    manifest::append(
        &mut object,
        &Manifest {
            chunks: vec![ManifestChunk {
                stream: info.id,
                partition,
                schema_version: info.schema_version,
                bytes: [0, len],
                offsets: [at, at + 5],
                exact: false,
                sparse_rows: None,
                event_time: [None, None],
                append_time: [Some(0), Some(0)],
            }],
        },
    )
    .unwrap();
    f.store
        .put_durable(DataObjectPath::new_unique().as_path(), Bytes::from(object))
        .await
        .unwrap();
}

async fn the_index_is_rebuilt_from_the_objects_alone(b: Backend) {
    let mut f = Fixture::with_config(b, config).await;
    let spec = |name: &str, partitions| {
        StreamSpec::new(name, common::orders_schema()).with_partitions(partitions)
    };
    f.log.create_stream(spec("a", 2)).await.unwrap();
    f.log.create_stream(spec("b", 1)).await.unwrap();
    f.log.create_stream(spec("gone", 1)).await.unwrap();
    f.log.create_stream(spec("empty", 3)).await.unwrap();

    // Ten flushes to a/0, compacted, and their objects collected: only the
    // compacted object holds offsets 0..100.
    append(&f, "a", 0, 0, 10).await;
    f.clock.advance(2 * MINUTE);
    let r = f.log.maintain().await.unwrap();
    assert_eq!(r.compacted_chunks, 10, "{r:?}");
    f.clock.advance(1);
    assert!(f.log.maintain().await.unwrap().deleted_objects >= 10);
    append(&f, "a", 0, 100, 3).await;
    append(&f, "a", 1, 1000, 4).await;
    // b changes its columns and options between flushes.
    append(&f, "b", 0, 0, 2).await;
    f.log
        .alter_stream("b", &[SchemaChange::DropNotNull("user".into())], "ALTER")
        .await
        .unwrap();
    f.log
        .set_stream_options("b", Some(Duration::from_secs(86_400 * 365 * 100)), None)
        .await
        .unwrap();
    append(&f, "b", 0, 20, 2).await;
    // A flush that never committed, then the rows written again.
    let end = f
        .log
        .metadata()
        .partition_ends(f.log.stream("b").await.unwrap().id);
    let end = end.await.unwrap()[0];
    orphan_flush(&f, "b", 0, end).await;
    append(&f, "b", 0, 40, 1).await;
    // A dropped stream's rows stay dropped.
    append(&f, "gone", 0, 0, 2).await;
    f.log.drop_stream("gone").await.unwrap();

    let streams = [("a", 2), ("b", 1), ("empty", 3)];
    let before = contents(&f, &streams).await;
    let rows: usize = before.iter().map(|(_, _, r)| r.len()).sum();
    assert_eq!(rows, 100 + 30 + 40 + 50);
    let b_info = f.log.stream("b").await.unwrap();

    let r = lose_and_recover(&mut f, None).await;
    assert!(r.definitions, "{r:?}");
    let mut made = r.streams_made.clone();
    made.sort();
    assert_eq!(made, ["a", "b", "empty"], "{r:?}");
    assert_eq!(r.chunks_superseded, 1, "the orphan flush: {r:?}");
    assert_eq!(r.rows_added, 220, "{r:?}");
    assert_eq!(r.chunks_of_unknown_streams, 2, "{r:?}");
    assert!(r.gaps.is_empty(), "{r:?}");

    assert_eq!(contents(&f, &streams).await, before);
    // The stream is as it was: id, version, options; and it takes appends
    // at the next offsets.
    assert_eq!(*f.log.stream("b").await.unwrap(), *b_info);
    assert!(f.log.stream("gone").await.is_err());
    let next = append(&f, "b", 0, 50, 1).await;
    assert_eq!(next, [50]);
    // A second recovery of the same objects finds the same.
    let again = contents(&f, &streams).await;
    lose_and_recover(&mut f, None).await;
    assert_eq!(contents(&f, &streams).await, again);
}

async fn a_backup_is_rolled_forward_with_the_objects_written_after_it(b: Backend) {
    let mut f = Fixture::with_config(b, config).await;
    let spec = |name: &str| StreamSpec::new(name, common::orders_schema()).with_partitions(1);
    f.log.create_stream(spec("a")).await.unwrap();
    f.log.create_stream(spec("dropped_later")).await.unwrap();
    append(&f, "a", 0, 0, 10).await;
    let taken = backup::take(f.log.metadata().as_ref(), &f.store, f.dir.path())
        .await
        .unwrap();
    // After the backup: the chunks it lists are compacted and collected,
    // more rows arrive, a stream is made and one dropped.
    f.clock.advance(2 * MINUTE);
    assert_eq!(f.log.maintain().await.unwrap().compacted_chunks, 10);
    f.clock.advance(1);
    assert!(f.log.maintain().await.unwrap().deleted_objects >= 10);
    append(&f, "a", 0, 100, 5).await;
    f.log.create_stream(spec("new")).await.unwrap();
    append(&f, "new", 0, 0, 3).await;
    f.log.drop_stream("dropped_later").await.unwrap();

    let streams = [("a", 1), ("new", 1)];
    let before = contents(&f, &streams).await;
    let r = lose_and_recover(&mut f, Some(&taken.key)).await;
    assert_eq!(r.streams_made, ["new"], "{r:?}");
    assert_eq!(r.streams_dropped, ["dropped_later"], "{r:?}");
    assert_eq!(r.chunks_replaced, 10, "the compacted chunk in place: {r:?}");
    assert_eq!(r.rows_added, 80, "{r:?}");
    assert_eq!(contents(&f, &streams).await, before);
    let meta = f.log.metadata();
    let checked = backup::check(meta.as_ref() as &dyn MetadataStore, &f.store)
        .await
        .unwrap();
    assert!(checked.missing.is_empty(), "{checked:?}");
}

per_backend!(
    the_index_is_rebuilt_from_the_objects_alone,
    a_backup_is_rolled_forward_with_the_objects_written_after_it,
);
