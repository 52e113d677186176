//! The Kafka protocol door: Kafka producers, consumers and admin tools
//! talk to StreamHouse's log unchanged. A topic is a stream (see
//! `streamhouse_sql::topics`); a Kafka consumer group commits the same
//! offsets the Flight consumer groups do.
//!
//! Plaintext, or TLS on every connection when the door has a certificate
//! (SSL and SASL_SSL in Kafka's terms).
//!
//! A thin adapter over `log` and `sql`: [`conn`] frames requests and
//! answers them in order, [`ctx`] holds what the handlers of a connection
//! share, [`versions`] says which APIs and versions are
//! served, [`records`] turns Kafka record batches into Arrow rows and back,
//! and one module per family of APIs translates calls: [`produce`],
//! [`fetch`], [`offsets`], [`groups`], [`topics`], [`producers`], [`txns`], and
//! [`sasl`] logs clients in. The
//! coordination rules (groups, idempotent sequences, transactions) live in
//! the log.

pub mod brokers;
pub mod conn;
pub mod ctx;
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
pub mod txn_state;
pub mod txns;
pub mod versions;

use std::sync::Arc;

pub use ctx::{DOOR, Door, KafkaConfig};
use std::net::SocketAddr;
use streamhouse_sql::Database;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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
        txns: Default::default(),
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
            if let Err(e) = connection(door, socket, peer).await {
                tracing::debug!(%peer, error = %e, "kafka connection ended");
            }
            drop(permit);
        });
    }
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one accepted connection, after the TLS handshake when the door
/// has a certificate.
async fn connection(door: Arc<Door>, socket: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let Some(tls) = door.config.tls.clone() else {
        let (rd, wr) = socket.into_split();
        return conn::serve(door, rd, wr, peer).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let stream = tokio::time::timeout(HANDSHAKE, acceptor.accept(socket))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the TLS handshake took over 10 s",
            )
        })??;
    let (rd, wr) = tokio::io::split(stream);
    conn::serve(door, rd, wr, peer).await
}
