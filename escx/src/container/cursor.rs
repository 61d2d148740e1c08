//! A bounds-checked reader over a byte slice for the container's fixed layouts: every read
//! either returns the next bytes or `None`, never an out-of-range index.

/// Reads little-endian fields from the front of a slice.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// The next `length` bytes.
    pub(crate) fn slice(&mut self, length: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(length)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.slice(N)?.try_into().ok()
    }

    pub(crate) fn u16_le(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32_le(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64_le(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn reads_in_order_and_stops_at_the_end() {
        let bytes = [1, 0, 2, 0, 0, 0, 9];
        let mut cursor = Cursor::new(&bytes);
        assert_eq!(cursor.u16_le(), Some(1));
        assert_eq!(cursor.u32_le(), Some(2));
        assert_eq!(cursor.position(), 6);
        assert_eq!(cursor.u16_le(), None, "one byte left is not a u16");
        assert_eq!(cursor.remaining(), 1, "a failed read consumes nothing");
        assert_eq!(cursor.slice(1), Some(&[9][..]));
        assert_eq!(cursor.slice(usize::MAX), None);
    }
}
