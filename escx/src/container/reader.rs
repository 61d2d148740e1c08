//! Opening a package: header, table and trailer are read and validated up front (they
//! are small and bounded); section bytes are read only when a section is checked.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::archive::{self, ArchiveSummary, CheckOnly};
use crate::content::{ContentKey, ContentKeySection};
use crate::hash::{self, HASH_BYTES, HashingReader};
use crate::header::{ManifestHeader, PackageId};
use crate::progress::Progress;
use crate::{Error, FormatError};

use super::buffer_len;
use super::header::{HEADER_BYTES, HEADER_LEN, Header};
use super::section::{SectionReader, classify, plain_stream};
use super::table::{SectionEntry, SectionType, TABLE_ENTRY_LEN, validate_layout};
use super::trailer::{SIGNATURE_BLOCK_BYTES, SIGNATURES_MAX, SignatureBlock};

/// A package whose header, table and trailer have been parsed and validated.
pub struct PackageReader<R> {
    inner: R,
    source: PathBuf,
    file_bytes: u64,
    header: Header,
    header_and_table: Vec<u8>,
    sections: Vec<SectionEntry>,
    signatures: Vec<SignatureBlock>,
    root: [u8; HASH_BYTES],
    manifest: Option<ManifestHeader>,
}

/// What checking one section established.
#[derive(Debug, Clone)]
pub struct SectionCheck {
    /// The table entry (its hash now known to match the stored bytes).
    pub entry: SectionEntry,
    /// For archive sections, what they hold (`None` when not content-checked).
    pub archive: Option<ArchiveSummary>,
    /// False for an encrypted payload checked without its content key: only its stored
    /// bytes were authenticated.
    pub content_checked: bool,
}

impl PackageReader<File> {
    /// Opens a package file.
    pub fn open_file(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Self::open(file, path)
    }
}

impl<R: Read + Seek + Send> PackageReader<R> {
    /// Parses and validates header, table and trailer (escx-format.md §8 steps 1–4).
    /// `source` names the input in error messages.
    pub fn open(mut inner: R, source: impl Into<PathBuf>) -> Result<Self, Error> {
        let source = source.into();
        let io = |e| Error::io(&source, e);
        let file_bytes = inner.seek(SeekFrom::End(0)).map_err(io)?;
        let truncated =
            |what, offset, needed_bytes| FormatError::Truncated { what, offset, needed_bytes, file_bytes };

        if file_bytes < HEADER_BYTES {
            // A short file that does not even start like a package is not one (a text file,
            // say), rather than an interrupted download of one (escx-format.md §8 step 1).
            let mut start = [0u8; 4];
            let available = usize::try_from(file_bytes).unwrap_or(0).min(start.len());
            inner.seek(SeekFrom::Start(0)).map_err(io)?;
            inner.read_exact(&mut start[..available]).map_err(io)?;
            if start[..available] != super::header::MAGIC[..available] {
                return Err(FormatError::BadMagic { found: start }.into());
            }
            return Err(truncated("header", 0, HEADER_BYTES).into());
        }
        let mut header_bytes = [0u8; HEADER_LEN];
        inner.seek(SeekFrom::Start(0)).map_err(io)?;
        inner.read_exact(&mut header_bytes).map_err(io)?;
        let header = Header::decode(&header_bytes)?;

        let header_and_table_bytes = header.header_and_table_bytes();
        if header_and_table_bytes > file_bytes {
            return Err(
                truncated("section table", HEADER_BYTES, header_and_table_bytes - HEADER_BYTES).into()
            );
        }
        // Bounded: at most SECTIONS_MAX entries.
        let mut header_and_table = vec![0u8; buffer_len(header_and_table_bytes, "table")?];
        header_and_table[..HEADER_LEN].copy_from_slice(&header_bytes);
        inner.read_exact(&mut header_and_table[HEADER_LEN..]).map_err(io)?;
        let sections = header_and_table[HEADER_LEN..]
            .chunks_exact(TABLE_ENTRY_LEN)
            .zip(0u32..)
            .map(|(chunk, index)| {
                let mut bytes = [0u8; TABLE_ENTRY_LEN];
                bytes.copy_from_slice(chunk);
                SectionEntry::decode(index, &bytes)
            })
            .collect::<Result<Vec<_>, _>>()?;

        if header.body_length > file_bytes {
            return Err(truncated("package body", 0, header.body_length).into());
        }
        validate_layout(&header, &sections, file_bytes)?;

        let trailer_bytes = file_bytes - header.body_length;
        if trailer_bytes > (SIGNATURES_MAX * SIGNATURE_BLOCK_BYTES) as u64 {
            return Err(FormatError::TooManySignatures { max: SIGNATURES_MAX }.into());
        }
        let mut trailer = vec![0u8; buffer_len(trailer_bytes, "trailer")?];
        inner.seek(SeekFrom::Start(header.body_length)).map_err(io)?;
        inner.read_exact(&mut trailer).map_err(io)?;
        let signatures = SignatureBlock::decode_trailer(&trailer, header.body_length)?;

        let root = hash::package_root(&header_and_table);
        Ok(Self {
            inner,
            source,
            file_bytes,
            header,
            header_and_table,
            sections,
            signatures,
            root,
            manifest: None,
        })
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The name used for this input in messages.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Total length of the input.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The encoded header and table, the input of the root.
    pub fn header_and_table(&self) -> &[u8] {
        &self.header_and_table
    }

    /// The package root every signature covers.
    pub fn root(&self) -> &[u8; HASH_BYTES] {
        &self.root
    }

    /// The section table.
    pub fn sections(&self) -> &[SectionEntry] {
        &self.sections
    }

    /// The table entry of a section type, if present.
    pub fn section(&self, kind: SectionType) -> Option<&SectionEntry> {
        self.sections.iter().find(|s| s.kind == kind)
    }

    /// The signature blocks (not yet verified).
    pub fn signatures(&self) -> &[SignatureBlock] {
        &self.signatures
    }

    /// Reads the manifest, checks its hash, and parses name and version.
    pub fn manifest(&mut self) -> Result<&ManifestHeader, Error> {
        if self.manifest.is_none() {
            let bytes = self.manifest_bytes()?;
            self.manifest = Some(ManifestHeader::parse(&bytes)?);
        }
        // Set just above.
        self.manifest.as_ref().ok_or(Error::Format(FormatError::MissingManifest))
    }

    /// Name and version from the manifest (reads it if needed).
    pub fn package_id(&mut self) -> Result<PackageId, Error> {
        Ok(self.manifest()?.package.clone())
    }

    /// The manifest's bytes, hash-checked.
    pub fn manifest_bytes(&mut self) -> Result<Vec<u8>, Error> {
        let entry = self.section(SectionType::Manifest).cloned().ok_or(FormatError::MissingManifest)?;
        // Bounded by MANIFEST_BYTES_MAX in `validate_layout`.
        let mut bytes = vec![0u8; buffer_len(entry.stored_length, entry.kind.name())?];
        self.inner.seek(SeekFrom::Start(entry.offset)).map_err(|e| Error::io(&self.source, e))?;
        self.inner.read_exact(&mut bytes).map_err(|e| Error::io(&self.source, e))?;
        check_hash(&entry, hash::content_hash(&bytes))?;
        Ok(bytes)
    }

    /// Hashes one section's stored bytes against the table, then checks its content:
    /// decompression to exactly the declared plain length, the manifest's minimal schema,
    /// the archive rules. Reads no other section. An encrypted payload is only hashed
    /// (its content is checked when a content key is at hand: `check_section_with`).
    pub fn check_section(
        &mut self,
        kind: SectionType,
        progress: &dyn Progress,
    ) -> Result<SectionCheck, Error> {
        self.check_section_with(kind, progress, None)
    }

    /// [`Self::check_section`], decrypting an encrypted payload with `content_key` so its
    /// content is checked too.
    pub(crate) fn check_section_with(
        &mut self,
        kind: SectionType,
        progress: &dyn Progress,
        content_key: Option<&ContentKey>,
    ) -> Result<SectionCheck, Error> {
        let entry = self.section(kind).cloned().ok_or(Error::SectionAbsent { section: kind.name() })?;
        if kind == SectionType::Manifest {
            self.manifest()?;
            return Ok(SectionCheck { entry, archive: None, content_checked: true });
        }
        let section = kind.name();
        let source = self.source.clone();
        let classify = |e| classify(section, e, &source);
        // Every verdict below is reached from bytes that were hashed against the table,
        // never from a second read of the file (which may have changed in between).
        progress.start(section, entry.stored_length);

        // Small and read whole: hash and decode one copy.
        if kind == SectionType::ContentKey {
            // Bounded by CONTENT_KEY_SECTION_BYTES_MAX in `validate_layout`.
            let mut bytes = vec![0u8; buffer_len(entry.stored_length, entry.kind.name())?];
            SectionReader::new(&mut self.inner, &entry)
                .and_then(|mut window| window.read_exact(&mut bytes))
                .map_err(classify)?;
            progress.advance(entry.stored_length);
            progress.finish();
            check_hash(&entry, hash::content_hash(&bytes))?;
            ContentKeySection::decode(&bytes)?;
            return Ok(SectionCheck { entry, archive: None, content_checked: true });
        }

        // A plain archive: one read feeds the hash and the archive walker. The walker
        // only parses tar headers (safe on any input); its verdict counts only if the
        // hash matches, so the outcome is the same as hashing first.
        if kind.is_archive() && !entry.is_compressed() && !entry.is_encrypted() {
            let mut window = SectionReader::new(&mut self.inner, &entry).map_err(classify)?;
            let plain_length = entry.plain_length;
            let (actual, walked) =
                hash::hash_and_consume(&mut window, entry.stored_length, progress, move |chunks| {
                    archive::walk_seekable(chunks, kind, plain_length, &mut CheckOnly)
                })
                .map_err(classify)?;
            progress.finish();
            check_hash(&entry, actual)?;
            let summary = walked.map_err(classify)?;
            return Ok(SectionCheck { entry, archive: Some(summary), content_checked: true });
        }

        // 1. Compressed or encrypted: authenticate the stored bytes before zstd or the
        //    AEAD sees them.
        let mut window = SectionReader::new(&mut self.inner, &entry).map_err(classify)?;
        let actual = hash::hash_exact(&mut window, entry.stored_length, progress).map_err(classify)?;
        progress.finish();
        check_hash(&entry, actual)?;
        let decoded = kind.is_archive() || entry.is_compressed();
        if !decoded || (entry.is_encrypted() && content_key.is_none()) {
            let content_checked = !entry.is_encrypted();
            return Ok(SectionCheck { entry, archive: None, content_checked });
        }

        // 2. Decode a second read, hashing it as it is decoded: if the file changed since
        //    step 1, that hash differs and wins over whatever the decoder found.
        let window = SectionReader::new(&mut self.inner, &entry).map_err(classify)?;
        let mut hashing = HashingReader::new(window);
        let decoded: Result<Option<ArchiveSummary>, Error> = (|| {
            let mut plain = plain_stream(&mut hashing, &entry, content_key).map_err(classify)?;
            let summary = if kind.is_archive() {
                match archive::walk_stream(&mut plain, kind, &mut CheckOnly) {
                    Ok(summary) => Some(summary),
                    // Layers are judged outermost first (§8): a decryption or length
                    // error further on wins over what the archive check found.
                    Err(error) => return Err(classify(plain.rank(section, error))),
                }
            } else {
                None
            };
            plain.finish(section).map_err(classify)?;
            Ok(summary)
        })();
        let (reread, _) = hashing.finish().map_err(classify)?;
        if reread != entry.hash {
            return Err(FormatError::SectionHash {
                section,
                expected: hex::encode(entry.hash),
                actual: format!("{} (the file changed while it was verified)", hex::encode(reread)),
            }
            .into());
        }
        Ok(SectionCheck { entry, archive: decoded?, content_checked: true })
    }

    /// The content-key section, if the package has one (hash-checked and decoded).
    pub fn content_key_section(&mut self) -> Result<Option<ContentKeySection>, Error> {
        let Some(entry) = self.section(SectionType::ContentKey).cloned() else { return Ok(None) };
        // Bounded by CONTENT_KEY_SECTION_BYTES_MAX in `validate_layout`.
        let mut bytes = vec![0u8; buffer_len(entry.stored_length, entry.kind.name())?];
        self.inner.seek(SeekFrom::Start(entry.offset)).map_err(|e| Error::io(&self.source, e))?;
        self.inner.read_exact(&mut bytes).map_err(|e| Error::io(&self.source, e))?;
        check_hash(&entry, hash::content_hash(&bytes))?;
        Ok(Some(ContentKeySection::decode(&bytes)?))
    }

    /// What this package's content key is bound to (escx-format.md §15.2): the manifest's
    /// name and version and the payload's table hash.
    pub fn content_binding(&mut self) -> Result<crate::content::ContentBinding, Error> {
        let payload_hash =
            self.section(SectionType::Payload).ok_or(Error::SectionAbsent { section: "payload" })?.hash;
        let id = self.package_id()?;
        Ok(crate::content::ContentBinding { name: id.name, version: id.version.to_string(), payload_hash })
    }

    /// Checks that `key` decrypts this package's encrypted payload by authenticating its
    /// first STREAM segment (escx-format.md §15.3): what an issuer does before it hands
    /// the key to anyone. Reads at most one segment.
    pub fn check_content_key(&mut self, key: &ContentKey) -> Result<(), Error> {
        let entry =
            self.section(SectionType::Payload).cloned().ok_or(Error::SectionAbsent { section: "payload" })?;
        if !entry.is_encrypted() {
            return Err(FormatError::ContentKeyPairing.into());
        }
        let source = self.source.clone();
        let window = SectionReader::new(&mut self.inner, &entry).map_err(|e| Error::io(&source, e))?;
        let mut decrypting = crate::content::DecryptReader::new(key, window, entry.stored_length, "payload")
            .map_err(|e| classify("payload", e, &source))?;
        let mut first = [0u8; 1];
        decrypting.read(&mut first).map_err(|e| classify("payload", e, &source))?;
        Ok(())
    }

    /// A window onto a section's stored bytes, for extraction.
    pub(crate) fn stored_bytes(&mut self, entry: &SectionEntry) -> Result<SectionReader<'_, R>, Error> {
        SectionReader::new(&mut self.inner, entry).map_err(|e| Error::io(&self.source, e))
    }
}

pub(crate) fn check_hash(entry: &SectionEntry, actual: [u8; HASH_BYTES]) -> Result<(), FormatError> {
    if actual != entry.hash {
        return Err(FormatError::SectionHash {
            section: entry.kind.name(),
            expected: hex::encode(entry.hash),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}
