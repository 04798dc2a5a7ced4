//! Addresses blocked after repeated intrusion-detection hits: a sliding
//! window of hit times per address, and a block until a deadline.
//!
//! Addresses are counted as the rate limiter counts them: IPv4 (and
//! IPv4-mapped IPv6) one by one, other IPv6 addresses by their /64, so a
//! client cannot escape a block by moving within its own network.
//!
//! Not yet: the hits and blocks live in this process only; with several
//! instances each keeps its own (the rate limits, by contrast, are shared
//! through Redis).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
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

/// The address a client is counted and blocked by.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
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
            .get(&network(ip))
            .and_then(|e| e.blocked_until)
            .filter(|until| *until > now)
    }

    /// Count one hit from `ip`.
    pub fn hit(&self, ip: IpAddr, now: u64) -> HitOutcome {
        let ip = network(ip);
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
    fn ipv6_clients_are_counted_and_blocked_by_their_64() {
        let b = Blocklist::new(2, 1000, 5000);
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let second: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        assert_eq!(b.hit(first, 0), HitOutcome::Counted(1));
        assert_eq!(b.hit(second, 10), HitOutcome::Blocked(5010));
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(
            b.blocked_until("2001:db8:1:2::9".parse().unwrap(), 20),
            Some(5010)
        );
        assert_eq!(b.blocked_until(elsewhere, 20), None);
        // IPv4-mapped addresses are their IPv4 address.
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        b.hit(v4, 0);
        assert_eq!(b.hit(mapped, 1), HitOutcome::Blocked(5001));
        assert_eq!(b.blocked_until(v4, 2), Some(5001));
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
