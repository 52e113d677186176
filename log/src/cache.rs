//! Decoded recent chunks, in memory.
//!
//! The writer puts every chunk it just committed here, already decoded (it
//! had the batches before encoding), so readers at the tail on the same agent
//! never GET. Readers add what they fetch. Entries are keyed by object key
//! and byte offset, which never change meaning: objects are immutable.

use std::sync::Arc;

use arrow::array::RecordBatch;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Key of one chunk: (object key, first byte).
pub type ChunkKey = (Arc<str>, u64);

/// A decoded chunk, in chunk schema (declared columns + `_timestamp`).
pub type CachedChunk = Arc<Vec<RecordBatch>>;

/// What an entry costs beyond its arrays' buffers: its key, the cache's
/// slot and the batch structs with their schema (an estimate; it keeps a
/// cache of many tiny chunks from holding far more than its capacity).
const ENTRY_OVERHEAD: u64 = 256;
const BATCH_OVERHEAD: u64 = 512;

#[derive(Clone)]
struct ByBytes;

impl Weighter<ChunkKey, CachedChunk> for ByBytes {
    fn weight(&self, key: &ChunkKey, val: &CachedChunk) -> u64 {
        let arrays: u64 = val.iter().map(|b| b.get_array_memory_size() as u64).sum();
        arrays + ENTRY_OVERHEAD + key.0.len() as u64 + BATCH_OVERHEAD * val.len() as u64
    }
}

/// A byte-bounded cache of decoded chunks.
pub struct ChunkCache {
    cache: Cache<ChunkKey, CachedChunk, ByBytes>,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("weight", &self.cache.weight())
            .finish()
    }
}

impl ChunkCache {
    /// A cache holding up to `capacity_bytes` of decoded batches.
    pub fn new(capacity_bytes: u64) -> Self {
        // Estimated item count only sizes internal tables.
        let items = (capacity_bytes / (256 * 1024)).clamp(16, 1 << 16) as usize;
        // Both series exist from the start (a ratio needs both).
        metrics::counter!(crate::metrics::CACHE_HITS).increment(0);
        metrics::counter!(crate::metrics::CACHE_MISSES).increment(0);
        Self {
            cache: Cache::with_weighter(items, capacity_bytes.max(1), ByBytes),
        }
    }

    /// The decoded chunk, if cached.
    pub fn get(&self, key: &ChunkKey) -> Option<CachedChunk> {
        let hit = self.cache.get(key);
        match hit {
            Some(_) => metrics::counter!(crate::metrics::CACHE_HITS).increment(1),
            None => metrics::counter!(crate::metrics::CACHE_MISSES).increment(1),
        }
        hit
    }

    /// Caches a decoded chunk.
    pub fn insert(&self, key: ChunkKey, chunk: CachedChunk) {
        self.cache.insert(key, chunk);
    }

    /// Bytes currently held.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}
