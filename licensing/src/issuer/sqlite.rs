//! The SQLite issuer store: `issuer.sqlite` (mode 0600, WAL, `synchronous=FULL`), every
//! write transaction `BEGIN IMMEDIATE`.

use escx::UnixSeconds;
use std::path::Path;
use std::sync::{Arc, Mutex};

use escx::manifest::PackageName;
use escx::sig::KeyId;
use escx_manifest::Micros;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use super::store::{
    EpochSecret, IssuerStore, IssuerWriter, LicenseRecord, SpentRecord, StoredContentKey,
    forward_issuer_reader,
};
use super::{Offer, Sale};
use crate::Error;
use crate::messages::{Epoch, Revoked};
use crate::sqlite::sql;

/// Schema version of `issuer.sqlite`: the number of schema steps applied.
pub const SCHEMA_VERSION: i64 = 3;

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

/// Version 3 (service.md §3): purchase accounts by token hash, every CRL as signed (the
/// service serves the newest), and the account each sale over the service was made to.
const SCHEMA_V3: &str = "
CREATE TABLE accounts (name TEXT PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE, created_at INTEGER NOT NULL);
CREATE TABLE crls (number INTEGER PRIMARY KEY, bytes BLOB NOT NULL);
CREATE TABLE sale_accounts (sale_id INTEGER PRIMARY KEY, account TEXT NOT NULL);
";

/// The issuer's SQLite database.
pub struct SqliteIssuerStore {
    db: Connection,
    /// Shared by this process's handles of the same file (`crate::sqlite::write_gate`).
    gate: Arc<Mutex<()>>,
}

/// A write transaction on a [`SqliteIssuerStore`] (`BEGIN IMMEDIATE`).
pub struct SqliteIssuerTx<'a> {
    tx: crate::sqlite::Gated<'a>,
}

impl SqliteIssuerStore {
    /// Opens (creating if needed) the database at `path`, running the migrations it lacks.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let mut db = crate::sqlite::open_private(path)?;
        migrate(&mut db, path)?;
        Ok(Self { db, gate: crate::sqlite::write_gate(path) })
    }

    /// The connection, for this crate's tests (feature `test-support`).
    #[cfg(feature = "test-support")]
    pub(crate) fn connection(&self) -> &Connection {
        &self.db
    }
}

impl IssuerStore for SqliteIssuerStore {
    type Tx<'a> = SqliteIssuerTx<'a>;

    fn begin(&self) -> Result<SqliteIssuerTx<'_>, Error> {
        Ok(SqliteIssuerTx { tx: crate::sqlite::Gated::begin(&self.db, &self.gate)? })
    }
}

forward_issuer_reader!(SqliteIssuerStore, self => Queries(&self.db));
forward_issuer_reader!(SqliteIssuerTx<'_>, self => Queries(&self.tx));

/// The queries, over a connection or a transaction.
struct Queries<'a>(&'a Connection);

impl Queries<'_> {
    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        self.0
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0))
            .optional()
            .map_err(sql)
    }

    fn epochs(&self) -> Result<Vec<Epoch>, Error> {
        let mut statement = self
            .0
            .prepare("SELECT epoch, public, not_before, not_after FROM epochs ORDER BY epoch")
            .map_err(sql)?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, UnixSeconds>(2)?,
                    r.get::<_, UnixSeconds>(3)?,
                ))
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        rows.into_iter()
            .map(|(epoch, public, not_before, not_after)| {
                Ok(Epoch { epoch, poprf_key: ByteBuf::from(public), not_before, not_after })
            })
            .collect()
    }

    fn epoch_secret(&self, epoch: u32) -> Result<Option<EpochSecret>, Error> {
        let row: Option<(Vec<u8>, UnixSeconds, UnixSeconds)> = self
            .0
            .query_row(
                "SELECT secret, not_before, not_after FROM epochs WHERE epoch = ?1",
                params![epoch],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql)?;
        row.map(|(secret, not_before, not_after)| {
            Ok(EpochSecret { secret: Zeroizing::new(secret), not_before, not_after })
        })
        .transpose()
    }

    fn bundles(&self) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let mut statement =
            self.0.prepare("SELECT version, bytes FROM bundles ORDER BY version").map_err(sql)?;
        let rows = statement
            .query_map([], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        rows.into_iter().map(|(version, bytes)| Ok((version, bytes))).collect()
    }

    fn offer(&self, package: &PackageName, tier: &str) -> Result<Option<Offer>, Error> {
        let row: Option<(Micros, String, String, String, Option<u32>)> = self
            .0
            .query_row(
                "SELECT price_micros, currency, unit, features, seats FROM catalog WHERE package = ?1 AND tier = ?2",
                params![package, tier],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(sql)?;
        row.map(|(price, currency, unit, features, seats)| {
            Ok(Offer {
                package: package.clone(),
                tier: tier.to_owned(),
                price_micros: price,
                currency,
                unit,
                features: features.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
                seats,
            })
        })
        .transpose()
    }

    fn scope_owners(&self, scope: &str) -> Result<Vec<KeyId>, Error> {
        let mut statement =
            self.0.prepare("SELECT key_id FROM owners WHERE scope = ?1 ORDER BY key_id").map_err(sql)?;
        statement
            .query_map(params![scope], |r| r.get::<_, Vec<u8>>(0))
            .map_err(sql)?
            .map(|row| {
                let bytes = row.map_err(sql)?;
                let id: [u8; 16] = bytes
                    .try_into()
                    .map_err(|_| Error::Store("a stored owner key id is not 16 bytes".into()))?;
                Ok(KeyId(id))
            })
            .collect()
    }

    fn content_keys_where(
        &self,
        condition: &str,
        value: &dyn rusqlite::ToSql,
    ) -> Result<Vec<StoredContentKey>, Error> {
        let mut statement = self
            .0
            .prepare(&format!(
                "SELECT package_root, package, version, payload_hash, fingerprint, sealed FROM content_keys
                 WHERE {condition} ORDER BY package_root"
            ))
            .map_err(sql)?;
        type Row = ([u8; 32], PackageName, String, [u8; 32], [u8; 32], Vec<u8>);
        let rows: Vec<Row> = statement
            .query_map([value], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        rows.into_iter()
            .map(|(root, package, version, payload_hash, fingerprint, sealed)| {
                Ok(StoredContentKey { root, package, version, payload_hash, fingerprint, sealed })
            })
            .collect()
    }

    fn content_key_by_fingerprint(&self, fingerprint: &[u8; 32]) -> Result<Option<StoredContentKey>, Error> {
        Ok(self.content_keys_where("fingerprint = ?1", &&fingerprint[..])?.into_iter().next())
    }

    fn content_keys(&self, package: &PackageName) -> Result<Vec<StoredContentKey>, Error> {
        self.content_keys_where("package = ?1", &package)
    }

    fn issued(&self, request_id: &[u8; 32]) -> Result<Option<Vec<u8>>, Error> {
        self.0
            .query_row("SELECT response FROM issued WHERE request_id = ?1", params![&request_id[..]], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)
    }

    fn spent(&self, token_id: &[u8; 32]) -> Result<Option<SpentRecord>, Error> {
        // (redemption id, sealed answer); both are NULL for tokens spent before schema 2.
        type Row = (Option<[u8; 32]>, Option<Vec<u8>>);
        let row: Option<Row> = self
            .0
            .query_row(
                "SELECT request_id, response FROM spent WHERE token_id = ?1",
                params![&token_id[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql)?;
        row.map(|(redemption, answer)| Ok(SpentRecord { redemption_id: redemption, answer })).transpose()
    }

    fn license_exists(&self, license_id: &[u8]) -> Result<bool, Error> {
        let known: Option<i64> = self
            .0
            .query_row("SELECT 1 FROM licenses WHERE license_id = ?1", params![license_id], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        Ok(known.is_some())
    }

    fn account_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<String>, Error> {
        self.0
            .query_row("SELECT name FROM accounts WHERE token_hash = ?1", params![&token_hash[..]], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)
    }

    fn account_exists(&self, name: &str) -> Result<bool, Error> {
        let found: Option<i64> = self
            .0
            .query_row("SELECT 1 FROM accounts WHERE name = ?1", params![name], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        Ok(found.is_some())
    }

    fn latest_crl(&self) -> Result<Option<Vec<u8>>, Error> {
        self.0
            .query_row("SELECT bytes FROM crls ORDER BY number DESC LIMIT 1", [], |r| r.get(0))
            .optional()
            .map_err(sql)
    }

    fn sale_account(&self, sale_id: i64) -> Result<Option<String>, Error> {
        self.0
            .query_row("SELECT account FROM sale_accounts WHERE sale_id = ?1", params![sale_id], |r| r.get(0))
            .optional()
            .map_err(sql)
    }

    fn revocations(&self) -> Result<Vec<Revoked>, Error> {
        let mut statement = self
            .0
            .prepare("SELECT license_id, reason, revoked_at FROM revocations ORDER BY license_id")
            .map_err(sql)?;
        let rows = statement
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get::<_, UnixSeconds>(2)?))
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        rows.into_iter()
            .map(|(license_id, reason, at)| {
                Ok(Revoked { license_id: ByteBuf::from(license_id), reason, revoked_at: at })
            })
            .collect()
    }

    fn sales(&self) -> Result<Vec<Sale>, Error> {
        let mut statement = self
            .0
            .prepare(
                "SELECT id, package, tier, epoch, count, unit_price_micros, total_micros, currency, at
                 FROM sales ORDER BY id",
            )
            .map_err(sql)?;
        type Row = (i64, PackageName, String, u32, u32, Micros, Micros, String, UnixSeconds);
        let rows: Vec<Row> = statement
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        rows.into_iter()
            .map(|(id, package, tier, epoch, count, unit, total, currency, at)| {
                Ok(Sale {
                    id,
                    package,
                    tier,
                    epoch,
                    count,
                    unit_price_micros: unit,
                    total_micros: total,
                    currency,
                    at,
                })
            })
            .collect()
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl IssuerWriter for SqliteIssuerTx<'_> {
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.tx
            .execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value])
            .map_err(sql)?;
        Ok(())
    }

    fn insert_epoch(&mut self, epoch: &Epoch, secret: &[u8]) -> Result<(), Error> {
        self.tx
            .execute(
                "INSERT INTO epochs (epoch, secret, public, not_before, not_after) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    epoch.epoch,
                    secret,
                    &epoch.poprf_key[..],
                    epoch.not_before,
                    epoch.not_after
                ],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn insert_bundle(&mut self, version: u64, hash: &[u8; 32], bytes: &[u8]) -> Result<(), Error> {
        self.tx
            .execute(
                "INSERT INTO bundles (version, hash, bytes) VALUES (?1, ?2, ?3)",
                params![version, &hash[..], bytes],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn insert_owner(&mut self, scope: &str, key: &KeyId, since: UnixSeconds) -> Result<(), Error> {
        self.tx
            .execute(
                "INSERT OR IGNORE INTO owners (scope, key_id, since) VALUES (?1, ?2, ?3)",
                params![scope, &key.0[..], since],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn put_offer(&mut self, offer: &Offer) -> Result<(), Error> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO catalog (package, tier, price_micros, currency, unit, features, seats)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    offer.package,
                    offer.tier,
                    offer.price_micros,
                    offer.currency,
                    offer.unit,
                    offer.features.join(","),
                    offer.seats
                ],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn insert_content_key(&mut self, key: &StoredContentKey) -> Result<(), Error> {
        self.tx
            .execute(
                "INSERT INTO content_keys (package_root, package, version, payload_hash, fingerprint, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    &key.root[..],
                    key.package,
                    key.version,
                    &key.payload_hash[..],
                    &key.fingerprint[..],
                    key.sealed
                ],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn insert_sale(&mut self, sale: &Sale) -> Result<i64, Error> {
        self.tx
            .execute(
                "INSERT INTO sales (package, tier, epoch, count, unit_price_micros, total_micros, currency, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    sale.package,
                    sale.tier,
                    sale.epoch,
                    sale.count,
                    sale.unit_price_micros,
                    sale.total_micros,
                    sale.currency,
                    sale.at
                ],
            )
            .map_err(sql)?;
        Ok(self.tx.last_insert_rowid())
    }

    fn insert_account(&mut self, name: &str, token_hash: &[u8; 32], at: UnixSeconds) -> Result<(), Error> {
        self.tx
            .execute(
                "INSERT INTO accounts (name, token_hash, created_at) VALUES (?1, ?2, ?3)",
                params![name, &token_hash[..], at],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn insert_crl(&mut self, number: u64, bytes: &[u8]) -> Result<(), Error> {
        self.tx
            .execute("INSERT INTO crls (number, bytes) VALUES (?1, ?2)", params![number, bytes])
            .map_err(sql)?;
        Ok(())
    }

    fn insert_sale_account(&mut self, sale_id: i64, account: &str) -> Result<(), Error> {
        self.tx
            .execute(
                "INSERT INTO sale_accounts (sale_id, account) VALUES (?1, ?2)",
                params![sale_id, account],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn insert_issued(&mut self, request_id: &[u8; 32], sale_id: i64, response: &[u8]) -> Result<(), Error> {
        self.tx
            .execute(
                "INSERT INTO issued (request_id, sale_id, response) VALUES (?1, ?2, ?3)",
                params![&request_id[..], sale_id, response],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn spend(
        &mut self,
        token_id: &[u8; 32],
        at: UnixSeconds,
        redemption_id: &[u8; 32],
        answer: &[u8],
    ) -> Result<bool, Error> {
        // The primary key makes a second insert of the same token fail, whichever process
        // gets there first.
        match self.tx.execute(
            "INSERT INTO spent (token_id, spent_at, request_id, response) VALUES (?1, ?2, ?3, ?4)",
            params![&token_id[..], at, &redemption_id[..], answer],
        ) {
            Ok(_) => Ok(true),
            Err(e) if is_constraint(&e) => Ok(false),
            Err(e) => Err(sql(e)),
        }
    }

    fn insert_license(&mut self, license: &LicenseRecord) -> Result<(), Error> {
        self.tx
            .execute(
                "INSERT INTO licenses (license_id, package, tier, not_before, not_after) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    &license.license_id[..],
                    license.package,
                    license.tier,
                    license.not_before,
                    license.not_after
                ],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn insert_revocation(&mut self, license_id: &[u8], reason: &str, at: UnixSeconds) -> Result<(), Error> {
        self.tx
            .execute(
                "INSERT OR IGNORE INTO revocations (license_id, reason, revoked_at) VALUES (?1, ?2, ?3)",
                params![license_id, reason, at],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn commit(self) -> Result<(), Error> {
        self.tx.commit()
    }
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
    for (version, step) in [(1, SCHEMA_V1), (2, SCHEMA_V2), (3, SCHEMA_V3)] {
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
