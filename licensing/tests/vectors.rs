//! Every certificate, CRL and proof vector in test-vectors/licensing/certificates/ gets
//! its expected verdict (licensing.md §5.5–§5.6).

use escx::Fault as _;
use std::path::{Path, PathBuf};

use escx_licensing::messages::{BundleChain, IssuerBundle};
use escx_licensing::verify;
use escx_licensing::wallet::Wallet;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/licensing/certificates")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn expected() -> Value {
    serde_json::from_slice(&read("expected.json")).unwrap()
}

fn issuer(expected: &Value) -> IssuerBundle {
    let chain = BundleChain::parse(&read(expected["issuer"]["file"].as_str().unwrap())).unwrap();
    let bundle = chain.head().clone();
    assert_eq!(bundle.issuer_id().to_string(), expected["issuer"]["issuer_id"].as_str().unwrap());
    // licensing.md §3.1: the bundle hash, recomputed by hand.
    let hash = blake3::derive_key("escx v1 issuer bundle hash", &bundle.bytes);
    assert_eq!(hex::encode(hash), expected["issuer"]["bundle_hash"].as_str().unwrap());
    bundle
}

#[test]
fn bundle_chains_get_their_expected_verdicts_and_wallets_pin_the_first() {
    let expected = expected();
    for case in expected["chains"].as_array().unwrap() {
        let got = outcome(BundleChain::parse(&read(case["chain"].as_str().unwrap())));
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
        if let Some(hash) = case["head_hash"].as_str() {
            let chain = BundleChain::parse(&read(case["chain"].as_str().unwrap())).unwrap();
            assert_eq!(hex::encode(chain.head().hash), hash);
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let wallet = Wallet::open(tmp.path()).unwrap();
    let pinning = &expected["pinning"];
    for (file, want) in pinning["add"].as_array().unwrap().iter().zip(pinning["expect"].as_array().unwrap()) {
        let chain = BundleChain::parse(&read(file.as_str().unwrap())).unwrap();
        assert_eq!(outcome(wallet.add_issuer(&chain)), want.as_str().unwrap(), "{file}");
    }
}

fn outcome<T>(result: Result<T, escx_licensing::Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e.code().into(),
    }
}

#[test]
fn certificates_get_their_expected_verdicts() {
    let expected = expected();
    let issuer = issuer(&expected);
    let cases = expected["certificates"].as_array().unwrap();
    assert!(cases.len() >= 12);
    let mut codes = std::collections::BTreeSet::new();
    for case in cases {
        let crl = case["crl"].as_str().map(|name| verify::open_crl(&read(name), &issuer).unwrap());
        let version = case["version"].as_str().map(|v| semver::Version::parse(v).unwrap());
        let got = outcome(verify::verify_certificate(
            &read(case["certificate"].as_str().unwrap()),
            &issuer,
            crl.as_ref(),
            case["package"].as_str().unwrap(),
            version.as_ref(),
            escx::UnixSeconds(case["time"].as_u64().unwrap()),
        ));
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
        codes.insert(got);
    }
    // Each failure the spec lists for certificates has a vector.
    for code in [
        "ok",
        "license-signature",
        "license-wrong-issuer",
        "license-expired",
        "license-not-yet-valid",
        "license-revoked",
        "license-wrong-package",
    ] {
        assert!(codes.contains(code), "no vector for {code}");
    }
}

#[test]
fn crls_and_proofs_get_their_expected_verdicts() {
    let expected = expected();
    let issuer = issuer(&expected);
    for case in expected["crls"].as_array().unwrap() {
        let got = outcome(verify::open_crl(&read(case["crl"].as_str().unwrap()), &issuer));
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let holder = Wallet::open(tmp.path()).unwrap();
    holder.add_issuer(&BundleChain::from_bundles(vec![issuer.clone()]).unwrap()).unwrap();
    let sequence = &expected["crl_sequence"];
    for (name, want) in
        sequence["accept"].as_array().unwrap().iter().zip(sequence["expect"].as_array().unwrap())
    {
        assert_eq!(outcome(holder.accept_crl(&read(name.as_str().unwrap()))), want.as_str().unwrap());
    }
    for case in expected["proofs"].as_array().unwrap() {
        let challenge = hex::decode(case["challenge"].as_str().unwrap()).unwrap();
        let crl = case["crl"].as_str().map(|name| verify::open_crl(&read(name), &issuer).unwrap());
        let check = verify::ProofCheck {
            issuer: &issuer,
            crl: crl.as_ref(),
            package: case["package"].as_str().unwrap(),
            version: None,
            challenge: &challenge,
            now: escx::UnixSeconds(case["time"].as_u64().unwrap()),
        };
        let got = outcome(verify::check_proof(&read(case["proof"].as_str().unwrap()), &check));
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
    }
}

/// Tampering with any byte of a certificate is caught: flipping each byte in turn never
/// leaves a certificate that verifies.
#[test]
fn every_single_byte_change_of_a_certificate_is_refused() {
    let expected = expected();
    let issuer = issuer(&expected);
    let valid = read("valid.cert");
    let now = expected["certificates"][0]["time"].as_u64().unwrap();
    let package = expected["package"].as_str().unwrap();
    assert!(verify::verify_certificate(&valid, &issuer, None, package, None, escx::UnixSeconds(now)).is_ok());
    for at in 0..valid.len() {
        let mut changed = valid.clone();
        changed[at] ^= 0x01;
        let result =
            verify::verify_certificate(&changed, &issuer, None, package, None, escx::UnixSeconds(now));
        assert!(result.is_err(), "flipping byte {at} of {} left a valid certificate", valid.len());
    }
}
