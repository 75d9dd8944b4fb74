//! Numbered messages and the check of what arrived. Every content starts with its lane
//! (one ordered stream of one sender), its sequence number in that lane and the time it was
//! meant to be sent; receivers record what they saw, senders what the server accepted, and
//! the two together give missing, duplicated and out-of-order counts, never a frame count.

use std::collections::{HashMap, HashSet};

pub const HEADER: usize = 20;

/// `lane | seq | sent_at_us` then filler up to `size` bytes.
pub fn encode(lane: u32, seq: u64, sent_at_us: u64, size: usize) -> Vec<u8> {
    let mut content = Vec::with_capacity(size.max(HEADER));
    content.extend_from_slice(&lane.to_be_bytes());
    content.extend_from_slice(&seq.to_be_bytes());
    content.extend_from_slice(&sent_at_us.to_be_bytes());
    content.resize(size.max(HEADER), 0x5a);
    content
}

/// `(lane, seq, sent_at_us)` of a content made by `encode`.
pub fn decode(content: &[u8]) -> Option<(u32, u64, u64)> {
    Some((
        u32::from_be_bytes(content.get(0..4)?.try_into().ok()?),
        u64::from_be_bytes(content.get(4..12)?.try_into().ok()?),
        u64::from_be_bytes(content.get(12..20)?.try_into().ok()?),
    ))
}

/// What a sender's lane did: how many sequence numbers it used, and which of them the
/// server did not confirm (a timeout may still have been stored, so those are neither
/// expected nor counted as repeats).
#[derive(Default, Clone)]
pub struct LaneSent {
    pub attempted: u64,
    pub unconfirmed: HashSet<u64>,
}

/// What the receivers saw, per lane.
#[derive(Default)]
pub struct Seen {
    lanes: HashMap<u32, (u64, HashSet<u64>)>,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl Seen {
    pub fn record(&mut self, lane: u32, seq: u64) {
        let (next, seen) = self.lanes.entry(lane).or_default();
        if !seen.insert(seq) {
            self.duplicated += 1;
            return;
        }
        if seq < *next {
            self.out_of_order += 1;
        }
        *next = (*next).max(seq + 1);
    }

    pub fn merge(&mut self, other: Seen) {
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        for (lane, (next, seen)) in other.lanes {
            let (n, s) = self.lanes.entry(lane).or_default();
            *n = (*n).max(next);
            for seq in seen {
                if !s.insert(seq) {
                    self.duplicated += 1;
                }
            }
        }
    }

    /// Confirmed sends that never arrived.
    pub fn missing(&self, sent: &HashMap<u32, LaneSent>) -> u64 {
        sent.iter()
            .map(|(lane, lane_sent)| {
                let seen = self.lanes.get(lane).map(|(_, s)| s);
                (0..lane_sent.attempted)
                    .filter(|seq| !lane_sent.unconfirmed.contains(seq))
                    .filter(|seq| !seen.is_some_and(|s| s.contains(seq)))
                    .count() as u64
            })
            .sum()
    }

    pub fn delivered(&self) -> u64 {
        self.lanes.values().map(|(_, s)| s.len() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_carries_its_lane_sequence_and_time() {
        let c = encode(7, 42, 123_456, 256);
        assert_eq!(c.len(), 256);
        assert_eq!(decode(&c), Some((7, 42, 123_456)));
        assert_eq!(decode(&c[..10]), None);
    }

    #[test]
    fn repeats_gaps_and_late_arrivals_are_each_counted() {
        let mut seen = Seen::default();
        for seq in [0, 1, 3, 2, 3] {
            seen.record(1, seq);
        }
        let mut sent = HashMap::new();
        sent.insert(
            1,
            LaneSent {
                attempted: 6,
                unconfirmed: [5].into(),
            },
        );
        assert_eq!(seen.duplicated, 1);
        assert_eq!(seen.out_of_order, 1);
        assert_eq!(
            seen.missing(&sent),
            1,
            "4 is missing; 5 was never confirmed"
        );
        assert_eq!(seen.delivered(), 4);
    }
}
