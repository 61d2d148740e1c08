//! The tagging issuer (licensing.md §5.7, Privacy Pass key consistency): an issuer that
//! shows one customer keys nobody else sees can recognise that customer at redemption.
//! Each test plays that issuer with its real signing key, and the wallet refuses.

use escx::Fault as _;
use escx::keyfile::{self, Protection};
use escx::sig::SecretKey;
use escx_licensing::issuer::{Issuer, Offer};
use escx_licensing::messages::{BundleChain, BundlePayload, Epoch, IssuerBundle};
use escx_licensing::poprf::IssuerKey;
use escx_licensing::wallet::Wallet;
use escx_manifest::Micros;
use serde_bytes::ByteBuf;

const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const DAY: u64 = 86_400;

struct World {
    tmp: tempfile::TempDir,
    issuer: Issuer,
    signing: SecretKey,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("issuer");
    let issuer = Issuer::init(&dir, "Tagging Licensing", &Protection::Unencrypted, T0).unwrap();
    let offer = Offer {
        package: "acme/thermal".parse().unwrap(),
        tier: "standard".into(),
        price_micros: Micros(1_000_000),
        currency: "USD".into(),
        unit: "month".into(),
        features: vec![],
        seats: None,
        terms: None,
    };
    issuer.add_offer(&offer, &[escx::sig::KeyId([1; 16])], T0).unwrap();
    let signing = keyfile::read_secret_key(&dir.join("signing.key"), || None).unwrap();
    World { tmp, issuer, signing }
}

impl World {
    fn wallet(&self, name: &str) -> Wallet {
        Wallet::open(&self.tmp.path().join(name)).unwrap()
    }

    /// A version after `previous` whose payload `change` alters: what a dishonest issuer
    /// signs for one customer.
    fn forged(&self, previous: &IssuerBundle, change: impl FnOnce(&mut BundlePayload)) -> IssuerBundle {
        let mut payload = previous.payload.clone();
        payload.version += 1;
        payload.previous = ByteBuf::from(previous.hash.to_vec());
        change(&mut payload);
        IssuerBundle::sign(payload, &self.signing).unwrap()
    }
}

fn fresh_epoch(number: u32, not_before: u64, not_after: u64) -> Epoch {
    let key = IssuerKey::generate().unwrap();
    Epoch {
        epoch: number,
        poprf_key: ByteBuf::from(key.public_key().to_vec()),
        not_before: escx::UnixSeconds(not_before),
        not_after: escx::UnixSeconds(not_after),
    }
}

fn chain(versions: &[&IssuerBundle]) -> BundleChain {
    BundleChain::from_bundles(versions.iter().map(|b| (*b).clone()).collect()).unwrap()
}

/// The issuer rotates to epoch 2 honestly for everyone, but hands customer A its own
/// epoch-2 key. A's wallet would accept it alone (it extends what A pinned), which is why
/// the head is published: checked against the registry's head, A refuses before buying.
#[test]
fn a_per_customer_epoch_key_is_refused_against_the_published_head() {
    let w = world();
    let v1 = w.issuer.bundle(T0).unwrap();
    let alice = w.wallet("alice");
    alice.add_issuer(&v1).unwrap();
    // The honest rotation, published (what the registry index lists).
    w.issuer.add_epoch(T0, 90 * DAY).unwrap();
    let honest = w.issuer.bundle(T0 + DAY).unwrap();
    let published = honest.head().clone();
    assert_eq!(published.version(), 2);
    // Alice's private version 2: epoch 2 with a key only she is shown.
    let end = v1.head().payload.epochs[0].not_after;
    let tagged = w.forged(v1.head(), |p| p.epochs.push(fresh_epoch(2, end.0, (end + 90 * DAY).0)));
    let shown_to_alice = chain(&[v1.head(), &tagged]);
    let held = alice.add_issuer(&shown_to_alice).unwrap();
    assert_eq!(held.hash, tagged.hash, "alone, an extension of the pinned chain is accepted");
    let err = alice.published(published.issuer_id(), published.version(), &published.hash).unwrap_err();
    assert_eq!(err.code(), "issuer-bundle-fork", "{err}");
    // Bob fetched the published chain first: the tagged one is a fork to him.
    let bob = w.wallet("bob");
    bob.add_issuer(&honest).unwrap();
    let err = bob.add_issuer(&shown_to_alice).unwrap_err();
    assert_eq!(err.code(), "issuer-bundle-fork", "{err}");
    assert_eq!(bob.issuer(honest.issuer_id()).unwrap().hash, published.hash, "Bob's pin is unchanged");
    // And Bob buys under the published version only.
    let under = bob.published(published.issuer_id(), published.version(), &published.hash).unwrap();
    bob.request_at(&under, &"acme/thermal".parse().unwrap(), "standard", 1, T0 + DAY).unwrap();
}

/// Two keys valid at once would let the issuer pick one per customer: a bundle whose epochs
/// overlap does not parse, so no wallet ever uses it.
#[test]
fn overlapping_epochs_are_refused() {
    let w = world();
    let v1 = w.issuer.bundle(T0).unwrap();
    let mut payload = v1.head().payload.clone();
    payload.version = 2;
    payload.previous = ByteBuf::from(v1.head().hash.to_vec());
    payload.epochs.push(fresh_epoch(2, (T0 + DAY).0, (T0 + 200 * DAY).0));
    let bytes = escx::envelope::Envelope::seal(
        escx_licensing::messages::CONTEXT_BUNDLE,
        escx::cbor::encode(&payload),
        &w.signing,
    )
    .to_cbor();
    let err = IssuerBundle::parse(&bytes).unwrap_err();
    assert_eq!(err.code(), "issuer-bundle-invalid");
    assert!(err.to_string().contains("overlap"), "{err}");
}

/// A different key for an epoch the wallet knows, or a different KEM key (redemptions
/// sealed to a per-customer KEM key would tag them too), breaks the chain.
#[test]
fn a_changed_epoch_key_or_kem_key_breaks_the_chain() {
    let w = world();
    let v1 = w.issuer.bundle(T0).unwrap();
    let rekeyed = w.forged(v1.head(), |p| {
        let window = (p.epochs[0].not_before, p.epochs[0].not_after);
        p.epochs[0] = fresh_epoch(1, window.0.0, window.1.0);
    });
    let err = BundleChain::from_bundles(vec![v1.head().clone(), rekeyed]).unwrap_err();
    assert_eq!(err.code(), "issuer-bundle-invalid", "{err}");
    let new_kem = w.forged(v1.head(), |p| {
        p.kem_key = ByteBuf::from(escx::kem::KemSecretKey::generate().public_key().as_bytes().to_vec());
    });
    let err = BundleChain::from_bundles(vec![v1.head().clone(), new_kem]).unwrap_err();
    assert_eq!(err.code(), "issuer-bundle-invalid", "{err}");
}

/// An older chain (a rollback) changes nothing: the wallet keeps buying under the newest.
#[test]
fn a_rolled_back_chain_changes_nothing() {
    let w = world();
    let v1 = w.issuer.bundle(T0).unwrap();
    w.issuer.add_epoch(T0, 90 * DAY).unwrap();
    let v2 = w.issuer.bundle(T0 + DAY).unwrap();
    let alice = w.wallet("alice");
    alice.add_issuer(&v2).unwrap();
    let head = alice.add_issuer(&v1).unwrap();
    assert_eq!(head.version(), 2);
    assert_eq!(alice.chain(v1.issuer_id()).unwrap().head().hash, v2.head().hash);
    // Publishing again without a change signs nothing new: everyone sees the same bytes.
    assert_eq!(w.issuer.bundle(T0 + 2 * DAY).unwrap().to_cbor(), v2.to_cbor());
}

/// A transferred token carries the sender's chain; a sender cannot use it to move the
/// recipient's pin to another history.
#[test]
fn a_transfer_cannot_replace_the_recipients_bundle() {
    let w = world();
    let v1 = w.issuer.bundle(T0).unwrap();
    let end = v1.head().payload.epochs[0].not_after;
    let forked = w.forged(v1.head(), |p| p.epochs.push(fresh_epoch(2, end.0, (end + DAY).0)));
    let honest = w.forged(v1.head(), |p| p.epochs.push(fresh_epoch(2, end.0, (end + DAY).0)));
    let sender = w.wallet("sender");
    sender.add_issuer(&chain(&[v1.head(), &forked])).unwrap();
    let request =
        sender.request(&chain(&[v1.head()]), &"acme/thermal".parse().unwrap(), "standard", 1, T0).unwrap();
    sender.finalize(&w.issuer.issue(&request, T0).unwrap()).unwrap();
    let recipient = w.wallet("recipient");
    recipient.add_issuer(&chain(&[v1.head(), &honest])).unwrap();
    let gift = w.tmp.path().join("gift.sealed");
    sender.transfer("acme/thermal", None, &recipient.receive_key().unwrap(), &gift).unwrap();
    let err = recipient
        .receive(&escx_licensing::messages::SealedTransfer::from_bytes(std::fs::read(&gift).unwrap()))
        .unwrap_err();
    assert_eq!(err.code(), "issuer-bundle-fork", "{err}");
    assert_eq!(recipient.issuer(v1.issuer_id()).unwrap().hash, honest.hash);
    assert!(recipient.token_counts().unwrap().is_empty());
}
