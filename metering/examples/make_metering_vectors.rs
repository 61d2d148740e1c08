//! Writes `test-vectors/metering/`: blinding and commitment known answers, and a license's
//! reports, closes and openings with the verdict an operator gives each (spec/metering.md).
//!
//!     cargo run -p escx-metering --example make_metering_vectors -- test-vectors/metering
//!
//! Keys are fresh on every run, so every signed file changes; `blindings` do not.

use std::path::PathBuf;

use curve25519_dalek::scalar::Scalar;
use escx::keyfile::{self, Protection};
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx_licensing::issuer::Issuer;
use escx_licensing::messages::LicensePayload;
use escx_licensing::trust::Trust;
use escx_licensing::wallet::Wallet;
use escx_metering::meter::{Meter, Telemetry};
use escx_metering::{
    self as metering, CONTEXT_CLOSE, CONTEXT_REPORT, CloseFile, ClosePayload, OpeningFile, ReportFile,
    ReportPayload,
};
use serde_bytes::ByteBuf;
use serde_json::json;

/// 2027-01-15T08:00:00Z.
const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const H: u64 = 3600;

const MANIFEST: &str = "[package]\nname = \"acme/thermal\"\nversion = \"1.0.0\"\n\n[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\n\
[[pricing.tier]]\nname = \"metered\"\nprice = \"6.00\"\nunit = \"hour\"\ntelemetry = \"private\"\n\n\
[[pricing.tier]]\nname = \"metered-share\"\nprice = \"4.80\"\nunit = \"hour\"\ntelemetry = \"share\"\n\n\
[telemetry]\nmetrics = [\"invocations\"]\nwindow = \"24h\"\ncohort_min_size = 50\nepsilon = 1.0\n";

fn payload_of(file: &[u8]) -> ReportPayload {
    let file = ReportFile::from_cbor(file).unwrap();
    let envelope = escx::envelope::Envelope::from_cbor(&file.report).unwrap();
    escx::cbor::decode_exact(envelope.payload_unverified(), "report").unwrap()
}

fn resign_report(wallet: &Wallet, license: &LicensePayload, file: &[u8], payload: &ReportPayload) -> Vec<u8> {
    let mut file = ReportFile::from_cbor(file).unwrap();
    let envelope = wallet
        .seal_as_holder("acme/thermal", &license.license_id, CONTEXT_REPORT, escx::cbor::encode(payload))
        .unwrap();
    file.report = ByteBuf::from(envelope);
    file.to_cbor()
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "test-vectors/metering".into()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // Deterministic known answers: blindings and commitments.
    let secret = [0x42u8; 32];
    let license_id = [0x17u8; 16];
    let mut blindings = Vec::new();
    for (unit, hour, minute, value) in [
        ("invocations", T0, 0u8, 0u64),
        ("invocations", T0, 17, 3),
        ("minutes", T0, 59, 1),
        ("custom:gpu_s", T0 + H, 1, 1_000_000),
    ] {
        let r = metering::blinding(&secret, &license_id, unit, hour, minute);
        blindings.push(json!({
            "secret": hex::encode(secret), "license_id": hex::encode(license_id), "unit": unit,
            "hour": hour, "minute": minute, "blinding": hex::encode(r.to_bytes()),
            "value": value, "commitment": hex::encode(escx_licensing::pedersen::commit(value, &r).compress().to_bytes()),
        }));
    }
    // Blindings of a report made with a nonce (metering.md §2.2, v2 context).
    let nonce = [0x5au8; 32];
    let mut report_blindings = Vec::new();
    for (unit, hour, minute, value) in [("invocations", T0, 17u8, 3u64), ("minutes", T0, 59, 1)] {
        let r = metering::report_blinding(&secret, &license_id, Some(&nonce), unit, hour, minute);
        report_blindings.push(json!({
            "secret": hex::encode(secret), "license_id": hex::encode(license_id), "nonce": hex::encode(nonce),
            "unit": unit, "hour": hour, "minute": minute, "blinding": hex::encode(r.to_bytes()),
            "value": value, "commitment": hex::encode(escx_licensing::pedersen::commit(value, &r).compress().to_bytes()),
        }));
    }
    let hour_sum: Scalar =
        (0..60).map(|m| metering::blinding(&secret, &license_id, "invocations", T0, m)).sum();
    let hour_sum_json =
        json!({ "unit": "invocations", "hour": T0, "blinding_sum": hex::encode(hour_sum.to_bytes()) });

    // An issuer, a package, one license, two hours of use.
    let issuer =
        Issuer::init(&tmp.path().join("issuer"), "Vector Licensing", &Protection::Unencrypted, T0).unwrap();
    let publisher = SecretKey::generate();
    let src = tmp.path().join("pkg");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("manifest.toml"), MANIFEST).unwrap();
    std::fs::write(src.join("model.py"), "# model\n").unwrap();
    let package = out.join("package.escx");
    escx::pack::pack_dir(
        &src,
        &package,
        &[&publisher],
        &escx::pack::PackOptions { signed_at: Some(T0), ..Default::default() },
    )
    .unwrap();
    keyfile::write_public_key(&out.join("publisher.pub"), publisher.public_key(), true).unwrap();
    let policy = TrustPolicy::from_keys(vec![publisher.public_key().clone()]);
    issuer.register_package(&package, &policy, T0).unwrap();
    let chain = issuer.bundle(T0).unwrap();
    write("issuer.chain", &chain.to_cbor());
    let wallet = Wallet::open(&tmp.path().join("wallet")).unwrap();
    let request = wallet.request(&chain, &"acme/thermal".parse().unwrap(), "metered", 1, T0).unwrap();
    wallet.finalize(&issuer.issue(&request, T0).unwrap()).unwrap();
    let sealed = wallet.redeem("acme/thermal").unwrap();
    let license = wallet.install(&issuer.redeem(&sealed, T0 + 10).unwrap()).unwrap();
    let meter = Meter::open(&wallet).unwrap();
    let (h1, h2, h3) = (T0 + H, T0 + 2 * H, T0 + 3 * H);
    let verified = wallet.verify(&Trust::chain(&chain), "acme/thermal", None, None, h1).unwrap();
    for (at, amount) in [(h1 + 17 * 60 + 3, 3), (h1 + 17 * 60 + 9, 1), (h1 + 40 * 60, 2), (h2 + 5, 7)] {
        meter.record(&verified, "invocations", amount, at).unwrap();
    }
    let now = h3 + 60;
    let r1 = meter.report("acme/thermal", h1, Telemetry::Private, now).unwrap().file;
    let r2 = meter.report("acme/thermal", h2, Telemetry::Private, now).unwrap().file;
    let r3 = meter.report("acme/thermal", h3, Telemetry::Private, h3 + H + 60).unwrap().file;
    write("report-1.cbor", &r1);
    write("report-2.cbor", &r2);
    write("report-3.cbor", &r3);

    // Variants an operator refuses.
    let mut twin = payload_of(&r2);
    twin.series[0].commitments.swap(0, 1);
    write("report-2-twin.cbor", &resign_report(&wallet, &license, &r2, &twin));
    let mut bad_sig = ReportFile::from_cbor(&r2).unwrap();
    let last = bad_sig.report.len() - 1;
    bad_sig.report[last] ^= 1;
    write("report-2-bad-signature.cbor", &bad_sig.to_cbor());
    let mut unsorted = payload_of(&r1);
    unsorted.series.reverse();
    write("report-1-unsorted.cbor", &resign_report(&wallet, &license, &r1, &unsorted));
    let mut short = payload_of(&r1);
    short.series[0].commitments.pop();
    write("report-1-59-minutes.cbor", &resign_report(&wallet, &license, &r1, &short));
    // Range proofs (metering.md §3.4): minute 0 of `minutes` moved up by 2 (its commitment
    // plus 2·B), the proofs kept, so the hour proof fails; and report 2 carrying
    // report 1's proofs.
    let mut two = payload_of(&r2);
    let minutes = two.series.iter_mut().find(|s| s.unit == "minutes").unwrap();
    let moved = escx_licensing::pedersen::point(&minutes.commitments[0]).unwrap()
        + curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT * Scalar::from(2u64);
    minutes.commitments[0] = ByteBuf::from(moved.compress().to_bytes().to_vec());
    write("report-2-minute-is-2.cbor", &resign_report(&wallet, &license, &r2, &two));
    let mut borrowed = payload_of(&r2);
    let one = payload_of(&r1);
    borrowed.minutes_range = one.minutes_range;
    borrowed.hour_range = one.hour_range;
    borrowed.sums_range = one.sums_range;
    write("report-2-proofs-of-report-1.cbor", &resign_report(&wallet, &license, &r2, &borrowed));

    // Openings.
    let minute = meter.open_hour("acme/thermal", h1, Some(17), Some("invocations")).unwrap();
    write("opening-minute.cbor", &minute.to_cbor());
    let hour = meter.open_hour("acme/thermal", h1, None, None).unwrap();
    write("opening-hour.cbor", &hour.to_cbor());
    // A minute of `minutes`: the operator checks the report's per-minute proof first.
    let used = meter.open_hour("acme/thermal", h1, Some(40), Some("minutes")).unwrap();
    write("opening-minute-of-minutes.cbor", &used.to_cbor());
    let mut wrong = minute.clone();
    wrong.openings[0].value = 5;
    write("opening-wrong-value.cbor", &wrong.to_cbor());
    let absent = OpeningFile { hour: h1 + 10 * H, ..minute };
    write("opening-unreported-hour.cbor", &absent.to_cbor());

    // Closes: the honest one after three hours, and one claiming one invocation less.
    let period = metering::Period::of(h1);
    let close = meter.close("acme/thermal", period, None, true, h3 + H + 120).unwrap().file;
    write("close.cbor", &close);
    let file = CloseFile::from_cbor(&close).unwrap();
    let envelope = escx::envelope::Envelope::from_cbor(&file.close).unwrap();
    let mut payload: ClosePayload = escx::cbor::decode_exact(envelope.payload_unverified(), "close").unwrap();
    let mut lower = payload.clone();
    lower.totals.iter_mut().find(|t| t.unit == "invocations").unwrap().total -= 1;
    let sign = |p: &ClosePayload| {
        let envelope = wallet
            .seal_as_holder("acme/thermal", &license.license_id, CONTEXT_CLOSE, escx::cbor::encode(p))
            .unwrap();
        CloseFile { v: 1, certificate: file.certificate.clone(), close: ByteBuf::from(envelope) }.to_cbor()
    };
    write("close-lower-total.cbor", &sign(&lower));
    payload.through_seq = 2;
    payload.through_hash =
        ByteBuf::from(metering::report_hash(&ReportFile::from_cbor(&r2).unwrap().report).to_vec());
    write("close-skips-hour-3.cbor", &sign(&payload));

    let hash = |file: &[u8]| hex::encode(metering::report_hash(&ReportFile::from_cbor(file).unwrap().report));
    let expected = json!({
        "spec": "spec/metering.md §2.2 (blindings), §3 (reports), §5 (openings), §6 (ingest), §7 (closes)",
        "blindings": blindings,
        "report_blindings": report_blindings,
        "hour_blinding_sum": hour_sum_json,
        "operator": {
            "issuer": "issuer.chain", "package": "package.escx", "publisher": "publisher.pub", "registered_at": T0,
        },
        "license_id": hex::encode(&license.license_id),
        "report_hashes": { "report-1.cbor": hash(&r1), "report-2.cbor": hash(&r2), "report-3.cbor": hash(&r3) },
        "ingest": [
            { "file": "report-2.cbor", "now": now, "expect": "report-out-of-order" },
            { "file": "report-1.cbor", "now": h1 + 30, "expect": "report-too-early" },
            { "file": "report-1.cbor", "now": h1 + H + 35 * 86_400 + 1, "expect": "report-too-late" },
            { "file": "report-1-unsorted.cbor", "now": now, "expect": "report-invalid" },
            { "file": "report-1-59-minutes.cbor", "now": now, "expect": "report-invalid" },
            { "file": "report-1.cbor", "now": now, "expect": "stored" },
            { "file": "report-1.cbor", "now": now, "expect": "duplicate" },
            { "file": "report-2-minute-is-2.cbor", "now": now, "expect": "report-range-invalid" },
            { "file": "report-2-proofs-of-report-1.cbor", "now": now, "expect": "report-range-invalid" },
            { "file": "report-2-bad-signature.cbor", "now": now, "expect": "report-signature-invalid" },
            { "file": "report-2.cbor", "now": now, "expect": "stored" },
            { "file": "report-2-twin.cbor", "now": now, "expect": "equivocation" },
        ],
        "openings": [
            { "file": "opening-minute.cbor", "expect": "ok", "values": { "invocations": 4 } },
            { "file": "opening-hour.cbor", "expect": "ok", "values": { "invocations": 6, "minutes": 2 } },
            { "file": "opening-minute-of-minutes.cbor", "expect": "ok", "values": { "minutes": 1 } },
            { "file": "opening-wrong-value.cbor", "expect": "opening-mismatch" },
            { "file": "opening-unreported-hour.cbor", "expect": "meter-not-found" },
        ],
        "closes": [
            { "file": "close.cbor", "now": h3 + H + 200, "expect": "report-missing" },
            { "ingest": "report-3.cbor", "now": h3 + H + 60, "expect": "stored" },
            { "file": "close-lower-total.cbor", "now": h3 + H + 200, "expect": "close-mismatch" },
            { "file": "close-skips-hour-3.cbor", "now": h3 + H + 200, "expect": "close-mismatch" },
            { "file": "close.cbor", "now": h3 + H + 200, "expect": "ok", "totals": { "invocations": 13, "minutes": 3 } },
            { "file": "close.cbor", "now": h3 + H + 300, "expect": "ok" },
            { "file": "close-lower-total.cbor", "now": h3 + H + 300, "expect": "close-conflict" },
        ],
    });
    write("expected.json", serde_json::to_string_pretty(&expected).unwrap().as_bytes());
    println!("wrote {}", out.display());
}
