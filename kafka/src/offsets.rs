//! Offsets: ListOffsets (earliest, latest, by record timestamp), and a
//! group's committed offsets (OffsetCommit, OffsetFetch) — the same
//! offsets the Flight consumer groups and `streamhouse groups` use.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use streamhouse_log::groups::classic::ClassicReply;
use streamhouse_log::{Log, LogError, Micros, StreamInfo, StreamKind, TimeFilter};
use streamhouse_sql::privileges::{Need, Object, Privilege};

use crate::ctx::{Ctx, text};
use crate::errors::{About, of_log, of_sql};
use crate::groups::refusal_code;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// A user stream by name, for a Kafka client.
async fn topic(log: &Log, name: &str) -> Result<Arc<StreamInfo>, E> {
    if StreamKind::of(name).is_internal() {
        return Err(E::UnknownTopicOrPartition);
    }
    log.stream(name).await.map_err(|e| of_log(&e))
}

async fn may(ctx: &Ctx, needs: &[Need], about: About) -> Result<(), E> {
    ctx.door
        .db
        .authorize(crate::ctx::DOOR, ctx.role(), needs)
        .await
        .map_err(|e| of_sql(&e, about))
}

/// The first offset at or after record time `at_ms`, and its time.
async fn offset_for_time(
    log: &Log,
    info: &StreamInfo,
    partition: u32,
    end: u64,
    at_ms: i64,
) -> Result<(i64, i64), LogError> {
    let at: Micros = at_ms.saturating_mul(1_000);
    let filter = TimeFilter {
        event_time: Some(at..Micros::MAX),
        append_time: None,
    };
    // The record timestamp (declared column 3) and `_offset`.
    let offset_col = info.spec.schema.fields().len() + 1;
    let mut rows = log
        .read_time(
            info.name(),
            partition,
            0..end,
            filter,
            Some(vec![3, offset_col]),
        )
        .await?;
    while let Some(batch) = rows.next().await {
        let batch = batch?;
        if batch.num_rows() > 0 {
            use arrow::array::AsArray;
            use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
            let time = batch
                .column(0)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0);
            let offset = batch.column(1).as_primitive::<Int64Type>().value(0);
            return Ok((offset, time.div_euclid(1_000)));
        }
    }
    Ok((-1, -1))
}

/// ListOffsets.
pub async fn list_offsets(ctx: &Ctx, r: ListOffsetsRequest) -> ListOffsetsResponse {
    let log = ctx.door.db.log().clone();
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let name = t.name.0.to_string();
        let need = [Need::Privilege(
            Privilege::Select,
            Object::table(name.clone()),
        )];
        let found = match may(ctx, &need, About::Topic).await {
            Ok(()) => topic(&log, &name).await,
            Err(e) => Err(e),
        };
        let (ends, starts) = match &found {
            Ok(info) => {
                let ends = log.partition_ends(&name).await.map_err(|e| of_log(&e));
                let starts = log
                    .metadata()
                    .partition_stats(info.id)
                    .await
                    .map_err(|e| of_log(&e));
                (ends, starts)
            }
            Err(e) => (Err(*e), Err(*e)),
        };
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let out = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let end = match (&ends, usize::try_from(p.partition_index)) {
                (Ok(ends), Ok(i)) if i < ends.len() => ends[i],
                (Err(e), _) => {
                    partitions.push(out.with_error_code(e.code()));
                    continue;
                }
                _ => {
                    partitions.push(out.with_error_code(E::UnknownTopicOrPartition.code()));
                    continue;
                }
            };
            let start = match &starts {
                Ok(stats) => stats
                    .iter()
                    .find(|s| s.partition as i32 == p.partition_index)
                    .and_then(|s| s.first_offset)
                    .unwrap_or(end),
                Err(_) => 0,
            };
            let answer = match p.timestamp {
                LATEST => Ok((end as i64, -1)),
                EARLIEST => Ok((start as i64, -1)),
                MAX_TIMESTAMP => Ok((end.saturating_sub(1) as i64, -1)),
                ts if ts >= 0 => match &found {
                    Ok(info) => offset_for_time(&log, info, p.partition_index as u32, end, ts)
                        .await
                        .map_err(|e| of_log(&e)),
                    Err(e) => Err(*e),
                },
                _ => Err(E::InvalidRequest),
            };
            partitions.push(match answer {
                Ok((offset, timestamp)) => out.with_offset(offset).with_timestamp(timestamp),
                Err(e) => out.with_error_code(e.code()),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// OffsetCommit: the group checks the member and generation, and the
/// offsets are written, in one metadata transaction.
pub async fn commit(ctx: &Ctx, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let arrived = streamhouse_log::monotonic();
    let log = ctx.door.db.log().clone();
    let group = r.group_id.0.to_string();
    let group_need = [Need::Privilege(
        Privilege::Consume,
        Object::group(group.clone()),
    )];
    let group_error = may(ctx, &group_need, About::Group).await.err();
    // Per topic: the partitions refused up front, and the offsets to
    // commit.
    let mut refused: Vec<(TopicName, Vec<(i32, E)>)> = Vec::new();
    let mut offsets = Vec::new();
    let mut asked: Vec<(TopicName, Vec<i32>)> = Vec::new();
    for t in r.topics {
        let name = t.name.0.to_string();
        let need = [Need::Privilege(
            Privilege::Select,
            Object::table(name.clone()),
        )];
        let found = match group_error {
            Some(e) => Err(e),
            None => match may(ctx, &need, About::Topic).await {
                Ok(()) => topic(&log, &name).await,
                Err(e) => Err(e),
            },
        };
        let mut bad = Vec::new();
        let mut good = Vec::new();
        let mut ids = Vec::new();
        for p in &t.partitions {
            let i = p.partition_index;
            match &found {
                Err(e) => bad.push((i, *e)),
                Ok(info) if i < 0 || i as u32 >= info.spec.partitions => {
                    bad.push((i, E::UnknownTopicOrPartition));
                }
                Ok(_) if p.committed_offset < 0 => bad.push((i, E::InvalidCommitOffsetSize)),
                Ok(_) => {
                    good.push((i as u32, p.committed_offset as u64));
                    ids.push(i);
                }
            }
        }
        if let (Ok(info), false) = (&found, good.is_empty()) {
            offsets.push((info.id, good));
        }
        refused.push((t.name.clone(), bad));
        asked.push((t.name, ids));
    }
    let outcome = if offsets.is_empty() {
        None
    } else {
        Some(
            match log
                .groups()
                .classic_commit(
                    &group,
                    &r.member_id,
                    r.generation_id_or_member_epoch,
                    &offsets,
                    arrived,
                )
                .await
            {
                Ok(ClassicReply::Ok) => 0,
                Ok(ClassicReply::Refused(e)) => refusal_code(e).code(),
                Ok(_) => E::UnknownServerError.code(),
                Err(e) => of_log(&e).code(),
            },
        )
    };
    let topics = refused
        .into_iter()
        .zip(asked)
        .map(|((name, bad), (_, good))| {
            let mut partitions: Vec<OffsetCommitResponsePartition> = bad
                .into_iter()
                .map(|(i, e)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(i)
                        .with_error_code(e.code())
                })
                .collect();
            partitions.extend(good.into_iter().map(|i| {
                OffsetCommitResponsePartition::default()
                    .with_partition_index(i)
                    .with_error_code(outcome.unwrap_or(0))
            }));
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// OffsetFetch: a group's committed offsets (-1 where none), for the
/// topics asked or every topic it has committed to.
pub async fn fetch(ctx: &Ctx, r: OffsetFetchRequest) -> OffsetFetchResponse {
    let log = ctx.door.db.log().clone();
    let group = r.group_id.0.to_string();
    let group_need = [Need::Privilege(
        Privilege::Consume,
        Object::group(group.clone()),
    )];
    if let Err(e) = may(ctx, &group_need, About::Group).await {
        return OffsetFetchResponse::default().with_error_code(e.code());
    }
    let asked: Vec<(String, Option<Vec<i32>>)> = match r.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), Some(t.partition_indexes)))
            .collect(),
        None => {
            let committed = match log.metadata().groups().await {
                Ok(g) => g,
                Err(e) => {
                    return OffsetFetchResponse::default().with_error_code(of_log(&e).code());
                }
            };
            let names: HashMap<_, _> = match log.streams().await {
                Ok(s) => s.iter().map(|s| (s.id, s.name().to_string())).collect(),
                Err(e) => {
                    return OffsetFetchResponse::default().with_error_code(of_log(&e).code());
                }
            };
            committed
                .into_iter()
                .filter(|(g, _)| *g == group)
                .filter_map(|(_, id)| names.get(&id).map(|n| (n.clone(), None)))
                .collect()
        }
    };
    let mut topics = Vec::with_capacity(asked.len());
    let mut unreadable = false;
    for (name, partitions) in asked {
        // Offsets that cannot be read are an error, never "none committed"
        // (which would send the client to its reset policy).
        let found = match topic(&log, &name).await {
            Ok(info) => log
                .metadata()
                .group_offsets(&group, info.id)
                .await
                // Retried by clients, unlike a storage error.
                .map_err(|_| E::CoordinatorLoadInProgress),
            Err(e) => Err(e),
        };
        if let Err(E::CoordinatorLoadInProgress) = found {
            unreadable = true;
        }
        let committed: HashMap<u32, u64> = match &found {
            Ok(offsets) => offsets.iter().copied().collect(),
            Err(_) => HashMap::new(),
        };
        let partitions = partitions.unwrap_or_else(|| {
            let mut p: Vec<i32> = committed.keys().map(|&p| p as i32).collect();
            p.sort_unstable();
            p
        });
        let entries = partitions
            .into_iter()
            .map(|i| {
                let out = OffsetFetchResponsePartition::default()
                    .with_partition_index(i)
                    .with_metadata(Some(text("")));
                match &found {
                    // An unknown topic has no offsets, as in Apache Kafka.
                    Err(e) if *e != E::UnknownTopicOrPartition => {
                        out.with_committed_offset(-1).with_error_code(e.code())
                    }
                    _ => out.with_committed_offset(
                        u32::try_from(i)
                            .ok()
                            .and_then(|p| committed.get(&p))
                            .map_or(-1, |&o| o as i64),
                    ),
                }
            })
            .collect();
        topics.push(
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(text(name)))
                .with_partitions(entries),
        );
    }
    let response = OffsetFetchResponse::default().with_topics(topics);
    if unreadable {
        response.with_error_code(E::CoordinatorLoadInProgress.code())
    } else {
        response
    }
}
