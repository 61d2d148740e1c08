//! Zero-knowledge proofs over signed statements (spec: proofs.md).
//!
//! - **Statement proofs** (the operator): for every entry, one aggregated range proof that
//!   each payout commitment opens to a value in [0, 2^64), so a third party with only the
//!   operator's public key can rule out a "negative" payout balanced by an inflated one
//!   (settlement.md §4.4); and for an entry whose payouts carry signed basis-point rules, a
//!   proof that each such payout is exactly its share of the hidden gross.
//! - **Revenue total** (a party): its payout commitments over a period's statements, summed
//!   (refunds and reversals subtracted), open to a stated total R: a Schnorr proof of
//!   knowledge of the blinding of `C_sum − R·B` with respect to `B̃`.
//! - **Revenue threshold** (a party): R ≥ X without revealing R: a range proof that
//!   `C_sum − X·B` commits to a value in [0, 2^64).
//!
//! Statement proofs are Bulletproofs+ (`tari_bulletproofs_plus`, batch-verified), the
//! threshold a Bulletproofs range proof (`bulletproofs` 5), both on the Pedersen generators
//! statements commit with; the Schnorr proof is written out here.
//! Every transcript binds the operator's key id, the statements' hashes, and what is
//! claimed, so a proof verifies only for what it was made for.

use std::collections::BTreeMap;

use bulletproofs::{BulletproofGens, PedersenGens, RangeProof};
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use escx::sig::KeyId;
use merlin::Transcript;
use rand_core::{OsRng, RngCore};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use escx_licensing::pedersen::{self, point, scalar};

use crate::statement::{Opening, OpeningsFile, Verified};

/// `context` of a statement-proofs file.
pub const CONTEXT_STATEMENT_PROOFS: &str = "escx/statement-proofs/v1";
/// `context` of a revenue-total proof file.
pub const CONTEXT_REVENUE: &str = "escx/revenue-proof/v1";
/// `context` of a revenue-threshold proof file.
pub const CONTEXT_THRESHOLD: &str = "escx/revenue-threshold/v1";
/// Merlin transcript label of an entry's range proof.
pub const TRANSCRIPT_RANGE: &[u8] = b"escx statement range v1";
/// Merlin transcript label of an entry's split-correctness proof.
pub const TRANSCRIPT_SPLIT: &[u8] = b"escx statement split v1";
/// Split remainders are proven over 16 bits (they lie in [0, 10000)).
pub const SPLIT_BITS: usize = 16;
/// Merlin transcript label of a revenue-total proof.
pub const TRANSCRIPT_REVENUE: &[u8] = b"escx revenue total v1";
/// Merlin transcript label of a revenue-threshold proof.
pub const TRANSCRIPT_THRESHOLD: &[u8] = b"escx revenue threshold v1";
/// Every Merlin transcript label of this module (for the spec test).
pub const ALL_TRANSCRIPTS: &[&[u8]] =
    &[TRANSCRIPT_RANGE, TRANSCRIPT_SPLIT, TRANSCRIPT_REVENUE, TRANSCRIPT_THRESHOLD];
/// Every context string of this module (for the spec test).
pub const ALL_CONTEXTS: &[&str] = &[CONTEXT_STATEMENT_PROOFS, CONTEXT_REVENUE, CONTEXT_THRESHOLD];
/// Range proofs are over 64 bits.
pub const RANGE_BITS: usize = 64;
/// Most payouts one entry may have for its aggregated proof (the generators' capacity).
pub const PAYOUTS_MAX: usize = 64;

/// Why a proof cannot be made or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Malformed proof file or a field that does not fit.
    #[error("proof file: {0}")]
    Malformed(String),
    /// The proof does not verify for the statements and claim given.
    #[error("{0}")]
    Invalid(String),
    /// The statements given do not match the ones the proof names.
    #[error("{0}")]
    Statements(String),
    /// The prover cannot make this proof (a threshold above the total, missing openings).
    #[error("{0}")]
    Refused(String),
    /// No statement issued after the period is given: the period is not over, or not
    /// known to be complete (proofs.md §3.1).
    #[error("{0}")]
    PeriodOpen(String),
}

impl escx::Fault for ProofError {
    fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "proof-malformed",
            Self::Invalid(_) => "proof-invalid",
            Self::Statements(_) => "proof-statements",
            Self::Refused(_) => "proof-refused",
            Self::PeriodOpen(_) => "proof-period-open",
        }
    }

    fn class(&self) -> escx::ErrorClass {
        escx::ErrorClass::Input
    }
}

/// The Pedersen generators (escx_licensing::pedersen, proofs.md §9.1) and the threshold
/// proof's vector generators (§9.3).
fn gens() -> (&'static PedersenGens, &'static BulletproofGens) {
    static GENS: std::sync::OnceLock<BulletproofGens> = std::sync::OnceLock::new();
    (pedersen::generators(), GENS.get_or_init(|| BulletproofGens::new(RANGE_BITS, PAYOUTS_MAX)))
}

fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ProofError> {
    escx::cbor::decode_exact(bytes, what).map_err(ProofError::Malformed)
}

// ---------------------------------------------------------------------------------------
// Statement range proofs.

/// One entry's aggregated range proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryProof {
    /// Entry index.
    pub entry: u32,
    /// `RangeProof::to_bytes` over the entry's payouts, padded to a power of two.
    pub proof: ByteBuf,
    /// For an entry whose payouts carry rules (statement version 2): one 16-bit range
    /// proof over each ruled payout's remainder and its complement (proofs.md §2.2).
    pub split: Option<ByteBuf>,
}

/// The proofs published beside one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementProofs {
    /// Format version, 1.
    pub v: u8,
    /// `escx/statement-proofs/v1`.
    pub context: String,
    /// The operator's key id (16 bytes).
    pub operator: ByteBuf,
    /// The statement's sequence number.
    pub seq: u64,
    /// The statement's hash (32 bytes).
    pub statement: ByteBuf,
    /// One proof per entry with payouts, ascending.
    pub entries: Vec<EntryProof>,
}

impl StatementProofs {
    /// The file's bytes.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }

    /// Parses a proofs file.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ProofError> {
        let file: Self = decode(bytes, "statement proofs")?;
        if file.v != 1 || file.context != CONTEXT_STATEMENT_PROOFS {
            return Err(ProofError::Malformed(format!(
                "expected version 1 {CONTEXT_STATEMENT_PROOFS}, found version {} {:?}",
                file.v, file.context
            )));
        }
        if file.operator.len() != 16 || file.statement.len() != 32 {
            return Err(ProofError::Malformed("operator is 16 bytes and statement 32".into()));
        }
        Ok(file)
    }
}

fn split_transcript(operator: &KeyId, statement: &[u8; 32], entry: u32) -> Transcript {
    entry_transcript(TRANSCRIPT_SPLIT, operator, statement, entry)
}

fn range_transcript(operator: &KeyId, statement: &[u8; 32], entry: u32) -> Transcript {
    entry_transcript(TRANSCRIPT_RANGE, operator, statement, entry)
}

/// The two points a ruled payout's split proof is about (proofs.md §2.2):
/// `D = bps·(C_gross − Σ C_minus) − 10000·C_payout` and `E = 9999·B − D`.
fn split_points(
    entry: &crate::statement::Entry,
    gross: &RistrettoPoint,
    payouts: &[RistrettoPoint],
) -> Vec<(RistrettoPoint, RistrettoPoint)> {
    let (pc, _) = gens();
    entry
        .payouts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let rule = p.rule.as_ref()?;
            let base = rule.minus.iter().fold(*gross, |acc, &j| acc - payouts[j as usize]);
            let d = base * Scalar::from(rule.bps) - payouts[i] * Scalar::from(10_000u32);
            Some((d, pc.B * Scalar::from(9_999u32) - d))
        })
        .collect()
}

fn entry_transcript(label: &'static [u8], operator: &KeyId, statement: &[u8; 32], entry: u32) -> Transcript {
    let mut transcript = Transcript::new(label);
    transcript.append_message(b"operator", &operator.0);
    transcript.append_message(b"statement", statement);
    transcript.append_u64(b"entry", u64::from(entry));
    transcript
}

/// Proves that every payout of every entry of `statement` opens to a value in [0, 2^64),
/// from the operator's openings of it (entries in parallel).
pub fn prove_statement(
    statement: &Verified,
    openings: &[Opening],
    operator: &KeyId,
) -> Result<StatementProofs, ProofError> {
    let mut by_entry: BTreeMap<(u32, &str), &Opening> = BTreeMap::new();
    let mut grosses: BTreeMap<u32, &Opening> = BTreeMap::new();
    for opening in openings {
        match &opening.party {
            Some(party) => {
                by_entry.insert((opening.entry, party.as_str()), opening);
            }
            None => {
                grosses.insert(opening.entry, opening);
            }
        }
    }
    let entries: Vec<(u32, Vec<(u64, Scalar)>)> = statement
        .payload
        .entries
        .iter()
        .zip(0u32..)
        .filter(|(e, _)| !e.payouts.is_empty())
        .map(|(entry, index)| {
            let values = entry
                .payouts
                .iter()
                .map(|payout| {
                    let opening = by_entry.get(&(index, payout.party.as_str())).ok_or_else(|| {
                        ProofError::Refused(format!(
                            "no opening of entry {index}'s payout to {}",
                            payout.party
                        ))
                    })?;
                    let blinding = scalar(&opening.blinding).ok_or_else(|| {
                        ProofError::Refused(format!("entry {index}: a blinding is not canonical"))
                    })?;
                    Ok((opening.amount.0, blinding))
                })
                .collect::<Result<Vec<_>, ProofError>>()?;
            Ok((index, values))
        })
        .collect::<Result<_, ProofError>>()?;
    if let Some((index, _)) = entries.iter().find(|(_, v)| v.len() > PAYOUTS_MAX) {
        return Err(ProofError::Refused(format!("entry {index} has more than {PAYOUTS_MAX} payouts")));
    }
    let proofs = entries
        .par_iter()
        .map(|(index, values)| {
            let entry = &statement.payload.entries[*index as usize];
            // The openings must open exactly the statement's commitments.
            for (payout, (amount, blinding)) in entry.payouts.iter().zip(values) {
                if payout.commitment.as_slice()
                    != crate::statement::commit(*amount, blinding).compress().as_bytes()
                {
                    return Err(ProofError::Refused(format!(
                        "entry {index}: the opening of {}'s payout does not open its commitment",
                        payout.party
                    )));
                }
            }
            let amounts: Vec<u64> = values.iter().map(|(a, _)| *a).collect();
            let blindings: Vec<Scalar> = values.iter().map(|(_, r)| *r).collect();
            let proof = plus::prove(
                RANGE_BITS,
                &mut range_transcript(operator, &statement.hash, *index),
                &amounts,
                &blindings,
            )
            .map_err(|e| ProofError::Refused(format!("entry {index}: {e}")))?;
            let split = if entry.payouts.iter().any(|p| p.rule.is_some()) {
                let gross = grosses
                    .get(index)
                    .ok_or_else(|| ProofError::Refused(format!("entry {index}: no opening of the gross")))?;
                let gross_blinding = scalar(&gross.blinding).ok_or_else(|| {
                    ProofError::Refused(format!("entry {index}: a blinding is not canonical"))
                })?;
                Some(ByteBuf::from(prove_split(
                    entry,
                    (gross.amount.0, gross_blinding),
                    values,
                    &mut split_transcript(operator, &statement.hash, *index),
                    *index,
                )?))
            } else {
                None
            };
            Ok(EntryProof { entry: *index, proof: ByteBuf::from(proof), split })
        })
        .collect::<Result<Vec<_>, ProofError>>()?;
    Ok(StatementProofs {
        v: 1,
        context: CONTEXT_STATEMENT_PROOFS.into(),
        operator: ByteBuf::from(operator.0.to_vec()),
        seq: statement.payload.seq,
        statement: ByteBuf::from(statement.hash.to_vec()),
        entries: proofs,
    })
}

/// The split proof of one entry: for each ruled payout, the remainder
/// `bps·base − 10000·payout` and `9999 −` it, both in [0, 2^16).
fn prove_split(
    entry: &crate::statement::Entry,
    (gross, gross_blinding): (u64, Scalar),
    payouts: &[(u64, Scalar)],
    transcript: &mut Transcript,
    index: u32,
) -> Result<Vec<u8>, ProofError> {
    let mut values = Vec::new();
    let mut blindings = Vec::new();
    for (i, payout) in entry.payouts.iter().enumerate() {
        let Some(rule) = &payout.rule else { continue };
        let mut base = i128::from(gross);
        let mut base_blinding = gross_blinding;
        for &j in &rule.minus {
            base -= i128::from(payouts[j as usize].0);
            base_blinding -= payouts[j as usize].1;
        }
        let remainder = base * i128::from(rule.bps) - 10_000 * i128::from(payouts[i].0);
        let Some(remainder) = u64::try_from(remainder).ok().filter(|r| *r < 10_000) else {
            return Err(ProofError::Refused(format!(
                "entry {index}: payout {i} is not its rule's share ({} bps)",
                rule.bps
            )));
        };
        let s = base_blinding * Scalar::from(rule.bps) - payouts[i].1 * Scalar::from(10_000u32);
        values.extend([remainder, 9_999 - remainder]);
        blindings.extend([s, -s]);
    }
    plus::prove(SPLIT_BITS, transcript, &values, &blindings)
        .map_err(|e| ProofError::Refused(format!("entry {index}: {e}")))
}

/// Verifies a statement's proofs (entries in parallel): they are for this statement and
/// operator, there is exactly one per entry with payouts, and each verifies.
pub fn verify_statement(
    proofs: &StatementProofs,
    statement: &Verified,
    operator: &KeyId,
) -> Result<(), ProofError> {
    if proofs.operator.as_slice() != operator.0 {
        return Err(ProofError::Statements("the proofs are for another operator key".into()));
    }
    if proofs.statement.as_slice() != statement.hash || proofs.seq != statement.payload.seq {
        return Err(ProofError::Statements(format!(
            "the proofs are for another statement than number {}",
            statement.payload.seq
        )));
    }
    let expected: Vec<u32> = statement
        .payload
        .entries
        .iter()
        .zip(0u32..)
        .filter(|(e, _)| !e.payouts.is_empty())
        .map(|(_, i)| i)
        .collect();
    let given: Vec<u32> = proofs.entries.iter().map(|p| p.entry).collect();
    if given != expected {
        return Err(ProofError::Invalid(format!(
            "statement {}: the proofs must cover each entry with payouts once, in order",
            statement.payload.seq
        )));
    }
    // Every check but the proofs themselves (in parallel: the split points cost two scalar
    // multiplications per rule), then the proofs in two batches (64-bit ranges, 16-bit
    // split remainders), each batch split over the threads.
    let prepared = proofs
        .entries
        .par_iter()
        .map(|item| {
            let entry = &statement.payload.entries[item.entry as usize];
            let fail = |why: &str| {
                ProofError::Invalid(format!(
                    "statement {} entry {}: {why}",
                    statement.payload.seq, item.entry
                ))
            };
            if entry.payouts.len() > PAYOUTS_MAX {
                return Err(fail("too many payouts"));
            }
            let gross = point(&entry.gross).ok_or_else(|| fail("the gross is not a point"))?;
            let payouts: Vec<plus::Commitment> = entry
                .payouts
                .iter()
                .map(|p| {
                    plus::Commitment::decompress(&p.commitment).ok_or_else(|| fail("a payout is not a point"))
                })
                .collect::<Result<_, _>>()?;
            let payout_points: Vec<RistrettoPoint> = payouts.iter().map(plus::Commitment::point).collect();
            let ruled = entry.payouts.iter().filter(|p| p.rule.is_some()).count();
            let split = match (&item.split, ruled) {
                (None, 0) => None,
                (None, _) => return Err(fail("its payouts carry rules but the split proof is missing")),
                (Some(_), 0) => return Err(fail("a split proof for an entry without rules")),
                (Some(bytes), _) => Some(plus::Item {
                    id: item.entry,
                    bits: SPLIT_BITS,
                    transcript: split_transcript(operator, &statement.hash, item.entry),
                    commitments: split_points(entry, &gross, &payout_points)
                        .into_iter()
                        .flat_map(|(d, e)| [plus::Commitment::from_point(d), plus::Commitment::from_point(e)])
                        .collect(),
                    proof: bytes.to_vec(),
                }),
            };
            let range = plus::Item {
                id: item.entry,
                bits: RANGE_BITS,
                transcript: range_transcript(operator, &statement.hash, item.entry),
                commitments: payouts,
                proof: item.proof.to_vec(),
            };
            Ok((range, split))
        })
        .collect::<Result<Vec<_>, ProofError>>()?;
    let (ranges, splits): (Vec<plus::Item>, Vec<Option<plus::Item>>) = prepared.into_iter().unzip();
    let splits: Vec<plus::Item> = splits.into_iter().flatten().collect();
    let fail = |entry: u32, why: &str| {
        ProofError::Invalid(format!("statement {} entry {entry}: {why}", statement.payload.seq))
    };
    plus::verify(ranges).map_err(|entry| fail(entry, "a payout is not proven to lie in [0, 2^64)"))?;
    plus::verify(splits).map_err(|entry| fail(entry, "a payout is not proven to be the share its rule names"))
}

/// Bulletproofs+ from `tari_bulletproofs_plus` on the statements' own generators (`B` for
/// values, `B̃` for blindings), shared with the meter's reports: it batch-verifies, which
/// `bulletproofs` 5 cannot, about 4x faster per proof on statement-sized proofs (proofs.md
/// §2, benches/README.md).
use escx_licensing::rangeproof as plus;

// ---------------------------------------------------------------------------------------
// Revenue proofs.

/// A statement a revenue proof covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementRef {
    /// Sequence number.
    pub seq: u64,
    /// Hash (32 bytes).
    pub hash: ByteBuf,
}

/// A party's revenue proof: a total, or a lower bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevenueProof {
    /// Format version, 1.
    pub v: u8,
    /// `escx/revenue-proof/v1` (a total) or `escx/revenue-threshold/v1` (a lower bound).
    pub context: String,
    /// The operator's key id (16 bytes).
    pub operator: ByteBuf,
    /// The party.
    pub party: String,
    /// `YYYY-MM`: statements issued in this month (UTC).
    pub period: String,
    /// ISO 4217: only entries in this currency count.
    pub currency: String,
    /// Every statement issued in the period, ascending and consecutive.
    pub statements: Vec<StatementRef>,
    /// The claim: the net total (a total proof; may be negative when refunds exceed), or
    /// the lower bound X (a threshold proof), micro-units.
    pub amount: i64,
    /// The proof: 64 bytes `T || s` (total), or a range proof (threshold).
    pub proof: ByteBuf,
}

impl RevenueProof {
    /// The file's bytes.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }

    /// Parses a proof file.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ProofError> {
        let file: Self = decode(bytes, "revenue proof")?;
        if file.v != 1 || (file.context != CONTEXT_REVENUE && file.context != CONTEXT_THRESHOLD) {
            return Err(ProofError::Malformed(format!(
                "unsupported proof version {} {:?}",
                file.v, file.context
            )));
        }
        if file.operator.len() != 16 || file.statements.iter().any(|s| s.hash.len() != 32) {
            return Err(ProofError::Malformed("operator is 16 bytes and statement hashes 32".into()));
        }
        if file.context == CONTEXT_THRESHOLD && file.amount < 0 {
            return Err(ProofError::Malformed("a threshold is not negative".into()));
        }
        Ok(file)
    }

    /// True for a threshold proof.
    pub fn is_threshold(&self) -> bool {
        self.context == CONTEXT_THRESHOLD
    }
}

/// A billing period of statements: a calendar month, UTC.
pub type Period = crate::payout::Period;

/// Kinds whose payouts give money back (subtracted from revenue).
fn gives_back(kind: &str) -> bool {
    matches!(kind, "refund" | "reversal")
}

/// The statements of `period`, checked: consecutive, chained, every one issued in the
/// period, and none of the given statements issued in the period left out.
fn period_statements(all: &[Verified], period: Period) -> Result<Vec<&Verified>, ProofError> {
    let (start, end) = period.range();
    let mut chosen: Vec<&Verified> =
        all.iter().filter(|s| (start..end).contains(&s.payload.issued_at)).collect();
    chosen.sort_by_key(|s| s.payload.seq);
    if chosen.is_empty() {
        return Err(ProofError::Statements(format!("no statement given was issued in {period}")));
    }
    for pair in chosen.windows(2) {
        if pair[1].payload.seq != pair[0].payload.seq + 1
            || pair[1].payload.previous.as_slice() != pair[0].hash
        {
            return Err(ProofError::Statements(format!(
                "statements {} and {} of {period} do not chain: a statement of the period is missing",
                pair[0].payload.seq, pair[1].payload.seq
            )));
        }
    }
    // The period is complete only between two statements outside it: the one before its
    // first (unless that is statement 1) and the one after its last, each chained to it.
    // Without them a prover could leave out the period's first or last statements.
    let (first, last) = (chosen[0], chosen[chosen.len() - 1]);
    if first.payload.seq > 1 {
        let before = all.iter().find(|s| s.payload.seq == first.payload.seq - 1);
        if !before.is_some_and(|b| b.hash == first.payload.previous.as_slice() && b.payload.issued_at < start)
        {
            return Err(ProofError::Statements(format!(
                "statement {}, the last before {period}, must be given: without it the first statements of the \
                 period could be left out",
                first.payload.seq - 1
            )));
        }
    }
    let after = all.iter().find(|s| s.payload.seq == last.payload.seq + 1);
    if after.is_none() && all.iter().any(|s| s.payload.seq > last.payload.seq + 1) {
        return Err(ProofError::Statements(format!(
            "statement {} is missing: later statements are given, so a statement of {period} may be left out",
            last.payload.seq + 1
        )));
    }
    if !after.is_some_and(|a| a.payload.previous.as_slice() == last.hash && a.payload.issued_at >= end) {
        return Err(ProofError::PeriodOpen(format!(
            "no statement issued after {period} is given (statement {} is the last of the period given), so \
             the period is not known to be complete; once it has ended, the operator closes it (`escx \
             statement close-period`) and the first statement after it must be given",
            last.payload.seq
        )));
    }
    Ok(chosen)
}

/// `C_sum`: the party's payout commitments in `currency` over `statements`, refunds and
/// reversals subtracted; and the entries counted.
fn party_sum(
    statements: &[&Verified],
    party: &str,
    currency: &str,
) -> Result<(RistrettoPoint, usize), ProofError> {
    let sums: Vec<(RistrettoPoint, usize)> = statements
        .par_iter()
        .map(|statement| {
            let mut sum = RistrettoPoint::identity();
            let mut count = 0;
            for &index in statement.payload.parties.get(party).map_or(&[][..], Vec::as_slice) {
                let entry = statement.payload.entries.get(index as usize).ok_or_else(|| {
                    ProofError::Statements(format!(
                        "statement {}: index {index} has no entry",
                        statement.payload.seq
                    ))
                })?;
                if entry.currency != currency {
                    continue;
                }
                let payout = entry.payouts.iter().find(|p| p.party == party).ok_or_else(|| {
                    ProofError::Statements(format!(
                        "statement {}: entry {index} does not pay {party}",
                        statement.payload.seq
                    ))
                })?;
                let c = point(&payout.commitment).ok_or_else(|| {
                    ProofError::Statements(format!(
                        "statement {}: entry {index}: not a point",
                        statement.payload.seq
                    ))
                })?;
                if gives_back(&entry.kind) {
                    sum -= c;
                } else {
                    sum += c;
                }
                count += 1;
            }
            Ok((sum, count))
        })
        .collect::<Result<_, ProofError>>()?;
    Ok(sums.into_iter().fold((RistrettoPoint::identity(), 0), |(s, n), (p, c)| (s + p, n + c)))
}

fn revenue_transcript(label: &'static [u8], proof: &RevenueProof, sum: &RistrettoPoint) -> Transcript {
    let mut transcript = Transcript::new(label);
    transcript.append_message(b"operator", &proof.operator);
    transcript.append_message(b"party", proof.party.as_bytes());
    transcript.append_message(b"period", proof.period.as_bytes());
    transcript.append_message(b"currency", proof.currency.as_bytes());
    transcript.append_u64(b"statements", proof.statements.len() as u64);
    for statement in &proof.statements {
        transcript.append_u64(b"seq", statement.seq);
        transcript.append_message(b"hash", &statement.hash);
    }
    transcript.append_message(b"amount", &proof.amount.to_le_bytes());
    transcript.append_message(b"sum", sum.compress().as_bytes());
    transcript
}

fn signed_scalar(amount: i128) -> Scalar {
    let magnitude = Scalar::from(amount.unsigned_abs());
    if amount < 0 { -magnitude } else { magnitude }
}

/// What a party's openings give for a period: the net total and the summed blinding,
/// checked against the statements' commitments.
fn open_sum(
    statements: &[&Verified],
    openings: &[OpeningsFile],
    party: &str,
    currency: &str,
) -> Result<(i128, Zeroizing<Scalar>), ProofError> {
    let mut total: i128 = 0;
    let mut blinding = Zeroizing::new(Scalar::ZERO);
    for statement in statements {
        let file = openings.iter().find(|f| f.seq == statement.payload.seq && f.party == party).ok_or_else(
            || ProofError::Refused(format!("no openings of {party} for statement {}", statement.payload.seq)),
        )?;
        let amounts = crate::statement::check_openings(statement, file)
            .map_err(|e| ProofError::Refused(format!("statement {}: {e}", statement.payload.seq)))?;
        for opened in amounts {
            let entry = &statement.payload.entries[opened.entry as usize];
            if entry.currency != currency {
                continue;
            }
            let opening = file
                .openings
                .iter()
                .find(|o| o.entry == opened.entry && o.party.as_deref() == Some(party))
                .ok_or_else(|| ProofError::Refused(format!("entry {}: no payout opening", opened.entry)))?;
            let r = scalar(&opening.blinding)
                .ok_or_else(|| ProofError::Refused("a blinding is not canonical".into()))?;
            if gives_back(&entry.kind) {
                total -= i128::from(opened.amount);
                *blinding -= r;
            } else {
                total += i128::from(opened.amount);
                *blinding += r;
            }
        }
    }
    Ok((total, blinding))
}

/// What to prove about a party's revenue.
pub struct RevenueClaim<'a> {
    /// The operator's key id.
    pub operator: KeyId,
    /// The party.
    pub party: &'a str,
    /// The period.
    pub period: Period,
    /// The currency.
    pub currency: &'a str,
}

fn skeleton(claim: &RevenueClaim<'_>, statements: &[&Verified], context: &str, amount: i64) -> RevenueProof {
    RevenueProof {
        v: 1,
        context: context.into(),
        operator: ByteBuf::from(claim.operator.0.to_vec()),
        party: claim.party.into(),
        period: claim.period.to_string(),
        currency: claim.currency.into(),
        statements: statements
            .iter()
            .map(|s| StatementRef { seq: s.payload.seq, hash: ByteBuf::from(s.hash.to_vec()) })
            .collect(),
        amount,
        proof: ByteBuf::new(),
    }
}

/// Proves the party's net revenue in the period (the total is revealed, nothing else).
pub fn prove_total(
    statements: &[Verified],
    openings: &[OpeningsFile],
    claim: &RevenueClaim<'_>,
) -> Result<RevenueProof, ProofError> {
    let chosen = period_statements(statements, claim.period)?;
    let (total, blinding) = open_sum(&chosen, openings, claim.party, claim.currency)?;
    let amount =
        i64::try_from(total).map_err(|_| ProofError::Refused("the total does not fit in 63 bits".into()))?;
    let (sum, _) = party_sum(&chosen, claim.party, claim.currency)?;
    let (pc, _) = gens();
    // x·B̃ = C_sum − R·B; Schnorr: T = k·B̃, c = H(transcript, T), s = k + c·x.
    if sum - pc.B * signed_scalar(total) != pc.B_blinding * *blinding {
        return Err(ProofError::Refused("the openings do not open the statements' commitments".into()));
    }
    let mut proof = skeleton(claim, &chosen, CONTEXT_REVENUE, amount);
    let mut wide = Zeroizing::new([0u8; 64]);
    OsRng.fill_bytes(wide.as_mut());
    let k = Zeroizing::new(Scalar::from_bytes_mod_order_wide(&wide));
    let t = pc.B_blinding * *k;
    let mut transcript = revenue_transcript(TRANSCRIPT_REVENUE, &proof, &sum);
    transcript.append_message(b"T", t.compress().as_bytes());
    let c = challenge(&mut transcript);
    let s = *k + c * *blinding;
    let mut bytes = t.compress().to_bytes().to_vec();
    bytes.extend_from_slice(&s.to_bytes());
    proof.proof = ByteBuf::from(bytes);
    Ok(proof)
}

fn challenge(transcript: &mut Transcript) -> Scalar {
    let mut wide = [0u8; 64];
    transcript.challenge_bytes(b"c", &mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Proves the party's net revenue in the period is at least `at_least`, revealing nothing
/// else; refused when it is not.
pub fn prove_threshold(
    statements: &[Verified],
    openings: &[OpeningsFile],
    claim: &RevenueClaim<'_>,
    at_least: u64,
) -> Result<RevenueProof, ProofError> {
    let chosen = period_statements(statements, claim.period)?;
    let (total, blinding) = open_sum(&chosen, openings, claim.party, claim.currency)?;
    let amount = i64::try_from(at_least)
        .map_err(|_| ProofError::Refused("the threshold does not fit in 63 bits".into()))?;
    let excess = total - i128::from(at_least);
    let excess = u64::try_from(excess).map_err(|_| {
        ProofError::Refused(format!(
            "{}'s revenue in {} is below the threshold: no proof exists",
            claim.party, claim.period
        ))
    })?;
    let (sum, _) = party_sum(&chosen, claim.party, claim.currency)?;
    let mut proof = skeleton(claim, &chosen, CONTEXT_THRESHOLD, amount);
    let (pc, bp) = gens();
    let mut transcript = revenue_transcript(TRANSCRIPT_THRESHOLD, &proof, &sum);
    let (range, committed) = RangeProof::prove_single(bp, pc, &mut transcript, excess, &blinding, RANGE_BITS)
        .map_err(|e| ProofError::Refused(e.to_string()))?;
    if committed != (sum - pc.B * Scalar::from(at_least)).compress() {
        return Err(ProofError::Refused("the openings do not open the statements' commitments".into()));
    }
    proof.proof = ByteBuf::from(range.to_bytes());
    Ok(proof)
}

/// What a verified revenue proof established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The party.
    pub party: String,
    /// The period.
    pub period: String,
    /// The currency.
    pub currency: String,
    /// First and last statement.
    pub statements: (u64, u64),
    /// Entries counted.
    pub entries: usize,
    /// `Total(R)` or `AtLeast(X)`.
    pub claim: Claim,
}

/// The claim a revenue proof proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The net total is exactly this.
    Total(i64),
    /// The net total is at least this.
    AtLeast(u64),
}

/// Verifies a revenue proof against statements the verifier has checked itself (their
/// operator signature, conservation and chain; see `statement::verify`), made for
/// `operator`. The statements named must be exactly those of the period among the ones
/// given, consecutive and chained.
pub fn verify_revenue(
    proof: &RevenueProof,
    statements: &[Verified],
    operator: &KeyId,
) -> Result<Proven, ProofError> {
    if proof.operator.as_slice() != operator.0 {
        return Err(ProofError::Statements("the proof is for another operator key".into()));
    }
    let period = Period::parse(&proof.period)
        .ok_or_else(|| ProofError::Malformed(format!("period {:?} is not YYYY-MM", proof.period)))?;
    let chosen = period_statements(statements, period)?;
    let named: Vec<(u64, &[u8])> = proof.statements.iter().map(|s| (s.seq, s.hash.as_slice())).collect();
    let given: Vec<(u64, &[u8])> = chosen.iter().map(|s| (s.payload.seq, &s.hash[..])).collect();
    if named != given {
        return Err(ProofError::Statements(format!(
            "the proof covers statements {} but the statements of {} given are {}",
            seqs(named.iter().map(|(s, _)| *s)),
            proof.period,
            seqs(given.iter().map(|(s, _)| *s))
        )));
    }
    let (sum, entries) = party_sum(&chosen, &proof.party, &proof.currency)?;
    let (pc, bp) = gens();
    let claim = if proof.is_threshold() {
        let at_least = u64::try_from(proof.amount)
            .map_err(|_| ProofError::Malformed("a threshold proof's amount is negative".into()))?;
        let range = RangeProof::from_bytes(&proof.proof)
            .map_err(|_| ProofError::Invalid("the range proof does not decode".into()))?;
        let mut transcript = revenue_transcript(TRANSCRIPT_THRESHOLD, proof, &sum);
        let shifted = (sum - pc.B * Scalar::from(at_least)).compress();
        range
            .verify_single(bp, pc, &mut transcript, &shifted, RANGE_BITS)
            .map_err(|_| ProofError::Invalid("the threshold proof does not verify".into()))?;
        Claim::AtLeast(at_least)
    } else {
        if proof.proof.len() != 64 {
            return Err(ProofError::Invalid("a total proof is 64 bytes".into()));
        }
        let t = point(&proof.proof[..32]).ok_or_else(|| ProofError::Invalid("T is not a point".into()))?;
        let s = scalar(&proof.proof[32..]).ok_or_else(|| ProofError::Invalid("s is not canonical".into()))?;
        let mut transcript = revenue_transcript(TRANSCRIPT_REVENUE, proof, &sum);
        transcript.append_message(b"T", &proof.proof[..32]);
        let c = challenge(&mut transcript);
        let target = sum - pc.B * signed_scalar(i128::from(proof.amount));
        if pc.B_blinding * s != t + target * c {
            return Err(ProofError::Invalid("the total proof does not verify".into()));
        }
        Claim::Total(proof.amount)
    };
    Ok(Proven {
        party: proof.party.clone(),
        period: proof.period.clone(),
        currency: proof.currency.clone(),
        statements: (given[0].0, given[given.len() - 1].0),
        entries,
        claim,
    })
}

fn seqs(seqs: impl Iterator<Item = u64>) -> String {
    let all: Vec<String> = seqs.map(|s| s.to_string()).collect();
    if all.is_empty() { "none".into() } else { all.join(", ") }
}
