//! Archive sections (escx-format.md §6.2): the payload, `docs/` and `tests/` are tar
//! archives with a restricted set of entry types and paths that can be extracted safely
//! on any system.
//!
//! The same `PathChecker` runs when packing and when verifying, so `pack` can never
//! produce an archive that `verify` rejects. Records are read strictly by `records.rs` (the
//! `tar` crate only writes); GNU long-name records are read with a size limit, and every
//! other extension (PAX, sparse files, hard links, devices) is rejected.

use std::collections::HashMap;
use std::io::{self, Read, Seek, Write};

mod records;

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
                Some(Claim { node: Node::Directory, path: other, .. }) => {
                    // One directory, spelled one way: two spellings that differ only in
                    // case or normalisation are one directory on some file systems and two
                    // on others (escx-format.md §6.2).
                    let written =
                        path.split('/').take(ancestor.split('/').count()).collect::<Vec<_>>().join("/");
                    if *other != written {
                        return Err(conflict(format!(
                            "its directory {written:?} collides with {other:?}: paths may not differ only in case or \
                             Unicode normalisation"
                        )));
                    }
                }
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
            Some(Claim { node: Node::Directory, explicit: explicit @ false, path: other })
                if node == Node::Directory && other == path =>
            {
                *explicit = true;
                Ok(())
            }
            Some(Claim { node: Node::Directory, explicit: false, path: other })
                if node == Node::Directory =>
            {
                Err(conflict(format!(
                    "collides with the directory {other:?}: paths may not differ only in case or Unicode normalisation"
                )))
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
            c => check_portable_component(c)?,
        }
    }
    Ok(())
}

/// Characters no Windows file name may hold (besides `\`, `/` and control characters).
const NON_PORTABLE_CHARACTERS: &[char] = &['<', '>', ':', '"', '|', '?', '*'];

/// Windows device names, which name a device instead of a file in every directory, also
/// with an extension (`con.txt`), compared case-insensitively.
const DEVICE_NAMES: &[&str] = &["con", "prn", "aux", "nul"];

/// A component every common file system can hold as one ordinary file (escx-format.md
/// §6.2): none of `< > : " | ? *`, not ending in `.` or a space (Windows drops them, so
/// `a.` and `a` would collide), and not a device name (`con`, `prn`, `aux`, `nul`, `com0`–
/// `com9`, `lpt0`–`lpt9`, also with `¹²³` for the digit, alone or before a `.`).
fn check_portable_component(component: &str) -> Result<(), &'static str> {
    if component.contains(NON_PORTABLE_CHARACTERS) {
        return Err("contains one of < > : \" | ? *, which Windows file names cannot hold");
    }
    if component.ends_with(['.', ' ']) {
        return Err("ends with a dot or a space, which Windows drops from file names");
    }
    let stem = component.split('.').next().unwrap_or(component).to_ascii_lowercase();
    let device = DEVICE_NAMES.contains(&stem.as_str())
        || ["com", "lpt"].iter().any(|prefix| {
            stem.strip_prefix(prefix).is_some_and(|rest| {
                matches!(rest, "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³")
            })
        });
    if device {
        return Err("is a Windows device name (con, prn, aux, nul, com0-9, lpt0-9)");
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
            name => {
                check_portable_component(name)
                    .map_err(|_| "symbolic link target names a non-portable file name")?;
                depth += 1
            }
        }
    }
    Ok(())
}

/// Paths in the payload that belong to other sections, compared by portable key (a
/// payload `Docs/x` would land in the docs directory on a case-insensitive system).
fn check_not_reserved(path: &str) -> Result<(), FormatError> {
    let key = portable_key(path);
    let first = key.split('/').next().unwrap_or(&key);
    // `manifest.toml` and `LICENSE` are files, so nothing may lie below them either.
    let owner = match first {
        "manifest.toml" => "manifest section",
        "license" => "license section",
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
    walk(&mut records::Seeking { inner: reader, position: 0, length: plain_length }, section, visitor)
}

/// Walks an archive read as a stream (a decompressed section, or extraction). The stream
/// is the whole section, so its end is the section's end.
pub(crate) fn walk_stream<R: Read>(
    reader: R,
    section: SectionType,
    visitor: &mut dyn Visitor,
) -> io::Result<ArchiveSummary> {
    walk(&mut records::Streamed(reader), section, visitor)
}

/// Reads records to the end of the archive, checking each as escx-format.md §6.2 and §8
/// order it: per record the header (checksum, magic, size, type, mode), then for an entry
/// the path rules, then its data and zero padding; at the end two zero blocks that end the
/// section; then the rules that need every entry.
fn walk(
    source: &mut dyn records::Source,
    section: SectionType,
    visitor: &mut dyn Visitor,
) -> io::Result<ArchiveSummary> {
    let invalid = |reason: String| {
        crate::container::layer_format(FormatError::ArchiveInvalid { section: section.name(), reason })
    };
    let mut checker = PathChecker::new(section);
    let mut summary = ArchiveSummary::default();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut offset = 0u64;
    let mut block = [0u8; records::BLOCK];
    loop {
        let got = records::read_full(source, &mut block)?;
        if got < records::BLOCK {
            return Err(invalid(if got == 0 {
                format!("the archive ends at byte {offset} without its two zero end blocks")
            } else {
                format!("the archive ends inside the record header at byte {offset}")
            }));
        }
        if block.iter().all(|&b| b == 0) {
            end_of_archive(source, offset, &invalid)?;
            break;
        }
        let header = records::parse_header(&block)
            .map_err(|reason| invalid(format!("record at byte {offset}: {reason}")))?;
        offset += records::BLOCK as u64;
        let data_end =
            offset.checked_add(header.size).ok_or_else(|| invalid("record size overflows".into()))?;
        let raw_kind = match header.typeflag {
            b'L' | b'K' => {
                let slot = if header.typeflag == b'L' { &mut long_name } else { &mut long_link };
                if slot.is_some() {
                    return Err(invalid("two GNU long-name records for one entry".into()));
                }
                if header.size > PATH_BYTES_MAX as u64 + 1 {
                    return Err(invalid(format!(
                        "GNU long-name record of {} bytes exceeds {}",
                        header.size,
                        PATH_BYTES_MAX + 1
                    )));
                }
                // At most 4097 bytes, checked just above.
                let mut bytes = vec![0u8; usize::try_from(header.size).unwrap_or(0)];
                if records::read_full(source, &mut bytes)? < bytes.len() {
                    return Err(invalid(format!(
                        "the archive ends inside the GNU long-name record at byte {offset}"
                    )));
                }
                end_of_data(source, header.size, data_end, &invalid)?;
                offset = data_end + records::padding(header.size) as u64;
                while bytes.last() == Some(&0) {
                    bytes.pop();
                }
                *slot = Some(bytes);
                continue;
            }
            0 | b'0' => RawKind::File,
            b'5' => RawKind::Directory,
            b'2' => RawKind::Symlink,
            other => {
                let path = String::from_utf8_lossy(&long_name.take().unwrap_or(header.path)).into_owned();
                return Err(crate::container::layer_format(FormatError::UnsupportedEntry {
                    section: section.name(),
                    path,
                    kind: entry_kind_name(other),
                }));
            }
        };
        if raw_kind != RawKind::File && header.size != 0 {
            return Err(invalid(format!("{raw_kind:?} entry with {} data bytes", header.size)));
        }
        let path = long_name.take().unwrap_or(header.path);
        let target = match raw_kind {
            RawKind::Symlink => Some(long_link.take().unwrap_or(header.link_name)),
            _ => {
                if long_link.take().is_some() {
                    return Err(invalid("GNU long-link record before an entry that is not a link".into()));
                }
                None
            }
        };
        // Parsed for these three types by `parse_header`.
        let mode = header.mode.unwrap_or(0);
        let checked = checker
            .check(&path, raw_kind, target.as_deref(), header.size, mode)
            .map_err(crate::container::layer_format)?;
        match &checked.kind {
            EntryKind::File { size, .. } => {
                summary.files += 1;
                summary.file_bytes += size;
            }
            EntryKind::Directory => summary.directories += 1,
            EntryKind::Symlink { .. } => summary.symlinks += 1,
        }
        let mut content = Data { source: &mut *source, remaining: header.size, path: &checked.path, section };
        visitor.entry(&checked, &mut content)?;
        let left = content.remaining;
        if source.skip(left)? < left {
            return Err(invalid(format!("the archive ends inside the data of {:?}", checked.path)));
        }
        end_of_data(source, header.size, data_end, &invalid)?;
        offset = data_end + records::padding(header.size) as u64;
    }
    if long_name.is_some() || long_link.is_some() {
        return Err(invalid("GNU long-name record not followed by an entry".into()));
    }
    checker.finish().map_err(crate::container::layer_format)?;
    Ok(summary)
}

/// Reads a record's padding, which must be zero bytes (there is no room for hidden data).
fn end_of_data(
    source: &mut dyn records::Source,
    size: u64,
    data_end: u64,
    invalid: &dyn Fn(String) -> io::Error,
) -> io::Result<()> {
    let mut pad = [0u8; records::BLOCK];
    let pad = &mut pad[..records::padding(size)];
    if records::read_full(source, pad)? < pad.len() {
        return Err(invalid(format!("the archive ends inside the padding at byte {data_end}")));
    }
    if let Some(at) = pad.iter().position(|&b| b != 0) {
        return Err(invalid(format!("non-zero padding byte at byte {}", data_end + at as u64)));
    }
    Ok(())
}

/// After a first zero block at `offset`: a second zero block, then the end of the section.
fn end_of_archive(
    source: &mut dyn records::Source,
    offset: u64,
    invalid: &dyn Fn(String) -> io::Error,
) -> io::Result<()> {
    let mut second = [0u8; records::BLOCK];
    let got = records::read_full(source, &mut second)?;
    let mut after = [0u8; 1];
    if got < records::BLOCK || second.iter().any(|&b| b != 0) || records::read_full(source, &mut after)? != 0
    {
        return Err(invalid(format!(
            "the archive must end with exactly two zero blocks at the end of the section \
             (the first zero block is at byte {offset}, so the section must be {} bytes)",
            offset + 2 * BLOCK_BYTES
        )));
    }
    Ok(())
}

/// A file entry's content: exactly its `size` bytes, an early end being `archive-invalid`.
struct Data<'a> {
    source: &'a mut dyn records::Source,
    remaining: u64,
    path: &'a str,
    section: SectionType,
}

impl Read for Data<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let got = self.source.read(&mut buf[..want])?;
        if got == 0 {
            return Err(crate::container::layer_format(FormatError::ArchiveInvalid {
                section: self.section.name(),
                reason: format!("the archive ends inside the data of {:?}", self.path),
            }));
        }
        self.remaining -= got as u64;
        Ok(got)
    }
}

fn entry_kind_name(typeflag: u8) -> String {
    match typeflag {
        b'1' => "hard link".into(),
        b'3' => "character device".into(),
        b'4' => "block device".into(),
        b'6' => "named pipe".into(),
        b'7' => "contiguous file".into(),
        b'S' => "sparse file".into(),
        b'x' | b'g' => "PAX extended header".into(),
        other if other.is_ascii_graphic() => format!("tar entry of type {:?}", other as char),
        other => format!("tar entry of type byte {other}"),
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
        for good in
            ["a", "a/b/c.txt", "ünï/cödé", ".hidden", "console", "com10", "lpt", "a.b.c", "x/aux-data"]
        {
            assert!(check_relative_path(good).is_ok(), "{good:?} rejected");
        }
        for non_portable in [
            "con",
            "a/CON",
            "aux.txt",
            "Nul.tar.gz",
            "com1",
            "LPT9.log",
            "com²",
            "a:b",
            "a*",
            "q?",
            "x/\"y\"",
            "a|b",
            "<a>",
            "end.",
            "end ",
        ] {
            assert!(check_relative_path(non_portable).is_err(), "{non_portable:?} accepted");
        }
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(check_symlink_target("a/link", "../b").is_ok());
        assert!(check_symlink_target("a/link", "../../b").is_err());
        assert!(check_symlink_target("link", "/etc/passwd").is_err());
        assert!(check_symlink_target("link", "x/../../y").is_err());
        assert!(check_symlink_target("a/b/link", "./../c").is_ok());
        assert!(check_symlink_target("link", "x/con").is_err());
        assert!(check_symlink_target("a/link", "../a:b").is_err());
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

    /// Issue 27 (17): two implied directories whose names differ only in normalisation
    /// (`café` as NFC and as NFD) extracted to two directories on Linux and one on macOS.
    #[test]
    fn directories_spelled_two_ways_collide_whether_implied_or_listed() {
        let (nfc, nfd) = ("caf\u{e9}", "cafe\u{301}");
        for (first, second) in [
            (format!("{nfc}/a"), format!("{nfd}/b")),
            (format!("{nfc}/a"), format!("{nfd}/")),
            (format!("{nfc}/"), format!("{nfd}/b")),
            ("Docs/a".to_owned(), "docs/b".to_owned()),
        ] {
            let mut checker = PathChecker::new(SectionType::Docs);
            let kind = |p: &str| if p.ends_with('/') { RawKind::Directory } else { RawKind::File };
            checker.check(first.as_bytes(), kind(&first), None, 1, 0o644).unwrap();
            let err = checker.check(second.as_bytes(), kind(&second), None, 1, 0o644).unwrap_err();
            assert_eq!(err.code(), "duplicate-entry", "{first} then {second}");
            assert!(err.to_string().contains("collides"), "{err}");
        }
        // The same spelling is one directory, implied or listed.
        let mut checker = PathChecker::new(SectionType::Docs);
        checker.check(format!("{nfc}/a").as_bytes(), RawKind::File, None, 1, 0o644).unwrap();
        checker.check(format!("{nfc}/b").as_bytes(), RawKind::File, None, 1, 0o644).unwrap();
        checker.check(format!("{nfc}/").as_bytes(), RawKind::Directory, None, 0, 0o755).unwrap();
    }

    #[test]
    fn payload_paths_owned_by_other_sections_are_reserved() {
        let mut checker = PathChecker::new(SectionType::Payload);
        for reserved in
            ["manifest.toml", "LICENSE", "docs/x", "tests/t.rs", "manifest.toml/x", "LICENSE/x", "Docs/x"]
        {
            let err = checker.check(reserved.as_bytes(), RawKind::File, None, 0, 0o644).unwrap_err();
            assert_eq!(err.code(), "reserved-path", "{reserved}");
        }
        checker.check(b"src/LICENSE", RawKind::File, None, 0, 0o644).unwrap();
    }
}
