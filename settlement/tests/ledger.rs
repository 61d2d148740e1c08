//! The ledger end to end (settlement.md §3): settle, re-run, conflicts, refunds,
//! recoupment across runs, invariants.

use escx::Fault as _;
use escx_manifest::Micros;
use std::path::Path;

use escx_settlement::events::{BillingEvent, parse_events};
mod common;

use common::{THERMAL, balance, manifests, op};
use escx_settlement::ledger::{CUSTOMERS, Ledger, PlatformFee, settlement_id};

const NOW: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);

fn event(id: &str, time: &str, gross: &str) -> String {
    format!(
        r#"{{"id": "{id}", "time": "{time}", "package": "acme/thermal", "tier": "standard", "kind": "sale", "gross": "{gross}", "currency": "USD"}}"#
    )
}

fn events(records: &[String]) -> Vec<BillingEvent> {
    parse_events(&format!("[{}]", records.join(",")), Path::new("events.json")).unwrap()
}

fn count(ledger: &Ledger, table: &str) -> i64 {
    ledger.database().query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

#[test]
fn settles_recoups_across_runs_and_reruns_as_no_ops() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&tmp.path().join("l.db"), None).unwrap();
    let manifests = manifests(THERMAL);
    // Three monthly periods of 100.00: the investor recoups 90, 90, then the last 70.
    let months = ["2026-10-15T00:00:00Z", "2026-11-15T00:00:00Z", "2026-12-15T00:00:00Z"];
    let mut all = Vec::new();
    for (n, month) in months.iter().enumerate() {
        all.push(event(&format!("m{n}"), month, "100.00"));
        let report = ledger.settle(&events(&all), &manifests, 10, op(), NOW).unwrap();
        assert_eq!((report.settled, report.unchanged), (1, n));
    }
    assert_eq!(balance(&ledger, "investor"), 250_000_000);
    assert_eq!(balance(&ledger, "platform"), 30_000_000);
    assert_eq!(balance(&ledger, "acme"), 20_000_000);
    assert_eq!(balance(&ledger, CUSTOMERS), -300_000_000);
    assert_eq!(ledger.recouped("USD").unwrap()["investor"], Micros(250_000_000));

    // The 2027 version of the waterfall applies to a 2027 event.
    all.push(event("y1", "2027-02-01T00:00:00Z", "10.00"));
    ledger.settle(&events(&all), &manifests, 10, op(), NOW).unwrap();
    assert_eq!(balance(&ledger, "platform"), 32_000_000);

    let transfers = count(&ledger, "transfers");
    let report = ledger.settle(&events(&all), &manifests, 10, op(), NOW).unwrap();
    assert_eq!((report.settled, report.unchanged, report.transfers), (0, 4, 0));
    assert_eq!(count(&ledger, "transfers"), transfers);
    let audit = ledger.audit().unwrap();
    assert_eq!((audit.settlements, audit.imbalance, audit.unconserved.len()), (4, 0, 0));
    // The operator signed every statement; its key is in no cell (storage.md §6).
    assert!(common::assert_no_secret_key(&ledger) > 100);
}

#[test]
fn a_changed_event_under_a_used_id_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&tmp.path().join("l.db"), None).unwrap();
    let manifests = manifests(THERMAL);
    ledger
        .settle(&events(&[event("a", "2026-11-01T00:00:00Z", "10.00")]), &manifests, 10, op(), NOW)
        .unwrap();
    let changed =
        events(&[event("new", "2026-11-02T00:00:00Z", "5.00"), event("a", "2026-11-01T00:00:00Z", "11.00")]);
    let err = ledger.settle(&changed, &manifests, 1, op(), NOW).unwrap_err();
    assert_eq!(err.code(), "settlement-conflict", "{err}");
    assert!(err.to_string().contains(&settlement_id("a")));
    assert_eq!(count(&ledger, "settlements"), 1, "the valid event before it was not written either");
}

#[test]
fn bad_records_name_themselves_and_leave_the_ledger_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&tmp.path().join("l.db"), None).unwrap();
    let manifests = manifests(THERMAL);
    let unknown = r#"{"id": "x", "time": 1790000000, "package": "acme/other", "tier": "t", "kind": "sale", "gross": "1", "currency": "USD"}"#;
    let euro = r#"{"id": "e", "time": 1790000000, "package": "acme/thermal", "tier": "t", "kind": "sale", "gross": "1", "currency": "EUR"}"#;
    let early = r#"{"id": "old", "time": 1000, "package": "acme/thermal", "tier": "t", "kind": "sale", "gross": "1", "currency": "USD"}"#;
    for (record, code) in
        [(unknown, "no-manifest"), (euro, "currency-mismatch"), (early, "revenue-not-in-force")]
    {
        let batch = events(&[event("ok", "2026-11-01T00:00:00Z", "1.00"), record.to_owned()]);
        let err = ledger.settle(&batch, &manifests, 1, op(), NOW).unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        assert_eq!(count(&ledger, "settlements"), 0);
    }
}

#[test]
fn a_refund_reverses_the_settlement_and_its_recoupment() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger =
        Ledger::init(&tmp.path().join("l.db"), Some(&PlatformFee { party: "op".into(), bps: 500 })).unwrap();
    let manifests = manifests(THERMAL);
    let sale = event("s", "2026-11-01T00:00:00Z", "100.00");
    ledger.settle(&events(std::slice::from_ref(&sale)), &manifests, 10, op(), NOW).unwrap();
    assert_eq!(balance(&ledger, "op"), 5_000_000);
    assert_eq!(ledger.recouped("USD").unwrap()["investor"], Micros(85_500_000));

    let refund = r#"{"id": "r", "time": "2026-11-05T00:00:00Z", "package": "acme/thermal", "tier": "standard", "kind": "refund", "gross": "100.00", "currency": "USD", "refund_of": "s"}"#;
    let over = refund.replace("\"100.00\"", "\"100.01\"");
    let err = ledger.settle(&events(&[sale.clone(), over]), &manifests, 10, op(), NOW).unwrap_err();
    assert_eq!(err.code(), "refund-invalid");
    ledger.settle(&events(&[sale.clone(), refund.to_owned()]), &manifests, 10, op(), NOW).unwrap();
    for party in ["op", "platform", "investor", "acme", CUSTOMERS] {
        assert_eq!(balance(&ledger, party), 0, "{party}");
    }
    assert_eq!(ledger.recouped("USD").unwrap()["investor"], Micros(0));
    let state: String = ledger
        .database()
        .query_row("SELECT state FROM settlements WHERE id = ?1", [settlement_id("s")], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "CANCELLED");
    let twice = refund.replace("\"id\": \"r\"", "\"id\": \"r2\"");
    assert_eq!(
        ledger.settle(&events(&[twice]), &manifests, 10, op(), NOW).unwrap_err().code(),
        "refund-invalid"
    );
    assert_eq!(ledger.audit().unwrap().imbalance, 0);
}

fn refund(id: &str, of: &str, gross: &str) -> String {
    format!(
        r#"{{"id": "{id}", "time": "2026-11-05T00:00:00Z", "package": "acme/thermal", "tier": "standard", "kind": "refund", "gross": "{gross}", "currency": "USD", "refund_of": "{of}"}}"#
    )
}

#[test]
fn partial_refunds_claw_back_in_proportion_and_the_last_one_cancels() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger =
        Ledger::init(&tmp.path().join("l.db"), Some(&PlatformFee { party: "op".into(), bps: 500 })).unwrap();
    let manifests = manifests(THERMAL);
    let sale = event("s", "2026-11-01T00:00:00Z", "100.00");
    ledger.settle(&events(std::slice::from_ref(&sale)), &manifests, 10, op(), NOW).unwrap();
    // Holdings: op 5, platform 9.5, investor 85.5 (recouped). A third back, rounded down
    // per party, the 2 micro-units of dust to the largest remainders (investor, op).
    ledger.settle(&events(&[refund("r1", "s", "33.333333")]), &manifests, 10, op(), NOW).unwrap();
    assert_eq!(balance(&ledger, "op"), 5_000_000 - 1_666_667);
    assert_eq!(balance(&ledger, "platform"), 9_500_000 - 3_166_666);
    assert_eq!(balance(&ledger, "investor"), 85_500_000 - 28_500_000);
    assert_eq!(balance(&ledger, CUSTOMERS), -66_666_667);
    assert_eq!(ledger.recouped("USD").unwrap()["investor"], Micros(57_000_000));
    let state = |ledger: &Ledger| -> String {
        ledger
            .database()
            .query_row("SELECT state FROM settlements WHERE id = ?1", [settlement_id("s")], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(state(&ledger), "SETTLED");

    // More than remains is refused, also across refunds in one file; nothing is written.
    for file in
        [vec![refund("r2", "s", "66.666668")], vec![refund("r2", "s", "60"), refund("r3", "s", "6.666668")]]
    {
        assert_eq!(
            ledger.settle(&events(&file), &manifests, 10, op(), NOW).unwrap_err().code(),
            "refund-invalid"
        );
    }
    assert_eq!(balance(&ledger, CUSTOMERS), -66_666_667);

    // The rest, in two refunds: everything is back and the sale is cancelled.
    let rest = [refund("r2", "s", "60"), refund("r3", "s", "6.666667")];
    let report = ledger.settle(&events(&rest), &manifests, 1, op(), NOW).unwrap();
    assert_eq!(report.settled, 2);
    for party in ["op", "platform", "investor", "acme", CUSTOMERS] {
        assert_eq!(balance(&ledger, party), 0, "{party}");
    }
    assert_eq!(ledger.recouped("USD").unwrap()["investor"], Micros(0));
    assert_eq!(state(&ledger), "CANCELLED");
    let audit = ledger.audit().unwrap();
    assert!(audit.ok(), "{audit:?}");
    assert_eq!(
        ledger.settle(&events(&[refund("r4", "s", "0.01")]), &manifests, 10, op(), NOW).unwrap_err().code(),
        "refund-invalid"
    );
}

#[test]
fn a_ledger_is_never_recreated_and_a_foreign_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("l.db");
    Ledger::init(&path, None).unwrap();
    assert_eq!(Ledger::init(&path, None).err().unwrap().code(), "store-failed");
    let other = tmp.path().join("other.db");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE x (y)").unwrap();
    assert_eq!(Ledger::open(&other).err().unwrap().code(), "store-schema");
    let junk = tmp.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let error = Ledger::open(&junk).err().unwrap();
    assert_eq!(error.code(), "store-schema", "{error}");
    assert_eq!(std::fs::read(&junk).unwrap(), vec![b'x'; 4096], "a foreign file is left as it was");
}

/// A caller of the library (the file parser refuses it) may pass one event twice in one
/// call: it settles once, and the same id with other content is a conflict that writes
/// nothing of its batch.
#[test]
fn the_same_event_twice_in_one_call_settles_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&tmp.path().join("l.db"), None).unwrap();
    let manifests = manifests(THERMAL);
    let once = events(&[event("d", "2026-10-15T00:00:00Z", "10.00")]);
    let twice: Vec<BillingEvent> = once.iter().chain(&once).cloned().collect();
    let report = ledger.settle(&twice, &manifests, 10, op(), NOW).unwrap();
    assert_eq!((report.settled, report.unchanged), (1, 1));
    assert_eq!(count(&ledger, "settlements"), 1);
    let mut changed = events(&[event("e", "2026-10-15T00:00:00Z", "10.00")]);
    changed.extend(events(&[event("e", "2026-10-15T00:00:00Z", "11.00")]));
    let err = ledger.settle(&changed, &manifests, 10, op(), NOW).unwrap_err();
    assert_eq!(err.code(), "settlement-conflict", "{err}");
    assert_eq!(count(&ledger, "settlements"), 1, "nothing of the batch was written");
}
