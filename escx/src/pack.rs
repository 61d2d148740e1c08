//! Packing a directory (spec: escx-format.md §10): which files go where, and the
//! deterministic container that results.
//!
//! ```text
//! mypkg/manifest.toml   -> manifest section (as is)
//! mypkg/LICENSE         -> license section
//! mypkg/docs/**         -> docs section   (paths relative to docs/)
//! mypkg/tests/**        -> tests section  (paths relative to tests/)
//! everything else       -> payload section, filtered by [include] files / exclude
//! ```
//!
//! Hidden files and directories (a name starting with `.`) and a top-level `target/` are
//! never packed. Entries are sorted by path bytes and written with fixed metadata, so the
//! same inputs give the same root whatever the file times, owners, umask or directory
//! order.

use std::path::{Path, PathBuf};

use crate::archive::{PathChecker, RawKind, Source, SourceEntry};
use crate::container::{PackageReader, SIGNATURES_MAX, SectionEntry, SectionType, SignatureBlock};
use crate::container::{SectionSource, append_signature, write_package};
use crate::content::ContentKey;
use crate::hash::HASH_BYTES;
use crate::header::{ManifestHeader, PackageId};
use crate::kem::KemPublicKey;
use crate::progress::{NoProgress, Progress};
use crate::sig::{KeyId, SecretKey};
use crate::{Error, FormatError, UnixSeconds};

/// The manifest's file name in a package directory.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// The license file's name in a package directory.
pub const LICENSE_FILE: &str = "LICENSE";

/// Packing settings.
#[derive(Clone, Copy)]
pub struct PackOptions<'a> {
    /// Time recorded in the signature blocks (default: now).
    pub signed_at: Option<UnixSeconds>,
    /// Replace an existing output file.
    pub overwrite: bool,
    /// Receives byte counts as file contents are read.
    pub progress: &'a dyn Progress,
    /// Licensed content (escx-format.md §15): encrypt the payload under a fresh content
    /// key sealed to this license issuer's KEM key. Docs, tests and LICENSE stay readable.
    pub encrypt_for: Option<&'a KemPublicKey>,
}

impl Default for PackOptions<'_> {
    fn default() -> Self {
        Self { signed_at: None, overwrite: false, progress: &NoProgress, encrypt_for: None }
    }
}

/// The files of a package directory, sorted and checked, ready to write.
pub(crate) struct PackPlan {
    /// The manifest's bytes.
    pub manifest_bytes: Vec<u8>,
    /// Its parsed header.
    pub manifest: ManifestHeader,
    /// Payload entries.
    pub payload: Vec<SourceEntry>,
    /// `docs/` entries.
    pub docs: Vec<SourceEntry>,
    /// `tests/` entries.
    pub tests: Vec<SourceEntry>,
    /// LICENSE bytes.
    pub license: Option<Vec<u8>>,
}

impl PackPlan {
    /// Total bytes of file content to read.
    pub(crate) fn content_bytes(&self) -> u64 {
        [&self.payload, &self.docs, &self.tests]
            .into_iter()
            .flatten()
            .map(|e| match e.source {
                Source::File { size, .. } => size,
                Source::Symlink { .. } => 0,
            })
            .sum()
    }
}

/// What `pack_dir` produced.
#[derive(Debug, Clone)]
pub struct PackReport {
    /// Name and version.
    pub package: PackageId,
    /// The signed root.
    pub root: [u8; HASH_BYTES],
    /// The section table.
    pub sections: Vec<SectionEntry>,
    /// Who signed.
    pub signers: Vec<KeyId>,
    /// Size of the package file.
    pub file_bytes: u64,
}

/// Packs `dir` into `out`, signed by every key in `keys` (at least one).
pub fn pack_dir(
    dir: &Path,
    out: &Path,
    keys: &[&SecretKey],
    options: &PackOptions<'_>,
) -> Result<PackReport, Error> {
    if keys.is_empty() {
        return Err(Error::PackInput { path: out.into(), reason: "no signing key given".into() });
    }
    let plan = collect(dir, Some(out))?;
    let content_key = match options.encrypt_for {
        Some(_) if plan.payload.is_empty() => {
            return Err(Error::PackInput {
                path: dir.into(),
                reason: "the payload is empty: there is nothing to encrypt".into(),
            });
        }
        Some(_) => Some(ContentKey::generate()?),
        None => None,
    };
    options.progress.start("packing", plan.content_bytes());
    let mut sources = vec![SectionSource::Bytes(SectionType::Manifest, &plan.manifest_bytes)];
    for (kind, entries) in [
        (SectionType::Payload, &plan.payload),
        (SectionType::Docs, &plan.docs),
        (SectionType::Tests, &plan.tests),
    ] {
        match &content_key {
            _ if entries.is_empty() => {}
            Some(key) if kind == SectionType::Payload => {
                sources.push(SectionSource::EncryptedArchive(kind, entries, key))
            }
            _ => sources.push(SectionSource::Archive(kind, entries)),
        }
    }
    if let Some(license) = &plan.license {
        sources.push(SectionSource::Bytes(SectionType::License, license));
    }
    let version = plan.manifest.package.version.to_string();
    if let (Some(key), Some(issuer)) = (&content_key, options.encrypt_for) {
        sources.push(SectionSource::ContentKey {
            key,
            issuer,
            name: &plan.manifest.package.name,
            version: &version,
        });
    }
    let signed_at = options.signed_at.unwrap_or_else(crate::now_unix);
    let written = write_package(out, &sources, keys, signed_at, options.overwrite, options.progress)?;
    options.progress.finish();
    Ok(PackReport {
        package: plan.manifest.package,
        root: written.root,
        sections: written.sections,
        signers: keys.iter().map(|k| k.id()).collect(),
        file_bytes: written.file_bytes,
    })
}

/// Adds `key`'s signature block to an existing package (a countersignature). Every
/// section is hashed and checked first, so nobody countersigns bytes that do not match
/// the root they sign.
pub fn countersign(
    path: &Path,
    key: &SecretKey,
    signed_at: UnixSeconds,
    progress: &dyn Progress,
) -> Result<SignatureBlock, Error> {
    let mut reader = PackageReader::open_file(path)?;
    if reader.signatures().iter().any(|b| b.key_id == key.id()) {
        return Err(FormatError::DuplicateSigner { key_id: key.id() }.into());
    }
    if reader.signatures().len() >= SIGNATURES_MAX {
        return Err(FormatError::TooManySignatures { max: SIGNATURES_MAX }.into());
    }
    let kinds: Vec<SectionType> = reader.sections().iter().map(|s| s.kind).collect();
    for kind in kinds {
        reader.check_section(kind, progress)?;
    }
    let block = SignatureBlock::sign(reader.root(), key, signed_at);
    drop(reader);
    append_signature(path, &block)?;
    Ok(block)
}

/// Selects and checks the files of a package directory. `skip` is a path never to pack
/// (the output file, when it lies inside `dir`).
pub(crate) fn collect(dir: &Path, skip: Option<&Path>) -> Result<PackPlan, Error> {
    let input_error = |path: &Path, reason: String| Error::PackInput { path: path.into(), reason };
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest_bytes =
        read_limited(&manifest_path, crate::container::SectionType::Manifest.plain_bytes_max())?;
    let manifest = ManifestHeader::parse(&manifest_bytes).map_err(|e| {
        let reason = match e {
            FormatError::ManifestInvalid { reason } => reason,
            other => other.to_string(),
        };
        input_error(&manifest_path, reason)
    })?;
    let include = glob_set(&manifest.include_files)
        .map_err(|r| input_error(&manifest_path, format!("[include] files: {r}")))?;
    let exclude = glob_set(&manifest.exclude_files)
        .map_err(|r| input_error(&manifest_path, format!("[include] exclude: {r}")))?;
    let skip = skip.and_then(|p| std::path::absolute(p).ok());

    let license_path = dir.join(LICENSE_FILE);
    let license = match std::fs::symlink_metadata(&license_path) {
        Ok(meta) if meta.is_file() => {
            Some(read_limited(&license_path, SectionType::License.plain_bytes_max())?)
        }
        Ok(_) => return Err(input_error(&license_path, "LICENSE must be a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&license_path, e)),
    };

    let mut payload = Vec::new();
    let mut docs = Vec::new();
    let mut tests = Vec::new();
    let skipped =
        |e: &walkdir::DirEntry| is_hidden(e.file_name()) || (e.depth() == 1 && e.file_name() == "target");
    let walker = walkdir::WalkDir::new(dir).follow_links(false).min_depth(1).into_iter();
    for item in walker.filter_entry(|e| !skipped(e)) {
        let item = item.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| dir.to_path_buf());
            match e.into_io_error() {
                Some(io) => Error::io(path, io),
                None => input_error(dir, "file system loop".into()),
            }
        })?;
        let file_type = item.file_type();
        if file_type.is_dir() {
            continue;
        }
        if skip.is_some() && std::path::absolute(item.path()).ok() == skip {
            continue;
        }
        let relative = relative_path(dir, item.path()).map_err(|r| input_error(item.path(), r))?;
        if relative == MANIFEST_FILE || relative == LICENSE_FILE || exclude.is_match(&relative) {
            continue;
        }
        let (list, in_section) = if let Some(rest) = relative.strip_prefix("docs/") {
            (&mut docs, rest.to_owned())
        } else if let Some(rest) = relative.strip_prefix("tests/") {
            (&mut tests, rest.to_owned())
        } else {
            if !manifest.include_files.is_empty() && !include.is_match(&relative) {
                continue;
            }
            (&mut payload, relative.clone())
        };
        let source = if file_type.is_file() {
            let meta = item.metadata().map_err(|e| input_error(item.path(), e.to_string()))?;
            Source::File {
                disk_path: item.path().to_path_buf(),
                size: meta.len(),
                executable: is_executable(&meta),
            }
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(item.path()).map_err(|e| Error::io(item.path(), e))?;
            let target = target
                .to_str()
                .ok_or_else(|| input_error(item.path(), "symbolic link target is not UTF-8".into()))?
                .to_owned();
            Source::Symlink { target }
        } else {
            return Err(input_error(item.path(), "not a regular file, directory or symbolic link".into()));
        };
        list.push(SourceEntry { path: in_section, source });
    }

    for (kind, list) in [
        (SectionType::Payload, &mut payload),
        (SectionType::Docs, &mut docs),
        (SectionType::Tests, &mut tests),
    ] {
        list.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        let mut checker = PathChecker::new(kind);
        for entry in list.iter() {
            let (raw_kind, target, size) = match &entry.source {
                Source::File { size, .. } => (RawKind::File, None, *size),
                Source::Symlink { target } => (RawKind::Symlink, Some(target.as_bytes()), 0),
            };
            checker
                .check(entry.path.as_bytes(), raw_kind, target, size, 0)
                .map_err(|e| input_error(&disk_path(dir, kind, &entry.path), e.to_string()))?;
        }
        checker.finish().map_err(|e| {
            let at = match &e {
                FormatError::UnsafePath { path, .. } => disk_path(dir, kind, path),
                _ => dir.to_path_buf(),
            };
            input_error(&at, e.to_string())
        })?;
    }
    Ok(PackPlan { manifest_bytes, manifest, payload, docs, tests, license })
}

fn disk_path(dir: &Path, kind: SectionType, path: &str) -> PathBuf {
    match kind {
        SectionType::Docs => dir.join("docs").join(path),
        SectionType::Tests => dir.join("tests").join(path),
        _ => dir.join(path),
    }
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn relative_path(dir: &Path, path: &Path) -> Result<String, String> {
    let relative = path.strip_prefix(dir).map_err(|_| "outside the package directory".to_owned())?;
    let mut parts = Vec::new();
    for component in relative.components() {
        let part = component.as_os_str().to_str().ok_or("file name is not UTF-8")?;
        parts.push(part);
    }
    Ok(parts.join("/"))
}

fn glob_set(patterns: &[String]) -> Result<globset::GlobSet, String> {
    let mut builder = globset::GlobSetBuilder::new();
    for pattern in patterns {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("invalid glob {pattern:?}: {e}"))?;
        builder.add(glob);
    }
    builder.build().map_err(|e| e.to_string())
}

fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > max_bytes {
        return Err(Error::PackInput {
            path: path.into(),
            reason: format!("{} bytes exceeds the limit of {max_bytes}", meta.len()),
        });
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}
