//! A Kafka destination: a sink's rows as JSON records in a topic of a
//! Kafka-protocol endpoint, each row once.
//!
//! Stream partition `p` goes to topic partition `p % n` (n: the topic's
//! partitions), so each partition's rows stay in order. Every record's
//! value is the row as a JSON object (its declared columns), its timestamp
//! the row's append time, and two headers say where it came from:
//! `streamhouse.partition` and `streamhouse.offset`. Those headers are how
//! the sink knows how far it got: a starting partition reads its topic
//! partition backwards from the end to the last record of its stream
//! partition and goes on after that offset. So a record is written once as
//! long as one run of the sink writes at a time (its lease) — a produce
//! that failed after the endpoint stored it is found there, not written
//! again.

use std::collections::BTreeMap;

use arrow::array::{Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient};
use rskafka::record::Record;

use super::{Result, SinkError};
use crate::kafka;

/// The header naming a record's stream partition.
pub const PARTITION_HEADER: &str = "streamhouse.partition";
/// The header naming a record's stream offset.
pub const OFFSET_HEADER: &str = "streamhouse.offset";
/// JSON bytes per produce request at most.
const PRODUCE_BYTES: usize = 512 << 10;
/// Records read per step when looking backwards for where a partition
/// got.
const STEP: i64 = 1_000;

fn upstream(e: impl std::fmt::Display) -> SinkError {
    SinkError::Upstream(format!("Kafka: {e}"))
}

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

/// One stream partition's side of a Kafka destination.
pub struct PartitionOut {
    client: PartitionClient,
    /// The stream partition.
    source: u32,
}

impl PartitionOut {
    /// Connects stream partition `source` to its topic partition.
    pub async fn open(brokers: &[String], topic: &str, source: u32) -> Result<PartitionOut> {
        let client = kafka::connect(brokers).await.map_err(SinkError::Upstream)?;
        let partitions = kafka::partitions(&client, topic)
            .await
            .map_err(SinkError::Upstream)?
            .filter(|p| !p.is_empty())
            .ok_or_else(|| SinkError::Upstream(format!("Kafka: no topic \"{topic}\"")))?;
        let target = partitions[source as usize % partitions.len()];
        let client = kafka::partition(&client, topic, target)
            .await
            .map_err(SinkError::Upstream)?;
        Ok(PartitionOut { client, source })
    }

    /// Where the copy goes on: after the last offset of this stream
    /// partition in the topic partition (0 when it has none).
    pub async fn resume(&self) -> Result<u64> {
        let latest = self
            .client
            .get_offset(OffsetAt::Latest)
            .await
            .map_err(upstream)?;
        let earliest = self
            .client
            .get_offset(OffsetAt::Earliest)
            .await
            .map_err(upstream)?;
        let mut end = latest;
        while end > earliest {
            let start = (end - STEP).max(earliest);
            let mut at = start;
            let mut last: Option<u64> = None;
            while at < end {
                let (records, _) = self
                    .client
                    .fetch_records(at, 1..(4 << 20), 0)
                    .await
                    .map_err(upstream)?;
                if records.is_empty() {
                    break;
                }
                for r in records.iter().filter(|r| r.offset >= at && r.offset < end) {
                    if let Some(offset) = origin(&r.record.headers, self.source) {
                        last = Some(last.map_or(offset, |l| l.max(offset)));
                    }
                }
                at = records.last().map_or(end, |r| r.offset + 1);
            }
            if let Some(l) = last {
                return Ok(l + 1);
            }
            end = start;
        }
        Ok(0)
    }

    /// Produces `batches` (the declared columns, then `_offset` and
    /// `_timestamp`) as records; the JSON bytes written.
    pub async fn write(&self, batches: &[RecordBatch]) -> Result<u64> {
        let mut bytes = 0u64;
        let mut records = Vec::new();
        let mut pending = 0usize;
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
            for (i, line) in json
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .enumerate()
            {
                let headers = BTreeMap::from([
                    (
                        PARTITION_HEADER.to_string(),
                        self.source.to_string().into_bytes(),
                    ),
                    (
                        OFFSET_HEADER.to_string(),
                        offsets.value(i).to_string().into_bytes(),
                    ),
                ]);
                let timestamp =
                    chrono::DateTime::from_timestamp_micros(times.value(i)).unwrap_or_default();
                pending += line.len();
                records.push(Record {
                    key: None,
                    value: Some(line.to_vec()),
                    headers,
                    timestamp,
                });
                if pending >= PRODUCE_BYTES {
                    bytes += pending as u64;
                    self.produce(std::mem::take(&mut records)).await?;
                    pending = 0;
                }
            }
        }
        bytes += pending as u64;
        self.produce(records).await?;
        Ok(bytes)
    }

    async fn produce(&self, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.client
            .produce(records, Compression::NoCompression)
            .await
            .map_err(upstream)?;
        Ok(())
    }
}

/// The stream offset a record's headers give for stream partition
/// `source` (None: another partition's, or not a sink's record).
fn origin(headers: &BTreeMap<String, Vec<u8>>, source: u32) -> Option<u64> {
    let partition: u32 = std::str::from_utf8(headers.get(PARTITION_HEADER)?)
        .ok()?
        .parse()
        .ok()?;
    if partition != source {
        return None;
    }
    std::str::from_utf8(headers.get(OFFSET_HEADER)?)
        .ok()?
        .parse()
        .ok()
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
        let h = BTreeMap::from([
            (PARTITION_HEADER.to_string(), b"3".to_vec()),
            (OFFSET_HEADER.to_string(), b"42".to_vec()),
        ]);
        assert_eq!(origin(&h, 3), Some(42));
        assert_eq!(origin(&h, 2), None);
        assert_eq!(origin(&BTreeMap::new(), 3), None);
    }
}
