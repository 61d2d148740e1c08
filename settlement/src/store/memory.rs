//! An in-memory store: the same rows and constraints as the SQLite store, no durability.
//! A write transaction works on a copy of the state and replaces it on commit, so it is
//! serializable (the `&mut` borrow makes it the only writer). Used by tests to check that
//! the engine depends on nothing but the [`Store`] contract.

use escx::UnixSeconds;
use escx_manifest::Micros;
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{
    AccountId, Balance, DisputeRecord, HoldRecord, PartyTransfer, Reader, SettlementRecord, StatementRecord,
    Store, TransferRecord, Writer,
};
use super::{HoldState, RecordKind, SettlementState};
use crate::Error;
use crate::disputes::Outcome;
use crate::statement::Opening;

/// An opening as the memory store keeps it: copied only when the state is (a transaction's
/// working copy), and shown without its secret fields.
struct Kept(Opening);

impl Clone for Kept {
    fn clone(&self) -> Self {
        Kept(self.0.duplicate())
    }
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opening")
            .field("entry", &self.0.entry)
            .field("party", &self.0.party)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    meta: BTreeMap<String, String>,
    accounts: Vec<(String, String)>,
    account_ids: BTreeMap<(String, String), AccountId>,
    settlements: BTreeMap<String, SettlementRecord>,
    event_ids: BTreeMap<String, String>,
    transfers: Vec<(String, AccountId, AccountId, Micros)>,
    recoupment: BTreeMap<(String, String), Micros>,
    settlement_recoup: BTreeMap<(String, String), i64>,
    statements: BTreeMap<u64, StatementRecord>,
    openings: Vec<(u64, Kept)>,
    audit: Vec<(UnixSeconds, String, String, String)>,
    holds: BTreeMap<String, HoldRecord>,
    disputes: Vec<DisputeRecord>,
}

/// The in-memory store.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: State,
}

/// A write transaction on a [`MemoryStore`].
pub struct MemoryTx<'a> {
    store: &'a mut State,
    work: State,
}

impl MemoryStore {
    /// An empty store with `meta` rows.
    pub fn new(meta: &[(&str, String)]) -> Self {
        let mut state = State::default();
        for (key, value) in meta {
            state.meta.insert((*key).to_owned(), value.clone());
        }
        Self { state }
    }
}

impl Store for MemoryStore {
    type Tx<'a> = MemoryTx<'a>;

    fn begin(&mut self) -> Result<MemoryTx<'_>, Error> {
        let work = self.state.clone();
        Ok(MemoryTx { store: &mut self.state, work })
    }
}

/// What a memory store calls itself in errors.
pub(crate) const MEMORY: &str = "(memory)";

fn violation(reason: impl Into<String>) -> Error {
    Error::Store(escx_store::Error::failed(MEMORY, reason))
}

impl State {
    /// Account `id`'s (name, currency); ids are 1-based positions, checked on insert.
    fn name(&self, id: AccountId) -> Option<&(String, String)> {
        usize::try_from(id - 1).ok().and_then(|index| self.accounts.get(index))
    }

    fn location(&self) -> PathBuf {
        MEMORY.into()
    }

    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.meta.get(key).cloned())
    }

    fn settlement(&self, id: &str) -> Result<Option<SettlementRecord>, Error> {
        Ok(self.settlements.get(id).cloned())
    }

    fn settlement_ids_starting(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> {
        Ok(self
            .settlements
            .range(prefix.to_owned()..)
            .map(|(id, _)| id)
            .take_while(|id| id.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }

    fn refunds_of(&self, target: &str) -> Result<Vec<String>, Error> {
        let mut ids: Vec<String> = self
            .settlements
            .values()
            .filter(|s| s.refund_of.as_deref() == Some(target))
            .map(|s| s.id.clone())
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn transfers_of(&self, settlement: &str) -> Result<Vec<TransferRecord>, Error> {
        self.transfers
            .iter()
            .filter(|t| t.0 == settlement)
            .map(|t| {
                let (credit_name, _) =
                    self.name(t.2).ok_or_else(|| violation("a transfer names an unknown account"))?;
                Ok(TransferRecord { debit: t.1, credit: t.2, credit_name: credit_name.clone(), amount: t.3 })
            })
            .collect()
    }

    fn recouped(&self, currency: &str) -> Result<BTreeMap<String, Micros>, Error> {
        Ok(self
            .recoupment
            .iter()
            .filter(|((_, c), _)| c == currency)
            .map(|((p, _), t)| (p.clone(), *t))
            .collect())
    }

    fn settlement_recoup(&self, settlement: &str) -> Result<Vec<(String, i64)>, Error> {
        Ok(self
            .settlement_recoup
            .iter()
            .filter(|((s, _), _)| s == settlement)
            .map(|((_, p), a)| (p.clone(), *a))
            .collect())
    }

    fn statements(&self) -> Result<Vec<StatementRecord>, Error> {
        Ok(self
            .statements
            .values()
            .map(|s| StatementRecord {
                seq: s.seq,
                hash: s.hash,
                issued_at: s.issued_at,
                entries: s.entries,
                bytes: Vec::new(),
            })
            .collect())
    }

    fn statement(&self, seq: u64) -> Result<Option<StatementRecord>, Error> {
        Ok(self.statements.get(&seq).cloned())
    }

    fn last_statement(&self) -> Result<Option<(u64, [u8; 32], UnixSeconds)>, Error> {
        Ok(self.statements.last_key_value().map(|(seq, s)| (*seq, s.hash, s.issued_at)))
    }

    fn openings(&self, seq: u64, party: &str) -> Result<Vec<Opening>, Error> {
        let mut list: Vec<Opening> = self
            .openings
            .iter()
            .filter(|(s, o)| *s == seq && o.0.party.as_deref() == Some(party))
            .map(|(_, o)| o.0.duplicate())
            .collect();
        list.sort_by_key(|o| o.entry);
        Ok(list)
    }

    fn statement_openings(&self, seq: u64) -> Result<Vec<Opening>, Error> {
        let mut list: Vec<Opening> =
            self.openings.iter().filter(|(s, _)| *s == seq).map(|(_, o)| o.0.duplicate()).collect();
        list.sort_by(|a, b| (a.entry, &a.party).cmp(&(b.entry, &b.party)));
        Ok(list)
    }

    fn hold(&self, settlement: &str) -> Result<Option<HoldRecord>, Error> {
        Ok(self.holds.get(settlement).cloned())
    }

    fn holds(&self, state: Option<HoldState>) -> Result<Vec<(HoldRecord, SettlementRecord)>, Error> {
        let mut list: Vec<(HoldRecord, SettlementRecord)> = self
            .holds
            .values()
            .filter(|h| state.is_none_or(|s| s == h.state))
            .filter_map(|h| self.settlements.get(&h.settlement).map(|s| (h.clone(), s.clone())))
            .collect();
        list.sort_by(|a, b| (a.0.placed_at, &a.1.event_id).cmp(&(b.0.placed_at, &b.1.event_id)));
        Ok(list)
    }

    fn disputes(&self) -> Result<Vec<(DisputeRecord, SettlementRecord)>, Error> {
        let mut list: Vec<(DisputeRecord, SettlementRecord)> = self
            .disputes
            .iter()
            .filter_map(|d| self.settlements.get(&d.settlement).map(|s| (d.clone(), s.clone())))
            .collect();
        list.sort_by_key(|(d, _)| (d.opened_at, d.id));
        Ok(list)
    }

    fn open_dispute(&self, settlement: &str) -> Result<Option<DisputeRecord>, Error> {
        Ok(self.disputes.iter().find(|d| d.settlement == settlement && d.resolved_at.is_none()).cloned())
    }

    fn balances(&self, name: Option<&str>) -> Result<Vec<Balance>, Error> {
        let mut by_account = vec![0i64; self.accounts.len()];
        let count = by_account.len();
        let slot = |id: AccountId| usize::try_from(id - 1).ok().filter(|&i| i < count);
        for (_, debit, credit, amount) in &self.transfers {
            let (Some(credit), Some(debit)) = (slot(*credit), slot(*debit)) else {
                return Err(violation("a transfer names an unknown account"));
            };
            by_account[credit] += crate::num::signed(*amount);
            by_account[debit] -= crate::num::signed(*amount);
        }
        let mut list: Vec<Balance> = self
            .accounts
            .iter()
            .zip(by_account)
            .filter(|((n, _), _)| name.is_none_or(|name| name == n))
            .map(|((n, c), micros)| Balance { account: n.clone(), currency: c.clone(), micros })
            .collect();
        list.sort_by(|a, b| (&a.account, &a.currency).cmp(&(&b.account, &b.currency)));
        Ok(list)
    }

    fn party_transfers(&self, from: UnixSeconds, to: UnixSeconds) -> Result<Vec<PartyTransfer>, Error> {
        let mut list = Vec::new();
        for (position, (settlement, debit, credit, amount)) in self.transfers.iter().enumerate() {
            let Some(s) = self.settlements.get(settlement) else { continue };
            if s.at < from || s.at >= to || s.kind == RecordKind::Hold {
                continue;
            }
            for (account, sign) in [(*credit, 1i64), (*debit, -1)] {
                let Some((party, currency)) = self.name(account) else {
                    return Err(violation("a transfer names an unknown account"));
                };
                if party.starts_with('@') {
                    continue;
                }
                let row = PartyTransfer {
                    settlement: s.id.clone(),
                    at: s.at,
                    kind: s.kind,
                    gross: s.gross,
                    party: party.clone(),
                    currency: currency.clone(),
                    amount: sign * crate::num::signed(*amount),
                    event: s.event_id.clone(),
                    package: s.package.clone(),
                    state: s.state,
                };
                list.push((s.at, s.id.clone(), position, row));
            }
        }
        list.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
        Ok(list.into_iter().map(|(_, _, _, row)| row).collect())
    }

    fn counts(&self) -> Result<(u64, u64), Error> {
        Ok((self.settlements.len() as u64, self.transfers.len() as u64))
    }

    fn unconserved(&self) -> Result<Vec<String>, Error> {
        let mut sums: BTreeMap<&str, u128> = BTreeMap::new();
        for (settlement, _, _, amount) in &self.transfers {
            *sums.entry(settlement).or_default() += u128::from(*amount);
        }
        Ok(self
            .settlements
            .values()
            .filter(|s| {
                s.kind != RecordKind::Hold
                    && sums.get(s.id.as_str()).copied().unwrap_or(0) != u128::from(s.gross)
            })
            .map(|s| s.id.clone())
            .collect())
    }
}

forward_reader!(MemoryStore, self => self.state);
forward_reader!(MemoryTx<'_>, self => self.work);

impl Writer for MemoryTx<'_> {
    fn account(&mut self, name: &str, currency: &str) -> Result<AccountId, Error> {
        let key = (name.to_owned(), currency.to_owned());
        if let Some(id) = self.work.account_ids.get(&key) {
            return Ok(*id);
        }
        self.work.accounts.push(key.clone());
        let id = AccountId::try_from(self.work.accounts.len()).map_err(|_| violation("too many accounts"))?;
        self.work.account_ids.insert(key, id);
        Ok(id)
    }

    fn insert_settlement(&mut self, s: &SettlementRecord) -> Result<(), Error> {
        if self.work.settlements.contains_key(&s.id) || self.work.event_ids.contains_key(&s.event_id) {
            return Err(violation(format!("settlement {} exists", s.id)));
        }
        if let Some(target) = &s.refund_of
            && !self.work.settlements.contains_key(target)
        {
            return Err(violation(format!("refund_of {target} is not a settlement")));
        }
        self.work.event_ids.insert(s.event_id.clone(), s.id.clone());
        self.work.settlements.insert(s.id.clone(), s.clone());
        Ok(())
    }

    fn set_state(&mut self, id: &str, state: SettlementState) -> Result<(), Error> {
        if let Some(s) = self.work.settlements.get_mut(id) {
            s.state = state;
        }
        Ok(())
    }

    fn insert_transfer(
        &mut self,
        settlement: &str,
        debit: AccountId,
        credit: AccountId,
        amount: Micros,
    ) -> Result<(), Error> {
        let accounts = AccountId::try_from(self.work.accounts.len()).unwrap_or(AccountId::MAX);
        if amount == Micros::ZERO
            || debit == credit
            || !(1..=accounts).contains(&debit)
            || !(1..=accounts).contains(&credit)
        {
            return Err(violation("a transfer needs two different accounts and an amount > 0"));
        }
        if !self.work.settlements.contains_key(settlement) {
            return Err(violation(format!("transfer of unknown settlement {settlement}")));
        }
        self.work.transfers.push((settlement.to_owned(), debit, credit, amount));
        Ok(())
    }

    fn set_recouped(&mut self, party: &str, currency: &str, total: Micros) -> Result<(), Error> {
        self.work.recoupment.insert((party.to_owned(), currency.to_owned()), total);
        Ok(())
    }

    fn add_settlement_recoup(&mut self, settlement: &str, party: &str, amount: i64) -> Result<(), Error> {
        let key = (settlement.to_owned(), party.to_owned());
        if self.work.settlement_recoup.insert(key, amount).is_some() {
            return Err(violation("recoupment of this settlement and party recorded twice"));
        }
        Ok(())
    }

    fn insert_statement(&mut self, s: &StatementRecord, openings: &[Opening]) -> Result<(), Error> {
        if self.work.statements.contains_key(&s.seq)
            || self.work.statements.values().any(|o| o.hash == s.hash)
        {
            return Err(violation(format!("statement {} exists", s.seq)));
        }
        self.work.statements.insert(s.seq, s.clone());
        self.work.openings.extend(openings.iter().map(|o| (s.seq, Kept(o.duplicate()))));
        Ok(())
    }

    fn audit(&mut self, at: UnixSeconds, action: &str, subject: &str, detail: &str) -> Result<(), Error> {
        self.work.audit.push((at, action.to_owned(), subject.to_owned(), detail.to_owned()));
        Ok(())
    }

    fn insert_hold(&mut self, h: &HoldRecord) -> Result<(), Error> {
        if self.work.holds.contains_key(&h.settlement) || !self.work.settlements.contains_key(&h.settlement) {
            return Err(violation(format!("hold {} exists or has no settlement", h.settlement)));
        }
        self.work.holds.insert(h.settlement.clone(), h.clone());
        Ok(())
    }

    fn close_hold(
        &mut self,
        settlement: &str,
        state: HoldState,
        captured: Option<Micros>,
        at: UnixSeconds,
    ) -> Result<(), Error> {
        if let Some(h) = self.work.holds.get_mut(settlement) {
            h.state = state;
            h.captured = captured;
            h.closed_at = Some(at);
        }
        Ok(())
    }

    fn insert_dispute(
        &mut self,
        settlement: &str,
        opened_at: UnixSeconds,
        reason: &str,
    ) -> Result<(), Error> {
        if self.work.disputes.iter().any(|d| d.settlement == settlement && d.resolved_at.is_none()) {
            return Err(violation(format!("settlement {settlement} has an open dispute")));
        }
        let id = i64::try_from(self.work.disputes.len()).map_err(|_| violation("too many disputes"))? + 1;
        self.work.disputes.push(DisputeRecord {
            id,
            settlement: settlement.to_owned(),
            opened_at,
            reason: reason.to_owned(),
            resolved_at: None,
            outcome: None,
            resolution: None,
        });
        Ok(())
    }

    fn resolve_dispute(
        &mut self,
        id: i64,
        at: UnixSeconds,
        outcome: Outcome,
        resolution: &str,
    ) -> Result<(), Error> {
        if let Some(d) = self.work.disputes.iter_mut().find(|d| d.id == id) {
            d.resolved_at = Some(at);
            d.outcome = Some(outcome);
            d.resolution = Some(resolution.to_owned());
        }
        Ok(())
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.work.meta.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn commit(self) -> Result<(), Error> {
        *self.store = self.work;
        Ok(())
    }
}
