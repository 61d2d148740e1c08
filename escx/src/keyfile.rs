//! Key files (spec: keys.md).
//!
//! Both files are text: `#` comment lines, then one data line. A public key's data line is
//! `escx-pk-v1:ml-dsa-87:<base64>` and can be pasted as-is into a trust policy. A secret
//! key's data line is `escx-sk-v1:<base64 of a CBOR map>`; the map either holds the secret
//! in clear (`kdf = "none"`) or sealed with XChaCha20-Poly1305 under a key derived from a
//! passphrase with Argon2id and then `derive_key("escx v1 secret key file seal", ..)`.
//! Secret key files are written with mode 0600.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::Error;
use crate::fsutil::{MODE_PUBLIC, MODE_SECRET, write_atomic};
use crate::hash::CONTEXT_KEY_FILE_SEAL;
use crate::sig::{ALG_ML_DSA_87_NAME, PublicKey, SecretKey};

/// Data-line prefix of a public key.
pub const PUBLIC_KEY_PREFIX: &str = "escx-pk-v1:ml-dsa-87:";
/// Data-line prefix of a secret key.
pub const SECRET_KEY_PREFIX: &str = "escx-sk-v1:";
/// Largest key file read (a sealed ML-DSA-87 key is about 10 KiB).
pub const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Environment variable that supplies the passphrase to scripts.
pub const PASSPHRASE_ENV: &str = "ESCX_PASSPHRASE";

const SALT_BYTES: usize = 16;
const NONCE_BYTES: usize = 24;
const SEAL_KEY_BYTES: usize = 32;

/// Argon2id cost parameters for sealing a secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Argon2Params {
    /// The parameters new key files use: 64 MiB, 3 passes, 1 lane (RFC 9106 §4, second
    /// recommended option, with one lane so the cost does not depend on the core count).
    pub const DEFAULT: Argon2Params = Argon2Params { m_cost_kib: 64 * 1024, t_cost: 3, p_cost: 1 };
    /// Upper bounds accepted when reading, so a crafted key file cannot make the reader
    /// allocate or spin without limit.
    pub const M_COST_KIB_MAX: u32 = 2 * 1024 * 1024;
    /// See [`Self::M_COST_KIB_MAX`].
    pub const T_COST_MAX: u32 = 16;
    /// See [`Self::M_COST_KIB_MAX`].
    pub const P_COST_MAX: u32 = 16;
}

/// How a new secret key file is protected.
pub enum Protection {
    /// Sealed with this passphrase.
    Passphrase(Zeroizing<String>, Argon2Params),
    /// Stored in clear (file mode 0600 is then its only protection).
    Unencrypted,
}

/// The CBOR map inside a secret key file's data line (keys.md §3).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyMap {
    v: u8,
    alg: String,
    public_key: ByteBuf,
    kdf: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_key: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m_cost_kib: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t_cost: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p_cost: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    salt: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ciphertext: Option<ByteBuf>,
}

impl Drop for SecretKeyMap {
    fn drop(&mut self) {
        if let Some(secret) = self.secret_key.as_mut() {
            zeroize::Zeroize::zeroize(secret.as_mut_slice());
        }
    }
}

/// The text of a public key file.
pub fn public_key_text(key: &PublicKey) -> String {
    format!(
        "# escx public key ({ALG_ML_DSA_87_NAME}), key id {}\n{PUBLIC_KEY_PREFIX}{}\n",
        key.id(),
        BASE64.encode(key.as_bytes())
    )
}

/// Why a text is not a public key (code `key-file-invalid`): the message says what is
/// wrong; the caller names where the text came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyTextError(pub String);

impl crate::Fault for KeyTextError {
    fn code(&self) -> &'static str {
        "key-file-invalid"
    }

    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Input
    }
}

/// Parses a public key from a key file's text or from a bare `escx-pk-v1:` string.
pub fn parse_public_key(text: &str) -> Result<PublicKey, KeyTextError> {
    parse_public_key_text(text).map_err(KeyTextError)
}

fn parse_public_key_text(text: &str) -> Result<PublicKey, String> {
    let line = data_line(text)?;
    let encoded = line.strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(|| {
        if line.starts_with(SECRET_KEY_PREFIX) {
            "this is a secret key; give the .pub file instead".to_owned()
        } else {
            format!("expected a line starting with {PUBLIC_KEY_PREFIX:?}")
        }
    })?;
    let bytes = BASE64.decode(encoded).map_err(|e| format!("invalid base64: {e}"))?;
    PublicKey::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// Reads a public key file.
pub fn read_public_key(path: &Path) -> Result<PublicKey, Error> {
    let text = read_small_text(path)?;
    parse_public_key(&text).map_err(|e| Error::KeyFile { path: path.into(), reason: e.0 })
}

/// Writes a public key file (mode 0644).
pub fn write_public_key(path: &Path, key: &PublicKey, overwrite: bool) -> Result<(), Error> {
    write_atomic(path, public_key_text(key).as_bytes(), MODE_PUBLIC, overwrite)
}

/// The text of a secret key file.
pub fn secret_key_text(key: &SecretKey, protection: &Protection) -> Result<Zeroizing<String>, Error> {
    let public = key.public_key().as_bytes();
    sealed_text(
        ALG_ML_DSA_87_NAME,
        public,
        public,
        key.secret_bytes(),
        &format!("escx secret key ({ALG_ML_DSA_87_NAME}), key id {}", key.id()),
        protection,
    )
}

/// A secret file's text (keys.md §3): `secret` under `alg`, with `public` in clear, sealed
/// (when `protection` says so) with `aad` as associated data.
fn sealed_text(
    alg: &str,
    public: &[u8],
    aad: &[u8],
    secret: &[u8],
    title: &str,
    protection: &Protection,
) -> Result<Zeroizing<String>, Error> {
    let mut map = SecretKeyMap {
        v: 1,
        alg: alg.to_owned(),
        public_key: ByteBuf::from(public.to_vec()),
        kdf: "none".to_owned(),
        secret_key: None,
        m_cost_kib: None,
        t_cost: None,
        p_cost: None,
        salt: None,
        nonce: None,
        ciphertext: None,
    };
    match protection {
        Protection::Unencrypted => {
            map.secret_key = Some(ByteBuf::from(secret.to_vec()));
        }
        Protection::Passphrase(passphrase, params) => {
            let mut salt = [0u8; SALT_BYTES];
            let mut nonce = [0u8; NONCE_BYTES];
            fill_random(&mut salt)?;
            fill_random(&mut nonce)?;
            let seal_key = seal_key(passphrase.as_bytes(), &salt, *params)
                .map_err(|reason| Error::KeyFile { path: "<new key>".into(), reason })?;
            let cipher = XChaCha20Poly1305::new((&*seal_key).into());
            let ciphertext = cipher
                .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret, aad })
                .map_err(|_| Error::KeyFile { path: "<new key>".into(), reason: "sealing failed".into() })?;
            map.kdf = "argon2id".to_owned();
            map.m_cost_kib = Some(params.m_cost_kib);
            map.t_cost = Some(params.t_cost);
            map.p_cost = Some(params.p_cost);
            map.salt = Some(ByteBuf::from(salt.to_vec()));
            map.nonce = Some(ByteBuf::from(nonce.to_vec()));
            map.ciphertext = Some(ByteBuf::from(ciphertext));
        }
    }
    let mut cbor = Zeroizing::new(Vec::new());
    crate::cbor::encode_into(&map, &mut cbor);
    let sealed = match protection {
        Protection::Unencrypted => "NOT passphrase-protected",
        Protection::Passphrase(..) => "sealed with a passphrase (argon2id + xchacha20-poly1305)",
    };
    // Built in place so no unzeroized copy of an unencrypted secret is left behind.
    let mut text = Zeroizing::new(String::with_capacity(cbor.len() * 4 / 3 + 256));
    text.push_str(&format!("# {title}, {sealed}\n# keep this file private\n{SECRET_KEY_PREFIX}"));
    BASE64.encode_string(&*cbor, &mut text);
    text.push('\n');
    Ok(text)
}

/// Writes a secret that is not an ML-DSA key (keys.md §3.3) as a secret file of kind `alg`
/// with mode 0600: `secret` in clear or sealed as `protection` says, the associated data
/// of the seal being `alg`, so a sealed file of one kind never opens as another.
pub fn write_secret_bytes(
    path: &Path,
    alg: &str,
    secret: &[u8],
    protection: &Protection,
    overwrite: bool,
) -> Result<(), Error> {
    let text = sealed_text(alg, &[], alg.as_bytes(), secret, &format!("escx secret ({alg})"), protection)?;
    write_atomic(path, text.as_bytes(), MODE_SECRET, overwrite)
}

/// Reads a secret file of kind `alg` written by [`write_secret_bytes`]. `passphrase` is
/// called only if the file is sealed.
pub fn read_secret_bytes(
    path: &Path,
    alg: &str,
    passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let text = Zeroizing::new(read_small_text(path)?);
    let key_file_error = |reason: String| Error::KeyFile { path: path.into(), reason };
    let mut map = decode_secret_map(&text).map_err(key_file_error)?;
    if map.v != 1 || map.alg != alg || !map.public_key.is_empty() {
        return Err(key_file_error(format!(
            "not a {alg} file (version {}, kind {:?}); give the file escx wrote for it",
            map.v, map.alg
        )));
    }
    secret_of(&mut map, alg.as_bytes(), path, passphrase)
}

/// The secret of a decoded file: in clear, or unsealed with `aad`.
fn secret_of(
    map: &mut SecretKeyMap,
    aad: &[u8],
    path: &Path,
    passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let key_file_error = |reason: String| Error::KeyFile { path: path.into(), reason };
    match map.kdf.as_str() {
        "none" => {
            let secret = map.secret_key.take().ok_or_else(|| key_file_error("missing secret_key".into()))?;
            Ok(Zeroizing::new(secret.into_vec()))
        }
        "argon2id" => {
            let passphrase = passphrase().ok_or_else(|| Error::PassphraseRequired { path: path.into() })?;
            unseal(map, aad, passphrase.as_bytes()).map_err(|failure| match failure {
                Unseal::Malformed(reason) => key_file_error(reason),
                Unseal::WrongPassphrase => Error::WrongPassphrase { path: path.into() },
            })
        }
        other => Err(key_file_error(format!("unknown kdf {other:?}"))),
    }
}

/// Writes a secret key file with mode 0600.
pub fn write_secret_key(
    path: &Path,
    key: &SecretKey,
    protection: &Protection,
    overwrite: bool,
) -> Result<(), Error> {
    let text = secret_key_text(key, protection)?;
    write_atomic(path, text.as_bytes(), MODE_SECRET, overwrite)
}

/// Whether a secret key file is sealed with a passphrase (the passphrase prompt is only
/// shown when it is).
pub fn secret_key_is_sealed(path: &Path) -> Result<bool, Error> {
    let text = Zeroizing::new(read_small_text(path)?);
    let map = decode_secret_map(&text).map_err(|reason| Error::KeyFile { path: path.into(), reason })?;
    Ok(map.kdf == "argon2id")
}

/// The public key stored (in clear) in a secret key file; needs no passphrase.
pub fn secret_key_public_half(path: &Path) -> Result<PublicKey, Error> {
    let text = Zeroizing::new(read_small_text(path)?);
    let map = decode_secret_map(&text).map_err(|reason| Error::KeyFile { path: path.into(), reason })?;
    PublicKey::from_bytes(&map.public_key)
        .map_err(|e| Error::KeyFile { path: path.into(), reason: e.to_string() })
}

/// Reads a secret key file. `passphrase` is called only if the file is sealed; it returns
/// `None` when no passphrase can be obtained.
pub fn read_secret_key(
    path: &Path,
    passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
) -> Result<SecretKey, Error> {
    let text = Zeroizing::new(read_small_text(path)?);
    let key_file_error = |reason: String| Error::KeyFile { path: path.into(), reason };
    let mut map = decode_secret_map(&text).map_err(key_file_error)?;
    if map.v != 1 || map.alg != ALG_ML_DSA_87_NAME {
        return Err(key_file_error(format!(
            "unsupported key file version {} / algorithm {:?}",
            map.v, map.alg
        )));
    }
    let public = PublicKey::from_bytes(&map.public_key).map_err(|e| key_file_error(e.to_string()))?;
    let secret = secret_of(&mut map, public.as_bytes(), path, passphrase)?;
    SecretKey::from_parts(secret, public).map_err(|e| match e {
        Error::KeyLength { .. } | Error::KeyMismatch { .. } => key_file_error(e.to_string()),
        other => other,
    })
}

enum Unseal {
    Malformed(String),
    WrongPassphrase,
}

fn unseal(map: &SecretKeyMap, aad: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, Unseal> {
    let missing = |field: &str| Unseal::Malformed(format!("missing {field}"));
    let params = Argon2Params {
        m_cost_kib: map.m_cost_kib.ok_or_else(|| missing("m_cost_kib"))?,
        t_cost: map.t_cost.ok_or_else(|| missing("t_cost"))?,
        p_cost: map.p_cost.ok_or_else(|| missing("p_cost"))?,
    };
    if params.m_cost_kib > Argon2Params::M_COST_KIB_MAX
        || params.t_cost > Argon2Params::T_COST_MAX
        || params.p_cost > Argon2Params::P_COST_MAX
    {
        return Err(Unseal::Malformed(format!("argon2id parameters {params:?} exceed the limits")));
    }
    let salt = map.salt.as_ref().ok_or_else(|| missing("salt"))?;
    let nonce = map.nonce.as_ref().ok_or_else(|| missing("nonce"))?;
    let ciphertext = map.ciphertext.as_ref().ok_or_else(|| missing("ciphertext"))?;
    if salt.len() != SALT_BYTES || nonce.len() != NONCE_BYTES {
        return Err(Unseal::Malformed("salt must be 16 bytes and nonce 24 bytes".into()));
    }
    let seal_key = seal_key(passphrase, salt, params).map_err(Unseal::Malformed)?;
    let cipher = XChaCha20Poly1305::new((&*seal_key).into());
    let plain = cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad })
        .map_err(|_| Unseal::WrongPassphrase)?;
    Ok(Zeroizing::new(plain))
}

/// `derive_key(CONTEXT_KEY_FILE_SEAL, Argon2id(passphrase, salt, params, 32 bytes))`.
fn seal_key(
    passphrase: &[u8],
    salt: &[u8],
    params: Argon2Params,
) -> Result<Zeroizing<[u8; SEAL_KEY_BYTES]>, String> {
    let argon_params =
        argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(SEAL_KEY_BYTES))
            .map_err(|e| format!("invalid argon2id parameters: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut stretched = Zeroizing::new([0u8; SEAL_KEY_BYTES]);
    argon
        .hash_password_into(passphrase, salt, &mut *stretched)
        .map_err(|e| format!("argon2id failed: {e}"))?;
    Ok(Zeroizing::new(blake3::derive_key(CONTEXT_KEY_FILE_SEAL, &*stretched)))
}

fn decode_secret_map(text: &str) -> Result<SecretKeyMap, String> {
    let line = data_line(text)?;
    let encoded = line.strip_prefix(SECRET_KEY_PREFIX).ok_or_else(|| {
        if line.starts_with(PUBLIC_KEY_PREFIX) {
            "this is a public key; give the .key file instead".to_owned()
        } else {
            format!("expected a line starting with {SECRET_KEY_PREFIX:?}")
        }
    })?;
    let cbor = Zeroizing::new(BASE64.decode(encoded).map_err(|e| format!("invalid base64: {e}"))?);
    crate::cbor::decode_exact(&cbor, "key map")
}

/// What a text file given where a binary escx file (a chain, a package) is expected
/// is, when it is one of escx's own key files (the caller says what was expected):
/// `None` for anything else.
pub fn describe_text_file(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes.get(..bytes.len().min(4096))?).ok()?;
    let line = data_line(text).ok()?;
    if line.starts_with(PUBLIC_KEY_PREFIX) {
        Some("this is an escx public key file (one signing key)".into())
    } else if line.starts_with(SECRET_KEY_PREFIX) {
        Some("this is an escx secret key file (keep it private)".into())
    } else {
        None
    }
}

/// The single non-comment, non-blank line of a key file.
fn data_line(text: &str) -> Result<&str, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next().ok_or("no key line found (only comments or blank lines)")?;
    if lines.next().is_some() {
        return Err(format!(
            "more than one line that is not a comment: this is not an escx key file (one holds a single line \
             starting with {PUBLIC_KEY_PREFIX:?} or {SECRET_KEY_PREFIX:?})"
        ));
    }
    Ok(line)
}

fn read_small_text(path: &Path) -> Result<String, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let length = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if length > KEY_FILE_BYTES_MAX {
        return Err(Error::KeyFile {
            path: path.into(),
            reason: format!("{length} bytes is too large for a key file (limit {KEY_FILE_BYTES_MAX})"),
        });
    }
    // Sized up front so the buffer holding a secret key is never reallocated (and copied).
    let mut text = String::with_capacity(usize::try_from(length).unwrap_or(0) + 1);
    std::io::Read::read_to_string(&mut std::io::Read::take(file, KEY_FILE_BYTES_MAX), &mut text)
        .map_err(|e| Error::KeyFile { path: path.into(), reason: format!("not UTF-8 text: {e}") })?;
    Ok(text)
}

/// Fills `buffer` from the operating system's randomness.
pub fn fill_random(buffer: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(buffer).map_err(|e| Error::io("<os randomness>", std::io::Error::other(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters so the tests stay fast; the format is the same.
    const TEST_PARAMS: Argon2Params = Argon2Params { m_cost_kib: 64, t_cost: 1, p_cost: 1 };

    #[test]
    fn sealed_key_round_trips_and_wrong_passphrase_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let key = SecretKey::generate();
        let protection = Protection::Passphrase(Zeroizing::new("correct horse".into()), TEST_PARAMS);
        write_secret_key(&path, &key, &protection, false).unwrap();
        assert!(secret_key_is_sealed(&path).unwrap());
        let loaded = read_secret_key(&path, || Some(Zeroizing::new("correct horse".into()))).unwrap();
        assert_eq!(loaded.id(), key.id());
        let err = read_secret_key(&path, || Some(Zeroizing::new("wrong".into()))).err().unwrap();
        assert!(matches!(err, Error::WrongPassphrase { .. }), "{err}");
        assert!(err.to_string().contains("wrong passphrase"));
        let err = read_secret_key(&path, || None).err().unwrap();
        assert!(matches!(err, Error::PassphraseRequired { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn secret_key_file_is_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_secret_key(&path, &SecretKey::generate(), &Protection::Unencrypted, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn existing_key_file_is_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pub");
        let key = SecretKey::generate();
        write_public_key(&path, key.public_key(), false).unwrap();
        let err = write_public_key(&path, SecretKey::generate().public_key(), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(read_public_key(&path).unwrap().id(), key.id());
    }

    #[test]
    fn public_key_text_parses_back_and_rejects_secret_key_text() {
        let key = SecretKey::generate();
        let text = public_key_text(key.public_key());
        assert_eq!(parse_public_key(&text).unwrap(), *key.public_key());
        let secret = secret_key_text(&key, &Protection::Unencrypted).unwrap();
        let refused = parse_public_key(&secret).unwrap_err();
        assert!(refused.0.contains("secret key"));
        assert_eq!(crate::Fault::code(&refused), "key-file-invalid");
    }

    #[test]
    fn tampered_sealed_parameters_fail_as_wrong_passphrase() {
        // The Argon2 parameters are bound through the derived key: lowering them in the
        // file must not yield the secret.
        let key = SecretKey::generate();
        let protection = Protection::Passphrase(Zeroizing::new("pw".into()), TEST_PARAMS);
        let text = secret_key_text(&key, &protection).unwrap();
        let mut map = decode_secret_map(&text).unwrap();
        map.t_cost = Some(2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let mut cbor = Vec::new();
        ciborium::into_writer(&map, &mut cbor).unwrap();
        std::fs::write(&path, format!("{SECRET_KEY_PREFIX}{}\n", BASE64.encode(cbor))).unwrap();
        let err = read_secret_key(&path, || Some(Zeroizing::new("pw".into()))).err().unwrap();
        assert!(matches!(err, Error::WrongPassphrase { .. }), "{err}");
    }
}
