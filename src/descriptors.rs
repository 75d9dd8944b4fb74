//! The process's file-descriptor budget: how many public connections and sockets it can hold
//! without running out of descriptors, after a reserve for the stores, the runtimes and the
//! admin listener (so `/health/*` and `/metrics` answer however many clients connect).
//! Owns reading (and raising) `RLIMIT_NOFILE`; knows nothing of HTTP.

/// Descriptors the process needs besides connections: listeners, each runtime's poller and
/// wakers, stdio, certificate files, DNS lookups.
const BASE_RESERVE: u64 = 64;
/// Per worker thread (each runs its own runtime: a poller, wakers, timers).
const PER_WORKER_RESERVE: u64 = 4;
/// Redis: the multiplexed connection, pub/sub, and a reconnect in flight of each.
const REDIS_RESERVE: u64 = 8;
/// Connections the admin listener may hold (scrapes, probes); its cap as well.
pub const ADMIN_CONNECTIONS: usize = 64;

/// What the descriptor limit leaves for the public listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The soft `RLIMIT_NOFILE` in force (after raising it to the hard limit).
    pub limit: u64,
    /// Descriptors kept for everything but public connections.
    pub reserved: u64,
    /// Public TCP connections the process may hold in all (sockets included).
    pub connections: usize,
    /// Sockets: the configured maximum, or less when the descriptors do not allow it, so
    /// that plain HTTP keeps some connections (an upgrade past it gets the JSON 503).
    pub max_websockets: usize,
}

impl Budget {
    /// The budget under `limit` descriptors for `workers` worker threads, a Postgres pool of
    /// `pool` connections (0 in the embedded mode) and `configured` sockets at most.
    pub fn new(limit: u64, workers: usize, pool: usize, configured: usize) -> Self {
        let stores = if pool == 0 {
            0
        } else {
            pool as u64 + REDIS_RESERVE
        };
        let reserved = BASE_RESERVE
            + PER_WORKER_RESERVE * (workers as u64 + 1)
            + stores
            + ADMIN_CONNECTIONS as u64;
        let connections = usize::try_from(limit.saturating_sub(reserved))
            .unwrap_or(usize::MAX)
            .max(2);
        // Plain HTTP keeps an eighth of the connections, up to 1,024 of them.
        let headroom = (connections / 8).clamp(1, 1024).min(connections - 1);
        Self {
            limit,
            reserved,
            connections,
            max_websockets: configured.min(connections - headroom),
        }
    }
}

/// The soft open-file limit, raised to the hard limit first (as most servers do: the soft
/// limit is often 1,024 while the hard one allows far more). `None` where it cannot be read.
pub fn raise_and_read_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; RLIMIT_NOFILE is a valid resource.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max && limit.rlim_max != libc::RLIM_INFINITY {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; failing leaves the limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_maximum_follows_a_low_descriptor_limit_and_keeps_a_reserve() {
        let budget = Budget::new(512, 1, 0, 100_000);
        assert_eq!(budget.reserved, 64 + 8 + 64);
        assert_eq!(budget.connections, 512 - 136);
        assert_eq!(budget.max_websockets, 376 - 47);
        let external = Budget::new(20_000, 2, 16, 100_000);
        assert_eq!(external.reserved, 64 + 12 + 24 + 64);
        assert_eq!(external.max_websockets, external.connections - 1024);
    }

    #[test]
    fn a_high_limit_leaves_the_configured_maximum_alone_and_a_tiny_one_still_serves() {
        assert_eq!(Budget::new(1 << 20, 4, 16, 100_000).max_websockets, 100_000);
        let tiny = Budget::new(10, 1, 0, 100_000);
        assert_eq!((tiny.connections, tiny.max_websockets), (2, 1));
    }
}
