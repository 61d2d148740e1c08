//! The ledger on PostgreSQL against a throwaway cluster (settlement.md §5.4): several
//! writers on one database keep one linear, verifying statement chain and exact
//! conservation; migrations refuse what they must. Ignored by `cargo test`, which needs
//! nothing installed; `.ci/run` runs them with `--ignored` after installing PostgreSQL
//! when it is missing.

mod common;
mod pg;

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
    Ledger::create_postgres(&url, &options()).unwrap();
    let manifests = manifests(THERMAL);
    // Four writers (as four service nodes would be), each settling its own 24 sales in
    // batches of 3 at the same time, and each re-sending one of another writer's events.
    let writers = 4;
    let per_writer = 24;
    std::thread::scope(|scope| {
        for w in 0..writers {
            let (url, manifests) = (url.clone(), &manifests);
            scope.spawn(move || {
                let mut ledger = Ledger::open_postgres(&url).unwrap();
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
    let ledger = Ledger::open_postgres(&url).unwrap();
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
}

#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn migrations_refuse_a_second_ledger_a_missing_one_and_a_newer_schema() {
    let cluster = pg::Cluster::start();
    let url = cluster.database();
    let error = Ledger::open_postgres(&url).err().unwrap();
    assert_eq!(error.code(), "ledger-store", "{error}");
    Ledger::create_postgres(&url, &options()).unwrap();
    let error = Ledger::create_postgres(&url, &options()).err().unwrap();
    assert!(error.to_string().contains("holds a ledger already"), "{error}");
    // Reopening is a no-op; a schema from a newer build is refused, naming both versions.
    Ledger::open_postgres(&url).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client.batch_execute("UPDATE escx_schema SET version = 99").unwrap();
    let error = Ledger::open_postgres(&url).err().unwrap();
    assert_eq!(error.code(), "ledger-schema", "{error}");
    // A database that is not there is a store error naming the URL, password redacted.
    let missing = cluster.url("nowhere").replace("user=escx", "user=escx&password=hunter2");
    let error = Ledger::open_postgres(&missing).err().unwrap();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}
