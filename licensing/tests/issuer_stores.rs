//! The SQLite and PostgreSQL issuer stores and the in-memory reference store agree: the
//! same sequence of writes (each in its own transaction, some rolled back) gives the same
//! answers to every query, and the same refusals.

use escx::sig::KeyId;
use escx_licensing::issuer::store::{
    IssuerReader, IssuerStore, IssuerWriter, LicenseRecord, StoredContentKey,
};
use escx_licensing::issuer::{MemoryIssuerStore, Offer, Sale, SqlIssuerStore};
use escx_licensing::messages::Epoch;
use escx_licensing::trust::Trust;
use escx_manifest::Micros;
use escx_store::Location;
use escx_store::test_util::Cluster;
use proptest::prelude::*;
use serde_bytes::ByteBuf;

#[derive(Debug, Clone)]
enum Op {
    Meta(u8, String),
    Epoch(u32, u64, u64, u8),
    Bundle(u64, u8),
    Owner(u8, u8, u64),
    Offer(u8, u8, u64, Vec<String>, Option<u32>),
    ContentKey(u8, u8, u8),
    Sale(u8, u32, u64, u64),
    Issued(u8, u8),
    Spend(u8, u8, u8),
    License(u8, u64, u64),
    Revoke(u8, String, u64),
}

const META_KEYS: [&str; 2] = ["name", "crl_number"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2u8, "[a-z0-9]{0,6}").prop_map(|(k, v)| Op::Meta(k, v)),
        (1..5u32, 0..1_000u64, 0..1_000u64, any::<u8>()).prop_map(|(e, a, b, s)| Op::Epoch(e, a, b, s)),
        (1..5u64, any::<u8>()).prop_map(|(v, b)| Op::Bundle(v, b)),
        (0..3u8, 0..3u8, 0..1_000u64).prop_map(|(s, k, t)| Op::Owner(s, k, t)),
        (
            0..2u8,
            0..2u8,
            0..1_000_000_000u64,
            prop::collection::vec("[a-z]{1,5}", 0..3),
            prop::option::of(0..10u32)
        )
            .prop_map(|(p, t, price, f, seats)| Op::Offer(p, t, price, f, seats)),
        (0..4u8, 0..4u8, 0..2u8).prop_map(|(r, f, p)| Op::ContentKey(r, f, p)),
        (0..2u8, 1..10u32, 0..1_000_000u64, 0..1_000u64).prop_map(|(p, c, u, at)| Op::Sale(p, c, u, at)),
        (0..4u8, any::<u8>()).prop_map(|(r, b)| Op::Issued(r, b)),
        (0..4u8, 0..3u8, any::<u8>()).prop_map(|(t, r, a)| Op::Spend(t, r, a)),
        (0..4u8, 0..1_000u64, 0..1_000u64).prop_map(|(l, a, b)| Op::License(l, a, b)),
        (0..4u8, "[a-z]{0,5}", 0..1_000u64).prop_map(|(l, r, at)| Op::Revoke(l, r, at)),
    ]
}

fn id32(n: u8) -> [u8; 32] {
    [n; 32]
}

fn id16(n: u8) -> [u8; 16] {
    [n; 16]
}

fn name(prefix: &str, n: u8) -> String {
    format!("{prefix}{n}")
}

fn package(n: u8) -> escx::header::PackageName {
    name("pkg", n).parse().unwrap()
}

/// Runs one write in its own transaction; commits when `commit`. What the write answered.
fn apply<S: IssuerStore>(store: &S, op: &Op, commit: bool) -> Result<String, ()> {
    let mut tx = store.begin().map_err(|_| ())?;
    let answer = match op {
        Op::Meta(k, v) => tx.set_meta(META_KEYS[usize::from(*k)], v).map(|()| String::new()),
        Op::Epoch(e, a, b, s) => tx
            .insert_epoch(&Epoch {
                epoch: *e,
                poprf_key: ByteBuf::from(vec![*s; 32]),
                not_before: escx::UnixSeconds(*a),
                not_after: escx::UnixSeconds(*b),
            })
            .map(|()| String::new()),
        Op::Bundle(v, b) => tx.insert_bundle(*v, &id32(*b), &[*b; 8]).map(|()| String::new()),
        Op::Owner(s, k, t) => tx
            .insert_owner(&name("acme", *s), &KeyId(id16(*k)), escx::UnixSeconds(*t))
            .map(|()| String::new()),
        Op::Offer(p, t, price, features, seats) => tx
            .put_offer(&Offer {
                package: package(*p),
                tier: name("tier", *t),
                price_micros: Micros(*price),
                currency: "EUR".into(),
                unit: "month".into(),
                features: features.clone(),
                seats: *seats,
                terms: None,
            })
            .map(|()| String::new()),
        Op::ContentKey(r, f, p) => tx
            .insert_content_key(&StoredContentKey {
                root: id32(*r),
                package: package(*p),
                version: "1.0.0".into(),
                payload_hash: id32(r + 100),
                fingerprint: id32(f + 50),
                sealed: vec![*r, *f],
            })
            .map(|()| String::new()),
        Op::Sale(p, count, unit, at) => tx
            .insert_sale(&Sale {
                id: 999,
                package: package(*p),
                tier: "pro".into(),
                epoch: 1,
                count: *count,
                unit_price_micros: Micros(*unit),
                total_micros: Micros(unit * u64::from(*count)),
                currency: "EUR".into(),
                at: escx::UnixSeconds(*at),
            })
            .map(|id| id.to_string()),
        Op::Issued(r, b) => tx.insert_issued(&id32(*r), 1, &[*b; 4]).map(|()| String::new()),
        Op::Spend(t, r, a) => {
            tx.spend(&id32(*t), escx::UnixSeconds(5), &id32(r + 10), &[*a; 4]).map(|spent| spent.to_string())
        }
        Op::License(l, a, b) => tx
            .insert_license(&LicenseRecord {
                license_id: id16(*l),
                package: "pkg0".parse().unwrap(),
                tier: "pro".into(),
                not_before: escx::UnixSeconds(*a),
                not_after: escx::UnixSeconds(*b),
            })
            .map(|()| String::new()),
        Op::Revoke(l, reason, at) => {
            tx.insert_revocation(&id16(*l), reason, escx::UnixSeconds(*at)).map(|()| String::new())
        }
    };
    let answer = answer.map_err(|_| ())?;
    if commit {
        tx.commit().map_err(|_| ())?;
    }
    Ok(answer)
}

/// Every query the issuer makes, over the whole key space the ops use.
fn view(store: &impl IssuerReader) -> Vec<String> {
    let mut out = Vec::new();
    for key in META_KEYS {
        out.push(format!("meta {key} {:?}", store.meta(key).unwrap()));
    }
    out.push(format!("epochs {:?}", store.epochs().unwrap()));
    for epoch in 0..6 {
        out.push(format!("epoch {epoch} {:?}", store.epoch(epoch).unwrap()));
    }
    // No store of this version keeps a secret key.
    assert!(store.legacy_epoch_secrets().unwrap().is_empty());
    out.push(format!("bundles {:?}", store.bundles().unwrap()));
    for p in 0..2 {
        for t in 0..2 {
            out.push(format!("offer {:?}", store.offer(&package(p), &name("tier", t)).unwrap()));
        }
        out.push(format!("content keys {:?}", store.content_keys(&package(p)).unwrap()));
    }
    for s in 0..3 {
        out.push(format!("owners {:?}", store.scope_owners(&name("acme", s)).unwrap()));
    }
    for n in 0..4u8 {
        out.push(format!("fingerprint {:?}", store.content_key_by_fingerprint(&id32(n + 50)).unwrap()));
        out.push(format!("issued {:?}", store.issued(&id32(n)).unwrap()));
        out.push(format!("spent {:?}", store.spent(&id32(n)).unwrap()));
        out.push(format!("license {}", store.license_exists(&id16(n)).unwrap()));
    }
    out.push(format!("revocations {:?}", store.revocations().unwrap()));
    out.push(format!("sales {:?}", store.sales().unwrap()));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_and_memory_stores_agree(ops in prop::collection::vec((op(), any::<bool>()), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let sqlite = SqlIssuerStore::open(&Location::Sqlite(tmp.path().join("issuer.sqlite"))).unwrap();
        let memory = MemoryIssuerStore::new();
        for (step, (op, commit)) in ops.iter().enumerate() {
            let a = apply(&sqlite, op, *commit);
            let b = apply(&memory, op, *commit);
            prop_assert_eq!(&a, &b, "step {} {:?}", step, op);
            prop_assert_eq!(view(&sqlite), view(&memory), "after step {} {:?}", step, op);
        }
    }
}

/// The same on PostgreSQL, against a throwaway cluster (one database per case). Ignored by
/// `cargo test`, which needs nothing installed; `.ci/run` runs it with `--ignored`.
#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn postgres_and_memory_stores_agree() {
    let cluster = Cluster::start();
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: 24, ..ProptestConfig::default() });
    runner
        .run(&prop::collection::vec((op(), any::<bool>()), 1..40), |ops| {
            let postgres = SqlIssuerStore::open(&Location::parse(&cluster.database())).unwrap();
            let memory = MemoryIssuerStore::new();
            for (step, (op, commit)) in ops.iter().enumerate() {
                let a = apply(&postgres, op, *commit);
                let b = apply(&memory, op, *commit);
                prop_assert_eq!(&a, &b, "step {} {:?}", step, op);
                prop_assert_eq!(view(&postgres), view(&memory), "after step {} {:?}", step, op);
            }
            Ok(())
        })
        .unwrap();
}

/// The whole issuer runs on the memory store: a sale, a redemption, a retry that spends
/// nothing more, a second spend refused, a revocation in the CRL.
#[test]
fn an_issuer_runs_in_memory() {
    use escx_licensing::issuer::Issuer;
    use escx_licensing::wallet::Wallet;
    const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
    let issuer = Issuer::in_memory("Memory Licensing", T0).unwrap();
    let publisher = escx::sig::SecretKey::generate();
    issuer
        .add_offer(
            &Offer {
                package: "acme/thermal".parse().unwrap(),
                tier: "pro".into(),
                price_micros: Micros(5_000_000),
                currency: "EUR".into(),
                unit: "month".into(),
                features: vec!["export".into()],
                seats: None,
                terms: None,
            },
            &[publisher.id()],
            T0,
        )
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let wallet = Wallet::open(&tmp.path().join("wallet")).unwrap();
    let chain = issuer.bundle(T0).unwrap();
    let request = wallet.request(&chain, &"acme/thermal".parse().unwrap(), "pro", 1, T0).unwrap();
    let response = issuer.issue(&request, T0 + 1).unwrap();
    assert_eq!(issuer.issue(&request, T0 + 2).unwrap(), response, "a retried purchase gets the same answer");
    assert_eq!(issuer.sales().unwrap().len(), 1, "and records no second sale");
    assert_eq!(issuer.sales().unwrap()[0].total_micros, Micros(5_000_000));
    assert_eq!(wallet.finalize(&response).unwrap(), 1);
    let sealed = wallet.redeem("acme/thermal").unwrap();
    let answer = issuer.redeem(&sealed, T0 + 5).unwrap();
    assert_eq!(issuer.redeem(&sealed, T0 + 6).unwrap(), answer, "a retried redemption gets the same answer");
    let license = wallet.install(&answer).unwrap();
    wallet.verify(&Trust::issuer(issuer.signing_key().id()), "acme/thermal", None, None, T0 + 7).unwrap();
    issuer.revoke(&license.license_id, "chargeback", T0 + 8).unwrap();
    let crl = issuer.crl(T0 + 9).unwrap();
    let err = wallet
        .verify(&Trust::issuer(issuer.signing_key().id()), "acme/thermal", None, Some(&crl), T0 + 10)
        .expect_err("a revoked license is refused");
    assert_eq!(escx::Fault::code(&err), "license-revoked");
}

/// A PostgreSQL issuer store outlives a server restart: the first request after it meets
/// the closed connection and fails (`store-failed`, a 503 in the service), the next connects again
/// and reads what was committed before.
#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn the_postgres_issuer_store_reconnects_after_a_server_restart() {
    let cluster = Cluster::start_durable();
    let store = SqlIssuerStore::open(&Location::parse(&cluster.database())).unwrap();
    let ops =
        [Op::Meta(0, "acme".into()), Op::Epoch(1, 10, 20, 7), Op::Sale(2, 1, 3, 40), Op::Spend(1, 1, 1)];
    for op in &ops {
        apply(&store, op, true).unwrap();
    }
    let before = view(&store);
    cluster.crash();
    cluster.restart();
    if let Err(error) = store.epochs() {
        use escx::Fault as _;
        assert_eq!(error.code(), "store-failed", "{error}");
    }
    assert_eq!(view(&store), before, "reconnected, and nothing committed was lost");
    // Writes work again too.
    apply(&store, &Op::Spend(3, 3, 3), true).unwrap();
    assert_ne!(view(&store), before);
}
