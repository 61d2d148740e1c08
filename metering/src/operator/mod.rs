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
use escx::header::PackageName;
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

// The operator's work, one file per part of metering.md §6–§7; the store, the issuers,
// CRLs and package terms are here.
mod billing;
mod close;
mod ingest;
mod release;

/// The store's file in the operator directory.
pub const DATABASE_FILE: &str = "operator.sqlite";

pub use crate::store::SCHEMA_VERSION;
pub use billing::{Billing, RefusedCharge, UsageCharge};
pub use close::{Closed, OpeningVerdict};
pub use escx_store::DATABASE_URL_FILE;
pub use ingest::{Compacted, Ingested, Outcome, RETENTION_MIN_SECS};
pub use release::{Aggregate, Release, SUPPRESSION_SHARE};
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
