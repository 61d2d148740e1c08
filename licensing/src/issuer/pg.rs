//! The issuer's PostgreSQL store (licensing.md §4.1): the tables of the SQLite store in
//! PostgreSQL's types, in the schema `escx_issuer` of the database the URL names, so a
//! ledger (settlement.md §5.5) can share the database. Write transactions run at
//! `SERIALIZABLE`; one that meets a concurrent one fails with SQLSTATE 40001 (or 40P01),
//! which is [`Error::Busy`], and the issuer runs it again. Two service nodes spending the
//! same token at once therefore cannot both succeed: the second sees the first's row
//! once it is retried, and gets `token-spent` (or, for the same redemption, the stored
//! answer).

use escx::UnixSeconds;
use escx::manifest::PackageName;
use escx::sig::KeyId;
use escx_manifest::Micros;
use std::cell::RefCell;

use postgres::types::ToSql;
use postgres::{Client, Row};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use super::store::{
    EpochSecret, IssuerStore, IssuerWriter, LicenseRecord, SpentRecord, StoredContentKey,
    forward_issuer_reader,
};
use super::{Offer, Sale};
use crate::Error;
use crate::messages::{Epoch, Revoked};
use crate::pg::failure;

/// Schema version of the PostgreSQL issuer store.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
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

/// The issuer's tables live in this schema.
const SCHEMA: &str = "escx_issuer";

/// The issuer's PostgreSQL database.
pub struct PgIssuerStore {
    client: RefCell<Client>,
    /// To connect again when the server closed the connection (a restart, a failover).
    url: String,
}

/// A write transaction on a [`PgIssuerStore`] (`SERIALIZABLE`); rolled back if dropped.
pub struct PgIssuerTx<'a> {
    client: &'a RefCell<Client>,
    done: bool,
}

fn corrupt(what: &str) -> Error {
    Error::Store(format!("a stored {what} is malformed"))
}

fn int(value: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Store(format!("{what} {value} is beyond PostgreSQL's BIGINT")))
}

fn time(t: UnixSeconds) -> Result<i64, Error> {
    int(t.0, "time")
}

impl PgIssuerStore {
    /// Connects to the database at `url` and brings the issuer's schema up to date (in one
    /// transaction, under a lock, so two nodes starting at once migrate once); refuses a
    /// newer schema.
    pub fn open(url: &str) -> Result<Self, Error> {
        let client = crate::pg::connect(
            url,
            SCHEMA,
            "escx v1 issuer migration lock",
            "issuer",
            SCHEMA_VERSION,
            |tx, found| {
                if found < 1 {
                    tx.batch_execute(SCHEMA_V1).map_err(|e| failure(&e))?;
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', $1)",
                        &[&SCHEMA_VERSION.to_string()],
                    )
                    .map_err(|e| failure(&e))?;
                }
                Ok(())
            },
        )?;
        Ok(Self { client: RefCell::new(client), url: url.to_owned() })
    }

    /// The connection, opened again first if the server has closed it (a restart, a
    /// failover): the request that met the closed connection failed with `store`;
    /// the next one reconnects.
    fn live(&self) -> &RefCell<Client> {
        if self.client.borrow().is_closed()
            && let Ok(client) = crate::pg::reconnect(&self.url, SCHEMA)
        {
            *self.client.borrow_mut() = client;
        }
        &self.client
    }
}

impl IssuerStore for PgIssuerStore {
    type Tx<'a> = PgIssuerTx<'a>;

    fn begin(&self) -> Result<PgIssuerTx<'_>, Error> {
        self.live()
            .borrow_mut()
            .batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .map_err(|e| failure(&e))?;
        Ok(PgIssuerTx { client: &self.client, done: false })
    }
}

impl Drop for PgIssuerTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.client.borrow_mut().batch_execute("ROLLBACK");
        }
    }
}

forward_issuer_reader!(PgIssuerStore, self => Q(self.live()));
forward_issuer_reader!(PgIssuerTx<'_>, self => Q(self.client));

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// The queries, over the store's connection (inside a transaction or not).
struct Q<'a>(&'a RefCell<Client>);

fn get<'r, T: postgres::types::FromSql<'r>>(row: &'r Row, index: usize) -> Result<T, Error> {
    row.try_get(index).map_err(|e| failure(&e))
}

fn unsigned(row: &Row, index: usize, what: &str) -> Result<u64, Error> {
    u64::try_from(get::<i64>(row, index)?).map_err(|_| corrupt(what))
}

fn small(row: &Row, index: usize, what: &str) -> Result<u32, Error> {
    u32::try_from(get::<i64>(row, index)?).map_err(|_| corrupt(what))
}

fn array<const N: usize>(row: &Row, index: usize, what: &str) -> Result<[u8; N], Error> {
    get::<Vec<u8>>(row, index)?.try_into().map_err(|_| corrupt(what))
}

fn package(row: &Row, index: usize) -> Result<PackageName, Error> {
    PackageName::parse(&get::<String>(row, index)?).map_err(|_| corrupt("package name"))
}

impl Q<'_> {
    fn rows(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        self.0.borrow_mut().query(sql, params).map_err(|e| failure(&e))
    }

    fn first(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }

    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        self.first("SELECT value FROM meta WHERE key = $1", &[&key])?.map(|r| get(&r, 0)).transpose()
    }

    fn epochs(&self) -> Result<Vec<Epoch>, Error> {
        self.rows("SELECT epoch, public, not_before, not_after FROM epochs ORDER BY epoch", &[])?
            .iter()
            .map(|r| {
                Ok(Epoch {
                    epoch: small(r, 0, "epoch")?,
                    poprf_key: ByteBuf::from(get::<Vec<u8>>(r, 1)?),
                    not_before: UnixSeconds(unsigned(r, 2, "time")?),
                    not_after: UnixSeconds(unsigned(r, 3, "time")?),
                })
            })
            .collect()
    }

    fn epoch_secret(&self, epoch: u32) -> Result<Option<EpochSecret>, Error> {
        self.first("SELECT secret, not_before, not_after FROM epochs WHERE epoch = $1", &[&i64::from(epoch)])?
            .map(|r| {
                Ok(EpochSecret {
                    secret: Zeroizing::new(get::<Vec<u8>>(&r, 0)?),
                    not_before: UnixSeconds(unsigned(&r, 1, "time")?),
                    not_after: UnixSeconds(unsigned(&r, 2, "time")?),
                })
            })
            .transpose()
    }

    fn bundles(&self) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        self.rows("SELECT version, bytes FROM bundles ORDER BY version", &[])?
            .iter()
            .map(|r| Ok((unsigned(r, 0, "bundle version")?, get(r, 1)?)))
            .collect()
    }

    fn offer(&self, package: &PackageName, tier: &str) -> Result<Option<Offer>, Error> {
        self.first(
            "SELECT price_micros, currency, unit, features, seats FROM catalog WHERE package = $1 AND tier = $2",
            &[&package.as_str(), &tier],
        )?
        .map(|r| {
            let features: String = get(&r, 3)?;
            Ok(Offer {
                package: package.clone(),
                tier: tier.to_owned(),
                price_micros: Micros(unsigned(&r, 0, "price")?),
                currency: get(&r, 1)?,
                unit: get(&r, 2)?,
                features: features.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
                seats: get::<Option<i64>>(&r, 4)?
                    .map(|s| u32::try_from(s).map_err(|_| corrupt("seat count")))
                    .transpose()?,
            })
        })
        .transpose()
    }

    fn scope_owners(&self, scope: &str) -> Result<Vec<KeyId>, Error> {
        self.rows("SELECT key_id FROM owners WHERE scope = $1 ORDER BY key_id", &[&scope])?
            .iter()
            .map(|r| array(r, 0, "owner key id").map(KeyId))
            .collect()
    }

    fn content_keys_where(
        &self,
        condition: &str,
        value: &(dyn ToSql + Sync),
    ) -> Result<Vec<StoredContentKey>, Error> {
        self.rows(
            &format!(
                "SELECT package_root, package, version, payload_hash, fingerprint, sealed FROM content_keys
                 WHERE {condition} ORDER BY package_root"
            ),
            &[value],
        )?
        .iter()
        .map(|r| {
            Ok(StoredContentKey {
                root: array(r, 0, "package root")?,
                package: package(r, 1)?,
                version: get(r, 2)?,
                payload_hash: array(r, 3, "payload hash")?,
                fingerprint: array(r, 4, "content key fingerprint")?,
                sealed: get(r, 5)?,
            })
        })
        .collect()
    }

    fn content_key_by_fingerprint(&self, fingerprint: &[u8; 32]) -> Result<Option<StoredContentKey>, Error> {
        Ok(self.content_keys_where("fingerprint = $1", &&fingerprint[..])?.into_iter().next())
    }

    fn content_keys(&self, package: &PackageName) -> Result<Vec<StoredContentKey>, Error> {
        self.content_keys_where("package = $1", &package.as_str())
    }

    fn issued(&self, request_id: &[u8; 32]) -> Result<Option<Vec<u8>>, Error> {
        self.first("SELECT response FROM issued WHERE request_id = $1", &[&&request_id[..]])?
            .map(|r| get(&r, 0))
            .transpose()
    }

    fn spent(&self, token_id: &[u8; 32]) -> Result<Option<SpentRecord>, Error> {
        self.first("SELECT request_id, response FROM spent WHERE token_id = $1", &[&&token_id[..]])?
            .map(|r| {
                let redemption: Option<Vec<u8>> = get(&r, 0)?;
                Ok(SpentRecord {
                    redemption_id: redemption
                        .map(|b| b.try_into().map_err(|_| corrupt("redemption id")))
                        .transpose()?,
                    answer: get(&r, 1)?,
                })
            })
            .transpose()
    }

    fn license_exists(&self, license_id: &[u8]) -> Result<bool, Error> {
        Ok(self.first("SELECT 1 FROM licenses WHERE license_id = $1", &[&license_id])?.is_some())
    }

    fn revocations(&self) -> Result<Vec<Revoked>, Error> {
        self.rows("SELECT license_id, reason, revoked_at FROM revocations ORDER BY license_id", &[])?
            .iter()
            .map(|r| {
                Ok(Revoked {
                    license_id: ByteBuf::from(get::<Vec<u8>>(r, 0)?),
                    reason: get(r, 1)?,
                    revoked_at: UnixSeconds(unsigned(r, 2, "time")?),
                })
            })
            .collect()
    }

    fn sales(&self) -> Result<Vec<Sale>, Error> {
        self.rows(
            "SELECT id, package, tier, epoch, count, unit_price_micros, total_micros, currency, at
             FROM sales ORDER BY id",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(Sale {
                id: get(r, 0)?,
                package: package(r, 1)?,
                tier: get(r, 2)?,
                epoch: small(r, 3, "epoch")?,
                count: small(r, 4, "count")?,
                unit_price_micros: Micros(unsigned(r, 5, "price")?),
                total_micros: Micros(unsigned(r, 6, "total")?),
                currency: get(r, 7)?,
                at: UnixSeconds(unsigned(r, 8, "time")?),
            })
        })
        .collect()
    }

    fn account_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<String>, Error> {
        self.first("SELECT name FROM accounts WHERE token_hash = $1", &[&&token_hash[..]])?
            .map(|r| get(&r, 0))
            .transpose()
    }

    fn account_exists(&self, name: &str) -> Result<bool, Error> {
        Ok(self.first("SELECT 1 FROM accounts WHERE name = $1", &[&name])?.is_some())
    }

    fn latest_crl(&self) -> Result<Option<Vec<u8>>, Error> {
        self.first("SELECT bytes FROM crls ORDER BY number DESC LIMIT 1", &[])?
            .map(|r| get(&r, 0))
            .transpose()
    }

    fn sale_account(&self, sale_id: i64) -> Result<Option<String>, Error> {
        self.first("SELECT account FROM sale_accounts WHERE sale_id = $1", &[&sale_id])?
            .map(|r| get(&r, 0))
            .transpose()
    }
}

impl PgIssuerTx<'_> {
    fn run(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        self.client.borrow_mut().execute(sql, params).map_err(|e| failure(&e))
    }
}

impl IssuerWriter for PgIssuerTx<'_> {
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.run(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .map(drop)
    }

    fn insert_epoch(&mut self, epoch: &Epoch, secret: &[u8]) -> Result<(), Error> {
        self.run(
            "INSERT INTO epochs (epoch, secret, public, not_before, not_after) VALUES ($1, $2, $3, $4, $5)",
            &[
                &i64::from(epoch.epoch),
                &secret,
                &epoch.poprf_key.as_slice(),
                &time(epoch.not_before)?,
                &time(epoch.not_after)?,
            ],
        )
        .map(drop)
    }

    fn insert_bundle(&mut self, version: u64, hash: &[u8; 32], bytes: &[u8]) -> Result<(), Error> {
        self.run(
            "INSERT INTO bundles (version, hash, bytes) VALUES ($1, $2, $3)",
            &[&int(version, "bundle version")?, &&hash[..], &bytes],
        )
        .map(drop)
    }

    fn insert_owner(&mut self, scope: &str, key: &KeyId, since: UnixSeconds) -> Result<(), Error> {
        self.run(
            "INSERT INTO owners (scope, key_id, since) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&scope, &&key.0[..], &time(since)?],
        )
        .map(drop)
    }

    fn put_offer(&mut self, offer: &Offer) -> Result<(), Error> {
        self.run(
            "INSERT INTO catalog (package, tier, price_micros, currency, unit, features, seats)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (package, tier) DO UPDATE SET price_micros = excluded.price_micros,
                 currency = excluded.currency, unit = excluded.unit, features = excluded.features,
                 seats = excluded.seats",
            &[
                &offer.package.as_str(),
                &offer.tier,
                &int(offer.price_micros.0, "price")?,
                &offer.currency,
                &offer.unit,
                &offer.features.join(","),
                &offer.seats.map(i64::from),
            ],
        )
        .map(drop)
    }

    fn insert_content_key(&mut self, key: &StoredContentKey) -> Result<(), Error> {
        self.run(
            "INSERT INTO content_keys (package_root, package, version, payload_hash, fingerprint, sealed)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &&key.root[..],
                &key.package.as_str(),
                &key.version,
                &&key.payload_hash[..],
                &&key.fingerprint[..],
                &key.sealed,
            ],
        )
        .map(drop)
    }

    fn insert_sale(&mut self, sale: &Sale) -> Result<i64, Error> {
        // One more than the last id, inside the serializable transaction: no gaps, and
        // two concurrent sales cannot take one id (the second is retried).
        let id: i64 = self
            .client
            .borrow_mut()
            .query_one("SELECT COALESCE(MAX(id), 0) + 1 FROM sales", &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| failure(&e))?;
        self.run(
            "INSERT INTO sales (id, package, tier, epoch, count, unit_price_micros, total_micros, currency, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &id,
                &sale.package.as_str(),
                &sale.tier,
                &i64::from(sale.epoch),
                &i64::from(sale.count),
                &int(sale.unit_price_micros.0, "price")?,
                &int(sale.total_micros.0, "total")?,
                &sale.currency,
                &time(sale.at)?,
            ],
        )?;
        Ok(id)
    }

    fn insert_issued(&mut self, request_id: &[u8; 32], sale_id: i64, response: &[u8]) -> Result<(), Error> {
        self.run(
            "INSERT INTO issued (request_id, sale_id, response) VALUES ($1, $2, $3)",
            &[&&request_id[..], &sale_id, &response],
        )
        .map(drop)
    }

    fn spend(
        &mut self,
        token_id: &[u8; 32],
        at: UnixSeconds,
        redemption_id: &[u8; 32],
        answer: &[u8],
    ) -> Result<bool, Error> {
        // The primary key decides between nodes: a concurrent spend of the same token
        // either finds this row (no row inserted: false) or is refused with 40001 and
        // retried, and then finds it.
        let inserted = self.run(
            "INSERT INTO spent (token_id, spent_at, request_id, response) VALUES ($1, $2, $3, $4)
             ON CONFLICT (token_id) DO NOTHING",
            &[&&token_id[..], &time(at)?, &&redemption_id[..], &answer],
        )?;
        Ok(inserted == 1)
    }

    fn insert_license(&mut self, license: &LicenseRecord) -> Result<(), Error> {
        self.run(
            "INSERT INTO licenses (license_id, package, tier, not_before, not_after) VALUES ($1, $2, $3, $4, $5)",
            &[
                &&license.license_id[..],
                &license.package.as_str(),
                &license.tier,
                &time(license.not_before)?,
                &time(license.not_after)?,
            ],
        )
        .map(drop)
    }

    fn insert_revocation(&mut self, license_id: &[u8], reason: &str, at: UnixSeconds) -> Result<(), Error> {
        self.run(
            "INSERT INTO revocations (license_id, reason, revoked_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&license_id, &reason, &time(at)?],
        )
        .map(drop)
    }

    fn insert_account(&mut self, name: &str, token_hash: &[u8; 32], at: UnixSeconds) -> Result<(), Error> {
        self.run(
            "INSERT INTO accounts (name, token_hash, created_at) VALUES ($1, $2, $3)",
            &[&name, &&token_hash[..], &time(at)?],
        )
        .map(drop)
    }

    fn insert_crl(&mut self, number: u64, bytes: &[u8]) -> Result<(), Error> {
        self.run("INSERT INTO crls (number, bytes) VALUES ($1, $2)", &[&int(number, "CRL number")?, &bytes])
            .map(drop)
    }

    fn insert_sale_account(&mut self, sale_id: i64, account: &str) -> Result<(), Error> {
        self.run("INSERT INTO sale_accounts (sale_id, account) VALUES ($1, $2)", &[&sale_id, &account])
            .map(drop)
    }

    fn commit(mut self) -> Result<(), Error> {
        // Committed or refused, the transaction is over.
        self.done = true;
        self.client.borrow_mut().batch_execute("COMMIT").map_err(|e| failure(&e))
    }
}
