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
    let value = ciborium::from_reader(&mut cursor).map_err(|e| describe(&e, bytes, what))?;
    if cursor.position() != bytes.len() as u64 {
        return Err(format!("trailing bytes after the {what}"));
    }
    Ok(value)
}

/// ciborium's errors print as `Semantic(None, "...")`; this says what the bytes were
/// expected to be, and what they look like when they are plainly something else.
fn describe(error: &ciborium::de::Error<std::io::Error>, bytes: &[u8], what: &str) -> String {
    use ciborium::de::Error;
    let looks_like = if bytes.is_empty() {
        Some("it is empty")
    } else if std::str::from_utf8(bytes)
        .is_ok_and(|text| text.chars().all(|c| !c.is_control() || c.is_whitespace()))
    {
        Some("it is text, not CBOR")
    } else {
        None
    };
    let detail = match error {
        Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "the CBOR ends early".to_owned(),
        Error::Io(e) => e.to_string(),
        Error::Syntax(offset) => format!("the CBOR is malformed at byte {offset}"),
        Error::Semantic(_, message) => format!("the CBOR does not have its shape: {message}"),
        Error::RecursionLimitExceeded => "the CBOR nests too deeply".to_owned(),
    };
    let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    match looks_like {
        Some(looks_like) => format!("not {article} {what}: {looks_like} ({detail})"),
        None => format!("malformed {what}: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_errors_say_what_the_bytes_are() {
        let err = decode_exact::<(u8, String)>(b"hello\n", "token response").unwrap_err();
        assert!(err.starts_with("not a token response: it is text, not CBOR"), "{err}");
        assert!(!err.contains("Semantic("), "{err}");
        let err = decode_exact::<(u8, String)>(&encode(&7u8), "pair").unwrap_err();
        assert!(err.starts_with("malformed pair: the CBOR does not have its shape"), "{err}");
        let err = decode_exact::<(u8, String)>(&[], "pair").unwrap_err();
        assert!(err.starts_with("not a pair: it is empty"), "{err}");
    }

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
