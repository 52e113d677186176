//! SASL on the Kafka door: SaslHandshake then SaslAuthenticate with
//! PLAIN or SCRAM-SHA-256, checked against the same password verifiers as
//! every other door (the SCRAM exchange is pgwire's server side, over the
//! stored verifier; PLAIN recomputes the verifier's stored key). A
//! connection of a door that requires passwords may send nothing but
//! ApiVersions and SASL until it has logged in; afterwards every call runs
//! as that role and is checked against its privileges. Each login, and
//! each failed one, goes to the audit trail.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth};
use streamhouse_sql::audit::AuditEvent;
use streamhouse_sql::roles::password::{Verifier, verifier_of};
use streamhouse_sql::session::Session;

use crate::ctx::{Ctx, Login, text};

pub const PLAIN: &str = "PLAIN";
pub const SCRAM: &str = "SCRAM-SHA-256";

/// The verifier an unknown user's exchange runs against, so that it fails
/// at the same step as a wrong password.
static DECOY: LazyLock<Verifier> = LazyLock::new(|| {
    Verifier::parse(&verifier_of(&ulid::Ulid::new().to_string())).expect("a fresh verifier")
});

/// SaslHandshake: picks the mechanism. After version 0 the client sends
/// the mechanism's tokens as bare frames (see `unframed`); after version 1,
/// in SaslAuthenticate requests.
pub fn handshake(ctx: &mut Ctx, r: SaslHandshakeRequest, version: i16) -> SaslHandshakeResponse {
    let offered = vec![text(PLAIN), text(SCRAM)];
    let out = SaslHandshakeResponse::default().with_mechanisms(offered);
    if !matches!(ctx.login, Login::Open) {
        return out.with_error_code(E::IllegalSaslState.code());
    }
    match r.mechanism.as_str() {
        PLAIN => ctx.login = Login::Chosen(PLAIN),
        SCRAM => ctx.login = Login::Chosen(SCRAM),
        _ => return out.with_error_code(E::UnsupportedSaslMechanism.code()),
    }
    ctx.unframed_sasl = version == 0;
    out
}

/// Whether the next frame is a bare SASL token (a version-0 handshake
/// chose a mechanism and the login is not over).
pub fn expects_unframed(ctx: &Ctx) -> bool {
    ctx.unframed_sasl && matches!(ctx.login, Login::Chosen(_) | Login::Scram { .. })
}

/// One bare SASL token: the token to answer, or `None` when the login
/// failed (the connection is then closed, as Apache Kafka does).
pub async fn unframed(ctx: &mut Ctx, token: Bytes) -> Option<Bytes> {
    let r = authenticate(
        ctx,
        SaslAuthenticateRequest::default().with_auth_bytes(token),
    )
    .await;
    (r.error_code == 0).then_some(r.auth_bytes)
}

fn failed(ctx: &mut Ctx, user: Option<&str>, detail: &str) -> SaslAuthenticateResponse {
    ctx.login = Login::Failed;
    audit(ctx, user, false, detail);
    SaslAuthenticateResponse::default()
        .with_error_code(E::SaslAuthenticationFailed.code())
        .with_error_message(Some(text(format!(
            "authentication failed: invalid user name or password{}",
            user.map(|u| format!(" for user \"{u}\""))
                .unwrap_or_default()
        ))))
}

fn audit(ctx: &Ctx, user: Option<&str>, success: bool, detail: &str) {
    ctx.door.db.audit(AuditEvent {
        event: if success { "login" } else { "login_failed" },
        user: user.map(str::to_string),
        door: crate::ctx::DOOR.to_string(),
        peer: Some(ctx.peer.to_string()),
        success,
        detail: Some(detail.to_string()),
        ..AuditEvent::default()
    });
}

/// A door that requires logins checks the role's privileges from now on;
/// one that trusts its clients (`--auth trust`) still checks a password it
/// is given, and then trusts the user, as the PostgreSQL door does.
fn logged_in(ctx: &mut Ctx, user: &str, how: &str) {
    ctx.login = Login::Done;
    ctx.session = Arc::new(if ctx.door.config.require_login {
        Session::for_role(crate::ctx::DOOR, user.to_string())
    } else {
        Session::for_user(crate::ctx::DOOR, Some(user.to_string()))
    });
    audit(ctx, Some(user), true, how);
}

/// SaslAuthenticate: one step of the chosen mechanism.
pub async fn authenticate(ctx: &mut Ctx, r: SaslAuthenticateRequest) -> SaslAuthenticateResponse {
    match std::mem::take(&mut ctx.login) {
        Login::Chosen(PLAIN) => plain(ctx, &r.auth_bytes).await,
        Login::Chosen(_) => scram_first(ctx, &r.auth_bytes).await,
        Login::Scram {
            user,
            known,
            waiting,
        } => match waiting.on_client_final_message(&r.auth_bytes) {
            Ok(server_final) if known => {
                logged_in(ctx, &user, "SASL SCRAM-SHA-256");
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(server_final))
            }
            _ => failed(ctx, Some(&user), "SASL SCRAM-SHA-256: proof refused"),
        },
        _ => {
            ctx.login = Login::Failed;
            SaslAuthenticateResponse::default()
                .with_error_code(E::IllegalSaslState.code())
                .with_error_message(Some(text("SaslAuthenticate before SaslHandshake")))
        }
    }
}

/// PLAIN: `authzid NUL user NUL password`; the authzid, if any, must be
/// the user.
async fn plain(ctx: &mut Ctx, bytes: &[u8]) -> SaslAuthenticateResponse {
    let parts: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
    let [authzid, user, password] = parts.as_slice() else {
        return failed(ctx, None, "SASL PLAIN: malformed message");
    };
    let (Ok(authzid), Ok(user), Ok(password)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(user),
        std::str::from_utf8(password),
    ) else {
        return failed(ctx, None, "SASL PLAIN: not UTF-8");
    };
    if !authzid.is_empty() && authzid != user {
        return failed(ctx, Some(user), "SASL PLAIN: authorization id differs");
    }
    match ctx.door.db.login_verifier(user).await {
        Ok(Some(v)) if v.matches(password) => {
            logged_in(ctx, user, "SASL PLAIN");
            SaslAuthenticateResponse::default()
        }
        Ok(_) => failed(
            ctx,
            Some(user),
            "SASL PLAIN: wrong password or no such user",
        ),
        Err(e) => failed(ctx, Some(user), &format!("SASL PLAIN: {e}")),
    }
}

/// The user a SCRAM client-first message names (`n,,n=user,r=nonce`;
/// `=2C` and `=3D` stand for `,` and `=`).
fn scram_user(message: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(message).ok()?;
    let mut fields = text.splitn(3, ',');
    let _cbind = fields.next()?;
    let _authzid = fields.next()?;
    let bare = fields.next()?;
    let name = bare.split(',').find_map(|a| a.strip_prefix("n="))?;
    Some(name.replace("=2C", ",").replace("=3D", "="))
}

async fn scram_first(ctx: &mut Ctx, bytes: &[u8]) -> SaslAuthenticateResponse {
    let Some(user) = scram_user(bytes) else {
        return failed(
            ctx,
            None,
            "SASL SCRAM-SHA-256: malformed client-first message",
        );
    };
    let (known, v) = match ctx.door.db.login_verifier(&user).await {
        Ok(Some(v)) => (true, v),
        Ok(None) => (false, DECOY.clone()),
        Err(e) => return failed(ctx, Some(&user), &format!("SASL SCRAM-SHA-256: {e}")),
    };
    let secret = ScramSecret::Verifier {
        salt: v.salt,
        iterations: v.iterations as usize,
        stored_key: v.stored_key,
        server_key: v.server_key,
    };
    match ScramServerAuth::new().on_client_first_message_with_secret(bytes, secret) {
        Ok((server_first, waiting)) => {
            ctx.login = Login::Scram {
                user,
                known,
                waiting: Box::new(waiting),
            };
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(server_first))
        }
        Err(e) => failed(ctx, Some(&user), &format!("SASL SCRAM-SHA-256: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scram_user_is_read_and_unescaped() {
        assert_eq!(scram_user(b"n,,n=alice,r=abc").as_deref(), Some("alice"));
        assert_eq!(scram_user(b"n,,n=a=2Cb=3Dc,r=x").as_deref(), Some("a,b=c"));
        assert_eq!(scram_user(b"n,,r=x"), None);
        assert_eq!(scram_user(b"\xff"), None);
    }
}
