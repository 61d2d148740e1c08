//! The in-memory issuer store: the reference every backend must agree with, and a store
//! for embedding the issuer without a disk. Nothing survives the process.

use escx::UnixSeconds;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use escx::header::PackageName;
use escx::sig::KeyId;
use serde_bytes::ByteBuf;

use super::store::{
    IssuerStore, IssuerWriter, LegacySecret, LicenseRecord, SpentRecord, StoredContentKey,
    forward_issuer_reader,
};
use super::{Offer, Sale};
use crate::Error;
use crate::messages::{Epoch, Revoked};

#[derive(Clone, Default)]
struct State {
    meta: BTreeMap<String, String>,
    epochs: BTreeMap<u32, Epoch>,
    bundles: BTreeMap<u64, Vec<u8>>,
    owners: BTreeMap<String, BTreeMap<KeyId, UnixSeconds>>,
    offers: BTreeMap<(PackageName, String), Offer>,
    /// By root.
    content_keys: BTreeMap<[u8; 32], StoredContentKey>,
    sales: Vec<Sale>,
    next_sale: i64,
    issued: BTreeMap<[u8; 32], Vec<u8>>,
    spent: BTreeMap<[u8; 32], SpentRecord>,
    licenses: BTreeMap<[u8; 16], LicenseRecord>,
    revocations: BTreeMap<Vec<u8>, Revoked>,
    /// Token hash -> name.
    accounts: BTreeMap<[u8; 32], String>,
    crls: BTreeMap<u64, Vec<u8>>,
    sale_accounts: BTreeMap<i64, String>,
}

/// The in-memory store.
#[derive(Default)]
pub struct MemoryIssuerStore {
    state: Mutex<State>,
}

/// A write transaction on a [`MemoryIssuerStore`]: it holds the store's lock (so
/// transactions are serial) and writes to a copy that replaces the state on commit.
pub struct MemoryIssuerTx<'a> {
    guard: MutexGuard<'a, State>,
    work: State,
}

impl MemoryIssuerStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left no partial write: writes go to a copy.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl IssuerStore for MemoryIssuerStore {
    type Tx<'a> = MemoryIssuerTx<'a>;

    fn begin(&self) -> Result<MemoryIssuerTx<'_>, Error> {
        let guard = self.lock();
        let work = guard.clone();
        Ok(MemoryIssuerTx { guard, work })
    }
}

forward_issuer_reader!(MemoryIssuerStore, self => self.lock());
forward_issuer_reader!(MemoryIssuerTx<'_>, self => self.work);

fn violation(what: String) -> Error {
    escx_store::Error::failed("", format!("constraint violated: {what}")).into()
}

impl State {
    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.meta.get(key).cloned())
    }

    fn epochs(&self) -> Result<Vec<Epoch>, Error> {
        Ok(self.epochs.values().cloned().collect())
    }

    fn epoch(&self, epoch: u32) -> Result<Option<Epoch>, Error> {
        Ok(self.epochs.get(&epoch).cloned())
    }

    fn legacy_epoch_secrets(&self) -> Result<Vec<LegacySecret>, Error> {
        // A memory store is never of an earlier version.
        Ok(Vec::new())
    }

    fn bundles(&self) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        Ok(self.bundles.iter().map(|(v, b)| (*v, b.clone())).collect())
    }

    fn offer(&self, package: &PackageName, tier: &str) -> Result<Option<Offer>, Error> {
        Ok(self.offers.get(&(package.clone(), tier.to_owned())).cloned())
    }

    fn scope_owners(&self, scope: &str) -> Result<Vec<KeyId>, Error> {
        let mut owners: Vec<KeyId> =
            self.owners.get(scope).map(|o| o.keys().copied().collect()).unwrap_or_default();
        owners.sort_by_key(|k| k.0);
        Ok(owners)
    }

    fn content_key_by_fingerprint(&self, fingerprint: &[u8; 32]) -> Result<Option<StoredContentKey>, Error> {
        Ok(self.content_keys.values().find(|k| &k.fingerprint == fingerprint).cloned())
    }

    fn content_keys(&self, package: &PackageName) -> Result<Vec<StoredContentKey>, Error> {
        Ok(self.content_keys.values().filter(|k| k.package == *package).cloned().collect())
    }

    fn issued(&self, request_id: &[u8; 32]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.issued.get(request_id).cloned())
    }

    fn spent(&self, token_id: &[u8; 32]) -> Result<Option<SpentRecord>, Error> {
        Ok(self.spent.get(token_id).cloned())
    }

    fn license_exists(&self, license_id: &[u8]) -> Result<bool, Error> {
        Ok(<[u8; 16]>::try_from(license_id).is_ok_and(|id| self.licenses.contains_key(&id)))
    }

    fn account_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<String>, Error> {
        Ok(self.accounts.get(token_hash).cloned())
    }

    fn account_exists(&self, name: &str) -> Result<bool, Error> {
        Ok(self.accounts.values().any(|n| n == name))
    }

    fn account_names(&self) -> Result<Vec<String>, Error> {
        let mut names: Vec<String> = self.accounts.values().cloned().collect();
        names.sort();
        Ok(names)
    }

    fn latest_crl(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.crls.values().next_back().cloned())
    }

    fn sale_account(&self, sale_id: i64) -> Result<Option<String>, Error> {
        Ok(self.sale_accounts.get(&sale_id).cloned())
    }

    fn revocations(&self) -> Result<Vec<Revoked>, Error> {
        Ok(self.revocations.values().cloned().collect())
    }

    fn sales(&self) -> Result<Vec<Sale>, Error> {
        Ok(self.sales.clone())
    }
}

impl IssuerWriter for MemoryIssuerTx<'_> {
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.work.meta.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn insert_epoch(&mut self, epoch: &Epoch) -> Result<(), Error> {
        if self.work.epochs.contains_key(&epoch.epoch) {
            return Err(violation(format!("epoch {} exists", epoch.epoch)));
        }
        self.work.epochs.insert(epoch.epoch, epoch.clone());
        Ok(())
    }

    fn clear_legacy_epoch_secrets(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn insert_bundle(&mut self, version: u64, _hash: &[u8; 32], bytes: &[u8]) -> Result<(), Error> {
        if self.work.bundles.contains_key(&version) {
            return Err(violation(format!("bundle version {version} exists")));
        }
        self.work.bundles.insert(version, bytes.to_vec());
        Ok(())
    }

    fn insert_owner(&mut self, scope: &str, key: &KeyId, since: UnixSeconds) -> Result<(), Error> {
        self.work.owners.entry(scope.to_owned()).or_default().entry(*key).or_insert(since);
        Ok(())
    }

    fn put_offer(&mut self, offer: &Offer) -> Result<(), Error> {
        self.work.offers.insert((offer.package.clone(), offer.tier.clone()), offer.clone());
        Ok(())
    }

    fn insert_content_key(&mut self, key: &StoredContentKey) -> Result<(), Error> {
        if self.work.content_keys.contains_key(&key.root)
            || self.work.content_keys.values().any(|k| k.fingerprint == key.fingerprint)
        {
            return Err(violation("content key root or fingerprint exists".into()));
        }
        self.work.content_keys.insert(key.root, key.clone());
        Ok(())
    }

    fn insert_sale(&mut self, sale: &Sale) -> Result<i64, Error> {
        self.work.next_sale += 1;
        let id = self.work.next_sale;
        self.work.sales.push(Sale { id, ..sale.clone() });
        Ok(id)
    }

    fn insert_account(&mut self, name: &str, token_hash: &[u8; 32], _at: UnixSeconds) -> Result<(), Error> {
        if self.work.accounts.contains_key(token_hash) || self.work.account_exists(name)? {
            return Err(violation(format!("account {name:?} exists")));
        }
        self.work.accounts.insert(*token_hash, name.to_owned());
        Ok(())
    }

    fn delete_account(&mut self, name: &str) -> Result<bool, Error> {
        let before = self.work.accounts.len();
        self.work.accounts.retain(|_, n| n != name);
        Ok(self.work.accounts.len() != before)
    }

    fn insert_crl(&mut self, number: u64, bytes: &[u8]) -> Result<(), Error> {
        if self.work.crls.insert(number, bytes.to_vec()).is_some() {
            return Err(violation(format!("CRL {number} exists")));
        }
        Ok(())
    }

    fn insert_sale_account(&mut self, sale_id: i64, account: &str) -> Result<(), Error> {
        self.work.sale_accounts.insert(sale_id, account.to_owned());
        Ok(())
    }

    fn insert_issued(&mut self, request_id: &[u8; 32], _sale_id: i64, response: &[u8]) -> Result<(), Error> {
        if self.work.issued.contains_key(request_id) {
            return Err(violation("request answered already".into()));
        }
        self.work.issued.insert(*request_id, response.to_vec());
        Ok(())
    }

    fn spend(
        &mut self,
        token_id: &[u8; 32],
        _at: UnixSeconds,
        redemption_id: &[u8; 32],
        answer: &[u8],
    ) -> Result<bool, Error> {
        if self.work.spent.contains_key(token_id) {
            return Ok(false);
        }
        self.work.spent.insert(
            *token_id,
            SpentRecord { redemption_id: Some(*redemption_id), answer: Some(answer.to_vec()) },
        );
        Ok(true)
    }

    fn insert_license(&mut self, license: &LicenseRecord) -> Result<(), Error> {
        if self.work.licenses.contains_key(&license.license_id) {
            return Err(violation("license id exists".into()));
        }
        self.work.licenses.insert(license.license_id, license.clone());
        Ok(())
    }

    fn insert_revocation(&mut self, license_id: &[u8], reason: &str, at: UnixSeconds) -> Result<(), Error> {
        self.work.revocations.entry(license_id.to_vec()).or_insert_with(|| Revoked {
            license_id: ByteBuf::from(license_id.to_vec()),
            reason: reason.to_owned(),
            revoked_at: at,
        });
        Ok(())
    }

    fn commit(mut self) -> Result<(), Error> {
        *self.guard = std::mem::take(&mut self.work);
        Ok(())
    }
}
