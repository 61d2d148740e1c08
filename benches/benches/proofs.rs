//! Zero-knowledge proofs next to raw `bulletproofs`, in the same run:
//!
//! - `threshold`: `proofs::prove_threshold` / `verify_revenue` of a threshold over one
//!   statement vs raw `RangeProof::prove_single` / `verify_single`, 64 bits;
//! - `entry_range`: one entry's statement range proof (3 payouts padded to 4) vs raw
//!   `prove_multiple` / `verify_multiple` of 4 values;
//! - printed once: statement range proofs for `ESCX_BENCH_ENTRIES` entries (default
//!   10 000): prove time on 2 cores, verify time on 1 thread and on 2, and the speed-up;
//!   revenue-total verification over 100 000 statement entries (10 statements).
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use escx_manifest::Micros;
use std::hint::black_box;
use std::time::Instant;

use bulletproofs::{BulletproofGens, PedersenGens, RangeProof};
use criterion::{Criterion, criterion_group, criterion_main};
use curve25519_dalek::scalar::Scalar;
use escx::sig::SecretKey;
use escx_settlement::proofs::{self, RevenueClaim};
use escx_settlement::statement::{self, EntryInput, OpeningsFile, Verified};
use merlin::Transcript;

/// 2026-11-15.
const NOV: escx::UnixSeconds = escx::UnixSeconds(1_794_700_800);

fn key() -> &'static SecretKey {
    static KEY: std::sync::OnceLock<SecretKey> = std::sync::OnceLock::new();
    KEY.get_or_init(SecretKey::generate)
}

fn inputs(count: usize, salt: u8) -> Vec<EntryInput> {
    (0..count)
        .map(|i| {
            let gross = 1_000_000 + i as u64 * 7;
            let platform = gross / 10;
            let referrer = (gross - platform) / 10;
            EntryInput {
                settlement: blake3::derive_key("bench", &[&(i as u64).to_le_bytes()[..], &[salt]].concat()),
                kind: escx_settlement::store::RecordKind::Sale,
                currency: "USD".into(),
                gross: Micros(gross),
                payouts: vec![
                    ("platform".into(), Micros(platform)),
                    ("referrer".into(), Micros(referrer)),
                    ("acme".into(), Micros(gross - platform - referrer)),
                ],
                // The platform's 10 % of the gross and the referrer's 10 % of the rest:
                // each entry also gets a split proof over two pairs of remainders.
                rules: vec![
                    Some(statement::PayoutRule { bps: 1000, minus: vec![] }),
                    Some(statement::PayoutRule { bps: 1000, minus: vec![0] }),
                    None,
                ],
            }
        })
        .collect()
}

/// `count` statements of `entries` entries each, chained, with acme's openings.
fn statements(
    count: u64,
    entries: usize,
) -> (Vec<Verified>, Vec<OpeningsFile>, Vec<Vec<statement::Opening>>) {
    let ledger = [7u8; 16];
    let mut previous = [0u8; 32];
    let (mut verified, mut openings, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for seq in 1..=count {
        let built =
            statement::build(&ledger, seq, &previous, NOV + seq, &inputs(entries, seq as u8), key()).unwrap();
        previous = built.hash;
        let v = statement::verify(&built.bytes, key().public_key()).unwrap();
        let party = built.party_openings("acme");
        openings.push(OpeningsFile {
            v: 1,
            ledger: serde_bytes::ByteBuf::from(ledger.to_vec()),
            seq,
            party: "acme".into(),
            openings: party,
        });
        all.push(built.openings);
        verified.push(v);
    }
    (verified, openings, all)
}

fn claim() -> RevenueClaim<'static> {
    RevenueClaim {
        operator: key().id(),
        party: "acme",
        period: escx_settlement::payout::Period::of(NOV),
        currency: "USD",
    }
}

fn benches(c: &mut Criterion) {
    let pc = PedersenGens::default();
    let bp = BulletproofGens::new(64, 64);
    let (one, one_openings, one_all) = statements(1, 8);

    let mut group = c.benchmark_group("threshold");
    group.sample_size(20);
    let r = Scalar::from(5u64);
    group.bench_function("raw prove_single, 64 bits", |b| {
        b.iter(|| {
            RangeProof::prove_single(&bp, &pc, &mut Transcript::new(b"raw"), black_box(12_345), &r, 64)
                .unwrap()
        })
    });
    let (raw, raw_commitment) =
        RangeProof::prove_single(&bp, &pc, &mut Transcript::new(b"raw"), 12_345, &r, 64).unwrap();
    group.bench_function("raw verify_single, 64 bits", |b| {
        b.iter(|| raw.verify_single(&bp, &pc, &mut Transcript::new(b"raw"), &raw_commitment, 64).unwrap())
    });
    group.bench_function("proofs::prove_threshold (8 entries)", |b| {
        b.iter(|| proofs::prove_threshold(&one, &one_openings, &claim(), 1_000_000).unwrap())
    });
    let threshold = proofs::prove_threshold(&one, &one_openings, &claim(), 1_000_000).unwrap();
    group.bench_function("proofs::verify_revenue of the threshold (8 entries)", |b| {
        b.iter(|| proofs::verify_revenue(&threshold, &one, &key().id()).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("entry_range");
    group.sample_size(20);
    let values = [100u64, 200, 300, 0];
    let blindings = [Scalar::from(1u8), Scalar::from(2u8), Scalar::from(3u8), Scalar::ZERO];
    group.bench_function("raw prove_multiple, 4 x 64 bits", |b| {
        b.iter(|| {
            RangeProof::prove_multiple(&bp, &pc, &mut Transcript::new(b"raw"), &values, &blindings, 64)
                .unwrap()
        })
    });
    let (raw4, commitments) =
        RangeProof::prove_multiple(&bp, &pc, &mut Transcript::new(b"raw"), &values, &blindings, 64).unwrap();
    group.bench_function("raw verify_multiple, 4 x 64 bits", |b| {
        b.iter(|| raw4.verify_multiple(&bp, &pc, &mut Transcript::new(b"raw"), &commitments, 64).unwrap())
    });
    group.finish();

    bulletproofs_plus(c, &bp, &pc);

    // Statement range proofs at scale, timed once.
    let entries: usize =
        std::env::var("ESCX_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let (big, _, big_all) = statements(1, entries);
    let start = Instant::now();
    let proofs = proofs::prove_statement(&big[0], &big_all[0], &key().id()).unwrap();
    let prove = start.elapsed();
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let start = Instant::now();
    one_thread.install(|| proofs::verify_statement(&proofs, &big[0], &key().id()).unwrap());
    let serial = start.elapsed();
    let start = Instant::now();
    proofs::verify_statement(&proofs, &big[0], &key().id()).unwrap();
    let parallel = start.elapsed();
    println!(
        "statement range proofs, {entries} entries x 3 payouts: prove {:.1} s on {} threads; verify {:.2} s on 1 thread, {:.2} s on {} = {:.2}x",
        prove.as_secs_f64(),
        rayon::current_num_threads(),
        serial.as_secs_f64(),
        parallel.as_secs_f64(),
        rayon::current_num_threads(),
        serial.as_secs_f64() / parallel.as_secs_f64()
    );
    drop((big, big_all, proofs, one_all));

    // Revenue total over 100 000 entries.
    let (many, many_openings, _) = statements(10, 10_000);
    let total = proofs::prove_total(&many, &many_openings, &claim()).unwrap();
    let start = Instant::now();
    let rounds = 5;
    for _ in 0..rounds {
        black_box(proofs::verify_revenue(&total, &many, &key().id()).unwrap());
    }
    println!(
        "revenue total over 100 000 entries (10 statements): verify {:.0} ms (goal < 1 s)",
        start.elapsed().as_secs_f64() * 1e3 / f64::from(rounds)
    );
}

/// Bulletproofs+ (`tari_bulletproofs_plus` 0.4, its default generators: speed does not
/// depend on which generators) on the statement proofs' shape, one entry of 4 x 64 bits,
/// and a batch of 64 such proofs verified at once vs 64 `bulletproofs` 5 verifications.
fn bulletproofs_plus(c: &mut Criterion, bp: &BulletproofGens, pc: &PedersenGens) {
    use tari_bulletproofs_plus::commitment_opening::CommitmentOpening;
    use tari_bulletproofs_plus::generators::pedersen_gens::ExtensionDegree;
    use tari_bulletproofs_plus::range_parameters::RangeParameters;
    use tari_bulletproofs_plus::range_proof::{RangeProof as PlusProof, VerifyAction};
    use tari_bulletproofs_plus::range_statement::RangeStatement;
    use tari_bulletproofs_plus::range_witness::RangeWitness;
    use tari_bulletproofs_plus::ristretto::{self, RistrettoRangeProof};

    let params = RangeParameters::init(
        64,
        4,
        ristretto::create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
    )
    .unwrap();
    let make = |seed: u64| {
        let values = [100 + seed, 200, 300, 0];
        let blindings: Vec<Scalar> = (1..=4u64).map(|i| Scalar::from(i * 1_000 + seed)).collect();
        let commitments = values
            .iter()
            .zip(&blindings)
            .map(|(v, r)| params.pc_gens().commit(&Scalar::from(*v), &[*r]).unwrap())
            .collect();
        let openings =
            values.iter().zip(&blindings).map(|(v, r)| CommitmentOpening::new(*v, vec![*r])).collect();
        let statement = RangeStatement::init(params.clone(), commitments, vec![None; 4], None).unwrap();
        (statement, RangeWitness::init(openings).unwrap())
    };
    let (statement, witness) = make(0);
    let mut group = c.benchmark_group("bulletproofs_plus");
    group.sample_size(20);
    group.bench_function("BP+ prove, 4 x 64 bits", |b| {
        b.iter(|| {
            RistrettoRangeProof::prove_with_rng(
                &mut Transcript::new(b"escx bench"),
                &statement,
                &witness,
                &mut rand_core::OsRng,
            )
            .unwrap()
        })
    });
    let proof = RistrettoRangeProof::prove_with_rng(
        &mut Transcript::new(b"escx bench"),
        &statement,
        &witness,
        &mut rand_core::OsRng,
    )
    .unwrap();
    let one = [statement.clone()];
    let one_proof = [proof];
    group.bench_function("BP+ verify, 4 x 64 bits", |b| {
        b.iter(|| {
            PlusProof::verify_batch(
                &mut [Transcript::new(b"escx bench")],
                &one,
                &one_proof,
                VerifyAction::VerifyOnly,
            )
            .unwrap()
        })
    });
    let batch: Vec<(RangeStatement<_>, _)> = (0..64).map(make).collect();
    let statements: Vec<_> = batch.iter().map(|(s, _)| s.clone()).collect();
    let proofs: Vec<_> = batch
        .iter()
        .map(|(s, w)| {
            RistrettoRangeProof::prove_with_rng(
                &mut Transcript::new(b"escx bench"),
                s,
                w,
                &mut rand_core::OsRng,
            )
            .unwrap()
        })
        .collect();
    group.bench_function("BP+ batch verify of 64 proofs, 4 x 64 bits each", |b| {
        b.iter(|| {
            let mut transcripts: Vec<Transcript> = (0..64).map(|_| Transcript::new(b"escx bench")).collect();
            PlusProof::verify_batch(&mut transcripts, &statements, &proofs, VerifyAction::VerifyOnly).unwrap()
        })
    });
    let values = [100u64, 200, 300, 0];
    let blindings = [Scalar::from(1u8), Scalar::from(2u8), Scalar::from(3u8), Scalar::ZERO];
    let classic: Vec<_> = (0..64)
        .map(|_| {
            RangeProof::prove_multiple(bp, pc, &mut Transcript::new(b"raw"), &values, &blindings, 64).unwrap()
        })
        .collect();
    group.bench_function("bulletproofs 5: 64 proofs verified one by one, 4 x 64 bits each", |b| {
        b.iter(|| {
            for (proof, commitments) in &classic {
                proof.verify_multiple(bp, pc, &mut Transcript::new(b"raw"), commitments, 64).unwrap();
            }
        })
    });
    group.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
