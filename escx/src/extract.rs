//! Safe extraction (spec: escx-format.md §11).
//!
//! The package is fully verified first. Then every section is read again, re-hashed as it
//! is decoded, and written into a fresh staging directory beside the target; only if
//! every re-hash matches the (signed) table is the staging directory renamed onto the
//! target. A package altered between the two passes, a crash or a full disk therefore
//! leave the target untouched.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::archive::{self, Entry, EntryKind, MODE_EXECUTABLE, MODE_FILE, Visitor};
use crate::container::{PackageReader, SectionType, check_hash, classify, plain_stream};
use crate::content::ContentKey;
use crate::hash::HashingReader;
use crate::pack::{LICENSE_FILE, MANIFEST_FILE};
use crate::policy::TrustPolicy;
use crate::verify::{self, VerifyOptions, VerifyReport};

/// Verifies `package` under `policy` and extracts it into `target`, which must not
/// exist or be an empty directory.
pub fn extract_file(
    package: &Path,
    target: &Path,
    policy: &TrustPolicy,
    options: &VerifyOptions<'_>,
) -> Result<VerifyReport, Error> {
    check_target(target)?;
    require_key(package, options.content_key)?;
    let full = VerifyOptions { sections: &verify::SectionSelection::All, ..*options };
    let report = verify::verify_file(package, policy, &full)?;
    extract_verified(package, target, &report, options.content_key)?;
    Ok(report)
}

/// Extracts a package that `report` (a full verification of the same file) accepted: the
/// root must still be the verified one and every section is re-hashed as it is written
/// (escx-format.md §11 steps 2–5). For callers that verified earlier, such as an
/// installer that verifies every package before extracting any. An encrypted payload
/// needs its `content_key`.
pub fn extract_verified(
    package: &Path,
    target: &Path,
    report: &VerifyReport,
    content_key: Option<&ContentKey>,
) -> Result<(), Error> {
    check_target(target)?;
    require_key(package, content_key)?;
    if !report.skipped.is_empty() {
        return Err(Error::ExtractTarget {
            path: target.into(),
            reason: "the package was only partly verified; extraction needs every section checked".into(),
        });
    }
    let mut reader = PackageReader::open_file(package)?;
    if reader.root() != &report.root {
        return Err(Error::io(package, io::Error::other("the package changed during extraction; retry")));
    }
    let parent = crate::fsutil::parent_dir(target);
    fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let staging = tempfile::Builder::new()
        .prefix(".escx-extract-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    let root_dir = staging.path().to_path_buf();
    for entry in reader.sections().to_vec() {
        let kind = entry.kind;
        let source = reader.source().to_path_buf();
        let classify = |e| classify(kind.name(), e, &source);
        let mut hashing = HashingReader::new(reader.stored_bytes(&entry)?);
        {
            let mut plain = plain_stream(&mut hashing, &entry, content_key).map_err(classify)?;
            match kind {
                // Read (and so hashed) but not written: only the issuer can open it.
                SectionType::ContentKey => {}
                SectionType::Manifest => {
                    write_file(&root_dir.join(MANIFEST_FILE), &mut plain, false).map_err(classify)?
                }
                SectionType::License => {
                    write_file(&root_dir.join(LICENSE_FILE), &mut plain, false).map_err(classify)?
                }
                SectionType::Payload | SectionType::Docs | SectionType::Tests => {
                    let base = match kind {
                        SectionType::Docs => make_dirs(&root_dir, &["docs"]),
                        SectionType::Tests => make_dirs(&root_dir, &["tests"]),
                        _ => Ok(root_dir.clone()),
                    }
                    .map_err(|e| Error::io(&root_dir, e))?;
                    let mut writer = DiskWriter { base };
                    if let Err(error) = archive::walk_stream(&mut plain, kind, &mut writer) {
                        return Err(classify(plain.rank(kind.name(), error)));
                    }
                }
            }
            plain.finish(kind.name()).map_err(classify)?;
        }
        let (hash, _) = hashing.finish().map_err(classify)?;
        check_hash(&entry, hash)?;
    }
    set_dir_mode(&root_dir).map_err(|e| Error::io(&root_dir, e))?;
    if target.exists() {
        // Checked empty above; rename cannot replace a directory on every platform.
        fs::remove_dir(target).map_err(|e| Error::io(target, e))?;
    }
    let staged = staging.keep();
    fs::rename(&staged, target).map_err(|e| {
        let _ = fs::remove_dir_all(&staged);
        Error::io(target, e)
    })?;
    Ok(())
}

/// Fails early, before anything is hashed or staged, when the payload is encrypted and
/// no key is at hand.
fn require_key(package: &Path, content_key: Option<&ContentKey>) -> Result<(), Error> {
    if content_key.is_none() && PackageReader::open_file(package)?.sections().iter().any(|s| s.is_encrypted())
    {
        return Err(Error::ContentKeyRequired { path: package.into() });
    }
    Ok(())
}

fn check_target(target: &Path) -> Result<(), Error> {
    match fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::ExtractTarget {
                    path: target.into(),
                    reason: "the directory is not empty".into(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Err(Error::ExtractTarget {
            path: target.into(),
            reason: "it exists and is not a directory".into(),
        }),
        Err(e) => Err(Error::io(target, e)),
    }
}

/// Writes checked archive entries under `base`. The archive walker already refused
/// anything that could escape (`..`, absolute paths, paths below links or colliding by
/// case or normalisation, links through links); the writer does not rely on that alone:
/// it creates every directory component itself, refusing one that exists as anything
/// but a directory (a link above all), and creates files and links with create-new
/// semantics, so nothing is ever written through a link, even on a case-insensitive file
/// system where the checker's view and the disk's could differ.
struct DiskWriter {
    base: PathBuf,
}

impl Visitor for DiskWriter {
    fn entry(&mut self, entry: &Entry, content: &mut dyn Read) -> io::Result<()> {
        let mut components: Vec<&str> = entry.path.split('/').collect();
        let name = components.pop().unwrap_or_default();
        let parent =
            make_dirs(&self.base, &components).map_err(|e| crate::container::layer_sink(&self.base, e))?;
        let path = parent.join(name);
        let sink = |e| crate::container::layer_sink(&path, e);
        match &entry.kind {
            EntryKind::Directory => make_dirs(&parent, &[name]).map(drop).map_err(sink),
            EntryKind::File { executable, .. } => write_file(&path, content, *executable),
            EntryKind::Symlink { target } => make_symlink(target, &path).map_err(sink),
        }
    }
}

/// Creates `base/c1/c2/...` one component at a time and returns it. A component that
/// exists must be a real directory: `symlink_metadata` does not follow links, so a link
/// in its place (planted by an earlier entry, or by the file system folding case) is
/// refused instead of entered.
fn make_dirs(base: &Path, components: &[&str]) -> io::Result<PathBuf> {
    let mut path = base.to_path_buf();
    for component in components {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory; refusing to write through it", path.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&path)?,
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}

/// Creates `path` (never following or replacing anything) and copies `content` into it.
/// Read errors come from the section's reader stack and keep their meaning; write errors
/// name the file written.
fn write_file(path: &Path, content: &mut dyn Read, executable: bool) -> io::Result<()> {
    let sink = |e| crate::container::layer_sink(path, e);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(sink)?;
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    loop {
        let read = match content.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        io::Write::write_all(&mut file, &buffer[..read]).map_err(sink)?;
    }
    crate::fsutil::set_mode(&file, if executable { MODE_EXECUTABLE } else { MODE_FILE }).map_err(sink)
}

/// Copy buffer of the extractor.
const COPY_BUFFER_BYTES: usize = 256 * 1024;

#[cfg(unix)]
fn make_symlink(target: &str, path: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, path)
}

#[cfg(not(unix))]
fn make_symlink(_target: &str, path: &Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, format!("cannot create symbolic link {}", path.display())))
}

#[cfg(unix)]
fn set_dir_mode(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_dir_mode(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Defence in depth: should a link ever stand where a directory is expected (a file
    /// system that folds names the checker's keys did not foresee), the writer refuses to
    /// enter it rather than writing outside the staging directory.
    #[test]
    fn the_writer_never_enters_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("staging");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&base).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, base.join("x")).unwrap();
        let err = make_dirs(&base, &["x", "deeper"]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let mut writer = DiskWriter { base: base.clone() };
        let entry = Entry { path: "x/evil".into(), kind: EntryKind::File { size: 1, executable: false } };
        assert!(writer.entry(&entry, &mut &b"e"[..]).is_err());
        let over_link = Entry { path: "x".into(), kind: EntryKind::File { size: 1, executable: false } };
        assert!(writer.entry(&over_link, &mut &b"e"[..]).is_err());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "something was written through the link");
    }
}
