//! The one clock of the domain and the stores.

/// Milliseconds since the epoch, the stores' clock for creation times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
