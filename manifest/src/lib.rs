//! `escx-manifest`: the `manifest.toml` schema and its validation, the signed registry
//! index, dependency resolution and the lockfile.
//!
//! This crate sits directly above [`escx`] (the container) and below licensing and
//! settlement, which read the manifest's pricing, telemetry and `[revenue]` types.
//! Its contents arrive with the manifest/registry issue; until then the package name and
//! version are read by the container crate's minimal manifest view
//! ([`escx::manifest::ManifestHeader`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use escx;
