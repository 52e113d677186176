//! The Kafka source: `CREATE SOURCE name FROM KAFKA WITH (bootstrap =
//! 'host:port', topic = '…') INTO stream` copies a topic of any
//! Kafka-protocol endpoint into a stream, each record exactly once.
//!
//! Each record's value is a JSON object whose keys name the stream's
//! columns (matched like a file source's JSON lines: by name, the stream's
//! types, a missing nullable column NULL); records without a value
//! (tombstones) are passed over.
//!
//! **Exactly once.** The source's consumer offsets are kept in our
//! metadata, not in a consumer group of the endpoint: each round fetches
//! every partition from its position and appends what came in one append,
//! as an idempotent producer (`source:<name>`) fenced to the lease's epoch,
//! recording in the same commit each partition's next offset. A restart
//! anywhere reads the offsets back and fetches from there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient};
use serde::{Deserialize, Serialize};
use streamhouse_log::{AppendOptions, Log, ProducerSeq};

use super::files::OnError;
use super::files::read::conform;
use super::{ROWS_METRIC, Result, SourceError, SourceProgress, producer_id};
use crate::kafka;
use crate::status::Status;
use crate::text::{self, quoted};

/// Bytes fetched per partition per round at most.
const FETCH_BYTES: i32 = 4 << 20;

/// Where a new source starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record the topic keeps.
    Earliest,
    /// After the records there when the source first runs.
    Latest,
}

/// What a Kafka source copies: `CREATE SOURCE name FROM KAFKA WITH
/// (bootstrap, topic, format, start, max_wait) INTO stream`.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSpec {
    pub name: String,
    pub brokers: Vec<String>,
    pub topic: String,
    pub start: Start,
    /// How long a fetch waits for records when there are none.
    pub max_wait: Duration,
    /// A record that is not a JSON object of the stream's columns.
    pub on_error: OnError,
    /// The stream the rows go to.
    pub stream: String,
}

const KNOWN: &str = "bootstrap, topic, format, start, max_wait, on_error";

impl KafkaSpec {
    /// A source from its statement's parts; `options` are (lower-case key,
    /// value) pairs, `into` the stream after `INTO`. Checks every option;
    /// does not connect.
    pub fn new(name: &str, options: &[(String, String)], into: Option<&str>) -> Result<KafkaSpec> {
        let bad = |k: &str, v: &str, why: &str| {
            SourceError::Invalid(format!("source option {k} = '{v}': {why}"))
        };
        let stream = into.ok_or_else(|| {
            SourceError::Invalid(
                "a Kafka source names the stream its rows go to: CREATE SOURCE … FROM KAFKA \
                 WITH (…) INTO stream"
                    .into(),
            )
        })?;
        let mut spec = KafkaSpec {
            name: name.to_string(),
            brokers: Vec::new(),
            topic: String::new(),
            start: Start::Earliest,
            max_wait: Duration::from_millis(500),
            on_error: OnError::Stop,
            stream: stream.to_string(),
        };
        for (k, v) in options {
            match k.as_str() {
                "bootstrap" => {
                    spec.brokers = kafka::parse_bootstrap(v).map_err(|e| bad(k, v, &e))?
                }
                "topic" => {
                    kafka::check_topic(v).map_err(|e| bad(k, v, &e))?;
                    spec.topic = v.clone();
                }
                "format" => {
                    if !v.eq_ignore_ascii_case("json") {
                        return Err(bad(k, v, "expected 'json' (a JSON object per record)"));
                    }
                }
                "start" => {
                    spec.start = match v.to_ascii_lowercase().as_str() {
                        "earliest" => Start::Earliest,
                        "latest" => Start::Latest,
                        _ => return Err(bad(k, v, "expected 'earliest' or 'latest'")),
                    }
                }
                "on_error" => spec.on_error = OnError::parse(k, v)?,
                "max_wait" => {
                    spec.max_wait = humantime::parse_duration(v)
                        .ok()
                        .filter(|d| {
                            *d >= Duration::from_millis(10) && *d <= Duration::from_secs(30)
                        })
                        .ok_or_else(|| {
                            bad(k, v, "expected a duration from 10ms to 30s, e.g. '500ms'")
                        })?;
                }
                other => {
                    return Err(SourceError::Invalid(format!(
                        "unknown Kafka source option \"{other}\" (known: {KNOWN})"
                    )));
                }
            }
        }
        if spec.brokers.is_empty() || spec.topic.is_empty() {
            return Err(SourceError::Invalid(
                "a Kafka source needs WITH (bootstrap = 'host:port', topic = '…')".into(),
            ));
        }
        Ok(spec)
    }

    /// The statement that makes this source.
    pub fn to_sql(&self) -> String {
        let options = [
            ("bootstrap", self.brokers.join(",")),
            ("topic", self.topic.clone()),
            ("format", "json".to_string()),
            (
                "start",
                match self.start {
                    Start::Earliest => "earliest",
                    Start::Latest => "latest",
                }
                .to_string(),
            ),
            (
                "max_wait",
                humantime::format_duration(self.max_wait).to_string(),
            ),
            ("on_error", self.on_error.name().to_string()),
        ];
        format!(
            "CREATE SOURCE {} FROM KAFKA WITH ({}) INTO {}",
            quoted(&self.name),
            text::options(&options),
            quoted(&self.stream)
        )
    }
}

/// Checks that the endpoint answers and has the topic.
pub async fn describe(spec: &KafkaSpec) -> Result<Vec<i32>> {
    let client = kafka::connect(&spec.brokers)
        .await
        .map_err(SourceError::Upstream)?;
    match kafka::partitions(&client, &spec.topic)
        .await
        .map_err(SourceError::Upstream)?
    {
        Some(p) => Ok(p),
        None => Err(SourceError::Invalid(format!(
            "Kafka at {} has no topic \"{}\"",
            spec.brokers.join(","),
            spec.topic
        ))),
    }
}

/// What each append records with it: each partition's next offset.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Recorded {
    offsets: BTreeMap<i32, i64>,
}

/// Runs a source until the task is aborted or it cannot go on (status
/// `failed`): after any other failure it waits (backing off) and starts
/// again from the offsets its stream recorded.
pub async fn run(log: Arc<Log>, spec: KafkaSpec, epoch: u64, progress: Arc<SourceProgress>) {
    let (log, spec_ref, p) = (&*log, &spec, &*progress);
    super::supervise(&spec.name, p, None, move || {
        run_once(log, spec_ref, epoch, p)
    })
    .await;
}

fn upstream(e: KafkaError) -> SourceError {
    SourceError::Upstream(format!("Kafka: {e}"))
}

async fn run_once(
    log: &Log,
    spec: &KafkaSpec,
    epoch: u64,
    progress: &SourceProgress,
) -> Result<()> {
    progress.starting();
    let producer = producer_id(&spec.name);
    let meta = log.metadata();
    let info = log.stream(&spec.stream).await?;
    meta.fence_producer(&producer, info.id, epoch).await?;
    let (mut sequence, mut recorded) = match meta.producer_progress(&producer, info.id).await? {
        Some((s, Some(text))) => (
            s,
            serde_json::from_str::<Recorded>(&text).map_err(|e| {
                SourceError::Fatal(format!(
                    "stream \"{}\" records no Kafka source position: {e}",
                    spec.stream
                ))
            })?,
        ),
        Some((s, None)) => (s, Recorded::default()),
        None => (0, Recorded::default()),
    };
    let client = kafka::connect(&spec.brokers)
        .await
        .map_err(SourceError::Upstream)?;
    let partitions = kafka::partitions(&client, &spec.topic)
        .await
        .map_err(SourceError::Upstream)?
        .ok_or_else(|| SourceError::Upstream(format!("Kafka: no topic \"{}\"", spec.topic)))?;
    let mut clients = Vec::new();
    for p in partitions {
        let c = kafka::partition(&client, &spec.topic, p)
            .await
            .map_err(SourceError::Upstream)?;
        if let std::collections::btree_map::Entry::Vacant(e) = recorded.offsets.entry(p) {
            let at = match spec.start {
                Start::Earliest => OffsetAt::Earliest,
                Start::Latest => OffsetAt::Latest,
            };
            e.insert(c.get_offset(at).await.map_err(upstream)?);
        }
        clients.push(c);
    }
    progress.set_status(Status::Running);
    let max_wait = spec.max_wait.as_millis() as i32;
    loop {
        let fetches = clients.iter().map(|c| {
            let at = recorded.offsets[&c.partition()];
            fetch(c, at, max_wait)
        });
        let fetched = futures::future::try_join_all(fetches).await?;
        let schema = log.stream(&spec.stream).await?.spec.schema.clone();
        let mut values: Vec<(i32, i64, Vec<u8>)> = Vec::new();
        let mut lag = 0i64;
        for (c, (records, high)) in clients.iter().zip(fetched) {
            let p = c.partition();
            let mut next = recorded.offsets[&p];
            for r in records {
                if r.offset < next {
                    continue; // a batch fetched whole holds records before the position
                }
                next = r.offset + 1;
                if let Some(v) = r.record.value {
                    values.push((p, r.offset, v));
                }
            }
            lag += (high - next).max(0);
            recorded.offsets.insert(p, next);
        }
        progress.lag_records.store(lag as u64, Ordering::Relaxed);
        let batches = decode(&values, &schema, spec.on_error)?;
        let n: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let staged = log
            .stage(&spec.stream, batches, &AppendOptions::default())
            .await?;
        sequence += 1;
        let seq = ProducerSeq {
            producer_id: producer.clone(),
            sequence,
            progress: Some(
                serde_json::to_string(&recorded).map_err(|e| SourceError::Fatal(e.to_string()))?,
            ),
            epoch: Some(epoch),
            first: None,
        };
        match staged {
            Some(s) => {
                log.append_staged_as(vec![s], Some(seq)).await?;
            }
            None => {
                // Nothing to append (no records, or only tombstones): the
                // offsets are recorded with the next rows.
                sequence -= 1;
            }
        }
        progress.rows.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(ROWS_METRIC, "source" => spec.name.clone()).increment(n);
    }
}

/// Records of partition `c` from `offset` (and the high watermark); an
/// offset the topic no longer keeps (its retention passed it) moves to the
/// oldest kept, with a warning.
async fn fetch(
    c: &PartitionClient,
    offset: i64,
    max_wait_ms: i32,
) -> Result<(Vec<rskafka::record::RecordAndOffset>, i64)> {
    // The client retries for a bounded time, but a connection that stops
    // answering holds a request: bound the whole fetch too.
    let patience = Duration::from_millis(max_wait_ms as u64) + kafka::DEADLINE;
    let fetched = tokio::time::timeout(
        patience,
        c.fetch_records(offset, 1..FETCH_BYTES, max_wait_ms),
    )
    .await
    .map_err(|_| {
        SourceError::Upstream(format!(
            "Kafka: partition {} did not answer a fetch in {}s",
            c.partition(),
            patience.as_secs()
        ))
    })?;
    match fetched {
        Ok(got) => Ok(got),
        Err(KafkaError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        }) => {
            let earliest = c.get_offset(OffsetAt::Earliest).await.map_err(upstream)?;
            if earliest <= offset {
                return Err(SourceError::Upstream(format!(
                    "Kafka: partition {} has no offset {offset}",
                    c.partition()
                )));
            }
            tracing::warn!(
                topic = %c.topic(),
                partition = c.partition(),
                from = offset,
                to = earliest,
                "records the topic no longer keeps were skipped"
            );
            c.fetch_records(earliest, 1..FETCH_BYTES, max_wait_ms)
                .await
                .map_err(upstream)
        }
        Err(e) => Err(upstream(e)),
    }
}

/// JSON values (with their partition and offset) as rows of the stream's
/// columns. A record that is not one: with `on_error = 'skip'` it is
/// passed over (with a warning), else an error naming it.
fn decode(
    values: &[(i32, i64, Vec<u8>)],
    schema: &SchemaRef,
    on_error: OnError,
) -> Result<Vec<RecordBatch>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    if let Ok(batches) = decode_all(values, schema) {
        return Ok(batches);
    }
    // Find the bad records: each alone.
    let mut out = Vec::new();
    for v in values {
        match decode_all(std::slice::from_ref(v), schema) {
            Ok(b) => out.extend(b),
            Err(e) if on_error == OnError::Skip => {
                tracing::warn!(partition = v.0, offset = v.1, error = %e, "a record was skipped");
            }
            Err(e) => {
                return Err(SourceError::Protocol(format!(
                    "topic partition {} offset {}: {e}",
                    v.0, v.1
                )));
            }
        }
    }
    Ok(out)
}

fn decode_all(
    values: &[(i32, i64, Vec<u8>)],
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, String> {
    const BATCH: usize = 65_536;
    let text = |e: arrow::error::ArrowError| e.to_string();
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(BATCH)
        .build_decoder()
        .map_err(text)?;
    let mut out = Vec::new();
    for (_, _, v) in values {
        for mut buf in [v.as_slice(), b"\n"] {
            while !buf.is_empty() {
                let n = decoder.decode(buf).map_err(text)?;
                buf = &buf[n..];
                if decoder.len() >= BATCH {
                    out.extend(decoder.flush().map_err(text)?);
                } else if n == 0 {
                    return Err("the decoder made no progress".into());
                }
            }
        }
        if decoder.has_partial_record() {
            return Err("the value is not a whole JSON object".into());
        }
    }
    out.extend(decoder.flush().map_err(text)?);
    out.iter()
        .map(|b| conform(b, schema).map_err(|e| e.to_string()))
        .collect()
}
