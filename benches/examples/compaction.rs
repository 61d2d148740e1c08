//! The operator's report store before and after `Operator::compact` (metering.md §6.6):
//! one license reporting every hour of a closed month (two units: `minutes` and
//! `invocations`), the SQLite file's size after VACUUM, and the bytes per license-year.
//!
//!     cargo run --release -p escx-benches --example compaction

use escx_licensing::trust::Trust;
use escx_metering::Period;
use escx_metering::meter::Meter;
use escx_metering::operator::Operator;

/// 2027-01-15T08:00:00Z.
const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const H: u64 = 3600;
const DAY: u64 = 86_400;
/// Hours 1..=HOURS after T0 all fall in January 2027.
const HOURS: u64 = 399;

fn vacuumed_size(path: &std::path::Path) -> u64 {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;").unwrap();
    drop(db);
    std::fs::metadata(path).unwrap().len()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let world = escx_benches::metered_world(tmp.path(), T0, 1);
    let (chain, package, policy, wallet) = (world.chain, world.package, world.policy, &world.wallets[0]);
    let meter = Meter::open(wallet).unwrap();
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
