//! Aggregated Bulletproofs+ range proofs (Chung, Han, Ju, Kim, Seo 2020;
//! `tari_bulletproofs_plus`) over escx's Pedersen commitments `v·B + r·B̃` with the
//! generators of `bulletproofs`' `PedersenGens::default()`, the ones meter reports
//! (metering.md §2.2) and statements (settlement.md §4.1) commit with. Both use this
//! module: meter reports prove their values in range (metering.md §3.4), statements their
//! payouts (proofs.md §2). Proofs batch-verify, which `bulletproofs` 5 cannot.

use std::sync::OnceLock;

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use merlin::Transcript;
use rayon::prelude::*;
use tari_bulletproofs_plus::PedersenGens;
use tari_bulletproofs_plus::commitment_opening::CommitmentOpening;
use tari_bulletproofs_plus::generators::pedersen_gens::ExtensionDegree;
use tari_bulletproofs_plus::range_parameters::RangeParameters;
use tari_bulletproofs_plus::range_proof::{RangeProof, VerifyAction};
use tari_bulletproofs_plus::range_statement::RangeStatement;
use tari_bulletproofs_plus::range_witness::RangeWitness;

/// The most values one proof aggregates.
pub const VALUES_MAX: usize = 64;

/// The bit lengths a proof may prove: each value in `[0, 2^bits)`.
pub const BITS: [usize; 4] = [1, 8, 16, 64];

/// A commitment as a point together with its encoding, which always agree: the proof's
/// transcript absorbs the encoding and the verification equation uses the point.
/// Commitments read from bytes keep their bytes, which saves the field inversion a
/// compression costs (about as much as the decompression itself; a report's 60 `minutes`
/// commitments would otherwise be compressed again for every verification).
#[derive(Clone, Copy)]
pub struct Commitment {
    point: RistrettoPoint,
    encoding: CompressedRistretto,
}

impl Commitment {
    /// Decodes a canonical ristretto255 encoding (`None` for anything else).
    pub fn decompress(bytes: &[u8]) -> Option<Self> {
        let encoding = CompressedRistretto::from_slice(bytes).ok()?;
        Some(Self { point: encoding.decompress()?, encoding })
    }

    /// A computed point, compressed once here.
    pub fn from_point(point: RistrettoPoint) -> Self {
        Self { point, encoding: point.compress() }
    }

    /// The point.
    pub fn point(&self) -> RistrettoPoint {
        self.point
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.encoding.to_bytes()
    }
}

/// One proof to verify: its commitments (unpadded), the transcript it was made on, and
/// `id`, the caller's name for it.
pub struct Item {
    /// The caller's name for the proof (an entry, a report's position).
    pub id: u32,
    /// The proof's bit length: it shows each value in `[0, 2^bits)` (one of [`BITS`]).
    pub bits: usize,
    /// The transcript, holding every public input the proof is bound to.
    pub transcript: Transcript,
    /// The commitments, in order; padded with the identity to a power of two here.
    pub commitments: Vec<Commitment>,
    /// `RangeProof::to_bytes`.
    pub proof: Vec<u8>,
}

/// Range parameters, or why they could not be made.
type Params = Result<RangeParameters<RistrettoPoint>, String>;

/// Parameters for `bits`-bit ranges aggregating `m` values (a power of two up to 64).
fn params(bits: usize, m: usize) -> Result<&'static RangeParameters<RistrettoPoint>, String> {
    static CACHE: [[OnceLock<Params>; 7]; 4] = [const { [const { OnceLock::new() }; 7] }; 4];
    let row =
        BITS.iter().position(|b| *b == bits).ok_or_else(|| format!("{bits}-bit ranges are not used"))?;
    let column = m.trailing_zeros() as usize;
    if !m.is_power_of_two() || column >= 7 {
        return Err(format!("{m} values is not a power of two up to {VALUES_MAX}"));
    }
    CACHE[row][column]
        .get_or_init(|| {
            let ours = crate::pedersen::generators();
            let gens = PedersenGens {
                h_base: ours.B,
                h_base_compressed: ours.B.compress(),
                g_base_vec: vec![ours.B_blinding],
                g_base_compressed_vec: vec![ours.B_blinding.compress()],
                extension_degree: ExtensionDegree::DefaultPedersen,
            };
            RangeParameters::init(bits, m, gens).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The statement of `bits`-bit ranges over `commitments`, padded with the identity to a
/// power of two. Built field by field rather than with `RangeStatement::init`, which would
/// compress every commitment again; the checks `init` makes hold by construction here
/// (a power of two, parameters for exactly `m` values, one promise per value, none set,
/// no seed nonce).
fn statement(
    bits: usize,
    mut commitments: Vec<Commitment>,
) -> Result<RangeStatement<RistrettoPoint>, String> {
    let m = commitments.len().max(1).next_power_of_two();
    if m > VALUES_MAX {
        return Err(format!("more than {VALUES_MAX} values"));
    }
    commitments.resize(
        m,
        Commitment { point: RistrettoPoint::identity(), encoding: CompressedRistretto::identity() },
    );
    Ok(RangeStatement {
        generators: params(bits, m)?.clone(),
        commitments: commitments.iter().map(|c| c.point).collect(),
        commitments_compressed: commitments.iter().map(|c| c.encoding).collect(),
        minimum_value_promises: vec![None; m],
        seed_nonce: None,
    })
}

/// An aggregated proof that each value lies in `[0, 2^bits)`, padded with zeros to a
/// power of two, on `transcript`.
pub fn prove(
    bits: usize,
    transcript: &mut Transcript,
    values: &[u64],
    blindings: &[Scalar],
) -> Result<Vec<u8>, String> {
    if values.len() != blindings.len() {
        return Err("one blinding per value".into());
    }
    let commitments: Vec<Commitment> = values
        .iter()
        .zip(blindings)
        .map(|(v, r)| Commitment::from_point(crate::pedersen::commit(*v, r)))
        .collect();
    let statement = statement(bits, commitments)?;
    let mut openings: Vec<CommitmentOpening> =
        values.iter().zip(blindings).map(|(v, r)| CommitmentOpening::new(*v, vec![*r])).collect();
    openings.resize_with(statement.commitments.len(), || CommitmentOpening::new(0, vec![Scalar::ZERO]));
    let witness = RangeWitness::init(openings).map_err(|e| e.to_string())?;
    let proof = RangeProof::prove_with_rng(transcript, &statement, &witness, &mut rand_core::OsRng)
        .map_err(|e| e.to_string())?;
    Ok(proof.to_bytes())
}

/// Whether `bytes` decode as a proof (no verification: what a parser can check).
pub fn decodes(bytes: &[u8]) -> bool {
    RangeProof::<RistrettoPoint>::from_bytes(bytes).is_ok()
}

/// The most proofs one call of `RangeProof::verify_batch` verifies: `tari_bulletproofs_plus`
/// 0.4 splits a longer batch into chunks of 256 and verifies **only the first** (it returns
/// after one chunk), so every batch handed to it stays at or below this size.
const BATCH_MAX: usize = 256;

/// Verifies every item; on failure names the first failing item.
pub fn verify(items: Vec<Item>) -> Result<(), u32> {
    match verify_each(items).first() {
        Some(id) => Err(*id),
        None => Ok(()),
    }
}

/// Verifies every item (each at its own bit length) in batches spread over the threads
/// (a batch that fails is verified proof by proof); returns the ids of the items that
/// fail, in order.
pub fn verify_each(items: Vec<Item>) -> Vec<u32> {
    let mut by_bits: Vec<(usize, Vec<Item>)> = Vec::new();
    for item in items {
        match by_bits.iter_mut().find(|(bits, _)| *bits == item.bits) {
            Some((_, group)) => group.push(item),
            None => by_bits.push((item.bits, vec![item])),
        }
    }
    // Several batches per thread, so a thread that finishes early takes another rather
    // than idle; a batch of 16 proofs already shares most of the generator work.
    let threads = rayon::current_num_threads().max(1);
    let mut batches: Vec<(usize, Vec<Item>)> = Vec::new();
    for (bits, mut group) in by_bits {
        let size = group.len().div_ceil(4 * threads).clamp(16, BATCH_MAX);
        while !group.is_empty() {
            let rest = group.split_off(size.min(group.len()));
            batches.push((bits, std::mem::replace(&mut group, rest)));
        }
    }
    let mut failed: Vec<u32> =
        batches.into_par_iter().flat_map(|(bits, batch)| verify_batch(bits, batch)).collect();
    failed.sort_unstable();
    failed
}

fn verify_batch(bits: usize, chunk: Vec<Item>) -> Vec<u32> {
    debug_assert!(chunk.len() <= BATCH_MAX);
    let mut failed = Vec::new();
    let mut statements = Vec::with_capacity(chunk.len());
    let mut proofs = Vec::with_capacity(chunk.len());
    let mut transcripts = Vec::with_capacity(chunk.len());
    let mut ids = Vec::with_capacity(chunk.len());
    for item in chunk {
        let (Ok(statement), Ok(proof)) =
            (statement(bits, item.commitments), RangeProof::from_bytes(&item.proof))
        else {
            failed.push(item.id);
            continue;
        };
        statements.push(statement);
        proofs.push(proof);
        transcripts.push(item.transcript);
        ids.push(item.id);
    }
    if statements.is_empty() {
        return failed;
    }
    // Kept for naming the culprits: a batch only says that some proof failed.
    let copies = transcripts.clone();
    if RangeProof::verify_batch(&mut transcripts, &statements, &proofs, VerifyAction::VerifyOnly).is_ok() {
        return failed;
    }
    for (i, mut transcript) in copies.into_iter().enumerate() {
        let one = RangeProof::verify_batch(
            std::slice::from_mut(&mut transcript),
            &statements[i..=i],
            &proofs[i..=i],
            VerifyAction::VerifyOnly,
        );
        if one.is_err() {
            failed.push(ids[i]);
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript::new(b"escx rangeproof test")
    }

    #[test]
    fn values_in_range_verify_and_out_of_range_do_not() {
        let r: Vec<Scalar> = (0..3u64).map(|i| Scalar::from(i + 7)).collect();
        let good = prove(1, &mut transcript(), &[1, 0, 1], &r).unwrap();
        let commitments = |values: &[u64]| -> Vec<Commitment> {
            values
                .iter()
                .zip(&r)
                .map(|(v, r)| Commitment::from_point(crate::pedersen::commit(*v, r)))
                .collect()
        };
        let item = |id, values: &[u64], proof: &[u8]| Item {
            id,
            bits: 1,
            transcript: transcript(),
            commitments: commitments(values),
            proof: proof.to_vec(),
        };
        assert!(verify_each(vec![item(0, &[1, 0, 1], &good)]).is_empty());
        // Other commitments, another transcript, another bit length: refused.
        assert_eq!(verify_each(vec![item(0, &[1, 1, 1], &good), item(1, &[1, 0, 1], &good)]), [0]);
        let mut other = item(2, &[1, 0, 1], &good);
        other.transcript = Transcript::new(b"another");
        assert_eq!(verify_each(vec![other]), [2]);
        let mut wider = item(3, &[1, 0, 1], &good);
        wider.bits = 8;
        assert_eq!(verify(vec![wider]), Err(3));
        // A value of 2 has no 1-bit proof.
        assert!(prove(1, &mut transcript(), &[2], &r[..1]).is_err());
        assert!(!decodes(&[1, 2, 3]));
    }

    #[test]
    fn statements_carry_the_encodings_the_library_would_compute() {
        let points: Vec<RistrettoPoint> =
            (0..5u64).map(|i| crate::pedersen::commit(i, &Scalar::from(i + 3))).collect();
        // Read from bytes, as a verifier does: the kept encodings are what `init` computes.
        let read: Vec<Commitment> =
            points.iter().map(|p| Commitment::decompress(p.compress().as_bytes()).unwrap()).collect();
        let ours = statement(8, read).unwrap();
        let mut padded = points.clone();
        padded.resize(8, RistrettoPoint::identity());
        let theirs =
            RangeStatement::init(params(8, 8).unwrap().clone(), padded, vec![None; 8], None).unwrap();
        assert_eq!(ours.commitments, theirs.commitments);
        assert_eq!(ours.commitments_compressed, theirs.commitments_compressed);
        // A proof made from openings verifies against commitments read from bytes.
        let r: Vec<Scalar> = (0..5u64).map(|i| Scalar::from(i + 3)).collect();
        let proof = prove(8, &mut transcript(), &[0, 1, 2, 3, 4], &r).unwrap();
        let item = Item {
            id: 9,
            bits: 8,
            transcript: transcript(),
            commitments: points
                .iter()
                .map(|p| Commitment::decompress(p.compress().as_bytes()).unwrap())
                .collect(),
            proof,
        };
        assert!(verify_each(vec![item]).is_empty());
        assert!(Commitment::decompress(&[0xff; 32]).is_none());
    }

    /// `tari_bulletproofs_plus` 0.4's `verify_batch` checks only the first 256 proofs of a
    /// batch: a bad proof behind them passes. Every batch here is cut to `BATCH_MAX`, so
    /// the bad proof is found wherever it sits.
    #[test]
    fn a_bad_proof_behind_the_first_256_is_found() {
        let r = [Scalar::from(5u8), Scalar::from(6u8)];
        let proof = prove(1, &mut transcript(), &[1, 0], &r).unwrap();
        let item = |id: u32, value: u64| Item {
            id,
            bits: 1,
            transcript: transcript(),
            commitments: vec![
                Commitment::from_point(crate::pedersen::commit(value, &r[0])),
                Commitment::from_point(crate::pedersen::commit(0, &r[1])),
            ],
            proof: proof.clone(),
        };
        // The dependency's own behaviour, which the cut works around: if this starts
        // failing, upstream verifies every chunk and `BATCH_MAX` is merely a batch size.
        let upstream: Vec<(RangeStatement<RistrettoPoint>, RangeProof<RistrettoPoint>, Transcript)> = (0
            ..257)
            .map(|i| {
                let it = item(i, u64::from(i != 256));
                (
                    statement(1, it.commitments).unwrap(),
                    RangeProof::from_bytes(&it.proof).unwrap(),
                    it.transcript,
                )
            })
            .collect();
        let (statements, rest): (Vec<_>, Vec<_>) = upstream.into_iter().map(|(s, p, t)| (s, (p, t))).unzip();
        let (proofs, mut transcripts): (Vec<_>, Vec<_>) = rest.into_iter().unzip();
        assert!(
            RangeProof::verify_batch(&mut transcripts, &statements, &proofs, VerifyAction::VerifyOnly)
                .is_ok()
        );
        // Ours: 1 200 items, the one with a value the proof does not open sits last. On one
        // thread the even split would be 4 batches of 300, the bad one 300th in its batch.
        let items: Vec<Item> = (0..1200).map(|i| item(i, u64::from(i != 1199))).collect();
        let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(one_thread.install(|| verify_each(items)), [1199]);
        let items: Vec<Item> = (0..600).map(|i| item(i, u64::from(i != 300))).collect();
        assert_eq!(verify(items), Err(300));
    }
}
