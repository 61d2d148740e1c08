//! Sell, redeem and verify a license in one process, with the issuer embedded.
//!
//! The issuer sells a token it signs blindly (RFC 9497 POPRF), so it cannot link the
//! purchase to the redemption that later turns the token into a license for fresh holder
//! keys. The wallet then verifies the license offline: no call to the issuer.
//!
//! Run with `cargo run -p escx-licensing --example license_in_process`.

use escx::Fault;
use escx_licensing::issuer::{Issuer, Offer};
use escx_licensing::trust::Trust;
use escx_licensing::wallet::Wallet;
use escx_manifest::Micros;

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now = escx::now_unix();
    let work = tempfile::tempdir()?;

    // The operator's issuer, on the in-memory store, and what it sells.
    let issuer = Issuer::in_memory("Example Licensing", now)?;
    let publisher = escx::sig::SecretKey::generate();
    let offer = Offer {
        package: "acme/thermal".parse().unwrap(),
        tier: "pro".into(),
        price_micros: Micros(49_000_000),
        currency: "EUR".into(),
        unit: "month".into(),
        features: vec!["plots".into()],
        seats: Some(5),
        terms: None,
    };
    issuer.add_offer(&offer, &[publisher.id()], now)?;

    // The customer's wallet buys two tokens under the issuer's published bundle chain.
    let wallet = Wallet::open(&work.path().join("wallet"))?;
    let request = wallet.request(&issuer.bundle(now)?, &"acme/thermal".parse().unwrap(), "pro", 2, now)?;
    let response = issuer.issue(&request, now)?; // the sale is recorded here
    assert_eq!(wallet.finalize(&response)?, 2);

    // Redeeming one token: a sealed request, a sealed license back.
    let sealed_request = wallet.redeem("acme/thermal")?;
    let sealed_license = issuer.redeem(&sealed_request, now)?;
    let license = wallet.install(&sealed_license)?;

    // Offline verification: the program accepts only the issuer it ships with (never
    // whatever issuer the customer's wallet holds); then signature, clock, window,
    // revocation and its age, package, possession.
    let trust = Trust::issuer(issuer.signing_key().id());
    let verified = wallet.verify(&trust, "acme/thermal", None, None, now + 60)?;
    println!(
        "license {} for {} {}:",
        hex::encode(&license.license_id),
        verified.license.package,
        verified.license.tier
    );
    for check in &verified.checks {
        println!("  {:<12} {} {}", check.name, if check.ok { "ok" } else { "FAILED" }, check.detail);
    }

    // A retried redemption (the answer was lost) gets the same license and spends
    // nothing more; the issuer's sale book shows one sale of two tokens.
    match issuer.redeem(&sealed_request, now) {
        Ok(again) => assert_eq!(again, sealed_license, "a retry gets the same answer"),
        Err(error) => return Err(format!("a retried redemption failed: {}", error.code()).into()),
    }
    let sales = issuer.sales()?;
    assert_eq!(sales.len(), 1);
    assert_eq!(sales[0].total_micros, Micros(98_000_000));
    Ok(())
}
