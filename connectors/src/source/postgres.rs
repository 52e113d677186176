//! The PostgreSQL source's run: a snapshot of each table, then its
//! changes, read from a logical replication slot (plugin `pgoutput`)
//! through the SQL interface (`pg_logical_slot_peek_binary_changes`,
//! `pg_replication_slot_advance`), so any role with the REPLICATION
//! attribute on a server with `wal_level = logical` serves.
//!
//! **Exactly once.** The slot is created before any table is read, so it
//! holds every transaction that commits after it exists. Each table is
//! then read in a `REPEATABLE READ` transaction, and that transaction's
//! snapshot (`pg_current_snapshot()`: which transactions it sees) is kept:
//! a change of a transaction the snapshot saw is already in the copied
//! rows and is skipped, every other is applied — exact, however long after
//! the slot the table was read. Rows go into the log with an idempotent
//! producer (`source:<name>`): a table's snapshot in one append, then each
//! round of changes (whole transactions) in one append across all tables,
//! recording in the same commit the end of the last transaction applied
//! and the snapshots. Only after that commit is the slot advanced. A
//! restart anywhere reads the recorded position back from any table's
//! stream and skips what it already holds; a table with nothing recorded
//! (an empty table, a crash during the snapshots) is read again — nothing
//! of it was appended, and the slot was not advanced past any of its
//! changes (appending them would have recorded a position). The producer
//! carries the lease's epoch, so an owner that lost its lease cannot append.
//!
//! Each upstream table with a primary key goes into a table of the same
//! key (its log: a change's new row, or for a delete its key marked
//! `__deleted`); one without goes into a changelog stream (each change a
//! row with `_op` and `_lsn`). Changes come as text and take the
//! destination's column types ([`super::tables`]). An update that changes
//! the key arrives as a `delete` of the old key and an `insert`; a
//! `TRUNCATE` as one `truncate` row in a changelog stream, and as a delete
//! of every key it holds in a table ([`super::truncate`]). A column added
//! upstream stops the source (status `retrying`, naming the `ALTER` that
//! lets it go on); a dropped one is NULL from then.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use streamhouse_log::{
    AppendOptions, Log, LogError, ProducerSeq, StreamInfo, StreamKind, table_log_name,
};

use super::pgoutput::{self, Message, Value};
use super::tables::{self, Rows, Table};
use super::truncate;
use super::{
    PostgresSpec, ROWS_METRIC, Result, SourceError, SourceProgress, lsn_text, parse_lsn,
    producer_id,
};
use crate::status::Status;

/// A table's snapshot larger than this (as text) is refused: it is
/// appended in one commit.
const MAX_SNAPSHOT_BYTES: usize = 1 << 30;
/// Rows per batch of a snapshot.
const SNAPSHOT_CHUNK: usize = 65_536;
/// Changes asked for per round (whole transactions: a round may hold
/// more).
const ROUND_CHANGES: i32 = 50_000;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What each append records with it (the producer's progress).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Recorded {
    /// The end of the last upstream transaction applied (0: none yet).
    lsn: u64,
    /// Per table (`schema.table`), the snapshot its rows were read in.
    snapshots: HashMap<String, String>,
}

/// Which transactions a snapshot sees (`pg_current_snapshot()`: `xmin:
/// xmax:xip,…`, 64-bit transaction ids).
#[derive(Debug, Clone, PartialEq)]
struct Visibility {
    xmin: u64,
    xmax: u64,
    running: Vec<u64>,
}

impl Visibility {
    fn parse(text: &str) -> Option<Visibility> {
        let mut parts = text.splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(Visibility {
            xmin,
            xmax,
            running,
        })
    }

    /// Whether the snapshot saw the commit of transaction `xid` (32 bits,
    /// as the replication stream names it; widened by the snapshot's
    /// epoch).
    fn sees(&self, xid: u32) -> bool {
        let epoch = self.xmax & !0xFFFF_FFFF;
        let mut full = epoch | xid as u64;
        if full > self.xmax.saturating_add(1 << 31) && full >= 1 << 32 {
            full -= 1 << 32;
        }
        full < self.xmin || (full < self.xmax && !self.running.contains(&full))
    }
}

/// Connects to the upstream server, in UTC and ISO dates (the forms the
/// stream's types are read from).
pub async fn connect(url: &str) -> Result<PgConnection> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| SourceError::Invalid(format!("source url: {e}")))?;
    let options = options.application_name("streamhouse").options([
        ("TimeZone", "UTC"),
        ("DateStyle", "ISO"),
        ("bytea_output", "hex"),
        // Quoted literals as the standard has them (no backslash escapes).
        ("standard_conforming_strings", "on"),
    ]);
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            SourceError::Upstream(format!(
                "PostgreSQL at {} did not answer within {} s",
                super::masked_url(url),
                CONNECT_TIMEOUT.as_secs()
            ))
        })??;
    Ok(conn)
}

/// What `CREATE SOURCE` checks before it makes streams: the server
/// decodes logically, the publication exists, and its tables (the
/// spec's, or every one) with their columns.
pub async fn describe(spec: &PostgresSpec) -> Result<Vec<Table>> {
    let mut conn = connect(&spec.url).await?;
    let wal_level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(&mut conn)
        .await?;
    if wal_level != "logical" {
        return Err(SourceError::Invalid(format!(
            "PostgreSQL runs with wal_level = {wal_level}; a source needs wal_level = logical \
             (set it in postgresql.conf and restart the server)"
        )));
    }
    let tables = tables::publication_tables(&mut conn, &spec.publication, &spec.tables).await?;
    let _ = conn.close().await;
    Ok(tables)
}

/// Drops the source's replication slot upstream (after `DROP SOURCE`),
/// waiting up to `patience` for a run that still holds it to let go.
pub async fn drop_slot(spec: &PostgresSpec, patience: Duration) -> Result<()> {
    let mut conn = connect(&spec.url).await?;
    let deadline = streamhouse_log::monotonic() + patience;
    loop {
        let dropped = sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1",
        )
        .bind(&spec.slot)
        .execute(&mut conn)
        .await;
        match dropped {
            Ok(_) => return Ok(()),
            Err(e) if streamhouse_log::monotonic() < deadline => {
                tracing::debug!(error = %e, "replication slot still in use");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs a source until the task is aborted or it cannot go on (status
/// `failed`): after any other failure it waits (backing off) and starts
/// again from what its streams recorded.
pub async fn run(log: Arc<Log>, spec: PostgresSpec, epoch: u64, progress: Arc<SourceProgress>) {
    let (log, spec_ref, p) = (&*log, &spec, &*progress);
    super::supervise(&spec.name, p, None, move || {
        run_once(log, spec_ref, epoch, p)
    })
    .await;
}

/// A table as the run copies it.
struct Target {
    table: Table,
    /// The log stream its rows go into: its changelog stream, or its
    /// table's log.
    stream: String,
    schema: SchemaRef,
    /// Which transactions its snapshot saw.
    visibility: Visibility,
    /// Every change of it up to here is in its stream.
    lsn: u64,
    /// Where its stream's table columns are in the replication stream's
    /// rows (set by the relation message).
    positions: Option<Vec<Option<usize>>>,
    /// Changes of this round not yet appended: batches finished early (at
    /// a truncate), then the rows being gathered.
    batches: Vec<RecordBatch>,
    rows: Rows,
}

impl Target {
    fn is_table(&self) -> bool {
        StreamKind::of(&self.stream) == StreamKind::Table
    }
}

/// How the source appends to `stream`: a table's log is one of the
/// system's streams, written by the system on the table's behalf.
fn appending(stream: &str) -> AppendOptions {
    AppendOptions {
        internal: StreamKind::of(stream) == StreamKind::Table,
        ..Default::default()
    }
}

/// The log stream an upstream table's rows go into: the source's stream
/// of that name, else the log of its table.
async fn destination(log: &Log, name: &str) -> Result<Arc<StreamInfo>> {
    match log.stream(name).await {
        Err(LogError::UnknownStream(_)) => Ok(log.stream(&table_log_name(name)).await?),
        other => Ok(other?),
    }
}

/// One run: connect, find where the streams left off, read the tables
/// not yet read, then follow changes until an error.
async fn run_once(
    log: &Log,
    spec: &PostgresSpec,
    epoch: u64,
    progress: &SourceProgress,
) -> Result<()> {
    progress.starting();
    let mut conn = connect(&spec.url).await?;
    let upstream = tables::publication_tables(&mut conn, &spec.publication, &spec.tables).await?;
    let producer = producer_id(&spec.name);
    let meta = log.metadata();
    let mut recorded = Recorded::default();
    let mut unread = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for table in upstream {
        let info = destination(log, &spec.stream_of(&table.name)).await?;
        let stream = info.name().to_string();
        meta.fence_producer(&producer, info.id, epoch).await?;
        let schema = info.spec.schema.clone();
        tables::positions(&stream, &schema, &table.name, &table.columns)?;
        let kept: Option<Recorded> = match meta.producer_progress(&producer, info.id).await? {
            Some((_, Some(text))) => Some(serde_json::from_str(&text).map_err(|e| {
                SourceError::Fatal(format!(
                    "stream \"{stream}\" records no source position: {e}"
                ))
            })?),
            _ => None,
        };
        let visibility = kept
            .as_ref()
            .and_then(|k| k.snapshots.get(&table.name))
            .and_then(|v| Visibility::parse(v));
        match (&kept, visibility) {
            (Some(k), Some(v)) => {
                if k.lsn > recorded.lsn {
                    recorded.lsn = k.lsn;
                }
                recorded
                    .snapshots
                    .insert(table.name.clone(), k.snapshots[&table.name].clone());
                targets.push(Target {
                    stream,
                    batches: Vec::new(),
                    rows: Rows::new(schema.clone()),
                    schema,
                    visibility: v,
                    lsn: k.lsn,
                    positions: None,
                    table,
                });
            }
            _ => unread.push((table, stream, schema)),
        }
    }
    let slot_exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&spec.slot)
            .fetch_optional(&mut conn)
            .await?;
    if slot_exists.is_none() {
        if !targets.is_empty() {
            return Err(SourceError::Fatal(format!(
                "replication slot \"{}\" is gone upstream: the changes after {} can no longer be \
                 read; drop the source and create it again",
                spec.slot,
                lsn_text(recorded.lsn)
            )));
        }
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(&spec.slot)
            .execute(&mut conn)
            .await?;
    }
    // Tables not read yet: a snapshot each, appended in one commit.
    for (table, stream, schema) in unread {
        progress.set_status(Status::Snapshot);
        let (visibility, rows) = snapshot(&mut conn, &table, &stream, &schema).await?;
        let snapshot_text = visibility_text(&visibility);
        recorded.snapshots.insert(table.name.clone(), snapshot_text);
        let n: u64 = rows.iter().map(|b| b.num_rows() as u64).sum();
        if n > 0 {
            let staged = log.stage(&stream, rows, &appending(&stream)).await?;
            let mut at_snapshot = recorded.clone();
            at_snapshot.lsn = 0;
            let seq = ProducerSeq {
                producer_id: producer.clone(),
                sequence: 1,
                progress: Some(to_json(&at_snapshot)?),
                epoch: Some(epoch),
                first: None,
            };
            log.append_staged_as(staged.into_iter().collect(), Some(seq))
                .await?;
            progress.rows.fetch_add(n, Ordering::Relaxed);
            metrics::counter!(ROWS_METRIC, "source" => spec.name.clone()).increment(n);
        }
        tracing::info!(source = %spec.name, table = %table.name, rows = n, "snapshot copied");
        targets.push(Target {
            stream,
            batches: Vec::new(),
            rows: Rows::new(schema.clone()),
            schema,
            visibility,
            lsn: 0,
            positions: None,
            table,
        });
    }
    progress.set_status(Status::Running);
    follow(
        log,
        spec,
        epoch,
        progress,
        &mut conn,
        &mut targets,
        recorded,
    )
    .await
}

/// Reads `table` in a snapshot: the snapshot's visibility and the rows.
async fn snapshot(
    conn: &mut PgConnection,
    table: &Table,
    stream: &str,
    schema: &SchemaRef,
) -> Result<(Visibility, Vec<arrow::array::RecordBatch>)> {
    let positions = tables::positions(stream, schema, &table.name, &table.columns)?;
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *conn)
        .await?;
    let read = async {
        let text: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text")
            .fetch_one(&mut *conn)
            .await?;
        let visibility = Visibility::parse(&text)
            .ok_or_else(|| SourceError::Protocol(format!("an unreadable snapshot: {text:?}")))?;
        let mut rows = Vec::new();
        tables::read_rows(
            conn,
            table,
            schema,
            &positions,
            MAX_SNAPSHOT_BYTES,
            SNAPSHOT_CHUNK,
            &mut rows,
        )
        .await?;
        Ok::<_, SourceError>((visibility, rows))
    }
    .await;
    sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
    read
}

fn visibility_text(v: &Visibility) -> String {
    let running: Vec<String> = v.running.iter().map(u64::to_string).collect();
    format!("{}:{}:{}", v.xmin, v.xmax, running.join(","))
}

fn to_json(r: &Recorded) -> Result<String> {
    serde_json::to_string(r).map_err(|e| SourceError::Fatal(e.to_string()))
}

/// A change of the transaction being decoded.
struct Change {
    target: usize,
    values: Vec<Option<String>>,
    op: &'static str,
    /// Which of `values` the change left out (TOASTed values an update did
    /// not touch, without the old row to take them from).
    unavailable: Vec<usize>,
}

/// Follows the slot: each round peeks at the next whole transactions,
/// appends the changes not yet in the streams in one commit, then
/// advances the slot past them.
async fn follow(
    log: &Log,
    spec: &PostgresSpec,
    epoch: u64,
    progress: &SourceProgress,
    conn: &mut PgConnection,
    targets: &mut [Target],
    mut recorded: Recorded,
) -> Result<()> {
    let producer = producer_id(&spec.name);
    let publication = format!("\"{}\"", spec.publication.replace('"', "\"\""));
    let mut relations: HashMap<u32, usize> = HashMap::new();
    let mut last_lag = None;
    loop {
        let messages: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
             'proto_version', '1', 'publication_names', $3)",
        )
        .bind(&spec.slot)
        .bind(ROUND_CHANGES)
        .bind(&publication)
        .fetch_all(&mut *conn)
        .await?;
        if messages.is_empty() {
            progress.set_status(Status::Running);
            let now = streamhouse_log::monotonic();
            if last_lag.is_none_or(|at: tokio::time::Instant| {
                now.duration_since(at) >= Duration::from_secs(1)
            }) {
                update_lag(conn, spec, progress).await?;
                last_lag = Some(now);
            }
            tokio::time::sleep(spec.poll_interval).await;
            continue;
        }
        let mut xid = 0u32;
        let mut changes: Vec<Change> = Vec::new();
        let mut end = None;
        for data in &messages {
            match pgoutput::decode(data)? {
                Message::Begin { xid: x, .. } => {
                    xid = x;
                    changes.clear();
                }
                Message::Relation(r) => {
                    let name = format!("{}.{}", r.namespace, r.name);
                    if let Some(i) = targets.iter().position(|t| t.table.name == name) {
                        let t = &mut targets[i];
                        // The key stays the primary key the table had
                        // when the source began (the relation flags the
                        // replica identity's columns: every column under
                        // REPLICA IDENTITY FULL).
                        let columns: Vec<tables::Column> = r
                            .columns
                            .iter()
                            .map(|c| tables::Column {
                                name: c.name.clone(),
                                type_oid: c.type_oid,
                                type_modifier: c.type_modifier,
                                key: t.table.columns.iter().any(|k| k.key && k.name == c.name),
                            })
                            .collect();
                        // The stream may have gained columns since.
                        let info = log.stream(&t.stream).await?;
                        if info.spec.schema != t.schema {
                            if !t.rows.is_empty() || !t.batches.is_empty() {
                                // Rows gathered under the old columns go
                                // first: flush them with their own schema.
                                return Err(SourceError::Upstream(
                                    "the stream's columns changed during a round; starting again"
                                        .into(),
                                ));
                            }
                            t.schema = info.spec.schema.clone();
                            t.rows = Rows::new(t.schema.clone());
                        }
                        t.positions =
                            Some(tables::positions(&t.stream, &t.schema, &name, &columns)?);
                        t.table.columns = columns;
                        relations.insert(r.id, i);
                    }
                }
                Message::Insert { relation, new } => {
                    if let Some(&i) = relations.get(&relation) {
                        let values = tables::row_values(positions(&targets[i])?, &new, None);
                        changes.push(Change {
                            target: i,
                            values,
                            op: "insert",
                            unavailable: Vec::new(),
                        });
                    }
                }
                Message::Update { relation, old, new } => {
                    if let Some(&i) = relations.get(&relation) {
                        let t = &targets[i];
                        let at = positions(t)?;
                        let values = tables::row_values(at, &new, old.as_deref());
                        let key_moved = old.as_ref().is_some_and(|old| {
                            t.table.columns.iter().enumerate().any(|(c, col)| {
                                col.key
                                    && matches!(
                                        old.get(c),
                                        Some(Value::Text(_)) | Some(Value::Null)
                                    )
                                    && old.get(c) != new.get(c)
                            })
                        });
                        // A table keeps whole rows: what the update left
                        // out is read again upstream.
                        let unavailable = match t.is_table() {
                            true => tables::unavailable(at, &new, old.as_deref()),
                            false => Vec::new(),
                        };
                        if key_moved {
                            let old = old.as_deref().unwrap_or_default();
                            let before = tables::row_values(at, old, None);
                            changes.push(Change {
                                target: i,
                                values: before,
                                op: "delete",
                                unavailable: Vec::new(),
                            });
                            changes.push(Change {
                                target: i,
                                values,
                                op: "insert",
                                unavailable,
                            });
                        } else {
                            changes.push(Change {
                                target: i,
                                values,
                                op: "update",
                                unavailable,
                            });
                        }
                    }
                }
                Message::Delete { relation, old } => {
                    if let Some(&i) = relations.get(&relation) {
                        let values = tables::row_values(positions(&targets[i])?, &old, None);
                        changes.push(Change {
                            target: i,
                            values,
                            op: "delete",
                            unavailable: Vec::new(),
                        });
                    }
                }
                Message::Truncate { relations: ids } => {
                    for id in ids {
                        if let Some(&i) = relations.get(&id) {
                            changes.push(Change {
                                target: i,
                                values: Vec::new(),
                                op: "truncate",
                                unavailable: Vec::new(),
                            });
                        }
                    }
                }
                Message::Commit { end_lsn } => {
                    for c in changes.drain(..) {
                        let t = &mut targets[c.target];
                        if end_lsn <= t.lsn || t.visibility.sees(xid) {
                            continue;
                        }
                        if c.op == "truncate" && t.is_table() {
                            if !t.rows.is_empty() {
                                let gathered = t.rows.finish()?;
                                t.batches.push(gathered);
                            }
                            let info = log.stream(&t.stream).await?;
                            if let Some(d) = truncate::deletes(log, info, &t.batches).await? {
                                t.batches.push(d);
                            }
                            continue;
                        }
                        let mut values = c.values;
                        if !c.unavailable.is_empty() {
                            tables::reselect(
                                conn,
                                &t.table,
                                &t.schema,
                                &mut values,
                                &c.unavailable,
                            )
                            .await?;
                        }
                        t.rows.push(values, c.op, end_lsn);
                    }
                    end = Some(end_lsn);
                }
                Message::Other => {}
            }
        }
        let Some(end) = end else {
            return Err(SourceError::Protocol(
                "a round of changes held no whole transaction".into(),
            ));
        };
        recorded.lsn = end;
        let mut staged = Vec::new();
        let mut n = 0u64;
        for t in targets
            .iter_mut()
            .filter(|t| !t.rows.is_empty() || !t.batches.is_empty())
        {
            let mut batches = std::mem::take(&mut t.batches);
            if !t.rows.is_empty() {
                batches.push(t.rows.finish()?);
            }
            n += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            if let Some(s) = log.stage(&t.stream, batches, &appending(&t.stream)).await? {
                staged.push(s);
            }
            t.lsn = end;
        }
        if !staged.is_empty() {
            let seq = ProducerSeq {
                producer_id: producer.clone(),
                sequence: end,
                progress: Some(to_json(&recorded)?),
                epoch: Some(epoch),
                first: None,
            };
            log.append_staged_as(staged, Some(seq)).await?;
            progress.rows.fetch_add(n, Ordering::Relaxed);
            metrics::counter!(ROWS_METRIC, "source" => spec.name.clone()).increment(n);
        }
        sqlx::query("SELECT pg_replication_slot_advance($1, $2::pg_lsn)")
            .bind(&spec.slot)
            .bind(lsn_text(end))
            .execute(&mut *conn)
            .await?;
        progress.confirmed.store(end, Ordering::Relaxed);
    }
}

fn positions(t: &Target) -> Result<&[Option<usize>]> {
    t.positions.as_deref().ok_or_else(|| {
        SourceError::Protocol(format!(
            "a change of {} came before the table's description",
            t.table.name
        ))
    })
}

/// How many bytes of upstream log the slot has not confirmed.
async fn update_lag(
    conn: &mut PgConnection,
    spec: &PostgresSpec,
    progress: &SourceProgress,
) -> Result<()> {
    let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT confirmed_flush_lsn::text, (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(&spec.slot)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((confirmed, lag)) = row else {
        return Err(SourceError::Fatal(format!(
            "replication slot \"{}\" is gone upstream: changes can no longer be read; drop the \
             source and create it again",
            spec.slot
        )));
    };
    if let Some(c) = confirmed.as_deref().and_then(parse_lsn) {
        progress.confirmed.store(c, Ordering::Relaxed);
    }
    progress
        .lag_bytes
        .store(lag.unwrap_or(0).max(0) as u64, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sees_what_committed_before_it() {
        let v = Visibility::parse("100:110:103,107").unwrap();
        assert_eq!(visibility_text(&v), "100:110:103,107");
        assert!(v.sees(99) && v.sees(104) && v.sees(109));
        assert!(!v.sees(103) && !v.sees(107) && !v.sees(110) && !v.sees(500));
        // Ids of the next epoch: widened by the snapshot's.
        let e = (5u64 << 32) + 10;
        let v = Visibility::parse(&format!("{e}:{}:", e + 5)).unwrap();
        assert!(v.sees(12) && !v.sees(15));
        assert!(v.sees(u32::MAX), "the previous epoch's last ids were seen");
        assert!(Visibility::parse("1:x:").is_none());
        assert_eq!(
            Visibility::parse("3:3:").unwrap().running,
            Vec::<u64>::new()
        );
    }
}
