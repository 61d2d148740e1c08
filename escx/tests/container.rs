//! Pack/verify/extract round trips and the container invariants of escx-format.md.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

mod common;

use escx::Fault as _;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use escx::Error;
use escx::container::{PackageReader, SectionType};
use escx::sig::SecretKey;
use escx::verify::{self, SectionSelection, VerifyOptions};

use common::*;

fn verify_bytes(
    bytes: Vec<u8>,
    key: &SecretKey,
    sections: &SectionSelection,
) -> Result<verify::VerifyReport, Error> {
    let mut reader = PackageReader::open(Cursor::new(bytes), "<test>")?;
    let options = VerifyOptions { sections, ..VerifyOptions::default() };
    verify::verify(&mut reader, &trust(&[key]), &options)
}

#[test]
fn verify_of_pack_succeeds_and_reports_every_section() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let dir = sample_dir(tmp.path());
    let out = tmp.path().join("mypkg-1.2.0.escx");
    let packed = pack(&dir, &out, &[&key]);
    let report = verify::verify_file(&out, &trust(&[&key]), &VerifyOptions::default()).unwrap();
    assert_eq!(report.package.name, "acme/thermal");
    assert_eq!(report.root, packed.root);
    let kinds: Vec<_> = report.sections.iter().map(|s| s.entry.kind).collect();
    assert_eq!(kinds, SectionType::ALL[..5].to_vec(), "every section but the content key");
    let payload = report.sections.iter().find(|s| s.entry.kind == SectionType::Payload).unwrap();
    let summary = payload.archive.unwrap();
    // src/model.py, data/table.csv, bin/run.sh + the symlink; .git and target/ are skipped.
    assert_eq!((summary.files, summary.symlinks), (3, if cfg!(unix) { 1 } else { 0 }));
    // The payload is compressible text, so it is stored compressed.
    assert!(payload.entry.is_compressed());
}

#[test]
fn section_table_hash_is_plain_blake3_of_stored_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let out = tmp.path().join("p.escx");
    pack(&sample_dir(tmp.path()), &out, &[&key]);
    let bytes = std::fs::read(&out).unwrap();
    let reader = PackageReader::open(Cursor::new(bytes.clone()), "<test>").unwrap();
    for entry in reader.sections() {
        let stored = &bytes[entry.offset as usize..(entry.offset + entry.stored_length) as usize];
        assert_eq!(*blake3::hash(stored).as_bytes(), entry.hash, "{}", entry.kind.name());
    }
    // The root is derive_key over the first header+table bytes, recomputed independently.
    let table_end = 24 + 64 * reader.sections().len();
    assert_eq!(blake3::derive_key("escx v1 package root", &bytes[..table_end]), *reader.root());
}

#[test]
fn pack_is_deterministic_across_mtimes_modes_and_creation_order() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let files = [
        ("z/last.txt", "zzz"),
        ("a/first.txt", "aaa"),
        ("m.txt", "mmm"),
        ("a.txt", "dot sorts before slash"),
    ];

    let dir_a = tmp.path().join("a");
    write(&dir_a.join("manifest.toml"), MANIFEST);
    for (path, content) in files {
        write(&dir_a.join(path), content);
    }
    let dir_b = tmp.path().join("b");
    write(&dir_b.join("manifest.toml"), MANIFEST);
    for (path, content) in files.iter().rev() {
        write(&dir_b.join(path), content);
        let file = std::fs::File::options().write(true).open(dir_b.join(path)).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(12345)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir_b.join(path), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let a = pack(&dir_a, &tmp.path().join("a.escx"), &[&key]);
    let b = pack(&dir_b, &tmp.path().join("b.escx"), &[&key]);
    assert_eq!(a.root, b.root);
    let bytes_a = std::fs::read(tmp.path().join("a.escx")).unwrap();
    let bytes_b = std::fs::read(tmp.path().join("b.escx")).unwrap();
    let body = PackageReader::open(Cursor::new(bytes_a.clone()), "a").unwrap().header().body_length as usize;
    assert_eq!(bytes_a[..body], bytes_b[..body], "bodies differ");
}

/// Records every byte range read, to prove partial verification skips sections.
struct ReadLog<R> {
    inner: R,
    position: u64,
    ranges: Vec<(u64, u64)>,
}

impl<R: Read> Read for ReadLog<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let got = self.inner.read(buf)?;
        if got > 0 {
            self.ranges.push((self.position, self.position + got as u64));
        }
        self.position += got as u64;
        Ok(got)
    }
}

impl<R: Seek> Seek for ReadLog<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.position = self.inner.seek(to)?;
        Ok(self.position)
    }
}

#[test]
fn manifest_only_verification_passes_on_corrupt_payload_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let out = tmp.path().join("p.escx");
    pack(&sample_dir(tmp.path()), &out, &[&key]);
    let mut bytes = std::fs::read(&out).unwrap();
    let payload = PackageReader::open(Cursor::new(bytes.clone()), "p")
        .unwrap()
        .section(SectionType::Payload)
        .unwrap()
        .clone();
    bytes[(payload.offset + payload.stored_length / 2) as usize] ^= 0x40;

    let err = verify_bytes(bytes.clone(), &key, &SectionSelection::All).unwrap_err();
    assert_eq!(err.code(), "section-hash-mismatch", "{err}");
    assert!(err.to_string().contains("payload"), "{err}");

    let only_manifest = SectionSelection::Only(vec![SectionType::Manifest]);
    let mut reader =
        PackageReader::open(ReadLog { inner: Cursor::new(bytes), position: 0, ranges: Vec::new() }, "p")
            .unwrap();
    let report = verify::verify(
        &mut reader,
        &trust(&[&key]),
        &VerifyOptions { sections: &only_manifest, ..Default::default() },
    )
    .unwrap();
    assert!(report.skipped.contains(&SectionType::Payload));
    let (start, end) = (payload.offset, payload.offset + payload.stored_length);
    let log = into_log(reader);
    assert!(
        log.iter().all(|&(a, b)| b <= start || a >= end),
        "partial verification read payload bytes: {log:?} vs {start}..{end}"
    );
}

fn into_log(reader: PackageReader<ReadLog<Cursor<Vec<u8>>>>) -> Vec<(u64, u64)> {
    reader.into_inner().ranges
}

#[test]
fn extract_restores_the_package_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let dir = sample_dir(tmp.path());
    let out = tmp.path().join("p.escx");
    pack(&dir, &out, &[&key]);
    // Missing parent directories are created.
    let target = tmp.path().join("out/nested/pkg");
    escx::extract::extract_file(&out, &target, &trust(&[&key]), &VerifyOptions::default()).unwrap();
    for file in [
        "manifest.toml",
        "src/model.py",
        "data/table.csv",
        "bin/run.sh",
        "docs/guide.md",
        "tests/smoke.py",
        "LICENSE",
    ] {
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            std::fs::read(target.join(file)).unwrap(),
            "{file}"
        );
    }
    assert!(!target.join(".git").exists() && !target.join("target").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(target.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("bin/run.sh"), 0o755);
        assert_eq!(mode("src/model.py"), 0o644);
        assert_eq!(
            std::fs::read_link(target.join("data/model-link.py")).unwrap(),
            Path::new("../src/model.py")
        );
    }
}

#[test]
fn extract_refuses_a_non_empty_target_and_a_tampered_package_leaves_no_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let out = tmp.path().join("p.escx");
    pack(&sample_dir(tmp.path()), &out, &[&key]);
    let busy = tmp.path().join("busy");
    write(&busy.join("keep.txt"), "mine");
    let err =
        escx::extract::extract_file(&out, &busy, &trust(&[&key]), &VerifyOptions::default()).unwrap_err();
    assert_eq!(err.code(), "extract-target");
    assert_eq!(std::fs::read_to_string(busy.join("keep.txt")).unwrap(), "mine");

    let mut bytes = std::fs::read(&out).unwrap();
    let last_section =
        PackageReader::open(Cursor::new(bytes.clone()), "p").unwrap().sections().last().unwrap().clone();
    bytes[last_section.offset as usize] ^= 1;
    std::fs::write(&out, bytes).unwrap();
    let target = tmp.path().join("fresh");
    let err =
        escx::extract::extract_file(&out, &target, &trust(&[&key]), &VerifyOptions::default()).unwrap_err();
    assert_eq!(err.code(), "section-hash-mismatch");
    assert!(!target.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".escx"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn countersignature_adds_a_block_and_keeps_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let publisher = SecretKey::generate();
    let attester = SecretKey::generate();
    let out = tmp.path().join("p.escx");
    let packed = pack(&sample_dir(tmp.path()), &out, &[&publisher]);
    escx::pack::countersign(&out, &attester, escx::UnixSeconds(1_700_000_100), &escx::progress::NoProgress)
        .unwrap();
    let reader = PackageReader::open_file(&out).unwrap();
    assert_eq!(reader.root(), &packed.root);
    assert_eq!(reader.signatures().len(), 2);
    let report = verify::verify_file(&out, &trust(&[&attester]), &VerifyOptions::default()).unwrap();
    assert_eq!(report.signers.len(), 2);
    let again = escx::pack::countersign(&out, &attester, escx::UnixSeconds(1), &escx::progress::NoProgress)
        .unwrap_err();
    assert_eq!(again.code(), "duplicate-signer");
}

#[test]
fn a_package_signed_by_someone_else_is_untrusted() {
    let key = SecretKey::generate();
    let err = verify_bytes(small_package(&key), &SecretKey::generate(), &SectionSelection::All).unwrap_err();
    assert_eq!(err.code(), "untrusted", "{err}");
}

/// A file that changes under the verifier: serves `first` until one whole read of the
/// section `[start, end)` has completed, then `second`.
struct Swapping {
    first: Cursor<Vec<u8>>,
    second: Cursor<Vec<u8>>,
    start: u64,
    end: u64,
    swapped: bool,
}

impl Read for Swapping {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = self.first.position();
        let source = if self.swapped { &mut self.second } else { &mut self.first };
        source.set_position(at);
        let got = source.read(buf)?;
        self.first.set_position(at + got as u64);
        if at < self.end && at + got as u64 >= self.end && at + (got as u64) > self.start {
            self.swapped = true;
        }
        Ok(got)
    }
}

impl Seek for Swapping {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.first.seek(to)
    }
}

fn package_with_payload(tmp: &Path, payload_file: &[u8], key: &SecretKey) -> Vec<u8> {
    let dir = tmp.join(format!("pkg-{}", payload_file.len()));
    write(&dir.join("manifest.toml"), MANIFEST);
    write(&dir.join("data.bin"), payload_file);
    let out = tmp.join(format!("p-{}.escx", payload_file.len()));
    pack(&dir, &out, &[key]);
    std::fs::read(&out).unwrap()
}

/// Verify-then-reread: decoding must never rest on bytes that were not hashed. A
/// compressed payload is hashed, then decoded from a second read that is hashed too, so
/// a swap in between is `section-hash-mismatch`, never a verdict on unhashed bytes.
#[test]
fn a_compressed_section_swapped_between_hash_and_decode_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let bytes = package_with_payload(tmp.path(), "compressible text ".repeat(4000).as_bytes(), &key);
    let payload = PackageReader::open(Cursor::new(bytes.clone()), "p")
        .unwrap()
        .section(SectionType::Payload)
        .unwrap()
        .clone();
    assert!(payload.is_compressed());
    let mut altered = bytes.clone();
    altered[(payload.offset + payload.stored_length / 2) as usize] ^= 0x01;
    let swapping = Swapping {
        first: Cursor::new(bytes),
        second: Cursor::new(altered),
        start: payload.offset,
        end: payload.offset + payload.stored_length,
        swapped: false,
    };
    let mut reader = PackageReader::open(swapping, "p").unwrap();
    let err = verify::verify(&mut reader, &trust(&[&key]), &VerifyOptions::default()).unwrap_err();
    assert_eq!(err.code(), "section-hash-mismatch", "{err}");
    assert!(err.to_string().contains("changed while it was verified"), "{err}");
}

/// An uncompressed archive is hashed and walked from one read, so the walker's verdict is
/// about exactly the hashed bytes: the payload's bytes are read once.
#[test]
fn an_uncompressed_archive_is_read_once_for_hash_and_walk() {
    let key = SecretKey::generate();
    let content = vec![7u8; 300_000];
    let tar = common::craft::raw_tar(&[common::craft::RawEntry::file(b"data.bin", &content)]);
    let bytes = signed_payload(tar, &key);
    let mut reader =
        PackageReader::open(ReadLog { inner: Cursor::new(bytes), position: 0, ranges: Vec::new() }, "p")
            .unwrap();
    let payload = reader.section(SectionType::Payload).unwrap().clone();
    verify::verify(&mut reader, &trust(&[&key]), &VerifyOptions::default()).unwrap();
    let (start, end) = (payload.offset, payload.offset + payload.stored_length);
    let read: u64 = into_log(reader).iter().map(|&(a, b)| b.min(end).saturating_sub(a.max(start))).sum();
    assert_eq!(
        read, payload.stored_length,
        "payload bytes read {read}, section is {}",
        payload.stored_length
    );
}

/// The one-read walk over a plain archive spanning many pipeline chunks: entries that
/// start, end and straddle chunk boundaries, big files skipped without being handed to the
/// walker, and the end-of-archive check stepping back into an earlier chunk.
#[test]
fn a_plain_archive_across_many_chunks_walks_and_hashes_in_one_read() {
    let key = SecretKey::generate();
    let chunk = escx::hash::PIPELINE_CHUNK_BYTES;
    let big = vec![1u8; 2 * chunk + 7];
    let edge = vec![2u8; chunk - 512 - 512];
    let small = vec![3u8; 100];
    let tail = vec![4u8; chunk + 1];
    let tar = common::craft::raw_tar(&[
        common::craft::RawEntry::file(b"big.bin", &big),
        common::craft::RawEntry::file(b"edge.bin", &edge),
        common::craft::RawEntry::file(b"small.txt", &small),
        common::craft::RawEntry::symlink(b"link", b"small.txt"),
        common::craft::RawEntry::file(b"tail.bin", &tail),
    ]);
    let bytes = signed_payload(tar, &key);
    let mut reader = PackageReader::open(Cursor::new(bytes.clone()), "p").unwrap();
    let report = verify::verify(&mut reader, &trust(&[&key]), &VerifyOptions::default()).unwrap();
    let payload = report.sections.iter().find(|s| s.entry.kind == SectionType::Payload).unwrap();
    assert!(payload.entry.stored_length > 4 * chunk as u64);
    let summary = payload.archive.unwrap();
    assert_eq!((summary.files, summary.symlinks), (4, 1));
    assert_eq!(summary.file_bytes, (big.len() + edge.len() + small.len() + tail.len()) as u64);
    // One flipped byte anywhere in a skipped file's content is still caught by the hash.
    let mut flipped = bytes;
    let at = payload.entry.offset as usize + 512 + chunk + 3;
    flipped[at] ^= 1;
    let err = verify_bytes(flipped, &key, &SectionSelection::All).unwrap_err();
    assert_eq!(err.code(), "section-hash-mismatch", "{err}");
}
