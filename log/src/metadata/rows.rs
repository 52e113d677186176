//! Decoding the metadata tables' rows, shared by the SQLite and PostgreSQL
//! stores: both keep the same columns, only the drivers' row types differ.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{AgentRecord, ChunkRecord, PartitionStats, ViewCheckpoint, ViewRecord};
use crate::chunk::TimeBounds;
use crate::error::{LogError, Result};
use crate::stream::{EventTime, SchemaVersion, StreamInfo, StreamSpec, decode_schema};

/// The column getters the decoders need, for either driver's rows. Integer
/// columns are 64-bit in both schemas.
pub(super) trait MetaRow {
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn blob(&self, col: &str) -> Result<Vec<u8>>;
}

macro_rules! meta_row {
    ($row:ty) => {
        impl MetaRow for $row {
            fn int(&self, col: &str) -> Result<i64> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>> {
                Ok(self.try_get(col)?)
            }
            fn text(&self, col: &str) -> Result<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                Ok(self.try_get(col)?)
            }
            fn blob(&self, col: &str) -> Result<Vec<u8>> {
                Ok(self.try_get(col)?)
            }
        }
    };
}
meta_row!(SqliteRow);
meta_row!(PgRow);

pub(super) const STREAM_COLUMNS: &str = "id, name, schema_ipc, partitions, key_columns, \
     event_time_column, watermark_delay_us, retention_us, created_at_us, schema_version, \
     archive_after_us";
/// The columns a flush writes; reads add `row_count` (see
/// [`CHUNK_READ_COLUMNS`]).
pub(super) const CHUNK_COLUMNS: &str = "stream_id, partition_no, base_offset, end_offset, \
     object_key, byte_start, byte_len, min_event_time_us, max_event_time_us, \
     min_append_time_us, max_append_time_us, schema_version";
pub(super) const CHUNK_READ_COLUMNS: &str = "stream_id, partition_no, base_offset, end_offset, \
     object_key, byte_start, byte_len, min_event_time_us, max_event_time_us, \
     min_append_time_us, max_append_time_us, schema_version, row_count";
pub(super) const SCHEMA_VERSION_COLUMNS: &str =
    "stream_id, version, schema_ipc, change, created_at_us";
pub(super) const VIEW_COLUMNS: &str = "name, dataflow, definition, checkpoint_no, \
     input_offsets, state_key, owner, epoch, lease_until_us, input_versions";
pub(super) const CONNECTOR_COLUMNS: &str = "name, kind, definition, owner, epoch, lease_until_us";
pub(super) const ROLE_COLUMNS: &str = "name, superuser, can_login, verifier, created_at_us";
pub(super) const GRANT_COLUMNS: &str = "object_kind, object_name, grantee, privilege, grantor";
pub(super) const AGENT_COLUMNS: &str =
    "agent_id, addresses, version, started_at_us, heartbeat_at_us, stopped_at_us";

pub(super) fn stream(row: &impl MetaRow) -> Result<StreamInfo> {
    let schema = decode_schema(&row.blob("schema_ipc")?)?;
    let key: Vec<String> = serde_json::from_str(&row.text("key_columns")?)
        .map_err(|e| LogError::Internal(format!("bad key_columns: {e}")))?;
    let event_time = row
        .opt_text("event_time_column")?
        .map(|column| -> Result<EventTime> {
            let delay = row.opt_int("watermark_delay_us")?.unwrap_or(0);
            Ok(EventTime {
                column,
                watermark_delay: Duration::from_micros(delay.max(0) as u64),
            })
        })
        .transpose()?;
    let retention = row
        .opt_int("retention_us")?
        .map(|r| Duration::from_micros(r.max(0) as u64));
    let archive_after = row
        .opt_int("archive_after_us")?
        .map(|r| Duration::from_micros(r.max(0) as u64));
    Ok(StreamInfo {
        id: row.int("id")?,
        created_at: row.int("created_at_us")?,
        schema_version: version(row, "schema_version")?,
        spec: StreamSpec {
            name: row.text("name")?,
            schema,
            partitions: row.int("partitions")? as u32,
            key,
            event_time,
            retention,
            archive_after,
        },
    })
}

pub(super) fn chunk(row: &impl MetaRow) -> Result<ChunkRecord> {
    let start = row.int("byte_start")?;
    let len = row.int("byte_len")?;
    Ok(ChunkRecord {
        stream_id: row.int("stream_id")?,
        partition: row.int("partition_no")? as u32,
        base_offset: row.int("base_offset")? as u64,
        end_offset: row.int("end_offset")? as u64,
        object: row.text("object_key")?,
        byte_range: start as u64..(start + len) as u64,
        event_time: TimeBounds {
            min: row.opt_int("min_event_time_us")?,
            max: row.opt_int("max_event_time_us")?,
        },
        append_time: TimeBounds {
            min: Some(row.int("min_append_time_us")?),
            max: Some(row.int("max_append_time_us")?),
        },
        schema_version: version(row, "schema_version")?,
        sparse_rows: row.opt_int("row_count")?.map(|n| n.max(0) as u64),
    })
}

/// A schema version number column.
fn version(row: &impl MetaRow, col: &str) -> Result<u32> {
    let v = row.int(col)?;
    u32::try_from(v).map_err(|_| LogError::Internal(format!("bad {col} {v}")))
}

pub(super) fn schema_version(row: &impl MetaRow) -> Result<SchemaVersion> {
    Ok(SchemaVersion {
        stream_id: row.int("stream_id")?,
        version: version(row, "version")?,
        schema: decode_schema(&row.blob("schema_ipc")?)?,
        change: row.text("change")?,
        created_at: row.int("created_at_us")?,
    })
}

/// A row of the partition statistics query (see the stores'
/// `partition_stats`).
pub(super) fn partition_stats(row: &impl MetaRow) -> Result<PartitionStats> {
    Ok(PartitionStats {
        partition: row.int("partition_no")? as u32,
        next_offset: row.int("next_offset")? as u64,
        first_offset: row.opt_int("first_offset")?.map(|o| o as u64),
        rows: row.int("rows_held")? as u64,
        bytes: row.int("bytes")? as u64,
        chunks: row.int("chunks")? as u64,
        last_append: row.opt_int("last_append")?,
    })
}

pub(super) fn connector(row: &impl MetaRow) -> Result<super::ConnectorRecord> {
    Ok(super::ConnectorRecord {
        name: row.text("name")?,
        kind: row.text("kind")?,
        definition: row.text("definition")?,
        lease: super::ViewLease {
            owner: row.opt_text("owner")?,
            epoch: row.int("epoch")? as u64,
            until: row.opt_int("lease_until_us")?,
        },
    })
}

pub(super) fn view(row: &impl MetaRow) -> Result<ViewRecord> {
    let checkpoint = match row.opt_int("checkpoint_no")? {
        Some(n) => Some(ViewCheckpoint {
            number: n as u64,
            input_offsets: row.text("input_offsets")?,
            state_key: row.text("state_key")?,
        }),
        None => None,
    };
    Ok(ViewRecord {
        name: row.text("name")?,
        dataflow: row.text("dataflow")?,
        definition: row.text("definition")?,
        input_versions: match row.opt_text("input_versions")? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| LogError::Internal(format!("bad input_versions: {e}")))?,
            None => Default::default(),
        },
        checkpoint,
        lease: super::ViewLease {
            owner: row.opt_text("owner")?,
            epoch: row.int("epoch")? as u64,
            until: row.opt_int("lease_until_us")?,
        },
    })
}

pub(super) fn agent(row: &impl MetaRow) -> Result<AgentRecord> {
    let addresses = serde_json::from_str(&row.text("addresses")?)
        .map_err(|e| LogError::Internal(format!("bad agent addresses: {e}")))?;
    Ok(AgentRecord {
        id: row.text("agent_id")?,
        addresses,
        version: row.text("version")?,
        started_at: row.int("started_at_us")?,
        heartbeat_at: row.int("heartbeat_at_us")?,
        stopped_at: row.opt_int("stopped_at_us")?,
    })
}

/// A producer's last acknowledgement as stored: `[[partition, base, rows]…]`.
pub(super) fn decode_ack(ack: &str) -> Result<Vec<super::AckPart>> {
    let parts: Vec<(u32, u64, u64)> =
        serde_json::from_str(ack).map_err(|e| LogError::Internal(format!("bad last_ack: {e}")))?;
    Ok(parts
        .into_iter()
        .map(|(partition, base_offset, rows)| super::AckPart {
            partition,
            base_offset,
            rows,
        })
        .collect())
}

/// The acknowledgement of one append of a flush, as stored.
pub(super) fn encode_ack(c: &super::FlushCommit, a: &super::NewAppend, bases: &[u64]) -> String {
    let ack: Vec<(u32, u64, u64)> = a
        .slices
        .iter()
        .map(|&(ci, first, rows)| (c.chunks[ci].partition, bases[ci] + first, rows))
        .collect();
    serde_json::to_string(&ack).expect("integers encode")
}

/// An agent's addresses as stored (a JSON object).
pub(super) fn encode_addresses(a: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(a).expect("strings encode")
}

/// A producer's committed state, as both stores read it.
pub(super) struct StoredProducer {
    pub last_sequence: u64,
    pub last_ack: String,
    pub epoch: u64,
}

/// Why an append by producer `p` cannot be committed over its `stored`
/// state, if it cannot: a fenced epoch, or a sequence already committed.
pub(super) fn producer_rejection(
    p: &super::ProducerSeq,
    stored: Option<&StoredProducer>,
) -> Result<Option<super::Rejection>> {
    let Some(s) = stored else {
        return Ok(sequence_rejection(p, None));
    };
    if let Some(epoch) = p.epoch
        && epoch < s.epoch
    {
        return Ok(Some(super::Rejection::Fenced {
            epoch,
            current: s.epoch,
        }));
    }
    match sequence_rejection(p, Some(s.last_sequence)) {
        Some(super::Rejection::Duplicate { .. }) if p.sequence == s.last_sequence => {
            Ok(Some(super::Rejection::Duplicate {
                previous: Some(decode_ack(&s.last_ack)?),
            }))
        }
        r => Ok(r),
    }
}

/// Why an append by producer `p` cannot follow its `last` committed
/// sequence (`None`: a new producer), if it cannot: a sequence already
/// committed (a duplicate, its offsets unknown here), or a first sequence
/// that leaves a gap.
pub(super) fn sequence_rejection(
    p: &super::ProducerSeq,
    last: Option<u64>,
) -> Option<super::Rejection> {
    if let Some(last) = last
        && p.sequence <= last
    {
        return Some(super::Rejection::Duplicate { previous: None });
    }
    let expected = last.map_or(0, |l| l + 1);
    match p.first {
        Some(first) if first != expected => Some(super::Rejection::OutOfOrder {
            expected,
            got: first,
        }),
        _ => None,
    }
}

pub(super) fn stored_producer(row: &impl MetaRow) -> Result<StoredProducer> {
    Ok(StoredProducer {
        last_sequence: row.int("last_sequence")? as u64,
        last_ack: row.text("last_ack")?,
        epoch: row.int("epoch")? as u64,
    })
}

/// A group's row and its members' rows, as both stores read them.
pub(super) fn stored_group(
    group: &impl MetaRow,
    members: &[impl MetaRow],
) -> Result<crate::groups::rules::StoredGroup> {
    use crate::groups::rules::{StoredGroup, StoredMember, Strategy};
    let strategy = match group.text("strategy")?.as_str() {
        "round_robin" => Strategy::RoundRobin,
        _ => Strategy::Range,
    };
    let mut out = StoredGroup {
        stream_id: group.int("stream_id")?,
        partitions: group.int("partitions")? as u32,
        strategy,
        generation: group.int("generation")? as u64,
        members: Default::default(),
    };
    for m in members {
        out.members.insert(
            m.text("member_id")?,
            StoredMember {
                heartbeat_at: m.int("heartbeat_at_us")?,
                timeout: std::time::Duration::from_micros(m.int("timeout_us")?.max(0) as u64),
            },
        );
    }
    Ok(out)
}

pub(super) fn role(row: &impl MetaRow) -> Result<super::RoleRecord> {
    Ok(super::RoleRecord {
        name: row.text("name")?,
        superuser: row.int("superuser")? != 0,
        login: row.int("can_login")? != 0,
        verifier: row.opt_text("verifier")?,
        created_at: row.int("created_at_us")?,
    })
}

pub(super) fn grant(row: &impl MetaRow) -> Result<super::GrantRecord> {
    Ok(super::GrantRecord {
        object_kind: row.text("object_kind")?,
        object_name: row.text("object_name")?,
        grantee: row.text("grantee")?,
        privilege: row.text("privilege")?,
        grantor: row.text("grantor")?,
    })
}

pub(super) fn strategy_name(s: crate::groups::rules::Strategy) -> &'static str {
    match s {
        crate::groups::rules::Strategy::Range => "range",
        crate::groups::rules::Strategy::RoundRobin => "round_robin",
    }
}
