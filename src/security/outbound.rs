//! The outbound request guard: the one HTTP client for everything the
//! server calls out to (alert webhooks today, provider callbacks later).
//!
//! A server that fetches URLs an operator or user typed can be turned
//! against its own network (server-side request forgery). The guard refuses
//! every address that is not globally routable, wherever it appears:
//!
//! - loopback, unspecified, private (RFC 1918, `fc00::/7`), link-local
//!   (`169.254.0.0/16`, `fe80::/10`), carrier-grade NAT (`100.64.0.0/10`),
//!   broadcast, multicast, documentation, benchmarking and reserved ranges;
//! - the same addresses hidden inside IPv6: IPv4-mapped (`::ffff:a.b.c.d`),
//!   IPv4-compatible, IPv4-translated, NAT64 (`64:ff9b::/96`) and 6to4
//!   (`2002::/16`) forms; Teredo and local-use NAT64 are refused outright;
//! - cloud metadata services (`169.254.169.254`, `169.254.170.2`,
//!   `fd00:ec2::254`, `100.100.100.200`, `192.0.0.192`), which no allow-list
//!   entry can open.
//!
//! Host names are checked after DNS resolution, by a resolver that connects
//! only to the addresses it vetted, so a name cannot be re-pointed between
//! the check and the connection. IP literals never reach a resolver; they
//! are checked before sending. Every redirect target is checked the same
//! way, redirects from https to http are refused, and at most
//! [`MAX_REDIRECTS`] are followed. Only `http` and `https` URLs are called,
//! never through a proxy, and no `Referer` is sent.
//!
//! `outbound.allow` opens addresses or ranges that would otherwise be
//! refused, for intranet deployments and tests.
//!
//! Errors are [`OutboundError`]; their messages name the host and never the
//! full URL, whose path or query may carry a credential.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::{Deserialize, Serialize};

/// Redirects followed per request.
pub const MAX_REDIRECTS: usize = 5;

/// Outbound request settings (`[outbound]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundSettings {
    /// Addresses or CIDRs the server may call although they are private,
    /// loopback or otherwise refused (e.g. `10.20.0.0/16` for an intranet
    /// alert receiver). Empty by default. Cloud metadata addresses stay
    /// refused whatever this says. Risk: every listed range becomes
    /// reachable by any URL the server is told to call.
    pub allow: Vec<String>,
    /// Whole-request timeout, seconds, connection included. Default 10.
    pub timeout_secs: u64,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        OutboundSettings {
            allow: Vec::new(),
            timeout_secs: 10,
        }
    }
}

impl OutboundSettings {
    /// Check the settings; the message names the setting and the fix.
    pub fn validate(&self) -> Result<(), String> {
        self.allow_list()?;
        if self.timeout_secs == 0 {
            return Err("outbound.timeout_secs must be a positive number of seconds".into());
        }
        Ok(())
    }

    /// `allow`, parsed.
    fn allow_list(&self) -> Result<Vec<IpNet>, String> {
        self.allow
            .iter()
            .map(|entry| {
                let net = crate::config::parse_proxy(entry).ok_or_else(|| {
                    format!(
                        "outbound.allow: {entry:?} is not an IP address or CIDR \
                         (e.g. 10.20.0.0/16)"
                    )
                })?;
                if net.prefix_len() == 0 {
                    return Err(format!(
                        "outbound.allow: {entry:?} would open every address; list the \
                         intranet ranges the server must reach instead"
                    ));
                }
                Ok(net)
            })
            .collect()
    }
}

/// Why an outbound request was not made or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The URL does not parse or has no host.
    #[error("the URL is not a valid absolute http or https URL")]
    InvalidUrl,
    /// The scheme is neither `http` nor `https`.
    #[error("only http and https URLs may be called, not {scheme}")]
    Scheme {
        /// The refused scheme.
        scheme: String,
    },
    /// The host is, or resolves to, a refused address.
    #[error("refused to call {host}: {address} is not a public address")]
    Forbidden {
        /// Host name or IP literal of the URL.
        host: String,
        /// The refused address.
        address: IpAddr,
    },
    /// The host name did not resolve.
    #[error("{host} did not resolve to any address")]
    Resolve {
        /// Host name.
        host: String,
    },
    /// A redirect was refused: too many, or from https to http.
    #[error("a redirect from {host} was refused: {reason}")]
    Redirect {
        /// Host that answered with the redirect.
        host: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// No complete answer within the timeout.
    #[error("the request to {host} timed out")]
    Timeout {
        /// Host of the URL.
        host: String,
    },
    /// Connection or protocol failure.
    #[error("the request to {host} failed: {reason}")]
    Transport {
        /// Host of the URL.
        host: String,
        /// The failure, without the URL.
        reason: String,
    },
    /// The client could not be built (TLS setup).
    #[error("the outbound HTTP client could not be built: {0}")]
    Setup(String),
}

impl OutboundError {
    /// Whether trying again later may succeed (timeouts, connection
    /// failures, DNS), as opposed to a refusal that will not change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            OutboundError::Resolve { .. }
                | OutboundError::Timeout { .. }
                | OutboundError::Transport { .. }
        )
    }
}

/// Replaces DNS in tests: host name to addresses.
pub type Lookup = Arc<dyn Fn(&str) -> Vec<IpAddr> + Send + Sync>;

/// Which addresses the server may call.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// A policy refusing every non-public address except those in `allow`.
    pub fn new(allow: Vec<IpNet>) -> Self {
        AddressPolicy { allow }
    }

    /// Whether the server may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if is_metadata(ip) {
            return false;
        }
        let canonical = ip.to_canonical();
        if self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            return true;
        }
        !is_refused(ip)
    }

    /// Check every address `host` resolved to. One refused address refuses
    /// the host: a public name has no business pointing inward.
    fn vet(&self, host: &str, addrs: Vec<IpAddr>) -> Result<Vec<IpAddr>, OutboundError> {
        if addrs.is_empty() {
            return Err(OutboundError::Resolve {
                host: host.to_string(),
            });
        }
        if let Some(address) = addrs.iter().copied().find(|ip| !self.permits(*ip)) {
            return Err(OutboundError::Forbidden {
                host: host.to_string(),
                address,
            });
        }
        Ok(addrs)
    }

    /// Check a URL before it is requested: the scheme, and the host when it
    /// is an IP literal (names are checked by the resolver).
    pub fn check_url(&self, url: &Url) -> Result<(), OutboundError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::Scheme {
                scheme: url.scheme().to_string(),
            });
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(OutboundError::InvalidUrl);
        };
        // The URL parser has already normalized IPv4 literals in any
        // spelling (`2130706433`, `0x7f.1`) to dotted decimal, and IPv6
        // literals to their bracketed form.
        let literal = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        };
        let Some(ip) = literal else {
            return Ok(());
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(OutboundError::Forbidden {
                host: host_of(url),
                address: ip,
            })
        }
    }
}

/// The host of a URL for messages (never the path or query).
fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or_default().to_string()
}

/// Cloud metadata services, in any IPv6 disguise. Never allowed.
pub fn is_metadata(ip: IpAddr) -> bool {
    const V4: [Ipv4Addr; 4] = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(169, 254, 170, 2),
        Ipv4Addr::new(100, 100, 100, 200),
        Ipv4Addr::new(192, 0, 0, 192),
    ];
    const V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254)];
    match ip {
        IpAddr::V4(v4) => V4.contains(&v4),
        IpAddr::V6(v6) => V6.contains(&v6) || embedded_v4(v6).is_some_and(|v4| V4.contains(&v4)),
    }
}

/// IPv4 ranges that are not globally routable: (network, prefix length).
const REFUSED_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network", unspecified
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // carrier-grade NAT
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation
    ([203, 0, 113, 0], 24),  // documentation
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, broadcast
];

/// IPv6 ranges refused outright (embedded IPv4 forms are handled apart).
const REFUSED_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),     // discard-only
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32),    // Teredo
    (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0), 48),    // benchmarking
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),    // documentation
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),     // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),    // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),    // site-local
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),     // multicast
];

/// Whether `ip` lies in a range that is not globally routable. IPv6 forms
/// that carry an IPv4 address are judged by that address.
pub fn is_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => refused_v4(v4),
            None => REFUSED_V6
                .iter()
                .any(|(net, len)| in_prefix(v6.to_bits(), net.to_bits(), *len, 128)),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let bits = u128::from(ip.to_bits());
    REFUSED_V4
        .iter()
        .any(|(net, len)| in_prefix(bits, u128::from(u32::from_be_bytes(*net)), *len, 32))
}

/// Whether the top `len` of `width` bits of `addr` and `net` agree.
fn in_prefix(addr: u128, net: u128, len: u8, width: u32) -> bool {
    let shift = width - u32::from(len);
    if shift >= width {
        return true;
    }
    addr >> shift == net >> shift
}

/// The IPv4 address an IPv6 address carries, for the forms that route to
/// it: IPv4-mapped, IPv4-compatible (which includes `::` and `::1`),
/// IPv4-translated, NAT64 well-known prefix and 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    let low = Ipv4Addr::from_bits(bits as u32);
    let s = ip.segments();
    let mapped = bits >> 32 == 0xffff;
    let compatible = bits >> 32 == 0;
    let translated = bits >> 32 == 0xffff_0000;
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if mapped || compatible || translated || nat64 {
        return Some(low);
    }
    if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// Resolves with the system resolver (or a test lookup) and refuses names
/// that point at refused addresses. The connection goes to exactly the
/// addresses returned here.
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
    lookup: Option<Lookup>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let lookup = self.lookup.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = match lookup {
                Some(lookup) => lookup(&host),
                None => match tokio::net::lookup_host((host.as_str(), 0)).await {
                    Ok(found) => found.map(|sa| sa.ip()).collect(),
                    Err(_) => Vec::new(),
                },
            };
            let vetted = policy.vet(&host, addrs)?;
            let addrs: Addrs = Box::new(vetted.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok::<_, Box<dyn StdError + Send + Sync>>(addrs)
        })
    }
}

/// The guarded HTTP client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct OutboundClient {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl OutboundClient {
    /// A client resolving names with the system resolver.
    pub fn new(settings: &OutboundSettings) -> Result<Self, OutboundError> {
        Self::build(settings, None)
    }

    /// A client resolving names with `lookup` instead of DNS (tests).
    pub fn with_resolver(
        settings: &OutboundSettings,
        lookup: Lookup,
    ) -> Result<Self, OutboundError> {
        Self::build(settings, Some(lookup))
    }

    fn build(settings: &OutboundSettings, lookup: Option<Lookup>) -> Result<Self, OutboundError> {
        Self::build_with(settings, lookup, |builder| builder)
    }

    /// [`OutboundClient::build`], with `adjust` applied last to the
    /// configured builder (the unit tests add a test certificate authority).
    fn build_with(
        settings: &OutboundSettings,
        lookup: Option<Lookup>,
        adjust: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<Self, OutboundError> {
        let allow = settings.allow_list().map_err(OutboundError::Setup)?;
        let policy = Arc::new(AddressPolicy::new(allow));
        let timeout = Duration::from_secs(settings.timeout_secs.max(1));

        let resolver = GuardedResolver {
            policy: policy.clone(),
            lookup,
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .referer(false)
            .user_agent("kraliki")
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(redirect_policy(policy.clone()))
            .dns_resolver(Arc::new(resolver));
        let client = adjust(client)
            .build()
            .map_err(|e| OutboundError::Setup(error_chain(&e.without_url())))?;
        Ok(OutboundClient { client, policy })
    }

    /// The address policy in force.
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Start a request to `url` after checking its scheme and, for an IP
    /// literal, its address. Send it with [`OutboundClient::send`].
    pub fn request(&self, method: Method, url: &str) -> Result<RequestBuilder, OutboundError> {
        let url = Url::parse(url).map_err(|_| OutboundError::InvalidUrl)?;
        self.policy.check_url(&url)?;
        Ok(self.client.request(method, url))
    }

    /// Send a request through this client, whatever client built it. The
    /// URL is checked again, names are checked when resolved, and each
    /// redirect is checked before it is followed.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, OutboundError> {
        let request = request.build().map_err(|_| OutboundError::InvalidUrl)?;
        self.policy.check_url(request.url())?;
        let host = host_of(request.url());

        self.client
            .execute(request)
            .await
            .map_err(|e| classify(e, &host))
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Response, OutboundError> {
        self.send(self.request(Method::GET, url)?).await
    }
}

/// Follow at most [`MAX_REDIRECTS`] redirects, each to an allowed target
/// and never from https to http.
fn redirect_policy(policy: Arc<AddressPolicy>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let from = attempt.previous().last().map(host_of).unwrap_or_default();
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(OutboundError::Redirect {
                host: from,
                reason: "too many redirects",
            });
        }
        let downgrade = attempt
            .previous()
            .last()
            .is_some_and(|prev| prev.scheme() == "https")
            && attempt.url().scheme() == "http";
        if downgrade {
            return attempt.error(OutboundError::Redirect {
                host: from,
                reason: "from https to http",
            });
        }
        match policy.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    })
}

/// Turn a client error into an [`OutboundError`]: a refusal raised by the
/// resolver or the redirect policy is found in the cause chain.
fn classify(err: reqwest::Error, host: &str) -> OutboundError {
    let mut cause: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(e) = cause {
        if let Some(refusal) = e.downcast_ref::<OutboundError>() {
            return refusal.clone();
        }
        cause = e.source();
    }
    if err.is_timeout() {
        return OutboundError::Timeout {
            host: host.to_string(),
        };
    }
    OutboundError::Transport {
        host: host.to_string(),
        reason: error_chain(&err.without_url()),
    }
}

/// An error and its causes on one line, `outer: inner: …`.
fn error_chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(allow: &[&str]) -> AddressPolicy {
        let settings = OutboundSettings {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..OutboundSettings::default()
        };
        AddressPolicy::new(settings.allow_list().unwrap())
    }

    #[test]
    fn non_public_addresses_are_refused() {
        let p = policy(&[]);
        for refused in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "100.100.100.200",
            "192.0.0.192",
            "192.0.2.10",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "64:ff9b:1::a",
            "100::1",
        ] {
            assert!(!p.permits(ip(refused)), "{refused} must be refused");
        }
    }

    #[test]
    fn ipv6_disguises_of_refused_ipv4_are_refused() {
        let p = policy(&[]);
        for refused in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:0:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
        ] {
            assert!(!p.permits(ip(refused)), "{refused} must be refused");
        }
        // The same forms around a public address are fine.
        for public in [
            "::ffff:93.184.215.14",
            "64:ff9b::5db8:d70e",
            "2002:5db8:d70e::1",
        ] {
            assert!(p.permits(ip(public)), "{public} must be allowed");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = policy(&[]);
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
        ] {
            assert!(p.permits(ip(public)), "{public} must be allowed");
        }
    }

    #[test]
    fn the_allow_list_opens_ranges_but_never_metadata() {
        let p = policy(&["127.0.0.1", "10.20.0.0/16", "169.254.0.0/16", "fd00::/8"]);
        assert!(p.permits(ip("127.0.0.1")));
        assert!(p.permits(ip("::ffff:127.0.0.1")));
        assert!(!p.permits(ip("127.0.0.2")));
        assert!(p.permits(ip("10.20.3.4")));
        assert!(!p.permits(ip("10.21.3.4")));
        assert!(p.permits(ip("169.254.1.1")));
        assert!(!p.permits(ip("169.254.169.254")));
        assert!(!p.permits(ip("::ffff:169.254.169.254")));
        assert!(!p.permits(ip("fd00:ec2::254")));
    }

    #[test]
    fn allow_entries_are_validated() {
        let mut s = OutboundSettings::default();
        assert!(s.validate().is_ok());
        s.allow = vec!["10.0.0.0/8".into(), "127.0.0.1".into(), "::1".into()];
        assert!(s.validate().is_ok());
        s.allow = vec!["intranet".into()];
        assert!(s.validate().unwrap_err().contains("outbound.allow"));
        s.allow = vec!["0.0.0.0/0".into()];
        assert!(s.validate().unwrap_err().contains("every address"));
        s.allow.clear();
        s.timeout_secs = 0;
        assert!(s.validate().is_err());
    }

    #[test]
    fn urls_are_checked_by_scheme_and_literal_host() {
        let p = policy(&[]);
        let check = |u: &str| p.check_url(&Url::parse(u).unwrap());
        assert!(check("https://example.com/hook").is_ok());
        assert!(check("http://93.184.215.14/").is_ok());
        assert!(matches!(
            check("ftp://example.com/"),
            Err(OutboundError::Scheme { .. })
        ));
        assert!(matches!(
            check("file:///etc/passwd"),
            Err(OutboundError::Scheme { .. })
        ));
        for refused in [
            "http://127.0.0.1:8080/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(
                matches!(check(refused), Err(OutboundError::Forbidden { .. })),
                "{refused}"
            );
        }
    }

    #[test]
    fn refusals_never_carry_the_path_or_query() {
        let p = policy(&[]);
        let url = Url::parse("http://user:hunter2@10.0.0.1/hooks/s3cr3t?token=abc").unwrap();
        let err = p.check_url(&url).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("10.0.0.1"), "{text}");
        for secret in ["hunter2", "s3cr3t", "abc", "user"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[tokio::test]
    async fn names_resolving_inward_are_refused_before_connecting() {
        let lookup: Lookup = Arc::new(|host: &str| match host {
            "public-looking.example" => vec![ip("10.0.0.5")],
            "mixed.example" => vec![ip("93.184.215.14"), ip("::ffff:127.0.0.1")],
            _ => Vec::new(),
        });
        let client = OutboundClient::with_resolver(&OutboundSettings::default(), lookup).unwrap();
        let err = client
            .get("http://public-looking.example/")
            .await
            .unwrap_err();
        assert_eq!(
            err,
            OutboundError::Forbidden {
                host: "public-looking.example".into(),
                address: ip("10.0.0.5"),
            }
        );
        let err = client.get("http://mixed.example/").await.unwrap_err();
        assert!(matches!(err, OutboundError::Forbidden { .. }), "{err:?}");
        let err = client.get("http://nowhere.example/").await.unwrap_err();
        assert!(matches!(err, OutboundError::Resolve { .. }), "{err:?}");
        assert!(err.is_transient());
    }

    /// What a raw test server answers to a path: a whole HTTP/1.1 response.
    type Answer = Arc<dyn Fn(&str) -> String + Send + Sync>;

    /// Answer every connection to `listener` with `answer(path)`, one
    /// request per connection, recording each request head in `heads`.
    /// With `tls`, connections are TLS first.
    fn serve_raw(
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        heads: Arc<std::sync::Mutex<Vec<String>>>,
        answer: Answer,
    ) {
        use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

        async fn one<S: AsyncRead + AsyncWrite + Unpin>(
            mut stream: S,
            heads: Arc<std::sync::Mutex<Vec<String>>>,
            answer: Answer,
        ) {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split(' ').nth(1).unwrap_or_default().to_string();
            heads.lock().unwrap().push(head);
            let _ = stream.write_all(answer(&path).as_bytes()).await;
            let _ = stream.shutdown().await;
        }

        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, heads, answer) = (tls.clone(), heads.clone(), answer.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                one(stream, heads, answer).await;
                            }
                        }
                        None => one(tcp, heads, answer).await,
                    }
                });
            }
        });
    }

    fn found(location: &str) -> String {
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn an_https_redirect_to_http_is_refused_and_no_referer_is_sent() {
        // A plain server on one port and an HTTPS server for
        // `secure.example` on another, both on 127.0.0.1; the client
        // trusts the HTTPS server's self-signed certificate. Its
        // `/to-http` redirects to the plain server, `/to-https` to itself.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_port = plain.local_addr().unwrap().port();
        let plain_heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        serve_raw(plain, None, plain_heads.clone(), Arc::new(|_| ok("plain")));

        let cert = rcgen::generate_simple_self_signed(vec!["secure.example".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let secure = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let secure_port = secure.local_addr().unwrap().port();
        let secure_heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        serve_raw(
            secure,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            secure_heads.clone(),
            Arc::new(move |path| match path {
                "/to-http" => found(&format!("http://127.0.0.1:{plain_port}/landed")),
                "/to-https" => found("/landed"),
                _ => ok("landed"),
            }),
        );

        let lookup: Lookup = Arc::new(|host: &str| match host {
            "secure.example" => vec![ip("127.0.0.1")],
            _ => Vec::new(),
        });
        let settings = OutboundSettings {
            allow: vec!["127.0.0.1".into()],
            ..OutboundSettings::default()
        };
        let ca = reqwest::Certificate::from_der(cert.cert.der()).unwrap();
        let client =
            OutboundClient::build_with(&settings, Some(lookup), |b| b.add_root_certificate(ca))
                .unwrap();
        let base = format!("https://secure.example:{secure_port}");

        // The controls: https to https is followed (without a `Referer`),
        // and the plain server answers when called directly.
        let res = client.get(&format!("{base}/to-https")).await.unwrap();
        assert_eq!(res.text().await.unwrap(), "landed");
        let heads = secure_heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(heads[1].starts_with("GET /landed "), "{}", heads[1]);
        assert!(
            !heads[1].to_ascii_lowercase().contains("\r\nreferer:"),
            "{}",
            heads[1]
        );
        let direct = format!("http://127.0.0.1:{plain_port}/landed");
        assert_eq!(
            client.get(&direct).await.unwrap().text().await.unwrap(),
            "plain"
        );
        assert_eq!(plain_heads.lock().unwrap().len(), 1);

        // From https to http: refused, and the plain server never asked.
        let err = client.get(&format!("{base}/to-http")).await.unwrap_err();
        assert_eq!(
            err,
            OutboundError::Redirect {
                host: "secure.example".into(),
                reason: "from https to http",
            }
        );
        assert!(!err.is_transient());
        assert_eq!(secure_heads.lock().unwrap().len(), 3);
        assert_eq!(plain_heads.lock().unwrap().len(), 1);
    }
}
