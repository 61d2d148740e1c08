//! Purchase, redemption, offline verification and revocation end to end
//! (licensing.md §4–§5).
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use escx::Fault as _;
use escx_licensing::messages::{SealedLicense, SealedRedeemRequest, SealedTransfer};
use escx_manifest::Micros;
use escx_store::Sql;
use std::path::Path;
use std::sync::{Arc, Barrier};

use std::path::PathBuf;

use escx::keyfile::Protection;
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx_licensing::issuer::{Issuer, Offer};
use escx_licensing::messages::{BundleChain, TokenRequest};
use escx_licensing::poprf::IssuerKey;
use escx_licensing::trust::Trust;
use escx_licensing::verify;
use escx_licensing::wallet::Wallet;

const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const DAY: u64 = 86_400;

struct World {
    _tmp: tempfile::TempDir,
    issuer: Issuer,
    bundle: BundleChain,
    wallet: Wallet,
    publisher: SecretKey,
    /// What the licensed program ships with: the issuer it accepts.
    trust: Trust,
}

/// An issuer selling acme/thermal in two tiers, on behalf of `publisher` (which, being the
/// first, now owns the acme/* scope).
fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let issuer =
        Issuer::init(&tmp.path().join("issuer"), "Demo Licensing", &Protection::Unencrypted, T0).unwrap();
    let publisher = SecretKey::generate();
    for tier in ["standard", "premium"] {
        issuer.add_offer(&offer(tier), &[publisher.id()], T0).unwrap();
    }
    let bundle = issuer.bundle(T0).unwrap();
    let wallet = Wallet::open(&tmp.path().join("wallet")).unwrap();
    let trust = Trust::chain(&bundle);
    World { _tmp: tmp, issuer, bundle, wallet, publisher, trust }
}

/// acme/thermal's offer in `tier`: 49.00 USD a month, feature `plots`, 5 seats.
fn offer(tier: &str) -> Offer {
    Offer {
        package: "acme/thermal".parse().unwrap(),
        tier: tier.into(),
        price_micros: Micros(49_000_000),
        currency: "USD".into(),
        unit: "month".into(),
        features: vec!["plots".into()],
        seats: Some(5),
        terms: None,
    }
}

const THERMAL_MANIFEST: &str = "[package]\nname = \"acme/thermal\"\nversion = \"1.2.0\"\n\n[features]\nplots = []\n\n\
    [pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\n[[pricing.tier]]\nname = \"standard\"\nprice = \"49.00\"\n\
    unit = \"month\"\nseats = 5\nfeatures = [\"plots\"]\n";

/// Packs `manifest` (plus one payload file) in a fresh directory under the world's
/// temporary directory, signed by `key`, its payload encrypted to `issuer` when given.
fn pack(
    w: &World,
    name: &str,
    manifest: &str,
    key: &SecretKey,
    issuer: Option<&escx::kem::KemPublicKey>,
) -> PathBuf {
    let dir = w._tmp.path().join(name);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/model.py"), format!("# {name}\n")).unwrap();
    let out = w._tmp.path().join(format!("{name}.escx"));
    let options = escx::pack::PackOptions { signed_at: Some(T0), encrypt_for: issuer, ..Default::default() };
    escx::pack::pack_dir(&dir, &out, &[key], &options).unwrap();
    out
}

fn trust(key: &SecretKey) -> TrustPolicy {
    TrustPolicy::from_keys(vec![key.public_key().clone()])
}

fn check_proof(
    proof: &[u8],
    bundle: &BundleChain,
    challenge: &[u8],
    now: u64,
) -> Result<(), escx_licensing::Error> {
    let check = verify::ProofCheck {
        issuer: bundle.head(),
        crl: None,
        package: "acme/thermal",
        version: None,
        challenge,
        now: escx::UnixSeconds(now),
    };
    verify::check_proof(proof, &check).map(|_| ())
}

fn buy(world: &World, count: usize) {
    let request =
        world.wallet.request(&world.bundle, &"acme/thermal".parse().unwrap(), "standard", count, T0).unwrap();
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
    assert_eq!(
        w.wallet.token_counts().unwrap(),
        vec![("acme/thermal".parse().unwrap(), "standard".into(), 3)]
    );
    let license = license(&w);
    assert_eq!(license.features, vec!["plots"]);
    let verified = w
        .wallet
        .verify(&w.trust, "acme/thermal", Some(&semver::Version::new(1, 2, 0)), None, T0 + DAY)
        .unwrap();
    let names: Vec<&str> = verified.checks.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        ["issuer", "signature", "clock", "window", "revocation", "crl-age", "package", "possession"]
    );
    let sales = w.issuer.sales().unwrap();
    assert_eq!((sales.len(), sales[0].count, sales[0].total_micros.0), (1, 3, 147_000_000));
    // Proof of possession for a third party holding only the issuer bundle.
    let proof = w.wallet.prove("acme/thermal", b"a fresh challenge").unwrap();
    check_proof(&proof, &w.bundle, b"a fresh challenge", (T0 + DAY).0).unwrap();
    let err = check_proof(&proof, &w.bundle, b"another challenge", (T0 + DAY).0).unwrap_err();
    assert_eq!(err.code(), "possession-invalid");
}

/// Copies of the wallet holding the same unspent token (a copied or stolen token): each
/// makes its own redemption request with its own fresh holder keys.
fn requests_spending_one_token(w: &World, copies: usize) -> Vec<SealedRedeemRequest> {
    (0..copies)
        .map(|i| {
            let copy = w._tmp.path().join(format!("wallet-copy-{i}"));
            copy_dir(&w.wallet_dir(), &copy);
            Wallet::open(&copy).unwrap().redeem("acme/thermal").unwrap()
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn licenses_recorded(w: &World) -> i64 {
    w.issuer.database().one("SELECT count(*) FROM licenses", &[]).unwrap().int(0).unwrap()
}

#[test]
fn a_token_redeems_once() {
    let w = world();
    buy(&w, 1);
    let requests = requests_spending_one_token(&w, 2);
    let answer = w.issuer.redeem(&requests[0], T0).unwrap();
    let err = w.issuer.redeem(&requests[1], T0).unwrap_err();
    assert_eq!(err.code(), "token-spent", "{err}");
    // The first request again (its answer was lost) gets the same answer, spends nothing.
    assert_eq!(w.issuer.redeem(&requests[0], T0 + 60).unwrap(), answer);
    assert_eq!(licenses_recorded(&w), 1);
}

/// A retry may be sealed anew (new KEM randomness) around the same request: it is the
/// same redemption, answered the same.
#[test]
fn a_resealed_retry_gets_the_stored_answer() {
    let w = world();
    buy(&w, 1);
    let sealed = w.wallet.redeem("acme/thermal").unwrap();
    let answer = w.issuer.redeem(&sealed, T0).unwrap();
    let request = w.issuer.open_redeem_request(&sealed).unwrap();
    let resealed = SealedRedeemRequest::from_bytes(
        escx::kem::seal(
            w.issuer.kem_key(),
            escx_licensing::messages::PURPOSE_REDEEM,
            &escx::cbor::encode(&request),
        )
        .unwrap(),
    );
    assert_ne!(resealed, sealed);
    assert_eq!(w.issuer.redeem(&resealed, T0 + 5).unwrap(), answer);
    w.wallet.install(&answer).unwrap();
    assert_eq!(licenses_recorded(&w), 1);
}

#[test]
fn concurrent_double_spend_succeeds_exactly_once() {
    let w = world();
    buy(&w, 1);
    let requests = Arc::new(requests_spending_one_token(&w, 8));
    let dir = Arc::new(w.issuer.dir().to_path_buf());
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (requests, dir, barrier) = (Arc::clone(&requests), Arc::clone(&dir), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // Each thread is its own issuer process: its own SQLite connection.
                let issuer = Issuer::open(&dir, || None).unwrap();
                barrier.wait();
                issuer.redeem(&requests[i], T0).map(|_| ()).map_err(|e| e.code())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().filter(|r| r.is_err()).all(|r| *r == Err("token-spent")), "{results:?}");
    assert_eq!(licenses_recorded(&w), 1);
}

/// Concurrent retries of one request (a client retrying on a timeout) all get the one
/// answer; one license is recorded.
#[test]
fn concurrent_retries_of_one_request_get_one_answer() {
    let w = world();
    buy(&w, 1);
    let sealed = Arc::new(w.wallet.redeem("acme/thermal").unwrap());
    let dir = Arc::new(w.issuer.dir().to_path_buf());
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (sealed, dir, barrier) = (Arc::clone(&sealed), Arc::clone(&dir), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let issuer = Issuer::open(&dir, || None).unwrap();
                barrier.wait();
                issuer.redeem(&sealed, T0).unwrap()
            })
        })
        .collect();
    let answers: Vec<SealedLicense> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]), "retries got different answers");
    assert_eq!(licenses_recorded(&w), 1);
    w.wallet.install(&answers[0]).unwrap();
}

/// A purchase retried after a lost response, in turn or concurrently, records one sale and
/// gets one answer.
#[test]
fn a_retried_purchase_records_one_sale() {
    let w = world();
    let request = w.wallet.request(&w.bundle, &"acme/thermal".parse().unwrap(), "standard", 3, T0).unwrap();
    let first = w.issuer.issue(&request, T0).unwrap();
    let dir = Arc::new(w.issuer.dir().to_path_buf());
    let request = Arc::new(request);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (dir, request) = (Arc::clone(&dir), Arc::clone(&request));
            std::thread::spawn(move || Issuer::open(&dir, || None).unwrap().issue(&request, T0 + 30).unwrap())
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), first);
    }
    let sales = w.issuer.sales().unwrap();
    assert_eq!((sales.len(), sales[0].count), (1, 3));
    assert_eq!(w.wallet.finalize(&first).unwrap(), 3);
    // Another purchase of the same kind (fresh blinds) is another sale.
    buy(&w, 1);
    assert_eq!(w.issuer.sales().unwrap().len(), 2);
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
    let check = |now: u64| {
        w.wallet
            .verify(&w.trust, "acme/thermal", None, None, escx::UnixSeconds(now))
            .map(|_| ())
            .map_err(|e| e.code())
    };

    assert_eq!(check((license.not_before - 1).0), Err("license-not-yet-valid"));
    assert_eq!(check((license.not_after + 1).0), Err("license-expired"));
    // The clock has now seen not_after + 1; going back a day is a rollback.
    assert_eq!(check((license.not_after + 1 - DAY).0), Err("clock-rolled-back"));
    assert_eq!(
        w.wallet
            .verify(&w.trust, "acme/other", None, None, license.not_after + 1)
            .map(|_| ())
            .map_err(|e| e.code()),
        Err("no-license")
    );
}

#[test]
fn revocation_and_stale_crls() {
    let w = world();
    buy(&w, 1);
    let license = license(&w);
    let crl_one = w.issuer.crl(T0).unwrap();
    w.wallet.verify(&w.trust, "acme/thermal", None, Some(&crl_one), T0 + 100).unwrap();
    w.issuer.revoke(&license.license_id, "chargeback", T0 + 200).unwrap();
    let crl_two = w.issuer.crl(T0 + 200).unwrap();
    let err = w.wallet.verify(&w.trust, "acme/thermal", None, Some(&crl_two), T0 + 300).unwrap_err();
    assert_eq!(err.code(), "license-revoked", "{err}");
    assert!(err.to_string().contains("chargeback"));
    // An older CRL (without the revocation) given with the check changes nothing: the
    // newer one stays in force, so the revocation sticks...
    let err = w.wallet.verify(&w.trust, "acme/thermal", None, Some(&crl_one), T0 + 400).unwrap_err();
    assert_eq!(err.code(), "license-revoked", "{err}");
    // ...and a program that ships the older CRL does not lock out a valid license (it
    // failed with crl-stale before).
    buy(&w, 1);
    let valid = crate::license(&w);
    let verified = w.wallet.verify(&w.trust, "acme/thermal", None, Some(&crl_one), T0 + 500).unwrap();
    assert_eq!(verified.license.license_id, valid.license_id);
    // Given on its own (`escx license crl`), an older CRL is still reported as such.
    assert_eq!(w.wallet.accept_crl(&crl_one).unwrap_err().code(), "crl-stale");
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
    let err = w.wallet.verify(&w.trust, "acme/thermal", None, None, T0 + 100).unwrap_err();
    assert_eq!(err.code(), "license-signature", "{err}");

    let other = world();
    let proof_world = world();
    buy(&proof_world, 1);
    license_for(&proof_world);
    let proof = proof_world.wallet.prove("acme/thermal", b"sixteen byte challenge").unwrap();
    let err = check_proof(&proof, &other.bundle, b"sixteen byte challenge", (T0 + 100).0).unwrap_err();
    assert_eq!(err.code(), "license-wrong-issuer", "{err}");
}

/// Signature first (licensing.md §5.5 step 1): a certificate altered so that its payload
/// no longer decodes is license-signature, not message-invalid; and every unusable CRL, a
/// foreign or truncated one included, is crl-invalid (§9).
#[test]
fn an_undecodable_certificate_fails_its_signature_and_every_bad_crl_is_crl_invalid() {
    let w = world();
    buy(&w, 1);
    let license = license(&w);
    let path = w.wallet_dir().join("licenses").join(format!("{}.cbor", hex::encode(&license.license_id)));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(7).position(|w| w == b"package").unwrap();
    bytes[at + 6] = b'x'; // an unknown key: the payload no longer decodes
    std::fs::write(&path, &bytes).unwrap();
    let err = w.wallet.verify(&w.trust, "acme/thermal", None, None, T0 + 100).unwrap_err();
    assert_eq!(err.code(), "license-signature", "{err}");

    let foreign = world().issuer.crl(T0).unwrap();
    assert_eq!(w.wallet.accept_crl(&foreign).unwrap_err().code(), "crl-invalid");
    let crl = w.issuer.crl(T0).unwrap();
    assert_eq!(w.wallet.accept_crl(&crl[..crl.len() / 2]).unwrap_err().code(), "crl-invalid");
    w.wallet.accept_crl(&crl).unwrap();
}

fn license_for(world: &World) {
    license(world);
}

#[test]
fn the_issuer_rejects_unknown_offers_and_tampered_sealed_requests() {
    let w = world();
    let request = w.wallet.request(&w.bundle, &"acme/unsold".parse().unwrap(), "standard", 1, T0).unwrap();
    assert_eq!(w.issuer.issue(&request, T0).unwrap_err().code(), "not-for-sale");
    buy(&w, 1);
    let mut sealed = w.wallet.redeem("acme/thermal").unwrap().into_bytes();
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    let sealed = SealedRedeemRequest::from_bytes(sealed);
    assert_eq!(w.issuer.redeem(&sealed, T0).unwrap_err().code(), "sealed-box-invalid");
}

/// Licensed content: a license issued after the package is registered carries its content
/// key, sealed to the holder; the wallet hands it out only while the license verifies.
#[test]
fn licenses_carry_content_keys_only_while_valid() {
    let w = world();
    let package = pack(&w, "thermal", THERMAL_MANIFEST, &w.publisher, Some(w.issuer.kem_key()));
    let registration = w.issuer.register_package(&package, &trust(&w.publisher), T0).unwrap();
    assert!(registration.content_key && !registration.claimed);
    let root = registration.root;
    // Sealed to another issuer: refused by name.
    let foreign = escx::kem::KemSecretKey::generate();
    let elsewhere = pack(&w, "elsewhere", THERMAL_MANIFEST, &w.publisher, Some(foreign.public_key()));
    let err = w.issuer.register_package(&elsewhere, &trust(&w.publisher), T0).unwrap_err();
    assert_eq!(err.code(), "sealed-box-invalid", "{err}");

    buy(&w, 1);
    let license = license(&w);
    assert_eq!(license.wrapped_keys.len(), 1);
    // Wrapped to this license's holder key only, and bound to the root: another holder key
    // does not open it, nor does the right purpose with another root.
    let stranger = escx::kem::KemSecretKey::generate();
    let purpose = escx_licensing::issuer::PURPOSE_WRAPPED_KEY;
    assert!(escx::kem::open_bound(&stranger, purpose, &root, &license.wrapped_keys[0].sealed).is_err());
    let version = semver::Version::new(1, 2, 0);
    let opened = w.wallet.content_key("acme/thermal", &version, &root, T0 + DAY).unwrap();
    let mut reader = escx::container::PackageReader::open_file(&package).unwrap();
    reader.check_content_key(&opened).unwrap();
    let err = w.wallet.content_key("acme/thermal", &version, &[9; 32], T0 + DAY).err().unwrap();
    assert!(err.to_string().contains("carries the content key"), "{err}");

    w.issuer.revoke(&license.license_id, "refund", T0 + 200).unwrap();
    w.wallet.accept_crl(&w.issuer.crl(T0 + 200).unwrap()).unwrap();
    let err = w.wallet.content_key("acme/thermal", &version, &root, T0 + 2 * DAY).err().unwrap();
    assert_eq!(err.code(), "license-revoked", "{err}");
}

/// Issue 27 (5): a current subscriber could not install the next version, because its
/// license carries only the keys registered before it was issued. A key request signed by
/// the holder key gets the later file's key wrapped to the license, spending nothing. The
/// attacks: another holder key signing the request, a revoked or expired license, a
/// certificate of another issuer, a file of another package, a response for another wallet.
#[test]
fn a_license_gets_the_key_of_a_later_version_without_another_token() {
    let w = world();
    let first = pack(&w, "thermal", THERMAL_MANIFEST, &w.publisher, Some(w.issuer.kem_key()));
    w.issuer.register_package(&first, &trust(&w.publisher), T0).unwrap();
    buy(&w, 2);
    let license = license(&w);
    assert_eq!(license.wrapped_keys.len(), 1);
    let tokens = || w.wallet.token_counts().unwrap().iter().map(|(_, _, n)| n).sum::<usize>();
    assert_eq!(tokens(), 1);
    let next = pack(
        &w,
        "thermal-next",
        &THERMAL_MANIFEST.replace("1.2.0", "1.3.0"),
        &w.publisher,
        Some(w.issuer.kem_key()),
    );
    let root = w.issuer.register_package(&next, &trust(&w.publisher), T0 + 20).unwrap().root;
    let version = semver::Version::new(1, 3, 0);
    let now = T0 + DAY;
    let err = w.wallet.content_key("acme/thermal", &version, &root, now).err().unwrap();
    assert_eq!(err.code(), "content-key-required");

    let request = w.wallet.key_request("acme/thermal", &version, &root, now).unwrap();
    let sales = w.issuer.sales().unwrap().len();
    let answer = w.issuer.content_key_for(&request, now).unwrap();
    assert_eq!(w.issuer.sales().unwrap().len(), sales, "nothing is bought");
    // A retry is answered again.
    assert!(w.issuer.content_key_for(&request, now).is_ok());
    let (id, kept) = w.wallet.add_key(&answer).unwrap();
    assert_eq!((id, kept), (hex::encode(&license.license_id), hex::encode(root)));
    let key = w.wallet.content_key("acme/thermal", &version, &root, now).unwrap();
    escx::container::PackageReader::open_file(&next).unwrap().check_content_key(&key).unwrap();
    assert_eq!(tokens(), 1, "no token was spent");

    // The request must be signed by the license's holder key.
    let envelope = escx::envelope::Envelope::from_cbor(&request).unwrap();
    let forged = escx::envelope::Envelope::seal(
        escx_licensing::messages::CONTEXT_KEY_REQUEST,
        envelope.payload_unverified().to_vec(),
        &SecretKey::generate(),
    )
    .to_cbor();
    assert_eq!(w.issuer.content_key_for(&forged, now).unwrap_err().code(), "key-request-invalid");
    // Another package's file, under this license: none of its keys.
    let other = w.issuer.content_key_for(&replace(&request, &root, &[7; 32]), now).unwrap_err();
    assert_eq!(other.code(), "key-request-invalid", "a changed payload breaks the holder's signature");
    // Expired.
    let expired = w.issuer.content_key_for(&request, license.not_after).unwrap_err();
    assert_eq!(expired.code(), "license-expired");
    // Another issuer's license.
    let elsewhere =
        Issuer::init(&w._tmp.path().join("other"), "Other", &Protection::Unencrypted, T0).unwrap();
    assert_eq!(elsewhere.content_key_for(&request, now).unwrap_err().code(), "license-wrong-issuer");
    // A response is of use only to the wallet holding the license.
    let stranger = Wallet::open(&w._tmp.path().join("stranger")).unwrap();
    assert_eq!(stranger.add_key(&answer).unwrap_err().code(), "unknown-license");
    // Revoked: refused at once, whatever the wallet's CRL.
    w.issuer.revoke(&license.license_id, "refund", T0 + 200).unwrap();
    assert_eq!(w.issuer.content_key_for(&request, now).unwrap_err().code(), "license-revoked");
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
    assert_eq!(
        w.wallet.token_counts().unwrap(),
        vec![("acme/thermal".parse().unwrap(), "standard".into(), 1)]
    );

    // Only Bob's wallet opens it.
    let carol = Wallet::open(&w._tmp.path().join("carol")).unwrap();
    let sealed = SealedTransfer::from_bytes(std::fs::read(&gift).unwrap());
    assert_eq!(carol.receive(&sealed).unwrap_err().code(), "sealed-box-invalid");
    bob.receive(&sealed).unwrap();
    assert_eq!(bob.token_counts().unwrap(), vec![("acme/thermal".parse().unwrap(), "standard".into(), 1)]);
    let request = bob.redeem("acme/thermal").unwrap();
    let license = bob.install(&w.issuer.redeem(&request, T0 + 10).unwrap()).unwrap();
    assert_eq!(license.tier, "standard");
    bob.verify(&w.trust, "acme/thermal", None, None, T0 + DAY).unwrap();

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
    assert!(
        matches!(&err, escx_licensing::Error::NoLicense { package } if package == "acme/thermal"),
        "{err}"
    );
    buy(&w, 2);
    let first = license(&w);
    let (request, left) = w.wallet.renew("acme/thermal", T0 + 100).unwrap();
    assert!(left > 0 && left <= first.not_after - T0);
    let second = w.wallet.install(&w.issuer.redeem(&request, T0 + 200).unwrap()).unwrap();
    assert_eq!(second.tier, first.tier);
    assert_ne!(second.holder_key, first.holder_key);
    assert_ne!(second.license_id, first.license_id);
    assert!(w.wallet.token_counts().unwrap().is_empty());
    let err = w.wallet.renew("acme/thermal", T0 + 300).unwrap_err();
    assert_eq!(err.code(), "no-token");
    assert!(matches!(&err, escx_licensing::Error::NoToken { tier: Some(_), .. }), "{err}");
}

/// The reported attacks on content keys, played at the issuer (licensing.md §4.1, §8.1).
mod content_key_attacks {
    use super::*;
    use escx::container::{FLAG_ENCRYPTED, PackageReader, RawSection, SectionType, assemble};
    use escx::content::{ContentBinding, ContentKey, ContentKeySection};

    const CHEAP_MANIFEST: &str = "[package]\nname = \"mallory/cheap\"\nversion = \"0.1.0\"\n\n\
        [pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\n[[pricing.tier]]\nname = \"standard\"\n\
        price = \"0.99\"\nunit = \"one-off\"\n";

    /// A package assembled by hand: `manifest`, a payload encrypted under `key`, and a
    /// content-key section (given, or sealed honestly for this package).
    fn crafted(
        w: &World,
        name: &str,
        manifest: &str,
        key: &ContentKey,
        section: Option<Vec<u8>>,
        signer: &SecretKey,
    ) -> PathBuf {
        crafted_sealing(w, name, manifest, key, key, section, signer)
    }

    /// [`crafted`], with `sealed_key` (perhaps not the payload's) in the content-key section.
    fn crafted_sealing(
        w: &World,
        name: &str,
        manifest: &str,
        key: &ContentKey,
        sealed_key: &ContentKey,
        section: Option<Vec<u8>>,
        signer: &SecretKey,
    ) -> PathBuf {
        let tar = {
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(5);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, "cheap.txt", &b"cheap"[..]).unwrap();
            builder.into_inner().unwrap()
        };
        let mut stored = Vec::new();
        escx::content::encrypt(key, &tar[..], &mut stored).unwrap();
        let section = section.unwrap_or_else(|| {
            let header = escx::header::ManifestHeader::parse(manifest.as_bytes()).unwrap();
            let binding = ContentBinding {
                name: header.package.name.clone(),
                version: header.package.version.to_string(),
                payload_hash: *blake3::hash(&stored).as_bytes(),
            };
            ContentKeySection::seal(sealed_key, w.issuer.kem_key(), &binding).unwrap().encode()
        });
        let bytes = assemble(
            &[
                RawSection {
                    kind: SectionType::Manifest,
                    flags: 0,
                    stored: manifest.as_bytes().to_vec(),
                    plain_length: manifest.len() as u64,
                },
                RawSection {
                    kind: SectionType::Payload,
                    flags: FLAG_ENCRYPTED,
                    stored,
                    plain_length: tar.len() as u64,
                },
                RawSection {
                    kind: SectionType::ContentKey,
                    flags: 0,
                    plain_length: section.len() as u64,
                    stored: section,
                },
            ],
            &[signer],
            T0,
        );
        let path = w._tmp.path().join(format!("{name}.escx"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The victim's encrypted package, registered, and its content key as any paying
    /// customer of it obtains it (through a license).
    fn victim(w: &World) -> (PathBuf, ContentKey) {
        let package = pack(w, "victim", THERMAL_MANIFEST, &w.publisher, Some(w.issuer.kem_key()));
        w.issuer.register_package(&package, &trust(&w.publisher), T0).unwrap();
        buy(w, 1);
        license(w);
        let root = *PackageReader::open_file(&package).unwrap().root();
        let key =
            w.wallet.content_key("acme/thermal", &semver::Version::new(1, 2, 0), &root, T0 + DAY).unwrap();
        (package, key)
    }

    #[test]
    fn a_copied_content_key_section_does_not_register() {
        let w = world();
        let (victim, _) = victim(&w);
        let section = {
            let bytes = std::fs::read(&victim).unwrap();
            let reader = PackageReader::open(std::io::Cursor::new(bytes.clone()), "v").unwrap();
            let entry = reader.section(SectionType::ContentKey).unwrap().clone();
            bytes[entry.offset as usize..(entry.offset + entry.stored_length) as usize].to_vec()
        };
        let mallory = SecretKey::generate();
        let copy =
            crafted(&w, "copy", CHEAP_MANIFEST, &ContentKey::generate().unwrap(), Some(section), &mallory);
        let err = w.issuer.register_package(&copy, &trust(&mallory), T0).unwrap_err();
        assert_eq!(err.code(), "sealed-box-invalid", "{err}");
        assert_eq!(
            w.issuer
                .issue(
                    &w.wallet
                        .request(&w.bundle, &"mallory/cheap".parse().unwrap(), "standard", 1, T0)
                        .unwrap(),
                    T0
                )
                .unwrap_err()
                .code(),
            "not-for-sale"
        );
    }

    #[test]
    fn a_content_key_registered_for_another_package_is_refused() {
        let w = world();
        let (_, stolen) = victim(&w);
        // Mallory bought the victim's package, learned its key, and seals that key honestly
        // for a cheap package of her own: buyers of hers would get the victim's key.
        let mallory = SecretKey::generate();
        let reuse = crafted(&w, "reuse", CHEAP_MANIFEST, &stolen, None, &mallory);
        let err = w.issuer.register_package(&reuse, &trust(&mallory), T0).unwrap_err();
        assert_eq!(err.code(), "content-key-reused", "{err}");
        assert!(err.to_string().contains("acme/thermal 1.2.0"), "{err}");
    }

    #[test]
    fn a_key_that_does_not_decrypt_the_payload_is_refused() {
        let w = world();
        let mallory = SecretKey::generate();
        let payload_key = ContentKey::generate().unwrap();
        let other_key = ContentKey::generate().unwrap();
        // The section seals other_key, bound correctly, but the payload was encrypted
        // under payload_key: the issuer would hand out a useless (or someone else's) key.
        let path = crafted_sealing(&w, "mismatch", CHEAP_MANIFEST, &payload_key, &other_key, None, &mallory);
        let err = w.issuer.register_package(&path, &trust(&mallory), T0).unwrap_err();
        assert_eq!(err.code(), "decryption-failed", "{err}");
    }

    #[test]
    fn another_key_cannot_sell_or_reprice_an_owned_package() {
        let w = world();
        let (_, _) = victim(&w);
        // Mallory packs her own acme/thermal at a lower price, signed by her key.
        let mallory = SecretKey::generate();
        let cheap = THERMAL_MANIFEST.replace("49.00", "0.01");
        let fake = pack(&w, "fake", &cheap, &mallory, Some(w.issuer.kem_key()));
        let err = w.issuer.register_package(&fake, &trust(&mallory), T0).unwrap_err();
        assert_eq!(err.code(), "package-owned", "{err}");
        assert!(err.to_string().contains(&w.publisher.id().to_string()), "{err}");
        let offer = Offer {
            package: "acme/new-thing".parse().unwrap(),
            tier: "standard".into(),
            price_micros: Micros(1),
            currency: "USD".into(),
            unit: "month".into(),
            features: vec![],
            seats: None,
            terms: None,
        };
        assert_eq!(w.issuer.add_offer(&offer, &[mallory.id()], T0).unwrap_err().code(), "package-owned");
        // The victim's offer and content keys are untouched.
        let request =
            w.wallet.request(&w.bundle, &"acme/thermal".parse().unwrap(), "standard", 1, T0).unwrap();
        w.issuer.issue(&request, T0).unwrap();
        assert_eq!(w.issuer.sales().unwrap().last().unwrap().unit_price_micros, Micros(49_000_000));
        // The owner may re-register and re-price.
        let repriced = pack(&w, "repriced", &THERMAL_MANIFEST.replace("49.00", "39.00"), &w.publisher, None);
        let registration = w.issuer.register_package(&repriced, &trust(&w.publisher), T0).unwrap();
        assert_eq!(registration.offers[0].price_micros, Micros(39_000_000));
    }
}

/// The issuer's store holds sales, spent tokens and content keys: its directory is 0700
/// and its database, WAL and shared-memory files are 0600 from the start.
#[cfg(unix)]
#[test]
fn issuer_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let w = world();
    buy(&w, 1);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = w.issuer.dir();
    assert_eq!(mode(dir), 0o700);
    for name in ["issuer.sqlite", "issuer.sqlite-wal", "issuer.sqlite-shm", "kem.key", "signing.key"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
}

/// A store written by the first release opens: it is migrated in one transaction, and its
/// unbound content keys are set aside, never handed out again.
#[test]
fn a_version_1_issuer_store_is_migrated() {
    let w = world();
    let dir = w.issuer.dir().to_path_buf();
    drop(w.issuer);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("issuer.sqlite{suffix}")));
    }
    let db = rusqlite::Connection::open(dir.join("issuer.sqlite")).unwrap();
    db.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE epochs (epoch INTEGER PRIMARY KEY, secret BLOB NOT NULL, public BLOB NOT NULL,
             not_before INTEGER NOT NULL, not_after INTEGER NOT NULL);
         CREATE TABLE catalog (package TEXT NOT NULL, tier TEXT NOT NULL, price_micros INTEGER NOT NULL,
             currency TEXT NOT NULL, unit TEXT NOT NULL, features TEXT NOT NULL, seats INTEGER,
             PRIMARY KEY (package, tier));
         CREATE TABLE content_keys (package_root BLOB PRIMARY KEY, package TEXT NOT NULL,
             version TEXT NOT NULL, sealed BLOB NOT NULL);
         CREATE TABLE sales (id INTEGER PRIMARY KEY AUTOINCREMENT, package TEXT NOT NULL, tier TEXT NOT NULL,
             epoch INTEGER NOT NULL, count INTEGER NOT NULL, unit_price_micros INTEGER NOT NULL,
             total_micros INTEGER NOT NULL, currency TEXT NOT NULL, at INTEGER NOT NULL);
         CREATE TABLE spent (token_id BLOB PRIMARY KEY, spent_at INTEGER NOT NULL);
         CREATE TABLE licenses (license_id BLOB PRIMARY KEY, package TEXT NOT NULL, tier TEXT NOT NULL,
             not_before INTEGER NOT NULL, not_after INTEGER NOT NULL);
         CREATE TABLE revocations (license_id BLOB PRIMARY KEY, reason TEXT NOT NULL, revoked_at INTEGER NOT NULL);
         INSERT INTO meta VALUES ('name', 'Old'), ('crl_number', '4');
         INSERT INTO content_keys VALUES (x'07', 'acme/thermal', '1.0.0', x'00');
         INSERT INTO spent VALUES (x'01', 5);",
    )
    .unwrap();
    let key = IssuerKey::generate().unwrap();
    db.execute(
        "INSERT INTO epochs VALUES (1, ?1, ?2, ?3, ?4)",
        rusqlite::params![
            &key.secret_bytes()[..],
            &key.public_key()[..],
            T0.0 as i64,
            (T0 + 90 * DAY).0 as i64
        ],
    )
    .unwrap();
    drop(db);
    let issuer = Issuer::open(&dir, || None).unwrap();
    let db = issuer.database();
    let schema =
        db.one("SELECT value FROM meta WHERE key = 'schema'", &[]).unwrap().text(0).unwrap().to_owned();
    assert_eq!(schema, escx_licensing::issuer::SCHEMA_VERSION.to_string());
    let legacy = db.one("SELECT count(*) FROM legacy_content_keys", &[]).unwrap().int(0).unwrap();
    let served = db.one("SELECT count(*) FROM content_keys", &[]).unwrap().int(0).unwrap();
    assert_eq!((legacy, served), (1, 0));
    // The CRL numbering carries on; the old spent token stays spent.
    let crl = issuer.crl(T0).unwrap();
    let payload: escx_licensing::messages::CrlPayload = escx::cbor::decode_exact(
        escx::envelope::Envelope::from_cbor(&crl).unwrap().payload_unverified(),
        "crl",
    )
    .unwrap();
    assert_eq!(payload.number, 5);
    let spent = db.one("SELECT count(*) FROM spent WHERE token_id = x'01'", &[]).unwrap().int(0).unwrap();
    assert_eq!(spent, 1);
}

/// CRL numbers are taken inside a write transaction: issuer processes signing at once get
/// distinct numbers; a wallet takes only a strictly greater number (the same file again is
/// a no-op, another list under a number it holds is refused).
#[test]
fn crl_numbers_are_unique_and_wallets_take_only_newer_ones() {
    let w = world();
    let dir = Arc::new(w.issuer.dir().to_path_buf());
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (dir, barrier) = (Arc::clone(&dir), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let issuer = Issuer::open(&dir, || None).unwrap();
                barrier.wait();
                issuer.crl(T0).unwrap()
            })
        })
        .collect();
    let crls: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let number = |crl: &[u8]| -> u64 {
        let payload: escx_licensing::messages::CrlPayload = escx::cbor::decode_exact(
            escx::envelope::Envelope::from_cbor(crl).unwrap().payload_unverified(),
            "crl",
        )
        .unwrap();
        payload.number
    };
    let mut numbers: Vec<u64> = crls.iter().map(|c| number(c)).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
    let newest = crls.iter().find(|c| number(c) == 6).unwrap();
    w.wallet.add_issuer(&w.bundle).unwrap();
    w.wallet.accept_crl(newest).unwrap();
    w.wallet.accept_crl(newest).unwrap();
    // Another list signed under number 6 (a second signing of the same number).
    let forged = {
        let signing = escx::keyfile::read_secret_key(&w.issuer.dir().join("signing.key"), || None).unwrap();
        let payload =
            escx_licensing::messages::CrlPayload { v: 1, number: 6, issued_at: T0 + 1, revoked: vec![] };
        escx::envelope::Envelope::seal(
            escx_licensing::messages::CONTEXT_CRL,
            escx::cbor::encode(&payload),
            &signing,
        )
        .to_cbor()
    };
    assert_eq!(w.wallet.accept_crl(&forged).unwrap_err().code(), "crl-stale");
    // Given with a check, it is refused too: an older list is merely ignored, a second
    // list under the held number is the issuer's equivocation.
    buy(&w, 1);
    license(&w);
    let err = w.wallet.verify(&w.trust, "acme/thermal", None, Some(&forged), T0 + 100).unwrap_err();
    assert_eq!(err.code(), "crl-stale", "{err}");
    let older = crls.iter().find(|c| number(c) == 5).unwrap();
    assert_eq!(w.wallet.accept_crl(older).unwrap_err().code(), "crl-stale");
}

/// An issuer of an earlier version kept each epoch's POPRF secret key in its database. The
/// first open moves it into `poprf.key` (sealed as `signing.key` is) and erases it from the
/// database; the epoch keeps its key, later epochs derive from the file's seed, and a copy
/// of the directory without that file, or with another issuer's, refuses to open rather
/// than answer with a key customers would reject (licensing.md §2.2, §4).
#[test]
fn legacy_epoch_keys_move_out_of_the_database_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("issuer");
    let passphrase = || Some(zeroize::Zeroizing::new("correct horse".to_owned()));
    let cheap = escx::keyfile::Argon2Params { m_cost_kib: 256, t_cost: 1, p_cost: 1 };
    let protection = Protection::Passphrase(passphrase().unwrap(), cheap);
    drop(Issuer::init(&dir, "Old", &protection, T0).unwrap());
    // What the earlier version left: a random key stored with epoch 1, no poprf.key.
    let legacy = IssuerKey::generate().unwrap();
    let db = rusqlite::Connection::open(dir.join("issuer.sqlite")).unwrap();
    db.execute(
        "UPDATE epochs SET secret = ?1, public = ?2 WHERE epoch = 1",
        rusqlite::params![&legacy.secret_bytes()[..], &legacy.public_key()[..]],
    )
    .unwrap();
    drop(db);
    std::fs::remove_file(dir.join("poprf.key")).unwrap();
    // Another node's copy of the directory, on the same database, made before the upgrade.
    let node = tmp.path().join("node");
    std::fs::create_dir(&node).unwrap();
    for file in ["signing.key", "kem.key"] {
        std::fs::copy(dir.join(file), node.join(file)).unwrap();
    }
    std::fs::write(node.join("database.url"), dir.join("issuer.sqlite").display().to_string()).unwrap();

    let issuer = Issuer::open(&dir, passphrase).unwrap();
    let stored: Vec<i64> = issuer
        .database()
        .rows("SELECT length(secret) FROM epochs", &[])
        .unwrap()
        .iter()
        .map(|r| r.int(0).unwrap())
        .collect();
    assert_eq!(stored, [0], "the key left the database");
    let text = std::fs::read_to_string(dir.join("poprf.key")).unwrap();
    assert!(text.contains("sealed with a passphrase"), "{text}");
    assert!(escx_licensing::issuer::PoprfKeys::read(&dir, || None).is_err(), "sealed: needs the passphrase");
    // Epoch 1 still answers with its own key: a wallet checks the proof against it.
    let bundle = issuer.bundle(T0).unwrap();
    assert_eq!(bundle.head().payload.epochs[0].poprf_key.as_slice(), &legacy.public_key()[..]);
    let publisher = SecretKey::generate();
    issuer.add_offer(&offer("standard"), &[publisher.id()], T0).unwrap();
    let bundle = issuer.bundle(T0).unwrap();
    let wallet = Wallet::open(&tmp.path().join("wallet")).unwrap();
    let request = wallet.request(&bundle, &"acme/thermal".parse().unwrap(), "standard", 1, T0).unwrap();
    assert_eq!(wallet.finalize(&issuer.issue(&request, T0).unwrap()).unwrap(), 1);
    let sealed = wallet.redeem("acme/thermal").unwrap();
    wallet.install(&issuer.redeem(&sealed, T0 + 10).unwrap()).unwrap();
    // A new epoch derives from the file's seed; reopening checks every epoch's key.
    issuer.add_epoch(T0, 90 * DAY).unwrap();
    drop(issuer);
    let issuer = Issuer::open(&dir, passphrase).unwrap();
    assert_eq!(issuer.bundle(T0).unwrap().head().payload.epochs.len(), 2);
    drop(issuer);

    // The other node: without the file it refuses to open, naming the file to copy.
    let error = Issuer::open(&node, passphrase).err().unwrap();
    assert_eq!(error.code(), "poprf-key", "{error}");
    assert!(error.to_string().contains("missing"), "{error}");
    // With another issuer's file, it refuses too: the keys are not the published ones.
    let other = tmp.path().join("other");
    drop(Issuer::init(&other, "Other", &protection, T0).unwrap());
    std::fs::copy(other.join("poprf.key"), node.join("poprf.key")).unwrap();
    let error = Issuer::open(&node, passphrase).err().unwrap();
    assert_eq!(error.code(), "poprf-key", "{error}");
    assert!(error.to_string().contains("epoch 1"), "{error}");
    // With the moved file it opens and answers.
    std::fs::copy(dir.join("poprf.key"), node.join("poprf.key")).unwrap();
    let issuer = Issuer::open(&node, passphrase).unwrap();
    let request = wallet.request(&bundle, &"acme/thermal".parse().unwrap(), "standard", 1, T0).unwrap();
    assert_eq!(wallet.finalize(&issuer.issue(&request, T0).unwrap()).unwrap(), 1);
}

/// Review 2 (High 0): a customer makes an issuer of their own, sells themselves the
/// vendor's package name and installs the license in their wallet. A program that trusts
/// the vendor's issuer refuses it; only the trust the program ships decides, never what
/// the wallet holds.
#[test]
fn a_self_issued_license_is_refused() {
    let w = world();
    let rogue =
        Issuer::init(&w._tmp.path().join("rogue"), "Acme Licensing", &Protection::Unencrypted, T0).unwrap();
    rogue.add_offer(&offer("standard"), &[SecretKey::generate().id()], T0).unwrap();
    let rogue_chain = rogue.bundle(T0).unwrap();
    let request =
        w.wallet.request(&rogue_chain, &"acme/thermal".parse().unwrap(), "standard", 1, T0).unwrap();
    w.wallet.finalize(&rogue.issue(&request, T0).unwrap()).unwrap();
    let sealed = w.wallet.redeem("acme/thermal").unwrap();
    let forged = w.wallet.install(&rogue.redeem(&sealed, T0 + 10).unwrap()).unwrap();

    let err = w.wallet.verify(&w.trust, "acme/thermal", None, None, T0 + 100).unwrap_err();
    assert_eq!(err.code(), "license-wrong-issuer", "{err}");
    assert!(err.to_string().contains(&rogue_chain.issuer_id().to_string()), "{err}");
    // The license itself is sound: only the program's trust stops it.
    let under_rogue =
        w.wallet.verify(&Trust::chain(&rogue_chain), "acme/thermal", None, None, T0 + 100).unwrap();
    assert_eq!(under_rogue.license.license_id, forged.license_id);

    // With a real license as well, the real one is the one that passes.
    buy(&w, 1);
    let real = license(&w);
    let verified = w.wallet.verify(&w.trust, "acme/thermal", None, None, T0 + 200).unwrap();
    assert_eq!(verified.license.license_id, real.license_id);
}

/// Review 2 (High 0): state the customer can delete defends nothing. Deleting the held
/// CRL makes a revoked license pass again only until the revocation age rule runs out,
/// counted from the license's own issue time; deleting `clock.toml` and setting the clock
/// back is caught by the held CRL's signed issue time.
#[test]
fn deleting_wallet_state_revives_a_license_only_within_the_age_rule() {
    let w = world();
    buy(&w, 1);
    let license = license(&w); // not_before = T0 + 10
    let day = |n: u64| T0 + n * DAY;
    w.issuer.revoke(&license.license_id, "chargeback", day(1)).unwrap();
    let crl = w.issuer.crl(day(1)).unwrap();
    let err = w.wallet.verify(&w.trust, "acme/thermal", None, Some(&crl), day(1) + 60).unwrap_err();
    assert_eq!(err.code(), "license-revoked");
    let held = w.wallet_dir().join("crl");
    std::fs::remove_dir_all(&held).unwrap();
    std::fs::create_dir(&held).unwrap();
    // What an offline check cannot stop: within the maximum age of the license's issue
    // the revocation is forgotten (threat-model.md).
    w.wallet.verify(&w.trust, "acme/thermal", None, None, day(3)).unwrap();
    // In the grace period it passes with a warning; after it, never.
    let warned = w.wallet.verify(&w.trust, "acme/thermal", None, None, day(10)).unwrap();
    let age = warned.checks.iter().find(|c| c.name == "crl-age").unwrap();
    assert!(age.detail.starts_with("warning:"), "{}", age.detail);
    let err = w.wallet.verify(&w.trust, "acme/thermal", None, None, day(15)).unwrap_err();
    assert_eq!(err.code(), "crl-too-old", "{err}");
    // A fresh CRL brings the revocation back rather than helping.
    let fresh = w.issuer.crl(day(15)).unwrap();
    let err = w.wallet.verify(&w.trust, "acme/thermal", None, Some(&fresh), day(15)).unwrap_err();
    assert_eq!(err.code(), "license-revoked");

    // A valid license, a CRL issued on day 20, clock.toml deleted, the clock set back to
    // day 5: the CRL's signed time catches it.
    buy(&w, 1);
    let sealed = w.wallet.redeem("acme/thermal").unwrap();
    w.wallet.install(&w.issuer.redeem(&sealed, day(4)).unwrap()).unwrap();
    let crl = w.issuer.crl(day(20)).unwrap();
    w.wallet.verify(&w.trust, "acme/thermal", None, Some(&crl), day(20)).unwrap();
    std::fs::remove_file(w.wallet_dir().join("clock.toml")).unwrap();
    let err = w.wallet.verify(&w.trust, "acme/thermal", None, None, day(5)).unwrap_err();
    assert_eq!(err.code(), "clock-rolled-back", "{err}");
    // An expired license (not_after = day 35) is not revived by setting the clock back
    // to day 30 either, while the wallet holds a CRL signed after it expired.
    let late = w.issuer.crl(day(36)).unwrap();
    assert_eq!(
        w.wallet.verify(&w.trust, "acme/thermal", None, Some(&late), day(36)).unwrap_err().code(),
        "license-expired"
    );
    std::fs::remove_file(w.wallet_dir().join("clock.toml")).unwrap();
    let err = w.wallet.verify(&w.trust, "acme/thermal", None, None, day(30)).unwrap_err();
    assert_eq!(err.code(), "clock-rolled-back", "{err}");
}

/// What a service hands out keeps wallets inside the revocation age rule when nothing
/// is revoked: a CRL an hour old or more is replaced by a fresh one with the next number.
#[test]
fn the_current_crl_is_re_signed_once_it_is_an_hour_old() {
    let w = world();
    let refresh = escx_licensing::issuer::CRL_REFRESH_SECS;
    let first = w.issuer.current_crl(refresh, T0).unwrap();
    assert_eq!(w.issuer.current_crl(refresh, T0 + refresh - 1).unwrap(), first, "fresh: served as is");
    let second = w.issuer.current_crl(refresh, T0 + refresh).unwrap();
    assert_ne!(second, first);
    buy(&w, 1);
    let held = w.wallet.accept_crl(&first).unwrap();
    let next = w.wallet.accept_crl(&second).unwrap();
    assert_eq!((held.number, next.number), (1, 2));
    assert_eq!(next.issued_at, T0 + refresh);
}
