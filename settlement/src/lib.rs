//! `escx-settlement`: the revenue waterfall, the double-entry ledger, signed settlement
//! statements and zero-knowledge revenue proofs.
//!
//! Depends on [`escx`], [`escx_manifest`] (the `[revenue]` schema) and [`escx_licensing`]
//! (metered usage).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use escx_licensing;

pub mod waterfall;
