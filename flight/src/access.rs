//! What the consumer-group and transactional-producer actions need of
//! their caller: CONSUME on each group an action names, and SELECT on the
//! stream a member reads or commits offsets of. Appends of transactional
//! producers are checked where they are written (`produce`).

use arrow_flight::Action;
use serde_json::Value;
use streamhouse_sql::Database;
use streamhouse_sql::privileges::{Need, Object, Privilege};
use tonic::Status;

use crate::status::sql_status;

/// What `action` needs, read from its JSON body (a body that is not JSON
/// needs nothing here: the action's handler refuses it).
fn needs(action: &Action) -> Vec<Need> {
    let Ok(body) = serde_json::from_slice::<Value>(&action.body) else {
        return Vec::new();
    };
    let group = |v: &Value| {
        v.get("group")
            .and_then(Value::as_str)
            .map(|g| Need::Privilege(Privilege::Consume, Object::group(g)))
    };
    let stream = |v: &Value| {
        v.get("stream")
            .and_then(Value::as_str)
            .map(|s| Need::Privilege(Privilege::Select, Object::table(s)))
    };
    match action.r#type.as_str() {
        "join_group" | "commit_offsets" | "reset_offsets" => {
            group(&body).into_iter().chain(stream(&body)).collect()
        }
        "heartbeat" | "leave_group" | "describe_group" => group(&body).into_iter().collect(),
        "commit_transaction" => body
            .get("offsets")
            .and_then(Value::as_array)
            .map(|offsets| offsets.iter().filter_map(group).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Checks that `role` may run `action`: PERMISSION_DENIED otherwise.
pub async fn authorize(db: &Database, role: Option<&str>, action: &Action) -> Result<(), Status> {
    db.authorize("flight", role, &needs(action))
        .await
        .map_err(sql_status)
}
