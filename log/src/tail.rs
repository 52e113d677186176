//! Waking readers at the tail when a commit moves a partition's end.
//!
//! One `watch` channel per (stream, partition) carries the partition's end
//! offset (next offset to be assigned) as last published by a commit on this
//! agent. Values only grow. A waiter first checks the metadata store, then
//! sleeps on the channel, so it cannot miss a commit that happened before it
//! subscribed.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::stream::StreamId;

/// Per-partition end offsets, observable.
#[derive(Debug, Default)]
pub struct Tail {
    ends: Mutex<HashMap<(StreamId, u32), watch::Sender<u64>>>,
}

impl Tail {
    /// Records that `(stream, partition)` now ends at `end`.
    pub fn publish(&self, stream: StreamId, partition: u32, end: u64) {
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let tx = ends
            .entry((stream, partition))
            .or_insert_with(|| watch::channel(0).0);
        tx.send_if_modified(|v| {
            if end > *v {
                *v = end;
                true
            } else {
                false
            }
        });
    }

    /// A receiver of the partition's end offset.
    pub fn subscribe(&self, stream: StreamId, partition: u32) -> watch::Receiver<u64> {
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        ends.entry((stream, partition))
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Forgets a dropped stream's channels (waiters see the sender close).
    pub fn forget(&self, stream: StreamId) {
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        ends.retain(|(s, _), _| *s != stream);
    }
}
