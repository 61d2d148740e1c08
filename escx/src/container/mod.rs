//! The v1 `.escx` container (spec: escx-format.md §4–§7).
//!
//! ```text
//! header   24 bytes                      header.rs
//! table    section_count x 64 bytes      table.rs
//! sections contiguous, in table order    section.rs
//! trailer  1..=16 signature blocks       trailer.rs
//! ```
//!
//! [`PackageReader`] parses and validates the header, table and trailer of any
//! `Read + Seek` source without touching section bytes; sections are then hashed and
//! checked one at a time, so verifying one section reads only that section.

mod cursor;
mod header;
mod reader;
mod section;
mod table;
mod trailer;
mod writer;

pub use header::{FORMAT_MAJOR, FORMAT_MINOR, HEADER_BYTES, Header, MAGIC};
pub use reader::{PackageReader, SectionCheck};
pub use section::ZSTD_WINDOW_LOG_MAX;
pub(crate) use section::{classify, plain_stream};
pub use table::{FLAG_ENCRYPTED, FLAG_ZSTD, SECTIONS_MAX, SectionEntry, SectionType, TABLE_ENTRY_BYTES};
pub use trailer::{BLOCK_MAGIC, BLOCK_PREFIX_BYTES, SIGNATURE_BLOCK_BYTES, SIGNATURES_MAX, SignatureBlock};
pub use writer::{RawSection, ZSTD_LEVEL, assemble};
pub(crate) use writer::{SectionSource, append_signature, write_package};

/// Carries a format error through `io::Read` adapters (see `section::classify`).
pub(crate) fn layer_format(error: crate::FormatError) -> std::io::Error {
    section::Layer::Format(error).into_io()
}
pub(crate) use reader::check_hash;

/// A length already bounded by a format limit, as a buffer size. Every limit is far below
/// `usize::MAX` on the 32- and 64-bit targets escx builds for, so this does not fail
/// there; elsewhere it is a clear error instead of a truncated buffer.
pub(crate) fn buffer_len(length: u64, section: &'static str) -> Result<usize, crate::FormatError> {
    usize::try_from(length).map_err(|_| crate::FormatError::SectionTooLarge {
        section,
        what: "length",
        length,
        max: usize::MAX as u64,
    })
}

/// Carries an extractor's write failure through `io::Read` adapters, naming the file.
pub(crate) fn layer_sink(path: &std::path::Path, error: std::io::Error) -> std::io::Error {
    section::Layer::Sink(path.to_path_buf(), error).into_io()
}
