//! Consumer groups: membership and partition assignment, shared by every
//! agent through the metadata store.
//!
//! A group reads one stream. Members join (or are joined by an open
//! consumer read), keep themselves alive with heartbeats, and own the
//! partitions the group's strategy gives them in the current generation.
//! Every change of membership — a join, a leave, a member that missed its
//! session timeout — starts a new generation. The assignment is a pure
//! function of the generation's members (sorted by id), the partition count
//! and the strategy, so members connected to different agents agree on it.
//!
//! Each operation is one metadata transaction over the group's stored state
//! ([`GroupStore::update_group`](crate::metadata::GroupStore::update_group)): the store locks the group, this module
//! computes the new state ([`rules::apply`]), the store writes it back. Expiry is
//! evaluated whenever the group is touched, so a dead member is noticed by
//! the next living one. A commit of offsets by a member is checked against
//! the assignment in the same transaction as the commit.
//!
//! A commit of offsets lands within [`COMMIT_WINDOW`] of its arrival or not
//! at all ([`LogError::TimedOut`]). Its transaction checks the window after
//! it has written (holding the rows' locks) and before it commits: a commit
//! held up on the way to the store (a store restarting, a slow network)
//! past the point where its client gave up and sent a newer one can then
//! never land after the newer one and move the group's offsets back.

pub mod classic;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::ClockRef;
use crate::error::{LogError, Result};
use crate::metadata::MetadataStore;
use crate::stream::StreamId;
use classic::{ClassicGroup, ClassicOp, ClassicReply, JoinAsk};
use rules::unknown_member;
pub use rules::{
    Assignment, CommitCheck, DEFAULT_SESSION_TIMEOUT, GroupOp, GroupState, MemberState, OwnerCheck,
    StoredGroup, StoredMember, Strategy,
};

/// How often a member blocked in a classic join or sync looks again.
const CLASSIC_POLL: Duration = Duration::from_millis(50);

/// How long after its arrival a commit of offsets may still land: below
/// every client's request timeout (librdkafka's shortest default is 10 s,
/// Java's 30 s), so that a client which gave up on a commit and sent a
/// newer one never sees the older one land afterwards.
pub const COMMIT_WINDOW: Duration = Duration::from_secs(5);

/// The last instant a commit of offsets that arrived at `arrived` may land.
pub fn commit_deadline(arrived: tokio::time::Instant) -> tokio::time::Instant {
    arrived + COMMIT_WINDOW
}

/// Refuses a commit past its deadline (checked by the store just before
/// the commit's transaction commits).
pub(crate) fn check_deadline(deadline: Option<tokio::time::Instant>) -> Result<()> {
    match deadline {
        Some(d) if crate::clock::monotonic() > d => Err(LogError::TimedOut(format!(
            "the offset commit could not be applied within {} s of its arrival and was not \
             applied; commit again",
            COMMIT_WINDOW.as_secs()
        ))),
        _ => Ok(()),
    }
}

/// How a member joins.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub group: String,
    pub stream: String,
    /// Its id; a fresh one is made when absent.
    pub member: Option<String>,
    /// Used when the join creates the group; ignored otherwise.
    pub strategy: Strategy,
    pub session_timeout: Option<Duration>,
}

/// The groups of every agent, as this agent reaches them.
pub struct Groups {
    meta: Arc<dyn MetadataStore>,
    clock: ClockRef,
}

impl Groups {
    pub(crate) fn new(meta: Arc<dyn MetadataStore>, clock: ClockRef) -> Groups {
        Groups { meta, clock }
    }

    async fn update(&self, group: &str, op: GroupOp) -> Result<Option<StoredGroup>> {
        self.meta
            .update_group(group, &op, self.clock.now_micros())
            .await
    }

    async fn stream_name(&self, id: StreamId) -> Result<String> {
        Ok(self
            .meta
            .streams()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| s.spec.name)
            .unwrap_or_else(|| format!("#{id}")))
    }

    async fn assignment_of(
        &self,
        group: &str,
        member: &str,
        g: &StoredGroup,
    ) -> Result<Assignment> {
        Ok(Assignment {
            group: group.to_string(),
            stream: self.stream_name(g.stream_id).await?,
            member: member.to_string(),
            generation: g.generation,
            partitions: g
                .partitions_of(member)
                .ok_or_else(|| unknown_member(group, member))?,
        })
    }

    /// Adds a member (or refreshes one already in), rebalancing on a new
    /// member, and returns its assignment.
    pub async fn join(&self, req: JoinRequest) -> Result<Assignment> {
        let info = self
            .meta
            .stream(&req.stream)
            .await?
            .ok_or_else(|| LogError::UnknownStream(req.stream.clone()))?;
        let member = req
            .member
            .clone()
            .unwrap_or_else(|| format!("member-{}", ulid::Ulid::new().to_string().to_lowercase()));
        let op = GroupOp::Join {
            member: member.clone(),
            stream_id: info.id,
            stream: req.stream.clone(),
            partitions: info.spec.partitions,
            strategy: req.strategy,
            timeout: req.session_timeout.unwrap_or(DEFAULT_SESSION_TIMEOUT),
        };
        let g = self
            .update(&req.group, op)
            .await?
            .expect("a join creates its group");
        self.assignment_of(&req.group, &member, &g).await
    }

    /// Keeps a member alive; answers its current assignment (a new
    /// generation means: stop, then read the new partitions).
    pub async fn heartbeat(&self, group: &str, member: &str) -> Result<Assignment> {
        let op = GroupOp::Heartbeat {
            member: member.to_string(),
        };
        let g = self
            .update(group, op)
            .await?
            .ok_or_else(|| unknown_member(group, member))?;
        self.assignment_of(group, member, &g).await
    }

    /// Removes a member; the others are rebalanced at once.
    pub async fn leave(&self, group: &str, member: &str) -> Result<()> {
        let op = GroupOp::Leave {
            member: member.to_string(),
        };
        self.update(group, op).await?;
        Ok(())
    }

    fn state(&self, group: &str, stream: String, g: &StoredGroup) -> GroupState {
        let now = self.clock.now_micros();
        let plan = g.assignment();
        GroupState {
            group: group.to_string(),
            stream,
            strategy: g.strategy,
            generation: g.generation,
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberState {
                    member: id.clone(),
                    partitions: plan.get(id.as_str()).cloned().unwrap_or_default(),
                    idle_seconds: (now - m.heartbeat_at).max(0) as f64 / 1e6,
                })
                .collect(),
        }
    }

    /// One group's live state (after expiring dead members).
    pub async fn describe(&self, group: &str) -> Result<Option<GroupState>> {
        let Some(g) = self.update(group, GroupOp::Observe).await? else {
            return Ok(None);
        };
        let stream = self.stream_name(g.stream_id).await?;
        Ok(Some(self.state(group, stream, &g)))
    }

    /// Applies one operation of the classic join/sync protocol.
    pub async fn classic(&self, group: &str, op: &ClassicOp) -> Result<ClassicReply> {
        self.meta
            .update_classic_group(group, op, self.clock.now_micros(), &[], None)
            .await
    }

    /// Joins a classic group and waits, up to `wait`, for the generation
    /// to begin (every member rejoined, or the rebalance timeout passed).
    /// Waiting polls the group, which keeps the member alive; a wait that
    /// runs out answers `Pending`.
    pub async fn classic_join(
        &self,
        group: &str,
        ask: JoinAsk,
        wait: Duration,
    ) -> Result<ClassicReply> {
        let member = ask.member.clone();
        let first = self.classic(group, &ClassicOp::Join(ask)).await?;
        self.classic_wait(group, first, ClassicOp::AwaitJoin { member }, wait)
            .await
    }

    /// A member's SyncGroup: answers its assignment once the leader has
    /// synced, polling the group up to `wait`.
    pub async fn classic_sync(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: Option<Vec<(String, Vec<u8>)>>,
        wait: Duration,
    ) -> Result<ClassicReply> {
        let op = ClassicOp::Sync {
            member: member.to_string(),
            generation,
            assignments,
        };
        let first = self.classic(group, &op).await?;
        let again = ClassicOp::AwaitSync {
            member: member.to_string(),
            generation,
        };
        self.classic_wait(group, first, again, wait).await
    }

    async fn classic_wait(
        &self,
        group: &str,
        mut reply: ClassicReply,
        again: ClassicOp,
        wait: Duration,
    ) -> Result<ClassicReply> {
        let deadline = crate::clock::monotonic() + wait;
        while reply == ClassicReply::Pending && crate::clock::monotonic() < deadline {
            tokio::time::sleep(CLASSIC_POLL).await;
            reply = self.classic(group, &again).await?;
        }
        Ok(reply)
    }

    /// Commits a classic group member's offsets (next offsets by stream
    /// and partition), if the group accepts the member and generation in
    /// the same transaction; the answer says whether it did. `arrived`:
    /// when the request came in (the commit lands within
    /// [`COMMIT_WINDOW`] of it or not at all).
    pub async fn classic_commit(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        offsets: &[(StreamId, Vec<(u32, u64)>)],
        arrived: tokio::time::Instant,
    ) -> Result<ClassicReply> {
        let op = ClassicOp::Commit {
            member: member.to_string(),
            generation,
        };
        self.meta
            .update_classic_group(
                group,
                &op,
                self.clock.now_micros(),
                offsets,
                Some(commit_deadline(arrived)),
            )
            .await
    }

    /// Every classic group, by name, as of now (dead members expired).
    pub async fn classic_groups(&self) -> Result<Vec<(String, ClassicGroup)>> {
        let now = self.clock.now_micros();
        Ok(self
            .meta
            .classic_groups()
            .await?
            .into_iter()
            .filter_map(|(name, g)| {
                let (g, _) = classic::apply(Some(g), &ClassicOp::Observe, now);
                g.map(|g| (name, g))
            })
            .collect())
    }

    /// Every group with live state, by name.
    pub async fn list(&self) -> Result<Vec<GroupState>> {
        let mut out = Vec::new();
        for name in self.meta.group_names().await? {
            if let Some(g) = self.describe(&name).await? {
                out.push(g);
            }
        }
        Ok(out)
    }
}
