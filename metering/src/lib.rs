//! Usage metering (spec: metering.md, privacy.md): the customer's per-minute [`meter`],
//! hourly reports of Pedersen commitments signed by the license's holder key, period
//! closes that open one total per unit, and the operator's [`operator`] store that
//! verifies, chains and sums them without ever seeing a per-minute value.
//!
//! Commitments are `v·B + r·B̃` on ristretto255 with the generators settlement statements
//! use (`escx_licensing::pedersen`). Blindings
//! derive from the meter's secret and the report coordinates ([`blinding`]), so the
//! customer can open any minute or hour later without storing blindings.

pub mod dp;
pub mod meter;
pub mod operator;
pub mod store;

use escx::UnixSeconds;
use escx::header::PackageName;
use std::sync::OnceLock;

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use escx::sig::SigningContext;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use escx_licensing::rangeproof::Commitment;
// The commitments of meter reports (metering.md §2.2), one implementation for the crates
// that commit (proofs.md §9.1).
pub(crate) use escx_licensing::pedersen::{commit, point, scalar};
// The unit names license terms may carry (licensing.md §3.4), which the meter accepts.
pub(crate) use escx_licensing::messages::is_metric;

/// Signing context of hourly reports (holder key).
pub const CONTEXT_REPORT: SigningContext = SigningContext::new("escx/meter-report/v1");
/// Signing context of period closes (holder key).
pub const CONTEXT_CLOSE: SigningContext = SigningContext::new("escx/meter-close/v1");
/// `derive_key` context of a report's hash (the next report names it as `previous`).
pub const CONTEXT_REPORT_HASH: &str = "escx v1 meter report hash";
/// `derive_key` context of the per-minute blindings.
pub const CONTEXT_BLINDING: &str = "escx v1 meter blinding";
/// Context of the blindings of a report made with a nonce (metering.md §2.2).
pub const CONTEXT_REPORT_BLINDING: &str = "escx v2 meter report blinding";
/// Context of a terms version's hash (metering.md §6.5).
pub const CONTEXT_TERMS_HASH: &str = "escx v1 operator terms";
/// The bytes of a report's nonce (metering.md §2.2).
pub const REPORT_NONCE_BYTES: usize = 32;
/// `derive_key` context naming a license certificate in the operator's store.
pub const CONTEXT_CERTIFICATE_ID: &str = "escx v1 meter certificate id";

/// Every signing context of this module (for the spec test).
pub const ALL_CONTEXTS: &[SigningContext] = &[CONTEXT_REPORT, CONTEXT_CLOSE];
/// Every `derive_key` context of this module (for the spec test).
pub const ALL_HASH_CONTEXTS: &[&str] = &[
    CONTEXT_REPORT_HASH,
    CONTEXT_BLINDING,
    CONTEXT_REPORT_BLINDING,
    CONTEXT_CERTIFICATE_ID,
    CONTEXT_TERMS_HASH,
];

/// Seconds in an hour.
pub const HOUR_SECS: u64 = 3600;
/// Minutes in a report.
pub const MINUTES: usize = 60;
/// The unit the meter keeps itself: 1 for every minute with any record, 0 otherwise.
/// Metered tiers (`unit = "hour"`) are billed on it.
pub const UNIT_MINUTES: &str = "minutes";
/// Most series (units) in one report: `minutes` and up to 16 metrics.
pub const SERIES_MAX: usize = 17;
/// How long after an hour ends its report is still accepted (35 days, the bound Stripe
/// puts on late meter events, so a month can be reported in full and closed).
pub const REPORT_LATE_SECS: u64 = 35 * 86_400;
/// The largest amount one record may add and one counter may hold (2^63 − 1, SQLite's
/// integer range).
pub const COUNTER_MAX: u64 = i64::MAX as u64;

/// Why a metering operation was refused (each has its own code, metering.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A report, close or opening is malformed or breaks a structural rule.
    Invalid,
    /// The holder signature does not verify.
    Signature,
    /// The report does not continue its license's chain.
    OutOfOrder,
    /// The hour has not ended yet.
    TooEarly,
    /// The hour ended more than [`REPORT_LATE_SECS`] ago.
    TooLate,
    /// The hour's period is closed for this license.
    PeriodClosed,
    /// The report's telemetry (opened or not) does not match the license's tier.
    TierMismatch,
    /// The operator has no terms for the package and tier.
    UnknownTerms,
    /// A close whose totals do not open the stored commitments, or that does not cover
    /// the stored reports of its period.
    CloseMismatch,
    /// The operator lacks reports the close covers.
    ReportMissing,
    /// A second, different close for one license and period.
    CloseConflict,
    /// An opening does not match its commitment.
    OpeningMismatch,
    /// No stored report for an opening, or nothing recorded to report.
    NotFound,
    /// The hour was reported: nothing more can be recorded into it.
    HourReported,
    /// Usage recorded into hours of the period that were never reported.
    HoursUnreported,
    /// An aggregation window does not match the package's `[telemetry] window`.
    WindowInvalid,
    /// The window's privacy budget is spent.
    BudgetExhausted,
    /// A counter would exceed [`COUNTER_MAX`].
    Overflow,
    /// Terms of a version older than one registered, or other terms under a version
    /// registered (metering.md §6.5).
    TermsVersion,
    /// A report's range proofs do not verify (metering.md §3.4).
    RangeInvalid,
    /// A unit the license's terms say the package does not meter (metering.md §2.1).
    UnitUndeclared,
    /// Usage the hours cannot hold: more than 60 `minutes` in an hour, or in a period more
    /// than 60 per reported hour (metering.md §6.2, §7.1, §7.2).
    Impossible,
}

impl Refusal {
    /// Stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "report-invalid",
            Self::Signature => "report-signature-invalid",
            Self::OutOfOrder => "report-out-of-order",
            Self::TooEarly => "report-too-early",
            Self::TooLate => "report-too-late",
            Self::PeriodClosed => "period-closed",
            Self::TierMismatch => "report-tier-mismatch",
            Self::UnknownTerms => "unknown-terms",
            Self::CloseMismatch => "close-mismatch",
            Self::ReportMissing => "report-missing",
            Self::CloseConflict => "close-conflict",
            Self::OpeningMismatch => "opening-mismatch",
            Self::NotFound => "meter-not-found",
            Self::HourReported => "hour-reported",
            Self::HoursUnreported => "hours-unreported",
            Self::WindowInvalid => "window-invalid",
            Self::BudgetExhausted => "epsilon-exhausted",
            Self::Overflow => "counter-overflow",
            Self::Impossible => "usage-impossible",
            Self::UnitUndeclared => "unit-undeclared",
            Self::RangeInvalid => "report-range-invalid",
            Self::TermsVersion => "terms-version",
        }
    }
}

pub(crate) fn refuse(refusal: Refusal, reason: impl Into<String>) -> Error {
    Error::Refused { refusal, reason: reason.into() }
}

/// Why metering failed: a rule of metering.md refused a report, close, opening or release,
/// or the licensing layer beneath (a license check, a malformed message, the store) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A metering report, close, opening or release was refused (metering.md §8).
    #[error("{reason}")]
    Refused {
        /// Which rule refused it.
        refusal: Refusal,
        /// Why, in words.
        reason: String,
    },
    /// A license check, a message, a manifest or the store failed, with licensing's own
    /// code.
    #[error(transparent)]
    Licensing(#[from] escx_licensing::Error),
}

impl Error {
    /// A record of a store that this crate cannot have written: [`escx_store::Kind::Corrupt`].
    pub(crate) fn stored(reason: impl Into<String>) -> Self {
        Self::Licensing(escx_licensing::Error::stored(reason))
    }
}

impl escx_store::Retryable for Error {
    fn is_busy(&self) -> bool {
        matches!(self, Self::Licensing(e) if escx_store::Retryable::is_busy(e))
    }
}

impl From<escx_store::Error> for Error {
    fn from(error: escx_store::Error) -> Self {
        Self::Licensing(error.into())
    }
}

impl From<escx::Error> for Error {
    fn from(error: escx::Error) -> Self {
        Self::Licensing(error.into())
    }
}

impl escx::Fault for Error {
    fn code(&self) -> &'static str {
        match self {
            Self::Refused { refusal, .. } => refusal.code(),
            Self::Licensing(e) => e.code(),
        }
    }

    fn class(&self) -> escx::ErrorClass {
        match self {
            Self::Refused { .. } => escx::ErrorClass::Input,
            Self::Licensing(e) => e.class(),
        }
    }

    fn help(&self) -> Option<&'static str> {
        match self {
            Self::Refused { .. } => None,
            Self::Licensing(e) => e.help(),
        }
    }
}

/// One unit's 60 minute commitments in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// `minutes`, `invocations`, `compute_ms`, `bytes` or `custom:<name>`.
    pub unit: String,
    /// 60 compressed ristretto255 points, minute 0 first.
    pub commitments: Vec<ByteBuf>,
    /// Share tier only: the opening of the sum of the 60 commitments.
    pub opened: Option<HourOpening>,
}

/// The opening of an hour's summed commitment (share tier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HourOpening {
    /// The hour's total.
    pub total: u64,
    /// The sum of the hour's 60 blindings (32-byte canonical scalar).
    pub blinding: ByteBuf,
}

/// The signed payload of an hourly report (context `escx/meter-report/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportPayload {
    /// Format version, 2 (version 1 reports carry no range proofs and are refused).
    pub v: u8,
    /// Package name (the license's).
    pub package: PackageName,
    /// License id (16 bytes).
    pub license_id: ByteBuf,
    /// Start of the hour, Unix seconds, a multiple of 3600.
    pub hour: UnixSeconds,
    /// 1, 2, 3, ... per license.
    pub seq: u64,
    /// The previous report's hash (32 zero bytes for seq 1).
    pub previous: ByteBuf,
    /// One series per unit, sorted by unit name, `minutes` always present.
    pub series: Vec<Series>,
    /// The per-minute proof: each of the 60 `minutes` commitments opens to 0 or 1,
    /// checked in a dispute (metering.md §3.4).
    pub minutes_range: ByteBuf,
    /// The hour proof: the `minutes` hour sum lies in [0, 60] (metering.md §3.4).
    pub hour_range: ByteBuf,
    /// The sums proof: each other unit's hour sum lies in [0, 2^63 − 1]; empty when the
    /// report has no other unit (metering.md §3.4).
    pub sums_range: ByteBuf,
}

/// A report as it travels: the holder-signed report and the certificate naming the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportFile {
    /// Format version, 1.
    pub v: u8,
    /// The license certificate (envelope bytes).
    pub certificate: ByteBuf,
    /// The report envelope.
    pub report: ByteBuf,
}

/// One unit's total over a period and the sum of its blindings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodTotal {
    /// Unit.
    pub unit: String,
    /// Total over every reported hour of the period.
    pub total: u64,
    /// Sum of the blindings of every minute of those hours (32-byte canonical scalar).
    pub blinding: ByteBuf,
}

/// The signed payload of a period close (context `escx/meter-close/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClosePayload {
    /// Format version, 1.
    pub v: u8,
    /// Package name.
    pub package: PackageName,
    /// License id (16 bytes).
    pub license_id: ByteBuf,
    /// `YYYY-MM` (a calendar month, UTC).
    pub period: String,
    /// Seq of the last report whose hour lies in the period (or, with none, the last
    /// report before it; 0 with no report at all).
    pub through_seq: u64,
    /// That report's hash (32 zero bytes for seq 0).
    pub through_hash: ByteBuf,
    /// One total per unit that appears in the period's reports, sorted by unit.
    pub totals: Vec<PeriodTotal>,
}

/// A close as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseFile {
    /// Format version, 1.
    pub v: u8,
    /// The license certificate (envelope bytes).
    pub certificate: ByteBuf,
    /// The close envelope.
    pub close: ByteBuf,
}

/// One opened value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitOpening {
    /// Unit.
    pub unit: String,
    /// The minute's value, or the hour's total.
    pub value: u64,
    /// Its blinding (the minute's, or the sum of the hour's), 32-byte canonical scalar.
    pub blinding: ByteBuf,
}

/// An opening for a dispute (unsigned: the commitment it opens is what binds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningFile {
    /// Format version, 1.
    pub v: u8,
    /// Package name.
    pub package: PackageName,
    /// License id (16 bytes).
    pub license_id: ByteBuf,
    /// The hour.
    pub hour: UnixSeconds,
    /// The minute (0..60), or none for the whole hour.
    pub minute: Option<u8>,
    /// One opening per unit asked for.
    pub openings: Vec<UnitOpening>,
}

/// A report's hash: `derive_key("escx v1 meter report hash", report envelope bytes)`.
pub fn report_hash(envelope: &[u8]) -> [u8; 32] {
    blake3::derive_key(CONTEXT_REPORT_HASH, envelope)
}

/// The blinding of one minute: the 64-byte BLAKE3 `derive_key` output (context
/// `escx v1 meter blinding`) over `secret || license_id || hour (u64 BE) || minute (u8)
/// || unit (UTF-8)`, reduced mod ℓ.
pub fn blinding(
    secret: &[u8; 32],
    license_id: &[u8; 16],
    unit: &str,
    hour: UnixSeconds,
    minute: u8,
) -> Scalar {
    let mut hasher = blake3::Hasher::new_derive_key(CONTEXT_BLINDING);
    hasher.update(secret);
    hasher.update(license_id);
    hasher.update(&hour.0.to_be_bytes());
    hasher.update(&[minute]);
    hasher.update(unit.as_bytes());
    let mut wide = zeroize::Zeroizing::new([0u8; 64]);
    hasher.finalize_xof().fill(wide.as_mut());
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// The blinding of one minute of a report made with `nonce`: the 64-byte BLAKE3
/// `derive_key` output (context `escx v2 meter report blinding`) over `secret ||
/// license_id || hour (u64 BE) || minute (u8) || nonce (32) || unit (UTF-8)`, reduced mod
/// ℓ. The nonce is fresh for every report and kept with it by the meter, so a second
/// report of one hour (a restored or copied wallet) never reuses a blinding. `None` is a
/// report made before nonces, whose blindings are [`blinding`]'s.
pub fn report_blinding(
    secret: &[u8; 32],
    license_id: &[u8; 16],
    nonce: Option<&[u8; REPORT_NONCE_BYTES]>,
    unit: &str,
    hour: UnixSeconds,
    minute: u8,
) -> Scalar {
    let Some(nonce) = nonce else {
        return blinding(secret, license_id, unit, hour, minute);
    };
    let mut hasher = blake3::Hasher::new_derive_key(CONTEXT_REPORT_BLINDING);
    hasher.update(secret);
    hasher.update(license_id);
    hasher.update(&hour.0.to_be_bytes());
    hasher.update(&[minute]);
    hasher.update(nonce);
    hasher.update(unit.as_bytes());
    let mut wide = zeroize::Zeroizing::new([0u8; 64]);
    hasher.finalize_xof().fill(wide.as_mut());
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// A billing period: one calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u8,
}

impl Period {
    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a billing period; write the month as YYYY-MM, e.g. 2026-11");
        let (year, month) = text.split_once('-').ok_or_else(bad)?;
        // Digits only: `str::parse` would also take a sign (`2026-+1`).
        if !digits(year, 4) || !digits(month, 2) {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u8 = month.parse().map_err(|_| bad())?;
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Self { year, month })
    }

    /// The period containing `at`.
    pub fn of(at: UnixSeconds) -> Self {
        let date = time::OffsetDateTime::from_unix_timestamp(i64::try_from(at.0).unwrap_or(i64::MAX))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Self { year: date.year(), month: u8::from(date.month()) }
    }

    fn first_second(year: i32, month: u8) -> UnixSeconds {
        let month = time::Month::try_from(month).unwrap_or(time::Month::January);
        UnixSeconds(
            time::Date::from_calendar_date(year, month, 1)
                .map(|d| d.midnight().assume_utc().unix_timestamp())
                .ok()
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
        )
    }

    /// First second of the period.
    pub fn start(self) -> UnixSeconds {
        Self::first_second(self.year, self.month)
    }

    /// First second after the period.
    pub fn end(self) -> UnixSeconds {
        if self.month == 12 {
            Self::first_second(self.year + 1, 1)
        } else {
            Self::first_second(self.year, self.month + 1)
        }
    }

    /// True when `at` lies in the period.
    pub fn contains(self, at: UnixSeconds) -> bool {
        (self.start()..self.end()).contains(&at)
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// `part` is exactly `len` ASCII digits.
fn digits(part: &str, len: usize) -> bool {
    part.len() == len && part.bytes().all(|b| b.is_ascii_digit())
}

/// Parses an hour, `YYYY-MM-DDTHH` (UTC), to the Unix seconds of its start.
pub fn parse_hour(text: &str) -> Result<UnixSeconds, String> {
    let bad = || format!("{text:?} is not an hour; write it as YYYY-MM-DDTHH in UTC, e.g. 2026-11-23T10");
    let (date, hour) = text.split_once('T').ok_or_else(bad)?;
    if !digits(hour, 2) || date.len() != 10 {
        return Err(bad());
    }
    let hour: u64 = hour.parse().map_err(|_| bad())?;
    if hour > 23 {
        return Err(bad());
    }
    let day = escx::timestamp::parse(date).map_err(|_| bad())?;
    Ok(day + hour * HOUR_SECS)
}

/// Formats an hour's start as `YYYY-MM-DDTHH`.
pub fn format_hour(hour: UnixSeconds) -> String {
    let text = escx::timestamp::format_rfc3339(hour);
    text.get(..13).map_or(text.clone(), str::to_owned)
}

/// Parses a window `START/END` of two hours (`2026-11-23T00/2026-11-24T00`).
pub fn parse_window(text: &str) -> Result<(UnixSeconds, UnixSeconds), String> {
    let (start, end) = text.split_once('/').ok_or_else(|| {
        format!("{text:?} is not a window; write START/END, e.g. 2026-11-23T00/2026-11-24T00")
    })?;
    let (start, end) = (parse_hour(start)?, parse_hour(end)?);
    if end <= start {
        return Err(format!("{text:?}: the window ends before it starts"));
    }
    Ok((start, end))
}

fn fixed<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N], Error> {
    bytes
        .try_into()
        .map_err(|_| refuse(Refusal::Invalid, format!("{what} must be {N} bytes, found {}", bytes.len())))
}

fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(bytes: &[u8], what: &str) -> Result<T, Error> {
    escx::cbor::decode_exact(bytes, what).map_err(|reason| refuse(Refusal::Invalid, reason))
}

impl ReportFile {
    /// Parses a report file (shape only).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let file: Self = decode(bytes, "meter report")?;
        if file.v != 1 {
            return Err(refuse(Refusal::Invalid, format!("unsupported report file version {}", file.v)));
        }
        Ok(file)
    }

    /// The encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }
}

impl CloseFile {
    /// Parses a close file (shape only).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let file: Self = decode(bytes, "period close")?;
        if file.v != 1 {
            return Err(refuse(Refusal::Invalid, format!("unsupported close file version {}", file.v)));
        }
        Ok(file)
    }

    /// The encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }
}

impl OpeningFile {
    /// Parses an opening file and checks its shape.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let file: Self = decode(bytes, "meter opening")?;
        if file.v != 1 {
            return Err(refuse(Refusal::Invalid, format!("unsupported opening version {}", file.v)));
        }
        fixed::<16>(&file.license_id, "license_id")?;
        if file.hour.floor(HOUR_SECS) != file.hour || file.minute.is_some_and(|m| usize::from(m) >= MINUTES) {
            return Err(refuse(
                Refusal::Invalid,
                "the hour must start on the hour and the minute be 0 to 59",
            ));
        }
        if file.openings.is_empty() || file.openings.len() > SERIES_MAX {
            return Err(refuse(Refusal::Invalid, format!("an opening holds 1 to {SERIES_MAX} units")));
        }
        for opening in &file.openings {
            scalar(&opening.blinding).ok_or_else(|| {
                refuse(Refusal::Invalid, format!("{}: the blinding is not a canonical scalar", opening.unit))
            })?;
        }
        Ok(file)
    }

    /// The encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }
}

/// Checks a report payload's structure (metering.md §3.2) and returns each series' sum
/// of commitments, compressed, with its opened total when the series is opened.
pub fn check_report(payload: &ReportPayload) -> Result<Vec<SeriesSum>, Error> {
    Ok(checked(payload)?.sums)
}

/// What [`check_report`] decompressed on its way, kept for the range proofs.
struct Checked {
    sums: Vec<SeriesSum>,
    /// Each series' hour sum as a point, in the payload's order (that of `sums`).
    points: Vec<Commitment>,
}

fn checked(payload: &ReportPayload) -> Result<Checked, Error> {
    let invalid = |reason: String| refuse(Refusal::Invalid, reason);
    if payload.v != REPORT_VERSION {
        return Err(invalid(format!(
            "unsupported report version {} (this operator takes version {REPORT_VERSION}, whose range proofs bound \
             every value; report with this version's meter)",
            payload.v
        )));
    }
    fixed::<16>(&payload.license_id, "license_id")?;
    let previous = fixed::<32>(&payload.previous, "previous")?;
    if payload.hour.floor(HOUR_SECS) != payload.hour {
        return Err(invalid(format!("hour {} does not start on the hour", payload.hour)));
    }
    if payload.seq == 0 || (payload.seq == 1) != (previous == [0u8; 32]) {
        return Err(invalid("seq starts at 1 and only report 1 has no previous report".into()));
    }
    if payload.series.is_empty() || payload.series.len() > SERIES_MAX {
        return Err(invalid(format!("a report holds 1 to {SERIES_MAX} series")));
    }
    if !payload.series.iter().any(|s| s.unit == UNIT_MINUTES) {
        return Err(invalid("every report has a `minutes` series".into()));
    }
    for pair in payload.series.windows(2) {
        if pair[0].unit >= pair[1].unit {
            return Err(invalid("series are sorted by unit, each unit once".into()));
        }
    }
    let mut sums = Vec::with_capacity(payload.series.len());
    let mut points = Vec::with_capacity(payload.series.len());
    for series in &payload.series {
        if series.unit != UNIT_MINUTES && !is_metric(&series.unit) {
            return Err(invalid(format!("{:?} is not a unit", series.unit)));
        }
        if series.commitments.len() != MINUTES {
            return Err(invalid(format!(
                "{}: {} commitments, not one per minute ({MINUTES})",
                series.unit,
                series.commitments.len()
            )));
        }
        let mut sum = RistrettoPoint::default();
        for (minute, bytes) in series.commitments.iter().enumerate() {
            sum += point(bytes).ok_or_else(|| {
                invalid(format!(
                    "{}: the commitment of minute {minute} is not a ristretto255 point",
                    series.unit
                ))
            })?;
        }
        let sum = Commitment::from_point(sum);
        points.push(sum);
        let total = match &series.opened {
            None => None,
            Some(opened) => {
                let blinding = scalar(&opened.blinding).ok_or_else(|| {
                    invalid(format!("{}: the hour's blinding is not a canonical scalar", series.unit))
                })?;
                if commit(opened.total, &blinding) != sum.point() {
                    return Err(invalid(format!(
                        "{}: the opened hour total {} does not open the sum of the minute commitments",
                        series.unit, opened.total
                    )));
                }
                Some(opened.total)
            }
        };
        sums.push(SeriesSum { unit: series.unit.clone(), sum: sum.to_bytes(), total });
    }
    Ok(Checked { sums, points })
}

/// The report format version (metering.md §3.1).
pub const REPORT_VERSION: u8 = 3;
/// Transcript label of a report's range proofs (metering.md §3.4).
pub const TRANSCRIPT_REPORT_RANGE: &[u8] = b"escx meter report range v1";
/// The bit length of the `minutes` proof: each minute is 0 or 1.
pub const MINUTES_BITS: usize = 1;
/// The bit length of the sums proof.
pub const SUM_BITS: usize = 64;

/// The transcript a report's range proof `proof` (`minutes`, `hour` or `sums`) is made on
/// (metering.md §3.4): every public input of the report but the commitments, which the
/// proof absorbs itself.
pub fn range_transcript(payload: &ReportPayload, proof: &'static [u8]) -> merlin::Transcript {
    let mut t = merlin::Transcript::new(TRANSCRIPT_REPORT_RANGE);
    t.append_message(b"proof", proof);
    t.append_message(b"package", payload.package.as_str().as_bytes());
    t.append_message(b"license_id", &payload.license_id);
    t.append_u64(b"hour", payload.hour.0);
    t.append_u64(b"seq", payload.seq);
    t.append_u64(b"series", payload.series.len() as u64);
    for series in &payload.series {
        t.append_message(b"unit", series.unit.as_bytes());
    }
    t
}

/// The values a report's range proofs bind, with their blindings, for each series in the
/// payload's order: the 60 minute values and blindings.
pub type SeriesOpening = ([u64; MINUTES], [Scalar; MINUTES]);

/// The bit length of the hour proof: the `minutes` hour sum and 60 minus it, each below 2^8.
pub const HOUR_BITS: usize = 8;

/// Makes a report's three range proofs (metering.md §3.4) from each series' minute values
/// and blindings, in the payload's series order, and sets them in `payload`: the
/// per-minute proof (every `minutes` value 0 or 1), the hour proof (the `minutes` hour sum
/// in [0, 60]) and the sums proof (every other hour sum in [0, 2^63 − 1]). Refuses what no
/// honest meter holds: a `minutes` value other than 0 or 1 (`usage-impossible`), an hour
/// sum above 2^63 − 1 (`counter-overflow`).
pub fn prove_report_ranges(payload: &mut ReportPayload, openings: &[SeriesOpening]) -> Result<(), Error> {
    let failed = |e: String| refuse(Refusal::Invalid, format!("a range proof could not be made: {e}"));
    let mut minutes = None;
    let (mut sum_values, mut sum_blindings) = (Vec::new(), Vec::new());
    for (series, (values, blindings)) in payload.series.iter().zip(openings) {
        if series.unit == UNIT_MINUTES {
            if let Some(m) = values.iter().position(|v| *v > 1) {
                return Err(refuse(
                    Refusal::Impossible,
                    format!("minute {m} holds {} minutes of use; a minute is used or not", values[m]),
                ));
            }
            minutes = Some((values, blindings));
            continue;
        }
        let total = values.iter().try_fold(0u64, |a, v| a.checked_add(*v)).filter(|t| *t <= COUNTER_MAX);
        let total = total.ok_or_else(|| {
            refuse(Refusal::Overflow, format!("the {} hour total is above 2^63 - 1", series.unit))
        })?;
        let blinding: Scalar = blindings.iter().sum();
        sum_values.extend([total, COUNTER_MAX - total]);
        sum_blindings.extend([blinding, -blinding]);
    }
    let (values, blindings) =
        minutes.ok_or_else(|| refuse(Refusal::Invalid, "every report has a `minutes` series"))?;
    let minutes_proof = escx_licensing::rangeproof::prove(
        MINUTES_BITS,
        &mut range_transcript(payload, b"minutes"),
        values,
        blindings,
    )
    .map_err(failed)?;
    let used: u64 = values.iter().sum();
    let blinding: Scalar = blindings.iter().sum();
    let hour_proof = escx_licensing::rangeproof::prove(
        HOUR_BITS,
        &mut range_transcript(payload, b"hour"),
        &[used, MINUTES as u64 - used],
        &[blinding, -blinding],
    )
    .map_err(failed)?;
    let sums_proof = if sum_values.is_empty() {
        Vec::new()
    } else {
        escx_licensing::rangeproof::prove(
            SUM_BITS,
            &mut range_transcript(payload, b"sums"),
            &sum_values,
            &sum_blindings,
        )
        .map_err(failed)?
    };
    payload.minutes_range = ByteBuf::from(minutes_proof);
    payload.hour_range = ByteBuf::from(hour_proof);
    payload.sums_range = ByteBuf::from(sums_proof);
    Ok(())
}

/// [`check_report`], and the items to verify the report's hour and sums proofs with
/// (metering.md §3.4), named `id`: the `minutes` hour sum in [0, 60] and every other hour
/// sum in [0, 2^63 − 1]. Their commitments are the sums the structure rules computed.
pub fn check_report_ranges(
    payload: &ReportPayload,
    id: u32,
) -> Result<(Vec<SeriesSum>, Vec<escx_licensing::rangeproof::Item>), Error> {
    let Checked { sums, points } = checked(payload)?;
    // The per-minute proof is verified only in a dispute; it must at least be one.
    if !escx_licensing::rangeproof::decodes(&payload.minutes_range) {
        return Err(refuse(
            Refusal::RangeInvalid,
            "the report's per-minute proof is not a Bulletproofs+ proof",
        ));
    }
    static BOUNDS: OnceLock<(RistrettoPoint, RistrettoPoint)> = OnceLock::new();
    let (minutes_bound, counter_bound) = *BOUNDS.get_or_init(|| {
        let at = |v: u64| commit(v, &Scalar::ZERO);
        (at(MINUTES as u64), at(COUNTER_MAX))
    });
    let mut hour = Vec::new();
    let mut others = Vec::new();
    for (series, sum) in sums.iter().zip(points) {
        if series.unit == UNIT_MINUTES {
            hour.extend([sum, Commitment::from_point(minutes_bound - sum.point())]);
        } else {
            others.extend([sum, Commitment::from_point(counter_bound - sum.point())]);
        }
    }
    let item = |bits, label: &'static [u8], commitments, proof: &ByteBuf| escx_licensing::rangeproof::Item {
        id,
        bits,
        transcript: range_transcript(payload, label),
        commitments,
        proof: proof.to_vec(),
    };
    let mut items = vec![item(HOUR_BITS, b"hour", hour, &payload.hour_range)];
    if others.is_empty() {
        if !payload.sums_range.is_empty() {
            return Err(refuse(
                Refusal::RangeInvalid,
                "a report with no unit but minutes carries no sums proof",
            ));
        }
    } else {
        items.push(item(SUM_BITS, b"sums", others, &payload.sums_range));
    }
    Ok((sums, items))
}

/// The item to verify a report's per-minute proof with (metering.md §3.4): every `minutes`
/// commitment 0 or 1. Verified when a minute is disputed (§5), not at ingest.
pub fn minutes_range_item(
    payload: &ReportPayload,
    id: u32,
) -> Result<escx_licensing::rangeproof::Item, Error> {
    let series = payload
        .series
        .iter()
        .find(|s| s.unit == UNIT_MINUTES)
        .ok_or_else(|| refuse(Refusal::Invalid, "every report has a `minutes` series"))?;
    let commitments = series
        .commitments
        .iter()
        .map(|bytes| Commitment::decompress(bytes))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| refuse(Refusal::Invalid, "a `minutes` commitment is not a ristretto255 point"))?;
    Ok(escx_licensing::rangeproof::Item {
        id,
        bits: MINUTES_BITS,
        transcript: range_transcript(payload, b"minutes"),
        commitments,
        proof: payload.minutes_range.to_vec(),
    })
}

/// One series' hour sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSum {
    /// Unit.
    pub unit: String,
    /// The sum of the 60 commitments, compressed.
    pub sum: [u8; 32],
    /// The opened total (share tier).
    pub total: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use escx::Fault as _;
    use proptest::prelude::Strategy;

    #[test]
    fn periods_and_hours() {
        let period = Period::parse("2026-11").unwrap();
        assert_eq!(period.start(), escx::timestamp::parse("2026-11-01").unwrap());
        assert_eq!(period.end(), escx::timestamp::parse("2026-12-01").unwrap());
        assert_eq!(Period::parse("2026-12").unwrap().end(), escx::timestamp::parse("2027-01-01").unwrap());
        assert_eq!(Period::of(period.end() - 1), period);
        assert_eq!(period.to_string(), "2026-11");
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "2026-00", "2026-+1", "+202-11"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
        let hour = parse_hour("2026-11-23T10").unwrap();
        assert_eq!(hour, escx::timestamp::parse("2026-11-23T10:00:00Z").unwrap());
        assert_eq!(format_hour(hour), "2026-11-23T10");
        assert!(parse_hour("2026-11-23T24").is_err());
        assert!(parse_hour("2026-11-23 10").is_err());
        assert!(parse_hour("2026-11-23T+1").is_err(), "a sign is not a digit");
        assert_eq!(parse_window("2026-11-23T00/2026-11-24T00").unwrap().1 - hour + 10 * 3600, 86_400);
        assert!(parse_window("2026-11-24T00/2026-11-23T00").is_err());
    }

    #[test]
    fn commitments_add_and_blindings_are_separated() {
        let secret = [7u8; 32];
        let id = [1u8; 16];
        let r1 = blinding(&secret, &id, "invocations", escx::UnixSeconds(3600), 1);
        let r2 = blinding(&secret, &id, "invocations", escx::UnixSeconds(3600), 2);
        assert_ne!(r1, r2);
        assert_ne!(r1, blinding(&secret, &id, "bytes", escx::UnixSeconds(3600), 1));
        assert_ne!(r1, blinding(&secret, &id, "invocations", escx::UnixSeconds(7200), 1));
        assert_ne!(r1, blinding(&[8u8; 32], &id, "invocations", escx::UnixSeconds(3600), 1));
        assert_eq!(commit(3, &r1) + commit(4, &r2), commit(7, &(r1 + r2)));
        assert_ne!(commit(3, &r1) + commit(4, &r2), commit(8, &(r1 + r2)));
    }

    fn series(secret: &[u8; 32], unit: &str, values: &[u64], shift: i64) -> Series {
        let id = [3u8; 16];
        let mut sum = Scalar::ZERO;
        let commitments = values
            .iter()
            .enumerate()
            .map(|(m, v)| {
                let r = blinding(secret, &id, unit, escx::UnixSeconds(7200), u8::try_from(m).unwrap());
                sum += r;
                ByteBuf::from(commit(*v, &r).compress().to_bytes().to_vec())
            })
            .collect();
        let total = values.iter().sum::<u64>().wrapping_add_signed(shift);
        Series {
            unit: unit.into(),
            commitments,
            opened: Some(HourOpening { total, blinding: ByteBuf::from(sum.to_bytes().to_vec()) }),
        }
    }

    proptest::proptest! {
        /// The sum of an hour's 60 commitments opens to the hour's total with the sum of
        /// its blindings, and to no other total (metering.md §3.2).
        #[test]
        fn an_hour_opens_to_its_total_and_nothing_else(
            values in proptest::collection::vec(0u64..1_000_000, 60),
            secret in proptest::array::uniform32(proptest::num::u8::ANY),
            shift in (-1000i64..1000).prop_filter("non-zero", |s| *s != 0),
        ) {
            let report = |series: Series| ReportPayload {
                v: REPORT_VERSION,
                package: "a/b".parse().unwrap(),
                license_id: ByteBuf::from(vec![3u8; 16]),
                hour: escx::UnixSeconds(7200),
                seq: 1,
                previous: ByteBuf::from(vec![0u8; 32]),
                series: vec![series],
                minutes_range: ByteBuf::new(),
                hour_range: ByteBuf::new(),
                sums_range: ByteBuf::new(),
            };
            let minutes: Vec<u64> = values.iter().map(|v| u64::from(*v > 0)).collect();
            let sums = check_report(&report(series(&secret, UNIT_MINUTES, &minutes, 0))).unwrap();
            proptest::prop_assert_eq!(sums[0].total, Some(minutes.iter().sum::<u64>()));
            let good = report(series(&secret, UNIT_MINUTES, &values, 0));
            proptest::prop_assert!(check_report(&good).is_ok());
            let bad = report(series(&secret, UNIT_MINUTES, &values, shift));
            proptest::prop_assert_eq!(check_report(&bad).unwrap_err().code(), "report-invalid");
        }
    }

    #[test]
    fn metric_names() {
        for good in ["invocations", "compute_ms", "bytes", "custom:gpu_s"] {
            assert!(is_metric(good));
        }
        for bad in ["minutes", "custom:", "custom:GPU", "seconds", ""] {
            assert!(!is_metric(bad), "{bad}");
        }
    }
}
