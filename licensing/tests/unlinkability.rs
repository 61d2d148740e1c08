//! The issuer cannot tell which purchase paid for which license (licensing.md §6).
//!
//! Two customers each buy a token, then redeem it. In one world the first buyer redeems
//! first; in the other the second buyer does. The issuer's complete view (every table of
//! its database and every message it received, opened as the issuer can open them) must
//! be identical in both worlds once the fields licensing.md §6.2 lists as uniformly
//! random are masked. Anything that tied a redemption to a purchase (a purchase id echoed
//! back, a per-customer key, a stored blinded element) would make the views differ.

use escx::keyfile::Protection;
use escx_licensing::issuer::{Issuer, Offer};
use escx_licensing::messages::{RedeemRequest, TokenRequest};
use escx_licensing::wallet::Wallet;
use escx_manifest::Micros;

const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);

/// One world: the issuer, and its view as lines of text.
fn run(first_redeemer: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::init(&tmp.path().join("issuer"), "Issuer", &Protection::Unencrypted, T0).unwrap();
    issuer
        .add_offer(
            &Offer {
                package: "acme/thermal".parse().unwrap(),
                tier: "standard".into(),
                price_micros: Micros(10_000_000),
                currency: "USD".into(),
                unit: "month".into(),
                features: vec![],
                seats: None,
                terms: None,
            },
            &[escx::sig::KeyId([1; 16])],
            T0,
        )
        .unwrap();
    let bundle = issuer.bundle(T0).unwrap();
    let wallets =
        [Wallet::open(&tmp.path().join("x")).unwrap(), Wallet::open(&tmp.path().join("y")).unwrap()];
    let mut received = Vec::new();

    // Purchases, always X then Y.
    for (i, wallet) in wallets.iter().enumerate() {
        let request =
            wallet.request(&bundle, &"acme/thermal".parse().unwrap(), "standard", 1, T0 + i as u64).unwrap();
        let bytes = request.to_cbor();
        let seen = TokenRequest::from_cbor(&bytes).unwrap();
        received.push(format!(
            "token request: package={} tier={} epoch={} blinded=<{} random elements>",
            seen.package,
            seen.tier,
            seen.epoch,
            seen.blinded.len()
        ));
        let response = issuer.issue(&seen, T0 + i as u64).unwrap();
        wallet.finalize(&response).unwrap();
    }
    // Redemptions, in the order of this world, at fixed times.
    let order = if first_redeemer == 0 { [0, 1] } else { [1, 0] };
    for (slot, &who) in order.iter().enumerate() {
        let sealed = wallets[who].redeem("acme/thermal").unwrap();
        // Everything the issuer can read from the request, with the random fields masked:
        // the token input and output (the issuer never saw them at purchase time, only
        // blinded) and the fresh holder keys.
        let opened: RedeemRequest = issuer.open_redeem_request(&sealed).unwrap();
        received.push(format!(
            "redeem request: {} bytes sealed, package={} tier={} epoch={} input=<random {}> output=<random {}> holder_key=<random {}> holder_kem_key=<random {}>",
            sealed.as_bytes().len(),
            opened.package,
            opened.tier,
            opened.epoch,
            opened.input.len(),
            opened.output.len(),
            opened.holder_key.len(),
            opened.holder_kem_key.len()
        ));
        let answer = issuer.redeem(&sealed, T0 + 100 + slot as u64).unwrap();
        wallets[who].install(&answer).unwrap();
    }
    let mut view = received;
    view.extend(database_view(&issuer));
    view
}

/// Every table, every row, with the random columns masked.
fn database_view(issuer: &Issuer) -> Vec<String> {
    // A second connection to the issuer's file, through SQLite, for the column names.
    let db = rusqlite::Connection::open(issuer.database().sqlite_path().unwrap()).unwrap();
    let mut lines = Vec::new();
    let tables: Vec<String> = db
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // Columns licensing.md §6.2 lists as uniformly random (fresh per issuer or per message).
    let random =
        ["secret", "public", "token_id", "license_id", "sealed", "request_id", "response", "hash", "bytes"];
    for table in tables {
        let mut statement = db.prepare(&format!("SELECT * FROM {table} ORDER BY rowid")).unwrap();
        let columns: Vec<String> = statement.column_names().map(|c| c.to_string()).collect();
        let rows = statement
            .query_map([], |row| {
                let mut cells = Vec::new();
                for (i, column) in columns.iter().enumerate() {
                    let value: rusqlite::types::Value = row.get(i)?;
                    let shown = if random.contains(&column.as_str()) {
                        "<random>".to_owned()
                    } else {
                        format!("{value:?}")
                    };
                    cells.push(format!("{column}={shown}"));
                }
                Ok(cells.join(" "))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        for row in rows {
            lines.push(format!("{table}: {row}"));
        }
    }
    lines
}

#[test]
fn the_issuers_view_is_the_same_whichever_purchase_paid_for_which_license() {
    let first = run(0);
    let swapped = run(1);
    assert!(
        first.iter().any(|l| l.starts_with("sales:")) && first.iter().any(|l| l.starts_with("licenses:"))
    );
    assert_eq!(first, swapped);
}
