//! Addresses blocked after repeated intrusion-detection hits: a sliding
//! window of hit times per address, and a block until a deadline.
//!
//! Addresses are counted as the rate limiter counts them: IPv4 (and
//! IPv4-mapped IPv6) one by one, other IPv6 addresses by their /64, so a
//! client cannot escape a block by moving within its own network.
//!
//! With Redis configured, hits and blocks live there, shared by every
//! instance: ten hits spread over two instances block the address on both
//! (atomic Lua, like the rate limits). When Redis fails the blocklist falls
//! back to this process's table, as the rate limiter does, trying Redis
//! again at most once a second; blocks made meanwhile stay in force
//! locally. The `DEGRADED` event for the outage comes from the rate
//! limiter, which uses the same Redis on every request (when rate limiting
//! is on, the default); the blocklist itself logs a warning.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use redis::aio::ConnectionManager;

use crate::security::ratelimit::{self, RateLimitError, RedisHealth, REDIS_TIMEOUT};

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
    /// The address was already blocked until the given time (the request
    /// passed the block check just before another one blocked it).
    StillBlocked(u64),
}

/// Hit counts and blocks per address.
pub struct Blocklist {
    threshold: usize,
    window_ms: u64,
    block_ms: u64,
    entries: Mutex<HashMap<IpAddr, Entry>>,
    shared: Option<Shared>,
}

/// Counts one hit atomically. KEYS: the hit times (a sorted set) and the
/// block (its end, unix ms). ARGV: now, window, threshold, block length
/// (all ms) and a unique member for this hit. Returns `{1, until}` when
/// this hit blocks the address, else `{0, hits in the window}`. Times come
/// from the caller's clock; the expiries only clean up. A hit while the
/// address is already blocked (it raced the block check) answers
/// `{2, until}`.
const HIT_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local block = tonumber(ARGV[4])
local blocked_until = tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], window)
if blocked_until > now then
  return {2, blocked_until}
end
local hits = redis.call('ZCARD', KEYS[1])
if hits >= threshold then
  local u = now + block
  redis.call('SET', KEYS[2], u, 'PX', block)
  redis.call('DEL', KEYS[1])
  return {1, u}
end
return {0, hits}
"#;

/// The Redis side: keys `<prefix><address>:h` and `:b`.
struct Shared {
    manager: ConnectionManager,
    script: redis::Script,
    prefix: String,
    health: RedisHealth,
}

impl Shared {
    fn keys(&self, ip: IpAddr) -> (String, String) {
        let base = format!("{}{}", self.prefix, ratelimit::ip_key(ip));
        (format!("{base}:h"), format!("{base}:b"))
    }

    fn answered(&self) {
        if self.health.answered() {
            tracing::info!("Redis answers again; address blocks are shared again");
        }
    }

    fn failed(&self, now: u64, error: &str) {
        if self.health.failed(now) {
            tracing::warn!(
                error,
                "Redis failed; address blocks fall back to this instance alone"
            );
        }
    }

    async fn blocked_until(&self, ip: IpAddr) -> redis::RedisResult<Option<u64>> {
        let (_, block) = self.keys(ip);
        let mut conn = self.manager.clone();
        redis::cmd("GET").arg(block).query_async(&mut conn).await
    }

    async fn hit(&self, ip: IpAddr, now: u64, b: &Blocklist) -> redis::RedisResult<HitOutcome> {
        let (hits, block) = self.keys(ip);
        let mut conn = self.manager.clone();
        let (blocked, value): (i64, i64) = self
            .script
            .key(hits)
            .key(block)
            .arg(now)
            .arg(b.window_ms)
            .arg(b.threshold)
            .arg(b.block_ms)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .invoke_async(&mut conn)
            .await?;
        let value = u64::try_from(value).unwrap_or(0);
        Ok(match blocked {
            1 => HitOutcome::Blocked(value),
            2 => HitOutcome::StillBlocked(value),
            _ => HitOutcome::Counted(value as usize),
        })
    }
}

/// A Redis call bounded by [`REDIS_TIMEOUT`], its error as text (never
/// the URL).
async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", REDIS_TIMEOUT.as_millis())),
    }
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
            shared: None,
        }
    }

    /// Keep hits and blocks in Redis at `url`, under `prefix` (e.g.
    /// `kraliki:ids:`), shared by every instance. Does not connect yet.
    pub fn with_redis(mut self, url: &str, prefix: &str) -> Result<Self, RateLimitError> {
        self.shared = Some(Shared {
            manager: ratelimit::redis_manager(url)?,
            script: redis::Script::new(HIT_SCRIPT),
            prefix: prefix.to_string(),
            health: RedisHealth::default(),
        });
        Ok(self)
    }

    /// Until when `ip` is blocked, if it is: by this instance (during a
    /// Redis outage) or, with Redis, by any instance.
    pub async fn blocked_until(&self, ip: IpAddr, now: u64) -> Option<u64> {
        if let Some(until) = self.blocked_locally(ip, now) {
            return Some(until);
        }
        let shared = self.shared.as_ref().filter(|s| s.health.due(now))?;
        match bounded(shared.blocked_until(ip)).await {
            Ok(until) => {
                shared.answered();
                let until = until.filter(|u| *u > now)?;
                // Remember it here: a blocked client flooding for the whole
                // block costs no further Redis calls.
                self.block_locally(ip, until);
                Some(until)
            }
            Err(e) => {
                shared.failed(now, &e);
                None
            }
        }
    }

    /// Count one hit from `ip`: in Redis when it answers, else here.
    pub async fn hit(&self, ip: IpAddr, now: u64) -> HitOutcome {
        if let Some(shared) = self.shared.as_ref().filter(|s| s.health.due(now)) {
            match bounded(shared.hit(ip, now, self)).await {
                Ok(outcome) => {
                    shared.answered();
                    if let HitOutcome::Blocked(until) | HitOutcome::StillBlocked(until) = outcome {
                        self.block_locally(ip, until);
                    }
                    return outcome;
                }
                Err(e) => shared.failed(now, &e),
            }
        }
        self.hit_locally(ip, now)
    }

    fn block_locally(&self, ip: IpAddr, until: u64) {
        let mut entries = self.entries.lock().expect("blocklist lock");
        let entry = entries.entry(ratelimit::client_network(ip)).or_default();
        entry.blocked_until = Some(entry.blocked_until.map_or(until, |u| u.max(until)));
    }

    fn blocked_locally(&self, ip: IpAddr, now: u64) -> Option<u64> {
        let entries = self.entries.lock().expect("blocklist lock");
        entries
            .get(&ratelimit::client_network(ip))
            .and_then(|e| e.blocked_until)
            .filter(|until| *until > now)
    }

    fn hit_locally(&self, ip: IpAddr, now: u64) -> HitOutcome {
        let ip = ratelimit::client_network(ip);
        let mut entries = self.entries.lock().expect("blocklist lock");
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&ip) {
            prune(&mut entries, now, self.window_ms);
        }
        let entry = entries.entry(ip).or_default();
        entry.last_seen = now;
        if let Some(until) = entry.blocked_until.filter(|u| *u > now) {
            return HitOutcome::StillBlocked(until);
        }
        while entry
            .hits
            .front()
            .is_some_and(|t| *t + self.window_ms <= now)
        {
            entry.hits.pop_front();
        }
        entry.hits.push_back(now);
        if entry.hits.len() >= self.threshold {
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

    #[tokio::test]
    async fn blocks_after_threshold_within_window_and_unblocks_after() {
        let b = Blocklist::new(3, 1000, 5000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(b.hit(ip, 0).await, HitOutcome::Counted(1));
        assert_eq!(b.hit(ip, 10).await, HitOutcome::Counted(2));
        assert_eq!(b.hit(ip, 20).await, HitOutcome::Blocked(5020));
        // A hit that raced the block check neither blocks anew nor counts.
        assert_eq!(b.hit(ip, 30).await, HitOutcome::StillBlocked(5020));
        assert_eq!(b.blocked_until(ip, 100).await, Some(5020));
        assert_eq!(
            b.blocked_until("192.0.2.2".parse().unwrap(), 100).await,
            None
        );
        assert_eq!(b.blocked_until(ip, 5020).await, None);
    }

    #[tokio::test]
    async fn ipv6_clients_are_counted_and_blocked_by_their_64() {
        let b = Blocklist::new(2, 1000, 5000);
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let second: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        assert_eq!(b.hit(first, 0).await, HitOutcome::Counted(1));
        assert_eq!(b.hit(second, 10).await, HitOutcome::Blocked(5010));
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(
            b.blocked_until("2001:db8:1:2::9".parse().unwrap(), 20)
                .await,
            Some(5010)
        );
        assert_eq!(b.blocked_until(elsewhere, 20).await, None);
        // IPv4-mapped addresses are their IPv4 address.
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        b.hit(v4, 0).await;
        assert_eq!(b.hit(mapped, 1).await, HitOutcome::Blocked(5001));
        assert_eq!(b.blocked_until(v4, 2).await, Some(5001));
    }

    const REDIS_URL: &str = "redis://127.0.0.1:6379";

    fn shared(prefix: &str) -> Blocklist {
        Blocklist::new(3, 1000, 5000)
            .with_redis(REDIS_URL, prefix)
            .unwrap()
    }

    #[tokio::test]
    async fn instances_sharing_redis_count_and_block_together() {
        let prefix = format!("kraliki-test-{}:ids:", uuid::Uuid::new_v4().simple());
        let (a, b) = (shared(&prefix), shared(&prefix));
        let ip: IpAddr = "198.51.100.20".parse().unwrap();
        let now = 1_800_000_000_000;
        assert_eq!(a.hit(ip, now).await, HitOutcome::Counted(1));
        assert_eq!(b.hit(ip, now + 1).await, HitOutcome::Counted(2));
        assert_eq!(a.blocked_until(ip, now + 2).await, None);
        // The third hit, on the other instance, blocks on both.
        assert_eq!(b.hit(ip, now + 2).await, HitOutcome::Blocked(now + 5002));
        assert_eq!(a.blocked_until(ip, now + 3).await, Some(now + 5002));
        assert_eq!(b.blocked_until(ip, now + 3).await, Some(now + 5002));
        let racing = shared(&prefix);
        assert_eq!(
            racing.hit(ip, now + 4).await,
            HitOutcome::StillBlocked(now + 5002)
        );
        // Another address, and the same one once the block is over, are
        // not blocked; a different prefix shares nothing.
        let other: IpAddr = "198.51.100.21".parse().unwrap();
        assert_eq!(a.blocked_until(other, now + 3).await, None);
        assert_eq!(a.blocked_until(ip, now + 5002).await, None);
        let elsewhere = shared(&format!("{prefix}other:"));
        assert_eq!(elsewhere.blocked_until(ip, now + 3).await, None);
        // Hits older than the window are forgotten there too.
        let ip: IpAddr = "198.51.100.22".parse().unwrap();
        a.hit(ip, now).await;
        a.hit(ip, now + 10).await;
        assert_eq!(b.hit(ip, now + 1500).await, HitOutcome::Counted(1));
    }

    #[tokio::test]
    async fn without_redis_the_instance_blocks_on_its_own() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let b = Blocklist::new(2, 1000, 5000)
            .with_redis(&format!("redis://127.0.0.1:{port}"), "kraliki-test:ids:")
            .unwrap();
        let ip: IpAddr = "198.51.100.30".parse().unwrap();
        assert_eq!(b.hit(ip, 0).await, HitOutcome::Counted(1));
        // While Redis is down, only one call a second tries it: these
        // answer from the local table at once.
        assert_eq!(b.hit(ip, 10).await, HitOutcome::Blocked(5010));
        assert_eq!(b.blocked_until(ip, 20).await, Some(5010));
        assert!(b.shared.as_ref().unwrap().health.is_degraded());
    }

    #[tokio::test]
    async fn old_hits_leave_the_window() {
        let b = Blocklist::new(3, 1000, 5000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        b.hit(ip, 0).await;
        b.hit(ip, 10).await;
        assert_eq!(b.hit(ip, 1500).await, HitOutcome::Counted(1));
    }
}
