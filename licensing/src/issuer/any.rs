//! An issuer store chosen at run time: the directory's SQLite file, or the PostgreSQL
//! database its `database.url` names (licensing.md §4.1).

use escx::UnixSeconds;
use escx::manifest::PackageName;
use escx::sig::KeyId;

use super::store::{
    EpochSecret, IssuerReader, IssuerStore, IssuerWriter, LicenseRecord, PgIssuerStore, PgIssuerTx,
    SpentRecord, SqliteIssuerStore, SqliteIssuerTx, StoredContentKey, forward_issuer_reader,
};
use super::{Offer, Sale};
use crate::Error;
use crate::messages::{Epoch, Revoked};

/// A SQLite or PostgreSQL issuer store.
pub enum AnyIssuerStore {
    /// The issuer directory's SQLite file.
    Sqlite(SqliteIssuerStore),
    /// A PostgreSQL database.
    Postgres(Box<PgIssuerStore>),
}

/// A write transaction on an [`AnyIssuerStore`].
pub enum AnyIssuerTx<'a> {
    /// On the SQLite file.
    Sqlite(SqliteIssuerTx<'a>),
    /// On PostgreSQL.
    Postgres(PgIssuerTx<'a>),
}

impl AnyIssuerStore {
    fn reader(&self) -> &dyn IssuerReader {
        match self {
            Self::Sqlite(s) => s,
            Self::Postgres(s) => s.as_ref(),
        }
    }
}

impl AnyIssuerTx<'_> {
    fn reader(&self) -> &dyn IssuerReader {
        match self {
            Self::Sqlite(t) => t,
            Self::Postgres(t) => t,
        }
    }
}

forward_issuer_reader!(AnyIssuerStore, self => self.reader());
forward_issuer_reader!(AnyIssuerTx<'_>, self => self.reader());

impl IssuerStore for AnyIssuerStore {
    type Tx<'a> = AnyIssuerTx<'a>;

    fn begin(&self) -> Result<AnyIssuerTx<'_>, Error> {
        Ok(match self {
            Self::Sqlite(s) => AnyIssuerTx::Sqlite(s.begin()?),
            Self::Postgres(s) => AnyIssuerTx::Postgres(s.begin()?),
        })
    }
}

/// `$call` on whichever transaction `$self` holds.
macro_rules! each {
    ($self:ident, $tx:ident => $call:expr) => {
        match $self {
            AnyIssuerTx::Sqlite($tx) => $call,
            AnyIssuerTx::Postgres($tx) => $call,
        }
    };
}

impl IssuerWriter for AnyIssuerTx<'_> {
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), Error> {
        each!(self, t => t.set_meta(key, value))
    }
    fn insert_epoch(&mut self, epoch: &Epoch, secret: &[u8]) -> Result<(), Error> {
        each!(self, t => t.insert_epoch(epoch, secret))
    }
    fn insert_bundle(&mut self, version: u64, hash: &[u8; 32], bytes: &[u8]) -> Result<(), Error> {
        each!(self, t => t.insert_bundle(version, hash, bytes))
    }
    fn insert_owner(&mut self, scope: &str, key: &KeyId, since: UnixSeconds) -> Result<(), Error> {
        each!(self, t => t.insert_owner(scope, key, since))
    }
    fn put_offer(&mut self, offer: &Offer) -> Result<(), Error> {
        each!(self, t => t.put_offer(offer))
    }
    fn insert_content_key(&mut self, key: &StoredContentKey) -> Result<(), Error> {
        each!(self, t => t.insert_content_key(key))
    }
    fn insert_sale(&mut self, sale: &Sale) -> Result<i64, Error> {
        each!(self, t => t.insert_sale(sale))
    }
    fn insert_issued(&mut self, request_id: &[u8; 32], sale_id: i64, response: &[u8]) -> Result<(), Error> {
        each!(self, t => t.insert_issued(request_id, sale_id, response))
    }
    fn spend(
        &mut self,
        token_id: &[u8; 32],
        at: UnixSeconds,
        redemption_id: &[u8; 32],
        answer: &[u8],
    ) -> Result<bool, Error> {
        each!(self, t => t.spend(token_id, at, redemption_id, answer))
    }
    fn insert_license(&mut self, license: &LicenseRecord) -> Result<(), Error> {
        each!(self, t => t.insert_license(license))
    }
    fn insert_revocation(&mut self, license_id: &[u8], reason: &str, at: UnixSeconds) -> Result<(), Error> {
        each!(self, t => t.insert_revocation(license_id, reason, at))
    }
    fn insert_account(&mut self, name: &str, token_hash: &[u8; 32], at: UnixSeconds) -> Result<(), Error> {
        each!(self, t => t.insert_account(name, token_hash, at))
    }
    fn insert_crl(&mut self, number: u64, bytes: &[u8]) -> Result<(), Error> {
        each!(self, t => t.insert_crl(number, bytes))
    }
    fn insert_sale_account(&mut self, sale_id: i64, account: &str) -> Result<(), Error> {
        each!(self, t => t.insert_sale_account(sale_id, account))
    }
    fn commit(self) -> Result<(), Error> {
        each!(self, t => t.commit())
    }
}
