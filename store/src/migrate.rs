//! A store's schema and its migrations: what each store declares, and the one way they
//! run. Opening a store reads its schema version, refuses a newer one, and applies the
//! steps it lacks and the new version in one transaction: on SQLite `BEGIN IMMEDIATE`, on
//! PostgreSQL under the transaction advisory lock of the store's lock context, so two
//! processes or nodes opening it at once migrate it once.

use crate::db::{Arg, Db, Sql, Tx};
use crate::{Error, Kind};

/// Where a store keeps the number of steps applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// SQLite's `PRAGMA user_version`.
    UserVersion,
    /// The `meta` table's `schema` row (a `meta` table without one is version 1).
    Meta,
    /// A table `escx_schema (version)`.
    VersionTable,
}

/// One engine's migrations.
#[derive(Debug)]
pub struct Migrations {
    /// Step `n` (1-based) takes the version from `n - 1` to `n`.
    pub steps: &'static [&'static str],
    /// Where the version is kept.
    pub mark: Mark,
}

impl Migrations {
    /// The version this build writes: the number of steps.
    pub fn version(&self) -> i64 {
        i64::try_from(self.steps.len()).unwrap_or(i64::MAX)
    }
}

/// What a store declares about its tables.
#[derive(Debug)]
pub struct Schema {
    /// What the store is (`ledger`, `issuer`, `operator`, `meter`), for messages.
    pub what: &'static str,
    /// The PostgreSQL schema the tables live in (each transaction names it with `SET
    /// LOCAL search_path`); `None`: the connection's default schema.
    pub pg_schema: Option<&'static str>,
    /// The context of the store's advisory lock key ([`lock_key`]): migrations, and
    /// [`Db::begin_exclusive`], take it.
    pub lock: &'static str,
    /// The SQLite migrations.
    pub sqlite: Migrations,
    /// The PostgreSQL migrations.
    pub postgres: Migrations,
}

/// Whether opening may create the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// It must not exist yet.
    Create,
    /// It must exist.
    Open,
    /// Created if it does not exist.
    OpenOrCreate,
}

/// An advisory lock key: the first 8 bytes of BLAKE3(`context`) as a big-endian signed
/// 64-bit integer, the same for every build.
pub fn lock_key(context: &str) -> i64 {
    let hash = blake3::hash(context.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_be_bytes(first)
}

/// Brings the store's schema up to date (see the module).
pub(crate) fn run(db: &Db, mode: Mode, init: impl FnOnce(&Tx<'_>) -> Result<(), Error>) -> Result<(), Error> {
    let schema = db.schema();
    let postgres = db.is_postgres();
    let migrations = if postgres { &schema.postgres } else { &schema.sqlite };
    let tx = if postgres { db.begin_exclusive()? } else { db.begin()? };
    if let Some(name) = schema.pg_schema.filter(|_| postgres) {
        tx.batch(&format!("CREATE SCHEMA IF NOT EXISTS {name}"))?;
    }
    let found = version(&tx, migrations.mark, postgres)?;
    let location = db.location();
    match (mode, found) {
        (Mode::Create, 1..) => {
            return Err(Error::failed(
                location,
                format!(
                    "holds an escx {} already; open it instead of creating one (another node uses a copy \
                     of the first node's directory, or the same URL)",
                    schema.what
                ),
            ));
        }
        (Mode::Open, 0) => {
            return Err(if has_tables(&tx, postgres)? {
                Error::new(Kind::Schema, location, format!("not an escx {}", schema.what))
            } else {
                Error::failed(location, format!("no escx {} here; create one first", schema.what))
            });
        }
        (_, found) if found > migrations.version() => {
            return Err(Error::new(
                Kind::Schema,
                location,
                format!(
                    "the {} schema here is version {found}, newer than this build's {}; upgrade escx",
                    schema.what,
                    migrations.version()
                ),
            ));
        }
        _ => {}
    }
    if found == migrations.version() {
        return tx.commit();
    }
    if found == 0 && migrations.mark == Mark::VersionTable {
        tx.batch("CREATE TABLE escx_schema (version BIGINT NOT NULL); INSERT INTO escx_schema VALUES (0)")?;
    }
    for step in migrations.steps.iter().skip(usize::try_from(found).unwrap_or(0)) {
        tx.batch(step)?;
    }
    let version = migrations.version();
    match migrations.mark {
        Mark::UserVersion => tx.batch(&format!("PRAGMA user_version = {version}"))?,
        Mark::Meta => {
            tx.exec(
                "INSERT INTO meta (key, value) VALUES ('schema', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[Arg::Text(&version.to_string())],
            )?;
        }
        Mark::VersionTable => {
            tx.exec("UPDATE escx_schema SET version = ?1", &[Arg::Int(version)])?;
        }
    }
    if found == 0 {
        init(&tx)?;
    }
    tx.commit()
}

/// The version found (0: no store here).
fn version(tx: &Tx<'_>, mark: Mark, postgres: bool) -> Result<i64, Error> {
    let exists = |table: &str| -> Result<bool, Error> {
        let row = if postgres {
            tx.one("SELECT CASE WHEN to_regclass(?1) IS NULL THEN 0 ELSE 1 END", &[Arg::Text(table)])?
        } else {
            tx.one(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                &[Arg::Text(table)],
            )?
        };
        Ok(row.int(0)? > 0)
    };
    match mark {
        Mark::UserVersion => tx.one("PRAGMA user_version", &[])?.int(0),
        Mark::Meta => {
            if !exists("meta")? {
                return Ok(0);
            }
            match tx.row("SELECT value FROM meta WHERE key = 'schema'", &[])? {
                None => Ok(1),
                // Text, or an integer in stores whose `meta.value` column is untyped.
                Some(row) => match row.cells().first() {
                    Some(crate::Cell::Int(version)) => Ok(*version),
                    _ => {
                        let text = row.text(0)?;
                        text.parse()
                            .map_err(|_| Error::corrupt(tx.location(), format!("schema version {text:?}")))
                    }
                },
            }
        }
        Mark::VersionTable => {
            if !exists("escx_schema")? {
                return Ok(0);
            }
            Ok(tx.row("SELECT version FROM escx_schema", &[])?.map(|r| r.int(0)).transpose()?.unwrap_or(0))
        }
    }
}

/// Whether the database (the store's PostgreSQL schema) holds any table.
fn has_tables(tx: &Tx<'_>, postgres: bool) -> Result<bool, Error> {
    let row = if postgres {
        tx.one("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()", &[])?
    } else {
        tx.one("SELECT count(*) FROM sqlite_master WHERE type = 'table'", &[])?
    };
    Ok(row.int(0)? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_fixed() {
        // Nodes of different builds must agree on them.
        let hash = blake3::hash(b"escx v1 ledger writer lock");
        assert_eq!(lock_key("escx v1 ledger writer lock").to_be_bytes(), hash.as_bytes()[..8]);
    }
}
