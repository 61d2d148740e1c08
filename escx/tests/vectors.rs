//! Every known-answer vector in test-vectors/escx/ gives its expected result.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

#[path = "common/craft.rs"]
mod craft;

use escx::Fault as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use escx::container::PackageReader;
use escx::keyfile;
use escx::policy::TrustPolicy;
use escx::verify::{self, VerifyOptions};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/escx")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(vectors_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn policy(expected: &Value, vector: &Value) -> TrustPolicy {
    let keys = vector["trusted_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| {
            let file = expected["keys"][name.as_str().unwrap()]["file"].as_str().unwrap();
            keyfile::read_public_key(&vectors_dir().join(file)).unwrap()
        })
        .collect();
    TrustPolicy::from_keys(keys)
}

fn verify(expected: &Value, vector: &Value) -> Result<verify::VerifyReport, escx::Error> {
    let bytes = std::fs::read(vectors_dir().join(vector["file"].as_str().unwrap())).unwrap();
    let mut reader = PackageReader::open(Cursor::new(bytes), vector["file"].as_str().unwrap())?;
    let now = expected["verification_time"].as_u64().unwrap();
    let content_key = vector["content_key"]
        .as_str()
        .map(|text| escx::content::ContentKey::from_bytes(&hex::decode(text).unwrap()).unwrap());
    // `select`, when listed, is a selection (§8 step 8); otherwise every section.
    let selection = match vector["select"].as_array() {
        Some(names) => verify::SectionSelection::Only(
            names
                .iter()
                .map(|n| escx::container::SectionType::from_name(n.as_str().unwrap()).unwrap())
                .collect(),
        ),
        None => verify::SectionSelection::All,
    };
    verify::verify(
        &mut reader,
        &policy(expected, vector),
        &VerifyOptions {
            now: Some(escx::UnixSeconds(now)),
            content_key: content_key.as_ref(),
            sections: &selection,
            ..VerifyOptions::default()
        },
    )
}

#[test]
fn key_files_match_their_listed_ids() {
    let expected = expected();
    for (name, key) in expected["keys"].as_object().unwrap() {
        let public = keyfile::read_public_key(&vectors_dir().join(key["file"].as_str().unwrap())).unwrap();
        assert_eq!(public.id().to_string(), key["key_id"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn valid_vectors_verify_with_the_expected_root_table_and_signers() {
    let expected = expected();
    let valid = expected["valid"].as_array().unwrap();
    assert!(valid.len() >= 3);
    for vector in valid {
        let file = vector["file"].as_str().unwrap();
        let report = verify(&expected, vector).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(report.sections.iter().all(|s| s.content_checked), "{file}: every section's content checked");
        assert_eq!(hex::encode(report.root), vector["root"].as_str().unwrap(), "{file}");
        assert_eq!(report.package.name, vector["package"]["name"].as_str().unwrap());
        let signers: Vec<String> = report.signers.iter().map(|s| s.key_id.to_string()).collect();
        let expected_signers: Vec<&str> =
            vector["signer_key_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(signers, expected_signers, "{file}");

        // Recompute hashes and root from raw bytes, independently of the reader.
        let bytes = std::fs::read(vectors_dir().join(file)).unwrap();
        if let Some(binding) = vector["content_binding"].as_str() {
            // §15.2, recomputed by hand from the listed name, version and payload hash.
            let name = vector["package"]["name"].as_str().unwrap();
            let version = vector["package"]["version"].as_str().unwrap();
            let payload =
                vector["sections"].as_array().unwrap().iter().find(|s| s["type"] == "payload").unwrap();
            let mut material = Vec::new();
            for text in [name, version] {
                material.extend_from_slice(&(text.len() as u16).to_be_bytes());
                material.extend_from_slice(text.as_bytes());
            }
            material.extend_from_slice(&hex::decode(payload["blake3"].as_str().unwrap()).unwrap());
            assert_eq!(
                hex::encode(blake3::derive_key("escx v1 content key binding", &material)),
                binding,
                "{file}"
            );
        }
        let sections = vector["sections"].as_array().unwrap();
        assert_eq!(report.sections.len(), sections.len(), "{file}");
        for (checked, want) in report.sections.iter().zip(sections) {
            let offset = want["offset"].as_u64().unwrap() as usize;
            let stored = want["stored_length"].as_u64().unwrap() as usize;
            assert_eq!(checked.entry.kind.name(), want["type"].as_str().unwrap());
            assert_eq!(checked.entry.plain_length, want["plain_length"].as_u64().unwrap());
            assert_eq!(
                blake3::hash(&bytes[offset..offset + stored]).to_hex().as_str(),
                want["blake3"].as_str().unwrap()
            );
        }
        for (checked, want) in report.sections.iter().zip(sections) {
            let summary = checked.archive.map(|a| {
                serde_json::json!({
                    "files": a.files, "directories": a.directories, "symlinks": a.symlinks,
                    "file_bytes": a.file_bytes,
                })
            });
            assert_eq!(summary.unwrap_or(Value::Null), want["archive"], "{file}: archive counts");
        }
        assert_eq!(extracted_tree(&expected, vector), vector["tree"], "{file}: extracted tree");
        let table_end = 24 + 64 * sections.len();
        assert_eq!(
            hex::encode(blake3::derive_key("escx v1 package root", &bytes[..table_end])),
            vector["root"]
        );
    }
}

#[test]
fn invalid_vectors_fail_with_their_expected_error() {
    let expected = expected();
    let invalid = expected["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 12);
    for vector in invalid {
        let file = vector["file"].as_str().unwrap();
        let want = vector["error"].as_str().unwrap();
        match verify(&expected, vector) {
            Ok(_) => panic!("{file} verified, expected {want}"),
            Err(error) => assert_eq!(error.code(), want, "{file}: {error}"),
        }
    }
}

/// What a full extraction writes, in the shape of the vectors' `tree` (sorted by path).
fn extracted_tree(expected: &Value, vector: &Value) -> Value {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("out");
    let package = vectors_dir().join(vector["file"].as_str().unwrap());
    let content_key = vector["content_key"]
        .as_str()
        .map(|text| escx::content::ContentKey::from_bytes(&hex::decode(text).unwrap()).unwrap());
    let options = VerifyOptions {
        now: Some(escx::UnixSeconds(expected["verification_time"].as_u64().unwrap())),
        content_key: content_key.as_ref(),
        ..VerifyOptions::default()
    };
    escx::extract::extract_file(&package, &root, &policy(expected, vector), &options).unwrap();
    Value::Array(craft::tree_of(&root))
}
