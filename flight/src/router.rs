//! The Flight service on the port: consumer tickets (JSON) go to
//! [`crate::consume`]; everything else — Flight SQL, the producer path,
//! group actions — to [`FlightSql`], whose dispatch decodes protobuf
//! commands and falls back to the producer and group handlers.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use streamhouse_sql::Database;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::sql::FlightSql;

/// Routes Flight calls to Flight SQL or the consumer API.
#[derive(Clone)]
pub struct Router {
    db: Arc<Database>,
    sql: FlightSql,
    /// Turns true when the server begins to shut down.
    closing: watch::Receiver<bool>,
    /// Every call but the handshake carries a bearer token.
    require_token: bool,
}

impl Router {
    pub fn new(db: Arc<Database>, closing: watch::Receiver<bool>, require_token: bool) -> Self {
        Router {
            sql: FlightSql::new(db.clone()),
            db,
            closing,
            require_token,
        }
    }

    /// With passwords required: the call's bearer token must be live.
    /// Puts the [`Caller`] into the request for the handlers.
    fn check<T>(&self, request: &mut Request<T>) -> Result<(), Status> {
        if !self.require_token {
            request.extensions_mut().insert(Caller(None));
            return Ok(());
        }
        let user = crate::auth::bearer(request.metadata()).map(|t| self.db.token_user(t));
        match user {
            Some(Some(user)) => {
                request.extensions_mut().insert(Caller(Some(user)));
                Ok(())
            }
            Some(None) => Err(Status::unauthenticated(
                "the bearer token is unknown, expired or revoked: log in again (handshake)",
            )),
            None => Err(Status::unauthenticated(
                "authentication required: handshake with Basic credentials, then send the \
                 bearer token it returns",
            )),
        }
    }
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for Router {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;
    type DoExchangeStream = Stream<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        if !self.require_token {
            return self.sql.handshake(request).await;
        }
        crate::auth::handshake(&self.db, request.metadata()).await
    }

    async fn list_flights(
        &self,
        mut request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.check(&mut request)?;
        self.sql.list_flights(request).await
    }

    async fn get_flight_info(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&mut request)?;
        self.sql.get_flight_info(request).await
    }

    async fn poll_flight_info(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.check(&mut request)?;
        self.sql.poll_flight_info(request).await
    }

    async fn get_schema(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.check(&mut request)?;
        self.sql.get_schema(request).await
    }

    async fn do_get(
        &self,
        mut request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.check(&mut request)?;
        if crate::consume::is_consumer_ticket(&request.get_ref().ticket) {
            let stream = crate::consume::do_get(
                &self.db,
                crate::auth::role_of(&request)?,
                &request.get_ref().ticket,
                self.closing.clone(),
            )
            .await?;
            return Ok(Response::new(stream));
        }
        self.sql.do_get(request).await
    }

    async fn do_put(
        &self,
        mut request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.check(&mut request)?;
        self.sql.do_put(request).await
    }

    async fn do_action(
        &self,
        mut request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.check(&mut request)?;
        self.sql.do_action(request).await
    }

    async fn list_actions(
        &self,
        mut request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.check(&mut request)?;
        self.sql.list_actions(request).await
    }

    async fn do_exchange(
        &self,
        mut request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.check(&mut request)?;
        self.sql.do_exchange(request).await
    }
}
