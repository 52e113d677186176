//! Wrappers of result streams: new column names, a guard held until the
//! rows are read, and a transaction block failed when reading fails.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

/// Re-labels a result stream's columns (same types, new names).
pub(super) fn with_schema(
    stream: SendableRecordBatchStream,
    schema: SchemaRef,
) -> SendableRecordBatchStream {
    let s = schema.clone();
    let mapped = stream.map(move |b| {
        let b = b?;
        Ok(RecordBatch::try_new_with_options(
            s.clone(),
            b.columns().to_vec(),
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
        )?)
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, mapped))
}

/// `rows`, keeping `guard` until they have been read or dropped.
pub(super) fn hold_while_read(
    rows: SendableRecordBatchStream,
    guard: crate::system::RunningGuard,
) -> SendableRecordBatchStream {
    let schema = rows.schema();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        rows.map(move |b| {
            let _ = &guard;
            b
        }),
    ))
}

/// `rows`, failing block `id` of `transaction` if reading them fails.
pub(super) fn fail_block_on_error(
    rows: SendableRecordBatchStream,
    transaction: crate::transaction::Transaction,
    id: u64,
) -> SendableRecordBatchStream {
    let schema = rows.schema();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        rows.inspect(move |b| {
            if b.is_err() {
                transaction.fail_block(id);
            }
        }),
    ))
}
