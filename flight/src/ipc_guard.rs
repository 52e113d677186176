//! Checks on the Arrow IPC messages that clients send, made before the
//! decoder sees them.
//!
//! The IPC decoder trusts two numbers from the sender: a compressed
//! buffer's declared uncompressed length (it allocates that much at once,
//! so a message naming a terabyte aborted the whole process) and each
//! buffer's offset and length in the body (it slices by them and panics
//! past the end). Both are checked here; a message that fails answers
//! INVALID_ARGUMENT and nothing of it is decoded.

use arrow::ipc::{MessageHeader, root_as_message};
use arrow_flight::FlightData;
use tonic::Status;

/// The most bytes the buffers of one message may decompress to. Messages
/// are at most a few MiB on the wire; this leaves room for data that
/// compresses very well and none for a made-up length.
pub const MAX_DECOMPRESSED_BYTES: u64 = 512 << 20;

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(format!("bad Arrow IPC message: {}", msg.into()))
}

/// Refuses an IPC message whose buffers lie outside its body or claim to
/// decompress to more than [`MAX_DECOMPRESSED_BYTES`].
pub fn check(data: &FlightData) -> Result<(), Status> {
    if data.data_header.is_empty() {
        return Ok(());
    }
    let message = root_as_message(&data.data_header).map_err(|e| invalid(e.to_string()))?;
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => return Ok(()),
    };
    let batch = batch.ok_or_else(|| invalid("a batch message without its batch"))?;
    let body = &data.data_body;
    let compressed = batch.compression().is_some();
    let mut total: u64 = 0;
    for b in batch.buffers().into_iter().flatten() {
        let (offset, length) = (b.offset(), b.length());
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(length).ok())
            .and_then(|(o, l)| Some(o..o.checked_add(l)?))
            .filter(|r| r.end <= body.len())
            .ok_or_else(|| {
                invalid(format!(
                    "a buffer at offset {offset} of length {length} lies outside the {}-byte body",
                    body.len()
                ))
            })?;
        let size = if compressed && range.len() >= 8 {
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&body[range.start..range.start + 8]);
            match i64::from_le_bytes(prefix) {
                // Stored uncompressed after the prefix.
                -1 => range.len() as u64,
                n => u64::try_from(n)
                    .map_err(|_| invalid(format!("a buffer declares {n} uncompressed bytes")))?,
            }
        } else {
            range.len() as u64
        };
        total = total.saturating_add(size);
    }
    if total > MAX_DECOMPRESSED_BYTES {
        return Err(invalid(format!(
            "its buffers decompress to {total} bytes; at most {MAX_DECOMPRESSED_BYTES} per message"
        )));
    }
    Ok(())
}
