//! The fixed 24-byte header (escx-format.md §4).

use crate::FormatError;

/// The first four bytes of every package.
pub const MAGIC: [u8; 4] = *b"ESCX";
/// The major version this code reads and writes.
pub const FORMAT_MAJOR: u16 = 1;
/// The minor version this code writes.
pub const FORMAT_MINOR: u16 = 0;
/// Length of the encoded header.
pub const HEADER_BYTES: u64 = 24;
/// [`HEADER_BYTES`] as a buffer length.
pub const HEADER_LEN: usize = 24;
const _: () = assert!(HEADER_LEN as u64 == HEADER_BYTES);

/// The decoded header. All integers are little-endian on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format major version (must be [`FORMAT_MAJOR`]).
    pub major: u16,
    /// Format minor version (any value is read; later minors only add what 1.0 rejects).
    pub minor: u16,
    /// Header flags; v1 defines none, so they must be zero.
    pub flags: u32,
    /// Number of section table entries, `1..=SECTIONS_MAX`.
    pub section_count: u32,
    /// Length of header + table + sections: where the trailer begins.
    pub body_length: u64,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.major.to_le_bytes());
        out[6..8].copy_from_slice(&self.minor.to_le_bytes());
        out[8..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..16].copy_from_slice(&self.section_count.to_le_bytes());
        out[16..24].copy_from_slice(&self.body_length.to_le_bytes());
        out
    }

    /// Decodes and checks magic, version, flags and section count.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, FormatError> {
        let mut cursor = super::cursor::Cursor::new(bytes);
        // The array is exactly the header's length, so no read below runs short.
        let short = || FormatError::Truncated {
            what: "header",
            offset: 0,
            needed_bytes: HEADER_BYTES,
            file_bytes: 0,
        };
        let magic: [u8; 4] = cursor.array().ok_or_else(short)?;
        if magic != MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        let header = Self {
            major: cursor.u16_le().ok_or_else(short)?,
            minor: cursor.u16_le().ok_or_else(short)?,
            flags: cursor.u32_le().ok_or_else(short)?,
            section_count: cursor.u32_le().ok_or_else(short)?,
            body_length: cursor.u64_le().ok_or_else(short)?,
        };
        if header.major != FORMAT_MAJOR {
            return Err(FormatError::UnsupportedVersion { major: header.major, minor: header.minor });
        }
        if header.flags != 0 {
            return Err(FormatError::UnknownHeaderFlags { flags: header.flags });
        }
        if header.section_count == 0 || header.section_count > super::SECTIONS_MAX {
            return Err(FormatError::SectionCount { count: header.section_count, max: super::SECTIONS_MAX });
        }
        Ok(header)
    }

    /// Length of header + table.
    pub fn header_and_table_bytes(&self) -> u64 {
        HEADER_BYTES + u64::from(self.section_count) * super::TABLE_ENTRY_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_layout_is_little_endian() {
        let header = Header { major: 1, minor: 0, flags: 0, section_count: 2, body_length: 0x0102 };
        let bytes = header.encode();
        assert_eq!(&bytes[..4], b"ESCX");
        assert_eq!(bytes[16], 0x02);
        assert_eq!(bytes[17], 0x01);
        assert_eq!(Header::decode(&bytes).unwrap(), header);
    }

    #[test]
    fn each_header_check_has_its_error() {
        let good = Header { major: 1, minor: 7, flags: 0, section_count: 1, body_length: 88 };
        let mut bytes = good.encode();
        bytes[0] = b'X';
        assert!(matches!(Header::decode(&bytes), Err(FormatError::BadMagic { .. })));
        let mut bytes = good.encode();
        bytes[4] = 2;
        assert!(matches!(Header::decode(&bytes), Err(FormatError::UnsupportedVersion { major: 2, .. })));
        let mut bytes = good.encode();
        bytes[8] = 1;
        assert!(matches!(Header::decode(&bytes), Err(FormatError::UnknownHeaderFlags { .. })));
        let mut bytes = good.encode();
        bytes[12] = 0;
        assert!(matches!(Header::decode(&bytes), Err(FormatError::SectionCount { .. })));
        // A later minor version is accepted.
        assert_eq!(Header::decode(&good.encode()).unwrap().minor, 7);
    }
}
