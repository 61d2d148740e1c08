//! Settlement throughput next to raw SQLite, in the same run:
//!
//! - `ledger_20k`: `Ledger::settle` of 20 000 sale events (about 99 000 transfers) into a
//!   fresh ledger, 10 000 settlements per transaction, `synchronous=FULL`; against inserting
//!   exactly the rows that run wrote (accounts, settlements, transfers, recoupment) into a
//!   fresh database with the same schema, with prepared statements in the same batches;
//! - `waterfall`: one waterfall over one event, next to the `u128` multiply-divide it is
//!   made of.

use escx_manifest::Micros;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use escx_settlement::events::BillingEvent;
use escx_settlement::ledger::{Ledger, Manifests, PlatformFee};
use escx_settlement::waterfall::{self, Tier};
use rusqlite::Connection;

const EVENTS: usize = 20_000;
const BATCH: usize = 10_000;

type Row = Vec<rusqlite::types::Value>;

/// The schema and every row of a settled ledger, to replay as raw inserts.
struct Dump {
    schema: Vec<String>,
    tables: Vec<(String, usize, Vec<Row>)>,
}

fn dump(path: &Path) -> Dump {
    let db = Connection::open(path).unwrap();
    let schema: Vec<String> = db
        .prepare(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut tables = Vec::new();
    for table in [
        "meta",
        "accounts",
        "settlements",
        "transfers",
        "recoupment",
        "settlement_recoup",
        "statements",
        "statement_openings",
    ] {
        let mut statement = db.prepare(&format!("SELECT * FROM {table} ORDER BY rowid")).unwrap();
        let columns = statement.column_count();
        let rows: Vec<Row> = statement
            .query_map([], |r| (0..columns).map(|i| r.get::<_, rusqlite::types::Value>(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables.push((table.to_owned(), columns, rows));
    }
    Dump { schema, tables }
}

/// Inserts the dump into a fresh database, settlements and their transfers in batches of
/// `BATCH` settlements per transaction, like the ledger.
fn replay(dump: &Dump, path: &Path) -> Duration {
    let db = Connection::open(path).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.pragma_update(None, "synchronous", "FULL").unwrap();
    db.pragma_update(None, "foreign_keys", "ON").unwrap();
    for sql in &dump.schema {
        db.execute(sql, []).unwrap();
    }
    let start = Instant::now();
    let insert = |db: &Connection, table: &str, columns: usize, row: &Row| {
        let marks = vec!["?"; columns].join(", ");
        db.prepare_cached(&format!("INSERT INTO {table} VALUES ({marks})"))
            .unwrap()
            .execute(rusqlite::params_from_iter(row.iter()))
            .unwrap();
    };
    let find = |name: &str| dump.tables.iter().find(|(t, _, _)| t == name).unwrap();
    let (_, settlement_columns, settlements) = find("settlements");
    let (_, transfer_columns, transfers) = find("transfers");
    let mut next_transfer = 0;
    for (batch, chunk) in settlements.chunks(BATCH).enumerate() {
        let tx = db.unchecked_transaction().unwrap();
        if batch == 0 {
            for table in ["meta", "accounts"] {
                let (_, columns, rows) = find(table);
                for row in rows {
                    insert(&tx, table, *columns, row);
                }
            }
        }
        for settlement in chunk {
            insert(&tx, "settlements", *settlement_columns, settlement);
            while next_transfer < transfers.len() && transfers[next_transfer][1] == settlement[0] {
                insert(&tx, "transfers", *transfer_columns, &transfers[next_transfer]);
                next_transfer += 1;
            }
        }
        tx.commit().unwrap();
    }
    let tx = db.unchecked_transaction().unwrap();
    for table in ["recoupment", "settlement_recoup", "statements", "statement_openings"] {
        let (_, columns, rows) = find(table);
        for row in rows {
            insert(&tx, table, *columns, row);
        }
    }
    tx.commit().unwrap();
    assert_eq!(next_transfer, transfers.len());
    start.elapsed()
}

fn operator() -> &'static escx::sig::SecretKey {
    static KEY: std::sync::OnceLock<escx::sig::SecretKey> = std::sync::OnceLock::new();
    KEY.get_or_init(escx::sig::SecretKey::generate)
}

fn settle_once(dir: &Path, name: &str, events: &[BillingEvent], manifests: &Manifests) -> (Duration, usize) {
    let path = dir.join(name);
    let mut ledger = Ledger::init(&path, Some(&PlatformFee { party: "platform".into(), bps: 500 })).unwrap();
    let start = Instant::now();
    let report =
        ledger.settle(events, manifests, BATCH, operator(), escx::UnixSeconds(1_800_000_000)).unwrap();
    (start.elapsed(), report.transfers)
}

fn ledger(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let events = escx_benches::sale_events(EVENTS);
    let manifests = escx_benches::manifests();
    let (_, transfers) = settle_once(tmp.path(), "reference.db", &events, &manifests);
    let dump = dump(&tmp.path().join("reference.db"));
    let mut counter = 0;
    let mut group = c.benchmark_group("ledger_20k");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("raw SQLite inserts of the same rows", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    counter += 1;
                    replay(&dump, &tmp.path().join(format!("raw-{counter}.db")))
                })
                .sum()
        });
    });
    group.bench_function("Ledger::settle", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    counter += 1;
                    settle_once(tmp.path(), &format!("ledger-{counter}.db"), &events, &manifests).0
                })
                .sum()
        });
    });
    group.finish();
    let (elapsed, _) = settle_once(tmp.path(), "rate.db", &events, &manifests);
    let raw = replay(&dump, &tmp.path().join("rate-raw.db"));
    println!(
        "ledger: {EVENTS} settlements, {transfers} transfers in {:.1} ms = {:.0} settlements/s, {:.0} transfers/s \
         (raw inserts of the same rows: {:.1} ms, ratio {:.2}x)",
        elapsed.as_secs_f64() * 1e3,
        EVENTS as f64 / elapsed.as_secs_f64(),
        transfers as f64 / elapsed.as_secs_f64(),
        raw.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() / raw.as_secs_f64()
    );
}

fn waterfall_per_event(c: &mut Criterion) {
    let manifest = escx_benches::worked_example();
    let revenue = manifest.revenue.unwrap();
    let chain = [Tier::package("package", &revenue, escx::UnixSeconds(1_790_000_000)).unwrap()];
    let recouped = Default::default();
    let mut group = c.benchmark_group("waterfall");
    group.bench_function("apply, 5 steps", |b| {
        b.iter(|| waterfall::apply(black_box(&chain), black_box(Micros(1_234_560_000)), &recouped).unwrap());
    });
    group.bench_function("5 raw u128 multiply-divides", |b| {
        b.iter(|| {
            let gross = u128::from(black_box(1_234_560_000u64));
            (0..5u128).map(|i| gross * (1500 + i) / 10_000).sum::<u128>()
        });
    });
    group.finish();
}

fn statements(c: &mut Criterion) {
    use escx_settlement::statement::{self, EntryInput};
    let inputs: Vec<EntryInput> = (0..10_000u64)
        .map(|i| EntryInput {
            settlement: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            kind: escx_settlement::store::RecordKind::Sale,
            currency: "USD".into(),
            gross: Micros(100_000_000 + i),
            payouts: vec![
                ("platform".into(), Micros(5_000_000)),
                ("referrer".into(), Micros(9_500_000)),
                ("studio".into(), Micros(10_000_000)),
                ("investor".into(), Micros(50_000_000)),
                ("acme".into(), Micros(25_500_000 + i)),
            ],
            rules: Vec::new(),
        })
        .collect();
    let built =
        statement::build(&[1; 16], 1, &[0; 32], escx::UnixSeconds(1_800_000_000), &inputs, operator())
            .unwrap();
    println!("statement: 10 000 entries, {} bytes signed", built.bytes.len());
    let mut group = c.benchmark_group("statement_10k");
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    group.bench_function("build (60 000 commitments, Merkle root, ML-DSA-87 sign)", |b| {
        b.iter(|| {
            statement::build(
                &[1; 16],
                1,
                &[0; 32],
                escx::UnixSeconds(1_800_000_000),
                black_box(&inputs),
                operator(),
            )
            .unwrap()
        });
    });
    // The raw primitive: the 50 000 Pedersen commitments (two fixed-base multiplications
    // each) and their compression that a 10 000-entry statement computes, on the same
    // rayon pool, with nothing else.
    group.bench_function("raw: 50 000 PedersenGens::commit + compress", |b| {
        use bulletproofs::PedersenGens;
        use curve25519_dalek::scalar::Scalar;
        use rayon::prelude::*;
        let gens = PedersenGens::default();
        let blindings: Vec<Scalar> =
            (0..50_000u64).map(|i| Scalar::hash_from_bytes::<sha2::Sha512>(&i.to_le_bytes())).collect();
        b.iter(|| {
            blindings
                .par_iter()
                .enumerate()
                .map(|(i, r)| gens.commit(Scalar::from(i as u64), *r).compress().to_bytes()[0])
                .fold(|| 0u8, |a, b| a ^ b)
                .reduce(|| 0u8, |a, b| a ^ b)
        });
    });
    group.bench_function("verify (signature, root, 10 000 point sums, index)", |b| {
        b.iter(|| statement::verify(black_box(&built.bytes), operator().public_key()).unwrap());
    });
    group.finish();
}

criterion_group!(benches, ledger, waterfall_per_event, statements);
criterion_main!(benches);
