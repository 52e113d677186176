//! A stream's schema versions on [`Log`]: changing the declared columns
//! (the next version) and reading the stream as it was at a version; and
//! changing its options (retention, archive).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Log;
use crate::error::{LogError, Result};
use crate::evolve::SchemaChange;
use crate::stream::{StreamInfo, StreamKind};

impl Log {
    /// Changes a user's stream's declared columns (see [`crate::evolve`]):
    /// `changes`, in order, make its next schema version (one version
    /// however many there are, or none of them), recorded with `text`
    /// (what made it, for listings). Chunks are not rewritten: rows already
    /// written are read through the new version (an added column as its
    /// default or NULL, a dropped one hidden, a widened one cast); appends
    /// from now on carry the new columns. Another change first:
    /// [`LogError::SchemaChanged`].
    pub async fn alter_stream(
        &self,
        name: &str,
        changes: &[SchemaChange],
        text: &str,
    ) -> Result<Arc<StreamInfo>> {
        if StreamKind::of(name).is_internal() {
            return Err(LogError::InternalStream(name.to_string()));
        }
        let current = self.stream(name).await?;
        let mut spec = current.spec.clone();
        for change in changes {
            spec.schema = Arc::new(crate::evolve::apply(&spec, change)?);
        }
        let evolved = self
            .meta
            .evolve_stream(
                name,
                current.schema_version,
                &spec.schema,
                text,
                self.clock.now_micros(),
            )
            .await;
        match evolved {
            Ok(info) => {
                let info = Arc::new(info);
                self.streams
                    .write()
                    .await
                    .insert(name.to_string(), info.clone());
                self.schemas_epoch.fetch_add(1, Ordering::AcqRel);
                self.keep_definition(&info).await;
                Ok(info)
            }
            Err(e) => {
                // Ours may have been stale: read it again next time.
                self.streams.write().await.remove(name);
                Err(e)
            }
        }
    }

    /// Sets a user's stream's `retention` and `archive_after` (`None`:
    /// keep everything; keep every chunk as written). The upkeep of every
    /// agent reads them afresh each round.
    pub async fn set_stream_options(
        &self,
        name: &str,
        retention: Option<std::time::Duration>,
        archive_after: Option<std::time::Duration>,
    ) -> Result<Arc<StreamInfo>> {
        if StreamKind::of(name).is_internal() {
            return Err(LogError::InternalStream(name.to_string()));
        }
        let set = self
            .meta
            .set_stream_options(name, retention, archive_after)
            .await;
        // Read it again next time, whatever happened.
        self.streams.write().await.remove(name);
        let info = Arc::new(set?);
        self.keep_definition(&info).await;
        Ok(info)
    }

    /// Stream `name` as it was at schema version `version`: what a view
    /// made against that version reads through. Versions never change, so
    /// this is the same whenever it is asked.
    pub async fn stream_at(&self, name: &str, version: u32) -> Result<Arc<StreamInfo>> {
        let current = self.stream(name).await?;
        if current.schema_version == version {
            return Ok(current);
        }
        let old = self
            .meta
            .schema_versions(current.id)
            .await?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| {
                LogError::InvalidArgument(format!(
                    "stream \"{name}\" has no schema version {version}"
                ))
            })?;
        let mut info = current.as_ref().clone();
        info.spec.schema = old.schema;
        info.schema_version = version;
        Ok(Arc::new(info))
    }
}
