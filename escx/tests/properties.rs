//! Property tests: every single-bit change is detected, and no input makes the reader
//! panic (escx-format.md §8, §13).
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

mod common;

use escx::Fault as _;
use std::io::Cursor;
use std::sync::OnceLock;

use escx::container::{PackageReader, RawSection, SectionType, assemble};
use escx::progress::NoProgress;
use escx::sig::SecretKey;
use escx::verify::{self, VerifyOptions};
use proptest::prelude::*;

struct Fixture {
    key: SecretKey,
    package: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SecretKey::generate();
        let package = common::small_package(&key);
        // Guard against a vacuous property: the unmodified package must verify.
        verify_all(package.clone(), &key).expect("the fixture package verifies");
        Fixture { key, package }
    })
}

fn verify_all(bytes: Vec<u8>, key: &SecretKey) -> Result<(), escx::Error> {
    let mut reader = PackageReader::open(Cursor::new(bytes), "<prop>")?;
    verify::verify(&mut reader, &common::trust(&[key]), &VerifyOptions::default()).map(|_| ())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Header, table, every section and the trailer: one flipped bit anywhere fails.
    #[test]
    fn any_single_bit_flip_is_rejected(position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let fixture = fixture();
        let mut bytes = fixture.package.clone();
        let at = position.index(bytes.len());
        bytes[at] ^= 1 << bit;
        let result = verify_all(bytes, &fixture.key);
        prop_assert!(result.is_err(), "flip at byte {} bit {} went unnoticed", at, bit);
        // A named error, never an I/O error on an in-memory input.
        let error = result.unwrap_err();
        prop_assert_ne!(error.code(), "io", "{}", error);
    }

    /// Random bytes, with and without a valid-looking header, never panic the reader.
    #[test]
    fn random_input_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 0..4096), with_magic in any::<bool>()) {
        if with_magic && bytes.len() >= 8 {
            bytes[..4].copy_from_slice(b"ESCX");
            bytes[4..8].copy_from_slice(&[1, 0, 0, 0]);
        }
        let _ = verify_all(bytes, &fixture().key);
    }

    /// Mutations of a real package (overwrites, truncation, extension) never panic.
    #[test]
    fn mutated_packages_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in prop::option::of(any::<prop::sample::Index>()),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = fixture().package.clone();
        for (position, value) in edits {
            let at = position.index(bytes.len());
            bytes[at] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        bytes.extend_from_slice(&tail);
        let _ = verify_all(bytes, &fixture().key);
    }

    /// Hostile *content* behind valid hashes and a valid signature (what a malicious
    /// publisher can ship) never panics the zstd, tar and manifest checks.
    #[test]
    fn hostile_section_content_never_panics(
        kind in prop::sample::select(vec![SectionType::Payload, SectionType::Docs, SectionType::License]),
        mut content in prop::collection::vec(any::<u8>(), 0..3000),
        tar_like in any::<bool>(),
        compressed in any::<bool>(),
        plain_delta in -8i64..8,
    ) {
        if tar_like && content.len() >= 512 {
            // Make the first block look like a tar header so the parser goes deeper.
            content[257..263].copy_from_slice(b"ustar\0");
        }
        let plain_length = (content.len() as i64 + plain_delta).max(0) as u64;
        let (stored, flags) = if compressed {
            (zstd::encode_all(&content[..], 3).unwrap(), escx::container::FLAG_ZSTD)
        } else {
            (content.clone(), 0)
        };
        let sections = [
            RawSection { kind: SectionType::Manifest, flags: 0, stored: common::MANIFEST.as_bytes().to_vec(), plain_length: common::MANIFEST.len() as u64 },
            RawSection { kind, flags, stored, plain_length },
        ];
        let package = assemble(&sections, &[&fixture().key], escx::UnixSeconds(0));
        if let Ok(mut reader) = PackageReader::open(Cursor::new(package), "<prop>") {
            let _ = reader.check_section(kind, &NoProgress);
        }
    }
}
