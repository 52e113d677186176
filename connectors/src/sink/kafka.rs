//! A Kafka destination: a sink's rows as JSON records in a topic of a
//! Kafka-protocol endpoint, each row once.
//!
//! Stream partition `p` goes to topic partition `p % n` (n: the topic's
//! partitions), so each partition's rows stay in order. Every record's
//! value is the row as a JSON object (its declared columns), its timestamp
//! the row's append time, and two headers say where it came from:
//! `streamhouse.partition` and `streamhouse.offset`. Those headers are how
//! the sink knows how far it got: a starting partition first starts its
//! transactional producer (`kafka::txn`), which fences every earlier run
//! of the same copy, then reads its topic partition's committed records
//! backwards from the end to the last record of its stream partition, and
//! goes on after that offset, one transaction per batch. So a record is
//! written once even when an earlier run that lost its lease is still
//! writing: what that run had committed is read back, and it can commit
//! nothing more.

use arrow::array::{Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use bytes::Bytes;

use super::{Result, SinkError};
use crate::kafka;
use crate::kafka::txn::{Outgoing, TxnProducer};

/// The header naming a record's stream partition.
pub const PARTITION_HEADER: &str = "streamhouse.partition";
/// The header naming a record's stream offset.
pub const OFFSET_HEADER: &str = "streamhouse.offset";
/// JSON bytes per produce request at most.
const PRODUCE_BYTES: usize = 512 << 10;
/// Records read per step when looking backwards for where a partition
/// got.
const STEP: i64 = 1_000;

/// `kafka://brokers/topic`: where a Kafka sink writes, as `SHOW SINKS`
/// shows it.
pub fn url(brokers: &[String], topic: &str) -> String {
    format!("kafka://{}/{topic}", brokers.join(","))
}

/// The brokers and topic of a [`url`].
pub fn parse_url(url: &str) -> Result<(Vec<String>, String)> {
    let rest = url
        .strip_prefix("kafka://")
        .ok_or_else(|| SinkError::Invalid(format!("not a Kafka destination: {url}")))?;
    let (brokers, topic) = rest
        .split_once('/')
        .ok_or_else(|| SinkError::Invalid(format!("not a Kafka destination: {url}")))?;
    Ok((
        kafka::parse_bootstrap(brokers).map_err(SinkError::Invalid)?,
        topic.to_string(),
    ))
}

/// Checks that the endpoint answers and has the topic.
pub async fn check(brokers: &[String], topic: &str) -> Result<()> {
    let client = kafka::connect(brokers).await.map_err(SinkError::Upstream)?;
    match kafka::partitions(&client, topic)
        .await
        .map_err(SinkError::Upstream)?
    {
        Some(_) => Ok(()),
        None => Err(SinkError::Invalid(format!(
            "Kafka at {} has no topic \"{topic}\"; create it first",
            brokers.join(",")
        ))),
    }
}

/// One stream partition's side of a Kafka destination: a transactional
/// producer of its topic partition.
pub struct PartitionOut {
    producer: TxnProducer,
    /// The stream partition.
    source: u32,
}

/// The transactional id of stream partition `source`'s copy by `sink`.
pub fn transactional_id(sink: &str, source: u32) -> String {
    format!("streamhouse.sink.{sink}.p{source}")
}

impl PartitionOut {
    /// Connects stream partition `source` of sink `sink` to its topic
    /// partition, fencing every earlier run of the same copy.
    pub async fn open(
        brokers: &[String],
        topic: &str,
        sink: &str,
        source: u32,
    ) -> Result<PartitionOut> {
        let producer = TxnProducer::open(brokers, topic, source, &transactional_id(sink, source))
            .await
            .map_err(SinkError::Upstream)?;
        Ok(PartitionOut { producer, source })
    }

    /// Where the copy goes on: after the last offset of this stream
    /// partition committed in the topic partition (0 when it has none).
    pub async fn resume(&mut self) -> Result<u64> {
        let (earliest, latest) = self.producer.bounds().await.map_err(SinkError::Upstream)?;
        let mut end = latest;
        while end > earliest {
            let start = (end - STEP).max(earliest);
            let mut at = start;
            let mut last: Option<u64> = None;
            while at < end {
                let records = self
                    .producer
                    .committed(at)
                    .await
                    .map_err(SinkError::Upstream)?;
                let Some(next) = records.last().map(|r| r.offset + 1) else {
                    break;
                };
                for r in records.iter().filter(|r| r.offset < end) {
                    if let Some(offset) = origin(&r.headers, self.source) {
                        last = Some(last.map_or(offset, |l| l.max(offset)));
                    }
                }
                at = next;
            }
            if let Some(l) = last {
                return Ok(l + 1);
            }
            end = start;
        }
        Ok(0)
    }

    /// Produces `batches` (the declared columns, then `_offset` and
    /// `_timestamp`) as records, in one transaction; the JSON bytes
    /// written.
    pub async fn write(&mut self, batches: &[RecordBatch]) -> Result<u64> {
        let mut bytes = 0u64;
        let mut chunks = vec![Vec::new()];
        let mut pending = 0usize;
        let source = Bytes::from(self.source.to_string());
        for batch in batches {
            let declared = batch.num_columns().saturating_sub(2);
            let offsets = column::<Int64Array>(batch, declared, "_offset")?;
            let times = column::<TimestampMicrosecondArray>(batch, declared + 1, "_timestamp")?;
            let rows = batch.project(&(0..declared).collect::<Vec<_>>())?;
            let mut json = Vec::new();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut json);
                w.write(&rows)?;
                w.finish()?;
            }
            let json = Bytes::from(json);
            let mut at = 0;
            for i in 0..batch.num_rows() {
                let len = json[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .ok_or_else(|| SinkError::Internal("fewer JSON lines than rows".into()))?;
                let line = json.slice(at..at + len);
                at += len + 1;
                pending += line.len();
                chunks
                    .last_mut()
                    .expect("one chunk at least")
                    .push(Outgoing {
                        value: line,
                        headers: vec![
                            (PARTITION_HEADER, source.clone()),
                            (OFFSET_HEADER, Bytes::from(offsets.value(i).to_string())),
                        ],
                        timestamp_ms: times.value(i).div_euclid(1_000),
                    });
                if pending >= PRODUCE_BYTES {
                    bytes += pending as u64;
                    pending = 0;
                    chunks.push(Vec::new());
                }
            }
        }
        bytes += pending as u64;
        self.producer
            .send(chunks)
            .await
            .map_err(SinkError::Upstream)?;
        Ok(bytes)
    }
}

/// The stream offset a record's headers give for stream partition
/// `source` (None: another partition's, or not a sink's record).
fn origin(headers: &[(String, Option<Bytes>)], source: u32) -> Option<u64> {
    let get = |name: &str| {
        headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let partition: u32 = get(PARTITION_HEADER)?.parse().ok()?;
    if partition != source {
        return None;
    }
    get(OFFSET_HEADER)?.parse().ok()
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, i: usize, name: &str) -> Result<&'a T> {
    batch
        .columns()
        .get(i)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| SinkError::Internal(format!("a sink's rows without {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_headers() {
        let u = url(&["a:1".into(), "b:2".into()], "t.x");
        assert_eq!(u, "kafka://a:1,b:2/t.x");
        assert_eq!(
            parse_url(&u).unwrap(),
            (vec!["a:1".into(), "b:2".into()], "t.x".into())
        );
        assert!(parse_url("s3://x").is_err());
        let h = vec![
            (PARTITION_HEADER.to_string(), Some(Bytes::from_static(b"3"))),
            (OFFSET_HEADER.to_string(), Some(Bytes::from_static(b"42"))),
        ];
        assert_eq!(origin(&h, 3), Some(42));
        assert_eq!(origin(&h, 2), None);
        assert_eq!(origin(&[], 3), None);
        assert_eq!(transactional_id("s", 2), "streamhouse.sink.s.p2");
    }
}
