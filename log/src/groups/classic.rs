//! The classic join/sync group protocol (Kafka's consumer groups) as pure
//! functions over a group's stored state: members join, the group waits
//! until every known member has rejoined (or the rebalance timeout passes),
//! a new generation begins with a leader who computes the assignment on the
//! client side, and the leader's SyncGroup hands each member its share.
//!
//! The state machine is the broker side of Apache Kafka's classic protocol:
//! `Empty` → `Joining` (PreparingRebalance) → `Syncing`
//! (CompletingRebalance) → `Stable`, back to `Joining` on any change of
//! membership. A member blocked in a join or a sync polls the stored state
//! (so any agent can coordinate any group: the state lives in the metadata
//! store and every operation is one transaction over it), and each poll
//! counts as the member's heartbeat. Nothing here touches storage.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Micros;

/// Where a group is in its rebalance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No members.
    #[default]
    Empty,
    /// Waiting for every member to (re)join, until `join_deadline`.
    Joining,
    /// A generation has begun; waiting for the leader's assignment.
    Syncing,
    /// Every member has its assignment.
    Stable,
}

impl Phase {
    /// The state's name in Kafka's terms (DescribeGroups, ListGroups).
    pub fn kafka_name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::Joining => "PreparingRebalance",
            Phase::Syncing => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

/// One member as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicMember {
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The protocols (assignors) it supports, with its metadata for each.
    pub protocols: Vec<(String, Vec<u8>)>,
    pub heartbeat_at: Micros,
    /// It has (re)joined in the current `Joining` phase.
    pub joined: bool,
    /// The generation it was last part of.
    pub generation: i32,
    /// Its share of the assignment, from the leader.
    pub assignment: Vec<u8>,
}

/// A group as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicGroup {
    pub protocol_type: String,
    pub phase: Phase,
    pub generation: i32,
    /// The protocol (assignor) chosen for the generation.
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub join_deadline: Micros,
    pub members: BTreeMap<String, ClassicMember>,
}

/// A join, as a member asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAsk {
    pub member: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Vec<u8>)>,
}

/// What an operation does to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassicOp {
    /// A member joins (or rejoins), starting a rebalance.
    Join(JoinAsk),
    /// A member blocked in its join asks whether the generation has begun.
    AwaitJoin {
        member: String,
    },
    /// A member's SyncGroup; the leader brings every member's assignment.
    Sync {
        member: String,
        generation: i32,
        assignments: Option<Vec<(String, Vec<u8>)>>,
    },
    /// A member blocked in its sync asks whether the leader has synced.
    AwaitSync {
        member: String,
        generation: i32,
    },
    Heartbeat {
        member: String,
        generation: i32,
    },
    Leave {
        members: Vec<String>,
    },
    /// An offset commit by `member` in `generation` (`-1` and no member:
    /// a commit from outside the group, allowed only while it is empty).
    Commit {
        member: String,
        generation: i32,
    },
    /// Only expires dead members and ends an overdue join phase.
    Observe,
}

/// Why an operation is refused, in the protocol's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicError {
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    InvalidSessionTimeout,
}

/// A new generation, as a member's join answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub generation: i32,
    pub protocol: String,
    pub leader: String,
    /// Every member with its metadata for the chosen protocol; for the
    /// leader only (others get none).
    pub members: Vec<(String, Vec<u8>)>,
}

/// What an operation answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassicReply {
    Ok,
    Joined(Joined),
    /// Still waiting: poll again with `AwaitJoin` / `AwaitSync`.
    Pending,
    Synced(Vec<u8>),
    Refused(ClassicError),
}

/// Bounds on a member's session timeout, as Kafka's broker defaults.
pub const MIN_SESSION_TIMEOUT_MS: i32 = 1_000;
pub const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

impl ClassicGroup {
    fn expire(&mut self, now: Micros) -> bool {
        let before = self.members.len();
        self.members
            .retain(|_, m| now - m.heartbeat_at <= i64::from(m.session_timeout_ms) * 1_000);
        self.members.len() != before
    }

    /// Starts (or keeps) a join phase after membership changed.
    fn rebalance(&mut self, now: Micros) {
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        if self.phase != Phase::Joining {
            self.phase = Phase::Joining;
            let timeout = self
                .members
                .values()
                .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
                .max()
                .unwrap_or(0);
            self.join_deadline = now.saturating_add(timeout * 1_000);
            for m in self.members.values_mut() {
                m.joined = false;
            }
        }
    }

    /// Ends the join phase if every member has joined or the deadline has
    /// passed (dropping those that did not rejoin).
    fn maybe_complete(&mut self, now: Micros) {
        if self.phase != Phase::Joining {
            return;
        }
        let all = self.members.values().all(|m| m.joined);
        if !all && now < self.join_deadline {
            return;
        }
        self.members.retain(|_, m| m.joined);
        if self.members.is_empty() {
            self.rebalance(now);
            return;
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        self.protocol = self.common_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let generation = self.generation;
        for m in self.members.values_mut() {
            m.joined = false;
            m.generation = generation;
            m.assignment.clear();
            m.heartbeat_at = now;
        }
        self.phase = Phase::Syncing;
    }

    /// The first protocol, in the first member's order of preference, that
    /// every member supports.
    fn common_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .cloned()
    }

    fn joined(&self, member: &str) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member {
            self.members
                .iter()
                .map(|(id, m)| {
                    let meta = m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default();
                    (id.clone(), meta)
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol,
            leader,
            members,
        }
    }

    /// Checks a member and its generation; refreshes its heartbeat.
    fn check_member(
        &mut self,
        member: &str,
        generation: i32,
        now: Micros,
    ) -> Result<(), ClassicError> {
        let m = self
            .members
            .get_mut(member)
            .ok_or(ClassicError::UnknownMemberId)?;
        m.heartbeat_at = now;
        if generation != self.generation {
            return Err(ClassicError::IllegalGeneration);
        }
        Ok(())
    }
}

/// A group's state after `op` at `now`, and the answer. `None` in: no
/// group yet; `None` out: nothing worth keeping (no member has ever formed
/// a generation). An emptied group keeps its generation.
pub fn apply(
    stored: Option<ClassicGroup>,
    op: &ClassicOp,
    now: Micros,
) -> (Option<ClassicGroup>, ClassicReply) {
    let mut g = stored.unwrap_or_default();
    if g.expire(now) {
        g.rebalance(now);
    }
    g.maybe_complete(now);
    let reply = step(&mut g, op, now);
    g.maybe_complete(now);
    // A member whose join just completed the phase gets its answer now.
    let reply = match (reply, op) {
        (ClassicReply::Pending, ClassicOp::Join(JoinAsk { member, .. }))
        | (ClassicReply::Pending, ClassicOp::AwaitJoin { member }) => await_join(&mut g, member),
        (reply, _) => reply,
    };
    let keep = !(g.members.is_empty() && g.phase == Phase::Empty && g.generation == 0);
    (keep.then_some(g), reply)
}

fn step(g: &mut ClassicGroup, op: &ClassicOp, now: Micros) -> ClassicReply {
    use ClassicReply::{Ok, Pending, Refused};
    match op {
        ClassicOp::Join(ask) => {
            if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&ask.session_timeout_ms)
            {
                return Refused(ClassicError::InvalidSessionTimeout);
            }
            if ask.protocols.is_empty() {
                return Refused(ClassicError::InconsistentGroupProtocol);
            }
            let others = g.members.iter().filter(|(id, _)| **id != ask.member);
            let mut others = others.peekable();
            if others.peek().is_some() {
                if g.protocol_type != ask.protocol_type {
                    return Refused(ClassicError::InconsistentGroupProtocol);
                }
                let shares = |m: &ClassicMember| {
                    m.protocols
                        .iter()
                        .any(|(n, _)| ask.protocols.iter().any(|(a, _)| a == n))
                };
                if !others.all(|(_, m)| shares(m)) {
                    return Refused(ClassicError::InconsistentGroupProtocol);
                }
            }
            g.protocol_type = ask.protocol_type.clone();
            let generation = g.members.get(&ask.member).map_or(0, |m| m.generation);
            g.members.insert(
                ask.member.clone(),
                ClassicMember {
                    client_id: ask.client_id.clone(),
                    client_host: ask.client_host.clone(),
                    session_timeout_ms: ask.session_timeout_ms,
                    rebalance_timeout_ms: ask.rebalance_timeout_ms,
                    protocols: ask.protocols.clone(),
                    heartbeat_at: now,
                    joined: false,
                    generation,
                    assignment: Vec::new(),
                },
            );
            g.rebalance(now);
            if let Some(m) = g.members.get_mut(&ask.member) {
                m.joined = true;
            }
            Pending
        }
        ClassicOp::AwaitJoin { member } => match g.members.get_mut(member) {
            None => Refused(ClassicError::UnknownMemberId),
            Some(m) => {
                m.heartbeat_at = now;
                if g.phase == Phase::Joining {
                    m.joined = true;
                }
                Pending
            }
        },
        ClassicOp::Sync {
            member,
            generation,
            assignments,
        } => {
            if let Err(e) = g.check_member(member, *generation, now) {
                return Refused(e);
            }
            match g.phase {
                Phase::Joining | Phase::Empty => Refused(ClassicError::RebalanceInProgress),
                Phase::Stable => ClassicReply::Synced(g.members[member].assignment.clone()),
                Phase::Syncing => {
                    let leads = g.leader.as_deref() == Some(member.as_str());
                    match assignments {
                        Some(given) if leads => {
                            for (id, bytes) in given {
                                if let Some(m) = g.members.get_mut(id) {
                                    m.assignment = bytes.clone();
                                }
                            }
                            g.phase = Phase::Stable;
                            ClassicReply::Synced(g.members[member].assignment.clone())
                        }
                        _ => Pending,
                    }
                }
            }
        }
        ClassicOp::AwaitSync { member, generation } => {
            if let Err(e) = g.check_member(member, *generation, now) {
                return Refused(e);
            }
            match g.phase {
                Phase::Joining | Phase::Empty => Refused(ClassicError::RebalanceInProgress),
                Phase::Syncing => Pending,
                Phase::Stable => ClassicReply::Synced(g.members[member].assignment.clone()),
            }
        }
        ClassicOp::Heartbeat { member, generation } => {
            let Some(m) = g.members.get_mut(member) else {
                return Refused(ClassicError::UnknownMemberId);
            };
            m.heartbeat_at = now;
            if g.phase == Phase::Joining {
                return Refused(ClassicError::RebalanceInProgress);
            }
            if *generation != g.generation {
                return Refused(ClassicError::IllegalGeneration);
            }
            Ok
        }
        ClassicOp::Leave { members } => {
            let mut left = false;
            for member in members {
                left |= g.members.remove(member).is_some();
            }
            if !left {
                return Refused(ClassicError::UnknownMemberId);
            }
            g.rebalance(now);
            Ok
        }
        ClassicOp::Commit { member, generation } => {
            if *generation < 0 && member.is_empty() {
                return if g.members.is_empty() {
                    Ok
                } else {
                    Refused(ClassicError::UnknownMemberId)
                };
            }
            if let Err(e) = g.check_member(member, *generation, now) {
                return Refused(e);
            }
            if g.phase == Phase::Syncing {
                return Refused(ClassicError::RebalanceInProgress);
            }
            Ok
        }
        ClassicOp::Observe => Ok,
    }
}

/// A blocked join's answer: the new generation once the join phase is over
/// and the member is part of it.
fn await_join(g: &mut ClassicGroup, member: &str) -> ClassicReply {
    match g.members.get(member) {
        None => ClassicReply::Refused(ClassicError::UnknownMemberId),
        Some(_) if g.phase == Phase::Joining => ClassicReply::Pending,
        Some(m) if m.generation == g.generation => ClassicReply::Joined(g.joined(member)),
        Some(_) => ClassicReply::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(member: &str) -> ClassicOp {
        ClassicOp::Join(JoinAsk {
            member: member.into(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 5_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), member.as_bytes().to_vec())],
        })
    }

    fn run(g: &mut Option<ClassicGroup>, op: ClassicOp, now: Micros) -> ClassicReply {
        let (next, reply) = apply(g.take(), &op, now);
        *g = next;
        reply
    }

    #[test]
    fn a_lone_member_joins_leads_and_syncs() {
        let mut g = None;
        let ClassicReply::Joined(j) = run(&mut g, join("a"), 0) else {
            panic!("a lone join completes at once")
        };
        assert_eq!((j.generation, j.leader.as_str()), (1, "a"));
        assert_eq!(j.members, vec![("a".to_string(), b"a".to_vec())]);
        let sync = ClassicOp::Sync {
            member: "a".into(),
            generation: 1,
            assignments: Some(vec![("a".into(), b"p0".to_vec())]),
        };
        assert_eq!(run(&mut g, sync, 1), ClassicReply::Synced(b"p0".to_vec()));
        assert_eq!(g.as_ref().unwrap().phase, Phase::Stable);
    }

    #[test]
    fn a_second_member_makes_the_first_rejoin_and_both_sync() {
        let mut g = None;
        run(&mut g, join("a"), 0);
        let sync = |m: &str, a: Option<Vec<(String, Vec<u8>)>>, gen_| ClassicOp::Sync {
            member: m.into(),
            generation: gen_,
            assignments: a,
        };
        run(&mut g, sync("a", Some(vec![]), 1), 0);
        assert_eq!(run(&mut g, join("b"), 10), ClassicReply::Pending);
        let hb = ClassicOp::Heartbeat {
            member: "a".into(),
            generation: 1,
        };
        assert_eq!(
            run(&mut g, hb, 20),
            ClassicReply::Refused(ClassicError::RebalanceInProgress)
        );
        let ClassicReply::Joined(a) = run(&mut g, join("a"), 30) else {
            panic!("every member has rejoined")
        };
        assert_eq!(
            (a.generation, a.leader.as_str(), a.members.len()),
            (2, "a", 2)
        );
        let ClassicReply::Joined(b) = run(&mut g, ClassicOp::AwaitJoin { member: "b".into() }, 40)
        else {
            panic!("b sees the generation")
        };
        assert!(b.members.is_empty(), "only the leader gets the members");
        assert_eq!(run(&mut g, sync("b", None, 2), 50), ClassicReply::Pending);
        let given = vec![("a".into(), b"A".to_vec()), ("b".into(), b"B".to_vec())];
        assert_eq!(
            run(&mut g, sync("a", Some(given), 2), 60),
            ClassicReply::Synced(b"A".to_vec())
        );
        let await_b = ClassicOp::AwaitSync {
            member: "b".into(),
            generation: 2,
        };
        assert_eq!(
            run(&mut g, await_b, 70),
            ClassicReply::Synced(b"B".to_vec())
        );
        let stale = ClassicOp::Commit {
            member: "b".into(),
            generation: 1,
        };
        assert_eq!(
            run(&mut g, stale, 80),
            ClassicReply::Refused(ClassicError::IllegalGeneration)
        );
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_deadline() {
        let mut g = None;
        run(&mut g, join("a"), 0);
        run(&mut g, join("b"), 0);
        // b joined, a must rejoin within a's rebalance timeout (5 s).
        let b = ClassicOp::AwaitJoin { member: "b".into() };
        assert_eq!(run(&mut g, b.clone(), 4_000_000), ClassicReply::Pending);
        let ClassicReply::Joined(j) = run(&mut g, b, 5_000_001) else {
            panic!("the deadline ends the join phase")
        };
        assert_eq!((j.leader.as_str(), j.members.len()), ("b", 1));
        assert!(!g.unwrap().members.contains_key("a"));
    }

    #[test]
    fn a_silent_member_expires_and_an_empty_group_takes_outside_commits() {
        let mut g = None;
        run(&mut g, join("a"), 0);
        let outside = ClassicOp::Commit {
            member: String::new(),
            generation: -1,
        };
        assert_eq!(
            run(&mut g, outside.clone(), 1),
            ClassicReply::Refused(ClassicError::UnknownMemberId)
        );
        assert_eq!(run(&mut g, outside, 10_000_001), ClassicReply::Ok);
        let g = g.expect("the group keeps its generation");
        assert_eq!((g.phase, g.generation), (Phase::Empty, 1));
    }

    #[test]
    fn leaving_rebalances_the_rest_and_bad_joins_are_refused() {
        let mut g = None;
        run(&mut g, join("a"), 0);
        let mut other = join("b");
        if let ClassicOp::Join(ask) = &mut other {
            ask.protocols = vec![("sticky".into(), vec![])];
        }
        assert_eq!(
            run(&mut g, other, 1),
            ClassicReply::Refused(ClassicError::InconsistentGroupProtocol)
        );
        let mut short = join("c");
        if let ClassicOp::Join(ask) = &mut short {
            ask.session_timeout_ms = 10;
        }
        assert_eq!(
            run(&mut g, short, 1),
            ClassicReply::Refused(ClassicError::InvalidSessionTimeout)
        );
        run(&mut g, join("b"), 2);
        let leave = ClassicOp::Leave {
            members: vec!["a".into()],
        };
        assert_eq!(run(&mut g, leave, 3), ClassicReply::Ok);
        // b is the only member and had joined: a new generation at once.
        let ClassicReply::Joined(j) = run(&mut g, ClassicOp::AwaitJoin { member: "b".into() }, 4)
        else {
            panic!("b leads the next generation")
        };
        assert_eq!((j.generation, j.leader.as_str()), (2, "b"));
    }
}
