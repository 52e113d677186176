//! Transactional producers (`Log::init_transactions` and the calls after
//! it): staged batches to several streams and a group's offsets become
//! visible together at commit or never; an older instance of a producer is
//! fenced; a transaction that is refused a batch or outlives its timeout is
//! rolled back and says so.

mod common;

use std::time::Duration;

use common::{Backend, Fixture, orders};
use streamhouse_log::metadata::{SeqRun, SharedStaged};
use streamhouse_log::{AppendOptions, ErrorKind, GroupCommit, LogError, StreamSpec};

const T0: i64 = 1_700_000_000_000_000;

fn spec(name: &str, partitions: u32) -> StreamSpec {
    StreamSpec::new(name, common::orders_schema())
        .with_partitions(partitions)
        .with_key(["user"])
}

async fn total(f: &Fixture, stream: &str) -> u64 {
    f.log.partition_ends(stream).await.unwrap().iter().sum()
}

fn offsets(group: &str, stream: &str, next: &[(u32, u64)]) -> Vec<GroupCommit> {
    vec![GroupCommit {
        group: group.into(),
        stream: stream.into(),
        offsets: next.to_vec(),
    }]
}

/// Read from `input`, write to `a` and `b`, commit the read offsets: all
/// visible together at commit, nothing before; the zombie of an earlier
/// start is refused.
async fn a_transaction_commits_appends_and_offsets_together(b: Backend) {
    let f = Fixture::new(b).await;
    for (name, n) in [("input", 2), ("a", 2), ("b", 3)] {
        f.log.create_stream(spec(name, n)).await.unwrap();
    }
    let opts = AppendOptions::default();
    f.log
        .append_batches("input", vec![orders(0..10, 4, T0)], opts.clone())
        .await
        .unwrap();
    let input_ends = f.log.partition_ends("input").await.unwrap();
    let read: Vec<(u32, u64)> = input_ends
        .iter()
        .enumerate()
        .map(|(p, &e)| (p as u32, e))
        .collect();

    let zombie = f.log.init_transactions("etl", None).await.unwrap();
    let epoch = f.log.init_transactions("etl", None).await.unwrap();
    assert_eq!(epoch, zombie + 1);

    let staged = f
        .log
        .stage_transactional("etl", epoch, "a", vec![orders(0..30, 4, T0)], &opts)
        .await
        .unwrap();
    assert_eq!(staged, 30);
    f.log
        .stage_transactional("etl", epoch, "b", vec![orders(0..20, 4, T0)], &opts)
        .await
        .unwrap();
    assert_eq!((total(&f, "a").await, total(&f, "b").await), (0, 0));
    assert_eq!(
        f.log.committed_offsets("g", "input").await.unwrap(),
        [None, None]
    );

    // The older instance can neither stage nor commit.
    let e = f
        .log
        .stage_transactional("etl", zombie, "a", vec![orders(0..1, 1, T0)], &opts)
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::Fenced(_)), "{e}");
    let e = f
        .log
        .commit_transaction("etl", zombie, &[])
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::Fenced(_)), "{e}");

    let done = f
        .log
        .commit_transaction("etl", epoch, &offsets("g", "input", &read))
        .await
        .unwrap();
    assert_eq!(
        done.iter()
            .map(|c| (c.stream.as_str(), c.ack.rows()))
            .collect::<Vec<_>>(),
        [("a", 30), ("b", 20)]
    );
    assert_eq!((total(&f, "a").await, total(&f, "b").await), (30, 20));
    let committed: Vec<Option<u64>> = input_ends.iter().map(|&e| Some(e)).collect();
    assert_eq!(
        f.log.committed_offsets("g", "input").await.unwrap(),
        committed
    );

    // Aborted: nothing written, the offsets stay.
    f.log
        .stage_transactional("etl", epoch, "a", vec![orders(30..40, 4, T0)], &opts)
        .await
        .unwrap();
    f.log.abort_transaction("etl", epoch).unwrap();
    let done = f
        .log
        .commit_transaction("etl", epoch, &offsets("g", "input", &[(0, 0)]))
        .await
        .unwrap();
    assert!(done.is_empty());
    assert_eq!(total(&f, "a").await, 30);
    assert_eq!(
        f.log.committed_offsets("g", "input").await.unwrap()[0],
        Some(0),
        "offsets alone commit too"
    );
}

/// A stream dropped before the commit, a refused batch, a transaction past
/// its timeout: nothing of the transaction is written, and the producer
/// goes on after aborting.
async fn a_failed_transaction_writes_nothing(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("a", 2)).await.unwrap();
    f.log.create_stream(spec("b", 2)).await.unwrap();
    let opts = AppendOptions::default();
    let epoch = f.log.init_transactions("p", None).await.unwrap();

    // A dropped stream fails the whole commit.
    for s in ["a", "b"] {
        f.log
            .stage_transactional("p", epoch, s, vec![orders(0..5, 2, T0)], &opts)
            .await
            .unwrap();
    }
    f.log.drop_stream("b").await.unwrap();
    let e = f.log.commit_transaction("p", epoch, &[]).await.unwrap_err();
    assert!(matches!(&e, LogError::UnknownStream(s) if s == "b"), "{e}");
    assert_eq!(total(&f, "a").await, 0);
    // Its rows are gone with the failed commit: a retried commit is
    // refused rather than answered as if it had written them.
    let e = f.log.commit_transaction("p", epoch, &[]).await.unwrap_err();
    assert!(
        matches!(&e, LogError::TransactionAborted(m) if m.contains("failed")),
        "{e}"
    );

    // A refused batch rolls the transaction back; its commit says so.
    f.log
        .stage_transactional("p", epoch, "a", vec![orders(0..5, 2, T0)], &opts)
        .await
        .unwrap();
    let bad = AppendOptions {
        partition: Some(9),
        ..AppendOptions::default()
    };
    let e = f
        .log
        .stage_transactional("p", epoch, "a", vec![orders(5..6, 1, T0)], &bad)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = f
        .log
        .stage_transactional("p", epoch, "a", vec![orders(6..7, 1, T0)], &opts)
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::TransactionAborted(_)), "{e}");
    let e = f.log.commit_transaction("p", epoch, &[]).await.unwrap_err();
    assert!(matches!(e, LogError::TransactionAborted(_)), "{e}");
    assert_eq!(total(&f, "a").await, 0);

    // Past its timeout.
    let epoch = f
        .log
        .init_transactions("p", Some(Duration::from_millis(50)))
        .await
        .unwrap();
    f.log
        .stage_transactional("p", epoch, "a", vec![orders(0..5, 2, T0)], &opts)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let e = f.log.commit_transaction("p", epoch, &[]).await.unwrap_err();
    assert!(
        matches!(&e, LogError::TransactionAborted(m) if m.contains("timeout")),
        "{e}"
    );
    assert_eq!(total(&f, "a").await, 0);

    // After that the producer goes on.
    f.log
        .stage_transactional("p", epoch, "a", vec![orders(0..5, 2, T0)], &opts)
        .await
        .unwrap();
    f.log.commit_transaction("p", epoch, &[]).await.unwrap();
    assert_eq!(total(&f, "a").await, 5);

    // Unknown producers, bad ids and timeouts are refused.
    let e = f
        .log
        .commit_transaction("nobody", 1, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(e, LogError::UnknownTransactionalProducer(_)),
        "{e}"
    );
    let e = f.log.init_transactions("", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = f
        .log
        .init_transactions("p", Some(Duration::from_secs(3600)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

/// Rows staged away from the producer's agent (through the stores) commit
/// with the rest; a batch staged both there and here (a Kafka retry after
/// the partition's leader moved: the same run of sequences) commits once,
/// and an abort drops what was staged away.
async fn shared_rows_commit_with_the_rest_and_each_run_once(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("a", 2)).await.unwrap();
    let epoch = f.log.init_transactions("k", None).await.unwrap();
    let p0 = AppendOptions {
        partition: Some(0),
        ..AppendOptions::default()
    };
    let run = |first, last| Some(SeqRun { first, last });
    f.log
        .stage_transactional_run("k", epoch, "a", vec![orders(0..5, 2, T0)], &p0, run(0, 4))
        .await
        .unwrap();
    for (ids, seq) in [(0..5, run(0, 4)), (5..8, run(5, 7))] {
        let staged = f
            .log
            .stage_shared("k", epoch, "a", vec![orders(ids, 2, T0)], &p0, seq)
            .await
            .unwrap();
        assert_eq!(staged, SharedStaged::Staged);
    }
    assert_eq!(total(&f, "a").await, 0, "nothing visible before the commit");
    f.log
        .commit_transaction_shared("k", epoch, None, &[])
        .await
        .unwrap();
    assert_eq!(total(&f, "a").await, 8);
    f.log
        .stage_shared("k", epoch, "a", vec![orders(8..9, 2, T0)], &p0, run(8, 8))
        .await
        .unwrap();
    f.log.abort_transaction("k", epoch).unwrap();
    f.log.abort_shared("k", epoch).await.unwrap();
    f.log
        .commit_transaction_shared("k", epoch, None, &[])
        .await
        .unwrap();
    assert_eq!(total(&f, "a").await, 8);
}

/// A call to end a transaction handled late — its client gave up on it
/// (the agent was paused) and sent it again, and the repeat was answered
/// first — ends that transaction and no later one: a late abort used to
/// drop the next transaction's rows, local and shared, whose commit then
/// answered success with nothing written.
async fn a_late_call_ends_only_its_own_transaction(b: Backend) {
    let f = Fixture::new(b).await;
    f.log.create_stream(spec("a", 2)).await.unwrap();
    let opts = AppendOptions::default();
    let p1 = AppendOptions {
        partition: Some(1),
        ..AppendOptions::default()
    };
    let epoch = f.log.init_transactions("late", None).await.unwrap();
    f.log
        .stage_transactional("late", epoch, "a", vec![orders(0..5, 2, T0)], &opts)
        .await
        .unwrap();
    // An abort, and the same abort sent again, arrive; the repeat is
    // handled first.
    let first = f.log.open_transaction("late", epoch).unwrap();
    let repeat = f.log.open_transaction("late", epoch).unwrap();
    assert!(
        f.log
            .abort_transaction_numbered("late", epoch, Some(repeat))
            .unwrap()
    );
    f.log.abort_shared("late", epoch).await.unwrap();
    // The next transaction stages rows here and through the shared staging.
    f.log
        .stage_transactional("late", epoch, "a", vec![orders(0..10, 2, T0)], &opts)
        .await
        .unwrap();
    f.log
        .stage_shared("late", epoch, "a", vec![orders(10..14, 2, T0)], &p1, None)
        .await
        .unwrap();
    f.log
        .stage_transaction_offsets("late", epoch, &offsets("g", "a", &[(0, 0)]))
        .await
        .unwrap();
    // The first abort, handled now, does nothing; a commit of the aborted
    // transaction is refused.
    assert!(
        !f.log
            .abort_transaction_numbered("late", epoch, Some(first))
            .unwrap()
    );
    let e = f
        .log
        .commit_transaction_shared("late", epoch, Some(first), &[])
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::TransactionAborted(_)), "{e}");
    // The next transaction commits every row it staged, and its offsets.
    let next = f.log.open_transaction("late", epoch).unwrap();
    assert_eq!(next, first + 1);
    f.log
        .commit_transaction_shared("late", epoch, Some(next), &[])
        .await
        .unwrap();
    assert_eq!(total(&f, "a").await, 14);
    assert_eq!(f.log.committed_offsets("g", "a").await.unwrap()[0], Some(0));
    // Its commit sent again answers success and writes nothing, even with
    // rows of a later transaction staged; an abort of it is refused.
    f.log
        .stage_transactional("late", epoch, "a", vec![orders(20..23, 2, T0)], &opts)
        .await
        .unwrap();
    let again = f
        .log
        .commit_transaction_shared("late", epoch, Some(next), &[])
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(total(&f, "a").await, 14);
    assert!(
        f.log
            .abort_transaction_numbered("late", epoch, Some(next))
            .is_err()
    );
    f.log
        .commit_transaction_shared("late", epoch, None, &[])
        .await
        .unwrap();
    assert_eq!(total(&f, "a").await, 17);
}

per_backend!(
    a_transaction_commits_appends_and_offsets_together,
    a_failed_transaction_writes_nothing,
    shared_rows_commit_with_the_rest_and_each_run_once,
    a_late_call_ends_only_its_own_transaction,
);
