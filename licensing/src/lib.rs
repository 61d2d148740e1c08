//! `escx-licensing`: blind license issuance (RFC 9497 POPRF), anonymous redemption into
//! ML-DSA-87-signed license certificates, offline verification, revocation, and the
//! customer-side usage meter (spec: licensing.md).
//!
//! Depends on [`escx`] (keys, envelopes, sealed boxes, hashing) and [`escx_manifest`]
//! (pricing and telemetry types).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod issuer;
pub mod messages;
pub mod metering;
pub mod poprf;
mod sqlite;
pub mod wallet;

pub use escx_manifest;

use escx::sig::KeyId;

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
    /// A message is malformed.
    #[error("{0}")]
    Message(String),
    /// A container-level error (keys, envelopes, sealed boxes, files).
    #[error(transparent)]
    Escx(#[from] escx::Error),
    /// The issuer's or wallet's store failed.
    #[error("store: {0}")]
    Store(String),
    /// The issuer does not sell this package and tier.
    #[error("the issuer does not sell {package} tier {tier:?}")]
    NotForSale {
        /// Package.
        package: String,
        /// Tier.
        tier: String,
    },
    /// A token names an epoch that is unknown or over.
    #[error("issuer epoch {epoch} is unknown or no longer accepted")]
    UnknownEpoch {
        /// The epoch.
        epoch: u32,
    },
    /// A presented token is not a valid POPRF output for its info.
    #[error("the token is not valid for this package, tier and epoch")]
    TokenInvalid,
    /// The token was redeemed before.
    #[error("the token has already been redeemed")]
    AlreadySpent,
    /// No license with this id.
    #[error("no license {license_id}")]
    UnknownLicense {
        /// Hex id.
        license_id: String,
    },
    /// A wallet operation found nothing to work on.
    #[error("{0}")]
    Wallet(String),
    /// An issuer bundle or bundle chain is malformed or breaks the chain rules.
    #[error("issuer bundle: {reason}")]
    BundleInvalid {
        /// What is wrong.
        reason: String,
    },
    /// The issuer showed this wallet two different histories (licensing.md §5.7).
    #[error(
        "issuer {issuer} sent a bundle chain that differs at version {version} from the one this wallet \
         holds: an issuer showing customers different keys can tag them, so the wallet keeps the chain it \
         saw first and refuses this one"
    )]
    BundleFork {
        /// The issuer.
        issuer: KeyId,
        /// The first version at which the chains differ.
        version: u64,
    },
    /// The bundle this wallet holds is not the one the registry publishes.
    #[error("issuer {issuer}: {reason}")]
    BundleUnpublished {
        /// The issuer.
        issuer: KeyId,
        /// What differs.
        reason: String,
    },
    /// The package's scope belongs to other publisher keys (licensing.md §4.1).
    #[error(
        "{package}: the scope {scope} is owned by {}; a package signed by none of them cannot be sold here",
        owners_text(.owners)
    )]
    PackageOwned {
        /// Package.
        package: String,
        /// The ownership scope.
        scope: String,
        /// Its owners.
        owners: Vec<KeyId>,
    },
    /// The content key is already registered for another package file.
    #[error(
        "{package}: its content key is already registered for {other}; every package file needs its own key"
    )]
    ContentKeyReused {
        /// The package being registered.
        package: String,
        /// The package (name and version) holding the key.
        other: String,
    },
    /// The package cannot be offered as it is priced.
    #[error("{package}: {reason}")]
    Pricing {
        /// Package.
        package: String,
        /// Why.
        reason: String,
    },
    /// The package's manifest is invalid.
    #[error(transparent)]
    Manifest(escx_manifest::Error),
    /// A metering report, close, opening or release was refused (metering.md §8).
    #[error("{reason}")]
    Metering {
        /// Which rule refused it.
        refusal: metering::Refusal,
        /// Why, in words.
        reason: String,
    },
    /// A license check failed; `check` names which (licensing.md §5).
    #[error("license {check} check failed: {reason}")]
    LicenseRejected {
        /// The check's stable name (`signature`, `window`, `clock`, `revocation`, ...).
        check: &'static str,
        /// Why.
        reason: String,
    },
}

fn owners_text(owners: &[KeyId]) -> String {
    if owners.is_empty() {
        return "no key (the package carries no signature by a key given)".into();
    }
    owners.iter().map(|k| format!("key {k}")).collect::<Vec<_>>().join(", ")
}

impl Error {
    /// True for failures of the checked object itself (exit code 1), false for
    /// environment problems (exit code 3).
    pub fn is_verification_failure(&self) -> bool {
        match self {
            Self::Escx(e) => e.is_verification_failure(),
            Self::Manifest(e) => !matches!(e, escx_manifest::Error::Io { .. }),
            Self::Store(_) => false,
            _ => true,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Poprf(_) => "poprf",
            Self::ProofInvalid => "issuance-proof-invalid",
            Self::Message(_) => "message-invalid",
            Self::Escx(e) => e.code(),
            Self::Store(_) => "store",
            Self::NotForSale { .. } => "not-for-sale",
            Self::UnknownEpoch { .. } => "unknown-epoch",
            Self::TokenInvalid => "token-invalid",
            Self::AlreadySpent => "token-spent",
            Self::UnknownLicense { .. } => "unknown-license",
            Self::Wallet(_) => "wallet",
            Self::BundleInvalid { .. } => "issuer-bundle-invalid",
            Self::BundleFork { .. } => "issuer-bundle-fork",
            Self::BundleUnpublished { .. } => "issuer-bundle-unpublished",
            Self::PackageOwned { .. } => "package-owned",
            Self::ContentKeyReused { .. } => "content-key-reused",
            Self::Pricing { .. } => "pricing-invalid",
            Self::Manifest(e) => e.code(),
            Self::Metering { refusal, .. } => refusal.code(),
            Self::LicenseRejected { check, .. } => match *check {
                "signature" => "license-signature",
                "issuer" => "license-wrong-issuer",
                "window" => "license-expired",
                "not-yet-valid" => "license-not-yet-valid",
                "clock" => "clock-rolled-back",
                "revocation" => "license-revoked",
                "crl" => "crl-stale",
                "crl-signature" => "crl-invalid",
                "package" => "license-wrong-package",
                "possession" => "possession-invalid",
                _ => "license-rejected",
            },
        }
    }
}
