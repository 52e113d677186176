//! Time, injected.
//!
//! Library code never reads a clock directly (`clippy.toml` forbids
//! `SystemTime::now`, `Instant::now` and `Utc::now` outside this module):
//! - Wall-clock time (append times, lease expiries, view and snapshot ids)
//!   comes from a [`Clock`]. Production uses [`SystemClock`]; tests use
//!   [`ManualClock`] to move time without sleeping. Times are microseconds
//!   since the Unix epoch (UTC), the unit of the `_timestamp` system column.
//! - Monotonic time for timers and idle timeouts is [`monotonic`], tokio's
//!   clock: real in production, paused and advanced at will in a test
//!   (`tokio::time::pause`).
//! - Durations reported in metrics are measured by a [`Stopwatch`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in microseconds since the Unix epoch.
    fn now_micros(&self) -> Micros;
}

/// Shared handle to a clock.
pub type ClockRef = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one wall-clock read
    fn now_micros(&self) -> Micros {
        chrono::Utc::now().timestamp_micros()
    }
}

/// Now on the monotonic clock timers run on (tokio's: it stands still in a
/// test that paused time).
#[allow(clippy::disallowed_methods)] // the one monotonic read
pub fn monotonic() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Measures how long something took, for metrics and logs.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    /// Starts measuring.
    #[allow(clippy::disallowed_methods)] // elapsed time only, never a date
    pub fn start() -> Self {
        Stopwatch(std::time::Instant::now())
    }

    /// Time since [`Stopwatch::start`].
    pub fn elapsed(&self) -> std::time::Duration {
        self.0.elapsed()
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock reading `start` microseconds.
    pub fn new(start: Micros) -> Self {
        Self {
            now: AtomicI64::new(start),
        }
    }

    /// Sets the time.
    pub fn set(&self, now: Micros) {
        self.now.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward by `delta` microseconds.
    pub fn advance(&self, delta: Micros) {
        self.now.fetch_add(delta, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> Micros {
        self.now.load(Ordering::SeqCst)
    }
}
