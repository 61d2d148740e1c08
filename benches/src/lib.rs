//! Benchmarks live in `benches/`; see `benches/README.md`. This library holds the fixtures
//! more than one of them settles.

use std::path::Path;

use escx_manifest::{Manifest, Micros};
use escx_settlement::events::{BillingEvent, Kind};
use escx_settlement::ledger::Manifests;

/// The worked example's manifest (`test-vectors/settlement/`): its waterfall is what the
/// settlement benchmarks run.
pub const WORKED_EXAMPLE: &str = include_str!("../../test-vectors/settlement/worked-example.toml");

/// The worked example's manifest, parsed.
///
/// # Panics
/// If the vector no longer parses (a broken fixture).
pub fn worked_example() -> Manifest {
    Manifest::parse(WORKED_EXAMPLE, Path::new("manifest.toml")).expect("the worked example parses")
}

/// The manifests the settlement benchmarks settle against: the worked example alone.
pub fn manifests() -> Manifests {
    let mut manifests = Manifests::default();
    manifests.add(worked_example());
    manifests
}

/// `count` sales of `acme/thermal` "standard", one a second, with grosses spread over
/// 1 to 501 USD so the waterfall's tiers and rounding all take part.
///
/// # Panics
/// Never: the package name is a constant.
pub fn sale_events(count: usize) -> Vec<BillingEvent> {
    (0..count as u64)
        .map(|i| BillingEvent {
            id: format!("bench:{i}"),
            time: escx::UnixSeconds(1_790_000_000 + i),
            package: "acme/thermal".parse().expect("a valid name"),
            version: None,
            tier: "standard".into(),
            kind: Kind::Sale,
            gross_micros: Micros(1_000_000 + (i * 7_919) % 500_000_000),
            currency: "USD".into(),
            solution: None,
            refund_of: None,
        })
        .collect()
}

/// A package with a metered tier (6.00 an hour, private, counting `invocations`), an issuer
/// selling it, and `licenses` wallets holding one license each (the meter picks a
/// package's newest license, so one wallet per license): what the metering benchmarks and
/// the compaction example meter with.
pub struct MeteredWorld {
    /// The issuer's bundle chain.
    pub chain: escx_licensing::messages::BundleChain,
    /// The package file (`bench/thermal` 1.0.0), for the operator's terms.
    pub package: std::path::PathBuf,
    /// Its publisher's key, as a policy.
    pub policy: escx::policy::TrustPolicy,
    /// One wallet per license.
    pub wallets: Vec<escx_licensing::wallet::Wallet>,
}

/// `bench/thermal`'s manifest: one metered tier, one metric.
pub const METERED_MANIFEST: &str = "[package]\nname = \"bench/thermal\"\nversion = \"1.0.0\"\n[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\
[[pricing.tier]]\nname = \"metered\"\nprice = \"6.00\"\nunit = \"hour\"\ntelemetry = \"private\"\n\
[telemetry]\nmetrics = [\"invocations\"]\nwindow = \"24h\"\ncohort_min_size = 50\nepsilon = 1.0\n";

/// Builds a [`MeteredWorld`] in `dir` at time `t0` (licenses redeemed at `t0 + 1`).
///
/// # Panics
/// If a step of the fixture fails (a broken fixture, not an input).
pub fn metered_world(dir: &Path, t0: escx::UnixSeconds, licenses: usize) -> MeteredWorld {
    use escx_licensing::issuer::Issuer;
    use escx_licensing::wallet::Wallet;
    let issuer = Issuer::init(&dir.join("issuer"), "Bench", &escx::keyfile::Protection::Unencrypted, t0)
        .expect("issuer");
    let publisher = escx::sig::SecretKey::generate();
    let src = dir.join("pkg");
    std::fs::create_dir_all(&src).expect("package directory");
    std::fs::write(src.join("manifest.toml"), METERED_MANIFEST).expect("manifest");
    std::fs::write(src.join("lib.py"), "# bench\n").expect("payload");
    let package = dir.join("p.escx");
    escx::pack::pack_dir(
        &src,
        &package,
        &[&publisher],
        &escx::pack::PackOptions { signed_at: Some(t0), ..Default::default() },
    )
    .expect("pack");
    let policy = escx::policy::TrustPolicy::from_keys(vec![publisher.public_key().clone()]);
    issuer.register_package(&package, &policy, t0).expect("register");
    let chain = issuer.bundle(t0).expect("bundle");
    let wallets = (0..licenses)
        .map(|i| {
            let wallet = Wallet::open(&dir.join(format!("wallet-{i}"))).expect("wallet");
            let request = wallet
                .request(&chain, &"bench/thermal".parse().expect("name"), "metered", 1, t0)
                .expect("request");
            wallet.finalize(&issuer.issue(&request, t0).expect("issue")).expect("finalize");
            let sealed = wallet.redeem("bench/thermal").expect("redeem");
            wallet.install(&issuer.redeem(&sealed, t0 + 1).expect("issuer redeem")).expect("install");
            wallet
        })
        .collect();
    MeteredWorld { chain, package, policy, wallets }
}
