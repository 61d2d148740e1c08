//! `escx-licensing`: blind license issuance (RFC 9497 POPRF), anonymous redemption into
//! ML-DSA-87-signed license certificates, offline verification and revocation (specs:
//! licensing.md, privacy.md), and the Pedersen commitments and range proofs that metering
//! and settlement build on (proofs.md §9). Usage metering is the `escx-metering` crate
//! above this one.
//!
//! Where to start:
//!
//! - [`issuer::Issuer`]: the operator sells ([`issue`](issuer::Issuer::issue)), redeems
//!   ([`redeem`](issuer::Issuer::redeem)), revokes and signs CRLs, over an
//!   [`issuer::store::IssuerStore`] (SQLite in an issuer directory, or in memory).
//! - [`wallet::Wallet`]: the customer buys, finalizes, redeems, installs, renews, transfers
//!   and proves possession; [`verify`] checks certificates, CRLs and proofs offline.
//! - [`messages`]: the wire messages; sealed ones are distinct types
//!   ([`messages::SealedRedeemRequest`], [`messages::SealedLicense`], ...).
//! - [`pedersen`] and [`rangeproof`]: commitments `v·B + r·B̃` and aggregated
//!   Bulletproofs+ range proofs over them, shared by meter reports and statements.
//!
//! The protocol steps are typed: each takes the message the previous one produced, so
//! they cannot be wired out of order. `Wallet::request` gives a [`messages::TokenRequest`]
//! (blinded), `Issuer::issue` answers it with a [`messages::TokenResponse`],
//! `Wallet::finalize` turns that into tokens, `Wallet::redeem` spends one into a
//! [`messages::SealedRedeemRequest`], `Issuer::redeem` answers with a
//! [`messages::SealedLicense`], and `Wallet::install` opens it into a
//! [`messages::LicensePayload`]. What lies between the steps (pending purchases, unspent
//! tokens, redemptions in flight) is kept in the wallet directory rather than in a typestate
//! value, because the steps run in different processes, hours apart, and must survive a
//! crash and a retry.
//!
//! ```
//! # use escx_licensing::{issuer::Issuer, messages::*, wallet::Wallet};
//! # #[allow(dead_code)]
//! fn wired(issuer: &Issuer, wallet: &Wallet, response: &TokenResponse, sealed: &SealedRedeemRequest) {
//!     let _ = wallet.finalize(response);
//!     let _ = issuer.redeem(sealed, escx::UnixSeconds(0));
//! }
//! ```
//!
//! ```compile_fail,E0308
//! # fn misuse(issuer: &escx_licensing::issuer::Issuer, license: &escx_licensing::messages::SealedLicense) {
//! // A license is not a redemption request.
//! let _ = issuer.redeem(license, escx::UnixSeconds(0));
//! # }
//! ```
//!
//! ```compile_fail,E0308
//! # fn misuse(wallet: &escx_licensing::wallet::Wallet, request: &escx_licensing::messages::TokenRequest) {
//! // A wallet finalizes the issuer's response, not its own request.
//! let _ = wallet.finalize(request);
//! # }
//! ```
//!
//! `examples/license_in_process.rs` runs a sale, a redemption and an offline check with
//! an in-memory issuer. Errors are [`Error`], which implements [`escx::Fault`].
//!
//! Depends on [`escx`] (keys, envelopes, sealed boxes, hashing) and [`escx_manifest`]
//! (pricing and telemetry types).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod issuer;
pub mod messages;
pub mod pedersen;
pub mod poprf;
pub mod rangeproof;
pub mod trust;
pub mod verify;
pub mod wallet;

/// The `semver` crate, whose `Version` appears in this crate's API (`Wallet::verify`).
pub use semver;

use escx::sig::KeyId;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The POPRF library failed on well-formed input (key generation, evaluation).
    #[error("blind token protocol: {0}")]
    Poprf(String),
    /// A batch of tokens outside 1..=[`poprf::BATCH_MAX`].
    #[error("a batch holds 1 to {max} tokens, not {count}")]
    BatchSize {
        /// The batch size given.
        count: usize,
        /// The largest batch.
        max: usize,
    },
    /// A POPRF element, proof, key or client state that does not decode; or a response
    /// with another number of elements than the request.
    #[error("blind token protocol: {what}")]
    PoprfEncoding {
        /// What is malformed, e.g. "invalid blinded element".
        what: String,
    },
    /// The issuer's batched DLEQ proof does not verify against its published key.
    #[error(
        "the issuer's proof does not verify against its published key for this package, tier and epoch; the tokens are refused"
    )]
    ProofInvalid,
    /// A message, or a record this crate stored, is malformed.
    #[error("{reason}")]
    Malformed {
        /// Which message or record.
        what: &'static str,
        /// What is wrong with it, naming it.
        reason: String,
    },
    /// A container-level error (keys, envelopes, sealed boxes, files).
    #[error(transparent)]
    Escx(#[from] escx::Error),
    /// A store (the issuer's, the operator's, the meter's) failed: its database could not
    /// be reached, met a concurrent writer on every attempt ([`escx_store::Kind::Busy`]:
    /// nothing was written, sending the request again is safe), or holds something it
    /// cannot have written.
    #[error(transparent)]
    Store(#[from] escx_store::Error),
    /// The issuer directory's POPRF keys (`poprf.key`) are missing or do not give the keys
    /// its epochs were published with (licensing.md §4.3).
    #[error("{}: {reason}", .path.display())]
    PoprfKey {
        /// The `poprf.key` file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `--wallet` path that holds no wallet.
    #[error("{}: no wallet here", .path.display())]
    NoWallet {
        /// The path given.
        path: std::path::PathBuf,
    },
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
    /// An account with this name exists already.
    #[error("an account named {name:?} exists already")]
    AccountExists {
        /// The account name.
        name: String,
    },
    /// No purchase account with this name.
    #[error("no account named {name:?} (`escx issuer account list` shows them)")]
    UnknownAccount {
        /// The account name.
        name: String,
    },
    /// No license with this id.
    #[error("no license {license_id}")]
    UnknownLicense {
        /// Hex id.
        license_id: String,
    },
    /// The wallet holds no unspent token for the package (and tier, when one is named).
    #[error("no unspent token for {package}{}", .tier.as_deref().map(|t| format!(" {t}")).unwrap_or_default())]
    NoToken {
        /// Package.
        package: String,
        /// Tier asked for, if any.
        tier: Option<String>,
    },
    /// The wallet holds no license for the package.
    #[error("no license for {package} in this wallet")]
    NoLicense {
        /// Package.
        package: String,
    },
    /// No license in the wallet carries the content key of this package file.
    #[error(
        "no license in this wallet carries the content key of this {package} {version} file \
         (a license carries the keys of the files registered before it was issued, and those it asked for since)"
    )]
    NoContentKey {
        /// Package.
        package: String,
        /// Version.
        version: String,
    },
    /// A key request that does not decode or is not signed by its license's holder key
    /// (licensing.md §8.1).
    #[error("key request: {reason}")]
    KeyRequest {
        /// What is wrong.
        reason: String,
    },
    /// A token response answers no purchase this wallet is waiting for.
    #[error("no pending purchase matches this response")]
    NoPendingPurchase,
    /// A license answers no redemption this wallet is waiting for.
    #[error("no pending redemption in this wallet matches this license")]
    NoPendingRedemption,
    /// The issuer's bundle has no key epoch valid at this time.
    #[error("issuer {issuer} has no key epoch valid now in bundle version {version}")]
    NoEpoch {
        /// The issuer's name.
        issuer: String,
        /// The bundle version.
        version: u64,
    },
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
    /// A license check failed; `check` names which (licensing.md §5).
    #[error("license {} check failed: {reason}", .check.name())]
    LicenseRejected {
        /// The check that failed.
        check: LicenseCheck,
        /// Why.
        reason: String,
    },
}

/// The checks a license (or the CRL and possession proof that go with it) must pass
/// (licensing.md §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LicenseCheck {
    /// The certificate's signature by the issuer.
    Signature,
    /// The certificate is by the issuer the wallet expects.
    Issuer,
    /// The validity window has ended.
    Window,
    /// The validity window has not begun.
    NotYetValid,
    /// The clock went back before a time already seen.
    Clock,
    /// The license is on the CRL.
    Revocation,
    /// The CRL offered has a lower number than the one the wallet holds (or the same
    /// number with other contents).
    Crl,
    /// What the wallet knows of revocations is older than the program allows.
    CrlAge,
    /// The CRL's signature or encoding.
    CrlSignature,
    /// The certificate is for another package or file.
    Package,
    /// The holder's proof of possession.
    Possession,
}

impl LicenseCheck {
    /// Every check.
    pub const ALL: [LicenseCheck; 11] = [
        Self::Signature,
        Self::Issuer,
        Self::Clock,
        Self::NotYetValid,
        Self::Window,
        Self::CrlSignature,
        Self::Crl,
        Self::Revocation,
        Self::CrlAge,
        Self::Package,
        Self::Possession,
    ];

    /// The check's name in messages (`signature`, `window`, `clock`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Signature => "signature",
            Self::Issuer => "issuer",
            Self::Window => "window",
            Self::NotYetValid => "not-yet-valid",
            Self::Clock => "clock",
            Self::Revocation => "revocation",
            Self::Crl => "crl",
            Self::CrlAge => "crl-age",
            Self::CrlSignature => "crl-signature",
            Self::Package => "package",
            Self::Possession => "possession",
        }
    }

    /// The stable error code of a failure of this check.
    pub fn code(self) -> &'static str {
        match self {
            Self::Signature => "license-signature",
            Self::Issuer => "license-wrong-issuer",
            Self::Window => "license-expired",
            Self::NotYetValid => "license-not-yet-valid",
            Self::Clock => "clock-rolled-back",
            Self::Revocation => "license-revoked",
            Self::Crl => "crl-stale",
            Self::CrlAge => "crl-too-old",
            Self::CrlSignature => "crl-invalid",
            Self::Package => "license-wrong-package",
            Self::Possession => "possession-invalid",
        }
    }
}

fn owners_text(owners: &[KeyId]) -> String {
    if owners.is_empty() {
        return "no key (the package carries no signature by a key given)".into();
    }
    owners.iter().map(|k| format!("key {k}")).collect::<Vec<_>>().join(", ")
}

impl escx_store::Retryable for Error {
    fn is_busy(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_busy())
    }
}

impl Error {
    /// A record of a store that this crate cannot have written (a value out of range, a
    /// point that does not decode): [`escx_store::Kind::Corrupt`].
    pub fn stored(reason: impl Into<String>) -> Self {
        Self::Store(escx_store::Error::corrupt("", reason))
    }
}

impl escx::Fault for Error {
    fn code(&self) -> &'static str {
        match self {
            Self::Poprf(_) | Self::BatchSize { .. } | Self::PoprfEncoding { .. } => "poprf",
            Self::ProofInvalid => "issuance-proof-invalid",
            Self::Malformed { .. } => "message-invalid",
            Self::Escx(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::NotForSale { .. } => "not-for-sale",
            Self::UnknownEpoch { .. } => "unknown-epoch",
            Self::PoprfKey { .. } => "poprf-key",
            Self::TokenInvalid => "token-invalid",
            Self::AlreadySpent => "token-spent",
            Self::UnknownLicense { .. } => "unknown-license",
            Self::AccountExists { .. } => "account-exists",
            Self::UnknownAccount { .. } => "unknown-account",
            Self::NoToken { .. } => "no-token",
            Self::NoWallet { .. } => "no-wallet",
            Self::NoLicense { .. } => "no-license",
            Self::NoContentKey { .. } => "content-key-required",
            Self::KeyRequest { .. } => "key-request-invalid",
            Self::NoPendingPurchase => "no-pending-purchase",
            Self::NoPendingRedemption => "no-pending-redemption",
            Self::NoEpoch { .. } => "no-epoch",
            Self::BundleInvalid { .. } => "issuer-bundle-invalid",
            Self::BundleFork { .. } => "issuer-bundle-fork",
            Self::BundleUnpublished { .. } => "issuer-bundle-unpublished",
            Self::PackageOwned { .. } => "package-owned",
            Self::ContentKeyReused { .. } => "content-key-reused",
            Self::Pricing { .. } => "pricing-invalid",
            Self::Manifest(e) => e.code(),
            Self::LicenseRejected { check, .. } => check.code(),
        }
    }

    fn class(&self) -> escx::ErrorClass {
        match self {
            Self::Escx(e) => e.class(),
            Self::Manifest(e) => e.class(),
            Self::Store(e) => e.class(),
            Self::NoWallet { .. } | Self::PoprfKey { .. } => escx::ErrorClass::Environment,
            _ => escx::ErrorClass::Input,
        }
    }

    fn help(&self) -> Option<&'static str> {
        Some(match self {
            Self::Escx(e) => return e.help(),
            Self::Manifest(e) => return e.help(),
            Self::Store(e) => return e.help(),
            Self::NoToken { .. } => "buy a token for the package first",
            Self::NoWallet { .. } => {
                "check the wallet path; a wallet is created by its first purchase (or its receive key)"
            }
            Self::NoLicense { .. } => "redeem a token for the package first",
            Self::NoContentKey { .. } => {
                "a license whose versions cover the file gets its key without another token: \
                 escx license key --package-file FILE (with --server, or as files through the issuer)"
            }
            Self::AlreadySpent => "each token buys one license; buy another token",
            Self::PoprfKey { .. } => {
                "copy poprf.key from the issuer directory that made the epochs (the one first opened \
                 after upgrading) into this one; every node needs the same file"
            }
            Self::BundleFork { .. } => "report the issuer: it showed customers different keys",
            Self::LicenseRejected { check: LicenseCheck::Window, .. } => "renew the license",
            Self::LicenseRejected { check: LicenseCheck::Crl, .. } => "fetch the issuer's current CRL",
            Self::LicenseRejected { check: LicenseCheck::CrlAge, .. } => {
                "fetch the issuer's current CRL (`escx license crl --server URL`, or `--crl FILE` with the check)"
            }
            Self::LicenseRejected { check: LicenseCheck::Issuer, .. } => {
                "this program accepts licenses only from the issuer it names (--issuer); buy from that issuer"
            }
            Self::LicenseRejected { check: LicenseCheck::Clock, .. } => {
                "set the system clock right; a clock set back cannot extend a license"
            }
            _ => return None,
        })
    }
}
