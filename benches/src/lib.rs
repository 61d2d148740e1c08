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
