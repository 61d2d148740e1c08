//! The issuer (spec: licensing.md §4): sells tokens, redeems them into license
//! certificates, keeps the spent set and the revocation list.
//!
//! State lives in a directory (mode 0700): `signing.key` (ML-DSA-87, an escx key file),
//! `poprf.key` (the seed every epoch's POPRF key derives from, sealed like `signing.key`),
//! `kem.key` (ML-KEM-1024, mode 0600) and `issuer.sqlite` (mode 0600, WAL,
//! synchronous=FULL): the public POPRF key of each epoch, the published bundle chain, who owns which
//! package scope, the catalog of sellable (package, tier), content keys, sale events with
//! the answer each purchase got, the spent-token set with the answer each redemption got,
//! issued licenses and revocations. The database holds nothing that links a purchase to a
//! redemption: a sale row has no token data, a spent row is a hash of a token the issuer
//! never saw blinded, and licenses name only fresh holder keys.

use escx::UnixSeconds;
use escx::header::PackageName;
use escx_manifest::Micros;
use std::path::{Path, PathBuf};

use escx::container::PackageReader;
use escx::content::{self, ContentBinding};
use escx::envelope::Envelope;
use escx::kem::{self, KemPublicKey, KemSecretKey};
use escx::keyfile::{self, Protection};
use escx::policy::TrustPolicy;
use escx::sig::{KeyId, PublicKey, SecretKey};
use escx_manifest::schema::{Manifest, PriceUnit};
use escx_store::Location;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::messages::{
    BundleChain, BundlePayload, CONTEXT_CRL, CONTEXT_LICENSE, CrlPayload, Epoch, IssuerBundle,
    LicensePayload, PURPOSE_LICENSE, PURPOSE_REDEEM, RedeemRequest, SealedLicense, SealedRedeemRequest,
    TokenRequest, TokenResponse, WrappedKey,
};
use crate::poprf::{IssuerKey, TokenInfo};
use crate::{Error, LicenseCheck};

mod accounts;
mod issuance;
mod memory;
mod poprf_keys;
mod revocation;
mod sql;
pub mod store;

pub use poprf_keys::{EPOCH_KEY_INFO, POPRF_KEY_FILE, POPRF_KEYS_ALG, PoprfKeys};
pub use sql::SCHEMA_VERSION;
use store::{IssuerReader, IssuerStore, IssuerWriter, LicenseRecord, StoredContentKey};
pub use store::{MemoryIssuerStore, SqlIssuerStore};

/// Signing key file in the issuer directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";
/// KEM key file in the issuer directory.
pub const KEM_KEY_FILE: &str = "kem.key";
/// Database file in the issuer directory.
pub const DATABASE_FILE: &str = "issuer.sqlite";
/// Default epoch length: POPRF keys rotate every 90 days.
pub const EPOCH_SECS: u64 = 90 * 86_400;
/// Sealed-box purpose of a content key sealed to the issuer (the content-key section).
pub const PURPOSE_CONTENT_KEY: &str = escx::content::PURPOSE_CONTENT_KEY;
/// Sealed-box purpose of a content key wrapped to a license holder, bound to the root of
/// the package file it decrypts (licensing.md §8.1).
pub const PURPOSE_WRAPPED_KEY: &str = "escx/wrapped-content-key/v1";
/// `derive_key` context of a purchase's id: the same request is the same purchase.
pub const CONTEXT_REQUEST_ID: &str = "escx v1 token request id";
/// `derive_key` context of a redemption's id: the same request is the same redemption.
pub const CONTEXT_REDEMPTION_ID: &str = "escx v1 redemption id";
/// Clock skew tolerated when a token's epoch has just ended.
const EPOCH_GRACE_SECS: u64 = 7 * 86_400;

/// A sale event, the input of settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sale {
    /// Sequence number.
    pub id: i64,
    /// Package.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// Epoch of the tokens sold.
    pub epoch: u32,
    /// Tokens sold.
    pub count: u32,
    /// Price per token, micro-units.
    pub unit_price_micros: Micros,
    /// count x unit price.
    pub total_micros: Micros,
    /// Currency.
    pub currency: String,
    /// When (Unix seconds).
    #[serde(serialize_with = "escx::timestamp::serialize_rfc3339")]
    pub at: UnixSeconds,
}

/// What the issuer sells for one (package, tier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Package.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// Price per token (one license), micro-units.
    pub price_micros: Micros,
    /// Currency.
    pub currency: String,
    /// Price unit (`one-off`, `hour`, `month`, `year`), which sets the license lifetime.
    pub unit: String,
    /// Entitled features.
    pub features: Vec<String>,
    /// Seats.
    pub seats: Option<u32>,
    /// The tier's telemetry mode and the package's metrics, which a version-2 certificate
    /// carries (licensing.md §3.4). `None` for an offer registered before the issuer kept
    /// them: its certificates are version 1 until the package is registered again.
    pub terms: Option<crate::messages::LicenseTerms>,
}

/// What registering a package file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Package name.
    pub package: PackageName,
    /// Package version.
    pub version: String,
    /// The signed root of the file registered.
    pub root: [u8; 32],
    /// The offers now on sale, one per `[pricing]` tier.
    pub offers: Vec<Offer>,
    /// Whether the file's content key was stored (an encrypted payload).
    pub content_key: bool,
    /// The ownership scope (`acme/*`, or the name of an unscoped package) and its owners.
    pub scope: String,
    /// Owner key ids of the scope.
    pub owners: Vec<KeyId>,
    /// True when this registration made those keys the owners.
    pub claimed: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KemKeyFile {
    v: u8,
    public: ByteBuf,
    secret: ByteBuf,
}

impl Drop for KemKeyFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.secret.as_mut_slice());
    }
}

/// How old the newest CRL may be before [`Issuer::current_crl`] signs a new one: 1 hour,
/// well inside any wallet's maximum age ([`crate::trust::CRL_MAX_AGE_SECS`]).
pub const CRL_REFRESH_SECS: u64 = 3600;

/// An issuer: its keys, a working directory and a store ([`SqlIssuerStore`] for an
/// issuer directory, SQLite or PostgreSQL; [`MemoryIssuerStore`] or another [`IssuerStore`] when
/// embedded).
pub struct Issuer<S: IssuerStore = SqlIssuerStore> {
    dir: PathBuf,
    store: S,
    signing: SecretKey,
    kem: KemSecretKey,
    poprf: PoprfKeys,
}

/// A package file verified from a private copy, and its parsed manifest.
pub struct SignedManifest {
    /// The package's manifest.
    pub manifest: Manifest,
    /// Keys whose signatures are valid under the policy.
    pub signers: Vec<KeyId>,
    pub(crate) reader: PackageReader<std::fs::File>,
    pub(crate) report: escx::verify::VerifyReport,
    /// Keeps the private copy alive while the reader uses it.
    _copy: tempfile::NamedTempFile,
}

/// Copies `package` into `dir` (private), verifies the copy under `publishers` and parses
/// its manifest: from here on only the copy is read, so a file replaced meanwhile cannot
/// slip in unverified bytes.
pub fn read_signed_manifest(
    package: &Path,
    publishers: &TrustPolicy,
    dir: &Path,
    now: UnixSeconds,
) -> Result<SignedManifest, Error> {
    let (copy, _, _) = escx::fsutil::private_copy(package, dir)?;
    let options = escx::verify::VerifyOptions { now: Some(now), ..Default::default() };
    let report = escx::verify::verify_file(copy.path(), publishers, &options)?;
    let signers: Vec<KeyId> = report
        .signers
        .iter()
        .filter(|s| matches!(s.status, escx::verify::SignerStatus::Valid(_)))
        .map(|s| s.key_id)
        .collect();
    let mut reader = PackageReader::open_file(copy.path())?;
    if reader.root() != &report.root {
        let changed = std::io::Error::other("the private copy changed after it was verified");
        return Err(escx::Error::io(copy.path(), changed).into());
    }
    let manifest_text = String::from_utf8(reader.manifest_bytes()?).map_err(|_| {
        Error::Manifest(escx_manifest::Error::ManifestEncoding { path: package.to_path_buf() })
    })?;
    let manifest = Manifest::parse(&manifest_text, &package.join("manifest.toml"))
        .map_err(|d| Error::Manifest(escx_manifest::Error::Manifest(d)))?;
    Ok(SignedManifest { manifest, signers, reader, report, _copy: copy })
}

fn lifetime_secs(unit: &str) -> u64 {
    match unit {
        "hour" | "month" => 31 * 86_400,
        "year" => 366 * 86_400,
        _ => 100 * 366 * 86_400,
    }
}

/// The name of a price unit in offers and certificates.
pub fn unit_name(unit: PriceUnit) -> &'static str {
    match unit {
        PriceUnit::OneOff => "one-off",
        PriceUnit::Hour => "hour",
        PriceUnit::Month => "month",
        PriceUnit::Year => "year",
    }
}

/// The ownership scope of a package name: `acme/*` for `acme/thermal`, the name itself
/// for an unscoped one (licensing.md §4.1).
pub fn owner_scope(package: &str) -> String {
    match package.split_once('/') {
        Some((scope, _)) => format!("{scope}/*"),
        None => package.to_owned(),
    }
}

impl Issuer<SqlIssuerStore> {
    /// Creates an issuer directory: keys, database and the first POPRF epoch from `now`.
    pub fn init(dir: &Path, name: &str, protection: &Protection, now: UnixSeconds) -> Result<Self, Error> {
        escx_store::create_empty_dir(dir)?;
        let (signing, kem, poprf) = write_keys(dir, protection)?;
        let store = SqlIssuerStore::open(&Location::Sqlite(dir.join(DATABASE_FILE)))?;
        Issuer::create(store, signing, kem, poprf, dir, name, now)
    }

    /// Creates an issuer directory whose store is the PostgreSQL database at `url`: the
    /// keys in `dir` (as [`Issuer::init`]), the issuer's tables and first POPRF epoch in the
    /// database, and `database.url`, so every later open of the directory uses the
    /// database. Service nodes each hold a copy of the directory (keys and URL).
    pub fn init_postgres(
        dir: &Path,
        url: &str,
        name: &str,
        protection: &Protection,
        now: UnixSeconds,
    ) -> Result<Self, Error> {
        let location = Location::parse(url);
        escx_store::create_empty_dir(dir)?;
        let (signing, kem, poprf) = write_keys(dir, protection)?;
        let store = SqlIssuerStore::open(&location)?;
        let issuer = Issuer::create(store, signing, kem, poprf, dir, name, now)?;
        escx_store::write_database_url(dir, &location)?;
        Ok(issuer)
    }

    /// Opens an issuer directory over whichever store it uses: the PostgreSQL database its
    /// `database.url` names, else its SQLite file. `passphrase` is asked (once) only if the
    /// key files are sealed.
    ///
    /// A store of an earlier version that kept its epochs' POPRF secret keys in the
    /// database has them moved into `poprf.key` (created, sealed as `signing.key` is, when
    /// missing) and erased from the database, in one write transaction (licensing.md
    /// §4). Every epoch's key is then checked against the published one.
    pub fn open(dir: &Path, passphrase: impl FnOnce() -> Option<Zeroizing<String>>) -> Result<Self, Error> {
        let mut source = Some(passphrase);
        let mut given: Option<Zeroizing<String>> = None;
        let mut ask = move || {
            if let Some(source) = source.take() {
                given = source();
            }
            given.clone()
        };
        let (signing, kem) = read_keys(dir, &mut ask)?;
        let store = SqlIssuerStore::open(&Location::of_dir(dir, DATABASE_FILE)?)?;
        let poprf = adopt_poprf_keys(dir, &store, &mut ask)?;
        check_epoch_keys(&store, &poprf, dir)?;
        Ok(Self { dir: dir.to_path_buf(), store, signing, kem, poprf })
    }

    /// The database connection, for this crate's tests that inspect the issuer's complete
    /// view (feature `test-support`).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn database(&self) -> &escx_store::Db {
        self.store.db()
    }
}

impl<S: IssuerStore> Issuer<S> {
    /// Secret byte strings the issuer holds, named: the KEM secret key, the POPRF seed and
    /// each epoch's POPRF scalar (the signing key is in its key file). For this crate's tests that check no
    /// store holds one (feature `test-support`).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    #[allow(clippy::type_complexity)] // a test helper's list of named byte strings
    pub fn secret_byte_strings(&self) -> Result<Vec<(String, Zeroizing<Vec<u8>>)>, Error> {
        let mut out = vec![
            ("KEM key".to_owned(), Zeroizing::new(self.kem.secret_bytes().to_vec())),
            ("POPRF seed".to_owned(), self.poprf.seed_bytes()),
        ];
        for epoch in self.store.epochs()? {
            let key = self.poprf.key(epoch.epoch)?;
            out.push((
                format!("epoch {} POPRF key", epoch.epoch),
                Zeroizing::new(key.secret_bytes().to_vec()),
            ));
        }
        Ok(out)
    }
}

/// Writes a new issuer directory's signing key and POPRF seed (sealed as `protection`
/// says) and KEM key.
fn write_keys(dir: &Path, protection: &Protection) -> Result<(SecretKey, KemSecretKey, PoprfKeys), Error> {
    let signing = SecretKey::generate();
    keyfile::write_secret_key(&dir.join(SIGNING_KEY_FILE), &signing, protection, false)?;
    let poprf = PoprfKeys::generate()?;
    poprf.write(dir, protection, false)?;
    let kem = KemSecretKey::generate();
    write_kem_key(dir, &kem)?;
    Ok((signing, kem, poprf))
}

/// The directory's POPRF keys, with any secret keys a store of an earlier version kept
/// moved out of the database (see [`Issuer::open`]). Concurrent opens of one store move
/// them once: the move is a write transaction that reads them again, and one that finds
/// them gone reads the file the other wrote.
fn adopt_poprf_keys<S: IssuerStore>(
    dir: &Path,
    store: &S,
    mut passphrase: impl FnMut() -> Option<Zeroizing<String>>,
) -> Result<PoprfKeys, Error> {
    let path = dir.join(POPRF_KEY_FILE);
    let missing = || Error::PoprfKey {
        path: path.clone(),
        reason: "missing: the epochs' POPRF keys derive from this file, and the store keeps none".into(),
    };
    let found = PoprfKeys::read(dir, &mut passphrase)?;
    if store.legacy_epoch_secrets()?.is_empty() {
        return found.ok_or_else(missing);
    }
    let signing_sealed = keyfile::secret_key_is_sealed(&dir.join(SIGNING_KEY_FILE))?;
    let mut found = Some(found);
    retrying(|| {
        let mut tx = store.begin()?;
        let legacy = tx.legacy_epoch_secrets()?;
        let on_disk = match found.take() {
            Some(first) => first,
            None => PoprfKeys::read(dir, &mut passphrase)?,
        };
        if legacy.is_empty() {
            // Another process moved them while this one waited.
            return on_disk.ok_or_else(missing);
        }
        let mut keys = match on_disk {
            Some(keys) => keys,
            None => PoprfKeys::generate()?,
        };
        for (epoch, secret) in &legacy {
            keys.add_legacy(*epoch, secret)?;
        }
        let protection = if signing_sealed {
            let passphrase =
                passphrase().ok_or_else(|| escx::Error::PassphraseRequired { path: path.clone() })?;
            Protection::Passphrase(passphrase, keyfile::Argon2Params::DEFAULT)
        } else {
            Protection::Unencrypted
        };
        // The file first: a crash after it leaves the secrets in both places, and the next
        // open finishes the move.
        keys.write(dir, &protection, true)?;
        tx.clear_legacy_epoch_secrets()?;
        tx.commit()?;
        Ok(keys)
    })
}

/// Checks that `poprf` gives every epoch of `store` the key published for it.
fn check_epoch_keys(store: &impl IssuerReader, poprf: &PoprfKeys, dir: &Path) -> Result<(), Error> {
    for epoch in store.epochs()? {
        if poprf.key(epoch.epoch)?.public_key()[..] != epoch.poprf_key[..] {
            return Err(epoch_key_mismatch(dir, epoch.epoch));
        }
    }
    Ok(())
}

fn epoch_key_mismatch(dir: &Path, epoch: u32) -> Error {
    Error::PoprfKey {
        path: dir.join(POPRF_KEY_FILE),
        reason: format!(
            "does not give epoch {epoch} the POPRF key published for it: this is not the file the epoch was \
             made with"
        ),
    }
}

/// The signing and KEM keys of an issuer directory.
fn read_keys(
    dir: &Path,
    passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
) -> Result<(SecretKey, KemSecretKey), Error> {
    let signing = keyfile::read_secret_key(&dir.join(SIGNING_KEY_FILE), passphrase)?;
    let kem_path = dir.join(KEM_KEY_FILE);
    let bytes = Zeroizing::new(std::fs::read(&kem_path).map_err(|e| escx::Error::io(&kem_path, e))?);
    let mut file: KemKeyFile = crate::messages::decode(&bytes, "KEM key file")?;
    let public = KemPublicKey::from_bytes(&file.public)?;
    let secret = Zeroizing::new(std::mem::take(&mut file.secret).into_vec());
    Ok((signing, KemSecretKey::from_parts(secret, public)?))
}

pub use escx_store::DATABASE_URL_FILE;

fn write_kem_key(dir: &Path, kem: &KemSecretKey) -> Result<(), Error> {
    let file = KemKeyFile {
        v: 1,
        public: ByteBuf::from(kem.public_key().as_bytes().to_vec()),
        secret: ByteBuf::from(kem.secret_bytes().to_vec()),
    };
    escx::fsutil::write_atomic(
        &dir.join(KEM_KEY_FILE),
        &Zeroizing::new(escx::cbor::encode(&file)),
        escx::fsutil::MODE_SECRET,
        false,
    )?;
    Ok(())
}

impl Issuer<MemoryIssuerStore> {
    /// An issuer that lives in memory only, with fresh keys and its first POPRF epoch from
    /// `now`: for embedding and tests. Package files being registered are copied to the
    /// system's temporary directory while they are verified.
    pub fn in_memory(name: &str, now: UnixSeconds) -> Result<Self, Error> {
        let dir = std::env::temp_dir();
        Issuer::create(
            MemoryIssuerStore::new(),
            SecretKey::generate(),
            KemSecretKey::generate(),
            PoprfKeys::generate()?,
            &dir,
            name,
            now,
        )
    }
}

impl<S: IssuerStore> Issuer<S> {
    /// A new issuer over an empty `store`: records `name` and adds the first POPRF epoch
    /// from `now`. `dir` is the private working directory (copies of package files being
    /// registered; it also names the CRL's location in licenses).
    pub fn create(
        store: S,
        signing: SecretKey,
        kem: KemSecretKey,
        poprf: PoprfKeys,
        dir: &Path,
        name: &str,
        now: UnixSeconds,
    ) -> Result<Self, Error> {
        if store.meta("name")?.is_some() {
            return Err(escx_store::Error::failed("", "the store holds an issuer already").into());
        }
        let mut tx = store.begin()?;
        tx.set_meta("name", name)?;
        tx.set_meta("crl_number", "0")?;
        tx.commit()?;
        let issuer = Self { dir: dir.to_path_buf(), store, signing, kem, poprf };
        issuer.add_epoch(now, EPOCH_SECS)?;
        Ok(issuer)
    }

    /// An issuer over a `store` that [`Self::create`] initialised, with its keys (checked
    /// against every epoch's published POPRF key).
    pub fn with_store(
        store: S,
        signing: SecretKey,
        kem: KemSecretKey,
        poprf: PoprfKeys,
        dir: &Path,
    ) -> Result<Self, Error> {
        if store.meta("name")?.is_none() {
            return Err(escx_store::Error::failed("", "the store holds no issuer").into());
        }
        check_epoch_keys(&store, &poprf, dir)?;
        Ok(Self { dir: dir.to_path_buf(), store, signing, kem, poprf })
    }

    /// The issuer's working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The issuer's store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The issuer's signing public key.
    pub fn signing_key(&self) -> &PublicKey {
        self.signing.public_key()
    }

    /// Adds a POPRF epoch starting when the latest ends (or at `now`), so windows never
    /// overlap.
    pub fn add_epoch(&self, now: UnixSeconds, length_secs: u64) -> Result<u32, Error> {
        retrying(|| self.add_epoch_once(now, length_secs))
    }

    fn add_epoch_once(&self, now: UnixSeconds, length_secs: u64) -> Result<u32, Error> {
        let mut tx = self.store.begin()?;
        let (epoch, start) = match tx.epochs()?.last() {
            Some(last) => (last.epoch + 1, last.not_after.max(now)),
            None => (1, now),
        };
        let key = self.poprf.key(epoch)?;
        let record = Epoch {
            epoch,
            poprf_key: ByteBuf::from(key.public_key().to_vec()),
            not_before: start,
            not_after: start + length_secs,
        };
        tx.insert_epoch(&record)?;
        tx.commit()?;
        Ok(epoch)
    }

    /// The issuer's bundle chain, the public file customers verify everything against
    /// (licensing.md §3.1). A new version is signed only when the issuer's public state
    /// (name, keys, epochs) changed since the newest one, naming that one's hash; otherwise
    /// the stored chain comes back unchanged, so every customer sees the same bytes.
    pub fn bundle(&self, now: UnixSeconds) -> Result<BundleChain, Error> {
        retrying(|| self.bundle_once(now))
    }

    fn bundle_once(&self, now: UnixSeconds) -> Result<BundleChain, Error> {
        let mut tx = self.store.begin()?;
        let mut versions = stored_bundles(&tx)?;
        let payload = BundlePayload {
            v: 2,
            name: meta(&tx, "name")?,
            signing_key: ByteBuf::from(self.signing.public_key().as_bytes().to_vec()),
            kem_key: ByteBuf::from(self.kem.public_key().as_bytes().to_vec()),
            version: versions.last().map_or(1, |b| b.version() + 1),
            previous: ByteBuf::from(versions.last().map_or([0; 32], |b| b.hash).to_vec()),
            epochs: tx.epochs()?,
            issued_at: versions.last().map_or(now, |b| b.payload.issued_at.max(now)),
        };
        let unchanged = versions.last().is_some_and(|b| {
            b.payload.name == payload.name
                && b.payload.signing_key == payload.signing_key
                && b.payload.kem_key == payload.kem_key
                && b.payload.epochs == payload.epochs
        });
        if !unchanged {
            let bundle = IssuerBundle::sign(payload, &self.signing)?;
            tx.insert_bundle(bundle.version(), &bundle.hash, &bundle.bytes)?;
            versions.push(bundle);
        }
        // The chain rules are checked on what is about to be published, before commit.
        let chain = BundleChain::from_bundles(versions)?;
        tx.commit()?;
        Ok(chain)
    }

    /// Makes (package, tier) sellable on behalf of `publishers` (the key ids that signed the
    /// package, as verified by the caller). The package's scope must be unowned (the keys
    /// then own it) or owned by one of them (licensing.md §4.1): another key can neither
    /// add offers for a name nor replace them. [`Self::register_package`] verifies a
    /// package file and calls this for each tier.
    pub fn add_offer(&self, offer: &Offer, publishers: &[KeyId], now: UnixSeconds) -> Result<(), Error> {
        retrying(|| self.add_offer_once(offer, publishers, now))
    }

    fn add_offer_once(&self, offer: &Offer, publishers: &[KeyId], now: UnixSeconds) -> Result<(), Error> {
        let mut tx = self.store.begin()?;
        claim_scope(&mut tx, &offer.package, publishers, now)?;
        tx.put_offer(offer)?;
        tx.commit()
    }

    /// Registers a package file for sale (licensing.md §4.1, §8.1). The file is copied to a
    /// private place first and only that copy is used from verification on, so a file
    /// replaced while this runs cannot slip in unverified bytes. The copy must verify under
    /// `publishers`; its manifest must have priced tiers. Its valid signers must own the
    /// package's scope (or the scope is unowned, and they become its owners). An encrypted
    /// payload's content key must open for this package's binding, decrypt the payload's
    /// first segment, and not be registered for any other package file. Everything is
    /// stored in one transaction.
    pub fn register_package(
        &self,
        package: &Path,
        publishers: &TrustPolicy,
        now: UnixSeconds,
    ) -> Result<Registration, Error> {
        retrying(|| self.register_package_once(package, publishers, now))
    }

    fn register_package_once(
        &self,
        package: &Path,
        publishers: &TrustPolicy,
        now: UnixSeconds,
    ) -> Result<Registration, Error> {
        let signed = read_signed_manifest(package, publishers, &self.dir, now)?;
        let (manifest, signers, mut reader, report) =
            (signed.manifest, signed.signers, signed.reader, signed.report);
        let name = manifest.package.name.clone();
        let version = manifest.package.version.to_string();
        let pricing =
            manifest.pricing.as_ref().filter(|p| !p.tiers.is_empty()).ok_or_else(|| Error::Pricing {
                package: name.to_string(),
                reason: "its manifest has no priced tiers in [pricing]".into(),
            })?;
        let offers: Vec<Offer> = pricing
            .tiers
            .iter()
            .map(|tier| Offer {
                package: name.clone(),
                tier: tier.name.clone(),
                price_micros: tier.price,
                currency: pricing.currency.clone().unwrap_or_else(|| "USD".into()),
                unit: unit_name(tier.unit).into(),
                features: tier.features.clone(),
                seats: tier.seats,
                terms: Some(crate::messages::LicenseTerms {
                    telemetry: match tier.telemetry {
                        escx_manifest::schema::TelemetryMode::Share => "share",
                        escx_manifest::schema::TelemetryMode::Private => "private",
                    }
                    .into(),
                    metrics: manifest.telemetry.as_ref().map(|t| t.metrics.clone()).unwrap_or_default(),
                }),
            })
            .collect();
        let sealed_key = match reader.content_key_section()? {
            None => None,
            Some(section) => {
                let binding = reader.content_binding()?;
                let key = section.open(&self.kem, &binding)?;
                reader.check_content_key(&key)?;
                Some((binding, key.fingerprint(), section))
            }
        };
        let root = report.root;

        let mut tx = self.store.begin()?;
        let (owners, claimed) = claim_scope(&mut tx, &name, &signers, now)?;
        if let Some((binding, fingerprint, section)) = &sealed_key {
            store_content_key(&mut tx, &root, binding, fingerprint, section.sealed())?;
        }
        for offer in &offers {
            tx.put_offer(offer)?;
        }
        tx.commit()?;
        Ok(Registration {
            package: name.clone(),
            version,
            root,
            offers,
            content_key: sealed_key.is_some(),
            scope: owner_scope(&name),
            owners,
            claimed,
        })
    }

    /// The issuer's KEM public key.
    pub fn kem_key(&self) -> &KemPublicKey {
        self.kem.public_key()
    }

    /// The chain [`Self::bundle`] last published, unchanged (what the service serves);
    /// `None` before the first publication. Signs nothing.
    pub fn published(&self) -> Result<Option<BundleChain>, Error> {
        let versions = stored_bundles(&self.store)?;
        if versions.is_empty() {
            return Ok(None);
        }
        BundleChain::from_bundles(versions).map(Some)
    }

    /// Every sale event, oldest first.
    pub fn sales(&self) -> Result<Vec<Sale>, Error> {
        self.store.sales()
    }
}

/// Runs `attempt` again while it fails with [`Error::Busy`] (licensing.md §4): the failed
/// transaction was rolled back, so running it again is safe.
fn retrying<T>(attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    escx_store::retry::while_busy(<Error as escx_store::Retryable>::is_busy, attempt)
}

fn meta(store: &impl IssuerReader, key: &str) -> Result<String, Error> {
    store.meta(key)?.ok_or_else(|| Error::stored(format!("the issuer store has no {key}")))
}

fn issued_in(store: &impl IssuerReader, request_id: &[u8; 32]) -> Result<Option<TokenResponse>, Error> {
    store.issued(request_id)?.map(|bytes| TokenResponse::from_cbor(&bytes)).transpose()
}

fn stored_bundles(store: &impl IssuerReader) -> Result<Vec<IssuerBundle>, Error> {
    store
        .bundles()?
        .into_iter()
        .map(|(version, bytes)| {
            let bundle = IssuerBundle::parse(&bytes)?;
            if bundle.version() != version {
                return Err(Error::stored(format!(
                    "bundle version {version} holds version {}",
                    bundle.version()
                )));
            }
            Ok(bundle)
        })
        .collect()
}

/// Checks (and, for an unowned scope, records) that `signers` may sell under `package`'s
/// scope. Returns the scope's owners and whether this call made them owners.
fn claim_scope(
    tx: &mut impl IssuerWriter,
    package: &str,
    signers: &[KeyId],
    now: UnixSeconds,
) -> Result<(Vec<KeyId>, bool), Error> {
    let scope = owner_scope(package);
    let owners = tx.scope_owners(&scope)?;
    if owners.is_empty() {
        if signers.is_empty() {
            return Err(Error::PackageOwned { package: package.into(), scope, owners: Vec::new() });
        }
        for key in signers {
            tx.insert_owner(&scope, key, now)?;
        }
        let mut claimed = signers.to_vec();
        claimed.sort_by_key(|k| k.0);
        claimed.dedup();
        return Ok((claimed, true));
    }
    if !signers.iter().any(|s| owners.contains(s)) {
        return Err(Error::PackageOwned { package: package.into(), scope, owners });
    }
    Ok((owners, false))
}

/// Stores a content key's seal under `root`; registering the same file again is a no-op,
/// the same key under any other root is refused.
fn store_content_key(
    tx: &mut impl IssuerWriter,
    root: &[u8; 32],
    binding: &ContentBinding,
    fingerprint: &[u8; 32],
    sealed: &[u8],
) -> Result<(), Error> {
    match tx.content_key_by_fingerprint(fingerprint)? {
        Some(held) if &held.root == root => Ok(()),
        Some(held) => Err(Error::ContentKeyReused {
            package: binding.name.to_string(),
            other: format!("{} {}", held.package, held.version),
        }),
        None => tx.insert_content_key(&StoredContentKey {
            root: *root,
            package: binding.name.clone(),
            version: binding.version.clone(),
            payload_hash: binding.payload_hash,
            fingerprint: *fingerprint,
            sealed: sealed.to_vec(),
        }),
    }
}

/// What the store keeps of an account's bearer token (service.md §3).
pub fn account_token_hash(token: &str) -> [u8; 32] {
    blake3::derive_key(CONTEXT_ACCOUNT_TOKEN, token.as_bytes())
}

/// Context of [`account_token_hash`].
pub const CONTEXT_ACCOUNT_TOKEN: &str = "escx v1 account token";

/// The spent-set key: `derive_key("escx v1 spent token id", info || input)`.
pub fn token_id(info: &TokenInfo, input: &[u8]) -> [u8; 32] {
    let mut material = info.encode();
    material.extend_from_slice(input);
    blake3::derive_key(CONTEXT_SPENT_TOKEN, &material)
}

/// `derive_key` context of spent-set keys.
pub const CONTEXT_SPENT_TOKEN: &str = "escx v1 spent token id";
