//! The issuer (spec: licensing.md §4): sells tokens, redeems them into license
//! certificates, keeps the spent set and the revocation list.
//!
//! State lives in a directory: `signing.key` (ML-DSA-87, an escx key file), `kem.key`
//! (ML-KEM-1024, mode 0600) and `issuer.sqlite` (WAL, synchronous=FULL): POPRF keys per
//! epoch, the catalog of sellable (package, tier), sale events, the spent-token set,
//! issued licenses and revocations. The database holds nothing that links a purchase to a
//! redemption: a sale row has no token data, a spent row is a hash of a token the issuer
//! never saw blinded, and licenses name only fresh holder keys.

use std::path::{Path, PathBuf};

use escx::content::ContentKeySection;
use escx::envelope::Envelope;
use escx::kem::{self, KemPublicKey, KemSecretKey};
use escx::keyfile::{self, Protection};
use escx::sig::{PublicKey, SecretKey};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::Error;
use crate::messages::{
    BundlePayload, CONTEXT_CRL, CONTEXT_LICENSE, CrlPayload, Epoch, IssuerBundle, LicensePayload,
    PURPOSE_LICENSE, PURPOSE_REDEEM, RedeemRequest, Revoked, TokenRequest, TokenResponse, WrappedKey,
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
/// Sealed-box purpose of a content key wrapped to the issuer or a holder.
pub const PURPOSE_CONTENT_KEY: &str = escx::content::PURPOSE_CONTENT_KEY;
/// Clock skew tolerated when a token's epoch has just ended.
const EPOCH_GRACE_SECS: u64 = 7 * 86_400;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    epoch INTEGER PRIMARY KEY, secret BLOB NOT NULL, public BLOB NOT NULL,
    not_before INTEGER NOT NULL, not_after INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS catalog (
    package TEXT NOT NULL, tier TEXT NOT NULL, price_micros INTEGER NOT NULL, currency TEXT NOT NULL,
    unit TEXT NOT NULL, features TEXT NOT NULL, seats INTEGER, PRIMARY KEY (package, tier));
CREATE TABLE IF NOT EXISTS content_keys (
    package_root BLOB PRIMARY KEY, package TEXT NOT NULL, version TEXT NOT NULL, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sales (
    id INTEGER PRIMARY KEY AUTOINCREMENT, package TEXT NOT NULL, tier TEXT NOT NULL, epoch INTEGER NOT NULL,
    count INTEGER NOT NULL, unit_price_micros INTEGER NOT NULL, total_micros INTEGER NOT NULL,
    currency TEXT NOT NULL, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS spent (token_id BLOB PRIMARY KEY, spent_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS licenses (
    license_id BLOB PRIMARY KEY, package TEXT NOT NULL, tier TEXT NOT NULL,
    not_before INTEGER NOT NULL, not_after INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS revocations (
    license_id BLOB PRIMARY KEY, reason TEXT NOT NULL, revoked_at INTEGER NOT NULL);
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

fn sql(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

/// License lifetime for a price unit.
fn lifetime_secs(unit: &str) -> u64 {
    match unit {
        "hour" | "month" => 31 * 86_400,
        "year" => 366 * 86_400,
        _ => 100 * 366 * 86_400,
    }
}

impl Issuer {
    /// Creates an issuer directory: keys, database and the first POPRF epoch from `now`.
    pub fn init(dir: &Path, name: &str, protection: &Protection, now: u64) -> Result<Self, Error> {
        if std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some()) {
            return Err(Error::Store(format!("{} is not empty", dir.display())));
        }
        std::fs::create_dir_all(dir).map_err(|e| escx::Error::io(dir, e))?;
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
            &escx::cbor::encode(&file),
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
        let mut file: KemKeyFile =
            escx::cbor::decode_exact(&bytes, "KEM key file").map_err(Error::Message)?;
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

    /// Adds a POPRF epoch starting when the latest ends (or at `now`).
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

    /// The signed public bundle customers verify everything against.
    pub fn bundle(&self, now: u64) -> Result<IssuerBundle, Error> {
        let mut statement = self
            .db
            .prepare("SELECT epoch, public, not_before, not_after FROM epochs ORDER BY epoch")
            .map_err(sql)?;
        let epochs = statement
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
            .map_err(sql)?;
        let payload = BundlePayload {
            v: 1,
            name: self.meta("name")?,
            signing_key: ByteBuf::from(self.signing.public_key().as_bytes().to_vec()),
            kem_key: ByteBuf::from(self.kem.public_key().as_bytes().to_vec()),
            epochs,
            issued_at: now,
        };
        IssuerBundle::sign(payload, &self.signing)
    }

    /// Makes (package, tier) sellable.
    pub fn add_offer(&self, offer: &Offer) -> Result<(), Error> {
        self.db
            .execute(
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
    pub fn issue(&self, request: &TokenRequest, now: u64) -> Result<TokenResponse, Error> {
        let offer = self.offer(&request.package, &request.tier)?;
        let (key, not_before, not_after) = self.epoch_key(request.epoch)?;
        if now < not_before || now >= not_after {
            return Err(Error::UnknownEpoch { epoch: request.epoch });
        }
        let evaluated = key.evaluate_batch(&request.elements()?, &request.info())?;
        let count = request.blinded.len() as u64;
        let total = offer
            .price_micros
            .checked_mul(count)
            .ok_or_else(|| Error::Store("sale total overflows".into()))?;
        self.db
            .execute(
                "INSERT INTO sales (package, tier, epoch, count, unit_price_micros, total_micros, currency, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    request.package,
                    request.tier,
                    request.epoch,
                    count as i64,
                    offer.price_micros as i64,
                    total as i64,
                    offer.currency,
                    now as i64
                ],
            )
            .map_err(sql)?;
        Ok(TokenResponse {
            v: 1,
            package: request.package.clone(),
            tier: request.tier.clone(),
            epoch: request.epoch,
            evaluated: evaluated.elements.iter().map(|e| ByteBuf::from(e.to_vec())).collect(),
            proof: ByteBuf::from(evaluated.proof.to_vec()),
        })
    }

    /// Redeems a sealed request into a certificate sealed to the holder (licensing.md §4.3).
    /// The token is checked against the POPRF and atomically added to the spent set: of any
    /// number of concurrent redemptions of one token, exactly one succeeds.
    pub fn redeem(&self, sealed: &[u8], now: u64) -> Result<Vec<u8>, Error> {
        let request = self.open_redeem_request(sealed)?;
        let info = request.info();
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
        let token_id = token_id(&info, &request.input);

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

        // Check-and-insert in one transaction: the primary key makes a second insert of the
        // same token fail, whichever process gets there first.
        let transaction = self.db.unchecked_transaction().map_err(sql)?;
        match transaction.execute(
            "INSERT INTO spent (token_id, spent_at) VALUES (?1, ?2)",
            params![&token_id[..], now as i64],
        ) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(Error::AlreadySpent);
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
        let response = escx::cbor::encode(&crate::messages::LicenseResponse {
            v: 1,
            certificate: ByteBuf::from(certificate),
        });
        Ok(kem::seal(&holder_kem, PURPOSE_LICENSE, &response)?)
    }

    /// Opens a sealed redemption request: exactly what the issuer learns from it.
    pub fn open_redeem_request(&self, sealed: &[u8]) -> Result<RedeemRequest, Error> {
        let plain = kem::open(&self.kem, PURPOSE_REDEEM, sealed)?;
        RedeemRequest::from_cbor(&plain)
    }

    fn wrap_content_keys(&self, package: &str, holder: &KemPublicKey) -> Result<Vec<WrappedKey>, Error> {
        let mut statement = self
            .db
            .prepare("SELECT package_root, sealed FROM content_keys WHERE package = ?1 ORDER BY package_root")
            .map_err(sql)?;
        let rows = statement
            .query_map(params![package], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        let mut wrapped = Vec::with_capacity(rows.len());
        for (root, sealed) in rows {
            let content_key = kem::open(&self.kem, PURPOSE_CONTENT_KEY, &sealed)?;
            wrapped.push(WrappedKey {
                package_root: ByteBuf::from(root),
                sealed: ByteBuf::from(kem::seal(holder, PURPOSE_CONTENT_KEY, &content_key)?),
            });
        }
        Ok(wrapped)
    }

    /// Records the content key of a licensed package file (its content-key section, sealed
    /// to this issuer's KEM key), so licenses for `package` carry it from now on. Fails when
    /// the section was sealed to another issuer or does not open.
    pub fn add_content_key(
        &self,
        package: &str,
        version: &str,
        package_root: &[u8; 32],
        section: &ContentKeySection,
    ) -> Result<(), Error> {
        section.open(&self.kem)?;
        self.db
            .execute(
                "INSERT OR REPLACE INTO content_keys (package_root, package, version, sealed) VALUES (?1, ?2, ?3, ?4)",
                params![&package_root[..], package, version, section.sealed()],
            )
            .map_err(sql)?;
        Ok(())
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

    /// Signs a new CRL (its number is one more than the last).
    pub fn crl(&self, now: u64) -> Result<Vec<u8>, Error> {
        let number: u64 = self.meta("crl_number")?.parse().unwrap_or(0) + 1;
        let mut statement = self
            .db
            .prepare("SELECT license_id, reason, revoked_at FROM revocations ORDER BY license_id")
            .map_err(sql)?;
        let revoked = statement
            .query_map([], |r| {
                Ok(Revoked {
                    license_id: ByteBuf::from(r.get::<_, Vec<u8>>(0)?),
                    reason: r.get(1)?,
                    revoked_at: r.get::<_, i64>(2)? as u64,
                })
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        self.db
            .execute("UPDATE meta SET value = ?1 WHERE key = 'crl_number'", params![number.to_string()])
            .map_err(sql)?;
        let payload = CrlPayload { v: 1, number, issued_at: now, revoked };
        Ok(Envelope::seal(CONTEXT_CRL, escx::cbor::encode(&payload), &self.signing).to_cbor())
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

    /// The database connection, for tests that inspect the issuer's complete view.
    pub fn database(&self) -> &Connection {
        &self.db
    }
}

fn open_db(dir: &Path) -> Result<Connection, Error> {
    let path = dir.join(DATABASE_FILE);
    let db = Connection::open(&path).map_err(sql)?;
    db.busy_timeout(std::time::Duration::from_secs(30)).map_err(sql)?;
    db.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
    db.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
    db.execute_batch(SCHEMA).map_err(sql)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(db)
}

/// The spent-set key: `derive_key("escx v1 spent token id", info || input)`.
pub fn token_id(info: &TokenInfo, input: &[u8]) -> [u8; 32] {
    let mut material = info.encode();
    material.extend_from_slice(input);
    blake3::derive_key(CONTEXT_SPENT_TOKEN, &material)
}

/// `derive_key` context of spent-set keys.
pub const CONTEXT_SPENT_TOKEN: &str = "escx v1 spent token id";
