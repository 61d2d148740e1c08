//! Settlement inputs from any bytes: billing-event files, statement payloads behind a valid
//! operator signature, openings files checked against a real statement, and statement and
//! revenue proof files verified against it.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use escx::envelope::Envelope;
use escx::sig::SecretKey;
use escx_settlement::events::parse_events;
use escx_settlement::statement::{self, CONTEXT_STATEMENT, EntryInput, OpeningsFile, Verified};
use libfuzzer_sys::fuzz_target;

fn fixture() -> &'static (SecretKey, Verified) {
    static FIXTURE: OnceLock<(SecretKey, Verified)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SecretKey::generate();
        let inputs: Vec<EntryInput> = (0..3u8)
            .map(|i| EntryInput {
                settlement: [i; 32],
                kind: escx_settlement::store::RecordKind::Sale,
                currency: "USD".into(),
                gross: escx_manifest::Micros(100),
                payouts: vec![
                    ("acme".into(), escx_manifest::Micros(60)),
                    ("platform".into(), escx_manifest::Micros(40)),
                ],
                rules: vec![None, Some(statement::PayoutRule { bps: 4000, minus: vec![] })],
            })
            .collect();
        let built = statement::build(&[1; 16], 1, &[0; 32], escx::UnixSeconds(1_800_000_000), &inputs, &key)
            .expect("seed inputs conserve");
        let verified = statement::verify(&built.bytes, key.public_key()).expect("a built statement verifies");
        (key, verified)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    match mode % 5 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = parse_events(text, Path::new("events.json"));
            }
        }
        1 => {
            let (key, _) = fixture();
            let bytes = Envelope::seal(CONTEXT_STATEMENT, rest.to_vec(), key).to_cbor();
            if let Ok(verified) = statement::verify(&bytes, key.public_key()) {
                let _ = statement::verify_chain(&mut [verified]);
            }
        }
        2 => {
            let (_, verified) = fixture();
            if let Ok(file) = ciborium::from_reader::<OpeningsFile, _>(rest) {
                let _ = statement::check_openings(verified, &file);
            }
        }
        3 => {
            let (key, verified) = fixture();
            if let Ok(file) = escx_settlement::proofs::StatementProofs::from_cbor(rest) {
                let _ = escx_settlement::proofs::verify_statement(&file, verified, &key.id());
            }
        }
        _ => {
            let (key, verified) = fixture();
            if let Ok(file) = escx_settlement::proofs::RevenueProof::from_cbor(rest) {
                let _ =
                    escx_settlement::proofs::verify_revenue(&file, std::slice::from_ref(verified), &key.id());
            }
        }
    }
});
