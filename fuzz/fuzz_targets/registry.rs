//! What a registry client parses, from any bytes (registry.md §2, resolution.md): the
//! signed index envelope, an index payload (as received, and signed by the fixture's
//! registry key so the checks behind the signature run), and the lockfile.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use escx::envelope::MultiEnvelope;
use escx::sig::{SecretKey, SigningContext};
use escx_manifest::index::Index;
use escx_manifest::lockfile::Lockfile;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(SecretKey::generate)
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            if let Ok(envelope) = MultiEnvelope::from_cbor(rest) {
                let key = key();
                let _ = envelope
                    .verified_signers(SigningContext::INDEX, |id| (id == key.id()).then(|| key.public_key()));
                let _ = Index::from_cbor(envelope.payload_unverified());
            }
        }
        1 => {
            let signed = MultiEnvelope::seal(SigningContext::INDEX, rest.to_vec(), &[key()]).to_cbor();
            if let Ok(envelope) = MultiEnvelope::from_cbor(&signed) {
                if let Ok(index) = Index::from_cbor(envelope.payload_unverified()) {
                    let catalog = escx_manifest::resolve::Catalog::new(&index);
                    let _ = index.package("fuzz/a");
                    drop(catalog);
                }
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = Lockfile::parse(text, Path::new("escx.lock"));
            }
        }
    }
});
