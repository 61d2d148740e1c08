//! Metering end to end (metering.md, privacy.md): the customer's meter, hourly reports,
//! the operator's ingest, period close, openings, billing, k-anonymity and the budget.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use escx::Fault as _;
use escx_manifest::Micros;
use escx_store::Sql as _;
use escx_store::test_util::Cluster;
use std::path::PathBuf;

use curve25519_dalek::scalar::Scalar;
use escx::keyfile::Protection;
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx_licensing::issuer::Issuer;
use escx_licensing::messages::{BundleChain, LicensePayload};
use escx_licensing::trust::Trust;
use escx_licensing::wallet::{Verified, Wallet};
use escx_metering::meter::{Meter, Telemetry};
use escx_metering::operator::{Aggregate, Operator, Outcome};
use escx_metering::store::OperatorStore;
use escx_metering::{
    self as metering, CONTEXT_CLOSE, CONTEXT_REPORT, CloseFile, ClosePayload, HourOpening, OpeningFile,
    Period, PeriodTotal, ReportFile, ReportPayload, Series,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_bytes::ByteBuf;

/// 2027-01-15T08:00:00Z, on the hour.
const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const H: u64 = 3600;

const MANIFEST: &str = r#"[package]
name = "acme/thermal"
version = "1.2.0"

[pricing]
license_type = "paid"
currency = "USD"

[[pricing.tier]]
name = "metered"
price = "6.00"
unit = "hour"
telemetry = "private"

[[pricing.tier]]
name = "metered-share"
price = "4.80"
unit = "hour"
telemetry = "share"

[telemetry]
metrics = ["invocations", "compute_ms"]
window = "24h"
cohort_min_size = 50
epsilon = 1.0
"#;

struct World {
    tmp: tempfile::TempDir,
    issuer: Issuer,
    chain: BundleChain,
    package: PathBuf,
    policy: TrustPolicy,
    publisher: SecretKey,
}

fn world() -> World {
    world_on(None)
}

/// [`world`] with the issuer's store in the PostgreSQL database at `database`, when given.
fn world_on(database: Option<&str>) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("issuer");
    let issuer = match database {
        None => Issuer::init(&dir, "Demo Licensing", &Protection::Unencrypted, T0).unwrap(),
        Some(url) => {
            Issuer::init_postgres(&dir, url, "Demo Licensing", &Protection::Unencrypted, T0).unwrap()
        }
    };
    let publisher = SecretKey::generate();
    let dir = tmp.path().join("thermal");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("manifest.toml"), MANIFEST).unwrap();
    std::fs::write(dir.join("src/model.py"), "# model\n").unwrap();
    let package = tmp.path().join("thermal.escx");
    let options = escx::pack::PackOptions { signed_at: Some(T0), ..Default::default() };
    escx::pack::pack_dir(&dir, &package, &[&publisher], &options).unwrap();
    let policy = TrustPolicy::from_keys(vec![publisher.public_key().clone()]);
    issuer.register_package(&package, &policy, T0).unwrap();
    let chain = issuer.bundle(T0).unwrap();
    World { tmp, issuer, chain, package, policy, publisher }
}

/// What the metered program does first: verify its license against the issuer it
/// ships with; usage is then recorded against exactly that license.
fn verified(wallet: &Wallet, chain: &BundleChain) -> Verified {
    wallet.verify(&Trust::chain(chain), "acme/thermal", None, None, T0 + 10).unwrap()
}

impl World {
    /// acme/thermal at `version`, its metered tier at `price` an hour, telemetry `epsilon`
    /// over `window`, signed by the publisher.
    fn repack(&self, version: &str, price: &str, epsilon: &str, window: &str) -> PathBuf {
        let dir = self.tmp.path().join(format!("thermal-{version}-{price}-{epsilon}-{window}"));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        let manifest = MANIFEST
            .replace("version = \"1.2.0\"", &format!("version = \"{version}\""))
            .replace("price = \"6.00\"", &format!("price = \"{price}\""))
            .replace("epsilon = 1.0", &format!("epsilon = {epsilon}"))
            .replace("window = \"24h\"", &format!("window = \"{window}\""));
        std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
        std::fs::write(dir.join("src/model.py"), "# model\n").unwrap();
        let package = dir.with_extension("escx");
        let options = escx::pack::PackOptions { signed_at: Some(T0), ..Default::default() };
        escx::pack::pack_dir(&dir, &package, &[&self.publisher], &options).unwrap();
        package
    }

    fn wallet(&self, name: &str, tier: &str, licenses: usize) -> (Wallet, Vec<LicensePayload>) {
        let wallet = Wallet::open(&self.tmp.path().join(name)).unwrap();
        let request =
            wallet.request(&self.chain, &"acme/thermal".parse().unwrap(), tier, licenses, T0).unwrap();
        wallet.finalize(&self.issuer.issue(&request, T0).unwrap()).unwrap();
        let mut out = Vec::new();
        for _ in 0..licenses {
            let sealed = wallet.redeem_tier("acme/thermal", Some(tier)).unwrap();
            out.push(wallet.install(&self.issuer.redeem(&sealed, T0 + 10).unwrap()).unwrap());
        }
        (wallet, out)
    }

    fn operator(&self) -> Operator {
        let mut operator =
            Operator::init(&self.tmp.path().join("op"), std::slice::from_ref(&self.chain)).unwrap();
        operator.add_package(&self.package, &self.policy, T0).unwrap();
        operator
    }

    /// An operator whose store is in memory (the reference the SQL store is compared with).
    fn memory_operator(&self) -> Operator<escx_metering::store::MemoryOperatorStore> {
        let mut operator = Operator::in_memory(std::slice::from_ref(&self.chain)).unwrap();
        operator.add_package(&self.package, &self.policy, T0).unwrap();
        operator
    }

    /// An operator directory `name` over the PostgreSQL database at `url`.
    fn pg_operator(&self, name: &str, url: &str) -> Operator {
        let mut operator =
            Operator::init_postgres(&self.tmp.path().join(name), url, std::slice::from_ref(&self.chain))
                .unwrap();
        assert!(operator.is_postgres());
        operator.add_package(&self.package, &self.policy, T0).unwrap();
        operator
    }
}

fn code(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Stored => "stored",
        Outcome::Duplicate => "duplicate",
        Outcome::Equivocation => "equivocation",
        Outcome::Refused(e) => e.code(),
    }
}

fn ingest_one(operator: &mut Operator, file: &[u8], now: u64) -> &'static str {
    let results = operator.ingest(&[file.to_vec()], escx::UnixSeconds(now)).unwrap();
    code(&results[0].outcome)
}

/// A report signed by the holder of `license`, with the given per-unit minute values
/// and blindings derived from `secret` (for cases the meter itself refuses to make).
#[allow(clippy::too_many_arguments)]
fn craft(
    wallet: &Wallet,
    license: &LicensePayload,
    certificate: &[u8],
    hour: u64,
    seq: u64,
    previous: [u8; 32],
    units: &[(&str, [u64; 60])],
    share: bool,
) -> Vec<u8> {
    let secret = [9u8; 32];
    let id: [u8; 16] = license.license_id.as_slice().try_into().unwrap();
    let mut openings = Vec::new();
    let series = units
        .iter()
        .map(|(unit, values)| {
            let mut sum = Scalar::ZERO;
            let mut blindings = [Scalar::ZERO; 60];
            let commitments = (0..60)
                .map(|m| {
                    let r = metering::blinding(&secret, &id, unit, escx::UnixSeconds(hour), m as u8);
                    blindings[m] = r;
                    sum += r;
                    ByteBuf::from(
                        escx_licensing::pedersen::commit(values[m], &r).compress().to_bytes().to_vec(),
                    )
                })
                .collect();
            openings.push((*values, blindings));
            let opened = share.then(|| HourOpening {
                total: values.iter().sum(),
                blinding: ByteBuf::from(sum.to_bytes().to_vec()),
            });
            Series { unit: unit.to_string(), commitments, opened }
        })
        .collect();
    let mut payload = ReportPayload {
        v: metering::REPORT_VERSION,
        package: "acme/thermal".parse().unwrap(),
        license_id: license.license_id.clone(),
        hour: escx::UnixSeconds(hour),
        seq,
        previous: ByteBuf::from(previous.to_vec()),
        series,
        minutes_range: ByteBuf::new(),
        hour_range: ByteBuf::new(),
        sums_range: ByteBuf::new(),
    };
    // What an honest meter proves; a crafted report the prover refuses (values out of
    // range) goes without proofs, and the operator refuses it.
    let _ = metering::prove_report_ranges(&mut payload, &openings);
    let envelope =
        wallet.seal_as_holder("acme/thermal", &id, CONTEXT_REPORT, escx::cbor::encode(&payload)).unwrap();
    ReportFile { v: 1, certificate: ByteBuf::from(certificate.to_vec()), report: ByteBuf::from(envelope) }
        .to_cbor()
}

fn hash_of(file: &[u8]) -> [u8; 32] {
    metering::report_hash(&ReportFile::from_cbor(file).unwrap().report)
}

/// Each license's first `hours` private-tier reports (hours 1.. after `T0`, the minute
/// `values` every hour), chained in order, license after license.
fn chains(wallet: &Wallet, licenses: &[LicensePayload], hours: u64, values: [u64; 60]) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for license in licenses {
        let cert = certificate(wallet, license);
        let mut previous = [0u8; 32];
        for i in 0..hours {
            let file = craft(
                wallet,
                license,
                &cert,
                (T0 + (i + 1) * H).0,
                i + 1,
                previous,
                &[("minutes", values)],
                false,
            );
            previous = hash_of(&file);
            files.push(file);
        }
    }
    files
}

fn certificate(wallet: &Wallet, license: &LicensePayload) -> Vec<u8> {
    wallet
        .licenses_during("acme/thermal", escx::UnixSeconds(0), escx::UnixSeconds(u64::MAX))
        .unwrap()
        .into_iter()
        .find(|(l, _)| l.license_id == license.license_id)
        .unwrap()
        .1
}

#[test]
fn a_private_month_is_reported_closed_and_billed() {
    let w = world();
    let (wallet, _) = w.wallet("wallet", "metered", 1);
    let meter = Meter::open(&wallet).unwrap();
    let v = verified(&wallet, &w.chain);
    // Hour 1: minutes 0, 1 and 59 used; hour 2: minute 30.
    for (at, amount) in
        [(T0 + H, 2), (T0 + H + 5, 1), (T0 + H + 61, 4), (T0 + 2 * H - 1, 1), (T0 + 2 * H + 1800, 9)]
    {
        meter.record(&v, "invocations", amount, at).unwrap();
    }
    meter.record(&v, "compute_ms", 1200, T0 + H + 70).unwrap();
    let now = T0 + 3 * H;
    let r1 = meter.report("acme/thermal", T0 + H, Telemetry::Private, now).unwrap();
    assert_eq!(r1.units, ["compute_ms", "invocations", "minutes"]);
    // Reporting again is a retry: the very same bytes.
    let again = meter.report("acme/thermal", T0 + H, Telemetry::Private, now).unwrap();
    assert!(again.again && again.file == r1.file);
    let r2 = meter.report("acme/thermal", T0 + 2 * H, Telemetry::Private, now).unwrap();
    assert_eq!(r2.seq, 2);
    // A reported hour takes no more records.
    let err = meter.record(&v, "invocations", 1, T0 + H + 100).unwrap_err();
    assert_eq!(err.code(), "hour-reported");

    let mut operator = w.operator();
    let results = operator.ingest(&[r1.file.clone(), r2.file.clone()], now).unwrap();
    assert_eq!(results.iter().map(|r| code(&r.outcome)).collect::<Vec<_>>(), ["stored", "stored"]);

    let period = Period::of(T0);
    let close = meter.close("acme/thermal", period, None, false, period.end() + 10).unwrap();
    assert_eq!(
        close.totals,
        [("compute_ms".to_string(), 1200), ("invocations".to_string(), 17), ("minutes".to_string(), 4)]
    );
    let closed = operator.close(&close.file, period.end() + 20).unwrap();
    assert_eq!((closed.reports, closed.again), (2, false));
    assert!(operator.close(&close.file, period.end() + 30).unwrap().again);
    // Hours of a closed period are refused, on both sides.
    assert_eq!(meter.record(&v, "invocations", 1, T0 + 5 * H).unwrap_err().code(), "period-closed");

    let charges = operator.billing(period).unwrap().charges;
    assert_eq!(charges.len(), 1);
    // 4 minutes at 6.00 an hour: 0.40.
    assert_eq!((charges[0].minutes, charges[0].gross_micros.0), (4, 400_000));
    // The licenses of a metered tier cost nothing at purchase: usage is the bill.
    assert_eq!(w.issuer.sales().unwrap()[0].total_micros, Micros(0));
    assert_eq!(charges[0].id, format!("operator:{}:usage:{}:{period}", operator.id(), charges[0].license_id));
}

#[test]
fn openings_prove_minutes_and_hours_and_wrong_values_fail() {
    let w = world();
    let (wallet, _) = w.wallet("wallet", "metered", 1);
    let meter = Meter::open(&wallet).unwrap();
    let v = verified(&wallet, &w.chain);
    meter.record(&v, "invocations", 3, T0 + H + 17 * 60 + 5).unwrap();
    meter.record(&v, "invocations", 5, T0 + H + 40 * 60).unwrap();
    let report = meter.report("acme/thermal", T0 + H, Telemetry::Private, T0 + 2 * H).unwrap();
    let mut operator = w.operator();
    assert_eq!(ingest_one(&mut operator, &report.file, (T0 + 2 * H).0), "stored");

    let minute = meter.open_hour("acme/thermal", T0 + H, Some(17), Some("invocations")).unwrap();
    let verdict = operator.check_opening(&minute.to_cbor()).unwrap();
    assert_eq!(verdict.values, [("invocations".to_string(), 3)]);
    let hour = meter.open_hour("acme/thermal", T0 + H, None, None).unwrap();
    let verdict = operator.check_opening(&hour.to_cbor()).unwrap();
    assert_eq!(verdict.values, [("invocations".to_string(), 8), ("minutes".to_string(), 2)]);
    // An empty minute opens to 0 and nothing else.
    let empty = meter.open_hour("acme/thermal", T0 + H, Some(3), Some("invocations")).unwrap();
    assert_eq!(operator.check_opening(&empty.to_cbor()).unwrap().values[0].1, 0);

    for (mut opening, wrong) in [(minute, 4), (hour, 7), (empty, 1)] {
        opening.openings[0].value = wrong;
        let err = operator.check_opening(&opening.to_cbor()).unwrap_err();
        assert_eq!(err.code(), "opening-mismatch");
    }
    let other =
        OpeningFile { hour: T0 + 5 * H, ..meter.open_hour("acme/thermal", T0 + H, Some(1), None).unwrap() };
    assert_eq!(operator.check_opening(&other.to_cbor()).unwrap_err().code(), "meter-not-found");
}

#[test]
fn every_bad_report_has_its_own_code() {
    let w = world();
    let (wallet, licenses) = w.wallet("wallet", "metered", 1);
    let license = &licenses[0];
    let cert = certificate(&wallet, license);
    let mut operator = w.operator();
    let zero = [0u64; 60];
    let mut one = [0u64; 60];
    one[0] = 1;
    let units = [("minutes", one)];
    let now = T0 + 10 * H;

    // Out of order: report 2 before report 1.
    let first = craft(&wallet, license, &cert, (T0 + H).0, 1, [0; 32], &units, false);
    let second = craft(&wallet, license, &cert, (T0 + 2 * H).0, 2, hash_of(&first), &units, false);
    assert_eq!(ingest_one(&mut operator, &second, now.0), "report-out-of-order");
    // Too early, then fine.
    assert_eq!(ingest_one(&mut operator, &first, (T0 + H + 10).0), "report-too-early");
    assert_eq!(ingest_one(&mut operator, &first, now.0), "stored");
    // Replayed: a duplicate, nothing new stored.
    assert_eq!(ingest_one(&mut operator, &first, now.0), "duplicate");
    // A report that does not name the previous one.
    let unchained = craft(&wallet, license, &cert, (T0 + 2 * H).0, 2, [7; 32], &units, false);
    assert_eq!(ingest_one(&mut operator, &unchained, now.0), "report-out-of-order");
    // Too late.
    assert_eq!(ingest_one(&mut operator, &second, (T0 + 3 * H + 36 * 86_400).0), "report-too-late");
    // A bad signature: flip a byte of the holder's signature.
    let mut file = ReportFile::from_cbor(&second).unwrap();
    let last = file.report.len() - 1;
    file.report[last] ^= 1;
    assert_eq!(ingest_one(&mut operator, &file.to_cbor(), now.0), "report-signature-invalid");
    // A shared total on a private tier, and a series the package does not meter.
    let shared = craft(&wallet, license, &cert, (T0 + 2 * H).0, 2, hash_of(&first), &units, true);
    assert_eq!(ingest_one(&mut operator, &shared, now.0), "report-tier-mismatch");
    let unmetered = craft(
        &wallet,
        license,
        &cert,
        (T0 + 2 * H).0,
        2,
        hash_of(&first),
        &[("bytes", zero), ("minutes", one)],
        false,
    );
    assert_eq!(ingest_one(&mut operator, &unmetered, now.0), "report-invalid");
    // Expired: an hour after the license's window.
    let late_hour = license.not_after.floor(H) + H;
    let expired = craft(&wallet, license, &cert, late_hour.0, 2, hash_of(&first), &units, false);
    assert_eq!(ingest_one(&mut operator, &expired, (late_hour + 2 * H).0), "license-expired");
    // Revoked.
    assert_eq!(ingest_one(&mut operator, &second, now.0), "stored");
    w.issuer.revoke(&license.license_id, "chargeback", now).unwrap();
    operator.accept_crl(&w.issuer.crl(now).unwrap()).unwrap();
    let third = craft(&wallet, license, &cert, (T0 + 3 * H).0, 3, hash_of(&second), &units, false);
    assert_eq!(ingest_one(&mut operator, &third, now.0), "license-revoked");

    // Foreign: a license of an issuer the operator does not trust.
    let other = tempfile::tempdir().unwrap();
    let foreign = Issuer::init(&other.path().join("issuer"), "Other", &Protection::Unencrypted, T0).unwrap();
    foreign.register_package(&w.package, &w.policy, T0).unwrap();
    let foreign_wallet = Wallet::open(&other.path().join("wallet")).unwrap();
    let chain = foreign.bundle(T0).unwrap();
    let request = foreign_wallet.request(&chain, &"acme/thermal".parse().unwrap(), "metered", 1, T0).unwrap();
    foreign_wallet.finalize(&foreign.issue(&request, T0).unwrap()).unwrap();
    let sealed = foreign_wallet.redeem("acme/thermal").unwrap();
    let foreign_license = foreign_wallet.install(&foreign.redeem(&sealed, T0 + 10).unwrap()).unwrap();
    let foreign_cert = certificate(&foreign_wallet, &foreign_license);
    let report =
        craft(&foreign_wallet, &foreign_license, &foreign_cert, (T0 + H).0, 1, [0; 32], &units, false);
    assert_eq!(ingest_one(&mut operator, &report, now.0), "license-wrong-issuer");
    // A certificate swapped in for another license's: the holder signature fails.
    let mut swapped = ReportFile::from_cbor(&report).unwrap();
    swapped.certificate = ByteBuf::from(cert.clone());
    assert_eq!(ingest_one(&mut operator, &swapped.to_cbor(), now.0), "report-signature-invalid");
}

#[test]
fn ingesting_a_thousand_reports_twice_stores_each_once_and_equivocation_is_evidence() {
    let w = world();
    let (wallet, licenses) = w.wallet("wallet", "metered", 10);
    let mut values = [0u64; 60];
    values[5] = 1;
    let mut files = chains(&wallet, &licenses, 100, values);
    // Shuffled order: ingest sorts each license's chain.
    files.reverse();
    let mut operator = w.operator();
    let now = T0 + 200 * H;
    let first = operator.ingest(&files, now).unwrap();
    assert!(
        first.iter().all(|r| matches!(r.outcome, Outcome::Stored)),
        "{:?}",
        first.iter().find(|r| !matches!(r.outcome, Outcome::Stored))
    );
    let second = operator.ingest(&files, now).unwrap();
    assert!(second.iter().all(|r| matches!(r.outcome, Outcome::Duplicate)));
    let db = rusqlite::Connection::open(w.tmp.path().join("op/operator.sqlite")).unwrap();
    let count: i64 = db.query_row("SELECT count(*) FROM reports", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 1000);

    // Equivocation: another report for license 0's hour 1, with other values.
    let license = &licenses[0];
    let cert = certificate(&wallet, license);
    let mut other = values;
    other[6] = 1;
    let twin = craft(&wallet, license, &cert, (T0 + H).0, 1, [0; 32], &[("minutes", other)], false);
    assert_eq!(ingest_one(&mut operator, &twin, now.0), "equivocation");
    assert_eq!(ingest_one(&mut operator, &twin, now.0), "equivocation");
    let evidence = operator.evidence(None).unwrap();
    assert_eq!(evidence.len(), 1);
    assert_eq!(evidence[0].second, ReportFile::from_cbor(&twin).unwrap().report.to_vec());
    let holder = escx::sig::PublicKey::from_bytes(&license.holder_key).unwrap().id();
    assert_eq!(operator.evidence(Some(holder)).unwrap().len(), 1);
    assert_eq!(operator.evidence(Some(escx::sig::KeyId([0; 16]))).unwrap().len(), 0);
    let count: i64 = db.query_row("SELECT count(*) FROM reports", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 1000, "the second report is not counted");
    let flagged: i64 = db.query_row("SELECT sum(flagged) FROM licenses", [], |r| r.get(0)).unwrap();
    assert_eq!(flagged, 1);
}

#[test]
fn a_close_that_does_not_match_or_skips_an_hour_is_refused() {
    let w = world();
    let (wallet, licenses) = w.wallet("wallet", "metered", 1);
    let license = &licenses[0];
    let meter = Meter::open(&wallet).unwrap();
    let v = verified(&wallet, &w.chain);
    meter.record(&v, "invocations", 2, T0 + H).unwrap();
    meter.record(&v, "invocations", 3, T0 + 2 * H).unwrap();
    let now = T0 + 3 * H;
    let r1 = meter.report("acme/thermal", T0 + H, Telemetry::Private, now).unwrap();
    let r2 = meter.report("acme/thermal", T0 + 2 * H, Telemetry::Private, now).unwrap();
    let mut operator = w.operator();
    assert_eq!(ingest_one(&mut operator, &r1.file, now.0), "stored");
    let period = Period::of(T0);
    let close = meter.close("acme/thermal", period, None, true, now).unwrap();
    // Hour 2 never reached the operator.
    assert_eq!(operator.close(&close.file, now).unwrap_err().code(), "report-missing");
    assert_eq!(ingest_one(&mut operator, &r2.file, now.0), "stored");

    // A close signed by the holder that claims less than the commitments hold.
    let file = CloseFile::from_cbor(&close.file).unwrap();
    let envelope = escx::envelope::Envelope::from_cbor(&file.close).unwrap();
    let mut payload: ClosePayload = escx::cbor::decode_exact(envelope.payload_unverified(), "close").unwrap();
    let honest = payload.clone();
    let invocations = payload.totals.iter_mut().find(|t| t.unit == "invocations").unwrap();
    invocations.total -= 1;
    let forged = resign(&wallet, license, &file, &payload);
    assert_eq!(operator.close(&forged, now).unwrap_err().code(), "close-mismatch");
    // One that leaves out a unit, and one that stops before the period's last report.
    let mut fewer = honest.clone();
    fewer.totals.retain(|t| t.unit != "invocations");
    assert_eq!(
        operator.close(&resign(&wallet, license, &file, &fewer), now).unwrap_err().code(),
        "close-mismatch"
    );
    let mut short = honest.clone();
    short.through_seq = 1;
    short.through_hash = ByteBuf::from(hash_of(&r1.file).to_vec());
    assert_eq!(
        operator.close(&resign(&wallet, license, &file, &short), now).unwrap_err().code(),
        "close-mismatch"
    );
    // The honest close is accepted; a different one afterwards is a conflict kept as evidence.
    operator.close(&close.file, now).unwrap();
    // Issue 27 (17): the next, empty period's close must name the last report before its
    // end (report 2), not an earlier one.
    let next = Period::of(period.end());
    let mut stale = honest.clone();
    stale.period = next.to_string();
    stale.totals.clear();
    stale.through_seq = 1;
    stale.through_hash = ByteBuf::from(hash_of(&r1.file).to_vec());
    let err = operator.close(&resign(&wallet, license, &file, &stale), next.end() + 10).unwrap_err();
    assert_eq!(err.code(), "close-mismatch");
    assert!(err.to_string().contains("but report 2 is of hour"), "{err}");
    let mut empty = stale.clone();
    empty.through_seq = 2;
    empty.through_hash = ByteBuf::from(hash_of(&r2.file).to_vec());
    let closed = operator.close(&resign(&wallet, license, &file, &empty), next.end() + 10).unwrap();
    assert_eq!(closed.reports, 0);
    let mut extra = honest;
    extra.totals.push(PeriodTotal { unit: "zzz".into(), total: 0, blinding: ByteBuf::from(vec![0; 32]) });
    assert_eq!(
        operator.close(&resign(&wallet, license, &file, &extra), now).unwrap_err().code(),
        "close-conflict"
    );
    assert_eq!(operator.evidence(None).unwrap()[0].kind, "close");
    // Reports of a closed period are refused.
    let r3 = craft(
        &wallet,
        license,
        &certificate(&wallet, license),
        (T0 + 4 * H).0,
        3,
        hash_of(&r2.file),
        &[("minutes", [0; 60])],
        false,
    );
    assert_eq!(ingest_one(&mut operator, &r3, (T0 + 6 * H).0), "period-closed");
}

fn resign(wallet: &Wallet, license: &LicensePayload, file: &CloseFile, payload: &ClosePayload) -> Vec<u8> {
    let envelope = wallet
        .seal_as_holder("acme/thermal", &license.license_id, CONTEXT_CLOSE, escx::cbor::encode(payload))
        .unwrap();
    CloseFile { v: 1, certificate: file.certificate.clone(), close: ByteBuf::from(envelope) }.to_cbor()
}

#[test]
fn the_store_holds_no_minute_value_and_no_private_hour_total() {
    let w = world();
    let (wallet, _) = w.wallet("wallet", "metered", 1);
    let meter = Meter::open(&wallet).unwrap();
    let v = verified(&wallet, &w.chain);
    let (a, b) = (7_777_001u64, 7_777_002u64);
    meter.record(&v, "invocations", a, T0 + H + 60).unwrap();
    meter.record(&v, "invocations", b, T0 + H + 120).unwrap();
    let report = meter.report("acme/thermal", T0 + H, Telemetry::Private, T0 + 2 * H).unwrap();
    let mut operator = w.operator();
    assert_eq!(ingest_one(&mut operator, &report.file, (T0 + 2 * H).0), "stored");
    drop(operator);
    let db = rusqlite::Connection::open(w.tmp.path().join("op/operator.sqlite")).unwrap();
    let secret_values = [a, b, a + b];
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut cells = 0;
    for table in tables {
        let mut statement = db.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let columns = statement.column_count();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                cells += 1;
                match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Integer(n) => {
                        assert!(!secret_values.contains(&(n as u64)), "{table} holds {n}")
                    }
                    rusqlite::types::ValueRef::Blob(bytes) | rusqlite::types::ValueRef::Text(bytes) => {
                        for value in secret_values {
                            for needle in [value.to_be_bytes(), value.to_le_bytes()] {
                                assert!(
                                    !bytes.windows(8).any(|w| w == needle),
                                    "{table} holds {value} in bytes"
                                );
                            }
                            assert!(
                                !String::from_utf8_lossy(bytes).contains(&value.to_string()),
                                "{table}: {value}"
                            );
                            // CBOR's own encoding of the integer (major type 0, 4-byte form).
                            let cbor = escx::cbor::encode(&value);
                            assert!(
                                !bytes.windows(cbor.len()).any(|w| w == cbor.as_slice()),
                                "{table}: cbor {value}"
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(cells > 20);
    let totals: i64 = db.query_row("SELECT count(total) FROM hour_sums", [], |r| r.get(0)).unwrap();
    assert_eq!(totals, 0);
    // The meter's own database is private too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for path in [w.tmp.path().join("op/operator.sqlite"), w.tmp.path().join("wallet/meter.sqlite")] {
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{path:?}");
        }
        assert_eq!(std::fs::metadata(w.tmp.path().join("op")).unwrap().permissions().mode() & 0o777, 0o700);
    }
}

/// Suppression and the budget (privacy.md §3): a cohort far below `cohort_min_size` is
/// suppressed, but every decision spends a quarter of the window's budget, so "were there
/// 50?" cannot be asked for free; private-tier usage never enters an aggregate. (A large
/// cohort released per unit: `a_unit_used_by_one_holder_is_not_released_behind_a_crowd`.)
#[test]
fn cohorts_are_noised_every_decision_spends_and_the_budget_stops_releases() {
    let w = world();
    let (wallet, licenses) = w.wallet("wallet", "metered-share", 5);
    let mut operator = w.operator();
    let day = T0.floor(86_400);
    let mut values = [0u64; 60];
    values[0] = 1;
    let mut invocations = [0u64; 60];
    invocations[0] = 10;
    let now = day + 86_400 + H;
    let files: Vec<Vec<u8>> = licenses
        .iter()
        .map(|l| {
            craft(
                &wallet,
                l,
                &certificate(&wallet, l),
                (T0 + H).0,
                1,
                [0; 32],
                &[("compute_ms", invocations), ("invocations", invocations), ("minutes", values)],
                true,
            )
        })
        .collect();
    // 5 holders: suppressed; each decision spends 0.25 of the 1.0 budget, until none is left.
    assert!(operator.ingest(&files[..5], now).unwrap().iter().all(|r| matches!(r.outcome, Outcome::Stored)));
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let window = (day, day + 86_400);
    let package: escx::header::PackageName = "acme/thermal".parse().unwrap();
    for left in [750_000, 500_000, 250_000, 0] {
        let result = operator.aggregate(&package, window, 100, None, &mut rng, now).unwrap();
        assert_eq!(
            result,
            Aggregate::Suppressed { cohort_min_size: 50, decision_micros: 250_000, remaining_micros: left }
        );
    }
    let err = operator.aggregate(&package, window, 100, None, &mut rng, now).unwrap_err();
    assert_eq!(err.code(), "epsilon-exhausted");

    // Private-tier usage never enters an aggregate: a window holding only private
    // reports has no cohort in any unit.
    let (private_wallet, private) = w.wallet("private", "metered", 1);
    let file = craft(
        &private_wallet,
        &private[0],
        &certificate(&private_wallet, &private[0]),
        (T0 + 25 * H).0,
        1,
        [0; 32],
        &[("minutes", values)],
        false,
    );
    assert_eq!(ingest_one(&mut operator, &file, (T0 + 27 * H).0), "stored");
    let next = (day + 86_400, day + 2 * 86_400);
    let result = operator.aggregate(&package, next, 100, None, &mut rng, day + 2 * 86_400 + H).unwrap();
    assert!(matches!(result, Aggregate::Suppressed { remaining_micros: 750_000, .. }), "{result:?}");
    // A window that is not one of the package's.
    let err =
        operator.aggregate(&package, (day + H, day + 86_400 + H), 100, None, &mut rng, now).unwrap_err();
    assert_eq!(err.code(), "window-invalid");
}

/// Review 2 (low): the cohort was counted across units, so 100 holders who report only
/// `minutes` plus one victim who reports `invocations` reached k = 50 and released the
/// victim's invocations alone; and metered tokens cost 0, so an operator can make the
/// holders. The cohort is now counted per unit (with noise): the victim's unit is
/// suppressed while `minutes` is released.
#[test]
fn a_unit_used_by_one_holder_is_not_released_behind_a_crowd() {
    let w = world();
    let (wallet, licenses) = w.wallet("wallet", "metered-share", 101);
    let mut operator = w.operator();
    let day = T0.floor(86_400);
    let now = day + 86_400 + H;
    let mut minutes = [0u64; 60];
    minutes[0] = 1;
    let mut used = [0u64; 60];
    used[0] = 7;
    let files: Vec<Vec<u8>> = licenses
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let units: Vec<(&str, [u64; 60])> = if i == 0 {
                vec![("invocations", used), ("minutes", minutes)]
            } else {
                vec![("minutes", minutes)]
            };
            craft(&wallet, l, &certificate(&wallet, l), (T0 + H).0, 1, [0; 32], &units, true)
        })
        .collect();
    assert!(operator.ingest(&files, now).unwrap().iter().all(|r| matches!(r.outcome, Outcome::Stored)));
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let package: escx::header::PackageName = "acme/thermal".parse().unwrap();
    let Aggregate::Released(release) =
        operator.aggregate(&package, (day, day + 86_400), 100, Some(500_000), &mut rng, now).unwrap()
    else {
        panic!("minutes has a cohort of 101")
    };
    assert_eq!(release.values.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(), ["minutes"]);
    assert_eq!(release.suppressed, ["compute_ms", "invocations"]);
    assert_eq!(
        (release.epsilon_micros, release.decision_micros, release.remaining_micros),
        (500_000, 250_000, 250_000)
    );
    // One released unit gets the whole 0.5: scale 100 · 1 / 0.5.
    assert_eq!(release.scale, (100 * 1_000_000, 500_000));
    let err = operator.aggregate(&package, (day, day + 86_400), 100, None, &mut rng, now).unwrap_err();
    assert_eq!(err.code(), "epsilon-exhausted", "0.25 left is all a decision costs, nothing for values");
}

#[test]
fn a_share_report_must_open_every_hour() {
    let w = world();
    let (wallet, licenses) = w.wallet("wallet", "metered-share", 1);
    let meter = Meter::open(&wallet).unwrap();
    let v = verified(&wallet, &w.chain);
    meter.record(&v, "invocations", 4, T0 + H).unwrap();
    let mut operator = w.operator();
    // A private report of a share tier, made by a meter that ignores the license's terms,
    // is refused by the operator.
    let mut one = [0u64; 60];
    one[0] = 1;
    let cert = certificate(&wallet, &licenses[0]);
    let private = craft(&wallet, &licenses[0], &cert, (T0 + H).0, 1, [0; 32], &[("minutes", one)], false);
    assert_eq!(ingest_one(&mut operator, &private, (T0 + 2 * H).0), "report-tier-mismatch");
    // Issue 27 (4): the meter takes the mode the license names, and refuses another before
    // making a report the operator would refuse (a report is final).
    assert_eq!(v.license.terms.as_ref().map(|t| t.telemetry.as_str()), Some("share"));
    let err = meter.report("acme/thermal", T0 + H, Telemetry::Private, T0 + 2 * H).unwrap_err();
    assert_eq!(err.code(), "report-tier-mismatch");
    let shared = meter.report("acme/thermal", T0 + H, None, T0 + 2 * H).unwrap();
    assert_eq!(shared.telemetry, Telemetry::Share);
    assert_eq!(ingest_one(&mut operator, &shared.file, (T0 + 2 * H).0), "stored");
}

/// Issue 27 (4): `meter record --unit custom:foo` succeeded for a unit the package does not
/// meter, and the operator then refused the hour's report, so the hour could never be
/// billed. The license names the package's metrics; the meter refuses any other unit.
#[test]
fn the_meter_records_only_units_the_package_meters() {
    let w = world();
    let (wallet, _) = w.wallet("wallet", "metered", 1);
    let meter = Meter::open(&wallet).unwrap();
    let v = verified(&wallet, &w.chain);
    let metrics = v.license.terms.as_ref().map(|t| t.metrics.clone()).unwrap();
    assert!(metrics.contains(&"invocations".to_owned()), "{metrics:?}");
    let err = meter.record(&v, "custom:foo", 1, T0 + H).unwrap_err();
    assert_eq!(err.code(), "unit-undeclared");
    assert!(err.to_string().contains("does not meter custom:foo"), "{err}");
    // Nothing was counted: the hour has no records to report.
    assert_eq!(meter.report("acme/thermal", T0 + H, None, T0 + 2 * H).unwrap().units, ["minutes"]);
    meter.record(&v, "invocations", 1, T0 + 2 * H).unwrap();
}

#[test]
fn an_hour_used_under_two_licenses_is_reported_for_each() {
    let w = world();
    let wallet = Wallet::open(&w.tmp.path().join("wallet")).unwrap();
    let request = wallet.request(&w.chain, &"acme/thermal".parse().unwrap(), "metered", 2, T0).unwrap();
    wallet.finalize(&w.issuer.issue(&request, T0).unwrap()).unwrap();
    let mut licenses = Vec::new();
    for at in [T0 + 10, T0 + H + 1800] {
        let sealed = wallet.redeem_tier("acme/thermal", Some("metered")).unwrap();
        licenses.push(wallet.install(&w.issuer.redeem(&sealed, at).unwrap()).unwrap());
    }
    let meter = Meter::open(&wallet).unwrap();
    // Before the renewal takes effect the old license is the one verified and counts;
    // after it the program verifies the new one, and usage goes to it.
    let trust = Trust::chain(&w.chain);
    let v = wallet.verify(&trust, "acme/thermal", None, None, T0 + H + 60).unwrap();
    let old = meter.record(&v, "invocations", 1, T0 + H + 60).unwrap();
    let v = wallet.verify(&trust, "acme/thermal", None, None, T0 + H + 2000).unwrap();
    let new = meter.record(&v, "invocations", 1, T0 + H + 2000).unwrap();
    assert_eq!(old.license_id, hex::encode(&licenses[0].license_id));
    assert_eq!(new.license_id, hex::encode(&licenses[1].license_id));
    let now = T0 + 3 * H;
    let err = meter.report("acme/thermal", T0 + H, Telemetry::Private, now).unwrap_err();
    assert!(err.to_string().contains("--license"), "{err}");
    let mut operator = w.operator();
    for license in &licenses {
        let id = hex::encode(&license.license_id);
        let report =
            meter.report_license("acme/thermal", Some(&id), T0 + H, Telemetry::Private, now).unwrap();
        assert_eq!(report.license_id, id);
        assert_eq!(ingest_one(&mut operator, &report.file, now.0), "stored");
    }
    // An hour with records under one license only needs no choice.
    meter.record(&v, "invocations", 1, T0 + 2 * H + 5).unwrap();
    assert_eq!(
        meter.report("acme/thermal", T0 + 2 * H, Telemetry::Private, now).unwrap().license_id,
        new.license_id
    );
}

/// Everything one operator store is asked in [`transcript`], made once.
struct Script {
    batch: Vec<Vec<u8>>,
    twin: Vec<u8>,
    share: Vec<Vec<u8>>,
    metered: Vec<Vec<u8>>,
    close: Vec<u8>,
    openings: Vec<OpeningFile>,
}

fn script(w: &World) -> Script {
    // Three licenses, five hours each, shuffled; a gap, a too-early hour and garbage.
    let (wallet, licenses) = w.wallet("chains", "metered", 3);
    let mut values = [0u64; 60];
    values[5] = 1;
    values[17] = 1;
    let mut batch = chains(&wallet, &licenses, 5, values);
    let cert = certificate(&wallet, &licenses[0]);
    batch.push(craft(
        &wallet,
        &licenses[0],
        &cert,
        (T0 + 9 * H).0,
        9,
        [7; 32],
        &[("minutes", values)],
        false,
    ));
    batch.push(craft(
        &wallet,
        &licenses[1],
        &certificate(&wallet, &licenses[1]),
        (T0 + 400 * H).0,
        6,
        [1; 32],
        &[("minutes", values)],
        false,
    ));
    batch.push(b"not a report".to_vec());
    batch.swap(0, 7);
    batch.swap(3, 12);
    let mut other = values;
    other[6] = 1;
    let twin = craft(&wallet, &licenses[0], &cert, (T0 + H).0, 1, [0; 32], &[("minutes", other)], false);
    // Fifty share-tier holders, for a release.
    let (share_wallet, share) = w.wallet("share", "metered-share", 50);
    let share = share
        .iter()
        .map(|l| {
            craft(
                &share_wallet,
                l,
                &certificate(&share_wallet, l),
                (T0 + H).0,
                1,
                [0; 32],
                &[("minutes", values)],
                true,
            )
        })
        .collect();
    // A metered month from the meter itself, closed, with openings.
    let (meter_wallet, _) = w.wallet("meter", "metered", 1);
    let meter = Meter::open(&meter_wallet).unwrap();
    let v = verified(&meter_wallet, &w.chain);
    meter.record(&v, "invocations", 3, T0 + H + 17 * 60 + 5).unwrap();
    meter.record(&v, "invocations", 5, T0 + 2 * H + 40 * 60).unwrap();
    let metered = [T0 + H, T0 + 2 * H]
        .iter()
        .map(|hour| meter.report("acme/thermal", *hour, Telemetry::Private, T0 + 3 * H).unwrap().file)
        .collect();
    let openings = vec![
        meter.open_hour("acme/thermal", T0 + H, Some(17), Some("invocations")).unwrap(),
        meter.open_hour("acme/thermal", T0 + 2 * H, None, None).unwrap(),
    ];
    let period = Period::of(T0);
    let close = meter.close("acme/thermal", period, None, false, period.end() + 10).unwrap().file;
    Script { batch, twin, share, metered, close, openings }
}

/// What an operator store answers to the script, as text: every outcome, charge,
/// release and piece of evidence, with the store's own id taken out.
fn transcript<S: OperatorStore>(operator: &mut Operator<S>, s: &Script) -> Vec<String> {
    let now = T0 + 200 * H;
    let mut out = Vec::new();
    let ingest = |operator: &mut Operator<S>, files: &[Vec<u8>], now: escx::UnixSeconds| {
        operator
            .ingest(files, now)
            .unwrap()
            .iter()
            .map(|r| format!("{}:{:?}:{:?}:{}", r.index, r.license_id, r.seq, code(&r.outcome)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    out.push(ingest(operator, &s.batch, now));
    out.push(ingest(operator, &s.batch, now));
    out.push(ingest(operator, std::slice::from_ref(&s.twin), now));
    out.push(ingest(operator, &s.metered, now));
    out.push(ingest(operator, &s.share[..49], now));
    let day = T0.floor(86_400);
    let window = (day, day + 86_400);
    let package = "acme/thermal".parse().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    out.push(format!("{:?}", operator.aggregate(&package, window, 100, None, &mut rng, now)));
    out.push(ingest(operator, &s.share[49..], now));
    for epsilon in [Some(600_000), None, None] {
        out.push(match operator.aggregate(&package, window, 100, epsilon, &mut rng, now) {
            Ok(a) => format!("{a:?}"),
            Err(e) => e.code().to_owned(),
        });
    }
    for opening in &s.openings {
        out.push(format!("{:?}", operator.check_opening(&opening.to_cbor()).map(|v| v.values)));
    }
    let period = Period::of(T0);
    for at in [20, 30] {
        out.push(match operator.close(&s.close, period.end() + at) {
            Ok(c) => format!("{} {} {:?} {} {}", c.license_id, c.period, c.totals, c.reports, c.again),
            Err(e) => e.code().to_owned(),
        });
    }
    out.push(ingest(operator, std::slice::from_ref(&s.metered[0]), period.end() + 40));
    let id = operator.id().to_owned();
    let billing = operator.billing(period).unwrap();
    for charge in billing.charges {
        out.push(format!("{charge:?}").replace(&id, "ID"));
    }
    for refused in billing.refused {
        out.push(format!("{refused:?}"));
    }
    for e in operator.evidence(None).unwrap() {
        out.push(format!(
            "{} {} {} {:?} {:?} {} {}",
            e.kind,
            e.license_id,
            e.holder,
            e.hour,
            e.seq,
            e.first.len(),
            e.second.len()
        ));
    }
    // Compaction (metering.md §6.6), then billing, a duplicate and the openings again.
    let later = period.end() + 36 * 86_400;
    out.push(format!("{:?}", operator.compact(35 * 86_400, later)));
    out.push(format!("{:?}", operator.compact(35 * 86_400, later)));
    out.push(format!("{:?}", operator.billing(period).map(|b| b.charges.len())).replace(&id, "ID"));
    out.push(ingest(operator, std::slice::from_ref(&s.metered[0]), later));
    for opening in &s.openings {
        out.push(format!(
            "{:?}",
            operator.check_opening(&opening.to_cbor()).map(|v| v.values).map_err(|e| e.code())
        ));
    }
    out
}

/// The operator store on PostgreSQL answers exactly as on SQLite: every ingest outcome,
/// release (same seeded noise), opening, close, charge and piece of evidence. Ignored by
/// `cargo test`, which needs nothing installed; `.ci/run` runs it with `--ignored`.
/// The operator's stores agree (metering.md §6.3): the same script of ingests (stored,
/// duplicate, equivocation, out of order, too early, invalid), aggregations, openings,
/// closes, billing and evidence gives the same transcript on the memory store, the
/// reference, as on SQLite (and on PostgreSQL, below).
#[test]
fn the_operator_store_in_memory_answers_as_on_sqlite() {
    let w = world();
    let s = script(&w);
    let sqlite = transcript(&mut w.operator(), &s);
    let memory = transcript(&mut w.memory_operator(), &s);
    assert_eq!(sqlite.len(), memory.len());
    for (line, (a, b)) in sqlite.iter().zip(&memory).enumerate() {
        assert_eq!(a, b, "line {line}");
    }
    let all = memory.join("\n");
    for expected in [
        "stored",
        "duplicate",
        "equivocation",
        "report-out-of-order",
        "Released",
        " 2 true",
        "Ok(Compacted { periods: 1",
        "Ok(Compacted { periods: 0, reports: 0, bytes: 0 })",
    ] {
        assert!(all.contains(expected), "{expected} missing from\n{all}");
    }
}

#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn the_operator_store_on_postgres_answers_as_on_sqlite() {
    // Durable on commit: the server is crashed below, and what was committed must be there
    // after it (with `synchronous_commit` off, the last commits could be lost).
    let cluster = Cluster::start_durable();
    let w = world();
    let s = script(&w);
    let sqlite = transcript(&mut w.operator(), &s);
    let url = cluster.database();
    let postgres = transcript(&mut w.pg_operator("pg-op", &url), &s);
    assert_eq!(sqlite.len(), postgres.len());
    for (line, (a, b)) in sqlite.iter().zip(&postgres).enumerate() {
        assert_eq!(a, b, "line {line}");
    }
    let memory = transcript(&mut w.memory_operator(), &s);
    assert_eq!(memory, postgres, "the memory store answers as PostgreSQL does");
    // The script reached every kind of answer.
    let all = sqlite.join("\n");
    for expected in [
        "stored",
        "duplicate",
        "equivocation",
        "report-out-of-order",
        "report-too-early",
        "report-invalid",
        "Suppressed",
        "Released",
        "epsilon-exhausted",
        " 2 true",
        "flagged: false",
    ] {
        assert!(all.contains(expected), "{expected} missing from\n{all}");
    }
    // A second directory on the same database is the same store: same id, same data.
    std::fs::create_dir(w.tmp.path().join("pg-op2")).unwrap();
    std::fs::copy(w.tmp.path().join("pg-op/database.url"), w.tmp.path().join("pg-op2/database.url")).unwrap();
    let again = Operator::open(&w.tmp.path().join("pg-op2")).unwrap();
    assert_eq!(again.billing(Period::of(T0)).unwrap().charges.len(), 1);
    // A database holding a store is not initialised twice.
    let err = Operator::init_postgres(&w.tmp.path().join("pg-op3"), &url, &[]).err().unwrap();
    assert!(err.to_string().contains("holds an escx operator store already"), "{err}");
    // The server restarts (crash recovery): a handle from before finds its connection
    // closed with the first request, which fails, and connects again for the next.
    cluster.crash();
    cluster.restart();
    let charges = again.billing(Period::of(T0)).or_else(|error| {
        assert_eq!(error.code(), "store-failed", "{error}");
        again.billing(Period::of(T0))
    });
    assert_eq!(charges.unwrap().charges.len(), 1, "the handle reconnected");
    // A database whose schema is newer than this build is refused.
    escx_store::test_util::admin(&url, "UPDATE escx_operator.meta SET value = '99' WHERE key = 'schema'");
    let err = Operator::open(&w.tmp.path().join("pg-op2")).err().unwrap();
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

/// Two operator handles on one PostgreSQL database (two service nodes) ingest the same
/// 300 reports at once, in other orders: each is stored once, the other node sees it as
/// a duplicate, and every license's chain ends at its last report.
#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn two_nodes_ingesting_the_same_reports_store_each_once() {
    let cluster = Cluster::start();
    let w = world();
    let (wallet, licenses) = w.wallet("wallet", "metered", 6);
    let mut values = [0u64; 60];
    values[1] = 1;
    let files = chains(&wallet, &licenses, 50, values);
    let url = cluster.database();
    drop(w.pg_operator("a", &url));
    std::fs::create_dir(w.tmp.path().join("b")).unwrap();
    std::fs::copy(w.tmp.path().join("a/database.url"), w.tmp.path().join("b/database.url")).unwrap();
    let now = T0 + 100 * H;
    let mut reversed = files.clone();
    reversed.reverse();
    let outcomes: Vec<Vec<&'static str>> = std::thread::scope(|scope| {
        [("a", &files), ("b", &reversed)]
            .map(|(dir, files)| {
                let dir = w.tmp.path().join(dir);
                scope.spawn(move || {
                    let mut node = Operator::open(&dir).unwrap();
                    let mut codes = Vec::new();
                    for batch in files.chunks(25) {
                        codes.extend(node.ingest(batch, now).unwrap().iter().map(|r| code(&r.outcome)));
                    }
                    codes
                })
            })
            .map(|h| h.join().unwrap())
            .into()
    });
    let all: Vec<&str> = outcomes.concat();
    let stored = all.iter().filter(|c| **c == "stored").count();
    let duplicate = all.iter().filter(|c| **c == "duplicate").count();
    // A node that ran ahead of the other on a license may find the next report's
    // predecessor not yet stored: refused as out of order, and stored by the other.
    let other: Vec<&&str> =
        all.iter().filter(|c| !["stored", "duplicate", "report-out-of-order"].contains(c)).collect();
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(stored, 300, "each report stored exactly once");
    assert!(duplicate <= 300);
    let rows = escx_store::test_util::query_ints(
        &url,
        "SELECT count(*), max(seq), max(head_seq) FROM escx_operator.reports JOIN escx_operator.licenses USING (license_id) GROUP BY license_id",
    );
    assert_eq!(rows.len(), 6);
    for row in rows {
        assert_eq!(row, [50, 50, 50]);
    }
    // Everything again through either node: nothing new.
    let mut node = Operator::open(&w.tmp.path().join("b")).unwrap();
    assert!(node.ingest(&files, now).unwrap().iter().all(|r| matches!(r.outcome, Outcome::Duplicate)));
}

/// The issuer's secrets: its signing key as its key file holds it, and what the issuer
/// reports holding (KEM key, POPRF seed, every epoch's scalar).
fn issuer_secrets(issuer: &Issuer) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(issuer.dir().join("signing.key")).unwrap();
    let line = text.lines().find(|l| l.starts_with("escx-sk-v1:")).unwrap();
    let cbor = base64::engine::general_purpose::STANDARD.decode(&line["escx-sk-v1:".len()..]).unwrap();
    let map: ciborium::Value = ciborium::de::from_reader(&cbor[..]).unwrap();
    let signing = map
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("secret_key"))
        .and_then(|(_, v)| v.as_bytes())
        .expect("an unencrypted key file holds its secret key")
        .clone();
    let mut out = vec![("signing key".to_owned(), signing)];
    out.extend(issuer.secret_byte_strings().unwrap().into_iter().map(|(name, bytes)| (name, bytes.to_vec())));
    assert!(out.len() >= 5, "two epochs' scalars among them: {}", out.len());
    out
}

/// Reads every cell of `db` and fails on any that holds one of `secrets` as bytes, hex or
/// base64; the number of cells read.
fn assert_holds_none(db: &escx_store::Db, secrets: &[(String, Vec<u8>)]) -> usize {
    use base64::Engine as _;
    let mut cells = 0;
    for (table, row) in escx_store::test_util::all_rows(db) {
        for cell in row.cells() {
            cells += 1;
            let bytes: &[u8] = match cell {
                escx_store::Cell::Bytes(b) => b,
                escx_store::Cell::Text(t) => t.as_bytes(),
                escx_store::Cell::Int(_) | escx_store::Cell::Null => continue,
            };
            let text = String::from_utf8_lossy(bytes);
            for (name, secret) in secrets {
                let base64 = base64::engine::general_purpose::STANDARD.encode(secret);
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == &secret[..])
                        && !text.to_ascii_lowercase().contains(&hex::encode(secret))
                        && !text.contains(&base64),
                    "{} table {table} holds the issuer's {name}",
                    db.location()
                );
            }
        }
    }
    cells
}

/// No store holds a secret key (storage.md §6, licensing.md §2.2): after purchases,
/// redemptions, a second POPRF epoch, a CRL and a metering report, every cell of every
/// table of the issuer's and the operator's databases is read, and none holds the issuer's
/// signing or KEM secret key, its POPRF seed or any epoch's POPRF scalar.
fn no_table_holds_a_secret_key(database: Option<&str>) {
    let w = world_on(database);
    w.issuer.add_epoch(T0, 90 * 86_400).unwrap();
    let (wallet, _) = w.wallet("wallet", "metered", 2);
    w.issuer.crl(T0 + 20).unwrap();
    let mut operator = match database {
        None => w.operator(),
        Some(url) => w.pg_operator("op", url),
    };
    let meter = Meter::open(&wallet).unwrap();
    let v = verified(&wallet, &w.chain);
    meter.record(&v, "invocations", 5, T0 + H + 60).unwrap();
    let report = meter.report("acme/thermal", T0 + H, Telemetry::Private, T0 + 2 * H).unwrap();
    assert_eq!(ingest_one(&mut operator, &report.file, (T0 + 2 * H).0), "stored");
    assert_eq!(w.issuer.database().is_postgres(), database.is_some());
    let secrets = issuer_secrets(&w.issuer);
    assert!(assert_holds_none(w.issuer.database(), &secrets) > 50);
    assert!(assert_holds_none(operator.database(), &secrets) > 10);
    // The check finds a secret where there is one.
    let planted = hex::encode(&secrets[3].1);
    w.issuer
        .database()
        .exec("INSERT INTO meta (key, value) VALUES ('planted', ?1)", &[escx_store::Arg::Text(&planted)])
        .unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_holds_none(w.issuer.database(), &secrets)
    }));
    assert!(caught.is_err(), "a planted secret is found");
}

#[test]
fn no_issuer_or_operator_table_holds_a_secret_key_on_sqlite() {
    no_table_holds_a_secret_key(None);
}

#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn no_issuer_or_operator_table_holds_a_secret_key_on_postgres() {
    let cluster = Cluster::start();
    no_table_holds_a_secret_key(Some(&cluster.database()));
}

/// metering.md §6.4: a close re-reads the trusted issuers first, as an ingest does. An
/// issuer that another handle on the same store (another node, or `escx operator issuer`)
/// trusted after this handle opened is trusted for a close of a license this store has
/// never seen (before, the close was refused as from an untrusted issuer).
#[test]
fn a_close_trusts_an_issuer_another_handle_added() {
    let w = world();
    let mut first = w.operator();
    let second_issuer =
        Issuer::init(&w.tmp.path().join("issuer-2"), "Second", &Protection::Unencrypted, T0).unwrap();
    second_issuer.register_package(&w.package, &w.policy, T0).unwrap();
    let chain = second_issuer.bundle(T0).unwrap();
    Operator::open(&w.tmp.path().join("op")).unwrap().add_issuer(&chain).unwrap();
    let wallet = Wallet::open(&w.tmp.path().join("wallet-2")).unwrap();
    let request = wallet.request(&chain, &"acme/thermal".parse().unwrap(), "metered", 1, T0).unwrap();
    wallet.finalize(&second_issuer.issue(&request, T0).unwrap()).unwrap();
    let sealed = wallet.redeem_tier("acme/thermal", Some("metered")).unwrap();
    wallet.install(&second_issuer.redeem(&sealed, T0 + 10).unwrap()).unwrap();
    // A month without use, closed through the handle opened before the issuer was added.
    let period = Period::of(T0);
    let close =
        Meter::open(&wallet).unwrap().close("acme/thermal", period, None, false, period.end() + 10).unwrap();
    let closed = first.close(&close.file, period.end() + 20).unwrap();
    assert_eq!((closed.reports, closed.totals.len()), (0, 0));
}

/// Review 2 (High 0): with a valid metered license and a newer license that was revoked,
/// usage went to the newest license of the package, not to the one the program verified,
/// and the operator refused the hour. Usage is recorded against the verified license.
#[test]
fn usage_is_recorded_against_the_license_the_program_verified() {
    let w = world();
    let (wallet, metered) = w.wallet("wallet", "metered", 1);
    let request = wallet.request(&w.chain, &"acme/thermal".parse().unwrap(), "metered-share", 1, T0).unwrap();
    wallet.finalize(&w.issuer.issue(&request, T0).unwrap()).unwrap();
    let sealed = wallet.redeem_tier("acme/thermal", Some("metered-share")).unwrap();
    let newer = wallet.install(&w.issuer.redeem(&sealed, T0 + 20).unwrap()).unwrap();
    w.issuer.revoke(&newer.license_id, "chargeback", T0 + 30).unwrap();
    let crl = w.issuer.crl(T0 + 30).unwrap();
    let verified = wallet.verify(&Trust::chain(&w.chain), "acme/thermal", None, Some(&crl), T0 + H).unwrap();
    assert_eq!(verified.license.license_id, metered[0].license_id);
    let recorded = Meter::open(&wallet).unwrap().record(&verified, "invocations", 1, T0 + H + 60).unwrap();
    assert_eq!(recorded.license_id, hex::encode(&metered[0].license_id));
    // A license that is not in the meter's wallet is refused.
    let (other, _) = w.wallet("other", "metered", 1);
    let theirs = other.verify(&Trust::chain(&w.chain), "acme/thermal", None, None, T0 + H).unwrap();
    let err = Meter::open(&wallet).unwrap().record(&theirs, "invocations", 1, T0 + H + 60).unwrap_err();
    assert_eq!(err.code(), "meter-not-found", "{err}");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The commitments of `unit` in a report file.
fn commitments_of(file: &[u8], unit: &str) -> Vec<curve25519_dalek::ristretto::RistrettoPoint> {
    let file = ReportFile::from_cbor(file).unwrap();
    let envelope = escx::envelope::Envelope::from_cbor(&file.report).unwrap();
    let payload: ReportPayload = ciborium::from_reader(envelope.payload_unverified()).unwrap();
    let series = payload.series.iter().find(|s| s.unit == unit).unwrap();
    series
        .commitments
        .iter()
        .map(|c| {
            curve25519_dalek::ristretto::CompressedRistretto::from_slice(c).unwrap().decompress().unwrap()
        })
        .collect()
}

/// Review 2 (Medium 3): a wallet restored from a backup re-reported an hour; with
/// blindings derived from the secret and coordinates alone, the two commitments of each
/// minute shared a blinding, so `C1 − C2 = (v1 − v2)·B` and small discrete logs gave every
/// minute's value. With a fresh nonce per report no difference is a small multiple of B.
#[test]
fn a_re_reported_hour_reveals_no_minute_value() {
    let w = world();
    let (wallet, _) = w.wallet("wallet", "metered", 1);
    let v = verified(&wallet, &w.chain);
    let meter = Meter::open(&wallet).unwrap();
    for (minute, amount) in [(3u64, 5u64), (17, 2), (40, 9)] {
        meter.record(&v, "invocations", amount, T0 + H + minute * 60).unwrap();
    }
    drop(meter);
    let backup = w.tmp.path().join("backup");
    copy_tree(wallet.dir(), &backup);
    let meter = Meter::open(&wallet).unwrap();
    let first = meter.report("acme/thermal", T0 + H, Telemetry::Private, T0 + 2 * H).unwrap();
    let mut operator = w.operator();
    assert_eq!(ingest_one(&mut operator, &first.file, (T0 + 2 * H).0), "stored");

    // The restored copy has no report of the hour; it records more and reports again.
    let restored = Wallet::open(&backup).unwrap();
    let meter = Meter::open(&restored).unwrap();
    let v = verified(&restored, &w.chain);
    meter.record(&v, "invocations", 1, T0 + H + 50 * 60).unwrap();
    let second = meter.report("acme/thermal", T0 + H, Telemetry::Private, T0 + 2 * H).unwrap();
    assert_eq!(ingest_one(&mut operator, &second.file, (T0 + 2 * H).0), "equivocation");

    // What the operator holds as evidence: both reports. Try every |v| ≤ 1000 per minute.
    let gens = escx_licensing::pedersen::generators();
    let small: Vec<_> = (-1000i64..=1000)
        .map(|v| {
            let s = curve25519_dalek::scalar::Scalar::from(v.unsigned_abs());
            if v < 0 { -(gens.B * s) } else { gens.B * s }
        })
        .collect();
    for unit in ["invocations", "minutes"] {
        let (c1, c2) = (commitments_of(&first.file, unit), commitments_of(&second.file, unit));
        for minute in 0..60 {
            let difference = c1[minute] - c2[minute];
            assert!(
                !small.contains(&difference),
                "minute {minute} of {unit}: the difference of the two reports is a small multiple of B"
            );
        }
    }
    // Each report still opens with its own meter.
    let opening = Meter::open(&wallet).unwrap().open_hour("acme/thermal", T0 + H, Some(3), None).unwrap();
    let verdict = operator.check_opening(&opening.to_cbor()).unwrap();
    assert!(verdict.values.contains(&("invocations".to_string(), 5)), "{:?}", verdict.values);
}

/// A report made before nonces (a schema-1 meter: `reports.nonce` NULL) still opens, and
/// closes, under the blindings it was made with.
#[test]
fn a_report_made_before_nonces_still_opens_and_closes() {
    let w = world();
    let (wallet, licenses) = w.wallet("wallet", "metered", 1);
    let v = verified(&wallet, &w.chain);
    let meter = Meter::open(&wallet).unwrap();
    meter.record(&v, "invocations", 4, T0 + H + 7 * 60).unwrap();
    drop(meter);
    // What a schema-1 meter stored: a report whose blindings are the v1 derivation from the
    // meter's secret, and no nonce.
    let db = rusqlite::Connection::open(wallet.dir().join("meter.sqlite")).unwrap();
    let secret: Vec<u8> =
        db.query_row("SELECT value FROM meta WHERE key = 'secret'", [], |r| r.get(0)).unwrap();
    let secret: [u8; 32] = secret.try_into().unwrap();
    let license = &licenses[0];
    let id: [u8; 16] = license.license_id.as_slice().try_into().unwrap();
    let mut invocations = [0u64; 60];
    invocations[7] = 4;
    let mut minutes = [0u64; 60];
    minutes[7] = 1;
    let blindings = |unit: &str| -> [Scalar; 60] {
        std::array::from_fn(|m| metering::blinding(&secret, &id, unit, T0 + H, m as u8))
    };
    let openings = [(invocations, blindings("invocations")), (minutes, blindings("minutes"))];
    let series = [("invocations", &openings[0]), ("minutes", &openings[1])]
        .iter()
        .map(|(unit, (values, r))| Series {
            unit: unit.to_string(),
            commitments: (0..60)
                .map(|m| {
                    ByteBuf::from(
                        escx_licensing::pedersen::commit(values[m], &r[m]).compress().to_bytes().to_vec(),
                    )
                })
                .collect(),
            opened: None,
        })
        .collect();
    let mut payload = ReportPayload {
        v: metering::REPORT_VERSION,
        package: "acme/thermal".parse().unwrap(),
        license_id: license.license_id.clone(),
        hour: T0 + H,
        seq: 1,
        previous: ByteBuf::from(vec![0u8; 32]),
        series,
        minutes_range: ByteBuf::new(),
        hour_range: ByteBuf::new(),
        sums_range: ByteBuf::new(),
    };
    metering::prove_report_ranges(&mut payload, &openings).unwrap();
    let envelope =
        wallet.seal_as_holder("acme/thermal", &id, CONTEXT_REPORT, escx::cbor::encode(&payload)).unwrap();
    let file = ReportFile {
        v: 1,
        certificate: ByteBuf::from(certificate(&wallet, license)),
        report: ByteBuf::from(envelope),
    }
    .to_cbor();
    // Back to schema 1 (no nonce column), holding that report; opening migrates it.
    db.execute_batch(
        "ALTER TABLE reports DROP COLUMN nonce; UPDATE meta SET value = '1' WHERE key = 'schema';",
    )
    .unwrap();
    db.execute(
        "INSERT INTO reports (license_id, seq, hour, hash, file) VALUES (?1, 1, ?2, ?3, ?4)",
        rusqlite::params![&id[..], (T0 + H).0 as i64, &hash_of(&file)[..], &file],
    )
    .unwrap();
    drop(db);
    let mut operator = w.operator();
    assert_eq!(ingest_one(&mut operator, &file, (T0 + 2 * H).0), "stored");
    let meter = Meter::open(&wallet).unwrap();
    let opening = meter.open_hour("acme/thermal", T0 + H, Some(7), None).unwrap();
    let verdict = operator.check_opening(&opening.to_cbor()).unwrap();
    assert!(verdict.values.contains(&("invocations".to_string(), 4)), "{:?}", verdict.values);
    let period = Period::of(T0);
    let close = meter.close("acme/thermal", period, None, false, period.end() + 10).unwrap();
    let closed = operator.close(&close.file, period.end() + 20).unwrap();
    assert_eq!(closed.reports, 1);
}

/// Review 2 (Medium 2): a holder edited their own `meter.sqlite` to put 2^62 in one
/// minute's `minutes` counter, reported and closed; billing then failed for everyone ("a
/// usage charge overflows") and wrote no events. Now the meter refuses to report it
/// (`usage-impossible`), a report made by hand carries no valid range proof
/// (`report-range-invalid`), and billing charges each license on its own: a stored close
/// it cannot charge is refused with its id, the rest are billed.
#[test]
fn one_impossible_license_blocks_no_one_elses_bill() {
    let w = world();
    let mut operator = w.operator();
    let period = Period::of(T0);
    let (honest, honest_licenses) = w.wallet("honest", "metered", 1);
    let v = verified(&honest, &w.chain);
    let meter = Meter::open(&honest).unwrap();
    meter.record(&v, "invocations", 1, T0 + H + 60).unwrap();
    let report = meter.report("acme/thermal", T0 + H, Telemetry::Private, T0 + 2 * H).unwrap();
    assert_eq!(ingest_one(&mut operator, &report.file, (T0 + 2 * H).0), "stored");
    let close = meter.close("acme/thermal", period, None, false, period.end() + 10).unwrap();
    operator.close(&close.file, period.end() + 20).unwrap();

    let (cheat, cheat_licenses) = w.wallet("cheat", "metered", 1);
    let v = verified(&cheat, &w.chain);
    Meter::open(&cheat).unwrap().record(&v, "invocations", 1, T0 + H + 60).unwrap();
    let db = rusqlite::Connection::open(cheat.dir().join("meter.sqlite")).unwrap();
    db.execute("UPDATE counters SET value = ?1 WHERE unit = 'minutes'", [1i64 << 62]).unwrap();
    let err = Meter::open(&cheat)
        .unwrap()
        .report("acme/thermal", T0 + H, Telemetry::Private, T0 + 2 * H)
        .unwrap_err();
    assert_eq!(err.code(), "usage-impossible", "{err}");
    let mut minutes = [0u64; 60];
    minutes[1] = 1 << 62;
    let crafted = craft(
        &cheat,
        &cheat_licenses[0],
        &certificate(&cheat, &cheat_licenses[0]),
        (T0 + H).0,
        1,
        [0; 32],
        &[("minutes", minutes)],
        false,
    );
    assert_eq!(ingest_one(&mut operator, &crafted, (T0 + 2 * H).0), "report-range-invalid");
    // The same report hidden behind others in one large ingest: the proof library checks
    // only the first 256 proofs of a batch it is given, so a batch of half of 701 reports
    // per thread once let the last ones through unverified.
    for position in [700, 300] {
        let mut batch = vec![report.file.clone(); 700];
        batch.insert(position, crafted.clone());
        let results = operator.ingest(&batch, T0 + 2 * H).unwrap();
        for result in &results {
            let expected = if result.index == position { "report-range-invalid" } else { "duplicate" };
            assert_eq!(code(&result.outcome), expected, "report {} of the batch", result.index);
        }
    }
    let billing = operator.billing(period).unwrap();
    assert_eq!((billing.charges.len(), billing.refused.len()), (1, 0));
    assert_eq!(billing.charges[0].minutes, 1);

    // A close stored with an impossible total (written before these rules, or by hand):
    // billing refuses that license alone, and bills the other.
    let (other, _) = w.wallet("other", "metered", 1);
    let v = verified(&other, &w.chain);
    let meter = Meter::open(&other).unwrap();
    meter.record(&v, "invocations", 1, T0 + H + 60).unwrap();
    let report = meter.report("acme/thermal", T0 + H, Telemetry::Private, T0 + 2 * H).unwrap();
    assert_eq!(ingest_one(&mut operator, &report.file, (T0 + 2 * H).0), "stored");
    let close = meter.close("acme/thermal", period, None, false, period.end() + 10).unwrap();
    let closed = operator.close(&close.file, period.end() + 20).unwrap();
    let store = rusqlite::Connection::open(w.tmp.path().join("op/operator.sqlite")).unwrap();
    store
        .execute(
            "UPDATE close_totals SET total = ?1 WHERE unit = 'minutes' AND license_id <> ?2",
            rusqlite::params![1i64 << 62, honest_licenses[0].license_id.as_slice()],
        )
        .unwrap();
    let billing = operator.billing(period).unwrap();
    assert_eq!(billing.charges.len(), 1, "{billing:?}");
    assert_eq!(billing.charges[0].license_id, hex::encode(&honest_licenses[0].license_id));
    assert_eq!(billing.refused.len(), 1);
    assert_eq!(
        (billing.refused[0].code, billing.refused[0].license_id.as_str()),
        ("usage-impossible", closed.license_id.as_str())
    );
}

/// Review 2 (Medium 1): per-minute values were arbitrary scalars and closes bound only
/// sums mod ℓ. A private-tier holder committed minutes 5 and 6 to 1 and minute 7 to ℓ − 2:
/// a single-minute opening "proved" use, the hour and the period opened to 0, and billing
/// charged 0.00. Each report now proves every hour sum in range at ingest (`minutes` from
/// 0 to 60, other units from 0 to 2^63 − 1) and carries a per-minute proof (every minute
/// is 0 or 1) that a dispute checks: the hour above is stored and billed as the 0 it proves, but
/// the opening of minute 5 no longer proves use; an hour of more than 60 minutes is
/// refused; proofs are bound to license, package, hour and seq.
#[test]
fn a_minute_committed_outside_zero_or_one_is_refused() {
    let w = world();
    let mut operator = w.operator();
    let (wallet, licenses) = w.wallet("wallet", "metered", 1);
    let license = &licenses[0];
    let id: [u8; 16] = license.license_id.as_slice().try_into().unwrap();
    let secret = [9u8; 32];
    let r: [Scalar; 60] =
        std::array::from_fn(|m| metering::blinding(&secret, &id, "minutes", T0 + H, m as u8));
    let gens = escx_licensing::pedersen::generators();
    let commitments = |value: &dyn Fn(usize) -> Scalar| -> Vec<ByteBuf> {
        (0..60)
            .map(|m| {
                ByteBuf::from((gens.B * value(m) + gens.B_blinding * r[m]).compress().to_bytes().to_vec())
            })
            .collect()
    };
    // Minute values as scalars: 1, 1 and ℓ − 2 (that is, −2); the hour sums to 0.
    let cancelling = |m: usize| match m {
        5 | 6 => Scalar::ONE,
        7 => -Scalar::from(2u64),
        _ => Scalar::ZERO,
    };
    let mut payload = ReportPayload {
        v: metering::REPORT_VERSION,
        package: "acme/thermal".parse().unwrap(),
        license_id: license.license_id.clone(),
        hour: T0 + H,
        seq: 1,
        previous: ByteBuf::from(vec![0u8; 32]),
        series: vec![Series { unit: "minutes".into(), commitments: commitments(&cancelling), opened: None }],
        minutes_range: ByteBuf::new(),
        hour_range: ByteBuf::new(),
        sums_range: ByteBuf::new(),
    };
    // The best the cheat can attach: proofs made as if every minute were 0 (the hour sum
    // is 0 with the same blindings, so the sums proof verifies; the per-minute one cannot).
    let prove = |payload: &mut ReportPayload, values: [u64; 60]| {
        metering::prove_report_ranges(payload, &[(values, r)]).unwrap();
    };
    prove(&mut payload, [0; 60]);
    let sign = |payload: &ReportPayload| {
        let envelope =
            wallet.seal_as_holder("acme/thermal", &id, CONTEXT_REPORT, escx::cbor::encode(payload)).unwrap();
        ReportFile {
            v: 1,
            certificate: ByteBuf::from(certificate(&wallet, license)),
            report: ByteBuf::from(envelope),
        }
        .to_cbor()
    };
    let now = (T0 + 2 * H).0;
    let first = sign(&payload);
    assert_eq!(ingest_one(&mut operator, &first, now), "stored");
    // The hour is what it proves, 0; a dispute opening of minute 5 to 1 proves nothing.
    let minute_5 = |hour: escx::UnixSeconds, value: u64, blinding: Scalar| OpeningFile {
        v: 1,
        package: "acme/thermal".parse().unwrap(),
        license_id: license.license_id.clone(),
        hour,
        minute: Some(5),
        openings: vec![metering::UnitOpening {
            unit: "minutes".into(),
            value,
            blinding: ByteBuf::from(blinding.to_bytes().to_vec()),
        }],
    };
    let err = operator.check_opening(&minute_5(T0 + H, 1, r[5]).to_cbor()).unwrap_err();
    assert_eq!(err.code(), "report-range-invalid", "{err}");

    // More than 60 minutes in an hour (minute 7 holds 100): no sums proof opens it.
    let mut over = payload.clone();
    over.hour = T0 + 2 * H;
    over.seq = 2;
    over.previous =
        ByteBuf::from(metering::report_hash(&ReportFile::from_cbor(&first).unwrap().report).to_vec());
    over.series[0].commitments = commitments(&|m| if m == 7 { Scalar::from(100u64) } else { Scalar::ZERO });
    prove(&mut over, [0; 60]);
    assert_eq!(ingest_one(&mut operator, &sign(&over), (T0 + 3 * H).0), "report-range-invalid");

    // An honest hour: valid proofs for these very commitments, moved to another hour (or
    // seq), do not verify there; in place, the report is stored and its minute opens.
    let mut honest = [0u64; 60];
    honest[5] = 1;
    honest[6] = 1;
    let mut real = over.clone();
    real.series[0].commitments = commitments(&|m| Scalar::from(honest[m]));
    prove(&mut real, honest);
    let mut moved = real.clone();
    moved.hour = T0 + 3 * H;
    assert_eq!(ingest_one(&mut operator, &sign(&moved), (T0 + 4 * H).0), "report-range-invalid");
    assert_eq!(ingest_one(&mut operator, &sign(&real), (T0 + 3 * H).0), "stored");
    let verdict = operator.check_opening(&minute_5(T0 + 2 * H, 1, r[5]).to_cbor()).unwrap();
    assert_eq!(verdict.values, [("minutes".to_string(), 1)]);
    // A report of the previous version (whose sums proof left `minutes` out) is refused.
    let mut old = real.clone();
    old.v = 2;
    old.seq = 3;
    assert_eq!(ingest_one(&mut operator, &sign(&old), (T0 + 3 * H).0), "report-invalid");
}

/// Review 2 (Medium 5): `operator package` replaced terms from any owner-signed version,
/// older ones included. Registering an older version or other terms under a registered
/// version is now refused; each license keeps the terms it was bought under (re-pricing
/// after the fact changes no bill); and a window's privacy budget never exceeds the
/// smallest ε in force for its hours, however windows or ε change later.
#[test]
fn package_terms_are_versioned_and_licenses_keep_theirs() {
    let w = world();
    let mut operator = w.operator(); // 1.2.0 at T0: metered 6.00/h, ε = 1.0 over 24 h
    let code = |r: Result<escx_metering::operator::Terms, escx_metering::Error>| r.unwrap_err().code();
    assert_eq!(
        code(operator.add_package(&w.repack("0.9.0", "6.00", "1.0", "1h"), &w.policy, T0 + 1)),
        "terms-version"
    );
    assert_eq!(
        code(operator.add_package(&w.repack("1.2.0", "120.00", "1.0", "24h"), &w.policy, T0 + 2)),
        "terms-version"
    );
    operator.add_package(&w.package, &w.policy, T0 + 3).unwrap();

    // A metered license and 120 share holders, bought under 1.2.0, report hour 1.
    let (wallet, metered) = w.wallet("wallet", "metered", 1);
    let v = verified(&wallet, &w.chain);
    let meter = Meter::open(&wallet).unwrap();
    meter.record(&v, "invocations", 1, T0 + H + 60).unwrap();
    let report = meter.report("acme/thermal", T0 + H, Telemetry::Private, T0 + 2 * H).unwrap();
    let day = T0.floor(86_400);
    let now = day + 86_400 + H;
    assert_eq!(ingest_one(&mut operator, &report.file, now.0), "stored");
    let (shared, holders) = w.wallet("shared", "metered-share", 120);
    let mut minutes = [0u64; 60];
    minutes[0] = 1;
    let files: Vec<Vec<u8>> = holders
        .iter()
        .map(|l| {
            craft(&shared, l, &certificate(&shared, l), (T0 + H).0, 1, [0; 32], &[("minutes", minutes)], true)
        })
        .collect();
    assert!(operator.ingest(&files, now).unwrap().iter().all(|r| matches!(r.outcome, Outcome::Stored)));

    // 1.3.0 re-prices the tier twentyfold and declares ε = 10, inside the day's window.
    operator.add_package(&w.repack("1.3.0", "120.00", "10.0", "24h"), &w.policy, T0 + 2 * H).unwrap();

    // The day's window: 1.2.0's ε = 1.0 was in force for its first hours, so that is all
    // it ever releases.
    let package: escx::header::PackageName = "acme/thermal".parse().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let Aggregate::Released(release) =
        operator.aggregate(&package, (day, day + 86_400), 100, None, &mut rng, now).unwrap()
    else {
        panic!("released expected")
    };
    assert_eq!(
        (release.epsilon_micros, release.decision_micros, release.remaining_micros),
        (750_000, 250_000, 0)
    );
    let err = operator.aggregate(&package, (day, day + 86_400), 100, None, &mut rng, now).unwrap_err();
    assert_eq!(err.code(), "epsilon-exhausted");
    // 1.4.0 declares one-hour windows: an hour inside the day already released is spent.
    operator.add_package(&w.repack("1.4.0", "120.00", "10.0", "1h"), &w.policy, T0 + 3 * H).unwrap();
    let err = operator.aggregate(&package, (T0 + H, T0 + 2 * H), 100, None, &mut rng, now).unwrap_err();
    assert_eq!(err.code(), "epsilon-exhausted", "{err}");

    // The license bought under 1.2.0 is billed at 6.00/h whatever came later; one bought
    // after 1.4.0 at 120.00/h.
    let request = wallet.request(&w.chain, &package, "metered", 1, T0 + 4 * H).unwrap();
    wallet.finalize(&w.issuer.issue(&request, T0 + 4 * H).unwrap()).unwrap();
    let sealed = wallet.redeem_tier("acme/thermal", Some("metered")).unwrap();
    let later = wallet.install(&w.issuer.redeem(&sealed, T0 + 4 * H).unwrap()).unwrap();
    let v = wallet.verify(&Trust::chain(&w.chain), "acme/thermal", None, None, T0 + 5 * H).unwrap();
    assert_eq!(v.license.license_id, later.license_id);
    meter.record(&v, "invocations", 1, T0 + 5 * H + 60).unwrap();
    let hex_later = hex::encode(&later.license_id);
    let report = meter
        .report_license("acme/thermal", Some(&hex_later), T0 + 5 * H, Telemetry::Private, T0 + 6 * H)
        .unwrap();
    assert_eq!(ingest_one(&mut operator, &report.file, (T0 + 6 * H).0), "stored");
    let period = Period::of(T0);
    for license in [&metered[0], &later] {
        let id = hex::encode(&license.license_id);
        let close = meter.close("acme/thermal", period, Some(&id), false, period.end() + 10).unwrap();
        operator.close(&close.file, period.end() + 20).unwrap();
    }
    let billing = operator.billing(period).unwrap();
    let gross = |id: &[u8]| {
        billing.charges.iter().find(|c| c.license_id == hex::encode(id)).map(|c| c.gross_micros.0).unwrap()
    };
    assert_eq!(gross(&metered[0].license_id), 100_000, "1 minute at 6.00/h, as bought");
    assert_eq!(gross(&later.license_id), 2_000_000, "1 minute at 120.00/h");
}

/// Review 2 (low): 40 different reports of one license-hour stored 39 evidence rows of
/// 16–80 KB each. One pair is kept per license, kind, hour and seq; the rest are counted,
/// and the license is flagged.
#[test]
fn evidence_is_one_pair_per_license_hour_and_the_rest_are_counted() {
    let w = world();
    let mut operator = w.operator();
    let (wallet, licenses) = w.wallet("wallet", "metered", 1);
    let license = &licenses[0];
    let cert = certificate(&wallet, license);
    let files: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            let mut minutes = [0u64; 60];
            minutes[i] = 1;
            craft(&wallet, license, &cert, (T0 + H).0, 1, [0; 32], &[("minutes", minutes)], false)
        })
        .collect();
    let now = (T0 + 2 * H).0;
    assert_eq!(ingest_one(&mut operator, &files[0], now), "stored");
    for file in &files[1..] {
        assert_eq!(ingest_one(&mut operator, file, now), "equivocation");
    }
    // The same conflicting report again counts nothing more.
    assert_eq!(ingest_one(&mut operator, &files[1], now), "equivocation");
    let evidence = operator.evidence(None).unwrap();
    assert_eq!(evidence.len(), 1, "one pair kept");
    assert_eq!(evidence[0].repeats, 38, "the other 38 conflicting reports counted");
    assert_eq!(evidence[0].hour, Some(T0 + H));
    let billing_flag = operator.evidence(None).unwrap()[0].license_id.clone();
    assert_eq!(billing_flag, hex::encode(&license.license_id));
}

/// Issue 27 (21): the report store grew by about 9.5 KiB per hourly report, kept for ever.
/// A closed period's reports are compacted once it ended long enough ago (metering.md
/// §6.6), and every later check, openings aside, still passes: billing, the close again, a
/// report sent again (duplicate), another report for a compacted hour (refused), the next
/// report's chain, the next period's close.
#[test]
fn a_compacted_period_keeps_what_billing_and_the_chain_need() {
    let w = world();
    let (wallet, _) = w.wallet("wallet", "metered", 1);
    let meter = Meter::open(&wallet).unwrap();
    let v = verified(&wallet, &w.chain);
    meter.record(&v, "invocations", 2, T0 + H + 60).unwrap();
    meter.record(&v, "invocations", 5, T0 + 2 * H + 120).unwrap();
    let now = T0 + 3 * H;
    let r1 = meter.report("acme/thermal", T0 + H, None, now).unwrap();
    let r2 = meter.report("acme/thermal", T0 + 2 * H, None, now).unwrap();
    let mut operator = w.operator();
    operator.ingest(&[r1.file.clone(), r2.file.clone()], now).unwrap();
    let period = Period::of(T0);
    let close = meter.close("acme/thermal", period, None, false, period.end() + 10).unwrap();
    operator.close(&close.file, period.end() + 20).unwrap();
    let billed = operator.billing(period).unwrap().charges;
    // The next period's first hour, reported before the compaction.
    let next_hour = period.end() + 2 * 86_400;
    meter.record(&v, "invocations", 1, next_hour + 30).unwrap();
    let r3 = meter.report("acme/thermal", next_hour, None, next_hour + 2 * H).unwrap();

    const DAY: u64 = 86_400;
    // Less than the minimum retention is refused; a period not old enough is left whole.
    assert_eq!(operator.compact(34 * DAY, period.end() + 40 * DAY).unwrap_err().code(), "report-invalid");
    let early = operator.compact(35 * DAY, period.end() + 30 * DAY).unwrap();
    assert_eq!(early.reports, 0);
    let done = operator.compact(35 * DAY, period.end() + 36 * DAY).unwrap();
    assert_eq!((done.periods, done.reports), (1, 2));
    // Each report of two units held about 10 KiB: its envelope, commitments and proofs.
    assert!(done.bytes > 2 * 8_000, "{done:?}");
    assert_eq!(operator.compact(35 * DAY, period.end() + 36 * DAY).unwrap().reports, 0, "idempotent");
    // Every cell of the compacted reports: number, hour, hash and arrival; no bytes.
    {
        let db = rusqlite::Connection::open(w.tmp.path().join("op/operator.sqlite")).unwrap();
        let rows: Vec<(i64, i64, usize, usize)> = db
            .prepare("SELECT seq, hour, length(hash), length(report) FROM reports ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, [(1, (T0 + H).0 as i64, 32, 0), (2, (T0 + 2 * H).0 as i64, 32, 0)]);
        let sums: i64 = db.query_row("SELECT count(*) FROM hour_sums", [], |r| r.get(0)).unwrap();
        assert_eq!(sums, 4, "two units for each of two hours");
    }

    let later = (period.end() + 36 * DAY).0;
    assert_eq!(operator.billing(period).unwrap().charges, billed);
    assert!(operator.close(&close.file, period.end() + 36 * DAY).unwrap().again);
    assert_eq!(ingest_one(&mut operator, &r1.file, later), "duplicate");
    // The chain goes on from the compacted report's hash.
    assert_eq!(ingest_one(&mut operator, &r3.file, later), "stored");
    // An opening of a compacted hour cannot be checked any more, and says why.
    let minute = meter.open_hour("acme/thermal", T0 + H, Some(1), Some("invocations")).unwrap();
    let err = operator.check_opening(&minute.to_cbor()).unwrap_err();
    assert_eq!(err.code(), "meter-not-found");
    assert!(err.to_string().contains("compacted"), "{err}");
    // An opening of the next, whole period still is.
    let open = meter.open_hour("acme/thermal", next_hour, None, None).unwrap();
    assert!(operator.check_opening(&open.to_cbor()).is_ok());
}

/// The report chain head only moves forward, one report at a time: both stores refuse a
/// report that is not the one after the license's head, whoever calls them (issue 28, 7:
/// invariants checked where data is written, not only by the rules before).
#[test]
fn a_store_refuses_a_report_that_does_not_follow_the_chain_head() {
    use escx_metering::store::{
        MemoryOperatorStore, NewReport, OperatorStore, OperatorWriter, SqlOperatorStore, StoredLicense,
    };
    fn check(store: &impl OperatorStore) {
        let license = StoredLicense {
            license_id: vec![7; 16],
            cert_id: [1; 32],
            issuer: vec![2; 16],
            package: "acme/thermal".into(),
            tier: "metered".into(),
            holder: vec![3; 16],
            not_before: 0,
            not_after: 10_000_000,
            certificate: vec![4; 8],
        };
        let report = |seq: u64, hour: u64| NewReport {
            license_id: &[7; 16],
            seq,
            hour,
            hash: &[9; 32],
            report: &[5; 8],
            received_at: hour + 10,
            sums: Vec::new(),
        };
        let tx = store.begin().unwrap();
        tx.insert_license(&license).unwrap();
        tx.store_report(&report(1, 3600)).unwrap();
        tx.commit().unwrap();
        // Skipping ahead, going back, and storing the head again are all refused (the
        // caller then drops the transaction: nothing of it is kept).
        for (seq, hour) in [(3, 7200), (1, 7200), (0, 7200)] {
            let tx = store.begin().unwrap();
            assert!(tx.store_report(&report(seq, hour)).is_err(), "report {seq} after head 1");
        }
        let tx = store.begin().unwrap();
        tx.store_report(&report(2, 7200)).unwrap();
        tx.commit().unwrap();
    }
    check(&MemoryOperatorStore::default());
    let dir = tempfile::tempdir().unwrap();
    let location = escx_store::Location::from_path(&dir.path().join("operator.sqlite"));
    check(&SqlOperatorStore::open(&location, escx_store::Mode::Create).unwrap());
}
