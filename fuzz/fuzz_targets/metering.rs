//! Every metering message the operator parses, from any bytes (metering.md §3–§7): the
//! first byte picks the message; the rest is the file as received or, for the signed ones,
//! a payload signed by the fixture license's real holder key (with its real certificate),
//! so the rules behind the signature are reached too.
#![no_main]

use std::sync::{Mutex, OnceLock};

use escx::keyfile::Protection;
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx_licensing::issuer::Issuer;
use escx_metering::operator::Operator;
use escx_metering::{self as metering, CONTEXT_CLOSE, CONTEXT_REPORT, CloseFile, ReportFile};
use escx_licensing::wallet::Wallet;
use libfuzzer_sys::fuzz_target;
use serde_bytes::ByteBuf;

const T0: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);
const PACKAGE: &str = "fuzz/thermal";
const MANIFEST: &str = "[package]\nname = \"fuzz/thermal\"\nversion = \"1.0.0\"\n[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\
[[pricing.tier]]\nname = \"metered\"\nprice = \"6.00\"\nunit = \"hour\"\n\
[telemetry]\nmetrics = [\"invocations\"]\nwindow = \"24h\"\nepsilon = 1.0\n";

struct Fixture {
    _dir: tempfile::TempDir,
    operator: Operator,
    wallet: Wallet,
    license_id: Vec<u8>,
    certificate: Vec<u8>,
}

fn fixture() -> &'static Mutex<Fixture> {
    static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::init(&dir.path().join("issuer"), "Fuzz", &Protection::Unencrypted, T0).unwrap();
        let publisher = SecretKey::generate();
        let src = dir.path().join("pkg");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("manifest.toml"), MANIFEST).unwrap();
        let package = dir.path().join("p.escx");
        escx::pack::pack_dir(
            &src,
            &package,
            &[&publisher],
            &escx::pack::PackOptions { signed_at: Some(T0), ..Default::default() },
        )
        .unwrap();
        let policy = TrustPolicy::from_keys(vec![publisher.public_key().clone()]);
        issuer.register_package(&package, &policy, T0).unwrap();
        let chain = issuer.bundle(T0).unwrap();
        let wallet = Wallet::open(&dir.path().join("wallet")).unwrap();
        let request = wallet.request(&chain, &PACKAGE.parse().unwrap(), "metered", 1, T0).unwrap();
        wallet.finalize(&issuer.issue(&request, T0).unwrap()).unwrap();
        let sealed = wallet.redeem(PACKAGE).unwrap();
        let license = wallet.install(&issuer.redeem(&sealed, T0 + 1).unwrap()).unwrap();
        let (_, certificate) = wallet
            .licenses_during(PACKAGE, escx::UnixSeconds::EPOCH, escx::UnixSeconds::MAX)
            .unwrap()
            .remove(0);
        let mut operator = Operator::init(&dir.path().join("op"), &[chain]).unwrap();
        operator.add_package(&package, &policy, T0).unwrap();
        Mutex::new(Fixture {
            _dir: dir,
            operator,
            wallet,
            license_id: license.license_id.to_vec(),
            certificate,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let mut fixture = fixture().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = T0 + 10 * 3600;
    match mode % 6 {
        0 => {
            let _ = fixture.operator.ingest(&[rest.to_vec()], now);
        }
        1 => {
            let Ok(envelope) = fixture.wallet.seal_as_holder(
                PACKAGE,
                &fixture.license_id.clone(),
                CONTEXT_REPORT,
                rest.to_vec(),
            ) else {
                return;
            };
            let file = ReportFile {
                v: 1,
                certificate: ByteBuf::from(fixture.certificate.clone()),
                report: ByteBuf::from(envelope),
            };
            let _ = fixture.operator.ingest(&[file.to_cbor()], now);
        }
        2 => {
            let _ = fixture.operator.close(rest, now);
        }
        3 => {
            let Ok(envelope) = fixture.wallet.seal_as_holder(
                PACKAGE,
                &fixture.license_id.clone(),
                CONTEXT_CLOSE,
                rest.to_vec(),
            ) else {
                return;
            };
            let file = CloseFile {
                v: 1,
                certificate: ByteBuf::from(fixture.certificate.clone()),
                close: ByteBuf::from(envelope),
            };
            let _ = fixture.operator.close(&file.to_cbor(), now);
        }
        4 => {
            let _ = fixture.operator.check_opening(rest);
        }
        _ => {
            if let Ok(payload) = escx::cbor::decode_exact::<metering::ReportPayload>(rest, "report") {
                // The structure rules, then the range proof fields as a verifier reads
                // them (metering.md §3.4): decoding, and the items a batch verifies.
                let _ = metering::check_report_ranges(&payload, 0);
                let _ = metering::minutes_range_item(&payload, 0);
                let _ = escx_licensing::rangeproof::decodes(&payload.minutes_range);
                let _ = escx_licensing::rangeproof::decodes(&payload.hour_range);
                let _ = escx_licensing::rangeproof::decodes(&payload.sums_range);
            }
        }
    }
});
