//! The accept loop: one task per connection, a cap on connections, and an
//! orderly stop (stop accepting, let sessions finish briefly, then close).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use streamhouse_sql::Database;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span, warn};

use crate::handler::Handlers;

/// Limits of the PostgreSQL door.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Connections served at once; more wait in the accept backlog.
    pub max_connections: usize,
    /// How long open sessions may take to finish at shutdown.
    pub drain_timeout: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves the PostgreSQL protocol on `listener` until `shutdown` resolves.
/// TLS is not offered: an SSLRequest is answered `N` and the client goes on
/// in plaintext or gives up, as it chooses.
pub async fn serve(
    listener: TcpListener,
    db: Arc<Database>,
    config: PgConfig,
    shutdown: impl Future<Output = ()>,
) {
    let handlers = Handlers::new(db);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
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
        let handlers = handlers.clone();
        let span = info_span!("pg_session", %peer);
        sessions.spawn(
            async move {
                let _open = streamhouse_sql::metrics::ConnectionGauge::open(crate::handler::DOOR);
                // Whatever ends the session — its end, an error, or a
                // panic unwinding the task — drops what it left behind.
                let _forget = Forget(handlers.clone(), peer);
                if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers.clone()).await
                {
                    debug!(error = %e, "session ended with an error");
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

/// Forgets a connection's session and COPY when dropped.
struct Forget(Arc<Handlers>, std::net::SocketAddr);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}
