//! `escx serve`: the operator's side as an HTTP service (spec: service.md). The handlers
//! carry the specs' signed and sealed messages to the library calls the file commands
//! make, and back; this module adds transport, limits and observability, never trust.

mod conn;
mod guard;
mod log;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router};
use clap::Args;
use escx_licensing::issuer::{Issuer, SqlIssuerStore};
use escx_licensing::messages::{SealedRedeemRequest, TokenRequest};
use escx_metering::operator::{Operator, Outcome};
use escx_settlement::ledger::Ledger;
use serde::Serialize;
use tower::ServiceBuilder;

use guard::{ApiError, ClientLimit, Metrics, client_address, endpoint_of};

use crate::output::Ui;

/// Run the operator's side as an HTTP service: issuer, report ingest, statements, registry.
/// `--log-format`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIME EVENT key=value ...`
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Args)]
#[command(after_help = "Every part is optional; paths of parts not given answer 404 not-served.

Examples:
  escx serve --issuer ./issuer --operator ./op --ledger ./ledger.db --registry ./reg
  escx serve --issuer ./issuer --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem
  escx serve --issuer ./issuer --listen 10.0.0.7:8440 --trusted-proxy 10.0.0.2   # behind a load balancer
  escx serve --issuer ./issuer --log-format json 2>> escx-serve.log
  curl -s http://127.0.0.1:8440/metrics")]
pub struct ServeArgs {
    /// Issuer directory (`escx issuer init`): bundle chain, purchase, redemption, CRL.
    #[arg(long, value_name = "DIR")]
    pub issuer: Option<PathBuf>,
    /// Operator store (`escx operator init`): report and close ingest.
    #[arg(long, value_name = "DIR")]
    pub operator: Option<PathBuf>,
    /// Settlement ledger (`escx settle init`), a SQLite file or a PostgreSQL URL: signed
    /// statements, read-only.
    #[arg(long, value_name = "FILE|URL")]
    pub ledger: Option<PathBuf>,
    /// Registry directory (`escx registry init`): index and packages, read-only.
    #[arg(long, value_name = "DIR")]
    pub registry: Option<PathBuf>,
    /// Directory of statement-<seq>.proofs files (`escx statement prove --dir`), served
    /// beside the statements, read-only.
    #[arg(long, value_name = "DIR")]
    pub proofs: Option<PathBuf>,
    /// Address, or host name, and port to listen on (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8440")]
    pub listen: String,
    /// Seconds to receive a request and answer it.
    #[arg(long = "timeout-secs", value_name = "SECS", default_value_t = 10)]
    pub timeout_secs: u64,
    /// Requests handled at once; more are refused with 503 and Retry-After.
    #[arg(long = "max-in-flight", value_name = "N", default_value_t = 64)]
    pub max_in_flight: usize,
    /// Connections open at once; more are closed as they are accepted.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 512)]
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 /64; trusted proxies
    /// count only toward --max-connections).
    #[arg(long = "max-connections-per-client", value_name = "N", default_value_t = 64)]
    pub max_connections_per_client: usize,
    /// Redemptions per second per client address (bursts of twice that).
    #[arg(long = "redeem-rate", value_name = "N", default_value = "20")]
    pub redeem_rate: NonZeroU32,
    /// Reports and closes per second per client address (bursts of twice that).
    #[arg(long = "ingest-rate", value_name = "N", default_value = "100")]
    pub ingest_rate: NonZeroU32,
    /// A proxy or load balancer in front of the service (repeatable): for requests from
    /// it, rate limits count the address it names in X-Forwarded-For instead.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long = "tls-cert", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, PKCS#8, SEC1 or PKCS#1).
    #[arg(long = "tls-key", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve /metrics to requests bearing the token in this file (16 characters or more);
    /// without it, /metrics is not served.
    #[arg(long = "metrics-token-file", value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// The log on stderr: `text` lines or `json` objects, one per line (service.md §7).
    #[arg(long = "log-format", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Testing only (hidden; service.md §4): the operator part judges "the hour has ended"
    /// this many seconds ahead of the wall clock, so a test can report an hour without
    /// waiting for it to end. The issuer part always uses the wall clock.
    #[arg(long, value_name = "SECS", hide = true, default_value_t = 0)]
    pub operator_clock_ahead: u64,
}

/// Body limits per endpoint (service.md §4).
const PURCHASE_BODY_MAX: usize = 256 * 1024;
const REDEEM_BODY_MAX: usize = 64 * 1024;
/// A key request carries a whole certificate, whose wrapped keys grow with the files
/// registered before it was issued (about 1.6 KiB each).
const KEY_REQUEST_BODY_MAX: usize = 256 * 1024;
const INGEST_BODY_MAX: usize = 1024 * 1024;

/// What the handlers share. Each store is used by one request at a time (its library
/// type is not `Sync`); its calls run on the blocking pool, never on the reactor.
struct Service {
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

type Shared = Arc<Service>;

/// A source of "now".
pub(crate) type Clock = Arc<dyn Fn() -> escx::UnixSeconds + Send + Sync>;

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
pub(crate) struct Parts {
    pub issuer: Vec<Issuer<SqlIssuerStore>>,
    pub operator: Vec<Operator>,
    pub ledger: Option<Ledger>,
    pub registry: Option<PathBuf>,
    pub proofs: Option<PathBuf>,
}

/// The limits of service.md §4.
#[derive(Clone, Copy)]
struct Limits {
    timeout_secs: u64,
    max_in_flight: usize,
    max_connections: usize,
    max_connections_per_client: usize,
    redeem_rate: NonZeroU32,
    ingest_rate: NonZeroU32,
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
    fn new(parts: Parts, limits: Limits, issuer_now: Clock, operator_now: Clock) -> Self {
        let metrics = Metrics::new();
        Self {
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

/// A report's or close's body, once its client is within the ingest rate (service.md §4).
async fn ingest_body(
    service: &Service,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    service.ingest_limit.check(client_address(peer.ip(), headers, &service.trusted_proxies))?;
    read_body(body, INGEST_BODY_MAX).await
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

async fn issuer_chain(State(service): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let chain = blocking(move || Ok(issuer(&service)?.published()?)).await?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not-published", "the issuer has published no bundle yet")
    })?;
    Ok(tagged(&headers, chain.to_cbor(), "application/cbor", Some("public, max-age=300")))
}

/// The account a purchase's bearer token names (service.md §3).
fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a purchase needs Authorization: Bearer <account token>",
        )
    };
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(unauthorized)?;
    let token = value.strip_prefix("Bearer ").ok_or_else(unauthorized)?.trim();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unauthorized());
    }
    Ok(token.to_ascii_lowercase())
}

async fn purchase(
    State(service): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let checking = service.clone();
    let account = blocking(move || {
        issuer(&checking)?.account(&token)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the account token is not known to this issuer",
            )
        })
    })
    .await?;
    let bytes = read_body(body, PURCHASE_BODY_MAX).await?;
    let answer = blocking(move || {
        let request = TokenRequest::from_cbor(&bytes)?;
        let issuer = issuer(&service)?;
        let answer = issuer.issue_for(&request, Some(&account), (service.issuer_now)())?.to_cbor();
        service.metrics.purchase();
        Ok(answer)
    })
    .await?;
    Ok(cbor(answer))
}

async fn redeem(
    State(service): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    service.redeem_limit.check(client_address(peer.ip(), &headers, &service.trusted_proxies))?;
    let bytes = read_body(body, REDEEM_BODY_MAX).await?;
    let answer = blocking(move || {
        let sealed = SealedRedeemRequest::from_bytes(bytes.to_vec());
        let license = issuer(&service)?.redeem(&sealed, (service.issuer_now)())?;
        service.metrics.redemption();
        Ok(license.as_bytes().to_vec())
    })
    .await?;
    Ok(cbor(answer))
}

/// A holder's request for a later file's content key (licensing.md §8.1): rate-limited
/// like redemptions, answered with the key wrapped to the license; nothing is recorded.
async fn content_key(
    State(service): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    service.redeem_limit.check(client_address(peer.ip(), &headers, &service.trusted_proxies))?;
    let bytes = read_body(body, KEY_REQUEST_BODY_MAX).await?;
    let answer =
        blocking(move || Ok(issuer(&service)?.content_key_for(&bytes, (service.issuer_now)())?)).await?;
    Ok(cbor(answer))
}

async fn crl(State(service): State<Shared>) -> Result<Response, ApiError> {
    let crl = blocking(move || {
        Ok(issuer(&service)?.current_crl(escx_licensing::issuer::CRL_REFRESH_SECS, (service.issuer_now)())?)
    })
    .await?;
    Ok(cbor(crl))
}

async fn report(
    State(service): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = ingest_body(&service, peer, &headers, body).await?;
    let outcome = blocking(move || {
        let mut operator = pooled(&service.operator, "operator")?;
        let result = operator.ingest(&[bytes.to_vec()], (service.operator_now)())?.into_iter().next();
        let outcome = match result.map(|r| r.outcome) {
            Some(Outcome::Stored) => "stored",
            Some(Outcome::Duplicate) => "duplicate",
            Some(Outcome::Equivocation) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "report-equivocation",
                    "another report for this license-hour is stored: both kept as evidence, this one not counted",
                ));
            }
            Some(Outcome::Refused(error)) => return Err(ApiError::from(error)),
            None => {
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "error", "the report got no outcome"));
            }
        };
        service.metrics.report(outcome);
        Ok(outcome)
    })
    .await?;
    Ok(axum::Json(serde_json::json!({ "ok": true, "outcome": outcome })).into_response())
}

#[derive(Serialize)]
struct CloseAnswer {
    ok: bool,
    license_id: String,
    package: String,
    tier: String,
    period: String,
    reports: u64,
    totals: std::collections::BTreeMap<String, u64>,
    again: bool,
}

async fn close(
    State(service): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = ingest_body(&service, peer, &headers, body).await?;
    let closed = blocking(move || {
        let now = (service.operator_now)();
        Ok(pooled(&service.operator, "operator")?.close(&bytes, now)?)
    })
    .await?;
    Ok(axum::Json(CloseAnswer {
        ok: true,
        license_id: closed.license_id,
        package: closed.package.to_string(),
        tier: closed.tier,
        period: closed.period,
        reports: closed.reports,
        totals: closed.totals.into_iter().collect(),
        again: closed.again,
    })
    .into_response())
}

async fn statements(State(service): State<Shared>) -> Result<Response, ApiError> {
    let list = blocking(move || Ok(lock(&service.ledger, "ledger")?.statements()?)).await?;
    Ok(axum::Json(serde_json::json!({ "ok": true, "statements": list })).into_response())
}

/// The operator key's rotation statements, oldest first (settlement.md §4.5): with the
/// ledger's first key, what an auditor needs to verify every statement.
async fn rotations(State(service): State<Shared>) -> Result<Response, ApiError> {
    let list = blocking(move || Ok(lock(&service.ledger, "ledger")?.operator_rotations()?)).await?;
    let lines: Vec<String> = list.iter().map(|r| r.to_line()).collect();
    Ok(axum::Json(serde_json::json!({ "ok": true, "rotations": lines })).into_response())
}

async fn statement(
    State(service): State<Shared>,
    UrlPath(seq): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let unknown =
        || ApiError::new(StatusCode::NOT_FOUND, "unknown-statement", format!("no statement {seq:?}"));
    let number: u64 = seq.parse().map_err(|_| unknown())?;
    let bytes = blocking(move || Ok(lock(&service.ledger, "ledger")?.statement(number)?)).await?;
    Ok(tagged(&headers, bytes, "application/cbor", None))
}

async fn statement_proofs(
    State(service): State<Shared>,
    UrlPath(seq): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let number: Option<u64> = seq.parse().ok();
    let missing =
        move || ApiError::new(StatusCode::NOT_FOUND, "no-proofs", format!("no proofs for statement {seq:?}"));
    let number = number.ok_or_else(missing.clone())?;
    let bytes = blocking(move || {
        let dir = service.proofs.as_deref().ok_or_else(|| not_served("proofs"))?;
        read_inside(dir, &dir.join(format!("statement-{number}.proofs")))
            .map_err(|e| if e.status == StatusCode::NOT_FOUND { missing() } else { e })
    })
    .await?;
    Ok(tagged(&headers, bytes, "application/cbor", None))
}

fn registry_root(service: &Service) -> Result<&Path, ApiError> {
    service.registry.as_deref().ok_or_else(|| not_served("registry"))
}

/// Reads a registry file that lies inside the registry directory (no link leads out).
/// `path` once resolved, if it is a file inside `root` (a served directory).
fn file_inside(root: &Path, path: &Path) -> Result<PathBuf, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such file");
    let real = std::fs::canonicalize(path).map_err(|_| missing())?;
    let real_root = std::fs::canonicalize(root).map_err(|_| missing())?;
    if !real.starts_with(&real_root) || !real.is_file() {
        return Err(missing());
    }
    Ok(real)
}

fn read_failed(e: &std::io::Error) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "io", format!("reading a served file: {e}")).retry(1)
}

/// A small served file (an index, a statement's proofs), whole.
fn read_inside(root: &Path, path: &Path) -> Result<Vec<u8>, ApiError> {
    std::fs::read(file_inside(root, path)?).map_err(|e| read_failed(&e))
}

async fn registry_index(State(service): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let bytes = blocking(move || {
        let root = registry_root(&service)?;
        read_inside(root, &root.join(escx_manifest::index::INDEX_FILE))
    })
    .await?;
    Ok(tagged(&headers, bytes, "application/cbor", Some("no-cache")))
}

/// A package file's entity tag, hashed once per file version: registry package files are
/// immutable, and a changed length or modification time hashes the file again.
struct FileTag {
    len: u64,
    modified: std::time::SystemTime,
    tag: String,
}

/// Files whose tags are kept; beyond that the cache starts over.
const FILE_TAGS_MAX: usize = 4096;

fn file_tag(service: &Service, real: &Path) -> Result<(String, u64), ApiError> {
    let meta = std::fs::metadata(real).map_err(|e| read_failed(&e))?;
    let modified = meta.modified().map_err(|e| read_failed(&e))?;
    let fresh = |t: &FileTag| t.len == meta.len() && t.modified == modified;
    if let Some(held) = service.file_tags.lock().unwrap_or_else(PoisonError::into_inner).get(real)
        && fresh(held)
    {
        return Ok((held.tag.clone(), held.len));
    }
    let mut hasher = blake3::Hasher::new();
    let file = std::fs::File::open(real).map_err(|e| read_failed(&e))?;
    hasher.update_reader(file).map_err(|e| read_failed(&e))?;
    let tag = format!("\"{}\"", &hasher.finalize().to_hex()[..32]);
    let mut tags = service.file_tags.lock().unwrap_or_else(PoisonError::into_inner);
    if tags.len() >= FILE_TAGS_MAX {
        tags.clear();
    }
    tags.insert(real.to_path_buf(), FileTag { len: meta.len(), modified, tag: tag.clone() });
    Ok((tag, meta.len()))
}

fn held_by_client(request: &HeaderMap, tag: &str) -> bool {
    request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
}

/// A package file, streamed from disk (never held in memory whole), with its tag; 304
/// without reading it when the client holds it.
async fn registry_package(
    State(service): State<Shared>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such package file");
    let (name, version) = rest.strip_suffix(".escx").and_then(|p| p.rsplit_once('/')).ok_or_else(missing)?;
    // Only a valid name and version make a path (registry.md §1).
    let name = escx::manifest::PackageName::parse(name).map_err(|_| missing())?;
    let version = escx::manifest::parse_version(version).map_err(|_| missing())?.to_string();
    let (real, tag, len) = blocking(move || {
        let root = registry_root(&service)?;
        let real = file_inside(root, &escx_manifest::index::package_path(root, name.as_str(), &version))?;
        let (tag, len) = file_tag(&service, &real)?;
        Ok((real, tag, len))
    })
    .await?;
    let mut response = if held_by_client(&headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let file = tokio::fs::File::open(&real).await.map_err(|e| read_failed(&e))?;
        let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
        (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            [(header::CONTENT_LENGTH, len.to_string())],
            body,
        )
            .into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    Ok(response)
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
    if !guard::unobserved(endpoint) {
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

fn router(service: Shared, limits: Limits) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/.well-known/escx/issuer", get(issuer_chain))
        .route("/v1/purchase", post(purchase))
        .route("/v1/redeem", post(redeem))
        .route("/v1/content-key", post(content_key))
        .route("/v1/crl", get(crl))
        .route("/v1/reports", post(report))
        .route("/v1/closes", post(close))
        .route("/v1/statements", get(statements))
        .route("/v1/rotations", get(rotations))
        .route("/v1/statements/{seq}", get(statement))
        .route("/v1/statements/{seq}/proofs", get(statement_proofs))
        .route("/registry/index.signed", get(registry_index))
        .route("/registry/packages/{*path}", get(registry_package))
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
fn open_issuer_pool(dir: &Path) -> anyhow::Result<Vec<Issuer<SqlIssuerStore>>> {
    let key = dir.join(escx_licensing::issuer::SIGNING_KEY_FILE);
    let remembered = std::cell::RefCell::new(None);
    let first = Issuer::open(dir, || {
        let passphrase = crate::secrets::passphrase_for(&key);
        remembered.borrow_mut().clone_from(&passphrase);
        passphrase
    })
    .with_context(|| format!("opening issuer {}", dir.display()))?;
    let mut pool = vec![first];
    for _ in 1..cores() {
        pool.push(
            Issuer::open(dir, || remembered.borrow().clone())
                .with_context(|| format!("opening issuer {}", dir.display()))?,
        );
    }
    Ok(pool)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// One operator handle per core.
fn open_operator_pool(dir: &Path) -> anyhow::Result<Vec<Operator>> {
    (0..cores())
        .map(|_| Operator::open(dir).with_context(|| format!("opening operator store {}", dir.display())))
        .collect()
}

/// `SIGTERM` or `SIGINT` (service.md §4).
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}

#[derive(Serialize)]
struct Listening<'a> {
    listening: String,
    issuer: Option<&'a Path>,
    operator: Option<&'a Path>,
    ledger: Option<&'a Path>,
    registry: Option<&'a Path>,
}

pub fn run(args: ServeArgs, ui: &Ui) -> anyhow::Result<()> {
    if args.issuer.is_none()
        && args.operator.is_none()
        && args.ledger.is_none()
        && args.registry.is_none()
        && args.proofs.is_none()
    {
        return Err(crate::failure::UsageError(
            "give at least one of --issuer, --operator, --ledger, --registry, --proofs".into(),
        )
        .into());
    }
    // Stores are opened before listening, so a wrong path or passphrase fails at once.
    let issuer = match args.issuer.as_deref() {
        Some(dir) => open_issuer_pool(dir)?,
        None => Vec::new(),
    };
    let operator = args.operator.as_deref().map(open_operator_pool).transpose()?.unwrap_or_default();
    let ledger = args.ledger.as_deref().map(Ledger::open).transpose()?;
    if let Some(root) = &args.registry {
        escx_manifest::index::read_signed(root)?;
    }
    let limits = Limits {
        timeout_secs: args.timeout_secs,
        max_in_flight: args.max_in_flight,
        max_connections: args.max_connections,
        max_connections_per_client: args.max_connections_per_client,
        redeem_rate: args.redeem_rate,
        ingest_rate: args.ingest_rate,
    };
    let ahead = args.operator_clock_ahead;
    let mut service = Service::new(
        Parts { issuer, operator, ledger, registry: args.registry.clone(), proofs: args.proofs.clone() },
        limits,
        Arc::new(escx::now_unix),
        Arc::new(move || escx::UnixSeconds(escx::now_unix().0.saturating_add(ahead))),
    );
    service.trusted_proxies.clone_from(&args.trusted_proxies);
    service.log =
        log::Log { on: true, requests: !ui.quiet, json: matches!(args.log_format, LogFormat::Json) };
    service.gate = Arc::new(limits.gate(&args.trusted_proxies, &service.metrics));
    if let Some(path) = &args.metrics_token_file {
        let text =
            std::fs::read_to_string(path).map_err(|e| escx::Error::io(path.display().to_string(), e))?;
        let token = text.trim();
        if token.len() < 16 {
            return Err(crate::failure::UsageError(format!(
                "--metrics-token-file {}: the token is {} characters; use 16 or more (e.g. 32 random bytes, hex)",
                path.display(),
                token.len()
            ))
            .into());
        }
        service.metrics_token = Some(blake3::hash(token.as_bytes()));
    }
    let service = Arc::new(service);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| escx::Error::io("<async runtime>", e))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(&runtime, cert, key)?),
        _ => None,
    };
    let listener = std::net::TcpListener::bind(listen_address(&args.listen)?)
        .map_err(|e| escx::Error::io(&args.listen, e))?;
    let local = listener.local_addr().map_err(|e| escx::Error::io(&args.listen, e))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    ui.emit_always(
        &Listening {
            listening: format!("{scheme}://{local}"),
            issuer: args.issuer.as_deref(),
            operator: args.operator.as_deref(),
            ledger: args.ledger.as_deref(),
            registry: args.registry.as_deref(),
        },
        || format!("listening on {scheme}://{local} (SIGTERM or Ctrl-C stops)"),
    );
    service.log.start(&format!("{scheme}://{local}"));
    let result = runtime.block_on(serve_on(listener, tls, service.clone(), limits, stop_signal()));
    service.log.stop(service.answered.load(std::sync::atomic::Ordering::Relaxed));
    result
}

/// `--listen`: an address (`127.0.0.1:8440`, `[::]:8440`) or a host name with a port
/// (`localhost:0`), resolved to its first address.
fn listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let usage = |why: String| {
        crate::failure::UsageError(format!(
            "--listen {text}: {why}; give HOST:PORT, e.g. 127.0.0.1:8440 or localhost:0"
        ))
    };
    let mut found = text.to_socket_addrs().map_err(|e| usage(e.to_string()))?;
    Ok(found.next().ok_or_else(|| usage("the name resolves to no address".into()))?)
}

/// The rustls configuration from PEM files (ring, as the clients use).
fn tls_config(
    runtime: &tokio::runtime::Runtime,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    // Installed once per process; a second call finds it installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime
        .block_on(axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key))
        .map_err(|e| escx::Error::io(cert, e))
        .with_context(|| format!("loading the TLS certificate {} and key {}", cert.display(), key.display()))
}

/// Serves the router on `listener`, behind TLS when given, until `stop` resolves; then
/// stops accepting and lets the requests in flight finish (service.md §4).
///
/// The timeout layer bounds a request once its head has arrived; the head itself is
/// bounded by hyper's header read timeout, set to the same limit, so a client that
/// trickles its request line or headers is cut off too.
async fn serve_on(
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    service: Shared,
    limits: Limits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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
pub(crate) struct InProcess {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Stops accepting, finishes the requests in flight, and joins the thread.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the service thread panicked"),
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
pub(crate) fn start_in_process(
    parts: Parts,
    issuer_now: Clock,
    operator_now: Clock,
) -> anyhow::Result<InProcess> {
    let limits = Limits {
        timeout_secs: 10,
        max_in_flight: 64,
        max_connections: 512,
        max_connections_per_client: 64,
        redeem_rate: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
        ingest_rate: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
    };
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
