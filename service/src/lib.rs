//! `escx-service`: the operator's side as an HTTP service (spec: service.md), as a library
//! that `escx serve` and the demo run and other programs can embed. The handlers carry the
//! specs' signed and sealed messages to the library calls the file commands make, and
//! back; this crate adds transport, limits and observability, never trust.
//!
//! Open the stores, put them in [`Parts`], make a [`Service`] with [`Limits`], and serve it
//! with [`serve_on`] on a listener of your own, or [`start_in_process`] on a loopback port;
//! [`router`] is the bare axum router, for tests that call handlers without a socket.

mod conn;
mod error;
mod limits;
mod log;
mod metrics;
mod routes;

use routes::registry::{FileTag, held_by_client, read_inside};

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router};
use escx_licensing::issuer::{Issuer, SqlIssuerStore};
use escx_licensing::messages::{SealedRedeemRequest, TokenRequest};
use escx_metering::operator::{Operator, Outcome};
use escx_settlement::ledger::Ledger;
use serde::Serialize;
use tower::ServiceBuilder;

use error::ApiError;
use limits::{ClientLimit, client_address};
use metrics::{Metrics, endpoint_of};

/// What the handlers share. Each store is used by one request at a time (its library
/// type is not `Sync`); its calls run on the blocking pool, never on the reactor.
pub struct Service {
    /// The limits it was made with (the connection gate is rebuilt from them).
    limits: Limits,
    /// The issuer's clock, and the operator's (the same wall clock, except in the demo,
    /// whose meter reports hours of a simulated later time).
    issuer_now: Clock,
    operator_now: Clock,
    issuer: Option<Pool<Issuer<SqlIssuerStore>>>,
    operator: Option<Pool<Operator>>,
    ledger: Option<Mutex<Ledger>>,
    registry: Option<PathBuf>,
    proofs: Option<PathBuf>,
    metrics: Metrics,
    redeem_limit: ClientLimit,
    ingest_limit: ClientLimit,
    /// Peers whose X-Forwarded-For names the client (`--trusted-proxy`).
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Connection caps and the first-request deadline.
    gate: Arc<conn::Gate>,
    /// The hash of the bearer token /metrics needs (`--metrics-token-file`); None: not
    /// served.
    metrics_token: Option<blake3::Hash>,
    /// Registry package files' entity tags, by resolved path.
    file_tags: Mutex<std::collections::HashMap<PathBuf, FileTag>>,
    /// The log on stderr (`escx serve` turns it on; service.md §7).
    log: log::Log,
    /// Requests answered, for the stop line.
    answered: std::sync::atomic::AtomicU64,
}

/// The fewest characters a /metrics token may have (service.md §4).
pub const METRICS_TOKEN_MIN: usize = 16;

/// A /metrics token too short to be secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTooShort {
    /// Its length in characters.
    pub length: usize,
}

impl std::fmt::Display for TokenTooShort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the token is {} characters; use {METRICS_TOKEN_MIN} or more (e.g. 32 random bytes, hex)",
            self.length
        )
    }
}

impl std::error::Error for TokenTooShort {}

/// The service as the handlers hold it.
pub type Shared = Arc<Service>;

/// A source of "now".
pub type Clock = Arc<dyn Fn() -> escx::UnixSeconds + Send + Sync>;

/// Several handles on one store (one per core), so that the stateless work of requests
/// (KEM decapsulation, POPRF evaluation, ML-DSA signing and verifying, commitment checks)
/// runs in parallel. Each store's transactions are serializable (`BEGIN IMMEDIATE`,
/// re-reading inside, licensing.md §4) and queue on one lock per file in this process,
/// so two handles committing at once stay as correct as two processes.
struct Pool<T> {
    handles: Vec<Mutex<T>>,
    next: std::sync::atomic::AtomicUsize,
}

impl<T> Pool<T> {
    /// `None` for no handles: the part is not served.
    fn new(handles: Vec<T>) -> Option<Self> {
        (!handles.is_empty()).then(|| Self {
            handles: handles.into_iter().map(Mutex::new).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A free handle if there is one, else the next in turn.
    fn lock(&self) -> MutexGuard<'_, T> {
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let count = self.handles.len();
        for offset in 0..count {
            if let Ok(guard) = self.handles[(start + offset) % count].try_lock() {
                return guard;
            }
        }
        // A panic in another request left no partial write (one library transaction).
        self.handles[start % count].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn pooled<'a, T>(pool: &'a Option<Pool<T>>, name: &str) -> Result<MutexGuard<'a, T>, ApiError> {
    Ok(pool.as_ref().ok_or_else(|| not_served(name))?.lock())
}

fn issuer(service: &Service) -> Result<MutexGuard<'_, Issuer<SqlIssuerStore>>, ApiError> {
    pooled(&service.issuer, "issuer")
}

/// The stores a service serves; each is optional (no issuer handles: no issuer).
pub struct Parts {
    pub issuer: Vec<Issuer<SqlIssuerStore>>,
    pub operator: Vec<Operator>,
    pub ledger: Option<Ledger>,
    pub registry: Option<PathBuf>,
    pub proofs: Option<PathBuf>,
}

/// The limits of service.md §4.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Seconds to receive a request and answer it.
    pub timeout_secs: u64,
    /// Requests handled at once; more are refused with 503 and Retry-After.
    pub max_in_flight: usize,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 /64).
    pub max_connections_per_client: usize,
    /// Redemptions per second per client address (bursts of twice that).
    pub redeem_rate: NonZeroU32,
    /// Reports and closes per second per client address (bursts of twice that).
    pub ingest_rate: NonZeroU32,
}

impl Default for Limits {
    /// `escx serve`'s defaults.
    fn default() -> Self {
        Self {
            timeout_secs: 10,
            max_in_flight: 64,
            max_connections: 512,
            max_connections_per_client: 64,
            redeem_rate: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            ingest_rate: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
        }
    }
}

impl Limits {
    fn gate(&self, trusted_proxies: &[std::net::IpAddr], metrics: &Metrics) -> conn::Gate {
        conn::Gate::new(
            self.max_connections,
            self.max_connections_per_client,
            Duration::from_secs(self.timeout_secs.max(1)),
            trusted_proxies,
            metrics.connections.clone(),
        )
    }
}

impl Service {
    /// A service of `parts` under `limits`; the issuer part reads the time from
    /// `issuer_now`, the operator part from `operator_now`.
    pub fn new(parts: Parts, limits: Limits, issuer_now: Clock, operator_now: Clock) -> Self {
        let metrics = Metrics::new();
        Self {
            limits,
            issuer_now,
            operator_now,
            issuer: Pool::new(parts.issuer),
            operator: Pool::new(parts.operator),
            ledger: parts.ledger.map(Mutex::new),
            registry: parts.registry,
            proofs: parts.proofs,
            gate: Arc::new(limits.gate(&[], &metrics)),
            metrics_token: None,
            metrics,
            redeem_limit: ClientLimit::per_second(limits.redeem_rate),
            ingest_limit: ClientLimit::per_second(limits.ingest_rate),
            trusted_proxies: Vec::new(),
            file_tags: Mutex::default(),
            log: log::Log::default(),
            answered: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Requests from these peers name their client in X-Forwarded-For (`--trusted-proxy`):
    /// rate limits count that address, the connection caps only the proxy's total.
    pub fn trust_proxies(&mut self, proxies: Vec<std::net::IpAddr>) {
        self.gate = Arc::new(self.limits.gate(&proxies, &self.metrics));
        self.trusted_proxies = proxies;
    }

    /// Serves /metrics to requests bearing `token` (checked by its hash); without it,
    /// /metrics is not served. A token shorter than [`METRICS_TOKEN_MIN`] characters is
    /// refused (service.md §4): it could be guessed.
    pub fn serve_metrics_to(&mut self, token: &str) -> Result<(), TokenTooShort> {
        let length = token.chars().count();
        if length < METRICS_TOKEN_MIN {
            return Err(TokenTooShort { length });
        }
        self.metrics_token = Some(blake3::hash(token.as_bytes()));
        Ok(())
    }

    /// Logs to stderr (service.md §7): start and stop lines, and a line per request
    /// unless `requests` is false; JSON objects when `json`.
    pub fn log_to_stderr(&mut self, requests: bool, json: bool) {
        self.log = log::Log { on: true, requests, json };
    }

    /// Runs the service on `listener` until `stop` resolves, on `runtime`, with the log's
    /// start and stop lines around it.
    pub fn run(
        self,
        runtime: &tokio::runtime::Runtime,
        listener: std::net::TcpListener,
        tls: Option<axum_server::tls_rustls::RustlsConfig>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), escx::Error> {
        let local = listener.local_addr().map_err(|e| escx::Error::io("<listener>", e))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let limits = self.limits;
        let service = Arc::new(self);
        service.log.start(&format!("{scheme}://{local}"));
        let result = runtime.block_on(serve_on(listener, tls, service.clone(), limits, stop));
        service.log.stop(service.answered.load(std::sync::atomic::Ordering::Relaxed));
        result
    }
}

fn lock<'a, T>(part: &'a Option<Mutex<T>>, name: &str) -> Result<MutexGuard<'a, T>, ApiError> {
    let mutex = part.as_ref().ok_or_else(|| not_served(name))?;
    // A panic in another request left no partial write: every store write is one
    // transaction of the library.
    Ok(mutex.lock().unwrap_or_else(PoisonError::into_inner))
}

fn not_served(part: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-served", format!("this service was started without --{part}"))
}

/// Runs `work` on the blocking pool. A request cut off by the timeout leaves it to finish
/// (and commit): the client's retry then gets the stored answer.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|_| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "error", "the request's worker stopped unexpectedly")
    })?
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the body exceeds {limit} bytes"),
        )
    })
}

fn cbor(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/cbor")], bytes).into_response()
}

/// A file answer with an `ETag` (service.md §2), or 304 when the client holds it.
fn tagged(
    request: &HeaderMap,
    bytes: Vec<u8>,
    content_type: &'static str,
    cache: Option<&'static str>,
) -> Response {
    let tag = format!("\"{}\"", &blake3::hash(&bytes).to_hex()[..32]);
    let mut response = if held_by_client(request, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    if let Some(cache) = cache {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    response
}

async fn healthz() -> &'static str {
    "ok"
}

/// `/metrics`, only with `--metrics-token-file` and to requests bearing that token
/// (service.md §4): counters of purchases and redemptions are public enough to time.
async fn metrics(State(service): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(expected) = service.metrics_token else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-served",
            "/metrics is served only with --metrics-token-file (service.md §4)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| blake3::hash(t.trim().as_bytes()));
    // blake3::Hash compares in constant time.
    if given != Some(expected) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/metrics needs Authorization: Bearer <the token of --metrics-token-file>",
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        service.metrics.encode(),
    )
        .into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such path (see spec/service.md §2)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "this path takes another method")
}

/// Counts and times every answer, the refusals of the outer layers included; marks the
/// connection as having sent a request (its first-request deadline is met).
async fn observe(
    State(service): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    service.gate.request_arrived(peer);
    let endpoint = endpoint_of(request.uri().path());
    let method = request.method().clone();
    let started = Instant::now();
    let mut response = next.run(request).await;
    let took = started.elapsed();
    service.metrics.observe(endpoint, response.status().as_u16(), took);
    service.answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (id, header) = log::request_id();
    response.headers_mut().insert(log::REQUEST_ID, header);
    // Purchases and redemptions are never logged one by one: their times would link a
    // redemption to its purchase (service.md §8).
    if !metrics::unobserved(endpoint) {
        let error = response.extensions().get::<log::ErrorNote>();
        service.log.request(&method, endpoint, response.status(), took, &id, error);
    }
    response
}

/// What the load-shedding and timeout layers refuse, as service.md §5 codes.
async fn refused(error: BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request was not received and answered in time",
        )
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many requests in flight").retry(1)
    } else {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "error", error.to_string())
    }
}

/// The routes of service.md §2 with the limits of §4, without a listener.
pub fn router(service: Shared, limits: Limits) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/.well-known/escx/issuer", get(routes::issuer::issuer_chain))
        .route("/v1/purchase", post(routes::issuer::purchase))
        .route("/v1/redeem", post(routes::issuer::redeem))
        .route("/v1/content-key", post(routes::issuer::content_key))
        .route("/v1/crl", get(routes::issuer::crl))
        .route("/v1/reports", post(routes::metering::report))
        .route("/v1/closes", post(routes::metering::close))
        .route("/v1/statements", get(routes::ledger::statements))
        .route("/v1/rotations", get(routes::ledger::rotations))
        .route("/v1/statements/{seq}", get(routes::ledger::statement))
        .route("/v1/statements/{seq}/proofs", get(routes::ledger::statement_proofs))
        .route("/registry/index.signed", get(routes::registry::registry_index))
        .route("/registry/packages/{*path}", get(routes::registry::registry_package))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(refused))
                .load_shed()
                // Router::layer wraps each route on its own: the global layer shares one
                // semaphore across them, so the limit is on the whole service.
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(limits.max_in_flight.max(1)))
                .timeout(Duration::from_secs(limits.timeout_secs.max(1))),
        )
        .layer(middleware::from_fn_with_state(service.clone(), observe))
        .with_state(service)
}

/// One issuer handle per core, the key's passphrase asked for at most once.
/// The rustls configuration from PEM files (ring, as the clients use).
pub fn tls_config(
    runtime: &tokio::runtime::Runtime,
    cert: &Path,
    key: &Path,
) -> Result<axum_server::tls_rustls::RustlsConfig, escx::Error> {
    // Installed once per process; a second call finds it installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)).map_err(|e| {
        let what = format!("the TLS certificate {} and key {}", cert.display(), key.display());
        escx::Error::io(what, e)
    })
}

/// Serves the router on `listener`, behind TLS when given, until `stop` resolves; then
/// stops accepting and lets the requests in flight finish (service.md §4).
///
/// The timeout layer bounds a request once its head has arrived; the head itself is
/// bounded by hyper's header read timeout, set to the same limit, so a client that
/// trickles its request line or headers is cut off too.
pub async fn serve_on(
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    service: Shared,
    limits: Limits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), escx::Error> {
    let local = listener.local_addr().map_err(|e| escx::Error::io("<listener>", e))?;
    listener.set_nonblocking(true).map_err(|e| escx::Error::io(local.to_string(), e))?;
    forget_idle_clients(service.clone());
    let service_gate = service.gate.clone();
    let timeout = Duration::from_secs(limits.timeout_secs.max(1));
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        stop.await;
        // In-flight requests are bounded by the timeout anyway.
        stopping.graceful_shutdown(Some(timeout + Duration::from_secs(1)));
    });
    let app = router(service, limits).into_make_service_with_connect_info::<SocketAddr>();
    let gate = service_gate;
    let mut server = axum_server::from_tcp(listener).handle(handle);
    server.http_builder().http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(timeout);
    // An HTTP/2 peer that stops answering pings is dropped; one that answers them but
    // sends nothing holds one of its client's --max-connections-per-client places.
    server
        .http_builder()
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(timeout)
        .keep_alive_timeout(timeout);
    let served = match tls {
        None => {
            server.acceptor(conn::Limited::new(axum_server::accept::DefaultAcceptor, gate)).serve(app).await
        }
        Some(config) => {
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(config);
            server.acceptor(conn::Limited::new(tls, gate)).serve(app).await
        }
    };
    served.map_err(|e| escx::Error::io(local.to_string(), e))?;
    Ok(())
}

/// Keeps the rate limiters' memory bounded: addresses idle for a while are dropped.
fn forget_idle_clients(service: Shared) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            service.redeem_limit.forget_idle();
            service.ingest_limit.forget_idle();
        }
    });
}

/// A service running on a thread of this process, on a free loopback port (the demo).
pub struct InProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), escx::Error>>>,
}

impl InProcess {
    /// Stops accepting, finishes the requests in flight, and joins the thread.
    pub fn stop(mut self) -> Result<(), escx::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(escx::Error::io("<service thread>", std::io::Error::other("it panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts `parts` as a service on 127.0.0.1 (a free port), with the default limits.
pub fn start_in_process(
    parts: Parts,
    issuer_now: Clock,
    operator_now: Clock,
) -> Result<InProcess, escx::Error> {
    let limits = Limits::default();
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| escx::Error::io("127.0.0.1:0", e))?;
    let addr = listener.local_addr().map_err(|e| escx::Error::io("127.0.0.1:0", e))?;
    let service = Arc::new(Service::new(parts, limits, issuer_now, operator_now));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| escx::Error::io("<async runtime>", e))?;
        runtime.block_on(serve_on(listener, None, service, limits, async move {
            let _ = stopped.await;
        }))
    });
    Ok(InProcess { addr, stop: Some(stop), thread: Some(thread) })
}
