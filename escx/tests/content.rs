//! Licensed content (escx-format.md §15): the payload encrypted under a content key sealed
//! to a license issuer. Signature and hashes verify for anyone; the content needs the key.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

mod common;

use escx::Fault as _;
use std::path::Path;

use escx::container::{FLAG_ENCRYPTED, FLAG_ZSTD, PackageReader, RawSection, SectionType, assemble};
use escx::content::{self, ContentKey, ContentKeySection};
use escx::kem::KemSecretKey;
use escx::pack::{self, PackOptions};
use escx::sig::SecretKey;
use escx::verify::{self, VerifyOptions};

use common::craft::{RawEntry, raw_tar};

fn pack_encrypted(dir: &Path, out: &Path, key: &SecretKey, issuer: &KemSecretKey) {
    let options = PackOptions {
        signed_at: Some(escx::UnixSeconds(1_700_000_000)),
        encrypt_for: Some(issuer.public_key()),
        ..Default::default()
    };
    pack::pack_dir(dir, out, &[key], &options).unwrap();
}

fn content_key_of(package: &Path, issuer: &KemSecretKey) -> ContentKey {
    let mut reader = PackageReader::open_file(package).unwrap();
    let binding = reader.content_binding().unwrap();
    reader.content_key_section().unwrap().expect("a content-key section").open(issuer, &binding).unwrap()
}

fn extract(
    package: &Path,
    target: &Path,
    key: &SecretKey,
    content_key: Option<&ContentKey>,
) -> Result<(), escx::Error> {
    let options = VerifyOptions { content_key, ..VerifyOptions::default() };
    escx::extract::extract_file(package, target, &common::trust(&[key]), &options).map(|_| ())
}

#[test]
fn encrypted_package_verifies_for_anyone_and_extracts_with_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let issuer = KemSecretKey::generate();
    let dir = common::sample_dir(tmp.path());
    let out = tmp.path().join("p.escx");
    pack_encrypted(&dir, &out, &key, &issuer);

    let report = verify::verify_file(&out, &common::trust(&[&key]), &VerifyOptions::default()).unwrap();
    let payload = report.sections.iter().find(|s| s.entry.kind == SectionType::Payload).unwrap();
    assert!(payload.entry.is_encrypted() && !payload.content_checked && payload.archive.is_none());
    assert!(
        report.sections.iter().filter(|s| s.entry.kind != SectionType::Payload).all(|s| s.content_checked)
    );
    let plain = tmp.path().join("plain.escx");
    common::pack(&dir, &plain, &[&key]);
    let plain_report =
        verify::verify_file(&plain, &common::trust(&[&key]), &VerifyOptions::default()).unwrap();
    let plain_payload = plain_report.sections.iter().find(|s| s.entry.kind == SectionType::Payload).unwrap();
    assert_eq!(payload.entry.plain_length, plain_payload.entry.plain_length, "same tar inside");

    let target = tmp.path().join("none");
    let err = extract(&out, &target, &key, None).unwrap_err();
    assert_eq!(err.code(), "content-key-required");
    assert!(!target.exists());

    let content_key = content_key_of(&out, &issuer);
    let options = VerifyOptions { content_key: Some(&content_key), ..VerifyOptions::default() };
    let report = verify::verify_file(&out, &common::trust(&[&key]), &options).unwrap();
    let payload = report.sections.iter().find(|s| s.entry.kind == SectionType::Payload).unwrap();
    assert!(payload.content_checked);
    assert_eq!(payload.archive, plain_payload.archive);

    let target = tmp.path().join("out");
    extract(&out, &target, &key, Some(&content_key)).unwrap();
    assert_eq!(
        std::fs::read(target.join("src/model.py")).unwrap(),
        std::fs::read(dir.join("src/model.py")).unwrap()
    );
    assert!(!target.join("content-key").exists(), "the sealed key is not extracted");
}

#[test]
fn wrong_content_key_or_wrong_issuer_fails_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let issuer = KemSecretKey::generate();
    let out = tmp.path().join("p.escx");
    pack_encrypted(&common::sample_dir(tmp.path()), &out, &key, &issuer);

    let target = tmp.path().join("out");
    let err = extract(&out, &target, &key, Some(&ContentKey::generate().unwrap())).unwrap_err();
    assert_eq!(err.code(), "decryption-failed", "{err}");
    assert!(!target.exists());

    let mut reader = PackageReader::open_file(&out).unwrap();
    let binding = reader.content_binding().unwrap();
    let section = reader.content_key_section().unwrap().unwrap();
    assert_eq!(section.recipient(), issuer.public_key().id());
    let err = section.open(&KemSecretKey::generate(), &binding).err().unwrap();
    assert!(err.to_string().contains("not to this issuer"), "{err}");
}

fn section(kind: SectionType, flags: u32, stored: Vec<u8>, plain_length: u64) -> RawSection {
    RawSection { kind, flags, stored, plain_length }
}

fn manifest() -> RawSection {
    let bytes = common::MANIFEST.as_bytes().to_vec();
    let length = bytes.len() as u64;
    section(SectionType::Manifest, 0, bytes, length)
}

fn encrypted(key: &ContentKey, plain: &[u8]) -> Vec<u8> {
    let mut stored = Vec::new();
    content::encrypt(key, plain, &mut stored).unwrap();
    stored
}

fn key_section(content_key: &ContentKey, issuer: &KemSecretKey) -> RawSection {
    // These packages test table and ciphertext rules; nobody opens the seal.
    let binding = content::ContentBinding {
        name: "acme/thermal".parse().unwrap(),
        version: "1.2.0".into(),
        payload_hash: [0; 32],
    };
    let bytes = ContentKeySection::seal(content_key, issuer.public_key(), &binding).unwrap().encode();
    let length = bytes.len() as u64;
    section(SectionType::ContentKey, 0, bytes, length)
}

fn open_code(bytes: Vec<u8>) -> Option<String> {
    PackageReader::open(std::io::Cursor::new(bytes), "<test>").err().map(|e| e.code().to_owned())
}

/// A trusted publisher who signs bad ciphertext, or a hostile archive under encryption, is
/// caught at decryption or by the archive rules, after the key is applied.
#[test]
fn signed_but_bad_ciphertext_and_hostile_archives_are_refused_after_decryption() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let issuer = KemSecretKey::generate();
    let content_key = ContentKey::generate().unwrap();
    let tar = raw_tar(&[RawEntry::file(b"a.txt", b"alpha\n")]);
    let mut stored = encrypted(&content_key, &tar);
    let last = stored.len() - 1;
    stored[last] ^= 1;
    let sections = [
        manifest(),
        section(SectionType::Payload, FLAG_ENCRYPTED, stored, tar.len() as u64),
        key_section(&content_key, &issuer),
    ];
    let package = tmp.path().join("flipped.escx");
    std::fs::write(&package, assemble(&sections, &[&key], escx::UnixSeconds(0))).unwrap();
    verify::verify_file(&package, &common::trust(&[&key]), &VerifyOptions::default())
        .expect("hashes and signature are fine");
    let target = tmp.path().join("out");
    assert_eq!(extract(&package, &target, &key, Some(&content_key)).unwrap_err().code(), "decryption-failed");
    assert!(!target.exists());

    let evil = raw_tar(&[RawEntry::file(b"../evil", b"x")]);
    let sections = [
        manifest(),
        section(SectionType::Payload, FLAG_ENCRYPTED, encrypted(&content_key, &evil), evil.len() as u64),
        key_section(&content_key, &issuer),
    ];
    std::fs::write(&package, assemble(&sections, &[&key], escx::UnixSeconds(0))).unwrap();
    assert_eq!(extract(&package, &target, &key, Some(&content_key)).unwrap_err().code(), "unsafe-path");
    assert!(!target.exists() && !tmp.path().join("evil").exists());
}

#[test]
fn table_rules_for_encrypted_sections() {
    let key = SecretKey::generate();
    let issuer = KemSecretKey::generate();
    let content_key = ContentKey::generate().unwrap();
    let tar = raw_tar(&[RawEntry::file(b"a.txt", b"alpha\n")]);
    let sealed = encrypted(&content_key, &tar);
    let plain = tar.len() as u64;
    let package = |sections: &[RawSection]| assemble(sections, &[&key], escx::UnixSeconds(0));

    // The valid shape opens.
    let good = [
        manifest(),
        section(SectionType::Payload, FLAG_ENCRYPTED, sealed.clone(), plain),
        key_section(&content_key, &issuer),
    ];
    assert_eq!(open_code(package(&good)), None);

    // Encrypted payload without its key section, and a key section with a plain payload.
    let no_key = [manifest(), section(SectionType::Payload, FLAG_ENCRYPTED, sealed.clone(), plain)];
    assert_eq!(open_code(package(&no_key)).as_deref(), Some("content-key-pairing"));
    let no_encryption = [
        manifest(),
        section(SectionType::Payload, 0, tar.clone(), plain),
        key_section(&content_key, &issuer),
    ];
    assert_eq!(open_code(package(&no_encryption)).as_deref(), Some("content-key-pairing"));

    // Only the payload may be encrypted.
    let docs = [
        manifest(),
        section(SectionType::Docs, FLAG_ENCRYPTED, sealed.clone(), plain),
        key_section(&content_key, &issuer),
    ];
    assert_eq!(open_code(package(&docs)).as_deref(), Some("section-flags"));

    // Uncompressed ciphertext has exactly the STREAM length of its plain bytes.
    let mut short = sealed.clone();
    short.truncate(short.len() - 1);
    let truncated = [
        manifest(),
        section(SectionType::Payload, FLAG_ENCRYPTED, short, plain),
        key_section(&content_key, &issuer),
    ];
    assert_eq!(open_code(package(&truncated)).as_deref(), Some("stored-length"));

    // Compressed-then-encrypted must be smaller than the plain bytes sealed as they are.
    let bloated = [
        manifest(),
        section(SectionType::Payload, FLAG_ENCRYPTED | FLAG_ZSTD, sealed.clone(), plain),
        key_section(&content_key, &issuer),
    ];
    assert_eq!(open_code(package(&bloated)).as_deref(), Some("section-flags"));

    // The key section is CBOR of the documented shape.
    let garbage = [
        manifest(),
        section(SectionType::Payload, FLAG_ENCRYPTED, sealed, plain),
        section(SectionType::ContentKey, 0, b"not cbor".to_vec(), 8),
    ];
    let mut reader = PackageReader::open(std::io::Cursor::new(package(&garbage)), "<test>").unwrap();
    assert_eq!(reader.content_key_section().unwrap_err().code(), "content-key-invalid");
}

/// The reported attack: a publisher copies a victim's content-key section into a cheap
/// package of its own (re-signed). The seal is bound to the victim's name, version and
/// payload hash, so it does not open for the copy, whatever else was copied with it.
#[test]
fn a_content_key_section_copied_into_another_package_does_not_open() {
    let tmp = tempfile::tempdir().unwrap();
    let victim_key = SecretKey::generate();
    let attacker_key = SecretKey::generate();
    let issuer = KemSecretKey::generate();
    let victim = tmp.path().join("victim.escx");
    pack_encrypted(&common::sample_dir(tmp.path()), &victim, &victim_key, &issuer);
    let victim_bytes = std::fs::read(&victim).unwrap();
    let reader = PackageReader::open(std::io::Cursor::new(victim_bytes.clone()), "v").unwrap();
    let stolen = |kind: SectionType| {
        let entry = reader.section(kind).unwrap();
        let stored =
            victim_bytes[entry.offset as usize..(entry.offset + entry.stored_length) as usize].to_vec();
        section(kind, entry.flags, stored, entry.plain_length)
    };
    let cheap_manifest = b"[package]\nname = \"mallory/cheap\"\nversion = \"0.1.0\"\n".to_vec();
    let cheap_length = cheap_manifest.len() as u64;
    let cheap_payload = {
        let content_key = ContentKey::generate().unwrap();
        encrypted(&content_key, &raw_tar(&[RawEntry::file(b"cheap.txt", b"cheap")]))
    };
    let cheap_payload_length = raw_tar(&[RawEntry::file(b"cheap.txt", b"cheap")]).len() as u64;
    // 1. Only the content-key section copied.
    let copied = assemble(
        &[
            section(SectionType::Manifest, 0, cheap_manifest.clone(), cheap_length),
            section(SectionType::Payload, FLAG_ENCRYPTED, cheap_payload, cheap_payload_length),
            stolen(SectionType::ContentKey),
        ],
        &[&attacker_key],
        escx::UnixSeconds(0),
    );
    // 2. The victim's encrypted payload copied too, under the attacker's name.
    let copied_payload = assemble(
        &[
            section(SectionType::Manifest, 0, cheap_manifest, cheap_length),
            stolen(SectionType::Payload),
            stolen(SectionType::ContentKey),
        ],
        &[&attacker_key],
        escx::UnixSeconds(0),
    );
    for bytes in [copied, copied_payload] {
        let mut reader = PackageReader::open(std::io::Cursor::new(bytes), "copy").unwrap();
        let binding = reader.content_binding().unwrap();
        assert_eq!(binding.name, "mallory/cheap");
        let err = reader.content_key_section().unwrap().unwrap().open(&issuer, &binding).err().unwrap();
        assert_eq!(err.code(), "sealed-box-invalid", "{err}");
        assert!(err.to_string().contains("sealed for another package"), "{err}");
    }
    // The victim's own package still opens.
    assert_eq!(content_key_of(&victim, &issuer).fingerprint().len(), 32);
}
