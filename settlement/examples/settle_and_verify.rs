//! Settle a batch of sales through a revenue waterfall, then check the signed statement
//! the way a publisher and an auditor would: with public keys and their own openings only.
//!
//! The ledger records every sale as balanced double-entry transfers (platform fee, an
//! investor recouping an advance, the publisher as residual), signs a statement that hides
//! every amount in a Pedersen commitment, and hands each party the openings of its own
//! payouts. The auditor checks the statement's range proofs without learning any amount.
//!
//! Run with `cargo run -p escx-settlement --example settle_and_verify`.

use std::path::Path;

use escx::sig::SecretKey;
use escx_manifest::Manifest;
use escx_settlement::events::parse_events;
use escx_settlement::ledger::{Ledger, Manifests, Options};
use escx_settlement::{proofs, statement};

const MANIFEST: &str = r#"[package]
name = "acme/thermal"
version = "1.0.0"

[revenue]
currency = "EUR"
residual = "acme"
effective_from = "2026-01-01"

[[revenue.step]]
party = "platform"
share_of_gross_bps = 1000
[[revenue.step]]
party = "investor"
recoup_cap = "50.00"
"#;

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let operator = SecretKey::generate();
    let mut manifests = Manifests::default();
    manifests.add(Manifest::parse(MANIFEST, Path::new("manifest.toml"))?);

    // Three sales of 49.00 from the billing system.
    let records: Vec<String> = (1..=3)
        .map(|i| {
            format!(
                r#"{{"id": "sale-{i}", "time": 1795000000, "package": "acme/thermal", "tier": "pro",
                    "kind": "sale", "gross": "49.00", "currency": "EUR"}}"#
            )
        })
        .collect();
    let events = parse_events(&format!("[{}]", records.join(",")), Path::new("events.json"))?;

    // The operator settles them in one batch (one transaction, one signed statement).
    let mut ledger = Ledger::in_memory(&Options::default())?;
    let report = ledger.settle(&events, &manifests, 100, &operator, escx::UnixSeconds(1_795_000_100))?;
    assert_eq!(report.statements, 1);
    // Settling the same events again changes nothing: retries never count twice.
    assert_eq!(
        ledger.settle(&events, &manifests, 100, &operator, escx::UnixSeconds(1_795_000_200))?.statements,
        0
    );

    // The publisher verifies the statement under the operator's public key and opens its
    // own payouts: 90 % of each sale once the investor has recouped its 50.00.
    let signed = statement::verify(&ledger.statement(1)?, operator.public_key())?;
    let acme = statement::check_openings(&signed, &ledger.openings(1, "acme")?)?;
    let acme_total: u64 = acme.iter().map(|o| o.amount.0).sum();
    println!(
        "acme is paid {}.{:02} EUR, in {} of the {} sales (the first went to the investor's recoupment)",
        acme_total / 1_000_000,
        acme_total / 10_000 % 100,
        acme.len(),
        events.len()
    );
    assert_eq!(acme_total, 3 * 44_100_000 - 50_000_000);

    // An auditor checks that every hidden payout lies in range and sums to its gross,
    // holding only the statement, the proofs and the operator's public key.
    let proofs = ledger.prove_statement(1, operator.public_key())?;
    let published = proofs::StatementProofs::from_cbor(&proofs.to_cbor())?;
    proofs::verify_statement(&published, &signed, &operator.id())?;
    println!("statement 1: {} entries, range proofs verified", signed.payload.entries.len());
    Ok(())
}
