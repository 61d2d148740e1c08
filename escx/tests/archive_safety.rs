//! Hostile archives signed by a trusted key: verification names the problem and
//! extraction writes nothing (escx-format.md §6.2, §11).

mod common;

use escx::Fault as _;
use escx::sig::SecretKey;
use escx::verify::VerifyOptions;

use common::craft::{RawEntry, raw_tar};

fn expect_refused(entries: &[RawEntry<'_>], code: &str) {
    let key = SecretKey::generate();
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("evil.escx");
    std::fs::write(&package, common::signed_payload(raw_tar(entries), &key)).unwrap();
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
    std::fs::write(&package, common::signed_payload(tar, &key)).unwrap();
    let err =
        escx::verify::verify_file(&package, &common::trust(&[&key]), &VerifyOptions::default()).unwrap_err();
    assert_eq!(err.code(), "archive-invalid", "{err}");
}

/// The reported escape: `src/sub/dl -> ..` is harmless alone and `src/x`'s target counts
/// as inside lexically, but resolved through the link it lands two levels above the
/// target. Refused whichever entry comes first.
#[test]
fn a_link_target_through_another_link_is_refused_in_either_order() {
    let dl = RawEntry::symlink(b"src/sub/dl", b"..");
    let x = RawEntry::symlink(b"src/x", b"sub/dl/sub/dl/../../../..");
    expect_refused(&[dl, x], "unsafe-path");
    let dl = RawEntry::symlink(b"src/sub/dl", b"..");
    let x = RawEntry::symlink(b"src/x", b"sub/dl/sub/dl/../../../..");
    expect_refused(&[x, dl], "unsafe-path");
    // A trailing "/" or "." enters the link too.
    expect_refused(&[RawEntry::symlink(b"a/l", b".."), RawEntry::symlink(b"m", b"a/l/")], "unsafe-path");
}

/// On a case-insensitive file system `x/evil` would be written through the link `X`.
#[test]
fn paths_colliding_by_case_or_normalisation_are_refused() {
    expect_refused(&[RawEntry::symlink(b"X", b"."), RawEntry::file(b"x/evil", b"e")], "duplicate-entry");
    expect_refused(&[RawEntry::file(b"Readme", b"1"), RawEntry::file(b"README", b"2")], "duplicate-entry");
    // U+00E9 and "e" + U+0301 are one name on HFS+ and APFS.
    expect_refused(
        &[RawEntry::file("caf\u{e9}".as_bytes(), b"1"), RawEntry::file("cafe\u{301}".as_bytes(), b"2")],
        "duplicate-entry",
    );
    // German sharp s folds to "ss" under full case folding.
    expect_refused(
        &[RawEntry::file("stra\u{df}e".as_bytes(), b"1"), RawEntry::file(b"STRASSE", b"2")],
        "duplicate-entry",
    );
    expect_refused(&[RawEntry::file(b"Docs/x", b"1")], "reserved-path");
    expect_refused(&[RawEntry::file(b"MANIFEST.TOML", b"1")], "reserved-path");
}

/// The docs section's links are not known when the payload is checked on its own.
#[test]
fn payload_links_may_not_enter_another_sections_directory() {
    expect_refused(&[RawEntry::symlink(b"x", b"docs/a/b/../..")], "unsafe-path");
    expect_refused(&[RawEntry::symlink(b"x", b"Tests/t")], "unsafe-path");
}

#[test]
fn link_chains_and_links_to_directories_still_extract() {
    let key = SecretKey::generate();
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("ok.escx");
    let tar = raw_tar(&[
        RawEntry::file(b"lib/libx.so.1.2", b"elf"),
        RawEntry::symlink(b"lib/libx.so.1", b"libx.so.1.2"),
        RawEntry::symlink(b"lib/libx.so", b"libx.so.1"),
        RawEntry::symlink(b"current", b"lib"),
        RawEntry::symlink(b"bin/x", b"../lib/libx.so"),
    ]);
    std::fs::write(&package, common::signed_payload(tar, &key)).unwrap();
    let target = tmp.path().join("out");
    escx::extract::extract_file(&package, &target, &common::trust(&[&key]), &VerifyOptions::default())
        .unwrap();
    assert_eq!(std::fs::read(target.join("bin/x")).unwrap(), b"elf");
    assert_eq!(std::fs::read(target.join("current/libx.so")).unwrap(), b"elf");
}

#[cfg(unix)]
#[test]
fn pack_refuses_a_tree_whose_links_escape_through_links() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pkg");
    common::write(&dir.join("manifest.toml"), common::MANIFEST);
    std::fs::create_dir_all(dir.join("src/sub")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("src/sub/dl")).unwrap();
    std::os::unix::fs::symlink("sub/dl/sub/dl/../../../..", dir.join("src/x")).unwrap();
    let key = SecretKey::generate();
    let err =
        escx::pack::pack_dir(&dir, &tmp.path().join("p.escx"), &[&key], &Default::default()).unwrap_err();
    assert_eq!(err.code(), "pack-input", "{err}");
    let message = err.to_string();
    assert!(message.contains("src/x") && message.contains("passes through the symbolic link"), "{message}");
    assert!(!tmp.path().join("p.escx").exists());
}
