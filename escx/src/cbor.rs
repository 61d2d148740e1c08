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

/// Decodes exactly one item that spans all of `bytes` and is in escx's canonical
/// encoding (escx-format.md §1.1): the bytes must be exactly what [`encode`] writes for the
/// decoded value, so shortest-form heads, definite lengths, no tags, no duplicate keys and
/// map keys in the order the record's spec lists them. `what` names the record in errors.
///
/// One rule instead of several: any encoding freedom a reader accepted would let two
/// byte strings carry one record, and the record's hash (a request id, a statement leaf)
/// or a second implementation's verdict would then depend on which one arrived.
pub fn decode_exact<T: DeserializeOwned + Serialize>(bytes: &[u8], what: &str) -> Result<T, String> {
    let mut cursor = std::io::Cursor::new(bytes);
    let value: T = ciborium::from_reader(&mut cursor).map_err(|e| describe(&e, bytes, what))?;
    if cursor.position() != bytes.len() as u64 {
        return Err(format!("trailing bytes after the {what}"));
    }
    // Zeroized, and sized so it never reallocates when it matches: the record may hold
    // secrets (a key file's map).
    let mut again = zeroize::Zeroizing::new(Vec::with_capacity(bytes.len()));
    encode_into(&value, &mut again);
    if again.as_slice() != bytes {
        return Err(format!(
            "malformed {what}: not in canonical CBOR (shortest-form lengths and integers, \
             definite lengths, no tags, keys once each and in the specified order)"
        ));
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

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Record {
        v: u8,
        id: serde_bytes::ByteBuf,
        n: u64,
    }

    #[test]
    fn only_the_canonical_encoding_is_accepted() {
        let record = Record { v: 1, id: serde_bytes::ByteBuf::from(vec![7u8; 2]), n: 500 };
        let canonical = encode(&record);
        // a3 61 76 01 62 69 64 42 07 07 61 6e 19 01 f4
        assert_eq!(hex::encode(&canonical), "a3617601626964420707616e1901f4");
        assert_eq!(decode_exact::<Record>(&canonical, "record").unwrap(), record);
        let refused = [
            // v as a one-byte-argument integer (0x18 0x01) instead of 0x01
            "a36176180162696442070761 6e1901f4",
            // n = 500 in four bytes
            "a3617601626964420707616e1a000001f4",
            // keys in another order (n before id)
            "a36176016 16e1901f462696442 0707",
            // indefinite-length map
            "bf617601626964420707616e1901f4ff",
            // indefinite-length byte string
            "a3617601626964 5f420707ff616e1901f4",
            // a tag (1, epoch time) on n
            "a3617601626964420707616e c11901f4",
            // the key v as a two-byte-length text string
            "a3 780176 01626964420707616e1901f4",
        ];
        for (i, spaced) in refused.iter().enumerate() {
            let bytes = hex::decode(spaced.replace(' ', "")).unwrap();
            let err = decode_exact::<Record>(&bytes, "record").unwrap_err();
            assert!(err.starts_with("malformed record"), "case {i}: {err}");
        }
        // A duplicate key (v twice) in a four-entry map.
        let duplicate = hex::decode("a4617601617601626964420707616e1901f4").unwrap();
        assert!(decode_exact::<Record>(&duplicate, "record").is_err());
    }
}
