//! Reading a stream as a consumer: the rules every consumer door shares.
//!
//! [`Log::consume`] takes a [`ConsumeRequest`] and decides where each
//! partition starts (the group's committed offset where there is one, else
//! the requested [`Position`]), joins the group for a member and reads only
//! its partitions, and returns the rows from there — up to the ends seen at
//! the start, or, following, as they are committed. A member's read
//! heartbeats while it is read and ends with [`LogError::Rebalanced`] when
//! the group's generation moves on: the client reads again, from the
//! committed offsets, with its new partitions. [`Log::reset_offsets`] moves
//! a group with no live members to a position. Committing and reading a
//! group's offsets, and listing and describing groups (with the one
//! computation of lag), are here too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};

use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::groups::{Assignment, CommitCheck, JoinRequest, MemberState, OwnerCheck, Strategy};
use crate::log::Log;
use crate::stream::StreamInfo;

/// How often an open member read heartbeats and checks its assignment.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// A position named by a client: `earliest`, `latest`, an offset, or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Earliest,
    Latest,
    Offset(u64),
    /// The first row appended at or after this time (µs since the epoch).
    Time(Micros),
}

impl Position {
    /// Parses `earliest`, `latest`, an offset number, or an RFC 3339 time.
    pub fn parse(s: &str) -> Result<Position> {
        match s {
            "earliest" => Ok(Position::Earliest),
            "latest" => Ok(Position::Latest),
            s => {
                if let Ok(n) = s.parse::<u64>() {
                    return Ok(Position::Offset(n));
                }
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| Position::Time(t.timestamp_micros()))
                    .map_err(|_| {
                        LogError::InvalidArgument(format!(
                            "\"{s}\" is not a position: use \"earliest\", \"latest\", an offset, \
                             or an RFC 3339 time such as \"2026-01-31T12:00:00Z\""
                        ))
                    })
            }
        }
    }
}

/// A member joining as it reads.
#[derive(Debug, Clone)]
pub struct MemberJoin {
    pub member: String,
    /// Used when the read creates the group.
    pub strategy: Strategy,
    pub session_timeout: Option<Duration>,
}

/// What a consumer asks to read.
#[derive(Debug, Clone)]
pub struct ConsumeRequest {
    pub stream: String,
    /// These partitions; every one when absent. Not with a member, which
    /// reads the partitions assigned to it.
    pub partitions: Option<Vec<u32>>,
    /// Where partitions without a committed offset start (earliest when
    /// absent).
    pub from: Option<Position>,
    /// Keep reading as rows are committed.
    pub follow: bool,
    /// Start at this group's committed offsets.
    pub group: Option<String>,
    /// Join `group` as this member.
    pub member: Option<MemberJoin>,
}

/// An open read.
pub struct Consumption {
    pub info: Arc<StreamInfo>,
    /// The member's assignment, for a member read.
    pub membership: Option<Assignment>,
    /// The rows, with the stream's columns and `_partition`, `_offset`,
    /// `_timestamp`; an error ends it.
    pub rows: BoxStream<'static, Result<RecordBatch>>,
}

type Rows = BoxStream<'static, Result<RecordBatch>>;

/// How far a consumer group is behind on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    pub stream: String,
    pub partition: u32,
    /// The next offset the group will read (none: never committed).
    pub committed: Option<u64>,
    /// The partition's end.
    pub end: u64,
    /// Rows between the two.
    pub lag: u64,
}

/// A group as listed: live groups with their generation and member count,
/// and groups that only have committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupSummary {
    pub group: String,
    pub stream: String,
    pub generation: Option<u64>,
    pub members: usize,
}

/// One partition of a described group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    pub partition: u32,
    pub committed: Option<u64>,
    pub end: u64,
    pub lag: u64,
    /// The live member it is assigned to.
    pub member: Option<String>,
}

/// A group's members, their partitions, and per partition the committed
/// offset, the end and the lag.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupDescription {
    pub group: String,
    pub stream: String,
    pub generation: Option<u64>,
    pub strategy: Option<Strategy>,
    pub members: Vec<MemberState>,
    pub partitions: Vec<PartitionLag>,
}

/// Per partition: (partition, committed, end, lag) — the one place lag is
/// computed.
fn lags(
    ends: &[u64],
    committed: &[Option<u64>],
) -> impl Iterator<Item = (u32, Option<u64>, u64, u64)> {
    ends.iter().enumerate().map(|(p, &end)| {
        let c = committed.get(p).copied().flatten();
        (p as u32, c, end, end - c.unwrap_or(0).min(end))
    })
}

impl Log {
    /// The offset `position` names in one partition whose end is `end`.
    pub async fn resolve_position(
        &self,
        stream: &str,
        partition: u32,
        position: Position,
        end: u64,
    ) -> Result<u64> {
        match position {
            Position::Earliest => Ok(0),
            Position::Latest => Ok(end),
            Position::Offset(n) => Ok(n),
            Position::Time(t) => self.offset_for_time(stream, partition, t).await,
        }
    }

    /// Opens a read (see the module doc).
    pub async fn consume(self: &Arc<Self>, req: ConsumeRequest) -> Result<Consumption> {
        let info = self.stream(&req.stream).await?;
        let n = info.spec.partitions;
        let mut partitions: Vec<u32> = match &req.partitions {
            None => (0..n).collect(),
            Some(ps) => {
                let mut ps = ps.clone();
                ps.sort_unstable();
                ps.dedup();
                ps
            }
        };
        if let Some(&p) = partitions.iter().find(|p| **p >= n) {
            return Err(LogError::PartitionOutOfRange {
                stream: req.stream.clone(),
                partition: p,
                partitions: n,
            });
        }
        let membership = match (&req.group, &req.member) {
            (Some(group), Some(m)) => {
                if req.partitions.is_some() {
                    return Err(LogError::InvalidArgument(
                        "a group member reads the partitions assigned to it; leave out \"partition\""
                            .into(),
                    ));
                }
                let a = self
                    .groups()
                    .join(JoinRequest {
                        group: group.clone(),
                        stream: req.stream.clone(),
                        member: Some(m.member.clone()),
                        strategy: m.strategy,
                        session_timeout: m.session_timeout,
                    })
                    .await?;
                partitions = a.partitions.clone();
                Some(a)
            }
            (None, Some(_)) => {
                return Err(LogError::InvalidArgument(
                    "\"member\" needs a \"group\"".into(),
                ));
            }
            _ => None,
        };
        let ends = self.partition_ends(&req.stream).await?;
        let committed = match &req.group {
            Some(g) => self.committed_offsets(g, &req.stream).await?,
            None => vec![None; n as usize],
        };
        // `ends` and `committed` are separate reads: a stream dropped and
        // created again with fewer partitions in between leaves them shorter.
        let changed = || LogError::StreamChanged(req.stream.clone());
        let mut reads = Vec::with_capacity(partitions.len());
        for p in partitions {
            let end = *ends.get(p as usize).ok_or_else(changed)?;
            let from = match *committed.get(p as usize).ok_or_else(changed)? {
                Some(o) => o,
                None => {
                    let at = req.from.unwrap_or(Position::Earliest);
                    self.resolve_position(&req.stream, p, at, end).await?
                }
            };
            reads.push(partition_rows(
                self.clone(),
                info.clone(),
                p,
                from,
                end,
                req.follow,
            ));
        }
        let rows = with_heartbeats(
            self.clone(),
            futures::stream::select_all(reads),
            membership.clone(),
        );
        Ok(Consumption {
            info,
            membership,
            rows,
        })
    }

    /// Commits a group's next offsets for partitions of a stream. With a
    /// member, the commit is refused unless that member owns the partitions
    /// (in `generation`, when given): a member rebalanced away cannot move
    /// offsets it no longer owns.
    pub async fn commit_offsets(
        &self,
        group: &str,
        stream: &str,
        member: Option<(&str, Option<u64>)>,
        offsets: &[(u32, u64)],
    ) -> Result<()> {
        let owner = member.map(|(member, generation)| {
            CommitCheck::Owner(OwnerCheck {
                member: member.to_string(),
                generation,
                partitions: offsets.iter().map(|(p, _)| *p).collect(),
            })
        });
        self.commit_checked(group, stream, offsets, owner).await
    }

    /// The stream, once offsets to commit for it are checked against its
    /// partitions and their ends.
    pub(crate) async fn checked_offsets(
        &self,
        stream: &str,
        offsets: &[(u32, u64)],
    ) -> Result<Arc<StreamInfo>> {
        let info = self.stream(stream).await?;
        let ends = self.metadata().partition_ends(info.id).await?;
        for &(p, o) in offsets {
            Self::check_partition(&info, p)?;
            // The cached stream may be older than the ends (created again
            // elsewhere with fewer partitions).
            let end = *ends
                .get(p as usize)
                .ok_or_else(|| LogError::StreamChanged(stream.to_string()))?;
            if o > end {
                return Err(LogError::InvalidArgument(format!(
                    "offset {o} is beyond the end ({end}) of partition {p} of stream \"{stream}\""
                )));
            }
        }
        Ok(info)
    }

    /// Commits offsets after checking them against the partitions' ends,
    /// and `check` in the commit's own transaction; the commit lands
    /// within [`crate::groups::COMMIT_WINDOW`] of this call or not at all.
    pub(crate) async fn commit_checked(
        &self,
        group: &str,
        stream: &str,
        offsets: &[(u32, u64)],
        check: Option<CommitCheck>,
    ) -> Result<()> {
        let arrived = crate::clock::monotonic();
        let info = self.checked_offsets(stream, offsets).await?;
        self.metadata()
            .commit_group_offsets(
                group,
                info.id,
                offsets,
                self.now_micros(),
                check.as_ref(),
                Some(crate::groups::commit_deadline(arrived)),
            )
            .await
    }

    /// A group's committed next offset for each partition of a stream
    /// (`None`: never committed).
    pub async fn committed_offsets(&self, group: &str, stream: &str) -> Result<Vec<Option<u64>>> {
        let info = self.stream(stream).await?;
        let mut out = vec![None; info.spec.partitions as usize];
        for (p, o) in self.metadata().group_offsets(group, info.id).await? {
            if let Some(slot) = out.get_mut(p as usize) {
                *slot = Some(o);
            }
        }
        Ok(out)
    }

    /// Every (group, stream name) with committed offsets.
    pub async fn committed_groups(&self) -> Result<Vec<(String, String)>> {
        let streams: HashMap<_, _> = self
            .metadata()
            .streams()
            .await?
            .into_iter()
            .map(|s| (s.id, s.spec.name))
            .collect();
        Ok(self
            .metadata()
            .groups()
            .await?
            .into_iter()
            .filter_map(|(g, id)| streams.get(&id).map(|n| (g, n.clone())))
            .collect())
    }

    /// Per group with committed offsets, per partition of its stream: the
    /// committed offset (none yet), the partition's end and the lag.
    pub async fn group_lags(&self) -> Result<Vec<GroupLag>> {
        let mut out = Vec::new();
        for (group, stream) in self.committed_groups().await? {
            let ends = self.partition_ends(&stream).await?;
            let committed = self.committed_offsets(&group, &stream).await?;
            out.extend(
                lags(&ends, &committed).map(|(partition, committed, end, lag)| GroupLag {
                    group: group.clone(),
                    stream: stream.clone(),
                    partition,
                    committed,
                    end,
                    lag,
                }),
            );
        }
        Ok(out)
    }

    /// Every group: the live ones and those with only committed offsets.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>> {
        let mut out = std::collections::BTreeMap::new();
        for (group, stream) in self.committed_groups().await? {
            let summary = GroupSummary {
                group: group.clone(),
                stream: stream.clone(),
                generation: None,
                members: 0,
            };
            out.insert((group, stream), summary);
        }
        for g in self.groups().list().await? {
            let summary = GroupSummary {
                group: g.group.clone(),
                stream: g.stream.clone(),
                generation: Some(g.generation),
                members: g.members.len(),
            };
            out.insert((g.group, g.stream), summary);
        }
        Ok(out.into_values().collect())
    }

    /// One group, live or with only committed offsets.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let live = self.groups().describe(group).await?;
        let stream = match &live {
            Some(g) => Some(g.stream.clone()),
            None => self
                .committed_groups()
                .await?
                .into_iter()
                .find(|(g, _)| g == group)
                .map(|(_, s)| s),
        };
        let stream = stream.ok_or_else(|| LogError::UnknownGroup(group.to_string()))?;
        let ends = self.partition_ends(&stream).await?;
        let committed = self.committed_offsets(group, &stream).await?;
        let owner = |p: u32| {
            live.as_ref().and_then(|g| {
                g.members
                    .iter()
                    .find(|m| m.partitions.contains(&p))
                    .map(|m| m.member.clone())
            })
        };
        let partitions = lags(&ends, &committed)
            .map(|(partition, committed, end, lag)| PartitionLag {
                partition,
                committed,
                end,
                lag,
                member: owner(partition),
            })
            .collect();
        Ok(GroupDescription {
            group: group.to_string(),
            stream,
            generation: live.as_ref().map(|g| g.generation),
            strategy: live.as_ref().map(|g| g.strategy),
            members: live.map(|g| g.members).unwrap_or_default(),
            partitions,
        })
    }

    /// Commits `to` as the offsets of every partition of `stream` for
    /// `group`, which must have no live members — checked in the commit's
    /// transaction, so no member joins in between; returns them.
    pub async fn reset_offsets(
        &self,
        group: &str,
        stream: &str,
        to: Position,
    ) -> Result<Vec<(u32, u64)>> {
        let ends = self.partition_ends(stream).await?;
        let mut offsets = Vec::with_capacity(ends.len());
        for (p, end) in ends.iter().enumerate() {
            let o = self.resolve_position(stream, p as u32, to, *end).await?;
            offsets.push((p as u32, o.min(*end)));
        }
        let check = CommitCheck::NoLiveMembers {
            now: self.now_micros(),
        };
        self.commit_checked(group, stream, &offsets, Some(check))
            .await?;
        Ok(offsets)
    }
}

/// The rows of one partition from `from`: up to `end`, then, following,
/// whatever is committed after, as it is committed; all in the schema
/// version of `info` (a column added meanwhile is not in them: the
/// consumer's schema was fixed when it started).
fn partition_rows(
    log: Arc<Log>,
    info: Arc<StreamInfo>,
    partition: u32,
    from: u64,
    end: u64,
    follow: bool,
) -> Rows {
    let name = info.name().to_string();
    futures::stream::unfold(Some((from, end, true)), move |state| {
        let log = log.clone();
        let name = name.clone();
        let info = info.clone();
        async move {
            let (offset, mut end, first) = state?;
            if !first || offset >= end {
                if !follow {
                    return None;
                }
                end = match log.wait_for(&name, partition, offset).await {
                    Ok(e) => e,
                    Err(e) => return Some((error_rows(e), None)),
                };
            }
            match log.read_as(info, partition, offset..end, None).await {
                Ok(rows) => Some((rows.boxed(), Some((end, end, false)))),
                Err(e) => Some((error_rows(e), None)),
            }
        }
    })
    .flatten()
    .boxed()
}

fn error_rows(e: LogError) -> Rows {
    futures::stream::once(async move { Err(e) }).boxed()
}

/// The rows; for a member, a heartbeat every [`HEARTBEAT`] while they are
/// read, and the end (with [`LogError::Rebalanced`]) when the member's
/// generation is over. The first error ends the read.
///
/// The heartbeats run in a task of their own, not inside the polling of
/// the reads: a heartbeat awaited there would leave the partitions' reads
/// suspended mid-query, each holding a metadata connection, while the
/// heartbeat waits for one — with as many partitions as the pool has
/// connections, the read stalls until the pool's timeout.
fn with_heartbeats(log: Arc<Log>, rows: SelectAll<Rows>, membership: Option<Assignment>) -> Rows {
    /// The heartbeat task, aborted with the read.
    struct Beats(tokio::task::JoinHandle<LogError>);
    impl Drop for Beats {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let beats = membership.map(|m| {
        Beats(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(crate::clock::monotonic() + HEARTBEAT, HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match log.groups().heartbeat(&m.group, &m.member).await {
                    Ok(now) if now.generation == m.generation => {}
                    Ok(now) => {
                        return LogError::Rebalanced {
                            group: m.group.clone(),
                            generation: now.generation,
                        };
                    }
                    Err(e) => return e,
                }
            }
        }))
    });
    struct State {
        rows: SelectAll<Rows>,
        beats: Option<Beats>,
        done: bool,
    }
    let state = State {
        rows,
        beats,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let ended = async {
            match s.beats.as_mut() {
                Some(b) => match (&mut b.0).await {
                    Ok(e) => e,
                    Err(e) => LogError::Internal(format!("consumer heartbeats: {e}")),
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = s.rows.next() => {
                let item = item?;
                s.done = item.is_err();
                Some((item, s))
            }
            outcome = ended => {
                s.done = true;
                Some((Err(outcome), s))
            }
        }
    });
    stream.boxed()
}
