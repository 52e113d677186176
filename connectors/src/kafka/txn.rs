//! A transactional producer of one topic partition, and a reader of that
//! partition's committed records — what makes a Kafka sink write each row
//! once even when an owner that lost its lease goes on running.
//!
//! [`TxnProducer::open`] finds the partition's leader and the coordinator
//! of the transactional id, then starts the producer (InitProducerId):
//! the coordinator aborts whatever an older instance of the same id left
//! open and refuses that instance from then on (PRODUCER_FENCED). Each
//! [`TxnProducer::send`] is one transaction (AddPartitionsToTxn, Produce
//! with the producer's sequences, EndTxn). So what the partition holds,
//! read committed after `open`, is all any instance will ever have
//! committed before this one: the caller reads where it got
//! ([`TxnProducer::committed`]) and goes on from there.
//!
//! Needs Kafka 2.5 or later (the request versions below), or StreamHouse's
//! own Kafka door.

use std::collections::{HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, BrokerId, EndTxnRequest, FetchRequest, FindCoordinatorRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, ProducerId,
    TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, Record, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};

use super::DEADLINE;
use super::wire::Conn;

const METADATA: i16 = 9;
const FIND_COORDINATOR: i16 = 3;
const INIT_PRODUCER_ID: i16 = 3;
const ADD_PARTITIONS: i16 = 3;
const PRODUCE: i16 = 8;
const END_TXN: i16 = 3;
const LIST_OFFSETS: i16 = 5;
const FETCH: i16 = 11;
/// How long a transaction may stay open before the coordinator aborts it.
const TXN_TIMEOUT_MS: i32 = 60_000;
/// Bytes asked for per fetch.
const FETCH_BYTES: i32 = 4 << 20;
/// How long a produce waits for its acknowledgement at the broker.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
const READ_COMMITTED: i8 = 1;

/// A record read back: its offset and headers.
pub struct Committed {
    pub offset: i64,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// What to produce: a record's value, headers and timestamp (ms).
pub struct Outgoing {
    pub value: Bytes,
    pub headers: Vec<(&'static str, Bytes)>,
    pub timestamp_ms: i64,
}

/// The producer of one transactional id into one topic partition.
pub struct TxnProducer {
    id: String,
    topic: String,
    partition: i32,
    leader: Conn,
    coordinator: Conn,
    producer_id: i64,
    epoch: i16,
    sequence: i32,
}

fn failed(what: &str, code: i16) -> String {
    match E::try_from_code(code) {
        Some(e) => format!("Kafka: {what}: {e}"),
        None => format!("Kafka: {what}: error {code}"),
    }
}

/// Codes worth asking again for, after a pause: the coordinator is busy
/// finishing a transaction or loading.
fn transient(code: i16) -> bool {
    matches!(
        E::try_from_code(code),
        Some(
            E::ConcurrentTransactions
                | E::CoordinatorLoadInProgress
                | E::CoordinatorNotAvailable
                | E::LeaderNotAvailable
        )
    )
}

async fn pause(tries: &mut u32) -> bool {
    *tries += 1;
    let wait = std::time::Duration::from_millis(50 << (*tries).min(5));
    if wait * *tries > DEADLINE {
        return false;
    }
    tokio::time::sleep(wait).await;
    true
}

/// Evaluates `$ask` (an error code and a value) until the code is 0, then
/// gives the value; a code not worth asking again for, or one still there
/// after about [`DEADLINE`], returns the error from the function.
macro_rules! settle {
    ($what:expr, $ask:expr) => {{
        let mut tries = 0u32;
        loop {
            let (code, value) = $ask;
            if code == 0 {
                break value;
            }
            if !transient(code) || !pause(&mut tries).await {
                return Err(failed($what, code));
            }
        }
    }};
}

fn address(host: &StrBytes, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl TxnProducer {
    /// Connects to topic `topic`, partition `source % partitions` (one
    /// per stream partition), as transactional id `id`, fencing older
    /// instances of it.
    pub async fn open(
        brokers: &[String],
        topic: &str,
        source: u32,
        id: &str,
    ) -> Result<TxnProducer, String> {
        let mut errors = Vec::new();
        let mut boot = None;
        for b in brokers {
            match Conn::open(b).await {
                Ok(c) => {
                    boot = Some(c);
                    break;
                }
                Err(e) => errors.push(e),
            }
        }
        let mut boot = boot.ok_or_else(|| errors.join("; "))?;
        let meta = boot
            .call(
                &MetadataRequest::default()
                    .with_topics(Some(vec![
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(topic.into())))),
                    ]))
                    .with_allow_auto_topic_creation(false),
                METADATA,
            )
            .await?;
        let t = meta
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .ok_or_else(|| format!("Kafka: no topic \"{topic}\""))?;
        if t.error_code != 0 {
            return Err(failed(&format!("topic \"{topic}\""), t.error_code));
        }
        let mut partitions: Vec<_> = t.partitions.iter().collect();
        partitions.sort_by_key(|p| p.partition_index);
        if partitions.is_empty() {
            return Err(format!("Kafka: topic \"{topic}\" has no partitions"));
        }
        let p = partitions[source as usize % partitions.len()];
        if p.error_code != 0 {
            return Err(failed(
                &format!("topic \"{topic}\" partition {}", p.partition_index),
                p.error_code,
            ));
        }
        let hosts: HashMap<BrokerId, String> = meta
            .brokers
            .iter()
            .map(|b| (b.node_id, address(&b.host, b.port)))
            .collect();
        let leader = hosts
            .get(&p.leader_id)
            .ok_or_else(|| format!("Kafka: partition {} has no leader", p.partition_index))?;
        let find = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(id.into()))
            .with_key_type(1);
        let coordinator = settle!("finding the transaction coordinator", {
            let r = boot.call(&find, FIND_COORDINATOR).await?;
            (r.error_code, address(&r.host, r.port))
        });
        let leader = if leader == boot.address() {
            boot
        } else {
            Conn::open(leader).await?
        };
        let mut coordinator = Conn::open(&coordinator).await?;
        let init = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.into()))))
            .with_transaction_timeout_ms(TXN_TIMEOUT_MS)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let (producer_id, epoch) = settle!("starting the transactional producer", {
            let r = coordinator.call(&init, INIT_PRODUCER_ID).await?;
            (r.error_code, (r.producer_id.0, r.producer_epoch))
        });
        Ok(TxnProducer {
            id: id.to_string(),
            topic: topic.to_string(),
            partition: p.partition_index,
            leader,
            coordinator,
            producer_id,
            epoch,
            sequence: 0,
        })
    }

    fn txn_id(&self) -> TransactionalId {
        TransactionalId(StrBytes::from_string(self.id.clone()))
    }

    fn topic_name(&self) -> TopicName {
        TopicName(StrBytes::from_string(self.topic.clone()))
    }

    /// Writes `chunks` (each one produce request) in one transaction,
    /// committed when this returns Ok. On an error nothing of it is
    /// committed unless the commit itself went through unseen; the caller
    /// opens a new producer, which settles it either way, and reads again.
    pub async fn send(&mut self, chunks: Vec<Vec<Outgoing>>) -> Result<(), String> {
        if chunks.iter().all(|c| c.is_empty()) {
            return Ok(());
        }
        let add = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(self.txn_id())
            .with_v3_and_below_producer_id(ProducerId(self.producer_id))
            .with_v3_and_below_producer_epoch(self.epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(self.topic_name())
                    .with_partitions(vec![self.partition]),
            ]);
        settle!("adding the partition to the transaction", {
            let r = self.coordinator.call(&add, ADD_PARTITIONS).await?;
            let code = r
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .find(|c| *c != 0)
                .unwrap_or(0);
            (code, ())
        });
        for chunk in chunks.into_iter().filter(|c| !c.is_empty()) {
            self.produce(chunk).await?;
        }
        let end = EndTxnRequest::default()
            .with_transactional_id(self.txn_id())
            .with_producer_id(ProducerId(self.producer_id))
            .with_producer_epoch(self.epoch)
            .with_committed(true);
        settle!("committing the transaction", {
            let r = self.coordinator.call(&end, END_TXN).await?;
            (r.error_code, ())
        });
        Ok(())
    }

    async fn produce(&mut self, chunk: Vec<Outgoing>) -> Result<(), String> {
        let n = i32::try_from(chunk.len()).map_err(|_| "a batch too large".to_string())?;
        let records: Vec<Record> = chunk
            .into_iter()
            .enumerate()
            .map(|(i, o)| Record {
                transactional: true,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: self.producer_id,
                producer_epoch: self.epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: self.sequence.wrapping_add(i as i32),
                timestamp: o.timestamp_ms,
                key: None,
                value: Some(o.value),
                headers: o
                    .headers
                    .into_iter()
                    .map(|(k, v)| (StrBytes::from_static_str(k), Some(v)))
                    .collect(),
            })
            .collect();
        let mut raw = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut raw,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| format!("Kafka: encoding records: {e}"))?;
        let r = self
            .leader
            .call(
                &ProduceRequest::default()
                    .with_transactional_id(Some(self.txn_id()))
                    .with_acks(-1)
                    .with_timeout_ms(PRODUCE_TIMEOUT_MS)
                    .with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(self.topic_name())
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_index(self.partition)
                                    .with_records(Some(raw.freeze())),
                            ]),
                    ]),
                PRODUCE,
            )
            .await?;
        let code = r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .map(|p| p.error_code)
            .find(|c| *c != 0 && *c != E::DuplicateSequenceNumber.code())
            .unwrap_or(0);
        if code != 0 {
            return Err(failed("producing", code));
        }
        self.sequence = self.sequence.wrapping_add(n);
        Ok(())
    }

    /// The partition's first offset and its last stable offset (the end
    /// of what is committed).
    pub async fn bounds(&mut self) -> Result<(i64, i64), String> {
        let mut out = [0i64; 2];
        for (i, timestamp) in [-2i64, -1].into_iter().enumerate() {
            let r = self
                .leader
                .call(
                    &ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_isolation_level(READ_COMMITTED)
                        .with_topics(vec![
                            ListOffsetsTopic::default()
                                .with_name(self.topic_name())
                                .with_partitions(vec![
                                    ListOffsetsPartition::default()
                                        .with_partition_index(self.partition)
                                        .with_timestamp(timestamp),
                                ]),
                        ]),
                    LIST_OFFSETS,
                )
                .await?;
            let p = r
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .next()
                .ok_or_else(|| "Kafka: ListOffsets answered no partition".to_string())?;
            if p.error_code != 0 {
                return Err(failed("listing offsets", p.error_code));
            }
            out[i] = p.offset;
        }
        Ok((out[0], out[1]))
    }

    /// Committed data records from offset `from` on (one fetch; empty at
    /// the end): control records and records of aborted transactions left
    /// out, as a read-committed consumer sees them.
    pub async fn committed(&mut self, from: i64) -> Result<Vec<Committed>, String> {
        let r = self
            .leader
            .call(
                &FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(0)
                    .with_min_bytes(0)
                    .with_max_bytes(FETCH_BYTES)
                    .with_isolation_level(READ_COMMITTED)
                    .with_session_epoch(-1)
                    .with_topics(vec![
                        FetchTopic::default()
                            .with_topic(self.topic_name())
                            .with_partitions(vec![
                                FetchPartition::default()
                                    .with_partition(self.partition)
                                    .with_fetch_offset(from)
                                    .with_partition_max_bytes(FETCH_BYTES),
                            ]),
                    ]),
                FETCH,
            )
            .await?;
        if r.error_code != 0 {
            return Err(failed("fetching", r.error_code));
        }
        let Some(p) = r.responses.into_iter().flat_map(|t| t.partitions).next() else {
            return Ok(Vec::new());
        };
        if p.error_code != 0 {
            return Err(failed("fetching", p.error_code));
        }
        let aborted: Vec<(i64, i64)> = p
            .aborted_transactions
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.first_offset, a.producer_id.0))
            .collect();
        let records = decode_whole_batches(p.records.unwrap_or_default())?;
        Ok(visible(records, aborted, from))
    }
}

/// The records of every whole batch in `raw` (a fetch may end in part of
/// one).
fn decode_whole_batches(mut raw: Bytes) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    while raw.len() >= 12 {
        let length = i32::from_be_bytes(raw[8..12].try_into().expect("4 bytes"));
        let Some(size) = usize::try_from(length).ok().and_then(|l| l.checked_add(12)) else {
            return Err(format!("Kafka: a record batch of length {length}"));
        };
        if raw.len() < size {
            break;
        }
        let mut batch = raw.split_to(size);
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| format!("Kafka: decoding fetched records: {e:#}"))?;
        out.extend(set.records);
    }
    Ok(out)
}

/// What a read-committed consumer sees of `records`: data records from
/// offset `from` on, without those of the aborted transactions (each
/// `(first offset, producer id)`, ended by the producer's abort marker).
fn visible(records: Vec<Record>, mut aborted: Vec<(i64, i64)>, from: i64) -> Vec<Committed> {
    aborted.sort_unstable();
    let mut next = aborted.into_iter().peekable();
    let mut aborting: HashSet<i64> = HashSet::new();
    let mut out = Vec::new();
    for r in records {
        while let Some(&(first, producer)) = next.peek() {
            if first > r.offset {
                break;
            }
            aborting.insert(producer);
            next.next();
        }
        if r.control {
            // Key: version (i16), type (i16: 0 abort, 1 commit).
            if r.key
                .as_ref()
                .is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 0])
            {
                aborting.remove(&r.producer_id);
            }
            continue;
        }
        if r.offset < from || (r.transactional && aborting.contains(&r.producer_id)) {
            continue;
        }
        out.push(Committed {
            offset: r.offset,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, producer: i64, transactional: bool, control: Option<i16>) -> Record {
        Record {
            transactional,
            control: control.is_some(),
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: producer,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32,
            timestamp: 0,
            key: control.map(|t| {
                let mut k = vec![0u8, 0];
                k.extend_from_slice(&t.to_be_bytes());
                Bytes::from(k)
            }),
            value: None,
            headers: Default::default(),
        }
    }

    #[test]
    fn aborted_transactions_and_markers_are_left_out() {
        let records = vec![
            record(0, -1, false, None),
            record(1, 7, true, None),
            record(2, 8, true, None),
            record(3, 7, true, None),
            record(4, 7, true, Some(0)), // 7 aborts 1 and 3
            record(5, 8, true, Some(1)), // 8 commits 2
            record(6, 7, true, None),    // 7's next transaction
            record(7, 7, true, Some(1)),
            record(8, -1, false, None),
        ];
        let seen: Vec<i64> = visible(records.clone(), vec![(1, 7)], 0)
            .iter()
            .map(|c| c.offset)
            .collect();
        assert_eq!(seen, [0, 2, 6, 8]);
        let later: Vec<i64> = visible(records, vec![(1, 7)], 3)
            .iter()
            .map(|c| c.offset)
            .collect();
        assert_eq!(later, [6, 8]);
    }

    #[test]
    fn a_fetch_ending_inside_a_batch_keeps_the_whole_ones() {
        let mut raw = BytesMut::new();
        let records = vec![record(0, -1, false, None), record(1, -1, false, None)];
        RecordBatchEncoder::encode(
            &mut raw,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let whole = raw.len();
        raw.extend_from_slice(&raw.clone()[..whole / 2]);
        let got = decode_whole_batches(raw.freeze()).unwrap();
        assert_eq!(got.len(), 2);
    }
}
