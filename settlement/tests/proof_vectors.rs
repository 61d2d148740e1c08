//! Every vector in test-vectors/proofs/ gets its expected verdict (proofs.md).

use escx::Fault as _;
use std::path::{Path, PathBuf};

use escx_settlement::proofs::{self, Claim, RevenueProof, StatementProofs};
use escx_settlement::statement;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/proofs")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn verdict<T>(result: Result<T, proofs::ProofError>) -> String {
    result.map_or_else(|e| e.code().to_owned(), |_| "ok".to_owned())
}

#[test]
fn statement_and_revenue_proofs_get_their_verdicts() {
    let expected: Value = serde_json::from_slice(&read("expected.json")).unwrap();
    let operator =
        escx::keyfile::read_public_key(&dir().join(expected["operator"].as_str().unwrap())).unwrap();
    let cases = expected["statement_proofs"].as_array().unwrap();
    assert!(cases.len() >= 7);
    for case in cases {
        // Every statement, the forged one included, verifies on its own.
        let statement = statement::verify(&read(case["statement"].as_str().unwrap()), &operator).unwrap();
        let got = verdict(
            StatementProofs::from_cbor(&read(case["proofs"].as_str().unwrap()))
                .and_then(|p| proofs::verify_statement(&p, &statement, &operator.id())),
        );
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
    }
    for case in expected["revenue"].as_array().unwrap() {
        let mut statements: Vec<_> = case["statements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| statement::verify(&read(f.as_str().unwrap()), &operator).unwrap())
            .collect();
        // proofs.md §3.5 step 2: the statements given must chain (their own code).
        if let Err(chain) = statement::verify_chain(&mut statements) {
            assert_eq!(chain.code(), case["expect"].as_str().unwrap(), "{case}");
            continue;
        }
        let result = RevenueProof::from_cbor(&read(case["proof"].as_str().unwrap()))
            .and_then(|p| proofs::verify_revenue(&p, &statements, &operator.id()));
        if let Ok(proven) = &result {
            match proven.claim {
                Claim::Total(t) => assert_eq!(Some(t), case["total_micros"].as_i64(), "{case}"),
                Claim::AtLeast(x) => assert_eq!(Some(x), case["at_least_micros"].as_u64(), "{case}"),
            }
        }
        assert_eq!(verdict(result), case["expect"].as_str().unwrap(), "{case}");
    }
}
