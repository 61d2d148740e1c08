"""Independent verifier of escx's zero-knowledge proofs, written from the spec text alone.

spec/proofs.md (§2 statement range proofs, §3 revenue proofs, §9 byte-for-byte definitions),
spec/settlement.md §4 (statements), spec/metering.md §3.4 and §6.1 step 6 (meter reports).
Pure Python 3.11, standard library only (hashlib supplies SHA3-512 and SHAKE256; Keccak-f[1600]
for STROBE, BLAKE3, ristretto255 and CBOR are written here).

Run from the repository root:  python3 test-vectors/proofs/verify.py
Modules: primitives (Keccak, Merlin, BLAKE3, ristretto255, CBOR), proof_systems (§9.4, §9.5),
escx (statements, §2, §3, meter reports), vectors (§9.8 known answers, expected.json cases).
Statement signatures (ML-DSA-87) are NOT verified: that is not this spec's subject; the
envelope's shape and key id are checked.
"""
