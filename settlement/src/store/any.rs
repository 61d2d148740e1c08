//! A ledger store chosen at run time: a SQLite file or a PostgreSQL URL (settlement.md
//! §5.5), so one command line serves both.

use escx::UnixSeconds;
use escx_manifest::Micros;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    AccountId, Balance, DisputeRecord, HoldRecord, HoldState, PartyTransfer, PgStore, PgTx, Reader,
    SettlementRecord, SettlementState, SqliteStore, SqliteTx, StatementRecord, Store, TransferRecord, Writer,
};
use crate::Error;
use crate::disputes::Outcome;
use crate::statement::Opening;

/// Where a ledger lives: `postgres://…` or `postgresql://…` is a PostgreSQL database, any
/// other text a SQLite file.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// A SQLite or PostgreSQL ledger store.
pub enum AnyStore {
    /// A SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(Box<PgStore>),
}

/// A write transaction on an [`AnyStore`].
pub enum AnyTx<'a> {
    /// On a SQLite file.
    Sqlite(SqliteTx<'a>),
    /// On a PostgreSQL database.
    Postgres(PgTx<'a>),
}

impl AnyStore {
    /// Creates a ledger at `location` with `meta` rows.
    pub fn create(location: &str, meta: &[(&str, String)]) -> Result<Self, Error> {
        Ok(if is_postgres_url(location) {
            Self::Postgres(Box::new(PgStore::create(location, meta)?))
        } else {
            Self::Sqlite(SqliteStore::create(Path::new(location), meta)?)
        })
    }

    /// Opens the ledger at `location`, migrating an older schema.
    pub fn open(location: &str) -> Result<Self, Error> {
        Ok(if is_postgres_url(location) {
            Self::Postgres(Box::new(PgStore::open(location)?))
        } else {
            Self::Sqlite(SqliteStore::open(Path::new(location))?)
        })
    }

    fn reader(&self) -> &dyn Reader {
        match self {
            Self::Sqlite(s) => s,
            Self::Postgres(s) => s.as_ref(),
        }
    }
}

impl AnyTx<'_> {
    fn reader(&self) -> &dyn Reader {
        match self {
            Self::Sqlite(t) => t,
            Self::Postgres(t) => t,
        }
    }
}

forward_reader!(AnyStore, self => self.reader(), batched);
forward_reader!(AnyTx<'_>, self => self.reader(), batched);

impl Store for AnyStore {
    type Tx<'a> = AnyTx<'a>;

    fn begin(&mut self) -> Result<AnyTx<'_>, Error> {
        Ok(match self {
            Self::Sqlite(s) => AnyTx::Sqlite(s.begin()?),
            Self::Postgres(s) => AnyTx::Postgres(s.begin()?),
        })
    }
}

/// `$call` on whichever transaction `$self` holds.
macro_rules! each {
    ($self:ident, $tx:ident => $call:expr) => {
        match $self {
            AnyTx::Sqlite($tx) => $call,
            AnyTx::Postgres($tx) => $call,
        }
    };
}

impl Writer for AnyTx<'_> {
    fn account(&mut self, name: &str, currency: &str) -> Result<AccountId, Error> {
        each!(self, t => t.account(name, currency))
    }
    fn insert_settlement(&mut self, settlement: &SettlementRecord) -> Result<(), Error> {
        each!(self, t => t.insert_settlement(settlement))
    }
    fn set_state(&mut self, id: &str, state: SettlementState) -> Result<(), Error> {
        each!(self, t => t.set_state(id, state))
    }
    fn insert_transfer(
        &mut self,
        settlement: &str,
        debit: AccountId,
        credit: AccountId,
        amount: Micros,
    ) -> Result<(), Error> {
        each!(self, t => t.insert_transfer(settlement, debit, credit, amount))
    }
    fn set_recouped(&mut self, party: &str, currency: &str, total: Micros) -> Result<(), Error> {
        each!(self, t => t.set_recouped(party, currency, total))
    }
    fn add_settlement_recoup(&mut self, settlement: &str, party: &str, amount: i64) -> Result<(), Error> {
        each!(self, t => t.add_settlement_recoup(settlement, party, amount))
    }
    fn insert_statement(&mut self, statement: &StatementRecord, openings: &[Opening]) -> Result<(), Error> {
        each!(self, t => t.insert_statement(statement, openings))
    }
    fn audit(&mut self, at: UnixSeconds, action: &str, subject: &str, detail: &str) -> Result<(), Error> {
        each!(self, t => t.audit(at, action, subject, detail))
    }
    fn insert_hold(&mut self, hold: &HoldRecord) -> Result<(), Error> {
        each!(self, t => t.insert_hold(hold))
    }
    fn close_hold(
        &mut self,
        settlement: &str,
        state: HoldState,
        captured: Option<Micros>,
        at: UnixSeconds,
    ) -> Result<(), Error> {
        each!(self, t => t.close_hold(settlement, state, captured, at))
    }
    fn insert_dispute(
        &mut self,
        settlement: &str,
        opened_at: UnixSeconds,
        reason: &str,
    ) -> Result<(), Error> {
        each!(self, t => t.insert_dispute(settlement, opened_at, reason))
    }
    fn resolve_dispute(
        &mut self,
        id: i64,
        at: UnixSeconds,
        outcome: Outcome,
        resolution: &str,
    ) -> Result<(), Error> {
        each!(self, t => t.resolve_dispute(id, at, outcome, resolution))
    }
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error> {
        each!(self, t => t.set_meta(key, value))
    }
    fn commit(self) -> Result<(), Error> {
        each!(self, t => t.commit())
    }
}
