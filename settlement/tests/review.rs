//! The settlement findings of the security review, each performed against the ledger:
//! zero-gross entries, conservation checked where data is written and where it is read
//! back, parties checking their share with the gross, chains with a statement twice,
//! refunds racing a dispute, and private database files.

mod common;

use escx::Fault as _;
use escx_manifest::Micros;
use std::path::Path;

use common::{THERMAL, manifests, op};
use escx_settlement::events::{BillingEvent, parse_events};
use escx_settlement::ledger::{Ledger, settlement_id};
use escx_settlement::statement::{self, EntryInput};
use escx_settlement::waterfall;

const NOV: escx::UnixSeconds = escx::UnixSeconds(1_794_700_800);

fn sale(id: &str, gross: &str) -> String {
    format!(
        r#"{{"id": "{id}", "time": {NOV}, "package": "acme/thermal", "tier": "standard", "kind": "sale", "gross": "{gross}", "currency": "USD"}}"#
    )
}

fn refund(id: &str, of: &str, gross: &str) -> String {
    format!(
        r#"{{"id": "{id}", "time": {}, "package": "acme/thermal", "tier": "standard", "kind": "refund", "gross": "{gross}", "currency": "USD", "refund_of": "{of}"}}"#,
        NOV + 10
    )
}

fn events(records: &[String]) -> Vec<BillingEvent> {
    parse_events(&format!("[{}]", records.join(",")), Path::new("events.json")).unwrap()
}

fn verified(ledger: &Ledger, seq: u64) -> statement::Verified {
    statement::verify(&ledger.statement(seq).unwrap(), op().public_key()).unwrap()
}

/// Reported: a sale of "0" in a batch made the whole signed statement unverifiable
/// ("statement 1: entry 1: malformed"). A free sale settles with no transfers and its
/// entry commits a zero gross with no payouts.
#[test]
fn a_zero_gross_sale_keeps_its_statement_verifiable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&tmp.path().join("l.db"), None).unwrap();
    let run = events(&[sale("paid", "10.00"), sale("free", "0"), sale("paid-2", "5.00")]);
    let report = ledger.settle(&run, &manifests(THERMAL), 10, op(), NOV).unwrap();
    assert_eq!((report.settled, report.statements), (3, 1));
    let statement = verified(&ledger, 1);
    assert!(statement.payload.entries[1].payouts.is_empty());
    // The investor recoups all of both paid sales; the free one paid nobody.
    let openings = ledger.openings(1, "investor").unwrap();
    let opened = statement::check_openings(&statement, &openings).unwrap();
    assert_eq!(
        opened.iter().map(|o| (o.entry, o.gross.0)).collect::<Vec<_>>(),
        [(0, 10_000_000), (2, 5_000_000)]
    );
    assert!(ledger.audit().unwrap().ok());
}

/// Tampering with a settled transfer in the database (or a bug that wrote one): the
/// ledger refuses to build a refund on it instead of signing an unconserved statement.
#[test]
fn an_unconserved_settlement_read_back_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("l.db");
    let mut ledger = Ledger::init(&path, None).unwrap();
    let manifests = manifests(THERMAL);
    ledger.settle(&events(&[sale("s", "100.00")]), &manifests, 10, op(), NOV).unwrap();
    ledger
        .database()
        .execute(
            "UPDATE transfers SET amount = amount + 1 WHERE settlement = ?1 AND rowid = (SELECT min(rowid) FROM transfers WHERE settlement = ?1)",
            [settlement_id("s")],
        )
        .unwrap();
    let err = ledger.settle(&events(&[refund("r", "s", "10.00")]), &manifests, 10, op(), NOV).unwrap_err();
    assert_eq!(err.code(), "ledger-invariant", "{err}");
    assert_eq!(ledger.statements().unwrap().len(), 1, "no statement was signed for the refund");
}

/// A stored opening altered (or written wrong): the ledger refuses to hand out openings
/// whose payouts no longer add up to the gross.
#[test]
fn unconserved_openings_are_not_handed_out() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&tmp.path().join("l.db"), None).unwrap();
    ledger.settle(&events(&[sale("s", "100.00")]), &manifests(THERMAL), 10, op(), NOV).unwrap();
    ledger.openings(1, "acme").unwrap();
    ledger
        .database()
        .execute("UPDATE statement_openings SET amount = amount + 7 WHERE seq = 1 AND party = 'platform'", [])
        .unwrap();
    let err = ledger.openings(1, "acme").err().expect("refused");
    assert_eq!(err.code(), "ledger-invariant", "{err}");
}

/// Reported: parties could not detect value moved between two payouts of one entry,
/// because openings never included the gross. An operator signs an entry that pays the
/// platform 1.00 more and the investor 1.00 less: conservation holds on the commitments,
/// the investor's own opening verifies, but with the gross opening it recomputes its share
/// from the published waterfall and sees the difference.
#[test]
fn a_party_detects_value_moved_to_another_payout() {
    let chain = [waterfall::Tier::package("package acme/thermal", &thermal_revenue(), NOV).unwrap()];
    let honest = waterfall::apply(&chain, Micros(100_000_000), &Default::default()).unwrap();
    let mut moved: Vec<(String, u64)> = honest
        .payouts
        .iter()
        .filter(|p| p.micros > Micros(0))
        .map(|p| (p.party.clone(), p.micros.0))
        .collect();
    for (party, amount) in &mut moved {
        match party.as_str() {
            "platform" => *amount += 1_000_000,
            "investor" => *amount -= 1_000_000,
            _ => {}
        }
    }
    let entry = EntryInput {
        settlement: [5; 32],
        kind: escx_settlement::store::RecordKind::Sale,
        currency: "USD".into(),
        gross: Micros(100_000_000),
        payouts: moved.into_iter().map(|(p, a)| (p, Micros(a))).collect(),
        rules: Vec::new(),
    };
    let built = statement::build(&[3; 16], 1, &[0; 32], NOV, &[entry], op()).unwrap();
    let statement = statement::verify(&built.bytes, op().public_key()).unwrap();
    let file = statement::OpeningsFile {
        v: 1,
        ledger: serde_bytes::ByteBuf::from(vec![3; 16]),
        seq: 1,
        party: "investor".into(),
        openings: built.party_openings("investor"),
    };
    let opened = statement::check_openings(&statement, &file).unwrap();
    // What the investor can now do: rerun the published waterfall on the opened gross
    // (with its own recoupment total, nothing before this sale).
    let expected = waterfall::apply(&chain, opened[0].gross, &Default::default()).unwrap().payout("investor");
    assert_eq!(opened[0].gross, Micros(100_000_000));
    assert_eq!(
        expected.0 - opened[0].amount.0,
        1_000_000,
        "the investor sees it was paid 1.00 less than its share"
    );
}

fn thermal_revenue() -> escx_manifest::schema::Revenue {
    escx_manifest::Manifest::parse(THERMAL, Path::new("m.toml")).unwrap().revenue.unwrap()
}

/// Reported: a duplicated statement in a chain printed an underflowed count
/// ("18446744073709551615 missing").
#[test]
fn a_statement_given_twice_is_a_chain_error_not_an_underflow() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&tmp.path().join("l.db"), None).unwrap();
    ledger.settle(&events(&[sale("s", "1.00")]), &manifests(THERMAL), 10, op(), NOV).unwrap();
    let mut twice = vec![verified(&ledger, 1), verified(&ledger, 1)];
    let err = statement::verify_chain(&mut twice).unwrap_err();
    assert_eq!(err.code(), "statement-chain");
    assert!(err.to_string().contains("given twice"), "{err}");
    assert!(!err.to_string().contains("18446744073709551615"));
}

/// A refund checked against the ledger before the batch starts, while another process
/// disputes the same sale and commits before the batch's transaction begins: the check
/// runs again inside the transaction and refuses.
#[test]
fn a_refund_racing_a_dispute_is_checked_inside_its_transaction() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("l.db");
    let mut ledger = Ledger::init(&path, None).unwrap();
    ledger.settle(&events(&[sale("s", "100.00")]), &manifests(THERMAL), 10, op(), NOV).unwrap();
    // The other process: holds the write lock while it disputes the sale.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    other.execute("UPDATE settlements SET state = 'DISPUTED' WHERE id = ?1", [settlement_id("s")]).unwrap();
    let refunding = {
        let path = path.clone();
        std::thread::spawn(move || {
            // Its checks see the committed state (SETTLED); its transaction waits for the lock.
            let mut ledger = Ledger::open(&path).unwrap();
            ledger.settle(&events(&[refund("r", "s", "40.00")]), &manifests(THERMAL), 10, op(), NOV)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    other.execute_batch("COMMIT").unwrap();
    let err = refunding.join().unwrap().unwrap_err();
    assert_eq!(err.code(), "refund-invalid", "{err}");
    assert!(err.to_string().contains("DISPUTED"), "{err}");
    let refunds: i64 = ledger
        .database()
        .query_row("SELECT count(*) FROM settlements WHERE kind = 'refund'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(refunds, 0);
}

/// Ledger files hold every amount and opening: created 0600 in a 0700 directory, and so
/// are their WAL and shared-memory files.
#[cfg(unix)]
#[test]
fn ledger_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("books");
    let path = dir.join("l.db");
    let mut ledger = Ledger::init(&path, None).unwrap();
    ledger.settle(&events(&[sale("s", "1.00")]), &manifests(THERMAL), 10, op(), NOV).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}
