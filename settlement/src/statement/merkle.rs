//! The Merkle tree over a statement's entries and inclusion proofs (settlement.md §4.2).

use super::*;

pub(super) fn leaf(entry: &Entry) -> [u8; 32] {
    blake3::derive_key(CONTEXT_LEAF, &escx::cbor::encode(entry))
}

pub(super) fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(left);
    both[32..].copy_from_slice(right);
    blake3::derive_key(CONTEXT_NODE, &both)
}

/// RFC 6962-shaped Merkle root: split at the largest power of two below the count.
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let split = split_point(n);
            node(&merkle_root(&leaves[..split]), &merkle_root(&leaves[split..]))
        }
    }
}

pub(super) fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The sibling hashes from leaf `index` up to the root.
pub fn inclusion_proof(leaves: &[[u8; 32]], index: usize) -> Vec<[u8; 32]> {
    let mut path = Vec::new();
    let (mut lo, mut hi, mut index) = (0, leaves.len(), index);
    let mut stack = Vec::new();
    while hi - lo > 1 {
        let split = split_point(hi - lo);
        if index < split {
            stack.push(merkle_root(&leaves[lo + split..hi]));
            hi = lo + split;
        } else {
            stack.push(merkle_root(&leaves[lo..lo + split]));
            lo += split;
            index -= split;
        }
    }
    while let Some(sibling) = stack.pop() {
        path.push(sibling);
    }
    path
}

/// Checks an inclusion proof for `leaf` at `index` of `count` leaves against `root`.
pub fn verify_inclusion(
    leaf: [u8; 32],
    index: usize,
    count: usize,
    proof: &[[u8; 32]],
    root: &[u8; 32],
) -> bool {
    fn walk(hash: [u8; 32], index: usize, count: usize, proof: &[[u8; 32]]) -> Option<[u8; 32]> {
        if count == 1 {
            return proof.is_empty().then_some(hash);
        }
        let (sibling, rest) = proof.split_last()?;
        let split = split_point(count);
        if index < split {
            Some(node(&walk(hash, index, split, rest)?, sibling))
        } else {
            Some(node(sibling, &walk(hash, index - split, count - split, rest)?))
        }
    }
    index < count && walk(leaf, index, count, proof).is_some_and(|r| &r == root)
}

/// The leaf hash of each entry of a statement.
pub fn leaves(payload: &StatementPayload) -> Vec<[u8; 32]> {
    payload.entries.iter().map(leaf).collect()
}
