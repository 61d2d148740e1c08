//! The double-entry ledger engine (spec: settlement.md §3): settlements, transfers,
//! recoupment, statements and an audit log, over a [`Store`].
//!
//! A run settles events in batches; each batch is one store transaction with every
//! settlement of the batch, all of their transfers and the batch's signed statement, so a
//! crash leaves whole batches or none. A settlement's id derives from its event's id, so
//! re-running events is a no-op, and an event that changed under a used id is refused
//! before anything is written.

use crate::store::{HoldState, RecordKind, SettlementState};
use escx::UnixSeconds;
use escx::header::PackageName;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use escx_manifest::{Manifest, Micros};
use serde::Serialize;

use escx::rotation::RotationStatement;
use escx::sig::{PublicKey, SecretKey};

use crate::Error;
use crate::events::{BillingEvent, Kind};
use crate::refunds::{apply_refund, check_refund};
use crate::statement::{self, EntryInput, OpeningsFile};
pub use crate::store::Balance;
use crate::store::{
    AccountId, MemoryStore, Reader, SettlementRecord, SqlStore, StatementRecord, Store, Writer,
};
use crate::waterfall::{self, Split, Tier};

// Statements, their keys and periods; the rest of the ledger (events, settlements,
// balances, history, audit) is here.
mod statements;

pub(crate) use statements::{close_batch, next_seq};

/// Schema version of the ledger's database: the number of migrations applied.
pub const SCHEMA_VERSION: i64 = crate::store::SCHEMA_VERSION;
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
    pub payout_threshold: Micros,
}

/// Manifests by package name and version: where waterfalls and solution tiers come from.
#[derive(Debug, Default)]
pub struct Manifests {
    by_name: BTreeMap<PackageName, BTreeMap<semver::Version, Manifest>>,
}

impl Manifests {
    /// Every `*.toml` manifest under `dir` (recursively, up to 4 levels).
    pub fn load_dir(dir: &Path) -> Result<Self, Error> {
        let mut manifests = Self::default();
        let walker = walkdir::WalkDir::new(dir).max_depth(4).sort_by_file_name();
        for entry in walker {
            // A directory that cannot be read is the environment's fault (exit 3), named once.
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(dir).to_path_buf();
                let error =
                    e.into_io_error().unwrap_or_else(|| std::io::Error::other("a symbolic link loop"));
                Error::Io { path, error }
            })?;
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
    #[serde(serialize_with = "escx::timestamp::serialize_rfc3339")]
    pub issued_at: UnixSeconds,
    /// Entries (settlements) in it.
    pub entries: u64,
}

/// What [`Ledger::close_period`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodClose {
    /// `YYYY-MM`.
    pub period: String,
    /// The statement that closes it: the first issued after the period.
    pub seq: u64,
    /// When that statement was issued.
    #[serde(serialize_with = "escx::timestamp::serialize_rfc3339")]
    pub issued_at: UnixSeconds,
    /// Whether an empty statement was signed now (false: a later statement existed).
    pub signed: bool,
}

/// One transfer touching a party, for its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    /// Settlement time (the event's).
    #[serde(serialize_with = "escx::timestamp::serialize_rfc3339")]
    pub at: UnixSeconds,
    /// Settlement id.
    pub settlement: String,
    /// The event id.
    pub event: String,
    /// What the settlement records.
    pub kind: RecordKind,
    /// Package.
    pub package: PackageName,
    /// Settlement state.
    pub state: SettlementState,
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
    /// Sale, usage, refund and reversal settlements whose transfers do not add up to their
    /// gross.
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

/// The content hash of an event: `derive_key(context, canonical CBOR)`.
pub(crate) fn content_hash(event: &BillingEvent) -> [u8; 32] {
    blake3::derive_key(CONTEXT_SETTLEMENT_CONTENT, &event.canonical())
}

/// The ledger: the settlement engine over a store (its SQL database unless told otherwise).
pub struct Ledger<S: Store = SqlStore> {
    pub(crate) store: S,
}

fn meta_rows(location: &str, options: &Options) -> Result<Vec<(&'static str, String)>, Error> {
    let mut ledger_id = [0u8; 16];
    escx::keyfile::fill_random(&mut ledger_id)
        .map_err(|e| Error::Store(escx_store::Error::failed(location, e.to_string())))?;
    let mut rows = vec![
        ("ledger_id", hex::encode(ledger_id)),
        ("payout_threshold", options.payout_threshold.0.to_string()),
    ];
    if let Some(fee) = &options.platform {
        if fee.bps > 10_000 {
            return Err(Error::Invariant {
                path: location.into(),
                reason: format!("the platform's share is {} bps, over 10000 (all of the gross)", fee.bps),
            });
        }
        rows.push(("platform_party", fee.party.clone()));
        rows.push(("platform_bps", fee.bps.to_string()));
    }
    Ok(rows)
}

impl Ledger<SqlStore> {
    /// Creates a new ledger (refusing an existing file, or a database that holds one) with
    /// a platform fee. `location` is a SQLite file or a PostgreSQL URL
    /// ([`escx_store::Location::from_path`]).
    pub fn init(location: &Path, platform: Option<&PlatformFee>) -> Result<Self, Error> {
        Self::create(location, &Options { platform: platform.cloned(), payout_threshold: Micros::ZERO })
    }

    /// Creates a new ledger at `location`, a SQLite file or a PostgreSQL URL (refusing an
    /// existing one).
    pub fn create(location: &Path, options: &Options) -> Result<Self, Error> {
        Self::create_at(&escx_store::Location::from_path(location), options)
    }

    /// Opens the ledger at `location`, a SQLite file or a PostgreSQL URL, migrating an
    /// older schema.
    pub fn open(location: &Path) -> Result<Self, Error> {
        Self::open_at(&escx_store::Location::from_path(location))
    }

    /// [`Ledger::create`] at a parsed location.
    pub fn create_at(location: &escx_store::Location, options: &Options) -> Result<Self, Error> {
        let meta = meta_rows(&location.to_string(), options)?;
        Ok(Self { store: SqlStore::create(location, &meta)? })
    }

    /// [`Ledger::open`] at a parsed location.
    pub fn open_at(location: &escx_store::Location) -> Result<Self, Error> {
        Ok(Self { store: SqlStore::open(location)? })
    }

    /// A new connection to the ledger's SQLite file, for this crate's tests (feature
    /// `test-support`); `None` on PostgreSQL.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn database(&self) -> rusqlite::Connection {
        let path = self.store.db().sqlite_path().unwrap_or_default();
        escx_store::sqlite_connection(&path).unwrap_or_else(|e| panic!("test connection: {e}"))
    }
}

/// Settlement ids looked up per query before a run.
const LOOKUP_CHUNK: usize = 1000;

/// Runs `attempt` again while it fails busy (settlement.md §5.4): a serialization failure
/// rolled it back, so running it again is safe.
pub(crate) fn retrying<T>(attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    escx_store::retry::while_busy(<Error as escx_store::Retryable>::is_busy, attempt)
}

impl Ledger<MemoryStore> {
    /// A ledger that lives in memory only (tests, dry runs).
    pub fn in_memory(options: &Options) -> Result<Self, Error> {
        Ok(Self { store: MemoryStore::new(&meta_rows(crate::store::MEMORY, options)?) })
    }
}

impl<S: Store> Ledger<S> {
    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn corrupt(&self, what: &str) -> Error {
        Error::stored(self.store.location(), format!("bad {what} in the ledger"))
    }

    /// The platform fee recorded at `init`.
    pub fn platform(&self) -> Result<Option<PlatformFee>, Error> {
        match (self.store.meta("platform_party")?, self.store.meta("platform_bps")?) {
            (Some(party), Some(bps)) => {
                Ok(Some(PlatformFee { party, bps: bps.parse().map_err(|_| self.corrupt("platform_bps"))? }))
            }
            _ => Ok(None),
        }
    }

    /// The payout threshold recorded at `init` (0: pay any positive balance).
    pub fn payout_threshold(&self) -> Result<Micros, Error> {
        match self.store.meta("payout_threshold")? {
            None => Ok(Micros::ZERO),
            Some(text) => text.parse().map(Micros).map_err(|_| self.corrupt("payout_threshold")),
        }
    }

    /// The ledger's random id (in every statement).
    pub fn ledger_id(&self) -> Result<[u8; 16], Error> {
        let text = self.store.meta("ledger_id")?.ok_or_else(|| self.corrupt("ledger_id"))?;
        let mut id = [0u8; 16];
        hex::decode_to_slice(&text, &mut id).map_err(|_| self.corrupt("ledger_id"))?;
        Ok(id)
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
        now: UnixSeconds,
    ) -> Result<RunReport, Error> {
        self.settle_with_progress(events, manifests, batch_size, operator, now, &escx::progress::NoProgress)
    }

    /// [`Ledger::settle`], reporting each new event applied to `progress` (phase
    /// `"settle"`, counted in events, not bytes).
    pub fn settle_with_progress(
        &mut self,
        events: &[BillingEvent],
        manifests: &Manifests,
        batch_size: usize,
        operator: &SecretKey,
        now: UnixSeconds,
        progress: &dyn escx::progress::Progress,
    ) -> Result<RunReport, Error> {
        let result = self.apply_events(events, manifests, batch_size, operator, now, progress);
        progress.finish();
        result
    }

    fn apply_events(
        &mut self,
        events: &[BillingEvent],
        manifests: &Manifests,
        batch_size: usize,
        operator: &SecretKey,
        now: UnixSeconds,
        progress: &dyn escx::progress::Progress,
    ) -> Result<RunReport, Error> {
        let platform = self.platform()?;
        let ledger_id = self.ledger_id()?;
        // 1. Validate everything against the ledger as it is.
        let mut fresh = Vec::new();
        let mut report = RunReport::default();
        let named: Vec<(String, [u8; 32])> =
            events.iter().map(|e| (settlement_id(&e.id), content_hash(e))).collect();
        // One lookup per thousand ids, not one per event (a round trip each on PostgreSQL).
        let mut held = HashMap::new();
        for chunk in named.chunks(LOOKUP_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            held.extend(self.store.settlements(&ids)?);
        }
        for (event, (id, content)) in events.iter().zip(named) {
            match held.get(&id) {
                Some(held) if held.kind == RecordKind::Hold => {
                    return Err(Error::Hold {
                        hold: event.id.clone(),
                        reason: "this event id is a budget hold; settle it by capturing the hold".into(),
                    });
                }
                Some(held) if held.content == content => report.unchanged += 1,
                Some(_) => return Err(Error::Conflict { event: event.id.clone(), settlement: id }),
                None => fresh.push((event, id, content, chain_for(event, manifests, platform.as_ref())?)),
            }
        }
        let fresh_ids: HashSet<&str> = fresh.iter().map(|(e, ..)| e.id.as_str()).collect();
        for (event, ..) in &fresh {
            if let Some(target) = &event.refund_of {
                check_refund(&self.store, event, target, &fresh_ids, events)?;
            }
        }

        // 2. Apply, a batch per transaction.
        progress.start("settle", fresh.len() as u64);
        for chunk in fresh.chunks(batch_size.max(1)) {
            // One batch, tried again as a whole if a concurrent writer's commit refused it.
            let part = retrying(|| {
                let mut report = RunReport::default();
                let mut tx = self.store.begin()?;
                let mut accounts = AccountCache::new();
                // The batch's statement number; its settlements carry it.
                let batch = next_seq(&tx)?;
                let mut entries = Vec::with_capacity(chunk.len());
                // A concurrent run may have settled some since the checks above: the batch's
                // ids are read again, at once, inside the transaction. An id seen earlier in
                // this batch (the same event twice in the input) is judged by what this
                // batch wrote for it.
                let ids: Vec<&str> = chunk.iter().map(|(_, id, ..)| id.as_str()).collect();
                let held = tx.settlements(&ids)?;
                let mut written: HashMap<&str, &[u8; 32]> = HashMap::new();
                for (event, id, content, chain) in chunk {
                    let found = held
                        .get(id.as_str())
                        .map(|h| h.content.as_slice())
                        .or_else(|| written.get(id.as_str()).map(|c| c.as_slice()));
                    match found {
                        Some(held) if held == content => {
                            report.unchanged += 1;
                            continue;
                        }
                        Some(_) => {
                            return Err(Error::Conflict { event: event.id.clone(), settlement: id.clone() });
                        }
                        None => {}
                    }
                    written.insert(id.as_str(), content);
                    let (payouts, rules) = match event.kind {
                        Kind::Sale | Kind::Usage => {
                            tx.insert_settlement(&record_of(event, id, content, batch))?;
                            pay_out(
                                &mut tx,
                                &mut accounts,
                                id,
                                CUSTOMERS,
                                chain,
                                event.gross_micros,
                                &event.currency,
                            )?
                        }
                        Kind::Refund => {
                            // Again inside the transaction: another writer may have disputed,
                            // cancelled or refunded the target since the checks above.
                            if let Some(target) = &event.refund_of {
                                check_refund(
                                    &tx,
                                    event,
                                    target,
                                    &HashSet::new(),
                                    std::slice::from_ref(*event),
                                )?;
                            }
                            (apply_refund(&mut tx, &mut accounts, event, id, content, batch)?, Vec::new())
                        }
                    };
                    report.transfers += payouts.len();
                    report.settled += 1;
                    progress.advance(1);
                    entries.push(entry(
                        &event.id,
                        event.kind.into(),
                        &event.currency,
                        event.gross_micros,
                        payouts,
                        rules,
                    ));
                }
                if !entries.is_empty() {
                    close_batch(&mut tx, &ledger_id, batch, &entries, operator, now)?;
                    report.statements += 1;
                }
                tx.commit()?;
                report.batches += 1;
                Ok(report)
            })?;
            report.settled += part.settled;
            report.unchanged += part.unchanged;
            report.transfers += part.transfers;
            report.batches += part.batches;
            report.statements += part.statements;
        }
        Ok(report)
    }

    /// Balances of every account (or the accounts of `party`).
    pub fn balances(&self, party: Option<&str>) -> Result<Vec<Balance>, Error> {
        self.store.balances(party)
    }

    /// Every transfer touching `party` between `from` (inclusive) and `to` (exclusive).
    pub fn history(&self, party: &str, from: UnixSeconds, to: UnixSeconds) -> Result<Vec<HistoryRow>, Error> {
        Ok(self
            .store
            .party_transfers(from, to)?
            .into_iter()
            .filter(|t| t.party == party)
            .map(|t| HistoryRow {
                at: t.at,
                settlement: t.settlement,
                event: t.event,
                kind: t.kind,
                package: t.package,
                state: t.state,
                currency: t.currency,
                micros: t.amount,
            })
            .collect())
    }

    /// What each party has recouped so far in `currency`.
    pub fn recouped(&self, currency: &str) -> Result<BTreeMap<String, Micros>, Error> {
        self.store.recouped(currency)
    }

    /// Checks the ledger's invariants: double entry balances to zero overall, every sale
    /// or usage settlement's transfers add up to its gross, and `@holds` holds exactly the
    /// pending holds.
    pub fn audit(&self) -> Result<Audit, Error> {
        let (settlements, transfers) = self.store.counts()?;
        let balances = self.store.balances(None)?;
        let imbalance = crate::num::clamp(balances.iter().map(|b| i128::from(b.micros)).sum::<i128>());
        let mut pending: BTreeMap<String, i64> = BTreeMap::new();
        for (hold, settlement) in self.store.holds(Some(HoldState::Pending))? {
            *pending.entry(settlement.currency).or_default() += crate::num::signed(hold.amount);
        }
        let mut holds_mismatch = Vec::new();
        let held: BTreeMap<&str, i64> =
            balances.iter().filter(|b| b.account == HOLDS).map(|b| (b.currency.as_str(), b.micros)).collect();
        let currencies: std::collections::BTreeSet<&str> =
            held.keys().copied().chain(pending.keys().map(String::as_str)).collect();
        for currency in currencies {
            if held.get(currency).copied().unwrap_or(0) != pending.get(currency).copied().unwrap_or(0) {
                holds_mismatch.push(currency.to_owned());
            }
        }
        Ok(Audit {
            settlements,
            transfers,
            imbalance,
            unconserved: self.store.unconserved()?,
            holds_mismatch,
        })
    }
}

/// Account ids already looked up in this transaction.
pub(crate) type AccountCache = HashMap<(String, String), AccountId>;

pub(crate) fn account(
    tx: &mut impl Writer,
    cache: &mut AccountCache,
    name: &str,
    currency: &str,
) -> Result<AccountId, Error> {
    let key = (name.to_owned(), currency.to_owned());
    if let Some(id) = cache.get(&key) {
        return Ok(*id);
    }
    let id = tx.account(name, currency)?;
    cache.insert(key, id);
    Ok(id)
}

/// The settlement row of a billing event.
pub(crate) fn record_of(event: &BillingEvent, id: &str, content: &[u8; 32], batch: u64) -> SettlementRecord {
    SettlementRecord {
        id: id.to_owned(),
        event_id: event.id.clone(),
        content: content.to_vec(),
        kind: event.kind.into(),
        package: event.package.clone(),
        tier: event.tier.clone(),
        gross: event.gross_micros,
        currency: event.currency.clone(),
        at: event.time,
        state: SettlementState::Settled,
        refund_of: None,
        batch,
    }
}

/// A statement entry for the settlement of event `event_id`.
pub(crate) fn entry(
    event_id: &str,
    kind: RecordKind,
    currency: &str,
    gross: Micros,
    payouts: Vec<(String, Micros)>,
    rules: Vec<Option<waterfall::PayoutRule>>,
) -> EntryInput {
    let settlement = blake3::derive_key(CONTEXT_SETTLEMENT_ID, event_id.as_bytes());
    EntryInput { settlement, kind, currency: currency.into(), gross, payouts, rules }
}

/// Non-zero payouts of a settlement, in order.
type Payouts = Vec<(String, Micros)>;

/// Runs `chain` over `gross` with the ledger's recoupment totals and writes one transfer
/// `from → party` per non-zero payout under settlement `id`, and the recoupment changes.
/// Returns the payouts and the rule of each (the statement records them, proofs.md §2.2).
pub(crate) fn pay_out(
    tx: &mut impl Writer,
    accounts: &mut AccountCache,
    id: &str,
    from: &str,
    chain: &[Tier],
    gross: Micros,
    currency: &str,
) -> Result<(Payouts, Vec<Option<waterfall::PayoutRule>>), Error> {
    let before = tx.recouped(currency)?;
    let split: Split = waterfall::apply(chain, gross, &before)?;
    let source = account(tx, accounts, from, currency)?;
    let paid: Payouts = split
        .payouts
        .iter()
        .filter(|p| p.micros > Micros::ZERO)
        .map(|p| (p.party.clone(), p.micros))
        .collect();
    // Where the settlement is built: its transfers must add up to the gross.
    let total: u128 = paid.iter().map(|(_, amount)| u128::from(*amount)).sum();
    if total != u128::from(gross) {
        return Err(Error::Invariant {
            path: tx.location(),
            reason: format!("settlement {id}: transfers of {total} micro-units for a gross of {gross}"),
        });
    }
    for (party, amount) in &paid {
        let credit = account(tx, accounts, party, currency)?;
        tx.insert_transfer(id, source, credit, *amount)?;
    }
    for (party, total) in &split.recouped {
        // Recoupment totals only grow within one split.
        let delta = total.0.saturating_sub(before.get(party).copied().unwrap_or_default().0);
        if delta == 0 {
            continue;
        }
        tx.set_recouped(party, currency, *total)?;
        tx.add_settlement_recoup(id, party, crate::num::signed(delta))?;
    }
    let rules = waterfall::payout_rules(chain, &split, &paid);
    Ok((paid, rules))
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
        chain.push(Tier::platform(&fee.party, fee.bps));
    }
    if let Some(name) = &event.solution {
        let solution = manifests
            .get(name, None)
            .and_then(|m| m.solution.as_ref().map(|s| (m, s)))
            .ok_or_else(|| missing(format!("no solution manifest for {name}")))?;
        if !solution.1.packages.contains_key(&event.package) {
            return Err(missing(format!("solution {name} does not bundle {}", event.package)));
        }
        chain.push(Tier::solution(name, solution.1));
    }
    chain.push(Tier::package(format!("package {}", event.package), revenue, event.time)?);
    Ok(chain)
}
