//! Every vector in test-vectors/escx/objects/ gives its expected verdict: key files, KEM key
//! pairs, rotation statements (signed envelopes) and sealed boxes, and the extraction of an
//! encrypted package without its key.

use escx::Fault as _;
use std::path::{Path, PathBuf};

use escx::kem::{self, KemPublicKey, KemSecretKey};
use escx::keyfile;
use escx::policy::TrustPolicy;
use escx::rotation::RotationStatement;
use escx::verify::VerifyOptions;
use serde_json::Value;
use zeroize::Zeroizing;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/escx")
}

fn objects() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("objects/objects.json")).unwrap()).unwrap()
}

fn file(name: &str) -> PathBuf {
    dir().join("objects").join(name)
}

fn verdict<T>(result: Result<T, escx::Error>) -> String {
    result.map_or_else(|e| e.code().to_owned(), |_| "ok".to_owned())
}

fn cases<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    let list = value.as_array().unwrap();
    assert!(!list.is_empty(), "no {what} vectors");
    list
}

#[test]
fn key_files() {
    for case in cases(&objects()["key_files"], "key file") {
        let path = file(case["file"].as_str().unwrap());
        let got = match case["kind"].as_str().unwrap() {
            "public" => verdict(keyfile::read_public_key(&path)),
            _ => verdict(keyfile::read_secret_key(&path, || None)),
        };
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
    }
}

#[test]
fn kem_key_pairs() {
    for case in cases(&objects()["kem_pairs"], "KEM pair") {
        let public = std::fs::read(file(case["public"].as_str().unwrap())).unwrap();
        let secret = Zeroizing::new(std::fs::read(file(case["secret"].as_str().unwrap())).unwrap());
        let got =
            verdict(KemPublicKey::from_bytes(&public).and_then(|p| KemSecretKey::from_parts(secret, p)));
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
    }
}

#[test]
fn rotation_envelopes() {
    let objects = objects();
    let signer = keyfile::read_public_key(&file(objects["rotations"]["signer"].as_str().unwrap())).unwrap();
    for case in cases(&objects["rotations"]["cases"], "rotation") {
        let text = std::fs::read_to_string(file(case["file"].as_str().unwrap())).unwrap();
        let got = verdict(
            RotationStatement::parse(&text)
                .map_err(|reason| escx::Error::Envelope { reason })
                .and_then(|r| r.verify(&signer)),
        );
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
    }
}

#[test]
fn sealed_boxes() {
    let objects = objects();
    let boxes = &objects["sealed_boxes"];
    let public =
        KemPublicKey::from_bytes(&std::fs::read(file(boxes["recipient_public"].as_str().unwrap())).unwrap())
            .unwrap();
    let secret = Zeroizing::new(std::fs::read(file(boxes["recipient_secret"].as_str().unwrap())).unwrap());
    let recipient = KemSecretKey::from_parts(secret, public).unwrap();
    let purpose = boxes["purpose"].as_str().unwrap();
    let binding = hex::decode(boxes["binding"].as_str().unwrap()).unwrap();
    let plaintext = hex::decode(boxes["plaintext"].as_str().unwrap()).unwrap();
    for case in cases(&boxes["cases"], "sealed box") {
        let sealed = std::fs::read(file(case["file"].as_str().unwrap())).unwrap();
        let got = match kem::open_bound(&recipient, purpose, &binding, &sealed) {
            Ok(opened) => {
                assert_eq!(&opened[..], &plaintext[..], "{case}");
                "ok".to_owned()
            }
            Err(e) => e.code().to_owned(),
        };
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
    }
}

#[test]
fn an_encrypted_payload_is_not_extracted_without_its_key() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap();
    for case in cases(&objects()["extract"], "extraction") {
        let keys = case["trusted_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| {
                let key = expected["keys"][name.as_str().unwrap()]["file"].as_str().unwrap();
                keyfile::read_public_key(&dir().join(key)).unwrap()
            })
            .collect();
        let target = tempfile::tempdir().unwrap();
        let out = target.path().join("out");
        let got = verdict(escx::extract::extract_file(
            &dir().join(case["package"].as_str().unwrap()),
            &out,
            &TrustPolicy::from_keys(keys),
            &VerifyOptions {
                now: expected["verification_time"].as_u64().map(escx::UnixSeconds),
                ..VerifyOptions::default()
            },
        ));
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
        assert!(!out.exists(), "nothing is written");
    }
}
