//! Holds, disputes, payout reports and schema migration (settlement.md §3.1, §5).

use escx::Fault as _;
use escx_manifest::Micros;
use std::path::Path;

mod common;

use common::{THERMAL, balance, manifests, op};
use escx_settlement::disputes::Outcome;
use escx_settlement::events::{BillingEvent, parse_events};
use escx_settlement::ledger::{CUSTOMERS, HOLDS, Ledger, Options, SCHEMA_VERSION, settlement_id};
use escx_settlement::payout::{Period, Signed};
use escx_settlement::statement;

/// 2026-11-15T00:00:00Z and friends.
const OCT: escx::UnixSeconds = escx::UnixSeconds(1_792_022_400);
const NOV: escx::UnixSeconds = escx::UnixSeconds(1_794_700_800);
const DEC: escx::UnixSeconds = escx::UnixSeconds(1_797_292_800);

fn events(records: &[(&str, u64, &str)]) -> Vec<BillingEvent> {
    let json: Vec<String> = records
        .iter()
        .map(|(id, time, gross)| {
            format!(
                r#"{{"id": "{id}", "time": {time}, "package": "acme/thermal", "tier": "standard", "kind": "sale", "gross": "{gross}", "currency": "USD"}}"#
            )
        })
        .collect();
    parse_events(&format!("[{}]", json.join(",")), Path::new("events.json")).unwrap()
}

fn refund(id: &str, time: u64, of: &str, gross: &str) -> BillingEvent {
    let json = format!(
        r#"[{{"id": "{id}", "time": {time}, "package": "acme/thermal", "tier": "standard", "kind": "refund", "gross": "{gross}", "currency": "USD", "refund_of": "{of}"}}]"#
    );
    parse_events(&json, Path::new("events.json")).unwrap().remove(0)
}

fn state(ledger: &Ledger, event: &str) -> String {
    ledger
        .database()
        .query_row("SELECT state FROM settlements WHERE id = ?1", [settlement_id(event)], |r| r.get(0))
        .unwrap()
}

fn audit_actions(ledger: &Ledger) -> Vec<String> {
    let db = ledger.database();
    let mut statement = db.prepare("SELECT action FROM audit ORDER BY id").unwrap();
    statement.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// Every statement in the ledger verifies, conserves, and chains without gaps.
fn statements_verify(ledger: &Ledger) -> usize {
    let mut verified: Vec<_> = ledger
        .statements()
        .unwrap()
        .iter()
        .map(|s| statement::verify(&ledger.statement(s.seq).unwrap(), op().public_key()).unwrap())
        .collect();
    statement::verify_chain(&mut verified).unwrap();
    verified.len()
}

fn new_ledger(dir: &Path, threshold: u64) -> Ledger {
    Ledger::create(&dir.join("l.db"), &Options { platform: None, payout_threshold: Micros(threshold) })
        .unwrap()
}

#[test]
fn a_hold_pays_no_one_until_captured_and_releases_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = new_ledger(tmp.path(), 0);
    let manifests = manifests(THERMAL);
    let held = events(&[("job-1", NOV.0, "100.00"), ("job-2", NOV.0, "40.00")]);
    let report = ledger.place_holds(&held, &manifests, NOV, NOV + 3600).unwrap();
    assert_eq!((report.placed, report.unchanged), (2, 0));
    assert_eq!(balance(&ledger, HOLDS), 140_000_000);
    assert_eq!(balance(&ledger, "acme"), 0);
    assert_eq!(state(&ledger, "job-1"), "PENDING");
    // Placing again is a no-op; a different event under a used id is refused.
    assert_eq!(ledger.place_holds(&held, &manifests, NOV, NOV + 3600).unwrap().unchanged, 2);
    let changed = events(&[("job-1", NOV.0, "100.01")]);
    assert_eq!(
        ledger.place_holds(&changed, &manifests, NOV, NOV + 3600).unwrap_err().code(),
        "settlement-conflict"
    );
    // A hold's id cannot be settled as a plain event.
    assert_eq!(ledger.settle(&held, &manifests, 10, op(), NOV).unwrap_err().code(), "hold-invalid");

    // More than held, or nothing, is refused; 60 of 100 is captured.
    for bad in [100_000_001, 0] {
        let error = ledger.capture_hold("job-1", Some(Micros(bad)), &manifests, op(), NOV + 60).unwrap_err();
        assert_eq!(error.code(), "hold-invalid", "{error}");
    }
    let capture = ledger.capture_hold("job-1", Some(Micros(60_000_000)), &manifests, op(), NOV + 60).unwrap();
    assert_eq!(
        (capture.captured.0, capture.released.0, capture.statement),
        (60_000_000, 40_000_000, Some(1))
    );
    assert_eq!(capture.payouts.iter().map(|p| p.1.0).sum::<u64>(), 60_000_000);
    assert_eq!(balance(&ledger, "platform"), 6_000_000);
    assert_eq!(balance(&ledger, "investor"), 54_000_000);
    assert_eq!(balance(&ledger, HOLDS), 40_000_000);
    assert_eq!(balance(&ledger, CUSTOMERS), -100_000_000);
    assert_eq!(state(&ledger, "job-1"), "SETTLED");
    // The same capture again is a no-op; another amount is refused.
    assert!(
        ledger.capture_hold("job-1", Some(Micros(60_000_000)), &manifests, op(), NOV + 90).unwrap().unchanged
    );
    assert_eq!(
        ledger.capture_hold("job-1", None, &manifests, op(), NOV + 90).unwrap_err().code(),
        "hold-invalid"
    );

    // job-2 expires: capture refused, the sweep voids it and the money goes back.
    let error = ledger.capture_hold("job-2", None, &manifests, op(), NOV + 3600).unwrap_err();
    assert!(error.to_string().contains("expired"), "{error}");
    assert_eq!(ledger.void_expired(NOV + 3600).unwrap(), vec!["job-2".to_owned()]);
    assert!(!ledger.void_hold("job-2", NOV + 3700).unwrap());
    assert_eq!(ledger.void_hold("job-1", NOV + 3700).unwrap_err().code(), "hold-invalid");
    assert_eq!(balance(&ledger, HOLDS), 0);
    assert_eq!(balance(&ledger, CUSTOMERS), -60_000_000);
    assert_eq!(state(&ledger, "job-2"), "CANCELLED");
    let holds = ledger.holds(None).unwrap();
    assert_eq!(
        holds.iter().map(|h| (h.id.as_str(), h.state.name(), h.captured.map(|c| c.0))).collect::<Vec<_>>(),
        [("job-1", "CAPTURED", Some(60_000_000)), ("job-2", "VOIDED", None)]
    );
    assert!(ledger.audit().unwrap().ok());
    assert_eq!(statements_verify(&ledger), 1);
    assert_eq!(audit_actions(&ledger), ["hold-void"]);
}

#[test]
fn the_audit_catches_held_money_that_matches_no_pending_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = new_ledger(tmp.path(), 0);
    ledger.place_holds(&events(&[("job-1", NOV.0, "10.00")]), &manifests(THERMAL), NOV, NOV + 60).unwrap();
    assert!(ledger.audit().unwrap().ok());
    ledger.database().execute("UPDATE holds SET state = 'VOIDED'", []).unwrap();
    assert_eq!(ledger.audit().unwrap().holds_mismatch, ["USD"]);
}

#[test]
fn disputes_withhold_then_stand_or_reverse_with_compensating_transfers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = new_ledger(tmp.path(), 0);
    let manifests = manifests(THERMAL);
    ledger
        .settle(&events(&[("s1", NOV.0, "100.00"), ("s2", NOV.0, "100.00")]), &manifests, 10, op(), NOV)
        .unwrap();
    let s1 = ledger.find_settlement("s1").unwrap();
    assert_eq!(s1, settlement_id("s1"));
    assert_eq!(ledger.find_settlement(&s1).unwrap(), s1);
    assert_eq!(ledger.find_settlement("nope").unwrap_err().code(), "dispute-invalid");

    ledger.open_dispute(&s1, "chargeback 1", NOV + 10).unwrap();
    assert_eq!(state(&ledger, "s1"), "DISPUTED");
    assert_eq!(ledger.open_dispute(&s1, "again", NOV + 11).unwrap_err().code(), "dispute-invalid");
    // A disputed sale cannot be refunded meanwhile.
    let error =
        ledger.settle(&[refund("r1", (NOV + 12).0, "s1", "100.00")], &manifests, 10, op(), NOV).unwrap_err();
    assert_eq!(error.code(), "refund-invalid");
    let upheld = ledger.resolve_dispute(&s1, Outcome::Upheld, "delivery proven", None, NOV + 20).unwrap();
    assert_eq!((upheld.reversal, upheld.statement), (None, None));
    assert_eq!(state(&ledger, "s1"), "SETTLED");

    // Reversed: needs the key; then every party gives back, recoupment is undone.
    let s2 = settlement_id("s2");
    ledger.open_dispute(&s2, "chargeback 2", NOV + 30).unwrap();
    let error = ledger.resolve_dispute(&s2, Outcome::Reversed, "lost", None, NOV + 40).unwrap_err();
    assert_eq!(error.code(), "dispute-invalid");
    assert_eq!(state(&ledger, "s2"), "DISPUTED", "a refused resolution changes nothing");
    let investor_before = balance(&ledger, "investor");
    let reversed = ledger.resolve_dispute(&s2, Outcome::Reversed, "lost", Some(op()), NOV + 40).unwrap();
    assert_eq!(reversed.given_back.iter().map(|g| g.1.0).sum::<u64>(), 100_000_000);
    assert_eq!(reversed.statement, Some(2));
    assert_eq!(state(&ledger, "s2"), "CANCELLED");
    assert_eq!(balance(&ledger, CUSTOMERS), -100_000_000);
    assert_eq!(balance(&ledger, "investor"), investor_before - 90_000_000);
    assert_eq!(ledger.recouped("USD").unwrap()["investor"], Micros(90_000_000));
    // The next sale recoups against the undone total.
    ledger.settle(&events(&[("s3", (NOV + 50).0, "100.00")]), &manifests, 10, op(), NOV).unwrap();
    assert_eq!(ledger.recouped("USD").unwrap()["investor"], Micros(180_000_000));
    // A reversal is not itself disputable, nor is a cancelled sale.
    assert_eq!(
        ledger.open_dispute(reversed.reversal.as_deref().unwrap(), "x", NOV).unwrap_err().code(),
        "dispute-invalid"
    );
    assert_eq!(ledger.open_dispute(&s2, "x", NOV).unwrap_err().code(), "dispute-invalid");

    assert!(ledger.audit().unwrap().ok());
    assert_eq!(statements_verify(&ledger), 3);
    assert_eq!(
        audit_actions(&ledger),
        ["dispute-open", "dispute-upheld", "dispute-open", "dispute-reversed"]
    );
    let disputes = ledger.disputes().unwrap();
    assert_eq!(disputes.len(), 2);
    assert!(disputes.iter().all(|d| d.resolved_at.is_some()));
}

fn line<'a>(
    report: &'a escx_settlement::payout::PayoutReport,
    party: &str,
) -> &'a escx_settlement::payout::PayoutLine {
    report.lines.iter().find(|l| l.party == party).unwrap()
}

#[test]
fn payout_reports_carry_below_the_threshold_withhold_disputes_and_never_rewrite_a_past_month() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = new_ledger(tmp.path(), 50_000_000);
    let manifests = manifests(THERMAL);
    let oct = Period::parse("2026-10").unwrap();
    let nov = Period::parse("2026-11").unwrap();
    let dec = Period::parse("2026-12").unwrap();

    // October: one sale of 30: platform 3, investor 27, acme 0.
    ledger.settle(&events(&[("a", OCT.0, "30.00")]), &manifests, 10, op(), OCT).unwrap();
    let october = ledger.payout_report(oct, None).unwrap();
    let platform = line(&october, "platform");
    assert_eq!(
        (platform.gross, platform.fees, platform.earned),
        (Signed(30_000_000), Signed(27_000_000), Signed(3_000_000))
    );
    assert_eq!((platform.payable, platform.carried_out), (Signed(0), Signed(3_000_000)));
    assert_eq!(line(&october, "investor").fees_by["platform"], Signed(3_000_000));

    // November: 300 of sales; b is disputed in November.
    ledger
        .settle(&events(&[("b", NOV.0, "200.00"), ("c", (NOV + 1).0, "100.00")]), &manifests, 10, op(), NOV)
        .unwrap();
    ledger.open_dispute(&settlement_id("b"), "chargeback", NOV + 100).unwrap();
    let november = ledger.payout_report(nov, None).unwrap();
    // investor: 250 cap, had 27: b pays 180 (cap 223 left), c pays 43; acme: b 0, c 47.
    let investor = line(&november, "investor");
    assert_eq!(investor.earned, Signed(223_000_000));
    assert_eq!(investor.withheld, Signed(180_000_000));
    assert_eq!(investor.net, Signed(43_000_000));
    assert_eq!(investor.carried_in, Signed(27_000_000));
    assert_eq!((investor.payable, investor.carried_out), (Signed(70_000_000), Signed(0)));
    let platform = line(&november, "platform");
    assert_eq!(
        (platform.carried_in, platform.withheld, platform.net),
        (Signed(3_000_000), Signed(20_000_000), Signed(10_000_000))
    );
    assert_eq!((platform.payable, platform.carried_out), (Signed(0), Signed(13_000_000)));
    for l in &november.lines {
        assert_eq!(l.gross.0 - l.fees.0, l.earned.0, "{}", l.party);
        assert_eq!(l.fees_by.values().map(|f| f.0).sum::<i64>(), l.fees.0, "{}", l.party);
        assert_eq!(l.carried_in.0 + l.net.0, l.payable.0 + l.carried_out.0, "{}", l.party);
    }

    // December: the dispute is upheld (released) and c is refunded.
    ledger.resolve_dispute(&settlement_id("b"), Outcome::Upheld, "proven", None, DEC).unwrap();
    ledger.settle(&[refund("r", (DEC + 1).0, "c", "100.00")], &manifests, 10, op(), DEC).unwrap();
    let december = ledger.payout_report(dec, None).unwrap();
    let investor = line(&december, "investor");
    assert_eq!(
        (investor.gross, investor.earned, investor.withheld),
        (Signed(-100_000_000), Signed(-43_000_000), Signed(-180_000_000))
    );
    assert_eq!(
        (investor.net, investor.payable, investor.carried_out),
        (Signed(137_000_000), Signed(137_000_000), Signed(0))
    );
    let acme = line(&december, "acme");
    assert_eq!(
        (acme.carried_in, acme.earned, acme.payable, acme.carried_out),
        (Signed(47_000_000), Signed(-47_000_000), Signed(0), Signed(0))
    );

    // Later activity never rewrites an earlier month.
    assert_eq!(ledger.payout_report(oct, None).unwrap(), october);
    assert_eq!(ledger.payout_report(nov, None).unwrap(), november);
    // One party only.
    let only = ledger.payout_report(nov, Some("acme")).unwrap();
    assert_eq!(only.lines.len(), 1);
    assert_eq!(&only.lines[0], line(&november, "acme"));

    // CSV: a header and one exact row per party.
    let csv = november.to_csv();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "period,party,currency,settlements,gross,fees,earned,withheld,net,carried_in,payable,carried_out"
    );
    assert!(
        rows.contains(&"2026-11,investor,USD,2,300.00,77.00,223.00,180.00,43.00,27.00,70.00,0.00"),
        "{csv}"
    );
    assert_eq!(rows.len(), 1 + november.lines.len());

    ledger.record_payout_export(&november, "csv", csv.as_bytes(), DEC).unwrap();
    let detail: String = ledger
        .database()
        .query_row("SELECT detail FROM audit WHERE action = 'payout-export'", [], |r| r.get(0))
        .unwrap();
    assert!(detail.contains(&blake3::hash(csv.as_bytes()).to_hex().to_string()), "{detail}");
}

#[test]
fn an_older_ledger_is_migrated_and_a_newer_one_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("l.db");
    {
        let ledger = Ledger::init(&path, None).unwrap();
        let db = ledger.database();
        db.execute_batch(
            "DROP INDEX disputes_open; DROP TABLE disputes; DROP TABLE holds; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let mut ledger = Ledger::open(&path).unwrap();
    let version: i64 = ledger.database().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    ledger.place_holds(&events(&[("h", NOV.0, "1.00")]), &manifests(THERMAL), NOV, NOV + 60).unwrap();
    ledger.database().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    drop(ledger);
    assert_eq!(Ledger::open(&path).err().unwrap().code(), "store-schema");
}

#[test]
fn a_reversal_after_a_partial_refund_gives_back_what_remains() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = new_ledger(tmp.path(), 0);
    let manifests = manifests(THERMAL);
    ledger.settle(&events(&[("s", NOV.0, "100.00")]), &manifests, 10, op(), NOV).unwrap();
    ledger.settle(&[refund("r", (NOV + 1).0, "s", "40.00")], &manifests, 10, op(), NOV).unwrap();
    let s = settlement_id("s");
    ledger.open_dispute(&s, "chargeback", NOV + 2).unwrap();
    let reversed = ledger.resolve_dispute(&s, Outcome::Reversed, "lost", Some(op()), NOV + 3).unwrap();
    assert_eq!(reversed.given_back.iter().map(|g| g.1.0).sum::<u64>(), 60_000_000);
    for account in ["platform", "investor", "acme", CUSTOMERS] {
        assert_eq!(balance(&ledger, account), 0, "{account}");
    }
    assert_eq!(ledger.recouped("USD").unwrap()["investor"], Micros(0));
    assert_eq!(state(&ledger, "s"), "CANCELLED");
    assert!(ledger.audit().unwrap().ok());
    assert_eq!(statements_verify(&ledger), 3);
}
