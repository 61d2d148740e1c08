//! The one way this crate opens its SQLite stores (issuer, meter, operator): the file
//! created 0600 before SQLite sees it (SQLite gives its `-wal` and `-shm` files the
//! database file's mode), WAL, `synchronous=FULL`, a 30 s busy timeout.

use std::path::Path;

use rusqlite::Connection;

use crate::Error;

pub(crate) fn sql(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

/// Opens (creating if needed) a private database at `path`.
pub(crate) fn open_private(path: &Path) -> Result<Connection, Error> {
    escx::fsutil::create_private_database(path)?;
    let db = Connection::open(path).map_err(sql)?;
    db.busy_timeout(std::time::Duration::from_secs(30)).map_err(sql)?;
    db.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
    db.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
    Ok(db)
}

/// Whether the schema's `meta` table exists yet.
pub(crate) fn has_meta(db: &Connection) -> Result<bool, Error> {
    db.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n > 0)
    .map_err(sql)
}
