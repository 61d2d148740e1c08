//! Licensed content encryption (spec: escx-format.md §15): a random 32-byte content key
//! encrypts the payload's stored bytes with XChaCha20-Poly1305 in the STREAM construction
//! (Hoang, Reyhanitabar, Rogaway, Vizár 2015; `aead::stream`, 32-bit big-endian counter
//! and last-segment flag), 64 KiB segments, so a payload of any size decrypts as a stream
//! and truncation, reordering or a flipped byte fails authentication.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, Payload};
use zeroize::Zeroizing;

use crate::kem::{self, KemPublicKey, KemSecretKey};
use crate::sig::{KEY_ID_BYTES, KeyId};
use crate::{Error, FormatError};

/// Plaintext bytes per STREAM segment.
pub const SEGMENT_BYTES: usize = 64 * 1024;
/// Authentication tag per segment.
pub const TAG_BYTES: usize = 16;
/// The random nonce prefix at the start of the stored bytes (24 − 5 bytes of STREAM
/// counter and flag).
pub const NONCE_PREFIX_BYTES: usize = 19;
/// Associated data of every segment.
pub const SEGMENT_AAD: &[u8] = b"escx/payload/v1";
/// Content key length.
pub const CONTENT_KEY_BYTES: usize = 32;
/// Purpose (sealed-box associated data) of the content key sealed to the issuer in the
/// content-key section; the box is bound to [`ContentBinding::digest`].
pub const PURPOSE_CONTENT_KEY: &str = "escx/content-key/v2";
/// Version of the content-key section.
pub const CONTENT_KEY_SECTION_VERSION: u8 = 2;
/// Largest sealed box the content-key section may carry.
const SEALED_KEY_BYTES_MAX: usize = 8 * 1024;

/// What a sealed content key belongs to (escx-format.md §15.2): the package name and
/// version from its manifest and the table hash of its encrypted payload. A content-key
/// section copied into another package opens only with that package's binding, which
/// differs, so it does not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentBinding {
    /// Package name.
    pub name: crate::header::PackageName,
    /// Package version.
    pub version: String,
    /// BLAKE3 of the payload section's stored (encrypted) bytes, as in the table.
    pub payload_hash: [u8; 32],
}

impl ContentBinding {
    /// `derive_key("escx v1 content key binding", u16be(len(name)) || name ||
    /// u16be(len(version)) || version || payload_hash)`.
    pub fn digest(&self) -> [u8; 32] {
        let mut material = Vec::with_capacity(4 + self.name.len() + self.version.len() + 32);
        for text in [self.name.as_str(), self.version.as_str()] {
            // Names and versions are far below 64 KiB (manifest limits).
            material.extend_from_slice(&u16::try_from(text.len()).unwrap_or(u16::MAX).to_be_bytes());
            material.extend_from_slice(text.as_bytes());
        }
        material.extend_from_slice(&self.payload_hash);
        blake3::derive_key(crate::hash::CONTEXT_CONTENT_BINDING, &material)
    }
}

/// A content key; zeroized on drop, neither `Clone` nor printable.
pub struct ContentKey(Zeroizing<[u8; CONTENT_KEY_BYTES]>);

/// The only secret field is a `Zeroizing` buffer, scrubbed when the key is dropped.
impl zeroize::ZeroizeOnDrop for ContentKey {}

impl ContentKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, Error> {
        let mut key = Zeroizing::new([0u8; CONTENT_KEY_BYTES]);
        crate::keyfile::fill_random(&mut *key)?;
        Ok(Self(key))
    }

    /// A key from its bytes (e.g. opened from a sealed box).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let array: [u8; CONTENT_KEY_BYTES] = bytes.try_into().map_err(|_| Error::KeyLength {
            what: "content key",
            expected: CONTENT_KEY_BYTES,
            found: bytes.len(),
        })?;
        Ok(Self(Zeroizing::new(array)))
    }

    /// The key bytes, for sealing.
    pub fn as_bytes(&self) -> &[u8] {
        &*self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }

    /// `derive_key("escx v1 content key fingerprint", key)`: equal for equal keys, and
    /// reveals nothing else about the key.
    pub fn fingerprint(&self) -> [u8; 32] {
        blake3::derive_key(crate::hash::CONTEXT_CONTENT_FINGERPRINT, &*self.0)
    }
}

/// The content-key section (escx-format.md §15.2): the content key sealed to the license
/// issuer's ML-KEM-1024 key, bound to the package it encrypts, and that key's id so the
/// wrong issuer is named, not guessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentKeySection {
    /// Format version, 2.
    v: u8,
    /// Key id of the issuer KEM key the content key is sealed to.
    recipient: ByteBuf,
    /// `kem::seal_bound(recipient, "escx/content-key/v2", binding digest, key)`.
    sealed: ByteBuf,
}

impl ContentKeySection {
    /// Seals `key` to `recipient`, bound to `binding`.
    pub fn seal(key: &ContentKey, recipient: &KemPublicKey, binding: &ContentBinding) -> Result<Self, Error> {
        Ok(Self {
            v: CONTENT_KEY_SECTION_VERSION,
            recipient: ByteBuf::from(recipient.id().0.to_vec()),
            sealed: ByteBuf::from(kem::seal_bound(
                recipient,
                PURPOSE_CONTENT_KEY,
                &binding.digest(),
                key.as_bytes(),
            )?),
        })
    }

    /// Decodes the section's bytes and checks their shape (not the seal: only the issuer
    /// can open it).
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let invalid = |reason: String| FormatError::ContentKeyInvalid { reason };
        let section: Self = crate::cbor::decode_exact(bytes, "content-key section").map_err(invalid)?;
        if section.v != CONTENT_KEY_SECTION_VERSION {
            return Err(invalid(format!(
                "version {} (this build reads version {CONTENT_KEY_SECTION_VERSION}; version 1 keys are not \
                 bound to their package: re-pack with --encrypt-for)",
                section.v
            )));
        }
        if section.recipient.len() != KEY_ID_BYTES {
            return Err(invalid(format!(
                "recipient is {} bytes, not {KEY_ID_BYTES}",
                section.recipient.len()
            )));
        }
        if section.sealed.len() > SEALED_KEY_BYTES_MAX {
            return Err(invalid(format!("sealed key over {SEALED_KEY_BYTES_MAX} bytes")));
        }
        Ok(section)
    }

    /// The encoded section.
    pub fn encode(&self) -> Vec<u8> {
        crate::cbor::encode(self)
    }

    /// The recipient's key id.
    pub fn recipient(&self) -> KeyId {
        // Exactly KEY_ID_BYTES: checked by `decode`, set by `seal`.
        let mut id = [0u8; KEY_ID_BYTES];
        let n = self.recipient.len().min(KEY_ID_BYTES);
        id[..n].copy_from_slice(&self.recipient[..n]);
        KeyId(id)
    }

    /// The sealed box, for the issuer's store.
    pub fn sealed(&self) -> &[u8] {
        &self.sealed
    }

    /// Opens the content key with the issuer's KEM secret key, for the package described
    /// by `binding`; a section sealed for any other package does not open.
    pub fn open(&self, issuer: &KemSecretKey, binding: &ContentBinding) -> Result<ContentKey, Error> {
        if self.recipient() != issuer.public_key().id() {
            return Err(Error::Sealed {
                reason: format!(
                    "the content key is sealed to KEM key {}, not to this issuer's {}",
                    self.recipient(),
                    issuer.public_key().id()
                ),
            });
        }
        open_sealed(issuer, &self.sealed, binding)
    }
}

/// Opens a content key sealed (as in the content-key section) to `issuer` for `binding`.
pub fn open_sealed(
    issuer: &KemSecretKey,
    sealed: &[u8],
    binding: &ContentBinding,
) -> Result<ContentKey, Error> {
    let bytes =
        kem::open_bound(issuer, PURPOSE_CONTENT_KEY, &binding.digest(), sealed).map_err(|e| match e {
            Error::Sealed { .. } => Error::Sealed {
                reason: format!(
                    "the content key does not open for {} {} with this payload: it was sealed for \
                 another package (copied), or altered",
                    binding.name, binding.version
                ),
            },
            other => other,
        })?;
    ContentKey::from_bytes(&bytes)
}

/// Stored length of `plain` bytes once encrypted.
pub(crate) fn encrypted_length(plain: u64) -> u64 {
    let segments = plain.div_ceil(SEGMENT_BYTES as u64).max(1);
    NONCE_PREFIX_BYTES as u64 + plain + segments * TAG_BYTES as u64
}

/// Encrypts everything `reader` yields into `writer`; returns the bytes written.
pub fn encrypt<R: Read, W: Write>(key: &ContentKey, mut reader: R, mut writer: W) -> io::Result<u64> {
    let mut prefix = [0u8; NONCE_PREFIX_BYTES];
    crate::keyfile::fill_random(&mut prefix).map_err(|e| io::Error::other(e.to_string()))?;
    writer.write_all(&prefix)?;
    let mut written = NONCE_PREFIX_BYTES as u64;
    let mut encryptor = EncryptorBE32::from_aead(key.cipher(), (&prefix).into());
    let mut current = read_segment(&mut reader)?;
    loop {
        let next = read_segment(&mut reader)?;
        if next.is_empty() {
            let sealed = encryptor
                .encrypt_last(Payload { msg: &current, aad: SEGMENT_AAD })
                .map_err(|_| io::Error::other("encryption failed"))?;
            writer.write_all(&sealed)?;
            return Ok(written + sealed.len() as u64);
        }
        let sealed = encryptor
            .encrypt_next(Payload { msg: &current, aad: SEGMENT_AAD })
            .map_err(|_| io::Error::other("encryption failed"))?;
        writer.write_all(&sealed)?;
        written += sealed.len() as u64;
        current = next;
    }
}

fn read_segment<R: Read>(reader: &mut R) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut segment = Zeroizing::new(Vec::with_capacity(SEGMENT_BYTES));
    reader.take(SEGMENT_BYTES as u64).read_to_end(&mut segment)?;
    Ok(segment)
}

/// Decrypts stored bytes of known length as a stream. Any authentication failure
/// (altered, reordered, truncated or extended segments, wrong key) is an error tagged
/// `decryption-failed`.
pub struct DecryptReader<R> {
    inner: R,
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
    remaining: u64,
    plain: Zeroizing<Vec<u8>>,
    position: usize,
    section: &'static str,
}

impl<R: Read> DecryptReader<R> {
    /// Reads the nonce prefix and prepares to decrypt `stored_length - 19` further bytes.
    pub fn new(
        key: &ContentKey,
        mut inner: R,
        stored_length: u64,
        section: &'static str,
    ) -> io::Result<Self> {
        if stored_length < (NONCE_PREFIX_BYTES + TAG_BYTES) as u64 {
            return Err(failure(section));
        }
        let mut prefix = [0u8; NONCE_PREFIX_BYTES];
        inner.read_exact(&mut prefix).map_err(|_| failure(section))?;
        let decryptor = DecryptorBE32::from_aead(key.cipher(), (&prefix).into());
        Ok(Self {
            inner,
            decryptor: Some(decryptor),
            remaining: stored_length - NONCE_PREFIX_BYTES as u64,
            plain: Zeroizing::new(Vec::new()),
            position: 0,
            section,
        })
    }

    fn refill(&mut self) -> io::Result<()> {
        let Some(mut decryptor) = self.decryptor.take() else { return Ok(()) };
        let full = SEGMENT_BYTES + TAG_BYTES;
        let last = self.remaining <= full as u64;
        // At most `full`, so it fits.
        let length = usize::try_from(self.remaining.min(full as u64)).unwrap_or(full);
        let mut sealed = vec![0u8; length];
        self.inner.read_exact(&mut sealed).map_err(|_| failure(self.section))?;
        self.remaining -= length as u64;
        let payload = Payload { msg: &sealed, aad: SEGMENT_AAD };
        let plain = if last {
            decryptor.decrypt_last(payload)
        } else {
            let plain = decryptor.decrypt_next(payload);
            self.decryptor = Some(decryptor);
            plain
        }
        .map_err(|_| failure(self.section))?;
        if !last && plain.len() != SEGMENT_BYTES {
            return Err(failure(self.section));
        }
        self.plain = Zeroizing::new(plain);
        self.position = 0;
        Ok(())
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.plain.len() {
            if self.decryptor.is_none() {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.plain.len() - self.position);
        buf[..n].copy_from_slice(&self.plain[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

fn failure(section: &'static str) -> io::Error {
    crate::container::layer_format(crate::FormatError::DecryptionFailed { section })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(length: usize) {
        let key = ContentKey::generate().unwrap();
        let plain: Vec<u8> = (0..length).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let mut stored = Vec::new();
        let written = encrypt(&key, &plain[..], &mut stored).unwrap();
        assert_eq!(written, stored.len() as u64);
        assert_eq!(written, encrypted_length(length as u64));
        let mut out = Vec::new();
        DecryptReader::new(&key, &stored[..], written, "payload").unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn streams_of_every_shape_round_trip() {
        for length in [0, 1, SEGMENT_BYTES - 1, SEGMENT_BYTES, SEGMENT_BYTES + 1, 3 * SEGMENT_BYTES + 17] {
            round_trip(length);
        }
    }

    fn decrypt(key: &ContentKey, stored: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        DecryptReader::new(key, stored, stored.len() as u64, "payload")?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn flipped_bytes_truncation_and_wrong_keys_fail() {
        let key = ContentKey::generate().unwrap();
        let plain = vec![7u8; 2 * SEGMENT_BYTES + 5];
        let mut stored = Vec::new();
        encrypt(&key, &plain[..], &mut stored).unwrap();
        for at in [0, NONCE_PREFIX_BYTES, SEGMENT_BYTES, stored.len() - 1] {
            let mut flipped = stored.clone();
            flipped[at] ^= 1;
            assert!(decrypt(&key, &flipped).is_err(), "flip at {at} went unnoticed");
        }
        // Dropping the last segment: the new last segment was not sealed as last.
        let cut = NONCE_PREFIX_BYTES + 2 * (SEGMENT_BYTES + TAG_BYTES);
        assert!(decrypt(&key, &stored[..cut]).is_err());
        assert!(decrypt(&key, &stored[..stored.len() - 1]).is_err());
        assert!(decrypt(&ContentKey::generate().unwrap(), &stored).is_err());
        assert_eq!(decrypt(&key, &stored).unwrap(), plain);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// Any length round-trips; any single flipped bit anywhere is refused.
        #[test]
        fn any_length_round_trips_and_any_flip_is_refused(
            length in 0usize..(2 * SEGMENT_BYTES + 100),
            flip in proptest::prelude::any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let key = ContentKey::generate().unwrap();
            let plain: Vec<u8> = (0..length).map(|i| u8::try_from(i * 7 % 256).unwrap()).collect();
            let mut stored = Vec::new();
            encrypt(&key, &plain[..], &mut stored).unwrap();
            proptest::prop_assert_eq!(stored.len() as u64, encrypted_length(length as u64));
            proptest::prop_assert_eq!(decrypt(&key, &stored).unwrap(), plain);
            let at = flip.index(stored.len());
            stored[at] ^= 1 << bit;
            proptest::prop_assert!(decrypt(&key, &stored).is_err());
        }
    }
}
