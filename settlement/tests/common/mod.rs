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

/// The operator key's secret bytes, as its (unencrypted) key file holds them.
#[allow(dead_code)]
pub fn secret_bytes(key: &SecretKey) -> Vec<u8> {
    use base64::Engine as _;
    let text = escx::keyfile::secret_key_text(key, &escx::keyfile::Protection::Unencrypted).unwrap();
    let line = text.lines().find(|l| l.starts_with("escx-sk-v1:")).unwrap();
    let cbor = base64::engine::general_purpose::STANDARD.decode(&line["escx-sk-v1:".len()..]).unwrap();
    let map: ciborium::Value = ciborium::de::from_reader(&cbor[..]).unwrap();
    map.as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("secret_key"))
        .and_then(|(_, v)| v.as_bytes())
        .unwrap()
        .clone()
}

/// Reads every cell of every table of `ledger`'s database and fails on one holding the
/// operator's secret key (as bytes, hex or base64); the number of cells read.
#[allow(dead_code)]
pub fn assert_no_secret_key(ledger: &escx_settlement::ledger::Ledger) -> usize {
    use base64::Engine as _;
    let secret = secret_bytes(op());
    let (hex, base64) = (hex::encode(&secret), base64::engine::general_purpose::STANDARD.encode(&secret));
    let mut cells = 0;
    for (table, row) in escx_store::test_util::all_rows(ledger.store().db()) {
        for cell in row.cells() {
            cells += 1;
            let bytes: &[u8] = match cell {
                escx_store::Cell::Bytes(b) => b,
                escx_store::Cell::Text(t) => t.as_bytes(),
                _ => continue,
            };
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !bytes.windows(secret.len()).any(|w| w == &secret[..])
                    && !text.to_ascii_lowercase().contains(&hex)
                    && !text.contains(&base64),
                "table {table} holds the operator's secret key"
            );
        }
    }
    cells
}
