//! The embedded metadata store: SQLite in the data directory.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a committed flush
//! survives a crash of the process or the machine. Writes are serialized by
//! an in-process mutex and run as `BEGIN IMMEDIATE` transactions; the data
//! directory lock (see `crate::log`) keeps other processes out. Reads use the
//! pool concurrently and see only committed state.
//!
//! The store's operations are the shared ones (`super::queries`) over this
//! [`Backend`]; the flush commit, one statement per row, is `flush`.

mod flush;
mod restore;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::{LogError, Result};
use crate::metadata::sql::Backend;
use crate::metadata::{CommitOutcome, FlushCommit, MetadataStore};

/// SQLite-backed [`MetadataStore`].
#[derive(Debug)]
pub struct SqliteMetadata {
    pool: SqlitePool,
    /// Held by every write, for as long as it runs.
    write: Arc<Mutex<()>>,
}

impl SqliteMetadata {
    /// Opens (creating if missing) the database file at `path` and applies
    /// pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::connect_file(opts).await
    }

    /// Opens a `sqlite://…` URL (e.g. `sqlite:///var/lib/sh/meta.db`).
    pub async fn open_url(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        Self::connect_file(opts).await
    }

    /// A private in-memory database (tests): one connection, or each
    /// connection would see a database of its own.
    pub async fn open_in_memory() -> Result<Self> {
        let opts = base_options(SqliteConnectOptions::from_str("sqlite::memory:")?);
        let pool = pool_options(1).connect_with(opts).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            write: Arc::default(),
        })
    }

    async fn connect_file(opts: SqliteConnectOptions) -> Result<Self> {
        let opts = base_options(opts);
        // Openers of one file migrate one at a time (SQLite's migrator takes
        // no lock of its own): an exclusive lock on a file beside it.
        let lock_path = {
            let mut p = opts.get_filename().as_os_str().to_owned();
            p.push(".migrate-lock");
            std::path::PathBuf::from(p)
        };
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let f = std::fs::File::create(&lock_path)?;
            f.lock()?;
            Ok(f)
        })
        .await
        .map_err(|e| LogError::Internal(format!("migration lock: {e}")))??;
        // One bootstrap connection switches the file to WAL (a persistent
        // setting) and migrates. Pooled connections never set the journal
        // mode: doing so takes an exclusive lock that busy_timeout cannot
        // wait on, so concurrent opens would fail with "database is locked".
        let mut boot =
            SqliteConnection::connect_with(&opts.clone().journal_mode(SqliteJournalMode::Wal))
                .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run_direct(None, &mut boot, false)
            .await?;
        boot.close().await?;
        drop(lock);
        let pool = pool_options(4).connect_with(opts).await?;
        Ok(Self {
            pool,
            write: Arc::default(),
        })
    }
}

/// Settings every connection gets.
fn base_options(opts: SqliteConnectOptions) -> SqliteConnectOptions {
    opts.synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
}

fn pool_options(max: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
}

/// A connection or transaction that holds the write lock while it lives.
pub(super) struct Serialized<T> {
    /// Dropped first: a transaction rolls back before the lock is free.
    inner: T,
    _write: OwnedMutexGuard<()>,
}

impl<T: Deref> Deref for Serialized<T> {
    type Target = T::Target;
    fn deref(&self) -> &T::Target {
        &self.inner
    }
}

impl<T: DerefMut> DerefMut for Serialized<T> {
    fn deref_mut(&mut self) -> &mut T::Target {
        &mut self.inner
    }
}

#[async_trait]
impl Backend for SqliteMetadata {
    type Conn = SqliteConnection;
    type Reader = PoolConnection<Sqlite>;
    type Writer = Serialized<Transaction<'static, Sqlite>>;
    type Single = Serialized<PoolConnection<Sqlite>>;

    /// One writer at a time: reading a row is enough to keep it.
    const FOR_UPDATE: &'static str = "";
    const GREATEST: &'static str = "max";

    async fn reader(&self) -> Result<Self::Reader> {
        Ok(self.pool.acquire().await?)
    }

    async fn writer(&self) -> Result<Self::Writer> {
        let write = self.write.clone().lock_owned().await;
        Ok(Serialized {
            inner: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _write: write,
        })
    }

    async fn single(&self) -> Result<Self::Single> {
        let write = self.write.clone().lock_owned().await;
        Ok(Serialized {
            inner: self.pool.acquire().await?,
            _write: write,
        })
    }

    async fn commit(w: Self::Writer) -> Result<()> {
        Ok(w.inner.commit().await?)
    }

    async fn commit_chunks(&self, c: &FlushCommit) -> Result<CommitOutcome> {
        flush::commit(self, c).await
    }
}

#[async_trait]
impl MetadataStore for SqliteMetadata {
    async fn close(&self) {
        self.pool.close().await;
    }

    /// `VACUUM INTO`: one read transaction copies the committed pages, so
    /// the copy is consistent and writers go on meanwhile (WAL).
    async fn snapshot_into(&self, file: &Path) -> Result<()> {
        let target = file
            .to_str()
            .ok_or_else(|| LogError::InvalidArgument(format!("{} is not UTF-8", file.display())))?;
        let mut c = self.pool.acquire().await?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&mut *c)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::StreamStore;

    /// A reopened file must not report "database is locked" while the pool
    /// opens its connections under concurrent use (one process holds the
    /// file: the data-directory lock keeps others out).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopening_under_concurrent_use_never_reports_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        for _ in 0..10 {
            let m = Arc::new(SqliteMetadata::open(&path).await.unwrap());
            let reads = (0..8).map(|_| {
                let m = m.clone();
                tokio::spawn(async move { m.streams().await })
            });
            for r in futures::future::join_all(reads).await {
                r.unwrap().unwrap();
            }
            m.close().await;
        }
    }
}
