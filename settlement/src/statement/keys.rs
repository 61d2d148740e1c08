//! The line of operator keys an auditor follows through rotations (settlement.md §4.5).

use super::*;

/// The operator's keys over a ledger's life (settlement.md §4.5): the key a verifier holds,
/// then each successor that a rotation statement signed by the key before it endorses.
/// Statement `n + 1` may be signed by the key of statement `n` or a later one, never an
/// earlier one: once a successor signs, its predecessors have retired.
#[derive(Debug, Clone)]
pub struct OperatorKeys {
    lineage: Vec<PublicKey>,
}

impl OperatorKeys {
    /// A line of one key: no rotation.
    pub fn new(root: PublicKey) -> Self {
        Self { lineage: vec![root] }
    }

    /// Follows `rotations`, given in any order, from `root`. Each must verify under a key of
    /// the line and endorse a key not yet in it; two endorsed by one key (a fork) and one
    /// no key of the line signed are refused (`rotation-invalid`). Rotations leading up to
    /// `root` itself are passed over: a verifier holding a later key trusts only that key
    /// and its successors.
    pub fn follow(root: PublicKey, rotations: &[RotationStatement]) -> Result<Self, StatementError> {
        let refuse = |reason: String| StatementError::Rotation { reason };
        let mut left: Vec<&RotationStatement> = rotations.iter().collect();
        let mut lineage = vec![root];
        loop {
            let current = lineage.last().map(PublicKey::id);
            let Some(at) = left.iter().position(|r| Some(r.signer()) == current) else { break };
            let rotation = left.swap_remove(at);
            let signer = lineage.last().ok_or_else(|| refuse("no key".into()))?;
            let endorsed = rotation.verify(signer).map_err(|e| refuse(e.to_string()))?;
            if lineage.iter().any(|k| k.id() == endorsed.new_key.id()) {
                return Err(refuse(format!(
                    "it endorses {}, which is already in the operator's line of keys",
                    endorsed.new_key.id()
                )));
            }
            lineage.push(endorsed.new_key);
        }
        // Rotations that lead up to the root (a verifier holding a later key) are passed
        // over: the keys before the root are not trusted, so what they signed does not verify.
        let mut before = lineage[0].id();
        while let Some(at) = left.iter().position(|r| r.claims().is_ok_and(|c| c.new_key.id() == before)) {
            before = left.swap_remove(at).signer();
        }
        if let Some(rotation) = left.first() {
            let known = |id: KeyId| lineage.iter().any(|k| k.id() == id);
            return Err(refuse(match left.iter().find(|r| known(r.signer())) {
                Some(fork) => {
                    format!("key {} endorses two successors (a fork); a key hands over once", fork.signer())
                }
                None => format!(
                    "signed by {}, which is neither the operator's key {} nor a successor it endorsed",
                    rotation.signer(),
                    lineage[0].id()
                ),
            }));
        }
        Ok(Self { lineage })
    }

    /// The key the verifier was given.
    pub fn root(&self) -> &PublicKey {
        &self.lineage[0]
    }

    /// Every key, oldest first.
    pub fn lineage(&self) -> &[PublicKey] {
        &self.lineage
    }

    /// Verifies a statement under whichever key of the line signed it (§4.3 step 1 with
    /// the line for the one key). A key outside the line is `statement-invalid`.
    pub fn verify(&self, bytes: &[u8]) -> Result<Verified, StatementError> {
        let envelope = parse_envelope(bytes)?;
        let key = self.lineage.iter().find(|k| k.id() == envelope.key_id()).unwrap_or(&self.lineage[0]);
        verify_envelope(&envelope, bytes, key)
    }

    /// Checks that `statements` form one chain (`verify_chain`) whose signers never step
    /// back along the line (`statement-chain`).
    pub fn verify_chain(&self, statements: &mut [Verified]) -> Result<(), StatementError> {
        statements.sort_by_key(|s| s.payload.seq);
        for pair in statements.windows(2) {
            self.check_link(&pair[0].link(), &pair[1])?;
        }
        Ok(())
    }

    /// [`check_link`], and that `b`'s signer is not a key `a`'s signer succeeded.
    pub fn check_link(&self, a: &Link, b: &Verified) -> Result<(), StatementError> {
        check_link(a, b)?;
        let position = |id: &KeyId| self.lineage.iter().position(|k| k.id() == *id);
        if position(&b.signer) < position(&a.signer) {
            return Err(StatementError::Chain {
                reason: format!(
                    "statement {} is signed by key {}, which statement {} shows was already succeeded",
                    b.payload.seq, b.signer, a.seq
                ),
            });
        }
        Ok(())
    }
}
