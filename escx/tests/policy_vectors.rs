//! Every vector in test-vectors/trust-policy/ gets its expected verdict (trust-policy.md).

use std::path::{Path, PathBuf};

use escx::Fault as _;
use escx::policy::TrustPolicy;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/trust-policy")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap()
}

fn key_id(expected: &Value, name: &str) -> escx::sig::KeyId {
    let file = expected["keys"][name]["file"].as_str().unwrap();
    let key = escx::keyfile::read_public_key(&dir().join(file)).unwrap();
    assert_eq!(key.id().to_string(), expected["keys"][name]["key_id"].as_str().unwrap(), "{name}");
    key.id()
}

#[test]
fn evaluations_get_their_verdicts() {
    let expected = expected();
    let cases = expected["evaluations"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let policy = TrustPolicy::load(&dir().join(case["policy"].as_str().unwrap())).unwrap();
        let signers: Vec<_> = case["signers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| key_id(&expected, n.as_str().unwrap()))
            .collect();
        let now = escx::UnixSeconds(case["time"].as_u64().unwrap());
        let result = match case["package"].as_str() {
            Some(package) => policy.evaluate(package, &signers, now),
            None => policy.evaluate_registry(&signers, now),
        };
        let got = result.map_or_else(|e| e.code().to_owned(), |_| "ok".to_owned());
        assert_eq!(got, case["expect"].as_str().unwrap(), "{}", case["description"]);
    }
}

#[test]
fn invalid_policies_do_not_load() {
    let expected = expected();
    for case in expected["invalid_policies"].as_array().unwrap() {
        let err = TrustPolicy::load(&dir().join(case["policy"].as_str().unwrap())).unwrap_err();
        assert_eq!(err.code(), case["expect"].as_str().unwrap(), "{}: {err}", case["description"]);
    }
}
