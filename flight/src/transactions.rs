//! Flight SQL transactions: `BeginTransaction` opens a session with a
//! transaction block and answers its id; statements, prepared statements
//! and ingests that name the id run in that session; `EndTransaction`
//! commits or rolls it back (the block's rules are the SQL layer's, the
//! same as on the PostgreSQL door).
//!
//! Flight has no connection whose end would end a transaction, so one left
//! open without a call for [`IDLE_TIMEOUT`] is rolled back (the next
//! `BeginTransaction` sweeps), and at most [`MAX_OPEN`] are open at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamhouse_log::monotonic;
use streamhouse_sql::Session;
use tokio::time::Instant;
use tonic::Status;

/// An open transaction unused this long is rolled back.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Transactions open at once, at most.
pub const MAX_OPEN: usize = 10_000;

struct Open {
    session: Arc<Session>,
    last_used: Instant,
}

/// The open transactions, by id.
#[derive(Default)]
pub struct Transactions {
    open: Mutex<HashMap<Vec<u8>, Open>>,
}

impl Transactions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `session` (whose block is open) under a new id.
    pub fn add(&self, session: Arc<Session>) -> Result<Vec<u8>, Status> {
        self.add_at(session, monotonic())
    }

    fn add_at(&self, session: Arc<Session>, now: Instant) -> Result<Vec<u8>, Status> {
        let mut open = self.lock();
        open.retain(|_, t| {
            let idle = now.duration_since(t.last_used) >= IDLE_TIMEOUT;
            if idle {
                t.session.transaction().rollback();
            }
            !idle
        });
        if open.len() >= MAX_OPEN {
            return Err(Status::resource_exhausted(format!(
                "{MAX_OPEN} transactions are open; end some first"
            )));
        }
        let id = ulid::Ulid::new().to_string().into_bytes();
        open.insert(
            id.clone(),
            Open {
                session,
                last_used: now,
            },
        );
        Ok(id)
    }

    /// The session of transaction `id`.
    pub fn get(&self, id: &[u8]) -> Result<Arc<Session>, Status> {
        self.get_at(id, monotonic())
    }

    fn get_at(&self, id: &[u8], now: Instant) -> Result<Arc<Session>, Status> {
        let mut open = self.lock();
        let t = open.get_mut(id).ok_or_else(|| unknown(id))?;
        t.last_used = now;
        Ok(t.session.clone())
    }

    /// Forgets transaction `id`, handing back its session to end.
    pub fn take(&self, id: &[u8]) -> Result<Arc<Session>, Status> {
        self.lock()
            .remove(id)
            .map(|t| t.session)
            .ok_or_else(|| unknown(id))
    }
}

/// Marks a statement ticket whose SQL runs in a transaction.
const IN_TRANSACTION: u8 = 1;

/// A statement ticket's handle: the SQL, preceded by the transaction's id
/// when it runs in one.
pub fn ticket_handle(transaction: Option<&[u8]>, sql: &str) -> Vec<u8> {
    match transaction {
        None => sql.as_bytes().to_vec(),
        Some(id) => {
            let mut h = Vec::with_capacity(id.len() + sql.len() + 2);
            h.push(IN_TRANSACTION);
            h.extend_from_slice(id);
            h.push(b'\n');
            h.extend_from_slice(sql.as_bytes());
            h
        }
    }
}

/// (transaction id, SQL) of a ticket's handle.
pub fn parse_ticket_handle(handle: &[u8]) -> Result<(Option<&[u8]>, String), Status> {
    let (id, sql) = match handle.split_first() {
        Some((&IN_TRANSACTION, rest)) => {
            let nl = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| Status::invalid_argument("malformed statement handle"))?;
            (Some(&rest[..nl]), &rest[nl + 1..])
        }
        _ => (None, handle),
    };
    let sql = String::from_utf8(sql.to_vec())
        .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL"))?;
    Ok((id, sql))
}

fn unknown(id: &[u8]) -> Status {
    Status::not_found(format!(
        "transaction \"{}\" is not open (ended, rolled back after {} s idle, or never begun)",
        String::from_utf8_lossy(id),
        IDLE_TIMEOUT.as_secs()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_handles_carry_the_transaction() {
        let h = ticket_handle(None, "SELECT 1");
        assert_eq!(parse_ticket_handle(&h).unwrap(), (None, "SELECT 1".into()));
        let h = ticket_handle(Some(b"01ABC"), "SELECT\n2");
        assert_eq!(
            parse_ticket_handle(&h).unwrap(),
            (Some(&b"01ABC"[..]), "SELECT\n2".into())
        );
        assert!(parse_ticket_handle(&[IN_TRANSACTION, b'x']).is_err());
        assert!(parse_ticket_handle(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn idle_transactions_are_rolled_back_by_the_next_begin() {
        let t = Transactions::default();
        let t0 = monotonic();
        let s = Arc::new(Session::for_door("flight"));
        let id = t.add_at(s.clone(), t0).unwrap();
        assert!(Arc::ptr_eq(&t.get_at(&id, t0).unwrap(), &s));
        // Used half a timeout later: the idle clock restarts.
        let half = t0 + IDLE_TIMEOUT / 2;
        t.get_at(&id, half).unwrap();
        let other = t
            .add_at(Arc::new(Session::for_door("flight")), t0 + IDLE_TIMEOUT)
            .unwrap();
        assert!(t.get_at(&id, t0 + IDLE_TIMEOUT).is_ok());
        t.add_at(
            Arc::new(Session::for_door("flight")),
            half + IDLE_TIMEOUT * 2,
        )
        .unwrap();
        assert_eq!(t.get(&id).unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(t.get(&other).unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(t.take(b"nope").unwrap_err().code(), tonic::Code::NotFound);
    }
}
