//! `streamhouse metadata backups|restore`: the backups of the embedded
//! metadata store in the object store, and restoring one as the metadata
//! file of a data directory that lost its own, then comparing the restored
//! index with the objects in the store. Both work on the stores
//! directly, with the server stopped for a restore (the data directory's
//! lock is taken); a running server takes backups (`POST
//! /v1/metadata/backups`, or on its schedule).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use streamhouse_log::backup;
use streamhouse_log::{DataDir, MetadataStore, SqliteMetadata, Store};

/// Backups of the embedded metadata store.
#[derive(Debug, Subcommand)]
pub enum MetadataCommand {
    /// List the backups in the object store, oldest first
    ///
    /// Example: streamhouse metadata backups --data-dir /var/lib/streamhouse
    Backups(Stores),

    /// Write a backup (the newest, or --backup) as the metadata file; the
    /// server must be stopped and the file (with its -wal) moved aside
    ///
    /// Example: streamhouse metadata restore --data-dir /var/lib/streamhouse
    Restore {
        #[command(flatten)]
        stores: Stores,
        /// The backup's key or file name (from `metadata backups`)
        #[arg(long, value_name = "KEY")]
        backup: Option<String>,
    },
}

/// Where the server keeps things: the same flags and defaults as
/// `streamhouse server`.
#[derive(Debug, Args)]
pub struct Stores {
    /// The server's data directory
    #[arg(
        long,
        env = "STREAMHOUSE_DATA_DIR",
        value_name = "DIR",
        default_value = "streamhouse-data"
    )]
    data_dir: PathBuf,
    /// The server's object store [default: DATA_DIR/objects]
    #[arg(long, env = "STREAMHOUSE_OBJECT_STORE", value_name = "URL")]
    object_store: Option<String>,
    /// The server's metadata file, sqlite://PATH [default:
    /// sqlite://DATA_DIR/metadata.db]
    #[arg(long, env = "STREAMHOUSE_METADATA", value_name = "URL")]
    metadata: Option<String>,
}

impl Stores {
    fn store(&self) -> anyhow::Result<Store> {
        let url = self
            .object_store
            .clone()
            .unwrap_or_else(|| self.data_dir.join("objects").display().to_string());
        Store::open(&url).with_context(|| format!("cannot open object store {url}"))
    }

    fn metadata_file(&self) -> anyhow::Result<PathBuf> {
        match &self.metadata {
            None => Ok(self.data_dir.join("metadata.db")),
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) => Ok(PathBuf::from(path)),
                None => bail!(
                    "--metadata {url}: only an embedded (sqlite://) metadata store is restored \
                     here; PostgreSQL is restored with its own tools"
                ),
            },
        }
    }
}

fn time(micros: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

pub async fn run(command: MetadataCommand) -> anyhow::Result<()> {
    match command {
        MetadataCommand::Backups(stores) => {
            let all = backup::list(&stores.store()?).await?;
            if all.is_empty() {
                eprintln!("no backups under {}/", backup::PREFIX);
            }
            for b in all {
                println!("{}\t{}\t{} bytes", b.key, time(b.taken_at), b.bytes);
            }
        }
        MetadataCommand::Restore { stores, backup } => {
            let store = stores.store()?;
            let target = stores.metadata_file()?;
            // A running server holds the lock; a restore under it is refused.
            let _dir = DataDir::open(&stores.data_dir).with_context(|| {
                format!(
                    "cannot lock {}: stop the server first",
                    stores.data_dir.display()
                )
            })?;
            let b = backup::restore(&store, backup.as_deref(), &target).await?;
            println!(
                "restored {} (taken {}) as {}",
                b.key,
                time(b.taken_at),
                target.display()
            );
            let meta = SqliteMetadata::open(&target).await?;
            let checked = backup::check(&meta, &store).await?;
            meta.close().await;
            if checked.missing.is_empty() {
                println!("every chunk the restored index lists is in the object store");
            }
            for (stream, partition, offsets) in &checked.missing {
                println!(
                    "gone since the backup (compacted, archived or expired, then collected): \
                     stream {stream} partition {partition} offsets {}..{}",
                    offsets.start, offsets.end
                );
            }
            if checked.unknown_objects > 0 {
                println!(
                    "{} data objects are not in the restored index (appends acknowledged after \
                     the backup, or flushes that failed); the server's upkeep deletes them \
                     10 minutes after they were written",
                    checked.unknown_objects
                );
            }
        }
    }
    Ok(())
}
