//! The customer commands' HTTP client (service.md §7): a blocking client with a timeout
//! per request, retries on connection failures, timeouts, 503 and 429 only, and errors
//! that keep the service's codes and name the URL.

use std::time::Duration;

use escx::ErrorClass;

use crate::failure::CliFailure;

/// Largest answer read (a bundle chain, a sealed license, a CRL, a statement).
const ANSWER_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Waits before the retries.
const BACKOFF: [Duration; 3] = [Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2)];
/// The longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(10);

/// A client for one service.
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    /// A client for the service at `server` (`http://` or `https://`).
    pub fn new(server: &str) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(crate::failure::UsageError(format!(
                "--server {server:?}: give an http:// or https:// URL, e.g. http://127.0.0.1:8440"
            ))
            .into());
        }
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false);
        // https:// is checked against the Mozilla root certificates (webpki-roots), or
        // against the certificates of $ESCX_CA (PEM) when it is set.
        if let Some(path) = std::env::var_os("ESCX_CA") {
            let path = std::path::PathBuf::from(path);
            let pem = std::fs::read(&path).map_err(|e| escx::Error::io(&path, e))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate file: {e}", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!("{}: no certificate in it ($ESCX_CA)", path.display());
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let agent = config.build().into();
        Ok(Self { agent, base })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        self.call(path, None, None, ANSWER_BYTES_MAX)
    }

    /// `GET path`, `None` when the service answers 404 (a route it does not have).
    pub fn get_optional(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.exchange(path, None, None, ANSWER_BYTES_MAX, true)
    }

    /// `GET path`, reading at most `limit` bytes of the answer (more is an error).
    pub fn get_bounded(&self, path: &str, limit: u64) -> anyhow::Result<Vec<u8>> {
        self.call(path, None, None, limit)
    }

    /// `POST path` with a CBOR body, and a bearer token when given.
    pub fn post(&self, path: &str, body: &[u8], bearer: Option<&str>) -> anyhow::Result<Vec<u8>> {
        self.call(path, Some(body), bearer, ANSWER_BYTES_MAX)
    }

    fn call(
        &self,
        path: &str,
        body: Option<&[u8]>,
        bearer: Option<&str>,
        limit: u64,
    ) -> anyhow::Result<Vec<u8>> {
        Ok(self.exchange(path, body, bearer, limit, false)?.unwrap_or_default())
    }

    fn exchange(
        &self,
        path: &str,
        body: Option<&[u8]>,
        bearer: Option<&str>,
        limit: u64,
        not_found_ok: bool,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            let sent = match body {
                Some(bytes) => {
                    let mut request = self.agent.post(&url).header("Content-Type", "application/cbor");
                    if let Some(token) = bearer {
                        request = request.header("Authorization", format!("Bearer {token}"));
                    }
                    request.send(bytes)
                }
                None => self.agent.get(&url).call(),
            };
            let wait = match sent {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
                    let bytes = response
                        .body_mut()
                        .with_config()
                        .limit(limit)
                        .read_to_vec()
                        .map_err(|e| network(&url, &e.to_string()))?;
                    if (200..300).contains(&status) {
                        return Ok(Some(bytes));
                    }
                    if status == 404 && not_found_ok {
                        return Ok(None);
                    }
                    if !(status == 503 || status == 429) || attempt == BACKOFF.len() {
                        return Err(refusal(&url, status, &bytes));
                    }
                    retry_after.unwrap_or(BACKOFF[attempt])
                }
                Err(error) => {
                    // A certificate the client refuses stays refused: not retried.
                    if let Some(refused) = tls_refusal(&error) {
                        return Err(certificate(&url, &refused));
                    }
                    let retriable = matches!(
                        error,
                        ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed
                    );
                    if !retriable || attempt == BACKOFF.len() {
                        return Err(network(&url, &error.to_string()));
                    }
                    BACKOFF[attempt]
                }
            };
            std::thread::sleep(wait);
            attempt += 1;
        }
    }
}

/// The service could not be reached or did not answer: exit 3, naming the URL.
fn network(url: &str, reason: &str) -> anyhow::Error {
    CliFailure {
        code: "network",
        class: ErrorClass::Environment,
        message: format!("{url}: {reason}"),
        help: "check --server and that `escx serve` runs there; the request can be retried safely",
    }
    .into()
}

/// The TLS error behind a refused connection, when that is what failed.
fn tls_refusal(error: &ureq::Error) -> Option<rustls::Error> {
    match error {
        ureq::Error::Io(e) => e.get_ref()?.downcast_ref::<rustls::Error>().cloned(),
        ureq::Error::Rustls(e) => Some(e.clone()),
        _ => None,
    }
}

/// The service's certificate (or the TLS handshake) was refused: exit 3, with what the
/// problem means in words and what to do. Never retried.
fn certificate(url: &str, error: &rustls::Error) -> anyhow::Error {
    use rustls::CertificateError as C;
    let meaning = match error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "its certificate is signed by an authority this client does not trust (a private CA, or a self-signed certificate)"
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "its certificate has expired (or this machine's clock is wrong)"
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "its certificate is not valid yet (or this machine's clock is wrong)"
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "its certificate is for another host name than the one in the URL"
        }
        rustls::Error::InvalidCertificate(C::Revoked) => "its certificate has been revoked",
        rustls::Error::InvalidCertificate(C::BadSignature | C::BadEncoding) => {
            "its certificate is malformed or its signature does not verify"
        }
        rustls::Error::InvalidCertificate(_) => "its certificate was refused",
        _ => "the TLS handshake failed",
    };
    CliFailure {
        code: "network",
        class: ErrorClass::Environment,
        message: format!("{url}: {meaning} ({error})"),
        help: "if the service's certificate comes from your own CA, set ESCX_CA to that CA's PEM file; \
               otherwise check the URL's host name and the certificate's dates. Nothing was sent",
    }
    .into()
}

/// An error answer: the service's code and message; 5xx is the environment's fault.
fn refusal(url: &str, status: u16, body: &[u8]) -> anyhow::Error {
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| {
            let error = v.get("error")?;
            Some((error.get("code")?.as_str()?.to_owned(), error.get("message")?.as_str()?.to_owned()))
        });
    let (code, message) = parsed.unwrap_or_else(|| ("error".into(), format!("HTTP {status}")));
    let help = match status {
        401 => {
            "the service wants an account token: pass --account-token TOKEN (or set ESCX_ACCOUNT_TOKEN); \
             the operator makes one with `escx issuer account add`"
        }
        403 => "the account token is not allowed to do this; ask the operator which account to use",
        404 => {
            "the service does not serve this: check the URL, and that `escx serve` runs with the part it needs"
        }
        413 => "the request is larger than the service accepts; send fewer items at once",
        429 => {
            "the service is limiting requests and stayed busy through every retry: wait, then run the command again"
        }
        503 => {
            "the service is unavailable (its store failed, or it is shutting down) and stayed so through every \
             retry: the request is safe to run again later; the operator's log names the cause"
        }
        500..=599 => {
            "the service failed on its side; the request is safe to run again, and the operator's log names the cause"
        }
        _ => "the service refused the request; the code is the one the same file would get",
    };
    CliFailure {
        // Codes are the specs' own, a closed set the service takes from the libraries; the
        // CLI reports one per process, so keeping it for the process's life costs one string.
        code: Box::leak(code.into_boxed_str()),
        class: if status >= 500 { ErrorClass::Environment } else { ErrorClass::Input },
        message: format!("{url}: {message} (HTTP {status})"),
        help,
    }
    .into()
}
