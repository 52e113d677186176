//! Authentication on the Flight port, when passwords are required: the
//! handshake takes Basic credentials (`authorization: Basic …`, as
//! pyarrow's `authenticate_basic_token` and ADBC send them) and answers a
//! bearer token in the `authorization` header and the payload; every
//! other call carries `authorization: Bearer <token>`. The password check
//! and the tokens are the engine's (`Database::login`, `token_user`).
//! The router puts who called ([`Caller`]) into every request it passes
//! on; handlers check that role's privileges with `Database::authorize`.

use std::pin::Pin;

use arrow_flight::HandshakeResponse;
use futures::Stream;
use streamhouse_sql::Database;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Response, Status};

/// Who made a call: the token's user, or `None` when the port trusts
/// everyone (`--auth trust`).
#[derive(Debug, Clone)]
pub struct Caller(pub Option<String>);

/// The role a call's privileges are checked against (`None`: trusted).
/// A request the router did not pass is refused, so a call can never
/// run unchecked by mistake.
pub fn role_of<T>(request: &tonic::Request<T>) -> Result<Option<String>, Status> {
    request
        .extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| Status::internal("a call reached its handler without the door's check"))
}

type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

/// The bearer token a call carries, if any.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Logs in with the handshake's Basic credentials; answers the token.
pub async fn handshake(
    db: &Database,
    metadata: &MetadataMap,
) -> Result<Response<HandshakeStream>, Status> {
    let credentials = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(streamhouse_sql::roles::basic_credentials);
    let Some((user, password)) = credentials else {
        return Err(Status::unauthenticated(
            "authentication required: send authorization: Basic base64(user:password)",
        ));
    };
    let token = db
        .login("flight", &user, &password)
        .await
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
    let header = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Status::internal("token is not a header value"))?;
    let reply = HandshakeResponse {
        protocol_version: 0,
        payload: token.into_bytes().into(),
    };
    let mut response =
        Response::new(Box::pin(futures::stream::iter([Ok(reply)])) as HandshakeStream);
    response.metadata_mut().insert("authorization", header);
    Ok(response)
}
