//! `escx serve`: the command line of the `escx-service` crate. It opens the stores (asking
//! for the issuer key's passphrase), checks the arguments, prints where it listens and
//! stops on SIGTERM or SIGINT; everything the service does is in the library.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use escx_licensing::issuer::{Issuer, SqlIssuerStore};
use escx_metering::operator::Operator;
use escx_service::{Limits, Parts, Service};
use escx_settlement::ledger::Ledger;
use serde::Serialize;

use crate::failure::UsageError;
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
        return Err(UsageError(
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
    service.trust_proxies(args.trusted_proxies.clone());
    service.log_to_stderr(!ui.quiet, matches!(args.log_format, LogFormat::Json));
    if let Some(path) = &args.metrics_token_file {
        let text =
            std::fs::read_to_string(path).map_err(|e| escx::Error::io(path.display().to_string(), e))?;
        service
            .serve_metrics_to(text.trim())
            .map_err(|e| UsageError(format!("--metrics-token-file {}: {e}", path.display())))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| escx::Error::io("<async runtime>", e))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(escx_service::tls_config(&runtime, cert, key)?),
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
    Ok(service.run(&runtime, listener, tls, stop_signal())?)
}

/// `--listen`: an address (`127.0.0.1:8440`, `[::]:8440`) or a host name with a port
/// (`localhost:0`), resolved to its first address.
fn listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let usage = |why: String| {
        UsageError(format!("--listen {text}: {why}; give HOST:PORT, e.g. 127.0.0.1:8440 or localhost:0"))
    };
    let mut found = text.to_socket_addrs().map_err(|e| usage(e.to_string()))?;
    Ok(found.next().ok_or_else(|| usage("the name resolves to no address".into()))?)
}
