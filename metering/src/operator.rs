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

use escx::UnixSeconds;
use escx::manifest::PackageName;
use escx_licensing::LicenseCheck;
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

use crate::Error;
use crate::store::{
    BillingRow, MemoryOperatorStore, NewEvidence, NewReport, OperatorReader, OperatorStore, OperatorWriter,
    SqlOperatorStore, StoredLicense, TermsVersion,
};
use crate::{
    CONTEXT_CERTIFICATE_ID, CONTEXT_CLOSE, CONTEXT_REPORT, CloseFile, ClosePayload, HOUR_SECS, MINUTES,
    OpeningFile, Period, REPORT_LATE_SECS, Refusal, ReportFile, ReportPayload, SeriesSum, UNIT_MINUTES,
    commit, format_hour, is_metric, point, refuse, report_hash, scalar,
};
use escx_licensing::messages::{BundleChain, ChainRelation, CrlPayload, IssuerBundle, LicensePayload};
use escx_licensing::verify;
use escx_store::{Location, Mode};

/// The store's file in the operator directory.
pub const DATABASE_FILE: &str = "operator.sqlite";
pub use crate::store::SCHEMA_VERSION;
pub use escx_store::DATABASE_URL_FILE;
/// Epsilon is accounted in millionths.
pub const EPSILON_SCALE: u64 = 1_000_000;

fn package_name(text: &str) -> Result<PackageName, Error> {
    PackageName::parse(text).map_err(|_| Error::stored("a stored package name is malformed"))
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

/// A terms version as stored (metering.md §6.5): CBOR `{v: 1, tiers: [[tier, unit,
/// price_micros, currency, share]], telemetry: [metrics, window_secs, cohort_min_size,
/// epsilon_micros] | null}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionTerms {
    v: u8,
    tiers: Vec<(String, String, u64, String, bool)>,
    telemetry: Option<(Vec<String>, u64, u32, u64)>,
}

fn encode_terms(tiers: &[TierTerms], telemetry: Option<&TelemetryTerms>) -> Vec<u8> {
    escx::cbor::encode(&VersionTerms {
        v: 1,
        tiers: tiers
            .iter()
            .map(|t| (t.tier.clone(), t.unit.clone(), t.price_micros.0, t.currency.clone(), t.share))
            .collect(),
        telemetry: telemetry.map(|t| (t.metrics.clone(), t.window_secs, t.cohort_min_size, t.epsilon_micros)),
    })
}

fn decode_terms(bytes: &[u8]) -> Result<(Vec<TierTerms>, Option<TelemetryTerms>), Error> {
    let terms: VersionTerms = escx::cbor::decode_exact(bytes, "terms version")
        .map_err(|reason| Error::stored(format!("a stored terms version: {reason}")))?;
    if terms.v != 1 {
        return Err(Error::stored(format!("a stored terms version has v = {}", terms.v)));
    }
    let tiers = terms
        .tiers
        .into_iter()
        .map(|(tier, unit, price, currency, share)| TierTerms {
            tier,
            unit,
            price_micros: Micros(price),
            currency,
            share,
        })
        .collect();
    let telemetry = terms.telemetry.map(|(metrics, window_secs, cohort_min_size, epsilon_micros)| {
        TelemetryTerms { metrics, window_secs, cohort_min_size, epsilon_micros }
    });
    Ok((tiers, telemetry))
}

/// The version a license issued at `not_before` was bought under: the newest registered
/// at or before then, or the first registered when none was (metering.md §6.5).
fn version_at(history: &[TermsVersion], not_before: u64) -> Option<&TermsVersion> {
    history.iter().rev().find(|v| v.registered_at <= not_before).or_else(|| history.first())
}

/// The versions in force during `[start, end)`: the one in force at `start` and every one
/// registered before `end`.
fn versions_during(history: &[TermsVersion], start: u64, end: u64) -> Vec<&TermsVersion> {
    let first = version_at(history, start);
    history
        .iter()
        .filter(|v| {
            first.is_some_and(|f| std::ptr::eq(*v, f)) || (v.registered_at > start && v.registered_at < end)
        })
        .collect()
}

/// The tier terms a license is charged and checked under: its bound version's, or the
/// current ones for a license stored before terms were versioned.
fn license_tier_terms(db: &impl OperatorReader, info: &LicenseInfo) -> Result<Option<TierTerms>, Error> {
    if let Some(version) = db.license_terms_version(&info.license_id)? {
        let history = db.terms_history(info.package.as_str())?;
        let held = history.iter().find(|v| v.version == version).ok_or_else(|| {
            Error::stored(format!("a license is bound to terms {version}, which are not stored"))
        })?;
        let (tiers, _) = decode_terms(&held.terms)?;
        return Ok(tiers.into_iter().find(|t| t.tier == info.tier));
    }
    db.tier_terms(&info.package, &info.tier)
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

/// Reports an ingest verifies together: the range proofs of a chunk share batches, and a
/// chunk's store rules run while the next chunk is verified.
const INGEST_CHUNK: usize = 128;

/// A report file read but not verified. The unverified license id and seq only order the
/// batch; nothing is refused here but the file's own shape, so the checks keep their
/// order (metering.md §6.1).
struct Parsed {
    file: ReportFile,
    cert_id: [u8; 32],
    envelope: Result<Envelope, escx::Error>,
    /// The envelope's payload decoded unverified (`None` when it does not decode; the
    /// error is raised again in its place in the check order).
    payload: Option<ReportPayload>,
}

impl Parsed {
    fn read(bytes: &[u8]) -> Result<Self, Error> {
        let file = ReportFile::from_cbor(bytes)?;
        let cert_id = certificate_id(&file.certificate);
        let envelope = Envelope::from_cbor(&file.report);
        let payload = envelope
            .as_ref()
            .ok()
            .and_then(|e| crate::decode::<ReportPayload>(e.payload_unverified(), "meter report").ok());
        Ok(Self { file, cert_id, envelope, payload })
    }

    /// The order of the chain rules: license, then seq (as claimed; checked later).
    fn order(&self) -> (&[u8], u64) {
        self.payload.as_ref().map_or((&[][..], 0), |p| (p.license_id.as_slice(), p.seq))
    }
}

struct Prepared {
    /// The report's hour and sums proofs, verified in batches with its chunk's.
    ranges: Vec<escx_licensing::rangeproof::Item>,
    info: LicenseInfo,
    certificate: Option<Vec<u8>>,
    hour: UnixSeconds,
    seq: u64,
    previous: [u8; 32],
    envelope: Vec<u8>,
    hash: [u8; 32],
    sums: Vec<SeriesSum>,
}

/// The shortest retention `escx operator compact` accepts: 35 days after a period ends,
/// the longest a report may arrive late (`REPORT_LATE_SECS`), so a customer can still open
/// an hour of a period as long as one of its reports could have been sent.
pub const RETENTION_MIN_SECS: u64 = crate::REPORT_LATE_SECS;

/// What [`Operator::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// (license, period) pairs with reports compacted now.
    pub periods: u64,
    /// Reports compacted now.
    pub reports: u64,
    /// The bytes those reports held.
    pub bytes: u64,
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

/// A period's billing: the charges, and the licenses that could not be charged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Billing {
    /// One per closed license of a metered tier that could be charged.
    pub charges: Vec<UsageCharge>,
    /// The closed licenses that could not be, each with its code.
    pub refused: Vec<RefusedCharge>,
}

/// A closed license billing could not charge (metering.md §7.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedCharge {
    /// License id (hex).
    pub license_id: String,
    /// Package, as stored.
    pub package: String,
    /// Tier.
    pub tier: String,
    /// The stable code (`unknown-terms`, `usage-impossible`, `counter-overflow`).
    pub code: &'static str,
    /// What was wrong.
    pub reason: String,
}

/// The result of an aggregation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aggregate {
    /// No unit's noised cohort reached the package's `cohort_min_size`: nothing is
    /// released; the decision spent `decision_micros` (privacy.md §3).
    Suppressed {
        /// The threshold.
        cohort_min_size: u32,
        /// Epsilon the decision spent, millionths.
        decision_micros: u64,
        /// Budget left for the window, millionths.
        remaining_micros: u64,
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
    /// Per released unit: clipped sum over holders plus discrete Laplace noise, floored
    /// at 0.
    pub values: Vec<(String, u64)>,
    /// The declared units whose noised cohort was below the threshold: not released.
    pub suppressed: Vec<String>,
    /// Each holder's window total per unit is clipped to this (the sensitivity).
    pub clip: u64,
    /// Epsilon the values spent, millionths (split evenly over the released units).
    pub epsilon_micros: u64,
    /// Epsilon the cohort decision spent, millionths.
    pub decision_micros: u64,
    /// Budget left for the window, millionths.
    pub remaining_micros: u64,
    /// The noise scale per unit: `clip · units / epsilon`, as `numerator/denominator`.
    pub scale: (u64, u64),
}

/// The share of a window's budget each aggregation spends on deciding which units reach
/// the cohort (privacy.md §3): a quarter.
pub const SUPPRESSION_SHARE: u64 = 4;

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
    /// Further conflicting messages for the same license, kind, hour and seq: counted,
    /// not kept.
    pub repeats: u64,
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

/// The operator: its directory and its store ([`SqlOperatorStore`] for an operator
/// directory, SQLite or PostgreSQL; [`MemoryOperatorStore`] when embedded or in tests).
pub struct Operator<S: OperatorStore = SqlOperatorStore> {
    dir: PathBuf,
    store: S,
    id: String,
    issuers: HashMap<KeyId, IssuerBundle>,
    /// The hash of each trusted issuer's chain as last read, so a refresh parses only the
    /// chains that changed.
    chains: HashMap<KeyId, blake3::Hash>,
}

impl Operator<SqlOperatorStore> {
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
        let store = SqlOperatorStore::open(&Location::Sqlite(dir.join(DATABASE_FILE)), Mode::Create)?;
        Self::with_issuers(dir, store, issuers)
    }

    /// Creates an operator directory whose store is the PostgreSQL database at `url`: the
    /// tables (schema `escx_operator`) in the database and `database.url` (0600) in `dir`,
    /// so every later [`Operator::open`] of the directory uses the database. Further
    /// service nodes each hold a copy of the directory.
    pub fn init_postgres(dir: &Path, url: &str, issuers: &[BundleChain]) -> Result<Self, Error> {
        let location = Location::parse(url);
        escx_store::create_empty_dir(dir)?;
        let store = SqlOperatorStore::open(&location, Mode::Create)?;
        escx_store::write_database_url(dir, &location)?;
        Self::with_issuers(dir, store, issuers)
    }

    /// Opens an existing store: the PostgreSQL database `dir/database.url` names, else
    /// `dir/operator.sqlite`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let store = SqlOperatorStore::open(&Location::of_dir(dir, DATABASE_FILE)?, Mode::Open)?;
        Self::with_store(dir, store)
    }

    /// Whether the store is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.store.is_postgres()
    }

    /// The database connection, for this crate's tests that read every stored cell
    /// (feature `test-support`).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn database(&self) -> &escx_store::Db {
        self.store.db()
    }
}

impl Operator<MemoryOperatorStore> {
    /// An operator whose store lives in memory only, trusting the given issuers: for
    /// embedding and tests. Package files being registered are copied to the system's
    /// temporary directory while they are verified.
    pub fn in_memory(issuers: &[BundleChain]) -> Result<Self, Error> {
        Self::with_issuers(&std::env::temp_dir(), MemoryOperatorStore::new()?, issuers)
    }
}

impl<S: OperatorStore> Operator<S> {
    fn with_issuers(dir: &Path, store: S, issuers: &[BundleChain]) -> Result<Self, Error> {
        let mut operator = Self::with_store(dir, store)?;
        for chain in issuers {
            operator.add_issuer(chain)?;
        }
        Ok(operator)
    }

    /// An operator over an initialised `store`, working in `dir`.
    pub fn with_store(dir: &Path, store: S) -> Result<Self, Error> {
        let id = store.id()?;
        let mut operator =
            Self { dir: dir.to_path_buf(), store, id, issuers: HashMap::new(), chains: HashMap::new() };
        operator.refresh_issuers()?;
        Ok(operator)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store's random id (part of every usage event id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads the trusted issuers again: another node or process sharing the store may
    /// have added or extended one.
    fn refresh_issuers(&mut self) -> Result<(), Error> {
        for (id, bytes) in self.store.issuers()? {
            let hash = blake3::hash(&bytes);
            let id = escx_licensing::messages::key_id(&id)?;
            if self.chains.get(&id) == Some(&hash) {
                continue;
            }
            let chain = BundleChain::parse(&bytes)?;
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
        retrying(|| {
            let tx = self.store.begin()?;
            if let Some(held) = tx.issuer_chain(&id.0)? {
                match chain.relation(&BundleChain::parse(&held)?) {
                    ChainRelation::Same | ChainRelation::Older => return Ok(()),
                    ChainRelation::Extends => {}
                    ChainRelation::Fork(version) => {
                        return Err(escx_licensing::Error::BundleFork { issuer: id, version }.into());
                    }
                }
            }
            tx.put_issuer(&id.0, &bytes)?;
            tx.commit()
        })?;
        self.refresh_issuers()
    }

    /// Accepts a newer CRL of a trusted issuer (the very CRL held again is a no-op).
    pub fn accept_crl(&mut self, bytes: &[u8]) -> Result<CrlPayload, Error> {
        self.refresh_issuers()?;
        let envelope = Envelope::from_cbor(bytes).map_err(|e| escx_licensing::Error::LicenseRejected {
            check: LicenseCheck::CrlSignature,
            reason: e.to_string(),
        })?;
        let issuer =
            self.issuers.get(&envelope.key_id()).ok_or_else(|| escx_licensing::Error::LicenseRejected {
                check: LicenseCheck::CrlSignature,
                reason: format!(
                    "signed by {}, which is not an issuer this operator trusts",
                    envelope.key_id()
                ),
            })?;
        let crl = verify::open_crl(bytes, issuer)?;
        let issuer_id = issuer.issuer_id();
        retrying(|| {
            let tx = self.store.begin()?;
            if let Some((number, held)) = tx.crl(&issuer_id.0)? {
                if held == bytes {
                    return Ok(());
                }
                if crl.number <= number {
                    return Err(escx_licensing::Error::LicenseRejected {
                        check: LicenseCheck::Crl,
                        reason: format!(
                            "CRL number {} is not newer than number {number} already held",
                            crl.number
                        ),
                    }
                    .into());
                }
            }
            tx.put_crl(&issuer_id.0, crl.number, bytes)?;
            tx.commit()
        })?;
        Ok(crl)
    }

    fn crls(&self) -> Result<HashMap<KeyId, CrlPayload>, Error> {
        let mut out = HashMap::new();
        for (id, bytes) in self.store.crls()? {
            let id = escx_licensing::messages::key_id(&id)?;
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
        let signed = escx_licensing::issuer::read_signed_manifest(package, publishers, &self.dir, now)?;
        let manifest = signed.manifest;
        let name = manifest.package.name.clone();
        let pricing = manifest.pricing.as_ref().filter(|p| !p.tiers.is_empty()).ok_or_else(|| {
            escx_licensing::Error::Pricing {
                package: name.to_string(),
                reason: "its manifest has no priced tiers in [pricing]".into(),
            }
        })?;
        let currency = pricing.currency.clone().unwrap_or_else(|| "USD".into());
        let tiers: Vec<TierTerms> = pricing
            .tiers
            .iter()
            .map(|t| TierTerms {
                tier: t.name.clone(),
                unit: escx_licensing::issuer::unit_name(t.unit).into(),
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
                    return Err(escx_licensing::Error::Pricing {
                        package: name.to_string(),
                        reason: format!("telemetry.epsilon {} is below 0.000001", t.epsilon),
                    }
                    .into());
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
        let scope = escx_licensing::issuer::owner_scope(&name);
        let encoded = encode_terms(&tiers, telemetry.as_ref());
        let hash = blake3::derive_key(crate::CONTEXT_TERMS_HASH, &encoded).to_vec();
        retrying(|| {
            let tx = self.store.begin()?;
            // Terms are versioned (metering.md §6.5): a newer version adds terms for
            // licenses bought from now on; an older one, or other terms under a version
            // already registered, are refused.
            let history = tx.terms_history(name.as_str())?;
            let newest = history.iter().filter_map(|v| semver::Version::parse(&v.version).ok()).max();
            if let Some(held) = history.iter().find(|v| v.version == version) {
                if held.hash == hash {
                    return Ok(());
                }
                return Err(refuse(
                    Refusal::TermsVersion,
                    format!(
                        "{name} {version} is registered with other terms; publish a new version to change them"
                    ),
                ));
            }
            if let Some(newest) = newest.filter(|n| *n > manifest.package.version) {
                return Err(refuse(
                    Refusal::TermsVersion,
                    format!(
                        "{name} {newest} is registered; terms of the older version {version} would change what \
                         licenses bought since are billed and released under"
                    ),
                ));
            }
            let owners = tx.owners(&scope)?;
            if owners.is_empty() {
                if signed.signers.is_empty() {
                    return Err(escx_licensing::Error::PackageOwned {
                        package: name.to_string(),
                        scope: scope.clone(),
                        owners: Vec::new(),
                    }
                    .into());
                }
                for key in &signed.signers {
                    tx.insert_owner(&scope, &key.0)?;
                }
            } else if !signed.signers.iter().any(|k| owners.iter().any(|o| o.as_slice() == &k.0[..])) {
                let owners =
                    owners.iter().map(|o| escx_licensing::messages::key_id(o)).collect::<Result<_, _>>()?;
                return Err(escx_licensing::Error::PackageOwned {
                    package: name.to_string(),
                    scope: scope.clone(),
                    owners,
                }
                .into());
            }
            tx.replace_terms(name.as_str(), &version, &tiers, telemetry.as_ref())?;
            tx.insert_terms_version(
                name.as_str(),
                &TermsVersion {
                    version: version.clone(),
                    registered_at: now.0,
                    hash: hash.clone(),
                    terms: encoded.clone(),
                },
            )?;
            tx.commit()
        })?;
        Ok(Terms { package: name, version, tiers, telemetry })
    }

    fn known_license(store: &impl OperatorReader, cert_id: &[u8; 32]) -> Result<Option<LicenseInfo>, Error> {
        let Some(stored) = store.license_by_cert(cert_id)? else {
            return Ok(None);
        };
        // The holder key is read back from the stored (verified) certificate.
        let envelope = Envelope::from_cbor(&stored.certificate)?;
        let payload: LicensePayload =
            escx_licensing::messages::decode_payload(envelope.payload_unverified(), "license")?;
        Ok(Some(LicenseInfo {
            license_id: stored
                .license_id
                .as_slice()
                .try_into()
                .map_err(|_| Error::stored("a stored license id is not 16 bytes"))?,
            cert_id: *cert_id,
            issuer: escx_licensing::messages::key_id(&stored.issuer)?,
            package: package_name(&stored.package)?,
            tier: stored.tier,
            holder: PublicKey::from_bytes(&payload.holder_key)?,
            not_before: UnixSeconds(stored.not_before),
            not_after: UnixSeconds(stored.not_after),
        }))
    }

    /// Verifies a certificate under a trusted issuer (the `issuer` and `signature` checks).
    fn verify_certificate(
        issuers: &HashMap<KeyId, IssuerBundle>,
        certificate: &[u8],
        cert_id: [u8; 32],
    ) -> Result<LicenseInfo, Error> {
        let envelope = Envelope::from_cbor(certificate).map_err(|e| {
            escx_licensing::Error::LicenseRejected { check: LicenseCheck::Signature, reason: e.to_string() }
        })?;
        let issuer =
            issuers.get(&envelope.key_id()).ok_or_else(|| escx_licensing::Error::LicenseRejected {
                check: LicenseCheck::Issuer,
                reason: format!(
                    "signed by {}, which is not an issuer this operator trusts",
                    envelope.key_id()
                ),
            })?;
        let license = verify::open_certificate(certificate, issuer)?;
        LicenseInfo::from_payload(&license, cert_id, issuer.issuer_id())
    }

    /// Everything about one report that needs no store state (metering.md §6.1 steps
    /// 1–5): shape, certificate, holder signature, payload rules, the sums of the
    /// commitments and the openings of a shared hour. Runs in parallel.
    fn prepare(
        issuers: &HashMap<KeyId, IssuerBundle>,
        parsed: Parsed,
        known: &HashMap<[u8; 32], LicenseInfo>,
    ) -> Result<Prepared, Error> {
        let Parsed { file, cert_id, envelope, payload } = parsed;
        let (info, certificate) = match known.get(&cert_id) {
            Some(info) => (info.clone(), None),
            None => (
                Self::verify_certificate(issuers, &file.certificate, cert_id)?,
                Some(file.certificate.to_vec()),
            ),
        };
        let envelope = envelope.map_err(|e| refuse(Refusal::Signature, e.to_string()))?;
        envelope.open(CONTEXT_REPORT, &info.holder).map_err(|e| {
            refuse(Refusal::Signature, format!("not signed by the license's holder key: {e}"))
        })?;
        // The payload the signature covers (decoded before, unverified, to order the batch).
        let payload: ReportPayload = match payload {
            Some(payload) => payload,
            None => crate::decode(envelope.payload_unverified(), "meter report")?,
        };
        let (sums, ranges) = crate::check_report_ranges(&payload, 0)?;
        if payload.license_id.as_slice() != info.license_id || payload.package != info.package {
            return Err(refuse(
                Refusal::Invalid,
                "the report names another license or package than its certificate",
            ));
        }
        let mut previous = [0u8; 32];
        previous.copy_from_slice(&payload.previous);
        Ok(Prepared {
            ranges,
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

    /// [`Self::prepare`] for a chunk of the batch, then the hour and sums proofs of the
    /// chunk's reports, batch-verified (metering.md §6.1 step 6).
    fn verify_chunk(
        issuers: &HashMap<KeyId, IssuerBundle>,
        known: &HashMap<[u8; 32], LicenseInfo>,
        chunk: Vec<(usize, Parsed)>,
    ) -> Vec<(usize, Result<Prepared, Error>)> {
        let mut prepared: Vec<(usize, Result<Prepared, Error>)> =
            chunk.into_par_iter().map(|(index, p)| (index, Self::prepare(issuers, p, known))).collect();
        let mut items = Vec::new();
        for (position, (_, p)) in prepared.iter_mut().enumerate() {
            if let Ok(p) = p {
                for mut item in std::mem::take(&mut p.ranges) {
                    item.id = u32::try_from(position).unwrap_or(u32::MAX);
                    items.push(item);
                }
            }
        }
        for id in escx_licensing::rangeproof::verify_each(items) {
            if let Some((_, slot)) = prepared.get_mut(id as usize) {
                *slot = Err(refuse(
                    Refusal::RangeInvalid,
                    "the report's range proofs do not verify: an hour holds more than 60 minutes of use, or another \
                     unit's hour sum is outside [0, 2^63 - 1]",
                ));
            }
        }
        prepared
    }

    /// Verifies and stores a batch of report files (metering.md §6). The batch is taken in
    /// chunks in the order the chain rules need (license, then seq): a chunk's store rules
    /// and inserts run while the next chunk is verified in parallel, and the batch is
    /// committed in one transaction. Idempotent: a report stored before is a
    /// [`Outcome::Duplicate`] and changes nothing.
    pub fn ingest(&mut self, files: &[Vec<u8>], now: UnixSeconds) -> Result<Vec<Ingested>, Error> {
        self.refresh_issuers()?;
        let refused = |index, error| Ingested {
            index,
            license_id: None,
            seq: None,
            hour: None,
            outcome: Outcome::Refused(error),
        };
        let mut results: Vec<Option<Ingested>> = (0..files.len()).map(|_| None).collect();
        // Each file is decoded once; certificates already verified are looked up once per
        // batch, not re-verified.
        let parsed: Vec<Result<Parsed, Error>> = files.par_iter().map(|bytes| Parsed::read(bytes)).collect();
        let mut queue: Vec<(usize, Parsed)> = Vec::with_capacity(files.len());
        for (index, parsed) in parsed.into_iter().enumerate() {
            match parsed {
                Ok(parsed) => queue.push((index, parsed)),
                Err(error) => results[index] = Some(refused(index, error)),
            }
        }
        queue.sort_by(|(i, a), (j, b)| a.order().cmp(&b.order()).then(i.cmp(j)));
        let cert_ids: BTreeSet<[u8; 32]> = queue.iter().map(|(_, p)| p.cert_id).collect();
        let mut known = HashMap::new();
        for id in cert_ids {
            if let Some(info) = Self::known_license(&self.store, &id)? {
                known.insert(id, info);
            }
        }
        let crls = self.crls()?;
        let mut chunks = Vec::new();
        while !queue.is_empty() {
            let rest = queue.split_off(INGEST_CHUNK.min(queue.len()));
            chunks.push(std::mem::replace(&mut queue, rest));
        }
        let mut chunks = chunks.into_iter();
        let (issuers, known) = (&self.issuers, &known);
        let verify = |chunk| Self::verify_chunk(issuers, known, chunk);

        // Verified reports, in the batch's order, and the refused ones to `results`.
        let mut ready: Vec<(usize, Prepared)> = Vec::new();
        let mut take = |verified: Vec<(usize, Result<Prepared, Error>)>,
                        ready: &mut Vec<(usize, Prepared)>| {
            for (index, result) in verified {
                match result {
                    Ok(p) => ready.push((index, p)),
                    Err(error) => results[index] = Some(refused(index, error)),
                }
            }
        };
        let mut next = chunks.next().map(verify);
        // First attempt: each chunk's rules run while the next chunk is verified.
        let attempt = self.store.begin().and_then(|tx| {
            let mut outcomes = Vec::new();
            let mut failure = None;
            while let Some(verified) = next.take() {
                let start = ready.len();
                take(verified, &mut ready);
                let following = chunks.next();
                let (verified, applied) = std::thread::scope(|scope| {
                    let handle = following.map(|chunk| scope.spawn(move || verify(chunk)));
                    let applied = match failure {
                        None => apply_each(&tx, &ready[start..], &crls, now, &mut outcomes),
                        Some(_) => Ok(()),
                    };
                    let verified =
                        handle.map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
                    (verified, applied)
                });
                next = verified;
                if let Err(error) = applied {
                    failure.get_or_insert(error);
                }
            }
            match failure {
                Some(error) => Err(error),
                None => tx.commit().map(|()| outcomes),
            }
        });
        let outcomes = match attempt {
            Ok(outcomes) => outcomes,
            // A concurrent writer (another node) made PostgreSQL refuse the transaction:
            // the rules run again, on everything verified, until it commits.
            Err(error) if <Error as escx_store::Retryable>::is_busy(&error) => {
                while let Some(verified) = next.take() {
                    take(verified, &mut ready);
                    next = chunks.next().map(verify);
                }
                retrying(|| {
                    let tx = self.store.begin()?;
                    let mut outcomes = Vec::with_capacity(ready.len());
                    apply_each(&tx, &ready, &crls, now, &mut outcomes)?;
                    tx.commit()?;
                    Ok(outcomes)
                })?
            }
            Err(error) => return Err(error),
        };
        for ((index, report), outcome) in ready.into_iter().zip(outcomes) {
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

    /// Compacts the reports of every closed period that ended at least `keep_secs` ago
    /// (metering.md §6.6): each report keeps its seq, hour, hash and arrival, and its hour
    /// sums; its bytes (the per-minute commitments, the proofs, the certificate copy) go.
    /// Billing, closes, chains, duplicates and the hour sums are unaffected; openings of a
    /// compacted hour can no longer be checked. Idempotent: a second run compacts nothing.
    pub fn compact(&mut self, keep_secs: u64, now: UnixSeconds) -> Result<Compacted, Error> {
        if keep_secs < RETENTION_MIN_SECS {
            return Err(refuse(
                Refusal::Invalid,
                format!(
                    "reports are kept at least {} days after their period ends (disputes and late openings)",
                    RETENTION_MIN_SECS / 86_400
                ),
            ));
        }
        retrying(|| {
            let tx = self.store.begin()?;
            let mut done = Compacted { periods: 0, reports: 0, bytes: 0 };
            for (license_id, period) in tx.closed_periods()? {
                let period = Period::parse(&period).map_err(|reason| refuse(Refusal::Invalid, reason))?;
                if period.end().0.saturating_add(keep_secs) > now.0 {
                    continue;
                }
                let (reports, bytes) = tx.compact_reports(&license_id, period.start().0, period.end().0)?;
                if reports > 0 {
                    done.periods += 1;
                    done.reports += reports;
                    done.bytes += bytes;
                }
            }
            tx.commit()?;
            Ok(done)
        })
    }

    /// Checks a period close against the stored reports and keeps it (metering.md §7).
    /// The same close again is a no-op; a different close for the same license and
    /// period is refused and kept as evidence.
    pub fn close(&mut self, bytes: &[u8], now: UnixSeconds) -> Result<Closed, Error> {
        // Another node or command may have trusted an issuer since (metering.md §6.4).
        self.refresh_issuers()?;
        let file = CloseFile::from_cbor(bytes)?;
        let cert_id = certificate_id(&file.certificate);
        let (info, certificate) = match Self::known_license(&self.store, &cert_id)? {
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
        let payload: ClosePayload = crate::decode(payload, "period close")?;
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
        retrying(|| {
            let tx = self.store.begin()?;
            if let Some(certificate) = &certificate {
                insert_license(&tx, &info, certificate)?;
            }
            if let Some(held) = tx.close(&id, &period_text)? {
                if held == file.close.as_slice() {
                    return Ok(closed(period_reports(&tx, &id, period)?.len(), true));
                }
                // Close evidence is kept per period: its `hour` is the period's start.
                keep_evidence(&tx, &info, "close", Some(period.start()), None, &held, &file.close, now)?;
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
                let (hash, hour) = tx
                    .report_at_seq(&id, payload.through_seq)?
                    .ok_or_else(|| Error::stored("a report below the chain head is missing"))?;
                if hash != payload.through_hash.as_slice() || UnixSeconds(hour) >= period.end() {
                    return Err(refuse(
                        Refusal::CloseMismatch,
                        format!(
                            "report {} of license {id_hex} is not the one the close names",
                            payload.through_seq
                        ),
                    ));
                }
            }
            // through_seq names the last report before the period's end, not an earlier one.
            if let Some((_, hour)) = tx.report_at_seq(&id, payload.through_seq + 1)?
                && UnixSeconds(hour) < period.end()
            {
                return Err(refuse(
                    Refusal::CloseMismatch,
                    format!(
                        "the close stops at report {} of license {id_hex}, but report {} is of hour {}, before the end of {period_text}",
                        payload.through_seq,
                        payload.through_seq + 1,
                        format_hour(UnixSeconds(hour))
                    ),
                ));
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
            for (unit, commitment) in tx.hour_sums_between(&id, period.start().0, period.end().0)? {
                let p =
                    point(&commitment).ok_or_else(|| Error::stored("a stored hour sum is not a point"))?;
                *sums.entry(unit).or_default() += p;
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
            // What the hours can hold: at most 60 minutes of use per reported hour. (The
            // commitments bind the total only mod ℓ, so this is checked on the total.)
            let hours = reports.len() as u64;
            if let Some((_, minutes, _)) =
                totals.iter().find(|(unit, total, _)| unit == UNIT_MINUTES && *total > hours * MINUTES as u64)
            {
                return Err(refuse(
                    Refusal::Impossible,
                    format!(
                        "license {id_hex} closes {period_text} with {minutes} minutes of use over {hours} reported \
                         hours; at most {} are possible",
                        hours * MINUTES as u64
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
            let stored: Vec<(String, u64)> = totals.iter().map(|(u, t, _)| (u.clone(), *t)).collect();
            tx.insert_close(&id, &period_text, &file.close, payload.through_seq, now.0, &stored)?;
            tx.commit()?;
            Ok(closed(reports.len(), false))
        })
    }

    /// The usage charges of `period`: one per closed license of a metered tier
    /// (`unit = "hour"`), `floor(minutes · price / 60)` (metering.md §7.2). One statement,
    /// so one snapshot of the store. Each license is charged on its own: one that cannot
    /// be (no terms, more minutes than the period has, a charge above 2^64 − 1) is
    /// refused with its code and id, and everyone else is still billed.
    pub fn billing(&self, period: Period) -> Result<Billing, Error> {
        let period_text = period.to_string();
        let rows = self.store.billing_rows(&period_text)?;
        let mut billing = Billing::default();
        // Each package's terms history, read and decoded once for the whole period.
        let mut versions: HashMap<String, Vec<(String, Vec<TierTerms>)>> = HashMap::new();
        for r in rows {
            let license = hex::encode(&r.license_id);
            if r.terms_version.is_some() && !versions.contains_key(&r.package) {
                // A history that cannot be read is not kept: each of its licenses is then
                // refused with the error, as alone.
                if let Ok(decoded) = self.terms_versions(&r.package) {
                    versions.insert(r.package.clone(), decoded);
                }
            }
            let held = match versions.get(&r.package) {
                Some(held) => Ok(held.as_slice()),
                None if r.terms_version.is_some() => self.terms_versions(&r.package).map(|_| &[][..]),
                None => Ok(&[][..]),
            };
            match held.and_then(|held| self.charge(&r, held, period)) {
                Ok(Some(charge)) => billing.charges.push(charge),
                Ok(None) => {}
                Err(error) => billing.refused.push(RefusedCharge {
                    license_id: license,
                    package: r.package.clone(),
                    tier: r.tier.clone(),
                    code: escx::Fault::code(&error),
                    reason: error.to_string(),
                }),
            }
        }
        Ok(billing)
    }

    /// One license's charge for `period` (None: its tier is not metered), under the terms
    /// version the license is bound to (metering.md §6.5).
    /// A package's terms versions, decoded: (version, tiers).
    fn terms_versions(&self, package: &str) -> Result<Vec<(String, Vec<TierTerms>)>, Error> {
        self.store
            .terms_history(package)?
            .into_iter()
            .map(|v| Ok((v.version, decode_terms(&v.terms)?.0)))
            .collect()
    }

    fn charge(
        &self,
        r: &BillingRow,
        versions: &[(String, Vec<TierTerms>)],
        period: Period,
    ) -> Result<Option<UsageCharge>, Error> {
        let package = package_name(&r.package)?;
        let terms = match &r.terms_version {
            Some(version) => {
                let (_, tiers) = versions.iter().find(|(v, _)| v == version).ok_or_else(|| {
                    Error::stored(format!("a license is bound to terms {version}, which are not stored"))
                })?;
                tiers
                    .iter()
                    .find(|t| t.tier == r.tier)
                    .map(|t| (t.unit.clone(), t.price_micros.0, t.currency.clone()))
            }
            None => r.terms.clone(),
        };
        let Some((unit, price, currency)) = terms else {
            return Err(refuse(
                Refusal::UnknownTerms,
                format!("no terms for {package} tier {}; register the package", r.tier),
            ));
        };
        if unit != "hour" {
            return Ok(None);
        }
        // Read back as written (§7.1): no close can hold more minutes than its period.
        let most = (period.end().0 - period.start().0) / HOUR_SECS * MINUTES as u64;
        if r.minutes > most {
            return Err(refuse(
                Refusal::Impossible,
                format!("the close holds {} minutes of use; {period} has {most}", r.minutes),
            ));
        }
        let price = Micros(price);
        let gross = u128::from(r.minutes) * u128::from(price.0) / 60;
        let license = hex::encode(&r.license_id);
        Ok(Some(UsageCharge {
            id: format!("operator:{}:usage:{license}:{period}", self.id),
            license_id: license,
            package,
            tier: r.tier.clone(),
            period: period.to_string(),
            minutes: r.minutes,
            price_micros: price,
            gross_micros: u64::try_from(gross)
                .map(Micros)
                .map_err(|_| refuse(Refusal::Overflow, "the usage charge is above 2^64 - 1 micro-units"))?,
            currency,
            time: period.end() - 1,
            flagged: r.flagged,
        }))
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
        let telemetry = self.store.telemetry_terms(package)?.ok_or_else(|| {
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
        retrying(|| {
            let tx = self.store.begin()?;
            let mut per_holder: BTreeMap<(String, Vec<u8>), u128> = BTreeMap::new();
            for (unit, license, total) in tx.shared_totals(package.as_str(), start.0, end.0)? {
                *per_holder.entry((unit, license)).or_default() += u128::from(total);
            }
            // The window is released under the strictest terms in force for any of its
            // hours (and the current ones): registering terms later never raises its budget
            // or lowers its cohort (metering.md §6.5).
            let (mut budget, mut cohort) = (telemetry.epsilon_micros, telemetry.cohort_min_size);
            let history = tx.terms_history(package.as_str())?;
            for version in versions_during(&history, start.0, end.0) {
                if let (_, Some(t)) = decode_terms(&version.terms)? {
                    budget = budget.min(t.epsilon_micros);
                    cohort = cohort.max(t.cohort_min_size);
                }
            }
            // Every release whose window overlaps this one counts against it.
            let spent = tx.epsilon_spent(package.as_str(), start.0, end.0)?;
            let remaining = budget.saturating_sub(spent);
            let exhausted = |asked: u64| {
                refuse(
                    Refusal::BudgetExhausted,
                    format!(
                        "the privacy budget of {package} for {}/{} has {} of {} left; this release asks for {}",
                        format_hour(start),
                        format_hour(end),
                        epsilon_text(remaining),
                        epsilon_text(budget),
                        epsilon_text(asked)
                    ),
                )
            };
            // Deciding which units reach the cohort costs a share of the budget on every
            // call, suppressed or not (privacy.md §3): "were there k?" is not free.
            let decision = (budget / SUPPRESSION_SHARE).max(1);
            if remaining < decision {
                return Err(exhausted(decision));
            }
            // Every declared unit is considered, whether or not anyone used it, so the set
            // of units itself reveals nothing.
            let mut units: Vec<String> = vec![UNIT_MINUTES.to_owned()];
            units.extend(telemetry.metrics.iter().filter(|m| is_metric(m)).cloned());
            units.sort();
            units.dedup();
            // The cohort is counted per unit (one unit's sum must not hold a single
            // holder hidden in another unit's crowd), each count noised: one holder moves
            // each of the k counts by at most 1, so the scale is k / decision.
            let mut passing = Vec::new();
            for unit in &units {
                let count = per_holder.keys().filter(|(u, _)| u == unit).count();
                let noise = crate::dp::discrete_laplace(rng, units.len() as u64 * EPSILON_SCALE, decision);
                let noisy = i128::try_from(count).unwrap_or(i128::MAX).saturating_add(noise);
                if noisy >= i128::from(cohort) {
                    passing.push(unit.clone());
                }
            }
            if passing.is_empty() {
                tx.insert_release(package.as_str(), start.0, end.0, decision, clip, now.0, &[])?;
                tx.commit()?;
                return Ok(Aggregate::Suppressed {
                    cohort_min_size: cohort,
                    decision_micros: decision,
                    remaining_micros: remaining - decision,
                });
            }
            let available = remaining - decision;
            let epsilon = epsilon_micros.unwrap_or(available);
            if epsilon == 0 || epsilon > available {
                return Err(exhausted(epsilon.saturating_add(decision)));
            }
            // Sequential composition: each released unit gets epsilon / k, so the noise
            // scale is clip · k / epsilon = (clip · k · 10^6) / epsilon_micros.
            let scale_t = clip * passing.len() as u64 * EPSILON_SCALE;
            let scale_s = epsilon;
            let mut values = Vec::new();
            for unit in &passing {
                let sum: u128 = per_holder
                    .iter()
                    .filter(|((u, _), _)| u == unit)
                    .map(|(_, t)| (*t).min(u128::from(clip)))
                    .sum();
                // Drawn again if the transaction runs again: nothing drawn before is ever
                // released.
                let noise = crate::dp::discrete_laplace(rng, scale_t, scale_s);
                let noised = (i128::try_from(sum).unwrap_or(i128::MAX).saturating_add(noise)).max(0);
                values.push((unit.clone(), u64::try_from(noised).unwrap_or(u64::MAX)));
            }
            let suppressed: Vec<String> = units.iter().filter(|u| !passing.contains(u)).cloned().collect();
            tx.insert_release(package.as_str(), start.0, end.0, epsilon + decision, clip, now.0, &values)?;
            tx.commit()?;
            Ok(Aggregate::Released(Release {
                package: package.clone(),
                start,
                end,
                values,
                suppressed,
                clip,
                epsilon_micros: epsilon,
                decision_micros: decision,
                remaining_micros: available - epsilon,
                scale: (scale_t, scale_s),
            }))
        })
    }

    /// Kept evidence, optionally of one holder key.
    pub fn evidence(&self, holder: Option<KeyId>) -> Result<Vec<Evidence>, Error> {
        let mut out = Vec::new();
        for r in self.store.evidence()? {
            let key = escx_licensing::messages::key_id(&r.holder)?;
            if holder.is_some_and(|wanted| wanted != key) {
                continue;
            }
            out.push(Evidence {
                id: r.id,
                kind: r.kind,
                license_id: hex::encode(&r.license_id),
                holder: key,
                hour: r.hour.map(UnixSeconds),
                seq: r.seq,
                at: UnixSeconds(r.at),
                first: r.first,
                second: r.second,
                repeats: r.repeats,
            });
        }
        Ok(out)
    }

    /// Checks an opening against the stored commitment of its hour or minute.
    pub fn check_opening(&self, bytes: &[u8]) -> Result<OpeningVerdict, Error> {
        let opening = OpeningFile::from_cbor(bytes)?;
        let id_hex = hex::encode(&opening.license_id);
        let stored = self.store.report_of_hour(&opening.license_id, opening.hour.0)?.ok_or_else(|| {
            refuse(
                Refusal::NotFound,
                format!("no report of license {id_hex} for hour {} is stored", format_hour(opening.hour)),
            )
        })?;
        if stored.is_empty() {
            return Err(refuse(
                Refusal::NotFound,
                format!(
                    "the report of license {id_hex} for hour {} was compacted after its period's retention; \
                     its openings can no longer be checked (metering.md §6.6)",
                    format_hour(opening.hour)
                ),
            ));
        }
        // Stored reports were verified at ingest.
        let envelope = Envelope::from_cbor(&stored)?;
        let payload: ReportPayload = crate::decode(envelope.payload_unverified(), "meter report")?;
        if payload.package != opening.package {
            return Err(refuse(
                Refusal::OpeningMismatch,
                format!("license {id_hex} is for {}", payload.package),
            ));
        }
        // A single minute of `minutes` says whether that minute was used only if every
        // minute of the report is proven 0 or 1: its per-minute proof is checked now.
        if opening.minute.is_some() && opening.openings.iter().any(|o| o.unit == crate::UNIT_MINUTES) {
            let item = crate::minutes_range_item(&payload, 0)?;
            if escx_licensing::rangeproof::verify(vec![item]).is_err() {
                return Err(refuse(
                    Refusal::RangeInvalid,
                    format!(
                        "the report of license {id_hex} for hour {} carries a per-minute proof that does not verify: \
                         its minutes are not proven 0 or 1, so one minute's opening does not say whether that \
                         minute was used (the holder's meter did not make this report)",
                        format_hour(opening.hour)
                    ),
                ));
            }
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
                    &self
                        .store
                        .hour_sum(&opening.license_id, opening.hour.0, &unit.unit)?
                        .ok_or_else(|| Error::stored("the hour sum of a stored report is missing"))?,
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

/// Runs `attempt` again while it fails busy (storage.md §4): a refused transaction was
/// rolled back, so running it again is safe.
fn retrying<T>(attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    escx_store::retry::while_busy(<Error as escx_store::Retryable>::is_busy, attempt)
}

/// The license's chain head: sequence number, hash and hour (`None` before the first
/// report).
fn head(db: &impl OperatorReader, id: &[u8; 16]) -> Result<(u64, [u8; 32], Option<UnixSeconds>), Error> {
    let Some(head) = db.head(id)? else {
        return Ok((0, [0u8; 32], None));
    };
    let hash: [u8; 32] =
        head.hash.as_slice().try_into().map_err(|_| Error::stored("a stored head hash is not 32 bytes"))?;
    Ok((head.seq, hash, head.hour.map(UnixSeconds)))
}

fn period_reports(
    db: &impl OperatorReader,
    id: &[u8; 16],
    period: Period,
) -> Result<Vec<(u64, UnixSeconds)>, Error> {
    Ok(db
        .reports_between(id, period.start().0, period.end().0)?
        .into_iter()
        .map(|(seq, hour)| (seq, UnixSeconds(hour)))
        .collect())
}

fn insert_license(db: &impl OperatorWriter, info: &LicenseInfo, certificate: &[u8]) -> Result<(), Error> {
    let new = db.license_terms_version(&info.license_id)?.is_none();
    insert_license_row(db, info, certificate)?;
    // Bound once, to the terms it was bought under (metering.md §6.5).
    if new && let Some(version) = version_at(&db.terms_history(info.package.as_str())?, info.not_before.0) {
        db.bind_license_terms(&info.license_id, &version.version)?;
    }
    Ok(())
}

fn insert_license_row(db: &impl OperatorWriter, info: &LicenseInfo, certificate: &[u8]) -> Result<(), Error> {
    db.insert_license(&StoredLicense {
        license_id: info.license_id.to_vec(),
        cert_id: info.cert_id,
        issuer: info.issuer.0.to_vec(),
        package: info.package.to_string(),
        tier: info.tier.clone(),
        holder: info.holder.id().0.to_vec(),
        not_before: info.not_before.0,
        not_after: info.not_after.0,
        certificate: certificate.to_vec(),
    })
}

#[allow(clippy::too_many_arguments)]
fn keep_evidence(
    db: &impl OperatorWriter,
    info: &LicenseInfo,
    kind: &str,
    hour: Option<UnixSeconds>,
    seq: Option<u64>,
    first: &[u8],
    second: &[u8],
    now: UnixSeconds,
) -> Result<(), Error> {
    db.keep_evidence(&NewEvidence {
        license_id: &info.license_id,
        holder: &info.holder.id().0,
        kind,
        hour: hour.map(|h| h.0),
        seq,
        first,
        second,
        second_hash: &report_hash(second),
        at: now.0,
    })
}

/// The store-dependent rules of one report, in the order of metering.md §6.2.
/// The store rules of each verified report, in order, onto `outcomes`; a rule's refusal is
/// the report's outcome, a store error ends the attempt.
fn apply_each(
    db: &impl OperatorWriter,
    reports: &[(usize, Prepared)],
    crls: &HashMap<KeyId, CrlPayload>,
    now: UnixSeconds,
    outcomes: &mut Vec<Outcome>,
) -> Result<(), Error> {
    for (_, report) in reports {
        outcomes.push(match apply(db, report, crls, now) {
            Ok(outcome) => outcome,
            Err(error @ Error::Licensing(escx_licensing::Error::Store(_))) => return Err(error),
            Err(error) => Outcome::Refused(error),
        });
    }
    Ok(())
}

fn apply(
    db: &impl OperatorWriter,
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
    if let Some((_, hash, envelope)) = db.held_report(id, report.hour.0, report.seq)? {
        if hash == report.hash {
            return Ok(Outcome::Duplicate);
        }
        // A compacted report (§6.6) kept only its hash: there is no first message to keep
        // as evidence, and the hour is long past the late window.
        if envelope.is_empty() {
            return Err(refuse(
                Refusal::TooLate,
                format!(
                    "hour {} of this license was reported and compacted; reports are accepted for {} days after their hour",
                    format_hour(report.hour),
                    crate::REPORT_LATE_SECS / 86_400
                ),
            ));
        }
        keep_evidence(
            db,
            info,
            "report",
            Some(report.hour),
            Some(report.seq),
            &envelope,
            &report.envelope,
            now,
        )?;
        return Ok(Outcome::Equivocation);
    }

    // 2. The license at the hour: its window and the CRL.
    if report.hour + HOUR_SECS <= info.not_before {
        return Err(escx_licensing::Error::LicenseRejected {
            check: LicenseCheck::NotYetValid,
            reason: format!(
                "hour {} ends before the license is valid (from {})",
                format_hour(report.hour),
                escx::timestamp::format_rfc3339(info.not_before)
            ),
        }
        .into());
    }
    if report.hour >= info.not_after {
        return Err(escx_licensing::Error::LicenseRejected {
            check: LicenseCheck::Window,
            reason: format!(
                "hour {} starts after the license expired ({})",
                format_hour(report.hour),
                escx::timestamp::format_rfc3339(info.not_after)
            ),
        }
        .into());
    }
    if let Some(crl) = crls.get(&info.issuer)
        && let Some(entry) = crl.revoked.iter().find(|r| r.license_id.as_slice() == id)
    {
        return Err(escx_licensing::Error::LicenseRejected {
            check: LicenseCheck::Revocation,
            reason: format!(
                "license {} is revoked by CRL {} ({})",
                hex::encode(id),
                crl.number,
                entry.reason
            ),
        }
        .into());
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
    let terms = license_tier_terms(db, info)?.ok_or_else(|| {
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
    let metrics = db.telemetry_terms(&info.package)?.map(|t| t.metrics).unwrap_or_default();
    if let Some(unit) = report.sums.iter().find(|s| s.unit != UNIT_MINUTES && !metrics.contains(&s.unit)) {
        return Err(refuse(Refusal::Invalid, format!("{} does not meter {:?}", info.package, unit.unit)));
    }
    if let Some(total) = report.sums.iter().filter_map(|s| s.total).find(|t| *t > i64::MAX as u64) {
        return Err(refuse(Refusal::Overflow, format!("an hour total of {total} is above 2^63 - 1")));
    }
    if let Some(minutes) = report
        .sums
        .iter()
        .filter(|s| s.unit == UNIT_MINUTES)
        .filter_map(|s| s.total)
        .find(|t| *t > MINUTES as u64)
    {
        return Err(refuse(
            Refusal::Impossible,
            format!("an hour opens {minutes} minutes of use; an hour holds at most {MINUTES}"),
        ));
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
    if db.close(id, &Period::of(report.hour).to_string())?.is_some() {
        return Err(refuse(
            Refusal::PeriodClosed,
            format!("period {} of license {} is closed", Period::of(report.hour), hex::encode(id)),
        ));
    }
    db.store_report(&NewReport {
        license_id: id,
        seq: report.seq,
        hour: report.hour.0,
        hash: &report.hash,
        report: &report.envelope,
        received_at: now.0,
        sums: report.sums.iter().map(|s| (s.unit.as_str(), s.sum.as_slice(), s.total)).collect(),
    })?;
    Ok(Outcome::Stored)
}
