//! File-system helpers shared by every escx crate: each output is written to a temporary
//! file beside its destination and renamed into place, so an interrupted run never leaves
//! a half-written file and never clobbers what was there.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// Unix permission bits for secret files.
pub const MODE_SECRET: u32 = 0o600;
/// Unix permission bits for public files.
pub const MODE_PUBLIC: u32 = 0o644;

/// The directory that will hold `path`, for temporary files that are renamed onto it.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary file in `path`'s directory, created with mode 0600.
pub(crate) fn temp_file_beside(path: &Path) -> Result<tempfile::NamedTempFile, Error> {
    let dir = parent_dir(path);
    tempfile::Builder::new().prefix(".escx-tmp-").tempfile_in(&dir).map_err(|e| Error::io(&dir, e))
}

/// Moves a finished temporary file onto `path` with `mode`; refuses to replace an existing
/// file unless `overwrite`.
pub fn persist(temp: tempfile::NamedTempFile, path: &Path, mode: u32, overwrite: bool) -> Result<(), Error> {
    set_mode(temp.as_file(), mode).map_err(|e| Error::io(path, e))?;
    temp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    let result = if overwrite { temp.persist(path) } else { temp.persist_noclobber(path) };
    result.map_err(|e| {
        let reason = if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists; pass --force to replace it")
        } else {
            e.error
        };
        Error::io(path, reason)
    })?;
    Ok(())
}

/// Writes `bytes` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<(), Error> {
    let mut temp = temp_file_beside(path)?;
    temp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    persist(temp, path, mode, overwrite)
}

/// Sets Unix permission bits (a no-op elsewhere).
#[cfg(unix)]
pub fn set_mode(file: &std::fs::File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Sets Unix permission bits (a no-op elsewhere).
#[cfg(not(unix))]
pub fn set_mode(_file: &std::fs::File, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Unix permission bits for private directories (key stores, wallets, databases).
pub const MODE_PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` (and missing parents) and sets mode 0700 on it, so what it will hold is
/// never readable by others, whatever the umask.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    set_dir_mode(dir, MODE_PRIVATE_DIR).map_err(|e| Error::io(dir, e))
}

#[cfg(unix)]
fn set_dir_mode(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_dir_mode(_dir: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Copies `source` into a new temporary file (mode 0600) in `dir` and returns it, hashed as
/// it was copied: a private copy to verify and then use, so that a file replaced or
/// rewritten meanwhile cannot slip unverified bytes in between (verify-then-reread).
pub fn private_copy(source: &Path, dir: &Path) -> Result<(tempfile::NamedTempFile, [u8; 32], u64), Error> {
    let mut copy =
        tempfile::Builder::new().prefix(".escx-copy-").tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    let mut file = std::fs::File::open(source).map_err(|e| Error::io(source, e))?;
    let mut hashing = crate::hash::HashingWriter::new(std::io::BufWriter::new(copy.as_file_mut()));
    let copied = std::io::copy(&mut file, &mut hashing).map_err(|e| Error::io(source, e))?;
    let hash = hashing.finalize_flushed().map_err(|e| Error::io(dir, e))?;
    Ok((copy, hash, copied))
}
