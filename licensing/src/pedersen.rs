//! Pedersen commitments `C(v, r) = v·B + r·B̃` on ristretto255 (proofs.md §9.1), the one
//! place their generators, the commitment and the decoding of points and scalars are
//! written: meter reports (metering.md §2.2), statements (settlement.md §4.1), statement
//! and revenue proofs (proofs.md) and the range proofs of [`crate::rangeproof`] use them.
//!
//! `B` is the ristretto255 basepoint and `B̃` = `hash_from_bytes::<Sha3_512>(enc(B))`,
//! `bulletproofs::PedersenGens::default()`: **B carries the value, B̃ the blinding**.

use std::sync::OnceLock;

use bulletproofs::PedersenGens;
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoBasepointTable, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;

/// The generators `B` (values) and `B̃` (blindings).
pub fn generators() -> &'static PedersenGens {
    static GENS: OnceLock<PedersenGens> = OnceLock::new();
    GENS.get_or_init(PedersenGens::default)
}

/// A precomputed table of `B̃`, for fast fixed-base multiplication.
pub fn blinding_table() -> &'static RistrettoBasepointTable {
    static TABLE: OnceLock<RistrettoBasepointTable> = OnceLock::new();
    TABLE.get_or_init(|| RistrettoBasepointTable::create(&generators().B_blinding))
}

/// `value·B + blinding·B̃`.
pub fn commit(value: u64, blinding: &Scalar) -> RistrettoPoint {
    RISTRETTO_BASEPOINT_TABLE * &Scalar::from(value) + blinding_table() * blinding
}

/// Decodes a 32-byte point encoding; `None` for any other length or a non-canonical
/// encoding.
pub fn point(bytes: &[u8]) -> Option<RistrettoPoint> {
    CompressedRistretto::from_slice(bytes).ok()?.decompress()
}

/// A canonical 32-byte scalar (little-endian, below ℓ); `None` otherwise.
pub fn scalar(bytes: &[u8]) -> Option<Scalar> {
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    Option::from(Scalar::from_canonical_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_the_ones_the_spec_encodes() {
        // proofs.md §9.1.
        let gens = generators();
        assert_eq!(
            hex::encode(gens.B.compress().as_bytes()),
            "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76"
        );
        assert_eq!(
            hex::encode(gens.B_blinding.compress().as_bytes()),
            "8c9240b456a9e6dc65c377a1048d745f94a08cdb7f44cbcd7b46f34048871134"
        );
        let r = Scalar::from(7u8);
        assert_eq!(commit(5, &r), gens.commit(Scalar::from(5u8), r));
    }

    #[test]
    fn decoding_refuses_what_is_not_canonical() {
        let c = commit(3, &Scalar::from(9u8)).compress();
        assert_eq!(point(c.as_bytes()).map(|p| p.compress()), Some(c));
        assert!(point(&c.as_bytes()[..31]).is_none());
        let mut high = [0u8; 32];
        high[31] = 0x80;
        assert!(point(&high).is_none());
        assert_eq!(scalar(&Scalar::from(5u8).to_bytes()), Some(Scalar::from(5u8)));
        // ℓ itself is not canonical.
        let ell = hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010").unwrap();
        assert!(scalar(&ell).is_none());
        assert!(scalar(&[1u8; 31]).is_none());
    }
}
