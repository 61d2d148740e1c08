//! ML-KEM-1024 (FIPS 203) key encapsulation and sealed boxes (spec: escx-format.md §14).
//!
//! A sealed box carries a payload to the holder of an ML-KEM secret key: a fresh
//! encapsulation gives a 32-byte shared secret, `derive_key("escx v1 sealed box key",
//! shared || BLAKE3(recipient public key) || kem ciphertext)` turns it into an
//! XChaCha20-Poly1305 key, and the box's purpose (a context string) is the associated
//! data, so a box made for one purpose never opens as another.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use pqcrypto_mlkem::mlkem1024;
use pqcrypto_traits::kem::{Ciphertext as _, PublicKey as _, SecretKey as _, SharedSecret as _};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::Error;
use crate::sig::KeyId;

/// Encoded ML-KEM-1024 public key length (FIPS 203).
pub const KEM_PUBLIC_KEY_BYTES: usize = 1568;
/// Encoded ML-KEM-1024 secret key length.
pub const KEM_SECRET_KEY_BYTES: usize = 3168;
/// ML-KEM-1024 ciphertext length.
pub const KEM_CIPHERTEXT_BYTES: usize = 1568;
/// Where an ML-KEM-1024 secret key holds its public key (FIPS 203: after `dk_pke`, 384·k
/// bytes with k = 4).
const EMBEDDED_PUBLIC_KEY_OFFSET: usize = 1536;
/// XChaCha20-Poly1305 nonce length.
pub const NONCE_BYTES: usize = 24;
/// Largest sealed payload.
pub const SEALED_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// An ML-KEM-1024 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KemPublicKey({})", self.id())
    }
}

impl KemPublicKey {
    /// Parses an encoded key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        mlkem1024::PublicKey::from_bytes(bytes).map_err(|_| Error::KeyLength {
            what: "ML-KEM-1024 public key",
            expected: KEM_PUBLIC_KEY_BYTES,
            found: bytes.len(),
        })?;
        Ok(Self { bytes: bytes.to_vec() })
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// First 16 bytes of BLAKE3 over the encoded key.
    pub fn id(&self) -> KeyId {
        KeyId::of_public_key(&self.bytes)
    }
}

/// An ML-KEM-1024 secret key with its public key. Not `Clone`; zeroized on drop.
pub struct KemSecretKey {
    secret: Zeroizing<Vec<u8>>,
    public: KemPublicKey,
}

/// The only secret field is a `Zeroizing` buffer, scrubbed when the key is dropped.
impl zeroize::ZeroizeOnDrop for KemSecretKey {}

impl KemSecretKey {
    /// A fresh key pair.
    pub fn generate() -> Self {
        let (public, secret) = mlkem1024::keypair();
        Self {
            secret: Zeroizing::new(secret.as_bytes().to_vec()),
            public: KemPublicKey { bytes: public.as_bytes().to_vec() },
        }
    }

    /// Rebuilds a key pair from stored encodings, checking that they belong together: an
    /// ML-KEM-1024 decapsulation key embeds its encapsulation key at bytes 1536..3104
    /// (FIPS 203 §7.1, `dk = dk_pke || ek || H(ek) || z`), which must equal `public`, and a
    /// fresh encapsulation to `public` must decapsulate to the same secret (so a damaged
    /// `dk_pke` is caught too). A mismatch is `key-mismatch`.
    pub fn from_parts(secret: Zeroizing<Vec<u8>>, public: KemPublicKey) -> Result<Self, Error> {
        if secret.len() != KEM_SECRET_KEY_BYTES {
            return Err(Error::KeyLength {
                what: "ML-KEM-1024 secret key",
                expected: KEM_SECRET_KEY_BYTES,
                found: secret.len(),
            });
        }
        let embedded = &secret[EMBEDDED_PUBLIC_KEY_OFFSET..EMBEDDED_PUBLIC_KEY_OFFSET + KEM_PUBLIC_KEY_BYTES];
        let mismatch = || Error::KeyMismatch { key_id: public.id() };
        if embedded != public.as_bytes() {
            return Err(mismatch());
        }
        let pk = mlkem1024::PublicKey::from_bytes(public.as_bytes()).map_err(|_| mismatch())?;
        let (shared, ct) = mlkem1024::encapsulate(&pk);
        let key = Self { secret, public };
        if key.decapsulate(ct.as_bytes())?[..] != shared.as_bytes()[..] {
            return Err(Error::KeyMismatch { key_id: key.public.id() });
        }
        Ok(key)
    }

    /// The public half.
    pub fn public_key(&self) -> &KemPublicKey {
        &self.public
    }

    /// The encoded secret key, for storage.
    pub fn secret_bytes(&self) -> &[u8] {
        &self.secret
    }

    fn decapsulate(&self, ciphertext: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
        let ct = mlkem1024::Ciphertext::from_bytes(ciphertext)
            .map_err(|_| Error::Sealed { reason: "KEM ciphertext has the wrong length".into() })?;
        let sk = mlkem1024::SecretKey::from_bytes(&self.secret)
            .map_err(|_| Error::Sealed { reason: "corrupt ML-KEM secret key".into() })?;
        let shared = mlkem1024::decapsulate(&ct, &sk);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(shared.as_bytes());
        Ok(out)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedMap {
    ctx: String,
    kem_ct: ByteBuf,
    nonce: ByteBuf,
    ciphertext: ByteBuf,
}

fn box_key(shared: &[u8; 32], recipient: &KemPublicKey, kem_ct: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut material = Zeroizing::new(Vec::with_capacity(32 + 32 + kem_ct.len()));
    material.extend_from_slice(shared);
    material.extend_from_slice(blake3::hash(recipient.as_bytes()).as_bytes());
    material.extend_from_slice(kem_ct);
    Zeroizing::new(blake3::derive_key(crate::hash::CONTEXT_SEALED_BOX, &material))
}

/// Seals `payload` to `recipient` for `purpose` (a context string such as
/// `escx/redeem-request/v1`). Returns the CBOR-encoded box.
pub fn seal(recipient: &KemPublicKey, purpose: &str, payload: &[u8]) -> Result<Vec<u8>, Error> {
    seal_bound(recipient, purpose, &[], payload)
}

/// [`seal`] with `binding` (a fixed-length value the purpose defines, such as the digest
/// of what a content key belongs to) appended to the associated data: the box then opens
/// only with the same binding, so it cannot be moved to another context (escx-format.md
/// §14). The binding is not stored in the box: the opener supplies it.
pub fn seal_bound(
    recipient: &KemPublicKey,
    purpose: &str,
    binding: &[u8],
    payload: &[u8],
) -> Result<Vec<u8>, Error> {
    if payload.len() > SEALED_PAYLOAD_BYTES_MAX {
        return Err(Error::Sealed { reason: format!("payload over {SEALED_PAYLOAD_BYTES_MAX} bytes") });
    }
    let pk = mlkem1024::PublicKey::from_bytes(recipient.as_bytes())
        .map_err(|_| Error::Sealed { reason: "bad recipient key".into() })?;
    let (shared, ct) = mlkem1024::encapsulate(&pk);
    let mut shared_bytes = Zeroizing::new([0u8; 32]);
    shared_bytes.copy_from_slice(shared.as_bytes());
    // pqcrypto's `SharedSecret` is a `Copy` array without zeroize; only our copy can be
    // scrubbed (keys.md §4).
    let key = box_key(&shared_bytes, recipient, ct.as_bytes());
    let mut nonce = [0u8; NONCE_BYTES];
    crate::keyfile::fill_random(&mut nonce)?;
    let aad = associated_data(purpose, binding);
    let ciphertext = XChaCha20Poly1305::new((&*key).into())
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: payload, aad: &aad })
        .map_err(|_| Error::Sealed { reason: "encryption failed".into() })?;
    Ok(crate::cbor::encode(&SealedMap {
        ctx: purpose.to_owned(),
        kem_ct: ByteBuf::from(ct.as_bytes().to_vec()),
        nonce: ByteBuf::from(nonce.to_vec()),
        ciphertext: ByteBuf::from(ciphertext),
    }))
}

/// The AEAD's associated data: the purpose's UTF-8 bytes, then the binding (if any).
/// The purpose is compared for equality before opening and each purpose fixes its
/// binding's length, so the concatenation is unambiguous.
fn associated_data(purpose: &str, binding: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(purpose.len() + binding.len());
    aad.extend_from_slice(purpose.as_bytes());
    aad.extend_from_slice(binding);
    aad
}

/// Opens a box sealed to `recipient` for `purpose`.
pub fn open(recipient: &KemSecretKey, purpose: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    open_bound(recipient, purpose, &[], sealed)
}

/// Opens a box made by [`seal_bound`] with the same `binding`.
pub fn open_bound(
    recipient: &KemSecretKey,
    purpose: &str,
    binding: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let fail = |reason: &str| Error::Sealed { reason: reason.to_owned() };
    if sealed.len() > SEALED_PAYLOAD_BYTES_MAX + 4096 {
        return Err(fail("sealed box too large"));
    }
    let map: SealedMap =
        crate::cbor::decode_exact(sealed, "sealed box").map_err(|reason| Error::Sealed { reason })?;
    if map.ctx != purpose {
        return Err(Error::Sealed { reason: format!("sealed for {:?}, expected {purpose:?}", map.ctx) });
    }
    if map.kem_ct.len() != KEM_CIPHERTEXT_BYTES || map.nonce.len() != NONCE_BYTES {
        return Err(fail("KEM ciphertext or nonce has the wrong length"));
    }
    let shared = recipient.decapsulate(&map.kem_ct)?;
    let key = box_key(&shared, recipient.public_key(), &map.kem_ct);
    let aad = associated_data(purpose, binding);
    let plaintext = XChaCha20Poly1305::new((&*key).into())
        .decrypt(XNonce::from_slice(&map.nonce), Payload { msg: &map.ciphertext, aad: &aad })
        .map_err(|_| {
            if binding.is_empty() {
                fail("does not open: not sealed to this key, or altered")
            } else {
                fail("does not open: not sealed to this key, sealed for something else, or altered")
            }
        })?;
    Ok(Zeroizing::new(plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fault as _;

    #[test]
    fn from_parts_refuses_a_secret_key_of_another_public_key() {
        let alice = KemSecretKey::generate();
        let bob = KemSecretKey::generate();
        let secret = || Zeroizing::new(alice.secret_bytes().to_vec());
        KemSecretKey::from_parts(secret(), alice.public_key().clone()).unwrap();
        let err = KemSecretKey::from_parts(secret(), bob.public_key().clone()).err().unwrap();
        assert_eq!(err.code(), "key-mismatch");
        // A damaged decapsulation part with the right embedded public key is caught by the
        // encapsulation round trip.
        let mut damaged = secret();
        damaged[10] ^= 0xff;
        let err = KemSecretKey::from_parts(damaged, alice.public_key().clone()).err().unwrap();
        assert_eq!(err.code(), "key-mismatch");
    }

    #[test]
    fn bound_boxes_open_only_with_their_binding() {
        let alice = KemSecretKey::generate();
        let sealed = seal_bound(alice.public_key(), "escx/test/v1", &[1; 32], b"secret").unwrap();
        assert_eq!(&open_bound(&alice, "escx/test/v1", &[1; 32], &sealed).unwrap()[..], b"secret");
        assert!(open_bound(&alice, "escx/test/v1", &[2; 32], &sealed).is_err());
        assert!(open(&alice, "escx/test/v1", &sealed).is_err(), "the binding is not optional");
    }

    #[test]
    fn sealed_box_opens_only_for_its_recipient_and_purpose() {
        let alice = KemSecretKey::generate();
        let bob = KemSecretKey::generate();
        let sealed = seal(alice.public_key(), "escx/test/v1", b"secret").unwrap();
        assert_eq!(&open(&alice, "escx/test/v1", &sealed).unwrap()[..], b"secret");
        assert!(open(&bob, "escx/test/v1", &sealed).is_err());
        assert!(open(&alice, "escx/other/v1", &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(open(&alice, "escx/test/v1", &tampered).is_err());
    }
}
