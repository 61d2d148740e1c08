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
pub fn temp_file_beside(path: &Path) -> Result<tempfile::NamedTempFile, Error> {
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
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists; pass --force to replace it")
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
