//! The customer's wallet (spec: licensing.md §5): pending purchases, unspent tokens,
//! licenses with their holder keys, the latest CRL per issuer, and the latest time seen.
//!
//! A directory (mode 0700) of CBOR files (mode 0600), each written atomically:
//!
//! ```text
//! issuers/<issuer id>.chain     issuer bundle chains, pinned at first sight (re-verified on use)
//! pending/<request id>.cbor     token inputs and blinds awaiting the issuer's answer
//! tokens/<token id>.cbor        unspent tokens
//! redeeming/<holder id>.cbor    a token on its way to a license, with the fresh holder keys
//! licenses/<license id>.cbor    certificate + holder keys
//! crl/<issuer id>.cbor          the newest CRL accepted from each issuer
//! clock.toml                    the latest time seen (clock rollback detection)
//! receive.cbor                  the ML-KEM key other wallets seal transferred tokens to
//! ```

use crate::LicenseCheck;
use escx::UnixSeconds;
use escx::header::PackageName;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use escx::content::ContentKey;
use escx::envelope::Envelope;
use escx::kem::{self, KemPublicKey, KemSecretKey};
use escx::sig::{KeyId, PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::Error;
use crate::messages::{
    self, BundleChain, CONTEXT_POSSESSION, ChainRelation, CrlPayload, IssuerBundle, LicensePayload,
    LicenseResponse, PURPOSE_LICENSE, PURPOSE_REDEEM, PossessionPayload, RedeemRequest, SealedLicense,
    SealedRedeemRequest, SealedTransfer, TokenRequest, TokenResponse, WrappedKey,
};
use crate::poprf::{Blinded, ELEMENT_BYTES, INPUT_BYTES, PendingPart, TokenInfo};
use crate::trust::Trust;
use crate::verify::{self, Check};

// The wallet's work, one file per concern; the files, the holder keys, the issuers and
// the caches are here.
mod checks;
mod keys;
mod purchase;
mod transfer;

/// How far the clock may appear to go back before it counts as rolled back.
pub const CLOCK_TOLERANCE_SECS: u64 = 300;

const SUBDIRS: [&str; 6] = ["issuers", "pending", "tokens", "redeeming", "licenses", "crl"];

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingFile {
    v: u8,
    issuer: ByteBuf,
    package: PackageName,
    tier: String,
    epoch: u32,
    inputs: Vec<ByteBuf>,
    clients: Vec<ByteBuf>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    v: u8,
    issuer: ByteBuf,
    package: PackageName,
    tier: String,
    epoch: u32,
    input: ByteBuf,
    output: ByteBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderKeys {
    signing_public: ByteBuf,
    signing_secret: ByteBuf,
    kem_public: ByteBuf,
    kem_secret: ByteBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemingFile {
    v: u8,
    issuer: ByteBuf,
    token: TokenFile,
    holder: HolderKeys,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LicenseFile {
    v: u8,
    certificate: ByteBuf,
    holder: HolderKeys,
}

impl Drop for HolderKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.signing_secret.as_mut_slice());
        zeroize::Zeroize::zeroize(self.kem_secret.as_mut_slice());
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        for secret in self.inputs.iter_mut().chain(self.clients.iter_mut()) {
            zeroize::Zeroize::zeroize(secret.as_mut_slice());
        }
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.input.as_mut_slice());
        zeroize::Zeroize::zeroize(self.output.as_mut_slice());
    }
}

/// The wallet's receive key (`receive.cbor`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiveFile {
    v: u8,
    kem_public: ByteBuf,
    kem_secret: ByteBuf,
}

impl Drop for ReceiveFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.kem_secret.as_mut_slice());
    }
}

/// What a transfer or receipt moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Package.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// Issuer key id.
    pub issuer: KeyId,
}

impl HolderKeys {
    fn generate() -> Self {
        let signing = SecretKey::generate();
        let kem = KemSecretKey::generate();
        Self {
            signing_public: ByteBuf::from(signing.public_key().as_bytes().to_vec()),
            signing_secret: ByteBuf::from(signing.export_secret().to_vec()),
            kem_public: ByteBuf::from(kem.public_key().as_bytes().to_vec()),
            kem_secret: ByteBuf::from(kem.secret_bytes().to_vec()),
        }
    }

    fn signing(&self) -> Result<SecretKey, Error> {
        let public = PublicKey::from_bytes(&self.signing_public)?;
        Ok(SecretKey::from_parts(Zeroizing::new(self.signing_secret.to_vec()), public)?)
    }

    fn kem(&self) -> Result<KemSecretKey, Error> {
        Ok(KemSecretKey::from_parts(
            Zeroizing::new(self.kem_secret.to_vec()),
            KemPublicKey::from_bytes(&self.kem_public)?,
        )?)
    }
}

/// A verified license.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The certificate payload.
    pub license: LicensePayload,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

/// A wallet directory.
pub struct Wallet {
    dir: PathBuf,
    /// Verified issuer bundles, reused while their file is unchanged.
    bundles: Mutex<HashMap<KeyId, (Stamp, BundleChain)>>,
    /// Verified CRLs, reused while their file is unchanged.
    crls: Mutex<HashMap<KeyId, (Stamp, CrlPayload)>>,
    /// Decoded license files, reused while the file is unchanged.
    licenses: Mutex<HashMap<PathBuf, CachedLicense>>,
    /// The `licenses/` listing, reused while the directory is unchanged.
    listing: Mutex<Option<(Stamp, Vec<PathBuf>)>>,
    /// The latest time seen as last read from `clock.toml`, while the file is unchanged.
    clock: Mutex<Option<(Stamp, UnixSeconds)>>,
}

/// What identifies one version of a file: length, modification time and (on Unix) inode
/// and change time. Wallet files are replaced by atomic renames, so every write gives a new
/// inode. The caches only save re-reading and re-verifying the wallet's own files: the
/// certificate's signature is checked on every verification.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64, i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Result<Option<Self>, Error> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(escx::Error::io(path, e).into()),
        };
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
        };
        Ok(Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode,
        }))
    }
}

struct CachedLicense {
    stamp: Stamp,
    file: Arc<LicenseFile>,
    payload: LicensePayload,
    /// Set once the holder key was shown to sign for this certificate: the possession
    /// check's detail line.
    possession: Option<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves only a cache behind; keep using it.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    escx::fsutil::write_atomic(path, bytes, escx::fsutil::MODE_SECRET, true)?;
    Ok(())
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    Ok(Zeroizing::new(std::fs::read(path).map_err(|e| escx::Error::io(path, e))?))
}

fn files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| escx::Error::io(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cbor"))
        .collect();
    out.sort();
    Ok(out)
}

fn short_id(bytes: &[u8]) -> String {
    hex::encode(&blake3::hash(bytes).as_bytes()[..16])
}

impl Wallet {
    /// Opens a wallet directory that exists; a path that holds no wallet is
    /// [`Error::NoWallet`] (a mistyped `--wallet` must not start an empty wallet). A
    /// wallet is a directory holding the wallet's subdirectories, all of which its first
    /// use made; one that lost one of them (a deleted `crl/`) is still a wallet, and it is
    /// made again, empty. A directory with fewer (a user's folder that happens to have a
    /// `tokens/`) is not taken for one.
    pub fn open_existing(dir: &Path) -> Result<Self, Error> {
        let held = SUBDIRS.iter().filter(|sub| dir.join(sub).is_dir()).count();
        if held + 1 < SUBDIRS.len() {
            return Err(Error::NoWallet { path: dir.to_path_buf() });
        }
        Self::open(dir)
    }

    /// Opens a wallet directory, creating it if needed (for the first purchase).
    pub fn open(dir: &Path) -> Result<Self, Error> {
        for sub in SUBDIRS {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| escx::Error::io(&path, e))?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| escx::Error::io(dir, e))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            bundles: Mutex::default(),
            crls: Mutex::default(),
            licenses: Mutex::default(),
            listing: Mutex::default(),
            clock: Mutex::default(),
        })
    }

    /// Remembers an issuer's bundle chain (the trust anchor for its licenses) and returns
    /// the newest version the wallet now holds (licensing.md §5.7). The first chain seen
    /// for an issuer key is pinned; later ones are accepted only if they extend it. An
    /// older chain (a prefix of the pinned one) changes nothing; one that differs at any
    /// version is a fork and is refused, whoever brought it (the issuer, or a sender of a
    /// transferred token).
    pub fn add_issuer(&self, chain: &BundleChain) -> Result<IssuerBundle, Error> {
        let id = chain.issuer_id();
        let held = match self.chain(id) {
            Ok(held) => Some(held),
            Err(Error::LicenseRejected { check: LicenseCheck::Issuer, .. }) => None,
            Err(other) => return Err(other),
        };
        match held.as_ref().map(|held| chain.relation(held)) {
            None | Some(ChainRelation::Extends) => {
                let path = self.chain_path(id);
                escx::fsutil::write_atomic(&path, &chain.to_cbor(), escx::fsutil::MODE_PUBLIC, true)?;
                Ok(chain.head().clone())
            }
            Some(ChainRelation::Same | ChainRelation::Older) => {
                Ok(held.map_or_else(|| chain.head().clone(), |h| h.head().clone()))
            }
            Some(ChainRelation::Fork(version)) => Err(Error::BundleFork { issuer: id, version }),
        }
    }

    /// Checks the wallet's chain for `issuer` against the version and bundle hash a
    /// channel every customer reads publishes (the registry index, licensing.md §5.7):
    /// the wallet must hold that version with that hash. Returns that version, which is the
    /// one to buy under (a newer one, not yet published, could be one shown only to this
    /// wallet).
    pub fn published(&self, issuer: KeyId, version: u64, hash: &[u8; 32]) -> Result<IssuerBundle, Error> {
        let chain = self.chain(issuer)?;
        let unpublished = |reason: String| Error::BundleUnpublished { issuer, reason };
        let bundle = chain.version(version).ok_or_else(|| {
            unpublished(format!(
                "the registry publishes bundle version {version}, this wallet holds versions 1 to {}; \
                 fetch the issuer's current bundle chain",
                chain.head().version()
            ))
        })?;
        if bundle.hash != *hash {
            return Err(Error::BundleFork { issuer, version });
        }
        Ok(bundle.clone())
    }

    fn chain_path(&self, id: KeyId) -> PathBuf {
        self.dir.join("issuers").join(format!("{id}.chain"))
    }

    /// The chain held for an issuer, re-verified when its file changed.
    pub fn chain(&self, id: KeyId) -> Result<BundleChain, Error> {
        let path = self.chain_path(id);
        let Some(stamp) = Stamp::of(&path)? else {
            return Err(Error::LicenseRejected {
                check: LicenseCheck::Issuer,
                reason: format!("issuer {id} is not in this wallet"),
            });
        };
        if let Some((_, chain)) = lock(&self.bundles).get(&id).filter(|(held, _)| *held == stamp) {
            return Ok(chain.clone());
        }
        let chain = BundleChain::parse(&read(&path)?)?;
        if chain.issuer_id() != id {
            return Err(Error::LicenseRejected {
                check: LicenseCheck::Issuer,
                reason: format!("{} holds another issuer", path.display()),
            });
        }
        lock(&self.bundles).insert(id, (stamp, chain.clone()));
        Ok(chain)
    }

    /// The newest bundle held for an issuer, re-verified.
    pub fn issuer(&self, id: KeyId) -> Result<IssuerBundle, Error> {
        Ok(self.chain(id)?.head().clone())
    }

    /// The wallet directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
