//! The client address: the socket peer, or, when the peer is a trusted
//! proxy, the nearest untrusted address in `X-Forwarded-For`.

use std::net::IpAddr;

use ipnet::IpNet;

/// Canonical form: IPv4-mapped IPv6 addresses become IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// Resolve the client address of a request.
pub fn resolve(peer: IpAddr, forwarded_for: Option<&str>, proxies: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted(peer, proxies) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut last = peer;
    for part in header.rsplit(',') {
        let Ok(ip) = part.trim().parse::<IpAddr>() else {
            // Anything unparsable ends the trusted chain.
            return last;
        };
        let ip = canonical(ip);
        if !trusted(ip, proxies) {
            return ip;
        }
        last = ip;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let p = nets(&["10.0.0.0/8"]);
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(resolve(peer, Some("1.2.3.4"), &p), peer);
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted() {
        let p = nets(&["10.0.0.0/8"]);
        let got = resolve(
            "10.0.0.2".parse().unwrap(),
            Some("1.2.3.4, 198.51.100.7, 10.0.0.9"),
            &p,
        );
        assert_eq!(got, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let got = resolve("::ffff:192.0.2.1".parse().unwrap(), None, &[]);
        assert_eq!(got, "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
