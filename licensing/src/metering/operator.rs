//! The operator's side of metering (spec: metering.md §6–§7, privacy.md): a store
//! (`operator.sqlite`, mode 0600 in a 0700 directory, WAL, `synchronous=FULL`) of trusted
//! issuers, CRLs, package terms, verified reports, period closes, evidence of
//! equivocation and the privacy-budget ledger.
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
use std::sync::{Arc, Mutex};

use curve25519_dalek::ristretto::RistrettoPoint;
use escx::envelope::Envelope;
use escx::policy::TrustPolicy;
use escx::sig::{KeyId, PublicKey};
use escx_manifest::schema::TelemetryMode;
use rand_core::RngCore;
use rayon::prelude::*;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    CONTEXT_CERTIFICATE_ID, CONTEXT_CLOSE, CONTEXT_REPORT, CloseFile, ClosePayload, HOUR_SECS, MINUTES,
    OpeningFile, Period, REPORT_LATE_SECS, Refusal, ReportFile, ReportPayload, SeriesSum, UNIT_MINUTES,
    check_report, commit, format_hour, is_metric, point, refuse, report_hash, scalar,
};
use crate::Error;
use crate::messages::{BundleChain, ChainRelation, CrlPayload, IssuerBundle, LicensePayload};
use crate::sqlite::sql;
use crate::verify;

/// The store's file in the operator directory.
pub const DATABASE_FILE: &str = "operator.sqlite";
/// Schema version of the operator store.
pub const SCHEMA_VERSION: i64 = 1;
/// Epsilon is accounted in millionths.
pub const EPSILON_SCALE: u64 = 1_000_000;

const SCHEMA: &str = "
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

fn to_i64(value: impl Into<u64>) -> i64 {
    i64::try_from(value.into()).unwrap_or(i64::MAX)
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
    db: Connection,
    /// Shared by this process's handles of the same store (`crate::sqlite::write_gate`).
    gate: Arc<Mutex<()>>,
    id: String,
    issuers: HashMap<KeyId, IssuerBundle>,
}

fn open_db(path: &Path, create: bool) -> Result<Connection, Error> {
    if !create && !path.exists() {
        return Err(Error::Store(format!("{}: no operator store here; create one first", path.display())));
    }
    let mut db = crate::sqlite::open_private(path)?;
    let transaction = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
    if !crate::sqlite::has_meta(&transaction)? {
        transaction.execute_batch(SCHEMA).map_err(sql)?;
        let mut id = [0u8; 16];
        escx::keyfile::fill_random(&mut id)?;
        transaction
            .execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?1), ('id', ?2)",
                params![SCHEMA_VERSION.to_string(), hex::encode(id)],
            )
            .map_err(sql)?;
    } else {
        let found: String = transaction
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .map_err(sql)?;
        if found.parse::<i64>().map_or(true, |v| v > SCHEMA_VERSION) {
            return Err(Error::Store(format!(
                "{}: operator schema version {found} is newer than this build's {SCHEMA_VERSION}; upgrade escx",
                path.display()
            )));
        }
    }
    transaction.commit().map_err(sql)?;
    Ok(db)
}

fn immediate<'a>(db: &'a Connection, gate: &'a Mutex<()>) -> Result<crate::sqlite::Gated<'a>, Error> {
    crate::sqlite::Gated::begin(db, gate)
}

impl Operator {
    /// Creates an operator store in `dir` (created 0700) trusting the given issuers.
    pub fn init(dir: &Path, issuers: &[BundleChain]) -> Result<Self, Error> {
        escx::fsutil::create_private_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        if path.exists() {
            return Err(Error::Store(format!("{}: an operator store exists here already", path.display())));
        }
        open_db(&path, true)?;
        let mut operator = Self::open(dir)?;
        for chain in issuers {
            operator.add_issuer(chain)?;
        }
        Ok(operator)
    }

    /// Opens an existing store.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(DATABASE_FILE);
        let db = open_db(&path, false)?;
        let id: String =
            db.query_row("SELECT value FROM meta WHERE key = 'id'", [], |r| r.get(0)).map_err(sql)?;
        let gate = crate::sqlite::write_gate(&path);
        let mut operator = Self { dir: dir.to_path_buf(), db, gate, issuers: HashMap::new(), id };
        operator.load_issuers()?;
        Ok(operator)
    }

    /// The store's random id (part of every usage event id).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn load_issuers(&mut self) -> Result<(), Error> {
        let mut statement = self.db.prepare("SELECT chain FROM issuers").map_err(sql)?;
        let chains: Vec<Vec<u8>> =
            statement.query_map([], |r| r.get(0)).map_err(sql)?.collect::<Result<_, _>>().map_err(sql)?;
        drop(statement);
        for bytes in chains {
            let chain = BundleChain::parse(&bytes)?;
            self.issuers.insert(chain.issuer_id(), chain.head().clone());
        }
        Ok(())
    }

    /// Trusts an issuer (its bundle chain); a chain of a trusted issuer must extend the
    /// one held.
    pub fn add_issuer(&mut self, chain: &BundleChain) -> Result<(), Error> {
        let id = chain.issuer_id();
        let held: Option<Vec<u8>> = self
            .db
            .query_row("SELECT chain FROM issuers WHERE id = ?1", params![&id.0[..]], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        if let Some(held) = held {
            match chain.relation(&BundleChain::parse(&held)?) {
                ChainRelation::Same | ChainRelation::Older => return Ok(()),
                ChainRelation::Extends => {}
                ChainRelation::Fork(version) => return Err(Error::BundleFork { issuer: id, version }),
            }
        }
        self.db
            .execute(
                "INSERT OR REPLACE INTO issuers (id, chain) VALUES (?1, ?2)",
                params![&id.0[..], chain.to_cbor()],
            )
            .map_err(sql)?;
        self.issuers.insert(id, chain.head().clone());
        Ok(())
    }

    /// Accepts a newer CRL of a trusted issuer (the very CRL held again is a no-op).
    pub fn accept_crl(&mut self, bytes: &[u8]) -> Result<CrlPayload, Error> {
        let envelope = Envelope::from_cbor(bytes).map_err(|e| Error::LicenseRejected {
            check: LicenseCheck::CrlSignature,
            reason: e.to_string(),
        })?;
        let issuer = self.issuers.get(&envelope.key_id()).ok_or_else(|| Error::LicenseRejected {
            check: LicenseCheck::CrlSignature,
            reason: format!("signed by {}, which is not an issuer this operator trusts", envelope.key_id()),
        })?;
        let crl = verify::open_crl(bytes, issuer)?;
        let held: Option<(u64, Vec<u8>)> = self
            .db
            .query_row(
                "SELECT number, bytes FROM crls WHERE issuer = ?1",
                params![&issuer.issuer_id().0[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql)?;
        if let Some((number, held)) = held {
            if held == bytes {
                return Ok(crl);
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
        self.db
            .execute(
                "INSERT OR REPLACE INTO crls (issuer, number, bytes) VALUES (?1, ?2, ?3)",
                params![&issuer.issuer_id().0[..], to_i64(crl.number), bytes],
            )
            .map_err(sql)?;
        Ok(crl)
    }

    fn crls(&self) -> Result<HashMap<KeyId, CrlPayload>, Error> {
        let mut out = HashMap::new();
        let mut statement = self.db.prepare("SELECT issuer, bytes FROM crls").map_err(sql)?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?;
        for (issuer, bytes) in rows {
            let id = crate::messages::key_id(&issuer)?;
            if let Some(bundle) = self.issuers.get(&id) {
                out.insert(id, verify::open_crl(&bytes, bundle)?);
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
        let transaction = immediate(&self.db, &self.gate)?;
        let scope = crate::issuer::owner_scope(&name);
        let owners: Vec<Vec<u8>> = {
            let mut statement =
                transaction.prepare("SELECT key_id FROM owners WHERE scope = ?1").map_err(sql)?;
            statement
                .query_map(params![scope], |r| r.get(0))
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?
        };
        if owners.is_empty() {
            if signed.signers.is_empty() {
                return Err(Error::PackageOwned { package: name.to_string(), scope, owners: Vec::new() });
            }
            for key in &signed.signers {
                transaction
                    .execute("INSERT INTO owners (scope, key_id) VALUES (?1, ?2)", params![scope, &key.0[..]])
                    .map_err(sql)?;
            }
        } else if !signed.signers.iter().any(|k| owners.iter().any(|o| o.as_slice() == &k.0[..])) {
            let owners = owners.iter().map(|o| crate::messages::key_id(o)).collect::<Result<_, _>>()?;
            return Err(Error::PackageOwned { package: name.to_string(), scope, owners });
        }
        transaction.execute("DELETE FROM terms WHERE package = ?1", params![name]).map_err(sql)?;
        for tier in &tiers {
            transaction
                .execute(
                    "INSERT INTO terms (package, tier, version, unit, price_micros, currency, telemetry)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        name,
                        tier.tier,
                        version,
                        tier.unit,
                        to_i64(tier.price_micros.0),
                        tier.currency,
                        if tier.share { "share" } else { "private" }
                    ],
                )
                .map_err(sql)?;
        }
        transaction.execute("DELETE FROM telemetry WHERE package = ?1", params![name]).map_err(sql)?;
        if let Some(t) = &telemetry {
            transaction
                .execute(
                    "INSERT INTO telemetry (package, metrics, window_secs, cohort_min_size, epsilon_micros)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        name,
                        t.metrics.join(","),
                        to_i64(t.window_secs),
                        t.cohort_min_size,
                        to_i64(t.epsilon_micros)
                    ],
                )
                .map_err(sql)?;
        }
        transaction.commit()?;
        Ok(Terms { package: name, version, tiers, telemetry })
    }

    fn tier_terms(db: &Connection, package: &str, tier: &str) -> Result<Option<TierTerms>, Error> {
        db.prepare_cached(
            "SELECT unit, price_micros, currency, telemetry FROM terms WHERE package = ?1 AND tier = ?2",
        )
        .map_err(sql)?
        .query_row(params![package, tier], |r| {
            Ok(TierTerms {
                tier: tier.to_owned(),
                unit: r.get(0)?,
                price_micros: r.get(1)?,
                currency: r.get(2)?,
                share: r.get::<_, String>(3)? == "share",
            })
        })
        .optional()
        .map_err(sql)
    }

    fn telemetry_terms(db: &Connection, package: &str) -> Result<Option<TelemetryTerms>, Error> {
        db.prepare_cached(
            "SELECT metrics, window_secs, cohort_min_size, epsilon_micros FROM telemetry WHERE package = ?1",
        )
        .map_err(sql)?
        .query_row(params![package], |r| {
            let metrics: String = r.get(0)?;
            Ok(TelemetryTerms {
                metrics: metrics.split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect(),
                window_secs: r.get::<_, u64>(1)?,
                cohort_min_size: r.get(2)?,
                epsilon_micros: r.get::<_, u64>(3)?,
            })
        })
        .optional()
        .map_err(sql)
    }

    fn known_license(db: &Connection, cert_id: &[u8; 32]) -> Result<Option<LicenseInfo>, Error> {
        #[allow(clippy::type_complexity)]
        let row: Option<(Vec<u8>, Vec<u8>, PackageName, String, Vec<u8>, UnixSeconds, UnixSeconds)> = db
            .prepare_cached("SELECT license_id, issuer, package, tier, certificate, not_before, not_after FROM licenses WHERE cert_id = ?1")
        .map_err(sql)?
        .query_row(
                params![&cert_id[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
            )
            .optional()
            .map_err(sql)?;
        let Some((license_id, issuer, package, tier, certificate, not_before, not_after)) = row else {
            return Ok(None);
        };
        // The holder key is read back from the stored (verified) certificate.
        let envelope = Envelope::from_cbor(&certificate)?;
        let payload: LicensePayload =
            crate::messages::decode_payload(envelope.payload_unverified(), "license")?;
        Ok(Some(LicenseInfo {
            license_id: license_id
                .as_slice()
                .try_into()
                .map_err(|_| Error::Store("a stored license id is not 16 bytes".into()))?,
            cert_id: *cert_id,
            issuer: crate::messages::key_id(&issuer)?,
            package,
            tier,
            holder: PublicKey::from_bytes(&payload.holder_key)?,
            not_before,
            not_after,
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
        let transaction = immediate(&self.db, &self.gate)?;
        for (index, report) in order {
            let outcome = match apply(&transaction, &report, &crls, now) {
                Ok(outcome) => outcome,
                Err(error @ Error::Store(_)) => return Err(error),
                Err(error) => Outcome::Refused(error),
            };
            results[index] = Some(Ingested {
                index,
                license_id: Some(hex::encode(report.info.license_id)),
                seq: Some(report.seq),
                hour: Some(report.hour),
                outcome,
            });
        }
        transaction.commit()?;
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
        let transaction = immediate(&self.db, &self.gate)?;
        if let Some(certificate) = &certificate {
            insert_license(&transaction, &info, certificate)?;
        }
        let held: Option<Vec<u8>> = transaction
            .query_row(
                "SELECT close FROM closes WHERE license_id = ?1 AND period = ?2",
                params![&id[..], period_text],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        let tier = info.tier.clone();
        if let Some(held) = held {
            if held == file.close.as_slice() {
                let reports = period_reports(&transaction, &id, period)?.len() as u64;
                return Ok(Closed {
                    license_id: id_hex,
                    package: info.package,
                    tier,
                    period: period_text,
                    totals: totals.into_iter().map(|(u, t, _)| (u, t)).collect(),
                    reports,
                    again: true,
                });
            }
            keep_evidence(&transaction, &info, "close", None, None, &held, &file.close, now)?;
            transaction.commit()?;
            return Err(refuse(
                Refusal::CloseConflict,
                format!(
                    "license {id_hex} closed {period_text} before with other totals; both closes are kept as evidence"
                ),
            ));
        }
        let (head_seq, _, _) = head(&transaction, &id)?;
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
            let (hash, hour): (Vec<u8>, UnixSeconds) = transaction
                .query_row(
                    "SELECT hash, hour FROM reports WHERE license_id = ?1 AND seq = ?2",
                    params![&id[..], to_i64(payload.through_seq)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(sql)?;
            if hash != payload.through_hash.as_slice() || hour >= period.end() {
                return Err(refuse(
                    Refusal::CloseMismatch,
                    format!(
                        "report {} of license {id_hex} is not the one the close names",
                        payload.through_seq
                    ),
                ));
            }
        }
        let reports = period_reports(&transaction, &id, period)?;
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
        {
            let mut statement = transaction
                .prepare("SELECT unit, commitment FROM hour_sums WHERE license_id = ?1 AND hour >= ?2 AND hour < ?3")
                .map_err(sql)?;
            let rows = statement
                .query_map(params![&id[..], to_i64(period.start()), to_i64(period.end())], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(sql)?;
            for row in rows {
                let (unit, bytes) = row.map_err(sql)?;
                let p =
                    point(&bytes).ok_or_else(|| Error::Store("a stored hour sum is not a point".into()))?;
                *sums.entry(unit).or_default() += p;
            }
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
        transaction
            .execute(
                "INSERT INTO closes (license_id, period, close, through_seq, closed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&id[..], period_text, file.close.as_slice(), to_i64(payload.through_seq), to_i64(now)],
            )
            .map_err(sql)?;
        for (unit, total, _) in &totals {
            transaction
                .execute(
                    "INSERT INTO close_totals (license_id, period, unit, total) VALUES (?1, ?2, ?3, ?4)",
                    params![&id[..], period_text, unit, to_i64(*total)],
                )
                .map_err(sql)?;
        }
        transaction.commit()?;
        Ok(Closed {
            license_id: id_hex,
            package: info.package,
            tier,
            period: period_text,
            totals: totals.into_iter().map(|(u, t, _)| (u, t)).collect(),
            reports: reports.len() as u64,
            again: false,
        })
    }

    /// The usage charges of `period`: one per closed license of a metered tier
    /// (`unit = "hour"`), `floor(minutes · price / 60)` (metering.md §7.2).
    pub fn billing(&self, period: Period) -> Result<Vec<UsageCharge>, Error> {
        let mut statement = self
            .db
            .prepare(
                "SELECT c.license_id, l.package, l.tier, l.flagged, coalesce(t.total, 0)
                 FROM closes c JOIN licenses l ON l.license_id = c.license_id
                 LEFT JOIN close_totals t ON t.license_id = c.license_id AND t.period = c.period AND t.unit = ?2
                 WHERE c.period = ?1 ORDER BY c.license_id",
            )
            .map_err(sql)?;
        let rows: Vec<(Vec<u8>, PackageName, String, i64, u64)> = statement
            .query_map(params![period.to_string(), UNIT_MINUTES], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?;
        let mut charges = Vec::new();
        for (license_id, package, tier, flagged, minutes) in rows {
            let terms = Self::tier_terms(&self.db, &package, &tier)?.ok_or_else(|| {
                refuse(
                    Refusal::UnknownTerms,
                    format!("no terms for {package} tier {tier}; register the package"),
                )
            })?;
            if terms.unit != "hour" {
                continue;
            }
            let gross = u128::from(minutes) * u128::from(terms.price_micros.0) / 60;
            let license = hex::encode(&license_id);
            charges.push(UsageCharge {
                id: format!("operator:{}:usage:{license}:{period}", self.id),
                license_id: license,
                package,
                tier,
                period: period.to_string(),
                minutes,
                price_micros: terms.price_micros,
                gross_micros: u64::try_from(gross)
                    .map(Micros)
                    .map_err(|_| refuse(Refusal::Overflow, "a usage charge overflows 2^64 micro-units"))?,
                currency: terms.currency,
                time: period.end() - 1,
                flagged: flagged != 0,
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
        let transaction = immediate(&self.db, &self.gate)?;
        let mut per_holder: BTreeMap<(String, Vec<u8>), u128> = BTreeMap::new();
        {
            let mut statement = transaction
                .prepare(
                    "SELECT s.unit, s.license_id, s.total FROM hour_sums s JOIN licenses l ON l.license_id = s.license_id
                     WHERE l.package = ?1 AND s.hour >= ?2 AND s.hour < ?3 AND s.total IS NOT NULL",
                )
                .map_err(sql)?;
            let rows = statement
                .query_map(params![package, to_i64(start), to_i64(end)], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, u64>(2)?))
                })
                .map_err(sql)?;
            for row in rows {
                let (unit, license, total) = row.map_err(sql)?;
                *per_holder.entry((unit, license)).or_default() += u128::from(total);
            }
        }
        let holders: BTreeSet<&Vec<u8>> = per_holder.keys().map(|(_, l)| l).collect();
        if holders.len() < telemetry.cohort_min_size as usize {
            return Ok(Aggregate::Suppressed { cohort_min_size: telemetry.cohort_min_size });
        }
        let spent: u64 = transaction
            .query_row(
                "SELECT coalesce(sum(epsilon_micros), 0) FROM releases WHERE package = ?1 AND window_start = ?2",
                params![package, to_i64(start)],
                |r| r.get(0),
            )
            .map_err(sql)?;
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
            let noise = super::dp::discrete_laplace(rng, scale_t, scale_s);
            let noised = (i128::try_from(sum).unwrap_or(i128::MAX).saturating_add(noise)).max(0);
            values.push((unit.clone(), u64::try_from(noised).unwrap_or(u64::MAX)));
        }
        transaction
            .execute(
                "INSERT INTO releases (package, window_start, window_end, epsilon_micros, clip, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![package, to_i64(start), to_i64(end), to_i64(epsilon), to_i64(clip), to_i64(now)],
            )
            .map_err(sql)?;
        let release_id = transaction.last_insert_rowid();
        for (unit, value) in &values {
            transaction
                .execute(
                    "INSERT INTO released_values (release_id, unit, value) VALUES (?1, ?2, ?3)",
                    params![release_id, unit, to_i64(*value)],
                )
                .map_err(sql)?;
        }
        transaction.commit()?;
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
    }

    /// Kept evidence, optionally of one holder key.
    pub fn evidence(&self, holder: Option<KeyId>) -> Result<Vec<Evidence>, Error> {
        let mut statement = self
            .db
            .prepare(
                "SELECT id, kind, license_id, holder, hour, seq, at, first, second FROM evidence ORDER BY id",
            )
            .map_err(sql)?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Option<UnixSeconds>>(4)?,
                    r.get::<_, Option<u64>>(5)?,
                    r.get::<_, UnixSeconds>(6)?,
                    r.get::<_, Vec<u8>>(7)?,
                    r.get::<_, Vec<u8>>(8)?,
                ))
            })
            .map_err(sql)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, license, key, hour, seq, at, first, second) = row.map_err(sql)?;
            let key = crate::messages::key_id(&key)?;
            if holder.is_some_and(|wanted| wanted != key) {
                continue;
            }
            out.push(Evidence {
                id,
                kind,
                license_id: hex::encode(license),
                holder: key,
                hour,
                seq,
                at,
                first,
                second,
            });
        }
        Ok(out)
    }

    /// Checks an opening against the stored commitment of its hour or minute.
    pub fn check_opening(&self, bytes: &[u8]) -> Result<OpeningVerdict, Error> {
        let opening = OpeningFile::from_cbor(bytes)?;
        let id_hex = hex::encode(&opening.license_id);
        let stored: Option<Vec<u8>> = self
            .db
            .query_row(
                "SELECT report FROM reports WHERE license_id = ?1 AND hour = ?2",
                params![opening.license_id.as_slice(), to_i64(opening.hour)],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        let stored = stored.ok_or_else(|| {
            refuse(
                Refusal::NotFound,
                format!("no report of license {id_hex} for hour {} is stored", format_hour(opening.hour)),
            )
        })?;
        // Stored reports were verified at ingest.
        let envelope = Envelope::from_cbor(&stored)?;
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
                None => {
                    let bytes: Vec<u8> = self
                        .db
                        .query_row(
                            "SELECT commitment FROM hour_sums WHERE license_id = ?1 AND hour = ?2 AND unit = ?3",
                            params![opening.license_id.as_slice(), to_i64(opening.hour), unit.unit],
                            |r| r.get(0),
                        )
                        .map_err(sql)?;
                    point(&bytes)
                }
            }
            .ok_or_else(|| Error::Store("a stored commitment is not a point".into()))?;
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
fn head(db: &Connection, id: &[u8; 16]) -> Result<(u64, [u8; 32], Option<UnixSeconds>), Error> {
    let row: Option<(u64, Vec<u8>, i64)> = db
        .prepare_cached("SELECT head_seq, head_hash, head_hour FROM licenses WHERE license_id = ?1")
        .map_err(sql)?
        .query_row(params![&id[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(sql)?;
    let Some((seq, hash, hour)) = row else { return Ok((0, [0u8; 32], None)) };
    let hash: [u8; 32] =
        hash.as_slice().try_into().map_err(|_| Error::Store("a stored head hash is not 32 bytes".into()))?;
    Ok((seq, hash, u64::try_from(hour).ok().map(UnixSeconds)))
}

fn period_reports(db: &Connection, id: &[u8; 16], period: Period) -> Result<Vec<(u64, UnixSeconds)>, Error> {
    let mut statement = db
        .prepare(
            "SELECT seq, hour FROM reports WHERE license_id = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY seq",
        )
        .map_err(sql)?;
    let rows = statement
        .query_map(params![&id[..], to_i64(period.start()), to_i64(period.end())], |r| {
            Ok((r.get::<_, u64>(0)?, r.get::<_, UnixSeconds>(1)?))
        })
        .map_err(sql)?;
    rows.collect::<Result<_, _>>().map_err(sql)
}

fn insert_license(db: &Connection, info: &LicenseInfo, certificate: &[u8]) -> Result<(), Error> {
    db.prepare_cached("INSERT OR IGNORE INTO licenses (license_id, cert_id, issuer, package, tier, holder, not_before, not_after,
                                          certificate, head_seq, head_hash, head_hour, flagged)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, -1, 0)")
        .map_err(sql)?
        .execute(
        params![
            &info.license_id[..],
            &info.cert_id[..],
            &info.issuer.0[..],
            info.package,
            info.tier,
            &info.holder.id().0[..],
            to_i64(info.not_before),
            to_i64(info.not_after),
            certificate,
            &[0u8; 32][..]
        ],
    )
    .map_err(sql)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn keep_evidence(
    db: &Connection,
    info: &LicenseInfo,
    kind: &str,
    hour: Option<UnixSeconds>,
    seq: Option<u64>,
    first: &[u8],
    second: &[u8],
    now: UnixSeconds,
) -> Result<(), Error> {
    db.prepare_cached(
        "INSERT OR IGNORE INTO evidence (license_id, holder, kind, hour, seq, first, second, second_hash, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .map_err(sql)?
    .execute(params![
        &info.license_id[..],
        &info.holder.id().0[..],
        kind,
        hour.map(to_i64),
        seq.map(to_i64),
        first,
        second,
        &report_hash(second)[..],
        to_i64(now)
    ])
    .map_err(sql)?;
    db.prepare_cached("UPDATE licenses SET flagged = 1 WHERE license_id = ?1")
        .map_err(sql)?
        .execute(params![&info.license_id[..]])
        .map_err(sql)?;
    Ok(())
}

/// The store-dependent rules of one report, in the order of metering.md §6.2.
fn apply(
    db: &Transaction<'_>,
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
    let held: Option<(u64, Vec<u8>, Vec<u8>)> = db
        .prepare_cached("SELECT seq, hash, report FROM reports WHERE license_id = ?1 AND (hour = ?2 OR seq = ?3) ORDER BY seq LIMIT 1")
        .map_err(sql)?
        .query_row(
            params![&id[..], to_i64(report.hour), to_i64(report.seq)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql)?;
    if let Some((_, hash, first)) = held {
        if hash == report.hash {
            return Ok(Outcome::Duplicate);
        }
        keep_evidence(
            db,
            info,
            "report",
            Some(report.hour),
            Some(report.seq),
            &first,
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
    let closed: i64 = db
        .prepare_cached("SELECT count(*) FROM closes WHERE license_id = ?1 AND period = ?2")
        .map_err(sql)?
        .query_row(params![&id[..], Period::of(report.hour).to_string()], |r| r.get(0))
        .map_err(sql)?;
    if closed > 0 {
        return Err(refuse(
            Refusal::PeriodClosed,
            format!("period {} of license {} is closed", Period::of(report.hour), hex::encode(id)),
        ));
    }
    db.prepare_cached("INSERT INTO reports (license_id, seq, hour, hash, report, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .map_err(sql)?
        .execute(
        params![&id[..], to_i64(report.seq), to_i64(report.hour), &report.hash[..], &report.envelope, to_i64(now)],
    )
    .map_err(sql)?;
    for sum in &report.sums {
        db.prepare_cached(
            "INSERT INTO hour_sums (license_id, hour, unit, commitment, total) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql)?
        .execute(params![&id[..], to_i64(report.hour), sum.unit, &sum.sum[..], sum.total.map(to_i64)])
        .map_err(sql)?;
    }
    db.prepare_cached(
        "UPDATE licenses SET head_seq = ?2, head_hash = ?3, head_hour = ?4 WHERE license_id = ?1",
    )
    .map_err(sql)?
    .execute(params![&id[..], to_i64(report.seq), &report.hash[..], to_i64(report.hour)])
    .map_err(sql)?;
    Ok(Outcome::Stored)
}
