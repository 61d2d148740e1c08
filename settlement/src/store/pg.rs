//! The PostgreSQL store (settlement.md §5.4): one ledger per database (or per schema, with
//! `options=-csearch_path=...` in the URL), versioned migrations applied in one
//! transaction, and write transactions that take the ledger's advisory lock and then run
//! at `SERIALIZABLE`.
//!
//! The lock makes writers to one ledger take turns, so the statement chain stays linear
//! with any number of service nodes; `SERIALIZABLE` is the guarantee the engine's
//! re-reads rely on whatever else writes to the database. The lock is a session lock
//! taken *before* `BEGIN`: a transaction-level lock taken by the transaction's first
//! statement would be taken after that statement's snapshot, and a writer that waited for
//! it would read the ledger as it was before the previous writer committed.
//!
//! Serialization failures (SQLSTATE 40001) and deadlocks (40P01) are [`Error::Busy`]; the
//! engine retries them (`crate::ledger::retrying`).

use escx::UnixSeconds;
use escx_manifest::Micros;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Row, Statement};
use std::collections::HashMap;

use super::{
    AccountId, Balance, DisputeRecord, HoldRecord, HoldState, PartyTransfer, Reader, RecordKind,
    SettlementRecord, SettlementState, StatementRecord, Store, TransferRecord, Writer,
};
use crate::Error;
use crate::disputes::Outcome;
use crate::statement::Opening;

/// Schema migrations, in order: migration `n` (1-based) takes the version from `n - 1` to
/// `n`. The same tables as the SQLite store's, in PostgreSQL's types.
const MIGRATIONS: [&str; 2] = [SCHEMA_V1, SCHEMA_V2];

const SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE accounts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    UNIQUE (name, currency)
);
CREATE TABLE settlements (
    id TEXT PRIMARY KEY COLLATE \"C\",
    event_id TEXT NOT NULL UNIQUE,
    content BYTEA NOT NULL,
    kind TEXT NOT NULL,
    package TEXT NOT NULL,
    tier TEXT NOT NULL,
    gross BIGINT NOT NULL CHECK (gross >= 0),
    currency TEXT NOT NULL,
    at BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'SETTLED', 'CANCELLED', 'DISPUTED')),
    refund_of TEXT REFERENCES settlements (id),
    batch BIGINT NOT NULL
);
CREATE INDEX settlements_at ON settlements (at);
CREATE INDEX settlements_refund_of ON settlements (refund_of);
CREATE TABLE transfers (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    settlement TEXT NOT NULL REFERENCES settlements (id),
    debit BIGINT NOT NULL REFERENCES accounts (id),
    credit BIGINT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    CHECK (debit <> credit)
);
CREATE INDEX transfers_settlement ON transfers (settlement);
CREATE INDEX transfers_debit ON transfers (debit);
CREATE INDEX transfers_credit ON transfers (credit);
CREATE TABLE recoupment (
    party TEXT NOT NULL,
    currency TEXT NOT NULL,
    total BIGINT NOT NULL CHECK (total >= 0),
    PRIMARY KEY (party, currency)
);
CREATE TABLE settlement_recoup (
    settlement TEXT NOT NULL REFERENCES settlements (id),
    party TEXT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (settlement, party)
);
CREATE TABLE statements (
    seq BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL UNIQUE,
    issued_at BIGINT NOT NULL,
    entries BIGINT NOT NULL,
    bytes BYTEA NOT NULL
);
CREATE TABLE statement_openings (
    seq BIGINT NOT NULL REFERENCES statements (seq),
    entry BIGINT NOT NULL,
    party TEXT,
    amount BIGINT NOT NULL,
    blinding BYTEA NOT NULL
);
CREATE INDEX statement_openings_party ON statement_openings (seq, party);
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// Version 2: two-phase budget holds and disputes.
const SCHEMA_V2: &str = "
CREATE TABLE holds (
    settlement TEXT PRIMARY KEY REFERENCES settlements (id),
    event BYTEA NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    placed_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'CAPTURED', 'VOIDED')),
    captured BIGINT,
    closed_at BIGINT
);
CREATE TABLE disputes (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    settlement TEXT NOT NULL REFERENCES settlements (id),
    opened_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    resolved_at BIGINT,
    outcome TEXT CHECK (outcome IN ('upheld', 'reversed')),
    resolution TEXT
);
CREATE UNIQUE INDEX disputes_open ON disputes (settlement) WHERE resolved_at IS NULL;
";

/// The schema version this build writes.
#[allow(clippy::cast_possible_wrap)] // a handful of migrations, known at compile time
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key of the ledger's writers and migrations: the first 8 bytes of
/// BLAKE3("escx v1 ledger writer lock"), as a big-endian signed integer.
fn lock_key() -> i64 {
    let hash = blake3::hash(b"escx v1 ledger writer lock");
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_be_bytes(first)
}

/// The PostgreSQL ledger store.
pub struct PgStore {
    client: RefCell<Client>,
    /// To connect again when the server closed the connection (a restart, a failover).
    url: String,
    /// The URL without its password, for messages.
    location: PathBuf,
    /// Statements prepared on this connection, by their text: one round trip each after
    /// the first, instead of a prepare and an execute.
    prepared: RefCell<HashMap<String, Statement>>,
}

/// A write transaction on a [`PgStore`]: the ledger's lock held, `SERIALIZABLE`. Dropped
/// without [`Writer::commit`], it rolls back.
pub struct PgTx<'a> {
    store: &'a PgStore,
    committed: bool,
    /// Rows not yet sent: written, a statement per table, before the next query or other
    /// write of this transaction and before its commit, so nothing reads or writes past
    /// them.
    pending: RefCell<Pending>,
    /// Recoupment totals read in this transaction, by currency, with its own changes
    /// applied: the settlements of a batch read them one after another.
    recouped: RefCell<HashMap<String, BTreeMap<String, Micros>>>,
}

/// The buffered writes of a [`PgTx`], in the order their tables must be written
/// (settlements before the rows that reference them).
#[derive(Default)]
struct Pending {
    settlements: Vec<SettlementRecord>,
    transfers: Vec<(String, i64, i64, i64)>,
    settlement_recoup: Vec<(String, String, i64)>,
    /// Final totals by (party, currency).
    recoupment: BTreeMap<(String, String), i64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.settlements.is_empty()
            && self.transfers.is_empty()
            && self.settlement_recoup.is_empty()
            && self.recoupment.is_empty()
    }
}

pub use escx_store::redact;

fn failure(location: &Path, e: &postgres::Error) -> Error {
    use postgres::error::SqlState;
    let reason = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    match e.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            Error::Busy { path: location.into(), reason }
        }
        _ => Error::Store { path: location.into(), reason },
    }
}

fn corrupt(location: &Path, what: &str) -> Error {
    Error::Store { path: location.into(), reason: format!("corrupt row: {what}") }
}

fn signed(location: &Path, value: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Store {
        path: location.into(),
        reason: format!("{what} {value} is beyond PostgreSQL's BIGINT"),
    })
}

impl PgStore {
    fn connect(url: &str) -> Result<Client, Error> {
        let location = PathBuf::from(redact(url));
        Client::connect(url, NoTls).map_err(|e| failure(&location, &e))
    }

    /// Creates a ledger in the database at `url` (which must hold no ledger yet): every
    /// migration and the `meta` rows, in one transaction.
    pub fn create(url: &str, meta: &[(&str, String)]) -> Result<Self, Error> {
        let store = Self {
            client: RefCell::new(Self::connect(url)?),
            url: url.to_owned(),
            location: redact(url).into(),
            prepared: RefCell::default(),
        };
        store.migrate(Some(meta))?;
        Ok(store)
    }

    /// Opens the ledger at `url`, running the migrations it lacks (in one transaction);
    /// refuses a database with no ledger or a newer schema than this build's.
    pub fn open(url: &str) -> Result<Self, Error> {
        let store = Self {
            client: RefCell::new(Self::connect(url)?),
            url: url.to_owned(),
            location: redact(url).into(),
            prepared: RefCell::default(),
        };
        store.migrate(None)?;
        Ok(store)
    }

    /// The connection, opened again first if the server has closed it (a restart, a
    /// failover): the request that met the closed connection failed with `ledger-store`;
    /// the next one reconnects. A failed reconnect leaves the closed connection, whose
    /// error the request then reports.
    fn live(&self) -> &RefCell<Client> {
        if self.client.borrow().is_closed()
            && let Ok(client) = Client::connect(&self.url, NoTls)
        {
            *self.client.borrow_mut() = client;
            self.prepared.borrow_mut().clear();
        }
        &self.client
    }

    /// The version of the ledger's schema, 0 for a database without one.
    fn version(client: &mut Client, location: &Path) -> Result<i64, Error> {
        let exists: bool = client
            .query_one("SELECT to_regclass('escx_schema') IS NOT NULL", &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| failure(location, &e))?;
        if !exists {
            return Ok(0);
        }
        client
            .query_one("SELECT version FROM escx_schema", &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| failure(location, &e))
    }

    /// Creates (`meta` given) or brings up to date (`None`) the ledger's schema, under the
    /// writers' lock so that two nodes starting at once migrate once.
    fn migrate(&self, meta: Option<&[(&str, String)]>) -> Result<(), Error> {
        let location = self.location.clone();
        let client = &mut *self.client.borrow_mut();
        let fail = |e: postgres::Error| failure(&location, &e);
        let mut tx = client.transaction().map_err(fail)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key()]).map_err(fail)?;
        // Read after the lock: this statement's snapshot sees a migration that committed
        // while this one waited (READ COMMITTED takes one per statement).
        let exists: bool = tx
            .query_one("SELECT to_regclass('escx_schema') IS NOT NULL", &[])
            .and_then(|r| r.try_get(0))
            .map_err(fail)?;
        let version: i64 = if exists {
            tx.query_one("SELECT version FROM escx_schema", &[]).and_then(|r| r.try_get(0)).map_err(fail)?
        } else {
            0
        };
        match (meta, version) {
            (Some(_), 0) => {}
            (Some(_), _) => {
                return Err(Error::Store {
                    path: location.clone(),
                    reason: "holds a ledger already; open it instead".into(),
                });
            }
            (None, 0) => {
                return Err(Error::Store {
                    path: location.clone(),
                    reason: "no ledger here; create one first".into(),
                });
            }
            (None, v) if v > SCHEMA_VERSION => {
                return Err(Error::Schema { path: location.clone(), found: v, expected: SCHEMA_VERSION });
            }
            (None, v) if v == SCHEMA_VERSION => return tx.commit().map_err(fail),
            (None, _) => {}
        }
        if version == 0 {
            tx.batch_execute(
                "CREATE TABLE escx_schema (version BIGINT NOT NULL); INSERT INTO escx_schema VALUES (0)",
            )
            .map_err(fail)?;
        }
        for migration in MIGRATIONS.iter().skip(usize::try_from(version).unwrap_or(0)) {
            tx.batch_execute(migration).map_err(fail)?;
        }
        for (key, value) in meta.unwrap_or(&[]) {
            tx.execute("INSERT INTO meta (key, value) VALUES ($1, $2)", &[key, value]).map_err(fail)?;
        }
        tx.execute("UPDATE escx_schema SET version = $1", &[&SCHEMA_VERSION]).map_err(fail)?;
        tx.commit().map_err(fail)
    }

    /// The schema version of the ledger at `url` (0: none), without migrating it.
    pub fn schema_version(url: &str) -> Result<i64, Error> {
        let location = PathBuf::from(redact(url));
        Self::version(&mut Self::connect(url)?, &location)
    }

    /// The URL, without its password.
    pub fn location_text(&self) -> String {
        self.location.display().to_string()
    }
}

impl Store for PgStore {
    type Tx<'a> = PgTx<'a>;

    fn begin(&mut self) -> Result<PgTx<'_>, Error> {
        let location = &self.location;
        let mut client = self.live().borrow_mut();
        client.execute("SELECT pg_advisory_lock($1)", &[&lock_key()]).map_err(|e| failure(location, &e))?;
        if let Err(e) = client.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE") {
            let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&lock_key()]);
            return Err(failure(location, &e));
        }
        drop(client);
        Ok(PgTx { store: self, committed: false, pending: RefCell::default(), recouped: RefCell::default() })
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        let mut client = self.store.client.borrow_mut();
        if !self.committed {
            let _ = client.batch_execute("ROLLBACK");
        }
        // A broken connection released the lock with its session.
        let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&lock_key()]);
    }
}

/// The queries, shared by the store and its transactions.
struct Q<'c> {
    client: &'c RefCell<Client>,
    location: &'c Path,
    prepared: &'c RefCell<HashMap<String, Statement>>,
}

/// `sql` prepared once per connection.
fn prepared(
    client: &mut Client,
    cache: &RefCell<HashMap<String, Statement>>,
    location: &Path,
    sql: &str,
) -> Result<Statement, Error> {
    if let Some(statement) = cache.borrow().get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(sql).map_err(|e| failure(location, &e))?;
    cache.borrow_mut().insert(sql.to_owned(), statement.clone());
    Ok(statement)
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl Q<'_> {
    fn rows(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let client = &mut *self.client.borrow_mut();
        let statement = prepared(client, self.prepared, self.location, sql)?;
        client.query(&statement, params).map_err(|e| failure(self.location, &e))
    }

    fn list<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        map: impl Fn(&Row) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        self.rows(sql, params)?.iter().map(map).collect()
    }

    fn one<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        map: impl Fn(&Row) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        self.rows(sql, params)?.first().map(map).transpose()
    }

    fn get<'r, T: postgres::types::FromSql<'r>>(&self, row: &'r Row, index: usize) -> Result<T, Error> {
        row.try_get(index).map_err(|e| failure(self.location, &e))
    }

    fn unsigned(&self, row: &Row, index: usize, what: &str) -> Result<u64, Error> {
        u64::try_from(self.get::<i64>(row, index)?).map_err(|_| corrupt(self.location, what))
    }

    fn micros(&self, row: &Row, index: usize) -> Result<Micros, Error> {
        self.unsigned(row, index, "negative amount").map(Micros)
    }

    fn time(&self, row: &Row, index: usize) -> Result<UnixSeconds, Error> {
        self.unsigned(row, index, "negative time").map(UnixSeconds)
    }

    fn optional_time(&self, row: &Row, index: usize) -> Result<Option<UnixSeconds>, Error> {
        self.get::<Option<i64>>(row, index)?
            .map(|t| u64::try_from(t).map(UnixSeconds).map_err(|_| corrupt(self.location, "negative time")))
            .transpose()
    }

    fn named<T>(&self, row: &Row, index: usize, parse: fn(&str) -> Option<T>) -> Result<T, Error> {
        let text: String = self.get(row, index)?;
        parse(&text).ok_or_else(|| corrupt(self.location, &format!("unknown name {text:?}")))
    }

    fn settlement_row(&self, r: &Row) -> Result<SettlementRecord, Error> {
        let package: String = self.get(r, 4)?;
        Ok(SettlementRecord {
            id: self.get(r, 0)?,
            event_id: self.get(r, 1)?,
            content: self.get(r, 2)?,
            kind: self.named(r, 3, RecordKind::parse)?,
            package: escx::manifest::PackageName::parse(&package)
                .map_err(|_| corrupt(self.location, "package name"))?,
            tier: self.get(r, 5)?,
            gross: self.micros(r, 6)?,
            currency: self.get(r, 7)?,
            at: self.time(r, 8)?,
            state: self.named(r, 9, SettlementState::parse)?,
            refund_of: self.get(r, 10)?,
            batch: self.unsigned(r, 11, "negative batch")?,
        })
    }

    fn hold_row(&self, r: &Row, o: usize) -> Result<HoldRecord, Error> {
        Ok(HoldRecord {
            settlement: self.get(r, o)?,
            event: self.get(r, o + 1)?,
            amount: self.micros(r, o + 2)?,
            placed_at: self.time(r, o + 3)?,
            expires_at: self.time(r, o + 4)?,
            state: self.named(r, o + 5, HoldState::parse)?,
            captured: self
                .get::<Option<i64>>(r, o + 6)?
                .map(|m| u64::try_from(m).map(Micros).map_err(|_| corrupt(self.location, "negative capture")))
                .transpose()?,
            closed_at: self.optional_time(r, o + 7)?,
        })
    }

    fn dispute_row(&self, r: &Row, o: usize) -> Result<DisputeRecord, Error> {
        Ok(DisputeRecord {
            id: self.get(r, o)?,
            settlement: self.get(r, o + 1)?,
            opened_at: self.time(r, o + 2)?,
            reason: self.get(r, o + 3)?,
            resolved_at: self.optional_time(r, o + 4)?,
            outcome: self
                .get::<Option<String>>(r, o + 5)?
                .map(|t| Outcome::parse(&t).ok_or_else(|| corrupt(self.location, "dispute outcome")))
                .transpose()?,
            resolution: self.get(r, o + 6)?,
        })
    }

    fn statement_row(&self, r: &Row) -> Result<StatementRecord, Error> {
        let hash: Vec<u8> = self.get(r, 1)?;
        Ok(StatementRecord {
            seq: self.unsigned(r, 0, "statement seq")?,
            hash: hash.try_into().map_err(|_| corrupt(self.location, "statement hash"))?,
            issued_at: self.time(r, 2)?,
            entries: self.unsigned(r, 3, "statement entries")?,
            bytes: self.get(r, 4)?,
        })
    }

    fn opening_row(&self, r: &Row, party: Option<String>, o: usize) -> Result<Opening, Error> {
        Ok(Opening {
            entry: u32::try_from(self.get::<i64>(r, 0)?)
                .map_err(|_| corrupt(self.location, "opening entry"))?,
            party,
            amount: self.micros(r, o)?,
            blinding: serde_bytes::ByteBuf::from(self.get::<Vec<u8>>(r, o + 1)?),
        })
    }

    fn seq(&self, seq: u64) -> Result<i64, Error> {
        signed(self.location, seq, "statement seq")
    }

    fn location(&self) -> PathBuf {
        self.location.into()
    }

    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        self.one("SELECT value FROM meta WHERE key = $1", &[&key], |r| self.get(r, 0))
    }

    fn settlement(&self, id: &str) -> Result<Option<SettlementRecord>, Error> {
        self.one(&format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements s WHERE s.id = $1"), &[&id], |r| {
            self.settlement_row(r)
        })
    }

    fn settlements(&self, ids: &[&str]) -> Result<HashMap<String, SettlementRecord>, Error> {
        let rows = self.list(
            &format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements s WHERE s.id = ANY($1)"),
            &[&ids],
            |r| self.settlement_row(r),
        )?;
        Ok(rows.into_iter().map(|s| (s.id.clone(), s)).collect())
    }

    fn settlement_ids_starting(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> {
        // Ids are lowercase hex and the column sorts bytewise (COLLATE "C"): a range scan
        // on the primary key is a prefix scan.
        let end = format!("{prefix}g");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.list(
            "SELECT id FROM settlements WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3",
            &[&prefix, &end, &limit],
            |r| self.get(r, 0),
        )
    }

    fn refunds_of(&self, target: &str) -> Result<Vec<String>, Error> {
        self.list("SELECT id FROM settlements WHERE refund_of = $1 ORDER BY id", &[&target], |r| {
            self.get(r, 0)
        })
    }

    fn transfers_of(&self, settlement: &str) -> Result<Vec<TransferRecord>, Error> {
        self.list(
            "SELECT t.debit, t.credit, a.name, t.amount FROM transfers t JOIN accounts a ON a.id = t.credit
             WHERE t.settlement = $1 ORDER BY t.id",
            &[&settlement],
            |r| {
                Ok(TransferRecord {
                    debit: self.get(r, 0)?,
                    credit: self.get(r, 1)?,
                    credit_name: self.get(r, 2)?,
                    amount: self.micros(r, 3)?,
                })
            },
        )
    }

    fn recouped(&self, currency: &str) -> Result<BTreeMap<String, Micros>, Error> {
        Ok(self
            .list("SELECT party, total FROM recoupment WHERE currency = $1", &[&currency], |r| {
                Ok((self.get::<String>(r, 0)?, self.micros(r, 1)?))
            })?
            .into_iter()
            .collect())
    }

    fn settlement_recoup(&self, settlement: &str) -> Result<Vec<(String, i64)>, Error> {
        self.list(
            "SELECT party, amount FROM settlement_recoup WHERE settlement = $1 ORDER BY party COLLATE \"C\"",
            &[&settlement],
            |r| Ok((self.get(r, 0)?, self.get(r, 1)?)),
        )
    }

    fn statements(&self) -> Result<Vec<StatementRecord>, Error> {
        self.list("SELECT seq, hash, issued_at, entries, ''::bytea FROM statements ORDER BY seq", &[], |r| {
            self.statement_row(r)
        })
    }

    fn statement(&self, seq: u64) -> Result<Option<StatementRecord>, Error> {
        self.one(
            "SELECT seq, hash, issued_at, entries, bytes FROM statements WHERE seq = $1",
            &[&self.seq(seq)?],
            |r| self.statement_row(r),
        )
    }

    fn last_statement(&self) -> Result<Option<(u64, [u8; 32])>, Error> {
        self.one("SELECT seq, hash FROM statements ORDER BY seq DESC LIMIT 1", &[], |r| {
            let hash: Vec<u8> = self.get(r, 1)?;
            Ok((
                self.unsigned(r, 0, "statement seq")?,
                hash.try_into().map_err(|_| corrupt(self.location, "statement hash"))?,
            ))
        })
    }

    fn openings(&self, seq: u64, party: &str) -> Result<Vec<Opening>, Error> {
        self.list(
            "SELECT entry, amount, blinding FROM statement_openings WHERE seq = $1 AND party = $2 ORDER BY entry",
            &[&self.seq(seq)?, &party],
            |r| self.opening_row(r, Some(party.to_owned()), 1),
        )
    }

    fn statement_openings(&self, seq: u64) -> Result<Vec<Opening>, Error> {
        // SQLite sorts NULL first; so does this.
        self.list(
            "SELECT entry, party, amount, blinding FROM statement_openings WHERE seq = $1
             ORDER BY entry, party COLLATE \"C\" NULLS FIRST",
            &[&self.seq(seq)?],
            |r| self.opening_row(r, self.get(r, 1)?, 2),
        )
    }

    fn hold(&self, settlement: &str) -> Result<Option<HoldRecord>, Error> {
        self.one(
            &format!("SELECT {HOLD_COLUMNS} FROM holds h WHERE h.settlement = $1"),
            &[&settlement],
            |r| self.hold_row(r, 0),
        )
    }

    fn holds(&self, state: Option<HoldState>) -> Result<Vec<(HoldRecord, SettlementRecord)>, Error> {
        let state = state.map(HoldState::name);
        self.list(
            &format!(
                "SELECT {SETTLEMENT_COLUMNS}, {HOLD_COLUMNS} FROM holds h JOIN settlements s ON s.id = h.settlement
                 WHERE ($1::text IS NULL OR h.state = $1) ORDER BY h.placed_at, s.event_id COLLATE \"C\""
            ),
            &[&state],
            |r| Ok((self.hold_row(r, 12)?, self.settlement_row(r)?)),
        )
    }

    fn disputes(&self) -> Result<Vec<(DisputeRecord, SettlementRecord)>, Error> {
        self.list(
            &format!(
                "SELECT {SETTLEMENT_COLUMNS}, {DISPUTE_COLUMNS} FROM disputes d JOIN settlements s ON s.id = d.settlement
                 ORDER BY d.opened_at, d.id"
            ),
            &[],
            |r| Ok((self.dispute_row(r, 12)?, self.settlement_row(r)?)),
        )
    }

    fn open_dispute(&self, settlement: &str) -> Result<Option<DisputeRecord>, Error> {
        self.one(
            &format!(
                "SELECT {DISPUTE_COLUMNS} FROM disputes d WHERE d.settlement = $1 AND d.resolved_at IS NULL"
            ),
            &[&settlement],
            |r| self.dispute_row(r, 0),
        )
    }

    fn balances(&self, name: Option<&str>) -> Result<Vec<Balance>, Error> {
        self.list(
            "SELECT a.name, a.currency,
                    (COALESCE((SELECT SUM(amount) FROM transfers WHERE credit = a.id), 0)
                   - COALESCE((SELECT SUM(amount) FROM transfers WHERE debit = a.id), 0))::bigint
             FROM accounts a WHERE ($1::text IS NULL OR a.name = $1)
             ORDER BY a.name COLLATE \"C\", a.currency COLLATE \"C\"",
            &[&name],
            |r| Ok(Balance { account: self.get(r, 0)?, currency: self.get(r, 1)?, micros: self.get(r, 2)? }),
        )
    }

    fn party_transfers(&self, from: UnixSeconds, to: UnixSeconds) -> Result<Vec<PartyTransfer>, Error> {
        let (from, to) = (time(from), time(to));
        self.list(
            "SELECT s.id, s.at, s.kind, s.gross, a.name, a.currency,
                    CASE WHEN a.id = t.credit THEN t.amount ELSE -t.amount END,
                    s.event_id, s.package, s.state
             FROM transfers t
             JOIN settlements s ON s.id = t.settlement
             JOIN accounts a ON a.id IN (t.credit, t.debit)
             WHERE s.at >= $1 AND s.at < $2 AND s.kind <> 'hold' AND substr(a.name, 1, 1) <> '@'
             ORDER BY s.at, s.id, t.id",
            &[&from, &to],
            |r| {
                let package: String = self.get(r, 8)?;
                Ok(PartyTransfer {
                    settlement: self.get(r, 0)?,
                    at: self.time(r, 1)?,
                    kind: self.named(r, 2, RecordKind::parse)?,
                    gross: self.micros(r, 3)?,
                    party: self.get(r, 4)?,
                    currency: self.get(r, 5)?,
                    amount: self.get(r, 6)?,
                    event: self.get(r, 7)?,
                    package: escx::manifest::PackageName::parse(&package)
                        .map_err(|_| corrupt(self.location, "package name"))?,
                    state: self.named(r, 9, SettlementState::parse)?,
                })
            },
        )
    }

    fn counts(&self) -> Result<(u64, u64), Error> {
        let row = self.one(
            "SELECT (SELECT COUNT(*) FROM settlements), (SELECT COUNT(*) FROM transfers)",
            &[],
            |r| Ok((self.unsigned(r, 0, "count")?, self.unsigned(r, 1, "count")?)),
        )?;
        Ok(row.unwrap_or((0, 0)))
    }

    fn unconserved(&self) -> Result<Vec<String>, Error> {
        self.list(
            "SELECT s.id FROM settlements s
             WHERE s.kind IN ('sale', 'usage', 'refund', 'reversal')
               AND s.gross <> COALESCE((SELECT SUM(amount) FROM transfers t WHERE t.settlement = s.id), 0)
             ORDER BY s.id",
            &[],
            |r| self.get(r, 0),
        )
    }
}

const SETTLEMENT_COLUMNS: &str = "s.id, s.event_id, s.content, s.kind, s.package, s.tier, s.gross, s.currency, s.at, s.state, s.refund_of, s.batch";
const HOLD_COLUMNS: &str =
    "h.settlement, h.event, h.amount, h.placed_at, h.expires_at, h.state, h.captured, h.closed_at";
const DISPUTE_COLUMNS: &str =
    "d.id, d.settlement, d.opened_at, d.reason, d.resolved_at, d.outcome, d.resolution";

/// Clamps a time to BIGINT.
fn time(t: impl Into<u64>) -> i64 {
    i64::try_from(t.into()).unwrap_or(i64::MAX)
}

forward_reader!(PgStore, self => Q { client: self.live(), location: &self.location, prepared: &self.prepared }, batched);
// Every query of a transaction first writes its buffered rows; recoupment totals it has
// read come from its own copy.
#[rustfmt::skip]
impl Reader for PgTx<'_> {
    fn location(&self) -> PathBuf { self.store.location.clone() }
    fn meta(&self, key: &str) -> Result<Option<String>, Error> { self.q()?.meta(key) }
    fn settlement(&self, id: &str) -> Result<Option<SettlementRecord>, Error> { self.q()?.settlement(id) }
    fn settlements(&self, ids: &[&str]) -> Result<HashMap<String, SettlementRecord>, Error> { self.q()?.settlements(ids) }
    fn settlement_ids_starting(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> { self.q()?.settlement_ids_starting(prefix, limit) }
    fn refunds_of(&self, target: &str) -> Result<Vec<String>, Error> { self.q()?.refunds_of(target) }
    fn transfers_of(&self, settlement: &str) -> Result<Vec<TransferRecord>, Error> { self.q()?.transfers_of(settlement) }
    fn recouped(&self, currency: &str) -> Result<BTreeMap<String, Micros>, Error> { self.recouped_in_tx(currency) }
    fn settlement_recoup(&self, settlement: &str) -> Result<Vec<(String, i64)>, Error> { self.q()?.settlement_recoup(settlement) }
    fn statements(&self) -> Result<Vec<StatementRecord>, Error> { self.q()?.statements() }
    fn statement(&self, seq: u64) -> Result<Option<StatementRecord>, Error> { self.q()?.statement(seq) }
    fn last_statement(&self) -> Result<Option<(u64, [u8; 32])>, Error> { self.q()?.last_statement() }
    fn openings(&self, seq: u64, party: &str) -> Result<Vec<Opening>, Error> { self.q()?.openings(seq, party) }
    fn statement_openings(&self, seq: u64) -> Result<Vec<Opening>, Error> { self.q()?.statement_openings(seq) }
    fn hold(&self, settlement: &str) -> Result<Option<HoldRecord>, Error> { self.q()?.hold(settlement) }
    fn holds(&self, state: Option<HoldState>) -> Result<Vec<(HoldRecord, SettlementRecord)>, Error> { self.q()?.holds(state) }
    fn disputes(&self) -> Result<Vec<(DisputeRecord, SettlementRecord)>, Error> { self.q()?.disputes() }
    fn open_dispute(&self, settlement: &str) -> Result<Option<DisputeRecord>, Error> { self.q()?.open_dispute(settlement) }
    fn balances(&self, name: Option<&str>) -> Result<Vec<Balance>, Error> { self.q()?.balances(name) }
    fn party_transfers(&self, from: UnixSeconds, to: UnixSeconds) -> Result<Vec<PartyTransfer>, Error> { self.q()?.party_transfers(from, to) }
    fn counts(&self) -> Result<(u64, u64), Error> { self.q()?.counts() }
    fn unconserved(&self) -> Result<Vec<String>, Error> { self.q()?.unconserved() }
}

impl PgTx<'_> {
    /// The queries, once the buffered rows are written.
    fn q(&self) -> Result<Q<'_>, Error> {
        self.flush()?;
        Ok(Q { client: &self.store.client, location: &self.store.location, prepared: &self.store.prepared })
    }

    /// A currency's recoupment totals: read once per transaction, then kept with this
    /// transaction's changes (which only it can make: it holds the writer lock).
    fn recouped_in_tx(&self, currency: &str) -> Result<BTreeMap<String, Micros>, Error> {
        if let Some(held) = self.recouped.borrow().get(currency) {
            return Ok(held.clone());
        }
        let read = self.q()?.recouped(currency)?;
        self.recouped.borrow_mut().insert(currency.to_owned(), read.clone());
        Ok(read)
    }

    /// Writes the buffered rows, a statement per table, in the order they were buffered
    /// within each table (`unnest … WITH ORDINALITY`, so transfer ids follow the writes).
    fn flush(&self) -> Result<(), Error> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return Ok(());
        }
        if !pending.settlements.is_empty() {
            let types = [
                Type::TEXT,
                Type::TEXT,
                Type::BYTEA,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
            ];
            let rows = pending
                .settlements
                .iter()
                .map(|s| {
                    Ok((
                        s,
                        self.amount(s.gross)?,
                        time(s.at),
                        signed(&self.store.location, s.batch, "batch")?,
                    ))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            self.copy(
                "settlements (id, event_id, content, kind, package, tier, gross, currency, at, state, refund_of, batch)",
                &types,
                |w| {
                    for (s, gross, at, batch) in &rows {
                        w.write(&[
                            &s.id,
                            &s.event_id,
                            &s.content,
                            &s.kind.name(),
                            &s.package.as_str(),
                            &s.tier,
                            gross,
                            &s.currency,
                            at,
                            &s.state.name(),
                            &s.refund_of,
                            batch,
                        ])?;
                    }
                    Ok(())
                },
            )?;
        }
        // COPY writes rows in the order given, so transfer ids follow the writes.
        if !pending.transfers.is_empty() {
            self.copy(
                "transfers (settlement, debit, credit, amount)",
                &[Type::TEXT, Type::INT8, Type::INT8, Type::INT8],
                |w| {
                    for (settlement, debit, credit, amount) in &pending.transfers {
                        w.write(&[settlement, debit, credit, amount])?;
                    }
                    Ok(())
                },
            )?;
        }
        if !pending.settlement_recoup.is_empty() {
            self.copy(
                "settlement_recoup (settlement, party, amount)",
                &[Type::TEXT, Type::TEXT, Type::INT8],
                |w| {
                    for (settlement, party, amount) in &pending.settlement_recoup {
                        w.write(&[settlement, party, amount])?;
                    }
                    Ok(())
                },
            )?;
        }
        if !pending.recoupment.is_empty() {
            let parties: Vec<&str> = pending.recoupment.keys().map(|(p, _)| p.as_str()).collect();
            let currencies: Vec<&str> = pending.recoupment.keys().map(|(_, c)| c.as_str()).collect();
            let totals: Vec<i64> = pending.recoupment.values().copied().collect();
            self.execute(
                "INSERT INTO recoupment (party, currency, total)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
                 ON CONFLICT (party, currency) DO UPDATE SET total = excluded.total",
                &[&parties, &currencies, &totals],
            )?;
        }
        Ok(())
    }

    /// Writes rows into `table (columns)` with `COPY … FROM STDIN BINARY`, the fastest
    /// way PostgreSQL takes rows (the benchmark's raw baseline uses the same).
    fn copy(
        &self,
        target: &str,
        types: &[Type],
        rows: impl FnOnce(&mut postgres::binary_copy::BinaryCopyInWriter<'_>) -> Result<(), postgres::Error>,
    ) -> Result<(), Error> {
        let location = &self.store.location;
        let client = &mut *self.store.client.borrow_mut();
        let sink =
            client.copy_in(&format!("COPY {target} FROM STDIN BINARY")).map_err(|e| failure(location, &e))?;
        let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(sink, types);
        rows(&mut writer).map_err(|e| failure(location, &e))?;
        writer.finish().map_err(|e| failure(location, &e))?;
        Ok(())
    }

    fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        let client = &mut *self.store.client.borrow_mut();
        let statement = prepared(client, &self.store.prepared, &self.store.location, sql)?;
        client.execute(&statement, params).map_err(|e| failure(&self.store.location, &e))
    }

    fn run(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        self.flush()?;
        self.execute(sql, params)
    }

    fn amount(&self, value: Micros) -> Result<i64, Error> {
        signed(&self.store.location, value.0, "amount")
    }
}

impl Writer for PgTx<'_> {
    fn account(&mut self, name: &str, currency: &str) -> Result<AccountId, Error> {
        self.run(
            "INSERT INTO accounts (name, currency) VALUES ($1, $2) ON CONFLICT (name, currency) DO NOTHING",
            &[&name, &currency],
        )?;
        let q = self.q()?;
        q.one("SELECT id FROM accounts WHERE name = $1 AND currency = $2", &[&name, &currency], |r| {
            q.get(r, 0)
        })?
        .ok_or_else(|| Error::Store {
            path: self.store.location.clone(),
            reason: format!("account {name} vanished"),
        })
    }

    fn insert_settlement(&mut self, s: &SettlementRecord) -> Result<(), Error> {
        // Checked now, so a value beyond BIGINT fails where it is written.
        self.amount(s.gross)?;
        signed(&self.store.location, s.batch, "batch")?;
        self.pending.borrow_mut().settlements.push(s.clone());
        Ok(())
    }

    fn set_state(&mut self, id: &str, state: SettlementState) -> Result<(), Error> {
        self.run("UPDATE settlements SET state = $2 WHERE id = $1", &[&id, &state.name()]).map(drop)
    }

    fn insert_transfer(
        &mut self,
        settlement: &str,
        debit: AccountId,
        credit: AccountId,
        amount: Micros,
    ) -> Result<(), Error> {
        let amount = self.amount(amount)?;
        self.pending.borrow_mut().transfers.push((settlement.to_owned(), debit, credit, amount));
        Ok(())
    }

    fn set_recouped(&mut self, party: &str, currency: &str, total: Micros) -> Result<(), Error> {
        let amount = self.amount(total)?;
        self.pending.borrow_mut().recoupment.insert((party.to_owned(), currency.to_owned()), amount);
        if let Some(held) = self.recouped.borrow_mut().get_mut(currency) {
            held.insert(party.to_owned(), total);
        }
        Ok(())
    }

    fn add_settlement_recoup(&mut self, settlement: &str, party: &str, amount: i64) -> Result<(), Error> {
        self.pending.borrow_mut().settlement_recoup.push((settlement.to_owned(), party.to_owned(), amount));
        Ok(())
    }

    fn insert_statement(&mut self, s: &StatementRecord, openings: &[Opening]) -> Result<(), Error> {
        let location = &self.store.location;
        let seq = signed(location, s.seq, "statement seq")?;
        let entries = signed(location, s.entries, "statement entries")?;
        self.run(
            "INSERT INTO statements (seq, hash, issued_at, entries, bytes) VALUES ($1, $2, $3, $4, $5)",
            &[&seq, &&s.hash[..], &time(s.issued_at), &entries, &s.bytes],
        )?;
        // Every opening in one COPY.
        let rows = openings
            .iter()
            .map(|o| {
                Ok((i64::from(o.entry), o.party.as_deref(), self.amount(o.amount)?, o.blinding.as_slice()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        self.copy(
            "statement_openings (seq, entry, party, amount, blinding)",
            &[Type::INT8, Type::INT8, Type::TEXT, Type::INT8, Type::BYTEA],
            |w| {
                for (entry, party, amount, blinding) in &rows {
                    w.write(&[&seq, entry, party, amount, blinding])?;
                }
                Ok(())
            },
        )
    }

    fn audit(&mut self, at: UnixSeconds, action: &str, subject: &str, detail: &str) -> Result<(), Error> {
        self.run(
            "INSERT INTO audit (at, action, subject, detail) VALUES ($1, $2, $3, $4)",
            &[&time(at), &action, &subject, &detail],
        )
        .map(drop)
    }

    fn insert_hold(&mut self, h: &HoldRecord) -> Result<(), Error> {
        let captured = h.captured.map(|c| self.amount(c)).transpose()?;
        self.run(
            "INSERT INTO holds (settlement, event, amount, placed_at, expires_at, state, captured, closed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &h.settlement,
                &h.event,
                &self.amount(h.amount)?,
                &time(h.placed_at),
                &time(h.expires_at),
                &h.state.name(),
                &captured,
                &h.closed_at.map(time),
            ],
        )
        .map(drop)
    }

    fn close_hold(
        &mut self,
        settlement: &str,
        state: HoldState,
        captured: Option<Micros>,
        at: UnixSeconds,
    ) -> Result<(), Error> {
        let captured = captured.map(|c| self.amount(c)).transpose()?;
        self.run(
            "UPDATE holds SET state = $2, captured = $3, closed_at = $4 WHERE settlement = $1",
            &[&settlement, &state.name(), &captured, &time(at)],
        )
        .map(drop)
    }

    fn insert_dispute(
        &mut self,
        settlement: &str,
        opened_at: UnixSeconds,
        reason: &str,
    ) -> Result<(), Error> {
        self.run(
            "INSERT INTO disputes (settlement, opened_at, reason) VALUES ($1, $2, $3)",
            &[&settlement, &time(opened_at), &reason],
        )
        .map(drop)
    }

    fn resolve_dispute(
        &mut self,
        id: i64,
        at: UnixSeconds,
        outcome: Outcome,
        resolution: &str,
    ) -> Result<(), Error> {
        self.run(
            "UPDATE disputes SET resolved_at = $2, outcome = $3, resolution = $4 WHERE id = $1",
            &[&id, &time(at), &outcome.name(), &resolution],
        )
        .map(drop)
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.run(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .map(drop)
    }

    fn commit(mut self) -> Result<(), Error> {
        self.flush()?;
        let result = self.store.client.borrow_mut().batch_execute("COMMIT");
        // Committed or not, the transaction is over: Drop only releases the lock.
        self.committed = true;
        result.map_err(|e| failure(&self.store.location, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(redact("postgres://escx:s3cret@db:5432/ledger"), "postgres://escx:***@db:5432/ledger");
        assert_eq!(redact("postgres://escx@db/ledger"), "postgres://escx@db/ledger");
        assert_eq!(redact("postgresql:///ledger?host=/tmp"), "postgresql:///ledger?host=/tmp");
        assert_eq!(
            redact("postgresql:///ledger?password=x&host=/tmp&password=yy"),
            "postgresql:///ledger?password=***&host=/tmp&password=***"
        );
        assert_eq!(redact("host=/tmp password=s3cret dbname=l"), "host=/tmp password=*** dbname=l");
    }

    #[test]
    fn the_lock_key_is_fixed() {
        // Nodes of different builds must agree on it (settlement.md §5.4).
        let hash = blake3::hash(b"escx v1 ledger writer lock");
        assert_eq!(lock_key().to_be_bytes(), hash.as_bytes()[..8]);
    }
}
