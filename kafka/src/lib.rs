//! The Kafka protocol door: Kafka producers, consumers and admin tools
//! talk to StreamHouse's log unchanged. A topic is a stream (see
//! `streamhouse_sql::topics`); a Kafka consumer group commits the same
//! offsets the Flight consumer groups do.
//!
//! A thin adapter over `log` and `sql`: [`conn`] frames requests and
//! answers them in order, [`versions`] says which APIs and versions are
//! served, [`records`] turns Kafka record batches into Arrow rows and back,
//! and one module per family of APIs translates calls: [`produce`],
//! [`fetch`], [`offsets`], [`groups`], [`topics`], [`producers`], and
//! [`sasl`] logs clients in. The
//! coordination rules (groups, idempotent sequences) live in the log.

pub mod brokers;
pub mod conn;
pub mod dispatch;
pub mod errors;
pub mod fetch;
pub mod groups;
pub mod offsets;
pub mod produce;
pub mod producers;
pub mod records;
pub mod sasl;
pub mod topics;
pub mod versions;

use std::sync::Arc;

use streamhouse_sql::Database;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            advertised: None,
            max_request_bytes: 100 << 20,
            max_connections: 1024,
            require_login: false,
        }
    }
}

/// What every connection shares.
pub struct Door {
    pub db: Arc<Database>,
    pub config: KafkaConfig,
    /// This agent as a broker.
    pub broker: brokers::Broker,
}

/// Serves the Kafka protocol on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    db: Arc<Database>,
    config: KafkaConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let (host, port) = config
        .advertised
        .clone()
        .unwrap_or_else(|| (local.ip().to_string(), local.port()));
    let broker = brokers::Broker::of_agent(&db.log().agent().id(), host, port);
    let door = Arc::new(Door {
        db,
        config: config.clone(),
        broker,
    });
    let slots = Arc::new(Semaphore::new(config.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "kafka accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!(streamhouse_sql::metrics::CONNECTIONS_REFUSED, "door" => DOOR)
                .increment(1);
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let door = door.clone();
        tokio::spawn(async move {
            let _gauge = streamhouse_sql::metrics::ConnectionGauge::open(DOOR);
            if let Err(e) = conn::serve(door, socket, peer).await {
                tracing::debug!(%peer, error = %e, "kafka connection ended");
            }
            drop(permit);
        });
    }
}
