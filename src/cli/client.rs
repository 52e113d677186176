//! The connection of client commands to a running server: its Flight
//! address, Flight SQL statements, consumer reads and group actions — the
//! same public protocols every other client uses.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{Action, FlightClient, Ticket};
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::Value;
use tonic::transport::Channel;

/// Where client commands look for a server when told nothing.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// A connected client.
pub struct Client {
    channel: Channel,
    /// The bearer token of a login, sent with every call.
    token: Option<String>,
}

/// What a statement returned.
pub enum Outcome {
    /// Rows (possibly none), with their schema.
    Rows(SchemaRef, Vec<RecordBatch>),
    /// A command: the rows it wrote (0 for DDL).
    Done(i64),
}

/// `host:port`, `grpc://…`, `http://…` (plaintext) or `grpc+tls://…`,
/// `https://…` (TLS) as a URI tonic connects to, and whether it is TLS.
fn endpoint_uri(server: &str) -> (String, bool) {
    if let Some(rest) = server
        .strip_prefix("grpc+tls://")
        .or_else(|| server.strip_prefix("https://"))
    {
        return (format!("https://{rest}"), true);
    }
    let rest = server
        .strip_prefix("grpc://")
        .or_else(|| server.strip_prefix("grpc+tcp://"))
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    (format!("http://{rest}"), false)
}

/// The password of a login: `STREAMHOUSE_PASSWORD`, else asked for on the
/// terminal without echo.
fn password(user: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("STREAMHOUSE_PASSWORD") {
        return Ok(p);
    }
    rpassword::prompt_password(format!("Password for user {user}: "))
        .context("no STREAMHOUSE_PASSWORD, and no terminal to ask for the password on")
}

/// A gRPC status as a one-line error: its message, which names the problem.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}", s.message())
}

fn flight_error(e: arrow_flight::error::FlightError) -> anyhow::Error {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => status_error(*s),
        other => anyhow!("{other}"),
    }
}

impl Client {
    /// Connects to the server `to` names (over TLS for `grpc+tls://` or
    /// with `--tls-ca`) and logs in when it names a user; says how to start
    /// a server when none answers.
    pub async fn connect(to: &crate::cli::ServerArg) -> anyhow::Result<Client> {
        let server = &to.server;
        let (mut uri, tls) = endpoint_uri(server);
        let mut endpoint = Channel::from_shared(uri.clone())
            .with_context(|| format!("bad server address {server:?}"))?
            .connect_timeout(Duration::from_secs(3));
        if tls || to.tls_ca.is_some() {
            if !tls {
                uri = uri.replacen("http://", "https://", 1);
                endpoint =
                    Channel::from_shared(uri.clone())?.connect_timeout(Duration::from_secs(3));
            }
            let mut config = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &to.tls_ca {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read CA certificate {}", ca.display()))?;
                config = config.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(config).context("TLS settings")?;
        }
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => bail!(
                "no StreamHouse server answers at {uri} ({}); start one with `streamhouse server`, \
                 or point --server (or STREAMHOUSE_SERVER) at a running one",
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
            ),
        };
        let mut client = Client {
            channel,
            token: None,
        };
        if let Some(user) = &to.user {
            let password = password(user)?;
            let mut sql = FlightSqlServiceClient::new(client.channel.clone());
            sql.handshake(user, &password)
                .await
                .map_err(|e| anyhow!("cannot log in as {user}: {e}"))?;
            client.token = sql.token().cloned();
        }
        Ok(client)
    }

    fn sql_client(&self) -> FlightSqlServiceClient<Channel> {
        let mut client = FlightSqlServiceClient::new(self.channel.clone());
        if let Some(token) = &self.token {
            client.set_token(token.clone());
        }
        client
    }

    fn flight(&self) -> FlightClient {
        let mut client = FlightClient::new(self.channel.clone());
        if let Some(token) = &self.token {
            // A token is ASCII; a header that cannot be made is left off and
            // the server answers UNAUTHENTICATED.
            let _ = client.add_header("authorization", &format!("Bearer {token}"));
        }
        client
    }

    /// Runs one statement through Flight SQL.
    pub async fn run(&self, statement: &str) -> anyhow::Result<Outcome> {
        let mut client = self.sql_client();
        let info = client
            .execute(statement.to_string(), None)
            .await
            .map_err(flight_error)?;
        if info.endpoint.is_empty() {
            return Ok(Outcome::Done(info.total_records.max(0)));
        }
        let schema: SchemaRef = std::sync::Arc::new(
            info.clone()
                .try_decode_schema()
                .map_err(|e| anyhow!("bad schema from the server: {e}"))?,
        );
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let mut stream = client.do_get(ticket).await.map_err(flight_error)?;
            while let Some(b) = stream.next().await {
                batches.push(b.map_err(flight_error)?);
            }
        }
        Ok(Outcome::Rows(schema, batches))
    }

    /// A consumer read (see the server's consumer API for the ticket).
    pub async fn consume(
        &self,
        ticket: &Value,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<RecordBatch>> + use<>> {
        let stream = self
            .flight()
            .do_get(Ticket::new(ticket.to_string()))
            .await
            .map_err(flight_error)?;
        Ok(stream.map_err(flight_error))
    }

    /// A group action; its one JSON result.
    pub async fn action(&self, kind: &str, body: Value) -> anyhow::Result<Value> {
        let mut results = self
            .flight()
            .do_action(Action::new(kind, body.to_string()))
            .await
            .map_err(flight_error)?;
        let first = results
            .try_next()
            .await
            .map_err(flight_error)?
            .ok_or_else(|| anyhow!("the server answered {kind} with nothing"))?;
        Ok(serde_json::from_slice(&first)?)
    }

    /// Appends batches to `stream` through the producer API, each with the
    /// producer options `options` (JSON, e.g. `{"key": ["user"]}`); the rows
    /// acknowledged (durable), reported to `progress` as they are.
    pub async fn produce(
        &self,
        stream: &str,
        batches: impl Stream<Item = anyhow::Result<RecordBatch>> + Send + 'static,
        options: Option<Value>,
        mut progress: impl FnMut(u64),
    ) -> anyhow::Result<u64> {
        use arrow_flight::encode::FlightDataEncoderBuilder;
        let descriptor = arrow_flight::FlightDescriptor::new_path(vec![
            "streams".to_string(),
            stream.to_string(),
        ]);
        let (errors_tx, mut errors_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
        let mut errors_tx = Some(errors_tx);
        let input = batches
            .take_while(move |b| {
                let ok = match b {
                    Ok(_) => true,
                    Err(e) => {
                        if let Some(tx) = errors_tx.take() {
                            let _ = tx.send(anyhow!("{e:#}"));
                        }
                        false
                    }
                };
                futures::future::ready(ok)
            })
            .map(|b| b.map_err(|e| arrow_flight::error::FlightError::ExternalError(e.into())));
        let options = bytes::Bytes::from(options.map(|o| o.to_string()).unwrap_or_default());
        // The first message is the schema; the batches after it carry the
        // options.
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(input)
            .enumerate()
            .map(move |(i, d)| {
                d.map(|mut d| {
                    if i > 0 {
                        d.app_metadata = options.clone();
                    }
                    d
                })
            });
        let mut rows = 0u64;
        let sent = async {
            let mut acks = self.flight().do_put(data).await.map_err(flight_error)?;
            while let Some(ack) = acks.next().await {
                let ack = ack.map_err(flight_error)?;
                let meta: Value = serde_json::from_slice(&ack.app_metadata)?;
                rows += meta["rows"].as_u64().unwrap_or(0);
                progress(rows);
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        // Bad input stops the upload: that is the error to report.
        if let Ok(e) = errors_rx.try_recv() {
            return Err(e.context(format!("stopped after {rows} rows were appended")));
        }
        sent?;
        Ok(rows)
    }
}
