//! Hostile archives signed by a trusted key: verification names the problem and
//! extraction writes nothing (escx-format.md §6.2, §11).

mod common;

use escx::container::{RawSection, SectionType, assemble};
use escx::sig::SecretKey;
use escx::verify::VerifyOptions;

use common::craft::{RawEntry, raw_tar};

fn signed_package(payload: Vec<u8>, key: &SecretKey) -> Vec<u8> {
    let sections = [
        RawSection {
            kind: SectionType::Manifest,
            flags: 0,
            stored: common::MANIFEST.as_bytes().to_vec(),
            plain_length: common::MANIFEST.len() as u64,
        },
        RawSection {
            kind: SectionType::Payload,
            flags: 0,
            plain_length: payload.len() as u64,
            stored: payload,
        },
    ];
    assemble(&sections, &[key], 0)
}

fn expect_refused(entries: &[RawEntry<'_>], code: &str) {
    let key = SecretKey::generate();
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("evil.escx");
    std::fs::write(&package, signed_package(raw_tar(entries), &key)).unwrap();
    let target = tmp.path().join("out");
    let err =
        escx::extract::extract_file(&package, &target, &common::trust(&[&key]), &VerifyOptions::default())
            .unwrap_err();
    assert_eq!(err.code(), code, "{err}");
    assert!(!target.exists(), "extraction wrote {target:?} despite {err}");
    assert!(!tmp.path().join("evil").exists() && !tmp.path().parent().unwrap().join("evil").exists());
}

#[test]
fn dot_dot_path_is_refused() {
    expect_refused(&[RawEntry::file(b"../evil", b"x")], "unsafe-path");
}

#[test]
fn absolute_path_is_refused() {
    expect_refused(&[RawEntry::file(b"/tmp/evil", b"x")], "unsafe-path");
}

#[test]
fn symlink_leaving_the_target_is_refused() {
    expect_refused(&[RawEntry::symlink(b"link", b"../../etc/passwd")], "unsafe-path");
    expect_refused(&[RawEntry::symlink(b"link", b"/etc/passwd")], "unsafe-path");
}

#[test]
fn writing_through_a_symlink_is_refused() {
    expect_refused(&[RawEntry::symlink(b"dir", b"sub"), RawEntry::file(b"dir/x", b"x")], "duplicate-entry");
}

#[test]
fn duplicate_entries_are_refused() {
    expect_refused(&[RawEntry::file(b"a.txt", b"1"), RawEntry::file(b"a.txt", b"2")], "duplicate-entry");
}

#[test]
fn hard_links_devices_fifos_and_pax_headers_are_refused() {
    for entry_type in [b'1', b'3', b'4', b'6', b'x', b'g', b'S'] {
        expect_refused(&[RawEntry::of_type(b"thing", entry_type)], "unsupported-entry");
    }
}

#[test]
fn payload_may_not_claim_another_sections_path() {
    expect_refused(&[RawEntry::file(b"manifest.toml", b"[package]")], "reserved-path");
}

#[test]
fn trailing_garbage_after_the_archive_is_refused() {
    let key = SecretKey::generate();
    let mut tar = raw_tar(&[RawEntry::file(b"a", b"1")]);
    tar.extend_from_slice(b"hidden data the extractor would never write");
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("p.escx");
    std::fs::write(&package, signed_package(tar, &key)).unwrap();
    let err =
        escx::verify::verify_file(&package, &common::trust(&[&key]), &VerifyOptions::default()).unwrap_err();
    assert_eq!(err.code(), "archive-invalid", "{err}");
}
