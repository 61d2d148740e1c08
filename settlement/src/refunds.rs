//! Refunds (spec: settlement.md §3.2): checking a refund against what it gives back, and
//! giving back part or all of a settlement: the credited parties return their shares in
//! proportion, and recoupment a settlement added is undone first. Holds' voids and
//! disputes' reversals give back through the same path.

use std::collections::{BTreeMap, HashSet};

use escx_manifest::Micros;

use crate::store::{RecordKind, SettlementState};

use crate::Error;
use crate::events::BillingEvent;
use crate::ledger::{AccountCache, CUSTOMERS, account, record_of, settlement_id};
use crate::store::{AccountId, Reader, SettlementRecord, Writer};

/// Checks a refund against its target (settlement.md §3.2 step 2): a sale or usage,
/// settled, in the refund's currency, settled before it (in the ledger, or earlier in
/// `events`), and not given back beyond its gross counting earlier refunds.
pub(crate) fn check_refund(
    store: &impl Reader,
    event: &BillingEvent,
    target: &str,
    fresh: &HashSet<&str>,
    events: &[BillingEvent],
) -> Result<(), Error> {
    let invalid = |reason: String| Error::Refund { event: event.id.clone(), reason };
    let position = |id: &str| events.iter().position(|e| e.id == id);
    let (kind, gross, currency, state, mut refunded) = match store.settlement(&settlement_id(target))? {
        Some(s) => {
            let mut refunded = 0u64;
            for refund in store.refunds_of(&s.id)? {
                refunded = refunded.saturating_add(store.settlement(&refund)?.map_or(0, |r| r.gross.0));
            }
            (s.kind, s.gross.0, s.currency, s.state, refunded)
        }
        None if fresh.contains(target) => {
            if position(target) > position(&event.id) {
                return Err(invalid(format!(
                    "refund_of {target:?}: the refund comes before the event in the file"
                )));
            }
            let original = events.iter().find(|e| e.id == target).ok_or_else(|| invalid("unknown".into()))?;
            (
                RecordKind::from(original.kind),
                original.gross_micros.0,
                original.currency.clone(),
                SettlementState::Settled,
                0,
            )
        }
        None => {
            return Err(invalid(format!("refund_of {target:?}: no such event in the ledger or this file")));
        }
    };
    if !kind.is_revenue() {
        return Err(invalid(format!(
            "refund_of {target:?}: a {kind} cannot be refunded, only a sale or usage"
        )));
    }
    if state != SettlementState::Settled {
        return Err(invalid(format!("refund_of {target:?}: that settlement is {state}")));
    }
    if currency != event.currency {
        return Err(invalid(format!(
            "refund_of {target:?}: it was settled in {currency}, not {}",
            event.currency
        )));
    }
    if event.gross_micros == Micros::ZERO {
        return Err(invalid("gross: a refund gives back more than 0".into()));
    }
    // Earlier refunds of the same event in this file, not yet in the ledger.
    for other in events.iter().take(position(&event.id).unwrap_or(0)) {
        if other.refund_of.as_deref() == Some(target) && fresh.contains(other.id.as_str()) {
            refunded = refunded.saturating_add(other.gross_micros.0);
        }
    }
    if refunded.saturating_add(event.gross_micros.0) > gross {
        return Err(invalid(format!(
            "refund_of {target:?}: {} would be given back of a gross of {} {currency}, of which {} was refunded already",
            event.gross_micros,
            Micros(gross),
            Micros(refunded)
        )));
    }
    Ok(())
}

/// A refund gives back `gross` of the original settlement (all or part of what remains),
/// party by party in proportion (§3.2), and undoes the matching recoupment; the original
/// is `CANCELLED` once nothing remains. Nothing already written is edited but its state.
pub(crate) fn apply_refund(
    tx: &mut impl Writer,
    accounts: &mut AccountCache,
    event: &BillingEvent,
    id: &str,
    content: &[u8; 32],
    batch: u64,
) -> Result<Vec<(String, Micros)>, Error> {
    let target = event
        .refund_of
        .as_deref()
        .map(settlement_id)
        .ok_or_else(|| Error::Refund { event: event.id.clone(), reason: "refund_of is missing".into() })?;
    let record = SettlementRecord { refund_of: Some(target.clone()), ..record_of(event, id, content, batch) };
    tx.insert_settlement(&record)?;
    let given_back = give_back(tx, accounts, &target, id, &event.currency, Some(event.gross_micros))
        .map_err(|e| match e {
            Error::Refund { reason, .. } => Error::Refund { event: event.id.clone(), reason },
            other => other,
        })?;
    tx.audit(
        event.time,
        RecordKind::Refund.name(),
        &target,
        &format!("{} given back by event {}", event.gross_micros, event.id),
    )?;
    Ok(given_back)
}

/// What each party paid by settlement `target` still holds from it: (credited account,
/// party, paid, still held), in transfer order, after every refund or reversal of it.
pub(crate) fn holdings(tx: &impl Reader, target: &str) -> Result<Vec<(AccountId, String, u64, u64)>, Error> {
    let mut held: Vec<(AccountId, String, u64, u64)> = tx
        .transfers_of(target)?
        .into_iter()
        .map(|t| (t.credit, t.credit_name, t.amount.0, t.amount.0))
        .collect();
    // Read back: what the settlement paid out must still be its gross, before any of it is
    // given back.
    if let Some(record) = tx.settlement(target)?
        && record.kind.is_revenue()
    {
        let paid: u128 = held.iter().map(|row| u128::from(row.2)).sum();
        if paid != u128::from(record.gross) {
            return Err(Error::Invariant {
                path: tx.location(),
                reason: format!(
                    "settlement {target}: its transfers add up to {paid} micro-units, its gross is {}",
                    record.gross
                ),
            });
        }
    }
    for refund in tx.refunds_of(target)? {
        for transfer in tx.transfers_of(&refund)? {
            if let Some(row) = held.iter_mut().find(|row| row.0 == transfer.debit) {
                row.3 = row.3.saturating_sub(transfer.amount.0);
            }
        }
    }
    Ok(held)
}

/// Writes, under settlement `id`, transfers `party → @customers` giving back `amount` of
/// what the parties of `target` still hold from it (everything when `None`): each party
/// in proportion to what it holds, rounded down, the remaining micro-units one each to the
/// largest remainders (ties: transfer order). Undoes the recoupment `target` added, up to
/// what each recouping party gives back, and cancels `target` when nothing remains.
/// Returns what each party gave back.
pub(crate) fn give_back(
    tx: &mut impl Writer,
    accounts: &mut AccountCache,
    target: &str,
    id: &str,
    currency: &str,
    amount: Option<Micros>,
) -> Result<Vec<(String, Micros)>, Error> {
    let held = holdings(tx, target)?;
    // Each row holds part of one settled gross, so the sum fits a u64.
    let remaining: u64 = held.iter().map(|row| row.3).sum();
    let amount = amount.map_or(remaining, |a| a.0);
    if amount > remaining {
        return Err(Error::Refund {
            event: id.to_owned(),
            reason: format!(
                "{} to give back, but only {} remains of settlement {target}",
                Micros(amount),
                Micros(remaining)
            ),
        });
    }
    let mut shares: Vec<u64> = held
        .iter()
        .map(|row| {
            if remaining == 0 {
                0
            } else {
                // amount <= remaining, so the share is at most row.3.
                u64::try_from(u128::from(row.3) * u128::from(amount) / u128::from(remaining)).unwrap_or(row.3)
            }
        })
        .collect();
    let dust = amount - shares.iter().sum::<u64>();
    if dust > 0 {
        let mut order: Vec<usize> = (0..held.len()).collect();
        let fraction = |i: usize| (u128::from(held[i].3) * u128::from(amount)) % u128::from(remaining.max(1));
        order.sort_by(|a, b| fraction(*b).cmp(&fraction(*a)).then(a.cmp(b)));
        for i in order.into_iter().take(usize::try_from(dust).unwrap_or(usize::MAX)) {
            shares[i] += 1;
        }
    }
    let customers = account(tx, accounts, CUSTOMERS, currency)?;
    let mut given_back = Vec::new();
    for ((credit, party, _, _), share) in held.iter().zip(&shares) {
        if *share > 0 {
            tx.insert_transfer(id, *credit, customers, Micros(*share))?;
            given_back.push((party.clone(), Micros(*share)));
        }
    }
    // Recoupment: a recouping party's claw-back first undoes what `target` recouped.
    let mut undone: BTreeMap<String, i64> = BTreeMap::new();
    for refund in tx.refunds_of(target)? {
        for (party, delta) in tx.settlement_recoup(&refund)? {
            *undone.entry(party).or_default() -= delta;
        }
    }
    for (party, added) in tx.settlement_recoup(target)? {
        let given: u64 = given_back.iter().filter(|(p, _)| *p == party).map(|(_, a)| a.0).sum();
        let left = u64::try_from(added - undone.get(&party).copied().unwrap_or(0)).unwrap_or(0);
        let undo = given.min(left);
        if undo == 0 {
            continue;
        }
        let total = tx.recouped(currency)?.get(&party).copied().unwrap_or_default();
        let after = total.checked_sub(Micros(undo)).ok_or_else(|| {
            Error::stored(
                tx.location(),
                format!("recoupment of {party} below what settlement {target} added"),
            )
        })?;
        tx.set_recouped(&party, currency, after)?;
        tx.add_settlement_recoup(id, &party, -crate::num::signed(undo))?;
    }
    if amount == remaining {
        tx.set_state(target, SettlementState::Cancelled)?;
    }
    Ok(given_back)
}
