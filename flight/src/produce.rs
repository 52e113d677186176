//! The producer API: `DoPut` with the path descriptor `["streams", name]`.
//!
//! Each incoming record batch is one append (validated whole against the
//! stream's schema, so a bad batch writes nothing). Batches are buffered in
//! arrival order and their durability is awaited concurrently, so a
//! producer streaming many batches is not held to one flush per batch. Each
//! batch gets one `PutResult`, in order, sent only once its rows are durable;
//! its `app_metadata` is JSON:
//! `{"rows": 3, "partitions": [{"partition": 0, "base_offset": 42, "rows": 3}], "duplicate": false}`.
//!
//! A batch's own `app_metadata` may carry JSON options:
//! `{"partition": 2}` (a fixed partition), `{"key": ["user"]}` (partition
//! rows by these columns instead of the stream's key), `{"producer_id": "p1",
//! "sequence": 7}` for idempotent retries (a retried sequence is not written
//! twice; its answer says `"duplicate": true`), and `{"transactional_id":
//! "t1", "epoch": 3}`: the batch is staged in the producer's open
//! transaction (see `txn_actions`), answered once staged with `"staged":
//! true` and no offsets, and written only by its commit.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::PutResult;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::sql::Any;
use arrow_flight::sql::server::PeekableFlightDataStream;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use streamhouse_log::{AckPart, AppendAck, AppendOptions, Log, ProducerSeq};
use streamhouse_sql::Database;
use streamhouse_sql::privileges::{Need, Object, Privilege};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::status::log_status;

/// Appends awaiting durability per producer stream, at most.
const MAX_IN_FLIGHT: usize = 256;

type PutStream = Pin<Box<dyn Stream<Item = Result<PutResult, Status>> + Send>>;

/// Options a batch may carry in its `app_metadata`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchOptions {
    partition: Option<u32>,
    key: Option<Vec<String>>,
    producer_id: Option<String>,
    sequence: Option<u64>,
    transactional_id: Option<String>,
    epoch: Option<u64>,
}

/// How a batch is written.
struct Parsed {
    options: AppendOptions,
    /// The transactional producer and epoch it is staged for.
    transaction: Option<(String, u64)>,
}

impl BatchOptions {
    fn parse(meta: &[u8]) -> Result<Parsed, Status> {
        if meta.is_empty() {
            return Ok(Parsed {
                options: AppendOptions::default(),
                transaction: None,
            });
        }
        let o: BatchOptions = serde_json::from_slice(meta).map_err(|e| {
            Status::invalid_argument(format!(
                "batch app_metadata must be JSON like {{\"producer_id\": \"p1\", \"sequence\": 1}}: {e}"
            ))
        })?;
        let transaction = match (o.transactional_id, o.epoch) {
            (Some(id), Some(epoch)) => Some((id, epoch)),
            (None, None) => None,
            _ => {
                return Err(Status::invalid_argument(
                    "a transactional batch needs both transactional_id and epoch",
                ));
            }
        };
        if transaction.is_some() && o.producer_id.is_some() {
            return Err(Status::invalid_argument(
                "a batch is either idempotent (producer_id) or transactional (transactional_id)",
            ));
        }
        let producer = match (o.producer_id, o.sequence) {
            (Some(producer_id), Some(sequence)) => Some(ProducerSeq {
                producer_id,
                sequence,
                progress: None,
                epoch: None,
                first: None,
            }),
            (None, None) => None,
            _ => {
                return Err(Status::invalid_argument(
                    "an idempotent batch needs both producer_id and sequence",
                ));
            }
        };
        Ok(Parsed {
            options: AppendOptions {
                partition: o.partition,
                producer,
                key: o.key,
                ..AppendOptions::default()
            },
            transaction,
        })
    }
}

/// What one batch's `PutResult` says.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchAck {
    pub rows: u64,
    pub partitions: Vec<AckPart>,
    pub duplicate: bool,
    /// Staged in a producer transaction, written by its commit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged: bool,
}

impl From<AppendAck> for BatchAck {
    fn from(a: AppendAck) -> Self {
        BatchAck {
            rows: a.rows(),
            partitions: a.parts,
            duplicate: a.duplicate,
            staged: false,
        }
    }
}

/// `DoPut` calls that are not Flight SQL commands: a stream path appends.
pub async fn do_put(
    db: Arc<Database>,
    mut request: Request<PeekableFlightDataStream>,
    message: Any,
) -> Result<Response<PutStream>, Status> {
    let descriptor = match request.get_mut().peek().await {
        Some(Ok(first)) => first.flight_descriptor.clone(),
        Some(Err(e)) => return Err(e.clone()),
        None => None,
    };
    let Some(descriptor) = descriptor else {
        return Err(Status::invalid_argument(
            "DoPut needs a flight descriptor: the path [\"streams\", name], or a Flight SQL command",
        ));
    };
    if descriptor.r#type() != DescriptorType::Path {
        return Err(Status::unimplemented(format!(
            "DoPut command {} is not supported",
            message.type_url
        )));
    }
    match descriptor.path.as_slice() {
        [kind, name] if kind == "streams" => {
            let need = Need::Privilege(Privilege::Insert, Object::table(name.clone()));
            db.authorize(
                "flight",
                crate::auth::role_of(&request)?.as_deref(),
                std::slice::from_ref(&need),
            )
            .await
            .map_err(crate::status::sql_status)?;
            produce(db.log().clone(), name.clone(), request).await
        }
        other => Err(Status::invalid_argument(format!(
            "DoPut path {other:?} names nothing; use [\"streams\", name]"
        ))),
    }
}

async fn produce(
    log: Arc<Log>,
    name: String,
    request: Request<PeekableFlightDataStream>,
) -> Result<Response<PutStream>, Status> {
    log.stream(&name).await.map_err(log_status)?;
    let checked = request
        .into_inner()
        .map(|d| d.and_then(|d| crate::ipc_guard::check(&d).map(|()| d)));
    let input = FlightDataDecoder::new(checked.map_err(FlightError::from));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(log, name, input, tx));
    let out = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Response::new(Box::pin(out)))
}

/// Reads batches, submits them in order, and answers each once durable.
/// On a bad batch, the acknowledgements of the good ones before it are
/// sent, then the error.
async fn run(
    log: Arc<Log>,
    name: String,
    mut input: FlightDataDecoder,
    tx: mpsc::Sender<Result<PutResult, Status>>,
) {
    let mut pending: FuturesOrdered<BoxFuture<'static, Result<BatchAck, Status>>> =
        FuturesOrdered::new();
    let mut input_done = false;
    let mut failure: Option<Status> = None;
    loop {
        tokio::select! {
            Some(ack) = pending.next(), if !pending.is_empty() => {
                let msg = ack.and_then(|a| {
                    serde_json::to_vec(&a)
                        .map(|json| PutResult { app_metadata: json.into() })
                        .map_err(|e| Status::internal(e.to_string()))
                });
                let failed = msg.is_err();
                if tx.send(msg).await.is_err() || failed {
                    return;
                }
            }
            item = input.next(), if !input_done && failure.is_none() && pending.len() < MAX_IN_FLIGHT => {
                match item {
                    None => input_done = true,
                    Some(Err(e)) => failure = Some(Status::from(e)),
                    Some(Ok(data)) => {
                        let DecodedPayload::RecordBatch(batch) = data.payload else {
                            continue;
                        };
                        let Parsed { options, transaction } =
                            match BatchOptions::parse(&data.inner.app_metadata) {
                                Ok(o) => o,
                                Err(e) => {
                                    failure = Some(e);
                                    continue;
                                }
                            };
                        if let Some((id, epoch)) = transaction {
                            match log.stage_transactional(&id, epoch, &name, vec![batch], &options).await {
                                Ok(rows) => pending.push_back(Box::pin(async move {
                                    Ok(BatchAck { rows, partitions: Vec::new(), duplicate: false, staged: true })
                                })),
                                Err(e) => failure = Some(log_status(e)),
                            }
                            continue;
                        }
                        match log.submit(&name, vec![batch], options).await {
                            Ok(Some(submitted)) => pending.push_back(Box::pin(async move {
                                submitted.durable().await.map(BatchAck::from).map_err(log_status)
                            })),
                            Ok(None) => pending.push_back(Box::pin(async {
                                Ok(BatchAck { rows: 0, partitions: Vec::new(), duplicate: false, staged: false })
                            })),
                            Err(e) => failure = Some(log_status(e)),
                        }
                    }
                }
            }
            else => break,
        }
    }
    if let Some(f) = failure {
        let _ = tx.send(Err(f)).await;
    }
}
