//! The issuer (spec: licensing.md §4): sells tokens, redeems them into license
//! certificates, keeps the spent set and the revocation list.
//!
//! State lives in a directory (mode 0700): `signing.key` (ML-DSA-87, an escx key file),
//! `kem.key` (ML-KEM-1024, mode 0600) and `issuer.sqlite` (mode 0600, WAL,
//! synchronous=FULL): POPRF keys per epoch, the published bundle chain, who owns which
//! package scope, the catalog of sellable (package, tier), content keys, sale events with
//! the answer each purchase got, the spent-token set with the answer each redemption got,
//! issued licenses and revocations. The database holds nothing that links a purchase to a
//! redemption: a sale row has no token data, a spent row is a hash of a token the issuer
//! never saw blinded, and licenses name only fresh holder keys.

use std::path::{Path, PathBuf};

use escx::container::PackageReader;
use escx::content::{self, ContentBinding};
use escx::envelope::Envelope;
use escx::kem::{self, KemPublicKey, KemSecretKey};
use escx::keyfile::{self, Protection};
use escx::policy::TrustPolicy;
use escx::sig::{KeyId, PublicKey, SecretKey};
use escx_manifest::schema::{Manifest, PriceUnit};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::Error;
use crate::messages::{
    BundleChain, BundlePayload, CONTEXT_CRL, CONTEXT_LICENSE, CrlPayload, Epoch, IssuerBundle,
    LicensePayload, PURPOSE_LICENSE, PURPOSE_REDEEM, RedeemRequest, Revoked, TokenRequest, TokenResponse,
    WrappedKey,
};
use crate::poprf::{IssuerKey, TokenInfo};

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
/// Schema version of `issuer.sqlite`: the number of schema steps applied.
pub const SCHEMA_VERSION: i64 = 2;
/// Clock skew tolerated when a token's epoch has just ended.
const EPOCH_GRACE_SECS: u64 = 7 * 86_400;

/// Version 1: the tables of the first release.
const SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE epochs (
    epoch INTEGER PRIMARY KEY, secret BLOB NOT NULL, public BLOB NOT NULL,
    not_before INTEGER NOT NULL, not_after INTEGER NOT NULL);
CREATE TABLE catalog (
    package TEXT NOT NULL, tier TEXT NOT NULL, price_micros INTEGER NOT NULL, currency TEXT NOT NULL,
    unit TEXT NOT NULL, features TEXT NOT NULL, seats INTEGER, PRIMARY KEY (package, tier));
CREATE TABLE content_keys (
    package_root BLOB PRIMARY KEY, package TEXT NOT NULL, version TEXT NOT NULL, sealed BLOB NOT NULL);
CREATE TABLE sales (
    id INTEGER PRIMARY KEY AUTOINCREMENT, package TEXT NOT NULL, tier TEXT NOT NULL, epoch INTEGER NOT NULL,
    count INTEGER NOT NULL, unit_price_micros INTEGER NOT NULL, total_micros INTEGER NOT NULL,
    currency TEXT NOT NULL, at INTEGER NOT NULL);
CREATE TABLE spent (token_id BLOB PRIMARY KEY, spent_at INTEGER NOT NULL);
CREATE TABLE licenses (
    license_id BLOB PRIMARY KEY, package TEXT NOT NULL, tier TEXT NOT NULL,
    not_before INTEGER NOT NULL, not_after INTEGER NOT NULL);
CREATE TABLE revocations (
    license_id BLOB PRIMARY KEY, reason TEXT NOT NULL, revoked_at INTEGER NOT NULL);
";

/// Version 2 (licensing.md §4): content keys bound to their package and fingerprinted
/// (version 1 keys, which were bound to nothing, are kept aside in `legacy_content_keys`
/// and never handed out again), package scopes owned by publisher keys, the stored answer
/// of every purchase and redemption (retries get it back), and the bundle chain.
const SCHEMA_V2: &str = "
ALTER TABLE content_keys RENAME TO legacy_content_keys;
CREATE TABLE content_keys (
    package_root BLOB PRIMARY KEY, package TEXT NOT NULL, version TEXT NOT NULL,
    payload_hash BLOB NOT NULL, fingerprint BLOB NOT NULL UNIQUE, sealed BLOB NOT NULL);
CREATE TABLE owners (
    scope TEXT NOT NULL, key_id BLOB NOT NULL, since INTEGER NOT NULL, PRIMARY KEY (scope, key_id));
CREATE TABLE issued (request_id BLOB PRIMARY KEY, sale_id INTEGER NOT NULL, response BLOB NOT NULL);
ALTER TABLE spent ADD COLUMN request_id BLOB;
ALTER TABLE spent ADD COLUMN response BLOB;
CREATE TABLE bundles (version INTEGER PRIMARY KEY, hash BLOB NOT NULL, bytes BLOB NOT NULL);
";

/// A sale event, the input of settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sale {
    /// Sequence number.
    pub id: i64,
    /// Package.
    pub package: String,
    /// Tier.
    pub tier: String,
    /// Epoch of the tokens sold.
    pub epoch: u32,
    /// Tokens sold.
    pub count: u32,
    /// Price per token, micro-units.
    pub unit_price_micros: u64,
    /// count x unit price.
    pub total_micros: u64,
    /// Currency.
    pub currency: String,
    /// When (Unix seconds).
    pub at: u64,
}

/// What the issuer sells for one (package, tier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Package.
    pub package: String,
    /// Tier.
    pub tier: String,
    /// Price per token (one license), micro-units.
    pub price_micros: u64,
    /// Currency.
    pub currency: String,
    /// Price unit (`one-off`, `hour`, `month`, `year`), which sets the license lifetime.
    pub unit: String,
    /// Entitled features.
    pub features: Vec<String>,
    /// Seats.
    pub seats: Option<u32>,
}

/// What registering a package file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Package name.
    pub package: String,
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

/// An open issuer directory.
pub struct Issuer {
    dir: PathBuf,
    db: Connection,
    signing: SecretKey,
    kem: KemSecretKey,
}

use crate::sqlite::sql;

/// A package file verified from a private copy, and its parsed manifest.
pub(crate) struct SignedManifest {
    pub(crate) manifest: Manifest,
    /// Keys whose signatures are valid under the policy.
    pub(crate) signers: Vec<KeyId>,
    pub(crate) reader: PackageReader<std::fs::File>,
    pub(crate) report: escx::verify::VerifyReport,
    /// Keeps the private copy alive while the reader uses it.
    _copy: tempfile::NamedTempFile,
}

/// Copies `package` into `dir` (private), verifies the copy under `publishers` and parses
/// its manifest: from here on only the copy is read, so a file replaced meanwhile cannot
/// slip in unverified bytes.
pub(crate) fn read_signed_manifest(
    package: &Path,
    publishers: &TrustPolicy,
    dir: &Path,
    now: u64,
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
        return Err(Error::Store("the private copy changed after it was verified".into()));
    }
    let manifest_text = String::from_utf8(reader.manifest_bytes()?).map_err(|_| {
        Error::Manifest(escx_manifest::Error::ManifestEncoding { path: package.to_path_buf() })
    })?;
    let manifest = Manifest::parse(&manifest_text, &package.join("manifest.toml"))
        .map_err(|d| Error::Manifest(escx_manifest::Error::Manifest(d)))?;
    Ok(SignedManifest { manifest, signers, reader, report, _copy: copy })
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// License lifetime for a price unit.
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

impl Issuer {
    /// Creates an issuer directory: keys, database and the first POPRF epoch from `now`.
    pub fn init(dir: &Path, name: &str, protection: &Protection, now: u64) -> Result<Self, Error> {
        if std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some()) {
            return Err(Error::Store(format!("{} is not empty", dir.display())));
        }
        escx::fsutil::create_private_dir(dir)?;
        let signing = SecretKey::generate();
        keyfile::write_secret_key(&dir.join(SIGNING_KEY_FILE), &signing, protection, false)?;
        let kem = KemSecretKey::generate();
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
        let db = open_db(dir)?;
        db.execute("INSERT INTO meta (key, value) VALUES ('name', ?1), ('crl_number', '0')", params![name])
            .map_err(sql)?;
        let issuer = Self { dir: dir.to_path_buf(), db, signing, kem };
        issuer.add_epoch(now, EPOCH_SECS)?;
        Ok(issuer)
    }

    /// Opens an issuer directory; `passphrase` is asked only if the signing key is sealed.
    pub fn open(dir: &Path, passphrase: impl FnOnce() -> Option<Zeroizing<String>>) -> Result<Self, Error> {
        let signing = keyfile::read_secret_key(&dir.join(SIGNING_KEY_FILE), passphrase)?;
        let kem_path = dir.join(KEM_KEY_FILE);
        let bytes = Zeroizing::new(std::fs::read(&kem_path).map_err(|e| escx::Error::io(&kem_path, e))?);
        let mut file: KemKeyFile = crate::messages::decode(&bytes, "KEM key file")?;
        let public = KemPublicKey::from_bytes(&file.public)?;
        let secret = Zeroizing::new(std::mem::take(&mut file.secret).into_vec());
        let kem = KemSecretKey::from_parts(secret, public)?;
        let db = open_db(dir)?;
        Ok(Self { dir: dir.to_path_buf(), db, signing, kem })
    }

    /// The issuer directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The issuer's signing public key.
    pub fn signing_key(&self) -> &PublicKey {
        self.signing.public_key()
    }

    fn meta(&self, key: &str) -> Result<String, Error> {
        self.db.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0)).map_err(sql)
    }

    /// Adds a POPRF epoch starting when the latest ends (or at `now`), so windows never
    /// overlap.
    pub fn add_epoch(&self, now: u64, length_secs: u64) -> Result<u32, Error> {
        let last: Option<(u32, u64)> = self
            .db
            .query_row("SELECT epoch, not_after FROM epochs ORDER BY epoch DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
            })
            .optional()
            .map_err(sql)?;
        let (epoch, start) = match last {
            Some((epoch, end)) => (epoch + 1, end.max(now)),
            None => (1, now),
        };
        let key = IssuerKey::generate()?;
        self.db
            .execute(
                "INSERT INTO epochs (epoch, secret, public, not_before, not_after) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![epoch, &key.secret_bytes()[..], &key.public_key()[..], start as i64, (start + length_secs) as i64],
            )
            .map_err(sql)?;
        Ok(epoch)
    }

    fn epochs(&self) -> Result<Vec<Epoch>, Error> {
        let mut statement = self
            .db
            .prepare("SELECT epoch, public, not_before, not_after FROM epochs ORDER BY epoch")
            .map_err(sql)?;
        statement
            .query_map([], |r| {
                Ok(Epoch {
                    epoch: r.get(0)?,
                    poprf_key: ByteBuf::from(r.get::<_, Vec<u8>>(1)?),
                    not_before: r.get::<_, i64>(2)? as u64,
                    not_after: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)
    }

    /// The issuer's bundle chain, the public file customers verify everything against
    /// (licensing.md §3.1). A new version is signed only when the issuer's public state
    /// (name, keys, epochs) changed since the newest one, naming that one's hash; otherwise
    /// the stored chain comes back unchanged, so every customer sees the same bytes.
    pub fn bundle(&self, now: u64) -> Result<BundleChain, Error> {
        let transaction =
            rusqlite::Transaction::new_unchecked(&self.db, TransactionBehavior::Immediate).map_err(sql)?;
        let mut versions = stored_bundles(&transaction)?;
        let payload = BundlePayload {
            v: 2,
            name: self.meta("name")?,
            signing_key: ByteBuf::from(self.signing.public_key().as_bytes().to_vec()),
            kem_key: ByteBuf::from(self.kem.public_key().as_bytes().to_vec()),
            version: versions.last().map_or(1, |b| b.version() + 1),
            previous: ByteBuf::from(versions.last().map_or([0; 32], |b| b.hash).to_vec()),
            epochs: self.epochs()?,
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
            transaction
                .execute(
                    "INSERT INTO bundles (version, hash, bytes) VALUES (?1, ?2, ?3)",
                    params![bundle.version() as i64, &bundle.hash[..], &bundle.bytes],
                )
                .map_err(sql)?;
            versions.push(bundle);
        }
        // The chain rules are checked on what is about to be published, before commit.
        let chain = BundleChain::from_bundles(versions)?;
        transaction.commit().map_err(sql)?;
        Ok(chain)
    }

    /// Makes (package, tier) sellable on behalf of `publishers` (the key ids that signed the
    /// package, as verified by the caller). The package's scope must be unowned (the keys
    /// then own it) or owned by one of them (licensing.md §4.1): another key can neither
    /// add offers for a name nor replace them. [`Self::register_package`] verifies a
    /// package file and calls this for each tier.
    pub fn add_offer(&self, offer: &Offer, publishers: &[KeyId], now: u64) -> Result<(), Error> {
        let transaction =
            rusqlite::Transaction::new_unchecked(&self.db, TransactionBehavior::Immediate).map_err(sql)?;
        claim_scope(&transaction, &offer.package, publishers, now)?;
        insert_offer(&transaction, offer)?;
        transaction.commit().map_err(sql)
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
        now: u64,
    ) -> Result<Registration, Error> {
        let signed = read_signed_manifest(package, publishers, &self.dir, now)?;
        let (manifest, signers, mut reader, report) =
            (signed.manifest, signed.signers, signed.reader, signed.report);
        let name = manifest.package.name.clone();
        let version = manifest.package.version.to_string();
        let pricing =
            manifest.pricing.as_ref().filter(|p| !p.tiers.is_empty()).ok_or_else(|| Error::Pricing {
                package: name.clone(),
                reason: "its manifest has no priced tiers in [pricing]".into(),
            })?;
        let offers: Vec<Offer> = pricing
            .tiers
            .iter()
            .map(|tier| Offer {
                package: name.clone(),
                tier: tier.name.clone(),
                price_micros: tier.price.0,
                currency: pricing.currency.clone().unwrap_or_else(|| "USD".into()),
                unit: unit_name(tier.unit).into(),
                features: tier.features.clone(),
                seats: tier.seats,
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

        let transaction =
            rusqlite::Transaction::new_unchecked(&self.db, TransactionBehavior::Immediate).map_err(sql)?;
        let (owners, claimed) = claim_scope(&transaction, &name, &signers, now)?;
        if let Some((binding, fingerprint, section)) = &sealed_key {
            store_content_key(&transaction, &root, binding, fingerprint, section.sealed())?;
        }
        for offer in &offers {
            insert_offer(&transaction, offer)?;
        }
        transaction.commit().map_err(sql)?;
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

    fn offer(&self, package: &str, tier: &str) -> Result<Offer, Error> {
        self.db
            .query_row(
                "SELECT price_micros, currency, unit, features, seats FROM catalog WHERE package = ?1 AND tier = ?2",
                params![package, tier],
                |r| {
                    let features: String = r.get(3)?;
                    Ok(Offer {
                        package: package.to_owned(),
                        tier: tier.to_owned(),
                        price_micros: r.get::<_, i64>(0)? as u64,
                        currency: r.get(1)?,
                        unit: r.get(2)?,
                        features: features.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
                        seats: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(sql)?
            .ok_or_else(|| Error::NotForSale { package: package.into(), tier: tier.into() })
    }

    fn epoch_key(&self, epoch: u32) -> Result<(IssuerKey, u64, u64), Error> {
        let (secret, not_before, not_after): (Vec<u8>, i64, i64) = self
            .db
            .query_row(
                "SELECT secret, not_before, not_after FROM epochs WHERE epoch = ?1",
                params![epoch],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql)?
            .ok_or(Error::UnknownEpoch { epoch })?;
        let secret = Zeroizing::new(secret);
        Ok((IssuerKey::from_secret(&secret)?, not_before as u64, not_after as u64))
    }

    /// Evaluates a purchase and records the sale (licensing.md §4.2). The issuer learns who
    /// paid (from its payment system) and for what; it never sees the token inputs.
    ///
    /// Idempotent: a request answered before (a retry after a lost response) gets the
    /// stored answer back and records no second sale; concurrent retries record one.
    pub fn issue(&self, request: &TokenRequest, now: u64) -> Result<TokenResponse, Error> {
        let request_id = blake3::derive_key(CONTEXT_REQUEST_ID, &request.to_cbor());
        if let Some(stored) = issued_in(&self.db, &request_id)? {
            return Ok(stored);
        }
        let offer = self.offer(&request.package, &request.tier)?;
        let (key, not_before, not_after) = self.epoch_key(request.epoch)?;
        if now < not_before || now >= not_after {
            return Err(Error::UnknownEpoch { epoch: request.epoch });
        }
        let evaluated = key.evaluate_batch(&request.elements()?, &request.info())?;
        let count = request.blinded.len() as u64;
        // A metered tier (`unit = "hour"`) is billed on use from the meter's period
        // closes (metering.md §7.2): its licenses cost nothing at purchase.
        let unit_price = if offer.unit == "hour" { 0 } else { offer.price_micros };
        let total =
            unit_price.checked_mul(count).ok_or_else(|| Error::Store("sale total overflows".into()))?;
        let response = TokenResponse {
            v: 1,
            package: request.package.clone(),
            tier: request.tier.clone(),
            epoch: request.epoch,
            evaluated: evaluated.elements.iter().map(|e| ByteBuf::from(e.to_vec())).collect(),
            proof: ByteBuf::from(evaluated.proof.to_vec()),
        };
        let transaction =
            rusqlite::Transaction::new_unchecked(&self.db, TransactionBehavior::Immediate).map_err(sql)?;
        // A concurrent retry may have committed while we evaluated.
        if let Some(stored) = issued_in(&transaction, &request_id)? {
            return Ok(stored);
        }
        transaction
            .execute(
                "INSERT INTO sales (package, tier, epoch, count, unit_price_micros, total_micros, currency, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    request.package,
                    request.tier,
                    request.epoch,
                    count as i64,
                    unit_price as i64,
                    total as i64,
                    offer.currency,
                    now as i64
                ],
            )
            .map_err(sql)?;
        let sale_id = transaction.last_insert_rowid();
        transaction
            .execute(
                "INSERT INTO issued (request_id, sale_id, response) VALUES (?1, ?2, ?3)",
                params![&request_id[..], sale_id, response.to_cbor()],
            )
            .map_err(sql)?;
        transaction.commit().map_err(sql)?;
        Ok(response)
    }

    /// Redeems a sealed request into a certificate sealed to the holder (licensing.md §4.3).
    /// The token is checked against the POPRF and atomically added to the spent set: of any
    /// number of concurrent redemptions of one token, exactly one succeeds.
    ///
    /// Idempotent: the same request again (a retry after a lost response, sealed anew or
    /// not) gets the stored sealed answer back and spends nothing more; any other request
    /// with a spent token is `token-spent`.
    pub fn redeem(&self, sealed: &[u8], now: u64) -> Result<Vec<u8>, Error> {
        let request = self.open_redeem_request(sealed)?;
        let info = request.info();
        let token_id = token_id(&info, &request.input);
        let redemption_id = blake3::derive_key(CONTEXT_REDEMPTION_ID, &escx::cbor::encode(&request));
        if let Some(answer) = self.redeemed(&token_id, &redemption_id)? {
            return Ok(answer);
        }
        let (key, _, not_after) = self.epoch_key(request.epoch)?;
        if now >= not_after + EPOCH_GRACE_SECS {
            return Err(Error::UnknownEpoch { epoch: request.epoch });
        }
        let expected = key.evaluate(&request.input, &info)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &request.output[..])) {
            return Err(Error::TokenInvalid);
        }
        let offer = self.offer(&request.package, &request.tier)?;
        let holder = PublicKey::from_bytes(&request.holder_key)?;
        let holder_kem = KemPublicKey::from_bytes(&request.holder_kem_key)?;

        let mut license_id = [0u8; 16];
        escx::keyfile::fill_random(&mut license_id)?;
        let wrapped_keys = self.wrap_content_keys(&request.package, &holder_kem)?;
        let payload = LicensePayload {
            v: 1,
            license_id: ByteBuf::from(license_id.to_vec()),
            package: request.package.clone(),
            versions: "*".into(),
            tier: request.tier.clone(),
            features: offer.features.clone(),
            seats: offer.seats,
            not_before: now,
            not_after: now.saturating_add(lifetime_secs(&offer.unit)),
            holder_key: ByteBuf::from(holder.as_bytes().to_vec()),
            holder_kem_key: ByteBuf::from(holder_kem.as_bytes().to_vec()),
            wrapped_keys,
            issuer_key_id: ByteBuf::from(self.signing.id().0.to_vec()),
            crl_location: self.dir.join("crl.cbor").display().to_string(),
        };
        let certificate =
            Envelope::seal(CONTEXT_LICENSE, escx::cbor::encode(&payload), &self.signing).to_cbor();
        let response = escx::cbor::encode(&crate::messages::LicenseResponse {
            v: 1,
            certificate: ByteBuf::from(certificate),
        });
        let answer = kem::seal(&holder_kem, PURPOSE_LICENSE, &response)?;

        // Check-and-insert in one transaction: the primary key makes a second insert of the
        // same token fail, whichever process gets there first.
        let transaction =
            rusqlite::Transaction::new_unchecked(&self.db, TransactionBehavior::Immediate).map_err(sql)?;
        match transaction.execute(
            "INSERT INTO spent (token_id, spent_at, request_id, response) VALUES (?1, ?2, ?3, ?4)",
            params![&token_id[..], now as i64, &redemption_id[..], &answer],
        ) {
            Ok(_) => {}
            Err(e) if is_constraint(&e) => {
                drop(transaction);
                return self.redeemed(&token_id, &redemption_id)?.ok_or(Error::AlreadySpent);
            }
            Err(e) => return Err(sql(e)),
        }
        transaction
            .execute(
                "INSERT INTO licenses (license_id, package, tier, not_before, not_after) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&license_id[..], payload.package, payload.tier, payload.not_before as i64, payload.not_after as i64],
            )
            .map_err(sql)?;
        transaction.commit().map_err(sql)?;
        Ok(answer)
    }

    /// The stored answer for a spent token: `Some` when the same request spent it,
    /// `AlreadySpent` when another did, `None` when it is unspent.
    fn redeemed(&self, token_id: &[u8; 32], redemption_id: &[u8; 32]) -> Result<Option<Vec<u8>>, Error> {
        // (redemption id, sealed answer); both are NULL for tokens spent before schema 2.
        type SpentRow = (Option<Vec<u8>>, Option<Vec<u8>>);
        let row: Option<SpentRow> = self
            .db
            .query_row(
                "SELECT request_id, response FROM spent WHERE token_id = ?1",
                params![&token_id[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql)?;
        match row {
            None => Ok(None),
            Some((Some(request), Some(answer))) if request[..] == redemption_id[..] => Ok(Some(answer)),
            Some(_) => Err(Error::AlreadySpent),
        }
    }

    /// Opens a sealed redemption request: exactly what the issuer learns from it.
    pub fn open_redeem_request(&self, sealed: &[u8]) -> Result<RedeemRequest, Error> {
        let plain = kem::open(&self.kem, PURPOSE_REDEEM, sealed)?;
        RedeemRequest::from_cbor(&plain)
    }

    /// Every content key registered for `package`, re-sealed to `holder` and bound to the
    /// root of the file it decrypts.
    fn wrap_content_keys(&self, package: &str, holder: &KemPublicKey) -> Result<Vec<WrappedKey>, Error> {
        let mut statement = self
            .db
            .prepare(
                "SELECT package_root, version, payload_hash, sealed FROM content_keys
                 WHERE package = ?1 ORDER BY package_root",
            )
            .map_err(sql)?;
        let rows = statement
            .query_map(params![package], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        let mut wrapped = Vec::with_capacity(rows.len());
        for (root, version, payload_hash, sealed) in rows {
            let payload_hash: [u8; 32] = payload_hash
                .try_into()
                .map_err(|_| Error::Store("bad payload hash in content_keys".into()))?;
            let binding = ContentBinding { name: package.to_owned(), version, payload_hash };
            let content_key = content::open_sealed(&self.kem, &sealed, &binding)?;
            wrapped.push(WrappedKey {
                sealed: ByteBuf::from(kem::seal_bound(
                    holder,
                    PURPOSE_WRAPPED_KEY,
                    &root,
                    content_key.as_bytes(),
                )?),
                package_root: ByteBuf::from(root),
            });
        }
        Ok(wrapped)
    }

    /// The issuer's KEM public key.
    pub fn kem_key(&self) -> &KemPublicKey {
        self.kem.public_key()
    }

    /// Revokes a license.
    pub fn revoke(&self, license_id: &[u8], reason: &str, now: u64) -> Result<(), Error> {
        let known: Option<i64> = self
            .db
            .query_row("SELECT 1 FROM licenses WHERE license_id = ?1", params![license_id], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        if known.is_none() {
            return Err(Error::UnknownLicense { license_id: hex::encode(license_id) });
        }
        self.db
            .execute(
                "INSERT OR IGNORE INTO revocations (license_id, reason, revoked_at) VALUES (?1, ?2, ?3)",
                params![license_id, reason, now as i64],
            )
            .map_err(sql)?;
        Ok(())
    }

    /// Signs a new CRL, numbered one more than the last. The number is taken and advanced
    /// inside one write transaction, so two processes never sign two CRLs with one number.
    pub fn crl(&self, now: u64) -> Result<Vec<u8>, Error> {
        let transaction =
            rusqlite::Transaction::new_unchecked(&self.db, TransactionBehavior::Immediate).map_err(sql)?;
        let last: String = transaction
            .query_row("SELECT value FROM meta WHERE key = 'crl_number'", [], |r| r.get(0))
            .map_err(sql)?;
        let number = last
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| Error::Store(format!("bad crl_number {last:?} in the issuer database")))?;
        let revoked = {
            let mut statement = transaction
                .prepare("SELECT license_id, reason, revoked_at FROM revocations ORDER BY license_id")
                .map_err(sql)?;
            statement
                .query_map([], |r| {
                    Ok(Revoked {
                        license_id: ByteBuf::from(r.get::<_, Vec<u8>>(0)?),
                        reason: r.get(1)?,
                        revoked_at: r.get::<_, i64>(2)? as u64,
                    })
                })
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?
        };
        transaction
            .execute("UPDATE meta SET value = ?1 WHERE key = 'crl_number'", params![number.to_string()])
            .map_err(sql)?;
        let payload = CrlPayload { v: 1, number, issued_at: now, revoked };
        let crl = Envelope::seal(CONTEXT_CRL, escx::cbor::encode(&payload), &self.signing).to_cbor();
        transaction.commit().map_err(sql)?;
        Ok(crl)
    }

    /// Every sale event, oldest first.
    pub fn sales(&self) -> Result<Vec<Sale>, Error> {
        let mut statement = self
            .db
            .prepare("SELECT id, package, tier, epoch, count, unit_price_micros, total_micros, currency, at FROM sales ORDER BY id")
            .map_err(sql)?;
        statement
            .query_map([], |r| {
                Ok(Sale {
                    id: r.get(0)?,
                    package: r.get(1)?,
                    tier: r.get(2)?,
                    epoch: r.get(3)?,
                    count: r.get::<_, i64>(4)? as u32,
                    unit_price_micros: r.get::<_, i64>(5)? as u64,
                    total_micros: r.get::<_, i64>(6)? as u64,
                    currency: r.get(7)?,
                    at: r.get::<_, i64>(8)? as u64,
                })
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)
    }

    /// The database connection, for this crate's tests that inspect the issuer's complete
    /// view (feature `test-support`).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn database(&self) -> &Connection {
        &self.db
    }
}

fn issued_in(db: &Connection, request_id: &[u8; 32]) -> Result<Option<TokenResponse>, Error> {
    let stored: Option<Vec<u8>> = db
        .query_row("SELECT response FROM issued WHERE request_id = ?1", params![&request_id[..]], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql)?;
    stored.map(|bytes| TokenResponse::from_cbor(&bytes)).transpose()
}

fn stored_bundles(db: &Connection) -> Result<Vec<IssuerBundle>, Error> {
    let mut statement = db.prepare("SELECT version, bytes FROM bundles ORDER BY version").map_err(sql)?;
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    rows.into_iter()
        .map(|(version, bytes)| {
            let bundle = IssuerBundle::parse(&bytes)?;
            if bundle.version() as i64 != version {
                return Err(Error::Store(format!(
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
    db: &Connection,
    package: &str,
    signers: &[KeyId],
    now: u64,
) -> Result<(Vec<KeyId>, bool), Error> {
    let scope = owner_scope(package);
    let owners = scope_owners(db, &scope)?;
    if owners.is_empty() {
        if signers.is_empty() {
            return Err(Error::PackageOwned { package: package.into(), scope, owners: Vec::new() });
        }
        for key in signers {
            db.execute(
                "INSERT OR IGNORE INTO owners (scope, key_id, since) VALUES (?1, ?2, ?3)",
                params![scope, &key.0[..], now as i64],
            )
            .map_err(sql)?;
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

fn scope_owners(db: &Connection, scope: &str) -> Result<Vec<KeyId>, Error> {
    let mut statement =
        db.prepare("SELECT key_id FROM owners WHERE scope = ?1 ORDER BY key_id").map_err(sql)?;
    statement
        .query_map(params![scope], |r| r.get::<_, Vec<u8>>(0))
        .map_err(sql)?
        .map(|row| {
            let bytes = row.map_err(sql)?;
            let id: [u8; 16] = bytes.try_into().map_err(|_| Error::Store("bad owner key id".into()))?;
            Ok(KeyId(id))
        })
        .collect()
}

fn insert_offer(db: &Connection, offer: &Offer) -> Result<(), Error> {
    db.execute(
        "INSERT OR REPLACE INTO catalog (package, tier, price_micros, currency, unit, features, seats)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            offer.package,
            offer.tier,
            offer.price_micros as i64,
            offer.currency,
            offer.unit,
            offer.features.join(","),
            offer.seats
        ],
    )
    .map_err(sql)?;
    Ok(())
}

/// Stores a content key's seal under `root`; registering the same file again is a no-op,
/// the same key under any other root is refused.
fn store_content_key(
    db: &Connection,
    root: &[u8; 32],
    binding: &ContentBinding,
    fingerprint: &[u8; 32],
    sealed: &[u8],
) -> Result<(), Error> {
    let holder: Option<(Vec<u8>, String, String)> = db
        .query_row(
            "SELECT package_root, package, version FROM content_keys WHERE fingerprint = ?1",
            params![&fingerprint[..]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql)?;
    match holder {
        Some((other_root, ..)) if other_root[..] == root[..] => Ok(()),
        Some((_, package, version)) => Err(Error::ContentKeyReused {
            package: binding.name.clone(),
            other: format!("{package} {version}"),
        }),
        None => {
            db.execute(
                "INSERT INTO content_keys (package_root, package, version, payload_hash, fingerprint, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    &root[..],
                    binding.name,
                    binding.version,
                    &binding.payload_hash[..],
                    &fingerprint[..],
                    sealed
                ],
            )
            .map_err(sql)?;
            Ok(())
        }
    }
}

fn open_db(dir: &Path) -> Result<Connection, Error> {
    let path = dir.join(DATABASE_FILE);
    let mut db = crate::sqlite::open_private(&path)?;
    migrate(&mut db, &path)?;
    Ok(db)
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction; refuses a newer one.
fn migrate(db: &mut Connection, path: &Path) -> Result<(), Error> {
    let transaction = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
    let has_meta = crate::sqlite::has_meta(&transaction)?;
    let found: i64 = if has_meta {
        transaction
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get::<_, String>(0))
            .optional()
            .map_err(sql)?
            .map_or(Ok(1), |v| {
                v.parse::<i64>().map_err(|_| Error::Store(format!("bad schema version {v:?}")))
            })?
    } else {
        0
    };
    if found > SCHEMA_VERSION {
        return Err(Error::Store(format!(
            "{}: schema version {found} is newer than this build's {SCHEMA_VERSION}; upgrade escx",
            path.display()
        )));
    }
    for (version, step) in [(1, SCHEMA_V1), (2, SCHEMA_V2)] {
        if found < version {
            transaction.execute_batch(step).map_err(sql)?;
        }
    }
    transaction
        .execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?1)",
            params![SCHEMA_VERSION.to_string()],
        )
        .map_err(sql)?;
    transaction.commit().map_err(sql)
}

/// The spent-set key: `derive_key("escx v1 spent token id", info || input)`.
pub fn token_id(info: &TokenInfo, input: &[u8]) -> [u8; 32] {
    let mut material = info.encode();
    material.extend_from_slice(input);
    blake3::derive_key(CONTEXT_SPENT_TOKEN, &material)
}

/// `derive_key` context of spent-set keys.
pub const CONTEXT_SPENT_TOKEN: &str = "escx v1 spent token id";
