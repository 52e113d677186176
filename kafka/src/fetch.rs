//! Fetch: committed rows from each asked partition, from its fetch offset,
//! within the request's byte limits, as v2 record batches at their log
//! offsets (a typed stream's rows as JSON values, see `records`, or as
//! Avro values of the subject it follows, see `streamhouse_sql::typed`).
//! When fewer than `min_bytes` are there, the request waits up to
//! `max_wait_ms`, woken by the log's commit notifications (no polling).
//! Fetch sessions are declined: every answer has session id 0, so clients
//! send full requests.

use std::collections::HashMap;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use bytes::BytesMut;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use std::sync::Arc;

use streamhouse_log::{StreamInfo, StreamKind};
use streamhouse_sql::Database;
use streamhouse_sql::privileges::{Need, Object, Privilege};
use streamhouse_sql::topics::is_record_shaped;
use streamhouse_sql::typed::follows;

use crate::ctx::Ctx;
use crate::errors::{About, of_log, of_sql};
use crate::records::{self, READ_PROJECTION};

/// The longest a fetch waits for data, whatever it asks.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Bytes a record costs on the wire beyond its key and value, about.
const RECORD_OVERHEAD: usize = 24;

/// How a topic's rows are read: record-shaped, or typed with this many
/// declared columns (fetched as JSON values), or following a subject
/// (fetched as Avro values of the version it follows).
#[derive(Clone)]
enum Shape {
    Records,
    Typed(usize),
    Follows(Arc<StreamInfo>),
}

/// One asked partition, as the fetch goes on.
struct Part {
    topic: usize,
    shape: Shape,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// Why it cannot be read, for good.
    error: Option<E>,
    high_watermark: i64,
    records: BytesMut,
}

/// How many leading rows of `rows` fit in `budget` bytes (at least one).
fn rows_within(rows: &RecordBatch, budget: usize) -> usize {
    let keys = rows.column(0).as_binary::<i32>().value_offsets();
    let values = rows.column(1).as_binary::<i32>().value_offsets();
    let mut used = 0usize;
    for i in 0..rows.num_rows() {
        let size = (keys[i + 1] - keys[i]) as usize
            + (values[i + 1] - values[i]) as usize
            + RECORD_OVERHEAD;
        used += size;
        if used > budget && i > 0 {
            return i;
        }
    }
    rows.num_rows()
}

/// Reads what a partition holds past its fetch offset, within `budget`
/// bytes; returns the bytes added.
async fn read_part(db: &Database, topic: &str, part: &mut Part, budget: usize) -> usize {
    let log = db.log();
    let from = part.offset as u64;
    let end = part.high_watermark as u64;
    if from >= end || budget == 0 {
        return 0;
    }
    let projection = match &part.shape {
        Shape::Records => READ_PROJECTION.to_vec(),
        Shape::Typed(declared) => records::typed_projection(*declared),
        Shape::Follows(info) => records::typed_projection(info.spec.schema.fields().len()),
    };
    let mut rows = match log
        .read(topic, part.partition as u32, from..end, Some(projection))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            part.error = Some(of_log(&e));
            return 0;
        }
    };
    let before = part.records.len();
    while let Some(batch) = rows.next().await {
        let batch = match batch.map_err(|e| of_log(&e)) {
            Ok(b) => as_records(db, &part.shape, b).await,
            Err(e) => Err(e),
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                part.error = Some(e);
                break;
            }
        };
        let used = part.records.len() - before;
        if used >= budget {
            break;
        }
        let take = rows_within(&batch, budget - used);
        let slice = batch.slice(0, take);
        if let Err(e) = records::encode(&slice, &mut part.records) {
            tracing::error!(error = %e, "cannot encode fetched rows");
            part.error = Some(E::UnknownServerError);
            break;
        }
        if let Some(last) = slice
            .column(4)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .last()
        {
            part.offset = last + 1;
        }
        if take < batch.num_rows() {
            break;
        }
    }
    part.records.len() - before
}

/// Rows read with a shape's projection as rows [`records::encode`] takes.
async fn as_records(db: &Database, shape: &Shape, rows: RecordBatch) -> Result<RecordBatch, E> {
    let failed = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "cannot encode fetched rows as values");
        E::UnknownServerError
    };
    match shape {
        Shape::Records => Ok(rows),
        Shape::Typed(declared) => {
            let values = records::json_values(&rows, *declared).map_err(|e| failed(&e))?;
            records::typed_to_records(&rows, *declared, values).map_err(|e| failed(&e))
        }
        Shape::Follows(info) => {
            let declared = info.spec.schema.fields().len();
            let data = rows
                .project(&(0..declared).collect::<Vec<_>>())
                .map_err(|e| failed(&e))?;
            let values = db.encode_rows(info, &data).await.map_err(|e| failed(&e))?;
            records::typed_to_records(&rows, declared, Arc::new(values)).map_err(|e| failed(&e))
        }
    }
}

/// Answers a Fetch request.
pub async fn fetch(ctx: &Ctx, r: FetchRequest) -> FetchResponse {
    let log = ctx.door.db.log().clone();
    let wait = Duration::from_millis(r.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = streamhouse_log::monotonic() + wait;
    let min_bytes = r.min_bytes.max(0) as usize;
    let max_bytes = (r.max_bytes.max(1) as usize).min(ctx.door.config.max_request_bytes);
    let mut names: Vec<TopicName> = Vec::with_capacity(r.topics.len());
    let mut parts: Vec<Part> = Vec::new();
    for (t, topic) in r.topics.into_iter().enumerate() {
        let name = topic.topic.0.to_string();
        let need = [Need::Privilege(
            Privilege::Select,
            Object::table(name.clone()),
        )];
        let mut shape = Shape::Records;
        let error = match ctx
            .door
            .db
            .authorize(crate::ctx::DOOR, ctx.role(), &need)
            .await
        {
            Err(e) => Some(of_sql(&e, About::Topic)),
            Ok(()) if StreamKind::of(&name).is_internal() => Some(E::UnknownTopicOrPartition),
            Ok(()) => match log.stream(&name).await {
                Ok(info) => {
                    if follows(&info.spec.schema).is_some() {
                        shape = Shape::Follows(info);
                    } else if !is_record_shaped(&info) {
                        shape = Shape::Typed(info.spec.schema.fields().len());
                    }
                    None
                }
                Err(e) => Some(of_log(&e)),
            },
        };
        for p in topic.partitions {
            parts.push(Part {
                topic: t,
                shape: shape.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(1) as usize,
                error,
                high_watermark: -1,
                records: BytesMut::new(),
            });
        }
        names.push(topic.topic);
    }
    loop {
        let mut total = 0usize;
        let mut ends_of: HashMap<usize, Result<Vec<u64>, E>> = HashMap::new();
        for part in parts.iter_mut() {
            if part.error.is_some() {
                continue;
            }
            let name = names[part.topic].0.as_str();
            // Each topic's ends are read once a pass, whatever number of
            // its partitions the fetch asks for.
            if let std::collections::hash_map::Entry::Vacant(slot) = ends_of.entry(part.topic) {
                slot.insert(log.partition_ends(name).await.map_err(|e| of_log(&e)));
            }
            let ends = match &ends_of[&part.topic] {
                Ok(e) => e,
                Err(e) => {
                    part.error = Some(*e);
                    continue;
                }
            };
            let Some(&end) = usize::try_from(part.partition)
                .ok()
                .and_then(|p| ends.get(p))
            else {
                part.error = Some(E::UnknownTopicOrPartition);
                continue;
            };
            part.high_watermark = end as i64;
            if part.offset < 0 || part.offset as u64 > end {
                part.error = Some(E::OffsetOutOfRange);
                continue;
            }
            let room = max_bytes.saturating_sub(total);
            let budget = part.max_bytes.saturating_sub(part.records.len()).min(room);
            total += part.records.len();
            total += read_part(&ctx.door.db, name, part, budget).await;
        }
        let now = streamhouse_log::monotonic();
        if total >= min_bytes.max(1) || now >= deadline {
            break;
        }
        // Sleep until a partition gets rows past its offset, or the wait
        // runs out.
        let mut woken: FuturesUnordered<_> = parts
            .iter()
            .filter(|p| p.error.is_none())
            .map(|p| {
                let log = log.clone();
                let name = names[p.topic].0.to_string();
                let (partition, offset) = (p.partition as u32, p.offset as u64);
                async move { log.wait_for(&name, partition, offset).await }
            })
            .collect();
        if woken.is_empty() {
            break;
        }
        if tokio::time::timeout_at(deadline, woken.next())
            .await
            .is_err()
        {
            // One last look at the deadline, in case rows just arrived.
            if parts
                .iter()
                .all(|p| !p.records.is_empty() || p.error.is_some())
            {
                break;
            }
        }
    }
    let mut responses: Vec<FetchableTopicResponse> = names
        .into_iter()
        .map(|name| FetchableTopicResponse::default().with_topic(name))
        .collect();
    for part in parts {
        let data = PartitionData::default()
            .with_partition_index(part.partition)
            .with_error_code(part.error.map_or(0, |e| e.code()))
            .with_high_watermark(part.high_watermark)
            .with_last_stable_offset(part.high_watermark)
            .with_records(Some(part.records.freeze()));
        responses[part.topic].partitions.push(data);
    }
    FetchResponse::default().with_responses(responses)
}
