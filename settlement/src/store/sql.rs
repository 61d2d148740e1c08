//! The ledger's SQL store (settlement.md §5.4–5.5): one set of statements, run on a SQLite
//! file or a PostgreSQL database through the storage layer (`escx_store`), which opens the
//! file, connects (TLS as the URL says), migrates, maps failures and retries.
//!
//! Write transactions are the layer's exclusive ones ([`Db::begin_exclusive`]): `BEGIN
//! IMMEDIATE` on SQLite; on PostgreSQL, `READ COMMITTED` under the transaction advisory
//! lock of `"escx v1 ledger writer lock"`, taken by the transaction's first statement. The
//! lock makes every writer of one ledger take turns, so statement `n + 1` is always built
//! on statement `n`; since every later statement of the lock holder takes a snapshot after
//! the lock was granted, it reads everything the previous holder committed. A transaction
//! lock (unlike a session one) is released by `COMMIT` or `ROLLBACK` on whatever server
//! connection a pooler gave the transaction, so it holds behind a transaction-pooling
//! PgBouncer.
//!
//! Within a transaction, settlements, transfers, recoupment changes and openings are kept
//! and written in bulk (`COPY … FROM STDIN BINARY` on PostgreSQL) before the transaction's
//! next statement and before its commit; what is written is the same as row by row.

use escx::UnixSeconds;
use escx_manifest::Micros;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use escx_store::{Arg, Db, Location, Mode, Row, Sql, Tx};

use super::schema::SCHEMA;
pub use super::schema::SCHEMA_VERSION;

use super::{
    AccountId, Balance, DisputeRecord, HoldRecord, HoldState, PartyTransfer, Reader, RecordKind,
    SettlementRecord, SettlementState, StatementRecord, Store, TransferRecord, Writer,
};
use crate::Error;
use crate::disputes::Outcome;
use crate::statement::Opening;

/// The ledger's database: a SQLite file or a PostgreSQL database.
pub struct SqlStore {
    db: Db,
}

/// A write transaction on a [`SqlStore`]: the ledger's writers take turns. Dropped without
/// [`Writer::commit`], it rolls back.
pub struct SqlTx<'a> {
    tx: Tx<'a>,
    /// Rows not yet written: written, a statement per table, before the next statement of
    /// this transaction and before its commit.
    pending: RefCell<Pending>,
    /// Recoupment totals read in this transaction, by currency, with its own changes
    /// applied: the settlements of a batch read them one after another, and only this
    /// transaction can change them while it runs.
    recouped: RefCell<HashMap<String, BTreeMap<String, Micros>>>,
    /// Account ids read or created in this transaction.
    accounts: HashMap<(String, String), AccountId>,
}

/// The buffered writes of a [`SqlTx`], in the order their tables must be written
/// (settlements before the rows that reference them).
#[derive(Default)]
struct Pending {
    settlements: Vec<SettlementRecord>,
    transfers: Vec<(String, AccountId, AccountId, i64)>,
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

impl SqlStore {
    /// Creates a ledger at `location` with every migration applied and `meta` rows, in one
    /// transaction; refuses a file that exists or a database that holds a ledger.
    pub fn create(location: &Location, meta: &[(&str, String)]) -> Result<Self, Error> {
        let db = Db::open(location, &SCHEMA, Mode::Create, |tx| {
            for (key, value) in meta {
                tx.exec(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                    &[Arg::Text(key), Arg::Text(value)],
                )?;
            }
            Ok(())
        })?;
        Ok(Self { db })
    }

    /// Opens the ledger at `location`, running the migrations it lacks; refuses a missing
    /// ledger and a newer schema than this build's.
    pub fn open(location: &Location) -> Result<Self, Error> {
        Ok(Self { db: Db::open(location, &SCHEMA, Mode::Open, |_| Ok(()))? })
    }

    /// The connection (the storage layer's), for tests that read every stored cell.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

impl Store for SqlStore {
    type Tx<'a> = SqlTx<'a>;

    fn begin(&mut self) -> Result<SqlTx<'_>, Error> {
        Ok(SqlTx {
            tx: self.db.begin_exclusive()?,
            pending: RefCell::default(),
            recouped: RefCell::default(),
            accounts: HashMap::new(),
        })
    }
}

const SETTLEMENT_COLUMNS: &str = "s.id, s.event_id, s.content, s.kind, s.package, s.tier, s.gross, s.currency, s.at, s.state, s.refund_of, s.batch";
const HOLD_COLUMNS: &str =
    "h.settlement, h.event, h.amount, h.placed_at, h.expires_at, h.state, h.captured, h.closed_at";
const DISPUTE_COLUMNS: &str =
    "d.id, d.settlement, d.opened_at, d.reason, d.resolved_at, d.outcome, d.resolution";

fn text(row: &Row, index: usize) -> Result<String, Error> {
    Ok(row.text(index)?.to_owned())
}

fn opt_text(row: &Row, index: usize) -> Result<Option<String>, Error> {
    Ok(row.opt_text(index)?.map(str::to_owned))
}

fn micros(row: &Row, index: usize) -> Result<Micros, Error> {
    Ok(Micros(row.uint(index)?))
}

fn time(row: &Row, index: usize) -> Result<UnixSeconds, Error> {
    Ok(UnixSeconds(row.uint(index)?))
}

fn opt_time(row: &Row, index: usize) -> Result<Option<UnixSeconds>, Error> {
    Ok(row.opt_uint(index)?.map(UnixSeconds))
}

fn settlement_row(r: &Row) -> Result<SettlementRecord, Error> {
    Ok(SettlementRecord {
        id: text(r, 0)?,
        event_id: text(r, 1)?,
        content: r.bytes(2)?.to_vec(),
        kind: r.parsed(3, RecordKind::parse)?,
        package: r.parsed(4, |name| escx::header::PackageName::parse(name).ok())?,
        tier: text(r, 5)?,
        gross: micros(r, 6)?,
        currency: text(r, 7)?,
        at: time(r, 8)?,
        state: r.parsed(9, SettlementState::parse)?,
        refund_of: opt_text(r, 10)?,
        batch: r.uint(11)?,
    })
}

fn hold_row(r: &Row, o: usize) -> Result<HoldRecord, Error> {
    Ok(HoldRecord {
        settlement: text(r, o)?,
        event: r.bytes(o + 1)?.to_vec(),
        amount: micros(r, o + 2)?,
        placed_at: time(r, o + 3)?,
        expires_at: time(r, o + 4)?,
        state: r.parsed(o + 5, HoldState::parse)?,
        captured: r.opt_uint(o + 6)?.map(Micros),
        closed_at: opt_time(r, o + 7)?,
    })
}

fn dispute_row(r: &Row, o: usize) -> Result<DisputeRecord, Error> {
    Ok(DisputeRecord {
        id: r.int(o)?,
        settlement: text(r, o + 1)?,
        opened_at: time(r, o + 2)?,
        reason: text(r, o + 3)?,
        resolved_at: opt_time(r, o + 4)?,
        outcome: match r.opt_text(o + 5)? {
            None => None,
            Some(_) => Some(r.parsed(o + 5, Outcome::parse)?),
        },
        resolution: opt_text(r, o + 6)?,
    })
}

fn opening_row(r: &Row, party: Option<String>, o: usize) -> Result<Opening, Error> {
    Ok(Opening {
        entry: r.narrow(0)?,
        party,
        amount: micros(r, o)?,
        blinding: serde_bytes::ByteBuf::from(r.bytes(o + 1)?.to_vec()),
    })
}

/// An unsigned value as a statement parameter; beyond the engines' signed 64-bit integers
/// it is refused before anything is written.
fn uint(value: impl Into<u64>) -> Result<Arg<'static>, Error> {
    Ok(Arg::uint(value)?)
}

/// A time that bounds a query, clamped to the engines' integers (no stored time is
/// beyond them: each was refused where it was written).
fn bound(t: UnixSeconds) -> Arg<'static> {
    Arg::Int(i64::try_from(t.0).unwrap_or(i64::MAX))
}

/// The queries, over the store's connection or a transaction.
struct Q<'a, S: Sql>(&'a S);

impl<S: Sql> Q<'_, S> {
    fn list<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        map: impl Fn(&Row) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        self.0.rows(sql, args)?.iter().map(map).collect()
    }

    fn first<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        map: impl Fn(&Row) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        self.0.row(sql, args)?.as_ref().map(map).transpose()
    }

    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        self.first("SELECT value FROM meta WHERE key = ?1", &[Arg::Text(key)], |r| text(r, 0))
    }

    fn settlement(&self, id: &str) -> Result<Option<SettlementRecord>, Error> {
        self.first(
            &format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements s WHERE s.id = ?1"),
            &[Arg::Text(id)],
            settlement_row,
        )
    }

    fn settlements(&self, ids: &[&str]) -> Result<HashMap<String, SettlementRecord>, Error> {
        let rows = self
            .0
            .rows_in(&format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements s WHERE s.id IN ({{}})"), ids)?;
        rows.iter().map(|r| settlement_row(r).map(|s| (s.id.clone(), s))).collect()
    }

    fn settlement_ids_starting(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> {
        // Ids are lowercase hex and sort bytewise (`COLLATE "C"` on PostgreSQL): every id
        // starting with `prefix` sorts at or after it and before `prefix` followed by a
        // character above 'f', so this range is a prefix scan on the primary key.
        let end = format!("{prefix}g");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.list(
            "SELECT id FROM settlements WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3",
            &[Arg::Text(prefix), Arg::Text(&end), Arg::Int(limit)],
            |r| text(r, 0),
        )
    }

    fn refunds_of(&self, target: &str) -> Result<Vec<String>, Error> {
        self.list("SELECT id FROM settlements WHERE refund_of = ?1 ORDER BY id", &[Arg::Text(target)], |r| {
            text(r, 0)
        })
    }

    fn transfers_of(&self, settlement: &str) -> Result<Vec<TransferRecord>, Error> {
        self.list(
            "SELECT t.debit, t.credit, a.name, t.amount FROM transfers t JOIN accounts a ON a.id = t.credit
             WHERE t.settlement = ?1 ORDER BY t.id",
            &[Arg::Text(settlement)],
            |r| {
                Ok(TransferRecord {
                    debit: r.int(0)?,
                    credit: r.int(1)?,
                    credit_name: text(r, 2)?,
                    amount: micros(r, 3)?,
                })
            },
        )
    }

    fn recouped(&self, currency: &str) -> Result<BTreeMap<String, Micros>, Error> {
        Ok(self
            .list("SELECT party, total FROM recoupment WHERE currency = ?1", &[Arg::Text(currency)], |r| {
                Ok((text(r, 0)?, micros(r, 1)?))
            })?
            .into_iter()
            .collect())
    }

    fn settlement_recoup(&self, settlement: &str) -> Result<Vec<(String, i64)>, Error> {
        // Sorted here, bytewise on either engine.
        let mut rows = self.list(
            "SELECT party, amount FROM settlement_recoup WHERE settlement = ?1",
            &[Arg::Text(settlement)],
            |r| Ok((text(r, 0)?, r.int(1)?)),
        )?;
        rows.sort();
        Ok(rows)
    }

    fn statements(&self) -> Result<Vec<StatementRecord>, Error> {
        self.list("SELECT seq, hash, issued_at, entries FROM statements ORDER BY seq", &[], |r| {
            Ok(StatementRecord {
                seq: r.uint(0)?,
                hash: r.array(1)?,
                issued_at: time(r, 2)?,
                entries: r.uint(3)?,
                bytes: Vec::new(),
            })
        })
    }

    fn statement(&self, seq: u64) -> Result<Option<StatementRecord>, Error> {
        self.first(
            "SELECT seq, hash, issued_at, entries, bytes FROM statements WHERE seq = ?1",
            &[uint(seq)?],
            |r| {
                Ok(StatementRecord {
                    seq: r.uint(0)?,
                    hash: r.array(1)?,
                    issued_at: time(r, 2)?,
                    entries: r.uint(3)?,
                    bytes: r.bytes(4)?.to_vec(),
                })
            },
        )
    }

    fn last_statement(&self) -> Result<Option<(u64, [u8; 32], UnixSeconds)>, Error> {
        self.first("SELECT seq, hash, issued_at FROM statements ORDER BY seq DESC LIMIT 1", &[], |r| {
            Ok((r.uint(0)?, r.array(1)?, UnixSeconds(r.uint(2)?)))
        })
    }

    fn openings(&self, seq: u64, party: &str) -> Result<Vec<Opening>, Error> {
        self.list(
            "SELECT entry, amount, blinding FROM statement_openings WHERE seq = ?1 AND party = ?2 ORDER BY entry",
            &[uint(seq)?, Arg::Text(party)],
            |r| opening_row(r, Some(party.to_owned()), 1),
        )
    }

    fn statement_openings(&self, seq: u64) -> Result<Vec<Opening>, Error> {
        // By entry, then party bytewise with the gross's (no party) first.
        let mut rows = self.list(
            "SELECT entry, party, amount, blinding FROM statement_openings WHERE seq = ?1",
            &[uint(seq)?],
            |r| opening_row(r, opt_text(r, 1)?, 2),
        )?;
        rows.sort_by(|a, b| (a.entry, &a.party).cmp(&(b.entry, &b.party)));
        Ok(rows)
    }

    fn hold(&self, settlement: &str) -> Result<Option<HoldRecord>, Error> {
        self.first(
            &format!("SELECT {HOLD_COLUMNS} FROM holds h WHERE h.settlement = ?1"),
            &[Arg::Text(settlement)],
            |r| hold_row(r, 0),
        )
    }

    fn holds(&self, state: Option<HoldState>) -> Result<Vec<(HoldRecord, SettlementRecord)>, Error> {
        let mut rows = self.list(
            &format!(
                "SELECT {SETTLEMENT_COLUMNS}, {HOLD_COLUMNS} FROM holds h JOIN settlements s ON s.id = h.settlement
                 WHERE (?1 IS NULL OR h.state = ?1)"
            ),
            &[Arg::OptText(state.map(HoldState::name))],
            |r| Ok((hold_row(r, 12)?, settlement_row(r)?)),
        )?;
        // By placing time, then event id bytewise.
        rows.sort_by(|(a, sa), (b, sb)| (a.placed_at, &sa.event_id).cmp(&(b.placed_at, &sb.event_id)));
        Ok(rows)
    }

    fn disputes(&self) -> Result<Vec<(DisputeRecord, SettlementRecord)>, Error> {
        self.list(
            &format!(
                "SELECT {SETTLEMENT_COLUMNS}, {DISPUTE_COLUMNS} FROM disputes d JOIN settlements s ON s.id = d.settlement
                 ORDER BY d.opened_at, d.id"
            ),
            &[],
            |r| Ok((dispute_row(r, 12)?, settlement_row(r)?)),
        )
    }

    fn open_dispute(&self, settlement: &str) -> Result<Option<DisputeRecord>, Error> {
        self.first(
            &format!(
                "SELECT {DISPUTE_COLUMNS} FROM disputes d WHERE d.settlement = ?1 AND d.resolved_at IS NULL"
            ),
            &[Arg::Text(settlement)],
            |r| dispute_row(r, 0),
        )
    }

    fn balances(&self, name: Option<&str>) -> Result<Vec<Balance>, Error> {
        let mut rows = self.list(
            "SELECT a.name, a.currency,
                    CAST(COALESCE((SELECT SUM(amount) FROM transfers WHERE credit = a.id), 0)
                       - COALESCE((SELECT SUM(amount) FROM transfers WHERE debit = a.id), 0) AS BIGINT)
             FROM accounts a WHERE (?1 IS NULL OR a.name = ?1)",
            &[Arg::OptText(name)],
            |r| Ok(Balance { account: text(r, 0)?, currency: text(r, 1)?, micros: r.int(2)? }),
        )?;
        // By name, then currency, bytewise.
        rows.sort_by(|a, b| (&a.account, &a.currency).cmp(&(&b.account, &b.currency)));
        Ok(rows)
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
            &[bound(from), bound(to)],
            |r| {
                Ok(PartyTransfer {
                    settlement: text(r, 0)?,
                    at: time(r, 1)?,
                    kind: r.parsed(2, RecordKind::parse)?,
                    gross: micros(r, 3)?,
                    party: text(r, 4)?,
                    currency: text(r, 5)?,
                    amount: r.int(6)?,
                    event: text(r, 7)?,
                    package: r.parsed(8, |name| escx::header::PackageName::parse(name).ok())?,
                    state: r.parsed(9, SettlementState::parse)?,
                })
            },
        )
    }

    fn counts(&self) -> Result<(u64, u64), Error> {
        let row =
            self.0.one("SELECT (SELECT COUNT(*) FROM settlements), (SELECT COUNT(*) FROM transfers)", &[])?;
        Ok((row.uint(0)?, row.uint(1)?))
    }

    fn unconserved(&self) -> Result<Vec<String>, Error> {
        self.list(
            "SELECT s.id FROM settlements s
             WHERE s.kind IN ('sale', 'usage', 'refund', 'reversal')
               AND s.gross <> COALESCE((SELECT SUM(amount) FROM transfers t WHERE t.settlement = s.id), 0)
             ORDER BY s.id",
            &[],
            |r| text(r, 0),
        )
    }
}

impl Q<'_, Db> {
    fn location(&self) -> PathBuf {
        self.0.location().into()
    }
}

forward_reader!(SqlStore, self => Q(&self.db), batched);

// Every statement of a transaction first writes its buffered rows; recoupment totals it
// has read come from its own copy.
#[rustfmt::skip]
impl Reader for SqlTx<'_> {
    fn location(&self) -> PathBuf { self.tx.location().into() }
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
    fn last_statement(&self) -> Result<Option<(u64, [u8; 32], UnixSeconds)>, Error> { self.q()?.last_statement() }
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

impl<'a> SqlTx<'a> {
    /// The queries, once the buffered rows are written.
    fn q(&self) -> Result<Q<'_, Tx<'a>>, Error> {
        self.flush()?;
        Ok(Q(&self.tx))
    }

    /// A currency's recoupment totals: read once per transaction, then kept with this
    /// transaction's changes.
    fn recouped_in_tx(&self, currency: &str) -> Result<BTreeMap<String, Micros>, Error> {
        if let Some(held) = self.recouped.borrow().get(currency) {
            return Ok(held.clone());
        }
        let read = self.q()?.recouped(currency)?;
        self.recouped.borrow_mut().insert(currency.to_owned(), read.clone());
        Ok(read)
    }

    /// Writes the buffered rows, a statement per table (`Tx::insert_rows`: one `COPY` on
    /// PostgreSQL), in the order they were buffered within each table, so transfer ids
    /// follow the writes.
    fn flush(&self) -> Result<(), Error> {
        if self.pending.borrow().is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        let rows = pending
            .settlements
            .iter()
            .map(|s| {
                Ok(vec![
                    Arg::Text(&s.id),
                    Arg::Text(&s.event_id),
                    Arg::Bytes(&s.content),
                    Arg::Text(s.kind.name()),
                    Arg::Text(s.package.as_str()),
                    Arg::Text(&s.tier),
                    uint(s.gross.0)?,
                    Arg::Text(&s.currency),
                    uint(s.at.0)?,
                    Arg::Text(s.state.name()),
                    Arg::OptText(s.refund_of.as_deref()),
                    uint(s.batch)?,
                ])
            })
            .collect::<Result<Vec<_>, Error>>()?;
        self.tx.insert_rows(
            "settlements",
            &[
                "id",
                "event_id",
                "content",
                "kind",
                "package",
                "tier",
                "gross",
                "currency",
                "at",
                "state",
                "refund_of",
                "batch",
            ],
            &rows,
        )?;
        let rows: Vec<Vec<Arg<'_>>> = pending
            .transfers
            .iter()
            .map(|(settlement, debit, credit, amount)| {
                vec![Arg::Text(settlement), Arg::Int(*debit), Arg::Int(*credit), Arg::Int(*amount)]
            })
            .collect();
        self.tx.insert_rows("transfers", &["settlement", "debit", "credit", "amount"], &rows)?;
        let rows: Vec<Vec<Arg<'_>>> = pending
            .settlement_recoup
            .iter()
            .map(|(settlement, party, amount)| {
                vec![Arg::Text(settlement), Arg::Text(party), Arg::Int(*amount)]
            })
            .collect();
        self.tx.insert_rows("settlement_recoup", &["settlement", "party", "amount"], &rows)?;
        // Upserts, many rows per statement.
        let totals: Vec<_> = pending.recoupment.iter().collect();
        for chunk in totals.chunks(escx_store::IN_LIST_MAX / 3) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(?{}, ?{}, ?{})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect();
            let args: Vec<Arg<'_>> = chunk
                .iter()
                .flat_map(|((party, currency), total)| {
                    [Arg::Text(party), Arg::Text(currency), Arg::Int(**total)]
                })
                .collect();
            self.tx.exec(
                &format!(
                    "INSERT INTO recoupment (party, currency, total) VALUES {}
                     ON CONFLICT (party, currency) DO UPDATE SET total = excluded.total",
                    values.join(", ")
                ),
                &args,
            )?;
        }
        Ok(())
    }

    /// Runs a statement after the buffered rows.
    fn run(&self, sql: &str, args: &[Arg<'_>]) -> Result<(), Error> {
        self.flush()?;
        self.tx.exec(sql, args)?;
        Ok(())
    }
}

/// A signed amount, refused where it is written when beyond the engines' integers.
fn signed(value: Micros) -> Result<i64, Error> {
    i64::try_from(value.0).map_err(|_| {
        Error::Store(escx_store::Error::failed(
            "",
            format!("{value} is beyond the store's 64-bit signed integers"),
        ))
    })
}

impl Writer for SqlTx<'_> {
    fn account(&mut self, name: &str, currency: &str) -> Result<AccountId, Error> {
        let key = (name.to_owned(), currency.to_owned());
        if let Some(id) = self.accounts.get(&key) {
            return Ok(*id);
        }
        self.run(
            "INSERT INTO accounts (name, currency) VALUES (?1, ?2) ON CONFLICT (name, currency) DO NOTHING",
            &[Arg::Text(name), Arg::Text(currency)],
        )?;
        let id = self
            .tx
            .row(
                "SELECT id FROM accounts WHERE name = ?1 AND currency = ?2",
                &[Arg::Text(name), Arg::Text(currency)],
            )?
            .ok_or_else(|| Error::stored(self.tx.location(), format!("account {name} vanished")))?
            .int(0)?;
        self.accounts.insert(key, id);
        Ok(id)
    }

    fn insert_settlement(&mut self, s: &SettlementRecord) -> Result<(), Error> {
        // Checked now, so a value beyond the engines' integers fails where it is written.
        signed(s.gross)?;
        uint(s.batch)?;
        uint(s.at.0)?;
        self.pending.get_mut().settlements.push(s.clone());
        Ok(())
    }

    fn set_state(&mut self, id: &str, state: SettlementState) -> Result<(), Error> {
        self.run("UPDATE settlements SET state = ?2 WHERE id = ?1", &[Arg::Text(id), Arg::Text(state.name())])
    }

    fn insert_transfer(
        &mut self,
        settlement: &str,
        debit: AccountId,
        credit: AccountId,
        amount: Micros,
    ) -> Result<(), Error> {
        let amount = signed(amount)?;
        self.pending.get_mut().transfers.push((settlement.to_owned(), debit, credit, amount));
        Ok(())
    }

    fn set_recouped(&mut self, party: &str, currency: &str, total: Micros) -> Result<(), Error> {
        let amount = signed(total)?;
        self.pending.get_mut().recoupment.insert((party.to_owned(), currency.to_owned()), amount);
        if let Some(held) = self.recouped.get_mut().get_mut(currency) {
            held.insert(party.to_owned(), total);
        }
        Ok(())
    }

    fn add_settlement_recoup(&mut self, settlement: &str, party: &str, amount: i64) -> Result<(), Error> {
        self.pending.get_mut().settlement_recoup.push((settlement.to_owned(), party.to_owned(), amount));
        Ok(())
    }

    fn insert_statement(&mut self, s: &StatementRecord, openings: &[Opening]) -> Result<(), Error> {
        let seq = uint(s.seq)?;
        self.run(
            "INSERT INTO statements (seq, hash, issued_at, entries, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[seq, Arg::Bytes(&s.hash), uint(s.issued_at.0)?, uint(s.entries)?, Arg::Bytes(&s.bytes)],
        )?;
        let rows = openings
            .iter()
            .map(|o| {
                Ok(vec![
                    seq,
                    Arg::Int(i64::from(o.entry)),
                    Arg::OptText(o.party.as_deref()),
                    uint(o.amount.0)?,
                    Arg::Bytes(o.blinding.as_slice()),
                ])
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(self.tx.insert_rows(
            "statement_openings",
            &["seq", "entry", "party", "amount", "blinding"],
            &rows,
        )?)
    }

    fn audit(&mut self, at: UnixSeconds, action: &str, subject: &str, detail: &str) -> Result<(), Error> {
        self.run(
            "INSERT INTO audit (at, action, subject, detail) VALUES (?1, ?2, ?3, ?4)",
            &[uint(at.0)?, Arg::Text(action), Arg::Text(subject), Arg::Text(detail)],
        )
    }

    fn insert_hold(&mut self, h: &HoldRecord) -> Result<(), Error> {
        self.run(
            "INSERT INTO holds (settlement, event, amount, placed_at, expires_at, state, captured, closed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                Arg::Text(&h.settlement),
                Arg::Bytes(&h.event),
                uint(h.amount.0)?,
                uint(h.placed_at.0)?,
                uint(h.expires_at.0)?,
                Arg::Text(h.state.name()),
                Arg::opt_uint(h.captured.map(|c| c.0))?,
                Arg::opt_uint(h.closed_at.map(|t| t.0))?,
            ],
        )
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
            &[
                Arg::Text(settlement),
                Arg::Text(state.name()),
                Arg::opt_uint(captured.map(|c| c.0))?,
                uint(at.0)?,
            ],
        )
    }

    fn insert_dispute(
        &mut self,
        settlement: &str,
        opened_at: UnixSeconds,
        reason: &str,
    ) -> Result<(), Error> {
        self.run(
            "INSERT INTO disputes (settlement, opened_at, reason) VALUES (?1, ?2, ?3)",
            &[Arg::Text(settlement), uint(opened_at.0)?, Arg::Text(reason)],
        )
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
            &[Arg::Int(id), uint(at.0)?, Arg::Text(outcome.name()), Arg::Text(resolution)],
        )
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.run(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[Arg::Text(key), Arg::Text(value)],
        )
    }

    fn commit(self) -> Result<(), Error> {
        self.flush()?;
        Ok(self.tx.commit()?)
    }
}
