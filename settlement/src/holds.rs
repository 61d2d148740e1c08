//! Two-phase budget holds (spec: settlement.md §5.2): place a hold on a customer's
//! budget, then capture it (settle all or part of it through the waterfall, once the work
//! is verified) or void it. A hold moves money `@customers → @holds` and nothing else, so
//! no party is paid before the capture.

use crate::store::{HoldState, RecordKind, SettlementState};
use escx::UnixSeconds;
use escx::header::PackageName;
use escx_manifest::Micros;
use serde::Serialize;

use escx::sig::SecretKey;

use crate::Error;
use crate::events::{BillingEvent, Kind};
use crate::ledger::{
    self, AccountCache, CUSTOMERS, HOLDS, Ledger, Manifests, account, content_hash, settlement_id,
};
use crate::store::{HoldRecord, Reader, SettlementRecord, Store, Writer};

/// The prefix of a capture's event id. Event ids have no spaces, so a capture's id never
/// meets a billing event's.
pub const CAPTURE_PREFIX: &str = "capture ";

/// A hold as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// The held event's id (the hold's name).
    pub id: String,
    /// The hold's settlement id.
    pub settlement: String,
    /// Package.
    pub package: PackageName,
    /// Currency.
    pub currency: String,
    /// Amount held.
    #[serde(serialize_with = "escx_manifest::money::serialize_decimal")]
    pub amount: Micros,
    /// When it was placed.
    #[serde(serialize_with = "escx::timestamp::serialize_rfc3339")]
    pub placed_at: UnixSeconds,
    /// When it lapses: it can no longer be captured from this time on.
    #[serde(serialize_with = "escx::timestamp::serialize_rfc3339")]
    pub expires_at: UnixSeconds,
    /// Its state.
    pub state: HoldState,
    /// Amount captured.
    #[serde(serialize_with = "escx_manifest::money::serialize_decimal_opt")]
    pub captured: Option<Micros>,
}

/// What placing holds did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlaceReport {
    /// Holds placed.
    pub placed: usize,
    /// Holds placed before with the same content (no-ops).
    pub unchanged: usize,
}

/// What a capture did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptureReport {
    /// The hold.
    pub hold: String,
    /// The capture's settlement id.
    pub settlement: String,
    /// Captured.
    #[serde(serialize_with = "escx_manifest::money::serialize_decimal")]
    pub captured: Micros,
    /// Given back to the customer.
    #[serde(serialize_with = "escx_manifest::money::serialize_decimal")]
    pub released: Micros,
    /// Payouts of the captured amount.
    #[serde(serialize_with = "escx_manifest::money::serialize_decimal_pairs")]
    pub payouts: Vec<(String, Micros)>,
    /// The statement that records the capture (absent when it was captured before).
    pub statement: Option<u64>,
    /// True when the hold was captured before with this amount (a no-op).
    pub unchanged: bool,
}

fn invalid(hold: &str, reason: impl Into<String>) -> Error {
    Error::Hold { hold: hold.to_owned(), reason: reason.into() }
}

impl<S: Store> Ledger<S> {
    /// Places a hold for each event (sale or usage), expiring at `expires_at`. Every event
    /// is checked first (manifest, currency, a conflicting earlier hold), then all are
    /// placed in one transaction. Re-placing the same events is a no-op.
    pub fn place_holds(
        &mut self,
        events: &[BillingEvent],
        manifests: &Manifests,
        now: UnixSeconds,
        expires_at: UnixSeconds,
    ) -> Result<PlaceReport, Error> {
        crate::ledger::retrying(|| self.place_holds_once(events, manifests, now, expires_at))
    }

    fn place_holds_once(
        &mut self,
        events: &[BillingEvent],
        manifests: &Manifests,
        now: UnixSeconds,
        expires_at: UnixSeconds,
    ) -> Result<PlaceReport, Error> {
        if expires_at <= now {
            return Err(invalid("(all)", "the expiry must be after the time of placing"));
        }
        let platform = self.platform()?;
        let mut tx = self.store.begin()?;
        let mut report = PlaceReport::default();
        let mut fresh = Vec::new();
        for event in events {
            if event.kind == Kind::Refund {
                return Err(invalid(&event.id, "a hold is placed for a sale or usage, not a refund"));
            }
            if event.gross_micros == Micros::ZERO {
                return Err(invalid(&event.id, "a hold of 0 holds nothing"));
            }
            let id = settlement_id(&event.id);
            let content = content_hash(event);
            match tx.settlement(&id)? {
                Some(held) if held.content == content && held.kind == RecordKind::Hold => {
                    report.unchanged += 1
                }
                Some(_) => return Err(Error::Conflict { event: event.id.clone(), settlement: id }),
                None => {
                    ledger::chain_for(event, manifests, platform.as_ref())?;
                    fresh.push((event, id, content));
                }
            }
        }
        let mut accounts = AccountCache::new();
        for (event, id, content) in &fresh {
            tx.insert_settlement(&SettlementRecord {
                id: id.clone(),
                event_id: event.id.clone(),
                content: content.to_vec(),
                kind: RecordKind::Hold,
                package: event.package.clone(),
                tier: event.tier.clone(),
                gross: event.gross_micros,
                currency: event.currency.clone(),
                at: now,
                state: SettlementState::Pending,
                refund_of: None,
                batch: 0,
            })?;
            let customers = account(&mut tx, &mut accounts, CUSTOMERS, &event.currency)?;
            let holds = account(&mut tx, &mut accounts, HOLDS, &event.currency)?;
            tx.insert_transfer(id, customers, holds, event.gross_micros)?;
            tx.insert_hold(&HoldRecord {
                settlement: id.clone(),
                event: event.canonical(),
                amount: event.gross_micros,
                placed_at: now,
                expires_at,
                state: HoldState::Pending,
                captured: None,
                closed_at: None,
            })?;
            report.placed += 1;
        }
        tx.commit()?;
        Ok(report)
    }

    /// Captures `amount` (all of it when `None`) of pending hold `hold` at time `now`: the
    /// captured amount is settled through the held event's waterfall (in force at the
    /// event's time) from `@holds`, the rest goes back to `@customers`, and a statement
    /// signed by `operator` records the capture. Capturing again with the same amount is a
    /// no-op.
    pub fn capture_hold(
        &mut self,
        hold: &str,
        amount: Option<Micros>,
        manifests: &Manifests,
        operator: &SecretKey,
        now: UnixSeconds,
    ) -> Result<CaptureReport, Error> {
        crate::ledger::retrying(|| self.capture_hold_once(hold, amount, manifests, operator, now))
    }

    fn capture_hold_once(
        &mut self,
        hold: &str,
        amount: Option<Micros>,
        manifests: &Manifests,
        operator: &SecretKey,
        now: UnixSeconds,
    ) -> Result<CaptureReport, Error> {
        let platform = self.platform()?;
        let ledger_id = self.ledger_id()?;
        let id = settlement_id(hold);
        let capture_event = format!("{CAPTURE_PREFIX}{hold}");
        let capture_id = settlement_id(&capture_event);
        let mut tx = self.store.begin()?;
        let record = tx.hold(&id)?.ok_or_else(|| invalid(hold, "no such hold in this ledger"))?;
        let held = record.amount;
        let amount = amount.unwrap_or(held);
        match (record.state, record.captured) {
            (HoldState::Captured, Some(c)) if c == amount => {
                return Ok(CaptureReport {
                    hold: hold.to_owned(),
                    settlement: capture_id,
                    captured: amount,
                    released: Micros(held.0.saturating_sub(amount.0)),
                    payouts: Vec::new(),
                    statement: None,
                    unchanged: true,
                });
            }
            (HoldState::Pending, _) => {}
            (state, _) => {
                return Err(invalid(hold, format!("the hold is {state}; only a PENDING hold is captured")));
            }
        }
        if now >= record.expires_at {
            return Err(invalid(
                hold,
                format!(
                    "the hold expired at {}; void it and place a new one",
                    escx::timestamp::format_rfc3339(record.expires_at)
                ),
            ));
        }
        if amount == Micros::ZERO || amount > held {
            return Err(invalid(
                hold,
                format!(
                    "capture {amount} of a hold of {held}: capture more than 0 and at most the amount held"
                ),
            ));
        }
        let mut event: BillingEvent = escx::cbor::decode_exact(&record.event, "held event")
            .map_err(|reason| Error::stored(tx.location(), format!("hold {hold}: {reason}")))?;
        event.gross_micros = amount;
        let chain = ledger::chain_for(&event, manifests, platform.as_ref())?;
        let seq = ledger::next_seq(&tx)?;
        tx.insert_settlement(&SettlementRecord {
            id: capture_id.clone(),
            event_id: capture_event.clone(),
            content: content_hash(&event).to_vec(),
            kind: event.kind.into(),
            package: event.package.clone(),
            tier: event.tier.clone(),
            gross: amount,
            currency: event.currency.clone(),
            at: now,
            state: SettlementState::Settled,
            refund_of: None,
            batch: seq,
        })?;
        let mut accounts = AccountCache::new();
        let (payouts, rules) =
            ledger::pay_out(&mut tx, &mut accounts, &capture_id, HOLDS, &chain, amount, &event.currency)?;
        // 0 < amount <= held, checked above.
        let released = Micros(held.0 - amount.0);
        if released > Micros::ZERO {
            let holds = account(&mut tx, &mut accounts, HOLDS, &event.currency)?;
            let customers = account(&mut tx, &mut accounts, CUSTOMERS, &event.currency)?;
            tx.insert_transfer(&id, holds, customers, released)?;
        }
        tx.close_hold(&id, HoldState::Captured, Some(amount), now)?;
        tx.set_state(&id, SettlementState::Settled)?;
        let entry =
            ledger::entry(&capture_event, event.kind.into(), &event.currency, amount, payouts.clone(), rules);
        ledger::close_batch(&mut tx, &ledger_id, seq, &[entry], operator, now)?;
        tx.commit()?;
        Ok(CaptureReport {
            hold: hold.to_owned(),
            settlement: capture_id,
            captured: amount,
            released,
            payouts,
            statement: Some(seq),
            unchanged: false,
        })
    }

    /// Voids pending hold `hold`: the whole amount goes back to `@customers`. Voiding a
    /// voided hold is a no-op (returns false).
    pub fn void_hold(&mut self, hold: &str, now: UnixSeconds) -> Result<bool, Error> {
        crate::ledger::retrying(|| self.void_hold_once(hold, now))
    }

    fn void_hold_once(&mut self, hold: &str, now: UnixSeconds) -> Result<bool, Error> {
        let mut tx = self.store.begin()?;
        let voided = void_in(&mut tx, hold, now)?;
        tx.commit()?;
        Ok(voided)
    }

    /// Voids every pending hold that expired by `now`; returns their names.
    pub fn void_expired(&mut self, now: UnixSeconds) -> Result<Vec<String>, Error> {
        crate::ledger::retrying(|| self.void_expired_once(now))
    }

    fn void_expired_once(&mut self, now: UnixSeconds) -> Result<Vec<String>, Error> {
        let mut tx = self.store.begin()?;
        let mut expired: Vec<String> = tx
            .holds(Some(HoldState::Pending))?
            .into_iter()
            .filter(|(hold, _)| hold.expires_at <= now)
            .map(|(_, settlement)| settlement.event_id)
            .collect();
        expired.sort();
        for hold in &expired {
            void_in(&mut tx, hold, now)?;
        }
        tx.commit()?;
        Ok(expired)
    }

    /// Every hold, optionally only those in `state`.
    pub fn holds(&self, state: Option<HoldState>) -> Result<Vec<Hold>, Error> {
        Ok(self
            .store
            .holds(state)?
            .into_iter()
            .map(|(h, s)| Hold {
                id: s.event_id,
                settlement: s.id,
                package: s.package,
                currency: s.currency,
                amount: h.amount,
                placed_at: h.placed_at,
                expires_at: h.expires_at,
                state: h.state,
                captured: h.captured,
            })
            .collect())
    }
}

fn void_in(tx: &mut impl Writer, hold: &str, now: UnixSeconds) -> Result<bool, Error> {
    let id = settlement_id(hold);
    let record = tx.hold(&id)?.ok_or_else(|| invalid(hold, "no such hold in this ledger"))?;
    match record.state {
        HoldState::Voided => return Ok(false),
        HoldState::Pending => {}
        other => return Err(invalid(hold, format!("the hold is {other}; only a PENDING hold is voided"))),
    }
    let currency =
        tx.settlement(&id)?.map(|s| s.currency).ok_or_else(|| invalid(hold, "its settlement is missing"))?;
    let mut accounts = AccountCache::new();
    let holds = account(tx, &mut accounts, HOLDS, &currency)?;
    let customers = account(tx, &mut accounts, CUSTOMERS, &currency)?;
    tx.insert_transfer(&id, holds, customers, record.amount)?;
    tx.close_hold(&id, HoldState::Voided, None, now)?;
    tx.set_state(&id, SettlementState::Cancelled)?;
    tx.audit(now, "hold-void", &id, &format!("hold {hold} voided, {} released", record.amount))?;
    Ok(true)
}
