//! Hedged creates: a new object whose PUT is slower than usual is raced
//! by a second PUT of the same bytes under a fresh key, and the first to
//! land is the one used — object stores' latency tails (S3's p99 is many
//! times its median) stop being the tail of every append behind them.
//!
//! The hedge waits twice the median of the last PUTs (at least the
//! configured floor), so it fires only on the slow tail: about one PUT in
//! eight under S3 Standard's published latencies. The losing PUT's object
//! is deleted once its request ends; one left by a crash is unknown to the
//! index and collected with the other strays.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tracing::debug;

use super::Store;
use crate::clock::Stopwatch;
use crate::error::Result;

/// PUT durations remembered for the median.
const RECENT: usize = 64;

/// When to hedge, from recent PUTs.
#[derive(Debug)]
pub(crate) struct Hedge {
    floor: Duration,
    recent: Mutex<VecDeque<Duration>>,
}

impl Hedge {
    pub(crate) fn new(floor: Duration) -> Hedge {
        Hedge {
            floor,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }

    fn delay(&self) -> Duration {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<Duration> = recent.iter().copied().collect();
        sorted.sort_unstable();
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
        (median * 2).max(self.floor)
    }

    fn record(&self, took: Duration) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(took);
    }
}

impl Store {
    /// Writes `bytes` as a new object (create-only, durable: see
    /// [`Store::put_durable`]) under a key from `key`, and returns the key
    /// it landed under. With hedging (S3), a PUT slower than the hedge
    /// delay is raced by a second under the next key from `key`.
    pub async fn put_new(&self, key: impl Fn() -> Path, bytes: Bytes) -> Result<Path> {
        let first = key();
        let Some(hedge) = self.hedge.clone() else {
            self.put_durable(&first, bytes).await?;
            return Ok(first);
        };
        let started = Stopwatch::start();
        let put = |path: Path| {
            let (store, bytes) = (self.clone(), bytes.clone());
            tokio::spawn(async move {
                let r = store.put_durable(&path, bytes).await;
                (path, r)
            })
        };
        let mut a = put(first);
        let delay = hedge.delay();
        let joined = |j: std::result::Result<(Path, Result<()>), tokio::task::JoinError>| {
            j.unwrap_or_else(|e| {
                let failed = crate::LogError::Internal(format!("put task: {e}"));
                (Path::from(""), Err(failed))
            })
        };
        let (path, landed) = tokio::select! {
            done = &mut a => joined(done),
            _ = tokio::time::sleep(delay) => {
                metrics::counter!(crate::metrics::HEDGED_PUTS).increment(1);
                let mut b = put(key());
                let (winner, loser) = tokio::select! {
                    done = &mut a => (joined(done), b),
                    done = &mut b => (joined(done), a),
                };
                match winner {
                    (path, Ok(())) => {
                        tokio::spawn(delete_when_done(self.clone(), loser));
                        (path, Ok(()))
                    }
                    // The first to end failed: the other may still land.
                    (_, Err(_)) => joined(loser.await),
                }
            }
        };
        landed?;
        hedge.record(started.elapsed());
        debug!(object = %path, "created");
        Ok(path)
    }

    /// Makes a store that hedges creates (see the module doc), waiting at
    /// least `floor`; `None`: never.
    pub fn with_hedging(mut self, floor: Option<Duration>) -> Store {
        self.hedge = floor.map(|f| std::sync::Arc::new(Hedge::new(f)));
        self
    }
}

/// Deletes the object of a PUT that lost its race, once the PUT ends.
async fn delete_when_done(store: Store, put: tokio::task::JoinHandle<(Path, Result<()>)>) {
    if let Ok((path, Ok(()))) = put.await
        && let Err(e) = store.object_store().delete(&path).await
    {
        debug!(object = %path, error = %e, "cannot delete a hedged PUT's spare object");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use futures::TryStreamExt;
    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };

    use super::*;
    use crate::store::StoreKind;

    /// Holds the first PUT for a second.
    #[derive(Debug)]
    struct FirstPutSlow {
        inner: InMemory,
        puts: AtomicU32,
    }

    impl std::fmt::Display for FirstPutSlow {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("FirstPutSlow")
        }
    }

    #[async_trait]
    impl ObjectStore for FirstPutSlow {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            if self.puts.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn a_slow_create_is_raced_and_the_spare_object_deleted() {
        let slow = Arc::new(FirstPutSlow {
            inner: InMemory::new(),
            puts: AtomicU32::new(0),
        });
        let store = Store::from_parts(slow.clone(), StoreKind::S3, None)
            .with_hedging(Some(Duration::from_millis(50)));
        let n = AtomicU32::new(0);
        let key = || Path::from(format!("log/data/{}", n.fetch_add(1, Ordering::SeqCst)));
        let took = Stopwatch::start();
        let landed = store
            .put_new(key, Bytes::from_static(b"rows"))
            .await
            .unwrap();
        assert_eq!(landed.as_ref(), "log/data/1", "the hedge landed first");
        assert!(took.elapsed() < Duration::from_millis(900));
        assert_eq!(
            store.get(&landed).await.unwrap(),
            Bytes::from_static(b"rows")
        );
        // Once the slow PUT ends, its object goes.
        let deadline = Stopwatch::start();
        loop {
            let keys: Vec<ObjectMeta> =
                store.object_store().list(None).try_collect().await.unwrap();
            if keys.len() == 1 {
                assert_eq!(keys[0].location, landed);
                break;
            }
            assert!(deadline.elapsed() < Duration::from_secs(5), "{keys:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A fast create is not raced.
        let fast = store
            .put_new(key, Bytes::from_static(b"more"))
            .await
            .unwrap();
        assert_eq!(fast.as_ref(), "log/data/2");
        assert_eq!(slow.puts.load(Ordering::SeqCst), 3);
    }
}
