//! The client's address: the TCP peer, or, when the peer is a trusted proxy, the right-most
//! address of `X-Forwarded-For` that is not a trusted proxy (the left part is whatever the
//! client chose to send, so only what our own proxies appended counts).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Parses `HOLDFAST_TRUSTED_PROXIES`: IPs or CIDRs, comma-separated.
pub fn parse_trusted(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    format!("{s:?} is neither an IP address nor a CIDR such as 10.0.0.0/8")
                })
        })
        .collect()
}

fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// One `X-Forwarded-For` element: an address, perhaps with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The client of a request from `peer` with `headers`.
pub fn client_ip(trusted: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(trusted, client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        // Garbage from a hop: the last proxy that handed it on is as far as we can trust.
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = ip;
        if !is_trusted(trusted, ip) {
            return client;
        }
    }
    client
}

/// The rate-limit key of a client: its IPv4 address, or the /64 of its IPv6 address (one
/// subscriber's share, which they can rotate through at will).
pub fn limit_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append(X_FORWARDED_FOR, value.parse().expect("header value"));
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn trusted_proxies_parse_ips_and_cidrs() {
        let trusted = parse_trusted(" 10.0.0.0/8, 192.168.1.7 ,::1, fd00::/8,").expect("parse");
        assert_eq!(trusted.len(), 4);
        assert!(is_trusted(&trusted, ip("10.200.3.4")));
        assert!(is_trusted(&trusted, ip("192.168.1.7")));
        assert!(!is_trusted(&trusted, ip("192.168.1.8")));
        assert!(is_trusted(&trusted, ip("fd12::1")));
        assert!(!is_trusted(&trusted, ip("11.0.0.1")));
        // Host bits set are accepted and dropped, as `ip route` does.
        assert_eq!(
            parse_trusted("10.1.2.3/8").expect("parse")[0].to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert!(parse_trusted("proxy.local").is_err());
        assert!(parse_trusted("").expect("empty").is_empty());
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        let trusted = parse_trusted("10.0.0.0/8").expect("parse");
        let forged = headers(&["6.6.6.6"]);
        assert_eq!(
            client_ip(&trusted, ip("203.0.113.9"), &forged),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(&[], ip("10.0.0.1"), &forged), ip("10.0.0.1"));
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &forged), ip("6.6.6.6"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let trusted = parse_trusted("10.0.0.0/8").expect("parse");
        let peer = ip("10.0.0.1");
        // The client sent a made-up first hop; our proxies appended the rest.
        let chain = headers(&["1.1.1.1, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(client_ip(&trusted, peer, &chain), ip("198.51.100.7"));
        let ports = headers(&["198.51.100.7:5555, [2001:db8::1]:443"]);
        assert_eq!(client_ip(&trusted, peer, &ports), ip("2001:db8::1"));
        // Every hop trusted: the left-most.
        assert_eq!(
            client_ip(&trusted, peer, &headers(&["10.1.1.1, 10.2.2.2"])),
            ip("10.1.1.1")
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(&trusted, peer, &HeaderMap::new()), peer);
        // Garbage: the last trusted hop before it.
        assert_eq!(
            client_ip(&trusted, peer, &headers(&["1.1.1.1, junk, 10.3.3.3"])),
            ip("10.3.3.3")
        );
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_proxies() {
        let trusted = parse_trusted("10.0.0.0/8").expect("parse");
        let mapped = ip("::ffff:10.0.0.1");
        assert_eq!(
            client_ip(&trusted, mapped, &headers(&["198.51.100.7"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(limit_key(ip("2001:db8:1:2:bbbb::9")), "2001:db8:1:2::/64");
        assert_eq!(limit_key(ip("198.51.100.7")), "198.51.100.7");
    }
}
