//! Stream definitions kept in the object store beside the data, so the
//! streams can be made again from the objects alone when the metadata
//! store is lost (see [`crate::recover`]).
//!
//! Each stream has one JSON object, `metadata/streams/<id>.json`: its id,
//! name, partitions, key, event time, options and every schema version
//! (each schema as its Arrow IPC bytes, in hex). The log writes it when a
//! stream is made or changed and deletes it when the stream is dropped;
//! the upkeep writes any that are missing (a write that failed, or
//! streams made before definitions were kept). The metadata store stays
//! the truth while it lives: these are only read by recovery.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::store::Store;
use crate::stream::{
    EventTime, SchemaVersion, StreamId, StreamInfo, StreamSpec, decode_schema, encode_schema,
};

/// Where definitions are kept.
pub const PREFIX: &str = "metadata/streams";

/// One stream as kept in the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub id: StreamId,
    pub name: String,
    pub partitions: u32,
    pub key: Vec<String>,
    #[serde(default)]
    pub event_time: Option<(String, u64)>,
    #[serde(default)]
    pub retention_us: Option<u64>,
    #[serde(default)]
    pub archive_after_us: Option<u64>,
    pub created_at: Micros,
    /// Oldest first; the last is the current one.
    pub versions: Vec<VersionDefinition>,
}

/// One schema version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDefinition {
    pub version: u32,
    /// The schema's Arrow IPC bytes, in hex.
    pub schema: String,
    pub change: String,
    pub created_at: Micros,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Definition {
    /// A stream and its schema versions as kept.
    pub fn of(info: &StreamInfo, versions: &[SchemaVersion]) -> Result<Definition> {
        let spec = &info.spec;
        Ok(Definition {
            id: info.id,
            name: spec.name.clone(),
            partitions: spec.partitions,
            key: spec.key.clone(),
            event_time: spec
                .event_time
                .as_ref()
                .map(|e| (e.column.clone(), micros(e.watermark_delay))),
            retention_us: spec.retention.map(micros),
            archive_after_us: spec.archive_after.map(micros),
            created_at: info.created_at,
            versions: versions
                .iter()
                .map(|v| {
                    Ok(VersionDefinition {
                        version: v.version,
                        schema: hex(&encode_schema(&v.schema)?),
                        change: v.change.clone(),
                        created_at: v.created_at,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }

    /// The stream (at its newest version) and its versions.
    pub fn to_info(&self) -> Result<(StreamInfo, Vec<SchemaVersion>)> {
        let bad = |what: &str| {
            LogError::Internal(format!(
                "the kept definition of stream {} ({}): {what}",
                self.name, self.id
            ))
        };
        let versions = self
            .versions
            .iter()
            .map(|v| {
                let bytes = unhex(&v.schema).ok_or_else(|| bad("a schema is not hex"))?;
                Ok(SchemaVersion {
                    stream_id: self.id,
                    version: v.version,
                    schema: decode_schema(&bytes)?,
                    change: v.change.clone(),
                    created_at: v.created_at,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let current = versions.last().ok_or_else(|| bad("no schema"))?;
        let mut spec = StreamSpec::new(self.name.clone(), Arc::clone(&current.schema))
            .with_partitions(self.partitions)
            .with_key(self.key.clone());
        spec.event_time = self.event_time.as_ref().map(|(column, delay)| EventTime {
            column: column.clone(),
            watermark_delay: Duration::from_micros(*delay),
        });
        spec.retention = self.retention_us.map(Duration::from_micros);
        spec.archive_after = self.archive_after_us.map(Duration::from_micros);
        let info = StreamInfo {
            id: self.id,
            spec,
            created_at: self.created_at,
            schema_version: current.version,
        };
        Ok((info, versions))
    }
}

fn path(id: StreamId) -> Path {
    Path::from(format!("{PREFIX}/{id}.json"))
}

/// Keeps `info`'s definition (replacing what was kept).
pub async fn write(store: &Store, info: &StreamInfo, versions: &[SchemaVersion]) -> Result<()> {
    let json = serde_json::to_vec(&Definition::of(info, versions)?)
        .map_err(|e| LogError::Internal(format!("stream definition: {e}")))?;
    store
        .object_store()
        .put(&path(info.id), PutPayload::from(json))
        .await?;
    Ok(())
}

/// Forgets stream `id`'s definition.
pub async fn delete(store: &Store, id: StreamId) -> Result<()> {
    match store.object_store().delete(&path(id)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The ids of the streams whose definitions are kept.
pub async fn ids(store: &Store) -> Result<Vec<StreamId>> {
    let listed: Vec<object_store::ObjectMeta> = store
        .object_store()
        .list(Some(&Path::from(PREFIX)))
        .try_collect()
        .await?;
    let mut ids: Vec<StreamId> = listed
        .iter()
        .filter_map(|o| o.location.filename()?.strip_suffix(".json")?.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Every kept definition, by id.
pub async fn read_all(store: &Store) -> Result<Vec<Definition>> {
    let mut out = Vec::new();
    for id in ids(store).await? {
        let bytes = store.get(&path(id)).await?;
        let d: Definition = serde_json::from_slice(&bytes)
            .map_err(|e| LogError::Internal(format!("the kept definition of stream {id}: {e}")))?;
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    #[tokio::test]
    async fn a_definition_comes_back_as_it_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_local(dir.path()).unwrap();
        let v1 = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let v2 = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", crate::stream::timestamp_type(), true),
        ]));
        let spec = StreamSpec::new("s", v2.clone())
            .with_partitions(3)
            .with_key(["id"])
            .with_event_time("ts", Duration::from_secs(2))
            .with_retention(Duration::from_secs(3600))
            .with_archive_after(Duration::from_secs(60));
        let info = StreamInfo {
            id: 42,
            spec,
            created_at: 7,
            schema_version: 2,
        };
        let versions = [v1, v2]
            .into_iter()
            .enumerate()
            .map(|(i, schema)| SchemaVersion {
                stream_id: 42,
                version: i as u32 + 1,
                schema,
                change: format!("change {i}"),
                created_at: 7 + i as i64,
            })
            .collect::<Vec<_>>();
        write(&store, &info, &versions).await.unwrap();
        assert_eq!(ids(&store).await.unwrap(), [42]);
        let back = read_all(&store).await.unwrap();
        assert_eq!(back[0].to_info().unwrap(), (info, versions));
        delete(&store, 42).await.unwrap();
        delete(&store, 42).await.unwrap();
        assert!(ids(&store).await.unwrap().is_empty());
        assert_eq!(unhex("0aff"), Some(vec![10, 255]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
