//! A simulated consumer: a member of a consumer group reading the
//! partitions its group assigns it, from the group's committed offsets.
//!
//! It opens a following member read (`Log::consume`), takes the rows its
//! rate allows every tick (all of them without a rate, as they come), and
//! commits the next offsets of what it took every second, checked against
//! its ownership in its generation. The read runs in its own task (and
//! heartbeats while it is read); while the consumer holds rows it has not
//! taken, it heartbeats itself. When the group
//! rebalances (a member joined, left or expired) it drops what it holds
//! and reads again, from the committed offsets, with its new partitions.
//! Stopped, it commits what it took and leaves the group, which rebalances
//! the others at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use futures::StreamExt;
use streamhouse_log::consume::{ConsumeRequest, HEARTBEAT, MemberJoin, Position};
use streamhouse_log::stream::{OFFSET_COLUMN, PARTITION_COLUMN};
use streamhouse_log::{ErrorKind, Log, LogError, monotonic};
use tokio::sync::{mpsc, watch};

use super::{RETRY, Status, TICK, transient};

/// How often a consumer commits the offsets of what it took (as a Kafka
/// consumer auto-commits, but more often, so lag charts move smoothly).
const COMMIT_EVERY: Duration = Duration::from_secs(1);

pub struct Plan {
    pub stream: String,
    pub group: String,
    pub member: String,
    /// Rows per second; as fast as it can when absent.
    pub rate: Option<u64>,
    pub from: Position,
}

/// The next offset per partition after rows `start..end` of `batch`.
fn next_offsets(batch: &RecordBatch, start: usize, end: usize, into: &mut BTreeMap<u32, u64>) {
    let (Some(p), Some(o)) = (
        batch.column_by_name(PARTITION_COLUMN),
        batch.column_by_name(OFFSET_COLUMN),
    ) else {
        return;
    };
    let (p, o) = (p.as_primitive::<Int32Type>(), o.as_primitive::<Int64Type>());
    for i in start..end {
        let next = o.value(i) as u64 + 1;
        let slot = into.entry(p.value(i) as u32).or_insert(next);
        *slot = (*slot).max(next);
    }
}

/// A rate as an allowance of rows that grows with time, up to a second's
/// worth.
struct Throttle {
    rate: f64,
    allowance: f64,
    last: tokio::time::Instant,
}

impl Throttle {
    fn new(rate: u64) -> Throttle {
        Throttle {
            rate: rate as f64,
            allowance: 0.0,
            last: monotonic(),
        }
    }

    /// Rows it allows now, at most `max`; they count as taken.
    fn take(&mut self, max: usize) -> usize {
        let now = monotonic();
        self.allowance =
            (self.allowance + self.rate * (now - self.last).as_secs_f64()).min(self.rate);
        self.last = now;
        let n = (self.allowance as usize).min(max);
        self.allowance -= n as f64;
        n
    }

    /// Time without rows to take does not count.
    fn idle(&mut self) {
        self.last = monotonic();
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How one membership ended.
enum Ended {
    /// Asked to stop.
    Stopped,
    /// Read again (a rebalance, or an error outlived).
    Again,
    /// Stop with this error.
    Failed(LogError),
}

/// What a failed commit or heartbeat means: a conflict (the member no
/// longer owns its partitions, or was expired) reads again.
fn after(e: LogError) -> Ended {
    if e.kind() == ErrorKind::Conflict {
        Ended::Again
    } else {
        Ended::Failed(e)
    }
}

pub async fn run(log: Arc<Log>, plan: Plan, status: Arc<Status>, mut stop: watch::Receiver<bool>) {
    loop {
        match membership(&log, &plan, &status, &mut stop).await {
            Ended::Stopped => break,
            Ended::Again => continue,
            Ended::Failed(e) if transient(&e) => {
                status.set_error(Some(e.to_string()));
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
            Ended::Failed(e) => {
                let _ = log.groups().leave(&plan.group, &plan.member).await;
                return status.end("failed", Some(e.to_string()));
            }
        }
    }
    if let Err(e) = log.groups().leave(&plan.group, &plan.member).await {
        status.set_error(Some(e.to_string()));
    }
}

/// Commits the next offsets of the rows taken, as `generation`'s owner.
async fn commit(
    log: &Log,
    plan: &Plan,
    generation: u64,
    taken: &mut BTreeMap<u32, u64>,
) -> Result<(), LogError> {
    if taken.is_empty() {
        return Ok(());
    }
    let offsets: Vec<(u32, u64)> = std::mem::take(taken).into_iter().collect();
    log.commit_offsets(
        &plan.group,
        &plan.stream,
        Some((&plan.member, Some(generation))),
        &offsets,
    )
    .await
}

/// Takes what the throttle allows of the held rows (all of them without
/// one).
fn take_held(
    held: &mut Option<(RecordBatch, usize)>,
    throttle: Option<&mut Throttle>,
    taken: &mut BTreeMap<u32, u64>,
    status: &Status,
) {
    let Some((batch, at)) = held.as_mut() else {
        if let Some(t) = throttle {
            t.idle();
        }
        return;
    };
    let left = batch.num_rows() - *at;
    let n = match throttle {
        Some(t) => t.take(left),
        None => left,
    };
    next_offsets(batch, *at, *at + n, taken);
    status.add_rows(n as u64);
    *at += n;
    if *at == batch.num_rows() {
        *held = None;
    }
}

/// One generation of the member: join, read, commit, until a rebalance,
/// an error or a stop.
async fn membership(
    log: &Arc<Log>,
    plan: &Plan,
    status: &Status,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let request = ConsumeRequest {
        stream: plan.stream.clone(),
        partitions: None,
        from: Some(plan.from),
        follow: true,
        group: Some(plan.group.clone()),
        member: Some(MemberJoin {
            member: plan.member.clone(),
            strategy: Default::default(),
            session_timeout: None,
        }),
    };
    let read = tokio::select! {
        _ = stop.changed() => return Ended::Stopped,
        r = log.consume(request) => match r {
            Ok(r) => r,
            Err(e) => return Ended::Failed(e),
        },
    };
    let Some(m) = read.membership else {
        return Ended::Failed(LogError::Internal(
            "a member read without a membership".into(),
        ));
    };
    let generation = m.generation;
    status.assigned(m.partitions, generation);
    status.rebalances.fetch_add(1, Ordering::Relaxed);
    // The read is driven by its own task: a stream left between polls in
    // the middle of its heartbeat would hold the metadata store's writer.
    let (tx, mut rows) = mpsc::channel::<Result<RecordBatch, LogError>>(1);
    let mut read_rows = read.rows;
    let pump = tokio::spawn(async move {
        while let Some(item) = read_rows.next().await {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    let _pump = AbortOnDrop(pump);
    // Rows read and not yet taken: a batch and how far into it.
    let mut held: Option<(RecordBatch, usize)> = None;
    let mut taken: BTreeMap<u32, u64> = BTreeMap::new();
    let mut throttle = plan.rate.map(Throttle::new);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut commits = tokio::time::interval(COMMIT_EVERY);
    commits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                return match commit(log, plan, generation, &mut taken).await {
                    Ok(()) => Ended::Stopped,
                    Err(e) => match after(e) {
                        Ended::Again => Ended::Stopped,
                        other => other,
                    },
                };
            }
            item = rows.recv(), if held.is_none() => match item {
                Some(Ok(batch)) => {
                    held = Some((batch, 0));
                    take_held(&mut held, throttle.as_mut(), &mut taken, status);
                }
                Some(Err(LogError::Rebalanced { .. })) | None => return Ended::Again,
                Some(Err(e)) => return Ended::Failed(e),
            },
            _ = tick.tick() => {
                take_held(&mut held, throttle.as_mut(), &mut taken, status);
            }
            _ = commits.tick() => {
                if let Err(e) = commit(log, plan, generation, &mut taken).await {
                    return after(e);
                }
            }
            _ = beat.tick(), if held.is_some() => {
                match log.groups().heartbeat(&plan.group, &plan.member).await {
                    Ok(now) if now.generation == generation => {}
                    Ok(_) => return Ended::Again,
                    Err(e) => return after(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn the_next_offsets_of_taken_rows_per_partition() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(PARTITION_COLUMN, DataType::Int32, false),
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![0, 0, 1, 0])),
                Arc::new(Int64Array::from(vec![5, 6, 9, 7])),
            ],
        )
        .unwrap();
        let mut into = BTreeMap::new();
        next_offsets(&batch, 0, 3, &mut into);
        assert_eq!(into, BTreeMap::from([(0, 7), (1, 10)]));
        next_offsets(&batch, 3, 4, &mut into);
        assert_eq!(into, BTreeMap::from([(0, 8), (1, 10)]));
    }
}
