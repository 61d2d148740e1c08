//! Disputes (spec: settlement.md §5.3): a settled sale or usage is put in `DISPUTED`
//! (its payouts are withheld from payout reports), then resolved: `upheld` returns it to
//! `SETTLED`; `reversed` gives the whole gross back to the customer with compensating
//! transfers under a new settlement, recorded in a signed statement. Every step writes an
//! audit row; nothing written before is edited but the settlement's state.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use escx::sig::SecretKey;

use crate::Error;
use crate::ledger::{self, AccountCache, Ledger, Row, audit_row, insert_settlement, settlement_id};
use crate::statement::EntryInput;

/// The prefix of a reversal's event id (event ids have no spaces, so it never meets one).
pub const REVERSAL_PREFIX: &str = "reversal ";

/// How a dispute ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The settlement stands: back to `SETTLED`.
    Upheld,
    /// The customer gets the whole gross back: compensating transfers, `CANCELLED`.
    Reversed,
}

impl Outcome {
    /// The name stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Upheld => "upheld",
            Self::Reversed => "reversed",
        }
    }
}

/// One dispute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dispute {
    /// The disputed settlement.
    pub settlement: String,
    /// Its event id.
    pub event: String,
    /// Its gross, micro-units.
    pub gross: u64,
    /// Currency.
    pub currency: String,
    /// When it was opened.
    pub opened_at: u64,
    /// Why.
    pub reason: String,
    /// When it was resolved.
    pub resolved_at: Option<u64>,
    /// `upheld` or `reversed`.
    pub outcome: Option<String>,
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
    pub given_back: Vec<(String, u64)>,
    /// For a reversal: the statement recording it.
    pub statement: Option<u64>,
}

fn invalid(settlement: &str, reason: impl Into<String>) -> Error {
    Error::Dispute { settlement: settlement.to_owned(), reason: reason.into() }
}

impl Ledger {
    /// The settlement id named by `name`: a settlement id (64 hex digits) or an event id.
    pub fn find_settlement(&self, name: &str) -> Result<String, Error> {
        for candidate in [name.to_owned(), settlement_id(name)] {
            let found: Option<String> = self
                .db
                .query_row("SELECT id FROM settlements WHERE id = ?1", [&candidate], |r| r.get(0))
                .optional()
                .map_err(self.store())?;
            if let Some(id) = found {
                return Ok(id);
            }
        }
        Err(invalid(name, "no settlement with this id or event id in this ledger"))
    }

    /// Opens a dispute on a settled sale or usage settlement.
    pub fn open_dispute(&mut self, settlement: &str, reason: &str, now: u64) -> Result<(), Error> {
        let path = self.path.clone();
        let store = |e: rusqlite::Error| Error::Store { path: path.clone(), reason: e.to_string() };
        if reason.trim().is_empty() {
            return Err(invalid(settlement, "give a reason"));
        }
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
        let (kind, state): (String, String) = tx
            .query_row("SELECT kind, state FROM settlements WHERE id = ?1", [settlement], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(store)?
            .ok_or_else(|| invalid(settlement, "no such settlement"))?;
        if kind != "sale" && kind != "usage" {
            return Err(invalid(
                settlement,
                format!("a {kind} settlement cannot be disputed; dispute the sale"),
            ));
        }
        if state != "SETTLED" {
            return Err(invalid(
                settlement,
                format!("the settlement is {state}; only a SETTLED one is disputed"),
            ));
        }
        tx.execute("UPDATE settlements SET state = 'DISPUTED' WHERE id = ?1", [settlement]).map_err(store)?;
        tx.execute(
            "INSERT INTO disputes (settlement, opened_at, reason) VALUES (?1, ?2, ?3)",
            params![settlement, now as i64, reason],
        )
        .map_err(store)?;
        audit_row(&tx, now, "dispute-open", settlement, reason).map_err(|e| e.with_path(&path))?;
        tx.commit().map_err(store)
    }

    /// Resolves the open dispute on `settlement`. A reversal needs the operator's key: it
    /// closes with a statement like a settlement batch.
    pub fn resolve_dispute(
        &mut self,
        settlement: &str,
        outcome: Outcome,
        note: &str,
        operator: Option<&SecretKey>,
        now: u64,
    ) -> Result<Resolution, Error> {
        let ledger_id = self.ledger_id()?;
        let path = self.path.clone();
        let store = |e: rusqlite::Error| Error::Store { path: path.clone(), reason: e.to_string() };
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
        let open: Option<i64> = tx
            .query_row(
                "SELECT id FROM disputes WHERE settlement = ?1 AND resolved_at IS NULL",
                [settlement],
                |r| r.get(0),
            )
            .optional()
            .map_err(store)?;
        let dispute = open.ok_or_else(|| invalid(settlement, "no open dispute on this settlement"))?;
        tx.execute(
            "UPDATE disputes SET resolved_at = ?2, outcome = ?3, resolution = ?4 WHERE id = ?1",
            params![dispute, now as i64, outcome.name(), note],
        )
        .map_err(store)?;
        let mut resolution = Resolution {
            settlement: settlement.into(),
            outcome,
            reversal: None,
            given_back: Vec::new(),
            statement: None,
        };
        match outcome {
            Outcome::Upheld => {
                tx.execute("UPDATE settlements SET state = 'SETTLED' WHERE id = ?1", [settlement])
                    .map_err(store)?;
            }
            Outcome::Reversed => {
                let operator = operator.ok_or_else(|| {
                    invalid(settlement, "a reversal is signed into a statement: give the operator key")
                })?;
                let (package, tier, gross, currency): (String, String, i64, String) = tx
                    .query_row(
                        "SELECT package, tier, gross, currency FROM settlements WHERE id = ?1",
                        [settlement],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .map_err(store)?;
                let event_id = format!("{REVERSAL_PREFIX}{settlement}");
                let id = settlement_id(&event_id);
                let seq = ledger::next_seq(&tx).map_err(|e| e.with_path(&path))?;
                let content = blake3::derive_key(ledger::CONTEXT_SETTLEMENT_CONTENT, event_id.as_bytes());
                let row = Row {
                    id: &id,
                    event_id: &event_id,
                    content: &content,
                    kind: "reversal",
                    package: &package,
                    tier: &tier,
                    gross: gross as u64,
                    currency: &currency,
                    at: now,
                    state: "SETTLED",
                    refund_of: Some(settlement),
                    batch: seq,
                };
                insert_settlement(&tx, &row).map_err(|e| e.with_path(&path))?;
                let mut accounts = AccountCache::new();
                let given_back = ledger::reverse(&tx, settlement, &id, &currency, &mut accounts)
                    .map_err(|e| e.with_path(&path))?;
                let mut settlement_bytes = [0u8; 32];
                hex::decode_to_slice(&id, &mut settlement_bytes)
                    .map_err(|e| Error::Store { path: path.clone(), reason: e.to_string() })?;
                let entry = EntryInput {
                    settlement: settlement_bytes,
                    kind: "reversal".into(),
                    currency,
                    gross: gross as u64,
                    payouts: given_back.clone(),
                };
                ledger::close_batch(&tx, &ledger_id, seq, &[entry], operator, now)
                    .map_err(|e| e.with_path(&path))?;
                resolution.reversal = Some(id);
                resolution.given_back = given_back;
                resolution.statement = Some(seq as u64);
            }
        }
        audit_row(&tx, now, &format!("dispute-{}", outcome.name()), settlement, note)
            .map_err(|e| e.with_path(&path))?;
        tx.commit().map_err(store)?;
        Ok(resolution)
    }

    /// Every dispute, open ones first.
    pub fn disputes(&self) -> Result<Vec<Dispute>, Error> {
        let mut statement = self
            .db
            .prepare(
                "SELECT d.settlement, s.event_id, s.gross, s.currency, d.opened_at, d.reason, d.resolved_at, d.outcome, d.resolution
                 FROM disputes d JOIN settlements s ON s.id = d.settlement
                 ORDER BY d.resolved_at IS NOT NULL, d.opened_at, d.id",
            )
            .map_err(self.store())?;
        let rows = statement
            .query_map([], |r| {
                Ok(Dispute {
                    settlement: r.get(0)?,
                    event: r.get(1)?,
                    gross: r.get::<_, i64>(2)? as u64,
                    currency: r.get(3)?,
                    opened_at: r.get::<_, i64>(4)? as u64,
                    reason: r.get(5)?,
                    resolved_at: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
                    outcome: r.get(7)?,
                    resolution: r.get(8)?,
                })
            })
            .map_err(self.store())?;
        rows.collect::<Result<_, _>>().map_err(self.store())
    }
}
