//! The section table (escx-format.md §5): one 64-byte entry per section.

use crate::FormatError;
use crate::hash::HASH_BYTES;

use super::header::Header;

/// Length of one encoded table entry.
pub const TABLE_ENTRY_BYTES: u64 = 64;
/// [`TABLE_ENTRY_BYTES`] as a buffer length.
pub const TABLE_ENTRY_LEN: usize = 64;
const _: () = assert!(TABLE_ENTRY_LEN as u64 == TABLE_ENTRY_BYTES);
/// Most sections a package may have.
pub const SECTIONS_MAX: u32 = 16;
/// Section flag: the stored bytes are one or more zstd frames.
pub const FLAG_ZSTD: u32 = 1;
/// Section flag: the stored bytes are a STREAM ciphertext under the package's content key
/// (payload only; see [`crate::content`]).
pub const FLAG_ENCRYPTED: u32 = 2;
/// Flags defined in format 1.0.
const FLAGS_KNOWN: u32 = FLAG_ZSTD | FLAG_ENCRYPTED;

/// Largest manifest, in bytes.
pub const MANIFEST_BYTES_MAX: u64 = 1024 * 1024;
/// Largest LICENSE section (plain), in bytes.
pub const LICENSE_BYTES_MAX: u64 = 1024 * 1024;
/// Largest content-key section, in bytes.
pub const CONTENT_KEY_SECTION_BYTES_MAX: u64 = 64 * 1024;
/// Largest archive section (plain), in bytes: 1 TiB.
pub const ARCHIVE_BYTES_MAX: u64 = 1 << 40;

/// The kinds of section format 1.0 defines, with their type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SectionType {
    /// `manifest.toml`, UTF-8 TOML, never compressed.
    Manifest = 1,
    /// The package files, a tar archive.
    Payload = 2,
    /// `docs/`, a tar archive.
    Docs = 3,
    /// `tests/`, a tar archive.
    Tests = 4,
    /// `LICENSE`, the license text.
    License = 5,
    /// The payload's content key, sealed to the license issuer (licensed content).
    ContentKey = 6,
}

impl SectionType {
    /// All types, in table order.
    pub const ALL: [SectionType; 6] =
        [Self::Manifest, Self::Payload, Self::Docs, Self::Tests, Self::License, Self::ContentKey];

    /// The type for an id, if 1.0 defines it.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The wire id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The lowercase name used in messages, JSON and `--section`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::Payload => "payload",
            Self::Docs => "docs",
            Self::Tests => "tests",
            Self::License => "license",
            Self::ContentKey => "content-key",
        }
    }

    /// Parses a name as printed by [`Self::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the section holds a tar archive.
    pub fn is_archive(self) -> bool {
        matches!(self, Self::Payload | Self::Docs | Self::Tests)
    }

    /// Largest plain length allowed.
    pub fn plain_bytes_max(self) -> u64 {
        match self {
            Self::Manifest => MANIFEST_BYTES_MAX,
            Self::License => LICENSE_BYTES_MAX,
            Self::ContentKey => CONTENT_KEY_SECTION_BYTES_MAX,
            Self::Payload | Self::Docs | Self::Tests => ARCHIVE_BYTES_MAX,
        }
    }
}

/// One decoded table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionEntry {
    /// The section's type.
    pub kind: SectionType,
    /// Flag bits ([`FLAG_ZSTD`]).
    pub flags: u32,
    /// Absolute file offset of the stored bytes.
    pub offset: u64,
    /// Length of the stored bytes.
    pub stored_length: u64,
    /// Length after decompression (equal to `stored_length` when not compressed).
    pub plain_length: u64,
    /// Plain BLAKE3-256 of the stored bytes.
    pub hash: [u8; HASH_BYTES],
}

impl SectionEntry {
    /// Whether the stored bytes are zstd-compressed.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }

    /// Whether the stored bytes are encrypted under the content key.
    pub fn is_encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }

    /// Encodes the entry: type u32, flags u32, offset u64, stored u64, plain u64, `hash[32]`.
    pub fn encode(&self) -> [u8; TABLE_ENTRY_LEN] {
        let mut out = [0u8; TABLE_ENTRY_LEN];
        out[0..4].copy_from_slice(&self.kind.id().to_le_bytes());
        out[4..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.stored_length.to_le_bytes());
        out[24..32].copy_from_slice(&self.plain_length.to_le_bytes());
        out[32..64].copy_from_slice(&self.hash);
        out
    }

    /// Decodes entry number `index`; checks the type id only (layout is checked by
    /// `validate_layout`).
    pub fn decode(index: u32, bytes: &[u8; TABLE_ENTRY_LEN]) -> Result<Self, FormatError> {
        let mut cursor = super::cursor::Cursor::new(bytes);
        // The array is exactly one entry long, so no read below runs short.
        let short = || FormatError::Truncated {
            what: "section table entry",
            offset: 0,
            needed_bytes: TABLE_ENTRY_BYTES,
            file_bytes: 0,
        };
        let type_id = cursor.u32_le().ok_or_else(short)?;
        let kind = SectionType::from_id(type_id).ok_or(FormatError::UnknownSectionType { index, type_id })?;
        Ok(Self {
            kind,
            flags: cursor.u32_le().ok_or_else(short)?,
            offset: cursor.u64_le().ok_or_else(short)?,
            stored_length: cursor.u64_le().ok_or_else(short)?,
            plain_length: cursor.u64_le().ok_or_else(short)?,
            hash: cursor.array::<HASH_BYTES>().ok_or_else(short)?,
        })
    }
}

/// Checks the table against the header and the file length, in the order the spec lists
/// (escx-format.md §5.2), before anything is allocated from these lengths.
pub(crate) fn validate_layout(
    header: &Header,
    entries: &[SectionEntry],
    file_bytes: u64,
) -> Result<(), FormatError> {
    let mut expected_offset = header.header_and_table_bytes();
    let mut previous: Option<SectionType> = None;
    for (entry, index) in entries.iter().zip(0u32..) {
        let section = entry.kind.name();
        match previous {
            None if entry.kind != SectionType::Manifest => return Err(FormatError::MissingManifest),
            Some(prev) if entry.kind <= prev => {
                return Err(FormatError::SectionOrder { index, section });
            }
            _ => {}
        }
        previous = Some(entry.kind);
        check_flags_and_lengths(entry)?;
        if entry.offset < expected_offset {
            return Err(FormatError::SectionOverlap {
                section,
                offset: entry.offset,
                expected: expected_offset,
            });
        }
        if entry.offset > expected_offset {
            return Err(FormatError::SectionGap { section, offset: entry.offset, expected: expected_offset });
        }
        let end = entry.offset.checked_add(entry.stored_length).ok_or(FormatError::SectionPastEnd {
            section,
            end: u64::MAX,
            limit_name: "file",
            limit: file_bytes,
        })?;
        if end > file_bytes {
            return Err(FormatError::SectionPastEnd { section, end, limit_name: "file", limit: file_bytes });
        }
        if end > header.body_length {
            return Err(FormatError::SectionPastEnd {
                section,
                end,
                limit_name: "body",
                limit: header.body_length,
            });
        }
        expected_offset = end;
    }
    if expected_offset != header.body_length {
        return Err(FormatError::BodyLength { declared: header.body_length, computed: expected_offset });
    }
    let encrypted = entries.iter().any(SectionEntry::is_encrypted);
    let has_key = entries.iter().any(|e| e.kind == SectionType::ContentKey);
    if encrypted != has_key {
        return Err(FormatError::ContentKeyPairing);
    }
    Ok(())
}

fn check_flags_and_lengths(entry: &SectionEntry) -> Result<(), FormatError> {
    let section = entry.kind.name();
    if entry.flags & !FLAGS_KNOWN != 0 {
        return Err(FormatError::SectionFlags { section, flags: entry.flags, reason: "undefined flag bits" });
    }
    if entry.plain_length > entry.kind.plain_bytes_max() {
        return Err(FormatError::SectionTooLarge {
            section,
            what: "plain length",
            length: entry.plain_length,
            max: entry.kind.plain_bytes_max(),
        });
    }
    let flags_error = |reason| FormatError::SectionFlags { section, flags: entry.flags, reason };
    if entry.is_encrypted() {
        if entry.kind != SectionType::Payload {
            return Err(flags_error("only the payload is ever encrypted"));
        }
        let sealed_plain = crate::content::encrypted_length(entry.plain_length);
        if entry.is_compressed() {
            // Compressed to fewer bytes than plain, then sealed: at least one empty segment,
            // and less than the plain bytes sealed as they are.
            if entry.stored_length < crate::content::encrypted_length(0)
                || entry.stored_length >= sealed_plain
            {
                return Err(flags_error(
                    "an encrypted compressed payload must be smaller than its plain length sealed",
                ));
            }
        } else if entry.stored_length != sealed_plain {
            return Err(FormatError::StoredLength {
                section,
                plain: entry.plain_length,
                stored: entry.stored_length,
            });
        }
        return Ok(());
    }
    if entry.is_compressed() {
        if matches!(entry.kind, SectionType::Manifest | SectionType::ContentKey) {
            return Err(flags_error("the manifest and the content key are never compressed"));
        }
        if entry.stored_length >= entry.plain_length {
            return Err(FormatError::SectionFlags {
                section,
                flags: entry.flags,
                reason: "a compressed section must be smaller than its plain length",
            });
        }
    } else if entry.stored_length != entry.plain_length {
        return Err(FormatError::StoredLength {
            section,
            plain: entry.plain_length,
            stored: entry.stored_length,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: SectionType, offset: u64, length: u64) -> SectionEntry {
        SectionEntry { kind, flags: 0, offset, stored_length: length, plain_length: length, hash: [0; 32] }
    }

    fn header(count: u32, body_length: u64) -> Header {
        Header { major: 1, minor: 0, flags: 0, section_count: count, body_length }
    }

    #[test]
    fn entry_round_trips() {
        let e = SectionEntry {
            flags: FLAG_ZSTD,
            plain_length: 99,
            hash: [7; 32],
            ..entry(SectionType::Docs, 5, 6)
        };
        assert_eq!(SectionEntry::decode(0, &e.encode()).unwrap(), e);
    }

    #[test]
    fn contiguous_layout_is_accepted() {
        let start = header(2, 0).header_and_table_bytes();
        let entries = [entry(SectionType::Manifest, start, 10), entry(SectionType::Payload, start + 10, 20)];
        validate_layout(&header(2, start + 30), &entries, start + 30 + 5000).unwrap();
    }

    #[test]
    fn overlap_gap_past_end_and_order_are_named() {
        let start = header(2, 0).header_and_table_bytes();
        let h = header(2, start + 30);
        let file = start + 30;
        let overlap = [entry(SectionType::Manifest, start, 10), entry(SectionType::Payload, start + 5, 25)];
        assert!(matches!(validate_layout(&h, &overlap, file), Err(FormatError::SectionOverlap { .. })));
        let gap = [entry(SectionType::Manifest, start, 10), entry(SectionType::Payload, start + 12, 18)];
        assert!(matches!(validate_layout(&h, &gap, file), Err(FormatError::SectionGap { .. })));
        let past = [entry(SectionType::Manifest, start, 10), entry(SectionType::Payload, start + 10, 9999)];
        assert!(matches!(validate_layout(&h, &past, file), Err(FormatError::SectionPastEnd { .. })));
        let order = [entry(SectionType::Manifest, start, 10), entry(SectionType::Manifest, start + 10, 20)];
        assert!(matches!(validate_layout(&h, &order, file), Err(FormatError::SectionOrder { .. })));
        let no_manifest = [entry(SectionType::Payload, start, 30)];
        assert!(matches!(
            validate_layout(&header(1, 0), &no_manifest, file),
            Err(FormatError::MissingManifest)
        ));
    }

    #[test]
    fn compressed_manifest_and_oversized_plain_length_are_rejected() {
        let start = header(1, 0).header_and_table_bytes();
        let mut m = entry(SectionType::Manifest, start, 10);
        m.flags = FLAG_ZSTD;
        m.plain_length = 20;
        assert!(matches!(
            validate_layout(&header(1, start + 10), &[m], start + 10),
            Err(FormatError::SectionFlags { .. })
        ));
        let big = entry(SectionType::Manifest, start, MANIFEST_BYTES_MAX + 1);
        assert!(matches!(
            validate_layout(&header(1, start + MANIFEST_BYTES_MAX + 1), &[big], u64::MAX),
            Err(FormatError::SectionTooLarge { .. })
        ));
    }
}
