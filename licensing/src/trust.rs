//! What a licensed program trusts (licensing.md §5.5): the issuers whose licenses it
//! accepts, and how old the revocation list it relies on may be.
//!
//! The wallet belongs to the customer, who can put any issuer in it (`escx issuer init`
//! makes one in a second) and delete any file in it. So a verdict rests on a [`Trust`]
//! the vendor builds into the program, never on what the wallet holds: a license signed
//! by any other issuer is `license-wrong-issuer`, and revocation is only as fresh as the
//! newest time the issuer signed that the wallet still holds.

use crate::Error;
use crate::messages::BundleChain;
use escx::sig::KeyId;

/// Default [`Trust::crl_max_age`]: 7 days.
pub const CRL_MAX_AGE_SECS: u64 = 7 * 86_400;
/// Default [`Trust::crl_grace`]: 7 days.
pub const CRL_GRACE_SECS: u64 = 7 * 86_400;

/// The issuers a program accepts licenses from, and its revocation freshness rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    issuers: Vec<KeyId>,
    crl_max_age: u64,
    crl_grace: u64,
}

impl Trust {
    /// Accepts licenses signed by the issuer key `id` (an issuer's id is its ML-DSA-87
    /// signing key's id; it never changes across bundle versions).
    pub fn issuer(id: KeyId) -> Self {
        Self { issuers: vec![id], crl_max_age: CRL_MAX_AGE_SECS, crl_grace: CRL_GRACE_SECS }
    }

    /// Accepts licenses from the issuer of a bundle chain the vendor ships.
    pub fn chain(chain: &BundleChain) -> Self {
        Self::issuer(chain.issuer_id())
    }

    /// Accepts licenses from the issuer of a bundle chain file (`escx issuer publish`),
    /// verified first.
    pub fn from_chain_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Ok(Self::chain(&BundleChain::parse(bytes)?))
    }

    /// Also accepts licenses from `id`.
    #[must_use]
    pub fn and_issuer(mut self, id: KeyId) -> Self {
        if !self.issuers.contains(&id) {
            self.issuers.push(id);
        }
        self
    }

    /// How old (seconds) the newest signed time the wallet holds from the issuer may be
    /// before checks pass only with a warning (default [`CRL_MAX_AGE_SECS`]).
    #[must_use]
    pub fn with_crl_max_age(mut self, secs: u64) -> Self {
        self.crl_max_age = secs;
        self
    }

    /// How long (seconds) after the maximum age checks still pass, with a warning, before
    /// they fail with `crl-too-old` (default [`CRL_GRACE_SECS`]).
    #[must_use]
    pub fn with_crl_grace(mut self, secs: u64) -> Self {
        self.crl_grace = secs;
        self
    }

    /// The issuers accepted.
    pub fn issuers(&self) -> &[KeyId] {
        &self.issuers
    }

    /// Whether licenses signed by `id` are accepted.
    pub fn accepts(&self, id: KeyId) -> bool {
        self.issuers.contains(&id)
    }

    /// The maximum age, seconds.
    pub fn crl_max_age(&self) -> u64 {
        self.crl_max_age
    }

    /// The grace period after the maximum age, seconds.
    pub fn crl_grace(&self) -> u64 {
        self.crl_grace
    }
}
