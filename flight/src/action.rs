//! What every JSON action of the producer/consumer API shares: listing the
//! types, parsing the body and answering one JSON result.

use std::pin::Pin;

use arrow_flight::{Action, ActionType};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tonic::{Response, Status};

/// The answer stream of `DoAction`.
pub type ActionStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::Result, Status>> + Send>>;

/// `ListActions` entries for a module's (type, description) pairs.
pub fn types(actions: &[(&str, &str)]) -> Vec<ActionType> {
    actions
        .iter()
        .map(|(t, d)| ActionType {
            r#type: t.to_string(),
            description: d.to_string(),
        })
        .collect()
}

/// Whether `kind` is one of a module's action types.
pub fn named(actions: &[(&str, &str)], kind: &str) -> bool {
    actions.iter().any(|(t, _)| *t == kind)
}

/// The body as `T`; an empty body is `T::default()`.
pub fn body<T: for<'de> Deserialize<'de> + Default>(action: &Action) -> Result<T, Status> {
    if action.body.is_empty() {
        return Ok(T::default());
    }
    parse(action)
}

/// The body as `T` (INVALID_ARGUMENT naming the action when it is not).
pub fn parse<T: for<'de> Deserialize<'de>>(action: &Action) -> Result<T, Status> {
    serde_json::from_slice(&action.body).map_err(|e| {
        Status::invalid_argument(format!("bad body for action \"{}\": {e}", action.r#type))
    })
}

/// One JSON result.
pub fn reply(value: impl Serialize) -> Result<Response<ActionStream>, Status> {
    let json = serde_json::to_vec(&value).map_err(|e| Status::internal(e.to_string()))?;
    let result = arrow_flight::Result { body: json.into() };
    Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
}
