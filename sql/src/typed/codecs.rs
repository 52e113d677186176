//! The codecs of streams that follow a subject, kept by stream and made
//! again when the stream's schema changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use streamhouse_log::StreamId;
use streamhouse_registry::values::ValueCodec;

/// How values of one stream decode and encode, at one schema version of
/// the stream.
pub(crate) struct Codec {
    /// The stream's schema version this was made for.
    pub(crate) stream_version: u32,
    pub(crate) values: ValueCodec,
}

/// Codecs by stream (made again when the stream's schema changes).
#[derive(Default)]
pub struct Codecs(pub(crate) Mutex<HashMap<StreamId, Arc<Codec>>>);
