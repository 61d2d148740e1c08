//! `escx-licensing`: blind license issuance (RFC 9497 POPRF), anonymous redemption into
//! ML-DSA-87-signed license certificates, offline verification, revocation, and the
//! customer-side usage meter (spec: licensing.md).
//!
//! Depends on [`escx`] (keys, envelopes, hashing) and [`escx_manifest`] (pricing and
//! telemetry types).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod poprf;

pub use escx_manifest;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A POPRF operation failed (bad encoding, batch size, key).
    #[error("blind token protocol: {0}")]
    Poprf(String),
    /// The issuer's batched DLEQ proof does not verify against its published key.
    #[error(
        "the issuer's proof does not verify against its published key for this package, tier and epoch; the tokens are refused"
    )]
    ProofInvalid,
}

impl Error {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Poprf(_) => "poprf",
            Self::ProofInvalid => "issuance-proof-invalid",
        }
    }
}
