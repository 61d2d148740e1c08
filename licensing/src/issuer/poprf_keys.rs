//! The issuer's POPRF keys (licensing.md §2.2, §4): one random seed, from which every epoch's
//! key derives, kept in the issuer directory's `poprf.key` beside `signing.key` and sealed
//! the same way; and, for issuers made before this version, the epoch keys that were drawn
//! at random and stored in the database, moved into the same file.
//!
//! Every node holding a copy of the directory derives the same key for every epoch, so no
//! secret is ever written to the database, and adding an epoch writes no file.

use std::collections::BTreeMap;
use std::path::Path;

use escx::keyfile::{self, Protection};
use zeroize::Zeroizing;

use crate::Error;
use crate::poprf::{IssuerKey, SCALAR_BYTES};

/// The file in the issuer directory.
pub const POPRF_KEY_FILE: &str = "poprf.key";
/// The kind of secret file (keys.md §3.3) `poprf.key` is.
pub const POPRF_KEYS_ALG: &str = "escx-poprf-keys-v1";
/// The RFC 9497 `info` prefix of an epoch's `DeriveKeyPair`: followed by the epoch number
/// as 4 big-endian bytes.
pub const EPOCH_KEY_INFO: &[u8] = b"escx/poprf-epoch/v1";
/// Bytes of the seed.
pub const SEED_BYTES: usize = 32;
/// Bytes of a stored (pre-seed) epoch key: the epoch, 4 bytes big-endian, then the scalar.
const LEGACY_BYTES: usize = 4 + SCALAR_BYTES;

/// The seed and the stored keys of epochs made before it. Neither `Clone` nor `Debug`; the
/// bytes are zeroized when dropped.
pub struct PoprfKeys {
    seed: Zeroizing<[u8; SEED_BYTES]>,
    legacy: BTreeMap<u32, Zeroizing<[u8; SCALAR_BYTES]>>,
}

impl PoprfKeys {
    /// A fresh random seed and no stored keys.
    pub fn generate() -> Result<Self, Error> {
        let mut seed = Zeroizing::new([0u8; SEED_BYTES]);
        keyfile::fill_random(&mut *seed)?;
        Ok(Self { seed, legacy: BTreeMap::new() })
    }

    /// The key of `epoch`: its stored key when it has one, else `DeriveKeyPair(seed,
    /// EPOCH_KEY_INFO || u32be(epoch))`.
    pub fn key(&self, epoch: u32) -> Result<IssuerKey, Error> {
        match self.legacy.get(&epoch) {
            Some(secret) => IssuerKey::from_secret(&**secret),
            None => IssuerKey::derive(&*self.seed, &epoch_info(epoch)),
        }
    }

    /// The seed, for this crate's tests (feature `test-support`).
    #[cfg(feature = "test-support")]
    pub(crate) fn seed_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.seed.to_vec())
    }

    /// Adds a stored epoch key (one that was in the database). The same key again is a
    /// no-op; another key for an epoch already held is refused.
    pub(crate) fn add_legacy(&mut self, epoch: u32, secret: &[u8]) -> Result<(), Error> {
        let scalar: [u8; SCALAR_BYTES] = secret.try_into().map_err(|_| {
            Error::stored(format!("epoch {epoch}'s stored POPRF key is not {SCALAR_BYTES} bytes"))
        })?;
        match self.legacy.get(&epoch) {
            Some(held) if **held == scalar => Ok(()),
            Some(_) => Err(Error::stored(format!(
                "epoch {epoch}'s POPRF key in the database is not the one in {POPRF_KEY_FILE}"
            ))),
            None => {
                self.legacy.insert(epoch, Zeroizing::new(scalar));
                Ok(())
            }
        }
    }

    /// The file's secret bytes: the seed, then each stored key as the epoch (4 bytes,
    /// big-endian) and its scalar, by epoch.
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(SEED_BYTES + self.legacy.len() * LEGACY_BYTES));
        bytes.extend_from_slice(&*self.seed);
        for (epoch, scalar) in &self.legacy {
            bytes.extend_from_slice(&epoch.to_be_bytes());
            bytes.extend_from_slice(&**scalar);
        }
        bytes
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<Self, Error> {
        let bad = |reason: &str| {
            Error::Escx(escx::Error::KeyFile {
                path: path.into(),
                reason: format!("{POPRF_KEYS_ALG}: {reason}"),
            })
        };
        if bytes.len() < SEED_BYTES || !(bytes.len() - SEED_BYTES).is_multiple_of(LEGACY_BYTES) {
            return Err(bad("the secret is not a seed and whole epoch keys"));
        }
        let mut seed = Zeroizing::new([0u8; SEED_BYTES]);
        seed.copy_from_slice(&bytes[..SEED_BYTES]);
        let mut legacy = BTreeMap::new();
        let mut last = None;
        for record in bytes[SEED_BYTES..].chunks_exact(LEGACY_BYTES) {
            let (epoch, scalar) = record.split_at(4);
            let epoch = u32::from_be_bytes(epoch.try_into().map_err(|_| bad("short epoch"))?);
            if last.is_some_and(|l| l >= epoch) {
                return Err(bad("epoch keys out of order"));
            }
            last = Some(epoch);
            let mut held = Zeroizing::new([0u8; SCALAR_BYTES]);
            held.copy_from_slice(scalar);
            legacy.insert(epoch, held);
        }
        Ok(Self { seed, legacy })
    }

    /// Writes `dir/poprf.key` (mode 0600), sealed as `protection` says; replaces an
    /// existing file only with `overwrite` (atomically).
    pub(crate) fn write(&self, dir: &Path, protection: &Protection, overwrite: bool) -> Result<(), Error> {
        let path = dir.join(POPRF_KEY_FILE);
        keyfile::write_secret_bytes(&path, POPRF_KEYS_ALG, &self.encode(), protection, overwrite)?;
        Ok(())
    }

    /// Reads `dir/poprf.key`; `None` when there is none. `passphrase` is asked only if the
    /// file is sealed.
    pub fn read(
        dir: &Path,
        passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
    ) -> Result<Option<Self>, Error> {
        let path = dir.join(POPRF_KEY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = keyfile::read_secret_bytes(&path, POPRF_KEYS_ALG, passphrase)?;
        Self::decode(&bytes, &path).map(Some)
    }
}

/// `EPOCH_KEY_INFO || u32be(epoch)`.
fn epoch_info(epoch: u32) -> Vec<u8> {
    let mut info = EPOCH_KEY_INFO.to_vec();
    info.extend_from_slice(&epoch.to_be_bytes());
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_derive_distinct_keys_and_the_file_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let mut keys = PoprfKeys::generate().unwrap();
        keys.add_legacy(2, &[7u8; 32]).unwrap();
        let one = keys.key(1).unwrap().public_key();
        assert_ne!(one, keys.key(3).unwrap().public_key());
        assert_eq!(keys.key(2).unwrap().secret_bytes(), &[7u8; 32]);
        keys.write(tmp.path(), &Protection::Unencrypted, false).unwrap();
        let back = PoprfKeys::read(tmp.path(), || None).unwrap().unwrap();
        assert_eq!(back.key(1).unwrap().public_key(), one);
        assert_eq!(back.key(2).unwrap().secret_bytes(), &[7u8; 32]);
        // The same stored key again is a no-op; another one is refused.
        keys.add_legacy(2, &[7u8; 32]).unwrap();
        assert!(keys.add_legacy(2, &[8u8; 32]).is_err());
        // Nothing is overwritten without asking.
        assert!(keys.write(tmp.path(), &Protection::Unencrypted, false).is_err());
    }

    #[test]
    fn a_sealed_file_needs_its_passphrase_and_is_no_signing_key() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = PoprfKeys::generate().unwrap();
        let params = keyfile::Argon2Params { m_cost_kib: 64, t_cost: 1, p_cost: 1 };
        keys.write(tmp.path(), &Protection::Passphrase(Zeroizing::new("pw".into()), params), false).unwrap();
        let path = tmp.path().join(POPRF_KEY_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("NOT passphrase-protected"));
        assert!(PoprfKeys::read(tmp.path(), || None).is_err(), "no passphrase, no key");
        assert!(PoprfKeys::read(tmp.path(), || Some(Zeroizing::new("no".into()))).is_err());
        let back = PoprfKeys::read(tmp.path(), || Some(Zeroizing::new("pw".into()))).unwrap().unwrap();
        assert_eq!(back.key(5).unwrap().public_key(), keys.key(5).unwrap().public_key());
        // Given where a signing key is expected, it is refused, not misread.
        assert!(keyfile::read_secret_key(&path, || Some(Zeroizing::new("pw".into()))).is_err());
    }
}
