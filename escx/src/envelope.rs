//! The signed envelope every escx crate uses for signed records (spec: escx-format.md §9).
//!
//! An envelope is a CBOR map `{ctx, alg, key_id, payload, sig}`. The signature is ML-DSA-87
//! over the `payload` bytes *as they appear in the envelope*, under the FIPS 204 context
//! string `ctx`, so a verifier never re-encodes anything. The payload's own format is defined
//! by whoever uses the envelope (a key rotation statement, a registry index, a license...).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::Error;
use crate::sig::{ALG_ML_DSA_87, KEY_ID_BYTES, KeyId, PublicKey, SecretKey, Signature, SigningContext};

/// Largest envelope accepted by [`Envelope::from_cbor`].
pub const ENVELOPE_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeMap {
    ctx: String,
    alg: u16,
    key_id: ByteBuf,
    payload: ByteBuf,
    sig: ByteBuf,
}

/// A parsed signed envelope. Parsing checks shape only; [`Envelope::open`] checks the
/// signature.
#[derive(Debug, Clone)]
pub struct Envelope {
    context: String,
    key_id: KeyId,
    payload: Vec<u8>,
    signature: Signature,
}

impl Envelope {
    /// Signs `payload` under `context` with `key`.
    pub fn seal(context: SigningContext, payload: Vec<u8>, key: &SecretKey) -> Self {
        let signature = key.sign(context, &payload);
        Self { context: context.as_str().to_owned(), key_id: key.id(), payload, signature }
    }

    /// The canonical CBOR encoding (a map with the keys in the order ctx, alg, key_id,
    /// payload, sig).
    pub fn to_cbor(&self) -> Vec<u8> {
        let map = EnvelopeMap {
            ctx: self.context.clone(),
            alg: ALG_ML_DSA_87,
            key_id: ByteBuf::from(self.key_id.0.to_vec()),
            payload: ByteBuf::from(self.payload.clone()),
            sig: ByteBuf::from(self.signature.as_bytes().to_vec()),
        };
        let mut out = Vec::with_capacity(self.payload.len() + 4800);
        // Serializing plain byte strings and integers into a Vec cannot fail.
        let _ = ciborium::into_writer(&map, &mut out);
        out
    }

    /// Parses an envelope's CBOR (shape, lengths, algorithm); does not verify.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let invalid = |reason: String| Error::Envelope { reason };
        if bytes.len() > ENVELOPE_BYTES_MAX {
            return Err(invalid(format!("{} bytes exceeds the limit {ENVELOPE_BYTES_MAX}", bytes.len())));
        }
        let mut cursor = std::io::Cursor::new(bytes);
        let map: EnvelopeMap =
            ciborium::from_reader(&mut cursor).map_err(|e| invalid(format!("not an envelope: {e}")))?;
        if cursor.position() != bytes.len() as u64 {
            return Err(invalid("trailing bytes after the envelope".into()));
        }
        if map.alg != ALG_ML_DSA_87 {
            return Err(invalid(format!("unknown algorithm id {}", map.alg)));
        }
        let key_id: [u8; KEY_ID_BYTES] = map
            .key_id
            .as_slice()
            .try_into()
            .map_err(|_| invalid(format!("key_id must be {KEY_ID_BYTES} bytes")))?;
        let signature = Signature::from_bytes(&map.sig)?;
        Ok(Self { context: map.ctx, key_id: KeyId(key_id), payload: map.payload.into_vec(), signature })
    }

    /// The key id the envelope claims to be signed by (use it to pick the key).
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The context string the envelope claims.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// Checks context, signer and signature; returns the payload only if all hold.
    pub fn open(&self, expected: SigningContext, key: &PublicKey) -> Result<&[u8], Error> {
        if self.context != expected.as_str() {
            return Err(Error::Envelope {
                reason: format!("expected a {} object, found {:?}", expected.as_str(), self.context),
            });
        }
        if self.key_id != key.id() {
            return Err(Error::Envelope {
                reason: format!("signed by key {}, expected key {}", self.key_id, key.id()),
            });
        }
        key.verify(expected, &self.payload, &self.signature)?;
        Ok(&self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: SigningContext = SigningContext::KEY_ROTATION;

    #[test]
    fn sealed_envelope_opens_after_round_trip() {
        let key = SecretKey::generate();
        let bytes = Envelope::seal(CTX, b"payload".to_vec(), &key).to_cbor();
        let envelope = Envelope::from_cbor(&bytes).unwrap();
        assert_eq!(envelope.open(CTX, key.public_key()).unwrap(), b"payload");
    }

    #[test]
    fn wrong_context_or_key_or_payload_is_rejected() {
        let key = SecretKey::generate();
        let envelope = Envelope::seal(CTX, b"payload".to_vec(), &key);
        assert!(envelope.open(SigningContext::PACKAGE, key.public_key()).is_err());
        assert!(envelope.open(CTX, SecretKey::generate().public_key()).is_err());
        let mut bytes = envelope.to_cbor();
        // Flip a bit inside the payload bytes (they follow the "payload" key).
        let at = bytes.windows(7).position(|w| w == b"payload").unwrap() + 7 + 1;
        bytes[at + 2] ^= 1;
        let tampered = Envelope::from_cbor(&bytes).unwrap();
        assert!(matches!(tampered.open(CTX, key.public_key()), Err(Error::SignatureInvalid { .. })));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let key = SecretKey::generate();
        let mut bytes = Envelope::seal(CTX, vec![1, 2, 3], &key).to_cbor();
        bytes.push(0);
        assert!(Envelope::from_cbor(&bytes).is_err());
    }
}
