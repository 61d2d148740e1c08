//! The SQLite store: one database file, WAL, `synchronous=FULL`, foreign keys on, schema
//! migrations in `PRAGMA user_version`, write transactions `BEGIN IMMEDIATE` (SQLite's
//! single writer makes them serializable).

use escx::UnixSeconds;
use escx_manifest::Micros;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::{
    AccountId, Balance, DisputeRecord, HoldRecord, PartyTransfer, Reader, SettlementRecord, StatementRecord,
    Store, TransferRecord, Writer,
};
use super::{HoldState, SettlementState};
use crate::Error;
use crate::disputes::Outcome;
use crate::statement::Opening;

/// The text columns holding a [`named_enum`](super::named_enum): stored by name, and a
/// name this build does not know is a corrupt row.
macro_rules! sql_text_enum {
    ($($type:ty),+) => {$(
        impl rusqlite::types::ToSql for $type {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.name().into())
            }
        }

        impl rusqlite::types::FromSql for $type {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                <$type>::parse(text).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(format!("unknown {} {text:?}", stringify!($type)).into())
                })
            }
        }
    )+};
}
sql_text_enum!(super::RecordKind, SettlementState, HoldState, Outcome);

/// Schema migrations, in order: migration `n` (1-based) takes `user_version` from `n - 1`
/// to `n`. A ledger is created by running all of them and opened by running the ones it
/// lacks, in one transaction.
const MIGRATIONS: [&str; 2] = [SCHEMA_V1, SCHEMA_V2];

const SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    UNIQUE (name, currency)
);
CREATE TABLE settlements (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    content BLOB NOT NULL,
    kind TEXT NOT NULL,
    package TEXT NOT NULL,
    tier TEXT NOT NULL,
    gross INTEGER NOT NULL CHECK (gross >= 0),
    currency TEXT NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'SETTLED', 'CANCELLED', 'DISPUTED')),
    refund_of TEXT REFERENCES settlements (id),
    batch INTEGER NOT NULL
);
CREATE INDEX settlements_at ON settlements (at);
CREATE TABLE transfers (
    id INTEGER PRIMARY KEY,
    settlement TEXT NOT NULL REFERENCES settlements (id),
    debit INTEGER NOT NULL REFERENCES accounts (id),
    credit INTEGER NOT NULL REFERENCES accounts (id),
    amount INTEGER NOT NULL CHECK (amount > 0),
    CHECK (debit <> credit)
);
CREATE INDEX transfers_settlement ON transfers (settlement);
CREATE INDEX transfers_debit ON transfers (debit);
CREATE INDEX transfers_credit ON transfers (credit);
CREATE TABLE recoupment (
    party TEXT NOT NULL,
    currency TEXT NOT NULL,
    total INTEGER NOT NULL CHECK (total >= 0),
    PRIMARY KEY (party, currency)
);
CREATE TABLE settlement_recoup (
    settlement TEXT NOT NULL REFERENCES settlements (id),
    party TEXT NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (settlement, party)
);
CREATE TABLE statements (
    seq INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    issued_at INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    bytes BLOB NOT NULL
);
CREATE TABLE statement_openings (
    seq INTEGER NOT NULL REFERENCES statements (seq),
    entry INTEGER NOT NULL,
    party TEXT,
    amount INTEGER NOT NULL,
    blinding BLOB NOT NULL
);
CREATE INDEX statement_openings_party ON statement_openings (seq, party);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// Version 2: two-phase budget holds and disputes.
const SCHEMA_V2: &str = "
CREATE TABLE holds (
    settlement TEXT PRIMARY KEY REFERENCES settlements (id),
    event BLOB NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    placed_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'CAPTURED', 'VOIDED')),
    captured INTEGER,
    closed_at INTEGER
);
CREATE TABLE disputes (
    id INTEGER PRIMARY KEY,
    settlement TEXT NOT NULL REFERENCES settlements (id),
    opened_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    resolved_at INTEGER,
    outcome TEXT CHECK (outcome IN ('upheld', 'reversed')),
    resolution TEXT
);
CREATE UNIQUE INDEX disputes_open ON disputes (settlement) WHERE resolved_at IS NULL;
";

/// The schema version this build writes.
#[allow(clippy::cast_possible_wrap)] // a handful of migrations, known at compile time
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The SQLite ledger store.
pub struct SqliteStore {
    db: Connection,
    path: PathBuf,
}

/// A write transaction on a [`SqliteStore`].
pub struct SqliteTx<'a> {
    tx: Transaction<'a>,
    path: &'a Path,
}

fn store_error(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Store { path: path.into(), reason: e.to_string() }
}

fn connect(path: &Path) -> Result<Connection, Error> {
    // The ledger holds every amount and opening: the storage layer makes the file 0600
    // before SQLite creates anything, so its -wal and -shm files are private too. A file
    // that is not SQLite at all is as foreign as a database of another schema.
    escx_store::sqlite_connection(path).map_err(|e| match e.kind() {
        escx_store::Kind::Schema => Error::Schema { path: path.into(), found: 0, expected: SCHEMA_VERSION },
        escx_store::Kind::Busy => Error::Busy { path: path.into(), reason: e.reason().to_owned() },
        _ => Error::Store { path: path.into(), reason: e.reason().to_owned() },
    })
}

impl SqliteStore {
    /// Creates a new database with every migration applied and `meta` rows (refuses an
    /// existing file).
    pub fn create(path: &Path, meta: &[(&str, String)]) -> Result<Self, Error> {
        if path.exists() {
            return Err(Error::Store { path: path.into(), reason: "exists already; open it instead".into() });
        }
        let parent = escx::fsutil::parent_dir(path);
        if !parent.exists() {
            escx::fsutil::create_private_dir(&parent)
                .map_err(|e| Error::Store { path: path.into(), reason: e.to_string() })?;
        }
        let mut db = connect(path)?;
        let store = store_error(path);
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&store)?;
        for migration in MIGRATIONS {
            tx.execute_batch(migration).map_err(&store)?;
        }
        for (key, value) in meta {
            tx.execute("INSERT INTO meta VALUES (?1, ?2)", params![key, value]).map_err(&store)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(&store)?;
        tx.commit().map_err(&store)?;
        Ok(Self { db, path: path.into() })
    }

    /// Opens an existing database, running the migrations it lacks.
    pub fn open(path: &Path) -> Result<Self, Error> {
        if !path.exists() {
            return Err(Error::Store {
                path: path.into(),
                reason: "no such ledger; create one first".into(),
            });
        }
        let mut db = connect(path)?;
        let store = store_error(path);
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(&store)?;
        if !(1..=SCHEMA_VERSION).contains(&version) {
            return Err(Error::Schema { path: path.into(), found: version, expected: SCHEMA_VERSION });
        }
        if version < SCHEMA_VERSION {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&store)?;
            // Another process may have migrated it while this one waited for the lock.
            let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(&store)?;
            for migration in MIGRATIONS.iter().skip(usize::try_from(now.max(version)).unwrap_or(0)) {
                tx.execute_batch(migration).map_err(&store)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(&store)?;
            tx.commit().map_err(&store)?;
        }
        Ok(Self { db, path: path.into() })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying connection, for this crate's tests (feature `test-support`).
    #[cfg(feature = "test-support")]
    pub(crate) fn connection(&self) -> &Connection {
        &self.db
    }
}

impl Store for SqliteStore {
    type Tx<'a> = SqliteTx<'a>;

    fn begin(&mut self) -> Result<SqliteTx<'_>, Error> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_error(&self.path))?;
        Ok(SqliteTx { tx, path: &self.path })
    }
}

fn settlement_row(r: &Row<'_>) -> rusqlite::Result<SettlementRecord> {
    Ok(SettlementRecord {
        id: r.get(0)?,
        event_id: r.get(1)?,
        content: r.get(2)?,
        kind: r.get(3)?,
        package: r.get(4)?,
        tier: r.get(5)?,
        gross: r.get(6)?,
        currency: r.get(7)?,
        at: r.get::<_, UnixSeconds>(8)?,
        state: r.get(9)?,
        refund_of: r.get(10)?,
        batch: r.get(11)?,
    })
}

const SETTLEMENT_COLUMNS: &str = "s.id, s.event_id, s.content, s.kind, s.package, s.tier, s.gross, s.currency, s.at, s.state, s.refund_of, s.batch";

fn hold_row(r: &Row<'_>, offset: usize) -> rusqlite::Result<HoldRecord> {
    Ok(HoldRecord {
        settlement: r.get(offset)?,
        event: r.get(offset + 1)?,
        amount: r.get(offset + 2)?,
        placed_at: r.get::<_, UnixSeconds>(offset + 3)?,
        expires_at: r.get::<_, UnixSeconds>(offset + 4)?,
        state: r.get(offset + 5)?,
        captured: r.get(offset + 6)?,
        closed_at: r.get::<_, Option<UnixSeconds>>(offset + 7)?,
    })
}

const HOLD_COLUMNS: &str =
    "h.settlement, h.event, h.amount, h.placed_at, h.expires_at, h.state, h.captured, h.closed_at";

fn dispute_row(r: &Row<'_>, offset: usize) -> rusqlite::Result<DisputeRecord> {
    Ok(DisputeRecord {
        id: r.get(offset)?,
        settlement: r.get(offset + 1)?,
        opened_at: r.get::<_, UnixSeconds>(offset + 2)?,
        reason: r.get(offset + 3)?,
        resolved_at: r.get::<_, Option<UnixSeconds>>(offset + 4)?,
        outcome: r.get(offset + 5)?,
        resolution: r.get(offset + 6)?,
    })
}

const DISPUTE_COLUMNS: &str =
    "d.id, d.settlement, d.opened_at, d.reason, d.resolved_at, d.outcome, d.resolution";

fn statement_row(r: &Row<'_>) -> rusqlite::Result<StatementRecord> {
    let hash: Vec<u8> = r.get(1)?;
    Ok(StatementRecord {
        seq: r.get::<_, u64>(0)?,
        hash: hash
            .try_into()
            .map_err(|_| rusqlite::Error::InvalidColumnType(1, "hash".into(), rusqlite::types::Type::Blob))?,
        issued_at: r.get::<_, UnixSeconds>(2)?,
        entries: r.get::<_, u64>(3)?,
        bytes: r.get(4)?,
    })
}

/// Clamps a time to SQLite's signed integers.
fn time(t: impl Into<u64>) -> i64 {
    i64::try_from(t.into()).unwrap_or(i64::MAX)
}

/// The queries, shared by the store and its transactions.
struct Q<'c> {
    db: &'c Connection,
    path: &'c Path,
}

impl Q<'_> {
    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        store_error(self.path)
    }

    fn list<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, Error> {
        let mut statement = self.db.prepare_cached(sql).map_err(self.err())?;
        let rows = statement.query_map(params, map).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, Error> {
        let mut statement = self.db.prepare_cached(sql).map_err(self.err())?;
        statement.query_row(params, map).optional().map_err(self.err())
    }

    fn location(&self) -> PathBuf {
        self.path.into()
    }

    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        self.one("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
    }

    fn settlement(&self, id: &str) -> Result<Option<SettlementRecord>, Error> {
        self.one(
            &format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements s WHERE s.id = ?1"),
            [id],
            settlement_row,
        )
    }

    fn settlement_ids_starting(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> {
        // Settlement ids are lowercase hex, so a range scan is a prefix scan (and uses the
        // primary key): every id starting with `prefix` sorts at or after it and before
        // `prefix` followed by a character above 'f'.
        let end = format!("{prefix}g");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.list(
            "SELECT id FROM settlements WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3",
            params![prefix, end, limit],
            |r| r.get(0),
        )
    }

    fn refunds_of(&self, target: &str) -> Result<Vec<String>, Error> {
        self.list("SELECT id FROM settlements WHERE refund_of = ?1 ORDER BY id", [target], |r| r.get(0))
    }

    fn transfers_of(&self, settlement: &str) -> Result<Vec<TransferRecord>, Error> {
        self.list(
            "SELECT t.debit, t.credit, a.name, t.amount FROM transfers t JOIN accounts a ON a.id = t.credit
             WHERE t.settlement = ?1 ORDER BY t.id",
            [settlement],
            |r| {
                Ok(TransferRecord {
                    debit: r.get(0)?,
                    credit: r.get(1)?,
                    credit_name: r.get(2)?,
                    amount: r.get(3)?,
                })
            },
        )
    }

    fn recouped(&self, currency: &str) -> Result<BTreeMap<String, Micros>, Error> {
        Ok(self
            .list("SELECT party, total FROM recoupment WHERE currency = ?1", [currency], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Micros>(1)?))
            })?
            .into_iter()
            .collect())
    }

    fn settlement_recoup(&self, settlement: &str) -> Result<Vec<(String, i64)>, Error> {
        self.list(
            "SELECT party, amount FROM settlement_recoup WHERE settlement = ?1 ORDER BY party",
            [settlement],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn statements(&self) -> Result<Vec<StatementRecord>, Error> {
        self.list("SELECT seq, hash, issued_at, entries, X'' FROM statements ORDER BY seq", [], statement_row)
    }

    fn statement(&self, seq: u64) -> Result<Option<StatementRecord>, Error> {
        self.one(
            "SELECT seq, hash, issued_at, entries, bytes FROM statements WHERE seq = ?1",
            [time(seq)],
            statement_row,
        )
    }

    fn last_statement(&self) -> Result<Option<(u64, [u8; 32])>, Error> {
        let row = self.one("SELECT seq, hash FROM statements ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get::<_, u64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        row.map(|(seq, hash)| {
            let hash = hash.try_into().map_err(|_| Error::Store {
                path: self.path.into(),
                reason: format!("statement {seq}: bad hash"),
            })?;
            Ok((seq, hash))
        })
        .transpose()
    }

    fn openings(&self, seq: u64, party: &str) -> Result<Vec<Opening>, Error> {
        self.list(
            "SELECT entry, amount, blinding FROM statement_openings WHERE seq = ?1 AND party = ?2 ORDER BY entry",
            params![time(seq), party],
            |r| {
                Ok(Opening {
                    entry: r.get(0)?,
                    party: Some(party.to_owned()),
                    amount: r.get(1)?,
                    blinding: serde_bytes::ByteBuf::from(r.get::<_, Vec<u8>>(2)?),
                })
            },
        )
    }

    fn statement_openings(&self, seq: u64) -> Result<Vec<Opening>, Error> {
        self.list(
            "SELECT entry, party, amount, blinding FROM statement_openings WHERE seq = ?1 ORDER BY entry, party",
            params![time(seq)],
            |r| {
                Ok(Opening {
                    entry: r.get(0)?,
                    party: r.get(1)?,
                    amount: r.get(2)?,
                    blinding: serde_bytes::ByteBuf::from(r.get::<_, Vec<u8>>(3)?),
                })
            },
        )
    }

    fn hold(&self, settlement: &str) -> Result<Option<HoldRecord>, Error> {
        self.one(&format!("SELECT {HOLD_COLUMNS} FROM holds h WHERE h.settlement = ?1"), [settlement], |r| {
            hold_row(r, 0)
        })
    }

    fn holds(&self, state: Option<HoldState>) -> Result<Vec<(HoldRecord, SettlementRecord)>, Error> {
        self.list(
            &format!(
                "SELECT {SETTLEMENT_COLUMNS}, {HOLD_COLUMNS} FROM holds h JOIN settlements s ON s.id = h.settlement
                 WHERE (?1 IS NULL OR h.state = ?1) ORDER BY h.placed_at, s.event_id"
            ),
            [state],
            |r| Ok((hold_row(r, 12)?, settlement_row(r)?)),
        )
    }

    fn disputes(&self) -> Result<Vec<(DisputeRecord, SettlementRecord)>, Error> {
        self.list(
            &format!(
                "SELECT {SETTLEMENT_COLUMNS}, {DISPUTE_COLUMNS} FROM disputes d JOIN settlements s ON s.id = d.settlement
                 ORDER BY d.opened_at, d.id"
            ),
            [],
            |r| Ok((dispute_row(r, 12)?, settlement_row(r)?)),
        )
    }

    fn open_dispute(&self, settlement: &str) -> Result<Option<DisputeRecord>, Error> {
        self.one(
            &format!(
                "SELECT {DISPUTE_COLUMNS} FROM disputes d WHERE d.settlement = ?1 AND d.resolved_at IS NULL"
            ),
            [settlement],
            |r| dispute_row(r, 0),
        )
    }

    fn balances(&self, name: Option<&str>) -> Result<Vec<Balance>, Error> {
        self.list(
            "SELECT a.name, a.currency,
                    COALESCE((SELECT SUM(amount) FROM transfers WHERE credit = a.id), 0)
                  - COALESCE((SELECT SUM(amount) FROM transfers WHERE debit = a.id), 0)
             FROM accounts a WHERE (?1 IS NULL OR a.name = ?1) ORDER BY a.name, a.currency",
            [name],
            |r| Ok(Balance { account: r.get(0)?, currency: r.get(1)?, micros: r.get(2)? }),
        )
    }

    fn party_transfers(&self, from: UnixSeconds, to: UnixSeconds) -> Result<Vec<PartyTransfer>, Error> {
        self.list(
            "SELECT s.id, s.at, s.kind, s.gross, a.name, a.currency,
                    CASE WHEN a.id = t.credit THEN t.amount ELSE -t.amount END,
                    s.event_id, s.package, s.state
             FROM transfers t
             JOIN settlements s ON s.id = t.settlement
             JOIN accounts a ON a.id IN (t.credit, t.debit)
             WHERE s.at >= ?1 AND s.at < ?2 AND s.kind <> 'hold' AND substr(a.name, 1, 1) <> '@'
             ORDER BY s.at, s.id, t.id",
            params![time(from), time(to)],
            |r| {
                Ok(PartyTransfer {
                    settlement: r.get(0)?,
                    at: r.get::<_, UnixSeconds>(1)?,
                    kind: r.get(2)?,
                    gross: r.get(3)?,
                    party: r.get(4)?,
                    currency: r.get(5)?,
                    amount: r.get(6)?,
                    event: r.get(7)?,
                    package: r.get(8)?,
                    state: r.get(9)?,
                })
            },
        )
    }

    fn counts(&self) -> Result<(u64, u64), Error> {
        let count = |sql: &str| self.one(sql, [], |r| r.get::<_, u64>(0)).map(|n| n.unwrap_or(0));
        Ok((count("SELECT COUNT(*) FROM settlements")?, count("SELECT COUNT(*) FROM transfers")?))
    }

    fn unconserved(&self) -> Result<Vec<String>, Error> {
        self.list(
            "SELECT s.id FROM settlements s
             WHERE s.kind IN ('sale', 'usage', 'refund', 'reversal')
               AND s.gross <> COALESCE((SELECT SUM(amount) FROM transfers t WHERE t.settlement = s.id), 0)
             ORDER BY s.id",
            [],
            |r| r.get(0),
        )
    }
}

forward_reader!(SqliteStore, self => Q { db: &self.db, path: &self.path });
forward_reader!(SqliteTx<'_>, self => Q { db: &self.tx, path: self.path });

impl SqliteTx<'_> {
    fn run(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, Error> {
        let store = store_error(self.path);
        self.tx.prepare_cached(sql).and_then(|mut s| s.execute(params)).map_err(store)
    }
}

impl Writer for SqliteTx<'_> {
    fn account(&mut self, name: &str, currency: &str) -> Result<AccountId, Error> {
        self.run("INSERT OR IGNORE INTO accounts (name, currency) VALUES (?1, ?2)", [name, currency])?;
        let q = Q { db: &self.tx, path: self.path };
        q.one("SELECT id FROM accounts WHERE name = ?1 AND currency = ?2", [name, currency], |r| r.get(0))?
            .ok_or_else(|| Error::Store {
                path: self.path.into(),
                reason: format!("account {name} vanished"),
            })
    }

    fn insert_settlement(&mut self, s: &SettlementRecord) -> Result<(), Error> {
        self.run(
            "INSERT INTO settlements (id, event_id, content, kind, package, tier, gross, currency, at, state, refund_of, batch)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                s.id,
                s.event_id,
                s.content,
                s.kind,
                s.package,
                s.tier,
                s.gross,
                s.currency,
                time(s.at),
                s.state,
                s.refund_of,
                s.batch
            ],
        )
        .map(drop)
    }

    fn set_state(&mut self, id: &str, state: SettlementState) -> Result<(), Error> {
        self.run("UPDATE settlements SET state = ?2 WHERE id = ?1", params![id, state]).map(drop)
    }

    fn insert_transfer(
        &mut self,
        settlement: &str,
        debit: AccountId,
        credit: AccountId,
        amount: Micros,
    ) -> Result<(), Error> {
        self.run(
            "INSERT INTO transfers (settlement, debit, credit, amount) VALUES (?1, ?2, ?3, ?4)",
            params![settlement, debit, credit, amount],
        )
        .map(drop)
    }

    fn set_recouped(&mut self, party: &str, currency: &str, total: Micros) -> Result<(), Error> {
        self.run(
            "INSERT INTO recoupment (party, currency, total) VALUES (?1, ?2, ?3)
             ON CONFLICT (party, currency) DO UPDATE SET total = excluded.total",
            params![party, currency, total],
        )
        .map(drop)
    }

    fn add_settlement_recoup(&mut self, settlement: &str, party: &str, amount: i64) -> Result<(), Error> {
        self.run(
            "INSERT INTO settlement_recoup (settlement, party, amount) VALUES (?1, ?2, ?3)",
            params![settlement, party, amount],
        )
        .map(drop)
    }

    fn insert_statement(&mut self, s: &StatementRecord, openings: &[Opening]) -> Result<(), Error> {
        self.run(
            "INSERT INTO statements (seq, hash, issued_at, entries, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![time(s.seq), &s.hash[..], time(s.issued_at), s.entries, s.bytes],
        )?;
        for opening in openings {
            self.run(
                "INSERT INTO statement_openings (seq, entry, party, amount, blinding) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![time(s.seq), opening.entry, opening.party, opening.amount, opening.blinding.as_slice()],
            )?;
        }
        Ok(())
    }

    fn audit(&mut self, at: UnixSeconds, action: &str, subject: &str, detail: &str) -> Result<(), Error> {
        self.run(
            "INSERT INTO audit (at, action, subject, detail) VALUES (?1, ?2, ?3, ?4)",
            params![time(at), action, subject, detail],
        )
        .map(drop)
    }

    fn insert_hold(&mut self, h: &HoldRecord) -> Result<(), Error> {
        self.run(
            "INSERT INTO holds (settlement, event, amount, placed_at, expires_at, state, captured, closed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                h.settlement,
                h.event,
                h.amount,
                time(h.placed_at),
                time(h.expires_at),
                h.state,
                h.captured,
                h.closed_at.map(time)
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
        self.run(
            "UPDATE holds SET state = ?2, captured = ?3, closed_at = ?4 WHERE settlement = ?1",
            params![settlement, state, captured, time(at)],
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
            "INSERT INTO disputes (settlement, opened_at, reason) VALUES (?1, ?2, ?3)",
            params![settlement, time(opened_at), reason],
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
            "UPDATE disputes SET resolved_at = ?2, outcome = ?3, resolution = ?4 WHERE id = ?1",
            params![id, time(at), outcome, resolution],
        )
        .map(drop)
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.run("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value])
            .map(drop)
    }

    fn commit(self) -> Result<(), Error> {
        self.tx.commit().map_err(store_error(self.path))
    }
}
