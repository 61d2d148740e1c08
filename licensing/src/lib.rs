//! `escx-licensing`: blind license issuance (RFC 9497 POPRF), anonymous redemption into
//! ML-DSA-87-signed license certificates, offline verification, revocation, and the
//! customer-side usage meter.
//!
//! Depends on [`escx`] (keys, envelopes, hashing) and [`escx_manifest`] (pricing and
//! telemetry types). Its contents arrive with the licensing issue.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use escx_manifest;
