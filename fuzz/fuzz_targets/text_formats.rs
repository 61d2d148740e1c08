//! Key files, rotation statements, envelopes, trust policies and manifests from any bytes.
#![no_main]

use std::path::Path;

use escx::envelope::Envelope;
use escx::keyfile;
use escx::header::ManifestHeader;
use escx::policy::TrustPolicy;
use escx::rotation::RotationStatement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Envelope::from_cbor(data);
    let _ = ManifestHeader::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keyfile::parse_public_key(text);
        let _ = RotationStatement::parse(text);
        let _ = TrustPolicy::parse(text, Path::new("/nonexistent"), Path::new("fuzz.toml"));
    }
});
