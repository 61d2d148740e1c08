//! Settlement statements (spec: settlement.md §4): per batch, a signed list of entries whose
//! amounts are hidden in Pedersen commitments over ristretto255, chained by hash, with a
//! BLAKE3 Merkle root and a per-party index.
//!
//! For every entry the payout commitments add up to the gross commitment as points, so
//! anyone holding the operator's public key can check conservation without learning an
//! amount; each party receives the openings (amount, blinding) of its own payouts.

use escx::UnixSeconds;
use escx_manifest::Micros;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use escx::envelope::Envelope;
use escx::rotation::RotationStatement;
use escx::sig::{KeyId, PublicKey, SecretKey, SigningContext};
use rand_core::{OsRng, RngCore};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use escx_licensing::pedersen::{point, scalar};
use zeroize::{Zeroize, Zeroizing};

mod keys;
mod merkle;
mod openings;

pub use keys::OperatorKeys;
use merkle::leaf;
pub use merkle::{inclusion_proof, leaves, merkle_root, verify_inclusion};
pub use openings::{OpenedPayout, check_openings};

/// Signature context of statements.
pub const CONTEXT_STATEMENT: SigningContext = SigningContext::new("escx/statement/v1");
/// Merkle leaf: `derive_key(context, canonical CBOR of the entry)`.
pub const CONTEXT_LEAF: &str = "escx v1 statement leaf";
/// Merkle node: `derive_key(context, left || right)`.
pub const CONTEXT_NODE: &str = "escx v1 statement node";
/// A statement's hash, which the next statement names: `derive_key(context, envelope bytes)`.
pub const CONTEXT_STATEMENT_HASH: &str = "escx v1 statement hash";
/// Root of a statement with no entries (never written: batches are never empty).
const EMPTY_ROOT: [u8; 32] = [0; 32];

/// Why a statement, a chain or an opening is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// Malformed bytes, a bad signature, or an inconsistent field.
    #[error("{}: {reason}", statement_name(*seq))]
    Invalid {
        /// Sequence number (0 when unreadable).
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// An openings file that does not decode, or is for another ledger or statement
    /// (settlement.md §4.3: any failure of a party's openings is `opening-invalid`).
    #[error("openings: {reason}")]
    OpeningsInvalid {
        /// What is wrong.
        reason: String,
    },
    /// An entry's payout commitments do not add up to its gross commitment.
    #[error(
        "statement {seq}: entry {entry} does not conserve its gross (payout commitments do not sum to the gross commitment)"
    )]
    Unconserved {
        /// Sequence number.
        seq: u64,
        /// Entry index.
        entry: usize,
    },
    /// Two consecutive statements do not link.
    #[error("statement chain: {reason}")]
    Chain {
        /// What is wrong (a gap, a wrong previous hash, another ledger).
        reason: String,
    },
    /// The openings do not cover exactly the entries the index lists for the party.
    #[error(
        "statement {seq}: entry {entry} of {party}: the openings must open every entry the party index lists for {party}, once"
    )]
    OpeningMissing {
        /// Sequence number.
        seq: u64,
        /// The first entry missing, repeated or not listed.
        entry: u32,
        /// The party.
        party: String,
    },
    /// An opening does not open its commitment.
    #[error("statement {seq}: opening of entry {entry} for {party} does not match its commitment")]
    Opening {
        /// Sequence number.
        seq: u64,
        /// Entry index.
        entry: u32,
        /// The party.
        party: String,
    },
    /// A rotation statement of the operator's key that does not verify, does not follow
    /// from the key the verifier holds, or forks the key's line (settlement.md §4.5).
    #[error("operator key rotation: {reason}")]
    Rotation {
        /// What is wrong.
        reason: String,
    },
    /// What was about to be signed, or what was read back, breaks an invariant
    /// (conservation, one payout per party): a bug, refused before anything is signed.
    #[error("statement invariant broken at entry {entry}: {reason}")]
    Invariant {
        /// Entry index.
        entry: usize,
        /// Which invariant.
        reason: String,
    },
}

impl escx::Fault for StatementError {
    fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "statement-invalid",
            Self::Unconserved { .. } => "statement-unconserved",
            Self::Chain { .. } => "statement-chain",
            Self::Opening { .. } | Self::OpeningMissing { .. } | Self::OpeningsInvalid { .. } => {
                "opening-invalid"
            }
            Self::Rotation { .. } => "rotation-invalid",
            Self::Invariant { .. } => "ledger-invariant",
        }
    }

    fn class(&self) -> escx::ErrorClass {
        escx::ErrorClass::Input
    }
}

/// One entry: a settlement with its hidden gross and payouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Settlement id (32 bytes).
    pub settlement: ByteBuf,
    /// `sale`, `usage`, `refund` or `reversal` (a [`crate::store::RecordKind`] name).
    pub kind: String,
    /// ISO 4217.
    pub currency: String,
    /// Commitment to the gross (compressed ristretto255 point).
    pub gross: ByteBuf,
    /// Commitments to each non-zero payout, in the settlement's payout order.
    pub payouts: Vec<PayoutCommitment>,
}

/// One payout's commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutCommitment {
    /// The party.
    pub party: String,
    /// Compressed ristretto255 point.
    pub commitment: ByteBuf,
    /// Version 2: the payout is `floor(bps · base / 10000)` of the hidden gross (less the
    /// payouts `minus`), which the statement proofs show (proofs.md §2.2). Absent when the
    /// payout has no such rule (and in every version-1 statement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<PayoutRule>,
}

pub use crate::waterfall::PayoutRule;

/// Checks a payout rule's shape: basis points 1 to 10000, `minus` ascending, each an index
/// of another payout of the entry.
pub(crate) fn check_rule(rule: &PayoutRule, payout: usize, payouts: usize) -> Result<(), String> {
    if !(1..=10_000).contains(&rule.bps) {
        return Err(format!("payout {payout}: {} basis points", rule.bps));
    }
    if rule.minus.windows(2).any(|w| w[0] >= w[1])
        || rule.minus.iter().any(|&j| j as usize >= payouts || j as usize == payout)
    {
        return Err(format!("payout {payout}: minus must list other payouts, ascending"));
    }
    Ok(())
}

/// The signed payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementPayload {
    /// Format version, 1.
    pub v: u8,
    /// The ledger's random id (16 bytes): statements of different ledgers never chain.
    pub ledger: ByteBuf,
    /// 1, 2, 3, ... per ledger.
    pub seq: u64,
    /// Hash of the previous statement (32 zero bytes for the first).
    pub previous: ByteBuf,
    /// When it was made (Unix seconds).
    pub issued_at: UnixSeconds,
    /// BLAKE3 Merkle root of the entries.
    pub entries_root: ByteBuf,
    /// The entries, in settlement order.
    pub entries: Vec<Entry>,
    /// Party -> indexes of the entries that pay it, ascending.
    pub parties: BTreeMap<String, Vec<u32>>,
}

/// What goes into one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInput {
    /// Settlement id.
    pub settlement: [u8; 32],
    /// What the settlement records (its name is the entry's `kind`).
    pub kind: crate::store::RecordKind,
    /// Currency.
    pub currency: String,
    /// Gross micro-units.
    pub gross: Micros,
    /// Non-zero payouts in order, one per party; they must sum to `gross` (none when the
    /// gross is 0).
    pub payouts: Vec<(String, Micros)>,
    /// Each payout's rule, if it has one (empty: none has); see [`PayoutRule`].
    pub rules: Vec<Option<PayoutRule>>,
}

impl EntryInput {
    /// The invariants [`build`] refuses to sign without: every payout non-zero, one per
    /// party, and the payouts summing to the gross exactly (so a zero gross has none).
    pub fn check(&self, index: usize) -> Result<(), StatementError> {
        let broken = |reason: String| StatementError::Invariant { entry: index, reason };
        let paid: u128 = self.payouts.iter().map(|(_, amount)| u128::from(*amount)).sum();
        if paid != u128::from(self.gross) {
            return Err(broken(format!("payouts sum to {paid} micro-units, the gross is {}", self.gross)));
        }
        if let Some((party, _)) = self.payouts.iter().find(|(_, amount)| *amount == Micros::ZERO) {
            return Err(broken(format!("a zero payout to {party}")));
        }
        let parties: std::collections::BTreeSet<&str> =
            self.payouts.iter().map(|(p, _)| p.as_str()).collect();
        if parties.len() != self.payouts.len() {
            return Err(broken("a party is paid twice".into()));
        }
        if !self.rules.is_empty() && self.rules.len() != self.payouts.len() {
            return Err(broken("rules are given for some payouts but not all".into()));
        }
        for (position, rule) in self.rules.iter().enumerate() {
            if let Some(rule) = rule {
                check_rule(rule, position, self.payouts.len()).map_err(&broken)?;
                let subtracted: u128 =
                    rule.minus.iter().map(|&j| u128::from(self.payouts[j as usize].1)).sum();
                let base = u128::from(self.gross).checked_sub(subtracted).unwrap_or(u128::MAX);
                if base.checked_mul(u128::from(rule.bps)).map(|b| b / 10_000)
                    != Some(u128::from(self.payouts[position].1))
                {
                    return Err(broken(format!("payout {position} is not the share its rule names")));
                }
            }
        }
        Ok(())
    }
}

/// The secret side of one commitment: what a party needs to check its amount. It is
/// secret (with the public commitment it reveals the amount), so it is neither `Clone`
/// nor `Debug`, and its blinding is scrubbed on drop.
#[derive(PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opening {
    /// Entry index in the statement.
    pub entry: u32,
    /// The party paid (`None`: the entry's gross).
    pub party: Option<String>,
    /// Micro-units.
    pub amount: Micros,
    /// The blinding scalar (32 bytes, little-endian, reduced).
    pub blinding: ByteBuf,
}

impl Opening {
    /// An explicit copy, for stores that keep openings (the type is deliberately not
    /// `Clone`, so copies of secrets are never made by accident).
    pub(crate) fn duplicate(&self) -> Self {
        Self {
            entry: self.entry,
            party: self.party.clone(),
            amount: self.amount,
            blinding: self.blinding.clone(),
        }
    }
}

impl Drop for Opening {
    /// A blinding together with the commitment reveals the amount: scrub it.
    fn drop(&mut self) {
        self.blinding.zeroize();
    }
}

/// A party's openings for one statement, as handed to it (secret, like [`Opening`]).
#[derive(PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningsFile {
    /// Format version, 1.
    pub v: u8,
    /// The ledger id.
    pub ledger: ByteBuf,
    /// The statement's sequence number.
    pub seq: u64,
    /// The party.
    pub party: String,
    /// Its payouts' openings.
    pub openings: Vec<Opening>,
}

impl OpeningsFile {
    /// Decodes an openings file (settlement.md §4.3; canonical CBOR). Any failure is
    /// `opening-invalid`; its content is checked by [`check_openings`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, StatementError> {
        escx::cbor::decode_exact(bytes, "openings file")
            .map_err(|reason| StatementError::OpeningsInvalid { reason })
    }

    /// The encoded file.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }
}

/// A built statement (it holds every opening, so it is neither `Clone` nor `Debug`).
pub struct Built {
    /// The signed envelope bytes.
    pub bytes: Vec<u8>,
    /// Its hash (what the next statement names).
    pub hash: [u8; 32],
    /// Every commitment's opening (the operator keeps them; parties get their own).
    pub openings: Vec<Opening>,
}

impl Built {
    /// What `party` is handed: the openings of every entry's gross and of its own payouts
    /// (copies; the operator keeps the full set).
    pub fn party_openings(&self, party: &str) -> Vec<Opening> {
        self.openings
            .iter()
            .filter(|o| o.party.is_none() || o.party.as_deref() == Some(party))
            .map(Opening::duplicate)
            .collect()
    }
}

/// A statement whose signature and content checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The payload.
    pub payload: StatementPayload,
    /// Its hash.
    pub hash: [u8; 32],
    /// The key that signed it.
    pub signer: KeyId,
}

pub use escx_licensing::pedersen::commit;

/// 1/2 mod ℓ.
fn half() -> &'static Scalar {
    static HALF: OnceLock<Scalar> = OnceLock::new();
    HALF.get_or_init(|| Scalar::from(2u8).invert())
}

/// Half a commitment, `Q` with `2·Q = commit(amount, blinding)`: the builder works on
/// halves so that one batched "double and compress" (one field inversion for a whole
/// entry, no inverse square root per point) encodes every commitment of an entry.
fn half_commit(amount: u64, blinding: &Scalar) -> RistrettoPoint {
    let half = half();
    RISTRETTO_BASEPOINT_TABLE * &(Scalar::from(amount) * half)
        + escx_licensing::pedersen::blinding_table() * &(blinding * half)
}

fn random_scalar() -> Scalar {
    let mut wide = Zeroizing::new([0u8; 64]);
    OsRng.fill_bytes(wide.as_mut());
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// The hash of a statement's envelope bytes.
pub fn statement_hash(bytes: &[u8]) -> [u8; 32] {
    blake3::derive_key(CONTEXT_STATEMENT_HASH, bytes)
}

/// Builds and signs a statement over `inputs`. Every input is checked first
/// ([`EntryInput::check`]): an unconserved entry is an `Invariant` error and nothing is
/// signed. An entry whose gross is 0 has no payouts; its gross is committed with blinding
/// 0 (the identity point), so the empty sum of its payouts equals it.
pub fn build(
    ledger: &[u8; 16],
    seq: u64,
    previous: &[u8; 32],
    issued_at: UnixSeconds,
    inputs: &[EntryInput],
    key: &SecretKey,
) -> Result<Built, StatementError> {
    for (index, input) in inputs.iter().enumerate() {
        input.check(index)?;
    }
    let count = u32::try_from(inputs.len()).map_err(|_| StatementError::Invariant {
        entry: inputs.len(),
        reason: format!("{} entries do not fit one statement", inputs.len()),
    })?;
    let made: Vec<(Entry, Vec<Opening>)> = inputs
        .par_iter()
        .zip(0..count)
        .map(|(input, index)| {
            let mut gross_blinding = if input.payouts.is_empty() { Scalar::ZERO } else { random_scalar() };
            let gross = half_commit(input.gross.0, &gross_blinding);
            let mut openings = vec![Opening {
                entry: index,
                party: None,
                amount: input.gross,
                blinding: scalar_bytes(&gross_blinding),
            }];
            // Halves of the gross and of each payout commitment, in that order.
            let mut halves = Vec::with_capacity(input.payouts.len() + 1);
            halves.push(gross);
            let (mut sum_points, mut sum_blindings) = (RistrettoPoint::default(), Scalar::ZERO);
            for (position, (party, amount)) in input.payouts.iter().enumerate() {
                // The last payout takes what makes the sums exact, as a point and as a blinding.
                let (point, blinding) = if position + 1 == input.payouts.len() {
                    (gross - sum_points, gross_blinding - sum_blindings)
                } else {
                    let blinding = random_scalar();
                    (half_commit(amount.0, &blinding), blinding)
                };
                sum_points += point;
                sum_blindings += blinding;
                halves.push(point);
                openings.push(Opening {
                    entry: index,
                    party: Some(party.clone()),
                    amount: *amount,
                    blinding: scalar_bytes(&blinding),
                });
            }
            // Scalars are Copy, so only the running values can be scrubbed here; the
            // stored openings scrub theirs on drop.
            gross_blinding.zeroize();
            sum_blindings.zeroize();
            let mut encoded = RistrettoPoint::double_and_compress_batch(&halves)
                .into_iter()
                .map(|c| ByteBuf::from(c.to_bytes().to_vec()));
            let gross = encoded.next().unwrap_or_default();
            let payouts = input
                .payouts
                .iter()
                .zip(encoded)
                .enumerate()
                .map(|(position, ((party, _), commitment))| PayoutCommitment {
                    party: party.clone(),
                    commitment,
                    rule: input.rules.get(position).cloned().flatten(),
                })
                .collect();
            let entry = Entry {
                settlement: ByteBuf::from(input.settlement.to_vec()),
                kind: input.kind.name().to_owned(),
                currency: input.currency.clone(),
                gross,
                payouts,
            };
            (entry, openings)
        })
        .collect();
    let mut entries = Vec::with_capacity(made.len());
    let mut openings = Vec::new();
    let mut parties: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for ((entry, entry_openings), index) in made.into_iter().zip(0u32..) {
        for payout in &entry.payouts {
            let list = parties.entry(payout.party.clone()).or_default();
            if list.last() != Some(&index) {
                list.push(index);
            }
        }
        entries.push(entry);
        openings.extend(entry_openings);
    }
    let leaf_hashes: Vec<[u8; 32]> = entries.par_iter().map(leaf).collect();
    // Version 2 only when a payout carries a rule: a statement without rules is
    // byte-identical to version 1.
    let ruled = entries.iter().any(|e| e.payouts.iter().any(|p| p.rule.is_some()));
    let payload = StatementPayload {
        v: if ruled { 2 } else { 1 },
        ledger: ByteBuf::from(ledger.to_vec()),
        seq,
        previous: ByteBuf::from(previous.to_vec()),
        issued_at,
        entries_root: ByteBuf::from(merkle_root(&leaf_hashes).to_vec()),
        entries,
        parties,
    };
    let bytes = Envelope::seal(CONTEXT_STATEMENT, escx::cbor::encode(&payload), key).to_cbor();
    Ok(Built { hash: statement_hash(&bytes), bytes, openings })
}

fn scalar_bytes(scalar: &Scalar) -> ByteBuf {
    ByteBuf::from(scalar.to_bytes().to_vec())
}

/// "statement N", or what to call one whose number could not be read.
fn statement_name(seq: u64) -> String {
    match seq {
        0 => "a statement (its number unreadable)".into(),
        seq => format!("statement {seq}"),
    }
}

/// Verifies a statement: the operator's signature, the Merkle root, every entry's
/// conservation on the hidden amounts, and the per-party index.
pub fn verify(bytes: &[u8], operator: &PublicKey) -> Result<Verified, StatementError> {
    verify_envelope(&parse_envelope(bytes)?, bytes, operator)
}

fn parse_envelope(bytes: &[u8]) -> Result<Envelope, StatementError> {
    Envelope::from_cbor(bytes).map_err(|e| StatementError::Invalid { seq: 0, reason: e.to_string() })
}

/// [`verify`] of `bytes`, already parsed as `envelope`.
fn verify_envelope(
    envelope: &Envelope,
    bytes: &[u8],
    operator: &PublicKey,
) -> Result<Verified, StatementError> {
    let invalid = |seq: u64, reason: String| StatementError::Invalid { seq, reason };
    // A signature that does not verify names the statement by the number it claims.
    let payload_bytes = envelope
        .open(CONTEXT_STATEMENT, operator)
        .map_err(|e| invalid(payload_seq(envelope.payload_unverified()).unwrap_or(0), e.to_string()))?;
    let payload: StatementPayload =
        escx::cbor::decode_exact(payload_bytes, "statement").map_err(|reason| invalid(0, reason))?;
    let seq = payload.seq;
    if payload.v != 1 && payload.v != 2 {
        return Err(invalid(seq, format!("version {} (this build reads 1 and 2)", payload.v)));
    }
    if payload.ledger.len() != 16 || payload.previous.len() != 32 || payload.entries_root.len() != 32 {
        return Err(invalid(seq, "ledger id, previous hash or root has the wrong length".into()));
    }
    if seq == 0 {
        return Err(invalid(seq, "its number is 0; sequence numbers start at 1".into()));
    }
    if (seq == 1) != payload.previous.iter().all(|b| *b == 0) {
        return Err(invalid(seq, "only the first statement has no previous statement".into()));
    }
    let leaf_hashes: Vec<[u8; 32]> = payload.entries.par_iter().map(leaf).collect();
    if merkle_root(&leaf_hashes)[..] != payload.entries_root[..] {
        return Err(invalid(seq, "the entries do not hash to entries_root".into()));
    }
    // Checked in parallel, reported in order: the verdict is the first failing entry's
    // (settlement.md §4.3), whichever thread found it first.
    let checked: Vec<Result<(), StatementError>> = payload
        .entries
        .par_iter()
        .enumerate()
        .map(|(index, entry)| {
            if entry.settlement.len() != 32 {
                return Err(invalid(seq, format!("entry {index}: the settlement id is not 32 bytes")));
            }
            let parties: std::collections::BTreeSet<&str> =
                entry.payouts.iter().map(|p| p.party.as_str()).collect();
            if parties.len() != entry.payouts.len() {
                return Err(invalid(
                    seq,
                    format!("entry {index}: a party is paid twice (one payout per party)"),
                ));
            }
            for (position, payout) in entry.payouts.iter().enumerate() {
                if let Some(rule) = &payout.rule {
                    if payload.v < 2 {
                        return Err(invalid(
                            seq,
                            format!("entry {index}: a version-1 statement carries no rules"),
                        ));
                    }
                    check_rule(rule, position, entry.payouts.len())
                        .map_err(|reason| invalid(seq, format!("entry {index}: {reason}")))?;
                }
            }
            let gross = point(&entry.gross)
                .ok_or_else(|| invalid(seq, format!("entry {index}: gross is not a point")))?;
            let mut sum = RistrettoPoint::default();
            for payout in &entry.payouts {
                sum += point(&payout.commitment)
                    .ok_or_else(|| invalid(seq, format!("entry {index}: a payout is not a point")))?;
            }
            if sum != gross {
                return Err(StatementError::Unconserved { seq, entry: index });
            }
            Ok(())
        })
        .collect();
    checked.into_iter().collect::<Result<(), StatementError>>()?;
    let mut expected: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (entry, index) in payload.entries.iter().zip(0u32..) {
        for payout in &entry.payouts {
            let list = expected.entry(payout.party.clone()).or_default();
            if list.last() != Some(&index) {
                list.push(index);
            }
        }
    }
    if expected != payload.parties {
        return Err(invalid(
            seq,
            "the per-party index does not list exactly the entries paying each party".into(),
        ));
    }
    Ok(Verified { hash: statement_hash(bytes), payload, signer: operator.id() })
}

/// The number a statement claims, read without verifying anything: for putting files in
/// order before they are verified one at a time. `None` when it cannot be read.
pub fn claimed_seq(bytes: &[u8]) -> Option<u64> {
    payload_seq(Envelope::from_cbor(bytes).ok()?.payload_unverified())
}

/// The `seq` of a statement payload, read without the rest of its checks.
fn payload_seq(payload: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Head {
        seq: u64,
    }
    ciborium::from_reader::<Head, _>(payload).ok().map(|h| h.seq)
}

/// Checks that `statements` (verified, in any order) form one unbroken chain.
pub fn verify_chain(statements: &mut [Verified]) -> Result<(), StatementError> {
    statements.sort_by_key(|s| s.payload.seq);
    for pair in statements.windows(2) {
        check_link(&pair[0].link(), &pair[1])?;
    }
    Ok(())
}

/// What of a verified statement the next one is checked against (settlement.md §4.3):
/// enough to verify a chain as a stream, one statement held at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its number.
    pub seq: u64,
    /// Its hash.
    pub hash: [u8; 32],
    /// Its ledger id.
    pub ledger: Vec<u8>,
    /// Its time.
    pub issued_at: UnixSeconds,
    /// The key that signed it.
    pub signer: KeyId,
}

impl Verified {
    /// What the next statement is checked against.
    pub fn link(&self) -> Link {
        Link {
            seq: self.payload.seq,
            hash: self.hash,
            ledger: self.payload.ledger.to_vec(),
            issued_at: self.payload.issued_at,
            signer: self.signer,
        }
    }
}

/// Checks that `b` follows `a` in one chain: one ledger, the next number, `a`'s hash as
/// its previous, and a time not before `a`'s (`statement-chain`).
pub fn check_link(a: &Link, b: &Verified) -> Result<(), StatementError> {
    let next = &b.payload;
    if a.ledger[..] != next.ledger[..] {
        return Err(StatementError::Chain {
            reason: format!("statements {} and {} are from different ledgers", a.seq, next.seq),
        });
    }
    if next.seq == a.seq {
        return Err(StatementError::Chain { reason: format!("statement {} is given twice", a.seq) });
    }
    if next.seq != a.seq + 1 {
        return Err(StatementError::Chain {
            reason: if next.seq > a.seq {
                format!(
                    "gap: statement {} is followed by {} ({} missing)",
                    a.seq,
                    next.seq,
                    next.seq - a.seq - 1
                )
            } else {
                format!("statement {} is followed by {}: statements go in order", a.seq, next.seq)
            },
        });
    }
    if next.previous[..] != a.hash[..] {
        return Err(StatementError::Chain {
            reason: format!("statement {} does not name statement {} as its previous", next.seq, a.seq),
        });
    }
    if next.issued_at < a.issued_at {
        return Err(StatementError::Chain {
            reason: format!(
                "statement {} is dated before statement {}: statement times never go back",
                next.seq, a.seq
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(file: &OpeningsFile) -> OpeningsFile {
        escx::cbor::decode_exact(&escx::cbor::encode(file), "openings").unwrap()
    }
    use escx::Fault as _;

    fn inputs() -> Vec<EntryInput> {
        (0..5u8)
            .map(|i| EntryInput {
                settlement: [i; 32],
                kind: crate::store::RecordKind::Sale,
                currency: "USD".into(),
                gross: Micros(1_000 + u64::from(i)),
                payouts: vec![("platform".into(), Micros(100)), ("acme".into(), Micros(900 + u64::from(i)))],
                rules: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn merkle_proofs_verify_for_every_leaf_of_every_size() {
        for count in 1..=17usize {
            let leaves: Vec<[u8; 32]> =
                (0..count).map(|i| blake3::derive_key("test", &[u8::try_from(i).unwrap()])).collect();
            let root = merkle_root(&leaves);
            for index in 0..count {
                let proof = inclusion_proof(&leaves, index);
                assert!(verify_inclusion(leaves[index], index, count, &proof, &root), "{count}/{index}");
                assert!(
                    !verify_inclusion(leaves[(index + 1) % count], index, count, &proof, &root) || count == 1
                );
            }
        }
    }

    #[test]
    fn a_built_statement_verifies_and_conserves_on_hidden_amounts() {
        let key = SecretKey::generate();
        let built = build(&[1; 16], 1, &[0; 32], escx::UnixSeconds(1_800_000_000), &inputs(), &key).unwrap();
        let verified = verify(&built.bytes, key.public_key()).unwrap();
        assert_eq!(verified.payload.entries.len(), 5);
        assert_eq!(verified.payload.parties["acme"], vec![0, 1, 2, 3, 4]);
        let file = OpeningsFile {
            v: 1,
            ledger: ByteBuf::from(vec![1; 16]),
            seq: 1,
            party: "acme".into(),
            openings: built.party_openings("acme"),
        };
        let amounts: Vec<(u32, u64, u64)> = check_openings(&verified, &file)
            .unwrap()
            .iter()
            .map(|o| (o.entry, o.amount.0, o.gross.0))
            .collect();
        assert_eq!(
            amounts,
            vec![(0, 900, 1000), (1, 901, 1001), (2, 902, 1002), (3, 903, 1003), (4, 904, 1004)]
        );
        let mut lying = copy(&file);
        let at = lying.openings.iter().position(|o| o.entry == 2 && o.party.is_some()).unwrap();
        lying.openings[at].amount.0 += 1;
        assert_eq!(check_openings(&verified, &lying).unwrap_err().code(), "opening-invalid");
        // Openings for another statement or ledger are opening-invalid too (§4.3).
        let mut elsewhere = copy(&file);
        elsewhere.seq += 1;
        assert_eq!(check_openings(&verified, &elsewhere).unwrap_err().code(), "opening-invalid");
        let mut foreign = copy(&file);
        foreign.ledger[0] ^= 1;
        assert_eq!(check_openings(&verified, &foreign).unwrap_err().code(), "opening-invalid");
        // An operator who withholds one opening, or hands one out twice, is caught.
        let mut withheld = copy(&file);
        withheld.openings.retain(|o| !(o.entry == 3 && o.party.is_some()));
        assert!(matches!(
            check_openings(&verified, &withheld).unwrap_err(),
            StatementError::OpeningMissing { entry: 3, .. }
        ));
        // Without the gross of an entry, the party could not check its share of it.
        let mut no_gross = copy(&file);
        no_gross.openings.retain(|o| !(o.entry == 1 && o.party.is_none()));
        assert!(matches!(
            check_openings(&verified, &no_gross).unwrap_err(),
            StatementError::OpeningMissing { entry: 1, .. }
        ));
        let mut doubled = copy(&file);
        let (two, three) = (
            doubled.openings.iter().position(|o| o.entry == 2 && o.party.is_some()).unwrap(),
            doubled.openings.iter().position(|o| o.entry == 3 && o.party.is_some()).unwrap(),
        );
        doubled.openings[three] = doubled.openings[two].duplicate();
        assert_eq!(check_openings(&verified, &doubled).unwrap_err().code(), "opening-invalid");
    }

    /// A sale of 0 (a free tier, an hour of no usage) has no payouts; its statement still
    /// verifies, and its gross opens to 0.
    #[test]
    fn a_zero_gross_entry_verifies() {
        let key = SecretKey::generate();
        let mut entries = inputs();
        entries[1] =
            EntryInput { gross: Micros(0), payouts: Vec::new(), rules: Vec::new(), ..entries[1].clone() };
        let built = build(&[1; 16], 1, &[0; 32], escx::UnixSeconds(1_800_000_000), &entries, &key).unwrap();
        let verified = verify(&built.bytes, key.public_key()).unwrap();
        assert!(verified.payload.entries[1].payouts.is_empty());
        assert!(!verified.payload.parties["acme"].contains(&1));
        let gross = built.openings.iter().find(|o| o.entry == 1 && o.party.is_none()).unwrap();
        assert_eq!(gross.amount, Micros(0));
        // A zero-payout entry whose gross is not zero does not conserve.
        let mut forged = verified.payload.clone();
        forged.entries[1].gross = forged.entries[0].gross.clone();
        forged.entries_root = ByteBuf::from(merkle_root(&leaves(&forged)).to_vec());
        let bytes = Envelope::seal(CONTEXT_STATEMENT, escx::cbor::encode(&forged), &key).to_cbor();
        assert_eq!(verify(&bytes, key.public_key()).unwrap_err().code(), "statement-unconserved");
    }

    /// The operator's own bug (payouts that do not add up) is refused before signing.
    #[test]
    fn an_unconserved_entry_is_never_signed() {
        let key = SecretKey::generate();
        let mut entries = inputs();
        entries[2].payouts[1].1.0 += 1;
        let err = build(&[1; 16], 1, &[0; 32], escx::UnixSeconds(1_800_000_000), &entries, &key)
            .err()
            .expect("refused");
        assert_eq!(err.code(), "ledger-invariant");
        assert!(matches!(err, StatementError::Invariant { entry: 2, .. }), "{err}");
        let mut twice = inputs();
        twice[0].payouts = vec![("acme".into(), Micros(500)), ("acme".into(), Micros(500))];
        assert_eq!(
            build(&[1; 16], 1, &[0; 32], escx::UnixSeconds(0), &twice, &key).err().expect("refused").code(),
            "ledger-invariant"
        );
        let mut zero = inputs();
        zero[0].payouts.push(("nobody".into(), Micros(0)));
        assert_eq!(
            build(&[1; 16], 1, &[0; 32], escx::UnixSeconds(0), &zero, &key).err().expect("refused").code(),
            "ledger-invariant"
        );
    }
}
