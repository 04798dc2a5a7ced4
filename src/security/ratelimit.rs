//! Rate limits: the rules that say how many requests a client may make to
//! which routes, the counter that enforces them, and its two backends.
//!
//! The algorithm is the same in both backends. Each (rule, key) pair has a
//! fixed window that starts with its first request. A request that takes the
//! count past the rule's limit is a *violation*: the window is dropped and
//! the key is blocked — the first violation until the window would have
//! reset, each further violation within 24 hours for twice as long as the
//! one before (2 × window, 4 × window, …), never longer than 24 hours.
//! Requests during a block are refused and neither count nor escalate; once
//! a block ends the key starts a fresh window, and the next time it fills
//! up is the next violation. The violation count is forgotten 24 hours
//! after the last violation.
//!
//! [`InProcess`] keeps that state in a sharded, bounded table for a single
//! instance; [`RedisBackend`] keeps it in Redis, updated by one atomic Lua
//! script per request, so every instance shares one count. [`Limiter`]
//! uses Redis when configured and falls back to the in-process table for as
//! long as Redis fails, so limiting never stops. Time always comes from the
//! limiter's [`Clock`], also for Redis, so tests can move time by hand.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

/// How long violations are remembered, and the longest block: 24 hours.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Longest allowed rule window, in seconds (24 hours): a longer window would
/// outlast both the block cap and the memory of violations.
pub const MAX_WINDOW_SECS: u64 = 24 * 60 * 60;

/// Largest allowed rule limit.
pub const MAX_LIMIT: u64 = 1_000_000_000;

/// Default bound on the entries of the in-process table.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// Time allowed for one Redis round trip (connecting included) before the
/// request is limited in-process instead.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(300);

/// While degraded, how often one request tries Redis again, in milliseconds.
pub const REDIS_RETRY_MS: u64 = 1_000;

const MAX_NAME_LEN: usize = 64;
const MAX_PATH_LEN: usize = 256;
const SHARDS: usize = 16;
const PRUNE_EVERY_MS: u64 = 60_000;

/// What a rule counts requests by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// The client IP address (see [`ip_key`]). The default.
    #[default]
    Ip,
    /// The signed-in user.
    User,
}

/// One rate-limit rule, as written under `[[rate_limit.rules]]`.
///
/// Rules that share a name share one budget: a client's requests to any of
/// their paths count together. They must then agree on `limit`,
/// `window_secs`, `key` and `exempt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Name of the budget, a Structured-Field token (e.g. `login`); shown to
    /// clients in the `RateLimit` and `RateLimit-Policy` fields.
    pub name: String,
    /// HTTP method the rule applies to, upper case (e.g. `POST`); absent
    /// means any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path: exact (`/api/auth/login`), a prefix ending in `/*`
    /// (`/api/calls/*`, which also matches `/api/calls`), or `*` for every
    /// path.
    pub path: String,
    /// Requests allowed per window, 1 to 1,000,000,000. Ignored when exempt.
    #[serde(default)]
    pub limit: u64,
    /// Window length in seconds, 1 to 86,400. Ignored when exempt.
    #[serde(default)]
    pub window_secs: u64,
    /// What requests are counted by: `ip` (default) or `user`.
    #[serde(default)]
    pub key: KeyKind,
    /// Matching requests are never limited (health checks, static assets).
    /// Default false.
    #[serde(default)]
    pub exempt: bool,
}

/// The `[rate_limit]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Whether requests are limited at all. Default true; turning it off
    /// removes a security control.
    pub enabled: bool,
    /// The rules; the most specific match decides (see
    /// [`RateLimitSettings::find`]). Default: the table in DESIGN §5. Setting
    /// this list replaces the whole default table, exemptions included.
    pub rules: Vec<Rule>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        let login = |path: &str| Rule::limited("login", Some("POST"), path, 5, 900);
        Self {
            enabled: true,
            rules: vec![
                login("/api/auth/login"),
                login("/api/auth/session"),
                Rule::limited("register", Some("POST"), "/api/auth/register", 3, 3600),
                Rule::limited(
                    "forgot_password",
                    Some("POST"),
                    "/api/auth/forgot-password",
                    3,
                    3600,
                ),
                Rule::limited("webhooks", None, "/api/webhooks/*", 100, 60),
                Rule::limited("calls", None, "/api/calls/*", 50, 60),
                Rule::limited("api", None, "/api/*", 1000, 900),
                Rule::limited("default", None, "*", 100, 900),
                Rule::exempt("health", "/health"),
                Rule::exempt("ready", "/ready"),
                Rule::exempt("static", "/static/*"),
                Rule::exempt("assets", "/assets/*"),
                Rule::exempt("favicon", "/favicon.ico"),
            ],
        }
    }
}

/// A configuration or set-up error of the rate limiter.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// A rule is malformed or conflicts with another.
    #[error("rate_limit rule {rule:?}: {reason}")]
    InvalidRule {
        /// Name of the offending rule.
        rule: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The Redis key prefix is unusable.
    #[error("rate limit Redis key prefix: {0}")]
    InvalidPrefix(&'static str),
    /// The Redis URL does not parse. The URL itself is not repeated, since
    /// it may hold a password.
    #[error("Redis URL is not valid")]
    RedisUrl(#[source] redis::RedisError),
}

impl Rule {
    /// A counted rule.
    pub fn limited(
        name: &str,
        method: Option<&str>,
        path: &str,
        limit: u64,
        window_secs: u64,
    ) -> Self {
        Self {
            name: name.to_string(),
            method: method.map(str::to_string),
            path: path.to_string(),
            limit,
            window_secs,
            key: KeyKind::Ip,
            exempt: false,
        }
    }

    /// An exempt rule for any method.
    pub fn exempt(name: &str, path: &str) -> Self {
        Self {
            exempt: true,
            ..Self::limited(name, None, path, 0, 0)
        }
    }

    /// Check this rule on its own (not against the others).
    pub fn validate(&self) -> Result<(), RateLimitError> {
        let fail = |reason: String| {
            Err(RateLimitError::InvalidRule {
                rule: self.name.clone(),
                reason,
            })
        };

        if !is_sf_token(&self.name) || self.name.len() > MAX_NAME_LEN {
            return fail(format!(
                "name must be a Structured-Field token of at most {MAX_NAME_LEN} characters \
                 (letters, digits, '_', '-', '.' …, starting with a letter)"
            ));
        }
        if let Some(method) = &self.method {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                return fail("method must be an upper-case HTTP method such as POST".into());
            }
        }
        if let Err(reason) = check_path(&self.path) {
            return fail(format!("path {:?} {reason}", self.path));
        }
        if self.exempt {
            return Ok(());
        }
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return fail(format!("limit must be between 1 and {MAX_LIMIT}"));
        }
        if !(1..=MAX_WINDOW_SECS).contains(&self.window_secs) {
            return fail(format!(
                "window_secs must be between 1 and {MAX_WINDOW_SECS}"
            ));
        }
        Ok(())
    }

    /// How specifically this rule matches a request, or `None` if it does
    /// not. Larger is more specific: exact path, then prefix by length, then
    /// `*`; at equal path specificity a rule with a method wins.
    fn specificity(&self, method: &str, path: &str) -> Option<(u8, usize, bool)> {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return None;
        }
        let has_method = self.method.is_some();

        if self.path == "*" {
            return Some((0, 0, has_method));
        }
        if let Some(base) = self.path.strip_suffix("/*") {
            let under = path
                .strip_prefix(base)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            return under.then_some((1, base.len(), has_method));
        }
        (self.path == path).then_some((2, path.len(), has_method))
    }

    fn window_ms(&self) -> u64 {
        self.window_secs.saturating_mul(1000)
    }
}

fn check_path(path: &str) -> Result<(), &'static str> {
    if path == "*" {
        return Ok(());
    }
    if !path.starts_with('/') {
        return Err("must start with '/' or be \"*\"");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("is too long");
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters");
    }
    if path.contains(['?', '#']) {
        return Err("must not contain a query or fragment");
    }
    let base = path.strip_suffix("/*").unwrap_or(path);
    if base.contains('*') {
        return Err("may only use '*' as a final \"/*\"");
    }
    Ok(())
}

/// Whether `s` is a Structured-Field token (RFC 9651 §3.3.4).
fn is_sf_token(s: &str) -> bool {
    let mut bytes = s.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b);
    (first.is_ascii_alphabetic() || first == b'*') && bytes.all(tchar)
}

impl RateLimitSettings {
    /// Check every rule and the rules against each other: rules sharing a
    /// name must agree on their budget, and no two rules may match the same
    /// method and path.
    pub fn validate(&self) -> Result<(), RateLimitError> {
        let mut budgets: HashMap<&str, &Rule> = HashMap::new();
        let mut routes = HashSet::new();

        for rule in &self.rules {
            rule.validate()?;

            if let Some(first) = budgets.insert(&rule.name, rule) {
                let same = first.limit == rule.limit
                    && first.window_secs == rule.window_secs
                    && first.key == rule.key
                    && first.exempt == rule.exempt;
                if !same {
                    return Err(RateLimitError::InvalidRule {
                        rule: rule.name.clone(),
                        reason: "rules sharing a name share one budget and must have the \
                                 same limit, window_secs, key and exempt"
                            .into(),
                    });
                }
            }
            if !routes.insert((rule.method.as_deref(), rule.path.as_str())) {
                return Err(RateLimitError::InvalidRule {
                    rule: rule.name.clone(),
                    reason: format!(
                        "another rule already covers {} {}",
                        rule.method.as_deref().unwrap_or("any method"),
                        rule.path
                    ),
                });
            }
        }
        Ok(())
    }

    /// The most specific rule matching a request: an exact path beats a
    /// longer prefix, which beats a shorter prefix, which beats `*`; at
    /// equal path specificity a rule naming the method beats one that does
    /// not. `path` is the request path without query string.
    pub fn find(&self, method: &str, path: &str) -> Option<&Rule> {
        let mut best: Option<((u8, usize, bool), &Rule)> = None;
        for rule in &self.rules {
            let Some(spec) = rule.specificity(method, path) else {
                continue;
            };
            if best.is_none_or(|(top, _)| spec > top) {
                best = Some((spec, rule));
            }
        }
        best.map(|(_, rule)| rule)
    }

    /// The rule to enforce on a request: `None` when limits are disabled,
    /// no rule matches, or the matching rule is exempt.
    pub fn rule_for(&self, method: &str, path: &str) -> Option<&Rule> {
        if !self.enabled {
            return None;
        }
        self.find(method, path).filter(|rule| !rule.exempt)
    }
}

/// The address a client is counted by: IPv4 addresses (IPv4-mapped ones
/// included) one by one; IPv6 addresses by their /64 network (the host bits
/// zeroed), since a single client usually controls a whole /64. The rate
/// limiter and the intrusion blocklist both count by it.
pub fn client_network(ip: IpAddr) -> IpAddr {
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

/// The key for an IP-keyed rule: [`client_network`], with `/64` after an
/// IPv6 network.
pub fn ip_key(ip: IpAddr) -> String {
    match client_network(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// The outcome of one request against one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed; refused requests get 429.
    pub allowed: bool,
    /// The rule's limit per window.
    pub limit: u64,
    /// Requests left in the current window (0 when refused).
    pub remaining: u64,
    /// Seconds until the quota is back: the end of the window when allowed,
    /// the end of the block when refused.
    pub reset_secs: u64,
    /// Seconds the client must wait (`Retry-After`); 0 when allowed.
    pub retry_after_secs: u64,
    /// Violations by this key in the last 24 hours, this one included if
    /// it is new.
    pub violations: u32,
    /// This request is a new violation (not one refused during a block).
    pub new_violation: bool,
    /// On a new violation, the length of the block it started; for a
    /// request refused during a block, what is left of it; 0 when allowed.
    pub block_secs: u64,
}

impl Decision {
    fn unlimited(rule: &Rule) -> Self {
        Self {
            allowed: true,
            limit: rule.limit,
            remaining: rule.limit,
            reset_secs: 0,
            retry_after_secs: 0,
            violations: 0,
            new_violation: false,
            block_secs: 0,
        }
    }

    fn from_raw(limit: u64, raw: Raw) -> Self {
        let wait_secs = raw.wait_ms.div_ceil(1000);
        Self {
            allowed: raw.allowed,
            limit,
            remaining: raw.remaining,
            reset_secs: wait_secs,
            retry_after_secs: if raw.allowed { 0 } else { wait_secs },
            violations: raw.violations,
            new_violation: raw.new_violation,
            block_secs: raw.block_ms.div_ceil(1000),
        }
    }
}

/// The `RateLimit-Policy` field value (IETF draft-10) for a rule, e.g.
/// `"login";q=5;w=900`. Meaningless for exempt rules.
pub fn policy_header(rule: &Rule) -> String {
    format!(
        "{};q={};w={}",
        sf_string(&rule.name),
        rule.limit,
        rule.window_secs
    )
}

/// The `RateLimit` field value (IETF draft-10) for a decision, e.g.
/// `"login";r=0;t=840`, where `t` is the seconds until the quota resets or
/// the block ends.
pub fn ratelimit_header(rule: &Rule, decision: &Decision) -> String {
    format!(
        "{};r={};t={}",
        sf_string(&rule.name),
        decision.remaining,
        decision.reset_secs
    )
}

/// A Structured-Field string. Validated names never need escaping; this
/// keeps an unvalidated rule from breaking the field's syntax.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to, for tests. Clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a backend reports for one hit, in milliseconds; the same fields as
/// the Lua script returns.
#[derive(Debug, Clone, Copy)]
struct Raw {
    allowed: bool,
    remaining: u64,
    /// Until the window resets (allowed) or the block ends (refused).
    wait_ms: u64,
    violations: u32,
    new_violation: bool,
    block_ms: u64,
}

/// The block a violation earns: the rest of the window for the first, then
/// window × 2^(n−1), at least 1 ms and at most 24 hours.
fn block_ms(violation: u32, rest_of_window_ms: u64, window_ms: u64) -> u64 {
    let ms = if violation <= 1 {
        rest_of_window_ms
    } else {
        window_ms.saturating_mul(1u64 << (violation - 1).min(40))
    };
    ms.clamp(1, DAY_MS)
}

/// The state of one (rule, key) pair in the in-process table.
#[derive(Debug, Clone, Default)]
struct Entry {
    window_end: u64,
    count: u64,
    block_end: u64,
    violations: u32,
    last_violation: u64,
}

impl Entry {
    /// Count one request. Mirrors [`RATE_LIMIT_SCRIPT`] step by step.
    fn hit(&mut self, now: u64, limit: u64, window_ms: u64) -> Raw {
        if self.violations > 0 && now.saturating_sub(self.last_violation) >= DAY_MS {
            self.violations = 0;
        }

        if self.block_end > now {
            let left = self.block_end - now;
            return Raw {
                allowed: false,
                remaining: 0,
                wait_ms: left,
                violations: self.violations,
                new_violation: false,
                block_ms: left,
            };
        }

        if now >= self.window_end {
            self.window_end = now.saturating_add(window_ms);
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count <= limit {
            return Raw {
                allowed: true,
                remaining: limit - self.count,
                wait_ms: self.window_end - now,
                violations: self.violations,
                new_violation: false,
                block_ms: 0,
            };
        }

        self.violations = self.violations.saturating_add(1);
        let block = block_ms(self.violations, self.window_end - now, window_ms);
        self.window_end = 0;
        self.count = 0;
        self.block_end = now.saturating_add(block);
        self.last_violation = now;
        Raw {
            allowed: false,
            remaining: 0,
            wait_ms: block,
            violations: self.violations,
            new_violation: true,
            block_ms: block,
        }
    }

    /// Whether the entry no longer changes any decision.
    fn is_expired(&self, now: u64) -> bool {
        now >= self.window_end
            && now >= self.block_end
            && (self.violations == 0 || now.saturating_sub(self.last_violation) >= DAY_MS)
    }

    /// Whether losing the entry would forgive a block or violations.
    fn is_precious(&self, now: u64) -> bool {
        self.block_end > now || self.violations > 0
    }
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    next_prune_ms: u64,
}

impl Shard {
    fn prune(&mut self, now: u64) {
        self.entries.retain(|_, entry| !entry.is_expired(now));
        self.next_prune_ms = now.saturating_add(PRUNE_EVERY_MS);
    }

    /// Make room for one more entry: expired entries go first; if that is
    /// not enough, an eighth of the shard, plain counters before blocks and
    /// violations, the soonest to expire first.
    fn make_room(&mut self, now: u64, cap: usize) {
        self.prune(now);
        if self.entries.len() < cap {
            return;
        }

        let mut ranked: Vec<(bool, u64, &String)> = self
            .entries
            .iter()
            .map(|(id, e)| (e.is_precious(now), e.window_end.max(e.block_end), id))
            .collect();
        let evict = (cap / 8).max(1).min(ranked.len());
        ranked.select_nth_unstable(evict - 1);
        let victims: Vec<String> = ranked[..evict]
            .iter()
            .map(|(_, _, id)| (*id).clone())
            .collect();
        let precious = ranked[..evict].iter().filter(|(p, _, _)| *p).count();

        for id in &victims {
            self.entries.remove(id);
        }
        tracing::warn!(
            evicted = victims.len(),
            blocked_or_violating = precious,
            "rate limit table full; evicted live entries"
        );
    }
}

/// The in-process backend: a sharded table of (rule, key) state, bounded
/// in size. Expired entries are pruned once a minute per shard and whenever
/// a shard is full; only then are live entries evicted.
pub struct InProcess {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    shard_cap: usize,
}

impl fmt::Debug for InProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcess")
            .field("entries", &self.len())
            .field("max_entries", &(self.shard_cap * SHARDS))
            .finish()
    }
}

impl InProcess {
    /// A table holding at most about `max_entries` (rule, key) pairs.
    pub fn new(max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            shard_cap: (max_entries / SHARDS).max(1),
        }
    }

    /// Count one request by `key` against `rule` at `now_ms`.
    pub fn hit(&self, rule: &Rule, key: &str, now_ms: u64) -> Decision {
        let id = format!("{}\0{}", rule.name, key);
        let index = self.hasher.hash_one(&id) as usize % SHARDS;
        let mut shard = lock(&self.shards[index]);

        if now_ms >= shard.next_prune_ms {
            shard.prune(now_ms);
        }
        if !shard.entries.contains_key(&id) && shard.entries.len() >= self.shard_cap {
            shard.make_room(now_ms, self.shard_cap);
        }

        let raw = shard
            .entries
            .entry(id)
            .or_default()
            .hit(now_ms, rule.limit, rule.window_ms());
        Decision::from_raw(rule.limit, raw)
    }

    /// Number of (rule, key) pairs held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop every entry that no longer affects a decision.
    pub fn prune(&self, now_ms: u64) {
        for shard in self.shards.iter() {
            lock(shard).prune(now_ms);
        }
    }
}

/// Lock a shard. A panic while holding the lock cannot leave an entry
/// half-updated in a way that matters, so a poisoned lock is used as is.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One hit in Redis; the same steps as [`Entry::hit`]. Times are stored in
/// the values and compared with `now` from the caller's clock; `PEXPIRE`
/// only collects the garbage. Numbers are written with `%d` so they never
/// take exponent form.
///
/// KEYS: window hash {e = window end, n = count}, block end, violations hash
/// {n = count, t = last}. ARGV: now, limit, window, day (all ms but limit).
/// Returns {allowed, remaining, wait, violations, new violation, block}.
const RATE_LIMIT_SCRIPT: &str = r#"
local function int(x) return string.format('%d', x) end
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local day = tonumber(ARGV[4])

local v = redis.call('HMGET', KEYS[3], 'n', 't')
local violations = tonumber(v[1]) or 0
local last = tonumber(v[2]) or 0
if violations > 0 and now - last >= day then
  violations = 0
end

local block_end = tonumber(redis.call('GET', KEYS[2])) or 0
if block_end > now then
  return {0, 0, block_end - now, violations, 0, block_end - now}
end

local w = redis.call('HMGET', KEYS[1], 'e', 'n')
local window_end = tonumber(w[1]) or 0
local count = tonumber(w[2]) or 0
if now >= window_end then
  window_end = now + window
  count = 0
end
count = count + 1
if count <= limit then
  redis.call('HSET', KEYS[1], 'e', int(window_end), 'n', int(count))
  redis.call('PEXPIRE', KEYS[1], int(window_end - now))
  return {1, limit - count, window_end - now, violations, 0, 0}
end

violations = violations + 1
local block
if violations == 1 then
  block = window_end - now
else
  block = window * 2 ^ math.min(violations - 1, 40)
end
block = math.max(1, math.min(block, day))
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], int(now + block), 'PX', int(block))
redis.call('HSET', KEYS[3], 'n', int(violations), 't', int(now))
redis.call('PEXPIRE', KEYS[3], int(day))
return {0, 0, block, violations, 1, block}
"#;

/// A lazily connecting Redis connection for `url`: one quick attempt per
/// connection, bounded like every call, so a dead Redis costs one timeout
/// per retry rather than a backoff series. Errors never repeat the URL.
pub fn redis_manager(url: &str) -> Result<ConnectionManager, RateLimitError> {
    let client = redis::Client::open(url).map_err(RateLimitError::RedisUrl)?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    ConnectionManager::new_lazy_with_config(client, config).map_err(RateLimitError::RedisUrl)
}

/// The Redis backend: state shared by every instance using the same Redis
/// and key prefix. Keys are `<prefix><rule>@<key>:c` (window), `:b`
/// (block) and `:v` (violations); a rule name never contains `@`, so keys
/// of different rules cannot collide.
pub struct RedisBackend {
    manager: ConnectionManager,
    script: redis::Script,
    prefix: String,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection manager would print the URL, password included.
        f.debug_struct("RedisBackend")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A backend for `url` with keys under `prefix` (e.g. `kraliki:rl:`).
    /// Does not connect: the connection is made on first use and remade
    /// whenever it breaks.
    pub fn new(url: &str, prefix: &str) -> Result<Self, RateLimitError> {
        if prefix.is_empty() {
            return Err(RateLimitError::InvalidPrefix("must not be empty"));
        }
        if prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(RateLimitError::InvalidPrefix(
                "must not contain spaces or control characters",
            ));
        }

        Ok(Self {
            manager: redis_manager(url)?,
            script: redis::Script::new(RATE_LIMIT_SCRIPT),
            prefix: prefix.to_string(),
        })
    }

    /// Check that Redis answers. Like [`RedisBackend::hit`], a broken
    /// connection is retried once at once: the first call after Redis
    /// returns only triggers the reconnect. Callers bound the time spent.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        match self.ping_once().await {
            Err(e) if e.is_io_error() || e.is_unrecoverable_error() => self.ping_once().await,
            other => other,
        }
    }

    async fn ping_once(&self) -> redis::RedisResult<()> {
        let mut conn = self.manager.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await
    }

    /// Count one request by `key` against `rule` at `now_ms`. A broken
    /// connection is retried once at once, since the first call after Redis
    /// returns only triggers the reconnect. Callers bound the time spent.
    pub async fn hit(&self, rule: &Rule, key: &str, now_ms: u64) -> redis::RedisResult<Decision> {
        match self.hit_once(rule, key, now_ms).await {
            Err(e) if e.is_io_error() || e.is_unrecoverable_error() => {
                self.hit_once(rule, key, now_ms).await
            }
            other => other,
        }
    }

    async fn hit_once(&self, rule: &Rule, key: &str, now_ms: u64) -> redis::RedisResult<Decision> {
        let base = format!("{}{}@{}", self.prefix, rule.name, key);
        let mut conn = self.manager.clone();

        let reply: (i64, i64, i64, i64, i64, i64) = self
            .script
            .key(format!("{base}:c"))
            .key(format!("{base}:b"))
            .key(format!("{base}:v"))
            .arg(now_ms)
            .arg(rule.limit)
            .arg(rule.window_ms())
            .arg(DAY_MS)
            .invoke_async(&mut conn)
            .await?;

        let (allowed, remaining, wait_ms, violations, new_violation, block_ms) = reply;
        let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
        let raw = Raw {
            allowed: allowed == 1,
            remaining: unsigned(remaining),
            wait_ms: unsigned(wait_ms),
            violations: u32::try_from(violations.max(0)).unwrap_or(u32::MAX),
            new_violation: new_violation == 1,
            block_ms: unsigned(block_ms),
        };
        Ok(Decision::from_raw(rule.limit, raw))
    }
}

/// Why [`Limiter::ping_redis`] found Redis down. Neither form repeats the
/// URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum RedisDown {
    /// Redis answered with an error, or the connection failed.
    #[error("Redis failed: {0}")]
    Failed(#[source] redis::RedisError),
    /// No answer within [`REDIS_TIMEOUT`].
    #[error("Redis gave no answer within {} ms", REDIS_TIMEOUT.as_millis())]
    TimedOut,
}

/// Whether a Redis connection is failing, and when to try it again: while
/// it fails, one call per [`REDIS_RETRY_MS`] may try (the others go
/// straight to their in-process fallback, so an outage costs no timeout on
/// every request).
#[derive(Debug, Default)]
pub struct RedisHealth {
    degraded: AtomicBool,
    next_probe_ms: AtomicU64,
}

impl RedisHealth {
    /// Whether the last call failed.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Whether a call at `now` should use Redis: always while healthy;
    /// while degraded, only the one call that claims the next retry slot.
    pub fn due(&self, now: u64) -> bool {
        if !self.is_degraded() {
            return true;
        }
        let due = self.next_probe_ms.load(Ordering::Acquire);
        now >= due
            && self
                .next_probe_ms
                .compare_exchange(
                    due,
                    now.saturating_add(REDIS_RETRY_MS),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Redis answered; true on the one call that ends an outage.
    pub fn answered(&self) -> bool {
        self.degraded.swap(false, Ordering::AcqRel)
    }

    /// Redis failed at `now`; true on the one call that starts an outage.
    pub fn failed(&self, now: u64) -> bool {
        self.next_probe_ms
            .store(now.saturating_add(REDIS_RETRY_MS), Ordering::Release);
        !self.degraded.swap(true, Ordering::AcqRel)
    }
}

/// The result of [`Limiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// The decision on this request.
    pub decision: Decision,
    /// Redis just failed and the limiter switched to in-process limits;
    /// true on exactly one call per outage. Raise a `DEGRADED` event.
    pub degraded_now: bool,
    /// Redis answered again after an outage; true on exactly one call.
    pub recovered_now: bool,
}

/// The rate limiter: the settings, a clock, the in-process table and, when
/// configured, Redis. Share it behind an `Arc`.
pub struct Limiter {
    settings: RateLimitSettings,
    clock: Arc<dyn Clock>,
    local: InProcess,
    redis: Option<RedisBackend>,
    health: RedisHealth,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("enabled", &self.settings.enabled)
            .field("rules", &self.settings.rules.len())
            .field("local", &self.local)
            .field("redis", &self.redis)
            .field("degraded", &self.is_degraded())
            .finish()
    }
}

impl Limiter {
    /// A limiter for a single instance.
    pub fn in_process(
        settings: RateLimitSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RateLimitError> {
        settings.validate()?;
        Ok(Self {
            settings,
            clock,
            local: InProcess::new(DEFAULT_MAX_ENTRIES),
            redis: None,
            health: RedisHealth::default(),
        })
    }

    /// A limiter whose counts live in Redis at `url` under `prefix`,
    /// shared by every instance. Fails only on invalid settings, URL or
    /// prefix: an unreachable Redis is logged here and reported by the
    /// first [`Limiter::check`], which limits in-process meanwhile.
    pub async fn with_redis(
        settings: RateLimitSettings,
        clock: Arc<dyn Clock>,
        url: &str,
        prefix: &str,
    ) -> Result<Self, RateLimitError> {
        let backend = RedisBackend::new(url, prefix)?;
        let mut limiter = Self::in_process(settings, clock)?;

        match tokio::time::timeout(REDIS_TIMEOUT, backend.ping()).await {
            Ok(Ok(())) => tracing::info!(prefix, "rate limits shared through Redis"),
            Ok(Err(e)) => tracing::warn!(error = %e, "Redis for rate limits does not answer yet"),
            Err(_) => tracing::warn!("Redis for rate limits timed out at start-up"),
        }
        limiter.redis = Some(backend);
        Ok(limiter)
    }

    /// The settings in force.
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// Whether the limiter is configured for Redis.
    pub fn uses_redis(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether Redis is configured but failing, so limits are per instance.
    pub fn is_degraded(&self) -> bool {
        self.health.is_degraded()
    }

    /// Ask Redis whether it answers, within [`REDIS_TIMEOUT`], for readiness
    /// checks: `None` without Redis. Changes nothing about how requests are
    /// limited (only [`Limiter::check`] falls back and recovers).
    pub async fn ping_redis(&self) -> Option<Result<(), RedisDown>> {
        let redis = self.redis.as_ref()?;
        Some(
            match tokio::time::timeout(REDIS_TIMEOUT, redis.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(RedisDown::Failed(e)),
                Err(_) => Err(RedisDown::TimedOut),
            },
        )
    }

    /// Count one request by `key` (see [`ip_key`]) against `rule`, usually
    /// from [`RateLimitSettings::rule_for`]. Exempt rules allow without
    /// counting. With Redis, a failure or a call slower than
    /// [`REDIS_TIMEOUT`] limits this request in-process; while degraded, one
    /// request per [`REDIS_RETRY_MS`] tries Redis again.
    pub async fn check(&self, rule: &Rule, key: &str) -> Check {
        let now = self.clock.now_ms();
        let mut check = Check {
            decision: Decision::unlimited(rule),
            degraded_now: false,
            recovered_now: false,
        };
        if rule.exempt {
            return check;
        }

        let Some(redis) = self.redis.as_ref().filter(|_| self.health.due(now)) else {
            check.decision = self.local.hit(rule, key, now);
            return check;
        };

        let failure = match tokio::time::timeout(REDIS_TIMEOUT, redis.hit(rule, key, now)).await {
            Ok(Ok(decision)) => {
                check.decision = decision;
                check.recovered_now = self.health.answered();
                if check.recovered_now {
                    tracing::info!("Redis answers again; rate limits are shared again");
                }
                return check;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", REDIS_TIMEOUT.as_millis()),
        };

        check.degraded_now = self.health.failed(now);
        if check.degraded_now {
            tracing::warn!(
                error = %failure,
                "Redis failed; rate limits fall back to this instance alone"
            );
        } else {
            tracing::debug!(error = %failure, "Redis still failing");
        }
        check.decision = self.local.hit(rule, key, now);
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, TcpListener};
    use std::process::{Child, Command, Stdio};

    const REDIS_URL: &str = "redis://127.0.0.1:6379";
    const START_MS: u64 = 1_800_000_000_000;
    const MIN: Duration = Duration::from_secs(60);

    fn settings(rules: Vec<Rule>) -> RateLimitSettings {
        RateLimitSettings {
            enabled: true,
            rules,
        }
    }

    fn login() -> Rule {
        Rule::limited("login", Some("POST"), "/api/auth/login", 5, 900)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    // ---- rules ----

    #[test]
    fn most_specific_rule_wins() {
        let s = RateLimitSettings::default();
        s.validate().unwrap();
        let name = |m: &str, p: &str| s.find(m, p).map(|r| r.name.as_str());

        assert_eq!(name("POST", "/api/auth/login"), Some("login"));
        assert_eq!(name("POST", "/api/auth/session"), Some("login"));
        assert_eq!(name("GET", "/api/auth/login"), Some("api"));
        assert_eq!(name("POST", "/api/auth/register"), Some("register"));
        assert_eq!(
            name("POST", "/api/auth/forgot-password"),
            Some("forgot_password")
        );
        assert_eq!(name("POST", "/api/webhooks/twilio/voice"), Some("webhooks"));
        assert_eq!(name("GET", "/api/calls/123/notes"), Some("calls"));
        assert_eq!(name("GET", "/api/campaigns"), Some("api"));
        assert_eq!(name("GET", "/api"), Some("api"));
        assert_eq!(name("GET", "/"), Some("default"));
        assert_eq!(name("GET", "/docs/index.html"), Some("default"));
    }

    #[test]
    fn prefix_matches_the_bare_path_but_not_a_longer_name() {
        let s = RateLimitSettings::default();
        assert_eq!(s.find("GET", "/api/calls").unwrap().name, "calls");
        assert_eq!(s.find("GET", "/api/calls/").unwrap().name, "calls");
        assert_eq!(s.find("GET", "/api/callsx").unwrap().name, "api");
        assert_eq!(s.find("GET", "/apix").unwrap().name, "default");
    }

    #[test]
    fn longer_prefix_beats_shorter_and_exact_beats_prefix() {
        let s = settings(vec![
            Rule::limited("all", None, "*", 1, 1),
            Rule::limited("root", None, "/*", 1, 1),
            Rule::limited("a", None, "/a/*", 1, 1),
            Rule::limited("ab", None, "/a/b/*", 1, 1),
            Rule::limited("exact", None, "/a/b/c", 1, 1),
        ]);
        s.validate().unwrap();
        let name = |p: &str| s.find("GET", p).unwrap().name.clone();

        assert_eq!(name("/a/b/c"), "exact");
        assert_eq!(name("/a/b/c/d"), "ab");
        assert_eq!(name("/a/x"), "a");
        assert_eq!(name("/x"), "root");
        assert_eq!(name("x"), "all");
    }

    #[test]
    fn method_beats_no_method_only_at_equal_path_specificity() {
        let s = settings(vec![
            Rule::limited("any", None, "/api/x/*", 1, 1),
            Rule::limited("post", Some("POST"), "/api/x/*", 1, 1),
            Rule::limited("post_api", Some("POST"), "/api/*", 1, 1),
            Rule::limited("exact_any", None, "/api/x/y", 1, 1),
        ]);
        s.validate().unwrap();

        assert_eq!(s.find("POST", "/api/x/z").unwrap().name, "post");
        assert_eq!(s.find("GET", "/api/x/z").unwrap().name, "any");
        assert_eq!(s.find("POST", "/api/x/y").unwrap().name, "exact_any");
        assert_eq!(s.find("POST", "/api/q").unwrap().name, "post_api");
        assert!(s.find("GET", "/api/q").is_none());
    }

    #[test]
    fn exempt_rules_and_disabled_limits_yield_no_rule_to_enforce() {
        let mut s = RateLimitSettings::default();
        for path in [
            "/health",
            "/ready",
            "/static/app.js",
            "/assets/x.css",
            "/favicon.ico",
        ] {
            assert!(s.find("GET", path).unwrap().exempt, "{path}");
            assert!(s.rule_for("GET", path).is_none(), "{path}");
        }
        assert_eq!(s.rule_for("GET", "/healthz").unwrap().name, "default");

        s.enabled = false;
        assert!(s.rule_for("POST", "/api/auth/login").is_none());
    }

    #[test]
    fn validation_rejects_bad_rules() {
        let bad = |rule: Rule| settings(vec![rule]).validate().is_err();

        assert!(bad(Rule::limited("zero", None, "/a", 0, 60)));
        assert!(bad(Rule::limited("nowin", None, "/a", 1, 0)));
        assert!(bad(Rule::limited(
            "long",
            None,
            "/a",
            1,
            MAX_WINDOW_SECS + 1
        )));
        assert!(bad(Rule::limited("1st", None, "/a", 1, 1)));
        assert!(bad(Rule::limited("has space", None, "/a", 1, 1)));
        assert!(bad(Rule::limited("quo\"te", None, "/a", 1, 1)));
        assert!(bad(Rule::limited("", None, "/a", 1, 1)));
        assert!(bad(Rule::limited("m", Some("post"), "/a", 1, 1)));
        assert!(bad(Rule::limited("p", None, "a", 1, 1)));
        assert!(bad(Rule::limited("p", None, "/a*", 1, 1)));
        assert!(bad(Rule::limited("p", None, "/*/a", 1, 1)));
        assert!(bad(Rule::limited("p", None, "/a?b=1", 1, 1)));
        assert!(!bad(Rule::limited("ok:v1/x", Some("GET"), "/a/*", 1, 1)));
        assert!(!bad(Rule::exempt("health", "/health")));

        let dup_budget = settings(vec![
            Rule::limited("x", None, "/a", 1, 60),
            Rule::limited("x", None, "/b", 2, 60),
        ]);
        assert!(dup_budget.validate().is_err());
        let dup_route = settings(vec![
            Rule::limited("x", None, "/a", 1, 60),
            Rule::limited("y", None, "/a", 1, 60),
        ]);
        assert!(dup_route.validate().is_err());
    }

    #[test]
    fn rules_load_from_toml_and_defaults_round_trip() {
        let text = r#"
            enabled = true
            [[rules]]
            name = "login"
            method = "POST"
            path = "/api/auth/login"
            limit = 5
            window_secs = 900
            [[rules]]
            name = "exports"
            path = "/api/exports/*"
            limit = 10
            window_secs = 3600
            key = "user"
            [[rules]]
            name = "health"
            path = "/health"
            exempt = true
        "#;
        let s: RateLimitSettings = toml::from_str(text).unwrap();
        s.validate().unwrap();
        assert_eq!(s.rules[0], login());
        assert_eq!(s.rules[1].key, KeyKind::User);
        assert_eq!(s.rules[1].method, None);
        assert!(s.rules[2].exempt);

        let typo = "[[rules]]\nname = \"x\"\npath = \"/a\"\nlimit = 1\nwindow_sec = 1\n";
        assert!(toml::from_str::<RateLimitSettings>(typo).is_err());
        let bad_key = "[[rules]]\nname = \"x\"\npath = \"/a\"\nkey = \"session\"\n";
        assert!(toml::from_str::<RateLimitSettings>(bad_key).is_err());

        let defaults = RateLimitSettings::default();
        let rendered = toml::to_string(&defaults).unwrap();
        assert_eq!(
            toml::from_str::<RateLimitSettings>(&rendered).unwrap(),
            defaults
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let v4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
        assert_eq!(ip_key(v4), "203.0.113.7");
        assert_eq!(ip_key("::ffff:203.0.113.7".parse().unwrap()), "203.0.113.7");
        assert_eq!(
            ip_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            ip_key("2001:db8:1:2::1".parse().unwrap()),
            ip_key("2001:db8:1:2:ffff::9".parse().unwrap())
        );
    }

    // ---- header fields ----

    #[test]
    fn header_fields_follow_draft_10() {
        assert_eq!(policy_header(&login()), r#""login";q=5;w=900"#);

        let d = Decision {
            allowed: false,
            limit: 5,
            remaining: 0,
            reset_secs: 840,
            retry_after_secs: 840,
            violations: 1,
            new_violation: true,
            block_secs: 840,
        };
        assert_eq!(ratelimit_header(&login(), &d), r#""login";r=0;t=840"#);

        let odd = Rule::limited("a\"b\\c\n", None, "/", 1, 1);
        assert_eq!(policy_header(&odd), r#""a\"b\\c";q=1;w=1"#);
    }

    #[test]
    fn headers_from_a_real_decision() {
        let clock = ManualClock::new(START_MS);
        let local = InProcess::new(100);
        let rule = login();
        let first = local.hit(&rule, "k", clock.now_ms());
        assert_eq!(ratelimit_header(&rule, &first), r#""login";r=4;t=900"#);

        clock.advance(MIN);
        let second = local.hit(&rule, "k", clock.now_ms());
        assert_eq!(ratelimit_header(&rule, &second), r#""login";r=3;t=840"#);
    }

    // ---- the algorithm, on any backend ----

    /// A limiter under test with a hand-driven clock.
    struct Subject {
        limiter: Limiter,
        clock: ManualClock,
        redis: bool,
    }

    impl Subject {
        fn in_process() -> Self {
            let clock = ManualClock::new(START_MS);
            let limiter =
                Limiter::in_process(settings(vec![login()]), Arc::new(clock.clone())).unwrap();
            Self {
                limiter,
                clock,
                redis: false,
            }
        }

        async fn redis(prefix: &str) -> Self {
            let clock = ManualClock::new(START_MS);
            let limiter = redis_limiter(&clock, prefix).await;
            Self {
                limiter,
                clock,
                redis: true,
            }
        }

        async fn hit(&self, key: &str) -> Decision {
            let check = self.limiter.check(&login(), key).await;
            if self.redis {
                assert!(
                    !check.degraded_now && !self.limiter.is_degraded(),
                    "Redis at {REDIS_URL} must be reachable for this test"
                );
            }
            check.decision
        }

        /// Use up the quota and return the refused hit that follows.
        async fn violate(&self, key: &str) -> Decision {
            for _ in 0..5 {
                assert!(self.hit(key).await.allowed);
            }
            let refused = self.hit(key).await;
            assert!(!refused.allowed);
            assert!(refused.new_violation);
            refused
        }
    }

    async fn five_then_refused(s: &Subject) {
        for i in 0..5 {
            let d = s.hit("203.0.113.7").await;
            assert!(d.allowed);
            assert_eq!(d.limit, 5);
            assert_eq!(d.remaining, 4 - i);
            assert_eq!(d.reset_secs, 900 - 10 * i);
            assert_eq!(d.retry_after_secs, 0);
            s.clock.advance(secs(10));
        }

        let sixth = s.hit("203.0.113.7").await;
        assert!(!sixth.allowed);
        assert_eq!(sixth.remaining, 0);
        assert_eq!(sixth.retry_after_secs, 850);
        assert_eq!(sixth.reset_secs, 850);
        assert_eq!(sixth.violations, 1);
        assert!(sixth.new_violation);
        assert_eq!(sixth.block_secs, 850);

        // Another key is untouched.
        assert_eq!(s.hit("198.51.100.1").await.remaining, 4);

        // Refused during the block, without escalating.
        s.clock.advance(secs(100));
        let during = s.hit("203.0.113.7").await;
        assert!(!during.allowed);
        assert!(!during.new_violation);
        assert_eq!(during.violations, 1);
        assert_eq!(during.retry_after_secs, 750);

        // The window resets when the block ends.
        s.clock.advance(secs(750));
        let after = s.hit("203.0.113.7").await;
        assert!(after.allowed);
        assert_eq!(after.remaining, 4);
        assert_eq!(after.violations, 1);
    }

    async fn blocks_double_and_cap_at_a_day(s: &Subject) {
        let key = "203.0.113.8";
        let first = s.violate(key).await;
        assert_eq!((first.violations, first.block_secs), (1, 900));

        let mut expected = 900;
        for n in 2..=8u32 {
            s.clock.advance(secs(expected));
            let d = s.violate(key).await;
            expected = (900 * (1u64 << (n - 1))).min(86_400);
            assert_eq!(d.violations, n);
            assert_eq!(d.block_secs, expected, "violation {n}");
            assert_eq!(d.retry_after_secs, expected);
        }
        assert_eq!(expected, 86_400);

        // Just before the capped block ends: still refused.
        s.clock.advance(secs(86_399));
        assert!(!s.hit(key).await.allowed);
    }

    async fn old_violations_are_forgotten(s: &Subject) {
        let key = "203.0.113.9";
        s.violate(key).await;
        s.clock.advance(secs(900));
        let second = s.violate(key).await;
        assert_eq!((second.violations, second.block_secs), (2, 1800));

        // A day after the last violation the doubling starts over.
        s.clock.advance(Duration::from_millis(DAY_MS));
        let d = s.hit(key).await;
        assert!(d.allowed);
        assert_eq!(d.violations, 0);
        s.clock.advance(secs(100));
        for _ in 0..4 {
            assert!(s.hit(key).await.allowed);
        }
        let again = s.hit(key).await;
        assert!(again.new_violation);
        assert_eq!(again.violations, 1);
        assert_eq!(
            again.block_secs, 800,
            "the rest of the window, not a doubling"
        );
    }

    #[tokio::test]
    async fn in_process_five_then_refused() {
        five_then_refused(&Subject::in_process()).await;
    }

    #[tokio::test]
    async fn in_process_blocks_double_and_cap_at_a_day() {
        blocks_double_and_cap_at_a_day(&Subject::in_process()).await;
    }

    #[tokio::test]
    async fn in_process_old_violations_are_forgotten() {
        old_violations_are_forgotten(&Subject::in_process()).await;
    }

    #[tokio::test]
    async fn exempt_rules_are_never_counted() {
        let s = Subject::in_process();
        let health = Rule::exempt("health", "/health");
        for _ in 0..1000 {
            assert!(s.limiter.check(&health, "k").await.decision.allowed);
        }
        assert!(s.limiter.local.is_empty());
    }

    #[test]
    fn table_stays_bounded_and_keeps_blocked_keys() {
        let clock = ManualClock::new(START_MS);
        let table = InProcess::new(SHARDS * 40);
        let rule = Rule::limited("r", None, "*", 1, 60);

        table.hit(&rule, "attacker", clock.now_ms());
        assert!(!table.hit(&rule, "attacker", clock.now_ms()).allowed);

        for i in 0..20_000 {
            table.hit(&rule, &format!("spray-{i}"), clock.now_ms());
        }
        assert!(table.len() <= SHARDS * 40, "{} entries", table.len());
        assert!(!table.hit(&rule, "attacker", clock.now_ms()).allowed);
    }

    #[test]
    fn expired_entries_are_pruned() {
        let clock = ManualClock::new(START_MS);
        let table = InProcess::new(1000);
        let rule = Rule::limited("r", None, "*", 10, 60);
        for i in 0..500 {
            table.hit(&rule, &format!("k{i}"), clock.now_ms());
        }
        assert_eq!(table.len(), 500);

        // Each shard prunes on its first hit a minute on.
        clock.advance(secs(61));
        for i in 0..500 {
            table.hit(&rule, &format!("new{i}"), clock.now_ms());
        }
        assert_eq!(table.len(), 500);

        clock.advance(secs(61));
        table.prune(clock.now_ms());
        assert!(table.is_empty());
    }

    // ---- Redis ----

    fn unique_prefix() -> String {
        let nanos = SystemClock.now_ms();
        let salt = RandomState::new().hash_one(nanos) % 1_000_000_007;
        format!("kraliki-test:{}:{nanos}:{salt}:", std::process::id())
    }

    async fn redis_limiter(clock: &ManualClock, prefix: &str) -> Limiter {
        Limiter::with_redis(
            settings(vec![login()]),
            Arc::new(clock.clone()),
            REDIS_URL,
            prefix,
        )
        .await
        .unwrap()
    }

    /// Fails the test when the shared Redis is not there, then removes the
    /// test's keys when done.
    async fn with_redis_keys<F: std::future::Future<Output = ()>>(prefix: &str, test: F) {
        let client = redis::Client::open(REDIS_URL).unwrap();
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis at {REDIS_URL} is required: {e}"));

        test.await;

        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!keys.is_empty(), "the test wrote to Redis");
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn redis_five_then_refused() {
        let prefix = unique_prefix();
        with_redis_keys(&prefix, async {
            five_then_refused(&Subject::redis(&prefix).await).await;
        })
        .await;
    }

    #[tokio::test]
    async fn redis_blocks_double_and_cap_at_a_day() {
        let prefix = unique_prefix();
        with_redis_keys(&prefix, async {
            blocks_double_and_cap_at_a_day(&Subject::redis(&prefix).await).await;
        })
        .await;
    }

    #[tokio::test]
    async fn redis_old_violations_are_forgotten() {
        let prefix = unique_prefix();
        with_redis_keys(&prefix, async {
            old_violations_are_forgotten(&Subject::redis(&prefix).await).await;
        })
        .await;
    }

    #[tokio::test]
    async fn redis_and_in_process_decide_alike() {
        let prefix = unique_prefix();
        with_redis_keys(&prefix, async {
            let local = Subject::in_process();
            let shared = Subject::redis(&prefix).await;
            let steps = [0, 1, 30, 0, 0, 200, 0, 0, 700, 1, 0, 0, 0, 0, 0, 0, 1800, 3];
            for _round in 0..3 {
                for step in steps {
                    local.clock.advance(secs(step));
                    shared.clock.advance(secs(step));
                    assert_eq!(local.hit("k").await, shared.hit("k").await);
                }
            }
        })
        .await;
    }

    #[tokio::test]
    async fn two_instances_share_one_count() {
        let prefix = unique_prefix();
        with_redis_keys(&prefix, async {
            let clock = ManualClock::new(START_MS);
            let a = redis_limiter(&clock, &prefix).await;
            let b = redis_limiter(&clock, &prefix).await;
            let rule = login();

            for _ in 0..3 {
                assert!(a.check(&rule, "203.0.113.7").await.decision.allowed);
            }
            for _ in 0..2 {
                assert!(b.check(&rule, "203.0.113.7").await.decision.allowed);
            }
            let sixth = b.check(&rule, "203.0.113.7").await;
            assert!(!sixth.degraded_now);
            assert!(!sixth.decision.allowed);
            assert!(!a.check(&rule, "203.0.113.7").await.decision.allowed);
            assert!(!a.is_degraded() && !b.is_degraded());
        })
        .await;
    }

    // ---- fallback and recovery ----

    #[tokio::test]
    async fn unreachable_redis_falls_back_and_reports_once() {
        let clock = ManualClock::new(START_MS);
        let limiter = Limiter::with_redis(
            settings(vec![login()]),
            Arc::new(clock.clone()),
            "redis://127.0.0.1:1",
            "kraliki:rl:",
        )
        .await
        .unwrap();
        let rule = login();

        let mut reports = 0;
        for _ in 0..5 {
            let check = limiter.check(&rule, "k").await;
            assert!(check.decision.allowed);
            assert!(!check.recovered_now);
            reports += usize::from(check.degraded_now);
            clock.advance(secs(2));
        }
        let sixth = limiter.check(&rule, "k").await;
        assert!(!sixth.decision.allowed, "limits still hold while degraded");
        reports += usize::from(sixth.degraded_now);

        assert_eq!(reports, 1);
        assert!(limiter.is_degraded());
    }

    #[tokio::test]
    async fn silent_redis_times_out_and_falls_back() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });

        let clock = ManualClock::new(START_MS);
        let limiter = Limiter::with_redis(
            settings(vec![login()]),
            Arc::new(clock.clone()),
            &format!("redis://127.0.0.1:{port}"),
            "kraliki:rl:",
        )
        .await
        .unwrap();

        let started = std::time::Instant::now();
        let check = limiter.check(&login(), "k").await;
        assert!(started.elapsed() < REDIS_TIMEOUT * 3);
        assert!(check.degraded_now);
        assert_eq!(check.decision.remaining, 4);

        // Until the next retry is due, no time is spent on Redis.
        let started = std::time::Instant::now();
        let check = limiter.check(&login(), "k").await;
        assert!(started.elapsed() < Duration::from_millis(50));
        assert!(!check.degraded_now);
        assert_eq!(check.decision.remaining, 3);
        held.abort();
    }

    /// A throwaway `redis-server` on a fixed port, killed when dropped.
    struct ChildRedis {
        child: Child,
    }

    impl ChildRedis {
        async fn start(port: u16) -> Self {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed for this test");
            let server = Self { child };

            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
            for _ in 0..250 {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    if redis::cmd("PING")
                        .query_async::<()>(&mut conn)
                        .await
                        .is_ok()
                    {
                        return server;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("redis-server on port {port} did not start");
        }

        fn stop(mut self) {
            self.kill();
        }

        fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for ChildRedis {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn recovers_when_redis_comes_back() {
        let port = free_port();
        let clock = ManualClock::new(START_MS);
        let limiter = Limiter::with_redis(
            settings(vec![login()]),
            Arc::new(clock.clone()),
            &format!("redis://127.0.0.1:{port}"),
            "kraliki:rl:",
        )
        .await
        .unwrap();
        let rule = login();

        // Redis not there yet.
        let check = limiter.check(&rule, "k").await;
        assert!(check.degraded_now && !check.recovered_now);

        // It starts; the next retry finds it.
        let server = ChildRedis::start(port).await;
        let check = limiter.check(&rule, "k").await;
        assert!(!check.recovered_now, "no retry before the interval");
        clock.advance(Duration::from_millis(REDIS_RETRY_MS));
        let check = limiter.check(&rule, "k").await;
        assert!(check.recovered_now && !check.degraded_now);
        assert!(!limiter.is_degraded());
        assert_eq!(check.decision.remaining, 4, "Redis starts its own count");

        // It dies: degraded again, exactly once.
        server.stop();
        let check = limiter.check(&rule, "k").await;
        assert!(check.degraded_now);
        clock.advance(Duration::from_millis(REDIS_RETRY_MS));
        assert!(!limiter.check(&rule, "k").await.degraded_now);

        // It is restarted: recovered again.
        let _server = ChildRedis::start(port).await;
        clock.advance(Duration::from_millis(REDIS_RETRY_MS));
        let check = limiter.check(&rule, "k").await;
        assert!(check.recovered_now);
        assert!(!limiter.is_degraded());
        assert_eq!(check.decision.remaining, 4, "the new server kept nothing");
    }

    #[tokio::test]
    async fn ping_redis_follows_the_server_and_finds_it_again_at_once() {
        let clock = ManualClock::new(START_MS);
        let local = Limiter::in_process(settings(vec![login()]), Arc::new(clock.clone())).unwrap();
        assert!(
            local.ping_redis().await.is_none(),
            "no Redis, nothing to ask"
        );

        let port = free_port();
        let limiter = Limiter::with_redis(
            settings(vec![login()]),
            Arc::new(clock.clone()),
            &format!("redis://127.0.0.1:{port}"),
            "kraliki:rl:",
        )
        .await
        .unwrap();
        let err = limiter.ping_redis().await.unwrap().unwrap_err();
        assert!(!err.to_string().contains(&port.to_string()), "{err}");

        let server = ChildRedis::start(port).await;
        // The first ping after Redis returns already answers: the stale
        // connection is replaced within the same call.
        limiter.ping_redis().await.unwrap().unwrap();
        server.stop();
        assert!(limiter.ping_redis().await.unwrap().is_err());
        let _server = ChildRedis::start(port).await;
        limiter.ping_redis().await.unwrap().unwrap();
        // Pinging is only a question: the limiter never went degraded.
        assert!(!limiter.is_degraded());
    }
}
