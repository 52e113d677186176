//! The audit trail: security events (logins, failed logins, refused
//! connections, role changes) and DDL, each as one row of the system
//! stream `__audit` — queryable as `streamhouse.audit`, kept 90 days —
//! and one JSON-able log line (target `security`).
//!
//! A row is written through the log like any append, so it is as durable
//! as the data. Logins are recorded without waiting for the write (a
//! login does not wait on the object store); DDL and role changes wait
//! for theirs before the statement returns.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use streamhouse_log::{AppendOptions, Log, LogError, StreamInfo, StreamKind, StreamSpec};

use crate::error::Result;

/// The stream the trail is kept in.
pub const AUDIT_STREAM: &str = "__audit";

/// How long rows of the trail are kept.
pub const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// One event.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    /// `login`, `login_failed`, `login_refused`, `ddl`.
    pub event: &'static str,
    /// Who: the user named (or logged in as); none when no one was named.
    pub user: Option<String>,
    /// Through which door: `pgwire`, `flight`, `http`, `embedded`.
    pub door: String,
    /// From where (`ip:port`), when the door knows.
    pub peer: Option<String>,
    /// What: the statement (without passwords), or what was refused.
    pub object: Option<String>,
    /// Whether it succeeded.
    pub success: bool,
    /// Why it failed, or more about it.
    pub detail: Option<String>,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("event", DataType::Utf8, false),
        Field::new("user_name", DataType::Utf8, true),
        Field::new("door", DataType::Utf8, false),
        Field::new("peer", DataType::Utf8, true),
        Field::new("object", DataType::Utf8, true),
        Field::new("success", DataType::Boolean, false),
        Field::new("detail", DataType::Utf8, true),
    ]))
}

/// Writes the trail.
pub struct Audit {
    log: Arc<Log>,
}

impl Audit {
    /// The trail of `log`, its stream created on first use.
    pub async fn open(log: Arc<Log>) -> Result<(Audit, Arc<StreamInfo>)> {
        let info = match log.stream(AUDIT_STREAM).await {
            Ok(info) => info,
            Err(LogError::UnknownStream(_)) => {
                let mut spec = StreamSpec::new(AUDIT_STREAM, schema());
                spec.retention = Some(RETENTION);
                match log.create_internal_stream(StreamKind::System, spec).await {
                    Ok(info) => info,
                    // Another agent created it first.
                    Err(LogError::StreamExists(_)) => log.stream(AUDIT_STREAM).await?,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        Ok((Audit { log }, info))
    }

    /// Records `e` and waits until its row is durable.
    pub async fn record(&self, e: AuditEvent) -> Result<()> {
        let batch = self.row(&e)?;
        self.log
            .append(
                AUDIT_STREAM,
                batch,
                AppendOptions {
                    internal: true,
                    ..AppendOptions::to_partition(0)
                },
            )
            .await?;
        Ok(())
    }

    /// Records `e` without waiting for its row (a failure is logged).
    pub fn record_later(&self, e: AuditEvent) {
        let batch = match self.row(&e) {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(error = %err, "audit row not built");
                return;
            }
        };
        let log = self.log.clone();
        tokio::spawn(async move {
            let options = AppendOptions {
                internal: true,
                ..AppendOptions::to_partition(0)
            };
            if let Err(err) = log.append(AUDIT_STREAM, batch, options).await {
                tracing::warn!(error = %err, "audit row not written");
            }
        });
    }

    /// The event's row, after logging it.
    fn row(&self, e: &AuditEvent) -> Result<RecordBatch> {
        if e.success {
            tracing::info!(target: "security", event = e.event, user = e.user, door = e.door,
                peer = e.peer, object = e.object, detail = e.detail, "audit");
        } else {
            tracing::warn!(target: "security", event = e.event, user = e.user, door = e.door,
                peer = e.peer, object = e.object, detail = e.detail, "audit");
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampMicrosecondArray::from(vec![self.log.now_micros()]).with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec![e.event])),
            Arc::new(StringArray::from(vec![e.user.clone()])),
            Arc::new(StringArray::from(vec![e.door.clone()])),
            Arc::new(StringArray::from(vec![e.peer.clone()])),
            Arc::new(StringArray::from(vec![e.object.clone()])),
            Arc::new(BooleanArray::from(vec![e.success])),
            Arc::new(StringArray::from(vec![e.detail.clone()])),
        ];
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}
