//! Two-phase budget holds (spec: settlement.md §5.2): place a hold on a customer's
//! budget, then capture it (settle all or part of it through the waterfall, once the work
//! is verified) or void it. A hold moves money `@customers → @holds` and nothing else, so
//! no party is paid before the capture.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use escx::sig::SecretKey;

use crate::Error;
use crate::events::{BillingEvent, Kind};
use crate::ledger::{
    self, AccountCache, CUSTOMERS, HOLDS, Ledger, Manifests, Row, account, audit_row, insert_settlement,
    insert_transfer, settlement_id,
};
use crate::statement::EntryInput;

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
    pub package: String,
    /// Currency.
    pub currency: String,
    /// Amount held, micro-units.
    pub amount: u64,
    /// When it was placed.
    pub placed_at: u64,
    /// When it lapses: it can no longer be captured from this time on.
    pub expires_at: u64,
    /// `PENDING`, `CAPTURED` or `VOIDED`.
    pub state: String,
    /// Amount captured.
    pub captured: Option<u64>,
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
    /// Captured, micro-units.
    pub captured: u64,
    /// Given back to the customer, micro-units.
    pub released: u64,
    /// Payouts of the captured amount.
    pub payouts: Vec<(String, u64)>,
    /// The statement that records the capture (absent when it was captured before).
    pub statement: Option<u64>,
    /// True when the hold was captured before with this amount (a no-op).
    pub unchanged: bool,
}

fn invalid(hold: &str, reason: impl Into<String>) -> Error {
    Error::Hold { hold: hold.to_owned(), reason: reason.into() }
}

impl Ledger {
    /// Places a hold for each event (sale or usage), expiring at `expires_at`. Every event
    /// is checked first (manifest, currency, a conflicting earlier hold), then all are
    /// placed in one transaction. Re-placing the same events is a no-op.
    pub fn place_holds(
        &mut self,
        events: &[BillingEvent],
        manifests: &Manifests,
        now: u64,
        expires_at: u64,
    ) -> Result<PlaceReport, Error> {
        if expires_at <= now {
            return Err(invalid("(all)", "the expiry must be after the time of placing"));
        }
        let platform = self.platform()?;
        let path = self.path.clone();
        let store = |e: rusqlite::Error| Error::Store { path: path.clone(), reason: e.to_string() };
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
        let mut report = PlaceReport::default();
        let mut fresh = Vec::new();
        for event in events {
            if event.kind == Kind::Refund {
                return Err(invalid(&event.id, "a hold is placed for a sale or usage, not a refund"));
            }
            if event.gross_micros == 0 {
                return Err(invalid(&event.id, "a hold of 0 holds nothing"));
            }
            let id = settlement_id(&event.id);
            let content = blake3::derive_key(ledger::CONTEXT_SETTLEMENT_CONTENT, &event.canonical());
            let held: Option<(Vec<u8>, String)> = tx
                .query_row("SELECT content, kind FROM settlements WHERE id = ?1", [&id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(store)?;
            match held {
                Some((bytes, kind)) if bytes == content && kind == "hold" => report.unchanged += 1,
                Some(_) => return Err(Error::Conflict { event: event.id.clone(), settlement: id }),
                None => {
                    ledger::chain_for(event, manifests, platform.as_ref())?;
                    fresh.push((event, id, content));
                }
            }
        }
        let mut accounts = AccountCache::new();
        for (event, id, content) in &fresh {
            let row = Row {
                id,
                event_id: &event.id,
                content,
                kind: "hold",
                package: &event.package,
                tier: &event.tier,
                gross: event.gross_micros,
                currency: &event.currency,
                at: now,
                state: "PENDING",
                refund_of: None,
                batch: 0,
            };
            insert_settlement(&tx, &row).map_err(|e| e.with_path(&path))?;
            let customers = account(&tx, &mut accounts, CUSTOMERS, &event.currency)?;
            let holds = account(&tx, &mut accounts, HOLDS, &event.currency)?;
            insert_transfer(&tx, id, customers, holds, event.gross_micros)?;
            tx.execute(
                "INSERT INTO holds (settlement, event, amount, placed_at, expires_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'PENDING')",
                params![id, event.canonical(), event.gross_micros as i64, now as i64, expires_at as i64],
            )
            .map_err(store)?;
            report.placed += 1;
        }
        tx.commit().map_err(store)?;
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
        amount: Option<u64>,
        manifests: &Manifests,
        operator: &SecretKey,
        now: u64,
    ) -> Result<CaptureReport, Error> {
        let platform = self.platform()?;
        let ledger_id = self.ledger_id()?;
        let path = self.path.clone();
        let store = |e: rusqlite::Error| Error::Store { path: path.clone(), reason: e.to_string() };
        let id = settlement_id(hold);
        let capture_event = format!("{CAPTURE_PREFIX}{hold}");
        let capture_id = settlement_id(&capture_event);
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
        type HoldRow = (Vec<u8>, i64, i64, String, Option<i64>);
        let row: Option<HoldRow> = tx
            .query_row(
                "SELECT event, amount, expires_at, state, captured FROM holds WHERE settlement = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(store)?;
        let (event_bytes, held, expires_at, state, captured) =
            row.ok_or_else(|| invalid(hold, "no such hold in this ledger"))?;
        let held = held as u64;
        let amount = amount.unwrap_or(held);
        match (state.as_str(), captured) {
            ("CAPTURED", Some(c)) if c as u64 == amount => {
                return Ok(CaptureReport {
                    hold: hold.to_owned(),
                    settlement: capture_id,
                    captured: amount,
                    released: held - amount,
                    payouts: Vec::new(),
                    statement: None,
                    unchanged: true,
                });
            }
            ("PENDING", _) => {}
            (state, _) => {
                return Err(invalid(hold, format!("the hold is {state}; only a PENDING hold is captured")));
            }
        }
        if now >= expires_at as u64 {
            return Err(invalid(
                hold,
                format!(
                    "the hold expired at {}; void it and place a new one",
                    escx::timestamp::format_rfc3339(expires_at as u64)
                ),
            ));
        }
        if amount == 0 || amount > held {
            return Err(invalid(
                hold,
                format!(
                    "capture {} of a hold of {}: capture more than 0 and at most the amount held",
                    escx_manifest::Micros(amount),
                    escx_manifest::Micros(held)
                ),
            ));
        }
        let mut event: BillingEvent = ciborium::from_reader(event_bytes.as_slice())
            .map_err(|e| Error::Store { path: path.clone(), reason: format!("hold {hold}: {e}") })?;
        event.gross_micros = amount;
        let chain = ledger::chain_for(&event, manifests, platform.as_ref())?;
        let seq = ledger::next_seq(&tx).map_err(|e| e.with_path(&path))?;
        let content = blake3::derive_key(ledger::CONTEXT_SETTLEMENT_CONTENT, &event.canonical());
        let row = Row {
            id: &capture_id,
            event_id: &capture_event,
            content: &content,
            kind: event.kind.name(),
            package: &event.package,
            tier: &event.tier,
            gross: amount,
            currency: &event.currency,
            at: now,
            state: "SETTLED",
            refund_of: None,
            batch: seq,
        };
        insert_settlement(&tx, &row).map_err(|e| e.with_path(&path))?;
        let mut accounts = AccountCache::new();
        let payouts =
            ledger::pay_out(&tx, &capture_id, HOLDS, &chain, amount, &event.currency, &mut accounts)
                .map_err(|e| e.with_path(&path))?;
        let released = held - amount;
        if released > 0 {
            let holds = account(&tx, &mut accounts, HOLDS, &event.currency)?;
            let customers = account(&tx, &mut accounts, CUSTOMERS, &event.currency)?;
            insert_transfer(&tx, &id, holds, customers, released)?;
        }
        tx.execute(
            "UPDATE holds SET state = 'CAPTURED', captured = ?2, closed_at = ?3 WHERE settlement = ?1",
            params![id, amount as i64, now as i64],
        )
        .map_err(store)?;
        tx.execute("UPDATE settlements SET state = 'SETTLED' WHERE id = ?1", [&id]).map_err(store)?;
        let mut settlement = [0u8; 32];
        hex::decode_to_slice(&capture_id, &mut settlement)
            .map_err(|e| Error::Store { path: path.clone(), reason: e.to_string() })?;
        let entry = EntryInput {
            settlement,
            kind: event.kind.name().into(),
            currency: event.currency.clone(),
            gross: amount,
            payouts: payouts.clone(),
        };
        ledger::close_batch(&tx, &ledger_id, seq, &[entry], operator, now).map_err(|e| e.with_path(&path))?;
        tx.commit().map_err(store)?;
        Ok(CaptureReport {
            hold: hold.to_owned(),
            settlement: capture_id,
            captured: amount,
            released,
            payouts,
            statement: Some(seq as u64),
            unchanged: false,
        })
    }

    /// Voids pending hold `hold`: the whole amount goes back to `@customers`. Voiding a
    /// voided hold is a no-op (returns false).
    pub fn void_hold(&mut self, hold: &str, now: u64) -> Result<bool, Error> {
        let path = self.path.clone();
        let store = |e: rusqlite::Error| Error::Store { path: path.clone(), reason: e.to_string() };
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
        let voided = void_in(&tx, hold, now).map_err(|e| e.with_path(&path))?;
        tx.commit().map_err(store)?;
        Ok(voided)
    }

    /// Voids every pending hold that expired by `now`; returns their names.
    pub fn void_expired(&mut self, now: u64) -> Result<Vec<String>, Error> {
        let path = self.path.clone();
        let store = |e: rusqlite::Error| Error::Store { path: path.clone(), reason: e.to_string() };
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
        let expired: Vec<String> = tx
            .prepare(
                "SELECT s.event_id FROM holds h JOIN settlements s ON s.id = h.settlement
                 WHERE h.state = 'PENDING' AND h.expires_at <= ?1 ORDER BY s.event_id",
            )
            .and_then(|mut s| s.query_map([now as i64], |r| r.get(0))?.collect())
            .map_err(store)?;
        for hold in &expired {
            void_in(&tx, hold, now).map_err(|e| e.with_path(&path))?;
        }
        tx.commit().map_err(store)?;
        Ok(expired)
    }

    /// Every hold, optionally only those in `state`.
    pub fn holds(&self, state: Option<&str>) -> Result<Vec<Hold>, Error> {
        let mut statement = self
            .db
            .prepare(
                "SELECT s.event_id, s.id, s.package, s.currency, h.amount, h.placed_at, h.expires_at, h.state, h.captured
                 FROM holds h JOIN settlements s ON s.id = h.settlement
                 WHERE (?1 IS NULL OR h.state = ?1) ORDER BY h.placed_at, s.event_id",
            )
            .map_err(self.store())?;
        let rows = statement
            .query_map([state], |r| {
                Ok(Hold {
                    id: r.get(0)?,
                    settlement: r.get(1)?,
                    package: r.get(2)?,
                    currency: r.get(3)?,
                    amount: r.get::<_, i64>(4)? as u64,
                    placed_at: r.get::<_, i64>(5)? as u64,
                    expires_at: r.get::<_, i64>(6)? as u64,
                    state: r.get(7)?,
                    captured: r.get::<_, Option<i64>>(8)?.map(|c| c as u64),
                })
            })
            .map_err(self.store())?;
        rows.collect::<Result<_, _>>().map_err(self.store())
    }
}

fn void_in(tx: &rusqlite::Transaction<'_>, hold: &str, now: u64) -> Result<bool, Error> {
    let id = settlement_id(hold);
    let row: Option<(i64, String, String)> = tx
        .query_row(
            "SELECT h.amount, h.state, s.currency FROM holds h JOIN settlements s ON s.id = h.settlement
             WHERE h.settlement = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(Error::store_unnamed)?;
    let (amount, state, currency) = row.ok_or_else(|| invalid(hold, "no such hold in this ledger"))?;
    match state.as_str() {
        "VOIDED" => return Ok(false),
        "PENDING" => {}
        other => return Err(invalid(hold, format!("the hold is {other}; only a PENDING hold is voided"))),
    }
    let mut accounts = AccountCache::new();
    let holds = account(tx, &mut accounts, HOLDS, &currency)?;
    let customers = account(tx, &mut accounts, CUSTOMERS, &currency)?;
    insert_transfer(tx, &id, holds, customers, amount as u64)?;
    tx.execute(
        "UPDATE holds SET state = 'VOIDED', closed_at = ?2 WHERE settlement = ?1",
        params![id, now as i64],
    )
    .map_err(Error::store_unnamed)?;
    tx.execute("UPDATE settlements SET state = 'CANCELLED' WHERE id = ?1", [&id])
        .map_err(Error::store_unnamed)?;
    audit_row(
        tx,
        now,
        "hold-void",
        &id,
        &format!("hold {hold} voided, {} released", escx_manifest::Micros(amount as u64)),
    )?;
    Ok(true)
}
