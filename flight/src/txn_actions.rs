//! Transactional-producer actions (`DoAction`): start a producer, commit or
//! abort its open transaction. Bodies and results are JSON; each action
//! answers one result. The rules live in the log (`streamhouse_log::transactional`).
//!
//! | type                 | body                                                        | result |
//! |----------------------|-------------------------------------------------------------|--------|
//! | `init_transactions`  | `{"transactional_id", "timeout_ms"?}`                       | `{"transactional_id", "epoch"}` |
//! | `commit_transaction` | `{"transactional_id", "epoch", "offsets"?: [{"group", "stream", "offsets": {"0": 120}}]}` | `{"appends": [{"stream", "rows", "partitions"}]}` |
//! | `abort_transaction`  | `{"transactional_id", "epoch"}`                             | `{}` |
//!
//! Batches join the open transaction through `DoPut` with
//! `{"transactional_id", "epoch"}` in their `app_metadata`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::{Action, ActionType};
use serde::Deserialize;
use serde_json::json;
use streamhouse_log::{GroupCommit, Log};
use tonic::{Response, Status};

use crate::action::{ActionStream, parse, reply};
use crate::status::log_status;

const ACTIONS: [(&str, &str); 3] = [
    (
        "init_transactions",
        "Starts a transactional producer, fencing older instances: {\"transactional_id\", \"timeout_ms\"?} -> {\"transactional_id\", \"epoch\"}",
    ),
    (
        "commit_transaction",
        "Commits the staged batches and group offsets together: {\"transactional_id\", \"epoch\", \"offsets\"?: [{\"group\", \"stream\", \"offsets\": {\"0\": 120}}]}",
    ),
    (
        "abort_transaction",
        "Discards the staged batches: {\"transactional_id\", \"epoch\"}",
    ),
];

/// The actions this module answers, for `ListActions`.
pub fn action_types() -> Vec<ActionType> {
    crate::action::types(&ACTIONS)
}

/// Whether this module answers an action type.
pub fn answers(kind: &str) -> bool {
    crate::action::named(&ACTIONS, kind)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Init {
    transactional_id: String,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Producer {
    transactional_id: String,
    epoch: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Commit {
    transactional_id: String,
    epoch: u64,
    #[serde(default)]
    offsets: Vec<Offsets>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Offsets {
    group: String,
    stream: String,
    offsets: BTreeMap<u32, u64>,
}

/// Answers a transactional-producer action (one [`answers`] is true for).
pub async fn do_action(log: &Arc<Log>, action: Action) -> Result<Response<ActionStream>, Status> {
    match action.r#type.as_str() {
        "init_transactions" => {
            let i: Init = parse(&action)?;
            let epoch = log
                .init_transactions(&i.transactional_id, i.timeout_ms.map(Duration::from_millis))
                .await
                .map_err(log_status)?;
            reply(json!({ "transactional_id": i.transactional_id, "epoch": epoch }))
        }
        "commit_transaction" => {
            let c: Commit = parse(&action)?;
            let offsets: Vec<GroupCommit> = c
                .offsets
                .into_iter()
                .map(|o| GroupCommit {
                    group: o.group,
                    stream: o.stream,
                    offsets: o.offsets.into_iter().collect(),
                })
                .collect();
            // The transaction open as the call arrived: handled late (its
            // client gave up on it and asked again), it ends no later one.
            let txn = log
                .open_transaction(&c.transactional_id, c.epoch)
                .map_err(log_status)?;
            let done = log
                .commit_transaction_numbered(&c.transactional_id, c.epoch, txn, &offsets)
                .await
                .map_err(log_status)?;
            let appends: Vec<_> = done
                .into_iter()
                .map(|a| {
                    json!({ "stream": a.stream, "rows": a.ack.rows(), "partitions": a.ack.parts })
                })
                .collect();
            reply(json!({ "appends": appends }))
        }
        "abort_transaction" => {
            let p: Producer = parse(&action)?;
            let txn = log
                .open_transaction(&p.transactional_id, p.epoch)
                .map_err(log_status)?;
            log.abort_transaction_numbered(&p.transactional_id, p.epoch, Some(txn))
                .map_err(log_status)?;
            reply(json!({}))
        }
        other => Err(Status::internal(format!(
            "action \"{other}\" is not a transaction action"
        ))),
    }
}
