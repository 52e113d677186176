//! Metadata and the topic admin calls: Metadata, CreateTopics,
//! DeleteTopics, DescribeConfigs, DescribeCluster. A topic is a stream;
//! one created here has the Kafka record shape
//! (`streamhouse_sql::topics`).

use std::time::Duration;

use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use streamhouse_log::{StreamInfo, StreamKind};
use streamhouse_sql::privileges::{Need, Object, Privilege};

use crate::brokers::{self, Broker};
use crate::ctx::{Ctx, text};
use crate::errors::{About, of_log, of_sql};

/// The cluster id clients see.
pub const CLUSTER_ID: &str = "streamhouse";

/// Partitions of a topic created without a count.
pub const DEFAULT_PARTITIONS: u32 = 1;

/// Whether the caller may see a topic at all (read or write it).
pub async fn visible(ctx: &Ctx, topic: &str) -> bool {
    let Some(role) = ctx.role() else { return true };
    let Ok(held) = ctx.door.db.privileges().await else {
        return false;
    };
    [Privilege::Select, Privilege::Insert]
        .into_iter()
        .any(|p| held.allows(role, &Need::Privilege(p, Object::table(topic.to_string()))))
}

fn topic_entry(brokers: &[Broker], info: &StreamInfo) -> MetadataResponseTopic {
    let name = info.name();
    let partitions = (0..info.spec.partitions)
        .map(|p| {
            let leader = BrokerId(brokers::leader(brokers, name, p).node_id);
            MetadataResponsePartition::default()
                .with_partition_index(p as i32)
                .with_leader_id(leader)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![leader])
                .with_isr_nodes(vec![leader])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(text(name))))
        .with_partitions(partitions)
}

fn missing(name: &str, error: E) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(text(name))))
        .with_error_code(error.code())
}

/// Metadata: the live brokers and the topics asked for (every visible
/// stream when none are named).
pub async fn metadata(ctx: &Ctx, r: MetadataRequest, version: i16) -> MetadataResponse {
    let brokers = brokers::live(&ctx.door.db, &ctx.door.broker).await;
    let log = ctx.door.db.log();
    let named: Option<Vec<String>> = match r.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let mut topics = Vec::new();
    match named {
        None => match log.streams().await {
            Ok(streams) => {
                for info in streams {
                    if visible(ctx, info.name()).await {
                        topics.push(topic_entry(&brokers, &info));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list streams for kafka metadata"),
        },
        Some(names) => {
            for name in names {
                let entry = match log.stream(&name).await {
                    Ok(info) if StreamKind::of(info.name()).is_internal() => {
                        missing(&name, E::UnknownTopicOrPartition)
                    }
                    Ok(_) if !visible(ctx, &name).await => {
                        missing(&name, E::TopicAuthorizationFailed)
                    }
                    Ok(info) => topic_entry(&brokers, &info),
                    Err(e) => missing(&name, of_log(&e)),
                };
                topics.push(entry);
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(
            brokers
                .iter()
                .map(|b| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.node_id))
                        .with_host(text(b.host.clone()))
                        .with_port(i32::from(b.port))
                })
                .collect(),
        )
        .with_cluster_id(Some(text(CLUSTER_ID)))
        .with_controller_id(BrokerId(ctx.door.broker.node_id))
        .with_topics(topics)
}

/// Whether a topic name is one Kafka accepts.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err("a topic name has 1 to 249 characters".into());
    }
    if name == "." || name == ".." {
        return Err(format!("\"{name}\" is not a topic name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic names use letters, digits, '.', '_' and '-' only, not {c:?}"
        ));
    }
    Ok(())
}

/// Topic settings that mean nothing to a log whose copies are the object
/// store's: accepted and ignored.
const IGNORED_CONFIGS: &[&str] = &[
    "min.insync.replicas",
    "segment.bytes",
    "segment.ms",
    "segment.index.bytes",
    "unclean.leader.election.enable",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "preallocate",
];

/// The retention a topic's settings ask for (outer `None`: keep forever).
fn retention_of(configs: &[(String, Option<String>)]) -> Result<Option<Duration>, String> {
    let mut retention = None;
    for (name, value) in configs {
        let value = value.as_deref().unwrap_or("");
        match name.as_str() {
            "retention.ms" => {
                let ms: i64 = value
                    .parse()
                    .map_err(|_| format!("retention.ms must be a number, not {value:?}"))?;
                retention = match ms {
                    -1 => None,
                    ms if ms > 0 => Some(Duration::from_millis(ms as u64)),
                    _ => return Err("retention.ms must be positive or -1".into()),
                };
            }
            "cleanup.policy" if value == "delete" => {}
            "cleanup.policy" => {
                return Err(format!(
                    "cleanup.policy {value:?} is not supported: only \"delete\" (compaction by \
                     key is not available yet)"
                ));
            }
            n if IGNORED_CONFIGS.contains(&n) => {}
            n => return Err(format!("topic setting {n:?} is not supported")),
        }
    }
    Ok(retention)
}

/// CreateTopics: each topic a Kafka-shaped stream.
pub async fn create(ctx: &Ctx, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let name = t.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        let partitions = match t.num_partitions {
            -1 => Ok(DEFAULT_PARTITIONS),
            n if n > 0 => Ok(n as u32),
            n => Err(format!("{n} partitions: a topic needs at least one")),
        };
        let configs: Vec<(String, Option<String>)> = t
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect();
        let checked = valid_name(&name)
            .map_err(|m| (E::InvalidTopicException, m))
            .and_then(|()| partitions.map_err(|m| (E::InvalidPartitions, m)))
            .and_then(|p| {
                if !t.assignments.is_empty() {
                    return Err((
                        E::InvalidReplicaAssignment,
                        "replica assignments do not apply: the object store keeps the copies"
                            .to_string(),
                    ));
                }
                retention_of(&configs)
                    .map(|ret| (p, ret))
                    .map_err(|m| (E::InvalidConfig, m))
            });
        let outcome = match checked {
            Err(e) => Err(e),
            Ok((p, _)) if r.validate_only => Ok(p),
            Ok((p, retention)) => ctx
                .door
                .db
                .create_topic(&ctx.session, &name, p, retention)
                .await
                .map(|()| p)
                .map_err(|e| (of_sql(&e, About::Cluster), e.to_string())),
        };
        results.push(match outcome {
            Ok(p) => result
                .with_num_partitions(p as i32)
                .with_replication_factor(1),
            Err((code, message)) => result
                .with_error_code(code.code())
                .with_error_message(Some(text(message))),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// DeleteTopics: drops each stream, as its owner.
pub async fn delete(ctx: &Ctx, r: DeleteTopicsRequest, _version: i16) -> DeleteTopicsResponse {
    let mut responses = Vec::with_capacity(r.topic_names.len());
    for name in r.topic_names {
        let outcome = ctx.door.db.drop_topic(&ctx.session, &name.0).await;
        let mut result = DeletableTopicResult::default().with_name(Some(name));
        if let Err(e) = outcome {
            result = result
                .with_error_code(of_sql(&e, About::Topic).code())
                .with_error_message(Some(text(e.to_string())));
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources and types (DescribeConfigs).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

fn config(name: &str, value: String, source: i8, kind: i8) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(text(name))
        .with_value(Some(text(value)))
        .with_read_only(true)
        .with_config_source(source)
        .with_config_type(kind)
}

/// DescribeConfigs: a topic's settings as Kafka names them; a broker's
/// few that clients look at.
pub async fn describe_configs(ctx: &Ctx, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(r.resources.len());
    for res in r.resources {
        let name = res.resource_name.to_string();
        let result = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let configs = match res.resource_type {
            RESOURCE_TOPIC => match ctx.door.db.log().stream(&name).await {
                Ok(info)
                    if !StreamKind::of(info.name()).is_internal() && visible(ctx, &name).await =>
                {
                    let retention = info.spec.retention.map_or(-1, |d| d.as_millis() as i64);
                    let source = if info.spec.retention.is_some() {
                        SOURCE_TOPIC
                    } else {
                        SOURCE_DEFAULT
                    };
                    Ok(vec![
                        config(
                            "cleanup.policy",
                            "delete".into(),
                            SOURCE_DEFAULT,
                            TYPE_STRING,
                        ),
                        config("retention.ms", retention.to_string(), source, TYPE_LONG),
                        config(
                            "message.timestamp.type",
                            "CreateTime".into(),
                            SOURCE_DEFAULT,
                            TYPE_STRING,
                        ),
                        config(
                            "max.message.bytes",
                            ctx.door.config.max_request_bytes.to_string(),
                            SOURCE_DEFAULT,
                            TYPE_INT,
                        ),
                    ])
                }
                Ok(info) if StreamKind::of(info.name()).is_internal() => {
                    Err(E::UnknownTopicOrPartition)
                }
                Ok(_) => Err(E::TopicAuthorizationFailed),
                Err(e) => Err(of_log(&e)),
            },
            RESOURCE_BROKER => Ok(vec![
                config(
                    "num.partitions",
                    DEFAULT_PARTITIONS.to_string(),
                    SOURCE_DEFAULT,
                    TYPE_INT,
                ),
                config(
                    "auto.create.topics.enable",
                    "false".into(),
                    SOURCE_DEFAULT,
                    TYPE_STRING,
                ),
            ]),
            _ => Err(E::InvalidRequest),
        };
        results.push(match configs {
            Ok(mut configs) => {
                if let Some(keys) = &res.configuration_keys {
                    configs.retain(|c| keys.iter().any(|k| **k == *c.name));
                }
                result.with_configs(configs)
            }
            Err(code) => result.with_error_code(code.code()),
        });
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// DescribeCluster: the live brokers; this agent answers as controller.
pub async fn describe_cluster(ctx: &Ctx) -> DescribeClusterResponse {
    let brokers = brokers::live(&ctx.door.db, &ctx.door.broker).await;
    DescribeClusterResponse::default()
        .with_cluster_id(text(CLUSTER_ID))
        .with_controller_id(BrokerId(ctx.door.broker.node_id))
        .with_brokers(
            brokers
                .iter()
                .map(|b| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.node_id))
                        .with_host(text(b.host.clone()))
                        .with_port(i32::from(b.port))
                })
                .collect(),
        )
}
