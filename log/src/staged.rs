//! A transaction's rows before its commit: checked against their stream
//! and split by partition ([`crate::Log::stage`]), appended together by
//! [`crate::Log::append_staged`].

use std::sync::Arc;

use arrow::array::RecordBatch;

use crate::stream::StreamInfo;

/// Rows checked against a stream and split by partition, not yet appended
/// ([`Log::stage`]); [`Log::append_staged`] appends them.
#[derive(Debug, Clone)]
pub struct StagedAppend {
    pub(crate) info: Arc<StreamInfo>,
    pub(crate) parts: Vec<(u32, RecordBatch)>,
    /// A Kafka batch's run of producer sequences (its rows in one
    /// partition): a transaction's commit keeps one batch per run.
    pub(crate) seq: Option<crate::metadata::SeqRun>,
}

impl StagedAppend {
    /// The stream the rows go to.
    pub fn stream(&self) -> &Arc<StreamInfo> {
        &self.info
    }

    /// The rows, by the partition they go to (declared columns).
    pub fn parts(&self) -> &[(u32, RecordBatch)] {
        &self.parts
    }

    /// Rows staged.
    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|(_, b)| b.num_rows() as u64).sum()
    }

    /// Memory the rows take.
    pub fn bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|(_, b)| b.get_array_memory_size())
            .sum()
    }
}
