//! Authentication on the Flight port, when passwords are required: the
//! handshake takes Basic credentials (`authorization: Basic …`, as
//! pyarrow's `authenticate_basic_token` and ADBC send them) and answers a
//! bearer token in the `authorization` header and the payload; every
//! other call carries `authorization: Bearer <token>`. The password check
//! and the tokens are the engine's (`Database::login`, `token_user`).

use std::pin::Pin;

use arrow_flight::HandshakeResponse;
use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use futures::Stream;
use streamhouse_sql::Database;
use streamhouse_sql::audit::AuditEvent;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Response, Status};

/// Base64 with or without `=` padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

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

/// `(user, password)` from `authorization: Basic …`.
fn basic(metadata: &MetadataMap) -> Option<(String, String)> {
    let encoded = metadata
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    // Padded or not: Go's Flight client sends it without padding.
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Logs in with the handshake's Basic credentials; answers the token.
pub async fn handshake(
    db: &Database,
    metadata: &MetadataMap,
) -> Result<Response<HandshakeStream>, Status> {
    let Some((user, password)) = basic(metadata) else {
        return Err(Status::unauthenticated(
            "authentication required: send authorization: Basic base64(user:password)",
        ));
    };
    let token = match db.login(&user, &password).await {
        Ok(t) => t,
        Err(e) => {
            db.audit(AuditEvent {
                event: "login_failed",
                user: Some(user),
                door: "flight".into(),
                success: false,
                detail: Some(e.to_string()),
                ..AuditEvent::default()
            });
            return Err(Status::unauthenticated(e.to_string()));
        }
    };
    db.audit(AuditEvent {
        event: "login",
        user: Some(user),
        door: "flight".into(),
        success: true,
        detail: Some("Basic, for a bearer token".into()),
        ..AuditEvent::default()
    });
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
