//! The service's metrics (service.md §4), in the OpenMetrics text format.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
