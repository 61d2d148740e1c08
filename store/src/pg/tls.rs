//! TLS to PostgreSQL, with libpq's `sslmode` and `sslrootcert` (spec/settlement.md §5.5).
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` | when the server offers it | no (with `sslrootcert`: its chain) |
//! | `require` | always | no (with `sslrootcert`: its chain, as libpq) |
//! | `verify-ca` | always | its chain, to `sslrootcert` or the platform's roots |
//! | `verify-full` | always | its chain, and that it names the host |
//!
//! Without `sslmode`, a database reached over a unix socket or on a loopback address is
//! `prefer` (libpq's default); any other host is `verify-full`, so a plain or unverified
//! connection across a network happens only when the URL says so. A unix socket never
//! carries TLS (PostgreSQL offers none there), whatever the mode.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{Host, SslMode as WireMode};

use crate::Error;
use crate::location::PgUrl;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it.
    Prefer,
    /// Always TLS.
    Require,
    /// Always TLS, the server's chain checked.
    VerifyCa,
    /// Always TLS, the server's chain and name checked.
    VerifyFull,
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        })
    }
}

impl SslMode {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "prefer" | "allow" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

/// What connecting to a URL needs: the client's configuration, the mode, and the TLS
/// connector.
pub(crate) struct Settings {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) mode: SslMode,
    pub(crate) tls: tokio_postgres_rustls::MakeRustlsConnect,
}

/// Connecting waits at most this long when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// Reads `url`: its `sslmode` and `sslrootcert` (which the client library does not know
/// in full), then the rest.
pub(crate) fn settings(url: &PgUrl) -> Result<Settings, Error> {
    let location = url.to_string();
    let bad = |reason: String| Error::failed(&location, reason);
    let (mut rest, mode, root) = take_tls_parameters(url.expose()).map_err(bad)?;
    if rest.ends_with('?') {
        rest.pop();
    }
    let mut config: tokio_postgres::Config =
        rest.parse().map_err(|e| bad(format!("not a PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(CONNECT_TIMEOUT_SECS));
    }
    let local = config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    }) && config.get_hostaddrs().iter().all(IpAddr::is_loopback);
    let sockets_only =
        !config.get_hosts().is_empty() && config.get_hosts().iter().all(|h| matches!(h, Host::Unix(_)));
    let mode = match mode {
        _ if sockets_only => SslMode::Disable,
        Some(mode) => mode,
        None if local => SslMode::Prefer,
        None => SslMode::VerifyFull,
    };
    config.ssl_mode(match mode {
        SslMode::Disable => WireMode::Disable,
        SslMode::Prefer => WireMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
    });
    let tls = client_config(mode, root.as_ref()).map_err(bad)?;
    Ok(Settings { config, mode, tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls) })
}

/// `url` without its `sslmode` and `sslrootcert` parameters, and their values. Client
/// certificates (`sslcert`, `sslkey`) are refused: this build does not present one.
fn take_tls_parameters(url: &str) -> Result<(String, Option<SslMode>, Option<PathBuf>), String> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), None, None)) };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value)?;
        match key {
            "sslmode" => {
                mode = Some(SslMode::parse(&value).ok_or_else(|| {
                    format!("sslmode={value} is not one of disable, prefer, require, verify-ca, verify-full")
                })?);
            }
            "sslrootcert" => root = Some(PathBuf::from(value)),
            "sslcert" | "sslkey" | "sslcrl" | "sslpassword" => {
                return Err(format!("{key} is not supported; authenticate with a password or a peer socket"));
            }
            _ => kept.push(pair),
        }
    }
    Ok((format!("{base}?{}", kept.join("&")), mode, root))
}

/// Percent-decoding of a URL parameter's value.
fn decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3).ok_or_else(|| format!("bad escape in {value:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {value:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} is not UTF-8"))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates a server's chain must lead to: `sslrootcert` (a PEM file, or `system`),
/// else the platform's.
fn roots(root: Option<&PathBuf>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match root {
        Some(path) if path.as_os_str() != "system" => {
            let certificates = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            if certificates.is_empty() {
                return Err(format!("sslrootcert {}: no certificate in it", path.display()));
            }
            for certificate in certificates {
                store.add(certificate).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err("no trusted root certificates on this system; give sslrootcert=FILE".into());
            }
        }
    }
    Ok(store)
}

fn client_config(mode: SslMode, root: Option<&PathBuf>) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root) {
        (SslMode::VerifyFull, _) => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root)?), provider)
                .build()
                .map_err(|e| e.to_string())?
        }
        (SslMode::VerifyCa, _) | (SslMode::Require | SslMode::Prefer, Some(_)) => {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root)?), provider)
                .build()
                .map_err(|e| e.to_string())?;
            Arc::new(ChainOnly(inner))
        }
        // Never used to connect (`disable`), or encryption without a check (`require`, `prefer`).
        (SslMode::Disable, _) | (SslMode::Require | SslMode::Prefer, None) => Arc::new(Unchecked(provider)),
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

/// `verify-ca`: the chain must lead to a trusted root; the name it is for is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` and `prefer` without `sslrootcert`: encrypted, the certificate not checked
/// (libpq's meaning); the handshake's signatures are still verified, so the session is
/// with whoever holds the certificate's key.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> SslMode {
        settings(&match crate::Location::parse(url) {
            crate::Location::Postgres(url) => url,
            crate::Location::Sqlite(_) => unreachable!(),
        })
        .unwrap()
        .mode
    }

    #[test]
    fn remote_hosts_are_verified_unless_the_url_says_otherwise() {
        assert_eq!(mode("postgres://u@db.example.com/l"), SslMode::VerifyFull);
        assert_eq!(mode("postgres://u@10.0.0.5/l"), SslMode::VerifyFull);
        assert_eq!(mode("postgres://u@db.example.com/l?sslmode=disable"), SslMode::Disable);
        assert_eq!(mode("postgres://u@db.example.com/l?sslmode=require"), SslMode::Require);
        assert_eq!(mode("postgres://u@localhost/l"), SslMode::Prefer);
        assert_eq!(mode("postgres://u@127.0.0.1:5433/l"), SslMode::Prefer);
        assert_eq!(mode("postgresql:///l?host=/run/postgresql"), SslMode::Disable);
        assert_eq!(mode("postgresql:///l?host=/run/postgresql&sslmode=verify-full"), SslMode::Disable);
    }

    #[test]
    fn unknown_modes_and_client_certificates_are_refused_by_name() {
        let url = |text: &str| match crate::Location::parse(text) {
            crate::Location::Postgres(url) => url,
            crate::Location::Sqlite(_) => unreachable!(),
        };
        let error = settings(&url("postgres://u@h/l?sslmode=verify")).err().unwrap();
        assert!(error.to_string().contains("sslmode=verify is not one of"), "{error}");
        let error = settings(&url("postgres://u:pw@h/l?sslcert=/c.pem")).err().unwrap();
        assert!(error.to_string().contains("sslcert is not supported"), "{error}");
        assert!(!error.to_string().contains("pw"), "{error}");
        let error =
            settings(&url("postgres://u@h/l?sslmode=verify-ca&sslrootcert=/nonexistent.pem")).err().unwrap();
        assert!(error.to_string().contains("sslrootcert /nonexistent.pem"), "{error}");
    }
}
