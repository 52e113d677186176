//! Consumer groups of the classic protocol: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, ListGroups, DescribeGroups. The
//! rebalance state machine is the log's (`streamhouse_log::groups::classic`),
//! kept in the metadata store, so any agent coordinates any group: a
//! client is told that the agent it asked is the coordinator.

use std::time::Duration;

use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use streamhouse_log::groups::classic::{ClassicError, ClassicOp, ClassicReply, JoinAsk, Phase};
use streamhouse_sql::privileges::{Need, Object, Privilege};

use crate::ctx::{Ctx, text};
use crate::errors::{About, of_log, of_sql};

/// The longest a join or sync waits, whatever timeouts it names.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// A classic refusal as the Kafka error.
pub fn refusal_code(e: ClassicError) -> E {
    match e {
        ClassicError::UnknownMemberId => E::UnknownMemberId,
        ClassicError::IllegalGeneration => E::IllegalGeneration,
        ClassicError::RebalanceInProgress => E::RebalanceInProgress,
        ClassicError::InconsistentGroupProtocol => E::InconsistentGroupProtocol,
        ClassicError::InvalidSessionTimeout => E::InvalidSessionTimeout,
    }
}

/// Whether the connection's role may consume as (and commit for) `group`.
pub(crate) async fn may_consume(ctx: &Ctx, group: &str) -> Result<(), E> {
    let need = [Need::Privilege(
        Privilege::Consume,
        Object::group(group.to_string()),
    )];
    ctx.door
        .db
        .authorize(crate::ctx::DOOR, ctx.role(), &need)
        .await
        .map_err(|e| of_sql(&e, About::Group))
}

/// FindCoordinator: this agent, for any group; for a transactional id, the
/// live agent its hash names, the same whichever agent is asked.
pub async fn find_coordinator(
    ctx: &Ctx,
    r: FindCoordinatorRequest,
    _version: i16,
) -> FindCoordinatorResponse {
    let me = &ctx.door.broker;
    let out = FindCoordinatorResponse::default();
    // Key type 0 is a group, 1 a transactional id (whose producer lives on
    // the agent that starts it).
    if r.key_type == 1 {
        let brokers = crate::brokers::live(&ctx.door.db, me).await;
        let b = crate::brokers::coordinator(&brokers, &r.key);
        return out
            .with_node_id(BrokerId(b.node_id))
            .with_host(text(b.host.clone()))
            .with_port(i32::from(b.port));
    }
    if r.key_type != 0 {
        return out
            .with_error_code(E::InvalidRequest.code())
            .with_error_message(Some(text("unknown coordinator key type")))
            .with_node_id(BrokerId(-1))
            .with_host(text(""))
            .with_port(-1);
    }
    out.with_node_id(BrokerId(me.node_id))
        .with_host(text(me.host.clone()))
        .with_port(i32::from(me.port))
}

/// How long a member may wait in a join: its rebalance timeout (its session
/// timeout before v1), and a little more for the phase to end.
fn join_wait(r: &JoinGroupRequest) -> Duration {
    let ms = if r.rebalance_timeout_ms > 0 {
        r.rebalance_timeout_ms
    } else {
        r.session_timeout_ms
    };
    (Duration::from_millis(ms.max(0) as u64) + Duration::from_secs(1)).min(MAX_WAIT)
}

/// JoinGroup.
pub async fn join(ctx: &Ctx, r: JoinGroupRequest, version: i16) -> JoinGroupResponse {
    let group = r.group_id.0.to_string();
    let out = JoinGroupResponse::default().with_generation_id(-1);
    if let Err(e) = may_consume(ctx, &group).await {
        return out.with_error_code(e.code());
    }
    if group.is_empty() {
        return out.with_error_code(E::InvalidGroupId.code());
    }
    if r.group_instance_id.is_some() {
        // Static membership is not supported: refuse rather than
        // pretend.
        return out.with_error_code(E::UnsupportedVersion.code());
    }
    let mut member = r.member_id.to_string();
    if member.is_empty() {
        let client = if ctx.client_id.is_empty() {
            "member"
        } else {
            ctx.client_id.as_str()
        };
        member = format!("{client}-{}", ulid::Ulid::new().to_string().to_lowercase());
        // Since v4 the member first learns its id, then joins with it.
        if version >= 4 {
            return out
                .with_error_code(E::MemberIdRequired.code())
                .with_member_id(text(member));
        }
    }
    let wait = join_wait(&r);
    let ask = JoinAsk {
        member: member.clone(),
        client_id: ctx.client_id.clone(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: if r.rebalance_timeout_ms > 0 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        },
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
    };
    let out = out.with_member_id(text(member));
    match ctx
        .door
        .db
        .log()
        .groups()
        .classic_join(&group, ask, wait)
        .await
    {
        Ok(ClassicReply::Joined(j)) => out
            .with_generation_id(j.generation)
            .with_protocol_type(Some(r.protocol_type))
            .with_protocol_name(Some(text(j.protocol)))
            .with_leader(text(j.leader))
            .with_members(
                j.members
                    .into_iter()
                    .map(|(id, meta)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(text(id))
                            .with_metadata(meta.into())
                    })
                    .collect(),
            ),
        Ok(ClassicReply::Refused(e)) => out.with_error_code(refusal_code(e).code()),
        Ok(_) => out.with_error_code(E::RebalanceInProgress.code()),
        Err(e) => out.with_error_code(of_log(&e).code()),
    }
}

/// SyncGroup: the leader brings the assignment; everyone gets its share.
pub async fn sync(ctx: &Ctx, r: SyncGroupRequest) -> SyncGroupResponse {
    let group = r.group_id.0.to_string();
    let out = SyncGroupResponse::default()
        .with_protocol_type(r.protocol_type.clone())
        .with_protocol_name(r.protocol_name.clone());
    if let Err(e) = may_consume(ctx, &group).await {
        return out.with_error_code(e.code());
    }
    let assignments = (!r.assignments.is_empty()).then(|| {
        r.assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
            .collect()
    });
    match ctx
        .door
        .db
        .log()
        .groups()
        .classic_sync(&group, &r.member_id, r.generation_id, assignments, MAX_WAIT)
        .await
    {
        Ok(ClassicReply::Synced(bytes)) => out.with_assignment(bytes.into()),
        Ok(ClassicReply::Refused(e)) => out.with_error_code(refusal_code(e).code()),
        Ok(_) => out.with_error_code(E::RebalanceInProgress.code()),
        Err(e) => out.with_error_code(of_log(&e).code()),
    }
}

async fn classic(ctx: &Ctx, group: &str, op: ClassicOp) -> i16 {
    match ctx.door.db.log().groups().classic(group, &op).await {
        Ok(ClassicReply::Refused(e)) => refusal_code(e).code(),
        Ok(_) => 0,
        Err(e) => of_log(&e).code(),
    }
}

/// Heartbeat.
pub async fn heartbeat(ctx: &Ctx, r: HeartbeatRequest) -> HeartbeatResponse {
    let group = r.group_id.0.to_string();
    if let Err(e) = may_consume(ctx, &group).await {
        return HeartbeatResponse::default().with_error_code(e.code());
    }
    let op = ClassicOp::Heartbeat {
        member: r.member_id.to_string(),
        generation: r.generation_id,
    };
    HeartbeatResponse::default().with_error_code(classic(ctx, &group, op).await)
}

/// LeaveGroup: one member (before v3) or several.
pub async fn leave(ctx: &Ctx, r: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = r.group_id.0.to_string();
    if let Err(e) = may_consume(ctx, &group).await {
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    if version < 3 {
        let op = ClassicOp::Leave {
            members: vec![r.member_id.to_string()],
        };
        return LeaveGroupResponse::default().with_error_code(classic(ctx, &group, op).await);
    }
    let mut members = Vec::with_capacity(r.members.len());
    for m in r.members {
        let op = ClassicOp::Leave {
            members: vec![m.member_id.to_string()],
        };
        let code = classic(ctx, &group, op).await;
        members.push(
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code),
        );
    }
    LeaveGroupResponse::default().with_members(members)
}

/// Whether the caller may see a group.
async fn visible(ctx: &Ctx, group: &str) -> bool {
    let Some(role) = ctx.role() else { return true };
    let Ok(held) = ctx.door.db.privileges().await else {
        return false;
    };
    held.allows(
        role,
        &Need::Privilege(Privilege::Consume, Object::group(group.to_string())),
    )
}

/// ListGroups: the classic groups, and every group with committed offsets
/// (as empty consumer groups).
pub async fn list(ctx: &Ctx, r: ListGroupsRequest) -> ListGroupsResponse {
    let log = ctx.door.db.log();
    let classic = match log.groups().classic_groups().await {
        Ok(g) => g,
        Err(e) => return ListGroupsResponse::default().with_error_code(of_log(&e).code()),
    };
    let mut listed: Vec<(String, String, &'static str)> = classic
        .into_iter()
        .map(|(name, g)| (name, g.protocol_type, g.phase.kafka_name()))
        .collect();
    if let Ok(committed) = log.metadata().groups().await {
        for (name, _) in committed {
            if !listed.iter().any(|(n, _, _)| *n == name) {
                listed.push((name, "consumer".into(), Phase::Empty.kafka_name()));
            }
        }
    }
    listed.sort();
    listed.dedup_by(|a, b| a.0 == b.0);
    let mut groups = Vec::with_capacity(listed.len());
    for (name, protocol_type, state) in listed {
        if !r.states_filter.is_empty() && !r.states_filter.iter().any(|s| **s == *state) {
            continue;
        }
        if !visible(ctx, &name).await {
            continue;
        }
        groups.push(
            ListedGroup::default()
                .with_group_id(GroupId(text(name)))
                .with_protocol_type(text(protocol_type))
                .with_group_state(text(state)),
        );
    }
    ListGroupsResponse::default().with_groups(groups)
}

/// DescribeGroups: state, protocol and members of each classic group; a
/// group with no classic state is described as Empty when it has
/// committed offsets and Dead otherwise, as Apache Kafka does.
pub async fn describe(ctx: &Ctx, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let log = ctx.door.db.log();
    let classic = log.groups().classic_groups().await;
    let committed = log.metadata().groups().await.unwrap_or_default();
    let mut out = Vec::with_capacity(r.groups.len());
    for id in r.groups {
        let name = id.0.to_string();
        let described = DescribedGroup::default().with_group_id(id);
        if let Err(e) = may_consume(ctx, &name).await {
            out.push(described.with_error_code(e.code()));
            continue;
        }
        let state = match &classic {
            Ok(groups) => groups.iter().find(|(n, _)| *n == name).map(|(_, g)| g),
            Err(e) => {
                out.push(described.with_error_code(of_log(e).code()));
                continue;
            }
        };
        let described = match state {
            Some(g) => described
                .with_group_state(text(g.phase.kafka_name()))
                .with_protocol_type(text(g.protocol_type.clone()))
                .with_protocol_data(text(g.protocol.clone().unwrap_or_default()))
                .with_members(
                    g.members
                        .iter()
                        .map(|(id, m)| {
                            let protocol = g.protocol.as_deref().unwrap_or_default();
                            let meta = m
                                .protocols
                                .iter()
                                .find(|(n, _)| n == protocol)
                                .map(|(_, b)| b.clone())
                                .unwrap_or_default();
                            DescribedGroupMember::default()
                                .with_member_id(text(id.clone()))
                                .with_client_id(text(m.client_id.clone()))
                                .with_client_host(text(m.client_host.clone()))
                                .with_member_metadata(meta.into())
                                .with_member_assignment(m.assignment.clone().into())
                        })
                        .collect(),
                ),
            None if committed.iter().any(|(n, _)| *n == name) => described
                .with_group_state(text(Phase::Empty.kafka_name()))
                .with_protocol_type(text("consumer")),
            None => described.with_group_state(text("Dead")),
        };
        out.push(described);
    }
    DescribeGroupsResponse::default().with_groups(out)
}
