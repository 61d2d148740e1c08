//! Every vector in test-vectors/metering/ gets its expected verdict (metering.md).
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use escx::Fault as _;
use std::path::{Path, PathBuf};

use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::scalar::Scalar;
use escx_licensing::messages::BundleChain;
use escx_metering::operator::{Operator, Outcome};
use escx_metering::{self as metering, ReportFile};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/metering")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn expected() -> Value {
    serde_json::from_slice(&read("expected.json")).unwrap()
}

fn verdict<T>(result: Result<T, escx_metering::Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e.code().into(),
    }
}

#[test]
fn blindings_and_commitments_match_the_known_answers() {
    let expected = expected();
    for case in expected["blindings"].as_array().unwrap() {
        let secret: [u8; 32] = hex::decode(case["secret"].as_str().unwrap()).unwrap().try_into().unwrap();
        let id: [u8; 16] = hex::decode(case["license_id"].as_str().unwrap()).unwrap().try_into().unwrap();
        let unit = case["unit"].as_str().unwrap();
        let hour = case["hour"].as_u64().unwrap();
        let minute = case["minute"].as_u64().unwrap() as u8;
        // metering.md §2.2 by hand: derive_key over secret || id || hour BE || minute || unit,
        // 64 bytes of XOF output reduced mod ℓ.
        let mut hasher = blake3::Hasher::new_derive_key("escx v1 meter blinding");
        hasher
            .update(&secret)
            .update(&id)
            .update(&hour.to_be_bytes())
            .update(&[minute])
            .update(unit.as_bytes());
        let mut wide = [0u8; 64];
        hasher.finalize_xof().fill(&mut wide);
        let r = Scalar::from_bytes_mod_order_wide(&wide);
        assert_eq!(hex::encode(r.to_bytes()), case["blinding"].as_str().unwrap(), "{case}");
        assert_eq!(r, metering::blinding(&secret, &id, unit, escx::UnixSeconds(hour), minute));
        // v·B + r·B_blinding with bulletproofs' generators.
        let gens = escx_licensing::pedersen::generators();
        let value = case["value"].as_u64().unwrap();
        let point = gens.commit(Scalar::from(value), r).compress();
        assert_eq!(hex::encode(point.to_bytes()), case["commitment"].as_str().unwrap());
        let decoded =
            CompressedRistretto::from_slice(&hex::decode(case["commitment"].as_str().unwrap()).unwrap())
                .unwrap()
                .decompress()
                .unwrap();
        assert_eq!(decoded, escx_licensing::pedersen::commit(value, &r));
    }
    let sum = &expected["hour_blinding_sum"];
    let secret =
        hex::decode(expected["blindings"][0]["secret"].as_str().unwrap()).unwrap().try_into().unwrap();
    let id =
        hex::decode(expected["blindings"][0]["license_id"].as_str().unwrap()).unwrap().try_into().unwrap();
    let total: Scalar = (0..60)
        .map(|m| {
            metering::blinding(
                &secret,
                &id,
                sum["unit"].as_str().unwrap(),
                escx::UnixSeconds(sum["hour"].as_u64().unwrap()),
                m,
            )
        })
        .sum();
    assert_eq!(hex::encode(total.to_bytes()), sum["blinding_sum"].as_str().unwrap());
}

#[test]
fn reports_closes_and_openings_get_their_verdicts() {
    let expected = expected();
    for (name, hash) in expected["report_hashes"].as_object().unwrap() {
        let file = ReportFile::from_cbor(&read(name)).unwrap();
        assert_eq!(
            hex::encode(blake3::derive_key("escx v1 meter report hash", &file.report)),
            hash.as_str().unwrap()
        );
    }
    let op = &expected["operator"];
    let tmp = tempfile::tempdir().unwrap();
    let chain = BundleChain::parse(&read(op["issuer"].as_str().unwrap())).unwrap();
    let mut operator = Operator::init(&tmp.path().join("op"), &[chain]).unwrap();
    let publisher = escx::keyfile::read_public_key(&dir().join(op["publisher"].as_str().unwrap())).unwrap();
    operator
        .add_package(
            &dir().join(op["package"].as_str().unwrap()),
            &escx::policy::TrustPolicy::from_keys(vec![publisher]),
            escx::UnixSeconds(op["registered_at"].as_u64().unwrap()),
        )
        .unwrap();
    let ingest = |operator: &mut Operator, case: &Value, file: &str| {
        let results =
            operator.ingest(&[read(file)], escx::UnixSeconds(case["now"].as_u64().unwrap())).unwrap();
        let got = match &results[0].outcome {
            Outcome::Stored => "stored".to_owned(),
            Outcome::Duplicate => "duplicate".to_owned(),
            Outcome::Equivocation => "equivocation".to_owned(),
            Outcome::Refused(e) => e.code().to_owned(),
        };
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
    };
    let cases = expected["ingest"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        ingest(&mut operator, case, case["file"].as_str().unwrap());
    }
    for case in expected["openings"].as_array().unwrap() {
        let result = operator.check_opening(&read(case["file"].as_str().unwrap()));
        if let (Ok(verdict), Some(values)) = (&result, case["values"].as_object()) {
            let got: serde_json::Map<String, Value> =
                verdict.values.iter().map(|(u, v)| (u.clone(), Value::from(*v))).collect();
            assert_eq!(&got, values, "{case}");
        }
        assert_eq!(verdict(result), case["expect"].as_str().unwrap(), "{case}");
    }
    for case in expected["closes"].as_array().unwrap() {
        if let Some(file) = case["ingest"].as_str() {
            ingest(&mut operator, case, file);
            continue;
        }
        let result = operator
            .close(&read(case["file"].as_str().unwrap()), escx::UnixSeconds(case["now"].as_u64().unwrap()));
        if let (Ok(closed), Some(totals)) = (&result, case["totals"].as_object()) {
            let got: serde_json::Map<String, Value> =
                closed.totals.iter().map(|(u, v)| (u.clone(), Value::from(*v))).collect();
            assert_eq!(&got, totals, "{case}");
        }
        assert_eq!(verdict(result), case["expect"].as_str().unwrap(), "{case}");
    }
    assert_eq!(operator.evidence(None).unwrap().len(), 2, "the twin report and the conflicting close");
}

/// metering.md §2.2, reports with a nonce: the v2 context over secret || id || hour BE ||
/// minute || nonce || unit, derived here by hand.
#[test]
fn report_blindings_with_a_nonce_match_the_known_answers() {
    let expected = expected();
    let cases = expected["report_blindings"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let bytes = |key: &str| hex::decode(case[key].as_str().unwrap()).unwrap();
        let secret: [u8; 32] = bytes("secret").try_into().unwrap();
        let id: [u8; 16] = bytes("license_id").try_into().unwrap();
        let nonce: [u8; 32] = bytes("nonce").try_into().unwrap();
        let unit = case["unit"].as_str().unwrap();
        let hour = case["hour"].as_u64().unwrap();
        let minute = case["minute"].as_u64().unwrap() as u8;
        let mut hasher = blake3::Hasher::new_derive_key("escx v2 meter report blinding");
        hasher
            .update(&secret)
            .update(&id)
            .update(&hour.to_be_bytes())
            .update(&[minute])
            .update(&nonce)
            .update(unit.as_bytes());
        let mut wide = [0u8; 64];
        hasher.finalize_xof().fill(&mut wide);
        let r = Scalar::from_bytes_mod_order_wide(&wide);
        assert_eq!(hex::encode(r.to_bytes()), case["blinding"].as_str().unwrap(), "{case}");
        let hour = escx::UnixSeconds(hour);
        assert_eq!(r, metering::report_blinding(&secret, &id, Some(&nonce), unit, hour, minute));
        // Without a nonce, the v1 derivation (reports made before nonces).
        assert_eq!(
            metering::report_blinding(&secret, &id, None, unit, hour, minute),
            metering::blinding(&secret, &id, unit, hour, minute)
        );
        let value = case["value"].as_u64().unwrap();
        let commitment = escx_licensing::pedersen::commit(value, &r).compress().to_bytes();
        assert_eq!(hex::encode(commitment), case["commitment"].as_str().unwrap());
    }
}
