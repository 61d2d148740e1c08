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

/// What one signature adds to an envelope's encoding beyond its payload: the signature,
/// key id, algorithm, context and the CBOR framing (an allocation hint, not a limit).
const SIGNATURE_OVERHEAD_BYTES: usize = crate::sig::SIGNATURE_BYTES + KEY_ID_BYTES + 128;
/// The CBOR framing of a multi-signature envelope around its signatures.
const MULTI_FRAMING_BYTES: usize = 64;

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
        let mut out = Vec::with_capacity(self.payload.len() + SIGNATURE_OVERHEAD_BYTES);
        crate::cbor::encode_into(&map, &mut out);
        out
    }

    /// Parses an envelope's CBOR (shape, lengths, algorithm); does not verify.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let invalid = |reason: String| Error::Envelope { reason };
        if bytes.len() > ENVELOPE_BYTES_MAX {
            return Err(invalid(format!("{} bytes exceeds the limit {ENVELOPE_BYTES_MAX}", bytes.len())));
        }
        let map: EnvelopeMap = crate::cbor::decode_exact(bytes, "envelope").map_err(invalid)?;
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

    /// The payload before its signature is checked: only for learning which key to check
    /// it with (e.g. a self-signed bundle names its own key); trust it only after
    /// [`Self::open`].
    pub fn payload_unverified(&self) -> &[u8] {
        &self.payload
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

/// Most signatures on one [`MultiEnvelope`].
pub const MULTI_SIGNATURES_MAX: usize = 16;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MultiEnvelopeMap {
    ctx: String,
    payload: ByteBuf,
    signatures: Vec<SignatureMap>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureMap {
    alg: u16,
    key_id: ByteBuf,
    sig: ByteBuf,
}

/// A payload signed by several keys (escx-format.md §9.1), for objects that need k-of-n
/// signatures such as the registry index. Every signature is ML-DSA-87 over the payload
/// bytes as they appear, under the envelope's context.
#[derive(Debug, Clone)]
pub struct MultiEnvelope {
    context: String,
    payload: Vec<u8>,
    signatures: Vec<(KeyId, Signature)>,
}

impl MultiEnvelope {
    /// Signs `payload` under `context` with every key.
    pub fn seal(context: SigningContext, payload: Vec<u8>, keys: &[&SecretKey]) -> Self {
        let signatures = keys.iter().map(|k| (k.id(), k.sign(context, &payload))).collect();
        Self { context: context.as_str().to_owned(), payload, signatures }
    }

    /// The canonical CBOR encoding: `{ctx, payload, signatures: [{alg, key_id, sig}]}`.
    pub fn to_cbor(&self) -> Vec<u8> {
        let map = MultiEnvelopeMap {
            ctx: self.context.clone(),
            payload: ByteBuf::from(self.payload.clone()),
            signatures: self
                .signatures
                .iter()
                .map(|(id, sig)| SignatureMap {
                    alg: ALG_ML_DSA_87,
                    key_id: ByteBuf::from(id.0.to_vec()),
                    sig: ByteBuf::from(sig.as_bytes().to_vec()),
                })
                .collect(),
        };
        let mut out = Vec::with_capacity(
            self.payload.len() + self.signatures.len() * SIGNATURE_OVERHEAD_BYTES + MULTI_FRAMING_BYTES,
        );
        crate::cbor::encode_into(&map, &mut out);
        out
    }

    /// Parses the CBOR (shape, lengths, algorithm, no duplicate signers); does not verify.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let invalid = |reason: String| Error::Envelope { reason };
        if bytes.len() > ENVELOPE_BYTES_MAX {
            return Err(invalid(format!("{} bytes exceeds the limit {ENVELOPE_BYTES_MAX}", bytes.len())));
        }
        let map: MultiEnvelopeMap = crate::cbor::decode_exact(bytes, "signed document").map_err(invalid)?;
        if map.signatures.is_empty() || map.signatures.len() > MULTI_SIGNATURES_MAX {
            return Err(invalid(format!(
                "needs 1 to {MULTI_SIGNATURES_MAX} signatures, found {}",
                map.signatures.len()
            )));
        }
        let mut signatures: Vec<(KeyId, Signature)> = Vec::new();
        for entry in map.signatures {
            if entry.alg != ALG_ML_DSA_87 {
                return Err(invalid(format!("unknown algorithm id {}", entry.alg)));
            }
            let id: [u8; KEY_ID_BYTES] = entry
                .key_id
                .as_slice()
                .try_into()
                .map_err(|_| invalid(format!("key_id must be {KEY_ID_BYTES} bytes")))?;
            let id = KeyId(id);
            if signatures.iter().any(|(seen, _)| *seen == id) {
                return Err(invalid(format!("key {id} signed twice")));
            }
            signatures.push((id, Signature::from_bytes(&entry.sig)?));
        }
        Ok(Self { context: map.ctx, payload: map.payload.into_vec(), signatures })
    }

    /// The payload, before any signature is checked (for inspection only).
    pub fn payload_unverified(&self) -> &[u8] {
        &self.payload
    }

    /// Key ids of all signatures, verified or not.
    pub fn signers(&self) -> Vec<KeyId> {
        self.signatures.iter().map(|(id, _)| *id).collect()
    }

    /// Checks the context and every signature by a key `known` returns; returns the key ids
    /// whose signatures verified. A known key's bad signature is an error, never skipped;
    /// unknown keys are ignored. The caller decides whether the signers are enough.
    pub fn verified_signers<'k>(
        &self,
        expected: SigningContext,
        known: impl Fn(KeyId) -> Option<&'k PublicKey>,
    ) -> Result<Vec<KeyId>, Error> {
        if self.context != expected.as_str() {
            return Err(Error::Envelope {
                reason: format!("expected a {} document, found {:?}", expected.as_str(), self.context),
            });
        }
        let mut valid = Vec::new();
        for (id, signature) in &self.signatures {
            if let Some(key) = known(*id) {
                key.verify(expected, &self.payload, signature)?;
                valid.push(*id);
            }
        }
        Ok(valid)
    }
}

#[cfg(test)]
mod multi_tests {
    use super::*;

    #[test]
    fn every_known_signature_is_checked() {
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        let ctx = SigningContext::KEY_ROTATION;
        let bytes = MultiEnvelope::seal(ctx, b"index".to_vec(), &[&a, &b]).to_cbor();
        let envelope = MultiEnvelope::from_cbor(&bytes).unwrap();
        let both = envelope
            .verified_signers(ctx, |id| [a.public_key(), b.public_key()].into_iter().find(|k| k.id() == id))
            .unwrap();
        assert_eq!(both, vec![a.id(), b.id()]);
        let only_a = envelope.verified_signers(ctx, |id| (id == a.id()).then(|| a.public_key())).unwrap();
        assert_eq!(only_a, vec![a.id()]);
        assert!(envelope.verified_signers(SigningContext::PACKAGE, |_| Some(a.public_key())).is_err());
    }
}
