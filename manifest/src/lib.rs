//! `escx-manifest`: the `manifest.toml` schema and its validation, the signed registry
//! index, dependency resolution and the lockfile (specs: manifest.md, registry.md,
//! resolution.md).
//!
//! This crate sits directly above [`escx`] (the container) and below licensing and
//! settlement, which read the manifest's pricing, telemetry and `[revenue]` types.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod diagnostic;
pub mod money;
pub mod requirement;
pub mod schema;
pub mod template;

use std::path::PathBuf;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use money::Micros;
pub use requirement::{Bucket, Requirement};
pub use schema::Manifest;

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
    /// An I/O error on a named file.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl Error {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Manifest(_) => "manifest-invalid",
            Self::Escx(e) => e.code(),
            Self::Io { .. } => "io",
        }
    }

    /// True for problems with the checked input itself (exit code 1).
    pub fn is_verification_failure(&self) -> bool {
        match self {
            Self::Escx(e) => e.is_verification_failure(),
            Self::Io { .. } => false,
            _ => true,
        }
    }
}
