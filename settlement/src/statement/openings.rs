//! A party's openings of its payouts and of the gross, checked against a statement (settlement.md §4.3).

use super::*;

/// One payout a party's openings proved, with the entry's gross.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OpenedPayout {
    /// Entry index.
    pub entry: u32,
    /// The party's payout, micro-units.
    pub amount: Micros,
    /// The entry's gross, micro-units.
    pub gross: Micros,
}

/// Checks a party's openings against a verified statement (settlement.md §4.3): for every
/// entry the index lists for the party, exactly one opening of its payout and one of the
/// entry's gross, each opening its commitment, and the payout no larger than the gross.
pub fn check_openings(
    statement: &Verified,
    file: &OpeningsFile,
) -> Result<Vec<OpenedPayout>, StatementError> {
    let payload = &statement.payload;
    if file.v != 1 {
        return Err(StatementError::OpeningsInvalid {
            reason: format!("unsupported openings file version {} (v must be 1)", file.v),
        });
    }
    if file.ledger != payload.ledger {
        return Err(StatementError::OpeningsInvalid {
            reason: format!("they are for another ledger than statement {}'s", payload.seq),
        });
    }
    if file.seq != payload.seq {
        return Err(StatementError::OpeningsInvalid {
            reason: format!("they are for statement {}, not statement {}", file.seq, payload.seq),
        });
    }
    // Every entry the index lists for the party must be opened, exactly once, with its
    // gross: an opening withheld could hide a "negative" payout, and the gross lets the
    // party check its share of it (§4.4).
    let listed = payload.parties.get(&file.party).map_or(&[][..], Vec::as_slice);
    for wanted in [Some(file.party.as_str()), None] {
        let mut opened: Vec<u32> =
            file.openings.iter().filter(|o| o.party.as_deref() == wanted).map(|o| o.entry).collect();
        opened.sort_unstable();
        if opened != listed {
            let entry = listed
                .iter()
                .chain(opened.iter())
                .find(|e| opened.iter().filter(|o| o == e).count() != 1 || !listed.contains(e))
                .copied()
                .unwrap_or(0);
            return Err(StatementError::OpeningMissing {
                seq: payload.seq,
                entry,
                party: file.party.clone(),
            });
        }
    }
    let mut grosses = BTreeMap::new();
    let mut payouts = Vec::new();
    for opening in &file.openings {
        let fail =
            || StatementError::Opening { seq: payload.seq, entry: opening.entry, party: file.party.clone() };
        let entry = payload.entries.get(opening.entry as usize).ok_or_else(fail)?;
        let commitment = match &opening.party {
            None => &entry.gross,
            Some(party) if *party == file.party => {
                &entry.payouts.iter().find(|p| p.party == *party).ok_or_else(fail)?.commitment
            }
            Some(_) => return Err(fail()),
        };
        let blinding = scalar(&opening.blinding).ok_or_else(fail)?;
        if commit(opening.amount.0, &blinding).compress().as_bytes()[..] != commitment[..] {
            return Err(fail());
        }
        match opening.party {
            None => {
                grosses.insert(opening.entry, opening.amount);
            }
            Some(_) => payouts.push((opening.entry, opening.amount)),
        }
    }
    payouts
        .into_iter()
        .map(|(entry, amount)| {
            let gross = grosses.get(&entry).copied().unwrap_or_default();
            if amount > gross {
                return Err(StatementError::Opening { seq: payload.seq, entry, party: file.party.clone() });
            }
            Ok(OpenedPayout { entry, amount, gross })
        })
        .collect()
}
