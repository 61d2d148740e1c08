//! `escx`: the `.escx` signed package container and the cryptographic pieces every other
//! escx crate builds on.
//!
//! The normative description of everything here is in `spec/escx-format.md`,
//! `spec/keys.md` and `spec/trust-policy.md`; module names follow the spec's headings:
//!
//! | module | spec |
//! |---|---|
//! | [`hash`] | escx-format.md §2 "Hashing and context strings" |
//! | [`sig`] | escx-format.md §3 "Signatures", keys.md §1 |
//! | [`keyfile`] | keys.md |
//! | [`envelope`] | escx-format.md §9 "Signed envelopes" |
//! | [`container`] | escx-format.md §4–§7 (header, table, sections, trailer) |
//! | [`archive`] | escx-format.md §6.2 "Archive sections" |
//! | [`verify`] | escx-format.md §8 "Verification algorithm" |
//! | [`policy`] | trust-policy.md |
//! | [`pack`] | escx-format.md §10 "Packing" |
//! | [`extract`] | escx-format.md §11 "Extraction" |
//!
//! Errors are [`Error`] (and [`FormatError`] inside it); every escx crate's errors follow
//! the [`Fault`] protocol: a stable code, an [`ErrorClass`] and a help text.
//!
//! A typical round trip:
//!
//! ```no_run
//! use escx::{pack, sig::SecretKey, verify, policy::TrustPolicy};
//! # fn main() -> Result<(), escx::Error> {
//! let key = SecretKey::generate();
//! pack::pack_dir("mypkg".as_ref(), "mypkg-1.0.0.escx".as_ref(), &[&key], &pack::PackOptions::default())?;
//! let policy = TrustPolicy::from_keys(vec![key.public_key().clone()]);
//! let report = verify::verify_file("mypkg-1.0.0.escx".as_ref(), &policy, &verify::VerifyOptions::default())?;
//! println!("{} {} verified", report.package.name, report.package.version);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod archive;
pub mod cbor;
pub mod container;
pub mod content;
pub mod envelope;
mod error;
pub mod extract;
pub mod fsutil;
pub mod hash;
pub mod header;
pub mod kem;
pub mod keyfile;
pub mod pack;
pub mod policy;
pub mod progress;
pub mod rotation;
pub mod sig;
pub mod timestamp;
pub mod verify;

pub use error::{Error, ErrorClass, Fault, FormatError};

/// The `semver` crate, whose `Version` and `VersionReq` appear in this crate's API.
pub use semver;
pub use timestamp::UnixSeconds;

/// The current time in [`UnixSeconds`]; a clock before 1970 reads as 0.
pub fn now_unix() -> UnixSeconds {
    UnixSeconds(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    )
}
