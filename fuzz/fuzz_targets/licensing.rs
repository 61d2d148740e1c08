//! Every message a customer or the issuer parses, from any bytes (licensing.md §3): the
//! first byte picks the message; the rest is the message as received, or (for the sealed
//! and signed ones) the plaintext or payload, sealed or signed by the fixture's real keys so
//! the parser behind the seal or signature is reached too.
#![no_main]

use std::sync::OnceLock;

use escx::envelope::Envelope;
use escx::kem::{self, KemPublicKey};
use escx::keyfile::Protection;
use escx::sig::SecretKey;
use escx_licensing::issuer::{Issuer, Offer};
use escx_licensing::messages::{
    self, BundleChain, CONTEXT_BUNDLE, CONTEXT_CRL, CONTEXT_LICENSE, CONTEXT_POSSESSION, IssuerBundle,
    TokenRequest, TokenResponse,
};
use escx_licensing::poprf::IssuerKey;
use escx_licensing::verify::{self, ProofCheck};
use escx_licensing::wallet::Wallet;
use libfuzzer_sys::fuzz_target;

const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const PACKAGE: &str = "fuzz/thermal";

struct Fixture {
    _dir: tempfile::TempDir,
    issuer: Issuer,
    signing: SecretKey,
    chain: BundleChain,
    wallet: Wallet,
    /// A holder KEM key the wallet is waiting for a license on.
    holder_kem: KemPublicKey,
    receive: KemPublicKey,
    poprf: IssuerKey,
}

// The fixture is only touched by the fuzzing thread.
fn fixture() -> &'static std::sync::Mutex<Fixture> {
    static FIXTURE: OnceLock<std::sync::Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::init(&dir.path().join("issuer"), "Fuzz", &Protection::Unencrypted, T0).unwrap();
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
        let signing =
            escx::keyfile::read_secret_key(&dir.path().join("issuer/signing.key"), || None).unwrap();
        let chain = issuer.bundle(T0).unwrap();
        let wallet = Wallet::open(&dir.path().join("wallet")).unwrap();
        let request = wallet.request(&chain, &PACKAGE.parse().unwrap(), "standard", 2, T0).unwrap();
        wallet.finalize(&issuer.issue(&request, T0).unwrap()).unwrap();
        let sealed = wallet.redeem(PACKAGE).unwrap();
        let holder_kem =
            KemPublicKey::from_bytes(&issuer.open_redeem_request(&sealed).unwrap().holder_kem_key).unwrap();
        let receive = wallet.receive_key().unwrap();
        // A purchase left pending, so a response reaches the proof check.
        wallet.request(&chain, &PACKAGE.parse().unwrap(), "standard", 2, T0).unwrap();
        std::sync::Mutex::new(Fixture {
            _dir: dir,
            issuer,
            signing,
            chain,
            wallet,
            holder_kem,
            receive,
            poprf: IssuerKey::generate().unwrap(),
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let fixture = fixture().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let head = fixture.chain.head();
    match mode % 12 {
        // Purchase request, as the issuer receives it.
        0 => {
            if let Ok(request) = TokenRequest::from_cbor(rest) {
                // What Issuer::issue does short of recording the sale: decode the elements
                // and evaluate them under the request's info.
                if let Ok(elements) = request.elements() {
                    let _ = fixture.poprf.evaluate_batch(&elements, &request.info());
                }
            }
        }
        // Purchase response, as the wallet finalizes it.
        1 => {
            if let Ok(response) = TokenResponse::from_cbor(rest) {
                let _ = fixture.wallet.finalize(&response);
            }
        }
        // A sealed redemption request: garbage, then a real seal around the bytes.
        2 => {
            let _ = fixture.issuer.redeem(&messages::SealedRedeemRequest::from_bytes(rest.to_vec()), T0 + 1);
        }
        3 => {
            if let Ok(sealed) = kem::seal(fixture.issuer.kem_key(), messages::PURPOSE_REDEEM, rest) {
                let _ = fixture.issuer.redeem(&messages::SealedRedeemRequest::from_bytes(sealed), T0 + 1);
            }
        }
        // A sealed license response, as the wallet installs it.
        4 => {
            let _ = fixture.wallet.install(&messages::SealedLicense::from_bytes(rest.to_vec()));
        }
        5 => {
            if let Ok(sealed) = kem::seal(&fixture.holder_kem, messages::PURPOSE_LICENSE, rest) {
                let _ = fixture.wallet.install(&messages::SealedLicense::from_bytes(sealed));
            }
        }
        // A certificate: as received, then a payload signed by the issuer.
        6 => {
            let _ = verify::verify_certificate(rest, head, None, PACKAGE, None, T0 + 1);
            let signed = Envelope::seal(CONTEXT_LICENSE, rest.to_vec(), &fixture.signing).to_cbor();
            let _ = verify::verify_certificate(&signed, head, None, PACKAGE, None, T0 + 1);
        }
        // A CRL: as received, then a payload signed by the issuer.
        7 => {
            let _ = verify::open_crl(rest, head);
            let signed = Envelope::seal(CONTEXT_CRL, rest.to_vec(), &fixture.signing).to_cbor();
            let _ = verify::open_crl(&signed, head);
            let _ = fixture.wallet.accept_crl(&signed);
        }
        // An issuer bundle chain file, a bundle, and a signed bundle payload as version 2.
        8 => {
            if let Ok(chain) = BundleChain::parse(rest) {
                let _ = fixture.wallet.add_issuer(&chain);
            }
            let _ = IssuerBundle::parse(rest);
        }
        9 => {
            let signed = Envelope::seal(CONTEXT_BUNDLE, rest.to_vec(), &fixture.signing).to_cbor();
            if let Ok(bundle) = IssuerBundle::parse(&signed) {
                let _ = BundleChain::from_bundles(vec![head.clone(), bundle]);
            }
        }
        // A proof of possession, and a transferred token sealed to the wallet.
        10 => {
            let check = ProofCheck {
                issuer: head,
                crl: None,
                package: PACKAGE,
                version: None,
                challenge: b"sixteen-byte challenge",
                now: T0 + 1,
            };
            let _ = verify::check_proof(rest, &check);
            let signed = Envelope::seal(CONTEXT_POSSESSION, rest.to_vec(), &fixture.signing).to_cbor();
            let _ = verify::check_proof(&signed, &check);
        }
        _ => {
            let _ = fixture.wallet.receive(&messages::SealedTransfer::from_bytes(rest.to_vec()));
            if let Ok(sealed) = kem::seal(&fixture.receive, messages::PURPOSE_TRANSFER, rest) {
                let _ = fixture.wallet.receive(&messages::SealedTransfer::from_bytes(sealed));
            }
        }
    }
});
