//! Every vector in test-vectors/registry/ gives its expected result.

use escx::Fault as _;
use std::path::{Path, PathBuf};

use escx::keyfile;
use escx::policy::TrustPolicy;
use escx_manifest::client::{self, StateDir};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/registry")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

/// Every key in `known_keys` is listed (so its signatures are checked); the
/// `registry_keys` among them form the [registry] rule.
fn policy(expected: &Value, name: &str) -> TrustPolicy {
    let spec = &expected["policies"][name];
    let files = |field: &str| -> Vec<String> {
        spec[field].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect()
    };
    let mut text = String::from("version = 1\n");
    for (i, file) in files("known_keys").iter().enumerate() {
        let key = keyfile::read_public_key(&dir().join(file)).unwrap();
        let line = keyfile::public_key_text(&key).lines().last().unwrap().to_owned();
        text += &format!("[[key]]\nname = \"k{i}\"\npublic_key = \"{line}\"\n");
    }
    let known = files("known_keys");
    let slots: Vec<String> = files("registry_keys")
        .iter()
        .map(|f| format!("\"k{}\"", known.iter().position(|k| k == f).unwrap()))
        .collect();
    text += &format!("[registry]\nkeys = [{}]\nthreshold = {}\n", slots.join(", "), spec["threshold"]);
    text += "[[scope]]\npackages = \"**\"\nkeys = [\"k0\"]\n";
    TrustPolicy::parse(&text, Path::new("."), Path::new("vector-policy.toml")).unwrap()
}

fn load(
    expected: &Value,
    file: &str,
    policy_name: &str,
    prior: bool,
) -> Result<client::TrustedIndex, escx_manifest::Error> {
    let now = expected["verification_time"].as_u64().unwrap();
    let policy = policy(expected, policy_name);
    let work = tempfile::tempdir().unwrap();
    let state = StateDir::new(work.path().join("state"));
    if prior {
        std::fs::copy(dir().join("index.signed"), work.path().join("index.signed")).unwrap();
        client::load_index(work.path(), &policy, &state, escx::UnixSeconds(now)).unwrap();
    }
    std::fs::copy(dir().join(file), work.path().join("index.signed")).unwrap();
    client::load_index(work.path(), &policy, &state, escx::UnixSeconds(now))
}

#[test]
fn the_valid_index_loads_with_its_packages() {
    let expected = expected();
    let valid = &expected["valid"];
    let trusted =
        load(&expected, valid["file"].as_str().unwrap(), valid["policy"].as_str().unwrap(), false).unwrap();
    assert_eq!(trusted.index.version, valid["index_version"].as_u64().unwrap());
    for (name, versions) in valid["packages"].as_object().unwrap() {
        let listed: Vec<&str> =
            trusted.index.package(name).unwrap().versions.iter().map(|v| v.version.as_str()).collect();
        let want: Vec<&str> = versions.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(listed, want, "{name}");
    }
}

#[test]
fn every_invalid_index_fails_with_its_expected_error() {
    let expected = expected();
    let invalid = expected["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 10);
    for vector in invalid {
        let file = vector["file"].as_str().unwrap();
        let prior = !vector["prior_state"].is_null();
        match load(&expected, file, vector["policy"].as_str().unwrap(), prior) {
            Ok(_) => panic!("{file} was accepted, expected {}", vector["error"]),
            Err(e) => assert_eq!(e.code(), vector["error"].as_str().unwrap(), "{file}: {e}"),
        }
    }
}
