//! The customer's meter (spec: metering.md §2): per-minute counters per license and unit
//! in `meter.sqlite` inside the wallet (mode 0600, WAL, `synchronous=FULL`, one
//! transaction per record, so a killed process loses at most the record it was writing),
//! the reports and closes it has made, and the secret the blindings derive from.

use escx::UnixSeconds;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use curve25519_dalek::scalar::Scalar;
use escx_store::{Arg, Db, Location, Mark, Migrations, Mode, Schema, Sql};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::Error;
use crate::{
    CONTEXT_CLOSE, CONTEXT_REPORT, CloseFile, ClosePayload, HOUR_SECS, HourOpening, MINUTES, OpeningFile,
    Period, PeriodTotal, REPORT_NONCE_BYTES, REPORT_VERSION, Refusal, ReportFile, ReportPayload, Series,
    SeriesOpening, UNIT_MINUTES, UnitOpening, commit, format_hour, is_metric, prove_report_ranges, refuse,
    report_blinding, report_hash,
};
use escx_licensing::messages::LicensePayload;
use escx_licensing::wallet::{Verified, Wallet};

/// The meter's database file in the wallet directory.
pub const DATABASE_FILE: &str = "meter.sqlite";
const SQLITE_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE counters (
    license_id BLOB NOT NULL, unit TEXT NOT NULL, minute INTEGER NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (license_id, unit, minute)) WITHOUT ROWID;
CREATE TABLE modes (license_id BLOB PRIMARY KEY, telemetry TEXT NOT NULL);
CREATE TABLE reports (
    license_id BLOB NOT NULL, seq INTEGER NOT NULL, hour INTEGER NOT NULL, hash BLOB NOT NULL,
    file BLOB NOT NULL, PRIMARY KEY (license_id, seq), UNIQUE (license_id, hour));
CREATE TABLE closes (
    license_id BLOB NOT NULL, period TEXT NOT NULL, file BLOB NOT NULL, PRIMARY KEY (license_id, period));
";
/// Each report's nonce (metering.md §2.2); NULL for reports made before nonces.
const SQLITE_V2: &str = "ALTER TABLE reports ADD COLUMN nonce BLOB;";

/// The meter's tables: SQLite only (the meter lives in the customer's wallet), the version in
/// `meta`.
static SCHEMA: Schema = Schema {
    what: "meter",
    pg_schema: None,
    lock: "escx v1 meter migration lock",
    sqlite: Migrations { steps: &[SQLITE_V1, SQLITE_V2], mark: Mark::Meta },
    postgres: Migrations { steps: &[], mark: Mark::Meta },
};

/// What the customer's tier shares (its `telemetry` in the manifest's `[pricing]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Telemetry {
    /// Reports open each hour's totals.
    Share,
    /// Reports open nothing; only period totals leave the meter.
    Private,
}

impl Telemetry {
    /// `share` or `private`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Share => "share",
            Self::Private => "private",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "share" => Some(Self::Share),
            "private" => Some(Self::Private),
            _ => None,
        }
    }
}

/// What a record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The license counted against (hex).
    pub license_id: String,
    /// The minute's start.
    pub minute: UnixSeconds,
    /// The counter's value for that minute now.
    pub value: u64,
}

/// A report the meter made (or had made before, for a retry).
#[derive(Debug, Clone)]
pub struct MadeReport {
    /// The report file.
    pub file: Vec<u8>,
    /// Its seq.
    pub seq: u64,
    /// License id (hex).
    pub license_id: String,
    /// Units in it.
    pub units: Vec<String>,
    /// True when this hour had been reported before and the stored report is returned.
    pub again: bool,
    /// The telemetry mode it was made in.
    pub telemetry: Telemetry,
}

/// A close the meter made.
#[derive(Debug, Clone)]
pub struct MadeClose {
    /// The close file.
    pub file: Vec<u8>,
    /// License id (hex).
    pub license_id: String,
    /// Totals per unit.
    pub totals: Vec<(String, u64)>,
    /// Seq of the last report the close covers.
    pub through_seq: u64,
    /// True when the period had been closed before and the stored close is returned.
    pub again: bool,
}

/// The meter of one wallet.
pub struct Meter<'w> {
    wallet: &'w Wallet,
    db: Db,
}

/// Opens (creating if needed) the meter's database; a new one gets its secret.
fn open_db(path: &Path) -> Result<Db, Error> {
    Ok(Db::open(&Location::Sqlite(path.to_path_buf()), &SCHEMA, Mode::OpenOrCreate, |tx| {
        let mut secret = Zeroizing::new([0u8; 32]);
        escx::keyfile::fill_random(secret.as_mut())
            .map_err(|e| escx_store::Error::failed(tx.location(), e.to_string()))?;
        tx.exec("INSERT INTO meta (key, value) VALUES ('secret', ?1)", &[Arg::Bytes(&secret[..])]).map(drop)
    })?)
}

fn license_id(license: &LicensePayload) -> Result<[u8; 16], Error> {
    license.license_id.as_slice().try_into().map_err(|_| {
        escx_licensing::Error::Malformed { what: "license", reason: "license id must be 16 bytes".into() }
            .into()
    })
}

fn int(value: impl Into<u64>) -> Arg<'static> {
    Arg::Int(i64::try_from(value.into()).unwrap_or(i64::MAX))
}

impl<'w> Meter<'w> {
    /// Opens (creating if needed) the meter of `wallet`.
    pub fn open(wallet: &'w Wallet) -> Result<Self, Error> {
        Ok(Self { wallet, db: open_db(&wallet.dir().join(DATABASE_FILE))? })
    }

    fn secret(&self) -> Result<Zeroizing<[u8; 32]>, Error> {
        let row = self.db.one("SELECT value FROM meta WHERE key = 'secret'", &[])?;
        Ok(Zeroizing::new(row.array(0)?))
    }

    /// The license of `package` valid during `[from, until)` (the newest).
    fn license(
        &self,
        package: &str,
        from: UnixSeconds,
        until: UnixSeconds,
    ) -> Result<(LicensePayload, Vec<u8>), Error> {
        self.wallet.licenses_during(package, from, until)?.into_iter().next().ok_or_else(|| {
            refuse(
                Refusal::NotFound,
                format!(
                    "no license for {package} in this wallet is valid at {}",
                    escx::timestamp::format_rfc3339(from)
                ),
            )
        })
    }

    /// The license an hour is reported for (see [`Self::report_license`]).
    fn license_for_hour(
        &self,
        package: &str,
        wanted: Option<&str>,
        hour: UnixSeconds,
    ) -> Result<(LicensePayload, Vec<u8>), Error> {
        let candidates = self.wallet.licenses_during(package, hour, hour + HOUR_SECS)?;
        if let Some(wanted) = wanted {
            return candidates.into_iter().find(|(l, _)| hex::encode(&l.license_id) == wanted).ok_or_else(
                || {
                    refuse(
                        Refusal::NotFound,
                        format!("no license {wanted} of {package} is valid in hour {}", format_hour(hour)),
                    )
                },
            );
        }
        let mut used = Vec::new();
        for (license, certificate) in &candidates {
            let id = license_id(license)?;
            let records = self
                .db
                .one(
                    "SELECT (SELECT count(*) FROM counters WHERE license_id = ?1 AND minute >= ?2 AND minute < ?3)
                          + (SELECT count(*) FROM reports WHERE license_id = ?1 AND hour = ?2)",
                    &[Arg::Bytes(&id), int(hour), int(hour + HOUR_SECS)],
                )?
                .int(0)?;
            if records > 0 {
                used.push((license.clone(), certificate.clone()));
            }
        }
        match used.len() {
            1 => Ok(used.remove(0)),
            0 => self.license(package, hour, hour + HOUR_SECS),
            _ => Err(refuse(
                Refusal::Invalid,
                format!(
                    "several licenses of {package} have records in hour {} ({}); report each with --license ID",
                    format_hour(hour),
                    used.iter().map(|(l, _)| hex::encode(&l.license_id)).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// Adds `amount` to the `unit` counter of the minute containing `at`, for the license
    /// the program verified (`verified`, from [`Wallet::verify`](escx_licensing::wallet::Wallet::verify)),
    /// and marks the minute used (`minutes` = 1). The license must be in this meter's
    /// wallet and valid at `at`. One transaction: a kill loses at most this record.
    /// Refused once the hour has been reported or its period closed.
    pub fn record(
        &self,
        verified: &Verified,
        unit: &str,
        amount: u64,
        at: UnixSeconds,
    ) -> Result<Recorded, Error> {
        if !is_metric(unit) {
            return Err(refuse(
                Refusal::Invalid,
                format!(
                    "{unit:?} is not a unit; use invocations, compute_ms, bytes or custom:<name> \
                     (`minutes` is counted by the meter itself)"
                ),
            ));
        }
        if amount == 0 || amount > crate::COUNTER_MAX {
            return Err(refuse(Refusal::Invalid, format!("the amount must be 1 to {}", crate::COUNTER_MAX)));
        }
        let package = verified.license.package.as_str();
        // A version-2 license carries the package's metrics, signed: a unit outside them
        // would make a report the operator refuses, and a report is final.
        if let Some(terms) = &verified.license.terms
            && !terms.metrics.iter().any(|m| m == unit)
        {
            return Err(refuse(
                Refusal::UnitUndeclared,
                if terms.metrics.is_empty() {
                    format!(
                        "{package} meters no unit ([telemetry] metrics in its manifest): {unit} cannot be recorded"
                    )
                } else {
                    format!("{package} does not meter {unit}; its license names {}", terms.metrics.join(", "))
                },
            ));
        }
        let held = self.wallet.licenses_during(package, at, at + 1)?;
        let Some((license, _)) = held.iter().find(|(l, _)| l.license_id == verified.license.license_id)
        else {
            return Err(refuse(
                Refusal::NotFound,
                format!(
                    "license {} of {package} is not in this wallet or not valid at {}",
                    hex::encode(&verified.license.license_id),
                    escx::timestamp::format_rfc3339(at)
                ),
            ));
        };
        let id = license_id(license)?;
        let minute = at.floor(60);
        let hour = at.floor(HOUR_SECS);
        let transaction = self.db.begin()?;
        let last = transaction
            .one("SELECT max(hour) FROM reports WHERE license_id = ?1", &[Arg::Bytes(&id)])?
            .opt_uint(0)?
            .map(UnixSeconds);
        if let Some(last) = last
            && hour <= last
        {
            return Err(refuse(
                Refusal::HourReported,
                format!(
                    "hour {} is reported (the latest reported hour is {}); a report is final, so nothing more \
                     can be recorded into it or an earlier hour",
                    format_hour(hour),
                    format_hour(last)
                ),
            ));
        }
        if closed(&transaction, &id, Period::of(hour))? {
            return Err(refuse(
                Refusal::PeriodClosed,
                format!("period {} is closed for this license", Period::of(hour)),
            ));
        }
        let held = transaction
            .row(
                "SELECT value FROM counters WHERE license_id = ?1 AND unit = ?2 AND minute = ?3",
                &[Arg::Bytes(&id), Arg::Text(unit), int(minute)],
            )?
            .map(|r| r.uint(0))
            .transpose()?;
        let value =
            held.unwrap_or(0).checked_add(amount).filter(|v| *v <= crate::COUNTER_MAX).ok_or_else(|| {
                refuse(
                    Refusal::Overflow,
                    format!("the {unit} counter of this minute would exceed {}", crate::COUNTER_MAX),
                )
            })?;
        transaction.exec(
            "INSERT INTO counters (license_id, unit, minute, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (license_id, unit, minute) DO UPDATE SET value = excluded.value",
            &[Arg::Bytes(&id), Arg::Text(unit), int(minute), int(value)],
        )?;
        transaction.exec(
            "INSERT INTO counters (license_id, unit, minute, value) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (license_id, unit, minute) DO NOTHING",
            &[Arg::Bytes(&id), Arg::Text(UNIT_MINUTES), int(minute)],
        )?;
        transaction.commit()?;
        Ok(Recorded { license_id: hex::encode(id), minute, value })
    }

    /// The per-minute values of one license, unit and hour.
    fn minutes(db: &impl Sql, id: &[u8; 16], unit: &str, hour: UnixSeconds) -> Result<[u64; MINUTES], Error> {
        let mut values = [0u64; MINUTES];
        let rows = db.rows(
            "SELECT minute, value FROM counters WHERE license_id = ?1 AND unit = ?2 AND minute >= ?3 AND minute < ?4",
            &[Arg::Bytes(id), Arg::Text(unit), int(hour), int(hour + HOUR_SECS)],
        )?;
        for row in rows {
            let (minute, value) = (UnixSeconds(row.uint(0)?), row.uint(1)?);
            let index = usize::try_from((minute - hour) / 60).unwrap_or(MINUTES);
            if let Some(slot) = values.get_mut(index) {
                *slot = value;
            }
        }
        Ok(values)
    }

    /// Reports `hour` of the license of `package` valid in it (metering.md §3): 60
    /// commitments per unit recorded in the hour and for `minutes`, chained to the
    /// license's previous report, signed by the holder key. The hour must have ended
    /// (`now`) and come after every hour already reported. Reporting an hour again
    /// returns the stored report unchanged. The telemetry mode is the one a version-2
    /// license names (another given is `report-tier-mismatch`); for a version-1 license,
    /// the one given (default `private`), fixed at its first report.
    pub fn report(
        &self,
        package: &str,
        hour: UnixSeconds,
        telemetry: impl Into<Option<Telemetry>>,
        now: UnixSeconds,
    ) -> Result<MadeReport, Error> {
        self.report_license(package, None, hour, telemetry, now)
    }

    /// [`Self::report`] for the license `license` (hex id) when given. Without it, the
    /// license is the one of `package` that has records (or a report) in the hour; with
    /// none, the newest valid in it; with several, the caller must choose.
    pub fn report_license(
        &self,
        package: &str,
        license: Option<&str>,
        hour: UnixSeconds,
        telemetry: impl Into<Option<Telemetry>>,
        now: UnixSeconds,
    ) -> Result<MadeReport, Error> {
        let asked: Option<Telemetry> = telemetry.into();
        if hour.floor(HOUR_SECS) != hour {
            return Err(refuse(Refusal::Invalid, "an hour starts on the hour"));
        }
        let (license, certificate) = self.license_for_hour(package, license, hour)?;
        let id = license_id(&license)?;
        let id_hex = hex::encode(id);
        let transaction = self.db.begin()?;
        let stored = transaction
            .row(
                "SELECT seq, file FROM reports WHERE license_id = ?1 AND hour = ?2",
                &[Arg::Bytes(&id), int(hour)],
            )?
            .map(|r| Ok::<_, Error>((r.uint(0)?, r.bytes(1)?.to_vec())))
            .transpose()?;
        if let Some((seq, file)) = stored {
            let units = units_of(&file)?;
            let telemetry = transaction
                .row("SELECT telemetry FROM modes WHERE license_id = ?1", &[Arg::Bytes(&id)])?
                .map(|r| r.text(0).map(str::to_owned))
                .transpose()?
                .as_deref()
                .and_then(Telemetry::parse)
                .unwrap_or(Telemetry::Private);
            return Ok(MadeReport { file, seq, license_id: id_hex, units, again: true, telemetry });
        }
        if hour + HOUR_SECS > now {
            return Err(refuse(
                Refusal::TooEarly,
                format!(
                    "hour {} ends at {}; report it after that",
                    format_hour(hour),
                    escx::timestamp::format_rfc3339(hour + HOUR_SECS)
                ),
            ));
        }
        let mode = transaction
            .row("SELECT telemetry FROM modes WHERE license_id = ?1", &[Arg::Bytes(&id)])?
            .map(|r| r.text(0).map(str::to_owned))
            .transpose()?;
        let signed = license.terms.as_ref().and_then(|t| Telemetry::parse(&t.telemetry));
        let telemetry = match (signed, asked) {
            (Some(signed), Some(asked)) if signed != asked => {
                return Err(refuse(
                    Refusal::TierMismatch,
                    format!(
                        "this license's tier shares telemetry {} (its certificate says so); {} was asked",
                        signed.name(),
                        asked.name()
                    ),
                ));
            }
            (Some(signed), _) => signed,
            (None, asked) => {
                asked.or_else(|| mode.as_deref().and_then(Telemetry::parse)).unwrap_or(Telemetry::Private)
            }
        };
        match mode.as_deref().and_then(Telemetry::parse) {
            Some(held) if held != telemetry => {
                return Err(refuse(
                    Refusal::TierMismatch,
                    format!(
                        "this license has been reported with telemetry {} (its tier's); a license keeps its mode",
                        held.name()
                    ),
                ));
            }
            Some(_) => {}
            None => {
                transaction.exec(
                    "INSERT INTO modes (license_id, telemetry) VALUES (?1, ?2)",
                    &[Arg::Bytes(&id), Arg::Text(telemetry.name())],
                )?;
            }
        }
        let last = transaction
            .row(
                "SELECT seq, hour, hash FROM reports WHERE license_id = ?1 ORDER BY seq DESC LIMIT 1",
                &[Arg::Bytes(&id)],
            )?
            .map(|r| Ok::<_, Error>((r.uint(0)?, UnixSeconds(r.uint(1)?), r.bytes(2)?.to_vec())))
            .transpose()?;
        let (seq, previous) = match &last {
            Some((_, last_hour, _)) if *last_hour >= hour => {
                return Err(refuse(
                    Refusal::OutOfOrder,
                    format!(
                        "hour {} comes before hour {}, already reported; hours are reported in order",
                        format_hour(hour),
                        format_hour(*last_hour)
                    ),
                ));
            }
            Some((seq, _, hash)) => (*seq + 1, hash.clone()),
            None => (1, vec![0u8; 32]),
        };
        if closed(&transaction, &id, Period::of(hour))? {
            return Err(refuse(
                Refusal::PeriodClosed,
                format!("period {} is closed for this license", Period::of(hour)),
            ));
        }
        let mut units: BTreeSet<String> = BTreeSet::new();
        for row in transaction.rows(
            "SELECT DISTINCT unit FROM counters WHERE license_id = ?1 AND minute >= ?2 AND minute < ?3",
            &[Arg::Bytes(&id), int(hour), int(hour + HOUR_SECS)],
        )? {
            units.insert(row.text(0)?.to_owned());
        }
        units.insert(UNIT_MINUTES.to_owned());
        if units.len() > crate::SERIES_MAX {
            return Err(refuse(
                Refusal::Invalid,
                format!("more than {} units in one hour", crate::SERIES_MAX),
            ));
        }
        let secret = self.secret()?;
        let mut nonce = Zeroizing::new([0u8; REPORT_NONCE_BYTES]);
        escx::keyfile::fill_random(nonce.as_mut())?;
        let mut series = Vec::with_capacity(units.len());
        let mut openings: Vec<SeriesOpening> = Vec::with_capacity(units.len());
        for unit in &units {
            let values = Self::minutes(&transaction, &id, unit, hour)?;
            let mut total: u64 = 0;
            let mut sum = Scalar::ZERO;
            let mut commitments = Vec::with_capacity(MINUTES);
            let mut blindings = [Scalar::ZERO; MINUTES];
            for (minute, value) in (0u8..).zip(values.iter()) {
                let r = report_blinding(&secret, &id, Some(&nonce), unit, hour, minute);
                commitments.push(ByteBuf::from(commit(*value, &r).compress().to_bytes().to_vec()));
                blindings[usize::from(minute)] = r;
                sum += r;
                total = total.checked_add(*value).ok_or_else(|| {
                    refuse(
                        Refusal::Overflow,
                        format!("the {unit} total of hour {} overflows", format_hour(hour)),
                    )
                })?;
            }
            let opened = (telemetry == Telemetry::Share)
                .then(|| HourOpening { total, blinding: ByteBuf::from(sum.to_bytes().to_vec()) });
            series.push(Series { unit: unit.clone(), commitments, opened });
            openings.push((values, blindings));
        }
        let mut payload = ReportPayload {
            v: REPORT_VERSION,
            package: license.package.clone(),
            license_id: ByteBuf::from(id.to_vec()),
            hour,
            seq,
            previous: ByteBuf::from(previous),
            series,
            minutes_range: ByteBuf::new(),
            hour_range: ByteBuf::new(),
            sums_range: ByteBuf::new(),
        };
        // Every value the operator bills or releases, proven in range (metering.md §3.4).
        prove_report_ranges(&mut payload, &openings)?;
        let envelope =
            self.wallet.seal_as_holder(package, &id, CONTEXT_REPORT, escx::cbor::encode(&payload))?;
        let hash = report_hash(&envelope);
        let file =
            ReportFile { v: 1, certificate: ByteBuf::from(certificate), report: ByteBuf::from(envelope) }
                .to_cbor();
        transaction.exec(
            "INSERT INTO reports (license_id, seq, hour, hash, file, nonce) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                Arg::Bytes(&id),
                int(seq),
                int(hour),
                Arg::Bytes(&hash[..]),
                Arg::Bytes(&file),
                Arg::Bytes(&nonce[..]),
            ],
        )?;
        transaction.commit()?;
        Ok(MadeReport {
            file,
            seq,
            license_id: id_hex,
            units: units.into_iter().collect(),
            again: false,
            telemetry,
        })
    }

    /// Closes `period` for the license of `package` (metering.md §4): the total of every
    /// unit over the period's reported hours and the sum of their blindings, and the
    /// chain position of the period's last report. Refused while an hour of the period
    /// holds records but no report, or before the period has ended unless `early`.
    /// Closing again returns the stored close.
    pub fn close(
        &self,
        package: &str,
        period: Period,
        license: Option<&str>,
        early: bool,
        now: UnixSeconds,
    ) -> Result<MadeClose, Error> {
        let candidates = self.wallet.licenses_during(package, period.start(), period.end())?;
        let (license, certificate) = match license {
            Some(wanted) => candidates
                .into_iter()
                .find(|(l, _)| hex::encode(&l.license_id) == wanted)
                .ok_or_else(|| {
                    refuse(Refusal::NotFound, format!("no license {wanted} of {package} valid in {period}"))
                })?,
            None => {
                let mut reported = Vec::new();
                for (license, certificate) in candidates {
                    let id = license_id(&license)?;
                    let count = self
                        .db
                        .one(
                            "SELECT count(*) FROM reports WHERE license_id = ?1 AND hour >= ?2 AND hour < ?3",
                            &[Arg::Bytes(&id), int(period.start()), int(period.end())],
                        )?
                        .int(0)?;
                    reported.push((count > 0, license, certificate));
                }
                let with_reports: Vec<_> = reported.iter().filter(|(r, _, _)| *r).collect();
                match (with_reports.as_slice(), reported.as_slice()) {
                    ([one], _) => (one.1.clone(), one.2.clone()),
                    ([], [(_, license, certificate), ..]) => (license.clone(), certificate.clone()),
                    ([], []) => {
                        return Err(refuse(
                            Refusal::NotFound,
                            format!("no license for {package} in this wallet is valid in {period}"),
                        ));
                    }
                    (several, _) => {
                        let ids: Vec<String> =
                            several.iter().map(|(_, l, _)| hex::encode(&l.license_id)).collect();
                        return Err(refuse(
                            Refusal::Invalid,
                            format!(
                                "several licenses of {package} have reports in {period} ({}); close each with --license ID",
                                ids.join(", ")
                            ),
                        ));
                    }
                }
            }
        };
        let id = license_id(&license)?;
        let id_hex = hex::encode(id);
        let transaction = self.db.begin()?;
        let stored = transaction
            .row(
                "SELECT file FROM closes WHERE license_id = ?1 AND period = ?2",
                &[Arg::Bytes(&id), Arg::Text(&period.to_string())],
            )?
            .map(|r| r.bytes(0).map(<[u8]>::to_vec))
            .transpose()?;
        if let Some(file) = stored {
            let (totals, through_seq) = close_summary(&file)?;
            return Ok(MadeClose { file, license_id: id_hex, totals, through_seq, again: true });
        }
        if now < period.end() && !early && now < license.not_after {
            return Err(refuse(
                Refusal::TooEarly,
                format!(
                    "period {period} ends at {}; closing it now ends metering for the rest of it (pass --early to do that)",
                    escx::timestamp::format_rfc3339(period.end())
                ),
            ));
        }
        let mut reports: Vec<StoredReport> = Vec::new();
        for r in transaction.rows(
            "SELECT seq, hour, hash, file, nonce FROM reports WHERE license_id = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY seq",
            &[Arg::Bytes(&id), int(period.start()), int(period.end())],
        )? {
            reports.push(StoredReport {
                seq: r.uint(0)?,
                hour: UnixSeconds(r.uint(1)?),
                hash: r.bytes(2)?.to_vec(),
                file: r.bytes(3)?.to_vec(),
                nonce: stored_nonce(r.opt_bytes(4)?)?,
            });
        }
        let reported: BTreeSet<UnixSeconds> = reports.iter().map(|r| r.hour).collect();
        {
            let rows = transaction.rows(
                "SELECT DISTINCT minute - minute % 3600 FROM counters WHERE license_id = ?1 AND minute >= ?2 AND minute < ?3",
                &[Arg::Bytes(&id), int(period.start()), int(period.end())],
            )?;
            let mut unreported = Vec::new();
            for row in rows {
                let hour = UnixSeconds(row.uint(0)?);
                if !reported.contains(&hour) {
                    unreported.push(format_hour(hour));
                }
            }
            if !unreported.is_empty() {
                return Err(refuse(
                    Refusal::HoursUnreported,
                    format!(
                        "usage is recorded in hours of {period} that have no report ({}); report those hours first",
                        unreported.join(", ")
                    ),
                ));
            }
        }
        let (through_seq, through_hash) = match reports.last() {
            Some(last) => (last.seq, last.hash.clone()),
            None => transaction
                .row(
                    "SELECT seq, hash FROM reports WHERE license_id = ?1 AND hour < ?2 ORDER BY seq DESC LIMIT 1",
                    &[Arg::Bytes(&id), int(period.start())],
                )?
                .map(|r| Ok::<_, Error>((r.uint(0)?, r.bytes(1)?.to_vec())))
                .transpose()?
                .unwrap_or((0, vec![0u8; 32])),
        };
        let secret = self.secret()?;
        let mut totals: BTreeMap<String, (u64, Scalar)> = BTreeMap::new();
        for StoredReport { hour, file, nonce, .. } in &reports {
            let hour = *hour;
            for unit in units_of(file)? {
                let values = Self::minutes(&transaction, &id, &unit, hour)?;
                let entry = totals.entry(unit.clone()).or_insert((0, Scalar::ZERO));
                for (minute, value) in (0u8..).zip(values.iter()) {
                    entry.0 = entry.0.checked_add(*value).ok_or_else(|| {
                        refuse(Refusal::Overflow, format!("the {unit} total of {period} overflows"))
                    })?;
                    entry.1 += report_blinding(&secret, &id, nonce.as_ref(), &unit, hour, minute);
                }
            }
        }
        let payload = ClosePayload {
            v: 1,
            package: license.package.clone(),
            license_id: ByteBuf::from(id.to_vec()),
            period: period.to_string(),
            through_seq,
            through_hash: ByteBuf::from(through_hash),
            totals: totals
                .iter()
                .map(|(unit, (total, sum))| PeriodTotal {
                    unit: unit.clone(),
                    total: *total,
                    blinding: ByteBuf::from(sum.to_bytes().to_vec()),
                })
                .collect(),
        };
        let envelope =
            self.wallet.seal_as_holder(package, &id, CONTEXT_CLOSE, escx::cbor::encode(&payload))?;
        let file =
            CloseFile { v: 1, certificate: ByteBuf::from(certificate), close: ByteBuf::from(envelope) }
                .to_cbor();
        transaction.exec(
            "INSERT INTO closes (license_id, period, file) VALUES (?1, ?2, ?3)",
            &[Arg::Bytes(&id), Arg::Text(&period.to_string()), Arg::Bytes(&file)],
        )?;
        transaction.commit()?;
        Ok(MadeClose {
            file,
            license_id: id_hex,
            totals: totals.into_iter().map(|(u, (t, _))| (u, t)).collect(),
            through_seq,
            again: false,
        })
    }

    /// Opens a reported hour, or one minute of it, for every unit of the report or for
    /// `unit` only (metering.md §5): the values and blindings a dispute needs.
    pub fn open_hour(
        &self,
        package: &str,
        hour: UnixSeconds,
        minute: Option<u8>,
        unit: Option<&str>,
    ) -> Result<OpeningFile, Error> {
        if minute.is_some_and(|m| usize::from(m) >= MINUTES) {
            return Err(refuse(Refusal::Invalid, "a minute is 0 to 59"));
        }
        let (license, _) = self.license(package, hour, hour + HOUR_SECS)?;
        let id = license_id(&license)?;
        let (file, nonce) = self
            .db
            .row(
                "SELECT file, nonce FROM reports WHERE license_id = ?1 AND hour = ?2",
                &[Arg::Bytes(&id), int(hour)],
            )?
            .map(|r| Ok::<_, Error>((r.bytes(0)?.to_vec(), stored_nonce(r.opt_bytes(1)?)?)))
            .transpose()?
            .ok_or_else(|| {
                refuse(
                    Refusal::NotFound,
                    format!("hour {} of {package} has not been reported", format_hour(hour)),
                )
            })?;
        let units: Vec<String> =
            units_of(&file)?.into_iter().filter(|u| unit.is_none_or(|wanted| wanted == u)).collect();
        if units.is_empty() {
            return Err(refuse(
                Refusal::NotFound,
                format!("the report of hour {} has no {} series", format_hour(hour), unit.unwrap_or("")),
            ));
        }
        let secret = self.secret()?;
        let mut openings = Vec::new();
        for unit in units {
            let values = Self::minutes(&self.db, &id, &unit, hour)?;
            let (value, r) = match minute {
                Some(m) => {
                    (values[usize::from(m)], report_blinding(&secret, &id, nonce.as_ref(), &unit, hour, m))
                }
                None => {
                    let mut sum = Scalar::ZERO;
                    for m in (0u8..).take(MINUTES) {
                        sum += report_blinding(&secret, &id, nonce.as_ref(), &unit, hour, m);
                    }
                    (values.iter().sum(), sum)
                }
            };
            openings.push(UnitOpening { unit, value, blinding: ByteBuf::from(r.to_bytes().to_vec()) });
        }
        Ok(OpeningFile {
            v: 1,
            package: license.package.clone(),
            license_id: ByteBuf::from(id.to_vec()),
            hour,
            minute,
            openings,
        })
    }
}

/// One stored report of a period, as a close reads it.
struct StoredReport {
    seq: u64,
    hour: UnixSeconds,
    hash: Vec<u8>,
    file: Vec<u8>,
    nonce: Option<[u8; REPORT_NONCE_BYTES]>,
}

/// A report's stored nonce: absent for a report made before nonces.
fn stored_nonce(cell: Option<&[u8]>) -> Result<Option<[u8; REPORT_NONCE_BYTES]>, Error> {
    cell.map(|bytes| {
        <[u8; REPORT_NONCE_BYTES]>::try_from(bytes)
            .map_err(|_| Error::stored(format!("a report nonce of {} bytes in the meter", bytes.len())))
    })
    .transpose()
}

fn closed(db: &impl Sql, id: &[u8; 16], period: Period) -> Result<bool, Error> {
    let row = db.one(
        "SELECT count(*) FROM closes WHERE license_id = ?1 AND period = ?2",
        &[Arg::Bytes(id), Arg::Text(&period.to_string())],
    )?;
    Ok(row.int(0)? > 0)
}

/// The units of a report file this meter made.
fn units_of(file: &[u8]) -> Result<Vec<String>, Error> {
    let file = ReportFile::from_cbor(file)?;
    let envelope = escx::envelope::Envelope::from_cbor(&file.report)?;
    let payload: ReportPayload = crate::decode(envelope.payload_unverified(), "meter report")?;
    Ok(payload.series.into_iter().map(|s| s.unit).collect())
}

fn close_summary(file: &[u8]) -> Result<(Vec<(String, u64)>, u64), Error> {
    let file = CloseFile::from_cbor(file)?;
    let envelope = escx::envelope::Envelope::from_cbor(&file.close)?;
    let payload: ClosePayload = crate::decode(envelope.payload_unverified(), "period close")?;
    Ok((payload.totals.into_iter().map(|t| (t.unit, t.total)).collect(), payload.through_seq))
}
