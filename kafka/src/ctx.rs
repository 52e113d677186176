//! What the handlers of one connection share: the door (its settings, the
//! database, this agent as a broker), the connection's context (session,
//! login state, peer, client id) and what a handler answers.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::protocol::StrBytes;
use pgwire::api::auth::sasl::scram::ScramServerAuthWaitingForClientFinal;
use streamhouse_sql::Database;
use streamhouse_sql::session::Session;

use crate::brokers::Broker;

/// The door's name in metrics, sessions and the audit trail.
pub const DOOR: &str = "kafka";

/// How the door is run.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// The host and port clients are told to connect to (Metadata,
    /// FindCoordinator); the bound address when absent.
    pub advertised: Option<(String, u16)>,
    /// Largest request accepted; a larger frame closes the connection.
    pub max_request_bytes: usize,
    /// Connections served at once; more are closed when accepted.
    pub max_connections: usize,
    /// Clients must log in (SASL PLAIN or SCRAM-SHA-256) before anything
    /// but ApiVersions, and run as their role.
    pub require_login: bool,
    /// TLS on every connection (none: plaintext).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            advertised: None,
            max_request_bytes: 100 << 20,
            max_connections: 1024,
            require_login: false,
            tls: None,
        }
    }
}

/// What every connection shares.
pub struct Door {
    pub db: Arc<Database>,
    pub config: KafkaConfig,
    /// This agent as a broker.
    pub broker: Broker,
    /// The transactional producers started here.
    pub txns: crate::txn_state::Txns,
}

/// What a request's handling leaves for the writer: an answer now, an
/// answer once something completes, or nothing (acks=0).
pub enum Answer {
    Now(Box<ResponseKind>),
    Later(BoxFuture<'static, ResponseKind>),
    None,
    /// Close the connection: the request cannot be answered.
    Close,
    /// A SASL token after a version-0 handshake: sent as it is, after its
    /// size, with no response header.
    Unframed(bytes::Bytes),
}

impl Answer {
    /// An answer ready now.
    pub fn now(response: impl Into<ResponseKind>) -> Answer {
        Answer::Now(Box::new(response.into()))
    }
}

/// What a handler knows of its connection.
pub struct Ctx {
    pub door: Arc<Door>,
    pub session: Arc<Session>,
    pub login: Login,
    pub peer: SocketAddr,
    pub client_id: String,
    /// A version-0 SaslHandshake chose a mechanism: the client's next
    /// frames are bare SASL tokens until it has logged in.
    pub unframed_sasl: bool,
}

impl Ctx {
    /// The role whose privileges apply (`None`: trusted).
    pub fn role(&self) -> Option<&str> {
        self.session.role()
    }
}

/// Where a connection is in logging in.
#[derive(Default)]
pub enum Login {
    /// Not begun.
    #[default]
    Open,
    /// The handshake chose a mechanism.
    Chosen(&'static str),
    /// A SCRAM exchange waits for the client's final message.
    Scram {
        user: String,
        known: bool,
        waiting: Box<ScramServerAuthWaitingForClientFinal>,
    },
    /// Logged in.
    Done,
    /// Failed: the connection is closed after the answer.
    Failed,
}

impl Login {
    /// Whether requests other than ApiVersions and SASL may be served, on
    /// a door that `requires` a login or not.
    pub fn admits_requests(&self, requires: bool) -> bool {
        match self {
            Login::Done => true,
            Login::Failed => false,
            _ => !requires,
        }
    }
}

/// A `StrBytes` of any string.
pub fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
