//! The signature trailer (escx-format.md §7): 1..=16 signature blocks after the body.
//!
//! ```text
//! block  magic "ESIG" | alg u16 | reserved u16 (0) | key_id [16] | signed_at u64
//!        | sig_length u32 | signature [sig_length]
//! ```
//!
//! Each block signs `root || prefix`, where prefix is the block's first 36 bytes, so every
//! field of the block (including the key id and timestamp) is covered by its own signature.

use crate::FormatError;
use crate::hash::HASH_BYTES;
use crate::sig::{ALG_ML_DSA_87, KEY_ID_BYTES, KeyId, SIGNATURE_BYTES, SecretKey, Signature, SigningContext};

/// Magic at the start of every signature block.
pub const BLOCK_MAGIC: [u8; 4] = *b"ESIG";
/// Length of a block's fixed prefix (magic .. sig_length).
pub const BLOCK_PREFIX_BYTES: usize = 36;
/// Length of a complete ML-DSA-87 block.
pub const SIGNATURE_BLOCK_BYTES: usize = BLOCK_PREFIX_BYTES + SIGNATURE_BYTES;
/// Most blocks a trailer may hold.
pub const SIGNATURES_MAX: usize = 16;
/// [`SIGNATURE_BYTES`] as the block prefix stores it.
const SIGNATURE_LENGTH: u32 = 4627;
const _: () = assert!(SIGNATURE_LENGTH as usize == SIGNATURE_BYTES);

/// One signature over the package root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureBlock {
    /// Algorithm id ([`ALG_ML_DSA_87`]).
    pub alg: u16,
    /// Signer's key id.
    pub key_id: KeyId,
    /// When the signer says it signed (Unix seconds; informational, not trusted).
    pub signed_at: crate::UnixSeconds,
    /// The ML-DSA-87 signature.
    pub signature: Signature,
}

impl SignatureBlock {
    /// Signs `root` with `key`.
    pub fn sign(root: &[u8; HASH_BYTES], key: &SecretKey, signed_at: crate::UnixSeconds) -> Self {
        let prefix = encode_prefix(ALG_ML_DSA_87, key.id(), signed_at);
        let signature = key.sign(SigningContext::PACKAGE, &signed_message(root, &prefix));
        Self { alg: ALG_ML_DSA_87, key_id: key.id(), signed_at, signature }
    }

    /// The bytes the block's signature covers: `root || prefix` (68 bytes).
    pub fn message(&self, root: &[u8; HASH_BYTES]) -> Vec<u8> {
        signed_message(root, &encode_prefix(self.alg, self.key_id, self.signed_at))
    }

    /// Encodes the block.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNATURE_BLOCK_BYTES);
        out.extend_from_slice(&encode_prefix(self.alg, self.key_id, self.signed_at));
        out.extend_from_slice(self.signature.as_bytes());
        out
    }

    /// Decodes a whole trailer. The caller has already bounded its length by
    /// `SIGNATURES_MAX * SIGNATURE_BLOCK_BYTES`.
    pub(crate) fn decode_trailer(bytes: &[u8], trailer_offset: u64) -> Result<Vec<Self>, FormatError> {
        if bytes.is_empty() {
            return Err(FormatError::Unsigned);
        }
        let mut blocks: Vec<Self> = Vec::new();
        let mut cursor = super::cursor::Cursor::new(bytes);
        while cursor.remaining() > 0 {
            let index = blocks.len();
            if index == SIGNATURES_MAX {
                return Err(FormatError::TooManySignatures { max: SIGNATURES_MAX });
            }
            let block_offset = trailer_offset + cursor.position() as u64;
            let truncated = |needed: usize| FormatError::Truncated {
                what: "signature block",
                offset: block_offset,
                needed_bytes: needed as u64,
                file_bytes: trailer_offset + bytes.len() as u64,
            };
            if cursor.remaining() < BLOCK_PREFIX_BYTES {
                return Err(truncated(BLOCK_PREFIX_BYTES));
            }
            let block_error = |reason: String| FormatError::SignatureBlock { index, reason };
            let short = || truncated(BLOCK_PREFIX_BYTES);
            let magic: [u8; 4] = cursor.array().ok_or_else(short)?;
            if magic != BLOCK_MAGIC {
                return Err(block_error(format!(
                    "it starts with the bytes {} where a signature block starts with 45534947 (\"ESIG\")",
                    hex::encode(magic)
                )));
            }
            let alg = cursor.u16_le().ok_or_else(short)?;
            let reserved = cursor.u16_le().ok_or_else(short)?;
            let key_id: [u8; KEY_ID_BYTES] = cursor.array().ok_or_else(short)?;
            let signed_at = crate::UnixSeconds(cursor.u64_le().ok_or_else(short)?);
            let sig_length = cursor.u32_le().ok_or_else(short)?;
            if alg != ALG_ML_DSA_87 {
                return Err(block_error(format!("unknown algorithm id {alg}")));
            }
            if reserved != 0 {
                return Err(block_error(format!("reserved field is {reserved}, must be 0")));
            }
            if sig_length != SIGNATURE_LENGTH {
                return Err(block_error(format!(
                    "signature length {sig_length}, ML-DSA-87 needs {SIGNATURE_BYTES}"
                )));
            }
            let Some(signature) = cursor.slice(SIGNATURE_BYTES) else {
                return Err(truncated(SIGNATURE_BLOCK_BYTES));
            };
            let key_id = KeyId(key_id);
            if blocks.iter().any(|b| b.key_id == key_id) {
                return Err(FormatError::DuplicateSigner { key_id });
            }
            let signature = Signature::from_bytes(signature).map_err(|e| block_error(e.to_string()))?;
            blocks.push(Self { alg, key_id, signed_at, signature });
        }
        Ok(blocks)
    }
}

fn encode_prefix(alg: u16, key_id: KeyId, signed_at: crate::UnixSeconds) -> [u8; BLOCK_PREFIX_BYTES] {
    let mut prefix = [0u8; BLOCK_PREFIX_BYTES];
    prefix[0..4].copy_from_slice(&BLOCK_MAGIC);
    prefix[4..6].copy_from_slice(&alg.to_le_bytes());
    // prefix[6..8]: reserved, zero.
    prefix[8..24].copy_from_slice(&key_id.0);
    prefix[24..32].copy_from_slice(&signed_at.0.to_le_bytes());
    prefix[32..36].copy_from_slice(&SIGNATURE_LENGTH.to_le_bytes());
    prefix
}

fn signed_message(root: &[u8; HASH_BYTES], prefix: &[u8; BLOCK_PREFIX_BYTES]) -> Vec<u8> {
    let mut message = Vec::with_capacity(HASH_BYTES + BLOCK_PREFIX_BYTES);
    message.extend_from_slice(root);
    message.extend_from_slice(prefix);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trips_and_covers_every_prefix_field() {
        let key = SecretKey::generate();
        let root = [9u8; 32];
        let block = SignatureBlock::sign(&root, &key, crate::UnixSeconds(1_700_000_000));
        let bytes = block.encode();
        assert_eq!(bytes.len(), SIGNATURE_BLOCK_BYTES);
        let decoded = SignatureBlock::decode_trailer(&bytes, 0).unwrap();
        assert_eq!(decoded, vec![block.clone()]);
        key.public_key().verify(SigningContext::PACKAGE, &block.message(&root), &block.signature).unwrap();
        // Changing signed_at changes the message, so the signature no longer verifies.
        let moved = SignatureBlock { signed_at: crate::UnixSeconds(1_700_000_001), ..block };
        assert!(
            key.public_key()
                .verify(SigningContext::PACKAGE, &moved.message(&root), &moved.signature)
                .is_err()
        );
    }

    #[test]
    fn malformed_trailers_are_named() {
        let key = SecretKey::generate();
        let bytes = SignatureBlock::sign(&[0; 32], &key, crate::UnixSeconds(0)).encode();
        assert!(matches!(SignatureBlock::decode_trailer(&[], 0), Err(FormatError::Unsigned)));
        assert!(matches!(
            SignatureBlock::decode_trailer(&bytes[..100], 0),
            Err(FormatError::Truncated { .. })
        ));
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        assert!(matches!(
            SignatureBlock::decode_trailer(&twice, 0),
            Err(FormatError::DuplicateSigner { .. })
        ));
        let mut bad_alg = bytes.clone();
        bad_alg[4] = 9;
        assert!(matches!(
            SignatureBlock::decode_trailer(&bad_alg, 0),
            Err(FormatError::SignatureBlock { .. })
        ));
    }
}
