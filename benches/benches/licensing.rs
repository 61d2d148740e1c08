//! Licensing costs next to the raw primitives they are built on, in the same run:
//!
//! - `license_verify`: a warm offline `Wallet::verify` vs one raw ML-DSA-87 verify of the
//!   same certificate bytes (and `verify::verify_certificate`, the stateless part);
//! - `issuance`: a 100-token batch through `Issuer::issue` (request parsing, POPRF batch
//!   evaluation with its DLEQ proof, SQLite sale row) and through our POPRF wrapper, vs
//!   `voprf`'s `PoprfServer::batch_blind_evaluate` on already-decoded elements;
//! - `redemption`: one `Issuer::redeem` (open the sealed request, re-evaluate the token,
//!   spent-set insert in one SQLite transaction, sign and seal the certificate) vs one raw
//!   ML-DSA-87 sign, with redemptions per second printed;
//! - `content`: decrypting licensed content (STREAM, 64 KiB segments) vs one-shot
//!   XChaCha20-Poly1305 over the same bytes.

use escx_manifest::Micros;
use std::hint::black_box;
use std::io::Read;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use escx::content::{self, ContentKey, DecryptReader};
use escx::envelope::Envelope;
use escx::keyfile::Protection;
use escx::sig::SecretKey;
use escx_licensing::issuer::{Issuer, Offer};
use escx_licensing::messages::{CONTEXT_LICENSE, TokenRequest};
use escx_licensing::poprf::{Blinded, IssuerKey, TokenInfo};
use escx_licensing::trust::Trust;
use escx_licensing::verify;
use escx_licensing::wallet::Wallet;
use rand_core::OsRng;
use voprf::{BlindedElement, PoprfServer, Ristretto255};

const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const PACKAGE: &str = "bench/thermal";

struct World {
    _tmp: tempfile::TempDir,
    issuer: Issuer,
    wallet: Wallet,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::init(&tmp.path().join("issuer"), "Bench", &Protection::Unencrypted, T0).unwrap();
    issuer
        .add_offer(
            &Offer {
                package: PACKAGE.parse().unwrap(),
                tier: "standard".into(),
                price_micros: Micros(1_000_000),
                currency: "USD".into(),
                unit: "month".into(),
                features: vec![],
                seats: None,
                terms: None,
            },
            &[escx::sig::KeyId([0; 16])],
            T0,
        )
        .unwrap();
    let wallet = Wallet::open(&tmp.path().join("wallet")).unwrap();
    World { _tmp: tmp, issuer, wallet }
}

fn buy(world: &World, count: usize) {
    let bundle = world.issuer.bundle(T0).unwrap();
    let request = world.wallet.request(&bundle, &PACKAGE.parse().unwrap(), "standard", count, T0).unwrap();
    let response = world.issuer.issue(&request, T0).unwrap();
    world.wallet.finalize(&response).unwrap();
}

fn license_verify(c: &mut Criterion) {
    let world = world();
    buy(&world, 1);
    let sealed = world.wallet.redeem(PACKAGE).unwrap();
    let answer = world.issuer.redeem(&sealed, T0 + 1).unwrap();
    world.wallet.install(&answer).unwrap();
    let chain = world.issuer.bundle(T0).unwrap();
    let bundle = chain.head();
    // A possession proof carries the exact certificate bytes (public API).
    let proof = world.wallet.prove(PACKAGE, b"bench").unwrap();
    let certificate = certificate_of(&proof);
    let envelope = Envelope::from_cbor(&certificate).unwrap();
    let now = T0 + 10;
    let trust = Trust::issuer(bundle.issuer_id());
    world.wallet.verify(&trust, PACKAGE, None, None, now).unwrap();

    let mut group = c.benchmark_group("license_verify");
    group.bench_function("raw ML-DSA-87 verify of the certificate", |b| {
        b.iter(|| envelope.open(CONTEXT_LICENSE, &bundle.signing_key).unwrap());
    });
    group.bench_function("verify::verify_certificate (stateless checks)", |b| {
        b.iter(|| {
            verify::verify_certificate(black_box(&certificate), bundle, None, PACKAGE, None, now).unwrap()
        });
    });
    group.bench_function("Wallet::verify (warm, offline, every check)", |b| {
        b.iter(|| world.wallet.verify(&trust, black_box(PACKAGE), None, None, now).unwrap());
    });
    let wallet_dir = world._tmp.path().join("wallet");
    group.bench_function("Wallet::verify (cold: fresh handle, bundle + possession re-proven)", |b| {
        b.iter(|| {
            Wallet::open(&wallet_dir).unwrap().verify(&trust, black_box(PACKAGE), None, None, now).unwrap()
        });
    });
    group.finish();
}

fn certificate_of(proof: &[u8]) -> Vec<u8> {
    let envelope = Envelope::from_cbor(proof).unwrap();
    let payload: escx_licensing::messages::PossessionPayload =
        escx_licensing::messages::decode_payload(envelope.payload_unverified(), "proof").unwrap();
    payload.certificate.to_vec()
}

fn issuance(c: &mut Criterion) {
    const BATCH: usize = 100;
    let world = world();
    let bundle = world.issuer.bundle(T0).unwrap();
    let request = world.wallet.request(&bundle, &PACKAGE.parse().unwrap(), "standard", BATCH, T0).unwrap();
    let request_bytes = request.to_cbor();
    let info = TokenInfo { package: PACKAGE.parse().unwrap(), tier: "standard".into(), epoch: request.epoch };
    let key = IssuerKey::generate().unwrap();
    let blinded = Blinded::new(BATCH).unwrap();
    let server = PoprfServer::<Ristretto255>::new_with_key(key.secret_bytes()).unwrap();
    let elements: Vec<BlindedElement<Ristretto255>> =
        blinded.elements.iter().map(|e| BlindedElement::deserialize(e).unwrap()).collect();
    let info_bytes = info.encode();

    let mut group = c.benchmark_group("issuance_100");
    group.sample_size(20);
    group.bench_function("raw voprf batch_blind_evaluate", |b| {
        b.iter(|| server.batch_blind_evaluate(&mut OsRng, black_box(&elements), Some(&info_bytes)).unwrap());
    });
    group.bench_function("IssuerKey::evaluate_batch (decode + evaluate + encode)", |b| {
        b.iter(|| key.evaluate_batch(black_box(&blinded.elements), &info).unwrap());
    });
    // Each iteration a new purchase (fresh blinds): the same request again is a retry,
    // answered from the store without evaluating, and measured separately below.
    group.bench_function("Issuer::issue (parse, evaluate, record the sale)", |b| {
        b.iter_batched(
            || {
                world
                    .wallet
                    .request(&bundle, &PACKAGE.parse().unwrap(), "standard", BATCH, T0)
                    .unwrap()
                    .to_cbor()
            },
            |bytes| {
                let request = TokenRequest::from_cbor(black_box(&bytes)).unwrap();
                world.issuer.issue(&request, T0).unwrap()
            },
            BatchSize::PerIteration,
        );
    });
    world.issuer.issue(&TokenRequest::from_cbor(&request_bytes).unwrap(), T0).unwrap();
    group.bench_function("Issuer::issue retry (the stored answer)", |b| {
        b.iter(|| {
            let request = TokenRequest::from_cbor(black_box(&request_bytes)).unwrap();
            world.issuer.issue(&request, T0).unwrap()
        });
    });
    group.finish();
}

fn redemption(c: &mut Criterion) {
    let world = world();
    buy(&world, 100);
    let signer = SecretKey::generate();
    let message = vec![7u8; 4000];
    let mut group = c.benchmark_group("redemption");
    group.sample_size(30);
    group.bench_function("raw ML-DSA-87 sign (4 KB)", |b| {
        b.iter(|| signer.sign(escx::sig::SigningContext::new("escx/bench/v1"), black_box(&message)));
    });
    group.bench_function("Issuer::redeem (one token)", |b| {
        b.iter_batched(
            || {
                if world.wallet.token_counts().unwrap().is_empty() {
                    buy(&world, 100);
                }
                world.wallet.redeem(PACKAGE).unwrap()
            },
            |sealed| world.issuer.redeem(&sealed, T0 + 1).unwrap(),
            BatchSize::PerIteration,
        );
    });
    group.finish();

    // Sustained rate with the spent set growing.
    let requests: Vec<escx_licensing::messages::SealedRedeemRequest> = {
        buy(&world, 200);
        (0..200).map(|_| world.wallet.redeem(PACKAGE).unwrap()).collect()
    };
    let start = Instant::now();
    for sealed in &requests {
        world.issuer.redeem(sealed, T0 + 1).unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "redemption: {} in {:.1} ms = {:.0} redemptions/s (one connection, spent set of {} tokens)",
        requests.len(),
        elapsed.as_secs_f64() * 1e3,
        requests.len() as f64 / elapsed.as_secs_f64(),
        world.issuer.sales().unwrap().iter().map(|s| u64::from(s.count)).sum::<u64>()
    );
}

fn content(c: &mut Criterion) {
    let plain: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let key = ContentKey::generate().unwrap();
    let mut stored = Vec::new();
    content::encrypt(&key, &plain[..], &mut stored).unwrap();
    let one_shot = XChaCha20Poly1305::new(key.as_bytes().into());
    let nonce = XNonce::from([1u8; 24]);
    let sealed = one_shot.encrypt(&nonce, &plain[..]).unwrap();
    let mut group = c.benchmark_group("content_64MiB");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(plain.len() as u64));
    group.bench_function("raw XChaCha20-Poly1305 decrypt, one shot", |b| {
        b.iter(|| one_shot.decrypt(&nonce, black_box(&sealed[..])).unwrap());
    });
    group.bench_function("DecryptReader (STREAM, 64 KiB segments)", |b| {
        let mut out = vec![0u8; 1 << 20];
        b.iter(|| {
            let mut reader = DecryptReader::new(&key, &stored[..], stored.len() as u64, "payload").unwrap();
            while reader.read(&mut out).unwrap() > 0 {}
        });
    });
    group.finish();
}

criterion_group!(benches, license_verify, issuance, redemption, content);
criterion_main!(benches);
