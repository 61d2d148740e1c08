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
use escx::manifest::PackageName;
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

    /// Starts a purchase of `count` tokens (licensing.md §5.1) under the newest bundle of
    /// `chain` the wallet accepts (see [`Self::add_issuer`]).
    pub fn request(
        &self,
        chain: &BundleChain,
        package: &PackageName,
        tier: &str,
        count: usize,
        now: UnixSeconds,
    ) -> Result<TokenRequest, Error> {
        let bundle = self.add_issuer(chain)?;
        self.request_at(&bundle, package, tier, count, now)
    }

    /// Starts a purchase under `bundle`, a version of a chain this wallet holds (for
    /// example the one [`Self::published`] returned): blinds fresh inputs and keeps them
    /// until the issuer answers.
    pub fn request_at(
        &self,
        bundle: &IssuerBundle,
        package: &PackageName,
        tier: &str,
        count: usize,
        now: UnixSeconds,
    ) -> Result<TokenRequest, Error> {
        let held = self.chain(bundle.issuer_id())?;
        if held.version(bundle.version()).is_none_or(|b| b.hash != bundle.hash) {
            return Err(Error::BundleFork { issuer: bundle.issuer_id(), version: bundle.version() });
        }
        let epoch = bundle
            .epoch_at(now)
            .ok_or_else(|| Error::NoEpoch { issuer: bundle.payload.name.clone(), version: bundle.version() })?
            .epoch;
        let blinded = Blinded::new(count)?;
        let request = TokenRequest {
            v: 1,
            package: package.clone(),
            tier: tier.to_owned(),
            epoch,
            blinded: blinded.elements.iter().map(|e| ByteBuf::from(e.to_vec())).collect(),
        };
        let parts = blinded.to_parts();
        let pending = PendingFile {
            v: 1,
            issuer: ByteBuf::from(bundle.issuer_id().0.to_vec()),
            package: package.clone(),
            tier: tier.to_owned(),
            epoch,
            inputs: parts.iter().map(|(input, _)| ByteBuf::from(input.to_vec())).collect(),
            clients: parts.iter().map(|(_, client)| ByteBuf::from(client.to_vec())).collect(),
        };
        let request_bytes = request.to_cbor();
        let path = self.dir.join("pending").join(format!("{}.cbor", short_id(&request_bytes)));
        write_secret(&path, &escx::cbor::encode(&pending))?;
        Ok(request)
    }

    /// Forgets a purchase the issuer definitely refused (nothing was sold): its pending
    /// inputs and blinds are removed. A purchase whose answer was lost must not be
    /// abandoned: the issuer may have sold it, and answers it again.
    pub fn abandon(&self, request: &TokenRequest) -> Result<(), Error> {
        let path = self.dir.join("pending").join(format!("{}.cbor", short_id(&request.to_cbor())));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(escx::Error::io(path, e).into()),
            _ => Ok(()),
        }
    }

    /// Checks the issuer's proof and stores the tokens (licensing.md §5.2). Returns how
    /// many tokens were added.
    pub fn finalize(&self, response: &TokenResponse) -> Result<usize, Error> {
        let mut last_error = None;
        for path in files(&self.dir.join("pending"))? {
            let pending: PendingFile = crate::messages::decode(&read(&path)?, "pending purchase")?;
            if pending.package != response.package
                || pending.tier != response.tier
                || pending.epoch != response.epoch
                || pending.inputs.len() != response.evaluated.len()
            {
                continue;
            }
            let issuer = self.issuer(messages::key_id(&pending.issuer)?)?;
            let epoch = issuer.epoch(pending.epoch).ok_or(Error::UnknownEpoch { epoch: pending.epoch })?;
            let poprf_key: [u8; ELEMENT_BYTES] = epoch
                .poprf_key
                .as_slice()
                .try_into()
                .map_err(|_| Error::Malformed { what: "issuer bundle", reason: "bad POPRF key".into() })?;
            let parts: Vec<PendingPart> = pending
                .inputs
                .iter()
                .zip(&pending.clients)
                .map(|(input, client)| {
                    let input: [u8; INPUT_BYTES] = input.as_slice().try_into().unwrap_or([0; INPUT_BYTES]);
                    (Zeroizing::new(input), Zeroizing::new(client.to_vec()))
                })
                .collect();
            let blinded = Blinded::from_parts(&parts)?;
            let evaluated = crate::poprf::Evaluated {
                elements: response
                    .evaluated
                    .iter()
                    .map(|e| {
                        e.as_slice().try_into().map_err(|_| Error::Malformed {
                            what: "token response",
                            reason: "bad evaluated element".into(),
                        })
                    })
                    .collect::<Result<_, _>>()?,
                proof: response
                    .proof
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Malformed { what: "token response", reason: "bad proof".into() })?,
            };
            let info = TokenInfo {
                package: pending.package.clone(),
                tier: pending.tier.clone(),
                epoch: pending.epoch,
            };
            match blinded.finalize(&evaluated, &poprf_key, &info) {
                Ok(tokens) => {
                    for token in &tokens {
                        let file = TokenFile {
                            v: 1,
                            issuer: pending.issuer.clone(),
                            package: pending.package.clone(),
                            tier: pending.tier.clone(),
                            epoch: pending.epoch,
                            input: ByteBuf::from(token.input.to_vec()),
                            output: ByteBuf::from(token.output.to_vec()),
                        };
                        let token_path =
                            self.dir.join("tokens").join(format!("{}.cbor", short_id(&token.output)));
                        write_secret(&token_path, &escx::cbor::encode(&file))?;
                    }
                    std::fs::remove_file(&path).map_err(|e| escx::Error::io(&path, e))?;
                    return Ok(tokens.len());
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(Error::NoPendingPurchase))
    }

    /// Unspent tokens per (package, tier).
    pub fn token_counts(&self) -> Result<Vec<(PackageName, String, usize)>, Error> {
        let mut counts: std::collections::BTreeMap<(PackageName, String), usize> = Default::default();
        for path in files(&self.dir.join("tokens"))? {
            let token: TokenFile = crate::messages::decode(&read(&path)?, "token")?;
            *counts.entry((token.package.clone(), token.tier.clone())).or_default() += 1;
        }
        Ok(counts.into_iter().map(|((p, t), n)| (p, t, n)).collect())
    }

    /// Spends one token for `package` into a sealed redemption request with fresh holder
    /// keys (licensing.md §5.3). The token stays in the wallet (under `redeeming/`) until
    /// the license arrives, so a lost response can be retried.
    pub fn redeem(&self, package: &str) -> Result<SealedRedeemRequest, Error> {
        self.redeem_tier(package, None)
    }

    /// [`Self::redeem`] with a token of `tier` when given.
    pub fn redeem_tier(&self, package: &str, tier: Option<&str>) -> Result<SealedRedeemRequest, Error> {
        let (token_path, token) = self.find_token(package, tier)?;
        let issuer = self.issuer(messages::key_id(&token.issuer)?)?;
        let holder = HolderKeys::generate();
        let request = RedeemRequest {
            v: 1,
            package: token.package.clone(),
            tier: token.tier.clone(),
            epoch: token.epoch,
            input: token.input.clone(),
            output: token.output.clone(),
            holder_key: holder.signing_public.clone(),
            holder_kem_key: holder.kem_public.clone(),
        };
        let sealed =
            kem::seal(&issuer.kem_key, PURPOSE_REDEEM, &Zeroizing::new(escx::cbor::encode(&request)))?;
        let holder_id = short_id(&holder.signing_public);
        let record = RedeemingFile { v: 1, issuer: token.issuer.clone(), token, holder };
        write_secret(
            &self.dir.join("redeeming").join(format!("{holder_id}.cbor")),
            &escx::cbor::encode(&record),
        )?;
        std::fs::remove_file(&token_path).map_err(|e| escx::Error::io(&token_path, e))?;
        Ok(SealedRedeemRequest::from_bytes(sealed))
    }

    /// The redemption of `package` this wallet sent and never got an answer to (its token
    /// is in `redeeming/`), sealed anew to the issuer: the issuer answers a request it
    /// answered before with the stored license (licensing.md §4.3), and a request it never
    /// received like any other. `None` when no redemption of the package is unanswered.
    pub fn resend_redemption(&self, package: &str) -> Result<Option<SealedRedeemRequest>, Error> {
        for path in files(&self.dir.join("redeeming"))? {
            let record: RedeemingFile = crate::messages::decode(&read(&path)?, "pending redemption")?;
            if record.token.package.as_str() != package {
                continue;
            }
            let issuer = self.issuer(messages::key_id(&record.issuer)?)?;
            let request = RedeemRequest {
                v: 1,
                package: record.token.package.clone(),
                tier: record.token.tier.clone(),
                epoch: record.token.epoch,
                input: record.token.input.clone(),
                output: record.token.output.clone(),
                holder_key: record.holder.signing_public.clone(),
                holder_kem_key: record.holder.kem_public.clone(),
            };
            let sealed =
                kem::seal(&issuer.kem_key, PURPOSE_REDEEM, &Zeroizing::new(escx::cbor::encode(&request)))?;
            return Ok(Some(SealedRedeemRequest::from_bytes(sealed)));
        }
        Ok(None)
    }

    /// Renewal (licensing.md §8.2): spends the next token for the tier of the newest license
    /// held for `package` into a redemption request, exactly like [`Self::redeem`]: fresh
    /// holder keys, nothing shared with the old license, so the issuer cannot link the two.
    /// Returns the request and the seconds left on the newest license (0 when it ended).
    pub fn renew(&self, package: &str, now: UnixSeconds) -> Result<(SealedRedeemRequest, u64), Error> {
        let newest = self
            .licenses_for(package)?
            .into_iter()
            .map(|(_, license)| license)
            .max_by_key(|license| license.not_after)
            .ok_or_else(|| Error::NoLicense { package: package.to_owned() })?;
        let sealed = self.redeem_tier(package, Some(&newest.tier))?;
        Ok((sealed, newest.not_after - now))
    }

    /// The wallet's receive key (created on first use), for others to transfer tokens to.
    pub fn receive_key(&self) -> Result<KemPublicKey, Error> {
        Ok(self.receive_secret()?.public_key().clone())
    }

    fn receive_secret(&self) -> Result<KemSecretKey, Error> {
        let path = self.dir.join("receive.cbor");
        if !path.exists() {
            let kem = KemSecretKey::generate();
            let file = ReceiveFile {
                v: 1,
                kem_public: ByteBuf::from(kem.public_key().as_bytes().to_vec()),
                kem_secret: ByteBuf::from(kem.secret_bytes().to_vec()),
            };
            write_secret(&path, &escx::cbor::encode(&file))?;
        }
        let file: ReceiveFile = crate::messages::decode(&read(&path)?, "receive key")?;
        Ok(KemSecretKey::from_parts(
            Zeroizing::new(file.kem_secret.to_vec()),
            KemPublicKey::from_bytes(&file.kem_public)?,
        )?)
    }

    /// Gives one unspent token for `package` (of `tier` when given) to the wallet whose
    /// receive key is `recipient` (licensing.md §8.3): the token is sealed to that key and
    /// written to `out`, then removed from this wallet. The issuer is not involved.
    pub fn transfer(
        &self,
        package: &str,
        tier: Option<&str>,
        recipient: &KemPublicKey,
        out: &Path,
    ) -> Result<Moved, Error> {
        let (token_path, token) = self.find_token(package, tier)?;
        let issuer_id = messages::key_id(&token.issuer)?;
        let chain = self.chain(issuer_id)?;
        let transfer = messages::TokenTransfer {
            v: 1,
            bundle: ByteBuf::from(chain.to_cbor()),
            package: token.package.clone(),
            tier: token.tier.clone(),
            epoch: token.epoch,
            input: token.input.clone(),
            output: token.output.clone(),
        };
        let plain = Zeroizing::new(escx::cbor::encode(&transfer));
        let sealed = kem::seal(recipient, messages::PURPOSE_TRANSFER, &plain)?;
        escx::fsutil::write_atomic(out, &sealed, escx::fsutil::MODE_SECRET, false)?;
        std::fs::remove_file(&token_path).map_err(|e| escx::Error::io(&token_path, e))?;
        Ok(Moved { package: token.package.clone(), tier: token.tier.clone(), issuer: issuer_id })
    }

    /// Takes a token transferred to this wallet's receive key. Its issuer bundle is
    /// verified and remembered. Whether the token is still unspent only the issuer can
    /// tell, at redemption: redeem received tokens promptly.
    pub fn receive(&self, sealed: &SealedTransfer) -> Result<Moved, Error> {
        let plain = kem::open(&self.receive_secret()?, messages::PURPOSE_TRANSFER, sealed.as_bytes())?;
        let transfer = messages::TokenTransfer::from_cbor(&plain)?;
        let chain = BundleChain::parse(&transfer.bundle)?;
        // The sender's chain may not replace ours: only an extension is taken.
        let bundle = self.add_issuer(&chain)?;
        bundle.epoch(transfer.epoch).ok_or(Error::UnknownEpoch { epoch: transfer.epoch })?;
        let file = TokenFile {
            v: 1,
            issuer: ByteBuf::from(bundle.issuer_id().0.to_vec()),
            package: transfer.package.clone(),
            tier: transfer.tier.clone(),
            epoch: transfer.epoch,
            input: transfer.input.clone(),
            output: transfer.output.clone(),
        };
        let path = self.dir.join("tokens").join(format!("{}.cbor", short_id(&transfer.output)));
        write_secret(&path, &escx::cbor::encode(&file))?;
        Ok(Moved {
            package: transfer.package.clone(),
            tier: transfer.tier.clone(),
            issuer: bundle.issuer_id(),
        })
    }

    fn find_token(&self, package: &str, tier: Option<&str>) -> Result<(PathBuf, TokenFile), Error> {
        for path in files(&self.dir.join("tokens"))? {
            let token: TokenFile = escx::cbor::decode_exact(&read(&path)?, "token").map_err(|reason| {
                Error::Malformed { what: "token", reason: format!("{}: {reason}", path.display()) }
            })?;
            if token.package == package && tier.is_none_or(|t| t == token.tier) {
                return Ok((path, token));
            }
        }
        Err(Error::NoToken { package: package.to_owned(), tier: tier.map(str::to_owned) })
    }

    /// Installs the issuer's sealed answer to a redemption (licensing.md §5.4): opens it
    /// with the matching holder key and checks the certificate before keeping it.
    pub fn install(&self, sealed: &SealedLicense) -> Result<LicensePayload, Error> {
        for path in files(&self.dir.join("redeeming"))? {
            let record: RedeemingFile = crate::messages::decode(&read(&path)?, "redemption")?;
            let Ok(plain) = kem::open(&record.holder.kem()?, PURPOSE_LICENSE, sealed.as_bytes()) else {
                continue;
            };
            let response: LicenseResponse = messages::decode_payload(&plain, "license response")?;
            let issuer = self.issuer(messages::key_id(&record.issuer)?)?;
            let license = verify::open_certificate(&response.certificate, &issuer)?;
            if license.holder_key.as_slice() != record.holder.signing_public.as_slice()
                || license.holder_kem_key.as_slice() != record.holder.kem_public.as_slice()
                || license.package != record.token.package
            {
                return Err(Error::LicenseRejected {
                    check: LicenseCheck::Package,
                    reason: "the certificate names other holder keys or another package than the redemption"
                        .into(),
                });
            }
            let file = LicenseFile { v: 1, certificate: response.certificate.clone(), holder: record.holder };
            let id = messages::id_hex(&license.license_id);
            write_secret(&self.dir.join("licenses").join(format!("{id}.cbor")), &escx::cbor::encode(&file))?;
            std::fs::remove_file(&path).map_err(|e| escx::Error::io(&path, e))?;
            return Ok(license);
        }
        Err(Error::NoPendingRedemption)
    }

    /// Every license installed, newest first, as the wallet read them (not verified:
    /// [`Self::verify`] checks one).
    pub fn licenses(&self) -> Result<Vec<LicensePayload>, Error> {
        let mut all: Vec<LicensePayload> =
            self.licenses_matching(None)?.into_iter().map(|(_, payload)| payload).collect();
        all.sort_by(|a, b| b.not_before.cmp(&a.not_before).then(a.license_id.cmp(&b.license_id)));
        Ok(all)
    }

    fn licenses_for(&self, package: &str) -> Result<Vec<(Arc<LicenseFile>, LicensePayload)>, Error> {
        self.licenses_matching(Some(package))
    }

    fn licenses_matching(
        &self,
        package: Option<&str>,
    ) -> Result<Vec<(Arc<LicenseFile>, LicensePayload)>, Error> {
        let mut out = Vec::new();
        let dir = self.dir.join("licenses");
        let dir_stamp = Stamp::of(&dir)?;
        let cached_listing = lock(&self.listing)
            .as_ref()
            .filter(|(held, _)| Some(held) == dir_stamp.as_ref())
            .map(|(_, l)| l.clone());
        let listing = match cached_listing {
            Some(listing) => listing,
            None => {
                let listing = files(&dir)?;
                if let Some(stamp) = dir_stamp {
                    *lock(&self.listing) = Some((stamp, listing.clone()));
                }
                listing
            }
        };
        for path in listing {
            let Some(stamp) = Stamp::of(&path)? else { continue };
            let mut cache = lock(&self.licenses);
            if let Some(cached) = cache.get(&path).filter(|c| c.stamp == stamp) {
                if package.is_none_or(|p| cached.payload.package == p) {
                    out.push((cached.file.clone(), cached.payload.clone()));
                }
                continue;
            }
            let file: LicenseFile = crate::messages::decode(&read(&path)?, "license")?;
            let envelope = Envelope::from_cbor(&file.certificate)?;
            let payload: LicensePayload =
                match messages::decode_payload(envelope.payload_unverified(), "license") {
                    Ok(payload) => payload,
                    // The signature is checked first (licensing.md §5.5 step 1): an altered
                    // certificate is license-signature; only a validly signed payload that
                    // does not decode is message-invalid.
                    Err(malformed) => {
                        let issuer = self.issuer(envelope.key_id())?;
                        verify::open_certificate(&file.certificate, &issuer)?;
                        return Err(malformed);
                    }
                };
            let file = Arc::new(file);
            cache.insert(
                path,
                CachedLicense { stamp, file: file.clone(), payload: payload.clone(), possession: None },
            );
            if package.is_none_or(|p| payload.package == p) {
                out.push((file, payload));
            }
        }
        Ok(out)
    }

    /// Accepts a CRL if it is signed by its issuer and newer than the one held (`crl`
    /// check): its number must be strictly greater. The very CRL already held is accepted
    /// again as a no-op; another CRL under the same number (an issuer that signed two) is
    /// refused like an older one. Returns the one now in force.
    pub fn accept_crl(&self, bytes: &[u8]) -> Result<CrlPayload, Error> {
        self.take_crl(bytes, false)
    }

    /// [`Wallet::accept_crl`]; with `older_is_held`, a valid CRL older than the one held
    /// is not an error but leaves the held one in force (a CRL shipped with a program
    /// must not lock its users out once a newer one was seen). Another CRL under the held
    /// number is refused either way: its issuer signed two lists under one number.
    fn take_crl(&self, bytes: &[u8], older_is_held: bool) -> Result<CrlPayload, Error> {
        let envelope = Envelope::from_cbor(bytes).map_err(|e| Error::LicenseRejected {
            check: LicenseCheck::CrlSignature,
            reason: e.to_string(),
        })?;
        // A CRL from an issuer this wallet does not hold is not a CRL it can use
        // (licensing.md §5.6: any CRL not signed by the issuer is crl-invalid).
        let issuer = self.issuer(envelope.key_id()).map_err(|_| Error::LicenseRejected {
            check: LicenseCheck::CrlSignature,
            reason: format!("signed by {}, which is not an issuer this wallet holds", envelope.key_id()),
        })?;
        let payload = verify::open_crl(bytes, &issuer)?;
        let path = self.dir.join("crl").join(format!("{}.cbor", issuer.issuer_id()));
        if let Some(held) = self.crl(issuer.issuer_id())? {
            if payload.number == held.number && read(&path)?.as_slice() == bytes {
                return Ok(held);
            }
            if older_is_held && payload.number < held.number {
                return Ok(held);
            }
            if payload.number <= held.number {
                return Err(Error::LicenseRejected {
                    check: LicenseCheck::Crl,
                    reason: format!(
                        "CRL number {} is not newer than number {} already accepted",
                        payload.number, held.number
                    ),
                });
            }
        }
        escx::fsutil::write_atomic(&path, bytes, escx::fsutil::MODE_PUBLIC, true)?;
        Ok(payload)
    }

    /// Whether the CRL this wallet holds for the license's issuer lists it (no CRL held,
    /// or another issuer's license: false).
    pub fn is_revoked(&self, license: &LicensePayload) -> Result<bool, Error> {
        let Ok(issuer) = messages::key_id(&license.issuer_key_id) else {
            return Ok(false);
        };
        if self.chain(issuer).is_err() {
            return Ok(false);
        }
        Ok(self
            .crl(issuer)?
            .is_some_and(|crl| crl.revoked.iter().any(|r| r.license_id == license.license_id)))
    }

    fn crl(&self, issuer: KeyId) -> Result<Option<CrlPayload>, Error> {
        let path = self.dir.join("crl").join(format!("{issuer}.cbor"));
        let Some(stamp) = Stamp::of(&path)? else { return Ok(None) };
        if let Some((_, crl)) = lock(&self.crls).get(&issuer).filter(|(held, _)| *held == stamp) {
            return Ok(Some(crl.clone()));
        }
        let crl = verify::open_crl(&read(&path)?, &self.issuer(issuer)?)?;
        lock(&self.crls).insert(issuer, (stamp, crl.clone()));
        Ok(Some(crl))
    }

    /// Reads and advances the wallet's clock: refuses a time more than the tolerance
    /// before the latest time seen (`clock` check).
    fn observe_clock(&self, now: UnixSeconds, signed: UnixSeconds) -> Result<UnixSeconds, Error> {
        let path = self.dir.join("clock.toml");
        let stamp = Stamp::of(&path)?;
        let cached =
            lock(&self.clock).as_ref().filter(|(held, _)| Some(held) == stamp.as_ref()).map(|(_, t)| *t);
        let latest = match cached {
            Some(latest) => latest,
            None => {
                let latest = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| text.trim().strip_prefix("latest_seen = ").and_then(|n| n.parse().ok()))
                    .map_or(UnixSeconds::EPOCH, UnixSeconds);
                if let Some(stamp) = stamp {
                    *lock(&self.clock) = Some((stamp, latest));
                }
                latest
            }
        };
        if now + CLOCK_TOLERANCE_SECS < latest {
            return Err(Error::LicenseRejected {
                check: LicenseCheck::Clock,
                reason: format!(
                    "the clock reads {} but this wallet has already seen {}; the clock was set back",
                    escx::timestamp::format_rfc3339(now),
                    latest.rfc3339()
                ),
            });
        }
        if now + CLOCK_TOLERANCE_SECS < signed {
            return Err(Error::LicenseRejected {
                check: LicenseCheck::Clock,
                reason: format!(
                    "the clock reads {} but the issuer signed the CRL this wallet holds at {}; the clock was set \
                     back",
                    escx::timestamp::format_rfc3339(now),
                    signed.rfc3339()
                ),
            });
        }
        if now > latest {
            escx::fsutil::write_atomic(
                &path,
                format!("latest_seen = {now}\n").as_bytes(),
                escx::fsutil::MODE_PUBLIC,
                true,
            )?;
        }
        Ok(latest.max(now))
    }

    /// Verifies a license for `package` offline (licensing.md §5.5), accepting only
    /// licenses signed by an issuer `trust` names (what the program embeds; never what
    /// the wallet holds). With several licenses the newest (latest `not_before`, then
    /// smallest id) that passes every check wins; otherwise the error of the last tried. `crl` is accepted first if given.
    pub fn verify(
        &self,
        trust: &Trust,
        package: &str,
        version: Option<&semver::Version>,
        crl: Option<&[u8]>,
        now: UnixSeconds,
    ) -> Result<Verified, Error> {
        if let Some(bytes) = crl {
            self.take_crl(bytes, true)?;
        }
        // Signed times anchor the clock check: a CRL's issued_at is the issuer's clock,
        // which deleting clock.toml does not move back (§5.5 step 2).
        let mut signed = UnixSeconds::EPOCH;
        for issuer in trust.issuers() {
            if self.chain(*issuer).is_ok()
                && let Some(crl) = self.crl(*issuer)?
            {
                signed = signed.max(crl.issued_at);
            }
        }
        self.observe_clock(now, signed)?;
        let mut licenses = self.licenses_for(package)?;
        if licenses.is_empty() {
            return Err(Error::NoLicense { package: package.to_owned() });
        }
        // Newest first, so the verdict does not depend on file names: after a renewal the
        // new license is the one a program verifies (and meters against).
        licenses
            .sort_by(|a, b| b.1.not_before.cmp(&a.1.not_before).then(a.1.license_id.cmp(&b.1.license_id)));
        let mut last = None;
        for (file, _) in &licenses {
            match self.check_one(trust, file, package, version, now) {
                Ok(verified) => return Ok(verified),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| Error::NoLicense { package: package.to_owned() }))
    }

    fn check_one(
        &self,
        trust: &Trust,
        file: &Arc<LicenseFile>,
        package: &str,
        version: Option<&semver::Version>,
        now: UnixSeconds,
    ) -> Result<Verified, Error> {
        // The envelope's signer must be an issuer the program trusts (§5.5 step 1), and
        // picks the bundle; the payload's issuer_key_id must then name the same key
        // (checked after the signature).
        let signer = Envelope::from_cbor(&file.certificate)
            .map_err(|e| Error::LicenseRejected { check: LicenseCheck::Signature, reason: e.to_string() })?
            .key_id();
        if !trust.accepts(signer) {
            let accepted = trust.issuers().iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            return Err(Error::LicenseRejected {
                check: LicenseCheck::Issuer,
                reason: format!(
                    "signed by issuer {signer}; this program accepts licenses only from {accepted}"
                ),
            });
        }
        let issuer = self.issuer(signer).map_err(|_| Error::LicenseRejected {
            check: LicenseCheck::Issuer,
            reason: format!("signed by {signer}, whose bundle this wallet does not hold"),
        })?;
        let crl = self.crl(issuer.issuer_id())?;
        let (license, mut checks) = verify::verify_certificate_under(
            &file.certificate,
            &issuer,
            crl.as_ref(),
            Some(trust),
            package,
            version,
            now,
        )?;
        checks.insert(
            0,
            Check {
                name: "issuer",
                ok: true,
                detail: format!("issuer {signer} is one this program accepts"),
            },
        );
        checks.insert(
            2,
            Check {
                name: "clock",
                ok: true,
                detail: "not earlier than the latest time this wallet has seen".into(),
            },
        );
        let proven = lock(&self.licenses)
            .values()
            .find(|cached| Arc::ptr_eq(&cached.file, file))
            .and_then(|cached| cached.possession.clone());
        let detail = match proven {
            Some(detail) => detail,
            None => {
                let holder_key = PublicKey::from_bytes(&license.holder_key)?;
                let holder = file.holder.signing()?;
                let mut challenge = [0u8; 32];
                escx::keyfile::fill_random(&mut challenge)?;
                let proof = Envelope::seal(CONTEXT_POSSESSION, challenge.to_vec(), &holder);
                proof.open(CONTEXT_POSSESSION, &holder_key).map_err(|e| Error::LicenseRejected {
                    check: LicenseCheck::Possession,
                    reason: e.to_string(),
                })?;
                let detail = format!("this wallet holds holder key {}", holder_key.id());
                if let Some(cached) = lock(&self.licenses).values_mut().find(|c| Arc::ptr_eq(&c.file, file)) {
                    cached.possession = Some(detail.clone());
                }
                detail
            }
        };
        checks.push(Check { name: "possession", ok: true, detail });
        Ok(Verified { license, checks })
    }

    /// The wallet directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The licenses for `package` whose validity window overlaps `[from, until)`, newest
    /// `not_before` first: the payload and the certificate bytes. Signatures are not
    /// checked here; whoever relies on a license verifies it ([`Self::verify`]).
    pub fn licenses_during(
        &self,
        package: &str,
        from: UnixSeconds,
        until: UnixSeconds,
    ) -> Result<Vec<(LicensePayload, Vec<u8>)>, Error> {
        let mut found: Vec<(LicensePayload, Vec<u8>)> = self
            .licenses_for(package)?
            .into_iter()
            .filter(|(_, l)| l.not_before < until && from < l.not_after)
            .map(|(file, license)| (license, file.certificate.to_vec()))
            .collect();
        found.sort_by(|a, b| b.0.not_before.cmp(&a.0.not_before).then(a.0.license_id.cmp(&b.0.license_id)));
        Ok(found)
    }

    /// Signs `payload` under `context` with the holder key of the license `license_id`
    /// of `package`; returns the envelope bytes.
    pub fn seal_as_holder(
        &self,
        package: &str,
        license_id: &[u8],
        context: escx::sig::SigningContext,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, Error> {
        let (file, _) = self
            .licenses_for(package)?
            .into_iter()
            .find(|(_, l)| l.license_id.as_slice() == license_id)
            .ok_or_else(|| Error::UnknownLicense { license_id: hex::encode(license_id) })?;
        Ok(Envelope::seal(context, payload, &file.holder.signing()?).to_cbor())
    }

    /// A proof of possession for `package` over a verifier's `challenge` (licensing.md §5.6).
    pub fn prove(&self, package: &str, challenge: &[u8]) -> Result<Vec<u8>, Error> {
        let (file, _) = self
            .licenses_for(package)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoLicense { package: package.to_owned() })?;
        let payload = PossessionPayload {
            v: 1,
            challenge: ByteBuf::from(challenge.to_vec()),
            certificate: file.certificate.clone(),
        };
        Ok(Envelope::seal(CONTEXT_POSSESSION, escx::cbor::encode(&payload), &file.holder.signing()?)
            .to_cbor())
    }

    /// A request for the content key of the `package` file with signed `root` and
    /// `version`, from a license that covers it (licensing.md §8.1): signed by that
    /// license's holder key, for its issuer, which answers with the key wrapped to the
    /// license ([`Self::add_key`]). The license must pass every offline check of
    /// [`Self::verify`] for `version` under its own issuer; the newest such one asks.
    pub fn key_request(
        &self,
        package: &str,
        version: &semver::Version,
        root: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Vec<u8>, Error> {
        self.observe_clock(now, UnixSeconds::EPOCH)?;
        let mut last = None;
        let mut held = self.licenses_for(package)?;
        held.sort_by_key(|(_, license)| std::cmp::Reverse(license.not_before));
        for (file, license) in held {
            let trust = Trust::issuer(messages::key_id(&license.issuer_key_id)?);
            if let Err(error) = self.check_one(&trust, &file, package, Some(version), now) {
                last = Some(error);
                continue;
            }
            let payload = messages::KeyRequestPayload {
                v: 1,
                certificate: file.certificate.clone(),
                package_root: ByteBuf::from(root.to_vec()),
            };
            return Ok(Envelope::seal(
                messages::CONTEXT_KEY_REQUEST,
                escx::cbor::encode(&payload),
                &file.holder.signing()?,
            )
            .to_cbor());
        }
        Err(last.unwrap_or_else(|| Error::NoLicense { package: package.to_owned() }))
    }

    /// Keeps the content key an issuer answered a key request with (licensing.md §8.1),
    /// after checking that it opens with the holder KEM key of the license it names, as
    /// `keys/<license id>-<root>.cbor` (mode 0600). A key already held is kept as it is.
    /// Returns the license id and the root, hex.
    pub fn add_key(&self, response: &[u8]) -> Result<(String, String), Error> {
        let response = messages::KeyResponse::from_cbor(response)?;
        let id = hex::encode(&response.license_id);
        let (file, _) = self
            .licenses_matching(None)?
            .into_iter()
            .find(|(_, l)| l.license_id == response.license_id)
            .ok_or_else(|| Error::UnknownLicense { license_id: id.clone() })?;
        let root: [u8; 32] = response.wrapped.package_root.as_slice().try_into().map_err(|_| {
            Error::Malformed { what: "key response", reason: "package_root must be 32 bytes".into() }
        })?;
        let key = kem::open_bound(
            &file.holder.kem()?,
            crate::issuer::PURPOSE_WRAPPED_KEY,
            &root,
            &response.wrapped.sealed,
        )?;
        ContentKey::from_bytes(&key)?;
        let dir = self.dir.join("keys");
        escx::fsutil::create_private_dir(&dir)?;
        let path = dir.join(format!("{id}-{}.cbor", hex::encode(root)));
        if !path.exists() {
            write_secret(&path, &escx::cbor::encode(&response.wrapped))?;
        }
        Ok((id, hex::encode(root)))
    }

    /// The wrapped key of `root` for a license: from its certificate, or kept since by
    /// [`Self::add_key`].
    fn wrapped_key(&self, license: &LicensePayload, root: &[u8; 32]) -> Result<Option<WrappedKey>, Error> {
        if let Some(wrapped) = license.wrapped_keys.iter().find(|w| w.package_root.as_slice() == root) {
            return Ok(Some(wrapped.clone()));
        }
        let path = self.dir.join("keys").join(format!(
            "{}-{}.cbor",
            hex::encode(&license.license_id),
            hex::encode(root)
        ));
        if !path.exists() {
            return Ok(None);
        }
        let wrapped: WrappedKey = messages::decode(&read(&path)?, "kept content key")?;
        Ok(Some(wrapped))
    }

    /// The content key for the package file with signed `root` (licensed content): taken
    /// only from a license that passes every offline check of [`Self::verify`] (signature,
    /// clock, window, revocation, package and `version`).
    pub fn content_key(
        &self,
        package: &str,
        version: &semver::Version,
        root: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<ContentKey, Error> {
        self.observe_clock(now, UnixSeconds::EPOCH)?;
        let mut last = None;
        for (file, license) in self.licenses_for(package)? {
            let Some(wrapped) = self.wrapped_key(&license, root)? else {
                continue;
            };
            // The wrapped key itself names the issuer: only the issuer the package's
            // content key was sealed to can wrap it (§8.1), so the license's own signer is
            // the one to trust here, under the default revocation age rule.
            let trust = Trust::issuer(messages::key_id(&license.issuer_key_id)?);
            if let Err(error) = self.check_one(&trust, &file, package, Some(version), now) {
                last = Some(error);
                continue;
            }
            let bytes = kem::open_bound(
                &file.holder.kem()?,
                crate::issuer::PURPOSE_WRAPPED_KEY,
                root,
                &wrapped.sealed,
            )?;
            return Ok(ContentKey::from_bytes(&bytes)?);
        }
        Err(last.unwrap_or_else(|| Error::NoContentKey {
            package: package.to_owned(),
            version: version.to_string(),
        }))
    }
}
