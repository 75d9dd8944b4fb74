//! Per-client-address caps on things a client holds open (TCP connections, sockets): a count
//! per address, taken by a guard whose `Drop` gives it back. The addresses live in this
//! process's memory only: never logged, never a metric label. Knows nothing of HTTP.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How many of something each client address holds, against a cap (0: no cap).
pub struct PerClient {
    max: usize,
    // std Mutex: held for one hash-map update, never across an await.
    held: Mutex<HashMap<IpAddr, usize>>,
}

impl PerClient {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// One more for `addr`, or `None` when it already holds the cap.
    pub fn try_acquire(self: &Arc<Self>, addr: IpAddr) -> Option<ClientHold> {
        if self.max == 0 {
            return Some(ClientHold(None));
        }
        let key = key(addr);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientHold(Some((self.clone(), key))))
    }

    /// How many `addr` holds now.
    pub fn held_by(&self, addr: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&key(addr)).copied().unwrap_or(0)
    }
}

/// An IPv4 address as it is; an IPv6 address by its /64, which one client usually holds
/// whole (counting its single addresses would let it take 2^64 of each cap).
fn key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// One unit of a client's cap, given back on drop (however its holder ends).
pub struct ClientHold(Option<(Arc<PerClient>, IpAddr)>);

impl Drop for ClientHold {
    fn drop(&mut self) {
        if let Some((counter, key)) = self.0.take() {
            let mut held = counter.held.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = held.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    held.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_cap_and_a_dropped_hold_is_given_back() {
        let caps = PerClient::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = caps.try_acquire(a).unwrap();
        let _second = caps.try_acquire(a).unwrap();
        assert!(caps.try_acquire(a).is_none());
        let _other = caps.try_acquire(b).unwrap();
        drop(first);
        assert!(caps.try_acquire(a).is_some());
        assert_eq!(caps.held_by(b), 1);
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_prefix_and_zero_means_no_cap() {
        let caps = PerClient::new(1);
        let _one = caps.try_acquire("2001:db8::1".parse().unwrap()).unwrap();
        assert!(caps.try_acquire("2001:db8::2".parse().unwrap()).is_none());
        assert!(
            caps.try_acquire("2001:db8:0:1::1".parse().unwrap())
                .is_some()
        );
        let open = PerClient::new(0);
        let holds: Vec<_> = (0..1000)
            .map(|_| open.try_acquire("10.0.0.1".parse().unwrap()).unwrap())
            .collect();
        assert_eq!(holds.len(), 1000);
    }
}
