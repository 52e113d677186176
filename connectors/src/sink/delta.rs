//! A Delta Lake sink's table, at the sink's path (`file:///…` or
//! `s3://bucket/prefix`): the stream's declared columns with `_partition`,
//! `_offset` and `_timestamp`, made on the first commit from the rows'
//! columns.
//!
//! Each stream partition commits its rows on its own, and each commit
//! carries a Delta application transaction (`txn` action) whose app id is
//! `streamhouse.<sink>.p<partition>` and whose version is the end of the
//! offsets it covers — in the same atomic commit as the files. A starting
//! partition reads its app id's version back and goes on from there, so a
//! commit retried after a crash writes nothing twice; two runs of one sink
//! committing the same partition conflict (Delta refuses a concurrent
//! commit of the same app id), and the loser reads the version again.
//! Commits use create-only PUTs of the log entry (S3 `If-None-Match`, a
//! hard link locally), as Delta's own writers do.

use std::sync::{Arc, Once};

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, StructType, Transaction};
use deltalake_core::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::writer::{DeltaWriter, RecordBatchWriter};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use url::Url;

use super::{Result, SinkError};

impl From<DeltaTableError> for SinkError {
    fn from(e: DeltaTableError) -> Self {
        SinkError::Delta(e.to_string())
    }
}

/// Delta's log store for `s3://` tables: its default one (create-only
/// PUTs of log entries), which this object store version supports on S3.
#[derive(Debug)]
struct S3LogStores;

impl LogStoreFactory for S3LogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Where a Delta sink's table is.
#[derive(Clone)]
pub(super) struct Location {
    url: Url,
    /// The store "/" of which is the root of the URL's scheme (the bucket,
    /// the file system).
    root: Arc<dyn ObjectStore>,
}

impl Location {
    pub fn new(path: &str) -> Result<Location> {
        let bad = |why: String| SinkError::Invalid(format!("sink path {path}: {why}"));
        let url = Url::parse(path).map_err(|e| bad(e.to_string()))?;
        let root: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                std::fs::create_dir_all(url.path()).map_err(|e| bad(e.to_string()))?;
                Arc::new(LocalFileSystem::new())
            }
            "s3" => {
                static REGISTERED: Once = Once::new();
                REGISTERED.call_once(|| {
                    logstore_factories().insert(
                        Url::parse("s3://").expect("a scheme URL"),
                        Arc::new(S3LogStores),
                    );
                });
                let bucket = url.host_str().ok_or_else(|| bad("no bucket".into()))?;
                Arc::new(
                    AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            other => return Err(bad(format!("a Delta table is not kept at {other}://"))),
        };
        Ok(Location { url, root })
    }

    fn builder(&self) -> Result<DeltaTableBuilder> {
        Ok(DeltaTableBuilder::from_url(self.url.clone())?
            .with_storage_backend(self.root.clone(), self.url.clone()))
    }

    /// The table, or `None` when none was made yet.
    pub async fn load(&self) -> Result<Option<DeltaTable>> {
        match self.builder()?.load().await {
            Ok(t) => Ok(Some(t)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The table, made with `schema`'s columns if there is none yet (two
    /// partitions making it at once: one makes it, both load it).
    pub async fn load_or_create(&self, schema: &SchemaRef, stream: &str) -> Result<DeltaTable> {
        if let Some(t) = self.load().await? {
            return Ok(t);
        }
        let kernel: StructType = delta_schema(schema).as_ref().try_into_kernel()?;
        let made = CreateBuilder::new()
            .with_log_store(self.builder()?.build_storage()?)
            .with_table_name(stream)
            .with_comment(format!("stream {stream}, copied by StreamHouse"))
            .with_columns(kernel.fields().cloned())
            .with_save_mode(SaveMode::ErrorIfExists)
            .await;
        match made {
            Ok(t) => Ok(t),
            Err(_) => self
                .load()
                .await?
                .ok_or_else(|| SinkError::Delta("the table could not be made".into())),
        }
    }
}

/// The columns as Delta stores them: timestamps in microseconds (with
/// their time zone or without), everything else as is.
fn delta_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Timestamp(_, tz) => {
                    DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
                }
                DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                DataType::UInt32 => DataType::Int64,
                other => other.clone(),
            };
            Field::new(f.name(), t, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The application transaction of one partition of a sink.
pub(super) fn app_id(sink: &str, partition: u32) -> String {
    format!("streamhouse.{sink}.p{partition}")
}

/// Where partition `app`'s copy goes on: the version its last commit
/// recorded (the end of its offsets), or 0.
pub(super) async fn resume(table: &mut DeltaTable, app: &str) -> Result<u64> {
    table.update_incremental(None).await?;
    let version = table
        .snapshot()?
        .transaction_version(table.log_store().as_ref(), app)
        .await?;
    Ok(version.map_or(0, |v| v.max(0) as u64))
}

/// Commits `batches` (offsets `start..end` of `app`'s partition) as new
/// files with the app's transaction at `end`; the bytes of the files.
/// Refused when the app's version is no longer `start` (another run of the
/// sink committed this range).
pub(super) async fn commit(
    table: &mut DeltaTable,
    app: &str,
    start: u64,
    end: u64,
    target_file_bytes: u64,
    batches: Vec<RecordBatch>,
) -> Result<u64> {
    let mut writer = RecordBatchWriter::for_table(table)?.with_target_file_size(target_file_bytes);
    let schema = writer.arrow_schema();
    for b in batches {
        if let Some(extra) = b
            .schema()
            .fields()
            .iter()
            .find(|f| schema.field_with_name(f.name()).is_err())
        {
            return Err(SinkError::Invalid(format!(
                "the stream has column {} that the Delta table does not (the stream's columns \
                 changed after the table was made)",
                extra.name()
            )));
        }
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let c = b.column_by_name(f.name()).ok_or_else(|| {
                    SinkError::Invalid(format!(
                        "the Delta table has column {} that the stream does not",
                        f.name()
                    ))
                })?;
                Ok(if c.data_type() == f.data_type() {
                    c.clone()
                } else {
                    cast(c, f.data_type())?
                })
            })
            .collect::<Result<Vec<_>>>()?;
        writer
            .write(RecordBatch::try_new(schema.clone(), columns)?)
            .await?;
    }
    let adds = writer.flush().await?;
    let bytes: u64 = adds.iter().map(|a| a.size.max(0) as u64).sum();
    let now = resume(table, app).await?;
    if now != start {
        return Err(SinkError::Delta(format!(
            "partition {app} was committed up to offset {now} by another run; reading again"
        )));
    }
    let properties =
        CommitProperties::default().with_application_transaction(Transaction::new(app, end as i64));
    CommitBuilder::from(properties)
        .with_actions(adds.into_iter().map(Action::Add).collect())
        .build(
            Some(table.snapshot()?),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
        )
        .await?;
    Ok(bytes)
}

/// How far each of `partitions` partitions of sink `sink` got in the Delta
/// table at `path` (the version of its application transaction), for
/// checks; `None` where a partition committed nothing.
pub async fn committed(path: &str, sink: &str, partitions: u32) -> Result<Vec<Option<u64>>> {
    let Some(mut table) = Location::new(path)?.load().await? else {
        return Ok(vec![None; partitions as usize]);
    };
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let at = resume(&mut table, &app_id(sink, p)).await?;
        out.push((at > 0).then_some(at));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;

    use super::*;
    use crate::sink::testing::rows;

    #[tokio::test]
    async fn a_partition_resumes_at_its_last_commit_and_a_range_is_committed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = format!("file://{}/t", dir.path().display());
        let location = Location::new(&path).unwrap();
        assert!(location.load().await.unwrap().is_none());
        assert_eq!(committed(&path, "s", 2).await.unwrap(), [None, None]);
        let batch = rows(0..10);
        let mut table = location
            .load_or_create(&batch.schema(), "st")
            .await
            .unwrap();
        let app = app_id("s", 0);
        assert_eq!(resume(&mut table, &app).await.unwrap(), 0);
        commit(&mut table, &app, 0, 12, 1 << 20, vec![batch])
            .await
            .unwrap();
        commit(&mut table, &app, 12, 20, 1 << 20, vec![rows(12..20)])
            .await
            .unwrap();
        assert_eq!(committed(&path, "s", 2).await.unwrap(), [Some(20), None]);
        // Another run that read the version before the second commit:
        // refused, nothing written.
        let mut stale = location.load().await.unwrap().unwrap();
        let e = commit(&mut stale, &app, 12, 15, 1 << 20, vec![rows(12..15)])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("another run"), "{e}");
        // A stream column the table lacks is refused, not dropped.
        let wider = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("_offset", DataType::Int64, false),
            Field::new("w", DataType::Int64, false),
        ]));
        let c = Arc::new(Int64Array::from_iter_values(20..21));
        let wide = RecordBatch::try_new(wider, vec![c.clone(), c.clone(), c]).unwrap();
        let e = commit(&mut table, &app, 20, 21, 1 << 20, vec![wide])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("column w"), "{e}");
        let mut again = location.load().await.unwrap().unwrap();
        assert_eq!(resume(&mut again, &app).await.unwrap(), 20);
    }
}
