//! Arrow Flight SQL (statements, prepared statements, catalog commands) and
//! the producer/consumer API on the same port: `DoPut` appends to a stream,
//! `DoGet` reads or tails it, `DoAction` manages consumer groups and
//! transactional producers.
//!
//! A thin adapter over `sql` and `log`: it translates, it does not decide.

pub mod access;
pub mod action;
pub mod auth;
pub mod consume;
pub mod groups;
pub mod ipc_guard;
pub mod prepared;
pub mod produce;
pub mod router;
pub mod sql;
pub mod status;
pub mod transactions;
pub mod txn_actions;
pub mod xdbc;

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use streamhouse_sql::Database;
use tokio::net::TcpListener;
use tokio_stream_shim::Incoming;

pub use router::Router;
pub use sql::FlightSql;

mod tokio_stream_shim {
    //! A `TcpListener` as the stream of connections tonic serves, each
    //! counted as an open connection of this door while it lives, and
    //! capped.
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use streamhouse_sql::metrics::ConnectionGauge;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{OwnedSemaphorePermit, Semaphore};
    use tonic::transport::server::{Connected, TcpConnectInfo};

    /// Accepted connections, at most `slots` open at once: past that a
    /// connection is closed as soon as it is accepted (the client sees
    /// UNAVAILABLE) and counted as refused.
    pub struct Incoming {
        pub listener: TcpListener,
        pub slots: Arc<Semaphore>,
    }

    impl futures::Stream for Incoming {
        type Item = std::io::Result<Counted>;
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            loop {
                match self.listener.poll_accept(cx) {
                    Poll::Ready(Ok((s, _))) => match self.slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            return Poll::Ready(Some(Ok(Counted {
                                inner: s,
                                _open: ConnectionGauge::open("flight"),
                                _slot: slot,
                            })));
                        }
                        Err(_) => {
                            metrics::counter!(
                                streamhouse_sql::metrics::CONNECTIONS_REFUSED,
                                "door" => "flight"
                            )
                            .increment(1);
                            drop(s);
                        }
                    },
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
    }

    /// A connection, counted while it is open.
    pub struct Counted {
        inner: TcpStream,
        _open: ConnectionGauge,
        _slot: OwnedSemaphorePermit,
    }

    impl Connected for Counted {
        type ConnectInfo = TcpConnectInfo;
        fn connect_info(&self) -> Self::ConnectInfo {
            self.inner.connect_info()
        }
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
        }
        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }
    }
}

/// How long open calls (following reads, uploads) may take to finish
/// after shutdown begins.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Limits and authentication of the Flight port.
#[derive(Debug, Clone)]
pub struct FlightConfig {
    /// Connections open at once; more are closed when accepted.
    pub max_connections: usize,
    /// The largest gRPC message accepted (RESOURCE_EXHAUSTED past it).
    pub max_message_bytes: usize,
    /// Calls need a bearer token from a Basic-credentials handshake.
    pub require_password: bool,
    /// TLS; none: plaintext.
    pub tls: Option<FlightTls>,
}

/// The Flight port's TLS settings (PEM).
#[derive(Debug, Clone)]
pub struct FlightTls {
    pub certificate_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Clients must present a certificate this CA signed.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl Default for FlightConfig {
    fn default() -> Self {
        FlightConfig {
            max_connections: 1024,
            max_message_bytes: 64 << 20,
            require_password: false,
            tls: None,
        }
    }
}

/// Serves Flight on `listener` until `shutdown` resolves; then following
/// reads end with UNAVAILABLE, and calls still open after a short drain are
/// cut.
pub async fn serve(
    listener: TcpListener,
    db: Arc<Database>,
    config: FlightConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(?addr, "Flight serving");
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut drained = closing.clone();
    let signal = async move {
        shutdown.await;
        let _ = closing_tx.send(true);
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let mut tls_config = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&tls.certificate_pem, &tls.key_pem),
        );
        if let Some(ca) = &tls.client_ca_pem {
            tls_config = tls_config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder.tls_config(tls_config)?;
    }
    let server = builder
        // A span per call (a connection carries many): its method and peer.
        .trace_fn(|request| {
            let extensions = request.extensions();
            let peer = extensions
                .get::<tonic::transport::server::TcpConnectInfo>()
                .or_else(|| {
                    extensions
                        .get::<tonic::transport::server::TlsConnectInfo<
                            tonic::transport::server::TcpConnectInfo,
                        >>()
                        .map(|i| i.get_ref())
                })
                .and_then(|i| i.remote_addr());
            tracing::info_span!("flight_call", method = %request.uri().path(), peer = ?peer)
        })
        .add_service(
            FlightServiceServer::new(Router::new(db, closing, config.require_password))
                .max_decoding_message_size(config.max_message_bytes),
        )
        .serve_with_incoming_shutdown(
            Incoming {
                listener,
                slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
            },
            signal,
        );
    tokio::select! {
        r = server => r,
        _ = async move {
            let _ = drained.wait_for(|c| *c).await;
            tokio::time::sleep(DRAIN).await;
        } => {
            tracing::warn!("Flight calls still open after the drain; closing them");
            Ok(())
        }
    }
}
