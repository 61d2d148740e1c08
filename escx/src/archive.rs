//! Archive sections (escx-format.md §6.2): the payload, `docs/` and `tests/` are tar
//! archives with a restricted set of entry types and paths that can be extracted safely
//! on any system.
//!
//! The same `PathChecker` runs when packing and when verifying, so `pack` can never
//! produce an archive that `verify` rejects. Tar headers are parsed by the `tar` crate in
//! raw mode; GNU long-name records are read here with a size limit, and every other
//! extension (PAX, sparse files, hard links, devices) is rejected.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::FormatError;
use crate::container::SectionType;

/// Tar block size.
pub const BLOCK_BYTES: u64 = 512;
/// Longest entry path or symlink target, in bytes.
pub const PATH_BYTES_MAX: usize = 4096;
/// Longest path component, in bytes.
pub const COMPONENT_BYTES_MAX: usize = 255;
/// Most entries in one archive section.
pub const ENTRIES_MAX: u64 = 1_000_000;
/// Most path bytes kept in memory for duplicate detection, per section.
pub const PATH_BYTES_TOTAL_MAX: u64 = 64 * 1024 * 1024;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes.
    File {
        /// Size in bytes.
        size: u64,
        /// Whether any execute bit is set (extracted as 0755, else 0644).
        executable: bool,
    },
    /// A directory (archives may omit these; parents are created as needed).
    Directory,
    /// A symbolic link with a relative target that stays inside the section's root.
    Symlink {
        /// The link target as stored.
        target: String,
    },
}

/// One checked archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path, `/`-separated, no trailing slash.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
}

/// Counts over a checked archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Regular files.
    pub files: u64,
    /// Directory entries.
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Sum of file sizes.
    pub file_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File,
    Directory,
    Symlink,
}

/// What one portable key (see [`portable_key`]) of the archive names.
struct Claim {
    node: Node,
    /// False for a directory only implied by a deeper path.
    explicit: bool,
    /// The path as first written, for messages.
    path: String,
}

/// Enforces the path rules of escx-format.md §6.2 over one archive's entries, in order;
/// [`PathChecker::finish`] then applies the rules that need every entry (links through
/// links), so the verdict does not depend on entry order.
pub(crate) struct PathChecker {
    section: SectionType,
    /// Every path and implied directory, by portable key.
    nodes: HashMap<String, Claim>,
    /// Symbolic links as (path, target), checked against each other by `finish`.
    links: Vec<(String, String)>,
    entries: u64,
    path_bytes: u64,
}

impl PathChecker {
    /// A checker for one section.
    pub fn new(section: SectionType) -> Self {
        Self { section, nodes: HashMap::new(), links: Vec::new(), entries: 0, path_bytes: 0 }
    }

    /// Checks the next entry; `raw_path` and `raw_target` are the bytes as stored.
    pub fn check(
        &mut self,
        raw_path: &[u8],
        kind: RawKind,
        raw_target: Option<&[u8]>,
        size: u64,
        mode: u32,
    ) -> Result<Entry, FormatError> {
        let section = self.section.name();
        self.entries += 1;
        if self.entries > ENTRIES_MAX {
            return Err(FormatError::TooManyEntries { section, max: ENTRIES_MAX });
        }
        self.path_bytes += raw_path.len() as u64 + raw_target.map_or(0, |t| t.len() as u64);
        if self.path_bytes > PATH_BYTES_TOTAL_MAX {
            return Err(FormatError::TooManyEntries { section, max: self.entries });
        }
        let lossy = || String::from_utf8_lossy(raw_path).into_owned();
        let unsafe_path =
            |reason: &str| FormatError::UnsafePath { section, path: lossy(), reason: reason.to_owned() };
        let text = std::str::from_utf8(raw_path).map_err(|_| unsafe_path("not valid UTF-8"))?;
        let path = match kind {
            RawKind::Directory => text.strip_suffix('/').unwrap_or(text),
            _ => text,
        };
        check_relative_path(path).map_err(unsafe_path)?;
        if self.section == SectionType::Payload {
            check_not_reserved(path)?;
        }
        let (node, entry_kind) = match kind {
            RawKind::File => (Node::File, EntryKind::File { size, executable: mode & 0o111 != 0 }),
            RawKind::Directory => (Node::Directory, EntryKind::Directory),
            RawKind::Symlink => {
                let target_bytes = raw_target.unwrap_or_default();
                let target = std::str::from_utf8(target_bytes)
                    .map_err(|_| unsafe_path("symbolic link target is not valid UTF-8"))?;
                check_symlink_target(path, target).map_err(unsafe_path)?;
                (Node::Symlink, EntryKind::Symlink { target: target.to_owned() })
            }
        };
        self.claim(path, node)?;
        if let EntryKind::Symlink { target } = &entry_kind {
            self.links.push((path.to_owned(), target.clone()));
        }
        Ok(Entry { path: path.to_owned(), kind: entry_kind })
    }

    /// Records `path`, refusing duplicates (compared by portable key, so `A` and `a`, or
    /// two normalisations of `é`, collide) and paths below files or links.
    fn claim(&mut self, path: &str, node: Node) -> Result<(), FormatError> {
        let section = self.section.name();
        let conflict =
            |reason: String| FormatError::DuplicateEntry { section, path: path.to_owned(), reason };
        let key = portable_key(path);
        // Ancestors by key: the key of a prefix of `path` is the prefix of the key up to
        // the same `/` (neither normalisation nor case mapping produces or removes `/`).
        for (at, _) in key.match_indices('/') {
            let ancestor = &key[..at];
            match self.nodes.get(ancestor) {
                Some(Claim { node: Node::File, path: other, .. }) => {
                    return Err(conflict(format!("lies below the regular file {other:?}")));
                }
                Some(Claim { node: Node::Symlink, path: other, .. }) => {
                    return Err(conflict(format!("lies below the symbolic link {other:?}")));
                }
                Some(Claim { node: Node::Directory, .. }) => {}
                None => {
                    let written = path.split('/').take(ancestor.split('/').count()).collect::<Vec<_>>();
                    self.nodes.insert(
                        ancestor.to_owned(),
                        Claim { node: Node::Directory, explicit: false, path: written.join("/") },
                    );
                }
            }
        }
        match self.nodes.get_mut(&key) {
            None => {
                self.nodes.insert(key, Claim { node, explicit: true, path: path.to_owned() });
                Ok(())
            }
            Some(Claim { node: Node::Directory, explicit: explicit @ false, .. })
                if node == Node::Directory =>
            {
                *explicit = true;
                Ok(())
            }
            Some(Claim { node: Node::Directory, explicit: false, path: other }) => {
                Err(conflict(format!("is also the directory {other:?}")))
            }
            Some(Claim { path: other, .. }) if other == path => Err(conflict("appears twice".into())),
            Some(Claim { path: other, .. }) => Err(conflict(format!(
                "collides with {other:?}: paths may not differ only in case or Unicode normalisation"
            ))),
        }
    }

    /// The rules that need the whole archive: no symbolic link's target passes through a
    /// symbolic link of the archive (escx-format.md §6.2). Resolved lexically from the
    /// link's directory, every component of the target that is followed by another one
    /// (so the resolver would enter it) must not name a link; the last component may, so
    /// chains such as `libx.so -> libx.so.1 -> libx.so.1.2` stay allowed. With the depth
    /// rule of [`check_symlink_target`] this keeps every link, followed to its end, inside
    /// the section root, whatever order the entries came in.
    pub fn finish(&self) -> Result<(), FormatError> {
        let section = self.section.name();
        for (path, target) in &self.links {
            let mut resolved: Vec<&str> = path.split('/').collect();
            resolved.pop();
            let parts: Vec<&str> = target.split('/').collect();
            for (index, part) in parts.iter().enumerate() {
                match *part {
                    "" | "." => {}
                    ".." => {
                        // Cannot underflow: `check_symlink_target` counted the same depth.
                        resolved.pop();
                    }
                    name => {
                        resolved.push(name);
                        let entered = index + 1 < parts.len();
                        if !entered {
                            continue;
                        }
                        let key = portable_key(&resolved.join("/"));
                        if self.section == SectionType::Payload
                            && resolved.len() == 1
                            && (key == "docs" || key == "tests")
                        {
                            // The docs and tests sections are checked on their own; their
                            // links are not known here, so payload links stay out of them.
                            return Err(FormatError::UnsafePath {
                                section,
                                path: path.clone(),
                                reason: format!(
                                    "symbolic link target {target:?} enters {name:?}, which belongs to another section"
                                ),
                            });
                        }
                        if let Some(Claim { node: Node::Symlink, path: through, .. }) = self.nodes.get(&key) {
                            return Err(FormatError::UnsafePath {
                                section,
                                path: path.clone(),
                                reason: format!(
                                    "symbolic link target {target:?} passes through the symbolic link {through:?}"
                                ),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The key two archive paths collide under on any common file system (escx-format.md
/// §6.2): `NFD(lower(upper(NFD(path))))`, with Unicode's full, context-free case
/// mappings. Case-insensitive file systems (APFS, NTFS, FAT) and normalising ones (HFS+)
/// treat paths with equal keys as one file, so an archive may not hold two of them.
pub(crate) fn portable_key(path: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    if path.is_ascii() {
        return path.to_ascii_lowercase();
    }
    let decomposed: String = path.nfd().collect();
    let folded: String =
        decomposed.chars().flat_map(char::to_uppercase).flat_map(char::to_lowercase).collect();
    folded.nfd().collect()
}

/// Entry types the format allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawKind {
    /// Tar type `0` (or NUL).
    File,
    /// Tar type `5`.
    Directory,
    /// Tar type `2`.
    Symlink,
}

/// Relative path rules: 1..=4096 bytes, `/`-separated components that are non-empty,
/// not `.` or `..`, at most 255 bytes, without NUL, backslash or control characters.
pub(crate) fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > PATH_BYTES_MAX {
        return Err("longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return Err("contains a backslash or control character");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty path component (\"//\" or trailing \"/\")"),
            "." => return Err("\".\" component"),
            ".." => return Err("\"..\" component leaves the target directory"),
            c if c.len() > COMPONENT_BYTES_MAX => return Err("path component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// A symlink target must be relative and, resolved lexically from the link's directory,
/// stay inside the section's root. (Whether it passes through another link is checked
/// by [`PathChecker::finish`], which sees every entry.)
pub(crate) fn check_symlink_target(link_path: &str, target: &str) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("empty symbolic link target");
    }
    if target.len() > PATH_BYTES_MAX {
        return Err("symbolic link target longer than 4096 bytes");
    }
    if target.starts_with('/') {
        return Err("symbolic link target is absolute");
    }
    if target.chars().any(|c| c == '\\' || c.is_control()) {
        return Err("symbolic link target contains a backslash or control character");
    }
    let mut depth: usize = link_path.matches('/').count();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => depth = depth.checked_sub(1).ok_or("symbolic link target leaves the package")?,
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Paths in the payload that belong to other sections, compared by portable key (a
/// payload `Docs/x` would land in the docs directory on a case-insensitive system).
fn check_not_reserved(path: &str) -> Result<(), FormatError> {
    let key = portable_key(path);
    let first = key.split('/').next().unwrap_or(&key);
    let owner = match first {
        "manifest.toml" if key == first => "manifest section",
        "license" if key == first => "license section",
        "docs" => "docs section",
        "tests" => "tests section",
        _ => return Ok(()),
    };
    Err(FormatError::ReservedPath { path: path.to_owned(), owner })
}

/// Receives each checked entry; file entries come with a reader over their content.
pub(crate) trait Visitor {
    /// Called once per entry in archive order.
    fn entry(&mut self, entry: &Entry, content: &mut dyn Read) -> io::Result<()>;
}

/// A visitor that only checks.
pub(crate) struct CheckOnly;

impl Visitor for CheckOnly {
    fn entry(&mut self, _entry: &Entry, _content: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
}

/// Walks a seekable archive (an uncompressed section), skipping file contents by seeking.
pub(crate) fn walk_seekable<R: Read + Seek>(
    reader: R,
    section: SectionType,
    plain_length: u64,
    visitor: &mut dyn Visitor,
) -> io::Result<ArchiveSummary> {
    let mut archive = tar::Archive::new(reader);
    let (summary, end) = walk_entries(archive.entries_with_seek()?.raw(true), section, visitor)?;
    let mut reader = archive.into_inner();
    reader.seek(SeekFrom::Start(end))?;
    check_end_of_archive(&mut reader, 0, end, plain_length, section)?;
    Ok(summary)
}

/// Walks an archive read as a stream (a decompressed section, or extraction).
pub(crate) fn walk_stream<R: Read>(
    reader: R,
    section: SectionType,
    plain_length: u64,
    visitor: &mut dyn Visitor,
) -> io::Result<ArchiveSummary> {
    let mut archive = tar::Archive::new(CountingReader { inner: reader, count: 0 });
    let (summary, end) = walk_entries(archive.entries()?.raw(true), section, visitor)?;
    let mut reader = archive.into_inner();
    // The tar reader stops either at end of input or after reading one all-zero block.
    let zeros_consumed = reader.count.saturating_sub(end).min(END_OF_ARCHIVE_BYTES);
    check_end_of_archive(&mut reader, zeros_consumed, end, plain_length, section)?;
    Ok(summary)
}

/// Two zero blocks end every archive.
const END_OF_ARCHIVE_BYTES: u64 = 2 * BLOCK_BYTES;

/// After the last entry (at `end`) come exactly two zero blocks, which end the section;
/// `zeros_consumed` of them have already been read (and found zero) by the tar reader.
fn check_end_of_archive<R: Read>(
    reader: &mut R,
    zeros_consumed: u64,
    end: u64,
    plain_length: u64,
    section: SectionType,
) -> io::Result<()> {
    let expected_length = end + END_OF_ARCHIVE_BYTES;
    let error = || {
        crate::container::layer_format(FormatError::ArchiveInvalid {
            section: section.name(),
            reason: format!(
                "the archive must end with exactly two zero blocks at the end of the section \
                 (section is {plain_length} bytes, expected {expected_length})"
            ),
        })
    };
    if plain_length != expected_length {
        return Err(error());
    }
    let want = END_OF_ARCHIVE_BYTES - zeros_consumed;
    let mut tail = Vec::with_capacity(usize::try_from(want).unwrap_or(0) + 1);
    reader.take(want + 1).read_to_end(&mut tail)?;
    if tail.len() as u64 != want || tail.iter().any(|&b| b != 0) {
        return Err(error());
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = self.inner.read(buf)?;
        self.count += got as u64;
        Ok(got)
    }
}

/// Walks raw tar entries; returns the summary and the offset just after the last entry.
fn walk_entries<R: Read>(
    entries: tar::Entries<'_, R>,
    section: SectionType,
    visitor: &mut dyn Visitor,
) -> io::Result<(ArchiveSummary, u64)> {
    let invalid = |reason: String| {
        crate::container::layer_format(FormatError::ArchiveInvalid { section: section.name(), reason })
    };
    let mut checker = PathChecker::new(section);
    let mut summary = ArchiveSummary::default();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut end = 0u64;
    for entry in entries {
        let mut entry = entry?;
        let header = entry.header();
        if header.as_gnu().is_none() && header.as_ustar().is_none() {
            return Err(invalid("entry header is neither GNU nor ustar".into()));
        }
        let size = entry.size();
        end = entry.raw_file_position() + size.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let entry_type = header.entry_type();
        let raw_kind = match entry_type {
            tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                let slot =
                    if entry_type == tar::EntryType::GNULongName { &mut long_name } else { &mut long_link };
                if slot.is_some() {
                    return Err(invalid("two GNU long-name records for one entry".into()));
                }
                if size > PATH_BYTES_MAX as u64 + 1 {
                    return Err(invalid(format!(
                        "GNU long-name record of {size} bytes exceeds {}",
                        PATH_BYTES_MAX + 1
                    )));
                }
                let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                entry.read_to_end(&mut bytes)?;
                while bytes.last() == Some(&0) {
                    bytes.pop();
                }
                *slot = Some(bytes);
                continue;
            }
            tar::EntryType::Regular => RawKind::File,
            tar::EntryType::Directory => RawKind::Directory,
            tar::EntryType::Symlink => RawKind::Symlink,
            other => {
                let path = String::from_utf8_lossy(
                    &long_name.take().unwrap_or_else(|| header.path_bytes().into_owned()),
                )
                .into_owned();
                return Err(crate::container::layer_format(FormatError::UnsupportedEntry {
                    section: section.name(),
                    path,
                    kind: entry_kind_name(other),
                }));
            }
        };
        if raw_kind != RawKind::File && size != 0 {
            return Err(invalid(format!("{raw_kind:?} entry with {size} data bytes")));
        }
        let path = long_name.take().unwrap_or_else(|| header.path_bytes().into_owned());
        let target = match raw_kind {
            RawKind::Symlink => Some(
                long_link
                    .take()
                    .unwrap_or_else(|| header.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default()),
            ),
            _ => {
                if long_link.take().is_some() {
                    return Err(invalid("GNU long-link record before an entry that is not a link".into()));
                }
                None
            }
        };
        let mode = header.mode().map_err(|e| invalid(format!("bad mode field: {e}")))?;
        let checked = checker
            .check(&path, raw_kind, target.as_deref(), size, mode)
            .map_err(crate::container::layer_format)?;
        match &checked.kind {
            EntryKind::File { size, .. } => {
                summary.files += 1;
                summary.file_bytes += size;
            }
            EntryKind::Directory => summary.directories += 1,
            EntryKind::Symlink { .. } => summary.symlinks += 1,
        }
        visitor.entry(&checked, &mut entry)?;
    }
    if long_name.is_some() || long_link.is_some() {
        return Err(invalid("GNU long-name record not followed by an entry".into()));
    }
    checker.finish().map_err(crate::container::layer_format)?;
    Ok((summary, end))
}

fn entry_kind_name(entry_type: tar::EntryType) -> String {
    match entry_type {
        tar::EntryType::Link => "hard link".into(),
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "named pipe".into(),
        tar::EntryType::GNUSparse => "sparse file".into(),
        tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => "PAX extended header".into(),
        other => format!("tar entry of type {:?}", other.as_byte() as char),
    }
}

/// A file or link to put into an archive, in the order given (callers sort by path).
pub(crate) struct SourceEntry {
    /// Archive path (already checked with [`PathChecker`]).
    pub path: String,
    /// What to write.
    pub source: Source,
}

/// Where an entry's content comes from.
pub enum Source {
    /// A regular file on disk with its size at collection time.
    File {
        /// Location on disk.
        disk_path: std::path::PathBuf,
        /// Size in bytes.
        size: u64,
        /// Stored as mode 0755 instead of 0644.
        executable: bool,
    },
    /// A symbolic link.
    Symlink {
        /// Link target.
        target: String,
    },
}

/// Mode of non-executable files.
pub const MODE_FILE: u32 = 0o644;
/// Mode of executable files.
pub const MODE_EXECUTABLE: u32 = 0o755;
/// Mode of symbolic links.
pub const MODE_SYMLINK: u32 = 0o777;

/// Writes entries as a deterministic tar archive (escx-format.md §10.2): GNU headers,
/// zero mtime/uid/gid, empty owner names, fixed modes, two zero blocks at the end.
pub(crate) fn write_archive<W: Write>(
    out: W,
    entries: &[SourceEntry],
    progress: &dyn crate::progress::Progress,
) -> Result<W, crate::Error> {
    let mut builder = tar::Builder::new(out);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match &entry.source {
            Source::File { disk_path, size, executable } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(*size);
                header.set_mode(if *executable { MODE_EXECUTABLE } else { MODE_FILE });
                let file = std::fs::File::open(disk_path).map_err(|e| crate::Error::io(disk_path, e))?;
                let mut exact = ExactReader { inner: file, remaining: *size, progress };
                builder
                    .append_data(&mut header, &entry.path, &mut exact)
                    .map_err(|e| crate::Error::io(disk_path, e))?;
            }
            Source::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(MODE_SYMLINK);
                builder
                    .append_link(&mut header, &entry.path, target)
                    .map_err(|e| crate::Error::io(&entry.path, e))?;
            }
        }
    }
    builder.into_inner().map_err(|e| crate::Error::io("<archive>", e))
}

/// Yields exactly `remaining` bytes, failing if the file is shorter (it changed while
/// packing); a longer file is cut at the size recorded in the header, and the packer
/// detects that because the content no longer matches on disk only if re-read, which
/// is why sizes are taken from one `metadata` call before writing.
struct ExactReader<'p, R> {
    inner: R,
    remaining: u64,
    progress: &'p dyn crate::progress::Progress,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being packed",
            ));
        }
        self.remaining -= got as u64;
        self.progress.advance(got as u64);
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fault as _;

    #[test]
    fn relative_path_rules() {
        for bad in ["", "/etc/passwd", "a/../b", "..", "./a", "a//b", "a/", "a\\b", "a\nb"] {
            assert!(check_relative_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "a/b/c.txt", "ünï/cödé", ".hidden"] {
            assert!(check_relative_path(good).is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(check_symlink_target("a/link", "../b").is_ok());
        assert!(check_symlink_target("a/link", "../../b").is_err());
        assert!(check_symlink_target("link", "/etc/passwd").is_err());
        assert!(check_symlink_target("link", "x/../../y").is_err());
        assert!(check_symlink_target("a/b/link", "./../c").is_ok());
    }

    #[test]
    fn duplicates_and_paths_below_files_or_links_are_refused() {
        let mut checker = PathChecker::new(SectionType::Docs);
        checker.check(b"a/b", RawKind::File, None, 1, 0o644).unwrap();
        let err = checker.check(b"a/b", RawKind::File, None, 1, 0o644).unwrap_err();
        assert_eq!(err.code(), "duplicate-entry");
        let err = checker.check(b"a/b/c", RawKind::File, None, 1, 0o644).unwrap_err();
        assert_eq!(err.code(), "duplicate-entry");
        checker.check(b"l", RawKind::Symlink, Some(b"a"), 0, 0o777).unwrap();
        let err = checker.check(b"l/x", RawKind::File, None, 1, 0o644).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = checker.check(b"a", RawKind::File, None, 1, 0o644).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        checker.check(b"a/", RawKind::Directory, None, 0, 0o755).unwrap();
    }

    #[test]
    fn payload_paths_owned_by_other_sections_are_reserved() {
        let mut checker = PathChecker::new(SectionType::Payload);
        for reserved in ["manifest.toml", "LICENSE", "docs/x", "tests/t.rs"] {
            let err = checker.check(reserved.as_bytes(), RawKind::File, None, 0, 0o644).unwrap_err();
            assert_eq!(err.code(), "reserved-path", "{reserved}");
        }
        checker.check(b"src/LICENSE", RawKind::File, None, 0, 0o644).unwrap();
    }
}
