//! Writing a container (escx-format.md §10): sections are streamed into a temporary
//! file after a zeroed header+table, the table is filled in once every section's length
//! and hash are known, the root is signed, and the file is renamed into place.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use crate::Error;
use crate::archive::{self, SourceEntry};
use crate::content::{self, ContentBinding, ContentKey, ContentKeySection};
use crate::fsutil;
use crate::hash::{self, HASH_BYTES, HashingWriter};
use crate::kem::KemPublicKey;
use crate::progress::Progress;
use crate::sig::SecretKey;

use super::header::{FORMAT_MAJOR, FORMAT_MINOR, HEADER_BYTES, Header};
use super::table::{FLAG_ENCRYPTED, FLAG_ZSTD, SectionEntry, SectionType, TABLE_ENTRY_BYTES};
use super::trailer::SignatureBlock;

/// The zstd level every writer uses, so the same inputs give the same bytes.
pub const ZSTD_LEVEL: i32 = 3;
/// Buffer between the tar writer and the hash/file, large enough for parallel hashing.
const WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// What goes into one section.
pub(crate) enum SectionSource<'a> {
    /// Bytes held in memory (manifest, LICENSE).
    Bytes(SectionType, &'a [u8]),
    /// A tar archive of these entries (payload, docs, tests).
    Archive(SectionType, &'a [SourceEntry]),
    /// A tar archive, compressed when that pays and then encrypted under the key.
    EncryptedArchive(SectionType, &'a [SourceEntry], &'a ContentKey),
    /// The content-key section: the key sealed to the issuer, bound to the package name,
    /// version and the payload's table hash, so it comes after the (encrypted) payload.
    ContentKey {
        key: &'a ContentKey,
        issuer: &'a KemPublicKey,
        name: &'a crate::header::PackageName,
        version: &'a str,
    },
}

impl SectionSource<'_> {
    fn kind(&self) -> SectionType {
        match self {
            Self::Bytes(kind, _) | Self::Archive(kind, _) | Self::EncryptedArchive(kind, _, _) => *kind,
            Self::ContentKey { .. } => SectionType::ContentKey,
        }
    }
}

/// The written package's layout.
pub(crate) struct Written {
    pub(crate) sections: Vec<SectionEntry>,
    pub(crate) root: [u8; HASH_BYTES],
    pub(crate) file_bytes: u64,
}

/// Writes a package to `out` (atomically) and signs it with every key.
pub(crate) fn write_package(
    out: &Path,
    sources: &[SectionSource<'_>],
    keys: &[&SecretKey],
    signed_at: crate::UnixSeconds,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<Written, Error> {
    let io = |e| Error::io(out, e);
    let mut temp = fsutil::temp_file_beside(out)?;
    let section_count = u32::try_from(sources.len())
        .map_err(|_| crate::FormatError::SectionCount { count: u32::MAX, max: super::SECTIONS_MAX })?;
    let header_and_table_bytes = HEADER_BYTES + u64::from(section_count) * TABLE_ENTRY_BYTES;
    let file = temp.as_file_mut();
    file.write_all(&vec![0u8; super::buffer_len(header_and_table_bytes, "table")?]).map_err(io)?;

    let spool_dir = fsutil::parent_dir(out);
    let mut offset = header_and_table_bytes;
    let mut sections = Vec::with_capacity(sources.len());
    for source in sources {
        let entry = match source {
            SectionSource::Bytes(kind, bytes) => write_bytes(file, *kind, offset, bytes).map_err(io)?,
            SectionSource::Archive(kind, entries) => {
                write_archive(file, *kind, offset, entries, &spool_dir, progress)?
            }
            SectionSource::EncryptedArchive(kind, entries, key) => {
                write_encrypted_archive(file, *kind, offset, entries, key, &spool_dir, progress)?
            }
            SectionSource::ContentKey { key, issuer, name, version } => {
                let payload = sections
                    .iter()
                    .find(|s: &&SectionEntry| s.kind == SectionType::Payload)
                    .ok_or_else(|| Error::PackInput {
                        path: out.into(),
                        reason: "a content key without a payload".into(),
                    })?;
                let binding = ContentBinding {
                    name: (*name).clone(),
                    version: (*version).to_owned(),
                    payload_hash: payload.hash,
                };
                let section = ContentKeySection::seal(key, issuer, &binding)?.encode();
                write_bytes(file, SectionType::ContentKey, offset, &section).map_err(io)?
            }
        };
        debug_assert_eq!(entry.kind, source.kind());
        offset += entry.stored_length;
        sections.push(entry);
    }

    let header =
        Header { major: FORMAT_MAJOR, minor: FORMAT_MINOR, flags: 0, section_count, body_length: offset };
    let mut header_and_table = header.encode().to_vec();
    for entry in &sections {
        header_and_table.extend_from_slice(&entry.encode());
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&header_and_table).map_err(io)?;
    let root = hash::package_root(&header_and_table);

    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut file_bytes = offset;
    for key in keys {
        let block = SignatureBlock::sign(&root, key, signed_at).encode();
        file.write_all(&block).map_err(io)?;
        file_bytes += block.len() as u64;
    }
    fsutil::persist(temp, out, fsutil::MODE_PUBLIC, overwrite)?;
    Ok(Written { sections, root, file_bytes })
}

/// Appends a signature block to an existing package, atomically.
pub(crate) fn append_signature(path: &Path, block: &SignatureBlock) -> Result<(), Error> {
    let temp = fsutil::temp_file_beside(path)?;
    // `fs::copy` uses copy_file_range/reflinks where the file system offers them.
    std::fs::copy(path, temp.path()).map_err(|e| Error::io(path, e))?;
    let mut file =
        std::fs::OpenOptions::new().append(true).open(temp.path()).map_err(|e| Error::io(path, e))?;
    file.write_all(&block.encode()).map_err(|e| Error::io(path, e))?;
    drop(file);
    fsutil::persist(temp, path, fsutil::MODE_PUBLIC, true)
}

/// A small section: compressed in memory when that makes it strictly smaller.
fn write_bytes(file: &mut File, kind: SectionType, offset: u64, plain: &[u8]) -> io::Result<SectionEntry> {
    let never_compressed = matches!(kind, SectionType::Manifest | SectionType::ContentKey);
    let compressed = if !never_compressed && !plain.is_empty() {
        Some(zstd::bulk::compress(plain, ZSTD_LEVEL)?).filter(|c| c.len() < plain.len())
    } else {
        None
    };
    let (stored, flags) = match &compressed {
        Some(c) => (&c[..], FLAG_ZSTD),
        None => (plain, 0),
    };
    file.write_all(stored)?;
    Ok(SectionEntry {
        kind,
        flags,
        offset,
        stored_length: stored.len() as u64,
        plain_length: plain.len() as u64,
        hash: hash::content_hash(stored),
    })
}

/// An archive section: the tar stream is written raw into place and, in the same pass,
/// compressed into a spool file; the smaller of the two is kept.
fn write_archive(
    file: &mut File,
    kind: SectionType,
    offset: u64,
    entries: &[SourceEntry],
    spool_dir: &Path,
    progress: &dyn Progress,
) -> Result<SectionEntry, Error> {
    let io = |e| Error::io(spool_dir, e);
    let raw = HashingWriter::new(&mut *file);
    let (raw, mut spool, plain_bytes, compressed_bytes) = tee_archive(raw, entries, spool_dir, progress)?;
    let raw_hash = raw.finalize();
    if compressed_bytes >= plain_bytes {
        return Ok(SectionEntry {
            kind,
            flags: 0,
            offset,
            stored_length: plain_bytes,
            plain_length: plain_bytes,
            hash: raw_hash,
        });
    }
    // Compression pays: replace the raw bytes with the compressed ones.
    file.set_len(offset).map_err(io)?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    spool.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, HashingWriter::new(&mut *file));
    io::copy(&mut spool, &mut writer).map_err(io)?;
    let writer = writer.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(SectionEntry {
        kind,
        flags: FLAG_ZSTD,
        offset,
        stored_length: compressed_bytes,
        plain_length: plain_bytes,
        hash: writer.finalize(),
    })
}

/// An encrypted archive section (escx-format.md §15): the tar stream goes to two spool
/// files, raw and compressed; the smaller is encrypted into place.
fn write_encrypted_archive(
    file: &mut File,
    kind: SectionType,
    offset: u64,
    entries: &[SourceEntry],
    key: &ContentKey,
    spool_dir: &Path,
    progress: &dyn Progress,
) -> Result<SectionEntry, Error> {
    let io = |e| Error::io(spool_dir, e);
    let raw = tempfile::tempfile_in(spool_dir).map_err(io)?;
    let (raw, compressed, plain_bytes, compressed_bytes) = tee_archive(raw, entries, spool_dir, progress)?;
    let (mut source, flags) = if compressed_bytes < plain_bytes {
        (compressed, FLAG_ZSTD | FLAG_ENCRYPTED)
    } else {
        (raw, FLAG_ENCRYPTED)
    };
    source.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, HashingWriter::new(&mut *file));
    let stored_length =
        content::encrypt(key, BufReader::with_capacity(WRITE_BUFFER_BYTES, source), &mut writer)
            .map_err(io)?;
    let writer = writer.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(SectionEntry {
        kind,
        flags,
        offset,
        stored_length,
        plain_length: plain_bytes,
        hash: writer.finalize(),
    })
}

/// Writes the tar stream of `entries` into `raw` and, in the same pass, compresses it into
/// a spool file. Returns both sinks (the spool positioned at its end), the plain length
/// and the compressed length.
fn tee_archive<W: Write>(
    raw: W,
    entries: &[SourceEntry],
    spool_dir: &Path,
    progress: &dyn Progress,
) -> Result<(W, File, u64, u64), Error> {
    let io = |e| Error::io(spool_dir, e);
    let spool = tempfile::tempfile_in(spool_dir).map_err(io)?;
    let raw = BufWriter::with_capacity(WRITE_BUFFER_BYTES, raw);
    let mut compressor = zstd::stream::write::Encoder::new(BufWriter::new(spool), ZSTD_LEVEL).map_err(io)?;
    compressor.include_checksum(false).map_err(io)?;
    let Tee { raw, compressed, plain_bytes } =
        archive::write_archive(Tee { raw, compressed: compressor, plain_bytes: 0 }, entries, progress)?;
    let raw = raw.into_inner().map_err(|e| io(e.into_error()))?;
    let mut spool = compressed.finish().map_err(io)?.into_inner().map_err(|e| io(e.into_error()))?;
    let compressed_bytes = spool.stream_position().map_err(io)?;
    Ok((raw, spool, plain_bytes, compressed_bytes))
}

/// Writes to both the raw and the compressed stream, counting plain bytes.
struct Tee<A, B> {
    raw: A,
    compressed: B,
    plain_bytes: u64,
}

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.raw.write_all(buf)?;
        self.compressed.write_all(buf)?;
        self.plain_bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.raw.flush()?;
        self.compressed.flush()
    }
}

/// A section given as its final stored bytes, for [`assemble`].
#[derive(Debug, Clone)]
pub struct RawSection {
    /// Section type.
    pub kind: SectionType,
    /// Flags as they will appear in the table.
    pub flags: u32,
    /// The stored bytes.
    pub stored: Vec<u8>,
    /// The plain length to declare.
    pub plain_length: u64,
}

/// Lays out already-encoded sections contiguously, fills in the table (lengths and
/// BLAKE3 hashes) and signs the root with every key. Nothing about the sections'
/// content is checked: this is for tools that re-sign packages and for building test
/// vectors, including deliberately invalid ones.
pub fn assemble(sections: &[RawSection], keys: &[&SecretKey], signed_at: crate::UnixSeconds) -> Vec<u8> {
    // A count past u32 cannot be stored; the saturated count makes a file that fails to
    // verify, which is what this tool builds for out-of-range inputs.
    let section_count = u32::try_from(sections.len()).unwrap_or(u32::MAX);
    let mut offset = HEADER_BYTES + u64::from(section_count) * TABLE_ENTRY_BYTES;
    let mut table = Vec::new();
    for section in sections {
        let entry = SectionEntry {
            kind: section.kind,
            flags: section.flags,
            offset,
            stored_length: section.stored.len() as u64,
            plain_length: section.plain_length,
            hash: hash::content_hash(&section.stored),
        };
        offset += entry.stored_length;
        table.extend_from_slice(&entry.encode());
    }
    let header =
        Header { major: FORMAT_MAJOR, minor: FORMAT_MINOR, flags: 0, section_count, body_length: offset };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(&table);
    let root = hash::package_root(&out);
    for section in sections {
        out.extend_from_slice(&section.stored);
    }
    for key in keys {
        out.extend_from_slice(&SignatureBlock::sign(&root, key, signed_at).encode());
    }
    out
}
