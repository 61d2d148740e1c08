//! Storage behind the operator (spec: metering.md §6.3–6.4).
//!
//! The operator ([`crate::operator::Operator`]) decides what to write; an [`OperatorStore`]
//! only keeps rows and runs transactions, the same pattern as the issuer's and the
//! ledger's stores. Two implement it: [`SqlOperatorStore`] (the product: one set of
//! statements on SQLite or PostgreSQL, through `escx_store`) and [`MemoryOperatorStore`]
//! (tests, and the reference the SQL store is compared with in
//! `metering/tests/metering.rs`). A store must give every [`OperatorStore::begin`]
//! transaction serializable isolation: the operator re-reads what it depends on (a
//! license's chain head, a held report or close, the spent privacy budget) inside it.
//!
//! Every store keeps these uniqueness rules: one report per (license, seq) and per
//! (license, hour), one hour sum per (license, hour, unit), one close per (license,
//! period), one evidence row per second message (a repeat changes nothing), one license
//! row per license id and per certificate (a repeat changes nothing), one owner row per
//! (scope, key); release and evidence ids are assigned in increasing order from 1.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use escx_store::{Arg, Db, Location, Mark, Migrations, Mode, Row, Schema, Sql, Tx};

use crate::Error;
use crate::UNIT_MINUTES;
use crate::operator::{TelemetryTerms, TierTerms};

/// An id and the bytes it names: an issuer and its chain, or its CRL.
pub type KeyedBytes = (Vec<u8>, Vec<u8>);

/// A stored report: its seq, hash and envelope.
pub type HeldReport = (u64, Vec<u8>, Vec<u8>);

/// A report row in memory: hour, hash, envelope.
type ReportRow = (u64, Vec<u8>, Vec<u8>);

/// An hour sum's key in memory: license, hour, unit.
type SumKey = (Vec<u8>, u64, String);

/// One registered version of a package's terms (metering.md §6.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermsVersion {
    /// The package version whose manifest the terms come from.
    pub version: String,
    /// When the operator registered it (Unix seconds).
    pub registered_at: u64,
    /// `derive_key("escx v1 operator terms", terms)`.
    pub hash: Vec<u8>,
    /// The terms, CBOR (metering.md §6.5).
    pub terms: Vec<u8>,
}

/// A license row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLicense {
    /// License id (16 bytes).
    pub license_id: Vec<u8>,
    /// Certificate id (`derive_key("escx v1 meter certificate id", certificate)`).
    pub cert_id: [u8; 32],
    /// Issuer key id.
    pub issuer: Vec<u8>,
    /// Package.
    pub package: String,
    /// Tier.
    pub tier: String,
    /// Holder key id.
    pub holder: Vec<u8>,
    /// Valid from.
    pub not_before: u64,
    /// Valid until.
    pub not_after: u64,
    /// The certificate as verified.
    pub certificate: Vec<u8>,
}

/// A license's report chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Sequence number of the last report (0: none).
    pub seq: u64,
    /// Its hash (zeros: none).
    pub hash: Vec<u8>,
    /// Its hour (`None` before the first report).
    pub hour: Option<u64>,
}

/// One report to store: the report row, its hour sums, and the license's new head.
#[derive(Debug, Clone)]
pub struct NewReport<'a> {
    /// License id.
    pub license_id: &'a [u8],
    /// Chain position.
    pub seq: u64,
    /// Hour.
    pub hour: u64,
    /// Report hash.
    pub hash: &'a [u8],
    /// The signed envelope.
    pub report: &'a [u8],
    /// When received.
    pub received_at: u64,
    /// Per unit: the summed commitment, and the hour total when opened (share tier).
    pub sums: Vec<(&'a str, &'a [u8], Option<u64>)>,
}

/// One piece of evidence to keep.
#[derive(Debug, Clone)]
pub struct NewEvidence<'a> {
    /// License id.
    pub license_id: &'a [u8],
    /// Holder key id.
    pub holder: &'a [u8],
    /// `report` or `close`.
    pub kind: &'a str,
    /// Hour (reports).
    pub hour: Option<u64>,
    /// Seq (reports).
    pub seq: Option<u64>,
    /// The message held first.
    pub first: &'a [u8],
    /// The conflicting one.
    pub second: &'a [u8],
    /// Hash of `second` (unique).
    pub second_hash: &'a [u8],
    /// When seen.
    pub at: u64,
}

/// An evidence row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvidence {
    /// Row id.
    pub id: i64,
    /// `report` or `close`.
    pub kind: String,
    /// License id.
    pub license_id: Vec<u8>,
    /// Holder key id.
    pub holder: Vec<u8>,
    /// Hour (reports).
    pub hour: Option<u64>,
    /// Seq (reports).
    pub seq: Option<u64>,
    /// When seen.
    pub at: u64,
    /// The message held first.
    pub first: Vec<u8>,
    /// The conflicting one.
    pub second: Vec<u8>,
    /// Further conflicting messages received for the same license, kind, hour and seq,
    /// counted but not kept (metering.md §6.2).
    pub repeats: u64,
}

/// A closed license of a period, with what billing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingRow {
    /// License id.
    pub license_id: Vec<u8>,
    /// Package.
    pub package: String,
    /// Tier.
    pub tier: String,
    /// The license equivocated.
    pub flagged: bool,
    /// The close's `minutes` total (0 when it has none).
    pub minutes: u64,
    /// The tier's current terms (unit, price, currency), when registered.
    pub terms: Option<(String, u64, String)>,
    /// The terms version the license is bound to (None: a license stored before terms
    /// were versioned, billed under the current terms).
    pub terms_version: Option<String>,
}

/// Queries, outside or inside a transaction.
pub trait OperatorReader {
    /// The store's random id.
    fn id(&self) -> Result<String, Error>;
    /// Every trusted issuer's id and chain, by id.
    fn issuers(&self) -> Result<Vec<KeyedBytes>, Error>;
    /// One trusted issuer's chain.
    fn issuer_chain(&self, id: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// The CRL held for an issuer: its number and bytes.
    fn crl(&self, issuer: &[u8]) -> Result<Option<(u64, Vec<u8>)>, Error>;
    /// Every CRL held: issuer id and bytes, by issuer.
    fn crls(&self) -> Result<Vec<KeyedBytes>, Error>;
    /// The owner key ids of a scope, by key id.
    fn owners(&self, scope: &str) -> Result<Vec<Vec<u8>>, Error>;
    /// The terms of (package, tier).
    fn tier_terms(&self, package: &str, tier: &str) -> Result<Option<TierTerms>, Error>;
    /// A package's telemetry terms.
    fn telemetry_terms(&self, package: &str) -> Result<Option<TelemetryTerms>, Error>;
    /// The license whose certificate has this id.
    fn license_by_cert(&self, cert_id: &[u8; 32]) -> Result<Option<StoredLicense>, Error>;
    /// A license's chain head (`None`: no such license).
    fn head(&self, license_id: &[u8]) -> Result<Option<Head>, Error>;
    /// A license's reports with `start <= hour < end`: (seq, hour), by seq.
    fn reports_between(&self, license_id: &[u8], start: u64, end: u64) -> Result<Vec<(u64, u64)>, Error>;
    /// The report at a chain position: its hash and hour.
    fn report_at_seq(&self, license_id: &[u8], seq: u64) -> Result<Option<(Vec<u8>, u64)>, Error>;
    /// The report of an hour (its envelope).
    fn report_of_hour(&self, license_id: &[u8], hour: u64) -> Result<Option<Vec<u8>>, Error>;
    /// The first report (by seq) at `hour` or at `seq`: its seq, hash and envelope.
    fn held_report(&self, license_id: &[u8], hour: u64, seq: u64) -> Result<Option<HeldReport>, Error>;
    /// A license's hour sums with `start <= hour < end`: (unit, commitment).
    fn hour_sums_between(
        &self,
        license_id: &[u8],
        start: u64,
        end: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// One hour sum's commitment.
    fn hour_sum(&self, license_id: &[u8], hour: u64, unit: &str) -> Result<Option<Vec<u8>>, Error>;
    /// The close of (license, period).
    fn close(&self, license_id: &[u8], period: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Every closed license of `period`, by license id.
    fn billing_rows(&self, period: &str) -> Result<Vec<BillingRow>, Error>;
    /// The opened hour totals of `package`'s licenses with `start <= hour < end`: (unit,
    /// license id, total).
    fn shared_totals(
        &self,
        package: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<(String, Vec<u8>, u64)>, Error>;
    /// Epsilon spent on releases of `package` whose windows overlap `[start, end)`.
    fn epsilon_spent(&self, package: &str, start: u64, end: u64) -> Result<u64, Error>;
    /// Every registered version of a package's terms, oldest registration first.
    fn terms_history(&self, package: &str) -> Result<Vec<TermsVersion>, Error>;
    /// The terms version a license is bound to.
    fn license_terms_version(&self, license_id: &[u8]) -> Result<Option<String>, Error>;
    /// Every evidence row, by id.
    fn evidence(&self) -> Result<Vec<StoredEvidence>, Error>;
    /// Every closed (license id, period), by license id and period.
    fn closed_periods(&self) -> Result<Vec<(Vec<u8>, String)>, Error>;
}

/// Writes, inside a transaction.
pub trait OperatorWriter: OperatorReader {
    /// Sets an issuer's chain.
    fn put_issuer(&self, id: &[u8], chain: &[u8]) -> Result<(), Error>;
    /// Sets an issuer's CRL.
    fn put_crl(&self, issuer: &[u8], number: u64, bytes: &[u8]) -> Result<(), Error>;
    /// Adds an owner to a scope (it must be new).
    fn insert_owner(&self, scope: &str, key_id: &[u8]) -> Result<(), Error>;
    /// Replaces a package's terms.
    fn replace_terms(
        &self,
        package: &str,
        version: &str,
        tiers: &[TierTerms],
        telemetry: Option<&TelemetryTerms>,
    ) -> Result<(), Error>;
    /// Adds a license with an empty chain (a license id or certificate held already: no-op).
    fn insert_license(&self, license: &StoredLicense) -> Result<(), Error>;
    /// Adds a version of a package's terms (it must be new).
    fn insert_terms_version(&self, package: &str, version: &TermsVersion) -> Result<(), Error>;
    /// Binds a license to a terms version.
    fn bind_license_terms(&self, license_id: &[u8], version: &str) -> Result<(), Error>;
    /// Keeps evidence and flags the license: one pair per license, kind, hour and seq; a
    /// further conflicting message only counts (`repeats`); the same second message again
    /// is a no-op.
    fn keep_evidence(&self, evidence: &NewEvidence<'_>) -> Result<(), Error>;
    /// Stores a report, its hour sums, and moves the license's head to it.
    fn store_report(&self, report: &NewReport<'_>) -> Result<(), Error>;
    /// Stores a close and its totals.
    fn insert_close(
        &self,
        license_id: &[u8],
        period: &str,
        close: &[u8],
        through_seq: u64,
        at: u64,
        totals: &[(String, u64)],
    ) -> Result<(), Error>;
    /// Records a release and its values; its id.
    #[allow(clippy::too_many_arguments)]
    fn insert_release(
        &self,
        package: &str,
        start: u64,
        end: u64,
        epsilon_micros: u64,
        clip: u64,
        at: u64,
        values: &[(String, u64)],
    ) -> Result<i64, Error>;
    /// Compacts a license's reports with `start <= hour < end` (metering.md §6.6): each
    /// keeps its seq, hour, hash and arrival, and its hour sums, but not its bytes (an
    /// empty `report`). Returns the reports compacted now and the bytes they held.
    fn compact_reports(&self, license_id: &[u8], start: u64, end: u64) -> Result<(u64, u64), Error>;
    /// Makes every write of the transaction durable at once. Dropped without it, nothing
    /// is written.
    fn commit(self) -> Result<(), Error>;
}

/// An operator store: queries, and serializable write transactions.
pub trait OperatorStore: OperatorReader {
    /// A write transaction.
    type Tx<'a>: OperatorWriter
    where
        Self: 'a;
    /// Begins a write transaction.
    fn begin(&self) -> Result<Self::Tx<'_>, Error>;
}

// ---------------------------------------------------------------------------------------
// SQL

const SQLITE_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE issuers (id BLOB PRIMARY KEY, chain BLOB NOT NULL);
CREATE TABLE crls (issuer BLOB PRIMARY KEY, number INTEGER NOT NULL, bytes BLOB NOT NULL);
CREATE TABLE owners (scope TEXT NOT NULL, key_id BLOB NOT NULL, PRIMARY KEY (scope, key_id));
CREATE TABLE terms (
    package TEXT NOT NULL, tier TEXT NOT NULL, version TEXT NOT NULL, unit TEXT NOT NULL,
    price_micros INTEGER NOT NULL, currency TEXT NOT NULL, telemetry TEXT NOT NULL,
    PRIMARY KEY (package, tier));
CREATE TABLE telemetry (
    package TEXT PRIMARY KEY, metrics TEXT NOT NULL, window_secs INTEGER NOT NULL,
    cohort_min_size INTEGER NOT NULL, epsilon_micros INTEGER NOT NULL);
CREATE TABLE licenses (
    license_id BLOB PRIMARY KEY, cert_id BLOB NOT NULL UNIQUE, issuer BLOB NOT NULL,
    package TEXT NOT NULL, tier TEXT NOT NULL, holder BLOB NOT NULL, not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL, certificate BLOB NOT NULL, head_seq INTEGER NOT NULL,
    head_hash BLOB NOT NULL, head_hour INTEGER NOT NULL, flagged INTEGER NOT NULL);
CREATE TABLE reports (
    license_id BLOB NOT NULL, seq INTEGER NOT NULL, hour INTEGER NOT NULL, hash BLOB NOT NULL,
    report BLOB NOT NULL, received_at INTEGER NOT NULL,
    PRIMARY KEY (license_id, seq), UNIQUE (license_id, hour));
CREATE TABLE hour_sums (
    license_id BLOB NOT NULL, hour INTEGER NOT NULL, unit TEXT NOT NULL, commitment BLOB NOT NULL,
    total INTEGER, PRIMARY KEY (license_id, hour, unit)) WITHOUT ROWID;
CREATE TABLE evidence (
    id INTEGER PRIMARY KEY, license_id BLOB NOT NULL, holder BLOB NOT NULL, kind TEXT NOT NULL,
    hour INTEGER, seq INTEGER, first BLOB NOT NULL, second BLOB NOT NULL,
    second_hash BLOB NOT NULL UNIQUE, at INTEGER NOT NULL);
CREATE TABLE closes (
    license_id BLOB NOT NULL, period TEXT NOT NULL, close BLOB NOT NULL, through_seq INTEGER NOT NULL,
    closed_at INTEGER NOT NULL, PRIMARY KEY (license_id, period));
CREATE TABLE close_totals (
    license_id BLOB NOT NULL, period TEXT NOT NULL, unit TEXT NOT NULL, total INTEGER NOT NULL,
    PRIMARY KEY (license_id, period, unit));
CREATE TABLE releases (
    id INTEGER PRIMARY KEY, package TEXT NOT NULL, window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL, epsilon_micros INTEGER NOT NULL, clip INTEGER NOT NULL, at INTEGER NOT NULL);
CREATE TABLE released_values (
    release_id INTEGER NOT NULL, unit TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (release_id, unit));
";

/// The same tables in PostgreSQL's types (metering.md §6.4).
const PG_SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE issuers (id BYTEA PRIMARY KEY, chain BYTEA NOT NULL);
CREATE TABLE crls (issuer BYTEA PRIMARY KEY, number BIGINT NOT NULL, bytes BYTEA NOT NULL);
CREATE TABLE owners (scope TEXT NOT NULL, key_id BYTEA NOT NULL, PRIMARY KEY (scope, key_id));
CREATE TABLE terms (
    package TEXT NOT NULL, tier TEXT NOT NULL, version TEXT NOT NULL, unit TEXT NOT NULL,
    price_micros BIGINT NOT NULL, currency TEXT NOT NULL, telemetry TEXT NOT NULL,
    PRIMARY KEY (package, tier));
CREATE TABLE telemetry (
    package TEXT PRIMARY KEY, metrics TEXT NOT NULL, window_secs BIGINT NOT NULL,
    cohort_min_size BIGINT NOT NULL, epsilon_micros BIGINT NOT NULL);
CREATE TABLE licenses (
    license_id BYTEA PRIMARY KEY, cert_id BYTEA NOT NULL UNIQUE, issuer BYTEA NOT NULL,
    package TEXT NOT NULL, tier TEXT NOT NULL, holder BYTEA NOT NULL, not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL, certificate BYTEA NOT NULL, head_seq BIGINT NOT NULL,
    head_hash BYTEA NOT NULL, head_hour BIGINT NOT NULL, flagged BIGINT NOT NULL);
CREATE INDEX licenses_package ON licenses (package);
CREATE TABLE reports (
    license_id BYTEA NOT NULL, seq BIGINT NOT NULL, hour BIGINT NOT NULL, hash BYTEA NOT NULL,
    report BYTEA NOT NULL, received_at BIGINT NOT NULL,
    PRIMARY KEY (license_id, seq), UNIQUE (license_id, hour));
CREATE TABLE hour_sums (
    license_id BYTEA NOT NULL, hour BIGINT NOT NULL, unit TEXT NOT NULL, commitment BYTEA NOT NULL,
    total BIGINT, PRIMARY KEY (license_id, hour, unit));
CREATE TABLE evidence (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, license_id BYTEA NOT NULL,
    holder BYTEA NOT NULL, kind TEXT NOT NULL, hour BIGINT, seq BIGINT, first BYTEA NOT NULL,
    second BYTEA NOT NULL, second_hash BYTEA NOT NULL UNIQUE, at BIGINT NOT NULL);
CREATE TABLE closes (
    license_id BYTEA NOT NULL, period TEXT NOT NULL, close BYTEA NOT NULL, through_seq BIGINT NOT NULL,
    closed_at BIGINT NOT NULL, PRIMARY KEY (license_id, period));
CREATE TABLE close_totals (
    license_id BYTEA NOT NULL, period TEXT NOT NULL, unit TEXT NOT NULL, total BIGINT NOT NULL,
    PRIMARY KEY (license_id, period, unit));
CREATE TABLE releases (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, package TEXT NOT NULL,
    window_start BIGINT NOT NULL, window_end BIGINT NOT NULL, epsilon_micros BIGINT NOT NULL,
    clip BIGINT NOT NULL, at BIGINT NOT NULL);
CREATE TABLE released_values (
    release_id BIGINT NOT NULL, unit TEXT NOT NULL, value BIGINT NOT NULL, PRIMARY KEY (release_id, unit));
";

/// Step 2: versioned terms (metering.md §6.5).
const SQLITE_V2: &str = "
CREATE TABLE terms_history (
    package TEXT NOT NULL, version TEXT NOT NULL, registered_at INTEGER NOT NULL, hash BLOB NOT NULL,
    terms BLOB NOT NULL, PRIMARY KEY (package, version));
ALTER TABLE licenses ADD COLUMN terms_version TEXT;
";
const PG_SCHEMA_V2: &str = "
CREATE TABLE terms_history (
    package TEXT NOT NULL, version TEXT NOT NULL, registered_at BIGINT NOT NULL, hash BYTEA NOT NULL,
    terms BYTEA NOT NULL, PRIMARY KEY (package, version));
ALTER TABLE licenses ADD COLUMN terms_version TEXT;
";

/// Step 3: evidence is bounded, further conflicts counted (metering.md §6.2).
const SQLITE_V3: &str = "ALTER TABLE evidence ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0;";
const PG_SCHEMA_V3: &str = "ALTER TABLE evidence ADD COLUMN repeats BIGINT NOT NULL DEFAULT 0;";

/// Schema version of the operator store, the number of steps (SQLite and PostgreSQL
/// alike).
#[allow(clippy::cast_possible_wrap)] // a handful of steps, known at compile time
pub const SCHEMA_VERSION: i64 = SQLITE_STEPS.len() as i64;

const SQLITE_STEPS: &[&str] = &[SQLITE_V1, SQLITE_V2, SQLITE_V3];

/// The operator store's tables on either engine (metering.md §6.4): schema `escx_operator`
/// on PostgreSQL, the version in `meta`.
static SCHEMA: Schema = Schema {
    what: "operator store",
    pg_schema: Some("escx_operator"),
    lock: "escx v1 operator migration lock",
    sqlite: Migrations { steps: SQLITE_STEPS, mark: Mark::Meta },
    postgres: Migrations { steps: &[PG_SCHEMA_V1, PG_SCHEMA_V2, PG_SCHEMA_V3], mark: Mark::Meta },
};

/// The operator's database: a SQLite file or a PostgreSQL database.
pub struct SqlOperatorStore {
    db: Db,
}

/// A write transaction on a [`SqlOperatorStore`]; rolled back if dropped.
pub struct SqlOperatorTx<'a> {
    tx: Tx<'a>,
}

impl SqlOperatorStore {
    /// Opens (with [`Mode::Create`], creates) the store at `location`; a new one gets its
    /// id, 16 random bytes in hex.
    pub fn open(location: &Location, mode: Mode) -> Result<Self, Error> {
        let db = Db::open(location, &SCHEMA, mode, |tx| {
            let mut id = [0u8; 16];
            escx::keyfile::fill_random(&mut id)
                .map_err(|e| escx_store::Error::failed(tx.location(), e.to_string()))?;
            tx.exec("INSERT INTO meta (key, value) VALUES ('id', ?1)", &[Arg::Text(&hex::encode(id))])
                .map(drop)
        })?;
        Ok(Self { db })
    }

    /// Whether the store is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    /// The connection (the storage layer's), for tests that read every stored cell.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

impl OperatorStore for SqlOperatorStore {
    type Tx<'a> = SqlOperatorTx<'a>;

    fn begin(&self) -> Result<SqlOperatorTx<'_>, Error> {
        Ok(SqlOperatorTx { tx: self.db.begin()? })
    }
}

fn text(row: &Row, index: usize) -> Result<String, Error> {
    Ok(row.text(index)?.to_owned())
}

fn bytes(row: &Row, index: usize) -> Result<Vec<u8>, Error> {
    Ok(row.bytes(index)?.to_vec())
}

fn uint(value: u64) -> Result<Arg<'static>, Error> {
    Ok(Arg::uint(value)?)
}

/// The queries, over the store's connection or a transaction.
struct Q<'a, S: Sql>(&'a S);

impl<S: Sql> OperatorReader for Q<'_, S> {
    fn id(&self) -> Result<String, Error> {
        text(&self.0.one("SELECT value FROM meta WHERE key = 'id'", &[])?, 0)
    }

    fn issuers(&self) -> Result<Vec<KeyedBytes>, Error> {
        self.0
            .rows("SELECT id, chain FROM issuers ORDER BY id", &[])?
            .iter()
            .map(|r| Ok((bytes(r, 0)?, bytes(r, 1)?)))
            .collect()
    }

    fn issuer_chain(&self, id: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.0
            .row("SELECT chain FROM issuers WHERE id = ?1", &[Arg::Bytes(id)])?
            .map(|r| bytes(&r, 0))
            .transpose()
    }

    fn crl(&self, issuer: &[u8]) -> Result<Option<(u64, Vec<u8>)>, Error> {
        self.0
            .row("SELECT number, bytes FROM crls WHERE issuer = ?1", &[Arg::Bytes(issuer)])?
            .map(|r| Ok((r.uint(0)?, bytes(&r, 1)?)))
            .transpose()
    }

    fn crls(&self) -> Result<Vec<KeyedBytes>, Error> {
        self.0
            .rows("SELECT issuer, bytes FROM crls ORDER BY issuer", &[])?
            .iter()
            .map(|r| Ok((bytes(r, 0)?, bytes(r, 1)?)))
            .collect()
    }

    fn owners(&self, scope: &str) -> Result<Vec<Vec<u8>>, Error> {
        self.0
            .rows("SELECT key_id FROM owners WHERE scope = ?1 ORDER BY key_id", &[Arg::Text(scope)])?
            .iter()
            .map(|r| bytes(r, 0))
            .collect()
    }

    fn tier_terms(&self, package: &str, tier: &str) -> Result<Option<TierTerms>, Error> {
        self.0
            .row(
                "SELECT unit, price_micros, currency, telemetry FROM terms WHERE package = ?1 AND tier = ?2",
                &[Arg::Text(package), Arg::Text(tier)],
            )?
            .map(|r| {
                Ok(TierTerms {
                    tier: tier.to_owned(),
                    unit: text(&r, 0)?,
                    price_micros: escx_manifest::Micros(r.uint(1)?),
                    currency: text(&r, 2)?,
                    share: r.text(3)? == "share",
                })
            })
            .transpose()
    }

    fn telemetry_terms(&self, package: &str) -> Result<Option<TelemetryTerms>, Error> {
        self.0
            .row(
                "SELECT metrics, window_secs, cohort_min_size, epsilon_micros FROM telemetry WHERE package = ?1",
                &[Arg::Text(package)],
            )?
            .map(|r| {
                Ok(TelemetryTerms {
                    metrics: r.text(0)?.split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect(),
                    window_secs: r.uint(1)?,
                    cohort_min_size: u32::try_from(r.uint(2)?)
                        .map_err(|_| Error::stored("a stored cohort_min_size is beyond 2^32"))?,
                    epsilon_micros: r.uint(3)?,
                })
            })
            .transpose()
    }

    fn license_by_cert(&self, cert_id: &[u8; 32]) -> Result<Option<StoredLicense>, Error> {
        self.0
            .row(
                "SELECT license_id, issuer, package, tier, holder, not_before, not_after, certificate
                 FROM licenses WHERE cert_id = ?1",
                &[Arg::Bytes(cert_id)],
            )?
            .map(|r| {
                Ok(StoredLicense {
                    license_id: bytes(&r, 0)?,
                    cert_id: *cert_id,
                    issuer: bytes(&r, 1)?,
                    package: text(&r, 2)?,
                    tier: text(&r, 3)?,
                    holder: bytes(&r, 4)?,
                    not_before: r.uint(5)?,
                    not_after: r.uint(6)?,
                    certificate: bytes(&r, 7)?,
                })
            })
            .transpose()
    }

    fn head(&self, license_id: &[u8]) -> Result<Option<Head>, Error> {
        self.0
            .row(
                "SELECT head_seq, head_hash, head_hour FROM licenses WHERE license_id = ?1",
                &[Arg::Bytes(license_id)],
            )?
            .map(|r| Ok(Head { seq: r.uint(0)?, hash: bytes(&r, 1)?, hour: u64::try_from(r.int(2)?).ok() }))
            .transpose()
    }

    fn reports_between(&self, license_id: &[u8], start: u64, end: u64) -> Result<Vec<(u64, u64)>, Error> {
        self.0
            .rows(
                "SELECT seq, hour FROM reports WHERE license_id = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY seq",
                &[Arg::Bytes(license_id), uint(start)?, uint(end)?],
            )?
            .iter()
            .map(|r| Ok((r.uint(0)?, r.uint(1)?)))
            .collect()
    }

    fn report_at_seq(&self, license_id: &[u8], seq: u64) -> Result<Option<(Vec<u8>, u64)>, Error> {
        self.0
            .row(
                "SELECT hash, hour FROM reports WHERE license_id = ?1 AND seq = ?2",
                &[Arg::Bytes(license_id), uint(seq)?],
            )?
            .map(|r| Ok((bytes(&r, 0)?, r.uint(1)?)))
            .transpose()
    }

    fn report_of_hour(&self, license_id: &[u8], hour: u64) -> Result<Option<Vec<u8>>, Error> {
        self.0
            .row(
                "SELECT report FROM reports WHERE license_id = ?1 AND hour = ?2",
                &[Arg::Bytes(license_id), uint(hour)?],
            )?
            .map(|r| bytes(&r, 0))
            .transpose()
    }

    fn held_report(&self, license_id: &[u8], hour: u64, seq: u64) -> Result<Option<HeldReport>, Error> {
        self.0
            .row(
                "SELECT seq, hash, report FROM reports WHERE license_id = ?1 AND (hour = ?2 OR seq = ?3) ORDER BY seq LIMIT 1",
                &[Arg::Bytes(license_id), uint(hour)?, uint(seq)?],
            )?
            .map(|r| Ok((r.uint(0)?, bytes(&r, 1)?, bytes(&r, 2)?)))
            .transpose()
    }

    fn hour_sums_between(
        &self,
        license_id: &[u8],
        start: u64,
        end: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.0
            .rows(
                "SELECT unit, commitment FROM hour_sums WHERE license_id = ?1 AND hour >= ?2 AND hour < ?3",
                &[Arg::Bytes(license_id), uint(start)?, uint(end)?],
            )?
            .iter()
            .map(|r| Ok((text(r, 0)?, bytes(r, 1)?)))
            .collect()
    }

    fn hour_sum(&self, license_id: &[u8], hour: u64, unit: &str) -> Result<Option<Vec<u8>>, Error> {
        self.0
            .row(
                "SELECT commitment FROM hour_sums WHERE license_id = ?1 AND hour = ?2 AND unit = ?3",
                &[Arg::Bytes(license_id), uint(hour)?, Arg::Text(unit)],
            )?
            .map(|r| bytes(&r, 0))
            .transpose()
    }

    fn close(&self, license_id: &[u8], period: &str) -> Result<Option<Vec<u8>>, Error> {
        self.0
            .row(
                "SELECT close FROM closes WHERE license_id = ?1 AND period = ?2",
                &[Arg::Bytes(license_id), Arg::Text(period)],
            )?
            .map(|r| bytes(&r, 0))
            .transpose()
    }

    fn billing_rows(&self, period: &str) -> Result<Vec<BillingRow>, Error> {
        self.0
            .rows(
                "SELECT c.license_id, l.package, l.tier, l.flagged, coalesce(t.total, 0), m.unit, m.price_micros, m.currency,
                        l.terms_version
                 FROM closes c JOIN licenses l ON l.license_id = c.license_id
                 LEFT JOIN close_totals t ON t.license_id = c.license_id AND t.period = c.period AND t.unit = ?2
                 LEFT JOIN terms m ON m.package = l.package AND m.tier = l.tier
                 WHERE c.period = ?1 ORDER BY c.license_id",
                &[Arg::Text(period), Arg::Text(UNIT_MINUTES)],
            )?
            .iter()
            .map(|r| {
                let terms = match r.opt_text(5)? {
                    None => None,
                    Some(unit) => Some((unit.to_owned(), r.uint(6)?, text(r, 7)?)),
                };
                Ok(BillingRow {
                    license_id: bytes(r, 0)?,
                    package: text(r, 1)?,
                    tier: text(r, 2)?,
                    flagged: r.int(3)? != 0,
                    minutes: r.uint(4)?,
                    terms,
                    terms_version: r.opt_text(8)?.map(str::to_owned),
                })
            })
            .collect()
    }

    fn shared_totals(
        &self,
        package: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<(String, Vec<u8>, u64)>, Error> {
        self.0
            .rows(
                "SELECT s.unit, s.license_id, s.total FROM hour_sums s JOIN licenses l ON l.license_id = s.license_id
                 WHERE l.package = ?1 AND s.hour >= ?2 AND s.hour < ?3 AND s.total IS NOT NULL",
                &[Arg::Text(package), uint(start)?, uint(end)?],
            )?
            .iter()
            .map(|r| Ok((text(r, 0)?, bytes(r, 1)?, r.uint(2)?)))
            .collect()
    }

    fn epsilon_spent(&self, package: &str, start: u64, end: u64) -> Result<u64, Error> {
        Ok(self
            .0
            .one(
                "SELECT CAST(coalesce(sum(epsilon_micros), 0) AS BIGINT) FROM releases
                 WHERE package = ?1 AND window_start < ?3 AND window_end > ?2",
                &[Arg::Text(package), uint(start)?, uint(end)?],
            )?
            .uint(0)?)
    }

    fn terms_history(&self, package: &str) -> Result<Vec<TermsVersion>, Error> {
        self.0
            .rows(
                "SELECT version, registered_at, hash, terms FROM terms_history WHERE package = ?1
                 ORDER BY registered_at, version",
                &[Arg::Text(package)],
            )?
            .iter()
            .map(|r| {
                Ok(TermsVersion {
                    version: text(r, 0)?,
                    registered_at: r.uint(1)?,
                    hash: bytes(r, 2)?,
                    terms: bytes(r, 3)?,
                })
            })
            .collect()
    }

    fn license_terms_version(&self, license_id: &[u8]) -> Result<Option<String>, Error> {
        Ok(self
            .0
            .row("SELECT terms_version FROM licenses WHERE license_id = ?1", &[Arg::Bytes(license_id)])?
            .map(|r| r.opt_text(0).map(|t| t.map(str::to_owned)))
            .transpose()?
            .flatten())
    }

    fn evidence(&self) -> Result<Vec<StoredEvidence>, Error> {
        self.0
            .rows(
                "SELECT id, kind, license_id, holder, hour, seq, at, first, second, repeats FROM evidence ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(StoredEvidence {
                    id: r.int(0)?,
                    kind: text(r, 1)?,
                    license_id: bytes(r, 2)?,
                    holder: bytes(r, 3)?,
                    hour: r.opt_uint(4)?,
                    seq: r.opt_uint(5)?,
                    at: r.uint(6)?,
                    first: bytes(r, 7)?,
                    second: bytes(r, 8)?,
                    repeats: r.uint(9)?,
                })
            })
            .collect()
    }

    fn closed_periods(&self) -> Result<Vec<(Vec<u8>, String)>, Error> {
        self.0
            .rows("SELECT license_id, period FROM closes ORDER BY license_id, period", &[])?
            .iter()
            .map(|r| Ok((bytes(r, 0)?, text(r, 1)?)))
            .collect()
    }
}

/// Implements [`OperatorReader`] for `$type` by forwarding every query to `$inner`.
macro_rules! forward_operator_reader {
    ($type:ty, $self:ident => $inner:expr) => {
        #[rustfmt::skip]
        impl OperatorReader for $type {
            fn id(&$self) -> Result<String, Error> { $inner.id() }
            fn issuers(&$self) -> Result<Vec<KeyedBytes>, Error> { $inner.issuers() }
            fn issuer_chain(&$self, id: &[u8]) -> Result<Option<Vec<u8>>, Error> { $inner.issuer_chain(id) }
            fn crl(&$self, issuer: &[u8]) -> Result<Option<(u64, Vec<u8>)>, Error> { $inner.crl(issuer) }
            fn crls(&$self) -> Result<Vec<KeyedBytes>, Error> { $inner.crls() }
            fn owners(&$self, scope: &str) -> Result<Vec<Vec<u8>>, Error> { $inner.owners(scope) }
            fn tier_terms(&$self, package: &str, tier: &str) -> Result<Option<TierTerms>, Error> { $inner.tier_terms(package, tier) }
            fn telemetry_terms(&$self, package: &str) -> Result<Option<TelemetryTerms>, Error> { $inner.telemetry_terms(package) }
            fn license_by_cert(&$self, cert_id: &[u8; 32]) -> Result<Option<StoredLicense>, Error> { $inner.license_by_cert(cert_id) }
            fn head(&$self, license_id: &[u8]) -> Result<Option<Head>, Error> { $inner.head(license_id) }
            fn reports_between(&$self, license_id: &[u8], start: u64, end: u64) -> Result<Vec<(u64, u64)>, Error> { $inner.reports_between(license_id, start, end) }
            fn report_at_seq(&$self, license_id: &[u8], seq: u64) -> Result<Option<(Vec<u8>, u64)>, Error> { $inner.report_at_seq(license_id, seq) }
            fn report_of_hour(&$self, license_id: &[u8], hour: u64) -> Result<Option<Vec<u8>>, Error> { $inner.report_of_hour(license_id, hour) }
            fn held_report(&$self, license_id: &[u8], hour: u64, seq: u64) -> Result<Option<HeldReport>, Error> { $inner.held_report(license_id, hour, seq) }
            fn hour_sums_between(&$self, license_id: &[u8], start: u64, end: u64) -> Result<Vec<(String, Vec<u8>)>, Error> { $inner.hour_sums_between(license_id, start, end) }
            fn hour_sum(&$self, license_id: &[u8], hour: u64, unit: &str) -> Result<Option<Vec<u8>>, Error> { $inner.hour_sum(license_id, hour, unit) }
            fn close(&$self, license_id: &[u8], period: &str) -> Result<Option<Vec<u8>>, Error> { $inner.close(license_id, period) }
            fn billing_rows(&$self, period: &str) -> Result<Vec<BillingRow>, Error> { $inner.billing_rows(period) }
            fn shared_totals(&$self, package: &str, start: u64, end: u64) -> Result<Vec<(String, Vec<u8>, u64)>, Error> { $inner.shared_totals(package, start, end) }
            fn epsilon_spent(&$self, package: &str, start: u64, end: u64) -> Result<u64, Error> { $inner.epsilon_spent(package, start, end) }
            fn terms_history(&$self, package: &str) -> Result<Vec<TermsVersion>, Error> { $inner.terms_history(package) }
            fn license_terms_version(&$self, license_id: &[u8]) -> Result<Option<String>, Error> { $inner.license_terms_version(license_id) }
            fn evidence(&$self) -> Result<Vec<StoredEvidence>, Error> { $inner.evidence() }
            fn closed_periods(&$self) -> Result<Vec<(Vec<u8>, String)>, Error> { $inner.closed_periods() }
        }
    };
}

forward_operator_reader!(SqlOperatorStore, self => Q(&self.db));
forward_operator_reader!(SqlOperatorTx<'_>, self => Q(&self.tx));

impl OperatorWriter for SqlOperatorTx<'_> {
    fn put_issuer(&self, id: &[u8], chain: &[u8]) -> Result<(), Error> {
        self.tx.exec(
            "INSERT INTO issuers (id, chain) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET chain = excluded.chain",
            &[Arg::Bytes(id), Arg::Bytes(chain)],
        )?;
        Ok(())
    }

    fn put_crl(&self, issuer: &[u8], number: u64, bytes: &[u8]) -> Result<(), Error> {
        self.tx.exec(
            "INSERT INTO crls (issuer, number, bytes) VALUES (?1, ?2, ?3)
             ON CONFLICT (issuer) DO UPDATE SET number = excluded.number, bytes = excluded.bytes",
            &[Arg::Bytes(issuer), uint(number)?, Arg::Bytes(bytes)],
        )?;
        Ok(())
    }

    fn insert_owner(&self, scope: &str, key_id: &[u8]) -> Result<(), Error> {
        self.tx.exec(
            "INSERT INTO owners (scope, key_id) VALUES (?1, ?2)",
            &[Arg::Text(scope), Arg::Bytes(key_id)],
        )?;
        Ok(())
    }

    fn replace_terms(
        &self,
        package: &str,
        version: &str,
        tiers: &[TierTerms],
        telemetry: Option<&TelemetryTerms>,
    ) -> Result<(), Error> {
        self.tx.exec("DELETE FROM terms WHERE package = ?1", &[Arg::Text(package)])?;
        for tier in tiers {
            self.tx.exec(
                "INSERT INTO terms (package, tier, version, unit, price_micros, currency, telemetry)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &[
                    Arg::Text(package),
                    Arg::Text(&tier.tier),
                    Arg::Text(version),
                    Arg::Text(&tier.unit),
                    uint(tier.price_micros.0)?,
                    Arg::Text(&tier.currency),
                    Arg::Text(if tier.share { "share" } else { "private" }),
                ],
            )?;
        }
        self.tx.exec("DELETE FROM telemetry WHERE package = ?1", &[Arg::Text(package)])?;
        if let Some(t) = telemetry {
            let metrics = t.metrics.join(",");
            self.tx.exec(
                "INSERT INTO telemetry (package, metrics, window_secs, cohort_min_size, epsilon_micros)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                &[
                    Arg::Text(package),
                    Arg::Text(&metrics),
                    uint(t.window_secs)?,
                    uint(t.cohort_min_size.into())?,
                    uint(t.epsilon_micros)?,
                ],
            )?;
        }
        Ok(())
    }

    fn insert_license(&self, l: &StoredLicense) -> Result<(), Error> {
        self.tx.exec(
            "INSERT INTO licenses (license_id, cert_id, issuer, package, tier, holder, not_before, not_after,
                                   certificate, head_seq, head_hash, head_hour, flagged)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, -1, 0) ON CONFLICT DO NOTHING",
            &[
                Arg::Bytes(&l.license_id),
                Arg::Bytes(&l.cert_id),
                Arg::Bytes(&l.issuer),
                Arg::Text(&l.package),
                Arg::Text(&l.tier),
                Arg::Bytes(&l.holder),
                uint(l.not_before)?,
                uint(l.not_after)?,
                Arg::Bytes(&l.certificate),
                Arg::Bytes(&[0u8; 32]),
            ],
        )?;
        Ok(())
    }

    fn insert_terms_version(&self, package: &str, v: &TermsVersion) -> Result<(), Error> {
        self.tx.exec(
            "INSERT INTO terms_history (package, version, registered_at, hash, terms) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[
                Arg::Text(package),
                Arg::Text(&v.version),
                uint(v.registered_at)?,
                Arg::Bytes(&v.hash),
                Arg::Bytes(&v.terms),
            ],
        )?;
        Ok(())
    }

    fn bind_license_terms(&self, license_id: &[u8], version: &str) -> Result<(), Error> {
        self.tx.exec(
            "UPDATE licenses SET terms_version = ?2 WHERE license_id = ?1",
            &[Arg::Bytes(license_id), Arg::Text(version)],
        )?;
        Ok(())
    }

    fn keep_evidence(&self, e: &NewEvidence<'_>) -> Result<(), Error> {
        let signed = |v: Option<u64>| {
            v.map_or(Ok(-1), |v| i64::try_from(v).map_err(|_| Error::stored("an hour or seq above 2^63")))
        };
        let held = self.tx.row(
            "SELECT id, second_hash FROM evidence
             WHERE license_id = ?1 AND kind = ?2 AND coalesce(hour, -1) = ?3 AND coalesce(seq, -1) = ?4",
            &[
                Arg::Bytes(e.license_id),
                Arg::Text(e.kind),
                Arg::Int(signed(e.hour)?),
                Arg::Int(signed(e.seq)?),
            ],
        )?;
        if let Some(row) = held {
            if row.bytes(1)? != e.second_hash {
                self.tx.exec(
                    "UPDATE evidence SET repeats = repeats + 1 WHERE id = ?1",
                    &[Arg::Int(row.int(0)?)],
                )?;
            }
            self.tx
                .exec("UPDATE licenses SET flagged = 1 WHERE license_id = ?1", &[Arg::Bytes(e.license_id)])?;
            return Ok(());
        }
        self.tx.exec(
            "INSERT INTO evidence (license_id, holder, kind, hour, seq, first, second, second_hash, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
            &[
                Arg::Bytes(e.license_id),
                Arg::Bytes(e.holder),
                Arg::Text(e.kind),
                Arg::opt_uint(e.hour)?,
                Arg::opt_uint(e.seq)?,
                Arg::Bytes(e.first),
                Arg::Bytes(e.second),
                Arg::Bytes(e.second_hash),
                uint(e.at)?,
            ],
        )?;
        self.tx.exec("UPDATE licenses SET flagged = 1 WHERE license_id = ?1", &[Arg::Bytes(e.license_id)])?;
        Ok(())
    }

    fn store_report(&self, r: &NewReport<'_>) -> Result<(), Error> {
        self.tx.exec(
            "INSERT INTO reports (license_id, seq, hour, hash, report, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                Arg::Bytes(r.license_id),
                uint(r.seq)?,
                uint(r.hour)?,
                Arg::Bytes(r.hash),
                Arg::Bytes(r.report),
                uint(r.received_at)?,
            ],
        )?;
        for (unit, commitment, total) in &r.sums {
            self.tx.exec(
                "INSERT INTO hour_sums (license_id, hour, unit, commitment, total) VALUES (?1, ?2, ?3, ?4, ?5)",
                &[Arg::Bytes(r.license_id), uint(r.hour)?, Arg::Text(unit), Arg::Bytes(commitment), Arg::opt_uint(*total)?],
            )?;
        }
        // The chain head only moves forward, one report at a time (metering.md §6.2): the
        // rules checked it before; the store refuses anything else as a broken invariant.
        let moved = self.tx.exec(
            "UPDATE licenses SET head_seq = ?2, head_hash = ?3, head_hour = ?4 \
             WHERE license_id = ?1 AND head_seq + 1 = ?2",
            &[Arg::Bytes(r.license_id), uint(r.seq)?, Arg::Bytes(r.hash), uint(r.hour)?],
        )?;
        if moved != 1 {
            return Err(escx_store::Error::failed(
                self.tx.location(),
                format!("invariant: report {} is not the one after its license's chain head", r.seq),
            )
            .into());
        }
        Ok(())
    }

    fn insert_close(
        &self,
        license_id: &[u8],
        period: &str,
        close: &[u8],
        through_seq: u64,
        at: u64,
        totals: &[(String, u64)],
    ) -> Result<(), Error> {
        self.tx.exec(
            "INSERT INTO closes (license_id, period, close, through_seq, closed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[Arg::Bytes(license_id), Arg::Text(period), Arg::Bytes(close), uint(through_seq)?, uint(at)?],
        )?;
        for (unit, total) in totals {
            self.tx.exec(
                "INSERT INTO close_totals (license_id, period, unit, total) VALUES (?1, ?2, ?3, ?4)",
                &[Arg::Bytes(license_id), Arg::Text(period), Arg::Text(unit), uint(*total)?],
            )?;
        }
        Ok(())
    }

    fn insert_release(
        &self,
        package: &str,
        start: u64,
        end: u64,
        epsilon_micros: u64,
        clip: u64,
        at: u64,
        values: &[(String, u64)],
    ) -> Result<i64, Error> {
        let id = self
            .tx
            .one(
                "INSERT INTO releases (package, window_start, window_end, epsilon_micros, clip, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                &[
                    Arg::Text(package),
                    uint(start)?,
                    uint(end)?,
                    uint(epsilon_micros)?,
                    uint(clip)?,
                    uint(at)?,
                ],
            )?
            .int(0)?;
        for (unit, value) in values {
            self.tx.exec(
                "INSERT INTO released_values (release_id, unit, value) VALUES (?1, ?2, ?3)",
                &[Arg::Int(id), Arg::Text(unit), uint(*value)?],
            )?;
        }
        Ok(id)
    }

    fn compact_reports(&self, license_id: &[u8], start: u64, end: u64) -> Result<(u64, u64), Error> {
        let held = self.tx.one(
            "SELECT count(*), CAST(coalesce(sum(length(report)), 0) AS BIGINT) FROM reports
             WHERE license_id = ?1 AND hour >= ?2 AND hour < ?3 AND length(report) > 0",
            &[Arg::Bytes(license_id), uint(start)?, uint(end)?],
        )?;
        let (count, bytes) = (held.uint(0)?, held.uint(1)?);
        if count > 0 {
            self.tx.exec(
                "UPDATE reports SET report = ?4 WHERE license_id = ?1 AND hour >= ?2 AND hour < ?3 AND length(report) > 0",
                &[Arg::Bytes(license_id), uint(start)?, uint(end)?, Arg::Bytes(&[])],
            )?;
        }
        Ok((count, bytes))
    }

    fn commit(self) -> Result<(), Error> {
        Ok(self.tx.commit()?)
    }
}

// ---------------------------------------------------------------------------------------
// Memory

/// A license row in memory: what [`StoredLicense`] holds, the chain head and the flag.
#[derive(Debug, Clone)]
struct License {
    row: StoredLicense,
    head: Head,
    flagged: bool,
}

#[derive(Debug, Clone, Default)]
struct State {
    id: String,
    issuers: BTreeMap<Vec<u8>, Vec<u8>>,
    crls: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    owners: BTreeSet<(String, Vec<u8>)>,
    /// By (package, tier): the version and the terms.
    terms: BTreeMap<(String, String), TierTerms>,
    telemetry: BTreeMap<String, TelemetryTerms>,
    licenses: BTreeMap<Vec<u8>, License>,
    /// (license, seq) → (hour, hash, envelope).
    reports: BTreeMap<(Vec<u8>, u64), ReportRow>,
    /// (license, hour, unit) → (commitment, total).
    hour_sums: BTreeMap<SumKey, (Vec<u8>, Option<u64>)>,
    evidence: Vec<StoredEvidence>,
    evidence_hashes: BTreeSet<Vec<u8>>,
    closes: BTreeMap<(Vec<u8>, String), Vec<u8>>,
    close_totals: BTreeMap<(Vec<u8>, String, String), u64>,
    /// (id, package, window start, window end, epsilon).
    releases: Vec<(i64, String, u64, u64, u64)>,
    /// By package: every terms version, in registration order.
    terms_history: BTreeMap<String, Vec<TermsVersion>>,
    /// By license id: the terms version it is bound to.
    license_terms: BTreeMap<Vec<u8>, String>,
}

fn violation(what: String) -> Error {
    escx_store::Error::failed("(memory)", format!("constraint violated: {what}")).into()
}

/// An operator store that lives in memory only (tests, and the reference the SQL store
/// is compared with).
#[derive(Debug, Default)]
pub struct MemoryOperatorStore {
    state: RefCell<State>,
}

/// A write transaction on a [`MemoryOperatorStore`]: a working copy, which replaces the
/// store's state on commit.
pub struct MemoryOperatorTx<'a> {
    store: &'a RefCell<State>,
    work: RefCell<State>,
}

impl MemoryOperatorStore {
    /// An empty store with a random id.
    pub fn new() -> Result<Self, Error> {
        let mut id = [0u8; 16];
        escx::keyfile::fill_random(&mut id)?;
        Ok(Self { state: RefCell::new(State { id: hex::encode(id), ..State::default() }) })
    }
}

impl OperatorStore for MemoryOperatorStore {
    type Tx<'a> = MemoryOperatorTx<'a>;

    fn begin(&self) -> Result<MemoryOperatorTx<'_>, Error> {
        let work = RefCell::new(self.state.borrow().clone());
        Ok(MemoryOperatorTx { store: &self.state, work })
    }
}

impl OperatorReader for RefCell<State> {
    fn id(&self) -> Result<String, Error> {
        Ok(self.borrow().id.clone())
    }

    fn issuers(&self) -> Result<Vec<KeyedBytes>, Error> {
        Ok(self.borrow().issuers.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn issuer_chain(&self, id: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.borrow().issuers.get(id).cloned())
    }

    fn crl(&self, issuer: &[u8]) -> Result<Option<(u64, Vec<u8>)>, Error> {
        Ok(self.borrow().crls.get(issuer).cloned())
    }

    fn crls(&self) -> Result<Vec<KeyedBytes>, Error> {
        Ok(self.borrow().crls.iter().map(|(k, (_, b))| (k.clone(), b.clone())).collect())
    }

    fn owners(&self, scope: &str) -> Result<Vec<Vec<u8>>, Error> {
        Ok(self.borrow().owners.iter().filter(|(s, _)| s == scope).map(|(_, k)| k.clone()).collect())
    }

    fn tier_terms(&self, package: &str, tier: &str) -> Result<Option<TierTerms>, Error> {
        Ok(self.borrow().terms.get(&(package.to_owned(), tier.to_owned())).cloned())
    }

    fn telemetry_terms(&self, package: &str) -> Result<Option<TelemetryTerms>, Error> {
        Ok(self.borrow().telemetry.get(package).cloned())
    }

    fn license_by_cert(&self, cert_id: &[u8; 32]) -> Result<Option<StoredLicense>, Error> {
        Ok(self.borrow().licenses.values().find(|l| &l.row.cert_id == cert_id).map(|l| l.row.clone()))
    }

    fn head(&self, license_id: &[u8]) -> Result<Option<Head>, Error> {
        Ok(self.borrow().licenses.get(license_id).map(|l| l.head.clone()))
    }

    fn reports_between(&self, license_id: &[u8], start: u64, end: u64) -> Result<Vec<(u64, u64)>, Error> {
        Ok(self
            .borrow()
            .reports
            .iter()
            .filter(|((l, _), (hour, _, _))| l == license_id && (start..end).contains(hour))
            .map(|((_, seq), (hour, _, _))| (*seq, *hour))
            .collect())
    }

    fn report_at_seq(&self, license_id: &[u8], seq: u64) -> Result<Option<(Vec<u8>, u64)>, Error> {
        Ok(self
            .borrow()
            .reports
            .get(&(license_id.to_vec(), seq))
            .map(|(hour, hash, _)| (hash.clone(), *hour)))
    }

    fn report_of_hour(&self, license_id: &[u8], hour: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .borrow()
            .reports
            .iter()
            .find(|((l, _), (h, _, _))| l == license_id && *h == hour)
            .map(|(_, (_, _, report))| report.clone()))
    }

    fn held_report(&self, license_id: &[u8], hour: u64, seq: u64) -> Result<Option<HeldReport>, Error> {
        // The map is ordered by (license, seq): the first match is the lowest seq.
        Ok(self
            .borrow()
            .reports
            .iter()
            .find(|((l, s), (h, _, _))| l == license_id && (*h == hour || *s == seq))
            .map(|((_, s), (_, hash, report))| (*s, hash.clone(), report.clone())))
    }

    fn hour_sums_between(
        &self,
        license_id: &[u8],
        start: u64,
        end: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Ok(self
            .borrow()
            .hour_sums
            .iter()
            .filter(|((l, hour, _), _)| l == license_id && (start..end).contains(hour))
            .map(|((_, _, unit), (commitment, _))| (unit.clone(), commitment.clone()))
            .collect())
    }

    fn hour_sum(&self, license_id: &[u8], hour: u64, unit: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.borrow().hour_sums.get(&(license_id.to_vec(), hour, unit.to_owned())).map(|(c, _)| c.clone()))
    }

    fn close(&self, license_id: &[u8], period: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.borrow().closes.get(&(license_id.to_vec(), period.to_owned())).cloned())
    }

    fn billing_rows(&self, period: &str) -> Result<Vec<BillingRow>, Error> {
        let state = self.borrow();
        let mut rows = Vec::new();
        for (license_id, _) in state.closes.keys().filter(|(_, p)| p == period) {
            let Some(license) = state.licenses.get(license_id) else { continue };
            let minutes = state
                .close_totals
                .get(&(license_id.clone(), period.to_owned(), UNIT_MINUTES.to_owned()))
                .copied()
                .unwrap_or(0);
            let terms = state
                .terms
                .get(&(license.row.package.clone(), license.row.tier.clone()))
                .map(|t| (t.unit.clone(), t.price_micros.0, t.currency.clone()));
            rows.push(BillingRow {
                license_id: license_id.clone(),
                package: license.row.package.clone(),
                tier: license.row.tier.clone(),
                flagged: license.flagged,
                minutes,
                terms,
                terms_version: state.license_terms.get(license_id).cloned(),
            });
        }
        rows.sort_by(|a, b| a.license_id.cmp(&b.license_id));
        Ok(rows)
    }

    fn shared_totals(
        &self,
        package: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<(String, Vec<u8>, u64)>, Error> {
        let state = self.borrow();
        Ok(state
            .hour_sums
            .iter()
            .filter(|((l, hour, _), _)| {
                (start..end).contains(hour) && state.licenses.get(l).is_some_and(|l| l.row.package == package)
            })
            .filter_map(|((l, _, unit), (_, total))| total.map(|t| (unit.clone(), l.clone(), t)))
            .collect())
    }

    fn epsilon_spent(&self, package: &str, start: u64, end: u64) -> Result<u64, Error> {
        Ok(self
            .borrow()
            .releases
            .iter()
            .filter(|(_, p, s, e, _)| p == package && *s < end && *e > start)
            .map(|r| r.4)
            .sum())
    }

    fn terms_history(&self, package: &str) -> Result<Vec<TermsVersion>, Error> {
        let mut list = self.borrow().terms_history.get(package).cloned().unwrap_or_default();
        list.sort_by(|a, b| a.registered_at.cmp(&b.registered_at).then_with(|| a.version.cmp(&b.version)));
        Ok(list)
    }

    fn license_terms_version(&self, license_id: &[u8]) -> Result<Option<String>, Error> {
        Ok(self.borrow().license_terms.get(license_id).cloned())
    }

    fn evidence(&self) -> Result<Vec<StoredEvidence>, Error> {
        Ok(self.borrow().evidence.clone())
    }

    fn closed_periods(&self) -> Result<Vec<(Vec<u8>, String)>, Error> {
        Ok(self.borrow().closes.keys().cloned().collect())
    }
}

forward_operator_reader!(MemoryOperatorStore, self => self.state);
forward_operator_reader!(MemoryOperatorTx<'_>, self => self.work);

impl OperatorWriter for MemoryOperatorTx<'_> {
    fn put_issuer(&self, id: &[u8], chain: &[u8]) -> Result<(), Error> {
        self.work.borrow_mut().issuers.insert(id.to_vec(), chain.to_vec());
        Ok(())
    }

    fn put_crl(&self, issuer: &[u8], number: u64, bytes: &[u8]) -> Result<(), Error> {
        self.work.borrow_mut().crls.insert(issuer.to_vec(), (number, bytes.to_vec()));
        Ok(())
    }

    fn insert_owner(&self, scope: &str, key_id: &[u8]) -> Result<(), Error> {
        if !self.work.borrow_mut().owners.insert((scope.to_owned(), key_id.to_vec())) {
            return Err(violation(format!("owner of {scope} exists")));
        }
        Ok(())
    }

    fn replace_terms(
        &self,
        package: &str,
        _version: &str,
        tiers: &[TierTerms],
        telemetry: Option<&TelemetryTerms>,
    ) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        state.terms.retain(|(p, _), _| p != package);
        for tier in tiers {
            if state.terms.insert((package.to_owned(), tier.tier.clone()), tier.clone()).is_some() {
                return Err(violation(format!("terms of {package} tier {} exist", tier.tier)));
            }
        }
        state.telemetry.remove(package);
        if let Some(t) = telemetry {
            state.telemetry.insert(package.to_owned(), t.clone());
        }
        Ok(())
    }

    fn insert_license(&self, l: &StoredLicense) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        if state.licenses.contains_key(&l.license_id)
            || state.licenses.values().any(|h| h.row.cert_id == l.cert_id)
        {
            return Ok(());
        }
        let head = Head { seq: 0, hash: vec![0; 32], hour: None };
        state.licenses.insert(l.license_id.clone(), License { row: l.clone(), head, flagged: false });
        Ok(())
    }

    fn keep_evidence(&self, e: &NewEvidence<'_>) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        let held = state
            .evidence
            .iter_mut()
            .find(|r| r.license_id == e.license_id && r.kind == e.kind && r.hour == e.hour && r.seq == e.seq);
        if let Some(row) = held {
            if row.second != e.second {
                row.repeats += 1;
            }
        } else if state.evidence_hashes.insert(e.second_hash.to_vec()) {
            let id = state.evidence.last().map_or(1, |last| last.id + 1);
            state.evidence.push(StoredEvidence {
                id,
                kind: e.kind.to_owned(),
                license_id: e.license_id.to_vec(),
                holder: e.holder.to_vec(),
                hour: e.hour,
                seq: e.seq,
                at: e.at,
                first: e.first.to_vec(),
                second: e.second.to_vec(),
                repeats: 0,
            });
        }
        if let Some(license) = state.licenses.get_mut(e.license_id) {
            license.flagged = true;
        }
        Ok(())
    }

    fn store_report(&self, r: &NewReport<'_>) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        let key = (r.license_id.to_vec(), r.seq);
        let hour_held = state.reports.iter().any(|((l, _), (h, _, _))| l == r.license_id && *h == r.hour);
        if state.reports.contains_key(&key) || hour_held {
            return Err(violation(format!("report {} or its hour exists", r.seq)));
        }
        // The chain head only moves forward, one report at a time (metering.md §6.2).
        match state.licenses.get_mut(r.license_id) {
            Some(license) if license.head.seq + 1 == r.seq => {
                license.head = Head { seq: r.seq, hash: r.hash.to_vec(), hour: Some(r.hour) };
            }
            _ => {
                return Err(violation(format!(
                    "report {} is not the one after its license's chain head",
                    r.seq
                )));
            }
        }
        state.reports.insert(key, (r.hour, r.hash.to_vec(), r.report.to_vec()));
        for (unit, commitment, total) in &r.sums {
            let key = (r.license_id.to_vec(), r.hour, (*unit).to_owned());
            if state.hour_sums.insert(key, (commitment.to_vec(), *total)).is_some() {
                return Err(violation(format!("hour sum of {unit} exists")));
            }
        }
        Ok(())
    }

    fn insert_close(
        &self,
        license_id: &[u8],
        period: &str,
        close: &[u8],
        _through_seq: u64,
        _at: u64,
        totals: &[(String, u64)],
    ) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        if state.closes.insert((license_id.to_vec(), period.to_owned()), close.to_vec()).is_some() {
            return Err(violation(format!("the close of {period} exists")));
        }
        for (unit, total) in totals {
            let key = (license_id.to_vec(), period.to_owned(), unit.clone());
            if state.close_totals.insert(key, *total).is_some() {
                return Err(violation(format!("the close total of {unit} exists")));
            }
        }
        Ok(())
    }

    fn insert_release(
        &self,
        package: &str,
        start: u64,
        end: u64,
        epsilon_micros: u64,
        _clip: u64,
        _at: u64,
        _values: &[(String, u64)],
    ) -> Result<i64, Error> {
        let mut state = self.work.borrow_mut();
        let id = state.releases.last().map_or(1, |last| last.0 + 1);
        state.releases.push((id, package.to_owned(), start, end, epsilon_micros));
        Ok(id)
    }

    fn insert_terms_version(&self, package: &str, v: &TermsVersion) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        let list = state.terms_history.entry(package.to_owned()).or_default();
        if list.iter().any(|held| held.version == v.version) {
            return Err(violation(format!("terms {package} {} exist", v.version)));
        }
        list.push(v.clone());
        Ok(())
    }

    fn bind_license_terms(&self, license_id: &[u8], version: &str) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        if state.licenses.contains_key(license_id) {
            state.license_terms.insert(license_id.to_vec(), version.to_owned());
        }
        Ok(())
    }

    fn compact_reports(&self, license_id: &[u8], start: u64, end: u64) -> Result<(u64, u64), Error> {
        let mut state = self.work.borrow_mut();
        let (mut count, mut bytes) = (0, 0);
        for ((license, _), (hour, _, report)) in state.reports.iter_mut() {
            if license == license_id && (start..end).contains(hour) && !report.is_empty() {
                count += 1;
                bytes += report.len() as u64;
                report.clear();
            }
        }
        Ok((count, bytes))
    }

    fn commit(self) -> Result<(), Error> {
        *self.store.borrow_mut() = self.work.into_inner();
        Ok(())
    }
}
