//! The one clock of the domain and the stores, and the [`Clock`] wake-up schedules read:
//! the system clock, which a test may move forward instead of sleeping through 20 minutes.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Milliseconds since the epoch, the stores' clock for creation times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The system clock plus an offset that only moves forward. Clones share the offset, so a
/// test that keeps a clone moves the server's clock.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advanced_clock_moves_every_clone() {
        let clock = Clock::default();
        let clone = clock.clone();
        let before = clone.now_ms();
        clock.advance(Duration::from_secs(1200));
        assert!(clone.now_ms() >= before + 1_200_000);
    }
}
