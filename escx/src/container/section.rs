//! Reading one section's bytes (escx-format.md §6): a bounded window onto the file, the
//! zstd decoder bounded by the declared plain length, and the mapping of the errors that
//! come out of those layers back to named format errors.

use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom};
use std::rc::Rc;

use crate::content::{ContentKey, DecryptReader};
use crate::{Error, FormatError};

use super::table::SectionEntry;

/// Largest zstd window a decoder accepts (2^25 = 32 MiB), so a hostile frame cannot make
/// the verifier allocate more. Writers use level 3, whose window is at most 2^21.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// Errors raised inside the reader stack, carried through `io::Error` so the stack can be
/// plain `Read` adapters, and turned back into named errors by [`classify`].
#[derive(Debug)]
pub(crate) enum Layer {
    /// The file itself failed to read.
    Source(io::Error),
    /// Decompression produced more than the declared plain length.
    PlainOverflow { declared: u64 },
    /// The zstd decoder failed.
    Decompress(String),
    /// A content check failed (raised by archive visitors).
    Format(FormatError),
    /// Writing an extracted file failed (raised by the extractor).
    Sink(std::path::PathBuf, io::Error),
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Source(e) => write!(f, "{e}"),
            Self::PlainOverflow { declared } => write!(f, "more than {declared} bytes after decompression"),
            Self::Decompress(reason) => f.write_str(reason),
            Self::Format(e) => write!(f, "{e}"),
            Self::Sink(path, e) => write!(f, "{}: {e}", path.display()),
        }
    }
}

impl std::error::Error for Layer {}

impl Layer {
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

/// Maps an error from a section's reader stack to the named error it stands for;
/// anything untagged came from the archive parser itself.
pub(crate) fn classify(section: &'static str, error: io::Error, source_name: &std::path::Path) -> Error {
    if error.get_ref().is_some_and(|inner| inner.is::<Layer>()) {
        // Checked just above; `into_inner` returns the same boxed error.
        if let Some(Ok(layer)) = error.into_inner().map(|inner| inner.downcast::<Layer>()) {
            return match *layer {
                Layer::Source(e) => Error::io(source_name, e),
                Layer::PlainOverflow { declared } => FormatError::PlainLength {
                    section,
                    declared,
                    actual: format!("more than {declared} bytes"),
                }
                .into(),
                Layer::Decompress(reason) => FormatError::Decompress { section, reason }.into(),
                Layer::Format(e) => e.into(),
                Layer::Sink(path, e) => Error::io(path, e),
            };
        }
        return Error::io(source_name, io::Error::other("unclassifiable section read error"));
    }
    FormatError::ArchiveInvalid { section, reason: error.to_string() }.into()
}

/// A `Read + Seek` window onto `[start, start + length)` of the file. Reads past the
/// window's end return end-of-file; I/O errors of the file are tagged [`Layer::Source`].
pub(crate) struct SectionReader<'a, R> {
    inner: &'a mut R,
    start: u64,
    length: u64,
    position: u64,
}

impl<'a, R: Read + Seek> SectionReader<'a, R> {
    /// Opens the window at its first byte.
    pub(crate) fn new(inner: &'a mut R, entry: &SectionEntry) -> io::Result<Self> {
        inner.seek(SeekFrom::Start(entry.offset))?;
        Ok(Self { inner, start: entry.offset, length: entry.stored_length, position: 0 })
    }
}

impl<R: Read + Seek> Read for SectionReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.length.saturating_sub(self.position);
        if remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..want]).map_err(|e| Layer::Source(e).into_io())?;
        self.position += got as u64;
        Ok(got)
    }
}

impl<R: Read + Seek> Seek for SectionReader<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.length.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek outside the section"))?;
        // Clamp at the end: reads there return end-of-file, as for a file.
        let clamped = target.min(self.length);
        self.inner.seek(SeekFrom::Start(self.start + clamped)).map_err(|e| Layer::Source(e).into_io())?;
        self.position = clamped;
        Ok(target)
    }
}

/// Counts plain bytes and fails as soon as more than the declared length comes out, so
/// a decompression bomb costs at most `declared` bytes of work.
pub(crate) struct PlainLimit<R> {
    inner: R,
    declared: u64,
    produced: u64,
}

impl<R: Read> PlainLimit<R> {
    pub(crate) fn new(inner: R, declared: u64) -> Self {
        Self { inner, declared, produced: 0 }
    }

    /// Reads to the end and checks the total equals the declared plain length.
    pub(crate) fn finish(mut self, section: &'static str) -> Result<(), io::Error> {
        io::copy(&mut self, &mut io::sink())?;
        if self.produced != self.declared {
            return Err(Layer::Format(FormatError::PlainLength {
                section,
                declared: self.declared,
                actual: self.produced.to_string(),
            })
            .into_io());
        }
        Ok(())
    }
}

impl<R: Read> Read for PlainLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte more than allowed so an overflow is seen, not silently cut.
        let allowed = self.declared - self.produced;
        let want = buf.len().min(usize::try_from(allowed.saturating_add(1)).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..want])?;
        self.produced += got as u64;
        if self.produced > self.declared {
            return Err(Layer::PlainOverflow { declared: self.declared }.into_io());
        }
        Ok(got)
    }
}

/// Tags the zstd decoder's errors as [`Layer::Decompress`] (and passes the file's own
/// errors through).
struct DecompressErrors<R>(R);

impl<R: Read> Read for DecompressErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.get_ref().is_some_and(|inner| inner.is::<Layer>()) {
                e
            } else {
                Layer::Decompress(e.to_string()).into_io()
            }
        })
    }
}

/// The plain bytes of a section, read from its stored bytes: decompressed when flagged,
/// always bounded by the declared plain length.
///
/// An encrypted section is decrypted first with `key`; without a key it fails as
/// `decryption-failed` (callers that can go on without the content check it beforehand).
pub(crate) fn plain_stream<'r, R: Read + 'r>(
    stored: R,
    entry: &SectionEntry,
    key: Option<&ContentKey>,
) -> io::Result<PlainStream<'r>> {
    let section = entry.kind.name();
    let (below, decrypted): (Box<dyn Read + 'r>, Option<Shared<'r>>) = match (entry.is_encrypted(), key) {
        (false, _) => (Box::new(stored), None),
        (true, Some(key)) => {
            let decrypting: Box<dyn Read + 'r> =
                Box::new(DecryptReader::new(key, stored, entry.stored_length, section)?);
            let shared = Rc::new(RefCell::new(decrypting));
            (Box::new(SharedReader(shared.clone())), Some(shared))
        }
        (true, None) => return Err(Layer::Format(FormatError::DecryptionFailed { section }).into_io()),
    };
    let (inner, under_decompressor): (Box<dyn Read + 'r>, _) = if entry.is_compressed() {
        let mut decoder = zstd::stream::read::Decoder::new(below)
            .map_err(|e| Layer::Decompress(e.to_string()).into_io())?;
        decoder
            .window_log_max(ZSTD_WINDOW_LOG_MAX)
            .map_err(|e| Layer::Decompress(e.to_string()).into_io())?;
        (Box::new(DecompressErrors(decoder)), decrypted)
    } else {
        (below, None)
    };
    Ok(PlainStream { limit: PlainLimit::new(inner, entry.plain_length), under_decompressor })
}

type Shared<'r> = Rc<RefCell<Box<dyn Read + 'r>>>;

/// Reads through a shared layer, so the layer can still be drained after the decoder
/// reading it has failed.
struct SharedReader<'r>(Shared<'r>);

impl Read for SharedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// A section's plain bytes, and what the verdict rules of escx-format.md §8 need to rank
/// an error: the layers are judged outermost first (decryption, then decompression and
/// the plain length, then the content), as if each had run to the end before the next.
pub(crate) struct PlainStream<'r> {
    limit: PlainLimit<Box<dyn Read + 'r>>,
    /// The decryption layer when a decompressor reads it.
    under_decompressor: Option<Shared<'r>>,
}

impl Read for PlainStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.limit.read(buf)
    }
}

impl PlainStream<'_> {
    /// Reads to the end and checks the total equals the declared plain length; a failing
    /// decompressor yields to a decryption failure further on.
    pub(crate) fn finish(self, section: &'static str) -> Result<(), io::Error> {
        let Self { limit, under_decompressor } = self;
        match limit.finish(section) {
            Err(error) if is_decompress(&error) => match under_decompressor {
                Some(below) => {
                    let drained = io::copy(&mut *below.borrow_mut(), &mut io::sink());
                    drained.and(Err(error))
                }
                None => Err(error),
            },
            other => other,
        }
    }

    /// The error to report when the content decoder failed with `content_error`: the
    /// first error of a layer below it, found by running the layers to the end, else
    /// `content_error` itself.
    pub(crate) fn rank(self, section: &'static str, content_error: io::Error) -> io::Error {
        if is_layer(&content_error) {
            return content_error;
        }
        match self.finish(section) {
            Err(layer) => layer,
            Ok(()) => content_error,
        }
    }
}

fn layer_of(error: &io::Error) -> Option<&Layer> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<Layer>())
}

fn is_decompress(error: &io::Error) -> bool {
    matches!(layer_of(error), Some(Layer::Decompress(_)))
}

/// Errors of the file or of the layers under the content decoder.
fn is_layer(error: &io::Error) -> bool {
    match layer_of(error) {
        Some(Layer::Source(_) | Layer::PlainOverflow { .. } | Layer::Decompress(_) | Layer::Sink(..)) => true,
        Some(Layer::Format(format)) => {
            matches!(format, FormatError::DecryptionFailed { .. } | FormatError::PlainLength { .. })
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fault as _;
    use crate::container::SectionType;

    fn compressed_entry(stored: &[u8], plain_length: u64) -> SectionEntry {
        SectionEntry {
            kind: SectionType::License,
            flags: super::super::FLAG_ZSTD,
            offset: 0,
            stored_length: stored.len() as u64,
            plain_length,
            hash: [0; 32],
        }
    }

    #[test]
    fn zstd_bomb_stops_at_the_declared_length() {
        let plain = vec![0u8; 10 * 1024 * 1024];
        let stored = zstd::encode_all(&plain[..], 3).unwrap();
        let entry = compressed_entry(&stored, 1000);
        let stream = plain_stream(&stored[..], &entry, None).unwrap();
        let err = stream.finish("license").unwrap_err();
        let named = classify("license", err, "x".as_ref());
        assert_eq!(named.code(), "plain-length-mismatch", "{named}");
    }

    #[test]
    fn short_plain_stream_is_named() {
        let stored = zstd::encode_all(&[1u8; 100][..], 3).unwrap();
        let entry = compressed_entry(&stored, 101);
        let err = plain_stream(&stored[..], &entry, None).unwrap().finish("license").unwrap_err();
        assert_eq!(classify("license", err, "x".as_ref()).code(), "plain-length-mismatch");
    }

    #[test]
    fn corrupt_frame_is_a_decompression_error() {
        let mut stored = zstd::encode_all(&[1u8; 1000][..], 3).unwrap();
        let last = stored.len() - 3;
        stored[last] ^= 0xff;
        stored[4] ^= 0xff;
        let entry = compressed_entry(&stored, 1000);
        let err = plain_stream(&stored[..], &entry, None).unwrap().finish("license").unwrap_err();
        assert_eq!(classify("license", err, "x".as_ref()).code(), "decompression-failed");
    }

    #[test]
    fn section_reader_stays_inside_its_window() {
        let mut file = io::Cursor::new((0u8..100).collect::<Vec<_>>());
        let entry = SectionEntry {
            kind: SectionType::License,
            flags: 0,
            offset: 10,
            stored_length: 5,
            plain_length: 5,
            hash: [0; 32],
        };
        let mut window = SectionReader::new(&mut file, &entry).unwrap();
        let mut out = Vec::new();
        window.read_to_end(&mut out).unwrap();
        assert_eq!(out, vec![10, 11, 12, 13, 14]);
        window.seek(SeekFrom::Start(3)).unwrap();
        out.clear();
        window.read_to_end(&mut out).unwrap();
        assert_eq!(out, vec![13, 14]);
    }
}
