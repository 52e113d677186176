//! InitProducerId: an identity for an idempotent producer. The id is 62
//! random bits (a new one per call, so two agents never need to agree on a
//! counter), epoch 0; a producer that names its id and epoch (KIP-360)
//! gets the next epoch, which starts its sequences afresh. The log keys a
//! producer's sequences by id, epoch and partition (see `produce`).
//! A transactional id starts a transactional producer instead (see
//! `txns`).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::ctx::Ctx;

/// A fresh producer id: positive, 62 random bits.
fn fresh_id() -> i64 {
    (ulid::Ulid::new().random() as i64) & ((1 << 62) - 1)
}

/// Answers InitProducerId.
pub async fn init(ctx: &Ctx, r: InitProducerIdRequest) -> InitProducerIdResponse {
    let out = InitProducerIdResponse::default();
    if let Some(id) = r.transactional_id.as_ref().filter(|id| !id.is_empty()) {
        return crate::txns::init(ctx, &id.0, &r).await;
    }
    let (id, epoch) = match (r.producer_id.0, r.producer_epoch) {
        (id, epoch) if id >= 0 && (0..i16::MAX).contains(&epoch) => (id, epoch + 1),
        _ => (fresh_id(), 0),
    };
    out.with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}
