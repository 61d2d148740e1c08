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

mod memory;
mod sql;

pub use memory::{MemoryOperatorStore, MemoryOperatorTx};
pub use sql::{SCHEMA_VERSION, SqlOperatorStore, SqlOperatorTx};

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
