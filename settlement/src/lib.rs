//! `escx-settlement`: the revenue waterfall, the double-entry ledger, signed settlement
//! statements and zero-knowledge revenue proofs (specs: settlement.md, proofs.md).
//!
//! Where to start:
//!
//! - [`events::parse_events`] and [`ledger::Manifests`]: the input of a run.
//! - [`ledger::Ledger`]: [`settle`](ledger::Ledger::settle) events idempotently in
//!   batches, each signed as a chained statement; balances, history, openings, audits,
//!   refunds; [`holds`], [`disputes`] and [`payout`] reports on the same ledger, over a
//!   [`store::Store`] (SQLite, or [`store::MemoryStore`]).
//! - [`statement`]: verify a statement and a party's openings with public keys only.
//! - [`proofs`]: range and split proofs for statements, revenue totals and thresholds.
//! - [`waterfall`]: the pure computation of a split, with its trace.
//!
//! `examples/settle_and_verify.rs` settles a batch and checks its statement, a party's
//! openings and the proofs. Errors are [`Error`], which implements [`escx::Fault`].
//!
//! Depends on [`escx`], [`escx_manifest`] (the `[revenue]` schema) and [`escx_licensing`]
//! (metered usage).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::PathBuf;

pub mod disputes;
pub mod events;
pub mod holds;
pub mod ledger;
pub mod payout;
pub mod proofs;
mod refunds;
pub mod statement;
pub mod store;
pub mod waterfall;

/// Amounts are `Micros` (u64 micro-units); signed sums (balances, credits and debits)
/// and SQLite integers are i64. Every stored or settled amount is at most `i64::MAX`
/// (SQLite refuses larger), so these saturate only on values the ledger never holds.
mod num {
    /// `value` as a signed amount.
    pub(crate) fn signed(value: impl Into<u64>) -> i64 {
        i64::try_from(value.into()).unwrap_or(i64::MAX)
    }

    /// A wide signed sum, clamped to i64.
    pub(crate) fn clamp(value: i128) -> i64 {
        i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
    }
}

/// Everything that can go wrong in settlement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The waterfall cannot be applied.
    #[error(transparent)]
    Waterfall(#[from] waterfall::WaterfallError),
    /// A record of the events file is malformed.
    #[error("{}: {}{reason}", .path.display(), record(*.index, .id.as_deref()))]
    Event {
        /// The events file.
        path: PathBuf,
        /// 1-based record number (0: the file as a whole).
        index: usize,
        /// The record's id, when it has one.
        id: Option<String>,
        /// What is wrong, starting with the field.
        reason: String,
    },
    /// A manifest in the manifests directory is invalid.
    #[error("{}: {reason}", .path.display())]
    Manifests {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An event has no usable manifest.
    #[error("event {event:?}: {what}; add it to the manifests directory")]
    NoManifest {
        /// The event id.
        event: String,
        /// What is missing.
        what: String,
    },
    /// An event's currency is not its waterfall's.
    #[error("event {event:?}: {event_currency} does not match the waterfall's currency {revenue_currency}")]
    Currency {
        /// The event id.
        event: String,
        /// The event's currency.
        event_currency: String,
        /// The `[revenue]` currency.
        revenue_currency: String,
    },
    /// A used event id with different content.
    #[error(
        "event {event:?} was settled before (settlement {settlement}) with different content; \
         history is never edited: record a refund and a new event with a new id"
    )]
    Conflict {
        /// The event id.
        event: String,
        /// Its settlement id.
        settlement: String,
    },
    /// A refund that cannot be applied.
    #[error("event {event:?}: {reason}")]
    Refund {
        /// The refund's event id.
        event: String,
        /// Why.
        reason: String,
    },
    /// A hold cannot be placed, captured or voided.
    #[error("hold {hold:?}: {reason}")]
    Hold {
        /// The hold (its event id).
        hold: String,
        /// Why.
        reason: String,
    },
    /// A dispute cannot be opened or resolved.
    #[error("settlement {settlement}: {reason}")]
    Dispute {
        /// The settlement (or the name given for it).
        settlement: String,
        /// Why.
        reason: String,
    },
    /// A statement would be signed with another key than the ledger's operator key
    /// (settlement.md §4): auditors would refuse it and every statement after it.
    #[error(
        "this ledger's statements are signed by operator key {held}; key {given} was given. Sign with the \
         ledger's key, or hand the ledger to the new key first: escx ledger rotate-key"
    )]
    OperatorKeyMismatch {
        /// The ledger's key id.
        held: String,
        /// The key id given.
        given: String,
    },
    /// The operator key cannot be handed over as asked (settlement.md §4.5).
    #[error("operator key rotation refused: {reason}")]
    OperatorKeyRotation {
        /// Why.
        reason: String,
    },
    /// A period that has not ended cannot be closed (proofs.md §3.1).
    #[error("{period} has not ended (it ends at {ends}); a period is closed once it is over")]
    PeriodOpen {
        /// `YYYY-MM`.
        period: String,
        /// Its end, RFC 3339.
        ends: String,
    },
    /// No statement with this sequence number.
    #[error("no statement {seq} in this ledger")]
    UnknownStatement {
        /// The sequence number asked for.
        seq: u64,
    },
    /// A statement, chain or opening is refused.
    #[error(transparent)]
    Statement(#[from] statement::StatementError),
    /// A zero-knowledge proof cannot be made or does not verify (proofs.md).
    #[error(transparent)]
    Proof(#[from] proofs::ProofError),
    /// The ledger's invariants do not hold.
    #[error("ledger {}: {reason}", .path.display())]
    Invariant {
        /// The ledger.
        path: PathBuf,
        /// Which invariant, and by how much.
        reason: String,
    },
    /// The ledger's database failed, is not a ledger of this build's schema, or met a
    /// concurrent writer on every attempt (the storage layer's error and codes).
    #[error(transparent)]
    Store(#[from] escx_store::Error),
    /// A file could not be read or written.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl escx_store::Retryable for Error {
    fn is_busy(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_busy())
    }
}

impl Error {
    /// A row of the ledger this crate cannot have written, or a ledger altered outside it:
    /// [`escx_store::Kind::Corrupt`] at `location`.
    pub(crate) fn stored(location: impl AsRef<std::path::Path>, reason: impl Into<String>) -> Self {
        Self::Store(escx_store::Error::corrupt(location.as_ref().display().to_string(), reason))
    }
}

fn record(index: usize, id: Option<&str>) -> String {
    match (index, id) {
        (0, _) => String::new(),
        (n, Some(id)) => format!("record {n} (id {id:?}): "),
        (n, None) => format!("record {n}: "),
    }
}

impl escx::Fault for Error {
    fn code(&self) -> &'static str {
        match self {
            Self::Waterfall(e) => e.code(),
            Self::Event { .. } => "event-invalid",
            Self::Manifests { .. } => "manifest-invalid",
            Self::NoManifest { .. } => "no-manifest",
            Self::Currency { .. } => "currency-mismatch",
            Self::Conflict { .. } => "settlement-conflict",
            Self::Refund { .. } => "refund-invalid",
            Self::Hold { .. } => "hold-invalid",
            Self::Dispute { .. } => "dispute-invalid",
            Self::Invariant { .. } => "ledger-invariant",
            Self::UnknownStatement { .. } => "unknown-statement",
            Self::PeriodOpen { .. } => "period-open",
            Self::OperatorKeyMismatch { .. } => "operator-key-mismatch",
            Self::OperatorKeyRotation { .. } => "rotation-invalid",
            Self::Statement(e) => e.code(),
            Self::Proof(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Io { .. } => "io",
        }
    }

    fn class(&self) -> escx::ErrorClass {
        match self {
            Self::Store(e) => e.class(),
            Self::Io { .. } => escx::ErrorClass::Environment,
            _ => escx::ErrorClass::Input,
        }
    }

    fn help(&self) -> Option<&'static str> {
        match self {
            Self::Store(e) => e.help(),
            _ => None,
        }
    }
}
