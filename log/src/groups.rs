//! Consumer groups: live membership and partition assignment.
//!
//! A group reads one stream. Members join (or are joined by an open
//! consumer read), keep themselves alive with heartbeats, and own the
//! partitions the group's strategy gives them in the current generation.
//! Every change of membership — a join, a leave, a member that missed its
//! session timeout — starts a new generation with a fresh assignment.
//! Committed offsets live in the metadata store (see
//! [`crate::Log::commit_offsets`]); membership is held here, in the agent.
//!
//! Expiry is evaluated whenever the group is touched (join, heartbeat,
//! describe, commit), so a dead member is noticed by the next living one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};

/// Default time a member stays in its group without a heartbeat.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How partitions are spread over members (sorted by member id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Contiguous ranges: with 5 partitions and 2 members, [0,1,2] and [3,4].
    #[default]
    Range,
    /// Dealt in turn: [0,2,4] and [1,3].
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

struct Member {
    last_seen: Instant,
    timeout: Duration,
    partitions: Vec<u32>,
}

struct Group {
    stream: String,
    partitions: u32,
    strategy: Strategy,
    generation: u64,
    members: BTreeMap<String, Member>,
}

impl Group {
    /// Drops expired members; rebalances if any left.
    fn expire(&mut self, now: Instant) {
        let before = self.members.len();
        self.members
            .retain(|_, m| now.duration_since(m.last_seen) <= m.timeout);
        if self.members.len() != before {
            self.rebalance();
        }
    }

    fn rebalance(&mut self) {
        self.generation += 1;
        let plan = self.strategy.assign(self.partitions, self.members.len());
        for (m, parts) in self.members.values_mut().zip(plan) {
            m.partitions = parts;
        }
    }

    fn assignment(&self, group: &str, member: &str) -> Option<Assignment> {
        self.members.get(member).map(|m| Assignment {
            group: group.to_string(),
            stream: self.stream.clone(),
            member: member.to_string(),
            generation: self.generation,
            partitions: m.partitions.clone(),
        })
    }

    fn state(&self, group: &str, now: Instant) -> GroupState {
        GroupState {
            group: group.to_string(),
            stream: self.stream.clone(),
            strategy: self.strategy,
            generation: self.generation,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberState {
                    member: id.clone(),
                    partitions: m.partitions.clone(),
                    idle_seconds: now.duration_since(m.last_seen).as_secs_f64(),
                })
                .collect(),
        }
    }
}

/// How a member joins.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub group: String,
    pub stream: String,
    /// The stream's partition count.
    pub partitions: u32,
    /// Its id; a fresh one is made when absent.
    pub member: Option<String>,
    /// Used when the join creates the group; ignored otherwise.
    pub strategy: Strategy,
    pub session_timeout: Option<Duration>,
}

/// Every group of this agent.
#[derive(Default)]
pub struct Groups {
    groups: Mutex<HashMap<String, Group>>,
    next_member: AtomicU64,
}

fn unknown_member(group: &str, member: &str) -> LogError {
    LogError::NotMember {
        group: group.to_string(),
        member: member.to_string(),
    }
}

/// A group, with its expired members dropped.
fn live<'a>(
    groups: &'a mut HashMap<String, Group>,
    group: &str,
    member: &str,
    now: Instant,
) -> Result<&'a mut Group> {
    let g = groups
        .get_mut(group)
        .ok_or_else(|| unknown_member(group, member))?;
    g.expire(now);
    Ok(g)
}

impl Groups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a member (or refreshes one already in), rebalancing on a new
    /// member, and returns its assignment.
    pub fn join(&self, req: JoinRequest) -> Result<Assignment> {
        let now = Instant::now();
        let member = req.member.clone().unwrap_or_else(|| {
            format!(
                "member-{}",
                self.next_member.fetch_add(1, Ordering::Relaxed) + 1
            )
        });
        let mut groups = self.lock();
        let g = groups.entry(req.group.clone()).or_insert_with(|| Group {
            stream: req.stream.clone(),
            partitions: req.partitions,
            strategy: req.strategy,
            generation: 0,
            members: BTreeMap::new(),
        });
        if g.stream != req.stream {
            if !g.members.is_empty() {
                return Err(LogError::InvalidArgument(format!(
                    "consumer group \"{}\" reads stream \"{}\", not \"{}\"",
                    req.group, g.stream, req.stream
                )));
            }
            g.stream = req.stream.clone();
        }
        g.expire(now);
        let timeout = req.session_timeout.unwrap_or(DEFAULT_SESSION_TIMEOUT);
        let changed = g.partitions != req.partitions;
        g.partitions = req.partitions;
        match g.members.get_mut(&member) {
            Some(m) => {
                m.last_seen = now;
                m.timeout = timeout;
                if changed {
                    g.rebalance();
                }
            }
            None => {
                g.members.insert(
                    member.clone(),
                    Member {
                        last_seen: now,
                        timeout,
                        partitions: Vec::new(),
                    },
                );
                g.rebalance();
            }
        }
        Ok(g.assignment(&req.group, &member)
            .expect("member just joined"))
    }

    /// Keeps a member alive; answers its current assignment (a new
    /// generation means: stop, then read the new partitions).
    pub fn heartbeat(&self, group: &str, member: &str) -> Result<Assignment> {
        let now = Instant::now();
        let mut groups = self.lock();
        let g = live(&mut groups, group, member, now)?;
        let m = g
            .members
            .get_mut(member)
            .ok_or_else(|| unknown_member(group, member))?;
        m.last_seen = now;
        Ok(g.assignment(group, member).expect("member present"))
    }

    /// Removes a member; the others are rebalanced at once.
    pub fn leave(&self, group: &str, member: &str) -> Result<()> {
        let mut groups = self.lock();
        let g = groups
            .get_mut(group)
            .ok_or_else(|| unknown_member(group, member))?;
        if g.members.remove(member).is_none() {
            return Err(unknown_member(group, member));
        }
        g.rebalance();
        Ok(())
    }

    /// Checks that `member` owns `partitions` in `generation` (when given):
    /// a member that was rebalanced away must not commit.
    pub fn check_owner(
        &self,
        group: &str,
        member: &str,
        generation: Option<u64>,
        partitions: &[u32],
    ) -> Result<()> {
        let mut groups = self.lock();
        let g = live(&mut groups, group, member, Instant::now())?;
        let a = g
            .assignment(group, member)
            .ok_or_else(|| unknown_member(group, member))?;
        if let Some(gen_) = generation
            && gen_ != a.generation
        {
            return Err(LogError::Fenced(format!(
                "generation {gen_} of group \"{group}\" is over (now {})",
                a.generation
            )));
        }
        if let Some(p) = partitions.iter().find(|p| !a.partitions.contains(p)) {
            return Err(LogError::Fenced(format!(
                "partition {p} is not assigned to member \"{member}\" of group \"{group}\""
            )));
        }
        Ok(())
    }

    /// One group's live state (after expiring dead members).
    pub fn describe(&self, group: &str) -> Option<GroupState> {
        let now = Instant::now();
        let mut groups = self.lock();
        let g = groups.get_mut(group)?;
        g.expire(now);
        Some(g.state(group, now))
    }

    /// Every group with live state, by name.
    pub fn list(&self) -> Vec<GroupState> {
        let now = Instant::now();
        let mut groups = self.lock();
        let mut out: Vec<GroupState> = groups
            .iter_mut()
            .map(|(name, g)| {
                g.expire(now);
                g.state(name, now)
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// Forgets the groups of a dropped stream.
    pub fn forget_stream(&self, stream: &str) {
        self.lock().retain(|_, g| g.stream != stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(groups: &Groups, member: &str, timeout_ms: u64) -> Assignment {
        groups
            .join(JoinRequest {
                group: "g".into(),
                stream: "s".into(),
                partitions: 5,
                member: Some(member.into()),
                strategy: Strategy::Range,
                session_timeout: Some(Duration::from_millis(timeout_ms)),
            })
            .unwrap()
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
        let groups = Groups::default();
        let a = join(&groups, "a", 60_000);
        assert_eq!(a.partitions, vec![0, 1, 2, 3, 4]);
        let b = join(&groups, "b", 50);
        assert_eq!(b.partitions, vec![3, 4]);
        assert!(b.generation > a.generation);
        let a2 = groups.heartbeat("g", "a").unwrap();
        assert_eq!(
            (a2.partitions.clone(), a2.generation),
            (vec![0, 1, 2], b.generation)
        );
        // A commit from the old generation, or for a partition now elsewhere,
        // is fenced.
        assert!(
            groups
                .check_owner("g", "a", Some(a.generation), &[0])
                .is_err()
        );
        assert!(groups.check_owner("g", "a", None, &[4]).is_err());
        groups
            .check_owner("g", "a", Some(a2.generation), &[0, 2])
            .unwrap();
        // b stops heartbeating: a gets everything back.
        std::thread::sleep(Duration::from_millis(80));
        let a3 = groups.heartbeat("g", "a").unwrap();
        assert_eq!(a3.partitions, vec![0, 1, 2, 3, 4]);
        assert!(groups.heartbeat("g", "b").is_err());
        groups.leave("g", "a").unwrap();
        assert!(groups.describe("g").unwrap().members.is_empty());
    }
}
