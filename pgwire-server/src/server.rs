//! The accept loop: one task per connection, a cap on connections (past
//! it, a connection is answered 53300 "too many clients", as PostgreSQL
//! does), a session idle inside a transaction block past its
//! `idle_in_transaction_session_timeout` ended with 25P03, and an orderly
//! stop (stop accepting, let sessions finish briefly, then close).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgwire::error::{ErrorInfo, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::ErrorResponse;
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls::ServerConfig;
use streamhouse_sql::Database;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span, warn};

use crate::handler::Handlers;
use crate::startup::StartupConfig;

/// Settings of the PostgreSQL door.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Connections served at once; more are refused (53300).
    pub max_connections: usize,
    /// How long open sessions may take to finish at shutdown.
    pub drain_timeout: Duration,
    /// Authentication, and whether TLS is required.
    pub startup: StartupConfig,
    /// The server's TLS settings (certificate and key); none: an
    /// SSLRequest is answered `N` and the client goes on in plaintext or
    /// gives up, as it chooses.
    pub tls: Option<Arc<ServerConfig>>,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            drain_timeout: Duration::from_secs(5),
            startup: StartupConfig::default(),
            tls: None,
        }
    }
}

/// The door's handlers over `db`; fails on settings that cannot work (a
/// certificate SCRAM channel binding cannot read).
pub fn handlers(db: Arc<Database>, config: &PgConfig) -> PgWireResult<Arc<Handlers>> {
    Handlers::new(db, &config.startup)
}

/// Serves the PostgreSQL protocol on `listener` until `shutdown` resolves,
/// answering an SSLRequest with TLS when `config.tls` is set.
pub async fn serve(
    listener: TcpListener,
    handlers: Arc<Handlers>,
    config: PgConfig,
    shutdown: impl Future<Output = ()>,
) {
    let tls = config.tls.clone().map(TlsAcceptor::from);
    // Ending a session from outside writes its reason in plaintext, which
    // a TLS session cannot read: over TLS it is closed without one.
    let plaintext_reasons = tls.is_none();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    // Refused connections waiting for their startup message, at most.
    let refusals = Arc::new(Semaphore::new(REFUSING));
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Past the cap: answer 53300 at startup (or just close,
                // when too many refusals are already pending).
                let Ok(refusing) = refusals.clone().try_acquire_owned() else {
                    continue;
                };
                metrics::counter!(streamhouse_sql::metrics::CONNECTIONS_REFUSED, "door" => crate::DOOR)
                    .increment(1);
                handlers.refuse(peer);
                let handlers = handlers.clone();
                let tls = tls.clone();
                sessions.spawn(async move {
                    let _forget = Forget(handlers.clone(), peer);
                    let _ = tokio::time::timeout(
                        REFUSAL_TIMEOUT,
                        pgwire::tokio::process_socket(socket, tls.clone(), handlers),
                    )
                    .await;
                    drop(refusing);
                });
                continue;
            }
        };
        let handlers = handlers.clone();
        let tls = tls.clone();
        let span = info_span!("pg_session", %peer);
        sessions.spawn(
            async move {
                let _open = streamhouse_sql::metrics::ConnectionGauge::open(crate::DOOR);
                // Whatever ends the session — its end, an error, or a
                // panic unwinding the task — drops what it left behind.
                let _forget = Forget(handlers.clone(), peer);
                // A second handle on the socket, to say why when the
                // session is ended from outside.
                let (socket, spare) = match split_handle(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(error = %e, "could not take a socket handle");
                        return;
                    }
                };
                tokio::select! {
                    r = pgwire::tokio::process_socket(socket, tls.clone(), handlers.clone()) => {
                        if let Err(e) = r {
                            debug!(error = %e, "session ended with an error");
                        }
                    }
                    () = idle_in_transaction(&handlers, peer) => {
                        // The session is dropped with its block: nothing of
                        // it is written.
                        warn!("ending a session idle in a transaction block past its timeout");
                        end_with(spare, plaintext_reasons, "25P03", "terminating connection due to idle-in-transaction timeout").await;
                    }
                }
                drop(permit);
            }
            .instrument(span),
        );
        // Reap finished sessions so the set does not grow without bound.
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = sessions.len(),
            "closing PostgreSQL sessions still open at shutdown"
        );
        sessions.shutdown().await;
    }
}

/// Refused connections answered at once, at most; more are closed unanswered.
const REFUSING: usize = 64;
/// How long a refused connection has to send its startup message.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Two handles on one socket: one for the session, one to write to it
/// after the session was stopped.
fn split_handle(socket: TcpStream) -> std::io::Result<(TcpStream, TcpStream)> {
    let std = socket.into_std()?;
    let spare = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, TcpStream::from_std(spare)?))
}

/// Resolves once the connection's session has sat idle inside a
/// transaction block longer than its `idle_in_transaction_session_timeout`.
async fn idle_in_transaction(handlers: &Handlers, peer: std::net::SocketAddr) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(session) = handlers.session(peer) else {
            continue;
        };
        if let (Some(idle), Some(limit)) = (
            session.idle_in_transaction(),
            session.idle_in_transaction_timeout(),
        ) && idle >= limit
        {
            return;
        }
    }
}

/// Tells the client why its session ends (a FATAL error, when it may be
/// written in plaintext) and closes.
async fn end_with(mut socket: TcpStream, plaintext: bool, code: &str, message: &str) {
    use tokio::io::AsyncWriteExt;
    if !plaintext {
        let _ = socket.shutdown().await;
        return;
    }
    let error = ErrorResponse::from(ErrorInfo::new("FATAL".into(), code.into(), message.into()));
    let mut buf = BytesMut::new();
    if PgWireBackendMessage::ErrorResponse(error)
        .encode(&mut buf)
        .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&buf)).await;
    }
    let _ = socket.shutdown().await;
}

/// Forgets a connection's session and COPY when dropped.
struct Forget(Arc<Handlers>, std::net::SocketAddr);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}
