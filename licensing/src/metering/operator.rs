//! The operator's side of metering (spec: metering.md §6–§7, privacy.md): a store of
//! trusted issuers, CRLs, package terms, verified reports, period closes, evidence of
//! equivocation and the privacy-budget ledger. The store is `operator.sqlite` (mode 0600
//! in a 0700 directory, WAL, `synchronous=FULL`) or, when the directory holds a
//! `database.url`, the PostgreSQL database it names, which several service nodes share
//! (metering.md §6.4).
//!
//! The store never holds a per-minute value: a report is kept as its signed envelope
//! (60 commitments per unit) with one summed commitment per unit and hour; an hour's
//! total is kept only when the report opened it (share tier). Private-tier usage becomes
//! visible once per license and period, at the close.

use crate::LicenseCheck;
use escx::UnixSeconds;
use escx::manifest::PackageName;
use escx_manifest::Micros;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use curve25519_dalek::ristretto::RistrettoPoint;
use escx::envelope::Envelope;
use escx::policy::TrustPolicy;
use escx::sig::{KeyId, PublicKey};
use escx_manifest::schema::TelemetryMode;
use rand_core::RngCore;
use rayon::prelude::*;

use super::{
    CONTEXT_CERTIFICATE_ID, CONTEXT_CLOSE, CONTEXT_REPORT, CloseFile, ClosePayload, HOUR_SECS, MINUTES,
    OpeningFile, Period, REPORT_LATE_SECS, Refusal, ReportFile, ReportPayload, SeriesSum, UNIT_MINUTES,
    check_report, commit, format_hour, is_metric, point, refuse, report_hash, scalar,
};
use crate::Error;
use crate::messages::{BundleChain, ChainRelation, CrlPayload, IssuerBundle, LicensePayload};
use crate::verify;
use escx_store::{Arg, Db, Location, Mark, Migrations, Mode, Row, Schema, Sql, Tx};

/// The store's file in the operator directory.
pub const DATABASE_FILE: &str = "operator.sqlite";
/// Schema version of the operator store (SQLite and PostgreSQL alike).
pub const SCHEMA_VERSION: i64 = 1;
pub use escx_store::DATABASE_URL_FILE;
/// Epsilon is accounted in millionths.
pub const EPSILON_SCALE: u64 = 1_000_000;

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

/// The operator store's tables on either engine (metering.md §6.4): schema `escx_operator`
/// on PostgreSQL, the version in `meta`.
static SCHEMA: Schema = Schema {
    what: "operator store",
    pg_schema: Some("escx_operator"),
    lock: "escx v1 operator migration lock",
    sqlite: Migrations { steps: &[SQLITE_V1], mark: Mark::Meta },
    postgres: Migrations { steps: &[PG_SCHEMA_V1], mark: Mark::Meta },
};

fn package_name(row: &Row, index: usize) -> Result<PackageName, Error> {
    PackageName::parse(row.text(index)?).map_err(|_| Error::stored("a stored package name is malformed"))
}

fn time(row: &Row, index: usize) -> Result<UnixSeconds, Error> {
    Ok(row.uint(index).map(UnixSeconds)?)
}

/// What the operator knows about a license from its verified certificate.
#[derive(Debug, Clone)]
struct LicenseInfo {
    license_id: [u8; 16],
    cert_id: [u8; 32],
    issuer: KeyId,
    package: PackageName,
    tier: String,
    holder: PublicKey,
    not_before: UnixSeconds,
    not_after: UnixSeconds,
}

impl LicenseInfo {
    fn from_payload(license: &LicensePayload, cert_id: [u8; 32], issuer: KeyId) -> Result<Self, Error> {
        Ok(Self {
            license_id: license
                .license_id
                .as_slice()
                .try_into()
                .map_err(|_| refuse(Refusal::Invalid, "license id must be 16 bytes"))?,
            cert_id,
            issuer,
            package: license.package.clone(),
            tier: license.tier.clone(),
            holder: PublicKey::from_bytes(&license.holder_key)?,
            not_before: license.not_before,
            not_after: license.not_after,
        })
    }
}

/// The id of a certificate in the store: `derive_key("escx v1 meter certificate id", bytes)`.
fn certificate_id(bytes: &[u8]) -> [u8; 32] {
    blake3::derive_key(CONTEXT_CERTIFICATE_ID, bytes)
}

/// The pricing of one tier as the operator applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierTerms {
    /// Tier name.
    pub tier: String,
    /// `one-off`, `hour`, `month` or `year`.
    pub unit: String,
    /// Price per unit, micro-units.
    pub price_micros: Micros,
    /// ISO 4217 code.
    pub currency: String,
    /// Shares telemetry?
    pub share: bool,
}

/// A package's `[telemetry]` as the operator applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryTerms {
    /// Declared metrics.
    pub metrics: Vec<String>,
    /// Aggregation window.
    pub window_secs: u64,
    /// Smallest cohort released.
    pub cohort_min_size: u32,
    /// Budget per window, in millionths.
    pub epsilon_micros: u64,
}

/// What registering a package's terms stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// Package.
    pub package: PackageName,
    /// The version whose manifest the terms come from.
    pub version: String,
    /// Tiers.
    pub tiers: Vec<TierTerms>,
    /// Telemetry, if declared.
    pub telemetry: Option<TelemetryTerms>,
}

/// What happened to one report of a batch.
#[derive(Debug)]
pub enum Outcome {
    /// Verified and stored.
    Stored,
    /// The very report was stored before: nothing changed.
    Duplicate,
    /// A different report for a license-hour (or chain position) already held: both are
    /// kept as evidence, the license is flagged, this one is not counted.
    Equivocation,
    /// Refused.
    Refused(Error),
}

/// One report's result.
#[derive(Debug)]
pub struct Ingested {
    /// Position in the batch.
    pub index: usize,
    /// License id (hex), when the report could be read that far.
    pub license_id: Option<String>,
    /// Its seq.
    pub seq: Option<u64>,
    /// Its hour.
    pub hour: Option<UnixSeconds>,
    /// What happened.
    pub outcome: Outcome,
}

struct Prepared {
    info: LicenseInfo,
    certificate: Option<Vec<u8>>,
    hour: UnixSeconds,
    seq: u64,
    previous: [u8; 32],
    envelope: Vec<u8>,
    hash: [u8; 32],
    sums: Vec<SeriesSum>,
}

/// A period close the operator accepted.
#[derive(Debug, Clone)]
pub struct Closed {
    /// License id (hex).
    pub license_id: String,
    /// Package.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// Period.
    pub period: String,
    /// Totals per unit.
    pub totals: Vec<(String, u64)>,
    /// Reports in the period.
    pub reports: u64,
    /// True when this very close was accepted before.
    pub again: bool,
}

/// One license's usage charge for a period (settlement's `usage` event).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageCharge {
    /// Stable event id: `operator:<operator id>:usage:<license id>:<period>`.
    pub id: String,
    /// License id (hex).
    pub license_id: String,
    /// Package.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// `YYYY-MM`.
    pub period: String,
    /// Minutes of use in the period.
    pub minutes: u64,
    /// The tier's price per hour, micro-units.
    pub price_micros: Micros,
    /// `floor(minutes · price / 60)`, micro-units.
    pub gross_micros: Micros,
    /// ISO 4217 code.
    pub currency: String,
    /// The event time: the last second of the period.
    #[serde(serialize_with = "escx::timestamp::serialize_rfc3339")]
    pub time: UnixSeconds,
    /// The license has equivocated (see the evidence).
    pub flagged: bool,
}

/// The result of an aggregation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aggregate {
    /// Fewer distinct holders than the package's `cohort_min_size`: nothing is released
    /// and no budget is spent.
    Suppressed {
        /// The threshold.
        cohort_min_size: u32,
    },
    /// Released.
    Released(Release),
}

/// A noised release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Package.
    pub package: PackageName,
    /// Window start.
    pub start: UnixSeconds,
    /// Window end.
    pub end: UnixSeconds,
    /// Per unit: clipped sum over holders plus discrete Laplace noise, floored at 0.
    pub values: Vec<(String, u64)>,
    /// Each holder's window total per unit is clipped to this (the sensitivity).
    pub clip: u64,
    /// Epsilon this release spent, millionths (split evenly over the units).
    pub epsilon_micros: u64,
    /// Budget left for the window, millionths.
    pub remaining_micros: u64,
    /// The noise scale per unit: `clip · units / epsilon`, as `numerator/denominator`.
    pub scale: (u64, u64),
}

/// Kept evidence of an equivocation.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// Row id.
    pub id: i64,
    /// `report` (two reports for one license-hour or chain position) or `close`.
    pub kind: String,
    /// License id (hex).
    pub license_id: String,
    /// The holder key id.
    pub holder: KeyId,
    /// The hour (reports).
    pub hour: Option<UnixSeconds>,
    /// The seq (reports).
    pub seq: Option<u64>,
    /// When it was seen.
    pub at: UnixSeconds,
    /// The message held first (envelope bytes).
    pub first: Vec<u8>,
    /// The conflicting one (envelope bytes).
    pub second: Vec<u8>,
}

/// An opening that matched its commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningVerdict {
    /// License id (hex).
    pub license_id: String,
    /// Package.
    pub package: PackageName,
    /// Hour.
    pub hour: UnixSeconds,
    /// Minute, if one.
    pub minute: Option<u8>,
    /// Proven values per unit.
    pub values: Vec<(String, u64)>,
}

/// The operator's store.
pub struct Operator {
    dir: PathBuf,
    db: Db,
    id: String,
    issuers: HashMap<KeyId, IssuerBundle>,
    /// The hash of each trusted issuer's chain as last read, so a refresh parses only the
    /// chains that changed.
    chains: HashMap<KeyId, blake3::Hash>,
}

/// Opens (with [`Mode::Create`], creates) the store at `location`; a new one gets its id,
/// 16 random bytes in hex.
fn open_db(location: &Location, mode: Mode) -> Result<Db, Error> {
    Ok(Db::open(location, &SCHEMA, mode, |tx| {
        let mut id = [0u8; 16];
        escx::keyfile::fill_random(&mut id)
            .map_err(|e| escx_store::Error::failed(tx.location(), e.to_string()))?;
        tx.exec("INSERT INTO meta (key, value) VALUES ('id', ?1)", &[Arg::Text(&hex::encode(id))]).map(drop)
    })?)
}

impl Operator {
    /// Creates an operator store in `dir` (created 0700) trusting the given issuers.
    pub fn init(dir: &Path, issuers: &[BundleChain]) -> Result<Self, Error> {
        escx::fsutil::create_private_dir(dir)?;
        if dir.join(DATABASE_URL_FILE).exists() {
            return Err(escx_store::Error::failed(
                dir.display().to_string(),
                "holds an operator directory already (its database.url)",
            )
            .into());
        }
        let db = open_db(&Location::Sqlite(dir.join(DATABASE_FILE)), Mode::Create)?;
        Self::with_issuers(dir, db, issuers)
    }

    /// Creates an operator directory whose store is the PostgreSQL database at `url`: the
    /// tables (schema `escx_operator`) in the database and `database.url` (0600) in `dir`,
    /// so every later [`Operator::open`] of the directory uses the database. Further
    /// service nodes each hold a copy of the directory.
    pub fn init_postgres(dir: &Path, url: &str, issuers: &[BundleChain]) -> Result<Self, Error> {
        let location = Location::parse(url);
        escx_store::create_empty_dir(dir)?;
        let db = open_db(&location, Mode::Create)?;
        escx_store::write_database_url(dir, &location)?;
        Self::with_issuers(dir, db, issuers)
    }

    fn with_issuers(dir: &Path, db: Db, issuers: &[BundleChain]) -> Result<Self, Error> {
        let mut operator = Self::with_db(dir, db)?;
        for chain in issuers {
            operator.add_issuer(chain)?;
        }
        Ok(operator)
    }

    /// Opens an existing store: the PostgreSQL database `dir/database.url` names, else
    /// `dir/operator.sqlite`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let db = open_db(&Location::of_dir(dir, DATABASE_FILE)?, Mode::Open)?;
        Self::with_db(dir, db)
    }

    fn with_db(dir: &Path, db: Db) -> Result<Self, Error> {
        let id = db.one("SELECT value FROM meta WHERE key = 'id'", &[])?.text(0)?.to_owned();
        let mut operator =
            Self { dir: dir.to_path_buf(), db, id, issuers: HashMap::new(), chains: HashMap::new() };
        operator.refresh_issuers()?;
        Ok(operator)
    }

    /// Whether the store is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    /// The database connection, for this crate's tests that read every stored cell
    /// (feature `test-support`).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn database(&self) -> &Db {
        &self.db
    }

    /// The store's random id (part of every usage event id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads the trusted issuers again: another node or process sharing the store may
    /// have added or extended one.
    fn refresh_issuers(&mut self) -> Result<(), Error> {
        for row in self.db.rows("SELECT id, chain FROM issuers", &[])? {
            let bytes = row.bytes(1)?;
            let hash = blake3::hash(bytes);
            let id = crate::messages::key_id(row.bytes(0)?)?;
            if self.chains.get(&id) == Some(&hash) {
                continue;
            }
            let chain = BundleChain::parse(bytes)?;
            self.issuers.insert(chain.issuer_id(), chain.head().clone());
            self.chains.insert(id, hash);
        }
        Ok(())
    }

    /// Trusts an issuer (its bundle chain); a chain of a trusted issuer must extend the
    /// one held.
    pub fn add_issuer(&mut self, chain: &BundleChain) -> Result<(), Error> {
        let id = chain.issuer_id();
        let bytes = chain.to_cbor();
        self.db.writing(|tx| {
            let held = tx.row("SELECT chain FROM issuers WHERE id = ?1", &[Arg::Bytes(&id.0)])?;
            if let Some(held) = held {
                match chain.relation(&BundleChain::parse(held.bytes(0)?)?) {
                    ChainRelation::Same | ChainRelation::Older => return Ok(()),
                    ChainRelation::Extends => {}
                    ChainRelation::Fork(version) => return Err(Error::BundleFork { issuer: id, version }),
                }
            }
            tx.exec(
                "INSERT INTO issuers (id, chain) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET chain = excluded.chain",
                &[Arg::Bytes(&id.0), Arg::Bytes(&bytes)],
            )?;
            Ok(tx.commit()?)
        })?;
        self.refresh_issuers()
    }

    /// Accepts a newer CRL of a trusted issuer (the very CRL held again is a no-op).
    pub fn accept_crl(&mut self, bytes: &[u8]) -> Result<CrlPayload, Error> {
        self.refresh_issuers()?;
        let envelope = Envelope::from_cbor(bytes).map_err(|e| Error::LicenseRejected {
            check: LicenseCheck::CrlSignature,
            reason: e.to_string(),
        })?;
        let issuer = self.issuers.get(&envelope.key_id()).ok_or_else(|| Error::LicenseRejected {
            check: LicenseCheck::CrlSignature,
            reason: format!("signed by {}, which is not an issuer this operator trusts", envelope.key_id()),
        })?;
        let crl = verify::open_crl(bytes, issuer)?;
        let issuer_id = issuer.issuer_id();
        self.db.writing(|tx| {
            let held =
                tx.row("SELECT number, bytes FROM crls WHERE issuer = ?1", &[Arg::Bytes(&issuer_id.0)])?;
            if let Some(held) = held {
                let number = held.uint(0)?;
                if held.bytes(1)? == bytes {
                    return Ok(());
                }
                if crl.number <= number {
                    return Err(Error::LicenseRejected {
                        check: LicenseCheck::Crl,
                        reason: format!(
                            "CRL number {} is not newer than number {number} already held",
                            crl.number
                        ),
                    });
                }
            }
            tx.exec(
                "INSERT INTO crls (issuer, number, bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (issuer) DO UPDATE SET number = excluded.number, bytes = excluded.bytes",
                &[Arg::Bytes(&issuer_id.0), Arg::uint(crl.number)?, Arg::Bytes(bytes)],
            )?;
            Ok(tx.commit()?)
        })?;
        Ok(crl)
    }

    fn crls(&self) -> Result<HashMap<KeyId, CrlPayload>, Error> {
        let mut out = HashMap::new();
        for row in self.db.rows("SELECT issuer, bytes FROM crls", &[])? {
            let id = crate::messages::key_id(row.bytes(0)?)?;
            if let Some(bundle) = self.issuers.get(&id) {
                out.insert(id, verify::open_crl(row.bytes(1)?, bundle)?);
            }
        }
        Ok(out)
    }

    /// Registers a package's metering terms from a package file verified under
    /// `publishers` (its `[pricing]` tiers and `[telemetry]`). The keys that first
    /// register a scope own it, as at the issuer; a newer version replaces the terms.
    pub fn add_package(
        &mut self,
        package: &Path,
        publishers: &TrustPolicy,
        now: UnixSeconds,
    ) -> Result<Terms, Error> {
        let signed = crate::issuer::read_signed_manifest(package, publishers, &self.dir, now)?;
        let manifest = signed.manifest;
        let name = manifest.package.name.clone();
        let pricing =
            manifest.pricing.as_ref().filter(|p| !p.tiers.is_empty()).ok_or_else(|| Error::Pricing {
                package: name.to_string(),
                reason: "its manifest has no priced tiers in [pricing]".into(),
            })?;
        let currency = pricing.currency.clone().unwrap_or_else(|| "USD".into());
        let tiers: Vec<TierTerms> = pricing
            .tiers
            .iter()
            .map(|t| TierTerms {
                tier: t.name.clone(),
                unit: crate::issuer::unit_name(t.unit).into(),
                price_micros: t.price,
                currency: currency.clone(),
                share: t.telemetry == TelemetryMode::Share,
            })
            .collect();
        let telemetry = match &manifest.telemetry {
            None => None,
            Some(t) => {
                let epsilon_micros = (t.epsilon * EPSILON_SCALE as f64).round();
                if !(1.0..=(10.0 * EPSILON_SCALE as f64)).contains(&epsilon_micros) {
                    return Err(Error::Pricing {
                        package: name.to_string(),
                        reason: format!("telemetry.epsilon {} is below 0.000001", t.epsilon),
                    });
                }
                // Rounded and checked to lie in [1, 10^7] just above: exact in u64. (No
                // std conversion from f64 to an integer is checked.)
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let epsilon_micros = epsilon_micros as u64;
                Some(TelemetryTerms {
                    metrics: t.metrics.clone(),
                    window_secs: t.window_secs,
                    cohort_min_size: t.cohort_min_size,
                    epsilon_micros,
                })
            }
        };
        let version = manifest.package.version.to_string();
        let scope = crate::issuer::owner_scope(&name);
        self.db.writing(|tx| {
            let owners: Vec<Vec<u8>> = tx
                .rows("SELECT key_id FROM owners WHERE scope = ?1", &[Arg::Text(&scope)])?
                .iter()
                .map(|r| r.bytes(0).map(<[u8]>::to_vec))
                .collect::<Result<_, _>>()?;
            if owners.is_empty() {
                if signed.signers.is_empty() {
                    return Err(Error::PackageOwned {
                        package: name.to_string(),
                        scope: scope.clone(),
                        owners: Vec::new(),
                    });
                }
                for key in &signed.signers {
                    tx.exec(
                        "INSERT INTO owners (scope, key_id) VALUES (?1, ?2)",
                        &[Arg::Text(&scope), Arg::Bytes(&key.0)],
                    )?;
                }
            } else if !signed.signers.iter().any(|k| owners.iter().any(|o| o.as_slice() == &k.0[..])) {
                let owners = owners.iter().map(|o| crate::messages::key_id(o)).collect::<Result<_, _>>()?;
                return Err(Error::PackageOwned { package: name.to_string(), scope: scope.clone(), owners });
            }
            tx.exec("DELETE FROM terms WHERE package = ?1", &[Arg::Text(name.as_str())])?;
            for tier in &tiers {
                tx.exec(
                    "INSERT INTO terms (package, tier, version, unit, price_micros, currency, telemetry)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    &[
                        Arg::Text(name.as_str()),
                        Arg::Text(&tier.tier),
                        Arg::Text(&version),
                        Arg::Text(&tier.unit),
                        Arg::uint(tier.price_micros.0)?,
                        Arg::Text(&tier.currency),
                        Arg::Text(if tier.share { "share" } else { "private" }),
                    ],
                )?;
            }
            tx.exec("DELETE FROM telemetry WHERE package = ?1", &[Arg::Text(name.as_str())])?;
            if let Some(t) = &telemetry {
                let metrics = t.metrics.join(",");
                tx.exec(
                    "INSERT INTO telemetry (package, metrics, window_secs, cohort_min_size, epsilon_micros)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    &[
                        Arg::Text(name.as_str()),
                        Arg::Text(&metrics),
                        Arg::uint(t.window_secs)?,
                        Arg::uint(t.cohort_min_size)?,
                        Arg::uint(t.epsilon_micros)?,
                    ],
                )?;
            }
            Ok(tx.commit()?)
        })?;
        Ok(Terms { package: name, version, tiers, telemetry })
    }

    fn tier_terms(db: &impl Sql, package: &str, tier: &str) -> Result<Option<TierTerms>, Error> {
        db.row(
            "SELECT unit, price_micros, currency, telemetry FROM terms WHERE package = ?1 AND tier = ?2",
            &[Arg::Text(package), Arg::Text(tier)],
        )?
        .map(|r| {
            Ok(TierTerms {
                tier: tier.to_owned(),
                unit: r.text(0)?.to_owned(),
                price_micros: Micros(r.uint(1)?),
                currency: r.text(2)?.to_owned(),
                share: r.text(3)? == "share",
            })
        })
        .transpose()
    }

    fn telemetry_terms(db: &impl Sql, package: &str) -> Result<Option<TelemetryTerms>, Error> {
        db.row(
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

    fn known_license(db: &impl Sql, cert_id: &[u8; 32]) -> Result<Option<LicenseInfo>, Error> {
        let Some(r) = db.row(
            "SELECT license_id, issuer, package, tier, certificate, not_before, not_after FROM licenses WHERE cert_id = ?1",
            &[Arg::Bytes(cert_id)],
        )?
        else {
            return Ok(None);
        };
        // The holder key is read back from the stored (verified) certificate.
        let envelope = Envelope::from_cbor(r.bytes(4)?)?;
        let payload: LicensePayload =
            crate::messages::decode_payload(envelope.payload_unverified(), "license")?;
        Ok(Some(LicenseInfo {
            license_id: r
                .bytes(0)?
                .try_into()
                .map_err(|_| Error::stored("a stored license id is not 16 bytes"))?,
            cert_id: *cert_id,
            issuer: crate::messages::key_id(r.bytes(1)?)?,
            package: package_name(&r, 2)?,
            tier: r.text(3)?.to_owned(),
            holder: PublicKey::from_bytes(&payload.holder_key)?,
            not_before: time(&r, 5)?,
            not_after: time(&r, 6)?,
        }))
    }

    /// Verifies a certificate under a trusted issuer (the `issuer` and `signature` checks).
    fn verify_certificate(
        issuers: &HashMap<KeyId, IssuerBundle>,
        certificate: &[u8],
        cert_id: [u8; 32],
    ) -> Result<LicenseInfo, Error> {
        let envelope = Envelope::from_cbor(certificate)
            .map_err(|e| Error::LicenseRejected { check: LicenseCheck::Signature, reason: e.to_string() })?;
        let issuer = issuers.get(&envelope.key_id()).ok_or_else(|| Error::LicenseRejected {
            check: LicenseCheck::Issuer,
            reason: format!("signed by {}, which is not an issuer this operator trusts", envelope.key_id()),
        })?;
        let license = verify::open_certificate(certificate, issuer)?;
        LicenseInfo::from_payload(&license, cert_id, issuer.issuer_id())
    }

    /// Everything about one report that needs no store state (metering.md §6.1 steps
    /// 1–5): shape, certificate, holder signature, payload rules, the sums of the
    /// commitments and the openings of a shared hour. Runs in parallel.
    fn prepare(
        issuers: &HashMap<KeyId, IssuerBundle>,
        (file, cert_id): (ReportFile, [u8; 32]),
        known: &HashMap<[u8; 32], LicenseInfo>,
    ) -> Result<Prepared, Error> {
        let (info, certificate) = match known.get(&cert_id) {
            Some(info) => (info.clone(), None),
            None => (
                Self::verify_certificate(issuers, &file.certificate, cert_id)?,
                Some(file.certificate.to_vec()),
            ),
        };
        let envelope =
            Envelope::from_cbor(&file.report).map_err(|e| refuse(Refusal::Signature, e.to_string()))?;
        let payload = envelope.open(CONTEXT_REPORT, &info.holder).map_err(|e| {
            refuse(Refusal::Signature, format!("not signed by the license's holder key: {e}"))
        })?;
        let payload: ReportPayload = super::decode(payload, "meter report")?;
        let sums = check_report(&payload)?;
        if payload.license_id.as_slice() != info.license_id || payload.package != info.package {
            return Err(refuse(
                Refusal::Invalid,
                "the report names another license or package than its certificate",
            ));
        }
        let mut previous = [0u8; 32];
        previous.copy_from_slice(&payload.previous);
        Ok(Prepared {
            info,
            certificate,
            hour: payload.hour,
            seq: payload.seq,
            previous,
            hash: report_hash(&file.report),
            envelope: file.report.into_vec(),
            sums,
        })
    }

    /// Verifies and stores a batch of report files (metering.md §6). Verification runs in
    /// parallel; the batch is committed in one transaction. Idempotent: a report stored
    /// before is a [`Outcome::Duplicate`] and changes nothing.
    pub fn ingest(&mut self, files: &[Vec<u8>], now: UnixSeconds) -> Result<Vec<Ingested>, Error> {
        self.refresh_issuers()?;
        // Each file is decoded and its certificate named once; certificates already
        // verified are looked up once per batch, not re-verified.
        let parsed: Vec<Result<(ReportFile, [u8; 32]), Error>> = files
            .par_iter()
            .map(|bytes| {
                let file = ReportFile::from_cbor(bytes)?;
                let id = certificate_id(&file.certificate);
                Ok((file, id))
            })
            .collect();
        let cert_ids: BTreeSet<[u8; 32]> =
            parsed.iter().filter_map(|p| p.as_ref().ok().map(|(_, id)| *id)).collect();
        let mut known = HashMap::new();
        for id in cert_ids {
            if let Some(info) = Self::known_license(&self.db, &id)? {
                known.insert(id, info);
            }
        }
        let prepared: Vec<Result<Prepared, Error>> = {
            let issuers = &self.issuers;
            parsed.into_par_iter().map(|p| p.and_then(|p| Self::prepare(issuers, p, &known))).collect()
        };
        let crls = self.crls()?;
        let mut results: Vec<Option<Ingested>> = (0..files.len()).map(|_| None).collect();
        let mut order: Vec<(usize, Prepared)> = Vec::new();
        for (index, result) in prepared.into_iter().enumerate() {
            match result {
                Ok(p) => order.push((index, p)),
                Err(error) => {
                    results[index] = Some(Ingested {
                        index,
                        license_id: None,
                        seq: None,
                        hour: None,
                        outcome: Outcome::Refused(error),
                    })
                }
            }
        }
        order.sort_by_key(|(index, p)| (p.info.license_id, p.seq, *index));
        // The store-dependent rules run in one transaction, all again if a concurrent
        // writer (another node) made PostgreSQL refuse it.
        let outcomes = self.db.writing(|tx| {
            let mut outcomes = Vec::with_capacity(order.len());
            for (_, report) in &order {
                outcomes.push(match apply(&tx, report, &crls, now) {
                    Ok(outcome) => outcome,
                    Err(error @ Error::Store(_)) => return Err(error),
                    Err(error) => Outcome::Refused(error),
                });
            }
            tx.commit()?;
            Ok(outcomes)
        })?;
        for ((index, report), outcome) in order.into_iter().zip(outcomes) {
            results[index] = Some(Ingested {
                index,
                license_id: Some(hex::encode(report.info.license_id)),
                seq: Some(report.seq),
                hour: Some(report.hour),
                outcome,
            });
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Checks a period close against the stored reports and keeps it (metering.md §7).
    /// The same close again is a no-op; a different close for the same license and
    /// period is refused and kept as evidence.
    pub fn close(&mut self, bytes: &[u8], now: UnixSeconds) -> Result<Closed, Error> {
        let file = CloseFile::from_cbor(bytes)?;
        let cert_id = certificate_id(&file.certificate);
        let (info, certificate) = match Self::known_license(&self.db, &cert_id)? {
            Some(info) => (info, None),
            None => (
                Self::verify_certificate(&self.issuers, &file.certificate, cert_id)?,
                Some(file.certificate.to_vec()),
            ),
        };
        let envelope =
            Envelope::from_cbor(&file.close).map_err(|e| refuse(Refusal::Signature, e.to_string()))?;
        let payload = envelope.open(CONTEXT_CLOSE, &info.holder).map_err(|e| {
            refuse(Refusal::Signature, format!("not signed by the license's holder key: {e}"))
        })?;
        let payload: ClosePayload = super::decode(payload, "period close")?;
        let invalid = |reason: String| refuse(Refusal::Invalid, reason);
        if payload.v != 1 {
            return Err(invalid(format!("unsupported close version {}", payload.v)));
        }
        if payload.license_id.as_slice() != info.license_id || payload.package != info.package {
            return Err(invalid("the close names another license or package than its certificate".into()));
        }
        let period = Period::parse(&payload.period).map_err(invalid)?;
        if payload.through_hash.len() != 32
            || (payload.through_seq == 0) != payload.through_hash.iter().all(|b| *b == 0)
        {
            return Err(invalid("through_hash is 32 bytes, zero exactly when through_seq is 0".into()));
        }
        for pair in payload.totals.windows(2) {
            if pair[0].unit >= pair[1].unit {
                return Err(invalid("totals are sorted by unit, each unit once".into()));
            }
        }
        let mut totals = Vec::with_capacity(payload.totals.len());
        for total in &payload.totals {
            let blinding = scalar(&total.blinding)
                .ok_or_else(|| invalid(format!("{}: the blinding is not a canonical scalar", total.unit)))?;
            if total.total > i64::MAX as u64 {
                return Err(refuse(
                    Refusal::Overflow,
                    format!("{}: totals above 2^63 - 1 are refused", total.unit),
                ));
            }
            totals.push((total.unit.clone(), total.total, blinding));
        }
        let id = info.license_id;
        let id_hex = hex::encode(id);
        let period_text = period.to_string();
        let closed = |reports: usize, again: bool| Closed {
            license_id: id_hex.clone(),
            package: info.package.clone(),
            tier: info.tier.clone(),
            period: period_text.clone(),
            totals: totals.iter().map(|(u, t, _)| (u.clone(), *t)).collect(),
            reports: reports as u64,
            again,
        };
        self.db.writing(|tx| {
            if let Some(certificate) = &certificate {
                insert_license(&tx, &info, certificate)?;
            }
            let held = tx.row(
                "SELECT close FROM closes WHERE license_id = ?1 AND period = ?2",
                &[Arg::Bytes(&id), Arg::Text(&period_text)],
            )?;
            if let Some(held) = held {
                let held = held.bytes(0)?;
                if held == file.close.as_slice() {
                    return Ok(closed(period_reports(&tx, &id, period)?.len(), true));
                }
                keep_evidence(&tx, &info, "close", None, None, held, &file.close, now)?;
                tx.commit()?;
                return Err(refuse(
                    Refusal::CloseConflict,
                    format!(
                        "license {id_hex} closed {period_text} before with other totals; both closes are kept as evidence"
                    ),
                ));
            }
            let (head_seq, _, _) = head(&tx, &id)?;
            if head_seq < payload.through_seq {
                return Err(refuse(
                    Refusal::ReportMissing,
                    format!(
                        "the close covers reports up to {} but reports {}..={} of license {id_hex} have not been ingested; \
                         ingest them first",
                        payload.through_seq,
                        head_seq + 1,
                        payload.through_seq
                    ),
                ));
            }
            if payload.through_seq > 0 {
                let through = tx.one(
                    "SELECT hash, hour FROM reports WHERE license_id = ?1 AND seq = ?2",
                    &[Arg::Bytes(&id), Arg::uint(payload.through_seq)?],
                )?;
                if through.bytes(0)? != payload.through_hash.as_slice() || time(&through, 1)? >= period.end() {
                    return Err(refuse(
                        Refusal::CloseMismatch,
                        format!(
                            "report {} of license {id_hex} is not the one the close names",
                            payload.through_seq
                        ),
                    ));
                }
            }
            let reports = period_reports(&tx, &id, period)?;
            if let Some((seq, hour)) = reports.iter().find(|(seq, _)| *seq > payload.through_seq) {
                return Err(refuse(
                    Refusal::CloseMismatch,
                    format!(
                        "report {seq} (hour {}) lies in {period_text} but the close stops at report {}",
                        format_hour(*hour),
                        payload.through_seq
                    ),
                ));
            }
            let mut sums: BTreeMap<String, RistrettoPoint> = BTreeMap::new();
            for row in tx.rows(
                "SELECT unit, commitment FROM hour_sums WHERE license_id = ?1 AND hour >= ?2 AND hour < ?3",
                &[Arg::Bytes(&id), Arg::uint(period.start())?, Arg::uint(period.end())?],
            )? {
                let p = point(row.bytes(1)?)
                    .ok_or_else(|| Error::stored("a stored hour sum is not a point"))?;
                *sums.entry(row.text(0)?.to_owned()).or_default() += p;
            }
            let units: Vec<&String> = sums.keys().collect();
            let claimed: Vec<&String> = totals.iter().map(|(u, _, _)| u).collect();
            if units != claimed {
                return Err(refuse(
                    Refusal::CloseMismatch,
                    format!(
                        "the close totals units [{}] but the period's reports hold [{}]",
                        claimed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                        units.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            for (unit, total, blinding) in &totals {
                if commit(*total, blinding) != sums[unit] {
                    return Err(refuse(
                        Refusal::CloseMismatch,
                        format!(
                            "{unit}: the total {total} does not open the sum of the {} stored hourly commitments of {period_text}",
                            reports.len()
                        ),
                    ));
                }
            }
            tx.exec(
                "INSERT INTO closes (license_id, period, close, through_seq, closed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                &[
                    Arg::Bytes(&id),
                    Arg::Text(&period_text),
                    Arg::Bytes(&file.close),
                    Arg::uint(payload.through_seq)?,
                    Arg::uint(now)?,
                ],
            )?;
            for (unit, total, _) in &totals {
                tx.exec(
                    "INSERT INTO close_totals (license_id, period, unit, total) VALUES (?1, ?2, ?3, ?4)",
                    &[Arg::Bytes(&id), Arg::Text(&period_text), Arg::Text(unit), Arg::uint(*total)?],
                )?;
            }
            tx.commit()?;
            Ok(closed(reports.len(), false))
        })
    }

    /// The usage charges of `period`: one per closed license of a metered tier
    /// (`unit = "hour"`), `floor(minutes · price / 60)` (metering.md §7.2). One statement,
    /// so one snapshot of the store.
    pub fn billing(&self, period: Period) -> Result<Vec<UsageCharge>, Error> {
        let period_text = period.to_string();
        let rows = self.db.rows(
            "SELECT c.license_id, l.package, l.tier, l.flagged, coalesce(t.total, 0), m.unit, m.price_micros, m.currency
             FROM closes c JOIN licenses l ON l.license_id = c.license_id
             LEFT JOIN close_totals t ON t.license_id = c.license_id AND t.period = c.period AND t.unit = ?2
             LEFT JOIN terms m ON m.package = l.package AND m.tier = l.tier
             WHERE c.period = ?1 ORDER BY c.license_id",
            &[Arg::Text(&period_text), Arg::Text(UNIT_MINUTES)],
        )?;
        let mut charges = Vec::new();
        for r in rows {
            let package = package_name(&r, 1)?;
            let tier = r.text(2)?.to_owned();
            let Ok(unit) = r.text(5) else {
                return Err(refuse(
                    Refusal::UnknownTerms,
                    format!("no terms for {package} tier {tier}; register the package"),
                ));
            };
            if unit != "hour" {
                continue;
            }
            let minutes = r.uint(4)?;
            let price = Micros(r.uint(6)?);
            let gross = u128::from(minutes) * u128::from(price.0) / 60;
            let license = hex::encode(r.bytes(0)?);
            charges.push(UsageCharge {
                id: format!("operator:{}:usage:{license}:{period}", self.id),
                license_id: license,
                package,
                tier,
                period: period_text.clone(),
                minutes,
                price_micros: price,
                gross_micros: u64::try_from(gross)
                    .map(Micros)
                    .map_err(|_| refuse(Refusal::Overflow, "a usage charge overflows 2^64 micro-units"))?,
                currency: r.text(7)?.to_owned(),
                time: period.end() - 1,
                flagged: r.int(3)? != 0,
            });
        }
        Ok(charges)
    }

    /// Releases the share-tier sums of `package` over one `[telemetry] window`
    /// (privacy.md): suppressed below `cohort_min_size` distinct holders, otherwise each
    /// unit's clipped sum plus exact discrete Laplace noise, spending `epsilon_micros`
    /// (default: all that is left) of the window's budget.
    pub fn aggregate(
        &mut self,
        package: &PackageName,
        (start, end): (UnixSeconds, UnixSeconds),
        clip: u64,
        epsilon_micros: Option<u64>,
        rng: &mut impl RngCore,
        now: UnixSeconds,
    ) -> Result<Aggregate, Error> {
        let telemetry = Self::telemetry_terms(&self.db, package)?.ok_or_else(|| {
            refuse(
                Refusal::UnknownTerms,
                format!("{package} declares no [telemetry]; register its package first"),
            )
        })?;
        if end - start != telemetry.window_secs || start.floor(telemetry.window_secs) != start {
            return Err(refuse(
                Refusal::WindowInvalid,
                format!(
                    "{package} aggregates over windows of {} hours starting at multiples of that from 1970-01-01T00; \
                     {}/{} is not one",
                    telemetry.window_secs / HOUR_SECS,
                    format_hour(start),
                    format_hour(end)
                ),
            ));
        }
        if clip == 0 || clip > u64::from(u32::MAX) {
            return Err(refuse(Refusal::Invalid, "the clip (per-holder bound) must be 1 to 2^32 - 1"));
        }
        self.db.writing(|tx| {
            let mut per_holder: BTreeMap<(String, Vec<u8>), u128> = BTreeMap::new();
            for row in tx.rows(
                "SELECT s.unit, s.license_id, s.total FROM hour_sums s JOIN licenses l ON l.license_id = s.license_id
                 WHERE l.package = ?1 AND s.hour >= ?2 AND s.hour < ?3 AND s.total IS NOT NULL",
                &[Arg::Text(package.as_str()), Arg::uint(start)?, Arg::uint(end)?],
            )? {
                *per_holder.entry((row.text(0)?.to_owned(), row.bytes(1)?.to_vec())).or_default() +=
                    u128::from(row.uint(2)?);
            }
            let holders: BTreeSet<&Vec<u8>> = per_holder.keys().map(|(_, l)| l).collect();
            if holders.len() < telemetry.cohort_min_size as usize {
                return Ok(Aggregate::Suppressed { cohort_min_size: telemetry.cohort_min_size });
            }
            let spent = tx
                .one(
                    "SELECT CAST(coalesce(sum(epsilon_micros), 0) AS BIGINT) FROM releases
                     WHERE package = ?1 AND window_start = ?2",
                    &[Arg::Text(package.as_str()), Arg::uint(start)?],
                )?
                .uint(0)?;
            let remaining = telemetry.epsilon_micros.saturating_sub(spent);
            let epsilon = epsilon_micros.unwrap_or(remaining);
            if epsilon == 0 || epsilon > remaining {
                return Err(refuse(
                    Refusal::BudgetExhausted,
                    format!(
                        "the privacy budget of {package} for {}/{} has {} of {} left; this release asks for {}",
                        format_hour(start),
                        format_hour(end),
                        epsilon_text(remaining),
                        epsilon_text(telemetry.epsilon_micros),
                        epsilon_text(epsilon)
                    ),
                ));
            }
            // Every declared unit is released, whether or not anyone used it, so the set of
            // units itself reveals nothing.
            let mut units: Vec<String> = vec![UNIT_MINUTES.to_owned()];
            units.extend(telemetry.metrics.iter().filter(|m| is_metric(m)).cloned());
            units.sort();
            units.dedup();
            // Sequential composition: each unit gets epsilon / k, so the noise scale is
            // clip · k / epsilon = (clip · k · 10^6) / epsilon_micros.
            let scale_t = clip * units.len() as u64 * EPSILON_SCALE;
            let scale_s = epsilon;
            let mut values = Vec::new();
            for unit in &units {
                let sum: u128 = per_holder
                    .iter()
                    .filter(|((u, _), _)| u == unit)
                    .map(|(_, t)| (*t).min(u128::from(clip)))
                    .sum();
                // Drawn again if the transaction runs again: nothing drawn before is ever
                // released.
                let noise = super::dp::discrete_laplace(rng, scale_t, scale_s);
                let noised = (i128::try_from(sum).unwrap_or(i128::MAX).saturating_add(noise)).max(0);
                values.push((unit.clone(), u64::try_from(noised).unwrap_or(u64::MAX)));
            }
            let release_id = tx
                .one(
                    "INSERT INTO releases (package, window_start, window_end, epsilon_micros, clip, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                    &[Arg::Text(package.as_str()), Arg::uint(start)?, Arg::uint(end)?, Arg::uint(epsilon)?, Arg::uint(clip)?, Arg::uint(now)?],
                )?
                .int(0)?;
            for (unit, value) in &values {
                tx.exec(
                    "INSERT INTO released_values (release_id, unit, value) VALUES (?1, ?2, ?3)",
                    &[Arg::Int(release_id), Arg::Text(unit), Arg::uint(*value)?],
                )?;
            }
            tx.commit()?;
            Ok(Aggregate::Released(Release {
                package: package.clone(),
                start,
                end,
                values,
                clip,
                epsilon_micros: epsilon,
                remaining_micros: remaining - epsilon,
                scale: (scale_t, scale_s),
            }))
        })
    }

    /// Kept evidence, optionally of one holder key.
    pub fn evidence(&self, holder: Option<KeyId>) -> Result<Vec<Evidence>, Error> {
        let mut out = Vec::new();
        for r in self.db.rows(
            "SELECT id, kind, license_id, holder, hour, seq, at, first, second FROM evidence ORDER BY id",
            &[],
        )? {
            let key = crate::messages::key_id(r.bytes(3)?)?;
            if holder.is_some_and(|wanted| wanted != key) {
                continue;
            }
            out.push(Evidence {
                id: r.int(0)?,
                kind: r.text(1)?.to_owned(),
                license_id: hex::encode(r.bytes(2)?),
                holder: key,
                hour: r.opt_uint(4)?.map(UnixSeconds),
                seq: r.opt_uint(5)?,
                at: time(&r, 6)?,
                first: r.bytes(7)?.to_vec(),
                second: r.bytes(8)?.to_vec(),
            });
        }
        Ok(out)
    }

    /// Checks an opening against the stored commitment of its hour or minute.
    pub fn check_opening(&self, bytes: &[u8]) -> Result<OpeningVerdict, Error> {
        let opening = OpeningFile::from_cbor(bytes)?;
        let id_hex = hex::encode(&opening.license_id);
        let stored = self
            .db
            .row(
                "SELECT report FROM reports WHERE license_id = ?1 AND hour = ?2",
                &[Arg::Bytes(&opening.license_id), Arg::uint(opening.hour)?],
            )?
            .ok_or_else(|| {
                refuse(
                    Refusal::NotFound,
                    format!("no report of license {id_hex} for hour {} is stored", format_hour(opening.hour)),
                )
            })?;
        // Stored reports were verified at ingest.
        let envelope = Envelope::from_cbor(stored.bytes(0)?)?;
        let payload: ReportPayload = super::decode(envelope.payload_unverified(), "meter report")?;
        if payload.package != opening.package {
            return Err(refuse(
                Refusal::OpeningMismatch,
                format!("license {id_hex} is for {}", payload.package),
            ));
        }
        let mut values = Vec::new();
        for unit in &opening.openings {
            let series = payload.series.iter().find(|s| s.unit == unit.unit).ok_or_else(|| {
                refuse(Refusal::OpeningMismatch, format!("the stored report has no {} series", unit.unit))
            })?;
            let blinding =
                scalar(&unit.blinding).ok_or_else(|| refuse(Refusal::Invalid, "blinding not canonical"))?;
            let commitment = match opening.minute {
                Some(m) => point(&series.commitments[usize::from(m) % MINUTES]),
                None => point(
                    self.db
                        .one(
                            "SELECT commitment FROM hour_sums WHERE license_id = ?1 AND hour = ?2 AND unit = ?3",
                            &[Arg::Bytes(&opening.license_id), Arg::uint(opening.hour)?, Arg::Text(&unit.unit)],
                        )?
                        .bytes(0)?,
                ),
            }
            .ok_or_else(|| Error::stored("a stored commitment is not a point"))?;
            if commit(unit.value, &blinding) != commitment {
                let at = match opening.minute {
                    Some(m) => format!("minute {m} of hour {}", format_hour(opening.hour)),
                    None => format!("hour {}", format_hour(opening.hour)),
                };
                return Err(refuse(
                    Refusal::OpeningMismatch,
                    format!(
                        "{}: {} does not open the commitment of {at} of license {id_hex}",
                        unit.unit, unit.value
                    ),
                ));
            }
            values.push((unit.unit.clone(), unit.value));
        }
        Ok(OpeningVerdict {
            license_id: id_hex,
            package: payload.package,
            hour: opening.hour,
            minute: opening.minute,
            values,
        })
    }
}

/// Epsilon in millionths as a decimal.
pub fn epsilon_text(micros: u64) -> String {
    let text = format!("{}.{:06}", micros / EPSILON_SCALE, micros % EPSILON_SCALE);
    let trimmed = text.trim_end_matches('0');
    trimmed.strip_suffix('.').map_or(trimmed.to_owned(), |t| format!("{t}.0"))
}

/// The license's chain head: sequence number, hash and hour (`None` before the first
/// report; stored as -1).
fn head(db: &impl Sql, id: &[u8; 16]) -> Result<(u64, [u8; 32], Option<UnixSeconds>), Error> {
    let Some(r) = db.row(
        "SELECT head_seq, head_hash, head_hour FROM licenses WHERE license_id = ?1",
        &[Arg::Bytes(id)],
    )?
    else {
        return Ok((0, [0u8; 32], None));
    };
    let hash: [u8; 32] =
        r.bytes(1)?.try_into().map_err(|_| Error::stored("a stored head hash is not 32 bytes"))?;
    Ok((r.uint(0)?, hash, u64::try_from(r.int(2)?).ok().map(UnixSeconds)))
}

fn period_reports(db: &impl Sql, id: &[u8; 16], period: Period) -> Result<Vec<(u64, UnixSeconds)>, Error> {
    db.rows(
        "SELECT seq, hour FROM reports WHERE license_id = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY seq",
        &[Arg::Bytes(id), Arg::uint(period.start())?, Arg::uint(period.end())?],
    )?
    .iter()
    .map(|r| Ok((r.uint(0)?, time(r, 1)?)))
    .collect()
}

fn insert_license(db: &impl Sql, info: &LicenseInfo, certificate: &[u8]) -> Result<(), Error> {
    db.exec(
        "INSERT INTO licenses (license_id, cert_id, issuer, package, tier, holder, not_before, not_after,
                               certificate, head_seq, head_hash, head_hour, flagged)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, -1, 0) ON CONFLICT DO NOTHING",
        &[
            Arg::Bytes(&info.license_id),
            Arg::Bytes(&info.cert_id),
            Arg::Bytes(&info.issuer.0),
            Arg::Text(info.package.as_str()),
            Arg::Text(&info.tier),
            Arg::Bytes(&info.holder.id().0),
            Arg::uint(info.not_before)?,
            Arg::uint(info.not_after)?,
            Arg::Bytes(certificate),
            Arg::Bytes(&[0u8; 32]),
        ],
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn keep_evidence(
    db: &impl Sql,
    info: &LicenseInfo,
    kind: &str,
    hour: Option<UnixSeconds>,
    seq: Option<u64>,
    first: &[u8],
    second: &[u8],
    now: UnixSeconds,
) -> Result<(), Error> {
    db.exec(
        "INSERT INTO evidence (license_id, holder, kind, hour, seq, first, second, second_hash, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
        &[
            Arg::Bytes(&info.license_id),
            Arg::Bytes(&info.holder.id().0),
            Arg::Text(kind),
            Arg::opt_uint(hour.map(u64::from))?,
            Arg::opt_uint(seq)?,
            Arg::Bytes(first),
            Arg::Bytes(second),
            Arg::Bytes(&report_hash(second)),
            Arg::uint(now)?,
        ],
    )?;
    db.exec("UPDATE licenses SET flagged = 1 WHERE license_id = ?1", &[Arg::Bytes(&info.license_id)])?;
    Ok(())
}

/// The store-dependent rules of one report, in the order of metering.md §6.2.
fn apply(
    db: &Tx<'_>,
    report: &Prepared,
    crls: &HashMap<KeyId, CrlPayload>,
    now: UnixSeconds,
) -> Result<Outcome, Error> {
    let info = &report.info;
    let id = &info.license_id;
    if let Some(certificate) = &report.certificate {
        insert_license(db, info, certificate)?;
    }
    // 1. The same report again, or a different one for a held hour or chain position.
    let held = db.row(
        "SELECT seq, hash, report FROM reports WHERE license_id = ?1 AND (hour = ?2 OR seq = ?3) ORDER BY seq LIMIT 1",
        &[Arg::Bytes(id), Arg::uint(report.hour)?, Arg::uint(report.seq)?],
    )?;
    if let Some(held) = held {
        if held.bytes(1)? == report.hash {
            return Ok(Outcome::Duplicate);
        }
        keep_evidence(
            db,
            info,
            "report",
            Some(report.hour),
            Some(report.seq),
            held.bytes(2)?,
            &report.envelope,
            now,
        )?;
        return Ok(Outcome::Equivocation);
    }

    // 2. The license at the hour: its window and the CRL.
    if report.hour + HOUR_SECS <= info.not_before {
        return Err(Error::LicenseRejected {
            check: LicenseCheck::NotYetValid,
            reason: format!(
                "hour {} ends before the license is valid (from {})",
                format_hour(report.hour),
                escx::timestamp::format_rfc3339(info.not_before)
            ),
        });
    }
    if report.hour >= info.not_after {
        return Err(Error::LicenseRejected {
            check: LicenseCheck::Window,
            reason: format!(
                "hour {} starts after the license expired ({})",
                format_hour(report.hour),
                escx::timestamp::format_rfc3339(info.not_after)
            ),
        });
    }
    if let Some(crl) = crls.get(&info.issuer)
        && let Some(entry) = crl.revoked.iter().find(|r| r.license_id.as_slice() == id)
    {
        return Err(Error::LicenseRejected {
            check: LicenseCheck::Revocation,
            reason: format!(
                "license {} is revoked by CRL {} ({})",
                hex::encode(id),
                crl.number,
                entry.reason
            ),
        });
    }
    // 3. Time: after the hour ended, not later than the late limit.
    if report.hour + HOUR_SECS > now {
        return Err(refuse(
            Refusal::TooEarly,
            format!("hour {} has not ended; a report is accepted once it has", format_hour(report.hour)),
        ));
    }
    if now - (report.hour + HOUR_SECS) > REPORT_LATE_SECS {
        return Err(refuse(
            Refusal::TooLate,
            format!(
                "hour {} ended more than {} days ago; reports are accepted for {} days after their hour",
                format_hour(report.hour),
                REPORT_LATE_SECS / 86_400,
                REPORT_LATE_SECS / 86_400
            ),
        ));
    }
    // 4. Terms: the tier's telemetry mode and the package's metrics.
    let terms = Operator::tier_terms(db, &info.package, &info.tier)?.ok_or_else(|| {
        refuse(
            Refusal::UnknownTerms,
            format!(
                "no terms for {} tier {}; register the package with the operator first",
                info.package, info.tier
            ),
        )
    })?;
    let opened = report.sums.iter().filter(|s| s.total.is_some()).count();
    if terms.share && opened != report.sums.len() {
        return Err(refuse(
            Refusal::TierMismatch,
            format!(
                "tier {} of {} shares telemetry: every series opens its hour total",
                info.tier, info.package
            ),
        ));
    }
    if !terms.share && opened > 0 {
        return Err(refuse(
            Refusal::TierMismatch,
            format!(
                "tier {} of {} keeps telemetry private: a report opens no hour total (refused so the total is not kept)",
                info.tier, info.package
            ),
        ));
    }
    let metrics = Operator::telemetry_terms(db, &info.package)?.map(|t| t.metrics).unwrap_or_default();
    if let Some(unit) = report.sums.iter().find(|s| s.unit != UNIT_MINUTES && !metrics.contains(&s.unit)) {
        return Err(refuse(Refusal::Invalid, format!("{} does not meter {:?}", info.package, unit.unit)));
    }
    if let Some(total) = report.sums.iter().filter_map(|s| s.total).find(|t| *t > i64::MAX as u64) {
        return Err(refuse(Refusal::Overflow, format!("an hour total of {total} is above 2^63 - 1")));
    }
    // 5. The chain.
    let (head_seq, head_hash, head_hour) = head(db, id)?;
    if report.seq != head_seq + 1 {
        return Err(refuse(
            Refusal::OutOfOrder,
            if report.seq > head_seq + 1 {
                format!(
                    "report {} of license {} arrived before reports {}..={}; send those first",
                    report.seq,
                    hex::encode(id),
                    head_seq + 1,
                    report.seq - 1
                )
            } else {
                format!(
                    "report {} of license {} is behind the chain head {head_seq}",
                    report.seq,
                    hex::encode(id)
                )
            },
        ));
    }
    if report.previous != head_hash || head_hour.is_some_and(|h| report.hour <= h) {
        return Err(refuse(
            Refusal::OutOfOrder,
            format!(
                "report {} of license {} does not follow report {head_seq} (previous hash or hour order)",
                report.seq,
                hex::encode(id)
            ),
        ));
    }
    // 6. A closed period takes no more reports.
    let closed = db
        .one(
            "SELECT count(*) FROM closes WHERE license_id = ?1 AND period = ?2",
            &[Arg::Bytes(id), Arg::Text(&Period::of(report.hour).to_string())],
        )?
        .int(0)?;
    if closed > 0 {
        return Err(refuse(
            Refusal::PeriodClosed,
            format!("period {} of license {} is closed", Period::of(report.hour), hex::encode(id)),
        ));
    }
    db.exec(
        "INSERT INTO reports (license_id, seq, hour, hash, report, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        &[
            Arg::Bytes(id),
            Arg::uint(report.seq)?,
            Arg::uint(report.hour)?,
            Arg::Bytes(&report.hash),
            Arg::Bytes(&report.envelope),
            Arg::uint(now)?,
        ],
    )?;
    for sum in &report.sums {
        db.exec(
            "INSERT INTO hour_sums (license_id, hour, unit, commitment, total) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[
                Arg::Bytes(id),
                Arg::uint(report.hour)?,
                Arg::Text(&sum.unit),
                Arg::Bytes(&sum.sum),
                Arg::opt_uint(sum.total)?,
            ],
        )?;
    }
    db.exec(
        "UPDATE licenses SET head_seq = ?2, head_hash = ?3, head_hour = ?4 WHERE license_id = ?1",
        &[Arg::Bytes(id), Arg::uint(report.seq)?, Arg::Bytes(&report.hash), Arg::uint(report.hour)?],
    )?;
    Ok(Outcome::Stored)
}
