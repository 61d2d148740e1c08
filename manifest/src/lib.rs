//! `escx-manifest`: the `manifest.toml` schema and its validation, the signed registry
//! index, dependency resolution and the lockfile (specs: manifest.md, registry.md,
//! resolution.md).
//!
//! Where to start:
//!
//! - [`Manifest::parse`] / [`Manifest::load`]: a validated manifest, or every problem as
//!   [`Diagnostics`] with file, line, column, key and a fix.
//! - [`registry::Registry`]: the operator's side (init, publish, yank, refresh).
//! - [`project::Project`]: the customer's side in one call each: load and check the index,
//!   [`lock`](project::Project::lock) (resolve and write `escx.lock`),
//!   [`install`](project::Project::install) (fetch, verify every file, extract).
//! - [`client`], [`resolve`], [`install`] and [`lockfile`]: the same steps one at a time.
//!
//! `examples/install_from_registry.rs` publishes two packages and installs them. Errors
//! are [`Error`], which implements [`escx::Fault`] (code, input or environment, help).
//!
//! This crate sits directly above [`escx`] (the container) and below licensing and
//! settlement, which read the manifest's pricing, telemetry and `[revenue]` types.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod diagnostic;
mod explain;
pub mod index;
pub mod install;
pub mod lockfile;
pub mod money;
pub mod project;
pub mod registry;
pub mod requirement;
pub mod resolve;
pub mod schema;
pub mod template;

use escx::UnixSeconds;
use std::path::PathBuf;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use money::Micros;
pub use requirement::{Bucket, Requirement};
pub use schema::Manifest;
/// The `semver` crate, whose `Version` and `VersionReq` appear in this crate's API.
pub use semver;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifest is invalid; every problem is listed.
    #[error("{0}")]
    Manifest(Diagnostics),
    /// A container-level error (package, key, policy).
    #[error(transparent)]
    Escx(#[from] escx::Error),
    /// The directory holds no registry index.
    #[error("{}: no {}: not a registry", .path.display(), index::INDEX_FILE)]
    NotARegistry {
        /// The directory.
        path: PathBuf,
    },
    /// A registry cannot be created in a directory that holds files.
    #[error("{}: the directory is not empty", .path.display())]
    RegistryNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// Another process holds the registry's lock.
    #[error("{}: locked by another process; if none is running, remove {}", .path.display(), .lock.display())]
    RegistryLocked {
        /// The registry directory.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// Published versions are immutable.
    #[error("{}: {name}@{version} is already published; versions are immutable, publish a new version", .path.display())]
    AlreadyPublished {
        /// The registry directory.
        path: PathBuf,
        /// Package name.
        name: String,
        /// Version.
        version: String,
    },
    /// The trust policy gives no registry keys, so no index can be trusted.
    #[error("{}: the trust policy names no registry keys", .path.display())]
    NoRegistryKeys {
        /// The policy file.
        path: PathBuf,
    },
    /// The source index changed while it was being mirrored.
    #[error("{}: the index changed while it was mirrored; retry", .path.display())]
    IndexChanged {
        /// The source registry.
        path: PathBuf,
    },
    /// The client's record of accepted indexes cannot be read or written.
    #[error("{}: corrupt client state: {reason}", .path.display())]
    ClientState {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A package's manifest section is not UTF-8 text.
    #[error("{}: the manifest is not UTF-8", .path.display())]
    ManifestEncoding {
        /// The package.
        path: PathBuf,
    },
    /// The index file is malformed or its signatures do not verify.
    #[error("{}: {reason}", .path.display())]
    IndexInvalid {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The index is past its expiry (the registry or mirror is frozen).
    #[error("{}: the index expired at {}; the registry or mirror is not being updated (freeze attack?)", .path.display(), escx::timestamp::format_rfc3339(*.expired_at))]
    IndexExpired {
        /// The index file.
        path: PathBuf,
        /// Its expiry.
        expired_at: UnixSeconds,
    },
    /// The index is older than one already accepted.
    #[error("{}: index version {offered} is older than version {seen} already accepted (rollback attack?)", .path.display())]
    IndexRollback {
        /// The index file.
        path: PathBuf,
        /// Accepted before.
        seen: u64,
        /// Offered now.
        offered: u64,
    },
    /// A different index with the same version as one already accepted.
    #[error("{}: a different index claims version {version}, which was already accepted with other content", .path.display())]
    IndexEquivocation {
        /// The index file.
        path: PathBuf,
        /// The version.
        version: u64,
    },
    /// A package file disagrees with its index entry.
    #[error("{name}@{version} ({}): {reason}", file.display())]
    PackageMismatch {
        /// Package name.
        name: String,
        /// Version.
        version: String,
        /// The registry's file (or the fetched copy checked).
        file: PathBuf,
        /// What differs.
        reason: String,
    },
    /// A package file has a size other than the index's.
    #[error(
        "{name}@{version} ({}): the file is {actual} bytes but the index says {expected} (endless-data attack?)",
        file.display()
    )]
    PackageSize {
        /// Package name.
        name: String,
        /// Version.
        version: String,
        /// The registry's file.
        file: PathBuf,
        /// From the index.
        expected: u64,
        /// Found (or read before stopping).
        actual: u64,
    },
    /// A name@version the index does not list.
    #[error("{name}@{version} is not in the registry index")]
    NotInIndex {
        /// Package name.
        name: String,
        /// Version.
        version: String,
    },
    /// No set of versions satisfies every requirement; the explanation says why.
    #[error("no versions satisfy the requirements:\n{explanation}")]
    Unsatisfiable {
        /// PubGrub's derivation, as sentences.
        explanation: String,
    },
    /// The resolved packages depend on each other in a circle.
    #[error("dependency cycle: {}", .cycle.join(" -> "))]
    DependencyCycle {
        /// The cycle, first element repeated at the end.
        cycle: Vec<String>,
    },
    /// The lockfile cannot be parsed.
    #[error("{}: {reason}", .path.display())]
    LockfileInvalid {
        /// The lockfile.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The lockfile disagrees with the registry about a locked version.
    #[error("{name}@{version}: {reason}")]
    LockfileMismatch {
        /// Package name.
        name: String,
        /// Version.
        version: String,
        /// What differs.
        reason: String,
    },
    /// A licensed (encrypted) package whose content key is not at hand.
    #[error("{name}@{version} is licensed content: {reason}")]
    ContentKeyUnavailable {
        /// Package name.
        name: String,
        /// Version.
        version: String,
        /// Why no key (no wallet, no license, license not valid).
        reason: String,
    },
    /// A bundle-chain head the index may not publish: it does not extend the head listed.
    #[error("{}: {reason}", .path.display())]
    IssuerHead {
        /// The chain file.
        path: PathBuf,
        /// How it differs from the listed head.
        reason: String,
    },
    /// An I/O error on a named file.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl escx::Fault for Error {
    fn code(&self) -> &'static str {
        match self {
            Self::Manifest(_) => "manifest-invalid",
            Self::Escx(e) => e.code(),
            Self::NotARegistry { .. } => "not-a-registry",
            Self::RegistryNotEmpty { .. } => "registry-not-empty",
            Self::RegistryLocked { .. } => "registry-locked",
            Self::AlreadyPublished { .. } => "already-published",
            Self::NoRegistryKeys { .. } => "no-registry-keys",
            Self::IndexChanged { .. } => "index-changed",
            Self::ClientState { .. } => "client-state",
            Self::ManifestEncoding { .. } => "manifest-invalid",
            Self::IndexInvalid { .. } => "index-invalid",
            Self::IndexExpired { .. } => "index-expired",
            Self::IndexRollback { .. } => "index-rollback",
            Self::IndexEquivocation { .. } => "index-equivocation",
            Self::PackageMismatch { .. } => "package-mismatch",
            Self::PackageSize { .. } => "package-size",
            Self::NotInIndex { .. } => "not-in-index",
            Self::Unsatisfiable { .. } => "unsatisfiable",
            Self::DependencyCycle { .. } => "dependency-cycle",
            Self::LockfileInvalid { .. } => "lockfile-invalid",
            Self::LockfileMismatch { .. } => "lockfile-mismatch",
            Self::ContentKeyUnavailable { .. } => "content-key-required",
            Self::IssuerHead { .. } => "issuer-head-refused",
            Self::Io { .. } => "io",
        }
    }

    fn class(&self) -> escx::ErrorClass {
        use escx::ErrorClass::{Environment, Input};
        match self {
            Self::Escx(e) => e.class(),
            // The same command may succeed once the directory, lock or state is fixed.
            Self::Io { .. }
            | Self::NotARegistry { .. }
            | Self::RegistryNotEmpty { .. }
            | Self::RegistryLocked { .. }
            | Self::IndexChanged { .. }
            | Self::ClientState { .. } => Environment,
            _ => Input,
        }
    }

    fn help(&self) -> Option<&'static str> {
        Some(match self {
            Self::Escx(e) => return e.help(),
            Self::NotARegistry { .. } => "create a registry in the directory first",
            Self::NoRegistryKeys { .. } => {
                "add a [registry] table with the registry's keys to the trust policy"
            }
            Self::IndexExpired { .. } => "use a registry or mirror that is being updated",
            Self::IndexRollback { .. } | Self::IndexEquivocation { .. } => {
                "the registry or mirror serves a stale or forked index; do not trust it until its operator explains"
            }
            Self::PackageMismatch { .. } | Self::PackageSize { .. } => {
                "the registry or mirror serves a file its signed index does not vouch for; do not use it, and tell the registry's operator"
            }
            Self::ContentKeyUnavailable { .. } => {
                "buy and install a license for the package; its content key decrypts the payload"
            }
            _ => return None,
        })
    }
}
