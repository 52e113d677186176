//! Flight SQL prepared statements: the handles this server gave out, each
//! with its planned statement and the parameter rows last bound to it.
//!
//! A handle is an opaque number. Handles live until the client closes them;
//! their count is capped so a client that never closes cannot grow the
//! server without bound (the oldest is then dropped).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use prost::bytes::Bytes;
use streamhouse_sql::{Prepared, ScalarValue};
use tonic::Status;

use crate::status::sql_status;

/// Prepared statements kept at most; past this the oldest is closed.
const MAX_STATEMENTS: usize = 10_000;

/// One prepared statement.
pub struct Statement {
    pub prepared: Prepared,
    /// The transaction it runs in, if it was prepared in one.
    pub transaction: Option<Vec<u8>>,
    params: Mutex<Option<RecordBatch>>,
}

impl Statement {
    /// Binds parameter rows (replacing earlier ones).
    pub fn bind(&self, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<(), Status> {
        let batch = arrow::compute::concat_batches(&schema, &batches)
            .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
        let want = self.prepared.param_types.len();
        if batch.num_columns() != want {
            return Err(Status::invalid_argument(format!(
                "{} parameters were bound, but the prepared statement requires {want}",
                batch.num_columns()
            )));
        }
        *self.params.lock().unwrap_or_else(|p| p.into_inner()) = Some(batch);
        Ok(())
    }

    /// Parameter values for each run: one per bound row, or one run without
    /// parameters when the statement has none.
    pub fn param_rows(&self) -> Result<Vec<Vec<ScalarValue>>, Status> {
        let params = self.params.lock().unwrap_or_else(|p| p.into_inner());
        match params.as_ref() {
            None if self.prepared.param_types.is_empty() => Ok(vec![Vec::new()]),
            None => Err(Status::invalid_argument(format!(
                "the prepared statement requires {} parameters, and none were bound",
                self.prepared.param_types.len()
            ))),
            Some(batch) => (0..batch.num_rows())
                .map(|row| {
                    self.prepared
                        .params_from_row(batch, row)
                        .map_err(sql_status)
                })
                .collect(),
        }
    }
}

/// The open prepared statements.
#[derive(Default)]
pub struct Statements {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Statement>>>,
}

fn handle_id(handle: &[u8]) -> Result<u64, Status> {
    std::str::from_utf8(handle)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Status::invalid_argument("malformed prepared statement handle"))
}

impl Statements {
    /// Keeps a prepared statement and returns its handle.
    pub fn add(&self, prepared: Prepared, transaction: Option<Vec<u8>>) -> Result<Bytes, Status> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= MAX_STATEMENTS {
            open.pop_first();
        }
        open.insert(
            id,
            Arc::new(Statement {
                prepared,
                transaction,
                params: Mutex::new(None),
            }),
        );
        Ok(Bytes::from(id.to_string()))
    }

    /// The statement behind a handle.
    pub fn get(&self, handle: &[u8]) -> Result<Arc<Statement>, Status> {
        let id = handle_id(handle)?;
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("prepared statement {id} does not exist")))
    }

    /// Forgets a handle.
    pub fn close(&self, handle: &[u8]) -> Result<(), Status> {
        let id = handle_id(handle)?;
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .map(|_| ())
            .ok_or_else(|| Status::not_found(format!("prepared statement {id} does not exist")))
    }
}
