//! The double-entry ledger (spec: settlement.md §3) in SQLite: accounts, transfers,
//! settlements, recoupment totals and an audit log.
//!
//! A run settles events in batches; each batch is one `BEGIN IMMEDIATE` transaction with
//! every settlement of the batch and all of their transfers, so a crash leaves whole
//! settlements or none. A settlement's id derives from its event's id, so re-running events
//! is a no-op, and an event that changed under a used id is refused before anything is
//! written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use escx_manifest::Manifest;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use escx::sig::SecretKey;

use crate::Error;
use crate::events::{BillingEvent, Kind};
use crate::statement::{self, EntryInput, Opening, OpeningsFile};
use crate::waterfall::{self, Split, Tier};

/// Schema version written to `PRAGMA user_version`: the number of migrations applied.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
/// Context of settlement ids: `derive_key(context, event id)`.
pub const CONTEXT_SETTLEMENT_ID: &str = "escx v1 settlement id";
/// Context of a settlement's content hash: `derive_key(context, canonical event)`.
pub const CONTEXT_SETTLEMENT_CONTENT: &str = "escx v1 settlement content";
/// Settlements per transaction unless told otherwise.
pub const BATCH_DEFAULT: usize = 10_000;
/// The account that pays every gross amount (money received from customers).
/// (`@` cannot start a party name, so no party can take it.)
pub const CUSTOMERS: &str = "@customers";
/// The account that holds placed, not yet captured or voided, budget holds.
pub const HOLDS: &str = "@holds";

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

/// The operator's own share of every gross, run before every other tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformFee {
    /// The platform's party name.
    pub party: String,
    /// Basis points of gross.
    pub bps: u32,
}

/// What a ledger fixes at creation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The operator's share of every gross.
    pub platform: Option<PlatformFee>,
    /// Payout reports pay a party's carried balance once it reaches this many micro-units
    /// (0: any positive balance).
    pub payout_threshold: u64,
}

/// Manifests by package name and version: where waterfalls and solution tiers come from.
#[derive(Debug, Default)]
pub struct Manifests {
    by_name: BTreeMap<String, BTreeMap<semver::Version, Manifest>>,
}

impl Manifests {
    /// Every `*.toml` manifest under `dir` (recursively, up to 4 levels).
    pub fn load_dir(dir: &Path) -> Result<Self, Error> {
        let mut manifests = Self::default();
        let walker = walkdir::WalkDir::new(dir).max_depth(4).sort_by_file_name();
        for entry in walker {
            let entry = entry.map_err(|e| Error::Manifests { path: dir.into(), reason: e.to_string() })?;
            if !entry.file_type().is_file() || entry.path().extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let manifest = Manifest::load(entry.path())
                .map_err(|e| Error::Manifests { path: entry.path().into(), reason: e.to_string() })?;
            manifests.add(manifest);
        }
        Ok(manifests)
    }

    /// Adds one manifest (a later one with the same name and version replaces it).
    pub fn add(&mut self, manifest: Manifest) {
        self.by_name
            .entry(manifest.package.name.clone())
            .or_default()
            .insert(manifest.package.version.clone(), manifest);
    }

    /// The manifest of `name` at `version`, or the newest when no version is given.
    pub fn get(&self, name: &str, version: Option<&str>) -> Option<&Manifest> {
        let versions = self.by_name.get(name)?;
        match version {
            Some(text) => versions.get(&semver::Version::parse(text).ok()?),
            None => versions.values().next_back(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// Settlements written.
    pub settled: usize,
    /// Events already settled with the same content (no-ops).
    pub unchanged: usize,
    /// Transfers written.
    pub transfers: usize,
    /// Transactions committed.
    pub batches: usize,
    /// Statements signed (one per non-empty batch).
    pub statements: usize,
}

/// One statement in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementInfo {
    /// Sequence number.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
    /// When it was signed.
    pub issued_at: u64,
    /// Entries (settlements) in it.
    pub entries: u64,
}

/// One account's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Account name (`customers`, or a party).
    pub account: String,
    /// Currency.
    pub currency: String,
    /// Credits minus debits, micro-units.
    pub micros: i64,
}

/// One transfer touching a party, for its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    /// Settlement time (the event's).
    pub at: u64,
    /// Settlement id.
    pub settlement: String,
    /// The event id.
    pub event: String,
    /// Event kind.
    pub kind: String,
    /// Package.
    pub package: String,
    /// Settlement state.
    pub state: String,
    /// Currency.
    pub currency: String,
    /// Positive when the party was credited.
    pub micros: i64,
}

/// The ledger's invariants, as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Settlements.
    pub settlements: u64,
    /// Transfers.
    pub transfers: u64,
    /// Sum over all accounts and currencies of credits minus debits (must be 0).
    pub imbalance: i64,
    /// Sale and usage settlements whose transfers do not add up to their gross.
    pub unconserved: Vec<String>,
    /// Currencies whose `@holds` balance is not the sum of the pending holds.
    pub holds_mismatch: Vec<String>,
}

impl Audit {
    /// True when every invariant holds.
    pub fn ok(&self) -> bool {
        self.imbalance == 0 && self.unconserved.is_empty() && self.holds_mismatch.is_empty()
    }
}

/// The id of the settlement of event `event_id`: hex of `derive_key(context, id)`.
pub fn settlement_id(event_id: &str) -> String {
    hex::encode(blake3::derive_key(CONTEXT_SETTLEMENT_ID, event_id.as_bytes()))
}

fn content_hash(event: &BillingEvent) -> [u8; 32] {
    blake3::derive_key(CONTEXT_SETTLEMENT_CONTENT, &event.canonical())
}

/// The SQLite ledger.
pub struct Ledger {
    pub(crate) db: Connection,
    pub(crate) path: PathBuf,
}

impl Ledger {
    /// Creates a new ledger file (refuses an existing one) with a platform fee.
    pub fn init(path: &Path, platform: Option<&PlatformFee>) -> Result<Self, Error> {
        Self::create(path, &Options { platform: platform.cloned(), payout_threshold: 0 })
    }

    /// Creates a new ledger file (refuses an existing one).
    pub fn create(path: &Path, options: &Options) -> Result<Self, Error> {
        let platform = options.platform.as_ref();
        if path.exists() {
            return Err(Error::Store { path: path.into(), reason: "exists already; open it instead".into() });
        }
        let db = connect(path)?;
        let store = |e: rusqlite::Error| Error::Store { path: path.into(), reason: e.to_string() };
        for migration in MIGRATIONS {
            db.execute_batch(migration).map_err(store)?;
        }
        let mut ledger_id = [0u8; 16];
        escx::keyfile::fill_random(&mut ledger_id)
            .map_err(|e| Error::Store { path: path.into(), reason: e.to_string() })?;
        db.execute("INSERT INTO meta VALUES ('ledger_id', ?1)", [hex::encode(ledger_id)]).map_err(store)?;
        if let Some(fee) = platform {
            if fee.bps > 10_000 {
                return Err(Error::Store {
                    path: path.into(),
                    reason: "platform share over 10000 bps".into(),
                });
            }
            db.execute("INSERT INTO meta VALUES ('platform_party', ?1)", [&fee.party]).map_err(store)?;
            db.execute("INSERT INTO meta VALUES ('platform_bps', ?1)", [fee.bps.to_string()])
                .map_err(store)?;
        }
        db.execute(
            "INSERT INTO meta VALUES ('payout_threshold', ?1)",
            [options.payout_threshold.to_string()],
        )
        .map_err(store)?;
        db.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(store)?;
        Ok(Self { db, path: path.into() })
    }

    /// Opens an existing ledger.
    pub fn open(path: &Path) -> Result<Self, Error> {
        if !path.exists() {
            return Err(Error::Store {
                path: path.into(),
                reason: "no such ledger; create it with `escx settle init`".into(),
            });
        }
        let db = connect(path)?;
        let version: i64 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| Error::Store { path: path.into(), reason: e.to_string() })?;
        if !(1..=SCHEMA_VERSION).contains(&version) {
            return Err(Error::Schema { path: path.into(), found: version, expected: SCHEMA_VERSION });
        }
        let mut ledger = Self { db, path: path.into() };
        if version < SCHEMA_VERSION {
            ledger.migrate(version)?;
        }
        Ok(ledger)
    }

    /// Runs the migrations after `from`, all in one transaction.
    fn migrate(&mut self, from: i64) -> Result<(), Error> {
        let path = self.path.clone();
        let store = |e: rusqlite::Error| Error::Store { path: path.clone(), reason: e.to_string() };
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
        // Another process may have migrated it while this one waited for the lock.
        let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(store)?;
        for migration in MIGRATIONS.iter().skip(now.max(from) as usize) {
            tx.execute_batch(migration).map_err(store)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(store)?;
        tx.commit().map_err(store)
    }

    pub(crate) fn store(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |e| Error::Store { path: self.path.clone(), reason: e.to_string() }
    }

    /// The platform fee recorded at `init`.
    pub fn platform(&self) -> Result<Option<PlatformFee>, Error> {
        let get = |key: &str| {
            self.db
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get::<_, String>(0))
                .optional()
                .map_err(self.store())
        };
        match (get("platform_party")?, get("platform_bps")?) {
            (Some(party), Some(bps)) => Ok(Some(PlatformFee {
                party,
                bps: bps.parse().map_err(|_| Error::Store {
                    path: self.path.clone(),
                    reason: "bad platform_bps".into(),
                })?,
            })),
            _ => Ok(None),
        }
    }

    /// Settles `events` in batches of `batch_size` (one transaction each). Every event is
    /// checked first (manifest, currency, conflicts with settled events, refund targets),
    /// so a bad record leaves the ledger untouched.
    pub fn settle(
        &mut self,
        events: &[BillingEvent],
        manifests: &Manifests,
        batch_size: usize,
        operator: &SecretKey,
        now: u64,
    ) -> Result<RunReport, Error> {
        let platform = self.platform()?;
        let ledger_id = self.ledger_id()?;
        // 1. Validate everything against the ledger as it is.
        let mut fresh = Vec::new();
        let mut report = RunReport::default();
        for event in events {
            let id = settlement_id(&event.id);
            let content = content_hash(event);
            let held: Option<(Vec<u8>, String)> = self
                .db
                .query_row("SELECT content, kind FROM settlements WHERE id = ?1", [&id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(self.store())?;
            match held {
                Some((_, kind)) if kind == "hold" => {
                    return Err(Error::Hold {
                        hold: event.id.clone(),
                        reason: "this event id is a budget hold; settle it with `escx hold capture`".into(),
                    });
                }
                Some((bytes, _)) if bytes == content => report.unchanged += 1,
                Some(_) => return Err(Error::Conflict { event: event.id.clone(), settlement: id }),
                None => {
                    chain_for(event, manifests, platform.as_ref())?;
                    fresh.push((event, id, content));
                }
            }
        }
        let fresh_ids: std::collections::HashSet<&str> =
            fresh.iter().map(|(e, _, _)| e.id.as_str()).collect();
        for (event, _, _) in &fresh {
            if let Some(target) = &event.refund_of {
                self.check_refund(event, target, &fresh_ids, events)?;
            }
        }

        // 2. Apply, a batch per transaction.
        let path = self.path.clone();
        let store = |e: rusqlite::Error| Error::Store { path: path.clone(), reason: e.to_string() };
        let mut accounts = AccountCache::new();
        for chunk in fresh.chunks(batch_size.max(1)) {
            let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
            // The batch's statement number; its settlements carry it.
            let batch = next_seq(&tx).map_err(|e| e.with_path(&path))?;
            let mut entries = Vec::with_capacity(chunk.len());
            for (event, id, content) in chunk {
                // A concurrent run may have settled it since the checks above.
                let held: Option<Vec<u8>> = tx
                    .query_row("SELECT content FROM settlements WHERE id = ?1", [id], |r| r.get(0))
                    .optional()
                    .map_err(store)?;
                match held {
                    Some(bytes) if bytes == content => {
                        report.unchanged += 1;
                        continue;
                    }
                    Some(_) => {
                        return Err(Error::Conflict { event: event.id.clone(), settlement: id.clone() });
                    }
                    None => {}
                }
                let payouts = match event.kind {
                    Kind::Sale | Kind::Usage => apply_sale(
                        &tx,
                        event,
                        id,
                        content,
                        batch,
                        manifests,
                        platform.as_ref(),
                        &mut accounts,
                    )
                    .map_err(|e| e.with_path(&path))?,
                    Kind::Refund => apply_refund(&tx, event, id, content, batch, &mut accounts)
                        .map_err(|e| e.with_path(&path))?,
                };
                report.transfers += payouts.len();
                report.settled += 1;
                let mut settlement = [0u8; 32];
                hex::decode_to_slice(id, &mut settlement)
                    .map_err(|e| Error::Store { path: path.clone(), reason: e.to_string() })?;
                entries.push(EntryInput {
                    settlement,
                    kind: event.kind.name().into(),
                    currency: event.currency.clone(),
                    gross: event.gross_micros,
                    payouts,
                });
            }
            if !entries.is_empty() {
                close_batch(&tx, &ledger_id, batch, &entries, operator, now)
                    .map_err(|e| e.with_path(&path))?;
                report.statements += 1;
            }
            tx.commit().map_err(store)?;
            report.batches += 1;
        }
        Ok(report)
    }

    fn check_refund(
        &self,
        event: &BillingEvent,
        target: &str,
        fresh: &std::collections::HashSet<&str>,
        events: &[BillingEvent],
    ) -> Result<(), Error> {
        let invalid = |reason: String| Error::Refund { event: event.id.clone(), reason };
        let held: Option<(i64, String, String)> = self
            .db
            .query_row(
                "SELECT gross, currency, state FROM settlements WHERE id = ?1",
                [settlement_id(target)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.store())?;
        let (gross, currency, state) = match held {
            Some(row) => row,
            None if fresh.contains(target) => {
                let position = |id: &str| events.iter().position(|e| e.id == id);
                if position(target) > position(&event.id) {
                    return Err(invalid(format!(
                        "refund_of {target:?}: the refund comes before the event in the file"
                    )));
                }
                let original =
                    events.iter().find(|e| e.id == target).ok_or_else(|| invalid("unknown".into()))?;
                (original.gross_micros as i64, original.currency.clone(), "SETTLED".into())
            }
            None => {
                return Err(invalid(format!(
                    "refund_of {target:?}: no such event in the ledger or this file"
                )));
            }
        };
        if state != "SETTLED" {
            return Err(invalid(format!("refund_of {target:?}: that settlement is {state}")));
        }
        if gross as u64 != event.gross_micros || currency != event.currency {
            return Err(invalid(format!(
                "a refund gives back the whole event: gross {} {currency}, not {} {} (partial refunds are not supported)",
                escx_manifest::Micros(gross as u64),
                escx_manifest::Micros(event.gross_micros),
                event.currency
            )));
        }
        let other_refund = events.iter().any(|e| e.id != event.id && e.refund_of.as_deref() == Some(target))
            || self
                .db
                .query_row(
                    "SELECT 1 FROM settlements WHERE refund_of = ?1 AND event_id <> ?2",
                    params![settlement_id(target), event.id],
                    |_| Ok(()),
                )
                .optional()
                .map_err(self.store())?
                .is_some();
        if other_refund {
            return Err(invalid(format!("refund_of {target:?}: another refund gives it back already")));
        }
        Ok(())
    }

    /// The ledger's random id (in every statement).
    pub fn ledger_id(&self) -> Result<[u8; 16], Error> {
        let text: String = self
            .db
            .query_row("SELECT value FROM meta WHERE key = 'ledger_id'", [], |r| r.get(0))
            .map_err(self.store())?;
        let mut id = [0u8; 16];
        hex::decode_to_slice(&text, &mut id)
            .map_err(|_| Error::Store { path: self.path.clone(), reason: "bad ledger_id".into() })?;
        Ok(id)
    }

    /// Every statement: (seq, hash, issued_at, entries).
    pub fn statements(&self) -> Result<Vec<StatementInfo>, Error> {
        let mut statement = self
            .db
            .prepare("SELECT seq, hash, issued_at, entries FROM statements ORDER BY seq")
            .map_err(self.store())?;
        let rows = statement
            .query_map([], |r| {
                Ok(StatementInfo {
                    seq: r.get::<_, i64>(0)? as u64,
                    hash: hex::encode(r.get::<_, Vec<u8>>(1)?),
                    issued_at: r.get::<_, i64>(2)? as u64,
                    entries: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(self.store())?;
        rows.collect::<Result<_, _>>().map_err(self.store())
    }

    /// A statement's signed bytes.
    pub fn statement(&self, seq: u64) -> Result<Vec<u8>, Error> {
        self.db
            .query_row("SELECT bytes FROM statements WHERE seq = ?1", [seq as i64], |r| r.get(0))
            .optional()
            .map_err(self.store())?
            .ok_or(Error::UnknownStatement { seq })
    }

    /// A party's openings for statement `seq`.
    pub fn openings(&self, seq: u64, party: &str) -> Result<OpeningsFile, Error> {
        self.statement(seq)?;
        let mut statement = self
            .db
            .prepare("SELECT entry, amount, blinding FROM statement_openings WHERE seq = ?1 AND party = ?2 ORDER BY entry")
            .map_err(self.store())?;
        let openings = statement
            .query_map(params![seq as i64, party], |r| {
                Ok(Opening {
                    entry: r.get(0)?,
                    party: Some(party.to_owned()),
                    amount: r.get::<_, i64>(1)? as u64,
                    blinding: serde_bytes::ByteBuf::from(r.get::<_, Vec<u8>>(2)?),
                })
            })
            .map_err(self.store())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.store())?;
        Ok(OpeningsFile {
            v: 1,
            ledger: serde_bytes::ByteBuf::from(self.ledger_id()?.to_vec()),
            seq,
            party: party.to_owned(),
            openings,
        })
    }

    /// Balances of every account (or the accounts of `party`).
    pub fn balances(&self, party: Option<&str>) -> Result<Vec<Balance>, Error> {
        let mut statement = self
            .db
            .prepare(
                "SELECT a.name, a.currency,
                        COALESCE((SELECT SUM(amount) FROM transfers WHERE credit = a.id), 0)
                      - COALESCE((SELECT SUM(amount) FROM transfers WHERE debit = a.id), 0)
                 FROM accounts a WHERE (?1 IS NULL OR a.name = ?1) ORDER BY a.name, a.currency",
            )
            .map_err(self.store())?;
        let rows = statement
            .query_map([party], |r| {
                Ok(Balance { account: r.get(0)?, currency: r.get(1)?, micros: r.get(2)? })
            })
            .map_err(self.store())?;
        rows.collect::<Result<_, _>>().map_err(self.store())
    }

    /// Every transfer touching `party` between `from` (inclusive) and `to` (exclusive).
    pub fn history(&self, party: &str, from: u64, to: u64) -> Result<Vec<HistoryRow>, Error> {
        let mut statement = self
            .db
            .prepare(
                "SELECT s.at, s.id, s.event_id, s.kind, s.package, s.state, a.currency,
                        CASE WHEN t.credit = a.id THEN t.amount ELSE -t.amount END
                 FROM transfers t
                 JOIN accounts a ON a.id IN (t.credit, t.debit) AND a.name = ?1
                 JOIN settlements s ON s.id = t.settlement
                 WHERE s.at >= ?2 AND s.at < ?3
                 ORDER BY s.at, s.id, t.id",
            )
            .map_err(self.store())?;
        let rows = statement
            .query_map(params![party, from as i64, to.min(i64::MAX as u64) as i64], |r| {
                Ok(HistoryRow {
                    at: r.get::<_, i64>(0)? as u64,
                    settlement: r.get(1)?,
                    event: r.get(2)?,
                    kind: r.get(3)?,
                    package: r.get(4)?,
                    state: r.get(5)?,
                    currency: r.get(6)?,
                    micros: r.get(7)?,
                })
            })
            .map_err(self.store())?;
        rows.collect::<Result<_, _>>().map_err(self.store())
    }

    /// What a party has recouped so far, per currency.
    pub fn recouped(&self, currency: &str) -> Result<BTreeMap<String, u64>, Error> {
        recouped(&self.db, currency).map_err(|e| e.with_path(&self.path))
    }

    /// Checks the ledger's invariants: double entry balances to zero overall, and every
    /// sale or usage settlement's transfers add up to its gross.
    pub fn audit(&self) -> Result<Audit, Error> {
        let count = |sql: &str| self.db.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(self.store());
        let settlements = count("SELECT COUNT(*) FROM settlements")? as u64;
        let transfers = count("SELECT COUNT(*) FROM transfers")? as u64;
        let imbalance = count(
            "SELECT COALESCE(SUM(CASE WHEN a.id = t.credit THEN t.amount ELSE -t.amount END), 0)
             FROM transfers t JOIN accounts a ON a.id IN (t.credit, t.debit)",
        )?;
        let mut statement = self
            .db
            .prepare(
                "SELECT s.id FROM settlements s
                 WHERE s.kind IN ('sale', 'usage')
                   AND s.gross <> COALESCE((SELECT SUM(amount) FROM transfers t WHERE t.settlement = s.id), 0)
                 ORDER BY s.id",
            )
            .map_err(self.store())?;
        let unconserved = statement
            .query_map([], |r| r.get(0))
            .map_err(self.store())?
            .collect::<Result<_, _>>()
            .map_err(self.store())?;
        let mut statement = self
            .db
            .prepare(
                "SELECT a.currency FROM accounts a
                 WHERE a.name = ?1
                   AND COALESCE((SELECT SUM(amount) FROM transfers WHERE credit = a.id), 0)
                     - COALESCE((SELECT SUM(amount) FROM transfers WHERE debit = a.id), 0)
                    <> COALESCE((SELECT SUM(h.amount) FROM holds h JOIN settlements s ON s.id = h.settlement
                                 WHERE h.state = 'PENDING' AND s.currency = a.currency), 0)
                 ORDER BY a.currency",
            )
            .map_err(self.store())?;
        let holds_mismatch = statement
            .query_map([HOLDS], |r| r.get(0))
            .map_err(self.store())?
            .collect::<Result<_, _>>()
            .map_err(self.store())?;
        Ok(Audit { settlements, transfers, imbalance, unconserved, holds_mismatch })
    }

    /// The underlying connection (for tools and tests).
    pub fn database(&self) -> &Connection {
        &self.db
    }
}

fn connect(path: &Path) -> Result<Connection, Error> {
    let store = |e: rusqlite::Error| Error::Store { path: path.into(), reason: e.to_string() };
    let db = Connection::open(path).map_err(store)?;
    db.busy_timeout(std::time::Duration::from_secs(30)).map_err(store)?;
    db.pragma_update(None, "journal_mode", "WAL").map_err(store)?;
    db.pragma_update(None, "synchronous", "FULL").map_err(store)?;
    db.pragma_update(None, "foreign_keys", "ON").map_err(store)?;
    Ok(db)
}

/// The chain an event settles through: platform fee, solution tier, package waterfall.
pub(crate) fn chain_for(
    event: &BillingEvent,
    manifests: &Manifests,
    platform: Option<&PlatformFee>,
) -> Result<Vec<Tier>, Error> {
    if event.kind == Kind::Refund {
        return Ok(Vec::new());
    }
    let missing = |what: String| Error::NoManifest { event: event.id.clone(), what };
    let manifest = manifests.get(&event.package, event.version.as_deref()).ok_or_else(|| {
        missing(match &event.version {
            Some(v) => format!("no manifest for {} {v}", event.package),
            None => format!("no manifest for {}", event.package),
        })
    })?;
    let revenue = manifest
        .revenue
        .as_ref()
        .ok_or_else(|| missing(format!("{} {} has no [revenue]", event.package, manifest.package.version)))?;
    if revenue.currency != event.currency {
        return Err(Error::Currency {
            event: event.id.clone(),
            event_currency: event.currency.clone(),
            revenue_currency: revenue.currency.clone(),
        });
    }
    let mut chain = Vec::new();
    if let Some(fee) = platform {
        chain.push(Tier {
            label: "platform".into(),
            steps: vec![escx_manifest::schema::Step::ShareOfGross { party: fee.party.clone(), bps: fee.bps }],
            residual: None,
        });
    }
    if let Some(name) = &event.solution {
        let solution = manifests
            .get(name, None)
            .and_then(|m| m.solution.as_ref().map(|s| (m, s)))
            .ok_or_else(|| missing(format!("no solution manifest for {name}")))?;
        if !solution.1.packages.contains_key(&event.package) {
            return Err(missing(format!("solution {name} does not bundle {}", event.package)));
        }
        chain.push(Tier {
            label: format!("solution {name}"),
            steps: solution.1.tier.iter().cloned().collect(),
            residual: None,
        });
    }
    chain.push(Tier::package(format!("package {}", event.package), revenue, event.time)?);
    Ok(chain)
}

fn recouped(db: &Connection, currency: &str) -> Result<BTreeMap<String, u64>, Error> {
    let mut statement = db
        .prepare_cached("SELECT party, total FROM recoupment WHERE currency = ?1")
        .map_err(Error::store_unnamed)?;
    let rows = statement
        .query_map([currency], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
        .map_err(Error::store_unnamed)?;
    rows.collect::<Result<_, _>>().map_err(Error::store_unnamed)
}

pub(crate) fn account(
    tx: &Transaction<'_>,
    cache: &mut AccountCache,
    name: &str,
    currency: &str,
) -> Result<i64, Error> {
    let key = (name.to_owned(), currency.to_owned());
    if let Some(id) = cache.get(&key) {
        return Ok(*id);
    }
    tx.prepare_cached("INSERT OR IGNORE INTO accounts (name, currency) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute([name, currency]))
        .map_err(Error::store_unnamed)?;
    let id = tx
        .prepare_cached("SELECT id FROM accounts WHERE name = ?1 AND currency = ?2")
        .and_then(|mut s| s.query_row([name, currency], |r| r.get(0)))
        .map_err(Error::store_unnamed)?;
    cache.insert(key, id);
    Ok(id)
}

/// One row of `settlements`.
pub(crate) struct Row<'a> {
    pub id: &'a str,
    pub event_id: &'a str,
    pub content: &'a [u8],
    pub kind: &'a str,
    pub package: &'a str,
    pub tier: &'a str,
    pub gross: u64,
    pub currency: &'a str,
    pub at: u64,
    pub state: &'a str,
    pub refund_of: Option<&'a str>,
    pub batch: i64,
}

impl<'a> Row<'a> {
    /// The row of a billing event's own settlement.
    fn of_event(event: &'a BillingEvent, id: &'a str, content: &'a [u8], batch: i64) -> Self {
        Row {
            id,
            event_id: &event.id,
            content,
            kind: event.kind.name(),
            package: &event.package,
            tier: &event.tier,
            gross: event.gross_micros,
            currency: &event.currency,
            at: event.time,
            state: "SETTLED",
            refund_of: None,
            batch,
        }
    }
}

pub(crate) fn insert_settlement(tx: &Transaction<'_>, row: &Row<'_>) -> Result<(), Error> {
    tx.prepare_cached(
        "INSERT INTO settlements (id, event_id, content, kind, package, tier, gross, currency, at, state, refund_of, batch)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            row.id,
            row.event_id,
            row.content,
            row.kind,
            row.package,
            row.tier,
            row.gross as i64,
            row.currency,
            row.at as i64,
            row.state,
            row.refund_of,
            row.batch
        ])
    })
    .map_err(Error::store_unnamed)?;
    Ok(())
}

pub(crate) fn insert_transfer(
    tx: &Transaction<'_>,
    settlement: &str,
    debit: i64,
    credit: i64,
    amount: u64,
) -> Result<(), Error> {
    tx.prepare_cached("INSERT INTO transfers (settlement, debit, credit, amount) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut s| s.execute(params![settlement, debit, credit, amount as i64]))
        .map_err(Error::store_unnamed)?;
    Ok(())
}

pub(crate) fn audit_row(
    tx: &Transaction<'_>,
    at: u64,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO audit (at, action, subject, detail) VALUES (?1, ?2, ?3, ?4)",
        params![at as i64, action, subject, detail],
    )
    .map_err(Error::store_unnamed)?;
    Ok(())
}

pub(crate) type AccountCache = HashMap<(String, String), i64>;

#[allow(clippy::too_many_arguments)]
fn apply_sale(
    tx: &Transaction<'_>,
    event: &BillingEvent,
    id: &str,
    content: &[u8; 32],
    batch: i64,
    manifests: &Manifests,
    platform: Option<&PlatformFee>,
    accounts: &mut AccountCache,
) -> Result<Vec<(String, u64)>, Error> {
    let chain = chain_for(event, manifests, platform)?;
    insert_settlement(tx, &Row::of_event(event, id, content, batch))?;
    pay_out(tx, id, CUSTOMERS, &chain, event.gross_micros, &event.currency, accounts)
}

/// Runs `chain` over `gross` with the ledger's recoupment totals and writes one transfer
/// `from → party` per non-zero payout under settlement `id`, and the recoupment changes.
pub(crate) fn pay_out(
    tx: &Transaction<'_>,
    id: &str,
    from: &str,
    chain: &[Tier],
    gross: u64,
    currency: &str,
    accounts: &mut AccountCache,
) -> Result<Vec<(String, u64)>, Error> {
    let before = recouped(tx, currency)?;
    let split: Split = waterfall::apply(chain, gross, &before)?;
    let source = account(tx, accounts, from, currency)?;
    let mut paid = Vec::new();
    for payout in split.payouts.iter().filter(|p| p.micros > 0) {
        let credit = account(tx, accounts, &payout.party, currency)?;
        insert_transfer(tx, id, source, credit, payout.micros)?;
        paid.push((payout.party.clone(), payout.micros));
    }
    for (party, total) in &split.recouped {
        let delta = total - before.get(party).copied().unwrap_or(0);
        if delta == 0 {
            continue;
        }
        tx.prepare_cached(
            "INSERT INTO recoupment (party, currency, total) VALUES (?1, ?2, ?3)
             ON CONFLICT (party, currency) DO UPDATE SET total = excluded.total",
        )
        .and_then(|mut s| s.execute(params![party, currency, *total as i64]))
        .map_err(Error::store_unnamed)?;
        tx.prepare_cached("INSERT INTO settlement_recoup (settlement, party, amount) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![id, party, delta as i64]))
            .map_err(Error::store_unnamed)?;
    }
    Ok(paid)
}

/// A refund reverses every transfer of the original settlement and what it recouped, and
/// cancels it; nothing already written is edited but the original's state.
fn apply_refund(
    tx: &Transaction<'_>,
    event: &BillingEvent,
    id: &str,
    content: &[u8; 32],
    batch: i64,
    accounts: &mut AccountCache,
) -> Result<Vec<(String, u64)>, Error> {
    let target = event
        .refund_of
        .as_deref()
        .map(settlement_id)
        .ok_or_else(|| Error::Refund { event: event.id.clone(), reason: "refund_of is missing".into() })?;
    let row = Row { kind: "refund", refund_of: Some(&target), ..Row::of_event(event, id, content, batch) };
    insert_settlement(tx, &row)?;
    let given_back = reverse(tx, &target, id, &event.currency, accounts)?;
    audit_row(tx, event.time, "refund", &target, &format!("refunded by event {}", event.id))?;
    Ok(given_back)
}

/// Writes, under settlement `id`, one transfer `party → @customers` for every transfer of
/// settlement `target` that paid a party, subtracts what `target` recouped, and cancels
/// `target`. Returns what each party gave back.
pub(crate) fn reverse(
    tx: &Transaction<'_>,
    target: &str,
    id: &str,
    currency: &str,
    accounts: &mut AccountCache,
) -> Result<Vec<(String, u64)>, Error> {
    let customers = account(tx, accounts, CUSTOMERS, currency)?;
    let originals: Vec<(i64, i64, String)> = tx
        .prepare_cached(
            "SELECT t.credit, t.amount, a.name FROM transfers t JOIN accounts a ON a.id = t.credit
             WHERE t.settlement = ?1 ORDER BY t.id",
        )
        .and_then(|mut s| {
            s.query_map([target], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<Vec<_>, _>>()
        })
        .map_err(Error::store_unnamed)?;
    let mut given_back = Vec::new();
    for (credit, amount, party) in &originals {
        insert_transfer(tx, id, *credit, customers, *amount as u64)?;
        given_back.push((party.clone(), *amount as u64));
    }
    let recouped: Vec<(String, i64)> = tx
        .prepare_cached("SELECT party, amount FROM settlement_recoup WHERE settlement = ?1")
        .and_then(|mut s| {
            s.query_map([target], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()
        })
        .map_err(Error::store_unnamed)?;
    for (party, amount) in recouped {
        tx.execute(
            "UPDATE recoupment SET total = total - ?3 WHERE party = ?1 AND currency = ?2",
            params![party, currency, amount],
        )
        .map_err(Error::store_unnamed)?;
        tx.execute(
            "INSERT INTO settlement_recoup (settlement, party, amount) VALUES (?1, ?2, ?3)",
            params![id, party, -amount],
        )
        .map_err(Error::store_unnamed)?;
    }
    tx.execute("UPDATE settlements SET state = 'CANCELLED' WHERE id = ?1", [target])
        .map_err(Error::store_unnamed)?;
    Ok(given_back)
}

/// The next statement sequence number (also the number of the batch it closes).
pub(crate) fn next_seq(tx: &Transaction<'_>) -> Result<i64, Error> {
    tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM statements", [], |r| r.get(0))
        .map_err(Error::store_unnamed)
}

/// Signs the batch's statement and keeps its openings, in the batch's transaction.
pub(crate) fn close_batch(
    tx: &Transaction<'_>,
    ledger_id: &[u8; 16],
    seq: i64,
    entries: &[EntryInput],
    operator: &SecretKey,
    now: u64,
) -> Result<(), Error> {
    let previous: [u8; 32] = match tx
        .query_row("SELECT hash FROM statements WHERE seq = ?1", [seq - 1], |r| r.get::<_, Vec<u8>>(0))
        .optional()
        .map_err(Error::store_unnamed)?
    {
        Some(hash) => hash.try_into().map_err(|_| Error::store_unnamed(rusqlite::Error::InvalidQuery))?,
        None if seq == 1 => [0; 32],
        None => {
            return Err(Error::Store {
                path: PathBuf::new(),
                reason: format!("statement {} is missing; the ledger was altered", seq - 1),
            });
        }
    };
    let built = statement::build(ledger_id, seq as u64, &previous, now, entries, operator);
    tx.execute(
        "INSERT INTO statements (seq, hash, issued_at, entries, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![seq, &built.hash[..], now as i64, entries.len() as i64, built.bytes],
    )
    .map_err(Error::store_unnamed)?;
    let mut insert = tx
        .prepare_cached("INSERT INTO statement_openings (seq, entry, party, amount, blinding) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(Error::store_unnamed)?;
    for opening in &built.openings {
        insert
            .execute(params![
                seq,
                opening.entry,
                opening.party,
                opening.amount as i64,
                opening.blinding.as_slice()
            ])
            .map_err(Error::store_unnamed)?;
    }
    Ok(())
}
