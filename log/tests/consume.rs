//! The consumer rules every door shares (`Log::consume`,
//! `Log::reset_offsets`): start positions, committed offsets, partitions,
//! a member's read ending when its group rebalances, and resets refused
//! while members are live.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use common::{Backend, Fixture, i64s, orders, orders_schema};
use futures::{StreamExt, TryStreamExt};
use streamhouse_log::consume::{ConsumeRequest, MemberJoin, Position};
use streamhouse_log::groups::{JoinRequest, Strategy};
use streamhouse_log::{AppendOptions, ErrorKind, Log, LogError, StreamSpec};

const T0: i64 = 1_700_000_000_000_000;

fn request(stream: &str) -> ConsumeRequest {
    ConsumeRequest {
        stream: stream.into(),
        partitions: None,
        from: None,
        follow: false,
        group: None,
        member: None,
    }
}

async fn ids(log: &Arc<Log>, req: ConsumeRequest) -> Vec<i64> {
    let read = log.consume(req).await.unwrap();
    let batches: Vec<RecordBatch> = read.rows.try_collect().await.unwrap();
    let mut out = i64s(&batches, "id");
    out.sort();
    out
}

/// A log over a two-partition stream "c" with ids 0..10 in partition 0 and
/// 100..110 in partition 1, and the directory it lives in.
async fn setup() -> (Arc<Log>, tempfile::TempDir) {
    let Fixture { log, dir, .. } = Fixture::new(Backend::Memory).await;
    let log = Arc::new(log);
    log.create_stream(StreamSpec::new("c", orders_schema()).with_partitions(2))
        .await
        .unwrap();
    for p in 0..2 {
        let from = p as i64 * 100;
        log.append(
            "c",
            orders(from..from + 10, 1, T0),
            AppendOptions::to_partition(p),
        )
        .await
        .unwrap();
    }
    (log, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_partitions_and_committed_offsets() {
    let (log, _dir) = setup().await;
    let all: Vec<i64> = (0..10).chain(100..110).collect();
    assert_eq!(ids(&log, request("c")).await, all);
    // One partition, listed twice: read once.
    let mut one = request("c");
    one.partitions = Some(vec![1, 1]);
    assert_eq!(ids(&log, one).await, (100..110).collect::<Vec<_>>());
    // From an offset; from the end.
    let mut at = request("c");
    at.from = Some(Position::Offset(7));
    assert_eq!(ids(&log, at).await, vec![7, 8, 9, 107, 108, 109]);
    let mut latest = request("c");
    latest.from = Some(Position::parse("latest").unwrap());
    assert!(ids(&log, latest).await.is_empty());
    // A group's committed offset wins over `from` where there is one.
    log.commit_offsets("g", "c", None, &[(0, 5)]).await.unwrap();
    let mut grouped = request("c");
    grouped.group = Some("g".into());
    grouped.from = Some(Position::Latest);
    assert_eq!(ids(&log, grouped).await, vec![5, 6, 7, 8, 9]);
    // Mistakes get their kind.
    let mut out_of_range = request("c");
    out_of_range.partitions = Some(vec![2]);
    let e = log.consume(out_of_range).await.err().unwrap();
    assert!(matches!(e, LogError::PartitionOutOfRange { .. }), "{e}");
    let mut lonely = request("c");
    lonely.member = Some(MemberJoin {
        member: "m".into(),
        strategy: Strategy::default(),
        session_timeout: None,
    });
    let e = log.consume(lonely).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = Position::parse("yesterday").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_read_ends_on_rebalance_and_resets_wait_for_an_empty_group() {
    let (log, _dir) = setup().await;
    let member = |m: &str| MemberJoin {
        member: m.into(),
        strategy: Strategy::default(),
        session_timeout: Some(Duration::from_secs(60)),
    };
    let mut first = request("c");
    first.group = Some("g".into());
    first.member = Some(member("a"));
    first.follow = true;
    let read = log.consume(first).await.unwrap();
    assert_eq!(read.membership.as_ref().unwrap().partitions, vec![0, 1]);
    let mut rows = read.rows;
    let mut seen = 0;
    while seen < 20 {
        seen += rows.next().await.unwrap().unwrap().num_rows();
    }
    // A reset is refused while the member is live.
    let e = log
        .reset_offsets("g", "c", Position::Earliest)
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::GroupActive { members: 1, .. }), "{e}");
    // A second member joins: the first read ends, saying so.
    log.groups()
        .join(JoinRequest {
            group: "g".into(),
            stream: "c".into(),
            member: Some("b".into()),
            strategy: Strategy::default(),
            session_timeout: Some(Duration::from_secs(60)),
        })
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), rows.next())
        .await
        .expect("the read ends within a few heartbeats")
        .expect("with an error");
    assert!(matches!(end, Err(LogError::Rebalanced { .. })), "{end:?}");
    assert!(rows.next().await.is_none());
    // Described: both members, a partition each, lag from the start.
    let d = log.describe_group("g").await.unwrap();
    assert_eq!(d.members.len(), 2);
    let lags: Vec<(u32, Option<u64>, u64, u64)> = d
        .partitions
        .iter()
        .map(|p| (p.partition, p.committed, p.end, p.lag))
        .collect();
    assert_eq!(lags, vec![(0, None, 10, 10), (1, None, 10, 10)]);
    assert!(d.partitions.iter().all(|p| p.member.is_some()));
    // Once both leave, a reset goes through; the group is then listed
    // with no members and no lag.
    log.groups().leave("g", "a").await.unwrap();
    log.groups().leave("g", "b").await.unwrap();
    let offsets = log.reset_offsets("g", "c", Position::Latest).await.unwrap();
    assert_eq!(offsets, vec![(0, 10), (1, 10)]);
    let listed = log.list_groups().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].group.as_str(), listed[0].members), ("g", 0));
    let d = log.describe_group("g").await.unwrap();
    assert!(
        d.partitions
            .iter()
            .all(|p| p.lag == 0 && p.member.is_none())
    );
    let lag = log.group_lags().await.unwrap();
    assert_eq!(lag.iter().map(|l| l.lag).sum::<u64>(), 0);
    let e = log.describe_group("nobody").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}
