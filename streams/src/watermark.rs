//! Event-time watermarks of a dataflow's inputs.
//!
//! Each input partition's watermark is the latest event time it has
//! delivered minus its stream's delay; the dataflow's watermark is the
//! minimum over partitions, so a window closes only once every partition
//! has moved past it. A partition that has delivered nothing for the idle
//! timeout stops holding the watermark back (when every partition is idle,
//! the most advanced one sets it) — except a partition that [`holds`]
//! (a view's changelog: its next row is no earlier than its last, however
//! long it takes). The watermark never goes backwards.
//!
//! [`holds`]: Watermarks::hold

use std::time::{Duration, Instant};

/// One input partition.
#[derive(Debug, Clone)]
struct Partition {
    delay: i64,
    /// Latest event time seen, µs.
    max_event: Option<i64>,
    last_data: Instant,
    /// Never idle.
    holds: bool,
}

/// The watermark of a set of input partitions.
#[derive(Debug, Clone)]
pub struct Watermarks {
    partitions: Vec<Partition>,
    idle_timeout: Duration,
    current: Option<i64>,
}

impl Watermarks {
    /// `delays`: the watermark delay (µs) of each input partition, in a
    /// fixed order the caller keeps.
    pub fn new(delays: Vec<i64>, idle_timeout: Duration, now: Instant) -> Self {
        Self {
            partitions: delays
                .into_iter()
                .map(|delay| Partition {
                    delay,
                    max_event: None,
                    last_data: now,
                    holds: false,
                })
                .collect(),
            idle_timeout,
            current: None,
        }
    }

    /// Partition `i` holds the watermark back until it moves, idle or not.
    pub fn hold(&mut self, i: usize) {
        self.partitions[i].holds = true;
    }

    /// Partition `i` delivered rows whose latest event time is `max_event`.
    pub fn observe(&mut self, i: usize, max_event: Option<i64>, now: Instant) {
        let p = &mut self.partitions[i];
        p.last_data = now;
        if let Some(t) = max_event {
            p.max_event = Some(p.max_event.map_or(t, |m| m.max(t)));
        }
    }

    /// Advances and returns the watermark (µs; `None` until every active
    /// partition has delivered a row).
    pub fn advance(&mut self, now: Instant) -> Option<i64> {
        let mark = |p: &Partition| p.max_event.map(|m| m.saturating_sub(p.delay));
        let active: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.holds || now.duration_since(p.last_data) < self.idle_timeout)
            .collect();
        let computed = if active.is_empty() {
            self.partitions.iter().filter_map(mark).max()
        } else if active.iter().all(|p| p.max_event.is_some()) {
            active.iter().filter_map(|p| mark(p)).min()
        } else {
            None
        };
        self.current = match (self.current, computed) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.current
    }

    /// The watermark as last advanced.
    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// Sets the watermark (when replaying a recorded step).
    pub fn set(&mut self, w: Option<i64>) {
        self.current = w;
    }

    /// The latest event time seen per partition, to record in checkpoints.
    pub fn maxima(&self) -> Vec<Option<i64>> {
        self.partitions.iter().map(|p| p.max_event).collect()
    }

    /// Restores per-partition maxima recorded by [`Watermarks::maxima`].
    pub fn restore(&mut self, maxima: &[Option<i64>], current: Option<i64>) {
        for (p, m) in self.partitions.iter_mut().zip(maxima) {
            p.max_event = *m;
        }
        self.current = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_active_partition_sets_the_watermark() {
        let t0 = streamhouse_log::monotonic().into_std();
        let mut w = Watermarks::new(vec![10, 10], Duration::from_secs(5), t0);
        w.observe(0, Some(100), t0);
        assert_eq!(w.advance(t0), None, "partition 1 has delivered nothing");
        w.observe(1, Some(50), t0);
        assert_eq!(w.advance(t0), Some(40));
        w.observe(1, Some(200), t0);
        assert_eq!(w.advance(t0), Some(90));
        // Partition 0 goes idle: partition 1 alone moves it.
        let later = t0 + Duration::from_secs(6);
        w.observe(1, Some(300), later);
        assert_eq!(w.advance(later), Some(290));
        // It never goes back.
        w.observe(0, Some(120), later);
        assert_eq!(w.advance(later), Some(290));
    }

    #[test]
    fn a_partition_that_holds_never_goes_idle() {
        let t0 = streamhouse_log::monotonic().into_std();
        let mut w = Watermarks::new(vec![0, 0], Duration::from_secs(1), t0);
        w.hold(1);
        w.observe(0, Some(500), t0);
        w.observe(1, Some(100), t0);
        assert_eq!(w.advance(t0), Some(100));
        // Partition 0 moves on; partition 1 has been quiet past the idle
        // timeout but still holds the watermark at its last row.
        w.observe(0, Some(900), t0 + Duration::from_secs(5));
        assert_eq!(w.advance(t0 + Duration::from_secs(5)), Some(100));
        w.observe(1, Some(700), t0 + Duration::from_secs(6));
        assert_eq!(w.advance(t0 + Duration::from_secs(6)), Some(700));
    }

    #[test]
    fn all_idle_uses_the_most_advanced() {
        let t0 = streamhouse_log::monotonic().into_std();
        let mut w = Watermarks::new(vec![0, 0], Duration::from_secs(1), t0);
        w.observe(0, Some(100), t0);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(w.advance(later), Some(100));
    }
}
