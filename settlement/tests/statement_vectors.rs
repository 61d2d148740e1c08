//! Every vector in test-vectors/settlement/statements/ gets its expected verdict
//! (settlement.md §4.3): single statements, chains and a party's openings.

use std::path::{Path, PathBuf};

use escx::Fault as _;
use escx_settlement::statement::{self, OpeningsFile};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/settlement/statements")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn expected() -> (Value, escx::sig::PublicKey) {
    let expected: Value = serde_json::from_slice(&read("expected.json")).unwrap();
    let key = escx::keyfile::read_public_key(&dir().join(expected["operator"].as_str().unwrap())).unwrap();
    (expected, key)
}

fn code<T>(result: Result<T, statement::StatementError>) -> String {
    result.map_or_else(|e| e.code().to_owned(), |_| "ok".to_owned())
}

#[test]
fn statements_get_their_verdicts_and_hashes() {
    let (expected, key) = expected();
    let cases = expected["statements"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let name = case["statement"].as_str().unwrap();
        assert_eq!(
            code(statement::verify(&read(name), &key)),
            case["expect"],
            "{name}: {}",
            case["description"]
        );
    }
    for listed in expected["hashes"].as_array().unwrap() {
        let bytes = read(listed["statement"].as_str().unwrap());
        assert_eq!(hex::encode(statement::statement_hash(&bytes)), listed["hash"].as_str().unwrap());
    }
}

#[test]
fn chains_get_their_verdicts() {
    let (expected, key) = expected();
    for case in expected["chains"].as_array().unwrap() {
        let mut verified = Vec::new();
        for name in case["statements"].as_array().unwrap() {
            verified.push(statement::verify(&read(name.as_str().unwrap()), &key).unwrap());
        }
        assert_eq!(code(statement::verify_chain(&mut verified)), case["expect"], "{}", case["description"]);
    }
}

#[test]
fn openings_get_their_verdicts_and_amounts() {
    let (expected, key) = expected();
    for case in expected["openings"].as_array().unwrap() {
        let name = case["openings"].as_str().unwrap();
        let verified = statement::verify(&read(case["statement"].as_str().unwrap()), &key).unwrap();
        let checked =
            OpeningsFile::from_cbor(&read(name)).and_then(|file| statement::check_openings(&verified, &file));
        match &checked {
            Ok(payouts) => {
                assert_eq!(case["expect"], "ok", "{name}");
                let got: Vec<Value> = payouts
                    .iter()
                    .map(|p| serde_json::json!({ "entry": p.entry, "amount_micros": p.amount.0, "gross_micros": p.gross.0 }))
                    .collect();
                assert_eq!(Value::Array(got), case["payouts"], "{name}");
            }
            Err(error) => assert_eq!(error.code(), case["expect"].as_str().unwrap(), "{name}: {error}"),
        }
    }
}
