//! Per-client rate limits and the client address they count (service.md §4).

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;

use axum::http::{HeaderMap, StatusCode};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// A per-client-address limit (service.md §4). Only counters live here, in memory.
pub struct ClientLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl ClientLimit {
    /// `rate` requests per second per address, bursts of twice that.
    pub fn per_second(rate: NonZeroU32) -> Self {
        let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        Self { limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)) }
    }

    /// `Ok` when `client` may send one more, else the error to answer with. The budget is
    /// `client`'s [`limit_key`]'s.
    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        self.limiter.check_key(&limit_key(client)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests from this address",
            )
            .retry(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }

    /// Forgets addresses whose budget is full again, so memory stays bounded.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

/// What a per-client rate limit counts for `client` (service.md §4): an IPv4 address as it
/// is, an IPv6 address by its /64 (one subscriber's prefix: its holder can use any of 2^64
/// addresses), an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is.
pub fn limit_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// The address a per-client rate limit counts (service.md §4): the peer's, unless the peer
/// is one of `trusted` proxies; every address compared in its canonical form (a dual-stack
/// listener sees an IPv4 peer as `::ffff:a.b.c.d`); then the nearest address in `X-Forwarded-For` (read from
/// the right, where each proxy appends the address it saw) that is not itself a trusted
/// proxy. Entries left of the first untrusted one are the client's own words and are
/// never read. An entry that is not an address stops the walk at the proxy that added it.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|t| t.to_canonical() == address);
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("").split(','))
        .collect();
    let mut nearest = peer;
    for entry in entries.iter().rev() {
        match entry.trim().parse::<IpAddr>().map(|a| a.to_canonical()) {
            Ok(address) if is_trusted(address) => nearest = address,
            Ok(address) => return address,
            Err(_) => return nearest,
        }
    }
    nearest
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let headers = forwarded(&["203.0.113.7"]);
        assert_eq!(client_address(ip("198.51.100.1"), &headers, &[ip("10.0.0.1")]), ip("198.51.100.1"));
        assert_eq!(client_address(ip("198.51.100.1"), &headers, &[]), ip("198.51.100.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        // The client forged the leftmost entry; the first proxy appended the real peer.
        let headers = forwarded(&["1.2.3.4, 203.0.113.7", "10.0.0.2"]);
        assert_eq!(client_address(ip("10.0.0.1"), &headers, &trusted), ip("203.0.113.7"));
        let headers = forwarded(&["2001:db8::7"]);
        assert_eq!(client_address(ip("10.0.0.1"), &headers, &trusted), ip("2001:db8::7"));
    }

    /// Behind a dual-stack listener the proxy 127.0.0.1 connects as `::ffff:127.0.0.1`;
    /// it is still the trusted proxy, so its clients are told apart (before, everyone
    /// behind it shared the proxy's one budget).
    #[test]
    fn a_mapped_ipv4_peer_or_entry_is_its_ipv4_address() {
        let trusted = [ip("127.0.0.1")];
        let headers = forwarded(&["203.0.113.7"]);
        assert_eq!(client_address(ip("::ffff:127.0.0.1"), &headers, &trusted), ip("203.0.113.7"));
        let headers = forwarded(&["::ffff:203.0.113.7"]);
        assert_eq!(client_address(ip("127.0.0.1"), &headers, &trusted), ip("203.0.113.7"));
        assert_eq!(
            client_address(ip("::ffff:198.51.100.1"), &HeaderMap::new(), &trusted),
            ip("198.51.100.1")
        );
    }

    /// An IPv6 client cannot multiply its budget by changing the low 64 bits of its
    /// address: its /64 is counted.
    #[test]
    fn ipv6_clients_are_limited_per_64() {
        assert_eq!(limit_key(ip("2001:db8:0:7::1")), limit_key(ip("2001:db8:0:7:ffff:ffff:ffff:fffe")));
        assert_eq!(limit_key(ip("2001:db8:0:7::1")), ip("2001:db8:0:7::"));
        assert_ne!(limit_key(ip("2001:db8:0:7::1")), limit_key(ip("2001:db8:0:8::1")));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
        let limit = ClientLimit::per_second(NonZeroU32::MIN);
        // A burst of 2 for the whole /64, whatever the interface identifiers.
        assert!(limit.check(ip("2001:db8:0:7::1")).is_ok());
        assert!(limit.check(ip("2001:db8:0:7::2")).is_ok());
        assert!(limit.check(ip("2001:db8:0:7::3")).is_err());
        assert!(limit.check(ip("2001:db8:0:8::1")).is_ok(), "another /64 has its own budget");
    }

    #[test]
    fn a_trusted_proxy_without_a_usable_header_is_its_own_client() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        assert_eq!(client_address(ip("10.0.0.1"), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
        let headers = forwarded(&["10.0.0.2"]);
        assert_eq!(client_address(ip("10.0.0.1"), &headers, &trusted), ip("10.0.0.2"));
        let headers = forwarded(&["203.0.113.7, garbage"]);
        assert_eq!(client_address(ip("10.0.0.1"), &headers, &trusted), ip("10.0.0.1"));
    }
}
