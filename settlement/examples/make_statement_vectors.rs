//! Writes `test-vectors/settlement/statements/`: a chain of three statements signed by a
//! fresh operator key, a party's openings for each, and statements, chains and openings
//! that break one rule of settlement.md §4.3 each, with the verdict a verifier must reach.
//!
//!     cargo run -p escx-settlement --example make_statement_vectors -- test-vectors/settlement/statements
//!
//! The expected codes are written down below, and the generator refuses to write a vector
//! whose verdict disagrees.
// Fixtures index and count the bytes of files they built themselves.
#![allow(clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};

use curve25519_dalek::scalar::Scalar;
use escx::Fault as _;
use escx::envelope::Envelope;
use escx::sig::{PublicKey, SecretKey};
use escx_manifest::Micros;
use escx_settlement::statement::{
    self, CONTEXT_STATEMENT, EntryInput, Opening, OpeningsFile, StatementPayload, Verified,
};
use escx_settlement::store::RecordKind;
use serde_bytes::ByteBuf;
use serde_json::{Value, json};

/// 2026-11-15T00:00:00Z.
const T0: escx::UnixSeconds = escx::UnixSeconds(1_794_700_800);
const LEDGER: [u8; 16] = [0x5e; 16];

fn entry(tag: &str, kind: RecordKind, gross: u64, payouts: &[(&str, u64)]) -> EntryInput {
    EntryInput {
        settlement: blake3::derive_key("escx v1 settlement id", tag.as_bytes()),
        kind,
        currency: "USD".into(),
        gross: Micros(gross),
        payouts: payouts.iter().map(|(p, a)| ((*p).to_owned(), Micros(*a))).collect(),
        rules: Vec::new(),
    }
}

/// The payload of a statement the generator signed itself.
fn payload_of(bytes: &[u8], key: &PublicKey) -> StatementPayload {
    statement::verify(bytes, key).unwrap().payload
}

/// Signs `payload` as the operator, exactly as `statement::build` does.
fn sign(payload: &StatementPayload, key: &SecretKey) -> Vec<u8> {
    Envelope::seal(CONTEXT_STATEMENT, escx::cbor::encode(payload), key).to_cbor()
}

/// Recomputes `entries_root` after an edit, so only the rule under test is broken.
fn reroot(payload: &mut StatementPayload) {
    payload.entries_root = ByteBuf::from(statement::merkle_root(&statement::leaves(payload)).to_vec());
}

fn verdict_of(result: Result<impl Sized, statement::StatementError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e.code().into(),
    }
}

/// The verdict for a list of statement files: each verified (first failure), then the chain.
fn chain_verdict(dir: &Path, files: &[&str], key: &PublicKey) -> String {
    let mut verified: Vec<Verified> = Vec::new();
    for file in files {
        match statement::verify(&std::fs::read(dir.join(file)).unwrap(), key) {
            Ok(v) => verified.push(v),
            Err(e) => return e.code().into(),
        }
    }
    verdict_of(statement::verify_chain(&mut verified))
}

fn openings_verdict(dir: &Path, statement_file: &str, openings: &str, key: &PublicKey) -> String {
    let verified = statement::verify(&std::fs::read(dir.join(statement_file)).unwrap(), key).unwrap();
    match OpeningsFile::from_cbor(&std::fs::read(dir.join(openings)).unwrap()) {
        Ok(file) => verdict_of(statement::check_openings(&verified, &file)),
        Err(e) => e.code().into(),
    }
}

fn copy(opening: &Opening) -> Opening {
    Opening {
        entry: opening.entry,
        party: opening.party.clone(),
        amount: opening.amount,
        blinding: opening.blinding.clone(),
    }
}

fn main() {
    let out =
        PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "test-vectors/settlement/statements".into()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).unwrap();
    let key = SecretKey::generate();
    let public = key.public_key();
    escx::keyfile::write_public_key(&out.join("operator.pub"), public, true).unwrap();
    let stranger = SecretKey::generate();

    let batches = [
        vec![
            entry("s1", RecordKind::Sale, 100_000_000, &[("platform", 10_000_000), ("acme", 90_000_000)]),
            entry("s2", RecordKind::Sale, 0, &[]),
            entry("s3", RecordKind::Usage, 49_000_000, &[("platform", 4_900_000), ("acme", 44_100_000)]),
        ],
        vec![entry("r1", RecordKind::Refund, 10_000_000, &[("platform", 1_000_000), ("acme", 9_000_000)])],
        vec![entry("s4", RecordKind::Sale, 20_000_000, &[("platform", 2_000_000), ("acme", 18_000_000)])],
    ];
    let mut previous = [0u8; 32];
    let mut files = Vec::new();
    let mut acme_openings = Vec::new();
    for (i, inputs) in batches.iter().enumerate() {
        let seq = i as u64 + 1;
        let built = statement::build(&LEDGER, seq, &previous, T0 + 3600 * (seq - 1), inputs, &key).unwrap();
        previous = built.hash;
        let name = format!("statement-{seq}.cbor");
        write(&name, &built.bytes);
        files.push((name, built.bytes.clone(), hex::encode(built.hash)));
        let mut openings: Vec<Opening> = built
            .party_openings("acme")
            .into_iter()
            .filter(|o| o.party.is_some() || !inputs[o.entry as usize].payouts.is_empty())
            .collect();
        openings.sort_by_key(|o| (o.entry, o.party.is_some()));
        let file = OpeningsFile {
            v: 1,
            ledger: ByteBuf::from(LEDGER.to_vec()),
            seq,
            party: "acme".into(),
            openings,
        };
        write(&format!("acme-{seq}.openings"), &file.to_cbor());
        acme_openings.push(file);
    }
    let first = &files[0].1;
    let second = &files[1].1;

    // Single statements that break one rule each (every one validly signed unless said).
    let mut statements: Vec<Value> = Vec::new();
    let mut add_statement = |name: &str, bytes: Vec<u8>, expect: &str, description: &str| {
        write(name, &bytes);
        let got = verdict_of(statement::verify(&bytes, public));
        assert_eq!(got, expect, "{name}");
        statements.push(json!({ "statement": name, "expect": expect, "description": description }));
    };
    for (name, bytes, _) in &files {
        add_statement(name, bytes.clone(), "ok", "part of the valid chain");
    }
    let edited = |edit: &dyn Fn(&mut StatementPayload)| {
        let mut payload = payload_of(first, public);
        edit(&mut payload);
        sign(&payload, &key)
    };
    let mut flipped = first.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 1;
    add_statement(
        "bad-signature.cbor",
        flipped,
        "statement-invalid",
        "one bit of statement 1's signature flipped",
    );
    add_statement(
        "other-operator.cbor",
        sign(&payload_of(first, public), &stranger),
        "statement-invalid",
        "statement 1's payload signed by another key",
    );
    add_statement(
        "version-3.cbor",
        edited(&|p| p.v = 3),
        "statement-invalid",
        "v = 3 (readers take 1 and 2)",
    );
    add_statement(
        "seq-0.cbor",
        edited(&|p| p.seq = 0),
        "statement-invalid",
        "seq 0 (sequence numbers start at 1)",
    );
    add_statement(
        "first-with-previous.cbor",
        edited(&|p| p.previous = ByteBuf::from(vec![1; 32])),
        "statement-invalid",
        "seq 1 with a non-zero previous hash",
    );
    add_statement(
        "root-flipped.cbor",
        edited(&|p| p.entries_root[0] ^= 1),
        "statement-invalid",
        "entries_root does not match the entries",
    );
    add_statement(
        "party-twice.cbor",
        edited(&|p| {
            let copy = p.entries[0].payouts[1].clone();
            p.entries[0].payouts.push(copy);
            reroot(p);
        }),
        "statement-invalid",
        "entry 0 pays acme twice (root recomputed)",
    );
    add_statement(
        "unconserved.cbor",
        edited(&|p| {
            p.entries[0].payouts.swap(0, 1);
            let gross = p.entries[2].gross.clone();
            p.entries[0].payouts[0].commitment = gross;
            reroot(p);
        }),
        "statement-unconserved",
        "entry 0's first payout commitment replaced by entry 2's gross commitment: payouts no longer sum to the gross (root recomputed)",
    );
    add_statement(
        "unconserved-and-party-twice.cbor",
        edited(&|p| {
            p.entries[0].payouts[0].commitment = p.entries[2].gross.clone();
            let copy = p.entries[2].payouts[1].clone();
            p.entries[2].payouts.push(copy);
            reroot(p);
        }),
        "statement-unconserved",
        "entry 0 unconserved and entry 2 pays acme twice: the first failing entry decides",
    );
    add_statement(
        "index-wrong.cbor",
        edited(&|p| {
            p.parties.insert("acme".into(), vec![0]);
        }),
        "statement-invalid",
        "the party index omits entry 2 for acme",
    );
    add_statement(
        "trailing-byte.cbor",
        {
            let mut bytes = escx::cbor::encode(&payload_of(first, public));
            bytes.push(0);
            Envelope::seal(CONTEXT_STATEMENT, bytes, &key).to_cbor()
        },
        "statement-invalid",
        "a validly signed payload with a byte after the CBOR map",
    );

    // Chains.
    let other_ledger = {
        let mut payload = payload_of(second, public);
        payload.ledger = ByteBuf::from(vec![0x77; 16]);
        sign(&payload, &key)
    };
    write("statement-2-other-ledger.cbor", &other_ledger);
    let wrong_previous = {
        let mut payload = payload_of(second, public);
        payload.previous[0] ^= 1;
        sign(&payload, &key)
    };
    write("statement-2-wrong-previous.cbor", &wrong_previous);
    let chains: Vec<Value> = [
        (vec!["statement-1.cbor", "statement-2.cbor", "statement-3.cbor"], "ok", "the three statements"),
        (vec!["statement-3.cbor", "statement-1.cbor", "statement-2.cbor"], "ok", "given in any order"),
        (vec!["statement-1.cbor", "statement-3.cbor"], "statement-chain", "a gap: statement 2 missing"),
        (
            vec!["statement-1.cbor", "statement-2.cbor", "statement-2.cbor"],
            "statement-chain",
            "statement 2 given twice (a chain error, never a negative gap)",
        ),
        (
            vec!["statement-1.cbor", "statement-2-other-ledger.cbor"],
            "statement-chain",
            "statement 2 of another ledger",
        ),
        (
            vec!["statement-1.cbor", "statement-2-wrong-previous.cbor"],
            "statement-chain",
            "statement 2 names another previous hash",
        ),
    ]
    .into_iter()
    .map(|(list, expect, description)| {
        assert_eq!(chain_verdict(&out, &list, public), expect, "{list:?}");
        json!({ "statements": list, "expect": expect, "description": description })
    })
    .collect();

    // Openings: acme's for statement 1 (entry 0 and entry 2, each payout and gross).
    let good = &acme_openings[0];
    let variant = |edit: &dyn Fn(&mut OpeningsFile)| {
        let mut file = OpeningsFile {
            v: good.v,
            ledger: good.ledger.clone(),
            seq: good.seq,
            party: good.party.clone(),
            openings: good.openings.iter().map(copy).collect(),
        };
        edit(&mut file);
        file.to_cbor()
    };
    let ell_plus = |blinding: &[u8]| {
        // blinding + ℓ as a 256-bit little-endian integer: the same scalar, not canonical.
        let ell = Scalar::ZERO - Scalar::ONE; // ℓ − 1
        let mut sum = [0u8; 32];
        let mut carry = 1u16; // adds the missing 1 of ℓ
        for i in 0..32 {
            let total = u16::from(blinding[i]) + u16::from(ell.as_bytes()[i]) + carry;
            sum[i] = total as u8;
            carry = total >> 8;
        }
        sum
    };
    let opening_cases: Vec<(&str, &str, Vec<u8>, &str, &str)> = vec![
        (
            "acme-1.openings",
            "statement-1.cbor",
            good.to_cbor(),
            "ok",
            "acme's payouts and grosses for entries 0 and 2",
        ),
        (
            "acme-2.openings",
            "statement-2.cbor",
            acme_openings[1].to_cbor(),
            "ok",
            "the refund entry of statement 2",
        ),
        ("acme-3.openings", "statement-3.cbor", acme_openings[2].to_cbor(), "ok", "statement 3"),
        (
            "acme-1-wrong-amount.openings",
            "statement-1.cbor",
            variant(&|f| f.openings[1].amount = Micros(f.openings[1].amount.0 + 1)),
            "opening-invalid",
            "acme's entry-0 amount one micro-unit higher",
        ),
        (
            "acme-1-gross-missing.openings",
            "statement-1.cbor",
            variant(&|f| {
                f.openings.remove(0);
            }),
            "opening-invalid",
            "entry 0's gross opening left out",
        ),
        (
            "acme-1-extra.openings",
            "statement-1.cbor",
            variant(&|f| {
                let mut extra = copy(&f.openings[1]);
                extra.party = Some("platform".into());
                f.openings.push(extra);
            }),
            "opening-invalid",
            "an opening for the platform's payout added (nothing but the party's own)",
        ),
        (
            "acme-1-repeated.openings",
            "statement-1.cbor",
            variant(&|f| {
                let again = copy(&f.openings[1]);
                f.openings.push(again);
            }),
            "opening-invalid",
            "acme's entry-0 opening twice",
        ),
        (
            "acme-1-blinding-not-canonical.openings",
            "statement-1.cbor",
            variant(&|f| {
                let unreduced = ell_plus(&f.openings[1].blinding);
                f.openings[1].blinding = ByteBuf::from(unreduced.to_vec());
            }),
            "opening-invalid",
            "a blinding written as blinding + ℓ: the same scalar, not its canonical encoding",
        ),
        (
            "acme-2-for-statement-1.openings",
            "statement-1.cbor",
            acme_openings[1].to_cbor(),
            "opening-invalid",
            "statement 2's openings against statement 1",
        ),
        (
            "acme-1-other-ledger.openings",
            "statement-1.cbor",
            variant(&|f| f.ledger = ByteBuf::from(vec![0x77; 16])),
            "opening-invalid",
            "another ledger's id",
        ),
        ("acme-1-version-2.openings", "statement-1.cbor", variant(&|f| f.v = 2), "opening-invalid", "v = 2"),
        (
            "acme-1-truncated.openings",
            "statement-1.cbor",
            {
                let bytes = good.to_cbor();
                bytes[..bytes.len() / 2].to_vec()
            },
            "opening-invalid",
            "the file cut in half",
        ),
    ];
    let openings: Vec<Value> = opening_cases
        .into_iter()
        .map(|(name, statement_file, bytes, expect, description)| {
            write(name, &bytes);
            assert_eq!(openings_verdict(&out, statement_file, name, public), expect, "{name}");
            let amounts = (expect == "ok").then(|| {
                let verified =
                    statement::verify(&std::fs::read(out.join(statement_file)).unwrap(), public).unwrap();
                let file = OpeningsFile::from_cbor(&bytes).unwrap();
                statement::check_openings(&verified, &file)
                    .unwrap()
                    .iter()
                    .map(|p| json!({ "entry": p.entry, "amount_micros": p.amount.0, "gross_micros": p.gross.0 }))
                    .collect::<Vec<_>>()
            });
            json!({
                "openings": name, "statement": statement_file, "expect": expect,
                "description": description, "payouts": amounts,
            })
        })
        .collect();

    let expected = json!({
        "spec": "spec/settlement.md §4 (statements, chains, openings)",
        "operator": "operator.pub",
        "hashes": files.iter().map(|(name, _, hash)| json!({ "statement": name, "hash": hash })).collect::<Vec<_>>(),
        "statements": statements,
        "chains": chains,
        "openings": openings,
    });
    std::fs::write(out.join("expected.json"), serde_json::to_string_pretty(&expected).unwrap() + "\n")
        .unwrap();
    println!("wrote {}", out.display());
}
