//! Storage behind the ledger (spec: settlement.md §3.1, §5.4–5.5).
//!
//! The engine (`ledger`, `holds`, `disputes`, `payout`) decides what to write; a [`Store`]
//! only keeps rows and runs transactions. Two implement it, the same pattern as the
//! issuer's and the operator's stores: [`SqlStore`], one set of statements on a SQLite file
//! or a PostgreSQL database through the storage layer (`escx_store`), and [`MemoryStore`]
//! (tests, and the reference the SQL store is compared with). A store must give every
//! [`Store::begin`] transaction serializable isolation: the engine re-reads what it depends
//! on (a settlement's content, recoupment totals, a hold's state, the last statement)
//! inside the transaction and relies on no other writer changing it before the commit. A
//! store that can refuse a commit for a concurrent one reports a busy
//! [`Error::Store`], and the engine runs the transaction again.

use escx::UnixSeconds;
use escx::header::PackageName;
use escx_manifest::Micros;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::Error;
use crate::statement::Opening;

/// Implements [`Reader`] for `$type` by forwarding every query to `$inner`, an expression
/// over `$self` whose type has the same methods (the backends' shared query code).
macro_rules! forward_reader {
    ($type:ty, $self:ident => $inner:expr) => {
        forward_reader!(@impl $type, $self => $inner, {});
    };
    // `$inner` is itself a `Reader` (or has `settlements`): its batched lookup is used.
    ($type:ty, $self:ident => $inner:expr, batched) => {
        forward_reader!(@impl $type, $self => $inner, {
            fn settlements(&$self, ids: &[&str]) -> Result<std::collections::HashMap<String, SettlementRecord>, Error> { $inner.settlements(ids) }
        });
    };
    (@impl $type:ty, $self:ident => $inner:expr, { $($extra:item)* }) => {
        impl Reader for $type {
            fn location(&$self) -> PathBuf { $inner.location() }
            fn meta(&$self, key: &str) -> Result<Option<String>, Error> { $inner.meta(key) }
            fn settlement(&$self, id: &str) -> Result<Option<SettlementRecord>, Error> { $inner.settlement(id) }
            fn settlement_ids_starting(&$self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> { $inner.settlement_ids_starting(prefix, limit) }
            fn refunds_of(&$self, target: &str) -> Result<Vec<String>, Error> { $inner.refunds_of(target) }
            fn transfers_of(&$self, settlement: &str) -> Result<Vec<TransferRecord>, Error> { $inner.transfers_of(settlement) }
            fn recouped(&$self, currency: &str) -> Result<BTreeMap<String, Micros>, Error> { $inner.recouped(currency) }
            fn settlement_recoup(&$self, settlement: &str) -> Result<Vec<(String, i64)>, Error> { $inner.settlement_recoup(settlement) }
            fn statements(&$self) -> Result<Vec<StatementRecord>, Error> { $inner.statements() }
            fn statement(&$self, seq: u64) -> Result<Option<StatementRecord>, Error> { $inner.statement(seq) }
            fn last_statement(&$self) -> Result<Option<(u64, [u8; 32], UnixSeconds)>, Error> { $inner.last_statement() }
            fn openings(&$self, seq: u64, party: &str) -> Result<Vec<Opening>, Error> { $inner.openings(seq, party) }
            fn statement_openings(&$self, seq: u64) -> Result<Vec<Opening>, Error> { $inner.statement_openings(seq) }
            fn hold(&$self, settlement: &str) -> Result<Option<HoldRecord>, Error> { $inner.hold(settlement) }
            fn holds(&$self, state: Option<$crate::store::HoldState>) -> Result<Vec<(HoldRecord, SettlementRecord)>, Error> { $inner.holds(state) }
            fn disputes(&$self) -> Result<Vec<(DisputeRecord, SettlementRecord)>, Error> { $inner.disputes() }
            fn open_dispute(&$self, settlement: &str) -> Result<Option<DisputeRecord>, Error> { $inner.open_dispute(settlement) }
            fn balances(&$self, name: Option<&str>) -> Result<Vec<Balance>, Error> { $inner.balances(name) }
            fn party_transfers(&$self, from: UnixSeconds, to: UnixSeconds) -> Result<Vec<PartyTransfer>, Error> { $inner.party_transfers(from, to) }
            fn counts(&$self) -> Result<(u64, u64), Error> { $inner.counts() }
            fn unconserved(&$self) -> Result<Vec<String>, Error> { $inner.unconserved() }
            $($extra)*
        }
    };
}

mod memory;
mod schema;
mod sql;

pub(crate) use memory::MEMORY;
pub use memory::MemoryStore;
pub use memory::MemoryTx;
pub use sql::{SCHEMA_VERSION, SqlStore, SqlTx};

/// An account's key in a store.
pub type AccountId = i64;

/// A closed set of names stored as text: `name()` is what is stored and printed, `parse`
/// its inverse; serialized and deserialized as the name.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            /// The name stored and printed.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The value named `text`.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown {} {text:?}", stringify!($name)))
                })
            }
        }
    };
}
pub(crate) use named_enum;

named_enum! {
    /// What a settlement records (settlement.md §3).
    RecordKind {
        /// A one-off purchase.
        Sale => "sale",
        /// Metered usage for a period.
        Usage => "usage",
        /// Gives back part or all of a sale or usage.
        Refund => "refund",
        /// A budget hold (no transfers to parties until captured).
        Hold => "hold",
        /// A dispute's reversal.
        Reversal => "reversal",
    }
}

impl RecordKind {
    /// Sales and usage: revenue that can be refunded or disputed.
    pub fn is_revenue(self) -> bool {
        matches!(self, Self::Sale | Self::Usage)
    }

    /// Refunds and reversals: money given back.
    pub fn gives_back(self) -> bool {
        matches!(self, Self::Refund | Self::Reversal)
    }
}

impl From<crate::events::Kind> for RecordKind {
    fn from(kind: crate::events::Kind) -> Self {
        match kind {
            crate::events::Kind::Sale => Self::Sale,
            crate::events::Kind::Usage => Self::Usage,
            crate::events::Kind::Refund => Self::Refund,
        }
    }
}

named_enum! {
    /// A settlement's state (settlement.md §3).
    SettlementState {
        /// A hold not yet captured or voided.
        Pending => "PENDING",
        /// Applied.
        Settled => "SETTLED",
        /// Fully refunded, voided or reversed.
        Cancelled => "CANCELLED",
        /// Under an open dispute.
        Disputed => "DISPUTED",
    }
}

named_enum! {
    /// A hold's state (settlement.md §5.2).
    HoldState {
        /// Placed, not yet captured or voided.
        Pending => "PENDING",
        /// Captured (settled for the amount captured).
        Captured => "CAPTURED",
        /// Voided, or lapsed.
        Voided => "VOIDED",
    }
}

/// One settlement row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementRecord {
    /// Hex of `derive_key("escx v1 settlement id", event id)`.
    pub id: String,
    /// The event id (or `capture ...`, `reversal ...`).
    pub event_id: String,
    /// The content hash (32 bytes).
    pub content: Vec<u8>,
    /// What it records.
    pub kind: RecordKind,
    /// Package.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// Gross, micro-units.
    pub gross: Micros,
    /// Currency.
    pub currency: String,
    /// Unix seconds the settlement counts at.
    pub at: UnixSeconds,
    /// Its state.
    pub state: SettlementState,
    /// For a refund or reversal: the settlement it gives back.
    pub refund_of: Option<String>,
    /// The statement (batch) number; 0 for a hold.
    pub batch: u64,
}

/// One transfer of a settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// Debited account.
    pub debit: AccountId,
    /// Credited account.
    pub credit: AccountId,
    /// The credited account's name.
    pub credit_name: String,
    /// Micro-units, > 0.
    pub amount: Micros,
}

/// A transfer touching a party, with its settlement, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyTransfer {
    /// Settlement id.
    pub settlement: String,
    /// Settlement time.
    pub at: UnixSeconds,
    /// Settlement kind.
    pub kind: RecordKind,
    /// The settlement's event id.
    pub event: String,
    /// Its package.
    pub package: PackageName,
    /// Its state.
    pub state: SettlementState,
    /// Settlement gross.
    pub gross: Micros,
    /// The party (account name, not starting with `@`).
    pub party: String,
    /// Currency.
    pub currency: String,
    /// Credit (positive) or debit (negative) of the party.
    pub amount: i64,
}

/// One hold row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRecord {
    /// The hold's settlement id.
    pub settlement: String,
    /// Canonical CBOR of the held event.
    pub event: Vec<u8>,
    /// Amount held.
    pub amount: Micros,
    /// When placed.
    pub placed_at: UnixSeconds,
    /// When it lapses.
    pub expires_at: UnixSeconds,
    /// Its state.
    pub state: HoldState,
    /// Amount captured.
    pub captured: Option<Micros>,
    /// When captured or voided.
    pub closed_at: Option<UnixSeconds>,
}

/// One dispute row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeRecord {
    /// Row id.
    pub id: i64,
    /// Disputed settlement.
    pub settlement: String,
    /// When opened.
    pub opened_at: UnixSeconds,
    /// Why.
    pub reason: String,
    /// When resolved.
    pub resolved_at: Option<UnixSeconds>,
    /// How it was resolved.
    pub outcome: Option<crate::disputes::Outcome>,
    /// The resolution note.
    pub resolution: Option<String>,
}

/// One statement row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRecord {
    /// Sequence number.
    pub seq: u64,
    /// Statement hash.
    pub hash: [u8; 32],
    /// When signed.
    pub issued_at: UnixSeconds,
    /// Entries in it.
    pub entries: u64,
    /// The signed envelope.
    pub bytes: Vec<u8>,
}

/// One account's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Account name (`@customers`, `@holds`, or a party).
    pub account: String,
    /// Currency.
    pub currency: String,
    /// Credits minus debits, micro-units.
    pub micros: i64,
}

/// Queries, on a store or inside a transaction.
pub trait Reader {
    /// Where the store lives (a file, or `(memory)`), for error messages.
    fn location(&self) -> PathBuf;
    /// A `meta` value.
    fn meta(&self, key: &str) -> Result<Option<String>, Error>;
    /// A settlement by id.
    fn settlement(&self, id: &str) -> Result<Option<SettlementRecord>, Error>;
    /// The settlements among `ids` that exist, by id: what [`Reader::settlement`] gives
    /// for each, in one query where the backend can (a network round trip per id is what
    /// a batch must not pay).
    fn settlements(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, SettlementRecord>, Error> {
        let mut found = std::collections::HashMap::new();
        for id in ids {
            if let Some(held) = self.settlement(id)? {
                found.insert((*id).to_owned(), held);
            }
        }
        Ok(found)
    }
    /// Up to `limit` settlement ids that start with `prefix`, in order.
    fn settlement_ids_starting(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error>;
    /// The ids of the settlements (refunds, reversals) whose `refund_of` is `target`.
    fn refunds_of(&self, target: &str) -> Result<Vec<String>, Error>;
    /// A settlement's transfers, in the order written.
    fn transfers_of(&self, settlement: &str) -> Result<Vec<TransferRecord>, Error>;
    /// Recoupment totals of a currency, by party.
    fn recouped(&self, currency: &str) -> Result<BTreeMap<String, Micros>, Error>;
    /// What a settlement changed in each party's recoupment total.
    fn settlement_recoup(&self, settlement: &str) -> Result<Vec<(String, i64)>, Error>;
    /// Every statement, by sequence number, without its bytes (`bytes` is empty).
    fn statements(&self) -> Result<Vec<StatementRecord>, Error>;
    /// One statement.
    fn statement(&self, seq: u64) -> Result<Option<StatementRecord>, Error>;
    /// The sequence number, hash and issue time of the last statement.
    fn last_statement(&self) -> Result<Option<(u64, [u8; 32], UnixSeconds)>, Error>;
    /// A party's openings for statement `seq`, by entry.
    fn openings(&self, seq: u64, party: &str) -> Result<Vec<Opening>, Error>;
    /// Every opening of statement `seq` (the gross's have no party), by entry.
    fn statement_openings(&self, seq: u64) -> Result<Vec<Opening>, Error>;
    /// A hold by its settlement id.
    fn hold(&self, settlement: &str) -> Result<Option<HoldRecord>, Error>;
    /// Every hold (only those in `state` if given), by placing time then event id.
    fn holds(&self, state: Option<HoldState>) -> Result<Vec<(HoldRecord, SettlementRecord)>, Error>;
    /// Every dispute, by opening time.
    fn disputes(&self) -> Result<Vec<(DisputeRecord, SettlementRecord)>, Error>;
    /// The unresolved dispute on a settlement.
    fn open_dispute(&self, settlement: &str) -> Result<Option<DisputeRecord>, Error>;
    /// Every account's balance (or `name`'s), by name then currency.
    fn balances(&self, name: Option<&str>) -> Result<Vec<Balance>, Error>;
    /// Every transfer touching a party account, of settlements (other than holds) with
    /// `from <= at < to`, by time, settlement id and transfer order.
    fn party_transfers(&self, from: UnixSeconds, to: UnixSeconds) -> Result<Vec<PartyTransfer>, Error>;
    /// Numbers of settlements and transfers.
    fn counts(&self) -> Result<(u64, u64), Error>;
    /// Ids of sale, usage, refund and reversal settlements whose transfers do not sum to
    /// their gross.
    fn unconserved(&self) -> Result<Vec<String>, Error>;
}

/// Writes, inside a transaction.
pub trait Writer: Reader {
    /// The id of account `(name, currency)`, created if missing.
    fn account(&mut self, name: &str, currency: &str) -> Result<AccountId, Error>;
    /// Inserts a settlement (its id must be new).
    fn insert_settlement(&mut self, settlement: &SettlementRecord) -> Result<(), Error>;
    /// Changes a settlement's state (the only edit the engine makes to a settlement).
    fn set_state(&mut self, id: &str, state: SettlementState) -> Result<(), Error>;
    /// Inserts a transfer (`amount > 0`, `debit != credit`).
    fn insert_transfer(
        &mut self,
        settlement: &str,
        debit: AccountId,
        credit: AccountId,
        amount: Micros,
    ) -> Result<(), Error>;
    /// Sets a party's recoupment total.
    fn set_recouped(&mut self, party: &str, currency: &str, total: Micros) -> Result<(), Error>;
    /// Records what a settlement changed in a party's recoupment total.
    fn add_settlement_recoup(&mut self, settlement: &str, party: &str, amount: i64) -> Result<(), Error>;
    /// Inserts a statement and the openings of its commitments.
    fn insert_statement(&mut self, statement: &StatementRecord, openings: &[Opening]) -> Result<(), Error>;
    /// Appends an audit row.
    fn audit(&mut self, at: UnixSeconds, action: &str, subject: &str, detail: &str) -> Result<(), Error>;
    /// Inserts a hold.
    fn insert_hold(&mut self, hold: &HoldRecord) -> Result<(), Error>;
    /// Closes a hold: `CAPTURED` (with the amount) or `VOIDED`.
    fn close_hold(
        &mut self,
        settlement: &str,
        state: HoldState,
        captured: Option<Micros>,
        at: UnixSeconds,
    ) -> Result<(), Error>;
    /// Opens a dispute.
    fn insert_dispute(&mut self, settlement: &str, opened_at: UnixSeconds, reason: &str)
    -> Result<(), Error>;
    /// Resolves dispute `id`.
    fn resolve_dispute(
        &mut self,
        id: i64,
        at: UnixSeconds,
        outcome: crate::disputes::Outcome,
        resolution: &str,
    ) -> Result<(), Error>;
    /// Sets a `meta` value.
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error>;
    /// Makes every write of the transaction durable at once. Dropping the transaction
    /// without committing discards them.
    fn commit(self) -> Result<(), Error>;
}

/// A ledger store: queries, and serializable write transactions.
pub trait Store: Reader {
    /// A write transaction.
    type Tx<'a>: Writer
    where
        Self: 'a;
    /// Begins a write transaction (exclusive for writers, serializable).
    fn begin(&mut self) -> Result<Self::Tx<'_>, Error>;
}
