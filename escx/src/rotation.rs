//! Key rotation statements (spec: trust-policy.md §4): an old key endorses its successor.
//!
//! A statement is a signed envelope (context `escx/key-rotation/v1`, signed by the old
//! key) whose payload is the CBOR map `{v: 1, old_key_id: bytes(16), new_public_key:
//! bytes(2592), created_at: uint}`. As text it is `escx-rot-v1:<base64 of the envelope>`
//! after optional `#` comment lines, like key files.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::envelope::Envelope;
use crate::sig::{KeyId, PublicKey, SecretKey, SigningContext};
use crate::{Error, UnixSeconds};

/// Data-line prefix of a rotation statement.
pub const ROTATION_PREFIX: &str = "escx-rot-v1:";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotationPayload {
    v: u8,
    old_key_id: ByteBuf,
    new_public_key: ByteBuf,
    created_at: UnixSeconds,
}

/// A parsed, not yet verified, rotation statement.
#[derive(Debug, Clone)]
pub struct RotationStatement {
    envelope: Envelope,
}

/// What a verified statement says.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The endorsing key.
    pub old_key_id: KeyId,
    /// The endorsed successor.
    pub new_key: PublicKey,
    /// When the old key signed the statement.
    pub created_at: UnixSeconds,
}

impl RotationStatement {
    /// The old key signs `new_key` as its successor.
    pub fn create(old: &SecretKey, new_key: &PublicKey, created_at: UnixSeconds) -> Self {
        let payload = RotationPayload {
            v: 1,
            old_key_id: ByteBuf::from(old.id().0.to_vec()),
            new_public_key: ByteBuf::from(new_key.as_bytes().to_vec()),
            created_at,
        };
        Self { envelope: Envelope::seal(SigningContext::KEY_ROTATION, crate::cbor::encode(&payload), old) }
    }

    /// The statement as text.
    pub fn to_text(&self, comment: &str) -> String {
        format!("# {comment}\n{}\n", self.to_line())
    }

    /// The statement as its one data line, `escx-rot-v1:<base64>`.
    pub fn to_line(&self) -> String {
        format!("{ROTATION_PREFIX}{}", BASE64.encode(self.envelope.to_cbor()))
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or("no statement line found")?;
        let encoded = line
            .strip_prefix(ROTATION_PREFIX)
            .ok_or_else(|| format!("expected a line starting with {ROTATION_PREFIX:?}"))?;
        let bytes = BASE64.decode(encoded).map_err(|e| format!("invalid base64: {e}"))?;
        let envelope = Envelope::from_cbor(&bytes).map_err(|e| e.to_string())?;
        Ok(Self { envelope })
    }

    /// Reads a statement file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text)
            .map_err(|reason| Error::Envelope { reason: format!("{}: {reason}", path.display()) })
    }

    /// The key that claims to have signed it.
    pub fn signer(&self) -> KeyId {
        self.envelope.key_id()
    }

    /// What the statement claims, with its signature *not* checked: for showing a
    /// statement to a person (`escx key show`); trust only [`Self::verify`]'s answer.
    pub fn claims(&self) -> Result<Rotation, Error> {
        Self::decode(self.envelope.payload_unverified(), self.signer())
    }

    /// Verifies the statement against the old key and returns what it says.
    pub fn verify(&self, old_key: &PublicKey) -> Result<Rotation, Error> {
        let payload = self.envelope.open(SigningContext::KEY_ROTATION, old_key)?;
        Self::decode(payload, old_key.id())
    }

    fn decode(payload: &[u8], signer: KeyId) -> Result<Rotation, Error> {
        let invalid = |reason: &str| Error::Envelope { reason: format!("rotation statement: {reason}") };
        let parsed: RotationPayload =
            crate::cbor::decode_exact(payload, "rotation payload").map_err(|reason| invalid(&reason))?;
        if parsed.v != 1 {
            return Err(invalid("unknown version"));
        }
        if parsed.old_key_id.as_slice() != signer.0 {
            return Err(invalid("old_key_id does not name the signing key"));
        }
        let new_key = PublicKey::from_bytes(&parsed.new_public_key)?;
        if new_key.id() == signer {
            return Err(invalid("a key cannot succeed itself"));
        }
        Ok(Rotation { old_key_id: signer, new_key, created_at: parsed.created_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_round_trips_and_binds_the_old_key() {
        let old = SecretKey::generate();
        let new = SecretKey::generate();
        let text = RotationStatement::create(&old, new.public_key(), crate::UnixSeconds(5)).to_text("test");
        let statement = RotationStatement::parse(&text).unwrap();
        assert_eq!(statement.signer(), old.id());
        let rotation = statement.verify(old.public_key()).unwrap();
        assert_eq!(rotation.new_key.id(), new.id());
        assert!(statement.verify(new.public_key()).is_err());
    }
}
