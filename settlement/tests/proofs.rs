//! Zero-knowledge proofs over statements (proofs.md): statement range proofs, revenue
//! totals and thresholds, each against tampering, other claims and other statement sets.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

mod common;

use escx::Fault as _;
use std::path::Path;

use common::{THERMAL, manifests, op};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::scalar::Scalar;
use escx::envelope::Envelope;
use escx_settlement::events::parse_events;
use escx_settlement::ledger::Ledger;
use escx_settlement::proofs::{self, Claim, RevenueClaim, RevenueProof, StatementProofs};
use escx_settlement::statement::{self, OpeningsFile, Verified};
use serde_bytes::ByteBuf;

/// 2026-11-15.
const NOV: escx::UnixSeconds = escx::UnixSeconds(1_794_700_800 + 14 * 86_400);
const DEC: escx::UnixSeconds = escx::UnixSeconds(NOV.0 + 30 * 86_400);

fn sale(id: &str, gross: &str) -> String {
    format!(
        r#"{{"id": "{id}", "time": {NOV}, "package": "acme/thermal", "tier": "standard", "kind": "sale", "gross": "{gross}", "currency": "USD"}}"#
    )
}

fn refund(id: &str, of: &str, gross: &str) -> String {
    format!(
        r#"{{"id": "{id}", "time": {NOV}, "package": "acme/thermal", "tier": "standard", "kind": "refund", "gross": "{gross}", "currency": "USD", "refund_of": "{of}"}}"#
    )
}

/// Statements 1–3 in November (three batches: sales, more sales, a refund), statement 4 in
/// December.
fn ledger(dir: &Path) -> Ledger {
    let mut ledger = Ledger::init(&dir.join("l.db"), None).unwrap();
    let m = manifests(THERMAL);
    let run =
        |records: &[String]| parse_events(&format!("[{}]", records.join(",")), Path::new("e.json")).unwrap();
    ledger.settle(&run(&[sale("a", "300.00"), sale("b", "100.00")]), &m, 10, op(), NOV).unwrap();
    ledger
        .settle(&run(&[sale("c", "50.00"), sale("d", "0"), sale("e", "20.00")]), &m, 10, op(), NOV + 60)
        .unwrap();
    ledger.settle(&run(&[refund("r", "c", "10.00")]), &m, 10, op(), NOV + 120).unwrap();
    ledger.settle(&run(&[sale("f", "70.00")]), &m, 10, op(), DEC).unwrap();
    ledger
}

fn statements(ledger: &Ledger) -> Vec<Verified> {
    (1..=4)
        .map(|seq| statement::verify(&ledger.statement(seq).unwrap(), op().public_key()).unwrap())
        .collect()
}

fn openings(ledger: &Ledger, party: &str) -> Vec<OpeningsFile> {
    (1..=4).map(|seq| ledger.openings(seq, party).unwrap()).collect()
}

fn claim(party: &str) -> RevenueClaim<'_> {
    RevenueClaim {
        operator: op().id(),
        party,
        period: escx_settlement::payout::Period::of(NOV),
        currency: "USD",
    }
}

/// acme's net November revenue from the openings (what the proof must agree with).
fn acme_november(ledger: &Ledger, all: &[Verified]) -> i64 {
    let mut total = 0i64;
    for statement in &all[..3] {
        for opened in
            statement::check_openings(statement, &ledger.openings(statement.payload.seq, "acme").unwrap())
                .unwrap()
        {
            let kind = &statement.payload.entries[opened.entry as usize].kind;
            total += if kind == "refund" { -(opened.amount.0 as i64) } else { opened.amount.0 as i64 };
        }
    }
    total
}

#[test]
fn statement_range_proofs_verify_and_refuse_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger(tmp.path());
    let all = statements(&ledger);
    let operator = op().id();
    let proofs = ledger.prove_statement(2, op().public_key()).unwrap();
    // The zero sale has no payouts and no proof.
    assert_eq!(proofs.entries.iter().map(|e| e.entry).collect::<Vec<_>>(), [0, 2]);
    let parsed = StatementProofs::from_cbor(&proofs.to_cbor()).unwrap();
    proofs::verify_statement(&parsed, &all[1], &operator).unwrap();
    // For another statement, or another operator: refused.
    assert_eq!(proofs::verify_statement(&parsed, &all[0], &operator).unwrap_err().code(), "proof-statements");
    assert_eq!(
        proofs::verify_statement(&parsed, &all[1], &escx::sig::KeyId([9; 16])).unwrap_err().code(),
        "proof-statements"
    );
    // Any byte of a range proof changed: refused (malformed or invalid).
    let bytes = parsed.entries[1].proof.clone();
    for position in [0, 31, 32, 100, bytes.len() / 2, bytes.len() - 1] {
        let mut tampered = parsed.clone();
        tampered.entries[1].proof[position] ^= 1;
        let err = proofs::verify_statement(&tampered, &all[1], &operator).unwrap_err();
        assert!(matches!(err.code(), "proof-invalid" | "proof-malformed"), "{position}: {err}");
    }
    // A proof dropped, or two swapped: refused.
    let mut dropped = parsed.clone();
    dropped.entries.pop();
    assert_eq!(proofs::verify_statement(&dropped, &all[1], &operator).unwrap_err().code(), "proof-invalid");
    let mut swapped = parsed.clone();
    swapped.entries.swap(0, 1);
    assert!(proofs::verify_statement(&swapped, &all[1], &operator).is_err());
    let mut renumbered = parsed;
    renumbered.entries[0].entry = 1;
    assert!(proofs::verify_statement(&renumbered, &all[1], &operator).is_err());
}

/// The gap settlement.md §4.4 left: an operator commits a "negative" payout balanced by an
/// inflated one. Conservation still holds, so the statement verifies; no range proof for it
/// can be made, and the honest statement's proofs do not carry over.
#[test]
fn a_negative_payout_has_no_range_proof() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger(tmp.path());
    let honest = statement::verify(&ledger.statement(1).unwrap(), op().public_key()).unwrap();
    let mut forged = honest.payload.clone();
    let entry = &mut forged.entries[0];
    let shift = RISTRETTO_BASEPOINT_POINT * Scalar::from(400_000_000u64);
    let point = |b: &[u8]| CompressedRistretto::from_slice(b).unwrap().decompress().unwrap();
    let first = point(&entry.payouts[0].commitment) + shift;
    let last = entry.payouts.len() - 1;
    let second = point(&entry.payouts[last].commitment) - shift;
    entry.payouts[0].commitment = ByteBuf::from(first.compress().to_bytes().to_vec());
    entry.payouts[last].commitment = ByteBuf::from(second.compress().to_bytes().to_vec());
    forged.entries_root = ByteBuf::from(statement::merkle_root(&statement::leaves(&forged)).to_vec());
    let bytes = Envelope::seal(statement::CONTEXT_STATEMENT, escx::cbor::encode(&forged), op()).to_cbor();
    let forged = statement::verify(&bytes, op().public_key()).expect("conservation alone cannot see it");
    let proofs = ledger.prove_statement(1, op().public_key()).unwrap();
    let mut moved = proofs.clone();
    moved.statement = ByteBuf::from(forged.hash.to_vec());
    let err = proofs::verify_statement(&moved, &forged, &op().id()).unwrap_err();
    assert_eq!(err.code(), "proof-invalid");
    // With the real openings shifted, the amount of the last payout is below 0: the
    // prover cannot even state it as a u64, and with any u64 the commitments differ.
    let mut openings = ledger.openings(1, "acme").unwrap().openings;
    openings.extend(ledger.openings(1, "platform").unwrap().openings);
    openings.extend(ledger.openings(1, "investor").unwrap().openings);
    assert_eq!(proofs::prove_statement(&forged, &openings, &op().id()).unwrap_err().code(), "proof-refused");
}

#[test]
fn a_revenue_total_proves_exactly_the_net_total() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger(tmp.path());
    let all = statements(&ledger);
    let expected = acme_november(&ledger, &all);
    let proof = proofs::prove_total(&all, &openings(&ledger, "acme"), &claim("acme")).unwrap();
    assert_eq!(proof.amount, expected);
    let parsed = RevenueProof::from_cbor(&proof.to_cbor()).unwrap();
    let proven = proofs::verify_revenue(&parsed, &all, &op().id()).unwrap();
    assert_eq!(proven.claim, Claim::Total(expected));
    assert_eq!((proven.statements, proven.party.as_str()), ((1, 3), "acme"));
    assert_eq!(proven.entries, 5, "the four paid sales and the refund");

    let fails = |p: &RevenueProof, statements: &[Verified]| {
        proofs::verify_revenue(p, statements, &op().id()).unwrap_err()
    };
    // A total one micro-unit off (e.g. an entry left out): refused.
    for delta in [-1, 1, -(expected / 2)] {
        let mut lie = parsed.clone();
        lie.amount += delta;
        assert_eq!(fails(&lie, &all).code(), "proof-invalid", "{delta}");
    }
    // Another party or period: refused.
    let mut other = parsed.clone();
    other.party = "investor".into();
    assert_eq!(fails(&other, &all).code(), "proof-invalid");
    let mut december = parsed.clone();
    december.period = "2026-12".into();
    assert_eq!(fails(&december, &all).code(), "proof-period-open", "no statement after December yet");
    // Any byte of the proof: refused.
    for position in 0..64 {
        let mut tampered = parsed.clone();
        tampered.proof[position] ^= 0x10;
        assert!(proofs::verify_revenue(&tampered, &all, &op().id()).is_err(), "{position}");
    }
    // A statement dropped from what the verifier is given, or one left out of the proof.
    let without_2: Vec<Verified> = all.iter().filter(|s| s.payload.seq != 2).cloned().collect();
    assert_eq!(fails(&parsed, &without_2).code(), "proof-statements");
    let mut fewer = parsed.clone();
    fewer.statements.pop();
    assert_eq!(fails(&fewer, &all).code(), "proof-statements");
    // The same proof for another operator key: refused.
    assert_eq!(
        proofs::verify_revenue(&parsed, &all, &escx::sig::KeyId([1; 16])).unwrap_err().code(),
        "proof-statements"
    );
}

#[test]
fn a_threshold_proves_a_lower_bound_and_nothing_above_the_total() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger(tmp.path());
    let all = statements(&ledger);
    let total = acme_november(&ledger, &all) as u64;
    let openings = openings(&ledger, "acme");
    for at_least in [0, total / 2, total] {
        let proof = proofs::prove_threshold(&all, &openings, &claim("acme"), at_least).unwrap();
        let parsed = RevenueProof::from_cbor(&proof.to_cbor()).unwrap();
        assert!(parsed.is_threshold());
        let proven = proofs::verify_revenue(&parsed, &all, &op().id()).unwrap();
        assert_eq!(proven.claim, Claim::AtLeast(at_least));
    }
    // Above the total, no proof can be made.
    let err = proofs::prove_threshold(&all, &openings, &claim("acme"), total + 1).unwrap_err();
    assert_eq!(err.code(), "proof-refused");
    // A proof for X relabelled as a higher X: refused.
    let proof = proofs::prove_threshold(&all, &openings, &claim("acme"), total).unwrap();
    let mut forged = proof.clone();
    forged.amount = total as i64 + 1;
    assert_eq!(proofs::verify_revenue(&forged, &all, &op().id()).unwrap_err().code(), "proof-invalid");
    let mut tampered = proof.clone();
    tampered.proof[40] ^= 1;
    assert!(proofs::verify_revenue(&tampered, &all, &op().id()).is_err());
    // Another party's openings do not make acme's proof.
    let err = proofs::prove_threshold(&all, &openings, &claim("investor"), 0).unwrap_err();
    assert_eq!(err.code(), "proof-refused");
}

/// An operator moves value from a payout that has a rule (the platform's 10 % of the gross)
/// to another: conservation holds and every payout stays in range, but the split proof
/// fails, and the statement's signed rule cannot be dropped to hide it.
#[test]
fn value_moved_between_payouts_fails_the_split_proof() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger(tmp.path());
    let honest = statement::verify(&ledger.statement(1).unwrap(), op().public_key()).unwrap();
    assert_eq!(honest.payload.v, 2, "statements carry their payouts' rules");
    let platform = honest.payload.entries[0].payouts.iter().position(|p| p.party == "platform").unwrap();
    assert_eq!(
        honest.payload.entries[0].payouts[platform].rule,
        Some(statement::PayoutRule { bps: 1000, minus: vec![] })
    );
    let proofs = ledger.prove_statement(1, op().public_key()).unwrap();
    assert!(proofs.entries[0].split.is_some());
    // The split proof is required for a ruled entry.
    let mut without = proofs.clone();
    without.entries[0].split = None;
    assert_eq!(proofs::verify_statement(&without, &honest, &op().id()).unwrap_err().code(), "proof-invalid");

    // Move 1.00 from the platform to acme and re-sign.
    let mut forged = honest.payload.clone();
    let shift = RISTRETTO_BASEPOINT_POINT * Scalar::from(1_000_000u64);
    let point = |b: &[u8]| CompressedRistretto::from_slice(b).unwrap().decompress().unwrap();
    let entry = &mut forged.entries[0];
    let acme = entry.payouts.iter().position(|p| p.party == "acme").unwrap();
    entry.payouts[platform].commitment =
        ByteBuf::from((point(&entry.payouts[platform].commitment) - shift).compress().to_bytes().to_vec());
    entry.payouts[acme].commitment =
        ByteBuf::from((point(&entry.payouts[acme].commitment) + shift).compress().to_bytes().to_vec());
    forged.entries_root = ByteBuf::from(statement::merkle_root(&statement::leaves(&forged)).to_vec());
    let bytes = Envelope::seal(statement::CONTEXT_STATEMENT, escx::cbor::encode(&forged), op()).to_cbor();
    let forged = statement::verify(&bytes, op().public_key()).expect("conservation holds");
    // The operator knows the openings: shift them too. Range proofs still work; the split does not.
    let mut openings: Vec<statement::Opening> = Vec::new();
    for party in ["acme", "platform", "investor"] {
        openings.extend(ledger.openings(1, party).unwrap().openings);
    }
    openings.sort_by_key(|o| (o.entry, o.party.clone()));
    openings.dedup_by_key(|o| (o.entry, o.party.clone()));
    for o in openings.iter_mut().filter(|o| o.entry == 0) {
        match o.party.as_deref() {
            Some("platform") => o.amount.0 -= 1_000_000,
            Some("acme") => o.amount.0 += 1_000_000,
            _ => {}
        }
    }
    let err = proofs::prove_statement(&forged, &openings, &op().id()).unwrap_err();
    assert_eq!(err.code(), "proof-refused", "{err}");
    assert!(err.to_string().contains("share"), "{err}");
    let mut relabelled = proofs.clone();
    relabelled.statement = ByteBuf::from(forged.hash.to_vec());
    assert_eq!(
        proofs::verify_statement(&relabelled, &forged, &op().id()).unwrap_err().code(),
        "proof-invalid"
    );

    // A signed rule that is not what was paid (15 % claimed, 10 % paid): the operator can
    // make every range proof for it but no split proof.
    let mut claimed = honest.payload.clone();
    claimed.entries[0].payouts[platform].rule = Some(statement::PayoutRule { bps: 1500, minus: vec![] });
    claimed.entries_root = ByteBuf::from(statement::merkle_root(&statement::leaves(&claimed)).to_vec());
    let bytes = Envelope::seal(statement::CONTEXT_STATEMENT, escx::cbor::encode(&claimed), op()).to_cbor();
    let claimed = statement::verify(&bytes, op().public_key()).unwrap();
    let mut honest_openings: Vec<statement::Opening> = Vec::new();
    for party in ["acme", "platform", "investor"] {
        honest_openings.extend(ledger.openings(1, party).unwrap().openings);
    }
    let err = proofs::prove_statement(&claimed, &honest_openings, &op().id()).unwrap_err();
    assert!(err.to_string().contains("not its rule's share"), "{err}");
    // The verifier's own check: entry 1's split proof shown for entry 0 (their range
    // proofs intact) is refused by the split check alone.
    let mut swapped = proofs.clone();
    let split = swapped.entries[1].split.clone();
    swapped.entries[0].split = split;
    let err = proofs::verify_statement(&swapped, &honest, &op().id()).unwrap_err();
    assert!(err.to_string().contains("share its rule names"), "{err}");
}

/// Review 2 (Medium 4): the verifier summed the statements the prover handed over, so
/// leaving out the month's last statement (which held a refund) gave an accepted total
/// without the refund, and a proof for a month not yet over was accepted too. Now a
/// period counts only between a statement before it (or statement 1) and one issued after
/// it, each chained to it: without the one after, the proof is `proof-period-open`, and
/// the operator closes a quiet month with an empty statement (`Ledger::close_period`).
#[test]
fn a_revenue_proof_needs_the_whole_month() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&tmp.path().join("l.db"), None).unwrap();
    let m = manifests(THERMAL);
    let run =
        |records: &[String]| parse_events(&format!("[{}]", records.join(",")), Path::new("e.json")).unwrap();
    ledger.settle(&run(&[sale("a", "1000.00")]), &m, 10, op(), NOV).unwrap();
    ledger.settle(&run(&[refund("r", "a", "900.00")]), &m, 10, op(), NOV + 60).unwrap();
    let verify = |ledger: &Ledger, seq: u64| {
        statement::verify(&ledger.statement(seq).unwrap(), op().public_key()).unwrap()
    };
    let (one, two) = (verify(&ledger, 1), verify(&ledger, 2));

    // The prover's own code (it holds its openings, not the operator's key; the library
    // prover refuses an open month) proves statement 1 alone as if it were the month.
    let other = escx::sig::SecretKey::generate();
    let fake = statement::build(&[0x4c; 16], 2, &one.hash, DEC, &[], &other).unwrap();
    let fake = statement::verify(&fake.bytes, other.public_key()).unwrap();
    let forged =
        proofs::prove_total(&[one.clone(), fake], &[ledger.openings(1, "acme").unwrap()], &claim("acme"))
            .unwrap();
    let fails =
        |p: &RevenueProof, given: &[Verified]| proofs::verify_revenue(p, given, &op().id()).unwrap_err();
    // Handed statement 1 alone: before, accepted with the refund left out.
    assert_eq!(fails(&forged, std::slice::from_ref(&one)).code(), "proof-period-open");
    // Handed the whole month so far: the month is not over, so no proof holds yet.
    assert_eq!(fails(&forged, &[one.clone(), two.clone()]).code(), "proof-period-open");
    let all_openings = [ledger.openings(1, "acme").unwrap(), ledger.openings(2, "acme").unwrap()];
    assert_eq!(
        proofs::prove_total(&[one.clone(), two.clone()], &all_openings, &claim("acme")).unwrap_err().code(),
        "proof-period-open",
        "the prover refuses an open month too"
    );

    // The month cannot be closed before it ends; after, an empty statement closes it,
    // once.
    let period = escx_settlement::payout::Period::of(NOV);
    assert_eq!(ledger.close_period(period, op(), NOV + 120).unwrap_err().code(), "period-open");
    let (_, end) = period.range();
    let closed = ledger.close_period(period, op(), end).unwrap();
    assert_eq!((closed.seq, closed.signed), (3, true));
    assert_eq!(
        ledger.close_period(period, op(), end + 60).unwrap(),
        escx_settlement::ledger::PeriodClose { signed: false, ..closed }
    );
    let three = verify(&ledger, 3);
    assert!(three.payload.entries.is_empty());
    let month = [one.clone(), two.clone(), three.clone()];
    let honest = proofs::prove_total(&month, &all_openings, &claim("acme")).unwrap();
    let proven = proofs::verify_revenue(&honest, &month, &op().id()).unwrap();
    assert_eq!(proven.claim, Claim::Total(honest.amount));
    // The forged proof names statement 1 only: with the month's statements given, refused.
    assert_eq!(fails(&forged, &month).code(), "proof-statements");
    // Statement 2 withheld while 3 is given: a statement is missing.
    assert_eq!(fails(&honest, &[one.clone(), three.clone()]).code(), "proof-statements");

    // The first statement of a month left out. December holds statement 3 (the empty close
    // of November, issued at midnight) and 4; 5 closes it. Without statement 2 the
    // verifier cannot tell that 3 is December's first.
    ledger.settle(&run(&[sale("b", "50.00")]), &m, 10, op(), end + 3600).unwrap();
    let next = escx_settlement::payout::Period::of(end + 3600);
    let (_, next_end) = next.range();
    ledger.close_period(next, op(), next_end).unwrap();
    let (four, five) = (verify(&ledger, 4), verify(&ledger, 5));
    let claim_next = RevenueClaim { period: next, ..claim("acme") };
    let openings_next: Vec<OpeningsFile> = (3..=5).map(|seq| ledger.openings(seq, "acme").unwrap()).collect();
    let december = [two.clone(), three.clone(), four.clone(), five.clone()];
    let proof = proofs::prove_total(&december, &openings_next, &claim_next).unwrap();
    proofs::verify_revenue(&proof, &december, &op().id()).unwrap();
    assert_eq!(
        fails(&proof, &[three, four, five]).code(),
        "proof-statements",
        "the statement before is needed"
    );
}

/// A closed month stays closed: a statement signed after the close with an earlier time
/// (a clock stepped back, `settle run --at` in the past) is dated at the close, and a
/// chain whose times go back is refused.
#[test]
fn statement_times_never_go_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&tmp.path().join("l.db"), None).unwrap();
    let m = manifests(THERMAL);
    let run =
        |records: &[String]| parse_events(&format!("[{}]", records.join(",")), Path::new("e.json")).unwrap();
    ledger.settle(&run(&[sale("a", "10.00")]), &m, 10, op(), NOV).unwrap();
    let period = escx_settlement::payout::Period::of(NOV);
    let (_, end) = period.range();
    ledger.close_period(period, op(), end).unwrap();
    ledger.settle(&run(&[sale("late", "99.00")]), &m, 10, op(), NOV + 60).unwrap();
    let verify = |seq: u64| statement::verify(&ledger.statement(seq).unwrap(), op().public_key()).unwrap();
    let (one, two, three) = (verify(1), verify(2), verify(3));
    assert_eq!(three.payload.issued_at, end, "dated at the close, not in November");
    let proof = proofs::prove_total(
        &[one.clone(), two.clone(), three.clone()],
        &[ledger.openings(1, "acme").unwrap()],
        &claim("acme"),
    )
    .unwrap();
    proofs::verify_revenue(&proof, &[one.clone(), two.clone(), three.clone()], &op().id()).unwrap();
    // A chain dated backwards (only an operator key could sign one) is refused.
    let key = escx::sig::SecretKey::generate();
    let a = statement::build(&[1; 16], 1, &[0; 32], DEC, &[], &key).unwrap();
    let b = statement::build(&[1; 16], 2, &a.hash, NOV, &[], &key).unwrap();
    let mut chain = vec![
        statement::verify(&a.bytes, key.public_key()).unwrap(),
        statement::verify(&b.bytes, key.public_key()).unwrap(),
    ];
    assert_eq!(statement::verify_chain(&mut chain).unwrap_err().code(), "statement-chain");
}
