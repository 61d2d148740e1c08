//! Storage behind the issuer (spec: licensing.md §4).
//!
//! The issuer ([`super::Issuer`]) decides what to write; an [`IssuerStore`] only keeps rows
//! and runs transactions. Two backends implement it: [`SqlIssuerStore`] (the product: one
//! set of statements on SQLite or PostgreSQL, through `escx_store`) and
//! [`MemoryIssuerStore`] (tests, embedding without a disk, and the reference the SQL store
//! is compared with; see `licensing/tests/issuer_stores.rs`). A backend must give every [`IssuerStore::begin`]
//! transaction serializable isolation: the issuer re-reads what it depends on (an earlier
//! answer to the same request, the spent set, the CRL number) inside the transaction.
//!
//! What a store holds never links a purchase to a redemption (licensing.md §6): a sale
//! has no token data, and a spent token is a hash of an input the issuer never saw blinded.

use escx::UnixSeconds;
use escx::header::PackageName;
use escx::sig::KeyId;
use zeroize::Zeroizing;

use super::{Offer, Sale};
use crate::Error;
use crate::messages::{Epoch, Revoked};

pub use super::memory::{MemoryIssuerStore, MemoryIssuerTx};
pub use super::sql::{SqlIssuerStore, SqlIssuerTx};

/// Implements [`IssuerReader`] for `$type` by forwarding every query to `$inner`, an
/// expression over `$self` whose type has the same methods.
macro_rules! forward_issuer_reader {
    ($type:ty, $self:ident => $inner:expr) => {
        impl $crate::issuer::store::IssuerReader for $type {
            fn meta(&$self, key: &str) -> Result<Option<String>, Error> { $inner.meta(key) }
            fn epochs(&$self) -> Result<Vec<Epoch>, Error> { $inner.epochs() }
            fn epoch(&$self, epoch: u32) -> Result<Option<Epoch>, Error> { $inner.epoch(epoch) }
            fn legacy_epoch_secrets(&$self) -> Result<Vec<LegacySecret>, Error> { $inner.legacy_epoch_secrets() }
            fn bundles(&$self) -> Result<Vec<(u64, Vec<u8>)>, Error> { $inner.bundles() }
            fn offer(&$self, package: &PackageName, tier: &str) -> Result<Option<Offer>, Error> { $inner.offer(package, tier) }
            fn scope_owners(&$self, scope: &str) -> Result<Vec<KeyId>, Error> { $inner.scope_owners(scope) }
            fn content_key_by_fingerprint(&$self, fingerprint: &[u8; 32]) -> Result<Option<StoredContentKey>, Error> { $inner.content_key_by_fingerprint(fingerprint) }
            fn content_keys(&$self, package: &PackageName) -> Result<Vec<StoredContentKey>, Error> { $inner.content_keys(package) }
            fn issued(&$self, request_id: &[u8; 32]) -> Result<Option<Vec<u8>>, Error> { $inner.issued(request_id) }
            fn spent(&$self, token_id: &[u8; 32]) -> Result<Option<SpentRecord>, Error> { $inner.spent(token_id) }
            fn license_exists(&$self, license_id: &[u8]) -> Result<bool, Error> { $inner.license_exists(license_id) }
            fn revocations(&$self) -> Result<Vec<Revoked>, Error> { $inner.revocations() }
            fn sales(&$self) -> Result<Vec<Sale>, Error> { $inner.sales() }
            fn account_by_token(&$self, token_hash: &[u8; 32]) -> Result<Option<String>, Error> { $inner.account_by_token(token_hash) }
            fn account_exists(&$self, name: &str) -> Result<bool, Error> { $inner.account_exists(name) }
            fn account_names(&$self) -> Result<Vec<String>, Error> { $inner.account_names() }
            fn latest_crl(&$self) -> Result<Option<Vec<u8>>, Error> { $inner.latest_crl() }
            fn sale_account(&$self, sale_id: i64) -> Result<Option<String>, Error> { $inner.sale_account(sale_id) }
        }
    };
}
pub(crate) use forward_issuer_reader;

/// An epoch's POPRF secret key as an earlier version stored it: the epoch and the scalar.
pub type LegacySecret = (u32, Zeroizing<Vec<u8>>);

/// A registered content key (licensing.md §8.1), sealed to the issuer's KEM key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContentKey {
    /// The signed root of the package file it decrypts.
    pub root: [u8; 32],
    /// Package name.
    pub package: PackageName,
    /// Package version.
    pub version: String,
    /// BLAKE3 of the encrypted payload (part of the content binding).
    pub payload_hash: [u8; 32],
    /// The key's fingerprint: one key, one package file.
    pub fingerprint: [u8; 32],
    /// The content-key section's sealed box.
    pub sealed: Vec<u8>,
}

/// A spent token's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpentRecord {
    /// The redemption that spent it (`None` for tokens spent before schema 2).
    pub redemption_id: Option<[u8; 32]>,
    /// The sealed answer it got (`None` likewise).
    pub answer: Option<Vec<u8>>,
}

/// An issued license's row: what the issuer needs to revoke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseRecord {
    /// License id (16 bytes).
    pub license_id: [u8; 16],
    /// Package.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// Valid from (Unix seconds).
    pub not_before: UnixSeconds,
    /// Valid until.
    pub not_after: UnixSeconds,
}

/// Queries, outside or inside a transaction.
pub trait IssuerReader {
    /// A `meta` value (`name`, `crl_number`).
    fn meta(&self, key: &str) -> Result<Option<String>, Error>;
    /// Every epoch's public half, by epoch number.
    fn epochs(&self) -> Result<Vec<Epoch>, Error>;
    /// One epoch's public half.
    fn epoch(&self, epoch: u32) -> Result<Option<Epoch>, Error>;
    /// The POPRF secret keys an issuer of an earlier version stored with its epochs, by
    /// epoch (licensing.md §4): opening the issuer moves them to its `poprf.key` and
    /// clears them. Empty for every store written by this version.
    fn legacy_epoch_secrets(&self) -> Result<Vec<LegacySecret>, Error>;
    /// Every published bundle version and its bytes, by version.
    fn bundles(&self) -> Result<Vec<(u64, Vec<u8>)>, Error>;
    /// The offer for (package, tier).
    fn offer(&self, package: &PackageName, tier: &str) -> Result<Option<Offer>, Error>;
    /// The owner key ids of a scope, by key id.
    fn scope_owners(&self, scope: &str) -> Result<Vec<KeyId>, Error>;
    /// The content key with this fingerprint.
    fn content_key_by_fingerprint(&self, fingerprint: &[u8; 32]) -> Result<Option<StoredContentKey>, Error>;
    /// Every content key of a package, by root.
    fn content_keys(&self, package: &PackageName) -> Result<Vec<StoredContentKey>, Error>;
    /// The stored answer to a purchase request.
    fn issued(&self, request_id: &[u8; 32]) -> Result<Option<Vec<u8>>, Error>;
    /// A spent token's row.
    fn spent(&self, token_id: &[u8; 32]) -> Result<Option<SpentRecord>, Error>;
    /// Whether a license with this id was issued.
    fn license_exists(&self, license_id: &[u8]) -> Result<bool, Error>;
    /// Every revocation, by license id.
    fn revocations(&self) -> Result<Vec<Revoked>, Error>;
    /// Every sale, by id.
    fn sales(&self) -> Result<Vec<Sale>, Error>;
    /// The account whose token hashes to `token_hash` (service.md §3).
    fn account_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<String>, Error>;
    /// Whether an account has this name.
    fn account_exists(&self, name: &str) -> Result<bool, Error>;
    /// Every account's name, in order.
    fn account_names(&self) -> Result<Vec<String>, Error>;
    /// The newest CRL signed, as signed.
    fn latest_crl(&self) -> Result<Option<Vec<u8>>, Error>;
    /// The account a sale was made to, when it was made over the service.
    fn sale_account(&self, sale_id: i64) -> Result<Option<String>, Error>;
}

/// Writes, inside a transaction.
pub trait IssuerWriter: IssuerReader {
    /// Sets a `meta` value.
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error>;
    /// Inserts an epoch's public half (its number must be new).
    fn insert_epoch(&mut self, epoch: &Epoch) -> Result<(), Error>;
    /// Erases the stored secret keys [`IssuerReader::legacy_epoch_secrets`] lists.
    fn clear_legacy_epoch_secrets(&mut self) -> Result<(), Error>;
    /// Inserts a bundle version (its number must be new).
    fn insert_bundle(&mut self, version: u64, hash: &[u8; 32], bytes: &[u8]) -> Result<(), Error>;
    /// Adds an owner to a scope (no-op if it is one already).
    fn insert_owner(&mut self, scope: &str, key: &KeyId, since: UnixSeconds) -> Result<(), Error>;
    /// Inserts or replaces the offer for its (package, tier).
    fn put_offer(&mut self, offer: &Offer) -> Result<(), Error>;
    /// Inserts a content key (its root and fingerprint must be new).
    fn insert_content_key(&mut self, key: &StoredContentKey) -> Result<(), Error>;
    /// Inserts a sale; `sale.id` is ignored and the id assigned (one more than the last
    /// ever assigned, from 1) is returned.
    fn insert_sale(&mut self, sale: &Sale) -> Result<i64, Error>;
    /// Records the answer to a purchase request (the request id must be new).
    fn insert_issued(&mut self, request_id: &[u8; 32], sale_id: i64, response: &[u8]) -> Result<(), Error>;
    /// Adds a token to the spent set with the redemption and answer. Returns `false`, and
    /// changes nothing, when the token is spent already.
    fn spend(
        &mut self,
        token_id: &[u8; 32],
        at: UnixSeconds,
        redemption_id: &[u8; 32],
        answer: &[u8],
    ) -> Result<bool, Error>;
    /// Inserts an issued license (its id must be new).
    fn insert_license(&mut self, license: &LicenseRecord) -> Result<(), Error>;
    /// Revokes a license (no-op, keeping the first reason and time, if revoked already).
    fn insert_revocation(&mut self, license_id: &[u8], reason: &str, at: UnixSeconds) -> Result<(), Error>;
    /// Adds an account (its name and token hash must be new).
    fn insert_account(&mut self, name: &str, token_hash: &[u8; 32], at: UnixSeconds) -> Result<(), Error>;
    /// Removes an account and so its token; whether it existed. Its sales keep its name.
    fn delete_account(&mut self, name: &str) -> Result<bool, Error>;
    /// Keeps a signed CRL (its number must be new).
    fn insert_crl(&mut self, number: u64, bytes: &[u8]) -> Result<(), Error>;
    /// Records the account a sale was made to.
    fn insert_sale_account(&mut self, sale_id: i64, account: &str) -> Result<(), Error>;
    /// Makes every write of the transaction durable at once. Dropping the transaction
    /// without committing discards them.
    fn commit(self) -> Result<(), Error>;
}

/// An issuer store: queries, and serializable write transactions.
pub trait IssuerStore: IssuerReader {
    /// A write transaction.
    type Tx<'a>: IssuerWriter
    where
        Self: 'a;
    /// Begins a write transaction (exclusive for writers, serializable).
    fn begin(&self) -> Result<Self::Tx<'_>, Error>;
}
