//! What the service adds around the library calls (service.md §1, §4, §5): error
//! responses with stable codes and statuses, per-client rate limits, and the metrics.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use escx::{ErrorClass, Fault};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// An error answer: `{"ok": false, "error": {"code", "message"}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.to_owned(), message: message.into(), retry_after: None }
    }

    pub fn retry(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// A library error, by its class and code (service.md §1): a message that does not
    /// decode is 400, `token-spent` 409, any other refusal 422, a store failure 503.
    pub fn from_fault(fault: &dyn Fault, message: String) -> Self {
        let code = fault.code();
        let status = match (fault.class(), code) {
            (ErrorClass::Environment, _) => {
                return Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry(1);
            }
            (_, "token-spent") => StatusCode::CONFLICT,
            (_, "unknown-statement") => StatusCode::NOT_FOUND,
            (
                _,
                "message-invalid" | "report-invalid" | "envelope-invalid" | "sealed-box-invalid"
                | "key-length",
            ) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, code, message)
    }
}

impl<E: Fault + std::fmt::Display> From<E> for ApiError {
    fn from(error: E) -> Self {
        let message = error.to_string();
        Self::from_fault(&error, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({ "ok": false, "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .extensions_mut()
            .insert(super::log::ErrorNote { code: self.code.clone(), message: self.message.clone() });
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The step in which purchase and redemption counters move.
pub const COARSE: u64 = 16;

/// Endpoints whose answers are neither counted per request nor timed, in the metrics or
/// the log (service.md §4, §8).
const UNOBSERVED: [&str; 2] = ["/v1/purchase", "/v1/redeem"];

/// Whether requests to `endpoint` go unobserved (purchase and redemption).
pub fn unobserved(endpoint: &str) -> bool {
    UNOBSERVED.contains(&endpoint)
}

/// The metrics of service.md §4.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// Exposed in steps of [`COARSE`] (see [`Metrics::redemption`]).
    redemptions: Counter,
    purchases: Counter,
    counted: [std::sync::atomic::AtomicU64; 2],
    reports: Family<OutcomeLabels, Counter>,
    pub connections: ConnectionMetrics,
}

/// What the connection gate counts (service.md §4), shared with it.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    pub open: prometheus_client::metrics::gauge::Gauge,
    pub refused: Counter,
    pub timed_out: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let redemptions = Counter::default();
        let reports = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "escx_http_requests",
            "HTTP requests answered, by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "escx_http_request_duration_seconds",
            "Time to answer a request, by endpoint",
            durations.clone(),
        );
        registry.register(
            "escx_redemptions",
            "Licenses issued, in steps of 16 (stored answers to retries included)",
            redemptions.clone(),
        );
        registry.register(
            "escx_reports_ingested",
            "Hourly reports stored or found duplicate",
            reports.clone(),
        );
        let connections = ConnectionMetrics::default();
        registry.register("escx_connections_open", "TCP connections open now", connections.open.clone());
        registry.register(
            "escx_connections_refused",
            "Connections closed as they were accepted, a connection cap being reached",
            connections.refused.clone(),
        );
        registry.register(
            "escx_connections_timed_out",
            "Connections closed for sending no request within the timeout",
            connections.timed_out.clone(),
        );
        let purchases = Counter::default();
        registry.register(
            "escx_purchases",
            "Purchases answered, in steps of 16 (retries answered from the store included)",
            purchases.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            redemptions,
            purchases,
            counted: Default::default(),
            reports,
            connections,
        }
    }

    /// Counts a redemption. The exposed counter moves in steps of [`COARSE`], so a scrape
    /// cannot tell when one redemption happened and match it with a purchase.
    pub fn redemption(&self) {
        self.coarse(0, &self.redemptions);
    }

    /// Counts a purchase, exposed like [`Self::redemption`].
    pub fn purchase(&self) {
        self.coarse(1, &self.purchases);
    }

    fn coarse(&self, which: usize, exposed: &Counter) {
        let now = self.counted[which].fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if now.is_multiple_of(COARSE) {
            exposed.inc_by(COARSE);
        }
    }

    /// Counts and times an answer, except those of purchases and redemptions: their
    /// counts and latencies would time each one (service.md §4).
    pub fn observe(&self, endpoint: &str, status: u16, elapsed: Duration) {
        if UNOBSERVED.contains(&endpoint) {
            return;
        }
        self.requests.get_or_create(&RequestLabels { endpoint: endpoint.to_owned(), status }).inc();
        self.durations
            .get_or_create(&EndpointLabels { endpoint: endpoint.to_owned() })
            .observe(elapsed.as_secs_f64());
    }

    pub fn report(&self, outcome: &str) {
        self.reports.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    /// The OpenMetrics text exposition (which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The endpoint a path belongs to, as service.md §2 writes it (the metrics' label).
pub fn endpoint_of(path: &str) -> &'static str {
    match path {
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        "/.well-known/escx/issuer" => "/.well-known/escx/issuer",
        "/v1/purchase" => "/v1/purchase",
        "/v1/redeem" => "/v1/redeem",
        "/v1/content-key" => "/v1/content-key",
        "/v1/crl" => "/v1/crl",
        "/v1/reports" => "/v1/reports",
        "/v1/closes" => "/v1/closes",
        "/v1/statements" => "/v1/statements",
        "/v1/rotations" => "/v1/rotations",
        "/registry/index.signed" => "/registry/index.signed",
        p if p.starts_with("/v1/statements/") && p.ends_with("/proofs") => "/v1/statements/{seq}/proofs",
        p if p.starts_with("/v1/statements/") => "/v1/statements/{seq}",
        p if p.starts_with("/registry/packages/") => "/registry/packages/{name}/{version}.escx",
        _ => "other",
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
