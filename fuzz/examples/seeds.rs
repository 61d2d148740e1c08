//! Writes seed corpora for the `licensing` and `registry` fuzz targets from real messages
//! (one file per message, prefixed with the target's mode byte):
//!
//!     cd fuzz && cargo run --example seeds -- corpus
use std::path::{Path, PathBuf};

use escx::keyfile::Protection;
use escx_licensing::issuer::{Issuer, Offer};
use escx_licensing::messages::{LicenseResponse, TokenTransfer};
use escx_licensing::wallet::Wallet;

const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const PACKAGE: &str = "fuzz/thermal";

fn write(dir: &Path, name: &str, mode: u8, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed = vec![mode];
    seed.extend_from_slice(bytes);
    std::fs::write(dir.join(name), seed).unwrap();
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let licensing = out.join("licensing");
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::init(&tmp.path().join("issuer"), "Seeds", &Protection::Unencrypted, T0).unwrap();
    let offer = Offer {
        package: PACKAGE.parse().unwrap(),
        tier: "standard".into(),
        price_micros: escx_manifest::Micros(1),
        currency: "USD".into(),
        unit: "month".into(),
        features: vec![],
        seats: None,
        terms: None,
    };
    issuer.add_offer(&offer, &[escx::sig::KeyId([1; 16])], T0).unwrap();
    let chain = issuer.bundle(T0).unwrap();
    let wallet = Wallet::open(&tmp.path().join("wallet")).unwrap();
    let request = wallet.request(&chain, &PACKAGE.parse().unwrap(), "standard", 2, T0).unwrap();
    let response = issuer.issue(&request, T0).unwrap();
    wallet.finalize(&response).unwrap();
    write(&licensing, "token-request", 0, &request.to_cbor());
    write(&licensing, "token-response", 1, &response.to_cbor());
    let sealed = wallet.redeem(PACKAGE).unwrap();
    let opened = issuer.open_redeem_request(&sealed).unwrap();
    write(&licensing, "redeem-sealed", 2, sealed.as_bytes());
    write(&licensing, "redeem-plain", 3, &escx::cbor::encode(&opened));
    let answer = issuer.redeem(&sealed, T0 + 1).unwrap();
    write(&licensing, "license-sealed", 4, answer.as_bytes());
    let license = wallet.install(&answer).unwrap();
    let proof = wallet.prove(PACKAGE, b"sixteen-byte challenge").unwrap();
    let possession: escx_licensing::messages::PossessionPayload = escx::cbor::decode_exact(
        escx::envelope::Envelope::from_cbor(&proof).unwrap().payload_unverified(),
        "proof",
    )
    .unwrap();
    let certificate = possession.certificate.to_vec();
    let response = LicenseResponse { v: 1, certificate: serde_bytes::ByteBuf::from(certificate.clone()) };
    write(&licensing, "license-plain", 5, &escx::cbor::encode(&response));
    write(&licensing, "certificate", 6, &certificate);
    write(
        &licensing,
        "certificate-payload",
        6,
        escx::envelope::Envelope::from_cbor(&certificate).unwrap().payload_unverified(),
    );
    issuer.revoke(&license.license_id, "seed", T0 + 2).unwrap();
    let crl = issuer.crl(T0 + 2).unwrap();
    write(&licensing, "crl", 7, &crl);
    write(
        &licensing,
        "crl-payload",
        7,
        escx::envelope::Envelope::from_cbor(&crl).unwrap().payload_unverified(),
    );
    write(&licensing, "bundle-chain", 8, &chain.to_cbor());
    write(&licensing, "bundle", 8, &chain.head().bytes);
    write(&licensing, "bundle-payload", 9, &escx::cbor::encode(&chain.head().payload));
    write(&licensing, "possession-proof", 10, &proof);
    let receiver = Wallet::open(&tmp.path().join("receiver")).unwrap();
    let gift = tmp.path().join("gift");
    wallet.transfer(PACKAGE, None, &receiver.receive_key().unwrap(), &gift).unwrap();
    write(&licensing, "transfer-sealed", 11, &std::fs::read(&gift).unwrap());
    let transfer = TokenTransfer {
        v: 1,
        bundle: serde_bytes::ByteBuf::from(chain.to_cbor()),
        package: PACKAGE.parse().unwrap(),
        tier: "standard".into(),
        epoch: 1,
        input: serde_bytes::ByteBuf::from(vec![7; 32]),
        output: serde_bytes::ByteBuf::from(vec![9; 64]),
    };
    write(&licensing, "transfer-plain", 11, &escx::cbor::encode(&transfer));

    // Registry: the signed vector index, its payload, and a lockfile.
    let registry = out.join("registry");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/registry");
    let entries = std::fs::read_dir(&root).unwrap().chain(std::fs::read_dir(root.join("invalid")).unwrap());
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "signed") {
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            write(&registry, &format!("envelope-{name}"), 0, &bytes);
            if let Ok(envelope) = escx::envelope::MultiEnvelope::from_cbor(&bytes) {
                write(&registry, &format!("payload-{name}"), 1, envelope.payload_unverified());
            }
        }
    }
    write(
        &registry,
        "lockfile",
        2,
        b"# escx.lock\nversion = 1\n\n[[package]]\nname = \"fuzz/a\"\nversion = \"1.0.0\"\nblake3 = \"00\"\n",
    );
    println!("wrote {}", out.display());
}
