//! Statements (settlement.md §4): conservation on hidden amounts, tampering, chains,
//! openings, and statements written by the ledger.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use escx::Fault as _;
use escx_manifest::Micros;
use std::path::Path;

mod common;

use common::{manifests, op};
use escx::envelope::Envelope;
use escx::sig::SecretKey;
use escx_settlement::events::parse_events;
use escx_settlement::ledger::Ledger;
use escx_settlement::statement::{
    self, CONTEXT_STATEMENT, EntryInput, StatementPayload, Verified, check_openings, verify, verify_chain,
};

fn inputs(n: u8) -> Vec<EntryInput> {
    (0..n)
        .map(|i| EntryInput {
            settlement: [i; 32],
            kind: escx_settlement::store::RecordKind::Sale,
            currency: "USD".into(),
            gross: Micros(10_000 + u64::from(i)),
            payouts: vec![
                ("platform".into(), Micros(1_500)),
                ("referrer".into(), Micros(500)),
                ("acme".into(), Micros(8_000 + u64::from(i))),
            ],
            rules: Vec::new(),
        })
        .collect()
}

fn payload(bytes: &[u8]) -> StatementPayload {
    let envelope = Envelope::from_cbor(bytes).unwrap();
    escx::cbor::decode_exact(envelope.payload_unverified(), "statement").unwrap()
}

/// The operator signing something other than what the ledger computed.
fn resign(payload: &StatementPayload) -> Vec<u8> {
    Envelope::seal(CONTEXT_STATEMENT, escx::cbor::encode(payload), op()).to_cbor()
}

fn chain(count: u64) -> Vec<Vec<u8>> {
    let mut previous = [0u8; 32];
    let mut out = Vec::new();
    for seq in 1..=count {
        let built = statement::build(
            &[9; 16],
            seq,
            &previous,
            escx::UnixSeconds(1_800_000_000 + seq),
            &inputs(4),
            op(),
        )
        .unwrap();
        previous = built.hash;
        out.push(built.bytes);
    }
    out
}

fn verified(bytes: &[Vec<u8>]) -> Vec<Verified> {
    bytes.iter().map(|b| verify(b, op().public_key()).unwrap()).collect()
}

#[test]
fn any_flipped_byte_or_foreign_key_fails() {
    let bytes = chain(1).remove(0);
    assert!(verify(&bytes, SecretKey::generate().public_key()).is_err());
    for at in (0..bytes.len()).step_by(97) {
        let mut changed = bytes.clone();
        changed[at] ^= 0x04;
        assert!(verify(&changed, op().public_key()).is_err(), "flip at {at} went unnoticed");
    }
}

#[test]
fn an_operator_cannot_sign_an_unconserved_or_inconsistent_statement() {
    let bytes = chain(1).remove(0);
    let good = payload(&bytes);

    // A payout commitment swapped for another entry's: sums no longer match.
    let mut altered = good.clone();
    altered.entries[1].payouts[0].commitment = good.entries[2].payouts[0].commitment.clone();
    altered.entries_root =
        serde_bytes::ByteBuf::from(statement::merkle_root(&statement::leaves(&altered)).to_vec());
    assert_eq!(verify(&resign(&altered), op().public_key()).unwrap_err().code(), "statement-unconserved");

    // An entry changed without a new root.
    let mut entry = good.clone();
    entry.entries[0].kind = "usage".into();
    assert_eq!(verify(&resign(&entry), op().public_key()).unwrap_err().code(), "statement-invalid");

    // A party hidden from the index.
    let mut index = good.clone();
    index.parties.remove("referrer");
    assert_eq!(verify(&resign(&index), op().public_key()).unwrap_err().code(), "statement-invalid");

    // One party paid twice in an entry (conserving, with a fresh root): its second payout
    // could hide from the party's openings, so it is refused.
    let mut twice = good.clone();
    let party = twice.entries[0].payouts[0].party.clone();
    twice.entries[0].payouts[1].party = party;
    twice.entries_root =
        serde_bytes::ByteBuf::from(statement::merkle_root(&statement::leaves(&twice)).to_vec());
    let error = verify(&resign(&twice), op().public_key()).unwrap_err();
    assert!(error.to_string().contains("paid twice"), "{error}");

    // A first statement that claims a predecessor, or a later one that claims none.
    let mut previous = good.clone();
    previous.previous = serde_bytes::ByteBuf::from(vec![1; 32]);
    assert_eq!(verify(&resign(&previous), op().public_key()).unwrap_err().code(), "statement-invalid");
}

#[test]
fn chains_report_gaps_wrong_links_and_other_ledgers() {
    let bytes = chain(4);
    verify_chain(&mut verified(&bytes)).unwrap();

    let mut gap = verified(&[bytes[0].clone(), bytes[1].clone(), bytes[3].clone()]);
    let err = verify_chain(&mut gap).unwrap_err();
    assert_eq!(err.code(), "statement-chain");
    assert!(err.to_string().contains("gap: statement 2 is followed by 4"), "{err}");

    let mut relinked = payload(&bytes[2]);
    relinked.previous = serde_bytes::ByteBuf::from(vec![7; 32]);
    let mut wrong = verified(&[bytes[1].clone(), resign(&relinked)]);
    assert_eq!(verify_chain(&mut wrong).unwrap_err().code(), "statement-chain");

    let mut renumbered = payload(&bytes[1]);
    renumbered.seq = 3;
    let mut seq = verified(&[bytes[0].clone(), resign(&renumbered)]);
    assert!(verify_chain(&mut seq).unwrap_err().to_string().contains("gap"));

    let mut foreign = payload(&bytes[1]);
    foreign.ledger = serde_bytes::ByteBuf::from(vec![1; 16]);
    let mut other = verified(&[bytes[0].clone(), resign(&foreign)]);
    assert!(verify_chain(&mut other).unwrap_err().to_string().contains("different ledgers"));
}

const MANIFEST: &str = r#"[package]
name = "acme/thermal"
version = "1.0.0"

[revenue]
currency = "USD"
residual = "acme"
effective_from = "2026-01-01"

[[revenue.step]]
party = "platform"
share_of_gross_bps = 1500
"#;

#[test]
fn the_ledger_signs_one_chained_statement_per_batch_and_hands_out_openings() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&tmp.path().join("l.db"), None).unwrap();
    let manifests = manifests(MANIFEST);
    let records: Vec<String> = (0..7)
        .map(|i| {
            format!(
                r#"{{"id": "e{i}", "time": 1790000000, "package": "acme/thermal", "tier": "t", "kind": "sale", "gross": "{}.00", "currency": "USD"}}"#,
                10 + i
            )
        })
        .collect();
    let events = parse_events(&format!("[{}]", records.join(",")), Path::new("e.json")).unwrap();
    let report = ledger.settle(&events, &manifests, 3, op(), escx::UnixSeconds(1_800_000_000)).unwrap();
    assert_eq!((report.batches, report.statements), (3, 3));
    let again = ledger.settle(&events, &manifests, 3, op(), escx::UnixSeconds(1_800_000_100)).unwrap();
    assert_eq!(again.statements, 0, "a no-op run signs nothing");

    let listed = ledger.statements().unwrap();
    assert_eq!(listed.iter().map(|s| s.entries).collect::<Vec<_>>(), [3, 3, 1]);
    let bytes: Vec<Vec<u8>> = (1..=3).map(|seq| ledger.statement(seq).unwrap()).collect();
    let mut all = verified(&bytes);
    verify_chain(&mut all).unwrap();
    let settled: u64 = ledger
        .database()
        .query_row("SELECT COUNT(*) FROM settlements WHERE batch = 2", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64;
    assert_eq!(settled, 3, "settlements carry their statement's number");

    // acme's openings for statement 1 open to its payouts: 85 % of 10, 11, 12.
    let openings = ledger.openings(1, "acme").unwrap();
    let amounts: Vec<(u32, u64, u64)> = check_openings(&all[0], &openings)
        .unwrap()
        .iter()
        .map(|o| (o.entry, o.amount.0, o.gross.0))
        .collect();
    // With each entry's gross (10, 11, 12), so acme can check its 85 % share itself.
    assert_eq!(
        amounts,
        vec![(0, 8_500_000, 10_000_000), (1, 9_350_000, 11_000_000), (2, 10_200_000, 12_000_000)]
    );
    let mut stolen = ledger.openings(1, "platform").unwrap();
    stolen.party = "acme".into();
    assert_eq!(check_openings(&all[0], &stolen).unwrap_err().code(), "opening-invalid");
    // Only statements that exist have openings.
    for seq in [0, all.len() as u64 + 1] {
        assert_eq!(ledger.openings(seq, "acme").err().expect("refused").code(), "unknown-statement", "{seq}");
    }
    assert!(ledger.openings(all.len() as u64, "acme").is_ok());
}

/// Statements 1..=4 of one ledger, each signed by the key `signers` names for it.
fn chain_signed_by(signers: [&SecretKey; 4]) -> Vec<Vec<u8>> {
    let mut previous = [0u8; 32];
    let mut out = Vec::new();
    for (seq, key) in (1..).zip(signers) {
        let built = statement::build(
            &[9; 16],
            seq,
            &previous,
            escx::UnixSeconds(1_800_000_000 + seq),
            &inputs(2),
            key,
        )
        .unwrap();
        previous = built.hash;
        out.push(built.bytes);
    }
    out
}

/// settlement.md §4.5: a rotation hands the ledger from one key to the next. The attacks: a
/// retired key signing after its successor did (`statement-chain`), a key endorsing two
/// successors (a fork), a rotation no key of the line signed, and one bringing back a key
/// already in the line (`rotation-invalid`).
#[test]
fn operator_keys_follow_rotations_forward_only() {
    use escx::rotation::RotationStatement;
    use statement::OperatorKeys;
    let (old, new, third) = (op(), SecretKey::generate(), SecretKey::generate());
    let hand_over = RotationStatement::create(old, new.public_key(), escx::UnixSeconds(1));
    let keys = OperatorKeys::follow(old.public_key().clone(), std::slice::from_ref(&hand_over)).unwrap();

    let bytes = chain_signed_by([old, old, &new, &new]);
    let mut good: Vec<Verified> = bytes.iter().map(|b| keys.verify(b).unwrap()).collect();
    keys.verify_chain(&mut good).unwrap();
    // Without the rotation, statement 3 is signed by a stranger.
    let alone = OperatorKeys::new(old.public_key().clone());
    assert_eq!(alone.verify(&bytes[2]).unwrap_err().code(), "statement-invalid");
    // A key holding only the successor trusts only what the successor signed.
    let later = OperatorKeys::follow(new.public_key().clone(), std::slice::from_ref(&hand_over)).unwrap();
    assert!(later.verify(&bytes[3]).is_ok());
    assert_eq!(later.verify(&bytes[0]).unwrap_err().code(), "statement-invalid");

    // The retired key signs statement 4 after its successor signed statement 3.
    let stepped_back = chain_signed_by([old, old, &new, old]);
    let mut back: Vec<Verified> = stepped_back.iter().map(|b| keys.verify(b).unwrap()).collect();
    let error = keys.verify_chain(&mut back).unwrap_err();
    assert_eq!(error.code(), "statement-chain");
    assert!(error.to_string().contains("already succeeded"), "{error}");

    // A fork: the old key endorses a second successor.
    let fork = RotationStatement::create(old, third.public_key(), escx::UnixSeconds(2));
    let error = OperatorKeys::follow(old.public_key().clone(), &[hand_over.clone(), fork]).unwrap_err();
    assert_eq!(error.code(), "rotation-invalid");
    assert!(error.to_string().contains("two successors"), "{error}");
    // A rotation signed by a key outside the line.
    let stranger = RotationStatement::create(&third, new.public_key(), escx::UnixSeconds(3));
    let error = OperatorKeys::follow(old.public_key().clone(), &[stranger]).unwrap_err();
    assert_eq!(error.code(), "rotation-invalid");
    // Handing back to a key already in the line.
    let back_again = RotationStatement::create(&new, old.public_key(), escx::UnixSeconds(4));
    let error = OperatorKeys::follow(old.public_key().clone(), &[hand_over.clone(), back_again]).unwrap_err();
    assert_eq!(error.code(), "rotation-invalid");
    // Given in any order, a line of two rotations is followed.
    let next = RotationStatement::create(&new, third.public_key(), escx::UnixSeconds(5));
    let line = OperatorKeys::follow(old.public_key().clone(), &[next, hand_over]).unwrap();
    assert_eq!(line.lineage().len(), 3);
}
