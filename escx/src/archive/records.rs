//! Tar records, read strictly (escx-format.md §6.2 "Records"): 512-byte headers whose
//! checksum, magic and numeric fields follow one syntax, data padded with zero bytes, and
//! exactly two zero blocks at the end. The `tar` crate writes archives; it is not used to
//! read them because it accepts what the format refuses (non-zero padding, signed
//! checksums, numeric fields in several syntaxes, a ustar prefix on GNU headers), and a
//! verdict must not depend on a parser's leniency.

use std::io::{self, Read, Seek, SeekFrom};

/// Tar block size.
pub(crate) const BLOCK: usize = 512;

/// One header, decoded.
#[derive(Debug)]
pub(crate) struct Header {
    /// Type flag byte (`b'0'`, `0`, `b'5'`, `b'2'`, `b'L'`, `b'K'`, ...).
    pub typeflag: u8,
    /// The path: `prefix + "/" + name` for a ustar header with a prefix, else `name`.
    pub path: Vec<u8>,
    /// The `linkname` field.
    pub link_name: Vec<u8>,
    /// Data bytes that follow the header.
    pub size: u64,
    /// Only for types the format extracts; `None` when the field was not parsed.
    pub mode: Option<u32>,
}

/// Decodes one non-zero header block, checking, in this order: the checksum, the magic,
/// the `size` field, and for regular files, directories and links the `mode` field.
pub(crate) fn parse_header(block: &[u8; BLOCK]) -> Result<Header, String> {
    let stored = octal(&block[148..156]).ok_or("the checksum field is not an octal number")?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { u64::from(b' ') } else { u64::from(b) })
        .sum();
    if stored != sum {
        return Err(format!("header checksum is {stored}, the header's bytes sum to {sum}"));
    }
    let ustar = match (&block[257..263], &block[263..265]) {
        (b"ustar\0", b"00") => true,
        (b"ustar ", b" \0") => false,
        _ => {
            return Err(
                "header has neither ustar (\"ustar\\0\" \"00\") nor GNU (\"ustar \" \" \\0\") magic".into()
            );
        }
    };
    let size = numeric_size(&block[124..136]).ok_or("the size field is neither octal nor base-256")?;
    let typeflag = block[156];
    let mode = match typeflag {
        0 | b'0' | b'5' | b'2' => Some(
            u32::try_from(octal(&block[100..108]).ok_or("the mode field is not an octal number")?)
                .map_err(|_| "the mode field is out of range")?,
        ),
        _ => None,
    };
    let name = field_string(&block[0..100]);
    let prefix = if ustar { field_string(&block[345..500]) } else { &[] };
    let path = if prefix.is_empty() { name.to_vec() } else { [prefix, b"/", name].concat() };
    Ok(Header { typeflag, path, link_name: field_string(&block[157..257]).to_vec(), size, mode })
}

/// A string field: its bytes up to the first NUL (all of them when there is none).
fn field_string(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// An octal numeric field: optional leading spaces, at least one digit `0`–`7`, then only
/// NUL or space bytes to the end of the field.
fn octal(field: &[u8]) -> Option<u64> {
    let start = field.iter().position(|&b| b != b' ')?;
    let digits = field[start..].iter().take_while(|b| (b'0'..=b'7').contains(b)).count();
    if digits == 0 || field[start + digits..].iter().any(|&b| b != 0 && b != b' ') {
        return None;
    }
    field[start..start + digits]
        .iter()
        .try_fold(0u64, |value, &d| value.checked_mul(8)?.checked_add(u64::from(d - b'0')))
}

/// The `size` field: octal, or GNU base-256 (first byte `0x80`, then a big-endian
/// unsigned integer in the remaining 11 bytes).
fn numeric_size(field: &[u8]) -> Option<u64> {
    match field.first() {
        Some(0x80) => {
            field[1..].iter().try_fold(0u64, |value, &b| value.checked_mul(256)?.checked_add(u64::from(b)))
        }
        Some(b) if b & 0x80 != 0 => None,
        _ => octal(field),
    }
}

/// Where records come from: a stream (data skipped by reading it) or a seekable section
/// (data skipped by seeking, so file contents are never copied).
pub(crate) trait Source: Read {
    /// Skips `n` bytes that the caller knows exist (checked against the section length).
    fn skip(&mut self, n: u64) -> io::Result<u64>;
}

/// A stream source.
pub(crate) struct Streamed<R>(pub R);

impl<R: Read> Read for Streamed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Source for Streamed<R> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut self.0).take(n), &mut io::sink())
    }
}

/// A seekable source of known length.
pub(crate) struct Seeking<R> {
    pub inner: R,
    pub position: u64,
    pub length: u64,
}

impl<R: Read> Read for Seeking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = self.inner.read(buf)?;
        self.position += got as u64;
        Ok(got)
    }
}

impl<R: Read + Seek> Source for Seeking<R> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let n = n.min(self.length.saturating_sub(self.position));
        self.inner.seek(SeekFrom::Current(i64::try_from(n).unwrap_or(i64::MAX)))?;
        self.position += n;
        Ok(n)
    }
}

/// Fills `buf` completely; returns how many bytes were read (fewer only at end of input).
pub(crate) fn read_full(source: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(got) => filled += got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Bytes of zero padding after `size` data bytes.
pub(crate) fn padding(size: u64) -> usize {
    let block = BLOCK as u64;
    usize::try_from((block - size % block) % block).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_have_one_syntax() {
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"   644 \0"), Some(0o644));
        assert_eq!(octal(b"012345\0 "), Some(0o12345));
        assert_eq!(octal(b"77777777"), Some(0o77777777));
        for bad in
            [&b"\0\0\0\0\0\0\0\0"[..], b"        ", b"0000648\0", b"00 0644\0", b"+000644\0", b"0x1234\0\0"]
        {
            assert_eq!(octal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn size_may_be_base_256() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[11] = 1;
        field[10] = 2;
        assert_eq!(numeric_size(&field), Some(0x201));
        field[0] = 0xff;
        assert_eq!(numeric_size(&field), None);
        assert_eq!(numeric_size(b"00000001000\0"), Some(0o1000));
    }

    #[test]
    fn padding_to_the_next_block() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
