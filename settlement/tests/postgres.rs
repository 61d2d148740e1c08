//! The ledger on PostgreSQL against a throwaway cluster (settlement.md §5.4): several
//! writers on one database keep one linear, verifying statement chain and exact
//! conservation; migrations refuse what they must. Ignored by `cargo test`, which needs
//! nothing installed; `.ci/run` runs them with `--ignored` after installing PostgreSQL
//! when it is missing.

mod common;
use escx_store::test_util as pg;

use common::{THERMAL, manifests, op};
use escx::Fault as _;
use escx_manifest::Micros;
use escx_settlement::events::{BillingEvent, parse_events};
use escx_settlement::ledger::{Ledger, Options, PlatformFee};
use escx_settlement::statement;

fn sale(id: &str, gross: u64) -> BillingEvent {
    let json = format!(
        r#"[{{"id": "{id}", "time": 1790812800, "package": "acme/thermal", "tier": "std", "kind": "sale", "gross": "{}", "currency": "USD"}}]"#,
        Micros(gross)
    );
    parse_events(&json, std::path::Path::new("events.json")).unwrap().remove(0)
}

fn options() -> Options {
    Options {
        platform: Some(PlatformFee { party: "platform".into(), bps: 1500 }),
        payout_threshold: Micros(0),
    }
}

#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn writers_on_one_database_keep_one_linear_chain_and_conserve() {
    let cluster = pg::Cluster::start();
    let url = cluster.database();
    Ledger::create(url.as_ref(), &options()).unwrap();
    let manifests = manifests(THERMAL);
    // Four writers (as four service nodes would be), each settling its own 24 sales in
    // batches of 3 at the same time, and each re-sending one of another writer's events.
    let writers = 4;
    let per_writer = 24;
    std::thread::scope(|scope| {
        for w in 0..writers {
            let (url, manifests) = (url.clone(), &manifests);
            scope.spawn(move || {
                let mut ledger = Ledger::open(url.as_ref()).unwrap();
                let events: Vec<BillingEvent> =
                    (0..per_writer).map(|i| sale(&format!("w{w}-{i}"), 1_000_000 + i * 7 + w)).collect();
                let report =
                    ledger.settle(&events, manifests, 3, op(), escx::UnixSeconds(1_790_812_900)).unwrap();
                assert_eq!(report.settled + report.unchanged, events.len());
                let shared = sale(&format!("w{}-0", (w + 1) % writers), 1_000_000 + (w + 1) % writers);
                ledger.settle(&[shared], manifests, 3, op(), escx::UnixSeconds(1_790_812_900)).unwrap();
            });
        }
    });
    let ledger = Ledger::open(url.as_ref()).unwrap();
    let audit = ledger.audit().unwrap();
    assert!(audit.ok(), "{audit:?}");
    assert_eq!(audit.settlements, writers * per_writer, "every sale once, none twice");
    let gross: u64 = (0..writers).flat_map(|w| (0..per_writer).map(move |i| 1_000_000 + i * 7 + w)).sum();
    let customers = ledger.balances(None).unwrap().into_iter().find(|b| b.account == "@customers").unwrap();
    assert_eq!(customers.micros, -i64::try_from(gross).unwrap(), "exact conservation");
    // One chain: sequence numbers 1..=n without a gap, each linking the one before, all
    // verifying under the operator's key.
    let infos = ledger.statements().unwrap();
    assert_eq!(infos.iter().map(|s| s.seq).collect::<Vec<_>>(), (1..=infos.len() as u64).collect::<Vec<_>>());
    let mut verified: Vec<statement::Verified> = infos
        .iter()
        .map(|s| statement::verify(&ledger.statement(s.seq).unwrap(), op().public_key()).unwrap())
        .collect();
    statement::verify_chain(&mut verified).unwrap();
    let entries: u64 = infos.iter().map(|s| s.entries).sum();
    assert_eq!(entries, writers * per_writer, "each settlement in exactly one statement");
    // The operator signed every statement; its key is in no cell (storage.md §6).
    assert!(common::assert_no_secret_key(&ledger) > 500);
}

#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn migrations_refuse_a_second_ledger_a_missing_one_and_a_newer_schema() {
    let cluster = pg::Cluster::start();
    let url = cluster.database();
    let error = Ledger::open(url.as_ref()).err().unwrap();
    assert_eq!(error.code(), "store-failed", "{error}");
    Ledger::create(url.as_ref(), &options()).unwrap();
    let error = Ledger::create(url.as_ref(), &options()).err().unwrap();
    assert!(error.to_string().contains("holds an escx ledger already"), "{error}");
    // Reopening is a no-op; a schema from a newer build is refused, naming both versions.
    Ledger::open(url.as_ref()).unwrap();
    pg::admin(&url, "UPDATE escx_schema SET version = 99");
    let error = Ledger::open(url.as_ref()).err().unwrap();
    assert_eq!(error.code(), "store-schema", "{error}");
    // A database that is not there is a store error naming the URL, password redacted.
    let missing = cluster.url("nowhere").replace("user=escx", "user=escx&password=hunter2");
    let error = Ledger::open(missing.as_ref()).err().unwrap();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

/// The server crashes (every process stopped at once, no checkpoint) while a run is
/// settling batch after batch into a durable cluster: after crash recovery every batch
/// committed before the crash is there whole, with its statement; the batch in flight is
/// not there at all; the chain verifies; and settling the same events again adds exactly
/// the missing ones.
#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn a_server_crash_keeps_every_committed_batch_and_no_part_of_the_one_in_flight() {
    let cluster = pg::Cluster::start_durable();
    let url = cluster.database();
    Ledger::create(url.as_ref(), &options()).unwrap();
    let manifests = manifests(THERMAL);
    let now = escx::UnixSeconds(1_790_812_900);
    let batch = 200;
    let events: Vec<BillingEvent> = (0..6000).map(|i| sale(&format!("c{i}"), 1_000_000 + i * 13)).collect();
    // A handle opened before the crash, as a service node holds one.
    let survivor = Ledger::open(url.as_ref()).unwrap();
    let run = std::thread::scope(|scope| {
        let settling = scope.spawn(|| {
            let mut ledger = Ledger::open(url.as_ref()).unwrap();
            ledger.settle(&events, &manifests, batch, op(), now)
        });
        // Crash once a few batches have committed, while later ones are being written.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let statements = pg::query_ints(&url, "SELECT count(*) FROM statements")[0][0];
            if statements >= 3 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no batch committed in 2 minutes");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        cluster.crash();
        settling.join().unwrap()
    });
    let error = run.expect_err("the run loses its server mid-way");
    assert_eq!(error.code(), "store-failed", "{error}");
    cluster.restart();
    // The handle from before the crash finds its connection closed by the first request
    // (which fails) and connects again for the next, as a service node must.
    let first = survivor.statements();
    let listed = match first {
        Ok(listed) => listed,
        Err(error) => {
            assert_eq!(error.code(), "store-failed", "{error}");
            survivor.statements().expect("the next request reconnects")
        }
    };
    assert!(!listed.is_empty());

    let mut ledger = Ledger::open(url.as_ref()).unwrap();
    let audit = ledger.audit().unwrap();
    assert!(audit.ok(), "{audit:?}");
    let infos = ledger.statements().unwrap();
    let committed = infos.len() as u64;
    assert!(committed >= 3, "the batches seen committed survived the crash: {committed}");
    assert!(committed < 30, "the crash came before the run ended");
    assert_eq!(infos.iter().map(|s| s.seq).collect::<Vec<_>>(), (1..=committed).collect::<Vec<_>>());
    assert!(infos.iter().all(|s| s.entries == batch as u64), "every statement covers a whole batch");
    assert_eq!(audit.settlements, committed * batch as u64, "no settlement of the batch in flight");
    let mut verified: Vec<statement::Verified> = infos
        .iter()
        .map(|s| statement::verify(&ledger.statement(s.seq).unwrap(), op().public_key()).unwrap())
        .collect();
    statement::verify_chain(&mut verified).unwrap();

    // The same file again: what was committed is unchanged, the rest settles once.
    let report = ledger.settle(&events, &manifests, batch, op(), now).unwrap();
    assert_eq!(
        (report.unchanged as u64, report.settled as u64),
        (committed * batch as u64, 6000 - committed * batch as u64)
    );
    let audit = ledger.audit().unwrap();
    assert!(audit.ok() && audit.settlements == 6000, "{audit:?}");
    let gross: u64 = (0..6000).map(|i| 1_000_000 + i * 13).sum();
    let customers = ledger.balances(None).unwrap().into_iter().find(|b| b.account == "@customers").unwrap();
    assert_eq!(customers.micros, -i64::try_from(gross).unwrap(), "exact conservation across the crash");
}
