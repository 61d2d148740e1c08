//! Writes `test-vectors/licensing/certificates/`: issuer bundle chains (valid, and broken
//! in each way §3.1 forbids), license certificates, CRLs and proofs of possession, with
//! the verdict a verifier must reach for each case (licensing.md §3.1, §5.5–§5.7).
//!
//!     cargo run -p escx-licensing --example make_license_vectors -- test-vectors/licensing/certificates
//!
//! Keys are fresh and ML-DSA signing is hedged, so every run changes every file. The
//! expected verdicts are written down here, not taken from the verifier, and the generator
//! refuses to write a case the verifier disagrees with.

use escx::Fault as _;
use std::path::{Path, PathBuf};

use escx::envelope::Envelope;
use escx::kem::KemSecretKey;
use escx::sig::SecretKey;
use escx_licensing::messages::{
    BundleChain, BundlePayload, CONTEXT_BUNDLE, CONTEXT_BUNDLE_HASH, CONTEXT_CRL, CONTEXT_LICENSE,
    CONTEXT_POSSESSION, CrlPayload, Epoch, IssuerBundle, LicensePayload, PossessionPayload, Revoked,
};
use escx_licensing::poprf::IssuerKey;
use escx_licensing::verify;
use escx_licensing::wallet::Wallet;
use serde_bytes::ByteBuf;
use serde_json::{Value, json};

const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000); // 2027-01-15T08:00:00Z
const DAY: u64 = 86_400;
const PACKAGE: &str = "vectors/thermal";
/// A verifier's 16-byte challenge (licensing.md §5.6 asks for at least 16 bytes).
const CHALLENGE: &str = "c0ffee00c0ffee01c0ffee02c0ffee03";

fn epoch(number: u32, not_before: u64, not_after: u64) -> Epoch {
    let poprf = IssuerKey::generate().unwrap();
    Epoch {
        epoch: number,
        poprf_key: ByteBuf::from(poprf.public_key().to_vec()),
        not_before: escx::UnixSeconds(not_before),
        not_after: escx::UnixSeconds(not_after),
    }
}

/// Version `version` of a bundle after `previous`, with `epochs`.
fn version(
    key: &SecretKey,
    kem: &[u8],
    previous: Option<&IssuerBundle>,
    epochs: Vec<Epoch>,
    name: &str,
) -> IssuerBundle {
    let payload = BundlePayload {
        v: 2,
        name: name.into(),
        signing_key: ByteBuf::from(key.public_key().as_bytes().to_vec()),
        kem_key: ByteBuf::from(kem.to_vec()),
        version: previous.map_or(1, |p| p.version() + 1),
        previous: ByteBuf::from(previous.map_or([0; 32], |p| p.hash).to_vec()),
        epochs,
        issued_at: T0 - DAY,
    };
    // Signed without the parser's checks, so that broken versions can be written too.
    let bytes = Envelope::seal(CONTEXT_BUNDLE, escx::cbor::encode(&payload), key).to_cbor();
    IssuerBundle {
        hash: blake3::derive_key(CONTEXT_BUNDLE_HASH, &bytes),
        signing_key: key.public_key().clone(),
        kem_key: escx::kem::KemPublicKey::from_bytes(kem).unwrap(),
        payload,
        bytes,
    }
}

fn chain_file(versions: &[&IssuerBundle]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct ChainFile {
        v: u8,
        bundles: Vec<ByteBuf>,
    }
    escx::cbor::encode(&ChainFile {
        v: 1,
        bundles: versions.iter().map(|b| ByteBuf::from(b.bytes.clone())).collect(),
    })
}

fn bundle(key: &SecretKey, name: &str) -> IssuerBundle {
    let kem = KemSecretKey::generate().public_key().as_bytes().to_vec();
    version(key, &kem, None, vec![epoch(1, (T0 - DAY).0, (T0 + 90 * DAY).0)], name)
}

fn certificate(key: &SecretKey, payload: &LicensePayload) -> Vec<u8> {
    Envelope::seal(CONTEXT_LICENSE, escx::cbor::encode(payload), key).to_cbor()
}

fn crl(key: &SecretKey, number: u64, revoked: Vec<Revoked>) -> Vec<u8> {
    let payload = CrlPayload { v: 1, number, issued_at: T0 + number * DAY, revoked };
    Envelope::seal(CONTEXT_CRL, escx::cbor::encode(&payload), key).to_cbor()
}

fn main() {
    let out = PathBuf::from(
        std::env::args().nth(1).unwrap_or_else(|| "test-vectors/licensing/certificates".into()),
    );
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).unwrap();

    let issuer_key = SecretKey::generate();
    let other_key = SecretKey::generate();
    let issuer = bundle(&issuer_key, "Vector Licensing");
    let other = bundle(&other_key, "Other Licensing");
    write("issuer.chain", &chain_file(&[&issuer]));
    write("other-issuer.chain", &chain_file(&[&other]));

    // Bundle chains (§3.1): version 2 appends epoch 2 after epoch 1 ends.
    let kem = issuer.payload.kem_key.to_vec();
    let epochs_v1 = issuer.payload.epochs.clone();
    let with_epoch = |mut epochs: Vec<Epoch>, extra: Epoch| {
        epochs.push(extra);
        epochs
    };
    let v2 = version(
        &issuer_key,
        &kem,
        Some(&issuer),
        with_epoch(epochs_v1.clone(), epoch(2, (T0 + 90 * DAY).0, (T0 + 180 * DAY).0)),
        "Vector Licensing",
    );
    let fork_v2 = version(
        &issuer_key,
        &kem,
        Some(&issuer),
        with_epoch(epochs_v1.clone(), epoch(2, (T0 + 90 * DAY).0, (T0 + 180 * DAY).0)),
        "Vector Licensing",
    );
    let overlap_v2 = version(
        &issuer_key,
        &kem,
        Some(&issuer),
        with_epoch(epochs_v1.clone(), epoch(2, (T0 + 80 * DAY).0, (T0 + 180 * DAY).0)),
        "Vector Licensing",
    );
    let rekeyed_v2 = version(
        &issuer_key,
        &kem,
        Some(&issuer),
        vec![epoch(1, (T0 - DAY).0, (T0 + 90 * DAY).0)],
        "Vector Licensing",
    );
    let other_kem = KemSecretKey::generate().public_key().as_bytes().to_vec();
    let new_kem_v2 = version(
        &issuer_key,
        &other_kem,
        Some(&issuer),
        with_epoch(epochs_v1.clone(), epoch(2, (T0 + 90 * DAY).0, (T0 + 180 * DAY).0)),
        "Vector Licensing",
    );
    let unlinked_v2 = version(
        &issuer_key,
        &kem,
        Some(&other),
        with_epoch(epochs_v1.clone(), epoch(2, (T0 + 90 * DAY).0, (T0 + 180 * DAY).0)),
        "Vector Licensing",
    );
    write("chain-v2.chain", &chain_file(&[&issuer, &v2]));
    write("chain-fork-v2.chain", &chain_file(&[&issuer, &fork_v2]));
    write("chain-overlap.chain", &chain_file(&[&issuer, &overlap_v2]));
    write("chain-rekeyed-epoch.chain", &chain_file(&[&issuer, &rekeyed_v2]));
    write("chain-new-kem-key.chain", &chain_file(&[&issuer, &new_kem_v2]));
    write("chain-wrong-previous.chain", &chain_file(&[&issuer, &unlinked_v2]));
    write("chain-without-v1.chain", &chain_file(&[&v2]));
    let chains = vec![
        json!({ "chain": "issuer.chain", "expect": "ok", "head_version": 1, "description": "version 1 alone" }),
        json!({ "chain": "chain-v2.chain", "expect": "ok", "head_version": 2, "head_hash": hex::encode(v2.hash), "description": "version 2 keeps epoch 1 and appends epoch 2 after it" }),
        json!({ "chain": "chain-overlap.chain", "expect": "issuer-bundle-invalid", "description": "epoch 2 starts before epoch 1 ends" }),
        json!({ "chain": "chain-rekeyed-epoch.chain", "expect": "issuer-bundle-invalid", "description": "version 2 gives epoch 1 another POPRF key" }),
        json!({ "chain": "chain-new-kem-key.chain", "expect": "issuer-bundle-invalid", "description": "version 2 changes the KEM key" }),
        json!({ "chain": "chain-wrong-previous.chain", "expect": "issuer-bundle-invalid", "description": "version 2 names another bundle as previous" }),
        json!({ "chain": "chain-without-v1.chain", "expect": "issuer-bundle-invalid", "description": "the chain does not start at version 1" }),
    ];
    for case in &chains {
        let got = match BundleChain::parse(&std::fs::read(out.join(case["chain"].as_str().unwrap())).unwrap())
        {
            Ok(chain) => {
                assert_eq!(chain.head().version(), case["head_version"].as_u64().unwrap());
                "ok".to_owned()
            }
            Err(e) => e.code().to_owned(),
        };
        assert_eq!(got, case["expect"].as_str().unwrap(), "{case}");
    }
    // A wallet pins what it saw first: an extension is taken, a fork refused (§5.7).
    let pinning = json!({
        "add": ["issuer.chain", "chain-v2.chain", "issuer.chain", "chain-fork-v2.chain"],
        "expect": ["ok", "ok", "ok", "issuer-bundle-fork"],
        "description": "pin version 1, extend to 2, an older chain changes nothing, a different version 2 is a fork",
    });
    {
        let tmp = tempfile::tempdir().unwrap();
        let wallet = Wallet::open(tmp.path()).unwrap();
        for (file, want) in
            pinning["add"].as_array().unwrap().iter().zip(pinning["expect"].as_array().unwrap())
        {
            let chain =
                BundleChain::parse(&std::fs::read(out.join(file.as_str().unwrap())).unwrap()).unwrap();
            let got = match wallet.add_issuer(&chain) {
                Ok(_) => "ok".to_owned(),
                Err(e) => e.code().to_owned(),
            };
            assert_eq!(got, want.as_str().unwrap(), "{file}");
        }
    }

    let holder = SecretKey::generate();
    let base = LicensePayload {
        v: 1,
        license_id: ByteBuf::from(vec![0x11; 16]),
        package: PACKAGE.parse().unwrap(),
        versions: "^1.2".into(),
        tier: "standard".into(),
        features: vec!["plots".into()],
        seats: Some(5),
        not_before: T0,
        not_after: T0 + 30 * DAY,
        holder_key: ByteBuf::from(holder.public_key().as_bytes().to_vec()),
        holder_kem_key: ByteBuf::from(KemSecretKey::generate().public_key().as_bytes().to_vec()),
        wrapped_keys: vec![],
        issuer_key_id: ByteBuf::from(issuer.issuer_id().0.to_vec()),
        crl_location: "https://licensing.example/crl.cbor".into(),
        terms: None,
    };
    let terms = |telemetry: &str, metrics: &[&str]| {
        Some(escx_licensing::messages::LicenseTerms {
            telemetry: telemetry.into(),
            metrics: metrics.iter().map(|m| (*m).to_owned()).collect(),
        })
    };
    let with = |change: &dyn Fn(&mut LicensePayload)| {
        let mut payload = base.clone();
        change(&mut payload);
        payload
    };
    let valid = certificate(&issuer_key, &base);
    let mut tampered = valid.clone();
    let at = tampered.windows(PACKAGE.len()).position(|w| w == PACKAGE.as_bytes()).unwrap();
    tampered[at] ^= 0x01; // "vectors/..." -> "wectors/...": still valid CBOR
    let certificates: Vec<(&str, Vec<u8>)> = vec![
        ("valid.cert", valid.clone()),
        ("expired.cert", certificate(&issuer_key, &with(&|p| p.not_after = T0 + DAY))),
        (
            "not-yet-valid.cert",
            certificate(
                &issuer_key,
                &with(&|p| {
                    p.not_before = T0 + 40 * DAY;
                    p.not_after = T0 + 70 * DAY;
                }),
            ),
        ),
        ("revoked.cert", certificate(&issuer_key, &with(&|p| p.license_id = ByteBuf::from(vec![0x22; 16])))),
        (
            "other-package.cert",
            certificate(&issuer_key, &with(&|p| p.package = "vectors/other".parse().unwrap())),
        ),
        ("tampered.cert", tampered),
        ("foreign.cert", certificate(&other_key, &base)),
        (
            "issuer-key-id-mismatch.cert",
            certificate(
                &issuer_key,
                &with(&|p| p.issuer_key_id = ByteBuf::from(other.issuer_id().0.to_vec())),
            ),
        ),
        ("version-2.cert", certificate(&issuer_key, &with(&|p| p.v = 2))),
        (
            "terms.cert",
            certificate(
                &issuer_key,
                &with(&|p| {
                    p.v = 2;
                    p.terms = terms("share", &["invocations", "custom:frames"]);
                }),
            ),
        ),
        ("terms-in-version-1.cert", certificate(&issuer_key, &with(&|p| p.terms = terms("private", &[])))),
        (
            "terms-bad-telemetry.cert",
            certificate(
                &issuer_key,
                &with(&|p| {
                    p.v = 2;
                    p.terms = terms("public", &[]);
                }),
            ),
        ),
        (
            "terms-bad-metric.cert",
            certificate(
                &issuer_key,
                &with(&|p| {
                    p.v = 2;
                    p.terms = terms("private", &["minutes"]);
                }),
            ),
        ),
    ];
    for (name, bytes) in &certificates {
        write(name, bytes);
    }
    let revoked = vec![Revoked {
        license_id: ByteBuf::from(vec![0x22; 16]),
        reason: "chargeback".into(),
        revoked_at: T0 + 2 * DAY,
    }];
    write("crl-1.cbor", &crl(&issuer_key, 1, vec![]));
    write("crl-2.cbor", &crl(&issuer_key, 2, revoked.clone()));
    write("crl-foreign.cbor", &crl(&other_key, 3, revoked.clone()));
    let second = Revoked { license_id: ByteBuf::from(vec![0x11; 16]), ..revoked[0].clone() };
    write("crl-unsorted.cbor", &crl(&issuer_key, 4, vec![revoked[0].clone(), second]));
    write("crl-duplicate-id.cbor", &crl(&issuer_key, 5, vec![revoked[0].clone(), revoked[0].clone()]));
    let version_2 = CrlPayload { v: 2, number: 6, issued_at: T0, revoked: vec![] };
    write(
        "crl-version-2.cbor",
        &Envelope::seal(CONTEXT_CRL, escx::cbor::encode(&version_2), &issuer_key).to_cbor(),
    );
    // revoked_at is informational: a license listed with a future revoked_at is revoked now.
    let future = Revoked { revoked_at: T0 + 1000 * DAY, ..revoked[0].clone() };
    write("crl-revoked-later.cbor", &crl(&issuer_key, 7, vec![future]));

    let proof = Envelope::seal(
        CONTEXT_POSSESSION,
        escx::cbor::encode(&PossessionPayload {
            v: 1,
            challenge: ByteBuf::from(hex::decode(CHALLENGE).unwrap()),
            certificate: ByteBuf::from(valid),
        }),
        &holder,
    )
    .to_cbor();
    write("proof.cbor", &proof);

    let at_day = |d: u64| T0 + d * DAY;
    let cases: Vec<Value> = vec![
        case("valid.cert", None, Some("1.4.0"), at_day(5).0, "ok", "every check passes"),
        case("valid.cert", None, None, at_day(5).0, "ok", "no version given: any version of the package"),
        case("valid.cert", Some("crl-1.cbor"), Some("1.2.0"), at_day(5).0, "ok", "not in CRL 1"),
        case("valid.cert", Some("crl-2.cbor"), Some("1.2.0"), at_day(5).0, "ok", "not in CRL 2"),
        case(
            "valid.cert",
            None,
            Some("2.0.0"),
            at_day(5).0,
            "license-wrong-package",
            "2.0.0 is outside ^1.2",
        ),
        case("valid.cert", None, Some("1.4.0"), at_day(30).0, "license-expired", "at not_after exactly"),
        case("valid.cert", None, Some("1.4.0"), (T0 - 1).0, "license-not-yet-valid", "one second early"),
        case("expired.cert", None, None, at_day(5).0, "license-expired", "ended after one day"),
        case("not-yet-valid.cert", None, None, at_day(5).0, "license-not-yet-valid", "starts on day 40"),
        case("revoked.cert", Some("crl-1.cbor"), None, at_day(5).0, "ok", "CRL 1 does not list it"),
        case("revoked.cert", Some("crl-2.cbor"), None, at_day(5).0, "license-revoked", "CRL 2 lists it"),
        case(
            "revoked.cert",
            None,
            None,
            at_day(40).0,
            "license-expired",
            "the window is checked before revocation",
        ),
        case("other-package.cert", None, None, at_day(5).0, "license-wrong-package", "for vectors/other"),
        case("tampered.cert", None, None, at_day(5).0, "license-signature", "one payload bit flipped"),
        case("foreign.cert", None, None, at_day(5).0, "license-wrong-issuer", "signed by the other issuer"),
        case(
            "issuer-key-id-mismatch.cert",
            None,
            None,
            at_day(5).0,
            "message-invalid",
            "validly signed by the issuer, but its issuer_key_id names the other issuer",
        ),
        case(
            "version-2.cert",
            None,
            None,
            at_day(5).0,
            "message-invalid",
            "validly signed, v = 2 without terms",
        ),
        case("terms.cert", None, None, at_day(5).0, "ok", "version 2 with terms: share, two metrics"),
        case("terms-in-version-1.cert", None, None, at_day(5).0, "message-invalid", "v = 1 with terms"),
        case(
            "terms-bad-telemetry.cert",
            None,
            None,
            at_day(5).0,
            "message-invalid",
            "version 2 whose terms.telemetry is neither private nor share",
        ),
        case(
            "terms-bad-metric.cert",
            None,
            None,
            at_day(5).0,
            "message-invalid",
            "version 2 whose terms.metrics names minutes, which no package meters",
        ),
        case(
            "revoked.cert",
            Some("crl-revoked-later.cbor"),
            None,
            at_day(5).0,
            "license-revoked",
            "listed with a revoked_at 1000 days ahead: revoked_at is informational",
        ),
    ];
    for case in &cases {
        let verdict = verdict(&out, case);
        assert_eq!(verdict, case["expect"].as_str().unwrap(), "{case}");
    }
    let crls = vec![
        json!({ "crl": "crl-1.cbor", "expect": "ok", "description": "signed by the issuer" }),
        json!({ "crl": "crl-foreign.cbor", "expect": "crl-invalid", "description": "signed by the other issuer" }),
        json!({ "crl": "crl-unsorted.cbor", "expect": "crl-invalid", "description": "revoked ids out of order" }),
        json!({ "crl": "crl-duplicate-id.cbor", "expect": "crl-invalid", "description": "one license id listed twice" }),
        json!({ "crl": "crl-version-2.cbor", "expect": "crl-invalid", "description": "validly signed, v = 2" }),
    ];
    let crl_sequence = json!({
        "accept": ["crl-2.cbor", "crl-1.cbor"],
        "expect": ["ok", "crl-stale"],
        "description": "a wallet that holds CRL 2 refuses CRL 1 (a number must be strictly greater)",
    });
    let short_proof = Envelope::seal(
        CONTEXT_POSSESSION,
        escx::cbor::encode(&PossessionPayload {
            v: 1,
            challenge: ByteBuf::from(vec![0xc0, 0xff, 0xee]),
            certificate: ByteBuf::from(std::fs::read(out.join("valid.cert")).unwrap()),
        }),
        &holder,
    )
    .to_cbor();
    write("proof-short-challenge.cbor", &short_proof);
    let revoked_proof = Envelope::seal(
        CONTEXT_POSSESSION,
        escx::cbor::encode(&PossessionPayload {
            v: 1,
            challenge: ByteBuf::from(hex::decode(CHALLENGE).unwrap()),
            certificate: ByteBuf::from(std::fs::read(out.join("revoked.cert")).unwrap()),
        }),
        &holder,
    )
    .to_cbor();
    write("proof-revoked.cbor", &revoked_proof);
    let version_2_proof = Envelope::seal(
        CONTEXT_POSSESSION,
        escx::cbor::encode(&PossessionPayload {
            v: 2,
            challenge: ByteBuf::from(hex::decode(CHALLENGE).unwrap()),
            certificate: ByteBuf::from(std::fs::read(out.join("valid.cert")).unwrap()),
        }),
        &holder,
    )
    .to_cbor();
    write("proof-version-2.cbor", &version_2_proof);
    let truncated = std::fs::read(out.join("proof.cbor")).unwrap();
    write("proof-truncated.cbor", &truncated[..truncated.len() - 1]);
    let mut trailing = truncated.clone();
    trailing.push(0);
    write("proof-trailing-byte.cbor", &trailing);
    let proof_case = |proof: &str,
                      challenge: &str,
                      crl: Option<&str>,
                      package: &str,
                      time: u64,
                      expect: &str,
                      description: &str| {
        json!({ "proof": proof, "challenge": challenge, "crl": crl, "package": package, "time": time,
                "expect": expect, "description": description })
    };
    let proofs = vec![
        proof_case(
            "proof.cbor",
            CHALLENGE,
            None,
            PACKAGE,
            at_day(5).0,
            "ok",
            "the holder signed this challenge",
        ),
        proof_case(
            "proof.cbor",
            "beefbeefbeefbeefbeefbeefbeefbeef",
            None,
            PACKAGE,
            at_day(5).0,
            "possession-invalid",
            "another challenge",
        ),
        proof_case(
            "proof.cbor",
            CHALLENGE,
            None,
            PACKAGE,
            at_day(31).0,
            "license-expired",
            "the license ended",
        ),
        proof_case(
            "proof.cbor",
            CHALLENGE,
            None,
            "vectors/other",
            at_day(5).0,
            "license-wrong-package",
            "asked for another package",
        ),
        proof_case(
            "proof-revoked.cbor",
            CHALLENGE,
            Some("crl-2.cbor"),
            PACKAGE,
            at_day(5).0,
            "license-revoked",
            "CRL 2 lists the license",
        ),
        proof_case(
            "proof-short-challenge.cbor",
            "c0ffee",
            None,
            PACKAGE,
            at_day(5).0,
            "possession-invalid",
            "a 3-byte challenge is refused",
        ),
        proof_case(
            "proof-version-2.cbor",
            CHALLENGE,
            None,
            PACKAGE,
            at_day(5).0,
            "message-invalid",
            "validly signed by the holder, v = 2",
        ),
        proof_case(
            "proof-truncated.cbor",
            CHALLENGE,
            None,
            PACKAGE,
            at_day(5).0,
            "possession-invalid",
            "the valid proof without its last byte",
        ),
        proof_case(
            "proof-trailing-byte.cbor",
            CHALLENGE,
            None,
            PACKAGE,
            at_day(5).0,
            "possession-invalid",
            "the valid proof with a byte after it",
        ),
    ];
    for proof in &proofs {
        let bytes = std::fs::read(out.join(proof["proof"].as_str().unwrap())).unwrap();
        let challenge = hex::decode(proof["challenge"].as_str().unwrap()).unwrap();
        let crl = proof["crl"]
            .as_str()
            .map(|name| verify::open_crl(&std::fs::read(out.join(name)).unwrap(), &issuer).unwrap());
        let check = verify::ProofCheck {
            issuer: &issuer,
            crl: crl.as_ref(),
            package: proof["package"].as_str().unwrap(),
            version: None,
            challenge: &challenge,
            now: escx::UnixSeconds(proof["time"].as_u64().unwrap()),
        };
        let got = match verify::check_proof(&bytes, &check) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().to_owned(),
        };
        assert_eq!(got, proof["expect"].as_str().unwrap(), "{proof}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let holder_wallet = Wallet::open(tmp.path()).unwrap();
    holder_wallet.add_issuer(&BundleChain::from_bundles(vec![issuer.clone()]).unwrap()).unwrap();
    assert!(holder_wallet.accept_crl(&std::fs::read(out.join("crl-2.cbor")).unwrap()).is_ok());
    let stale = holder_wallet.accept_crl(&std::fs::read(out.join("crl-1.cbor")).unwrap()).unwrap_err();
    assert_eq!(stale.code(), "crl-stale");

    let expected = json!({
        "spec": "spec/licensing.md §3.1 (bundle chains), §5.5 (certificates, CRLs), §5.6 (proofs of possession), §5.7 (pinning)",
        "issuer": { "file": "issuer.chain", "issuer_id": issuer.issuer_id().to_string(), "bundle_hash": hex::encode(issuer.hash) },
        "other_issuer": { "file": "other-issuer.chain", "issuer_id": other.issuer_id().to_string() },
        "chains": chains,
        "pinning": pinning,
        "package": PACKAGE,
        "certificates": cases,
        "crls": crls,
        "crl_sequence": crl_sequence,
        "proofs": proofs,
    });
    std::fs::write(out.join("expected.json"), serde_json::to_string_pretty(&expected).unwrap() + "\n")
        .unwrap();
    println!("wrote {}", out.display());
}

fn case(
    certificate: &str,
    crl: Option<&str>,
    version: Option<&str>,
    time: u64,
    expect: &str,
    description: &str,
) -> Value {
    json!({
        "certificate": certificate, "crl": crl, "package": PACKAGE, "version": version,
        "time": time, "expect": expect, "description": description,
    })
}

/// The verdict of licensing.md §5.5 steps 1, 3, 4, 5 for one case (also used by the test).
fn verdict(dir: &Path, case: &Value) -> String {
    let chain = BundleChain::parse(&std::fs::read(dir.join("issuer.chain")).unwrap()).unwrap();
    let issuer = chain.head();
    let certificate = std::fs::read(dir.join(case["certificate"].as_str().unwrap())).unwrap();
    let crl = case["crl"]
        .as_str()
        .map(|name| verify::open_crl(&std::fs::read(dir.join(name)).unwrap(), issuer).unwrap());
    let version = case["version"].as_str().map(|v| semver::Version::parse(v).unwrap());
    match verify::verify_certificate(
        &certificate,
        issuer,
        crl.as_ref(),
        case["package"].as_str().unwrap(),
        version.as_ref(),
        escx::UnixSeconds(case["time"].as_u64().unwrap()),
    ) {
        Ok(_) => "ok".into(),
        Err(e) => e.code().into(),
    }
}
