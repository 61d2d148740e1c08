//! ML-DSA-87 (FIPS 204) keys and signatures (spec: escx-format.md §3, keys.md §1).
//!
//! Every signature escx makes uses the FIPS 204 *pure* signing mode with a context string
//! naming the object type ([`SigningContext`]), so a signature over one kind of object can
//! never be replayed as another. Key ids are the first 16 bytes of plain BLAKE3 over the
//! encoded public key.

use std::fmt;
use std::str::FromStr;

use pqcrypto_mldsa::mldsa87;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
use zeroize::Zeroizing;

use crate::Error;

/// Algorithm id of ML-DSA-87 in every escx structure that names an algorithm.
pub const ALG_ML_DSA_87: u16 = 1;
/// Text name of [`ALG_ML_DSA_87`] in key files and JSON output.
pub const ALG_ML_DSA_87_NAME: &str = "ml-dsa-87";
/// Encoded ML-DSA-87 public key length (FIPS 204 Table 2).
pub const PUBLIC_KEY_BYTES: usize = 2592;
/// Encoded ML-DSA-87 secret key length (FIPS 204 Table 2).
pub const SECRET_KEY_BYTES: usize = 4896;
/// ML-DSA-87 signature length (FIPS 204 Table 2).
pub const SIGNATURE_BYTES: usize = 4627;
/// Length of a [`KeyId`].
pub const KEY_ID_BYTES: usize = 16;

/// A FIPS 204 context string naming the type of the signed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningContext(&'static str);

impl SigningContext {
    /// The root of an `.escx` package (a signature block in the trailer).
    pub const PACKAGE: SigningContext = SigningContext("escx/package/v1");
    /// A key rotation statement: the old key endorses its successor.
    pub const KEY_ROTATION: SigningContext = SigningContext("escx/key-rotation/v1");
    /// The throw-away self-test signature made when a key pair is loaded; never stored.
    pub const SELF_TEST: SigningContext = SigningContext("escx/key-self-test/v1");

    /// A registry index (registry.md).
    pub const INDEX: SigningContext = SigningContext("escx/index/v1");

    /// Every context this crate signs under (later crates add theirs in their own specs).
    pub const ALL: &'static [SigningContext] =
        &[Self::PACKAGE, Self::KEY_ROTATION, Self::SELF_TEST, Self::INDEX];

    /// Defines a context for another escx crate. The string must follow the
    /// `escx/<object>/v<N>` pattern and be listed in that crate's spec.
    pub const fn new(context: &'static str) -> Self {
        Self(context)
    }

    /// The context string.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

/// First 16 bytes of BLAKE3 over an encoded public key; printed as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; KEY_ID_BYTES]);

impl KeyId {
    /// The key id of an encoded public key.
    pub fn of_public_key(public_key_bytes: &[u8]) -> Self {
        let hash = blake3::hash(public_key_bytes);
        let mut id = [0u8; KEY_ID_BYTES];
        id.copy_from_slice(&hash.as_bytes()[..KEY_ID_BYTES]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        let mut id = [0u8; KEY_ID_BYTES];
        hex::decode_to_slice(text, &mut id)
            .map_err(|_| Error::KeyIdSyntax { text: text.chars().take(64).collect() })?;
        Ok(Self(id))
    }
}

/// An ML-DSA-87 public key with its key id.
#[derive(Clone)]
pub struct PublicKey {
    key: mldsa87::PublicKey,
    id: KeyId,
}

impl PublicKey {
    /// Parses an encoded public key (exactly [`PUBLIC_KEY_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let key = mldsa87::PublicKey::from_bytes(bytes).map_err(|_| Error::KeyLength {
            what: "ML-DSA-87 public key",
            expected: PUBLIC_KEY_BYTES,
            found: bytes.len(),
        })?;
        Ok(Self { key, id: KeyId::of_public_key(bytes) })
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8] {
        self.key.as_bytes()
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Verifies `signature` over `message` under `context`.
    pub fn verify(
        &self,
        context: SigningContext,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), Error> {
        let detached = mldsa87::DetachedSignature::from_bytes(&signature.0)
            .map_err(|_| Error::SignatureInvalid { key_id: self.id })?;
        mldsa87::verify_detached_signature_ctx(&detached, message, context.as_str().as_bytes(), &self.key)
            .map_err(|_| Error::SignatureInvalid { key_id: self.id })
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

/// An ML-DSA-87 secret key and its public key.
///
/// The encoded secret lives in a zeroizing buffer and is only copied into the ML-DSA
/// implementation's own key type for the duration of one signature; see [`Self::sign`].
/// Deliberately neither `Clone` nor `Debug`-printing its contents.
pub struct SecretKey {
    secret: Zeroizing<Vec<u8>>,
    public: PublicKey,
}

/// The only secret field is a `Zeroizing` buffer, scrubbed when the key is dropped.
impl zeroize::ZeroizeOnDrop for SecretKey {}

impl SecretKey {
    /// Generates a fresh key pair from the operating system's randomness.
    pub fn generate() -> Self {
        let (public, mut secret) = mldsa87::keypair();
        let key = Self {
            secret: Zeroizing::new(secret.as_bytes().to_vec()),
            public: PublicKey { id: KeyId::of_public_key(public.as_bytes()), key: public },
        };
        scrub(&mut secret);
        key
    }

    /// Rebuilds a key pair from its encodings and checks that they belong together by
    /// signing and verifying a self-test message (about a millisecond), so a corrupted or
    /// mismatched key file is caught before it signs anything.
    pub fn from_parts(secret_bytes: Zeroizing<Vec<u8>>, public: PublicKey) -> Result<Self, Error> {
        if secret_bytes.len() != SECRET_KEY_BYTES {
            return Err(Error::KeyLength {
                what: "ML-DSA-87 secret key",
                expected: SECRET_KEY_BYTES,
                found: secret_bytes.len(),
            });
        }
        let key = Self { secret: secret_bytes, public };
        let message = key.public.id.0;
        let signature = key.sign(SigningContext::SELF_TEST, &message);
        key.public
            .verify(SigningContext::SELF_TEST, &message, &signature)
            .map_err(|_| Error::KeyMismatch { key_id: key.public.id })?;
        Ok(key)
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id of the public half.
    pub fn id(&self) -> KeyId {
        self.public.id
    }

    /// The encoded secret key, for sealing into a key file.
    pub(crate) fn secret_bytes(&self) -> &[u8] {
        &self.secret
    }

    /// A copy of the encoded secret key, for callers that store keys in their own sealed
    /// or access-controlled files (e.g. a license wallet). Zeroized on drop.
    pub fn export_secret(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.to_vec())
    }

    /// Signs `message` under `context` (hedged ML-DSA: fresh randomness per signature).
    pub fn sign(&self, context: SigningContext, message: &[u8]) -> Signature {
        // The length was checked when the key was built, so this cannot fail; if it somehow
        // did, signing with an all-zero key yields a signature that never verifies.
        let mut secret = mldsa87::SecretKey::from_bytes(&self.secret).unwrap_or_else(|_| zero_secret_key());
        let signature = mldsa87::detached_sign_ctx(message, context.as_str().as_bytes(), &secret);
        scrub(&mut secret);
        Signature(signature.as_bytes().to_vec())
    }
}

fn zero_secret_key() -> mldsa87::SecretKey {
    // `from_bytes` only fails on a wrong length, and this length is the right one.
    match mldsa87::SecretKey::from_bytes(&[0u8; SECRET_KEY_BYTES]) {
        Ok(key) => key,
        Err(_) => unreachable!("SECRET_KEY_BYTES is the ML-DSA-87 secret key length"),
    }
}

/// Overwrites the ML-DSA implementation's copy of a secret key.
///
/// `pqcrypto`'s key type is `Copy` and does not zeroize itself, and without `unsafe` we
/// cannot volatile-write into it; assigning a zero key and passing it through
/// `black_box` keeps the compiler from eliding the store. Copies the C code makes on its
/// own stack are out of our reach (threat model §"Secrets in memory").
fn scrub(secret: &mut mldsa87::SecretKey) {
    *secret = zero_secret_key();
    std::hint::black_box(secret);
}

/// An ML-DSA-87 signature (always [`SIGNATURE_BYTES`] long once parsed).
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(Vec<u8>);

impl Signature {
    /// Wraps encoded signature bytes, checking the length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != SIGNATURE_BYTES {
            return Err(Error::KeyLength {
                what: "ML-DSA-87 signature",
                expected: SIGNATURE_BYTES,
                found: bytes.len(),
            });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The encoded signature.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8.min(self.0.len())]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip_and_context_separation() {
        let key = SecretKey::generate();
        let signature = key.sign(SigningContext::PACKAGE, b"root");
        assert_eq!(signature.as_bytes().len(), SIGNATURE_BYTES);
        key.public_key().verify(SigningContext::PACKAGE, b"root", &signature).unwrap();
        // Same bytes under another object type must not verify.
        assert!(key.public_key().verify(SigningContext::KEY_ROTATION, b"root", &signature).is_err());
        assert!(key.public_key().verify(SigningContext::PACKAGE, b"roof", &signature).is_err());
    }

    #[test]
    fn key_id_is_truncated_blake3_of_public_key() {
        let key = SecretKey::generate();
        let full = blake3::hash(key.public_key().as_bytes());
        assert_eq!(key.id().0[..], full.as_bytes()[..16]);
        assert_eq!(key.id().to_string().parse::<KeyId>().unwrap(), key.id());
    }

    #[test]
    fn mismatched_secret_and_public_key_is_rejected() {
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        let err = SecretKey::from_parts(Zeroizing::new(a.secret_bytes().to_vec()), b.public_key().clone())
            .err()
            .unwrap();
        assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    }
}
