//! The issuer's SQL store (licensing.md §4.1): one set of statements, run on the issuer
//! directory's SQLite file (`issuer.sqlite`) or on the PostgreSQL database its
//! `database.url` names (schema `escx_issuer`, so a ledger can share the database), through
//! the storage layer (`escx_store`). Write transactions are serializable (`BEGIN
//! IMMEDIATE` on SQLite, `SERIALIZABLE` on PostgreSQL); one that meets a concurrent one is
//! busy, and the issuer runs it again. Two service nodes spending the same token at once
//! therefore cannot both succeed: the second sees the first's row once it is retried, and
//! gets `token-spent` (or, for the same redemption, the stored answer).

use escx::UnixSeconds;
use escx::header::PackageName;
use escx::sig::KeyId;
use escx_manifest::Micros;
use escx_store::{Arg, Db, Location, Mark, Migrations, Mode, Row, Schema, Sql, Tx};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use super::store::{
    IssuerStore, IssuerWriter, LegacySecret, LicenseRecord, SpentRecord, StoredContentKey,
    forward_issuer_reader,
};
use super::{Offer, Sale};
use crate::Error;
use crate::messages::{Epoch, Revoked};

/// SQLite version 1: the tables of the first release.
const SQLITE_V1: &str = "
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

/// SQLite version 2 (licensing.md §4): content keys bound to their package and
/// fingerprinted (version 1 keys, which were bound to nothing, are kept aside in
/// `legacy_content_keys` and never handed out again), package scopes owned by publisher
/// keys, the stored answer of every purchase and redemption (retries get it back), and the
/// bundle chain.
const SQLITE_V2: &str = "
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

/// SQLite version 3 (service.md §3): purchase accounts by token hash, every CRL as signed
/// (the service serves the newest), and the account each sale over the service was made to.
const SQLITE_V3: &str = "
CREATE TABLE accounts (name TEXT PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE, created_at INTEGER NOT NULL);
CREATE TABLE crls (number INTEGER PRIMARY KEY, bytes BLOB NOT NULL);
CREATE TABLE sale_accounts (sale_id INTEGER PRIMARY KEY, account TEXT NOT NULL);
";

/// SQLite version 4 (licensing.md §3.4): each offer's telemetry mode and the package's
/// metrics, which version-2 certificates carry. NULL for offers registered before: their
/// certificates stay version 1 until the package is registered again.
const SQLITE_V4: &str = "
ALTER TABLE catalog ADD COLUMN telemetry TEXT;
ALTER TABLE catalog ADD COLUMN metrics TEXT;
";

/// PostgreSQL version 2: SQLite version 4's columns.
const POSTGRES_V2: &str = "
ALTER TABLE catalog ADD COLUMN telemetry TEXT;
ALTER TABLE catalog ADD COLUMN metrics TEXT;
";

/// PostgreSQL version 1: the tables of SQLite version 3, in PostgreSQL's types.
const POSTGRES_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE epochs (
    epoch BIGINT PRIMARY KEY, secret BYTEA NOT NULL, public BYTEA NOT NULL,
    not_before BIGINT NOT NULL, not_after BIGINT NOT NULL);
CREATE TABLE catalog (
    package TEXT NOT NULL, tier TEXT NOT NULL, price_micros BIGINT NOT NULL, currency TEXT NOT NULL,
    unit TEXT NOT NULL, features TEXT NOT NULL, seats BIGINT, PRIMARY KEY (package, tier));
CREATE TABLE content_keys (
    package_root BYTEA PRIMARY KEY, package TEXT NOT NULL, version TEXT NOT NULL,
    payload_hash BYTEA NOT NULL, fingerprint BYTEA NOT NULL UNIQUE, sealed BYTEA NOT NULL);
CREATE INDEX content_keys_package ON content_keys (package);
CREATE TABLE owners (
    scope TEXT NOT NULL, key_id BYTEA NOT NULL, since BIGINT NOT NULL, PRIMARY KEY (scope, key_id));
CREATE TABLE sales (
    id BIGINT PRIMARY KEY, package TEXT NOT NULL, tier TEXT NOT NULL, epoch BIGINT NOT NULL,
    count BIGINT NOT NULL, unit_price_micros BIGINT NOT NULL, total_micros BIGINT NOT NULL,
    currency TEXT NOT NULL, at BIGINT NOT NULL);
CREATE TABLE issued (request_id BYTEA PRIMARY KEY, sale_id BIGINT NOT NULL, response BYTEA NOT NULL);
CREATE TABLE spent (
    token_id BYTEA PRIMARY KEY, spent_at BIGINT NOT NULL, request_id BYTEA, response BYTEA);
CREATE TABLE licenses (
    license_id BYTEA PRIMARY KEY, package TEXT NOT NULL, tier TEXT NOT NULL,
    not_before BIGINT NOT NULL, not_after BIGINT NOT NULL);
CREATE TABLE revocations (license_id BYTEA PRIMARY KEY, reason TEXT NOT NULL, revoked_at BIGINT NOT NULL);
CREATE TABLE bundles (version BIGINT PRIMARY KEY, hash BYTEA NOT NULL, bytes BYTEA NOT NULL);
CREATE TABLE accounts (name TEXT PRIMARY KEY, token_hash BYTEA NOT NULL UNIQUE, created_at BIGINT NOT NULL);
CREATE TABLE crls (number BIGINT PRIMARY KEY, bytes BYTEA NOT NULL);
CREATE TABLE sale_accounts (sale_id BIGINT PRIMARY KEY, account TEXT NOT NULL);
";

/// The SQLite steps, in order.
const SQLITE_STEPS: &[&str] = &[SQLITE_V1, SQLITE_V2, SQLITE_V3, SQLITE_V4];

/// Schema version of `issuer.sqlite`: the number of steps applied.
#[allow(clippy::cast_possible_wrap)]
pub const SCHEMA_VERSION: i64 = SQLITE_STEPS.len() as i64;

/// The issuer's tables on either engine, the version in `meta`.
static SCHEMA: Schema = Schema {
    what: "issuer store",
    pg_schema: Some("escx_issuer"),
    lock: "escx v1 issuer migration lock",
    sqlite: Migrations { steps: SQLITE_STEPS, mark: Mark::Meta },
    postgres: Migrations { steps: &[POSTGRES_V1, POSTGRES_V2], mark: Mark::Meta },
};

/// The issuer's database.
pub struct SqlIssuerStore {
    db: Db,
}

/// A write transaction on a [`SqlIssuerStore`]; rolled back if dropped.
pub struct SqlIssuerTx<'a> {
    tx: Tx<'a>,
}

impl SqlIssuerStore {
    /// Opens (creating if needed) the store at `location`, running the migrations it lacks;
    /// refuses a newer schema.
    pub fn open(location: &Location) -> Result<Self, Error> {
        Ok(Self { db: Db::open(location, &SCHEMA, Mode::OpenOrCreate, |_| Ok(()))? })
    }

    /// Whether the store is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    /// The connection, for this crate's tests (feature `test-support`).
    #[cfg(feature = "test-support")]
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }
}

impl IssuerStore for SqlIssuerStore {
    type Tx<'a> = SqlIssuerTx<'a>;

    fn begin(&self) -> Result<SqlIssuerTx<'_>, Error> {
        Ok(SqlIssuerTx { tx: self.db.begin()? })
    }
}

forward_issuer_reader!(SqlIssuerStore, self => Q(&self.db));
forward_issuer_reader!(SqlIssuerTx<'_>, self => Q(&self.tx));

fn time(t: UnixSeconds) -> Result<Arg<'static>, Error> {
    Ok(Arg::uint(t.0)?)
}

fn at(row: &Row, index: usize) -> Result<UnixSeconds, Error> {
    Ok(UnixSeconds(row.uint(index)?))
}

fn package(row: &Row, index: usize) -> Result<PackageName, Error> {
    Ok(row.parsed(index, |text| PackageName::parse(text).ok())?)
}

/// An epoch's public half from `epoch, public, not_before, not_after`.
fn epoch_row(r: &Row) -> Result<Epoch, Error> {
    Ok(Epoch {
        epoch: r.narrow(0)?,
        poprf_key: ByteBuf::from(r.bytes(1)?.to_vec()),
        not_before: at(r, 2)?,
        not_after: at(r, 3)?,
    })
}

/// The queries, over the store's connection or a transaction.
struct Q<'a, S: Sql>(&'a S);

impl<S: Sql> Q<'_, S> {
    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self
            .0
            .row("SELECT value FROM meta WHERE key = ?1", &[Arg::Text(key)])?
            .map(|r| r.text(0).map(str::to_owned))
            .transpose()?)
    }

    fn epochs(&self) -> Result<Vec<Epoch>, Error> {
        self.0
            .rows("SELECT epoch, public, not_before, not_after FROM epochs ORDER BY epoch", &[])?
            .iter()
            .map(epoch_row)
            .collect()
    }

    fn epoch(&self, epoch: u32) -> Result<Option<Epoch>, Error> {
        self.0
            .row(
                "SELECT epoch, public, not_before, not_after FROM epochs WHERE epoch = ?1",
                &[Arg::Int(epoch.into())],
            )?
            .map(|r| epoch_row(&r))
            .transpose()
    }

    fn legacy_epoch_secrets(&self) -> Result<Vec<LegacySecret>, Error> {
        // Epochs of this version store an empty secret (licensing.md §4.3).
        self.0
            .rows("SELECT epoch, secret FROM epochs WHERE length(secret) > 0 ORDER BY epoch", &[])?
            .iter()
            .map(|r| Ok((r.narrow(0)?, Zeroizing::new(r.bytes(1)?.to_vec()))))
            .collect()
    }

    fn bundles(&self) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        self.0
            .rows("SELECT version, bytes FROM bundles ORDER BY version", &[])?
            .iter()
            .map(|r| Ok((r.uint(0)?, r.bytes(1)?.to_vec())))
            .collect()
    }

    fn offer(&self, package: &PackageName, tier: &str) -> Result<Option<Offer>, Error> {
        self.0
            .row(
                "SELECT price_micros, currency, unit, features, seats, telemetry, metrics FROM catalog
                 WHERE package = ?1 AND tier = ?2",
                &[Arg::Text(package.as_str()), Arg::Text(tier)],
            )?
            .map(|r| {
                Ok(Offer {
                    package: package.clone(),
                    tier: tier.to_owned(),
                    price_micros: Micros(r.uint(0)?),
                    currency: r.text(1)?.to_owned(),
                    unit: r.text(2)?.to_owned(),
                    features: r.text(3)?.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
                    seats: r.opt_int(4)?.map(|_| r.narrow(4)).transpose()?,
                    terms: match (r.opt_text(5)?, r.opt_text(6)?) {
                        (Some(telemetry), Some(metrics)) => Some(crate::messages::LicenseTerms {
                            telemetry: telemetry.to_owned(),
                            metrics: metrics
                                .split(',')
                                .filter(|m| !m.is_empty())
                                .map(str::to_owned)
                                .collect(),
                        }),
                        _ => None,
                    },
                })
            })
            .transpose()
    }

    fn scope_owners(&self, scope: &str) -> Result<Vec<KeyId>, Error> {
        self.0
            .rows("SELECT key_id FROM owners WHERE scope = ?1 ORDER BY key_id", &[Arg::Text(scope)])?
            .iter()
            .map(|r| Ok(KeyId(r.array(0)?)))
            .collect()
    }

    fn content_keys_where(&self, condition: &str, value: Arg<'_>) -> Result<Vec<StoredContentKey>, Error> {
        self.0
            .rows(
                &format!(
                    "SELECT package_root, package, version, payload_hash, fingerprint, sealed FROM content_keys
                     WHERE {condition} ORDER BY package_root"
                ),
                &[value],
            )?
            .iter()
            .map(|r| {
                Ok(StoredContentKey {
                    root: r.array(0)?,
                    package: package(r, 1)?,
                    version: r.text(2)?.to_owned(),
                    payload_hash: r.array(3)?,
                    fingerprint: r.array(4)?,
                    sealed: r.bytes(5)?.to_vec(),
                })
            })
            .collect()
    }

    fn content_key_by_fingerprint(&self, fingerprint: &[u8; 32]) -> Result<Option<StoredContentKey>, Error> {
        Ok(self.content_keys_where("fingerprint = ?1", Arg::Bytes(fingerprint))?.into_iter().next())
    }

    fn content_keys(&self, package: &PackageName) -> Result<Vec<StoredContentKey>, Error> {
        self.content_keys_where("package = ?1", Arg::Text(package.as_str()))
    }

    fn bytes_where(&self, sql: &str, key: Arg<'_>) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.row(sql, &[key])?.map(|r| r.bytes(0).map(<[u8]>::to_vec)).transpose()?)
    }

    fn text_where(&self, sql: &str, key: Arg<'_>) -> Result<Option<String>, Error> {
        Ok(self.0.row(sql, &[key])?.map(|r| r.text(0).map(str::to_owned)).transpose()?)
    }

    fn issued(&self, request_id: &[u8; 32]) -> Result<Option<Vec<u8>>, Error> {
        self.bytes_where("SELECT response FROM issued WHERE request_id = ?1", Arg::Bytes(request_id))
    }

    fn spent(&self, token_id: &[u8; 32]) -> Result<Option<SpentRecord>, Error> {
        self.0
            .row("SELECT request_id, response FROM spent WHERE token_id = ?1", &[Arg::Bytes(token_id)])?
            .map(|r| {
                Ok(SpentRecord {
                    redemption_id: r.opt_bytes(0)?.map(|_| r.array(0)).transpose()?,
                    answer: r.opt_bytes(1)?.map(<[u8]>::to_vec),
                })
            })
            .transpose()
    }

    fn license_exists(&self, license_id: &[u8]) -> Result<bool, Error> {
        Ok(self.0.row("SELECT 1 FROM licenses WHERE license_id = ?1", &[Arg::Bytes(license_id)])?.is_some())
    }

    fn revocations(&self) -> Result<Vec<Revoked>, Error> {
        self.0
            .rows("SELECT license_id, reason, revoked_at FROM revocations ORDER BY license_id", &[])?
            .iter()
            .map(|r| {
                Ok(Revoked {
                    license_id: ByteBuf::from(r.bytes(0)?.to_vec()),
                    reason: r.text(1)?.to_owned(),
                    revoked_at: at(r, 2)?,
                })
            })
            .collect()
    }

    fn sales(&self) -> Result<Vec<Sale>, Error> {
        self.0
            .rows(
                "SELECT id, package, tier, epoch, count, unit_price_micros, total_micros, currency, at
                 FROM sales ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(Sale {
                    id: r.int(0)?,
                    package: package(r, 1)?,
                    tier: r.text(2)?.to_owned(),
                    epoch: r.narrow(3)?,
                    count: r.narrow(4)?,
                    unit_price_micros: Micros(r.uint(5)?),
                    total_micros: Micros(r.uint(6)?),
                    currency: r.text(7)?.to_owned(),
                    at: at(r, 8)?,
                })
            })
            .collect()
    }

    fn account_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<String>, Error> {
        self.text_where("SELECT name FROM accounts WHERE token_hash = ?1", Arg::Bytes(token_hash))
    }

    fn account_exists(&self, name: &str) -> Result<bool, Error> {
        Ok(self.0.row("SELECT 1 FROM accounts WHERE name = ?1", &[Arg::Text(name)])?.is_some())
    }

    fn account_names(&self) -> Result<Vec<String>, Error> {
        self.0
            .rows("SELECT name FROM accounts ORDER BY name", &[])?
            .iter()
            .map(|r| Ok(r.text(0)?.to_owned()))
            .collect()
    }

    fn latest_crl(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .0
            .row("SELECT bytes FROM crls ORDER BY number DESC LIMIT 1", &[])?
            .map(|r| r.bytes(0).map(<[u8]>::to_vec))
            .transpose()?)
    }

    fn sale_account(&self, sale_id: i64) -> Result<Option<String>, Error> {
        self.text_where("SELECT account FROM sale_accounts WHERE sale_id = ?1", Arg::Int(sale_id))
    }
}

impl SqlIssuerTx<'_> {
    fn run(&self, sql: &str, args: &[Arg<'_>]) -> Result<(), Error> {
        self.tx.exec(sql, args)?;
        Ok(())
    }
}

impl IssuerWriter for SqlIssuerTx<'_> {
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.run(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[Arg::Text(key), Arg::Text(value)],
        )
    }

    fn insert_epoch(&mut self, epoch: &Epoch) -> Result<(), Error> {
        // The secret column stays empty: the key derives from the directory's `poprf.key`.
        self.run(
            "INSERT INTO epochs (epoch, secret, public, not_before, not_after) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[
                Arg::Int(epoch.epoch.into()),
                Arg::Bytes(&[]),
                Arg::Bytes(&epoch.poprf_key),
                time(epoch.not_before)?,
                time(epoch.not_after)?,
            ],
        )
    }

    fn clear_legacy_epoch_secrets(&mut self) -> Result<(), Error> {
        self.run("UPDATE epochs SET secret = ?1 WHERE length(secret) > 0", &[Arg::Bytes(&[])])
    }

    fn insert_bundle(&mut self, version: u64, hash: &[u8; 32], bytes: &[u8]) -> Result<(), Error> {
        self.run(
            "INSERT INTO bundles (version, hash, bytes) VALUES (?1, ?2, ?3)",
            &[Arg::uint(version)?, Arg::Bytes(hash), Arg::Bytes(bytes)],
        )
    }

    fn insert_owner(&mut self, scope: &str, key: &KeyId, since: UnixSeconds) -> Result<(), Error> {
        self.run(
            "INSERT INTO owners (scope, key_id, since) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            &[Arg::Text(scope), Arg::Bytes(&key.0), time(since)?],
        )
    }

    fn put_offer(&mut self, offer: &Offer) -> Result<(), Error> {
        let features = offer.features.join(",");
        let metrics = offer.terms.as_ref().map(|t| t.metrics.join(","));
        self.run(
            "INSERT INTO catalog (package, tier, price_micros, currency, unit, features, seats, telemetry, metrics)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (package, tier) DO UPDATE SET price_micros = excluded.price_micros,
                 currency = excluded.currency, unit = excluded.unit, features = excluded.features,
                 seats = excluded.seats, telemetry = excluded.telemetry, metrics = excluded.metrics",
            &[
                Arg::Text(offer.package.as_str()),
                Arg::Text(&offer.tier),
                Arg::uint(offer.price_micros.0)?,
                Arg::Text(&offer.currency),
                Arg::Text(&offer.unit),
                Arg::Text(&features),
                Arg::OptInt(offer.seats.map(i64::from)),
                Arg::OptText(offer.terms.as_ref().map(|t| t.telemetry.as_str())),
                Arg::OptText(metrics.as_deref()),
            ],
        )
    }

    fn insert_content_key(&mut self, key: &StoredContentKey) -> Result<(), Error> {
        self.run(
            "INSERT INTO content_keys (package_root, package, version, payload_hash, fingerprint, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                Arg::Bytes(&key.root),
                Arg::Text(key.package.as_str()),
                Arg::Text(&key.version),
                Arg::Bytes(&key.payload_hash),
                Arg::Bytes(&key.fingerprint),
                Arg::Bytes(&key.sealed),
            ],
        )
    }

    fn insert_sale(&mut self, sale: &Sale) -> Result<i64, Error> {
        // One more than the last id, inside the serializable transaction: no gaps, and
        // two concurrent sales cannot take one id (the second is retried).
        let id = self.tx.one("SELECT COALESCE(MAX(id), 0) + 1 FROM sales", &[])?.int(0)?;
        self.run(
            "INSERT INTO sales (id, package, tier, epoch, count, unit_price_micros, total_micros, currency, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            &[
                Arg::Int(id),
                Arg::Text(sale.package.as_str()),
                Arg::Text(&sale.tier),
                Arg::Int(sale.epoch.into()),
                Arg::Int(sale.count.into()),
                Arg::uint(sale.unit_price_micros.0)?,
                Arg::uint(sale.total_micros.0)?,
                Arg::Text(&sale.currency),
                time(sale.at)?,
            ],
        )?;
        Ok(id)
    }

    fn insert_issued(&mut self, request_id: &[u8; 32], sale_id: i64, response: &[u8]) -> Result<(), Error> {
        self.run(
            "INSERT INTO issued (request_id, sale_id, response) VALUES (?1, ?2, ?3)",
            &[Arg::Bytes(request_id), Arg::Int(sale_id), Arg::Bytes(response)],
        )
    }

    fn spend(
        &mut self,
        token_id: &[u8; 32],
        at: UnixSeconds,
        redemption_id: &[u8; 32],
        answer: &[u8],
    ) -> Result<bool, Error> {
        // The primary key decides between processes and nodes: a concurrent spend of the
        // same token either finds this row (no row inserted: false) or is refused as busy
        // and retried, and then finds it.
        let inserted = self.tx.exec(
            "INSERT INTO spent (token_id, spent_at, request_id, response) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (token_id) DO NOTHING",
            &[Arg::Bytes(token_id), time(at)?, Arg::Bytes(redemption_id), Arg::Bytes(answer)],
        )?;
        Ok(inserted == 1)
    }

    fn insert_license(&mut self, license: &LicenseRecord) -> Result<(), Error> {
        self.run(
            "INSERT INTO licenses (license_id, package, tier, not_before, not_after) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[
                Arg::Bytes(&license.license_id),
                Arg::Text(license.package.as_str()),
                Arg::Text(&license.tier),
                time(license.not_before)?,
                time(license.not_after)?,
            ],
        )
    }

    fn insert_revocation(&mut self, license_id: &[u8], reason: &str, at: UnixSeconds) -> Result<(), Error> {
        self.run(
            "INSERT INTO revocations (license_id, reason, revoked_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            &[Arg::Bytes(license_id), Arg::Text(reason), time(at)?],
        )
    }

    fn insert_account(&mut self, name: &str, token_hash: &[u8; 32], at: UnixSeconds) -> Result<(), Error> {
        self.run(
            "INSERT INTO accounts (name, token_hash, created_at) VALUES (?1, ?2, ?3)",
            &[Arg::Text(name), Arg::Bytes(token_hash), time(at)?],
        )
    }

    fn delete_account(&mut self, name: &str) -> Result<bool, Error> {
        let held = self.tx.row("SELECT 1 FROM accounts WHERE name = ?1", &[Arg::Text(name)])?.is_some();
        self.run("DELETE FROM accounts WHERE name = ?1", &[Arg::Text(name)])?;
        Ok(held)
    }

    fn insert_crl(&mut self, number: u64, bytes: &[u8]) -> Result<(), Error> {
        self.run("INSERT INTO crls (number, bytes) VALUES (?1, ?2)", &[Arg::uint(number)?, Arg::Bytes(bytes)])
    }

    fn insert_sale_account(&mut self, sale_id: i64, account: &str) -> Result<(), Error> {
        self.run(
            "INSERT INTO sale_accounts (sale_id, account) VALUES (?1, ?2)",
            &[Arg::Int(sale_id), Arg::Text(account)],
        )
    }

    fn commit(self) -> Result<(), Error> {
        Ok(self.tx.commit()?)
    }
}
