//! Purchase accounts: bearer tokens the service checks before a purchase (service.md §3).

use super::*;

impl<S: IssuerStore> Issuer<S> {
    /// Creates a purchase account and returns its bearer token (service.md §3): 32 random
    /// bytes as hex, shown once; the store keeps only its hash.
    pub fn add_account(&self, name: &str, now: UnixSeconds) -> Result<Zeroizing<String>, Error> {
        retrying(|| self.add_account_once(name, now))
    }

    pub(super) fn add_account_once(&self, name: &str, now: UnixSeconds) -> Result<Zeroizing<String>, Error> {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(Error::Malformed {
                what: "account name",
                reason: "an account name is 1 to 128 characters without control characters".into(),
            });
        }
        let mut token = Zeroizing::new([0u8; 32]);
        escx::keyfile::fill_random(&mut token[..])?;
        let text = Zeroizing::new(hex::encode(*token));
        let mut tx = self.store.begin()?;
        if tx.account_exists(name)? {
            return Err(Error::AccountExists { name: name.to_owned() });
        }
        tx.insert_account(name, &account_token_hash(&text), now)?;
        tx.commit()?;
        Ok(text)
    }

    /// Every purchase account's name, in order.
    pub fn accounts(&self) -> Result<Vec<String>, Error> {
        self.store.account_names()
    }

    /// Revokes a purchase account: its token is refused from the next purchase on, on
    /// every node sharing the store (service.md §3). Its past sales keep its name.
    pub fn revoke_account(&self, name: &str) -> Result<(), Error> {
        retrying(|| {
            let mut tx = self.store.begin()?;
            if !tx.delete_account(name)? {
                return Err(Error::UnknownAccount { name: name.to_owned() });
            }
            tx.commit()
        })
    }

    /// The account a bearer token belongs to, if any.
    pub fn account(&self, token: &str) -> Result<Option<String>, Error> {
        self.store.account_by_token(&account_token_hash(token))
    }
}
