//! Fixtures shared by the settlement integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::path::Path;

use escx::sig::SecretKey;
use escx_manifest::Manifest;
use escx_settlement::ledger::{Ledger, Manifests};
use escx_settlement::store::Store;

/// acme/thermal: platform 10 %, an investor recouping up to 250.00, acme the residual;
/// from 2027 the platform takes 20 %.
pub const THERMAL: &str = r#"[package]
name = "acme/thermal"
version = "1.0.0"

[revenue]
currency = "USD"
residual = "acme"
effective_from = "2026-01-01"

[[revenue.step]]
party = "platform"
share_of_gross_bps = 1000
[[revenue.step]]
party = "investor"
recoup_cap = "250.00"

[[revenue.version]]
effective_from = "2027-01-01"
[[revenue.version.step]]
party = "platform"
share_of_gross_bps = 2000
"#;

/// The operator's statement key (one per test binary: ML-DSA key generation is not free).
pub fn op() -> &'static SecretKey {
    static KEY: std::sync::OnceLock<SecretKey> = std::sync::OnceLock::new();
    KEY.get_or_init(SecretKey::generate)
}

/// The manifests holding only `text`.
pub fn manifests(text: &str) -> Manifests {
    let mut manifests = Manifests::default();
    manifests.add(Manifest::parse(text, Path::new("manifest.toml")).unwrap());
    manifests
}

/// An account's balance (0 when it has none).
pub fn balance<S: Store>(ledger: &Ledger<S>, account: &str) -> i64 {
    ledger.balances(Some(account)).unwrap().first().map_or(0, |b| b.micros)
}
