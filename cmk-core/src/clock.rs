//! Monotonic time for leases. Production uses [`MonotonicClock`]; tests drive a
//! [`ManualClock`] through exactly the same lease code (no `cfg(test)` branches).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock: time elapsed since the clock's own start.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Elapsed time since the clock started; never goes backwards.
    fn now(&self) -> Duration;
}

/// The operating system's monotonic clock (`std::time::Instant`).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    start: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            start: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A clock that moves only when told to, for tests of lease timing.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let m = ManualClock::new();
        assert_eq!(m.now(), Duration::ZERO);
        m.advance(Duration::from_secs(5));
        assert_eq!(m.now(), Duration::from_secs(5));
        let s = MonotonicClock::default();
        let a = s.now();
        assert!(s.now() >= a);
    }
}
