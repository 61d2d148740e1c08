//! Metering costs next to their crypto floor, in the same run:
//!
//! - `report`: `Meter::report` of one hour (two series: `minutes` and `invocations`,
//!   120 commitments, one holder signature) vs the raw work it needs (120 commitments and
//!   one ML-DSA-87 sign);
//! - `ingest`: `Operator::ingest` of a batch of 1 000 reports of 20 known licenses (parsing,
//!   parallel holder-signature verify and point work, the chain and time rules, one SQLite
//!   transaction) vs the **crypto floor** on the same 2 cores: per report one ML-DSA-87
//!   verify and the decompression and summing of its 120 commitments, in parallel with
//!   rayon; reports per second are printed;
//! - `close`: `Operator::close` of a period of 100 reported hours vs summing their 200
//!   stored hour commitments and one commitment check.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use escx::envelope::Envelope;
use escx::policy::TrustPolicy;
use escx::sig::{PublicKey, SecretKey};
use escx_licensing::messages::{BundleChain, LicensePayload};
use escx_licensing::rangeproof;
use escx_licensing::trust::Trust;
use escx_licensing::wallet::Wallet;
use escx_metering::meter::{Meter, Telemetry};
use escx_metering::operator::{Operator, Outcome};
use escx_metering::{self as metering, CONTEXT_REPORT, Period, ReportFile, ReportPayload};
use rayon::prelude::*;

/// 2027-01-15T08:00:00Z.
const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const H: u64 = 3600;
const LICENSES: usize = 20;
const HOURS: u64 = 51;

struct World {
    tmp: tempfile::TempDir,
    chain: BundleChain,
    package: std::path::PathBuf,
    policy: TrustPolicy,
    /// One wallet per license (the meter picks a package's newest license).
    wallets: Vec<Wallet>,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let shared = escx_benches::metered_world(tmp.path(), T0, LICENSES);
    World {
        tmp,
        chain: shared.chain,
        package: shared.package,
        policy: shared.policy,
        wallets: shared.wallets,
    }
}

/// Every license's reports of hours 1..=HOURS, by hour: `reports[h][license]`.
fn reports(world: &World) -> Vec<Vec<Vec<u8>>> {
    let mut by_hour = vec![Vec::new(); HOURS as usize];
    for wallet in &world.wallets {
        let meter = Meter::open(wallet).unwrap();
        let verified =
            wallet.verify(&Trust::chain(&world.chain), "bench/thermal", None, None, T0 + H).unwrap();
        for h in 0..HOURS {
            let hour = T0 + (h + 1) * H;
            for minute in [3, 17, 18, 44] {
                meter.record(&verified, "invocations", 2, hour + minute * 60).unwrap();
            }
            by_hour[h as usize]
                .push(meter.report("bench/thermal", hour, Telemetry::Private, T0 + 60 * H).unwrap().file);
        }
    }
    by_hour
}

/// An operator store holding every license's first report (so licenses are known).
fn template(world: &World, first: &[Vec<u8>]) -> std::path::PathBuf {
    let dir = world.tmp.path().join("op-template");
    let mut operator = Operator::init(&dir, std::slice::from_ref(&world.chain)).unwrap();
    operator.add_package(&world.package, &world.policy, T0).unwrap();
    let results = operator.ingest(first, T0 + 60 * H).unwrap();
    assert!(results.iter().all(|r| matches!(r.outcome, Outcome::Stored)));
    dir
}

fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn holder_keys(world: &World) -> Vec<(Vec<u8>, PublicKey)> {
    world
        .wallets
        .iter()
        .map(|w| {
            let (license, _): (LicensePayload, Vec<u8>) = w
                .licenses_during("bench/thermal", escx::UnixSeconds(0), escx::UnixSeconds(u64::MAX))
                .unwrap()
                .remove(0);
            (license.license_id.to_vec(), PublicKey::from_bytes(&license.holder_key).unwrap())
        })
        .collect()
}

/// The crypto floor of one report: the holder signature and the point work.
fn floor_one(file: &[u8], keys: &[(Vec<u8>, PublicKey)]) -> [u8; 32] {
    let file = ReportFile::from_cbor(file).unwrap();
    let envelope = Envelope::from_cbor(&file.report).unwrap();
    let unverified: ReportPayload = escx::cbor::decode_exact(envelope.payload_unverified(), "r").unwrap();
    let key = &keys.iter().find(|(id, _)| id.as_slice() == unverified.license_id.as_slice()).unwrap().1;
    envelope.open(CONTEXT_REPORT, key).unwrap();
    let mut out = [0u8; 32];
    for series in &unverified.series {
        let mut sum = RistrettoPoint::default();
        for c in &series.commitments {
            sum += CompressedRistretto::from_slice(c).unwrap().decompress().unwrap();
        }
        out = sum.compress().to_bytes();
    }
    out
}

fn metering_benches(c: &mut Criterion) {
    let world = world();
    let by_hour = reports(&world);
    let template = template(&world, &by_hour[0]);
    let batch: Vec<Vec<u8>> = by_hour[1..].iter().flatten().cloned().collect();
    assert_eq!(batch.len(), 1000);
    let keys = holder_keys(&world);

    // Report generation.
    let mut group = c.benchmark_group("report");
    // Each iteration reports a new hour of one 31-day license: keep the count below 700.
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let signer = SecretKey::generate();
    let message = vec![7u8; 8000];
    group.bench_function("raw: 120 commitments + one ML-DSA-87 sign", |b| {
        let r = metering::blinding(&[1; 32], &[2; 16], "invocations", T0, 0);
        b.iter(|| {
            for v in 0..120u64 {
                black_box(escx_licensing::pedersen::commit(v, &r).compress());
            }
            signer.sign(escx::sig::SigningContext::new("escx/bench/v1"), black_box(&message))
        });
    });
    // The report's range proofs alone (metering.md §3.4): 60 minutes as 1-bit values (64
    // padded), the minutes hour sum and bound as 8-bit values, and one other unit's sum and
    // bound as 64-bit values.
    let blindings: Vec<curve25519_dalek::scalar::Scalar> =
        (0..64u8).map(|m| metering::blinding(&[1; 32], &[2; 16], "minutes", T0, m)).collect();
    let minute_values: Vec<u64> = (0..64).map(|m| u64::from(m % 3 == 0)).collect();
    group.bench_function("raw: BP+ prove 64 x 1 bit + 2 x 8 bits + 2 x 64 bits", |b| {
        b.iter(|| {
            let mut t = merlin::Transcript::new(b"bench");
            rangeproof::prove(1, &mut t, black_box(&minute_values), &blindings).unwrap();
            let mut t = merlin::Transcript::new(b"bench");
            rangeproof::prove(8, &mut t, black_box(&[20, 40]), &blindings[..2]).unwrap();
            let mut t = merlin::Transcript::new(b"bench");
            rangeproof::prove(64, &mut t, black_box(&[40, metering::COUNTER_MAX - 40]), &blindings[..2])
                .unwrap()
        });
    });
    let bench_wallet = &world.wallets[0];
    let meter = Meter::open(bench_wallet).unwrap();
    let verified = bench_wallet
        .verify(&Trust::chain(&world.chain), "bench/thermal", None, None, T0 + (HOURS + 1) * H)
        .unwrap();
    let mut next = T0 + (HOURS + 1) * H;
    group.bench_function("Meter::report (minutes + invocations)", |b| {
        b.iter_batched(
            || {
                let hour = next;
                next += H;
                meter.record(&verified, "invocations", 1, hour + 600).unwrap();
                hour
            },
            |hour| meter.report("bench/thermal", hour, Telemetry::Private, hour + 2 * H).unwrap(),
            BatchSize::PerIteration,
        );
    });
    group.finish();

    // Ingest against the floor.
    let mut group = c.benchmark_group("ingest_1000");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("crypto floor (verify + 120 decompressions, rayon)", |b| {
        b.iter(|| batch.par_iter().map(|f| floor_one(f, &keys)).collect::<Vec<_>>());
    });
    let mut round = 0u32;
    group.bench_function("Operator::ingest (one transaction)", |b| {
        b.iter_batched(
            || {
                round += 1;
                let dir = world.tmp.path().join(format!("op-{round}"));
                copy_store(&template, &dir);
                Operator::open(&dir).unwrap()
            },
            |mut operator| {
                let results = operator.ingest(&batch, T0 + 60 * H).unwrap();
                assert!(matches!(results[999].outcome, Outcome::Stored));
                operator
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();

    // Sustained figures, printed with the ratio from the same run.
    let floor_start = Instant::now();
    for _ in 0..5 {
        black_box(batch.par_iter().map(|f| floor_one(f, &keys)).collect::<Vec<_>>());
    }
    let floor = floor_start.elapsed() / 5;
    let mut ingest_total = Duration::ZERO;
    for i in 0..5 {
        let dir = world.tmp.path().join(format!("op-sustained-{i}"));
        copy_store(&template, &dir);
        let mut operator = Operator::open(&dir).unwrap();
        let start = Instant::now();
        operator.ingest(&batch, T0 + 60 * H).unwrap();
        ingest_total += start.elapsed();
    }
    let ingest = ingest_total / 5;
    // The hour and sums proofs of the batch, batch-verified (what ingest adds to the floor), and
    // the per-minute proofs ingest leaves to disputes, for scale.
    let items = |minutes: bool| {
        batch
            .iter()
            .enumerate()
            .flat_map(|(i, file)| {
                let file = ReportFile::from_cbor(file).unwrap();
                let envelope = Envelope::from_cbor(&file.report).unwrap();
                let payload: ReportPayload =
                    escx::cbor::decode_exact(envelope.payload_unverified(), "r").unwrap();
                if minutes {
                    vec![metering::minutes_range_item(&payload, i as u32).unwrap()]
                } else {
                    metering::check_report_ranges(&payload, i as u32).unwrap().1
                }
            })
            .collect::<Vec<_>>()
    };
    let time_verify = |minutes: bool, rounds: u32| {
        let mut total = Duration::ZERO;
        for _ in 0..rounds {
            let items = items(minutes);
            let start = Instant::now();
            assert!(rangeproof::verify_each(items).is_empty());
            total += start.elapsed();
        }
        total / rounds
    };
    let ranges = time_verify(false, 5);
    let minute_proofs = time_verify(true, 2);
    println!(
        "hour and sums proofs of 1000 reports, batch-verified on rayon: {:.1} ms = {:.0}/s; floor + proofs {:.0}/s; ingest at {:.2}x that rate",
        ranges.as_secs_f64() * 1e3,
        1000.0 / ranges.as_secs_f64(),
        1000.0 / (floor + ranges).as_secs_f64(),
        (floor + ranges).as_secs_f64() / ingest.as_secs_f64()
    );
    println!(
        "per-minute proofs of the same 1000 reports (checked at a dispute, not at ingest), batch-verified: {:.1} ms",
        minute_proofs.as_secs_f64() * 1e3
    );
    println!(
        "ingest: 1000 reports in {:.1} ms = {:.0} reports/s; crypto floor {:.1} ms = {:.0}/s; ingest runs at {:.2}x the floor's rate",
        ingest.as_secs_f64() * 1e3,
        1000.0 / ingest.as_secs_f64(),
        floor.as_secs_f64() * 1e3,
        1000.0 / floor.as_secs_f64(),
        floor.as_secs_f64() / ingest.as_secs_f64()
    );

    // Close of a period of HOURS reports.
    let dir = world.tmp.path().join("op-close");
    copy_store(&template, &dir);
    let mut operator = Operator::open(&dir).unwrap();
    operator.ingest(&batch, T0 + 60 * H).unwrap();
    let period = Period::of(T0);
    let closes: Vec<Vec<u8>> = world.wallets[1..]
        .iter()
        .map(|w| {
            Meter::open(w).unwrap().close("bench/thermal", period, None, true, T0 + 60 * H).unwrap().file
        })
        .collect();
    let sums: Vec<RistrettoPoint> = (0..2 * HOURS)
        .map(|i| {
            escx_licensing::pedersen::commit(i, &metering::blinding(&[1; 32], &[2; 16], "minutes", T0, 0))
        })
        .collect();
    let compressed: Vec<[u8; 32]> = sums.iter().map(|p| p.compress().to_bytes()).collect();
    let mut group = c.benchmark_group("close");
    group.sample_size(10);
    group.bench_function("raw: decompress and sum 102 hour sums + one commitment", |b| {
        let r = metering::blinding(&[1; 32], &[2; 16], "minutes", T0, 1);
        b.iter(|| {
            let total: RistrettoPoint =
                compressed.iter().map(|c| CompressedRistretto(*c).decompress().unwrap()).sum();
            black_box(total == escx_licensing::pedersen::commit(5, &r))
        });
    });
    drop(operator);
    let mut round = 0usize;
    group.bench_function("Operator::close (51 hours, 2 units)", |b| {
        b.iter_batched(
            || {
                round += 1;
                let fresh = world.tmp.path().join(format!("op-close-{round}"));
                copy_store(&dir, &fresh);
                (Operator::open(&fresh).unwrap(), &closes[round % closes.len()])
            },
            |(mut operator, file)| {
                let closed = operator.close(file, T0 + 60 * H).unwrap();
                assert!(!closed.again);
                operator
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, metering_benches);
criterion_main!(benches);
