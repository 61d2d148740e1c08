//! Writes `test-vectors/proofs/`: statements of two months signed by a fresh operator key,
//! their range proofs, a party's revenue total and threshold proofs, and tampered variants,
//! with the verdict of each (spec/proofs.md).
//!
//!     cargo run -p escx-settlement --example make_proof_vectors -- test-vectors/proofs

use escx_manifest::Micros;
use std::path::PathBuf;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::scalar::Scalar;
use escx::envelope::Envelope;
use escx::sig::SecretKey;
use escx_settlement::proofs::{self, RevenueClaim};
use escx_settlement::statement::{self, EntryInput, OpeningsFile, PayoutRule};
use serde_bytes::ByteBuf;
use serde_json::json;

/// 2026-11-15 and 2026-12-15.
const NOV: escx::UnixSeconds = escx::UnixSeconds(1_794_700_800);
const DEC: escx::UnixSeconds = escx::UnixSeconds(NOV.0 + 30 * 86_400);

fn entry(tag: &str, kind: &str, gross: u64, payouts: &[(&str, u64)]) -> EntryInput {
    EntryInput {
        settlement: blake3::derive_key("escx v1 settlement id", tag.as_bytes()),
        kind: escx_settlement::store::RecordKind::parse(kind).unwrap(),
        currency: "USD".into(),
        gross: Micros(gross),
        payouts: payouts.iter().map(|(p, a)| (p.to_string(), Micros(*a))).collect(),
        // The platform takes 10 % of the gross, a referrer 10 % of what is left after it;
        // acme, the residual, has no rule.
        rules: payouts
            .iter()
            .map(|(p, _)| match *p {
                "platform" => Some(PayoutRule { bps: 1000, minus: vec![] }),
                "referrer" => Some(PayoutRule { bps: 1000, minus: vec![0] }),
                _ => None,
            })
            .collect(),
    }
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "test-vectors/proofs".into()));
    // Only what this program writes goes: the directory also holds its README and the
    // independent Python verifier (whose known answers, like proofs.md §9.8, are taken
    // from these files and must be updated with them).
    let _ = std::fs::remove_dir_all(out.join("statements"));
    for old in std::fs::read_dir(&out).into_iter().flatten().flatten() {
        let name = old.file_name();
        let name = name.to_string_lossy();
        if name == "expected.json"
            || name == "operator.pub"
            || name.ends_with(".proof")
            || name.ends_with(".proofs")
        {
            let _ = std::fs::remove_file(old.path());
        }
    }
    std::fs::create_dir_all(out.join("statements")).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).unwrap();
    let key = SecretKey::generate();
    escx::keyfile::write_public_key(&out.join("operator.pub"), key.public_key(), true).unwrap();
    let ledger = [0x4cu8; 16];
    let batches = [
        (
            NOV,
            vec![
                entry("s1", "sale", 100_000_000, &[("platform", 10_000_000), ("acme", 90_000_000)]),
                entry("s2", "sale", 0, &[]),
                entry(
                    "s3",
                    "sale",
                    49_000_000,
                    &[("platform", 4_900_000), ("referrer", 4_410_000), ("acme", 39_690_000)],
                ),
            ],
        ),
        (
            NOV + 3_600,
            vec![entry("r1", "refund", 10_000_000, &[("platform", 1_000_000), ("acme", 9_000_000)])],
        ),
        (DEC, vec![entry("s4", "sale", 20_000_000, &[("platform", 2_000_000), ("acme", 18_000_000)])]),
    ];
    let mut previous = [0u8; 32];
    let mut verified = Vec::new();
    let mut acme = Vec::new();
    let mut statement_cases = Vec::new();
    for (i, (at, inputs)) in batches.iter().enumerate() {
        let seq = i as u64 + 1;
        let built = statement::build(&ledger, seq, &previous, *at, inputs, &key).unwrap();
        previous = built.hash;
        let name = format!("statements/statement-{seq}.cbor");
        write(&name, &built.bytes);
        let v = statement::verify(&built.bytes, key.public_key()).unwrap();
        let proofs = proofs::prove_statement(&v, &built.openings, &key.id()).unwrap();
        write(&format!("statement-{seq}.proofs"), &proofs.to_cbor());
        statement_cases
            .push(json!({ "statement": name, "proofs": format!("statement-{seq}.proofs"), "expect": "ok" }));
        let mut openings: Vec<statement::Opening> = built
            .party_openings("acme")
            .into_iter()
            .filter(|o| o.party.is_some() || !inputs[o.entry as usize].payouts.is_empty())
            .collect();
        openings.sort_by_key(|o| (o.entry, o.party.is_some()));
        acme.push(OpeningsFile {
            v: 1,
            ledger: ByteBuf::from(ledger.to_vec()),
            seq,
            party: "acme".into(),
            openings,
        });
        verified.push(v);
    }
    // Tampered statement proofs.
    let good =
        proofs::StatementProofs::from_cbor(&std::fs::read(out.join("statement-1.proofs")).unwrap()).unwrap();
    let mut flipped = good.clone();
    flipped.entries[0].proof[100] ^= 1;
    write("statement-1-flipped.proofs", &flipped.to_cbor());
    statement_cases.push(json!({ "statement": "statements/statement-1.cbor", "proofs": "statement-1-flipped.proofs", "expect": "proof-invalid" }));
    statement_cases.push(json!({ "statement": "statements/statement-2.cbor", "proofs": "statement-1.proofs", "expect": "proof-statements" }));
    let mut unsplit = good.clone();
    unsplit.entries[0].split = None;
    write("statement-1-no-split.proofs", &unsplit.to_cbor());
    statement_cases.push(json!({ "statement": "statements/statement-1.cbor", "proofs": "statement-1-no-split.proofs", "expect": "proof-invalid", "note": "entry 0's payouts carry rules: its split proof is required" }));
    let mut moved = good.clone();
    let other_split = moved.entries[1].split.clone();
    moved.entries[0].split = other_split;
    write("statement-1-split-of-entry-2.proofs", &moved.to_cbor());
    statement_cases.push(json!({ "statement": "statements/statement-1.cbor", "proofs": "statement-1-split-of-entry-2.proofs", "expect": "proof-invalid" }));
    let mut missing = good.clone();
    missing.entries.pop();
    write("statement-1-missing-entry.proofs", &missing.to_cbor());
    statement_cases.push(json!({ "statement": "statements/statement-1.cbor", "proofs": "statement-1-missing-entry.proofs", "expect": "proof-invalid" }));
    // A conserved statement with a negative payout, re-signed by the operator, carrying
    // the honest statement's proofs re-labelled for it.
    let mut payload = verified[0].payload.clone();
    let shift = RISTRETTO_BASEPOINT_POINT * Scalar::from(95_000_000u64);
    let p = |b: &[u8]| CompressedRistretto::from_slice(b).unwrap().decompress().unwrap();
    let e = &mut payload.entries[0];
    e.payouts[0].commitment =
        ByteBuf::from((p(&e.payouts[0].commitment) - shift).compress().to_bytes().to_vec());
    e.payouts[1].commitment =
        ByteBuf::from((p(&e.payouts[1].commitment) + shift).compress().to_bytes().to_vec());
    payload.entries_root = ByteBuf::from(statement::merkle_root(&statement::leaves(&payload)).to_vec());
    let negative = Envelope::seal(statement::CONTEXT_STATEMENT, escx::cbor::encode(&payload), &key).to_cbor();
    write("negative-payout-statement.cbor", &negative);
    let negative_hash = statement::verify(&negative, key.public_key()).unwrap().hash;
    let mut relabelled = good.clone();
    relabelled.statement = ByteBuf::from(negative_hash.to_vec());
    write("negative-payout.proofs", &relabelled.to_cbor());
    statement_cases.push(json!({ "statement": "negative-payout-statement.cbor", "proofs": "negative-payout.proofs", "expect": "proof-invalid", "note": "the statement itself verifies (conservation holds)" }));

    // Revenue proofs for acme, November.
    let claim = RevenueClaim {
        operator: key.id(),
        party: "acme",
        period: escx_settlement::payout::Period::of(NOV),
        currency: "USD",
    };
    let total = proofs::prove_total(&verified, &acme, &claim).unwrap();
    write("revenue.proof", &total.to_cbor());
    let threshold = proofs::prove_threshold(&verified, &acme, &claim, 100_000_000).unwrap();
    write("threshold.proof", &threshold.to_cbor());
    let mut lower = total.clone();
    lower.amount -= 9_000_000;
    write("revenue-refund-left-out.proof", &lower.to_cbor());
    let mut raised = threshold.clone();
    raised.amount = 130_000_000;
    write("threshold-raised.proof", &raised.to_cbor());
    let mut other = total.clone();
    other.party = "platform".into();
    write("revenue-other-party.proof", &other.to_cbor());
    let mut byte = total.clone();
    byte.proof[40] ^= 1;
    write("revenue-flipped.proof", &byte.to_cbor());
    let mut truncated = total.clone();
    truncated.proof.truncate(63);
    write("revenue-truncated.proof", &truncated.to_cbor());
    let mut wide = total.clone();
    // ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
    let ell: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    wide.proof[32..].copy_from_slice(&ell);
    write("revenue-s-not-canonical.proof", &wide.to_cbor());
    let all = ["statements/statement-1.cbor", "statements/statement-2.cbor", "statements/statement-3.cbor"];
    let revenue_cases = json!([
        { "proof": "revenue.proof", "statements": all, "expect": "ok", "total_micros": 120_690_000 },
        { "proof": "threshold.proof", "statements": all, "expect": "ok", "at_least_micros": 100_000_000 },
        { "proof": "revenue-refund-left-out.proof", "statements": all, "expect": "proof-invalid" },
        { "proof": "threshold-raised.proof", "statements": all, "expect": "proof-invalid" },
        { "proof": "revenue-other-party.proof", "statements": all, "expect": "proof-invalid" },
        { "proof": "revenue-flipped.proof", "statements": all, "expect": "proof-invalid" },
        { "proof": "revenue.proof", "statements": [all[0], all[2]], "expect": "statement-chain", "note": "statement 2 (the refund) withheld from the verifier: the statements given do not chain (proofs.md §3.5 step 2)" },
        { "proof": "revenue-truncated.proof", "statements": all, "expect": "proof-invalid", "note": "the total proof's 64 bytes cut to 63 (the file decodes; its proof bytes do not)" },
        { "proof": "revenue-s-not-canonical.proof", "statements": all, "expect": "proof-invalid", "note": "s replaced by ℓ (not a canonical scalar)" },
        { "proof": "revenue.proof", "statements": [all[0], all[1]], "expect": "proof-period-open", "note": "statement 3, the first after November, withheld: the month is not known to be complete" },
    ]);
    assert_eq!(total.amount, 120_690_000);
    let expected = json!({
        "spec": "spec/proofs.md §2 (statement range proofs), §3 (revenue total and threshold)",
        "operator": "operator.pub",
        "statement_proofs": statement_cases,
        "revenue": revenue_cases,
    });
    write("expected.json", serde_json::to_string_pretty(&expected).unwrap().as_bytes());
    println!("wrote {}", out.display());
}
