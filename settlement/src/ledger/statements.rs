//! Signed statements: closing a batch into the next statement, closing a period, rotating
//! the operator key, proofs and openings (settlement.md §4).

use super::*;

impl<S: Store> Ledger<S> {
    /// Every statement: (seq, hash, issued_at, entries).
    pub fn statements(&self) -> Result<Vec<StatementInfo>, Error> {
        Ok(self
            .store
            .statements()?
            .into_iter()
            .map(|s| StatementInfo {
                seq: s.seq,
                hash: hex::encode(s.hash),
                issued_at: s.issued_at,
                entries: s.entries,
            })
            .collect())
    }

    /// Closes `period` for revenue proofs (proofs.md §3.1): a verifier accepts a proof for
    /// a month only given a statement issued after it that chains from the month's last
    /// one. If the newest statement was issued at or after the period's end, that one
    /// closes it and nothing is signed; otherwise an empty statement (no entries) is signed
    /// at `now`. Refused while the period has not ended (`period-open`). Idempotent: a
    /// second call finds the period closed.
    pub fn close_period(
        &mut self,
        period: crate::payout::Period,
        operator: &SecretKey,
        now: UnixSeconds,
    ) -> Result<PeriodClose, Error> {
        let (_, end) = period.range();
        if now < end {
            return Err(Error::PeriodOpen {
                period: period.to_string(),
                ends: escx::timestamp::format_rfc3339(end),
            });
        }
        let ledger_id = self.ledger_id()?;
        retrying(|| {
            let mut tx = self.store.begin()?;
            if let Some(newest) = tx.statements()?.last()
                && newest.issued_at >= end
            {
                return Ok(PeriodClose {
                    period: period.to_string(),
                    seq: newest.seq,
                    issued_at: newest.issued_at,
                    signed: false,
                });
            }
            let seq = next_seq(&tx)?;
            close_batch(&mut tx, &ledger_id, seq, &[], operator, now)?;
            tx.commit()?;
            Ok(PeriodClose { period: period.to_string(), seq, issued_at: now, signed: true })
        })
    }

    /// Hands the ledger to a new operator key (settlement.md §4.5): `old`, the key the ledger
    /// holds, signs a rotation statement endorsing `new`; the statement is kept with the
    /// ledger and every later statement, capture, resolution and close must be signed by
    /// `new` (`operator-key-mismatch` otherwise). Idempotent: when the ledger already holds
    /// `new` by a rotation from `old`, that rotation is returned and nothing is written.
    /// Refused before the first statement (no key is held yet: the first statement records
    /// whichever key signs it) and for a key the ledger held before.
    pub fn rotate_operator_key(
        &mut self,
        old: &SecretKey,
        new: &PublicKey,
        now: UnixSeconds,
    ) -> Result<RotationStatement, Error> {
        retrying(|| {
            let mut tx = self.store.begin()?;
            let held = held_operator_key(&mut tx)?.ok_or_else(|| Error::OperatorKeyRotation {
                reason: "the ledger has no statement yet, so no operator key to hand over: its first \
                         statement records whichever key signs it"
                    .into(),
            })?;
            let rotations = stored_rotations(&tx)?;
            if held == new.id().to_string()
                && let Some(last) = rotations.last()
                && last.signer() == old.id()
            {
                return Ok(last.clone());
            }
            if held != old.id().to_string() {
                return Err(Error::OperatorKeyMismatch { held, given: old.id().to_string() });
            }
            let retired: Vec<String> = rotations.iter().map(|r| r.signer().to_string()).collect();
            if new.id() == old.id() || retired.contains(&new.id().to_string()) {
                return Err(Error::OperatorKeyRotation {
                    reason: format!("key {} signed this ledger before; hand over to a new key", new.id()),
                });
            }
            let rotation = RotationStatement::create(old, new, now);
            let mut lines: Vec<String> = rotations.iter().map(|r| r.to_line()).collect();
            lines.push(rotation.to_line());
            tx.set_meta(META_OPERATOR_ROTATIONS, &lines.join("\n"))?;
            tx.set_meta(META_OPERATOR_KEY, &new.id().to_string())?;
            tx.commit()?;
            Ok(rotation)
        })
    }

    /// The operator key's rotation statements, oldest first: with the first key, they are
    /// what an auditor needs to verify every statement (settlement.md §4.5).
    pub fn operator_rotations(&self) -> Result<Vec<RotationStatement>, Error> {
        stored_rotations(&self.store)
    }

    /// A statement's signed bytes.
    pub fn statement(&self, seq: u64) -> Result<Vec<u8>, Error> {
        Ok(self.store.statement(seq)?.ok_or(Error::UnknownStatement { seq })?.bytes)
    }

    /// The range proofs of statement `seq` (proofs.md §2): every payout of every entry
    /// proven to lie in [0, 2^64), made from the ledger's openings. The statement is first
    /// verified under `operator` or, after a rotation, the successor that signed it (the
    /// proofs name the signer), and the proofs are checked before they are returned.
    pub fn prove_statement(
        &self,
        seq: u64,
        operator: &PublicKey,
    ) -> Result<crate::proofs::StatementProofs, Error> {
        let keys = statement::OperatorKeys::follow(operator.clone(), &self.operator_rotations()?)?;
        let statement = keys.verify(&self.statement(seq)?)?;
        let openings = self.store.statement_openings(seq)?;
        let proofs = crate::proofs::prove_statement(&statement, &openings, &statement.signer)?;
        crate::proofs::verify_statement(&proofs, &statement, &statement.signer)?;
        Ok(proofs)
    }

    /// A party's openings for statement `seq`: its payouts and the gross of each entry it
    /// is paid in (settlement.md §4.3). Read back, every entry's payout openings must add up
    /// to its gross opening, or nothing is handed out (`ledger-invariant`).
    pub fn openings(&self, seq: u64, party: &str) -> Result<OpeningsFile, Error> {
        // Statements are numbered 1, 2, 3, ... without gaps (close_batch enforces it), so
        // this checks that `seq` exists without reading its bytes.
        if !self.store.last_statement()?.is_some_and(|(last, _, _)| (1..=last).contains(&seq)) {
            return Err(Error::UnknownStatement { seq });
        }
        let all = self.store.statement_openings(seq)?;
        let mut sums: BTreeMap<u32, (Option<Micros>, u128)> = BTreeMap::new();
        for opening in &all {
            let entry = sums.entry(opening.entry).or_default();
            match opening.party {
                None => entry.0 = Some(opening.amount),
                Some(_) => entry.1 += u128::from(opening.amount),
            }
        }
        for (entry, (gross, paid)) in &sums {
            if gross.map(u128::from) != Some(*paid) {
                return Err(Error::Invariant {
                    path: self.store.location(),
                    reason: format!(
                        "statement {seq} entry {entry}: payout openings add up to {paid}, the gross opening is {}",
                        gross.map_or("missing".to_owned(), |g| g.0.to_string())
                    ),
                });
            }
        }
        let paid: HashSet<u32> =
            all.iter().filter(|o| o.party.as_deref() == Some(party)).map(|o| o.entry).collect();
        let mut openings: Vec<statement::Opening> = all
            .into_iter()
            .filter(|o| match &o.party {
                Some(p) => p == party,
                None => paid.contains(&o.entry),
            })
            .collect();
        openings.sort_by_key(|o| (o.entry, o.party.is_some()));
        Ok(OpeningsFile {
            v: 1,
            ledger: serde_bytes::ByteBuf::from(self.ledger_id()?.to_vec()),
            seq,
            party: party.to_owned(),
            openings,
        })
    }
}

/// The rotation statements kept in meta, oldest first.
pub(super) fn stored_rotations(store: &impl Reader) -> Result<Vec<RotationStatement>, Error> {
    let Some(text) = store.meta(META_OPERATOR_ROTATIONS)? else { return Ok(Vec::new()) };
    text.lines()
        .map(|line| {
            RotationStatement::parse(line)
                .map_err(|e| Error::stored(store.location(), format!("an operator key rotation: {e}")))
        })
        .collect()
}

/// The next statement sequence number (also the number of the batch it closes).
pub(crate) fn next_seq(tx: &impl Reader) -> Result<u64, Error> {
    Ok(tx.last_statement()?.map_or(0, |(seq, _, _)| seq) + 1)
}

/// Meta key of the id of the operator key that signs the ledger's next statement.
pub(super) const META_OPERATOR_KEY: &str = "operator_key";

/// Meta key of the operator key's rotation statements, one text line each, oldest first.
pub(super) const META_OPERATOR_ROTATIONS: &str = "operator_rotations";

/// The id of the key that signs the ledger's next statement: recorded in meta, or for a
/// ledger from before the record, the signer of its last statement (recorded then). `None`
/// before the first statement.
pub(super) fn held_operator_key(tx: &mut impl Writer) -> Result<Option<String>, Error> {
    if let Some(held) = tx.meta(META_OPERATOR_KEY)? {
        return Ok(Some(held));
    }
    let Some((last, _, _)) = tx.last_statement()? else { return Ok(None) };
    let record = tx
        .statement(last)?
        .ok_or_else(|| Error::stored(tx.location(), format!("statement {last} is missing")))?;
    let held = escx::envelope::Envelope::from_cbor(&record.bytes)
        .map_err(|e| Error::stored(tx.location(), format!("statement {last}: {e}")))?
        .key_id()
        .to_string();
    tx.set_meta(META_OPERATOR_KEY, &held)?;
    Ok(Some(held))
}

/// Signs the batch's statement and keeps its openings, in the batch's transaction.
pub(crate) fn close_batch(
    tx: &mut impl Writer,
    ledger_id: &[u8; 16],
    seq: u64,
    entries: &[EntryInput],
    operator: &SecretKey,
    now: UnixSeconds,
) -> Result<(), Error> {
    // The previous statement's hash, without reading its (large) bytes. Statement times
    // never go back (a clock stepped back, or `--at` before the last statement, signs at
    // the previous statement's time): a month once closed by a later statement stays
    // closed (proofs.md §3.1).
    let (previous, now) = match tx.last_statement()? {
        Some((last, hash, issued_at)) if last + 1 == seq => (hash, now.max(issued_at)),
        None if seq == 1 => ([0; 32], now),
        _ => {
            return Err(Error::stored(
                tx.location(),
                format!("statement {} is missing; the ledger was altered", seq.saturating_sub(1)),
            ));
        }
    };
    // Every statement of a ledger is signed by the operator key it holds: the one recorded
    // with the first statement (or, for a ledger from before, read from its last statement),
    // or the successor of its last rotation. Another key aborts the batch's transaction:
    // nothing is written (settlement.md §4).
    let given = operator.id().to_string();
    let held = match held_operator_key(tx)? {
        Some(held) => held,
        None => {
            tx.set_meta(META_OPERATOR_KEY, &given)?;
            given.clone()
        }
    };
    if held != given {
        return Err(Error::OperatorKeyMismatch { held, given });
    }
    // Conservation is checked on every entry before anything is signed; a failure aborts
    // the batch's transaction.
    let built = statement::build(ledger_id, seq, &previous, now, entries, operator).map_err(|e| {
        Error::Invariant { path: tx.location(), reason: format!("statement {seq} not signed: {e}") }
    })?;
    let record = StatementRecord {
        seq,
        hash: built.hash,
        issued_at: now,
        entries: entries.len() as u64,
        bytes: built.bytes,
    };
    tx.insert_statement(&record, &built.openings)
}
