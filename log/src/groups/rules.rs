//! The rules of consumer groups as pure functions over a group's stored
//! state: expiry, generations, assignment, and the checks a commit of
//! offsets must pass. The metadata stores call them inside their
//! transactions; nothing here touches storage.

use std::collections::BTreeMap;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::stream::StreamId;

/// Default time a member stays in its group without a heartbeat.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How partitions are spread over members (sorted by member id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Contiguous ranges: with 5 partitions and 2 members, `[0,1,2]` and `[3,4]`.
    #[default]
    Range,
    /// Dealt in turn: `[0,2,4]` and `[1,3]`.
    RoundRobin,
}

impl Strategy {
    /// Partitions `0..partitions` over `members` members, by member index.
    pub fn assign(self, partitions: u32, members: usize) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); members];
        if members == 0 {
            return out;
        }
        match self {
            Strategy::Range => {
                let n = partitions as usize;
                let (per, extra) = (n / members, n % members);
                let mut next = 0u32;
                for (i, slot) in out.iter_mut().enumerate() {
                    let take = per + usize::from(i < extra);
                    slot.extend(next..next + take as u32);
                    next += take as u32;
                }
            }
            Strategy::RoundRobin => {
                for p in 0..partitions {
                    out[p as usize % members].push(p);
                }
            }
        }
        out
    }
}

/// A member's view of its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub group: String,
    pub stream: String,
    pub member: String,
    pub generation: u64,
    pub partitions: Vec<u32>,
}

/// One member, as described.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    pub member: String,
    pub partitions: Vec<u32>,
    /// Seconds since its last heartbeat.
    pub idle_seconds: f64,
}

/// A group's live state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub group: String,
    pub stream: String,
    pub strategy: Strategy,
    pub generation: u64,
    pub members: Vec<MemberState>,
}

/// A member as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub heartbeat_at: Micros,
    pub timeout: Duration,
}

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub stream_id: StreamId,
    pub partitions: u32,
    pub strategy: Strategy,
    pub generation: u64,
    /// By member id.
    pub members: BTreeMap<String, StoredMember>,
}

impl StoredGroup {
    /// Drops members whose session timed out at `now`; whether any did.
    fn expire(&mut self, now: Micros) -> bool {
        let before = self.members.len();
        self.members
            .retain(|_, m| now - m.heartbeat_at <= m.timeout.as_micros() as i64);
        self.members.len() != before
    }

    /// Each member's partitions in the current generation.
    pub fn assignment(&self) -> BTreeMap<&str, Vec<u32>> {
        let plan = self.strategy.assign(self.partitions, self.members.len());
        self.members.keys().map(String::as_str).zip(plan).collect()
    }

    pub(crate) fn partitions_of(&self, member: &str) -> Option<Vec<u32>> {
        self.assignment().remove(member)
    }
}

/// What an operation does to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOp {
    /// Adds a member, or refreshes one already in.
    Join {
        member: String,
        stream_id: StreamId,
        stream: String,
        partitions: u32,
        /// Used when the join creates the group.
        strategy: Strategy,
        timeout: Duration,
    },
    Heartbeat {
        member: String,
    },
    Leave {
        member: String,
    },
    /// Only expires dead members.
    Observe,
}

/// Which member commits, to be checked against the assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerCheck {
    pub member: String,
    /// The generation the member read in, when it says.
    pub generation: Option<u64>,
    pub partitions: Vec<u32>,
}

/// What a commit of offsets checks, in its transaction.
#[derive(Debug, Clone)]
pub enum CommitCheck {
    /// The committing member owns the partitions, in its generation.
    Owner(OwnerCheck),
    /// The group has no live member at this time (a reset): checked in the
    /// same transaction as the commit, so no member can join in between.
    NoLiveMembers { now: Micros },
}

/// Whether a commit may go ahead on group `group` as `stored`.
pub fn check_commit(group: &str, stored: Option<&StoredGroup>, check: &CommitCheck) -> Result<()> {
    match check {
        CommitCheck::Owner(owner) => check_owner(group, stored, owner),
        CommitCheck::NoLiveMembers { now } => {
            let live = stored.map_or(0, |g| {
                let mut g = g.clone();
                g.expire(*now);
                g.members.len()
            });
            if live > 0 {
                return Err(LogError::GroupActive {
                    group: group.to_string(),
                    members: live,
                });
            }
            Ok(())
        }
    }
}

pub(crate) fn unknown_member(group: &str, member: &str) -> LogError {
    LogError::NotMember {
        group: group.to_string(),
        member: member.to_string(),
    }
}

/// The state of group `group` after `op` at `now`, from its stored state
/// (`None`: no such group). `Ok(None)`: the group does not exist (and the
/// operation does not create it).
pub fn apply(
    group: &str,
    stored: Option<StoredGroup>,
    op: &GroupOp,
    now: Micros,
) -> Result<Option<StoredGroup>> {
    let mut g = match (stored, op) {
        (Some(g), _) => g,
        (
            None,
            GroupOp::Join {
                stream_id,
                partitions,
                strategy,
                ..
            },
        ) => StoredGroup {
            stream_id: *stream_id,
            partitions: *partitions,
            strategy: *strategy,
            generation: 0,
            members: BTreeMap::new(),
        },
        (None, GroupOp::Heartbeat { member } | GroupOp::Leave { member }) => {
            return Err(unknown_member(group, member));
        }
        (None, GroupOp::Observe) => return Ok(None),
    };
    let mut changed = g.expire(now);
    match op {
        GroupOp::Join {
            member,
            stream_id,
            stream,
            partitions,
            timeout,
            ..
        } => {
            if g.stream_id != *stream_id {
                if !g.members.is_empty() {
                    return Err(LogError::InvalidArgument(format!(
                        "consumer group \"{group}\" reads another stream, not \"{stream}\""
                    )));
                }
                g.stream_id = *stream_id;
            }
            changed |= g.partitions != *partitions;
            g.partitions = *partitions;
            let fresh = StoredMember {
                heartbeat_at: now,
                timeout: *timeout,
            };
            changed |= g.members.insert(member.clone(), fresh).is_none();
        }
        GroupOp::Heartbeat { member } => {
            let m = g
                .members
                .get_mut(member)
                .ok_or_else(|| unknown_member(group, member))?;
            m.heartbeat_at = now;
        }
        GroupOp::Leave { member } => {
            if g.members.remove(member).is_none() {
                return Err(unknown_member(group, member));
            }
            changed = true;
        }
        GroupOp::Observe => {}
    }
    if changed {
        g.generation += 1;
    }
    Ok(Some(g))
}

/// Checks that a committing member owns its partitions in its generation
/// (a member rebalanced away must not move offsets it no longer owns).
pub fn check_owner(group: &str, stored: Option<&StoredGroup>, check: &OwnerCheck) -> Result<()> {
    let member = &check.member;
    let g = stored.ok_or_else(|| unknown_member(group, member))?;
    let owned = g
        .partitions_of(member)
        .ok_or_else(|| unknown_member(group, member))?;
    if let Some(gen_) = check.generation
        && gen_ != g.generation
    {
        return Err(LogError::Fenced(format!(
            "generation {gen_} of group \"{group}\" is over (now {})",
            g.generation
        )));
    }
    if let Some(p) = check.partitions.iter().find(|p| !owned.contains(p)) {
        return Err(LogError::Fenced(format!(
            "partition {p} is not assigned to member \"{member}\" of group \"{group}\""
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(member: &str, timeout_ms: u64) -> GroupOp {
        GroupOp::Join {
            member: member.into(),
            stream_id: 1,
            stream: "s".into(),
            partitions: 5,
            strategy: Strategy::Range,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn strategies_cover_every_partition_once() {
        assert_eq!(
            Strategy::Range.assign(5, 2),
            vec![vec![0, 1, 2], vec![3, 4]]
        );
        assert_eq!(
            Strategy::RoundRobin.assign(5, 2),
            vec![vec![0, 2, 4], vec![1, 3]]
        );
        assert_eq!(Strategy::Range.assign(2, 3), vec![vec![0], vec![1], vec![]]);
        for s in [Strategy::Range, Strategy::RoundRobin] {
            for members in 1..7 {
                let mut all: Vec<u32> = s.assign(16, members).concat();
                all.sort();
                assert_eq!(all, (0..16).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn joins_leaves_and_expiry_rebalance() {
        let ms = 1000;
        let a = apply("g", None, &join("a", 60_000), 0).unwrap().unwrap();
        assert_eq!(a.partitions_of("a").unwrap(), vec![0, 1, 2, 3, 4]);
        let b = apply("g", Some(a.clone()), &join("b", 50), ms)
            .unwrap()
            .unwrap();
        assert_eq!(b.partitions_of("b").unwrap(), vec![3, 4]);
        assert!(b.generation > a.generation);
        let hb = GroupOp::Heartbeat { member: "a".into() };
        let a2 = apply("g", Some(b.clone()), &hb, 2 * ms).unwrap().unwrap();
        assert_eq!(
            (a2.partitions_of("a").unwrap(), a2.generation),
            (vec![0, 1, 2], b.generation)
        );
        // A commit from the old generation, or for a partition now elsewhere,
        // is fenced.
        let check = |generation, partitions: &[u32]| OwnerCheck {
            member: "a".into(),
            generation,
            partitions: partitions.to_vec(),
        };
        assert!(check_owner("g", Some(&a2), &check(Some(a.generation), &[0])).is_err());
        assert!(check_owner("g", Some(&a2), &check(None, &[4])).is_err());
        check_owner("g", Some(&a2), &check(Some(a2.generation), &[0, 2])).unwrap();
        // b stops heartbeating: a gets everything back.
        let a3 = apply("g", Some(a2), &hb, 80 * ms).unwrap().unwrap();
        assert_eq!(a3.partitions_of("a").unwrap(), vec![0, 1, 2, 3, 4]);
        let hb_b = GroupOp::Heartbeat { member: "b".into() };
        assert!(apply("g", Some(a3.clone()), &hb_b, 80 * ms).is_err());
        let leave = GroupOp::Leave { member: "a".into() };
        let empty = apply("g", Some(a3), &leave, 80 * ms).unwrap().unwrap();
        assert!(empty.members.is_empty());
        assert_eq!(apply("g", None, &GroupOp::Observe, 0).unwrap(), None);
    }
}
