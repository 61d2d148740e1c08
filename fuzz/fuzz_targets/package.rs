//! Any bytes given to the package reader and verifier: no panic, no unbounded allocation.
#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;

use escx::container::{PackageReader, SectionType};
use escx::policy::TrustPolicy;
use escx::progress::NoProgress;
use escx::sig::SecretKey;
use escx::verify::{self, VerifyOptions};
use libfuzzer_sys::fuzz_target;

fn policy() -> &'static TrustPolicy {
    static POLICY: OnceLock<TrustPolicy> = OnceLock::new();
    POLICY.get_or_init(|| TrustPolicy::from_keys(vec![SecretKey::generate().public_key().clone()]))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = PackageReader::open(Cursor::new(data.to_vec()), "<fuzz>") {
        let _ = reader.package_id();
        // Past the signature check only by luck; check content directly as well.
        for kind in SectionType::ALL {
            let _ = reader.check_section(kind, &NoProgress);
        }
    }
    if let Ok(mut reader) = PackageReader::open(Cursor::new(data.to_vec()), "<fuzz>") {
        let _ = verify::verify(&mut reader, policy(), &VerifyOptions::default());
    }
});
