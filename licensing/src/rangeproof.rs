//! Aggregated Bulletproofs+ range proofs (Chung, Han, Ju, Kim, Seo 2020;
//! `tari_bulletproofs_plus`) over escx's Pedersen commitments `v·B + r·B̃` with the
//! generators of `bulletproofs`' `PedersenGens::default()`, the ones meter reports
//! (metering.md §2.2) and statements (settlement.md §4.1) commit with. Both use this
//! module: meter reports prove their values in range (metering.md §3.4), statements their
//! payouts (proofs.md §2). Proofs batch-verify, which `bulletproofs` 5 cannot.

use std::sync::OnceLock;

use curve25519_dalek::ristretto::RistrettoPoint;
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

/// One proof to verify: its commitments (unpadded), the transcript it was made on, and
/// `id`, the caller's name for it.
pub struct Item {
    /// The caller's name for the proof (an entry, a report's position).
    pub id: u32,
    /// The transcript, holding every public input the proof is bound to.
    pub transcript: Transcript,
    /// The commitments, in order; padded with the identity to a power of two here.
    pub commitments: Vec<RistrettoPoint>,
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
            let ours = bulletproofs::PedersenGens::default();
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

fn statement(
    bits: usize,
    mut commitments: Vec<RistrettoPoint>,
) -> Result<RangeStatement<RistrettoPoint>, String> {
    let m = commitments.len().max(1).next_power_of_two();
    if m > VALUES_MAX {
        return Err(format!("more than {VALUES_MAX} values"));
    }
    commitments.resize(m, RistrettoPoint::identity());
    RangeStatement::init(params(bits, m)?.clone(), commitments, vec![None; m], None)
        .map_err(|e| e.to_string())
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
    let commitments: Vec<RistrettoPoint> =
        values.iter().zip(blindings).map(|(v, r)| crate::metering::commit(*v, r)).collect();
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

/// Verifies every item, in one batch per thread; on failure names the first failing item.
pub fn verify(bits: usize, items: Vec<Item>) -> Result<(), u32> {
    match verify_each(bits, items).first() {
        Some(id) => Err(*id),
        None => Ok(()),
    }
}

/// Verifies every item, in one batch per thread (a batch that fails is verified proof by
/// proof); returns the ids of the items that fail, in order.
pub fn verify_each(bits: usize, items: Vec<Item>) -> Vec<u32> {
    if items.is_empty() {
        return Vec::new();
    }
    let per_thread = items.len().div_ceil(rayon::current_num_threads().max(1));
    let mut items = items;
    let mut chunks: Vec<Vec<Item>> = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(per_thread.min(items.len()));
        chunks.push(std::mem::replace(&mut items, rest));
    }
    let mut failed: Vec<u32> = chunks.into_par_iter().flat_map(|chunk| batch(bits, chunk)).collect();
    failed.sort_unstable();
    failed
}

fn batch(bits: usize, chunk: Vec<Item>) -> Vec<u32> {
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
        let commitments = |values: &[u64]| -> Vec<RistrettoPoint> {
            values.iter().zip(&r).map(|(v, r)| crate::metering::commit(*v, r)).collect()
        };
        let item = |id, values: &[u64], proof: &[u8]| Item {
            id,
            transcript: transcript(),
            commitments: commitments(values),
            proof: proof.to_vec(),
        };
        assert!(verify_each(1, vec![item(0, &[1, 0, 1], &good)]).is_empty());
        // Other commitments, another transcript, another bit length: refused.
        assert_eq!(verify_each(1, vec![item(0, &[1, 1, 1], &good), item(1, &[1, 0, 1], &good)]), [0]);
        let mut other = item(2, &[1, 0, 1], &good);
        other.transcript = Transcript::new(b"another");
        assert_eq!(verify_each(1, vec![other]), [2]);
        assert_eq!(verify(8, vec![item(3, &[1, 0, 1], &good)]), Err(3));
        // A value of 2 has no 1-bit proof.
        assert!(prove(1, &mut transcript(), &[2], &r[..1]).is_err());
        assert!(!decodes(&[1, 2, 3]));
    }
}
