//! The server's backups of its embedded metadata store into the object
//! store (`streamhouse_log::backup`): on a schedule and on demand, one at
//! a time, keeping the newest few, with their outcome in metrics
//! (`streamhouse_metadata_backups_total{outcome}`,
//! `streamhouse_metadata_backup_last_success_seconds`,
//! `streamhouse_metadata_backup_bytes`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use streamhouse_log::backup::{self, Backup};
use streamhouse_log::{Log, LogError};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// Backups of one server's metadata store.
pub struct Backups {
    log: Arc<Log>,
    /// A directory on the data disk for the backup's files.
    scratch: PathBuf,
    /// How many backups are kept.
    keep: usize,
    /// Held while a backup runs: one at a time.
    running: Mutex<()>,
}

impl Backups {
    pub fn new(log: Arc<Log>, scratch: PathBuf, keep: usize) -> Backups {
        Backups {
            log,
            scratch,
            keep: keep.max(1),
            running: Mutex::new(()),
        }
    }

    /// Takes a backup now (after one already running), then deletes all
    /// but the newest kept.
    pub async fn take(&self) -> Result<Backup, LogError> {
        let _one = self.running.lock().await;
        let store = self.log.store();
        let taken = backup::take(self.log.metadata().as_ref(), store, &self.scratch).await;
        match &taken {
            Ok(b) => {
                metrics::counter!("streamhouse_metadata_backups_total", "outcome" => "ok")
                    .increment(1);
                metrics::gauge!("streamhouse_metadata_backup_last_success_seconds")
                    .set(b.taken_at as f64 / 1e6);
                metrics::gauge!("streamhouse_metadata_backup_bytes").set(b.bytes as f64);
                info!(key = %b.key, bytes = b.bytes, "metadata backed up");
                match backup::prune(store, self.keep).await {
                    Ok(0) => {}
                    Ok(n) => info!(
                        deleted = n,
                        kept = self.keep,
                        "older metadata backups deleted"
                    ),
                    Err(e) => warn!(error = %e, "older metadata backups not deleted"),
                }
            }
            Err(e) => {
                metrics::counter!("streamhouse_metadata_backups_total", "outcome" => "failed")
                    .increment(1);
                warn!(error = %e, "metadata backup failed");
            }
        }
        taken
    }

    /// The backups in the object store, oldest first.
    pub async fn list(&self) -> Result<Vec<Backup>, LogError> {
        backup::list(self.log.store()).await
    }

    /// Takes a backup every `every`, the first one interval after it
    /// starts (a failed one is reported and tried again at the next tick);
    /// runs until aborted.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let _ = self.take().await;
        }
    }
}
