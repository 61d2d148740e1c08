//! Trust and state arguments shared by the commands that read a registry.

use std::path::{Path, PathBuf};

use clap::Args;
use escx::keyfile;
use escx::policy::TrustPolicy;
use escx_manifest::client::StateDir;

use crate::failure::{self, UsageError};

/// Who signs the registry index and its packages, and where accepted index versions are
/// remembered.
#[derive(Args, Clone)]
pub struct ClientTrust {
    /// Trust policy with a [registry] table and package scopes.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["registry_key", "pubkey"])]
    pub policy: Option<PathBuf>,
    /// Trust this key to sign the registry index (repeatable; any one suffices).
    #[arg(long = "registry-key", value_name = "FILE")]
    pub registry_key: Vec<PathBuf>,
    /// Trust this key to sign packages (repeatable; any one suffices).
    #[arg(long, value_name = "FILE")]
    pub pubkey: Vec<PathBuf>,
    /// Where the last accepted index version is kept (default: $ESCX_STATE_DIR, else
    /// $XDG_STATE_HOME/escx, else ~/.local/state/escx).
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Judge expiry at this time instead of now (2027-01-01, RFC 3339, or @unix).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

impl ClientTrust {
    /// The policy: the file, or the shorthand built from --registry-key and --pubkey.
    pub fn policy(&self) -> anyhow::Result<TrustPolicy> {
        if let Some(path) = &self.policy {
            return TrustPolicy::load(path).map_err(failure::at(path));
        }
        if self.registry_key.is_empty() {
            return Err(UsageError(
                "pass --policy FILE, or --registry-key FILE (and --pubkey FILE for packages)".into(),
            )
            .into());
        }
        Ok(TrustPolicy::from_keys(read_public_keys(&self.pubkey)?)
            .with_registry_keys(read_public_keys(&self.registry_key)?))
    }

    /// The state directory.
    pub fn state(&self) -> StateDir {
        state_dir(self.state_dir.as_deref())
    }

    /// The evaluation time.
    pub fn now(&self) -> anyhow::Result<escx::UnixSeconds> {
        super::at_or_now(self.at.as_deref())
    }
}

/// Public keys from key files; an error names its file.
pub fn read_public_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<escx::sig::PublicKey>> {
    paths.iter().map(|p| keyfile::read_public_key(p).map_err(failure::at(p))).collect()
}

/// A policy that trusts these keys to sign a registry index, and no package.
pub fn registry_policy(paths: &[PathBuf]) -> anyhow::Result<TrustPolicy> {
    Ok(TrustPolicy::from_keys(Vec::new()).with_registry_keys(read_public_keys(paths)?))
}

/// `--state-dir`, else the default location.
pub fn state_dir(dir: Option<&Path>) -> StateDir {
    match dir {
        Some(dir) => StateDir::new(dir),
        None => StateDir::default_location(),
    }
}
