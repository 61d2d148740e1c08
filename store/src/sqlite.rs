//! Opening a SQLite store: the file private before SQLite sees it, WAL, `synchronous=FULL`,
//! a busy timeout, foreign keys; and the in-process write gate.
//!
//! Nothing here opens a database file, or its `-wal`, `-shm` or `-journal`, except through
//! SQLite. On POSIX, closing any descriptor of a file drops every lock the process holds
//! on it: a plain open and close of the database while the process has a connection to it
//! silently releases that connection's locks, and another process then takes itself for
//! the last connection, checkpoints and deletes the write-ahead log under the first one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::{Error, Kind};

/// How long a connection waits for another process's write lock.
pub const BUSY_TIMEOUT_SECS: u64 = 30;

/// A SQLite error as the layer's, at `path`.
pub(crate) fn failure(path: &Path, e: &rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let kind = match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Kind::Busy,
            ErrorCode::DatabaseCorrupt => Kind::Corrupt,
            ErrorCode::NotADatabase => Kind::Schema,
            _ => Kind::Failed,
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => Kind::Corrupt,
        _ => Kind::Failed,
    };
    let reason = match kind {
        Kind::Schema => "not a SQLite database".to_owned(),
        _ => e.to_string(),
    };
    Error::new(kind, path.display().to_string(), reason)
}

/// Makes sure the database `path` exists with mode 0600 before SQLite opens it, opening
/// nothing that may already be open: a missing file is created exclusively (no connection
/// can exist to a file that did not exist), and an existing one, or a `-wal`, `-shm` or
/// `-journal` beside it (of an older escx), is only tightened by path. SQLite creates its
/// sidecar files with the database file's mode, so they are private too.
pub(crate) fn create_private(path: &Path) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::failed(path.display().to_string(), e.to_string());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(escx::fsutil::MODE_SECRET);
    }
    match options.open(path) {
        Ok(file) => escx::fsutil::set_mode(&file, escx::fsutil::MODE_SECRET).map_err(io)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tighten(path)?,
        Err(e) => return Err(io(e)),
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(suffix);
        tighten(Path::new(&sidecar))?;
    }
    Ok(())
}

/// Sets mode 0600 on `path` if others may read it: `stat` and `chmod` by path, which open
/// no descriptor.
#[cfg(unix)]
fn tighten(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| Error::failed(path.display().to_string(), e.to_string());
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(escx::fsutil::MODE_SECRET))
                .map_err(io)
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

#[cfg(not(unix))]
fn tighten(_path: &Path) -> Result<(), Error> {
    Ok(())
}

/// Opens the database at `path`: with `create`, creating it (and its directory, 0700) if
/// missing; without, refusing a missing file.
pub(crate) fn open(path: &Path, create: bool, what: &str) -> Result<Connection, Error> {
    let location = path.display().to_string();
    if !path.exists() {
        if !create {
            return Err(Error::failed(location, format!("no {what} here; create one first")));
        }
        let parent = escx::fsutil::parent_dir(path);
        if !parent.exists() {
            escx::fsutil::create_private_dir(&parent).map_err(|e| Error::failed(&location, e.to_string()))?;
        }
    }
    connect(path)
}

/// A connection to the database at `path`, created with mode 0600 if missing (nothing
/// outside SQLite opens it), with the settings every store uses: WAL, `synchronous=FULL`,
/// foreign keys, and a busy timeout of [`BUSY_TIMEOUT_SECS`].
pub fn connect(path: &Path) -> Result<Connection, Error> {
    create_private(path)?;
    let fail = |e: rusqlite::Error| failure(path, &e);
    let db = Connection::open(path).map_err(fail)?;
    db.busy_timeout(std::time::Duration::from_secs(BUSY_TIMEOUT_SECS)).map_err(fail)?;
    db.pragma_update(None, "journal_mode", "WAL").map_err(fail)?;
    db.pragma_update(None, "synchronous", "FULL").map_err(fail)?;
    db.pragma_update(None, "foreign_keys", "ON").map_err(fail)?;
    Ok(db)
}

/// One lock per database file in this process, taken around each write transaction.
///
/// SQLite's busy handler makes a writer that finds the file locked poll with sleeps that
/// grow to 100 ms, so several handles of one process (the service's pools) that contend
/// for the write lock wait far longer than the transactions last. Handles of one process
/// queue on this lock instead and find SQLite's lock free; other processes still meet the
/// busy timeout. It changes no outcome: SQLite serializes the writers either way.
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
    pub(crate) tx: Transaction<'a>,
    _gate: MutexGuard<'a, ()>,
}

impl<'a> Gated<'a> {
    pub(crate) fn begin(db: &'a Connection, gate: &'a Mutex<()>, path: &Path) -> Result<Self, Error> {
        // A panic in another transaction left nothing behind: SQLite rolled it back.
        let gate = gate.lock().unwrap_or_else(PoisonError::into_inner);
        let tx =
            Transaction::new_unchecked(db, TransactionBehavior::Immediate).map_err(|e| failure(path, &e))?;
        Ok(Self { tx, _gate: gate })
    }
}
