//! Writes `test-vectors/escx/`: valid packages with their expected roots and section
//! tables, and invalid packages each with the error code a verifier must report.
//!
//!     cargo run -p escx --example make_test_vectors -- test-vectors/escx
//!
//! Keys are fresh on every run (ML-DSA key generation takes no seed here) and ML-DSA
//! signing is hedged, so regenerating changes every file; the expected error codes are
//! written down below, not taken from the verifier, and the generator refuses to write a
//! vector whose verification disagrees.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

#[path = "../tests/common/craft.rs"]
mod craft;

use escx::Fault as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use escx::container::{
    FLAG_ENCRYPTED, FLAG_ZSTD, PackageReader, RawSection, SectionType, SignatureBlock, assemble,
};
use escx::content::{self, ContentKey, ContentKeySection};
use escx::kem::KemSecretKey;
use escx::keyfile;
use escx::pack::{self, PackOptions};
use escx::policy::TrustPolicy;
use escx::progress::NoProgress;
use escx::sig::SecretKey;
use escx::verify::{self, VerifyOptions};
use serde_json::{Value, json};

use craft::{RawEntry, raw_tar};

const SIGNED_AT: u64 = 1_790_000_000; // 2026-09-21T13:33:20Z
const MANIFEST: &str =
    "[package]\nname = \"vectors/sample\"\nversion = \"1.0.0\"\ndescription = \"escx test vector\"\n";

struct Keys {
    publisher: SecretKey,
    attester: SecretKey,
    stranger: SecretKey,
}

impl Keys {
    fn by_name(&self, name: &str) -> &SecretKey {
        match name {
            "publisher" => &self.publisher,
            "attester" => &self.attester,
            _ => &self.stranger,
        }
    }
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "test-vectors/escx".into()));
    for sub in ["keys", "valid", "invalid"] {
        let dir = out.join(sub);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
    }
    let keys = Keys {
        publisher: SecretKey::generate(),
        attester: SecretKey::generate(),
        stranger: SecretKey::generate(),
    };
    let mut key_json = serde_json::Map::new();
    for name in ["publisher", "attester", "stranger"] {
        let key = keys.by_name(name);
        keyfile::write_public_key(&out.join(format!("keys/{name}.pub")), key.public_key(), true).unwrap();
        key_json.insert(
            name.into(),
            json!({ "file": format!("keys/{name}.pub"), "key_id": key.id().to_string() }),
        );
    }

    let work = tempfile::tempdir().unwrap();
    let one_signer = pack_dir(work.path(), "one", &keys.publisher, false, None);
    let all_sections = pack_dir(work.path(), "all", &keys.publisher, true, None);
    // Licensed content (escx-format.md §15). The content key is published here so a second
    // implementation can check its decryption; the issuer's KEM key is not needed for that.
    let issuer = KemSecretKey::generate();
    let encrypted = pack_dir(work.path(), "enc", &keys.publisher, true, Some(&issuer));
    let encrypted_key = {
        let mut reader = PackageReader::open(Cursor::new(encrypted.clone()), "x").unwrap();
        let binding = reader.content_binding().unwrap();
        reader.content_key_section().unwrap().unwrap().open(&issuer, &binding).unwrap()
    };
    let content_key = ContentKey::generate().unwrap();
    let small_tar = raw_tar(&[RawEntry::file(b"model.bin", &[42u8; 70_000])]);
    let sealed_small = {
        let mut stored = Vec::new();
        content::encrypt(&content_key, &small_tar[..], &mut stored).unwrap();
        stored
    };
    let key_section = {
        let header = escx::header::ManifestHeader::parse(MANIFEST.as_bytes()).unwrap();
        let binding = escx::content::ContentBinding {
            name: header.package.name.clone(),
            version: header.package.version.to_string(),
            payload_hash: *blake3::hash(&sealed_small).as_bytes(),
        };
        let bytes = ContentKeySection::seal(&content_key, issuer.public_key(), &binding).unwrap().encode();
        let length = bytes.len() as u64;
        RawSection { kind: SectionType::ContentKey, flags: 0, stored: bytes, plain_length: length }
    };
    let encrypted_raw = |flags: u32, stored: Vec<u8>, key: Option<RawSection>| {
        let mut sections = vec![
            manifest_section(),
            RawSection { kind: SectionType::Payload, flags, stored, plain_length: small_tar.len() as u64 },
        ];
        sections.extend(key);
        assemble(&sections, &[&keys.publisher], escx::UnixSeconds(SIGNED_AT))
    };
    let encrypted_uncompressed =
        encrypted_raw(FLAG_ENCRYPTED, sealed_small.clone(), Some(key_section.clone()));
    // Writers compress whenever it helps, which for small archives is always; this one is
    // assembled uncompressed (valid: compression is optional for readers) so the
    // uncompressed read path has a vector too.
    let uncompressed = {
        let tar = raw_tar(&[
            RawEntry::file(b"README.txt", b"plain archive\n"),
            RawEntry::file(b"data/x.bin", &[7u8; 700]),
        ]);
        let license = b"Plain license text.\n".to_vec();
        let tar_length = tar.len() as u64;
        let license_length = license.len() as u64;
        assemble(
            &[
                manifest_section(),
                RawSection { kind: SectionType::Payload, flags: 0, stored: tar, plain_length: tar_length },
                RawSection {
                    kind: SectionType::License,
                    flags: 0,
                    stored: license,
                    plain_length: license_length,
                },
            ],
            &[&keys.publisher],
            escx::UnixSeconds(SIGNED_AT),
        )
    };
    let two_signers = {
        let path = work.path().join("two.escx");
        std::fs::write(&path, &one_signer).unwrap();
        pack::countersign(&path, &keys.attester, escx::UnixSeconds(SIGNED_AT + 60), &NoProgress).unwrap();
        std::fs::read(&path).unwrap()
    };

    // Directories, an executable, a chain of links, GNU long names and long link targets,
    // an empty file and a ustar header with a prefix, written as records by hand.
    let long_path = format!("deep/{}/{}.txt", "d".repeat(100), "long-name-".repeat(10));
    let long_target = format!("x/../{long_path}");
    let tree_tar = [
        craft::record(&RawEntry { mode: 0o755, ..RawEntry::of_type(b"bin/", b'5') }),
        craft::record(&RawEntry { mode: 0o755, ..RawEntry::file(b"bin/run", b"#!/bin/sh\necho run\n") }),
        craft::record(&RawEntry::of_type(b"lib/", b'5')),
        craft::record(&RawEntry::file(b"lib/libx.so.1.2", &[0x7f; 600])),
        craft::record(&RawEntry::symlink(b"lib/libx.so.1", b"libx.so.1.2")),
        craft::record(&RawEntry::symlink(b"lib/libx.so", b"libx.so.1")),
        craft::record(&RawEntry::symlink(b"current", b"lib/libx.so")),
        craft::long_record(b'L', long_path.as_bytes()),
        craft::record(&RawEntry::file(&long_path.as_bytes()[..100], b"reached through a GNU long name\n")),
        craft::record(&RawEntry::of_type(b"x", b'5')),
        craft::long_record(b'K', long_target.as_bytes()),
        craft::record(&RawEntry::symlink(b"long-link", &long_target.as_bytes()[..100])),
        craft::record(&RawEntry::file(b"empty", b"")),
        craft::ustar_file(b"ustar/prefix", b"file.txt", b"a ustar header with a prefix\n"),
        craft::end_blocks(),
    ]
    .concat();
    let tree = signed_plain(&keys.publisher, tree_tar);
    let empty_archive = signed_plain(&keys.publisher, craft::end_blocks());
    // RFC 8878 §3.1.2: decoders skip skippable frames; here one comes before the data.
    let skippable = {
        let mut stored = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0];
        stored.extend_from_slice(b"skip");
        stored.extend(zstd::encode_all(&small_tar[..], 3).unwrap());
        signed(&keys.publisher, SectionType::Payload, FLAG_ZSTD, stored, small_tar.len() as u64)
    };

    let mut valid = Vec::new();
    for (name, bytes, trusted, signers, key) in [
        ("tree", &tree, vec!["publisher"], vec!["publisher"], None),
        ("empty-archive", &empty_archive, vec!["publisher"], vec!["publisher"], None),
        ("zstd-skippable-frame", &skippable, vec!["publisher"], vec!["publisher"], None),
        ("one-signer", &one_signer, vec!["publisher"], vec!["publisher"], None),
        ("two-signers", &two_signers, vec!["attester"], vec!["publisher", "attester"], None),
        ("all-sections", &all_sections, vec!["publisher"], vec!["publisher"], None),
        ("uncompressed", &uncompressed, vec!["publisher"], vec!["publisher"], None),
        ("encrypted", &encrypted, vec!["publisher"], vec!["publisher"], Some(&encrypted_key)),
        (
            "encrypted-uncompressed",
            &encrypted_uncompressed,
            vec!["publisher"],
            vec!["publisher"],
            Some(&content_key),
        ),
    ] {
        let file = format!("valid/{name}.escx");
        std::fs::write(out.join(&file), bytes).unwrap();
        let report =
            check(bytes, &keys, &trusted, key).unwrap_or_else(|e| panic!("{file} does not verify: {e}"));
        assert!(report.sections.iter().all(|s| s.content_checked));
        let mut reader = PackageReader::open(Cursor::new(bytes.clone()), &file).unwrap();
        // §15.2: derive_key("escx v1 content key binding", name, version, payload hash).
        let binding = key.map(|_| hex::encode(reader.content_binding().unwrap().digest()));
        valid.push(json!({
            "content_key": key.map(|k| hex::encode(k.as_bytes())),
            "content_binding": binding,
            "file": file,
            "trusted_keys": trusted,
            "package": { "name": report.package.name, "version": report.package.version.to_string() },
            "root": hex::encode(reader.root()),
            "signer_key_ids": signers.iter().map(|s| keys.by_name(s).id().to_string()).collect::<Vec<_>>(),
            "sections": reader.sections().iter().zip(&report.sections).map(|(s, checked)| json!({
                "type": s.kind.name(), "type_id": s.kind.id(), "flags": s.flags, "offset": s.offset,
                "stored_length": s.stored_length, "plain_length": s.plain_length, "blake3": hex::encode(s.hash),
                "archive": checked.archive.map(|a| json!({
                    "files": a.files, "directories": a.directories, "symlinks": a.symlinks, "file_bytes": a.file_bytes,
                })),
            })).collect::<Vec<_>>(),
            "tree": extracted_tree(bytes, &keys, &trusted, key),
        }));
    }

    let mut invalid = Vec::new();
    let mut add_keyed = |name: &str,
                         description: &str,
                         bytes: Vec<u8>,
                         trusted: &[&str],
                         error: &str,
                         key: Option<&ContentKey>| {
        let file = format!("invalid/{name}.escx");
        match check(&bytes, &keys, trusted, key) {
            Ok(_) => panic!("{file} verifies but must fail with {error}"),
            Err(e) if e.code() != error => panic!("{file} fails with {} ({e}), expected {error}", e.code()),
            Err(_) => {}
        }
        std::fs::write(out.join(&file), &bytes).unwrap();
        invalid.push(json!({
            "file": file, "description": description, "trusted_keys": trusted, "error": error,
            "content_key": key.map(|k| hex::encode(k.as_bytes())),
        }));
    };
    let mut add = |name: &str, description: &str, bytes: Vec<u8>, trusted: &[&str], error: &str| {
        add_keyed(name, description, bytes, trusted, error, None)
    };
    let publisher = ["publisher"];
    let layout =
        |bytes: &[u8]| PackageReader::open(Cursor::new(bytes.to_vec()), "x").unwrap().sections().to_vec();
    let flip = |bytes: &[u8], at: usize, bit: u8| {
        let mut changed = bytes.to_vec();
        changed[at] ^= 1 << bit;
        changed
    };
    let middle_of = |bytes: &[u8], kind: SectionType| {
        let entry = layout(bytes).into_iter().find(|s| s.kind == kind).unwrap();
        (entry.offset + entry.stored_length / 2) as usize
    };
    let table_field = |index: usize, field_offset: usize| 24 + 64 * index + field_offset;

    add(
        "header-bad-magic",
        "bit 0 of byte 0 flipped (magic)",
        flip(&one_signer, 0, 0),
        &publisher,
        "bad-magic",
    );
    add(
        "header-minor-flipped",
        "bit 0 of the minor version flipped: structurally fine, but the root changes",
        flip(&one_signer, 6, 0),
        &publisher,
        "signature-invalid",
    );
    add(
        "header-unknown-major",
        "major version 3 (this reader implements 1.x)",
        flip(&one_signer, 4, 1),
        &publisher,
        "unsupported-version",
    );
    add(
        "header-flags",
        "bit 0 of the header flags set",
        flip(&one_signer, 8, 0),
        &publisher,
        "unknown-header-flags",
    );
    add(
        "table-hash-flipped",
        "one bit of the payload's table hash flipped: the root changes",
        flip(&one_signer, table_field(1, 40), 3),
        &publisher,
        "signature-invalid",
    );
    for (kind, base) in [
        (SectionType::Manifest, &one_signer),
        (SectionType::Payload, &one_signer),
        (SectionType::Docs, &all_sections),
        (SectionType::Tests, &all_sections),
        (SectionType::License, &all_sections),
    ] {
        let name = format!("{}-bit-flip", kind.name());
        let description =
            format!("one bit flipped in the middle of the {} section's stored bytes", kind.name());
        add(&name, &description, flip(base, middle_of(base, kind), 5), &publisher, "section-hash-mismatch");
    }
    let body = |bytes: &[u8]| {
        PackageReader::open(Cursor::new(bytes.to_vec()), "x").unwrap().header().body_length as usize
    };
    add(
        "trailer-signature-flip",
        "one bit flipped inside the signature",
        flip(&one_signer, body(&one_signer) + 36 + 1000, 2),
        &publisher,
        "signature-invalid",
    );
    add(
        "trailer-key-id-flip",
        "one bit flipped in the signature block's key id: the signer is now unknown",
        flip(&one_signer, body(&one_signer) + 8, 0),
        &publisher,
        "untrusted",
    );
    add(
        "trailer-signed-at-flip",
        "one bit flipped in signed_at, which the block's signature covers",
        flip(&one_signer, body(&one_signer) + 24, 0),
        &publisher,
        "signature-invalid",
    );

    let mut overlap = one_signer.clone();
    let at = table_field(1, 8);
    let offset = u64::from_le_bytes(overlap[at..at + 8].try_into().unwrap()) - 1;
    overlap[at..at + 8].copy_from_slice(&offset.to_le_bytes());
    add(
        "sections-overlap",
        "the payload's offset moved one byte back into the manifest",
        overlap,
        &publisher,
        "section-overlap",
    );

    let mut past_end = uncompressed.clone();
    for field in [16, 24] {
        let at = table_field(1, field);
        let length = u64::from_le_bytes(past_end[at..at + 8].try_into().unwrap()) + 1_000_000;
        past_end[at..at + 8].copy_from_slice(&length.to_le_bytes());
    }
    add(
        "section-past-eof",
        "the (uncompressed) payload's stored and plain lengths grown by 1 000 000 bytes, past the end of the file",
        past_end,
        &publisher,
        "section-past-end",
    );

    add(
        "truncated",
        "the file cut in half",
        one_signer[..one_signer.len() / 2].to_vec(),
        &publisher,
        "truncated",
    );
    add("unsigned", "the trailer removed", one_signer[..body(&one_signer)].to_vec(), &publisher, "unsigned");
    let mut twice = one_signer.clone();
    let root = *PackageReader::open(Cursor::new(one_signer.clone()), "x").unwrap().root();
    twice.extend_from_slice(
        &SignatureBlock::sign(&root, &keys.publisher, escx::UnixSeconds(SIGNED_AT)).encode(),
    );
    add("duplicate-signer", "a second block by the same key", twice, &publisher, "duplicate-signer");

    // Hostile content behind valid hashes and a valid publisher signature.
    let bomb_plain = raw_tar(&[RawEntry::file(b"zeros.bin", &vec![0u8; 8 * 1024 * 1024])]);
    let bomb = zstd::encode_all(&bomb_plain[..], 19).unwrap();
    add(
        "zstd-bomb",
        "payload compresses 8 MiB of zeros into a few hundred bytes but declares a plain length of 65536",
        signed(&keys.publisher, SectionType::Payload, FLAG_ZSTD, bomb, 65_536),
        &publisher,
        "plain-length-mismatch",
    );
    let hostile_archives: [(&str, &str, Vec<RawEntry<'_>>, &str); 9] = [
        (
            "tar-dot-dot",
            "payload entry \"../escaped.txt\"",
            vec![RawEntry::file(b"../escaped.txt", b"outside")],
            "unsafe-path",
        ),
        (
            "tar-absolute-path",
            "payload entry \"/etc/escx-evil\"",
            vec![RawEntry::file(b"/etc/escx-evil", b"x")],
            "unsafe-path",
        ),
        (
            "tar-symlink-escape",
            "payload symlink \"link\" -> \"../../outside\"",
            vec![RawEntry::symlink(b"link", b"../../outside")],
            "unsafe-path",
        ),
        (
            "tar-hard-link",
            "payload hard link entry",
            vec![RawEntry::of_type(b"hard", b'1')],
            "unsupported-entry",
        ),
        (
            "tar-duplicate-entry",
            "payload has \"a.txt\" twice",
            vec![RawEntry::file(b"a.txt", b"1"), RawEntry::file(b"a.txt", b"2")],
            "duplicate-entry",
        ),
        (
            "tar-link-through-link",
            "payload symlink \"src/x\" -> \"sub/dl/..\" stays inside lexically, but \"src/sub/dl\" (listed after it) is a link to \"..\", so it resolves above the root",
            vec![RawEntry::symlink(b"src/x", b"sub/dl/../.."), RawEntry::symlink(b"src/sub/dl", b"..")],
            "unsafe-path",
        ),
        (
            "tar-case-collision",
            "payload symlink \"X\" -> \".\" and file \"x/evil\": one path on a case-insensitive file system",
            vec![RawEntry::symlink(b"X", b"."), RawEntry::file(b"x/evil", b"e")],
            "duplicate-entry",
        ),
        (
            "tar-normalisation-collision",
            "payload files \"caf\\u00e9\" (NFC) and \"cafe\\u0301\" (NFD): one name on HFS+ and APFS",
            vec![
                RawEntry::file("caf\u{e9}".as_bytes(), b"1"),
                RawEntry::file("cafe\u{301}".as_bytes(), b"2"),
            ],
            "duplicate-entry",
        ),
        (
            "tar-link-into-docs",
            "payload symlink \"x\" -> \"docs/a\" enters the directory the docs section fills",
            vec![RawEntry::symlink(b"x", b"docs/a/b")],
            "unsafe-path",
        ),
    ];
    for (name, description, entries, error) in hostile_archives {
        add(name, description, signed_plain(&keys.publisher, raw_tar(&entries)), &publisher, error);
    }

    add(
        "untrusted-signer",
        "a valid package signed only by the stranger key",
        resign(&one_signer, &keys.stranger),
        &publisher,
        "untrusted",
    );

    add(
        "encrypted-without-content-key",
        "payload flagged encrypted, no content-key section",
        encrypted_raw(FLAG_ENCRYPTED, sealed_small.clone(), None),
        &publisher,
        "content-key-pairing",
    );
    add(
        "content-key-without-encryption",
        "a content-key section beside a plain payload",
        {
            let length = small_tar.len() as u64;
            assemble(
                &[
                    manifest_section(),
                    RawSection {
                        kind: SectionType::Payload,
                        flags: 0,
                        stored: small_tar.clone(),
                        plain_length: length,
                    },
                    key_section.clone(),
                ],
                &[&keys.publisher],
                escx::UnixSeconds(SIGNED_AT),
            )
        },
        &publisher,
        "content-key-pairing",
    );
    add(
        "encrypted-docs",
        "the docs section flagged encrypted (only the payload may be)",
        {
            let length = small_tar.len() as u64;
            assemble(
                &[
                    manifest_section(),
                    RawSection {
                        kind: SectionType::Payload,
                        flags: FLAG_ENCRYPTED,
                        stored: sealed_small.clone(),
                        plain_length: length,
                    },
                    RawSection {
                        kind: SectionType::Docs,
                        flags: FLAG_ENCRYPTED,
                        stored: sealed_small.clone(),
                        plain_length: length,
                    },
                    key_section.clone(),
                ],
                &[&keys.publisher],
                escx::UnixSeconds(SIGNED_AT),
            )
        },
        &publisher,
        "section-flags",
    );
    add(
        "encrypted-last-segment-dropped",
        "the final STREAM segment removed (and the table re-signed): the stored length no longer fits",
        encrypted_raw(
            FLAG_ENCRYPTED,
            sealed_small[..content::NONCE_PREFIX_BYTES + content::SEGMENT_BYTES + content::TAG_BYTES]
                .to_vec(),
            Some(key_section.clone()),
        ),
        &publisher,
        "stored-length",
    );
    add(
        "content-key-garbage",
        "the content-key section is not the documented CBOR map",
        encrypted_raw(
            FLAG_ENCRYPTED,
            sealed_small.clone(),
            Some(RawSection { kind: SectionType::ContentKey, flags: 0, stored: vec![0xa0], plain_length: 1 }),
        ),
        &publisher,
        "content-key-invalid",
    );
    // The layout rules of §5.2, each reached with everything before it intact.
    let patch = |bytes: &[u8], at: usize, value: &[u8]| {
        let mut changed = bytes.to_vec();
        changed[at..at + value.len()].copy_from_slice(value);
        changed
    };
    let u64_at = |bytes: &[u8], at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    add(
        "section-count-zero",
        "section_count 0 in the header",
        patch(&one_signer, 12, &0u32.to_le_bytes()),
        &publisher,
        "section-count",
    );
    add(
        "section-unknown-type",
        "the payload's type id changed to 9, which v1 does not define",
        patch(&one_signer, table_field(1, 0), &9u32.to_le_bytes()),
        &publisher,
        "unknown-section-type",
    );
    add(
        "section-order",
        "the docs entry's type changed to 2 (payload): two payload sections",
        patch(&all_sections, table_field(2, 0), &2u32.to_le_bytes()),
        &publisher,
        "section-order",
    );
    add(
        "missing-manifest",
        "the first entry's type changed to 2 (payload)",
        patch(&one_signer, table_field(0, 0), &2u32.to_le_bytes()),
        &publisher,
        "missing-manifest",
    );
    add(
        "section-gap",
        "the payload's offset moved one byte forward",
        patch(&one_signer, table_field(1, 8), &(u64_at(&one_signer, table_field(1, 8)) + 1).to_le_bytes()),
        &publisher,
        "section-gap",
    );
    add(
        "body-length",
        "body_length one byte past the end of the last section",
        patch(&one_signer, 16, &(u64_at(&one_signer, 16) + 1).to_le_bytes()),
        &publisher,
        "body-length",
    );
    add(
        "section-too-large",
        "the uncompressed license's plain length raised to 1 MiB + 1 (its stored length is checked after the limit)",
        patch(&uncompressed, table_field(2, 24), &(1_048_577u64).to_le_bytes()),
        &publisher,
        "section-too-large",
    );
    add(
        "too-many-signatures",
        "seventeen copies of the signature block: the trailer is longer than 16 blocks, whatever it holds",
        {
            let block = one_signer[body(&one_signer)..].to_vec();
            let mut bytes = one_signer.clone();
            for _ in 0..16 {
                bytes.extend_from_slice(&block);
            }
            bytes
        },
        &publisher,
        "too-many-signatures",
    );
    add(
        "signature-block-alg",
        "the signature block's alg field is 2",
        patch(&one_signer, body(&one_signer) + 4, &2u16.to_le_bytes()),
        &publisher,
        "signature-block",
    );
    add(
        "signature-block-truncated",
        "the last 100 bytes of the signature removed",
        one_signer[..one_signer.len() - 100].to_vec(),
        &publisher,
        "truncated",
    );
    add(
        "zstd-corrupt",
        "a zstd-flagged payload whose stored bytes are not a zstd frame",
        signed(&keys.publisher, SectionType::Payload, FLAG_ZSTD, vec![0x5a; 100], 1024),
        &publisher,
        "decompression-failed",
    );
    add(
        "manifest-bad-version",
        "a signed manifest whose version \"1.0\" is not SemVer",
        {
            let manifest = "[package]\nname = \"vectors/sample\"\nversion = \"1.0\"\n";
            assemble(
                &[RawSection {
                    kind: SectionType::Manifest,
                    flags: 0,
                    stored: manifest.as_bytes().to_vec(),
                    plain_length: manifest.len() as u64,
                }],
                &[&keys.publisher],
                escx::UnixSeconds(SIGNED_AT),
            )
        },
        &publisher,
        "manifest-invalid",
    );

    // Layers are judged outermost first (§8): the plain length before the archive.
    let mut one_byte_long = small_tar.clone();
    one_byte_long.push(0);
    add(
        "zstd-one-byte-long",
        "the zstd frames yield the archive and one more byte; the declared plain length is the archive's",
        signed(
            &keys.publisher,
            SectionType::Payload,
            FLAG_ZSTD,
            zstd::encode_all(&one_byte_long[..], 3).unwrap(),
            small_tar.len() as u64,
        ),
        &publisher,
        "plain-length-mismatch",
    );
    add(
        "zstd-stops-inside-archive",
        "the zstd frames stop in the middle of the archive's only file; the declared plain length is the whole archive's",
        signed(
            &keys.publisher,
            SectionType::Payload,
            FLAG_ZSTD,
            zstd::encode_all(&small_tar[..20_000], 3).unwrap(),
            small_tar.len() as u64,
        ),
        &publisher,
        "plain-length-mismatch",
    );

    // Tar records that break §6.2's record rules.
    let one_file = craft::record(&RawEntry::file(b"a.txt", b"abc"));
    let with_end = |records: Vec<u8>| [records, craft::end_blocks()].concat();
    let record_cases: [(&str, &str, Vec<u8>, &str); 12] = [
        (
            "tar-padding-not-zero",
            "a non-zero byte in the padding after a file's three data bytes",
            with_end(patch(&one_file, 512 + 100, &[1])),
            "archive-invalid",
        ),
        (
            "tar-bad-checksum",
            "the header checksum one too high",
            with_end({
                let mut bad = one_file.clone();
                craft::set_checksum(&mut bad[..512]);
                let sum = u32::from_str_radix(std::str::from_utf8(&bad[148..154]).unwrap(), 8).unwrap() + 1;
                bad[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
                bad
            }),
            "archive-invalid",
        ),
        (
            "tar-signed-checksum",
            "a header byte above 0x7f with the checksum computed over signed bytes (pre-POSIX)",
            with_end({
                let mut bad = one_file.clone();
                bad[300] = 0xff; // in the GNU header's uname field, which readers otherwise ignore
                craft::set_checksum(&mut bad[..512]);
                let sum = u32::from_str_radix(std::str::from_utf8(&bad[148..154]).unwrap(), 8).unwrap() - 256;
                bad[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
                bad
            }),
            "archive-invalid",
        ),
        (
            "tar-no-magic",
            "a header with the checksum right but no ustar or GNU magic",
            with_end({
                let mut bad = one_file.clone();
                bad[257..265].copy_from_slice(&[0; 8]);
                craft::set_checksum(&mut bad[..512]);
                bad
            }),
            "archive-invalid",
        ),
        (
            "tar-size-not-octal",
            "the size field holds \"0000000000x\\0\"",
            with_end({
                let mut bad = one_file.clone();
                bad[124..136].copy_from_slice(b"0000000000x\0");
                craft::set_checksum(&mut bad[..512]);
                bad
            }),
            "archive-invalid",
        ),
        (
            "tar-one-end-block",
            "the archive ends after a single zero block (plain length matching)",
            [one_file.clone(), vec![0; 512]].concat(),
            "archive-invalid",
        ),
        ("tar-no-end-blocks", "the archive ends after its last record", one_file.clone(), "archive-invalid"),
        (
            "tar-data-after-end",
            "a byte after the two end blocks",
            [with_end(one_file.clone()), vec![0]].concat(),
            "archive-invalid",
        ),
        (
            "tar-zero-bytes",
            "an empty payload (zero plain bytes is not an archive)",
            Vec::new(),
            "archive-invalid",
        ),
        (
            "tar-long-name-dangling",
            "a GNU long-name record that no entry follows",
            with_end([one_file.clone(), craft::long_record(b'L', b"orphan")].concat()),
            "archive-invalid",
        ),
        (
            "tar-long-name-too-long",
            "a GNU long-name record of 5000 bytes",
            with_end(craft::long_record(b'L', &[b'a'; 4999])),
            "archive-invalid",
        ),
        (
            "tar-directory-with-data",
            "a directory entry with 3 data bytes",
            with_end(craft::record(&RawEntry { data: b"abc", ..RawEntry::of_type(b"d/", b'5') })),
            "archive-invalid",
        ),
    ];
    for (name, description, tar, error) in record_cases {
        add(name, description, signed_plain(&keys.publisher, tar), &publisher, error);
    }
    let path_cases: [(&str, &str, Vec<u8>, &str); 7] = [
        (
            "tar-windows-device-name",
            "payload file \"aux.txt\" (a device on Windows)",
            raw_tar(&[RawEntry::file(b"aux.txt", b"x")]),
            "unsafe-path",
        ),
        (
            "tar-non-portable-character",
            "payload file \"a:b\"",
            raw_tar(&[RawEntry::file(b"a:b", b"x")]),
            "unsafe-path",
        ),
        (
            "tar-trailing-dot",
            "payload file \"name.\" (Windows drops the dot)",
            raw_tar(&[RawEntry::file(b"name.", b"x")]),
            "unsafe-path",
        ),
        (
            "tar-link-target-not-utf8",
            "payload symlink whose target is the byte 0xff",
            raw_tar(&[RawEntry::symlink(b"l", b"\xff")]),
            "unsafe-path",
        ),
        (
            "tar-reserved-below-manifest",
            "payload file \"manifest.toml/x\"",
            raw_tar(&[RawEntry::file(b"manifest.toml/x", b"x")]),
            "reserved-path",
        ),
        (
            "tar-reserved-license",
            "payload file \"License\" (the license section's LICENSE, by key)",
            raw_tar(&[RawEntry::file(b"License", b"x")]),
            "reserved-path",
        ),
        (
            "tar-reserved-docs",
            "payload file \"Docs/readme\" (the docs section's directory, by key)",
            raw_tar(&[RawEntry::file(b"Docs/readme", b"x")]),
            "reserved-path",
        ),
    ];
    for (name, description, tar, error) in path_cases {
        add(name, description, signed_plain(&keys.publisher, tar), &publisher, error);
    }
    // 64 MiB of path bytes: 16 385 files of 4096-byte paths under one shared chain of
    // directories, zstd-compressed (the plain archive is about 92 MB).
    let too_many = {
        let chain = format!("{}/", vec!["p".repeat(254); 16].join("/"));
        let mut tar = Vec::new();
        for i in 0..16_385u32 {
            let leaf = format!("{i:0>width$}", width = 4096 - chain.len());
            let path = format!("{chain}{leaf}");
            tar.extend(craft::long_record(b'L', path.as_bytes()));
            tar.extend(craft::record(&RawEntry::file(b"f", b"")));
        }
        tar.extend(craft::end_blocks());
        let plain_length = tar.len() as u64;
        let stored = zstd::encode_all(&tar[..], 19).unwrap();
        signed(&keys.publisher, SectionType::Payload, FLAG_ZSTD, stored, plain_length)
    };
    add(
        "too-many-path-bytes",
        "16 385 payload files whose 4096-byte paths total more than 64 MiB (zstd-compressed)",
        too_many,
        &publisher,
        "too-many-entries",
    );

    let mut tampered = sealed_small.clone();
    tampered[content::NONCE_PREFIX_BYTES + 100] ^= 4;
    add_keyed(
        "encrypted-ciphertext-altered",
        "one ciphertext bit flipped before signing: hashes and signature hold, decryption with content_key fails",
        encrypted_raw(FLAG_ENCRYPTED, tampered, Some(key_section.clone())),
        &publisher,
        "decryption-failed",
        Some(&content_key),
    );

    // §8 step 8: a selection naming a section the table lacks.
    {
        let selection = verify::SectionSelection::Only(vec![SectionType::Docs]);
        let policy = TrustPolicy::from_keys(vec![keys.publisher.public_key().clone()]);
        let mut reader = PackageReader::open(Cursor::new(one_signer.clone()), "<vector>").unwrap();
        let options = VerifyOptions {
            now: Some(escx::UnixSeconds(SIGNED_AT + 3600)),
            sections: &selection,
            ..VerifyOptions::default()
        };
        let error = verify::verify(&mut reader, &policy, &options).unwrap_err();
        assert_eq!(error.code(), "section-absent");
        invalid.push(json!({
            "file": "valid/one-signer.escx",
            "description": "the valid one-signer package verified with the selection [docs], which it has no section for",
            "trusted_keys": ["publisher"], "error": "section-absent", "content_key": null, "select": ["docs"],
        }));
    }

    let expected = json!({
        "spec": "spec/escx-format.md (format 1.0)",
        "verification_time": SIGNED_AT + 3600,
        "keys": Value::Object(key_json),
        "valid": valid,
        "invalid": invalid,
    });
    std::fs::write(out.join("expected.json"), serde_json::to_string_pretty(&expected).unwrap() + "\n")
        .unwrap();
    println!("wrote {}", out.display());
}

fn check(
    bytes: &[u8],
    keys: &Keys,
    trusted: &[&str],
    content_key: Option<&ContentKey>,
) -> Result<verify::VerifyReport, escx::Error> {
    let policy =
        TrustPolicy::from_keys(trusted.iter().map(|n| keys.by_name(n).public_key().clone()).collect());
    let mut reader = PackageReader::open(Cursor::new(bytes.to_vec()), "<vector>")?;
    verify::verify(
        &mut reader,
        &policy,
        &VerifyOptions {
            now: Some(escx::UnixSeconds(SIGNED_AT + 3600)),
            content_key,
            ..VerifyOptions::default()
        },
    )
}

fn manifest_section() -> RawSection {
    RawSection {
        kind: SectionType::Manifest,
        flags: 0,
        stored: MANIFEST.as_bytes().to_vec(),
        plain_length: MANIFEST.len() as u64,
    }
}

fn signed(key: &SecretKey, kind: SectionType, flags: u32, stored: Vec<u8>, plain_length: u64) -> Vec<u8> {
    assemble(
        &[manifest_section(), RawSection { kind, flags, stored, plain_length }],
        &[key],
        escx::UnixSeconds(SIGNED_AT),
    )
}

fn signed_plain(key: &SecretKey, tar: Vec<u8>) -> Vec<u8> {
    let length = tar.len() as u64;
    signed(key, SectionType::Payload, 0, tar, length)
}

/// The same body with the trailer replaced by one block from `key`.
fn resign(bytes: &[u8], key: &SecretKey) -> Vec<u8> {
    let reader = PackageReader::open(Cursor::new(bytes.to_vec()), "x").unwrap();
    let body = reader.header().body_length as usize;
    let mut out = bytes[..body].to_vec();
    out.extend_from_slice(&SignatureBlock::sign(reader.root(), key, escx::UnixSeconds(SIGNED_AT)).encode());
    out
}

/// Packs a sample directory; `rich` adds compressible files, docs, tests and a LICENSE,
/// otherwise the payload is incompressible so it is stored raw.
fn pack_dir(work: &Path, name: &str, key: &SecretKey, rich: bool, issuer: Option<&KemSecretKey>) -> Vec<u8> {
    let dir = work.join(name);
    let write = |path: &str, content: &[u8]| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    write("manifest.toml", MANIFEST.as_bytes());
    let mut noise = vec![0u8; 3000];
    blake3::Hasher::new().update(b"escx test vector noise").finalize_xof().fill(&mut noise);
    write("data/noise.bin", &noise);
    if rich {
        write("src/lib.py", "def f(x):\n    return 2 * x\n".repeat(50).as_bytes());
        write("docs/index.md", "# sample\n\nDocumentation for the test vector.\n".repeat(20).as_bytes());
        write("tests/test_lib.py", "from src.lib import f\nassert f(2) == 4\n".repeat(20).as_bytes());
        write("LICENSE", "Test vector license text. ".repeat(40).as_bytes());
    }
    let out = work.join(format!("{name}.escx"));
    let options = PackOptions {
        signed_at: Some(escx::UnixSeconds(SIGNED_AT)),
        encrypt_for: issuer.map(KemSecretKey::public_key),
        ..PackOptions::default()
    };
    pack::pack_dir(&dir, &out, &[key], &options).unwrap();
    std::fs::read(out).unwrap()
}

/// The tree a full extraction writes, sorted by path: every file with its size and
/// executable bit, every directory, every link with its target.
fn extracted_tree(bytes: &[u8], keys: &Keys, trusted: &[&str], key: Option<&ContentKey>) -> Vec<Value> {
    let work = tempfile::tempdir().unwrap();
    let package = work.path().join("p.escx");
    std::fs::write(&package, bytes).unwrap();
    let root = work.path().join("out");
    let policy =
        TrustPolicy::from_keys(trusted.iter().map(|n| keys.by_name(n).public_key().clone()).collect());
    let options = VerifyOptions {
        now: Some(escx::UnixSeconds(SIGNED_AT + 3600)),
        content_key: key,
        ..VerifyOptions::default()
    };
    escx::extract::extract_file(&package, &root, &policy, &options).unwrap();
    craft::tree_of(&root)
}
