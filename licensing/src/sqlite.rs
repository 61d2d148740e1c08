//! The one way this crate opens its SQLite stores (issuer, meter, operator): the file
//! created 0600 before SQLite sees it (SQLite gives its `-wal` and `-shm` files the
//! database file's mode), WAL, `synchronous=FULL`, a 30 s busy timeout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use rusqlite::{Connection, Transaction, TransactionBehavior};

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

/// One lock per database file in this process, taken around each write transaction.
///
/// SQLite's busy handler makes a writer that finds the file locked poll with sleeps that
/// grow to 100 ms, so several handles of one process (the service's issuer pool) that
/// contend for the write lock wait far longer than the transactions last. Handles of one
/// process queue on this lock instead and find SQLite's lock free; other processes still
/// meet the busy timeout. It changes no outcome: SQLite serializes the writers either way.
pub(crate) fn write_gate(path: &Path) -> Arc<Mutex<()>> {
    static GATES: OnceLock<Mutex<HashMap<PathBuf, Weak<Mutex<()>>>>> = OnceLock::new();
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut gates = GATES.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
        return gate;
    }
    gates.retain(|_, gate| gate.strong_count() > 0);
    let gate = Arc::new(Mutex::new(()));
    gates.insert(key, Arc::downgrade(&gate));
    gate
}

/// A write transaction (`BEGIN IMMEDIATE`) taken under the file's [`write_gate`], which it
/// holds until it ends.
pub(crate) struct Gated<'a> {
    // Fields drop in order: the transaction ends (rolled back unless committed) before the
    // gate opens.
    tx: Transaction<'a>,
    _gate: MutexGuard<'a, ()>,
}

impl<'a> Gated<'a> {
    pub(crate) fn begin(db: &'a Connection, gate: &'a Mutex<()>) -> Result<Self, Error> {
        // A panic in another transaction left nothing behind: SQLite rolled it back.
        let gate = gate.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = Transaction::new_unchecked(db, TransactionBehavior::Immediate).map_err(sql)?;
        Ok(Self { tx, _gate: gate })
    }

    pub(crate) fn commit(self) -> Result<(), Error> {
        self.tx.commit().map_err(sql)
    }
}

impl<'a> std::ops::Deref for Gated<'a> {
    type Target = Transaction<'a>;

    fn deref(&self) -> &Transaction<'a> {
        &self.tx
    }
}
