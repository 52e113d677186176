//! Routes a decoded request to the module that answers it.

use kafka_protocol::messages::{ApiVersionsResponse, RequestHeader, RequestKind};

use crate::ctx::{Answer, Ctx};
use crate::{fetch, groups, offsets, produce, producers, sasl, topics, txns, versions};

/// Answers one request (only requests of served APIs and versions get
/// here).
pub async fn dispatch(ctx: &mut Ctx, header: &RequestHeader, body: RequestKind) -> Answer {
    let version = header.request_api_version;
    match body {
        RequestKind::ApiVersions(_) => {
            Answer::now(ApiVersionsResponse::default().with_api_keys(versions::advertised()))
        }
        RequestKind::Metadata(r) => Answer::now(topics::metadata(ctx, r, version).await),
        RequestKind::CreateTopics(r) => Answer::now(topics::create(ctx, r).await),
        RequestKind::DeleteTopics(r) => Answer::now(topics::delete(ctx, r, version).await),
        RequestKind::DescribeConfigs(r) => Answer::now(topics::describe_configs(ctx, r).await),
        RequestKind::DescribeCluster(_) => Answer::now(topics::describe_cluster(ctx).await),
        RequestKind::Produce(r) => produce::produce(ctx, r).await,
        RequestKind::Fetch(r) => Answer::now(fetch::fetch(ctx, r).await),
        RequestKind::ListOffsets(r) => Answer::now(offsets::list_offsets(ctx, r).await),
        RequestKind::OffsetCommit(r) => Answer::now(offsets::commit(ctx, r).await),
        RequestKind::OffsetFetch(r) => Answer::now(offsets::fetch(ctx, r).await),
        RequestKind::FindCoordinator(r) => {
            Answer::now(groups::find_coordinator(ctx, r, version).await)
        }
        RequestKind::JoinGroup(r) => Answer::now(groups::join(ctx, r, version).await),
        RequestKind::SyncGroup(r) => Answer::now(groups::sync(ctx, r).await),
        RequestKind::Heartbeat(r) => Answer::now(groups::heartbeat(ctx, r).await),
        RequestKind::LeaveGroup(r) => Answer::now(groups::leave(ctx, r, version).await),
        RequestKind::ListGroups(r) => Answer::now(groups::list(ctx, r).await),
        RequestKind::DescribeGroups(r) => Answer::now(groups::describe(ctx, r).await),
        RequestKind::SaslHandshake(r) => Answer::now(sasl::handshake(ctx, r, version)),
        RequestKind::SaslAuthenticate(r) => Answer::now(sasl::authenticate(ctx, r).await),
        RequestKind::InitProducerId(r) => Answer::now(producers::init(ctx, r).await),
        RequestKind::AddPartitionsToTxn(r) => Answer::now(txns::add_partitions(ctx, r).await),
        RequestKind::AddOffsetsToTxn(r) => Answer::now(txns::add_offsets(ctx, r).await),
        RequestKind::TxnOffsetCommit(r) => Answer::now(txns::commit_offsets(ctx, r).await),
        RequestKind::EndTxn(r) => Answer::now(txns::end(ctx, r).await),
        // `versions::served` admits nothing else.
        other => {
            tracing::error!(request = ?std::mem::discriminant(&other), "unrouted kafka request");
            Answer::Close
        }
    }
}
