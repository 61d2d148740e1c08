//! Purchase, redemption, offline verification and revocation end to end
//! (licensing.md §4–§5).

use std::path::Path;
use std::sync::{Arc, Barrier};

use escx::keyfile::Protection;
use escx_licensing::issuer::{Issuer, Offer};
use escx_licensing::messages::{IssuerBundle, TokenRequest};
use escx_licensing::wallet::{self, Wallet};

const T0: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

struct World {
    _tmp: tempfile::TempDir,
    issuer: Issuer,
    bundle: IssuerBundle,
    wallet: Wallet,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let issuer =
        Issuer::init(&tmp.path().join("issuer"), "Demo Licensing", &Protection::Unencrypted, T0).unwrap();
    for tier in ["standard", "premium"] {
        issuer
            .add_offer(&Offer {
                package: "acme/thermal".into(),
                tier: tier.into(),
                price_micros: 49_000_000,
                currency: "USD".into(),
                unit: "month".into(),
                features: vec!["plots".into()],
                seats: Some(5),
            })
            .unwrap();
    }
    let bundle = issuer.bundle(T0).unwrap();
    let wallet = Wallet::open(&tmp.path().join("wallet")).unwrap();
    World { _tmp: tmp, issuer, bundle, wallet }
}

fn buy(world: &World, count: usize) {
    let request = world.wallet.request(&world.bundle, "acme/thermal", "standard", count, T0).unwrap();
    let request = TokenRequest::from_cbor(&request.to_cbor()).unwrap();
    let response = world.issuer.issue(&request, T0).unwrap();
    assert_eq!(world.wallet.finalize(&response).unwrap(), count);
}

fn license(world: &World) -> escx_licensing::messages::LicensePayload {
    let sealed = world.wallet.redeem("acme/thermal").unwrap();
    let answer = world.issuer.redeem(&sealed, T0 + 10).unwrap();
    world.wallet.install(&answer).unwrap()
}

#[test]
fn purchase_redeem_and_verify_offline() {
    let w = world();
    buy(&w, 3);
    assert_eq!(w.wallet.token_counts().unwrap(), vec![("acme/thermal".into(), "standard".into(), 3)]);
    let license = license(&w);
    assert_eq!(license.features, vec!["plots"]);
    let verified =
        w.wallet.verify("acme/thermal", Some(&semver::Version::new(1, 2, 0)), None, T0 + DAY).unwrap();
    let names: Vec<&str> = verified.checks.iter().map(|c| c.name).collect();
    assert_eq!(names, ["signature", "clock", "window", "revocation", "package", "possession"]);
    let sales = w.issuer.sales().unwrap();
    assert_eq!((sales.len(), sales[0].count, sales[0].total_micros), (1, 3, 147_000_000));
    // Proof of possession for a third party holding only the issuer bundle.
    let proof = w.wallet.prove("acme/thermal", b"fresh challenge").unwrap();
    wallet::check_proof(&proof, &w.bundle, b"fresh challenge", T0 + DAY).unwrap();
    let err = wallet::check_proof(&proof, &w.bundle, b"other challenge", T0 + DAY).unwrap_err();
    assert_eq!(err.code(), "possession-invalid");
}

#[test]
fn a_token_redeems_once() {
    let w = world();
    buy(&w, 1);
    let sealed = w.wallet.redeem("acme/thermal").unwrap();
    w.issuer.redeem(&sealed, T0).unwrap();
    let err = w.issuer.redeem(&sealed, T0).unwrap_err();
    assert_eq!(err.code(), "token-spent", "{err}");
}

#[test]
fn concurrent_double_spend_succeeds_exactly_once() {
    let w = world();
    buy(&w, 1);
    let sealed = Arc::new(w.wallet.redeem("acme/thermal").unwrap());
    let dir = Arc::new(w.issuer.dir().to_path_buf());
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (sealed, dir, barrier) = (Arc::clone(&sealed), Arc::clone(&dir), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // Each thread is its own issuer process: its own SQLite connection.
                let issuer = Issuer::open(&dir, || None).unwrap();
                barrier.wait();
                issuer.redeem(&sealed, T0).map(|_| ()).map_err(|e| e.code())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().filter(|r| r.is_err()).all(|r| *r == Err("token-spent")), "{results:?}");
}

#[test]
fn a_token_for_another_tier_or_package_is_invalid() {
    let w = world();
    buy(&w, 1);
    // Rewrite the wallet's token as if it were for the premium tier.
    let tokens = std::fs::read_dir(Path::new(&w.wallet_dir()).join("tokens")).unwrap();
    let path = tokens.filter_map(Result::ok).next().unwrap().path();
    let bytes = std::fs::read(&path).unwrap();
    let swapped = replace(&bytes, b"standard", b"premium\0");
    // "premium\0" keeps the CBOR length; fix the text length byte to 7.
    let at = swapped.windows(8).position(|w| w == b"premium\0").unwrap();
    let mut fixed = swapped.clone();
    fixed[at - 1] = 0x67;
    fixed.remove(at + 7);
    std::fs::write(&path, fixed).unwrap();
    let sealed = w.wallet.redeem("acme/thermal").unwrap();
    let err = w.issuer.redeem(&sealed, T0).unwrap_err();
    assert_eq!(err.code(), "token-invalid", "{err}");
}

trait WalletDir {
    fn wallet_dir(&self) -> std::path::PathBuf;
}

impl WalletDir for World {
    fn wallet_dir(&self) -> std::path::PathBuf {
        self.issuer.dir().parent().unwrap().join("wallet")
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = haystack.windows(from.len()).position(|w| w == from).unwrap();
    let mut out = haystack.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}

#[test]
fn each_failure_has_its_own_error() {
    let w = world();
    buy(&w, 2);
    let license = license(&w);
    let check = |now: u64| w.wallet.verify("acme/thermal", None, None, now).map(|_| ()).map_err(|e| e.code());

    assert_eq!(check(license.not_before - 1), Err("license-not-yet-valid"));
    assert_eq!(check(license.not_after + 1), Err("license-expired"));
    // The clock has now seen not_after + 1; going back a day is a rollback.
    assert_eq!(check(license.not_after + 1 - DAY), Err("clock-rolled-back"));
    assert_eq!(
        w.wallet.verify("acme/other", None, None, license.not_after + 1).map(|_| ()).map_err(|e| e.code()),
        Err("license-wrong-package")
    );
}

#[test]
fn revocation_and_stale_crls() {
    let w = world();
    buy(&w, 1);
    let license = license(&w);
    let crl_one = w.issuer.crl(T0).unwrap();
    w.wallet.verify("acme/thermal", None, Some(&crl_one), T0 + 100).unwrap();
    w.issuer.revoke(&license.license_id, "chargeback", T0 + 200).unwrap();
    let crl_two = w.issuer.crl(T0 + 200).unwrap();
    let err = w.wallet.verify("acme/thermal", None, Some(&crl_two), T0 + 300).unwrap_err();
    assert_eq!(err.code(), "license-revoked", "{err}");
    assert!(err.to_string().contains("chargeback"));
    // An older CRL (without the revocation) is refused, so the revocation sticks.
    let err = w.wallet.verify("acme/thermal", None, Some(&crl_one), T0 + 400).unwrap_err();
    assert_eq!(err.code(), "crl-stale", "{err}");
}

#[test]
fn a_tampered_certificate_fails_its_signature_and_a_foreign_issuer_is_named() {
    let w = world();
    buy(&w, 1);
    let license = license(&w);
    let dir = w.wallet_dir().join("licenses");
    let path = dir.join(format!("{}.cbor", hex::encode(&license.license_id)));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"plots").unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let err = w.wallet.verify("acme/thermal", None, None, T0 + 100).unwrap_err();
    assert_eq!(err.code(), "license-signature", "{err}");

    let other = world();
    let proof_world = world();
    buy(&proof_world, 1);
    license_for(&proof_world);
    let proof = proof_world.wallet.prove("acme/thermal", b"c").unwrap();
    let err = wallet::check_proof(&proof, &other.bundle, b"c", T0 + 100).unwrap_err();
    assert_eq!(err.code(), "license-wrong-issuer", "{err}");
}

fn license_for(world: &World) {
    license(world);
}

#[test]
fn the_issuer_rejects_unknown_offers_and_tampered_sealed_requests() {
    let w = world();
    let request = w.wallet.request(&w.bundle, "acme/unsold", "standard", 1, T0).unwrap();
    assert_eq!(w.issuer.issue(&request, T0).unwrap_err().code(), "not-for-sale");
    buy(&w, 1);
    let mut sealed = w.wallet.redeem("acme/thermal").unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    assert_eq!(w.issuer.redeem(&sealed, T0).unwrap_err().code(), "sealed-box-invalid");
}

/// Licensed content: a license issued after the package is registered carries its content
/// key, sealed to the holder; the wallet hands it out only while the license verifies.
#[test]
fn licenses_carry_content_keys_only_while_valid() {
    let w = world();
    let content_key = escx::content::ContentKey::generate().unwrap();
    let section = escx::content::ContentKeySection::seal(&content_key, w.issuer.kem_key()).unwrap();
    let root = [7u8; 32];
    w.issuer.add_content_key("acme/thermal", "1.2.0", &root, &section).unwrap();
    // Sealed to another issuer: refused by name.
    let foreign = escx::kem::KemSecretKey::generate();
    let other = escx::content::ContentKeySection::seal(&content_key, foreign.public_key()).unwrap();
    assert!(w.issuer.add_content_key("acme/thermal", "1.2.0", &[8; 32], &other).is_err());

    buy(&w, 1);
    let license = license(&w);
    assert_eq!(license.wrapped_keys.len(), 1);
    // Wrapped to this license's holder key only: another holder key does not open it.
    let stranger = escx::kem::KemSecretKey::generate();
    let purpose = escx::content::PURPOSE_CONTENT_KEY;
    assert!(escx::kem::open(&stranger, purpose, &license.wrapped_keys[0].sealed).is_err());
    let version = semver::Version::new(1, 2, 0);
    let opened = w.wallet.content_key("acme/thermal", &version, &root, T0 + DAY).unwrap();
    assert_eq!(opened.as_bytes(), content_key.as_bytes());
    let err = w.wallet.content_key("acme/thermal", &version, &[9; 32], T0 + DAY).err().unwrap();
    assert!(err.to_string().contains("carries the content key"), "{err}");

    w.issuer.revoke(&license.license_id, "refund", T0 + 200).unwrap();
    w.wallet.accept_crl(&w.issuer.crl(T0 + 200).unwrap()).unwrap();
    let err = w.wallet.content_key("acme/thermal", &version, &root, T0 + 2 * DAY).err().unwrap();
    assert_eq!(err.code(), "license-revoked", "{err}");
}

/// A token moves to another wallet without the issuer; the recipient redeems it like any
/// other, and only once in total.
#[test]
fn transferred_tokens_leave_the_sender_and_redeem_for_the_recipient() {
    let w = world();
    buy(&w, 2);
    let bob = Wallet::open(&w._tmp.path().join("bob")).unwrap();
    let gift = w._tmp.path().join("gift.sealed");
    let moved =
        w.wallet.transfer("acme/thermal", Some("standard"), &bob.receive_key().unwrap(), &gift).unwrap();
    assert_eq!((moved.package.as_str(), moved.tier.as_str()), ("acme/thermal", "standard"));
    assert_eq!(w.wallet.token_counts().unwrap(), vec![("acme/thermal".into(), "standard".into(), 1)]);

    // Only Bob's wallet opens it.
    let carol = Wallet::open(&w._tmp.path().join("carol")).unwrap();
    let sealed = std::fs::read(&gift).unwrap();
    assert_eq!(carol.receive(&sealed).unwrap_err().code(), "sealed-box-invalid");
    bob.receive(&sealed).unwrap();
    assert_eq!(bob.token_counts().unwrap(), vec![("acme/thermal".into(), "standard".into(), 1)]);
    let request = bob.redeem("acme/thermal").unwrap();
    let license = bob.install(&w.issuer.redeem(&request, T0 + 10).unwrap()).unwrap();
    assert_eq!(license.tier, "standard");
    bob.verify("acme/thermal", None, None, T0 + DAY).unwrap();

    // Receiving the same gift twice gives one token back, which the issuer then refuses.
    bob.receive(&sealed).unwrap();
    let again = bob.redeem("acme/thermal").unwrap();
    assert_eq!(w.issuer.redeem(&again, T0 + 20).unwrap_err().code(), "token-spent");
    // The sender cannot give a token it no longer has twice over the same output file.
    let err = w.wallet.transfer("acme/thermal", None, &bob.receive_key().unwrap(), &gift).unwrap_err();
    assert_eq!(err.code(), "io", "{err}");
    assert_eq!(w.wallet.token_counts().unwrap().len(), 1, "a failed transfer keeps the token");
}

/// Renewal spends the next token of the same tier into a license with fresh holder keys.
#[test]
fn renewal_uses_a_fresh_token_and_fresh_holder_keys() {
    let w = world();
    let err = w.wallet.renew("acme/thermal", T0).unwrap_err();
    assert!(err.to_string().contains("no license"), "{err}");
    buy(&w, 2);
    let first = license(&w);
    let (request, left) = w.wallet.renew("acme/thermal", T0 + 100).unwrap();
    assert!(left > 0 && left <= first.not_after - T0);
    let second = w.wallet.install(&w.issuer.redeem(&request, T0 + 200).unwrap()).unwrap();
    assert_eq!(second.tier, first.tier);
    assert_ne!(second.holder_key, first.holder_key);
    assert_ne!(second.license_id, first.license_id);
    assert!(w.wallet.token_counts().unwrap().is_empty());
    assert_eq!(w.wallet.renew("acme/thermal", T0 + 300).unwrap_err().code(), "wallet");
}
