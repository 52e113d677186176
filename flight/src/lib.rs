//! Arrow Flight SQL (statements, prepared statements, catalog commands) and
//! the producer/consumer API on the same port: `DoPut` appends to a stream,
//! `DoGet` reads or tails it, `DoAction` manages consumer groups.
//!
//! A thin adapter over `sql` and `log`: it translates, it does not decide.

pub mod sql;

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use streamhouse_sql::Database;
use tokio::net::TcpListener;
use tokio_stream_shim::Incoming;

pub use sql::FlightSql;

mod tokio_stream_shim {
    //! A `TcpListener` as the stream of connections tonic serves.
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::net::{TcpListener, TcpStream};

    pub struct Incoming(pub TcpListener);

    impl futures::Stream for Incoming {
        type Item = std::io::Result<TcpStream>;
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.0.poll_accept(cx) {
                Poll::Ready(Ok((s, _))) => Poll::Ready(Some(Ok(s))),
                Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

/// Serves Flight SQL on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    db: Arc<Database>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(?addr, "Flight SQL serving");
    tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(FlightSql::new(db)))
        .serve_with_incoming_shutdown(Incoming(listener), shutdown)
        .await
}
