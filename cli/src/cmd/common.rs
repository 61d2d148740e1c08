//! What several commands share: reading message files, issuer bundle chains, the trust
//! arguments of a license check, content keys from a wallet, and writing outputs.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use escx::content::ContentKey;
use escx_licensing::messages::BundleChain;
use escx_licensing::wallet::Wallet;

use crate::failure::{self, UsageError};

/// The issuer a licensed program accepts and its revocation age rule (licensing.md §5.5):
/// what the vendor ships with the program, never what the wallet holds.
#[derive(Args)]
pub struct TrustArgs {
    /// The issuer whose licenses are accepted: its published bundle chain
    /// (`escx issuer publish -o issuer.pub`).
    #[arg(long, value_name = "FILE", required_unless_present = "issuer_id", conflicts_with = "issuer_id")]
    issuer: Option<PathBuf>,
    /// The issuer whose licenses are accepted, by key id (hex).
    #[arg(long = "issuer-id", value_name = "HEX")]
    issuer_id: Option<String>,
    /// Days after the newest signed revocation time held (the CRL's issue, or the
    /// license's) that checks pass without a warning.
    #[arg(long = "crl-max-age", value_name = "DAYS", default_value_t = escx_licensing::trust::CRL_MAX_AGE_SECS / 86_400)]
    crl_max_age: u64,
    /// Days after the maximum age that checks still pass, with a warning, before they
    /// fail with crl-too-old.
    #[arg(long = "crl-grace", value_name = "DAYS", default_value_t = escx_licensing::trust::CRL_GRACE_SECS / 86_400)]
    crl_grace: u64,
}

impl TrustArgs {
    pub fn trust(&self) -> anyhow::Result<escx_licensing::trust::Trust> {
        let trust = match (&self.issuer, &self.issuer_id) {
            (Some(path), _) => escx_licensing::trust::Trust::from_chain_bytes(&read(path)?)
                .with_context(|| format!("--issuer {}", path.display()))?,
            (None, Some(hex)) => escx_licensing::trust::Trust::issuer(
                hex.parse().map_err(|e| UsageError(format!("--issuer-id: {e}")))?,
            ),
            (None, None) => return Err(UsageError("give --issuer FILE or --issuer-id HEX".into()).into()),
        };
        let days = |d: u64| d.saturating_mul(86_400);
        Ok(trust.with_crl_max_age(days(self.crl_max_age)).with_crl_grace(days(self.crl_grace)))
    }
}

/// Where a command writes the message it produces. Messages carry tokens, licenses or
/// requests, so an existing file is never replaced without --force.
#[derive(Args)]
pub struct Output {
    /// Output file (refused if it exists, unless --force).
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

impl Output {
    /// Writes a public message.
    pub fn write(&self, bytes: &[u8]) -> anyhow::Result<()> {
        escx::fsutil::write_atomic(&self.out, bytes, escx::fsutil::MODE_PUBLIC, self.force)
            .map_err(failure::at(&self.out))
    }

    /// Writes a message a retried command makes again byte for byte (a meter report or
    /// close): a file that already holds exactly these bytes is left as it is.
    pub fn write_retry(&self, bytes: &[u8]) -> anyhow::Result<()> {
        if !self.force && std::fs::read(&self.out).is_ok_and(|held| held == bytes) {
            return Ok(());
        }
        self.write(bytes)
    }

    pub fn write_secret(&self, bytes: &[u8]) -> anyhow::Result<()> {
        escx::fsutil::write_atomic(&self.out, bytes, escx::fsutil::MODE_SECRET, self.force)
            .map_err(failure::at(&self.out))
    }
}

pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| escx::Error::io(path, e)).map_err(failure::at(path))
}

/// The content key of `package` from `wallet`, when the package's payload is encrypted;
/// `None` when it is not (or no wallet was given: the library then names what is missing).
pub fn content_key_for(wallet: Option<&Path>, package: &Path) -> anyhow::Result<Option<ContentKey>> {
    let Some(wallet) = wallet else { return Ok(None) };
    let mut reader = escx::container::PackageReader::open_file(package).map_err(failure::at(package))?;
    if !reader.sections().iter().any(|s| s.is_encrypted()) {
        return Ok(None);
    }
    let id = reader.package_id().map_err(failure::at(package))?;
    let key = Wallet::open_existing(wallet)?
        .content_key(&id.name, &id.version, reader.root(), escx::now_unix())
        .with_context(|| format!("{}: content key for {} {}", package.display(), id.name, id.version))?;
    Ok(Some(key))
}

pub fn bundle(path: &Path) -> anyhow::Result<BundleChain> {
    BundleChain::parse(&read(path)?).with_context(|| format!("{}", path.display()))
}

/// `--package-version`, parsed.
pub(crate) fn package_version(text: Option<&str>) -> anyhow::Result<Option<semver::Version>> {
    text.map(|v| {
        semver::Version::parse(v).map_err(|e| UsageError(format!("--package-version {v:?}: {e}")).into())
    })
    .transpose()
}

pub(crate) fn hex_arg(text: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text).map_err(|_| UsageError(format!("--{name}: {text:?} is not hex")).into())
}
