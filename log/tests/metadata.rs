//! The metadata store's contract, checked against both implementations:
//! embedded SQLite and a real PostgreSQL server. Where it matters, two
//! handles on the same store stand for two agents committing at once.

mod common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use streamhouse_log::groups::classic::{ClassicError, ClassicOp, ClassicReply, JoinAsk, Phase};
use streamhouse_log::groups::{CommitCheck, GroupOp, OwnerCheck, Strategy};
use streamhouse_log::metadata::{
    ChunkRecord, CommitOutcome, FlushCommit, GroupOffsets, NewAppend, NewChunk, Rejection, SeqRun,
    SharedRow, SharedStaged, TxnCommit,
};
use streamhouse_log::{
    AgentRecord, Change, ConnectorRecord, ErrorKind, GrantRecord, Log, LogConfig, LogError,
    MetadataStore, PostgresMetadata, ProducerSeq, RoleRecord, SqliteMetadata, Store, StreamSpec,
    SystemClock, TimeFilter, ViewCheckpoint, ViewLease, ViewRecord,
};
use tempfile::TempDir;

const T0: i64 = 1_700_000_000_000_000;

/// Which metadata store a test runs against.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Sqlite,
    Postgres,
}

/// A store under test; `handle` opens another connection to the same one.
struct Stores {
    kind: Kind,
    url: String,
    _dir: TempDir,
}

impl Stores {
    async fn new(kind: Kind) -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let url = match kind {
            Kind::Sqlite => format!("sqlite://{}", dir.path().join("m.db").display()),
            Kind::Postgres => common::postgres_url().await,
        };
        Stores {
            kind,
            url,
            _dir: dir,
        }
    }

    async fn handle(&self) -> Arc<dyn MetadataStore> {
        match self.kind {
            Kind::Sqlite => Arc::new(SqliteMetadata::open_url(&self.url).await.unwrap()),
            Kind::Postgres => Arc::new(PostgresMetadata::connect(&self.url).await.unwrap()),
        }
    }
}

fn spec(name: &str, partitions: u32) -> StreamSpec {
    StreamSpec::new(name, common::orders_schema())
        .with_partitions(partitions)
        .with_key(["user"])
        .with_event_time("ts", Duration::from_secs(5))
}

/// A flush of one chunk per `(partition, rows)`, each with event times
/// `t..t+rows`, and one append covering all of them.
fn flush(stream: i64, parts: &[(u32, u64)], t: i64, producer: Option<ProducerSeq>) -> FlushCommit {
    let mut chunks = Vec::new();
    let mut at = 0;
    for &(partition, rows) in parts {
        chunks.push(NewChunk {
            stream_id: stream,
            partition,
            byte_range: at..at + rows * 10,
            rows,
            event_time: streamhouse_log::chunk::TimeBounds {
                min: Some(t),
                max: Some(t + rows as i64 - 1),
            },
            append_time: streamhouse_log::chunk::TimeBounds {
                min: Some(t),
                max: Some(t),
            },
            schema_version: 1,
        });
        at += rows * 10;
    }
    let slices = (0..chunks.len()).map(|i| (i, 0, chunks[i].rows)).collect();
    FlushCommit {
        object: format!("data/{}", ulid::Ulid::new()),
        object_size: at,
        created_at: t,
        chunks,
        appends: vec![NewAppend {
            stream_id: stream,
            producer,
            transaction: None,
            slices,
        }],
        transactions: Vec::new(),
    }
}

fn producer(id: &str, sequence: u64) -> Option<ProducerSeq> {
    Some(ProducerSeq {
        producer_id: id.into(),
        sequence,
        progress: Some(format!("p{sequence}")),
        epoch: None,
        first: None,
    })
}

fn committed(o: CommitOutcome) -> Vec<u64> {
    match o {
        CommitOutcome::Committed { chunk_base_offsets } => chunk_base_offsets,
        other => panic!("expected a commit, got {other:?}"),
    }
}

async fn all_chunks(m: &dyn MetadataStore, stream: i64, partition: u32) -> Vec<ChunkRecord> {
    m.chunks_by_offset(stream, partition, 0..u64::MAX)
        .await
        .unwrap()
}

/// Agents starting together on a fresh store apply the schema once and all
/// come up.
async fn handles_opened_together_migrate_once(kind: Kind) {
    let s = Arc::new(Stores::new(kind).await);
    let opens = (0..4).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { s.handle().await.streams().await.unwrap().len() })
    });
    for n in futures::future::join_all(opens).await {
        assert_eq!(n.unwrap(), 0);
    }
}

async fn streams_are_created_listed_and_dropped(kind: Kind) {
    let s = Stores::new(kind).await;
    let m = s.handle().await;
    let a = m.create_stream(&spec("a", 3), T0).await.unwrap();
    let b = m.create_stream(&spec("b", 1), T0 + 1).await.unwrap();
    assert_ne!(a.id, b.id);
    let e = m.create_stream(&spec("a", 2), T0).await.unwrap_err();
    assert!(
        matches!(e, LogError::StreamExists(ref n) if n == "a"),
        "{e}"
    );

    // Another handle (agent) sees them exactly as declared.
    let other = s.handle().await;
    let got = other.stream("a").await.unwrap().unwrap();
    assert_eq!(got, a);
    assert_eq!(got.spec.retention, None);
    let names: Vec<String> = other
        .streams()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(other.partition_ends(a.id).await.unwrap(), vec![0, 0, 0]);

    committed(
        m.commit_flush(&flush(a.id, &[(0, 5)], T0, None))
            .await
            .unwrap(),
    );
    let dropped = other.drop_stream("a").await.unwrap();
    assert_eq!(dropped.id, a.id);
    assert!(m.stream("a").await.unwrap().is_none());
    assert!(m.partition_ends(a.id).await.unwrap().is_empty());
    assert!(all_chunks(&*m, a.id, 0).await.is_empty());
    assert_eq!(
        m.drop_stream("a").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // A name dropped can be created again, with a new id.
    let again = m.create_stream(&spec("a", 1), T0 + 2).await.unwrap();
    assert!(again.id > b.id);

    // Options are kept as declared and changed in place, for every agent.
    let day = Duration::from_secs(86_400);
    let c = m
        .create_stream(&spec("c", 1).with_archive_after(day), T0 + 3)
        .await
        .unwrap();
    assert_eq!(other.stream("c").await.unwrap().unwrap(), c);
    let set = other
        .set_stream_options("c", Some(7 * day), None)
        .await
        .unwrap();
    assert_eq!(
        (set.spec.retention, set.spec.archive_after),
        (Some(7 * day), None)
    );
    assert_eq!(m.stream("c").await.unwrap().unwrap(), set);
    let zero = m.set_stream_options("c", Some(Duration::ZERO), None).await;
    assert_eq!(zero.unwrap_err().kind(), ErrorKind::InvalidArgument);
    let missing = m.set_stream_options("nope", None, None).await;
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
}

/// Several committers on two handles: every flush gets offsets that follow
/// the previous one's in each partition, none overlapping, none skipped.
/// A new stream's schema is its version 1, which every agent sees, and its
/// chunks record the version they were written with; dropping the stream
/// drops its versions.
async fn schema_versions_are_recorded_with_streams_and_chunks(kind: Kind) {
    let s = Stores::new(kind).await;
    let m = s.handle().await;
    let a = m.create_stream(&spec("a", 1), T0).await.unwrap();
    assert_eq!(a.schema_version, 1);
    let other = s.handle().await;
    assert_eq!(other.stream("a").await.unwrap().unwrap().schema_version, 1);
    let versions = other.schema_versions(a.id).await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(
        (versions[0].version, versions[0].change.as_str()),
        (1, "CREATE STREAM")
    );
    assert_eq!(versions[0].schema, a.spec.schema);
    assert_eq!(versions[0].created_at, T0);

    committed(
        m.commit_flush(&flush(a.id, &[(0, 3)], T0, None))
            .await
            .unwrap(),
    );
    let chunks = all_chunks(other.as_ref(), a.id, 0).await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].schema_version, 1);

    m.drop_stream("a").await.unwrap();
    assert!(other.schema_versions(a.id).await.unwrap().is_empty());
}

async fn concurrent_commits_get_dense_offsets(kind: Kind) {
    let s = Stores::new(kind).await;
    let handles = [s.handle().await, s.handle().await];
    let info = handles[0].create_stream(&spec("o", 4), T0).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..6u64 {
        let m = handles[w as usize % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut rows = 0;
            for i in 0..25u64 {
                let parts: Vec<(u32, u64)> = (0..4)
                    .filter(|p| !(w + i + *p as u64).is_multiple_of(3))
                    .map(|p| (p, 1 + (w * 7 + i * 3 + p as u64) % 11))
                    .collect();
                rows += parts.iter().map(|p| p.1).sum::<u64>();
                committed(
                    m.commit_flush(&flush(info.id, &parts, T0 + i as i64, None))
                        .await
                        .unwrap(),
                );
            }
            rows
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let ends = handles[1].partition_ends(info.id).await.unwrap();
    assert_eq!(ends.iter().sum::<u64>(), total);
    for p in 0..4 {
        let chunks = all_chunks(&*handles[0], info.id, p).await;
        let mut next = 0;
        for c in &chunks {
            assert_eq!(c.base_offset, next, "partition {p}: gap or overlap");
            next = c.end_offset;
        }
        assert_eq!(next, ends[p as usize]);
    }
}

async fn idempotent_producers_commit_each_sequence_once(kind: Kind) {
    let s = Stores::new(kind).await;
    let m = s.handle().await;
    let info = m.create_stream(&spec("o", 2), T0).await.unwrap();
    let first = committed(
        m.commit_flush(&flush(info.id, &[(0, 3), (1, 2)], T0, producer("p", 1)))
            .await
            .unwrap(),
    );
    assert_eq!(first, vec![0, 0]);
    assert_eq!(
        m.producer_progress("p", info.id).await.unwrap(),
        Some((1, Some("p1".into())))
    );
    // The latest sequence again: refused, with the offsets it received.
    match m
        .commit_flush(&flush(info.id, &[(0, 3), (1, 2)], T0, producer("p", 1)))
        .await
        .unwrap()
    {
        CommitOutcome::Rejected { rejections } => {
            let [
                (
                    0,
                    Rejection::Duplicate {
                        previous: Some(ack),
                    },
                ),
            ] = &rejections[..]
            else {
                panic!("{rejections:?}")
            };
            let ack: Vec<(u32, u64, u64)> = ack
                .iter()
                .map(|a| (a.partition, a.base_offset, a.rows))
                .collect();
            assert_eq!(ack, [(0, 0, 3), (1, 0, 2)]);
        }
        other => panic!("{other:?}"),
    }
    committed(
        m.commit_flush(&flush(info.id, &[(0, 1)], T0, producer("p", 2)))
            .await
            .unwrap(),
    );
    // An older sequence: refused without offsets.
    assert_eq!(
        m.commit_flush(&flush(info.id, &[(0, 1)], T0, producer("p", 1)))
            .await
            .unwrap(),
        CommitOutcome::Rejected {
            rejections: vec![(0, Rejection::Duplicate { previous: None })]
        }
    );
    assert_eq!(m.partition_ends(info.id).await.unwrap(), vec![4, 2]);

    // The same sequence from two agents at once: exactly one commits.
    let other = s.handle().await;
    for seq in 3..13 {
        let fa = flush(info.id, &[(1, 1)], T0, producer("q", seq));
        let fb = flush(info.id, &[(1, 1)], T0, producer("q", seq));
        let (a, b) = tokio::join!(m.commit_flush(&fa), other.commit_flush(&fb));
        let wins = [a.unwrap(), b.unwrap()]
            .iter()
            .filter(|o| matches!(o, CommitOutcome::Committed { .. }))
            .count();
        assert_eq!(wins, 1, "sequence {seq}");
    }
    assert_eq!(m.partition_ends(info.id).await.unwrap(), vec![4, 12]);
}

async fn a_dropped_stream_rejects_its_flush(kind: Kind) {
    let s = Stores::new(kind).await;
    let m = s.handle().await;
    let info = m.create_stream(&spec("o", 1), T0).await.unwrap();
    s.handle().await.drop_stream("o").await.unwrap();
    assert_eq!(
        m.commit_flush(&flush(info.id, &[(0, 3)], T0, None))
            .await
            .unwrap(),
        CommitOutcome::Rejected {
            rejections: vec![(0, Rejection::StreamGone)]
        }
    );
}

async fn chunks_are_found_by_offset_and_time(kind: Kind) {
    let s = Stores::new(kind).await;
    let m = s.handle().await;
    let info = m.create_stream(&spec("o", 1), T0).await.unwrap();
    // Chunks of 10 rows, event times 100 µs apart.
    for i in 0..5 {
        committed(
            m.commit_flush(&flush(info.id, &[(0, 10)], T0 + i * 100, None))
                .await
                .unwrap(),
        );
    }
    let bases = |c: Vec<ChunkRecord>| c.iter().map(|c| c.base_offset).collect::<Vec<_>>();
    let by_offset = |r: Range<u64>| m.chunks_by_offset(info.id, 0, r);
    assert_eq!(bases(by_offset(15..25).await.unwrap()), [10, 20]);
    assert_eq!(bases(by_offset(20..21).await.unwrap()), [20]);
    assert!(by_offset(50..60).await.unwrap().is_empty());
    let filter = TimeFilter {
        event_time: Some(T0 + 105..T0 + 201),
        append_time: None,
    };
    assert_eq!(
        bases(m.chunks_by_time(info.id, 0, &filter).await.unwrap()),
        [10, 20]
    );
    let filter = TimeFilter {
        event_time: None,
        append_time: Some(T0 + 400..T0 + 1000),
    };
    assert_eq!(
        bases(m.chunks_by_time(info.id, 0, &filter).await.unwrap()),
        [40]
    );
    let chunk = &by_offset(0..1).await.unwrap()[0];
    assert_eq!(chunk.byte_range, 0..100);
    assert_eq!(chunk.event_time.min, Some(T0));
    assert_eq!(chunk.event_time.max, Some(T0 + 9));

    let stats = m.partition_stats(info.id).await.unwrap();
    assert_eq!(stats.len(), 1);
    let st = &stats[0];
    assert_eq!(
        (
            st.next_offset,
            st.first_offset,
            st.rows,
            st.bytes,
            st.chunks
        ),
        (50, Some(0), 50, 500, 5)
    );
    assert_eq!(st.last_append, Some(T0 + 400));

    // All streams in one query: the same answer per stream.
    let other = m.create_stream(&spec("other", 2), T0).await.unwrap();
    let all = m.all_partition_stats().await.unwrap();
    let of = |id| {
        all.iter()
            .filter(|(s, _)| *s == id)
            .map(|(_, p)| p.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(info.id), stats);
    let empty = of(other.id);
    assert_eq!(
        empty
            .iter()
            .map(|p| (p.partition, p.next_offset, p.first_offset, p.chunks))
            .collect::<Vec<_>>(),
        [(0, 0, None, 0), (1, 0, None, 0)]
    );
}

async fn group_offsets_are_kept_per_partition(kind: Kind) {
    let s = Stores::new(kind).await;
    let m = s.handle().await;
    let info = m.create_stream(&spec("o", 3), T0).await.unwrap();
    m.commit_group_offsets("g", info.id, &[(0, 5), (2, 7)], T0, None, None)
        .await
        .unwrap();
    m.commit_group_offsets("g", info.id, &[(2, 9)], T0 + 1, None, None)
        .await
        .unwrap();
    m.commit_group_offsets("h", info.id, &[(1, 1)], T0, None, None)
        .await
        .unwrap();
    // A commit past its deadline (its client may have given up and
    // committed again) writes nothing.
    let past = streamhouse_log::monotonic() - Duration::from_millis(1);
    let e = m
        .commit_group_offsets("g", info.id, &[(0, 1), (1, 1)], T0 + 2, None, Some(past))
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::TimedOut(_)), "{e}");
    let other = s.handle().await;
    assert_eq!(
        other.group_offsets("g", info.id).await.unwrap(),
        [(0, 5), (2, 9)]
    );
    assert_eq!(
        other.groups().await.unwrap(),
        [("g".to_string(), info.id), ("h".to_string(), info.id)]
    );
    other.drop_stream("o").await.unwrap();
    assert!(m.groups().await.unwrap().is_empty());
}

/// A transactional producer's start bumps its epoch on every agent; a
/// flush carrying its transaction commits the group offsets with the
/// chunks, and is rejected whole once a newer instance has started (an
/// offsets-only commit too).
async fn transactions_commit_offsets_with_their_appends_in_their_epoch(kind: Kind) {
    let s = Stores::new(kind).await;
    let (a, b) = (s.handle().await, s.handle().await);
    let info = a.create_stream(&spec("t", 2), T0).await.unwrap();
    assert_eq!(a.init_transactional_producer("tx", T0).await.unwrap(), 1);
    assert_eq!(b.init_transactional_producer("other", T0).await.unwrap(), 1);
    let txn = |epoch, offset| TxnCommit {
        transactional_id: "tx".into(),
        epoch,
        offsets: vec![GroupOffsets {
            group: "g".into(),
            stream_id: info.id,
            offsets: vec![(0, offset), (1, offset + 1)],
        }],
        shared: None,
        sequences: Vec::new(),
    };
    let with_txn = |epoch, offset| {
        let mut c = flush(info.id, &[(0, 4), (1, 2)], T0, None);
        c.transactions = vec![txn(epoch, offset)];
        c.appends[0].transaction = Some(0);
        c
    };
    assert_eq!(
        committed(a.commit_flush(&with_txn(1, 10)).await.unwrap()),
        [0, 0]
    );
    assert_eq!(
        b.group_offsets("g", info.id).await.unwrap(),
        [(0, 10), (1, 11)]
    );
    // Started again on the other agent: the old epoch can commit nothing.
    assert_eq!(b.init_transactional_producer("tx", T0).await.unwrap(), 2);
    let fenced = Rejection::TransactionFenced {
        transactional_id: "tx".into(),
        epoch: 1,
        current: Some(2),
    };
    assert_eq!(
        a.commit_flush(&with_txn(1, 20)).await.unwrap(),
        CommitOutcome::Rejected {
            rejections: vec![(0, fenced)]
        }
    );
    let e = a
        .commit_transaction_offsets(&txn(1, 30), T0)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains("fenced"), "{e}");
    // An id never started commits nothing either.
    let mut never = txn(1, 40);
    never.transactional_id = "never".into();
    assert!(a.commit_transaction_offsets(&never, T0).await.is_err());
    assert_eq!(all_chunks(&*b, info.id, 0).await.len(), 1);
    assert_eq!(
        b.group_offsets("g", info.id).await.unwrap(),
        [(0, 10), (1, 11)]
    );
    // The current epoch commits offsets alone.
    a.commit_transaction_offsets(&txn(2, 50), T0).await.unwrap();
    assert_eq!(
        b.group_offsets("g", info.id).await.unwrap(),
        [(0, 50), (1, 51)]
    );
}

/// Rows staged on one agent for a producer started on another: checked
/// against the epoch and the partition's sequences when recorded, listed
/// for the open transaction only, taken by the commit that ends it (which
/// refuses a transaction ended meanwhile), dropped by an abort and by a
/// new epoch.
async fn shared_staging_follows_the_producers_transactions(kind: Kind) {
    let s = Stores::new(kind).await;
    let (a, b) = (s.handle().await, s.handle().await);
    let info = a.create_stream(&spec("t", 2), T0).await.unwrap();
    let row = |object: &str, partition| SharedRow {
        object: object.into(),
        stream_id: info.id,
        stream_name: "t".into(),
        partition,
        bytes: 100,
        offsets: None,
        staged_at: T0,
        seq: None,
    };
    let run = |first, last| Some(SeqRun { first, last });
    // Never started: refused.
    let e = b
        .stage_shared("tx", 1, &row("o0", 0), run(0, 4), 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(e, LogError::UnknownTransactionalProducer(_)),
        "{e}"
    );
    assert_eq!(a.init_transactional_producer("tx", T0).await.unwrap(), 1);
    assert_eq!(b.transactional_epoch("tx").await.unwrap(), Some(1));
    let staged = |o: &str, p, first, last| {
        let (b, r) = (&b, row(o, p));
        async move { b.stage_shared("tx", 1, &r, run(first, last), 1 << 20).await }
    };
    assert_eq!(staged("o1", 0, 0, 4).await.unwrap(), SharedStaged::Staged);
    // A retry is a duplicate; an overlap is out of order (a gap is not:
    // the runs between may have gone to the producer's own agent); each
    // partition has its own sequences.
    assert_eq!(
        staged("o1b", 0, 0, 4).await.unwrap(),
        SharedStaged::Duplicate
    );
    let e = staged("o2", 0, 3, 6).await.unwrap_err();
    assert!(matches!(e, LogError::OutOfOrderSequence(_)), "{e}");
    assert_eq!(staged("o3", 1, 0, 0).await.unwrap(), SharedStaged::Staged);
    assert_eq!(staged("o4", 0, 5, 6).await.unwrap(), SharedStaged::Staged);
    // Past the transaction's bound of staged bytes.
    let e = b
        .stage_shared("tx", 1, &row("o5", 1), None, 300)
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::LimitExceeded(_)), "{e}");
    let (n, rows) = a.shared_staged("tx", 1).await.unwrap();
    let objects: Vec<_> = rows.iter().map(|r| r.object.as_str()).collect();
    assert_eq!(objects, ["o1", "o3", "o4"]);
    assert!(a.knows_staged("o3").await.unwrap());
    assert!(!a.knows_staged("o1b").await.unwrap());
    // The commit takes them and ends the transaction; a second commit of
    // the same transaction is refused.
    let txn = TxnCommit {
        transactional_id: "tx".into(),
        epoch: 1,
        offsets: Vec::new(),
        shared: Some(n),
        // Runs up to 11 were committed (some staged on the producer's
        // own agent).
        sequences: vec![(info.id, 0, 12)],
    };
    let mut c = flush(info.id, &[(0, 7)], T0, None);
    c.transactions = vec![txn.clone()];
    c.appends[0].transaction = Some(0);
    assert_eq!(committed(a.commit_flush(&c).await.unwrap()), [0]);
    assert!(b.shared_staged("tx", 1).await.unwrap().1.is_empty());
    assert!(!a.knows_staged("o3").await.unwrap());
    let ended = Rejection::TransactionEnded {
        transactional_id: "tx".into(),
    };
    assert_eq!(
        a.commit_flush(&c).await.unwrap(),
        CommitOutcome::Rejected {
            rejections: vec![(0, ended)]
        }
    );
    let e = a.commit_transaction_offsets(&txn, T0).await.unwrap_err();
    assert!(matches!(e, LogError::TransactionAborted(_)), "{e}");
    // A committed run staged late (its client gave up on an agent that was
    // paused, and sent it to another) is a duplicate, not a row of the
    // next transaction.
    assert_eq!(
        staged("late", 0, 8, 11).await.unwrap(),
        SharedStaged::Duplicate
    );
    // Sequences go on across the epoch's transactions; an abort drops what
    // the next transaction staged.
    assert_eq!(staged("o6", 0, 12, 12).await.unwrap(), SharedStaged::Staged);
    a.end_shared("tx", 1).await.unwrap();
    let (n2, rows) = b.shared_staged("tx", 1).await.unwrap();
    assert_eq!((n2, rows.len()), (n + 2, 0));
    // Group offsets ride along; a new epoch drops the old one's rows and
    // its sequences start over.
    let mut offsets = row("offsets/1", 0);
    offsets.offsets = Some(("g".into(), vec![(1, 9)]));
    b.stage_shared("tx", 1, &offsets, None, 1 << 20)
        .await
        .unwrap();
    assert_eq!(b.shared_staged("tx", 1).await.unwrap().1, [offsets]);
    assert_eq!(b.init_transactional_producer("tx", T0).await.unwrap(), 2);
    assert!(!a.knows_staged("offsets/1").await.unwrap());
    let e = staged("o7", 0, 8, 8).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let fresh = b
        .stage_shared("tx", 2, &row("o8", 0), run(0, 0), 1 << 20)
        .await
        .unwrap();
    assert_eq!(fresh, SharedStaged::Staged);
}

/// Members joining through different agents share one assignment; a
/// member that times out is dropped by whoever touches the group next; a
/// commit by a member that no longer owns the partition is refused in the
/// same transaction.
async fn classic_groups_rebalance_across_handles_and_check_commits(kind: Kind) {
    let s = Stores::new(kind).await;
    let a = s.handle().await;
    let b = s.handle().await;
    let info = a.create_stream(&spec("k", 2), T0).await.unwrap();
    let join = |member: &str| {
        ClassicOp::Join(JoinAsk {
            member: member.into(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), vec![1])],
        })
    };
    // m1 forms generation 1 through one handle, m2 joins through the
    // other, and m1 learns of the rebalance there.
    let ClassicReply::Joined(j1) = a
        .update_classic_group("g", &join("m1"), T0, &[], None)
        .await
        .unwrap()
    else {
        panic!("a lone member forms a generation")
    };
    assert_eq!(j1.generation, 1);
    let sync = ClassicOp::Sync {
        member: "m1".into(),
        generation: 1,
        assignments: Some(vec![("m1".into(), vec![0, 1])]),
    };
    a.update_classic_group("g", &sync, T0, &[], None)
        .await
        .unwrap();
    let pending = b
        .update_classic_group("g", &join("m2"), T0 + 1, &[], None)
        .await
        .unwrap();
    assert_eq!(pending, ClassicReply::Pending);
    let hb = ClassicOp::Heartbeat {
        member: "m1".into(),
        generation: 1,
    };
    assert_eq!(
        a.update_classic_group("g", &hb, T0 + 2, &[], None)
            .await
            .unwrap(),
        ClassicReply::Refused(ClassicError::RebalanceInProgress)
    );
    let ClassicReply::Joined(j2) = a
        .update_classic_group("g", &join("m1"), T0 + 3, &[], None)
        .await
        .unwrap()
    else {
        panic!("every member rejoined")
    };
    assert_eq!((j2.generation, j2.members.len()), (2, 2));
    // A commit in a stale generation writes nothing; the current one does.
    let stale = ClassicOp::Commit {
        member: "m2".into(),
        generation: 1,
    };
    let offsets = [(info.id, vec![(1, 7)])];
    assert_eq!(
        b.update_classic_group("g", &stale, T0 + 4, &offsets, None)
            .await
            .unwrap(),
        ClassicReply::Refused(ClassicError::IllegalGeneration)
    );
    assert!(a.group_offsets("g", info.id).await.unwrap().is_empty());
    let sync = ClassicOp::Sync {
        member: "m1".into(),
        generation: 2,
        assignments: Some(vec![("m1".into(), vec![0]), ("m2".into(), vec![1])]),
    };
    a.update_classic_group("g", &sync, T0 + 5, &[], None)
        .await
        .unwrap();
    let current = ClassicOp::Commit {
        member: "m2".into(),
        generation: 2,
    };
    assert_eq!(
        b.update_classic_group("g", &current, T0 + 6, &offsets, None)
            .await
            .unwrap(),
        ClassicReply::Ok
    );
    assert_eq!(a.group_offsets("g", info.id).await.unwrap(), [(1, 7)]);
    // The same member's older commit, held up past its deadline, does not
    // land after the newer one.
    let past = streamhouse_log::monotonic() - Duration::from_millis(1);
    let e = b
        .update_classic_group(
            "g",
            &current,
            T0 + 7,
            &[(info.id, vec![(1, 3)])],
            Some(past),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::TimedOut(_)), "{e}");
    assert_eq!(a.group_offsets("g", info.id).await.unwrap(), [(1, 7)]);
    let groups = b.classic_groups().await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(
        (groups[0].1.phase, groups[0].1.generation),
        (Phase::Stable, 2)
    );
}

async fn group_membership_is_shared_and_fences_commits(kind: Kind) {
    let s = Stores::new(kind).await;
    let a = s.handle().await;
    let b = s.handle().await;
    let info = a.create_stream(&spec("o", 4), T0).await.unwrap();
    let join = |member: &str, timeout_ms| GroupOp::Join {
        member: member.into(),
        stream_id: info.id,
        stream: "o".into(),
        partitions: 4,
        strategy: Strategy::Range,
        timeout: Duration::from_millis(timeout_ms),
    };
    let g1 = a
        .update_group("g", &join("m1", 10_000), T0)
        .await
        .unwrap()
        .unwrap();
    let g2 = b
        .update_group("g", &join("m2", 1_000), T0 + 1)
        .await
        .unwrap()
        .unwrap();
    assert!(g2.generation > g1.generation);
    let plan = g2.assignment();
    assert_eq!(plan["m1"], vec![0, 1]);
    assert_eq!(plan["m2"], vec![2, 3]);
    let owner = |member: &str, generation, partitions: Vec<u32>| {
        CommitCheck::Owner(OwnerCheck {
            member: member.into(),
            generation: Some(generation),
            partitions,
        })
    };
    a.commit_group_offsets(
        "g",
        info.id,
        &[(2, 5)],
        T0,
        Some(&owner("m2", g2.generation, vec![2])),
        None,
    )
    .await
    .unwrap();
    // m1 may not commit m2's partition, nor an old generation.
    for check in [
        owner("m1", g2.generation, vec![2]),
        owner("m1", g1.generation, vec![0]),
    ] {
        let e = b
            .commit_group_offsets("g", info.id, &[(2, 1), (0, 1)], T0, Some(&check), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    }
    assert_eq!(a.group_offsets("g", info.id).await.unwrap(), [(2, 5)]);
    // A reset needs a group with no live member, checked in its transaction.
    let reset = CommitCheck::NoLiveMembers { now: T0 };
    let e = b
        .commit_group_offsets("g", info.id, &[(2, 0)], T0, Some(&reset), None)
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::GroupActive { members: 2, .. }), "{e}");
    assert_eq!(a.group_offsets("g", info.id).await.unwrap(), [(2, 5)]);
    // m2 misses its heartbeats: the next touch drops it and m1 owns all.
    let hb = GroupOp::Heartbeat {
        member: "m1".into(),
    };
    let g3 = b
        .update_group("g", &hb, T0 + 2_000_000)
        .await
        .unwrap()
        .unwrap();
    assert!(g3.generation > g2.generation);
    assert_eq!(g3.assignment()["m1"], vec![0, 1, 2, 3]);
    let hb2 = GroupOp::Heartbeat {
        member: "m2".into(),
    };
    assert_eq!(
        a.update_group("g", &hb2, T0 + 2_000_001)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );
    assert_eq!(a.group_names().await.unwrap(), ["g"]);
    assert_eq!(
        a.update_group("nope", &GroupOp::Observe, T0).await.unwrap(),
        None
    );
    b.drop_stream("o").await.unwrap();
    assert!(a.group_names().await.unwrap().is_empty());
}

async fn view_checkpoints_are_fenced(kind: Kind) {
    let s = Stores::new(kind).await;
    let m = s.handle().await;
    let view = ViewRecord {
        name: "v".into(),
        dataflow: "df1".into(),
        definition: "SELECT 1".into(),
        input_versions: [(7, 2), (9, 1)].into(),
        checkpoint: None,
        lease: ViewLease {
            owner: Some("a1".into()),
            epoch: 1,
            until: Some(T0 + 10),
        },
    };
    m.create_view(&view, T0).await.unwrap();
    assert_eq!(
        m.create_view(&view, T0).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let cp = |number| ViewCheckpoint {
        number,
        input_offsets: format!("{{\"1\":[{number}]}}"),
        state_key: format!("state/df1/{number}"),
    };
    m.commit_view_checkpoint("v", "df1", 1, &cp(2), T0)
        .await
        .unwrap();
    let other = s.handle().await;
    // Not newer, another incarnation's, or another epoch's: refused.
    for (dataflow, epoch, n) in [("df1", 1, 2), ("df1", 1, 1), ("df0", 1, 3), ("df1", 0, 3)] {
        let e = other
            .commit_view_checkpoint("v", dataflow, epoch, &cp(n), T0)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{dataflow} {epoch} {n}: {e}");
    }
    other
        .commit_view_checkpoint("v", "df1", 1, &cp(3), T0)
        .await
        .unwrap();
    assert_eq!(
        m.views().await.unwrap(),
        [ViewRecord {
            checkpoint: Some(cp(3)),
            ..view.clone()
        }]
    );
    assert!(other.drop_view("v").await.unwrap());
    assert!(!m.drop_view("v").await.unwrap());
    assert!(m.views().await.unwrap().is_empty());
}

/// A view's lease: taken only when free or expired (or stolen where no
/// other process shares the store), each taking bumps the epoch, a
/// superseded owner can neither renew nor checkpoint, and its producer is
/// fenced.
async fn view_leases_move_with_epochs_and_fence_the_old_owner(kind: Kind) {
    let s = Stores::new(kind).await;
    let a = s.handle().await;
    let b = s.handle().await;
    let view = ViewRecord {
        name: "v".into(),
        dataflow: "df".into(),
        definition: "SELECT 1".into(),
        input_versions: Default::default(),
        checkpoint: None,
        lease: ViewLease {
            owner: Some("a".into()),
            epoch: 1,
            until: Some(T0 + 100),
        },
    };
    a.create_view(&view, T0).await.unwrap();
    // Held and not expired: refused.
    assert_eq!(
        b.acquire_view_lease("v", "b", T0 + 50, T0 + 150, false)
            .await
            .unwrap(),
        None
    );
    assert!(a.renew_view_lease("v", "a", 1, T0 + 200).await.unwrap());
    // Expired: taken, epoch 2.
    assert_eq!(
        b.acquire_view_lease("v", "b", T0 + 201, T0 + 300, false)
            .await
            .unwrap(),
        Some(2)
    );
    assert!(!a.renew_view_lease("v", "a", 1, T0 + 400).await.unwrap());
    let cp = ViewCheckpoint {
        number: 1,
        input_offsets: "{}".into(),
        state_key: "k".into(),
    };
    let e = a
        .commit_view_checkpoint("v", "df", 1, &cp, T0)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    b.commit_view_checkpoint("v", "df", 2, &cp, T0)
        .await
        .unwrap();
    // Released: free for anyone at once.
    a.release_view_lease("v", "a", 1).await.unwrap(); // not a's: no effect
    assert_eq!(
        a.acquire_view_lease("v", "a", T0 + 250, T0 + 350, false)
            .await
            .unwrap(),
        None
    );
    b.release_view_lease("v", "b", 2).await.unwrap();
    assert_eq!(
        a.acquire_view_lease("v", "a", T0 + 250, T0 + 350, false)
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(
        b.acquire_view_lease("v", "b", T0 + 260, T0 + 360, true)
            .await
            .unwrap(),
        Some(4)
    );
    assert_eq!(
        a.acquire_view_lease("nope", "a", T0, T0 + 1, true)
            .await
            .unwrap(),
        None
    );
    let lease = &a.views().await.unwrap()[0].lease;
    assert_eq!(
        (lease.owner.as_deref(), lease.epoch, lease.until),
        (Some("b"), 4, Some(T0 + 360))
    );

    // The producer of the view's output: an append in epoch 3 after the
    // fence to 4 is refused; epoch 4 goes through; unfenced producers are
    // not judged by epoch.
    let info = a.create_stream(&spec("out", 1), T0).await.unwrap();
    let with_epoch = |seq, epoch| {
        let mut p = producer("view:df", seq).unwrap();
        p.epoch = Some(epoch);
        Some(p)
    };
    committed(
        a.commit_flush(&flush(info.id, &[(0, 2)], T0, with_epoch(1, 3)))
            .await
            .unwrap(),
    );
    b.fence_producer("view:df", info.id, 4).await.unwrap();
    assert_eq!(
        b.producer_progress("view:df", info.id).await.unwrap(),
        Some((1, Some("p1".into())))
    );
    assert_eq!(
        a.commit_flush(&flush(info.id, &[(0, 2)], T0, with_epoch(2, 3)))
            .await
            .unwrap(),
        CommitOutcome::Rejected {
            rejections: vec![(
                0,
                Rejection::Fenced {
                    epoch: 3,
                    current: 4
                }
            )]
        }
    );
    committed(
        b.commit_flush(&flush(info.id, &[(0, 2)], T0, with_epoch(2, 4)))
            .await
            .unwrap(),
    );
    // Fencing a producer that never wrote starts it at sequence 0.
    b.fence_producer("view:new", info.id, 7).await.unwrap();
    assert_eq!(
        b.producer_progress("view:new", info.id).await.unwrap(),
        Some((0, None))
    );
    assert_eq!(a.partition_ends(info.id).await.unwrap(), vec![4]);
}

async fn agents_register_and_heartbeat(kind: Kind) {
    let s = Stores::new(kind).await;
    let m = s.handle().await;
    let mut a = AgentRecord {
        id: "a1".into(),
        addresses: BTreeMap::from([("pgwire".to_string(), "127.0.0.1:5433".to_string())]),
        version: "0.1.0".into(),
        started_at: T0,
        heartbeat_at: T0,
        stopped_at: None,
    };
    m.register_agent(&a).await.unwrap();
    let b = AgentRecord {
        id: "b2".into(),
        started_at: T0 + 5,
        heartbeat_at: T0 + 5,
        ..a.clone()
    };
    s.handle().await.register_agent(&b).await.unwrap();
    a.heartbeat_at = T0 + 10;
    a.stopped_at = Some(T0 + 11);
    m.register_agent(&a).await.unwrap();
    assert_eq!(s.handle().await.agents().await.unwrap(), [a, b]);
}

/// What one agent commits, another is told (PostgreSQL); the embedded
/// store has no other agents to tell.
async fn commits_are_announced_to_other_agents(kind: Kind) {
    let s = Stores::new(kind).await;
    let m = s.handle().await;
    let other = s.handle().await;
    let rx = other.changes().await.unwrap();
    let Kind::Postgres = kind else {
        assert!(rx.is_none());
        return;
    };
    let mut rx = rx.unwrap();
    let info = m.create_stream(&spec("o", 2), T0).await.unwrap();
    committed(
        m.commit_flush(&flush(info.id, &[(0, 3), (1, 4)], T0, None))
            .await
            .unwrap(),
    );
    assert_eq!(
        recv(&mut rx).await,
        Change::Ends(vec![(info.id, 0, 3), (info.id, 1, 4)])
    );
    m.drop_stream("o").await.unwrap();
    assert_eq!(recv(&mut rx).await, Change::StreamDropped(info.id));
}

async fn recv(rx: &mut tokio::sync::mpsc::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an announcement")
        .unwrap()
}

/// Two logs (agents) over one object store and one metadata store: an
/// append through one is read through the other, and a tail reader on the
/// other wakes on the commit without polling.
async fn a_tail_reader_wakes_on_another_agents_commit(kind: Kind) {
    let s = Stores::new(kind).await;
    let objects: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::memory::InMemory::new());
    let open = |meta: Arc<dyn MetadataStore>| {
        let store = Store::from_parts(objects.clone(), streamhouse_log::StoreKind::Memory, None);
        let mut config = LogConfig::for_store(&store);
        config.tail_poll = Duration::from_secs(3600);
        Log::open(store, meta, config, Arc::new(SystemClock))
    };
    let a = open(s.handle().await);
    let b = open(s.handle().await);
    a.create_stream(spec("o", 1)).await.unwrap();
    let Kind::Postgres = kind else {
        // One process per embedded store: its own log tells its own readers.
        return;
    };
    let waiter = tokio::spawn(async move {
        let end = b.wait_for("o", 0, 0).await.unwrap();
        let rows = common::collect(b.read("o", 0, 0..end, None).await.unwrap()).await;
        common::i64s(&rows, "id")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.append(
        "o",
        common::orders(0..10, 3, T0),
        streamhouse_log::AppendOptions::to_partition(0),
    )
    .await
    .unwrap();
    let ids = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the announcement, not the hour-long poll")
        .unwrap();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
}

/// Roles are shared by every handle on the store (every agent), and their
/// names are unique.
async fn roles_are_shared_and_unique(kind: Kind) {
    let s = Stores::new(kind).await;
    let a = s.handle().await;
    let b = s.handle().await;
    let alice = RoleRecord {
        name: "alice".into(),
        superuser: false,
        login: true,
        verifier: Some("SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5".into()),
        created_at: 7,
    };
    a.create_role(&alice).await.unwrap();
    assert!(matches!(
        b.create_role(&alice).await,
        Err(LogError::RoleExists(n)) if n == "alice"
    ));
    assert_eq!(b.role("alice").await.unwrap(), Some(alice.clone()));
    let changed = RoleRecord {
        superuser: true,
        login: false,
        verifier: None,
        ..alice.clone()
    };
    b.alter_role(&changed).await.unwrap();
    assert_eq!(a.role("alice").await.unwrap(), Some(changed));
    let ghost = RoleRecord {
        name: "ghost".into(),
        ..alice
    };
    assert!(matches!(
        a.alter_role(&ghost).await,
        Err(LogError::UnknownRole(_))
    ));
    a.create_role(&ghost).await.unwrap();
    let names: Vec<String> = b
        .roles()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["alice", "ghost"]);
    assert!(b.drop_role("alice").await.unwrap());
    assert!(!a.drop_role("alice").await.unwrap());
    assert_eq!(a.role("alice").await.unwrap(), None);
}

/// Privileges and memberships are shared by every handle on the store;
/// granting twice keeps one, dropping a role forgets what it held, and on
/// PostgreSQL every change is announced to the other agents.
async fn grants_and_memberships_are_shared(kind: Kind) {
    let s = Stores::new(kind).await;
    let a = s.handle().await;
    let b = s.handle().await;
    let rx = b.changes().await.unwrap();
    let grant = |grantee: &str, privilege: &str| GrantRecord {
        object_kind: "table".into(),
        object_name: "orders".into(),
        grantee: grantee.into(),
        privilege: privilege.into(),
        grantor: "streamhouse".into(),
    };
    for name in ["alice", "analysts"] {
        let role = RoleRecord {
            name: name.into(),
            superuser: false,
            login: name == "alice",
            verifier: None,
            created_at: 1,
        };
        a.create_role(&role).await.unwrap();
    }
    a.grant(&[grant("alice", "SELECT"), grant("analysts", "INSERT")])
        .await
        .unwrap();
    a.grant(&[grant("alice", "SELECT")]).await.unwrap();
    assert_eq!(
        b.grants().await.unwrap(),
        [grant("alice", "SELECT"), grant("analysts", "INSERT")]
    );
    b.add_member("analysts", "alice", "streamhouse")
        .await
        .unwrap();
    b.add_member("analysts", "alice", "streamhouse")
        .await
        .unwrap();
    assert_eq!(
        a.members().await.unwrap(),
        [("analysts".to_string(), "alice".to_string())]
    );
    assert_eq!(a.revoke(&[grant("analysts", "INSERT")]).await.unwrap(), 1);
    assert_eq!(a.revoke(&[grant("analysts", "INSERT")]).await.unwrap(), 0);
    assert!(a.drop_role("alice").await.unwrap());
    assert_eq!(b.grants().await.unwrap(), []);
    assert_eq!(b.members().await.unwrap(), []);
    a.grant(&[grant("analysts", "SELECT")]).await.unwrap();
    a.forget_grants_on("table", "orders").await.unwrap();
    assert_eq!(b.grants().await.unwrap(), []);
    assert!(!b.remove_member("analysts", "alice").await.unwrap());
    if let Kind::Postgres = kind {
        let mut rx = rx.unwrap();
        assert_eq!(recv(&mut rx).await, Change::Roles);
    }
}

/// The Schema Registry's records: a schema's id found again by its
/// fingerprint from another handle, a version number taken once, soft and
/// permanent deletes, settings.
async fn registry_records_are_shared(kind: Kind) {
    let s = Stores::new(kind).await;
    let a = s.handle().await;
    let b = s.handle().await;
    let id = a
        .registry_schema_id("fp1", "AVRO", "\"string\"", "[]")
        .await
        .unwrap();
    assert_eq!(
        b.registry_schema_id("fp1", "AVRO", "\"string\"", "[]")
            .await
            .unwrap(),
        id
    );
    let other = b
        .registry_schema_id("fp2", "AVRO", "\"long\"", "[]")
        .await
        .unwrap();
    assert!(other > id);
    let stored = a.registry_schema(other).await.unwrap().unwrap();
    assert_eq!(
        (stored.schema_type.as_str(), stored.schema.as_str()),
        ("AVRO", "\"long\"")
    );
    assert!(a.registry_schema(other + 100).await.unwrap().is_none());

    a.add_subject_version("s", 1, id).await.unwrap();
    let e = b.add_subject_version("s", 1, other).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    b.add_subject_version("s", 2, other).await.unwrap();
    b.add_subject_version("t", 1, id).await.unwrap();
    let of_id: Vec<(String, u32)> = a
        .versions_of_schema(id)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.subject, v.version))
        .collect();
    assert_eq!(of_id, [("s".to_string(), 1), ("t".to_string(), 1)]);
    a.soft_delete_versions("s", &[1]).await.unwrap();
    let versions = b.subject_versions("s").await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.deleted))
            .collect::<Vec<_>>(),
        [(1, true), (2, false)]
    );
    b.delete_versions("s", &[1]).await.unwrap();
    assert_eq!(a.all_subject_versions().await.unwrap().len(), 2);

    let settings = streamhouse_log::RegistrySettings {
        compatibility: Some("FULL".into()),
        mode: None,
    };
    a.put_registry_settings("", &settings).await.unwrap();
    assert_eq!(b.registry_settings("").await.unwrap(), settings);
    assert_eq!(b.registry_settings("s").await.unwrap(), Default::default());
    b.put_registry_settings("", &Default::default())
        .await
        .unwrap();
    assert_eq!(a.registry_settings("").await.unwrap(), Default::default());
}

/// A compaction's swap: the chunks it replaced go, its chunk (here one
/// holding fewer rows than offsets) comes, and the counts follow.
async fn a_sparse_chunk_replaces_chunks_and_keeps_its_row_count(kind: Kind) {
    let s = Stores::new(kind).await;
    let m = s.handle().await;
    let info = m.create_stream(&spec("o", 1), T0).await.unwrap();
    for i in 0..3 {
        committed(
            m.commit_flush(&flush(info.id, &[(0, 10)], T0 + i, None))
                .await
                .unwrap(),
        );
    }
    let old = all_chunks(m.as_ref(), info.id, 0).await;
    let new = ChunkRecord {
        stream_id: info.id,
        partition: 0,
        base_offset: 0,
        end_offset: 30,
        object: format!("data/{}", ulid::Ulid::new()),
        byte_range: 0..77,
        event_time: old[0].event_time,
        append_time: old[0].append_time,
        schema_version: 1,
        sparse_rows: Some(4),
    };
    assert!(m.replace_chunks(&old, &new, 77, T0 + 5).await.unwrap());
    let now = all_chunks(m.as_ref(), info.id, 0).await;
    assert_eq!(now, std::slice::from_ref(&new));
    assert_eq!(now[0].rows(), 4);
    let st = &m.partition_stats(info.id).await.unwrap()[0];
    assert_eq!((st.next_offset, st.first_offset, st.rows), (30, Some(0), 4));
    // The replaced chunks are gone: a second swap of them changes nothing.
    assert!(!m.replace_chunks(&old, &new, 77, T0 + 6).await.unwrap());
    // Flushes after it are dense again.
    committed(
        m.commit_flush(&flush(info.id, &[(0, 10)], T0 + 7, None))
            .await
            .unwrap(),
    );
    let now = all_chunks(m.as_ref(), info.id, 0).await;
    assert_eq!(
        (now[1].base_offset, now[1].sparse_rows, now[1].rows()),
        (30, None, 10)
    );
}

macro_rules! per_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Sqlite).await }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Postgres).await }
        )* }
    };
}

async fn connectors_are_shared_with_leases(kind: Kind) {
    let s = Stores::new(kind).await;
    let a = s.handle().await;
    let b = s.handle().await;
    let sink = ConnectorRecord {
        name: "k".into(),
        kind: "sink".into(),
        definition: "CREATE SINK k FROM s INTO PARQUET WITH (path = 'file:///x')".into(),
        lease: ViewLease::default(),
    };
    a.create_connector(&sink, T0).await.unwrap();
    let e = b.create_connector(&sink, T0).await.unwrap_err();
    assert!(
        matches!(e, LogError::ConnectorExists(ref n) if n == "k"),
        "{e}"
    );
    assert_eq!(b.connectors().await.unwrap(), vec![sink.clone()]);
    // Free: taken at once; then held until it expires.
    assert_eq!(
        a.acquire_connector_lease("k", "a", T0, T0 + 100, false)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        b.acquire_connector_lease("k", "b", T0 + 50, T0 + 150, false)
            .await
            .unwrap(),
        None
    );
    assert!(
        a.renew_connector_lease("k", "a", 1, T0 + 200)
            .await
            .unwrap()
    );
    assert_eq!(
        b.acquire_connector_lease("k", "b", T0 + 201, T0 + 300, false)
            .await
            .unwrap(),
        Some(2)
    );
    assert!(
        !a.renew_connector_lease("k", "a", 1, T0 + 400)
            .await
            .unwrap()
    );
    a.release_connector_lease("k", "a", 1).await.unwrap(); // not a's
    assert_eq!(
        a.connectors().await.unwrap()[0].lease,
        ViewLease {
            owner: Some("b".into()),
            epoch: 2,
            until: Some(T0 + 300)
        }
    );
    b.release_connector_lease("k", "b", 2).await.unwrap();
    assert_eq!(
        a.acquire_connector_lease("k", "a", T0 + 250, T0 + 350, false)
            .await
            .unwrap(),
        Some(3)
    );
    assert!(b.drop_connector("k").await.unwrap());
    assert!(!a.drop_connector("k").await.unwrap());
    assert!(a.connectors().await.unwrap().is_empty());
}

per_store!(
    connectors_are_shared_with_leases,
    a_sparse_chunk_replaces_chunks_and_keeps_its_row_count,
    handles_opened_together_migrate_once,
    streams_are_created_listed_and_dropped,
    schema_versions_are_recorded_with_streams_and_chunks,
    concurrent_commits_get_dense_offsets,
    idempotent_producers_commit_each_sequence_once,
    a_dropped_stream_rejects_its_flush,
    chunks_are_found_by_offset_and_time,
    group_offsets_are_kept_per_partition,
    transactions_commit_offsets_with_their_appends_in_their_epoch,
    shared_staging_follows_the_producers_transactions,
    view_checkpoints_are_fenced,
    group_membership_is_shared_and_fences_commits,
    classic_groups_rebalance_across_handles_and_check_commits,
    view_leases_move_with_epochs_and_fence_the_old_owner,
    agents_register_and_heartbeat,
    commits_are_announced_to_other_agents,
    a_tail_reader_wakes_on_another_agents_commit,
    roles_are_shared_and_unique,
    grants_and_memberships_are_shared,
    registry_records_are_shared,
);
