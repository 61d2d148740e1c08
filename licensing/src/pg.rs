//! What this crate's PostgreSQL stores (the issuer's, the operator's) share: the mapping of
//! PostgreSQL's errors onto [`Error`], and connecting with the store's schema brought up
//! to date.

use std::path::Path;

use postgres::{Client, NoTls, Transaction};

use crate::Error;

/// In an issuer or operator directory, the file naming the PostgreSQL database that holds
/// its store instead of the directory's SQLite file (licensing.md §4.1, metering.md §6.4).
/// It may hold a password, so it is written 0600.
pub const DATABASE_URL_FILE: &str = "database.url";

/// The URL in `dir/database.url`, or `None` when the directory has none (its store is
/// SQLite).
pub(crate) fn database_url(dir: &Path) -> Result<Option<String>, Error> {
    let path = dir.join(DATABASE_URL_FILE);
    match std::fs::read_to_string(&path) {
        Ok(url) => Ok(Some(url.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(escx::Error::io(&path, e).into()),
    }
}

/// Checks that `dir` is missing or empty and creates it 0700: where a PostgreSQL-backed
/// directory is made.
pub(crate) fn create_empty_dir(dir: &Path) -> Result<(), Error> {
    if std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some()) {
        return Err(Error::Store(format!("{} is not empty", dir.display())));
    }
    escx::fsutil::create_private_dir(dir)?;
    Ok(())
}

/// Writes `dir/database.url` (0600), never over an existing one.
pub(crate) fn write_database_url(dir: &Path, url: &str) -> Result<(), Error> {
    escx::fsutil::write_atomic(
        &dir.join(DATABASE_URL_FILE),
        format!("{url}\n").as_bytes(),
        escx::fsutil::MODE_SECRET,
        false,
    )?;
    Ok(())
}

/// A PostgreSQL error as this crate's: a serialization failure (SQLSTATE 40001) or a
/// deadlock (40P01) is [`Error::Busy`], which the stores' callers run again; anything else
/// is [`Error::Store`].
pub(crate) fn failure(e: &postgres::Error) -> Error {
    use postgres::error::SqlState;
    let reason = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => format!("PostgreSQL: {e}"),
    };
    match e.code() {
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            Error::Busy(reason)
        }
        _ => Error::Store(reason),
    }
}

/// An advisory lock key: the first 8 bytes of BLAKE3(`context`), big-endian, signed.
fn lock_key(context: &str) -> i64 {
    let hash = blake3::hash(context.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_be_bytes(first)
}

/// Connects to `url` and brings the store's `schema` up to date: in one transaction,
/// under the advisory lock of `lock_context` (so two nodes starting at once migrate once),
/// `migrate` runs with the version found in `meta` (0 when there is no `meta` table yet)
/// and returns the version it left. A version above `version` is refused. The session's
/// `search_path` is then the schema.
pub(crate) fn connect(
    url: &str,
    schema: &str,
    lock_context: &str,
    what: &str,
    version: i64,
    migrate: impl FnOnce(&mut Transaction<'_>, i64) -> Result<(), Error>,
) -> Result<Client, Error> {
    let mut client = Client::connect(url, NoTls).map_err(|e| failure(&e))?;
    let mut tx = client.transaction().map_err(|e| failure(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(lock_context)]).map_err(|e| failure(&e))?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}"))
        .map_err(|e| failure(&e))?;
    let exists: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{schema}.meta")])
        .and_then(|r| r.try_get(0))
        .map_err(|e| failure(&e))?;
    let found: i64 = if exists {
        let value: Option<String> = tx
            .query_opt("SELECT value FROM meta WHERE key = 'schema'", &[])
            .map_err(|e| failure(&e))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| failure(&e))?;
        value.map_or(Ok(0), |v| {
            v.parse().map_err(|_| Error::Store(format!("{what}: bad schema version {v:?} in {schema}.meta")))
        })?
    } else {
        0
    };
    if found > version {
        return Err(Error::Store(format!(
            "the {what} schema in this database is version {found}, newer than this build's {version}; upgrade escx"
        )));
    }
    migrate(&mut tx, found)?;
    tx.commit().map_err(|e| failure(&e))?;
    client.batch_execute(&format!("SET search_path TO {schema}")).map_err(|e| failure(&e))?;
    Ok(client)
}

/// Connects to `url` again, with the session's `search_path` the store's `schema` (the
/// schema is known to be current: it was when the store was opened).
pub(crate) fn reconnect(url: &str, schema: &str) -> Result<Client, Error> {
    let mut client = Client::connect(url, NoTls).map_err(|e| failure(&e))?;
    client.batch_execute(&format!("SET search_path TO {schema}")).map_err(|e| failure(&e))?;
    Ok(client)
}
