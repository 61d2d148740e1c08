//! The operator's report store before and after `Operator::compact` (metering.md §6.6):
//! one license reporting every hour of a closed month (two units: `minutes` and
//! `invocations`), the SQLite file's size after VACUUM, and the bytes per license-year.
//!
//!     cargo run --release -p escx-benches --example compaction

use escx::keyfile::Protection;
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx_licensing::issuer::Issuer;
use escx_licensing::metering::Period;
use escx_licensing::metering::meter::Meter;
use escx_licensing::metering::operator::Operator;
use escx_licensing::trust::Trust;
use escx_licensing::wallet::Wallet;

/// 2027-01-15T08:00:00Z.
const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const H: u64 = 3600;
const DAY: u64 = 86_400;
/// Hours 1..=HOURS after T0 all fall in January 2027.
const HOURS: u64 = 399;

const MANIFEST: &str = "[package]\nname = \"bench/thermal\"\nversion = \"1.0.0\"\n[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\
[[pricing.tier]]\nname = \"metered\"\nprice = \"6.00\"\nunit = \"hour\"\ntelemetry = \"private\"\n\
[telemetry]\nmetrics = [\"invocations\"]\nwindow = \"24h\"\ncohort_min_size = 50\nepsilon = 1.0\n";

fn vacuumed_size(path: &std::path::Path) -> u64 {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;").unwrap();
    drop(db);
    std::fs::metadata(path).unwrap().len()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::init(&tmp.path().join("issuer"), "Bench", &Protection::Unencrypted, T0).unwrap();
    let publisher = SecretKey::generate();
    let src = tmp.path().join("pkg");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("manifest.toml"), MANIFEST).unwrap();
    let package = tmp.path().join("p.escx");
    escx::pack::pack_dir(
        &src,
        &package,
        &[&publisher],
        &escx::pack::PackOptions { signed_at: Some(T0), ..Default::default() },
    )
    .unwrap();
    let policy = TrustPolicy::from_keys(vec![publisher.public_key().clone()]);
    issuer.register_package(&package, &policy, T0).unwrap();
    let chain = issuer.bundle(T0).unwrap();
    let wallet = Wallet::open(&tmp.path().join("wallet")).unwrap();
    let request = wallet.request(&chain, &"bench/thermal".parse().unwrap(), "metered", 1, T0).unwrap();
    wallet.finalize(&issuer.issue(&request, T0).unwrap()).unwrap();
    let sealed = wallet.redeem("bench/thermal").unwrap();
    wallet.install(&issuer.redeem(&sealed, T0 + 1).unwrap()).unwrap();

    let meter = Meter::open(&wallet).unwrap();
    let verified = wallet.verify(&Trust::chain(&chain), "bench/thermal", None, None, T0 + H).unwrap();
    let mut files = Vec::new();
    for h in 1..=HOURS {
        let hour = T0 + h * H;
        for minute in [3, 17, 18, 44] {
            meter.record(&verified, "invocations", 2, hour + minute * 60).unwrap();
        }
        files.push(meter.report("bench/thermal", hour, None, T0 + (HOURS + 1) * H).unwrap().file);
    }
    let dir = tmp.path().join("op");
    let mut operator = Operator::init(&dir, &[chain]).unwrap();
    operator.add_package(&package, &policy, T0).unwrap();
    operator.ingest(&files, T0 + (HOURS + 1) * H).unwrap();
    let period = Period::of(T0);
    let close = meter.close("bench/thermal", period, None, false, period.end() + 10).unwrap();
    operator.close(&close.file, period.end() + 20).unwrap();
    drop(operator);

    let store = dir.join("operator.sqlite");
    let before = vacuumed_size(&store);
    let mut operator = Operator::open(&dir).unwrap();
    let done = operator.compact(35 * DAY, period.end() + 36 * DAY).unwrap();
    drop(operator);
    let after = vacuumed_size(&store);
    let year = |bytes: u64| bytes as f64 / HOURS as f64 * 8760.0 / 1e6;
    println!("reports: {HOURS} hourly reports of one license, two units; compacted {}", done.reports);
    println!("report bytes dropped: {} ({:.0} per report)", done.bytes, done.bytes as f64 / HOURS as f64);
    println!(
        "operator.sqlite after VACUUM: before {before} bytes ({:.0} per report, {:.1} MB per license-year)",
        before as f64 / HOURS as f64,
        year(before)
    );
    println!(
        "operator.sqlite after VACUUM: after {after} bytes ({:.0} per report, {:.2} MB per license-year), {:.1}x smaller",
        after as f64 / HOURS as f64,
        year(after),
        before as f64 / after as f64
    );
}
