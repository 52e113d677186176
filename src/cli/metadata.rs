//! `streamhouse metadata backups|restore`: the backups of the embedded
//! metadata store in the object store, and restoring one as the metadata
//! file of a data directory that lost its own (or rebuilding it from the
//! objects alone), rolled forward with the objects written since, then
//! comparing the restored index with the objects in the store. Both work on the stores
//! directly, with the server stopped for a restore (the data directory's
//! lock is taken); a running server takes backups (`POST
//! /v1/metadata/backups`, or on its schedule).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use streamhouse_log::{Clock, backup, definitions, recover};
use streamhouse_log::{DataDir, MetadataStore, SqliteMetadata, Store};

/// Backups of the embedded metadata store.
#[derive(Debug, Subcommand)]
pub enum MetadataCommand {
    /// List the backups in the object store, oldest first
    ///
    /// Example: streamhouse metadata backups --data-dir /var/lib/streamhouse
    Backups(Stores),

    /// Write a backup (the newest, or --backup) as the metadata file, then
    /// add what the objects written since hold; with no backup (or
    /// --from-objects), rebuild the streams and their chunks from the
    /// objects alone. The server must be stopped and the file (with its
    /// -wal) moved aside
    ///
    /// Example: streamhouse metadata restore --data-dir /var/lib/streamhouse
    Restore {
        #[command(flatten)]
        stores: Stores,
        /// The backup's key or file name (from `metadata backups`)
        #[arg(long, value_name = "KEY")]
        backup: Option<String>,
        /// Rebuild from the objects alone, even when backups exist
        #[arg(long)]
        from_objects: bool,
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
        MetadataCommand::Restore {
            stores,
            backup,
            from_objects,
        } => {
            let store = stores.store()?;
            let target = stores.metadata_file()?;
            // A running server holds the lock; a restore under it is refused.
            let _dir = DataDir::open(&stores.data_dir).with_context(|| {
                format!(
                    "cannot lock {}: stop the server first",
                    stores.data_dir.display()
                )
            })?;
            if from_objects && backup.is_some() {
                bail!("--from-objects rebuilds without a backup: leave out --backup");
            }
            let none = !from_objects && backup.is_none() && backup::list(&store).await?.is_empty();
            if from_objects || none {
                backup::ensure_absent(&target).await?;
                if none {
                    println!("no backup under {}/", backup::PREFIX);
                }
                println!(
                    "rebuilding the index from the objects alone as {}",
                    target.display()
                );
            } else {
                let b = backup::restore(&store, backup.as_deref(), &target).await?;
                println!(
                    "restored {} (taken {}) as {}",
                    b.key,
                    time(b.taken_at),
                    target.display()
                );
            }
            let meta = SqliteMetadata::open(&target).await?;
            let now = streamhouse_log::SystemClock.now_micros();
            let recovered = recover::roll_forward(&meta, &store, now).await?;
            print_recovered(&recovered);
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
                    "{} data objects are not in the index (flushes that never committed, \
                     rewrites not needed, objects without a manifest); the server's upkeep \
                     deletes them 10 minutes after they were written",
                    checked.unknown_objects
                );
            }
        }
    }
    Ok(())
}

fn print_recovered(r: &recover::Recovered) {
    if !r.definitions {
        println!(
            "no stream definitions under {}/: streams left as they were",
            definitions::PREFIX
        );
    }
    for (what, names) in [
        ("made", &r.streams_made),
        ("changed", &r.streams_changed),
        ("dropped", &r.streams_dropped),
    ] {
        if !names.is_empty() {
            println!("streams {what}: {}", names.join(", "));
        }
    }
    println!(
        "rolled forward: {} objects read, {} chunks ({} rows) added, {} chunks replaced by \
         their rewrites; left out: {} chunks of flushes that never committed, {} rewrites \
         not needed, {} chunks of dropped streams, {} objects without a manifest",
        r.objects_read,
        r.chunks_added,
        r.rows_added,
        r.chunks_replaced,
        r.chunks_superseded,
        r.rewrites_left,
        r.chunks_of_unknown_streams,
        r.objects_without_manifest
    );
    for (stream, partition, offsets) in &r.gaps {
        println!(
            "no object holds stream {stream} partition {partition} offsets {}..{}",
            offsets.start, offsets.end
        );
    }
}
