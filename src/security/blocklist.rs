//! Addresses blocked after repeated intrusion-detection hits: a sliding
//! window of hit times per address, and a block until a deadline.
//!
//! Not yet: the hits and blocks live in this process only; with several
//! instances each keeps its own (the rate limits, by contrast, are shared
//! through Redis).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

/// Most addresses tracked at once; the oldest idle ones go first.
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
struct Entry {
    hits: VecDeque<u64>,
    blocked_until: Option<u64>,
    last_seen: u64,
}

/// What recording a hit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitOutcome {
    /// Counted; this many hits in the window so far.
    Counted(usize),
    /// This hit reached the threshold: the address is now blocked until
    /// the given time (unix ms).
    Blocked(u64),
}

/// Hit counts and blocks per address.
pub struct Blocklist {
    threshold: usize,
    window_ms: u64,
    block_ms: u64,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl Blocklist {
    /// Block an address for `block_ms` after `threshold` hits within
    /// `window_ms`.
    pub fn new(threshold: usize, window_ms: u64, block_ms: u64) -> Self {
        Blocklist {
            threshold: threshold.max(1),
            window_ms,
            block_ms,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Until when `ip` is blocked, if it is.
    pub fn blocked_until(&self, ip: IpAddr, now: u64) -> Option<u64> {
        let entries = self.entries.lock().expect("blocklist lock");
        entries
            .get(&ip)
            .and_then(|e| e.blocked_until)
            .filter(|until| *until > now)
    }

    /// Count one hit from `ip`.
    pub fn hit(&self, ip: IpAddr, now: u64) -> HitOutcome {
        let mut entries = self.entries.lock().expect("blocklist lock");
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&ip) {
            prune(&mut entries, now, self.window_ms);
        }
        let entry = entries.entry(ip).or_default();
        entry.last_seen = now;
        while entry
            .hits
            .front()
            .is_some_and(|t| *t + self.window_ms <= now)
        {
            entry.hits.pop_front();
        }
        entry.hits.push_back(now);
        if entry.hits.len() >= self.threshold && entry.blocked_until.is_none_or(|u| u <= now) {
            let until = now + self.block_ms;
            entry.blocked_until = Some(until);
            entry.hits.clear();
            return HitOutcome::Blocked(until);
        }
        HitOutcome::Counted(entry.hits.len())
    }
}

fn prune(entries: &mut HashMap<IpAddr, Entry>, now: u64, window_ms: u64) {
    entries
        .retain(|_, e| e.blocked_until.is_some_and(|u| u > now) || e.last_seen + window_ms > now);
    if entries.len() >= MAX_TRACKED {
        // Still full of live entries: forget the least recently seen tenth.
        let mut seen: Vec<u64> = entries.values().map(|e| e.last_seen).collect();
        seen.sort_unstable();
        let cutoff = seen[seen.len() / 10];
        entries.retain(|_, e| e.last_seen > cutoff || e.blocked_until.is_some_and(|u| u > now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_threshold_within_window_and_unblocks_after() {
        let b = Blocklist::new(3, 1000, 5000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(b.hit(ip, 0), HitOutcome::Counted(1));
        assert_eq!(b.hit(ip, 10), HitOutcome::Counted(2));
        assert_eq!(b.hit(ip, 20), HitOutcome::Blocked(5020));
        assert_eq!(b.blocked_until(ip, 100), Some(5020));
        assert_eq!(b.blocked_until("192.0.2.2".parse().unwrap(), 100), None);
        assert_eq!(b.blocked_until(ip, 5020), None);
    }

    #[test]
    fn old_hits_leave_the_window() {
        let b = Blocklist::new(3, 1000, 5000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        b.hit(ip, 0);
        b.hit(ip, 10);
        assert_eq!(b.hit(ip, 1500), HitOutcome::Counted(1));
    }
}
