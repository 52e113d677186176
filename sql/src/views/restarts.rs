//! When a view stopped by an error starts again: after 1 s, 2 s, 4 s …
//! up to a minute between tries, the backoff forgotten once the view has
//! run a minute without failing. An error that passes (the metadata store
//! or the object store back after an outage) costs a replay from the last
//! checkpoint; one that does not shows as the view's status between tries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The longest wait between two restarts of a view.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Restarts of the views running here, by name.
#[derive(Default)]
pub(super) struct Restarts {
    by_view: Mutex<HashMap<String, Tries>>,
}

struct Tries {
    /// Restarts so far, in a row.
    count: u32,
    /// The last one.
    at: Instant,
}

fn backoff(count: u32) -> Duration {
    Duration::from_secs(1u64 << count.min(6)).min(MAX_BACKOFF)
}

impl Restarts {
    /// Whether view `name`, failed at `now`, is due for a restart; if so,
    /// counts it and returns its number (1 for the first in a row).
    pub(super) fn due(&self, name: &str, now: Instant) -> Option<u32> {
        let mut all = self.by_view.lock().unwrap_or_else(|p| p.into_inner());
        match all.get_mut(name) {
            Some(t) if now < t.at + backoff(t.count) => None,
            Some(t) => {
                t.count += 1;
                t.at = now;
                Some(t.count)
            }
            None => {
                all.insert(name.to_string(), Tries { count: 1, at: now });
                Some(1)
            }
        }
    }

    /// View `name` runs at `now`: its backoff is forgotten once it has run
    /// a minute since its last restart.
    pub(super) fn running(&self, name: &str, now: Instant) {
        let mut all = self.by_view.lock().unwrap_or_else(|p| p.into_inner());
        if all.get(name).is_some_and(|t| now >= t.at + MAX_BACKOFF) {
            all.remove(name);
        }
    }

    /// Forgets views no longer running here.
    pub(super) fn retain(&self, running: impl Fn(&str) -> bool) {
        self.by_view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| running(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_to_a_minute_and_are_forgotten_after_a_minute_of_running() {
        let r = Restarts::default();
        let t0 = streamhouse_log::monotonic();
        assert_eq!(r.due("v", t0), Some(1));
        assert_eq!(r.due("v", t0 + Duration::from_millis(1500)), None);
        assert_eq!(r.due("v", t0 + Duration::from_secs(2)), Some(2));
        // 4 s after the second.
        assert_eq!(r.due("v", t0 + Duration::from_secs(5)), None);
        assert_eq!(r.due("v", t0 + Duration::from_secs(6)), Some(3));
        let mut at = t0 + Duration::from_secs(6);
        for n in 4..10 {
            at += backoff(n - 1);
            assert_eq!(r.due("v", at), Some(n));
        }
        assert_eq!(backoff(9), MAX_BACKOFF);
        // Running, but not yet a minute: the count stays.
        r.running("v", at + Duration::from_secs(30));
        assert_eq!(r.due("v", at + Duration::from_secs(59)), None);
        r.running("v", at + MAX_BACKOFF);
        assert_eq!(r.due("v", at + MAX_BACKOFF), Some(1));
        r.retain(|_| false);
        assert_eq!(r.due("v", at + MAX_BACKOFF), Some(1));
    }
}
