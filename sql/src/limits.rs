//! Limits a statement runs under, from its session's settings:
//! `statement_timeout` (57014 when it passes) and `query_memory_limit` (the
//! memory a query's operators may reserve, half of the machine's by
//! default; 53200 past it, after what can spill to disk has spilled).
//! Every query's reservations also come out of one pool for the whole
//! server ([`ServerMemory`], half of the machine's by default), so queries
//! running together cannot reserve more than it either: the one that would
//! cross it fails with 53200 and the others go on.
//!
//! Subscriptions (push queries) run until the client leaves and have no
//! timeout. Writes (INSERT, COPY, COMMIT) have none either: once an append
//! has begun it may land, and a timeout must not report a failure for rows
//! that did.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use tokio::time::Instant;

use crate::error::{Result, SqlError};

/// A duration setting as PostgreSQL writes one: milliseconds, or a number
/// with a unit (`us`, `ms`, `s`, `min`, `h`, `d`). `0` means none.
pub(crate) fn parse_duration(text: &str) -> std::result::Result<Option<Duration>, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("invalid duration \"{text}\": use a number with ms, s, min, h or d")
    })?;
    let micros_per = match unit.trim() {
        "us" => 1,
        "" | "ms" => 1_000,
        "s" => 1_000_000,
        "min" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        other => {
            return Err(format!(
                "invalid unit \"{other}\" in \"{text}\": valid units are us, ms, s, min, h and d"
            ));
        }
    };
    let micros = n
        .checked_mul(micros_per)
        .filter(|m| *m <= i32::MAX as u64 * 1_000)
        .ok_or_else(|| format!("duration \"{text}\" is too large"))?;
    Ok((micros > 0).then(|| Duration::from_micros(micros)))
}

/// `rows`, ended with a statement-timeout error at `deadline`.
pub(crate) fn until(
    rows: SendableRecordBatchStream,
    deadline: Instant,
) -> SendableRecordBatchStream {
    let schema = rows.schema();
    let sleep = Box::pin(tokio::time::sleep_until(deadline));
    let stream = futures::stream::unfold(Some((rows, sleep)), |state| async move {
        let (mut rows, mut sleep) = state?;
        tokio::select! {
            batch = rows.next() => batch.map(|b| (b, Some((rows, sleep)))),
            () = &mut sleep => Some((
                Err(DataFusionError::External(Box::new(SqlError::StatementTimeout))),
                None,
            )),
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// Runs `work`, failing with a statement timeout at `deadline`.
pub(crate) async fn within<T>(
    deadline: Option<Instant>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match deadline {
        None => work.await,
        Some(d) => tokio::time::timeout_at(d, work)
            .await
            .unwrap_or(Err(SqlError::StatementTimeout)),
    }
}

/// Half of the machine's memory (`MemTotal` in `/proc/meminfo`), or 4 GiB
/// where that cannot be read.
pub fn default_query_memory() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .and_then(|b| usize::try_from(b).ok());
    total.map_or(4 << 30, |t| t / 2)
}

/// The memory all running queries of the server may reserve together.
#[derive(Debug, Clone)]
pub struct ServerMemory {
    pool: Arc<GreedyMemoryPool>,
    bytes: usize,
}

impl ServerMemory {
    pub fn new(bytes: usize) -> ServerMemory {
        ServerMemory {
            pool: Arc::new(GreedyMemoryPool::new(bytes)),
            bytes,
        }
    }

    /// Bytes reserved by running queries now.
    pub fn reserved(&self) -> usize {
        self.pool.reserved()
    }
}

/// One query's pool: at most `limit` bytes, each also reserved from the
/// server's pool.
#[derive(Debug)]
struct QueryPool {
    limit: usize,
    used: AtomicUsize,
    server: ServerMemory,
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query(used: {}, limit: {}, server: {})",
            self.used.load(Ordering::Relaxed),
            self.limit,
            self.server.pool
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.server.pool.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.server.pool.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.server.pool.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.server.pool.shrink(reservation, shrink);
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        let consumer = reservation.consumer().name();
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional).filter(|n| *n <= self.limit)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "{consumer} needed {additional} more bytes; the query holds {used} of \
                     the {} bytes query_memory_limit allows",
                    self.limit
                ))
            })?;
        if self.server.pool.try_grow(reservation, additional).is_err() {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{consumer} needed {additional} more bytes; running queries hold {} of \
                 the server's {} bytes of query memory",
                self.server.reserved(),
                self.server.bytes
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// A memory pool for one query (or one COPY): `limit` bytes of its own,
/// drawn from `server`'s.
pub(crate) fn query_pool(limit: usize, server: &ServerMemory) -> Arc<dyn MemoryPool> {
    Arc::new(QueryPool {
        limit,
        used: AtomicUsize::new(0),
        server: server.clone(),
    })
}

/// A context for one query: `base`'s catalog, functions and settings, with
/// a memory pool of its own of `limit` bytes, drawn from `server`'s.
pub(crate) fn query_context(
    base: &SessionContext,
    limit: usize,
    server: &ServerMemory,
) -> Result<SessionContext> {
    let state = base.state();
    let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
        .with_memory_pool(query_pool(limit, server))
        .build_arc()?;
    let state = SessionStateBuilder::new_from_existing(state)
        .with_runtime_env(runtime)
        .build();
    Ok(SessionContext::new_with_state(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_memory_limit_is_half_the_machine() {
        let limit = default_query_memory();
        assert!(limit >= 64 << 20, "{limit}");
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: usize = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse().ok())
            .unwrap();
        assert_eq!(limit, kib * 1024 / 2);
    }

    #[test]
    fn queries_share_the_server_pool_and_keep_their_own_limits() {
        let server = ServerMemory::new(100);
        let (a, b) = (query_pool(80, &server), query_pool(1000, &server));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(60).unwrap();
        let e = rb.try_grow(60).unwrap_err().to_string();
        assert!(e.contains("server's 100 bytes"), "{e}");
        assert_eq!(server.reserved(), 60, "a refused reservation holds nothing");
        rb.try_grow(40).unwrap();
        assert_eq!(server.reserved(), 100);
        rb.shrink(40);
        let e = ra.try_grow(30).unwrap_err().to_string();
        assert!(e.contains("query_memory_limit"), "{e}");
        ra.try_grow(20).unwrap();
        assert_eq!((a.reserved(), b.reserved(), server.reserved()), (80, 0, 80));
        drop(ra);
        drop(rb);
        assert_eq!(server.reserved(), 0, "reservations end with their queries");
    }

    #[test]
    fn durations_read_like_postgresql_settings() {
        assert_eq!(parse_duration("0").unwrap(), None);
        assert_eq!(
            parse_duration("250").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("2s").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_duration(" 3 min").unwrap(),
            Some(Duration::from_secs(180))
        );
        assert_eq!(
            parse_duration("1h").unwrap(),
            Some(Duration::from_secs(3600))
        );
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
        assert!(parse_duration("99999999d").is_err());
    }
}
