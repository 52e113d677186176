//! A connection's start: the cap on connections (53300 past it), whether
//! TLS is required, authentication (trust, or SCRAM-SHA-256 against the
//! verifiers `Database::login_verifier` gives, with channel binding —
//! SCRAM-SHA-256-PLUS — over TLS), and the settings drivers read.
//!
//! Every password failure is answered 28P01 alike (no such user, a user
//! that may not log in or has no password, a wrong password). Logins,
//! failed logins and refused connections go to the audit trail.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::driver::AuthOutcome;
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret};
use pgwire::api::auth::{
    AuthDriver, AuthSource, LoginInfo, Password, ServerParameterProvider, StartupHandler,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use streamhouse_sql::Database;
use streamhouse_sql::audit::AuditEvent;

use streamhouse_sql::session::SERVER_VERSION;

/// How the PostgreSQL door authenticates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// Anyone, as any user name (the zero-setup default, for loopback).
    #[default]
    Trust,
    /// SCRAM-SHA-256 with a stored user's password.
    Password,
}

/// What the door's start knows of the server's settings.
#[derive(Debug, Clone, Default)]
pub struct StartupConfig {
    pub auth: Auth,
    /// Refuse connections that did not ask for TLS.
    pub require_tls: bool,
    /// The server certificate (PEM), for SCRAM channel binding.
    pub certificate_pem: Option<Vec<u8>>,
}

/// The settings sent once a connection is in; later ParameterStatus
/// messages override them.
struct Parameters;

impl ServerParameterProvider for Parameters {
    fn server_parameters<C: ClientInfo>(&self, _client: &C) -> Option<HashMap<String, String>> {
        Some(
            [
                ("server_version", SERVER_VERSION),
                ("server_encoding", "UTF8"),
                ("client_encoding", "UTF8"),
                ("DateStyle", "ISO, MDY"),
                ("integer_datetimes", "on"),
                ("standard_conforming_strings", "on"),
                ("TimeZone", "UTC"),
                ("application_name", ""),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
    }
}

/// Stored users' verifiers, for SCRAM.
#[derive(Debug)]
struct Verifiers(Arc<Database>);

#[async_trait]
impl AuthSource for Verifiers {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // Only SCRAM is offered, and it asks `get_scram_secret`.
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_string(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or_default();
        match self.0.login_verifier(user).await {
            Ok(Some(v)) => Ok((
                ScramSecret::Verifier {
                    salt: v.salt,
                    iterations: v.iterations as usize,
                    stored_key: v.stored_key,
                    server_key: v.server_key,
                },
                None,
            )),
            Ok(None) => Err(PgWireError::InvalidPassword(user.to_string())),
            Err(e) => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                e.sqlstate().into(),
                e.to_string(),
            )))),
        }
    }
}

/// Starts every connection of the door.
pub struct Startup {
    db: Arc<Database>,
    refused: Arc<Mutex<std::collections::HashSet<SocketAddr>>>,
    driver: AuthDriver<Parameters>,
    /// SCRAM, when passwords are required.
    scram: Option<ScramAuth>,
    require_tls: bool,
}

impl Startup {
    pub(crate) fn new(
        db: Arc<Database>,
        config: &StartupConfig,
        connections: Arc<ConnectionManager>,
        refused: Arc<Mutex<std::collections::HashSet<SocketAddr>>>,
    ) -> PgWireResult<Startup> {
        let scram = match config.auth {
            Auth::Trust => None,
            Auth::Password => {
                let mut scram = ScramAuth::new(Arc::new(Verifiers(db.clone())));
                if let Some(pem) = &config.certificate_pem {
                    scram.configure_certificate(pem)?;
                }
                Some(scram)
            }
        };
        Ok(Startup {
            db,
            driver: AuthDriver::new(Parameters).with_connection_manager(connections),
            refused,
            scram,
            require_tls: config.require_tls,
        })
    }
}

fn fatal(code: &str, message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message.into(),
    )))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let refused = self
                    .refused
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&client.socket_addr());
                if refused {
                    return Err(fatal("53300", "sorry, too many clients already"));
                }
                if self.require_tls && !client.is_secure() {
                    self.db.audit(AuditEvent {
                        event: "login_refused",
                        user: client.metadata().get("user").cloned(),
                        door: crate::DOOR.into(),
                        peer: Some(client.socket_addr().to_string()),
                        success: false,
                        detail: Some("connection without TLS".into()),
                        ..AuditEvent::default()
                    });
                    return Err(fatal(
                        "28000",
                        "this server accepts connections over TLS only (sslmode=require)",
                    ));
                }
                match &self.scram {
                    None => self.driver.complete_authentication(client, None).await,
                    Some(scram) => self
                        .driver
                        .begin_authentication(client, scram.create())
                        .await
                        .map(|_| ()),
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(m) => {
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                match self.driver.advance_authentication(client, m).await {
                    Ok(AuthOutcome::InProgress) => Ok(()),
                    Ok(AuthOutcome::Authenticated { final_message, .. }) => {
                        self.db.audit(AuditEvent {
                            event: "login",
                            user: Some(user),
                            door: crate::DOOR.into(),
                            peer: Some(client.socket_addr().to_string()),
                            success: true,
                            detail: Some(
                                if client.is_secure() {
                                    "SCRAM over TLS"
                                } else {
                                    "SCRAM"
                                }
                                .into(),
                            ),
                            ..AuditEvent::default()
                        });
                        self.driver
                            .complete_authentication(client, final_message)
                            .await
                    }
                    Err(e) => {
                        // Name the user, as PostgreSQL does (the SCRAM
                        // exchange's own error does not know it).
                        let e = match e {
                            PgWireError::InvalidPassword(_) => {
                                PgWireError::InvalidPassword(user.clone())
                            }
                            other => other,
                        };
                        self.db.audit(AuditEvent {
                            event: "login_failed",
                            user: Some(user),
                            door: crate::DOOR.into(),
                            peer: Some(client.socket_addr().to_string()),
                            success: false,
                            detail: Some(e.to_string()),
                            ..AuditEvent::default()
                        });
                        Err(e)
                    }
                }
            }
            _ => Ok(()),
        }
    }
}
