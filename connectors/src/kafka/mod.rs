//! What Kafka sources and sinks share: the `bootstrap` and `topic`
//! options, and clients of the endpoint that give up after a bounded time,
//! so an unreachable endpoint shows as `retrying` with its cause instead
//! of hanging: rskafka for reading and listing, and a transactional
//! producer of our own ([`txn`], over [`wire`]) for sinks, which rskafka
//! does not offer.

pub mod txn;
pub mod wire;

use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

/// How long one request to the endpoint is retried before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// `bootstrap = 'host:port[,host:port…]'`: the brokers, or why not.
pub fn parse_bootstrap(v: &str) -> Result<Vec<String>, String> {
    let brokers: Vec<String> = v
        .split(',')
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .collect();
    let valid = |b: &String| {
        b.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if brokers.is_empty() || !brokers.iter().all(valid) {
        return Err("expected host:port[,host:port…]".into());
    }
    Ok(brokers)
}

/// `topic = '…'`: a Kafka topic's name (1 to 249 of `[a-zA-Z0-9._-]`), or
/// why not.
pub fn check_topic(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 249
        && v != "."
        && v != ".."
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("a topic's name has 1 to 249 letters, digits, '.', '_' or '-'".into())
    }
}

/// A client of the brokers.
pub async fn connect(brokers: &[String]) -> Result<Client, String> {
    ClientBuilder::new(brokers.to_vec())
        .client_id("streamhouse")
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(DEADLINE),
        })
        .build()
        .await
        .map_err(|e| format!("Kafka at {}: {e}", brokers.join(",")))
}

/// The partitions of `topic` (None: no such topic).
pub async fn partitions(client: &Client, topic: &str) -> Result<Option<Vec<i32>>, String> {
    let topics = client
        .list_topics()
        .await
        .map_err(|e| format!("Kafka: listing topics: {e}"))?;
    Ok(topics
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.into_iter().collect()))
}

/// A client of one partition of `topic`.
pub async fn partition(client: &Client, topic: &str, p: i32) -> Result<PartitionClient, String> {
    client
        .partition_client(topic, p, UnknownTopicHandling::Error)
        .await
        .map_err(|e| format!("Kafka: topic {topic} partition {p}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert_eq!(
            parse_bootstrap("a:9092, b:9093").unwrap(),
            ["a:9092", "b:9093"]
        );
        for bad in ["", "a", "a:x", ":9092", "a:99999"] {
            assert!(parse_bootstrap(bad).is_err(), "{bad}");
        }
        assert!(check_topic("orders.v1_x-y").is_ok());
        for bad in ["", ".", "a b", "ü", &"x".repeat(250)] {
            assert!(check_topic(bad).is_err(), "{bad}");
        }
    }
}
