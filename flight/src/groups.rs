//! Consumer-group actions (`DoAction`). Bodies and results are JSON; each
//! action answers one result.
//!
//! | type             | body                                                                 | result |
//! |------------------|----------------------------------------------------------------------|--------|
//! | `join_group`     | `{"group", "stream", "member"?, "strategy"?, "session_timeout_ms"?}` | assignment |
//! | `heartbeat`      | `{"group", "member"}`                                                | assignment |
//! | `leave_group`    | `{"group", "member"}`                                                | `{}` |
//! | `commit_offsets` | `{"group", "stream", "offsets": {"0": 120}, "member"?, "generation"?}` | `{}` |
//! | `list_groups`    | `{}`                                                                 | `[{"group", "stream", "generation", "members"}]` |
//! | `describe_group` | `{"group"}`                                                          | members, assignment, committed offsets and lag |
//! | `reset_offsets`  | `{"group", "stream", "to": "earliest"\|"latest"\|offset\|time}`       | `{"offsets": {…}}` |
//!
//! An assignment is `{"group", "stream", "member", "generation",
//! "partitions": [...]}`. Offsets are the next offset to read. A commit that
//! names its member is refused (FAILED_PRECONDITION) unless the member owns
//! those partitions — in `generation`, when given.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::{Action, ActionType};
use serde::Deserialize;
use serde_json::json;
use streamhouse_log::Log;
use streamhouse_log::groups::{JoinRequest, Strategy};
use tonic::{Response, Status};

use crate::action::{ActionStream, body, parse, reply};
use crate::consume::Start;
use crate::status::log_status;

const ACTIONS: [(&str, &str); 7] = [
    (
        "join_group",
        "Joins a consumer group: {\"group\", \"stream\", \"member\"?, \"strategy\"?, \"session_timeout_ms\"?} -> assignment",
    ),
    (
        "heartbeat",
        "Keeps a member alive: {\"group\", \"member\"} -> assignment",
    ),
    (
        "leave_group",
        "Leaves a consumer group: {\"group\", \"member\"}",
    ),
    (
        "commit_offsets",
        "Commits next offsets: {\"group\", \"stream\", \"offsets\": {\"0\": 120}, \"member\"?, \"generation\"?}",
    ),
    (
        "list_groups",
        "Lists consumer groups: {} -> [{\"group\", \"stream\", ...}]",
    ),
    (
        "describe_group",
        "Describes a group: {\"group\"} -> members, assignment, committed offsets, lag",
    ),
    (
        "reset_offsets",
        "Moves a group's offsets: {\"group\", \"stream\", \"to\": \"earliest\"|\"latest\"|offset|time}",
    ),
];

/// The actions this module answers, for `ListActions`.
pub fn action_types() -> Vec<ActionType> {
    crate::action::types(&ACTIONS)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Join {
    group: String,
    stream: String,
    member: Option<String>,
    strategy: Option<Strategy>,
    session_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberRef {
    group: String,
    member: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Commit {
    group: String,
    stream: String,
    offsets: BTreeMap<u32, u64>,
    member: Option<String>,
    generation: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRef {
    group: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    group: String,
    stream: String,
    to: Start,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Whether this module answers an action type.
pub fn answers(kind: &str) -> bool {
    crate::action::named(&ACTIONS, kind)
}

/// Answers a group action (one [`answers`] is true for).
pub async fn do_action(log: &Arc<Log>, action: Action) -> Result<Response<ActionStream>, Status> {
    match action.r#type.as_str() {
        "join_group" => {
            let j: Join = parse(&action)?;
            let a = log
                .groups()
                .join(JoinRequest {
                    group: j.group,
                    stream: j.stream,
                    member: j.member,
                    strategy: j.strategy.unwrap_or_default(),
                    session_timeout: j.session_timeout_ms.map(Duration::from_millis),
                })
                .await
                .map_err(log_status)?;
            reply(a)
        }
        "heartbeat" => {
            let m: MemberRef = parse(&action)?;
            reply(
                log.groups()
                    .heartbeat(&m.group, &m.member)
                    .await
                    .map_err(log_status)?,
            )
        }
        "leave_group" => {
            let m: MemberRef = parse(&action)?;
            log.groups()
                .leave(&m.group, &m.member)
                .await
                .map_err(log_status)?;
            reply(json!({}))
        }
        "commit_offsets" => {
            let c: Commit = parse(&action)?;
            let offsets: Vec<(u32, u64)> = c.offsets.into_iter().collect();
            let member = c.member.as_deref().map(|m| (m, c.generation));
            log.commit_offsets(&c.group, &c.stream, member, &offsets)
                .await
                .map_err(log_status)?;
            reply(json!({}))
        }
        "list_groups" => {
            let _: Empty = body(&action)?;
            reply(log.list_groups().await.map_err(log_status)?)
        }
        "describe_group" => {
            let g: GroupRef = parse(&action)?;
            reply(log.describe_group(&g.group).await.map_err(log_status)?)
        }
        "reset_offsets" => {
            let r: Reset = parse(&action)?;
            let offsets = log
                .reset_offsets(&r.group, &r.stream, r.to.position()?)
                .await
                .map_err(log_status)?;
            let map: BTreeMap<String, u64> =
                offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect();
            reply(json!({ "offsets": map }))
        }
        other => Err(Status::internal(format!(
            "action \"{other}\" is not a group action"
        ))),
    }
}
