//! Passphrases: `ESCX_PASSPHRASE` for scripts, otherwise a prompt on the terminal.

use std::path::Path;

use anyhow::Context as _;
use escx::keyfile::{self, PASSPHRASE_ENV};
use escx::sig::SecretKey;
use zeroize::Zeroizing;

use crate::failure;

fn from_env() -> Option<Zeroizing<String>> {
    std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new)
}

/// The passphrase for an existing sealed key: the environment, else a prompt.
pub fn passphrase_for(path: &Path) -> Option<Zeroizing<String>> {
    from_env().or_else(|| {
        rpassword::prompt_password(format!("passphrase for {}: ", path.display())).ok().map(Zeroizing::new)
    })
}

/// Loads a secret key, asking for its passphrase only if it is sealed.
pub fn load_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    keyfile::read_secret_key(path, || {
        from_env().or_else(|| {
            rpassword::prompt_password(format!("passphrase for {}: ", path.display()))
                .ok()
                .map(Zeroizing::new)
        })
    })
    .map_err(failure::at(path))
}

/// The passphrase for a new key: from the environment, or typed twice.
pub fn new_passphrase(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let passphrase = match from_env() {
        Some(p) => p,
        None => {
            let first = rpassword::prompt_password(format!("passphrase for new key {}: ", path.display()))
                .map(Zeroizing::new)
                .map_err(|_| escx::Error::PassphraseRequired { path: path.into() })
                .map_err(failure::at(path))?;
            let second = rpassword::prompt_password("repeat the passphrase: ")
                .map(Zeroizing::new)
                .context("reading the passphrase")?;
            if *first != *second {
                return Err(failure::UsageError("the passphrases differ".into()).into());
            }
            first
        }
    };
    if passphrase.is_empty() {
        return Err(failure::UsageError(
            "empty passphrase; choose one, or pass --unencrypted to store the key in clear".into(),
        )
        .into());
    }
    let length = passphrase.chars().count();
    if length < PASSPHRASE_CHARS_ADVISED {
        eprintln!(
            "warning: the passphrase for {} is {length} character{} long; argon2id slows each guess, \
             but a passphrase this short can still be guessed: {PASSPHRASE_CHARS_ADVISED} or more is advised",
            path.display(),
            if length == 1 { "" } else { "s" }
        );
    }
    Ok(passphrase)
}

/// Below this many characters a new key's passphrase gets a warning (the key is still
/// written: the choice is the user's).
const PASSPHRASE_CHARS_ADVISED: usize = 12;
