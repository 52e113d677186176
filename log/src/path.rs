//! Every object key the log writes or reads is built here.
//!
//! Data objects are named by a ULID, so two flushes (on one agent or many)
//! never choose the same key, and keys sort by creation time. Within one
//! process the ULIDs only grow (two keys made in the same millisecond
//! differ in their random part by one), so a sole writer's keys sort in
//! the order it wrote them — the order recovery replays them in
//! ([`crate::recover`]). Objects are written create-only: an existing key
//! means a bug or a foreign writer, never an overwrite.

use std::sync::Mutex;

use object_store::path::Path;
use ulid::{Generator, Ulid};

/// A ULID greater than every one this process made before.
fn next_ulid() -> Ulid {
    static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());
    let mut g = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    // The random part overflows only after 2^80 keys in one millisecond.
    g.generate().unwrap_or_else(|_| Ulid::new())
}

/// The key of one data object: a flush's concatenation of Arrow IPC
/// stream chunks (`.arrows`), a compacted chunk (`.arrows`), or an archive
/// chunk, one Parquet file (`.parquet`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataObjectPath(Path);

impl DataObjectPath {
    /// Folder that holds every data object.
    pub const PREFIX: &'static str = "log/data";

    /// A fresh, never-used key.
    pub fn new_unique() -> Self {
        Self(Path::from(format!(
            "{}/{}.arrows",
            Self::PREFIX,
            next_ulid()
        )))
    }

    /// A fresh, never-used key for an archive chunk (a Parquet file).
    pub fn new_archive() -> Self {
        Self(Path::from(format!(
            "{}/{}.parquet",
            Self::PREFIX,
            next_ulid()
        )))
    }

    /// Whether the object stored as `stored` is an archive chunk.
    pub fn is_archive(stored: &str) -> bool {
        stored.ends_with(".parquet")
    }

    /// The key as stored in the metadata store.
    pub fn parse(stored: &str) -> Self {
        Self(Path::from(stored))
    }

    /// The object-store path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The string recorded in chunk rows.
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

/// Folder of the objects holding transactional rows staged away from their
/// producer's agent ([`crate::metadata::SharedStagingStore`]).
pub const STAGED_PREFIX: &str = "log/staging";

/// A fresh, never-used key for staged transactional rows.
pub fn new_staged_object() -> Path {
    Path::from(format!("{STAGED_PREFIX}/{}.arrows", next_ulid()))
}

impl std::fmt::Display for DataObjectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_keys_live_under_the_data_prefix() {
        let a = DataObjectPath::new_unique();
        let b = DataObjectPath::new_unique();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("log/data/"));
        assert!(a.as_str().ends_with(".arrows"));
        assert_eq!(DataObjectPath::parse(a.as_str()), a);
        let archive = DataObjectPath::new_archive();
        assert!(archive.as_str().starts_with("log/data/"));
        assert!(DataObjectPath::is_archive(archive.as_str()));
        assert!(!DataObjectPath::is_archive(a.as_str()));
        // Keys made one after another sort in that order.
        let keys: Vec<String> = (0..1000)
            .map(|_| DataObjectPath::new_unique().as_str().to_string())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
