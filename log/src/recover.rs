//! Recovery of the embedded metadata store from the object store: the
//! index a backup left (or an empty one, with no backup) rolled forward
//! with what the objects say of themselves.
//!
//! 1. Streams, from their kept definitions ([`crate::definitions`]): made
//!    under their ids when missing, given the schema versions and options
//!    made since, and dropped when their definition is gone (dropped after
//!    the backup). With no definitions kept at all, streams are left as
//!    they are.
//! 2. Chunks, from the manifests ([`crate::manifest`]) of the data objects
//!    the index does not know, in key order (a sole writer's order, see
//!    [`crate::path`]). Per partition, from the index's end: a flushed
//!    chunk expected at the end is appended; one expected below it claims
//!    offsets a later-indexed chunk holds, so its flush never committed —
//!    it supersedes the chunks this recovery appended there (their flush
//!    failed, the writer wrote the rows again), or is skipped when the
//!    backup's index holds them. A chunk the upkeep rewrote knows its
//!    offsets: appended past the end, or put in place of the chunks it
//!    replaced when their objects are gone.
//! 3. Offsets past the end that no object holds are reported as gaps; the
//!    rows after them keep their offsets.
//!
//! Exact for a sole writer (the embedded store's one agent), with one
//! limit: a flush whose commit never happened (the process died between
//! writing its object and committing it) is told apart only where a later
//! flush wrote the same partition; at a partition's end, its rows — whose
//! appends were never acknowledged — are recovered as if committed. What the
//! metadata store alone held since the backup — consumer groups' offsets,
//! idempotent producers' sequences, views' checkpoints, users — is as the
//! backup had it (nothing, without one).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use futures::TryStreamExt;
use object_store::path::Path;

use crate::clock::Micros;
use crate::definitions;
use crate::error::Result;
use crate::manifest::{self, ManifestChunk};
use crate::metadata::sqlite::SqliteMetadata;
use crate::metadata::{ChunkRecord, ChunkStore, StreamStore};
use crate::path::DataObjectPath;
use crate::store::Store;
use crate::stream::{StreamId, StreamInfo};

/// What a recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Streams made, changed (schema versions, options) and dropped.
    pub streams_made: Vec<String>,
    pub streams_changed: Vec<String>,
    pub streams_dropped: Vec<String>,
    /// Whether stream definitions were found in the object store.
    pub definitions: bool,
    /// Data objects the index did not know, read.
    pub objects_read: usize,
    /// Chunks and rows added to the index.
    pub chunks_added: u64,
    pub rows_added: u64,
    /// Index chunks whose objects were gone, replaced by the upkeep's
    /// rewrite of them.
    pub chunks_replaced: u64,
    /// Chunks of flushes that never committed (their rows were written
    /// again later), left out.
    pub chunks_superseded: u64,
    /// Rewrites of chunks the index still holds (their objects are
    /// there), left out.
    pub rewrites_left: u64,
    /// Objects written before manifests existed, and chunks of streams
    /// with no definition (dropped), left out.
    pub objects_without_manifest: usize,
    pub chunks_of_unknown_streams: u64,
    /// Offsets no object holds: (stream, partition, offsets).
    pub gaps: Vec<(String, u32, Range<u64>)>,
}

/// One partition being rolled forward.
struct Part {
    /// The end of what the index held (what the backup had).
    indexed: u64,
    /// Chunks found for offsets past it, by base offset.
    added: BTreeMap<u64, (ChunkRecord, u64)>,
}

impl Part {
    fn end(&self) -> u64 {
        self.added
            .values()
            .next_back()
            .map_or(self.indexed, |(c, _)| c.end_offset)
    }
}

/// Rolls the index of `meta` forward with the objects in `store`; see the
/// module doc.
pub async fn roll_forward(meta: &SqliteMetadata, store: &Store, now: Micros) -> Result<Recovered> {
    let mut out = Recovered::default();
    let streams = reconcile_streams(meta, store, &mut out).await?;

    let listed: Vec<object_store::ObjectMeta> = store
        .object_store()
        .list(Some(&Path::from(DataObjectPath::PREFIX)))
        .try_collect()
        .await?;
    let mut objects: Vec<(String, u64)> = listed
        .into_iter()
        .map(|o| (o.location.to_string(), o.size))
        .collect();
    objects.sort();
    let present: HashSet<String> = objects.iter().map(|(k, _)| k.clone()).collect();

    let mut parts: BTreeMap<(StreamId, u32), Part> = BTreeMap::new();
    for id in streams.keys() {
        for (p, end) in meta.partition_ends(*id).await?.into_iter().enumerate() {
            parts.insert(
                (*id, p as u32),
                Part {
                    indexed: end,
                    added: BTreeMap::new(),
                },
            );
        }
    }
    for (key, size) in &objects {
        if meta.knows_object(key).await? {
            continue;
        }
        let Some(described) = manifest::read(store, key, *size).await? else {
            out.objects_without_manifest += 1;
            continue;
        };
        out.objects_read += 1;
        for c in described.chunks {
            let Some(part) = parts.get_mut(&(c.stream, c.partition)) else {
                out.chunks_of_unknown_streams += 1;
                continue;
            };
            let record = record(&c, key, *size);
            if c.exact {
                place_rewrite(meta, &present, part, record, *size, &mut out).await?;
            } else {
                place_flushed(part, record, *size, &mut out);
            }
        }
    }

    let mut all = Vec::new();
    for ((id, partition), part) in parts {
        let mut prev = (part.indexed > 0).then_some(part.indexed);
        for (c, _) in part.added.values() {
            if let Some(p) = prev.filter(|&p| p < c.base_offset) {
                let name = streams.get(&id).map(|s| s.name().to_string());
                out.gaps
                    .push((name.unwrap_or_default(), partition, p..c.base_offset));
            }
            prev = Some(c.end_offset);
            out.chunks_added += 1;
            out.rows_added += c.rows();
        }
        all.extend(part.added.into_values());
    }
    meta.restore_chunks(&all, now).await?;
    Ok(out)
}

/// The index row of manifest chunk `c` of object `key`.
fn record(c: &ManifestChunk, key: &str, size: u64) -> ChunkRecord {
    let byte_range = match DataObjectPath::is_archive(key) {
        true => 0..size,
        false => c.byte_range(),
    };
    ChunkRecord {
        stream_id: c.stream,
        partition: c.partition,
        base_offset: c.offsets[0],
        end_offset: c.offsets[1],
        object: key.to_string(),
        byte_range,
        event_time: c.event_time(),
        append_time: c.append_time(),
        schema_version: c.schema_version,
        sparse_rows: c.sparse_rows,
    }
}

/// A flushed chunk, at the base offset its writer expected.
fn place_flushed(part: &mut Part, c: ChunkRecord, size: u64, out: &mut Recovered) {
    if c.base_offset < part.indexed {
        // The index holds those offsets from another object.
        out.chunks_superseded += 1;
        return;
    }
    if c.base_offset < part.end() {
        // Chunks found here from that offset on were flushes that never
        // committed: the writer wrote their rows again, from here.
        let before = part.added.len();
        part.added.retain(|_, (a, _)| a.end_offset <= c.base_offset);
        out.chunks_superseded += (before - part.added.len()) as u64;
    }
    part.added.insert(c.base_offset, (c, size));
}

/// A chunk the upkeep rewrote (compacted, archived), with its offsets.
async fn place_rewrite(
    meta: &SqliteMetadata,
    present: &HashSet<String>,
    part: &mut Part,
    c: ChunkRecord,
    size: u64,
    out: &mut Recovered,
) -> Result<()> {
    let range = c.base_offset..c.end_offset;
    if range.start >= part.indexed {
        // Past the index: it fills offsets nothing found holds, or takes
        // the place of the chunks found that it rewrote.
        let overlapping: Vec<&ChunkRecord> = part
            .added
            .values()
            .map(|(a, _)| a)
            .filter(|a| a.base_offset < range.end && a.end_offset > range.start)
            .collect();
        if overlapping.is_empty() {
            part.added.insert(range.start, (c, size));
        } else if tiles(&overlapping, &range) {
            let gone: Vec<u64> = overlapping.iter().map(|a| a.base_offset).collect();
            for base in &gone {
                part.added.remove(base);
            }
            out.chunks_replaced += gone.len() as u64;
            part.added.insert(range.start, (c, size));
        } else {
            out.rewrites_left += 1;
        }
        return Ok(());
    }
    if range.end > part.indexed {
        out.rewrites_left += 1;
        return Ok(());
    }
    // It rewrote chunks of the index: it takes their place when their
    // objects are gone.
    let old = meta
        .chunks_by_offset(c.stream_id, c.partition, range.clone())
        .await?;
    let refs: Vec<&ChunkRecord> = old.iter().collect();
    if tiles(&refs, &range) && old.iter().any(|o| !present.contains(&o.object)) {
        let at = c.append_time.max.unwrap_or(0);
        if meta.replace_chunks(&old, &c, size, at).await? {
            out.chunks_replaced += old.len() as u64;
        }
    } else {
        out.rewrites_left += 1;
    }
    Ok(())
}

/// Whether `chunks` (by offset) hold exactly the offsets `range`.
fn tiles(chunks: &[&ChunkRecord], range: &Range<u64>) -> bool {
    chunks.first().map(|c| c.base_offset) == Some(range.start)
        && chunks.last().map(|c| c.end_offset) == Some(range.end)
        && chunks
            .windows(2)
            .all(|w| w[0].end_offset == w[1].base_offset)
}

/// Step 1 of the module doc: the index's streams made to match the kept
/// definitions; every stream after it, by id.
async fn reconcile_streams(
    meta: &SqliteMetadata,
    store: &Store,
    out: &mut Recovered,
) -> Result<HashMap<StreamId, StreamInfo>> {
    let kept = definitions::read_all(store).await?;
    out.definitions = !kept.is_empty();
    if kept.is_empty() {
        return Ok(meta
            .streams()
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect());
    }
    let wanted: HashMap<StreamId, _> = kept
        .iter()
        .map(|d| Ok((d.id, d.to_info()?)))
        .collect::<Result<_>>()?;
    for s in meta.streams().await? {
        let same = wanted
            .get(&s.id)
            .is_some_and(|(w, _)| w.spec.name == s.spec.name);
        if !same {
            meta.drop_stream(s.name()).await?;
            out.streams_dropped.push(s.name().to_string());
        }
    }
    let indexed: HashMap<StreamId, StreamInfo> = meta
        .streams()
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    for d in &kept {
        let (info, versions) = &wanted[&d.id];
        let Some(have) = indexed.get(&d.id) else {
            meta.restore_stream(info, versions).await?;
            out.streams_made.push(info.spec.name.clone());
            continue;
        };
        let mut changed = false;
        for v in versions.iter().filter(|v| v.version > have.schema_version) {
            meta.evolve_stream(
                &info.spec.name,
                v.version - 1,
                &v.schema,
                &v.change,
                v.created_at,
            )
            .await?;
            changed = true;
        }
        if (have.spec.retention, have.spec.archive_after)
            != (info.spec.retention, info.spec.archive_after)
        {
            meta.set_stream_options(
                &info.spec.name,
                info.spec.retention,
                info.spec.archive_after,
            )
            .await?;
            changed = true;
        }
        if changed {
            out.streams_changed.push(info.spec.name.clone());
        }
    }
    Ok(meta
        .streams()
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect())
}

/// Whether the index of `meta` looks lost: it has no stream while the
/// object store keeps definitions of some (see [`crate::definitions`]),
/// so starting on it would leave their rows unindexed, and the upkeep
/// would delete them as garbage. How many definitions are kept, if so.
pub async fn index_lost(
    meta: &dyn crate::metadata::MetadataStore,
    store: &Store,
) -> Result<Option<usize>> {
    if !meta.streams().await?.is_empty() {
        return Ok(None);
    }
    let kept = definitions::ids(store).await?.len();
    Ok((kept > 0).then_some(kept))
}
