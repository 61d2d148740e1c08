//! Hostile section content behind valid hashes (what a trusted but malicious publisher
//! can ship): the zstd, tar and manifest checks must not panic.
#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;

use escx::container::{FLAG_ZSTD, PackageReader, RawSection, SectionType, assemble};
use escx::progress::NoProgress;
use escx::sig::SecretKey;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(SecretKey::generate)
}

const MANIFEST: &[u8] = b"[package]\nname = \"fuzz/x\"\nversion = \"1.0.0\"\n";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, content)) = data.split_first() else { return };
    let kind = [SectionType::Payload, SectionType::Docs, SectionType::License][usize::from(selector % 3)];
    let compressed = selector & 0x80 != 0;
    let (stored, flags) = if compressed { (zstd_frame(content), FLAG_ZSTD) } else { (content.to_vec(), 0) };
    let plain_length = content.len() as u64 + u64::from(selector >> 4 & 0x3);
    let sections = [
        RawSection {
            kind: SectionType::Manifest,
            flags: 0,
            stored: MANIFEST.to_vec(),
            plain_length: MANIFEST.len() as u64,
        },
        RawSection { kind, flags, stored, plain_length },
    ];
    let package = assemble(&sections, &[key()], escx::UnixSeconds(0));
    if let Ok(mut reader) = PackageReader::open(Cursor::new(package), "<fuzz>") {
        let _ = reader.check_section(kind, &NoProgress);
    }
});

/// Raw (uncompressed) zstd frame: the fuzzer's bytes reach the tar parser unchanged.
fn zstd_frame(content: &[u8]) -> Vec<u8> {
    // Frame header: magic, descriptor (single segment off, no checksum), window byte.
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x50];
    let blocks: Vec<&[u8]> =
        if content.is_empty() { vec![&[][..]] } else { content.chunks(64 * 1024).collect() };
    for (index, block) in blocks.iter().enumerate() {
        let last = u32::from(index + 1 == blocks.len());
        let header = last | ((block.len() as u32) << 3); // raw block
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.extend_from_slice(block);
    }
    frame
}
