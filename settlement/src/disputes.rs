//! Disputes (spec: settlement.md §5.3): a settled sale or usage is put in `DISPUTED`
//! (its payouts are withheld from payout reports), then resolved: `upheld` returns it to
//! `SETTLED`; `reversed` gives what remains of the gross back to the customer with compensating
//! transfers under a new settlement, recorded in a signed statement. Every step writes an
//! audit row; nothing written before is edited but the settlement's state.

use crate::store::{RecordKind, SettlementState};
use escx::UnixSeconds;
use escx_manifest::Micros;
use serde::Serialize;

use escx::sig::SecretKey;

use crate::Error;
use crate::ledger::{self, AccountCache, Ledger, settlement_id};
use crate::store::{Reader, SettlementRecord, Store, Writer};

/// The prefix of a reversal's event id (event ids have no spaces, so it never meets one).
pub const REVERSAL_PREFIX: &str = "reversal ";

crate::store::named_enum! {
    /// How a dispute ends.
    Outcome {
        /// The settlement stands: back to `SETTLED`.
        Upheld => "upheld",
        /// The customer gets back what remains: compensating transfers, `CANCELLED`.
        Reversed => "reversed",
    }
}

/// One dispute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dispute {
    /// The disputed settlement.
    pub settlement: String,
    /// Its event id.
    pub event: String,
    /// Its gross.
    #[serde(serialize_with = "escx_manifest::money::serialize_decimal")]
    pub gross: Micros,
    /// Currency.
    pub currency: String,
    /// When it was opened.
    #[serde(serialize_with = "escx::timestamp::serialize_rfc3339")]
    pub opened_at: UnixSeconds,
    /// Why.
    pub reason: String,
    /// When it was resolved.
    #[serde(serialize_with = "escx::timestamp::serialize_rfc3339_opt")]
    pub resolved_at: Option<UnixSeconds>,
    /// How it was resolved.
    pub outcome: Option<Outcome>,
    /// The resolution's note.
    pub resolution: Option<String>,
}

/// What resolving a dispute did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The disputed settlement.
    pub settlement: String,
    /// The outcome.
    pub outcome: Outcome,
    /// For a reversal: the compensating settlement.
    pub reversal: Option<String>,
    /// For a reversal: what each party gave back.
    #[serde(serialize_with = "escx_manifest::money::serialize_decimal_pairs")]
    pub given_back: Vec<(String, Micros)>,
    /// For a reversal: the statement recording it.
    pub statement: Option<u64>,
}

fn invalid(settlement: &str, reason: impl Into<String>) -> Error {
    Error::Dispute { settlement: settlement.to_owned(), reason: reason.into() }
}

impl<S: Store> Ledger<S> {
    /// The settlement id named by `name`: a settlement id (64 hex digits) or an event id.
    pub fn find_settlement(&self, name: &str) -> Result<String, Error> {
        for candidate in [name.to_owned(), settlement_id(name)] {
            if self.store.settlement(&candidate)?.is_some() {
                return Ok(candidate);
            }
        }
        // The abbreviated ids the reports print (16 hex digits) name a settlement when
        // exactly one starts with them.
        if (8..64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let prefix = name.to_ascii_lowercase();
            match self.store.settlement_ids_starting(&prefix, 2)?.as_slice() {
                [only] => return Ok(only.clone()),
                [_, _] => {
                    return Err(invalid(
                        name,
                        "more than one settlement id starts with this; give more digits",
                    ));
                }
                _ => {}
            }
        }
        Err(invalid(name, "no settlement with this id, id prefix or event id in this ledger"))
    }

    /// Opens a dispute on a settled sale or usage settlement.
    pub fn open_dispute(&mut self, settlement: &str, reason: &str, now: UnixSeconds) -> Result<(), Error> {
        crate::ledger::retrying(|| self.open_dispute_once(settlement, reason, now))
    }

    fn open_dispute_once(&mut self, settlement: &str, reason: &str, now: UnixSeconds) -> Result<(), Error> {
        if reason.trim().is_empty() {
            return Err(invalid(settlement, "give a reason"));
        }
        let mut tx = self.store.begin()?;
        let record = tx.settlement(settlement)?.ok_or_else(|| invalid(settlement, "no such settlement"))?;
        if !record.kind.is_revenue() {
            return Err(invalid(
                settlement,
                format!("a {} settlement cannot be disputed; dispute the sale", record.kind),
            ));
        }
        if record.state != SettlementState::Settled {
            return Err(invalid(
                settlement,
                format!("the settlement is {}; only a SETTLED one is disputed", record.state),
            ));
        }
        tx.set_state(settlement, SettlementState::Disputed)?;
        tx.insert_dispute(settlement, now, reason)?;
        tx.audit(now, "dispute-open", settlement, reason)?;
        tx.commit()
    }

    /// Resolves the open dispute on `settlement`. A reversal needs the operator's key: it
    /// closes with a statement like a settlement batch.
    pub fn resolve_dispute(
        &mut self,
        settlement: &str,
        outcome: Outcome,
        note: &str,
        operator: Option<&SecretKey>,
        now: UnixSeconds,
    ) -> Result<Resolution, Error> {
        crate::ledger::retrying(|| self.resolve_dispute_once(settlement, outcome, note, operator, now))
    }

    fn resolve_dispute_once(
        &mut self,
        settlement: &str,
        outcome: Outcome,
        note: &str,
        operator: Option<&SecretKey>,
        now: UnixSeconds,
    ) -> Result<Resolution, Error> {
        let ledger_id = self.ledger_id()?;
        let mut tx = self.store.begin()?;
        let dispute = tx
            .open_dispute(settlement)?
            .ok_or_else(|| invalid(settlement, "no open dispute on this settlement"))?;
        tx.resolve_dispute(dispute.id, now, outcome, note)?;
        let mut resolution = Resolution {
            settlement: settlement.into(),
            outcome,
            reversal: None,
            given_back: Vec::new(),
            statement: None,
        };
        match outcome {
            Outcome::Upheld => tx.set_state(settlement, SettlementState::Settled)?,
            Outcome::Reversed => {
                let operator = operator.ok_or_else(|| {
                    invalid(settlement, "a reversal is signed into a statement: give the operator key")
                })?;
                let disputed =
                    tx.settlement(settlement)?.ok_or_else(|| invalid(settlement, "no such settlement"))?;
                let event_id = format!("{REVERSAL_PREFIX}{settlement}");
                let id = settlement_id(&event_id);
                let seq = ledger::next_seq(&tx)?;
                // What partial refunds left: the reversal gives back all of it.
                let remaining =
                    Micros(crate::refunds::holdings(&tx, settlement)?.iter().map(|row| row.3).sum());
                tx.insert_settlement(&SettlementRecord {
                    id: id.clone(),
                    content: blake3::derive_key(ledger::CONTEXT_SETTLEMENT_CONTENT, event_id.as_bytes())
                        .to_vec(),
                    event_id: event_id.clone(),
                    kind: RecordKind::Reversal,
                    package: disputed.package.clone(),
                    tier: disputed.tier.clone(),
                    gross: remaining,
                    currency: disputed.currency.clone(),
                    at: now,
                    state: SettlementState::Settled,
                    refund_of: Some(settlement.to_owned()),
                    batch: seq,
                })?;
                let mut accounts = AccountCache::new();
                let given_back = crate::refunds::give_back(
                    &mut tx,
                    &mut accounts,
                    settlement,
                    &id,
                    &disputed.currency,
                    None,
                )?;
                let entry = ledger::entry(
                    &event_id,
                    RecordKind::Reversal,
                    &disputed.currency,
                    remaining,
                    given_back.clone(),
                    Vec::new(),
                );
                ledger::close_batch(&mut tx, &ledger_id, seq, &[entry], operator, now)?;
                resolution.reversal = Some(id);
                resolution.given_back = given_back;
                resolution.statement = Some(seq);
            }
        }
        tx.audit(now, &format!("dispute-{}", outcome.name()), settlement, note)?;
        tx.commit()?;
        Ok(resolution)
    }

    /// Every dispute, open ones first.
    pub fn disputes(&self) -> Result<Vec<Dispute>, Error> {
        let mut list: Vec<Dispute> = self
            .store
            .disputes()?
            .into_iter()
            .map(|(d, s)| Dispute {
                settlement: d.settlement,
                event: s.event_id,
                gross: s.gross,
                currency: s.currency,
                opened_at: d.opened_at,
                reason: d.reason,
                resolved_at: d.resolved_at,
                outcome: d.outcome,
                resolution: d.resolution,
            })
            .collect();
        list.sort_by_key(|d| d.resolved_at.is_some());
        Ok(list)
    }
}
