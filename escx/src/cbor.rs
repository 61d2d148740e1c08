//! CBOR (RFC 8949) helpers every escx record uses: encoding into a buffer, and decoding
//! that insists the input is exactly one item, so trailing bytes never ride along with a
//! signed or sealed record.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes `value` (serde field order is the key order).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Encodes `value` at the end of `out`.
pub(crate) fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // escx records hold strings, integers, byte strings, arrays and maps, which always
    // serialize; writing to a Vec cannot fail.
    let _ = ciborium::into_writer(value, out);
}

/// Decodes exactly one item that spans all of `bytes`; `what` names it in errors.
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    let mut cursor = std::io::Cursor::new(bytes);
    let value = ciborium::from_reader(&mut cursor).map_err(|e| format!("malformed {what}: {e}"))?;
    if cursor.position() != bytes.len() as u64 {
        return Err(format!("trailing bytes after the {what}"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_trailing_bytes() {
        let bytes = encode(&(1u8, "two"));
        assert_eq!(decode_exact::<(u8, String)>(&bytes, "pair").unwrap(), (1, "two".to_owned()));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_exact::<(u8, String)>(&longer, "pair").unwrap_err(),
            "trailing bytes after the pair"
        );
        assert!(decode_exact::<(u8, String)>(&bytes[..2], "pair").unwrap_err().starts_with("malformed pair"));
    }
}
