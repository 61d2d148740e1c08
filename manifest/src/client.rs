//! The registry client (spec: registry.md §5): loading an index only if enough trusted
//! keys signed it, it has not expired and it is not older than one already accepted; and
//! fetching packages only if their size, hash, signature and manifest agree with it.
//!
//! Each check stops one of the attacks TUF catalogues; registry.md §6 maps them.

use escx::UnixSeconds;
use std::path::{Path, PathBuf};

use escx::fsutil;
use escx::hash::HashingWriter;
use escx::policy::{Decision, TrustPolicy};
use escx::sig::{KeyId, SigningContext};
use escx::verify::{self, VerifyOptions, VerifyReport};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::index::{self, Index, IndexVersion};
use crate::registry::manifest_of;
use crate::schema::Manifest;

/// Environment variable overriding where client state is kept.
pub const STATE_DIR_ENV: &str = "ESCX_STATE_DIR";

/// What a client has accepted from one registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    /// The highest index version accepted.
    pub index_version: u64,
    /// BLAKE3 of that signed index file, hex.
    pub index_blake3: String,
    /// When it was accepted (Unix seconds).
    pub accepted_at: UnixSeconds,
}

/// The directory where the client keeps [`Seen`] per registry.
#[derive(Debug, Clone)]
pub struct StateDir(PathBuf);

impl StateDir {
    /// State in `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// `$ESCX_STATE_DIR`, else `$XDG_STATE_HOME/escx`, else `$HOME/.local/state/escx`.
    pub fn default_location() -> Self {
        if let Some(dir) = std::env::var_os(STATE_DIR_ENV) {
            return Self::new(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
            return Self::new(PathBuf::from(dir).join("escx"));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        Self::new(home.join(".local/state/escx"))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self, registry_id: &str) -> PathBuf {
        self.0.join("registries").join(format!("{registry_id}.toml"))
    }

    /// What was last accepted from the registry `registry_id`.
    pub fn seen(&self, registry_id: &str) -> Result<Option<Seen>, Error> {
        let path = self.file(registry_id);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| Error::ClientState { path, reason: e.message().to_owned() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { path, error: e }),
        }
    }

    fn record(&self, registry_id: &str, seen: &Seen) -> Result<(), Error> {
        let path = self.file(registry_id);
        let parent = fsutil::parent_dir(&path);
        std::fs::create_dir_all(&parent).map_err(|e| Error::Io { path: parent, error: e })?;
        let text = toml::to_string(seen)
            .map_err(|e| Error::ClientState { path: path.clone(), reason: e.to_string() })?;
        fsutil::write_atomic(&path, text.as_bytes(), fsutil::MODE_PUBLIC, true)?;
        Ok(())
    }
}

/// An index that passed every client check.
#[derive(Debug, Clone)]
pub struct TrustedIndex {
    /// The registry directory (or mirror) it came from.
    pub root: PathBuf,
    /// The payload.
    pub index: Index,
    /// Keys whose signatures verified.
    pub signers: Vec<KeyId>,
    /// Why the policy accepted it.
    pub decision: Decision,
    /// BLAKE3 of the signed file.
    pub blake3: [u8; 32],
}

/// Loads the index of the registry (or mirror) at `root` (registry.md §5.1).
pub fn load_index(
    root: &Path,
    policy: &TrustPolicy,
    state: &StateDir,
    now: UnixSeconds,
) -> Result<TrustedIndex, Error> {
    let path = root.join(index::INDEX_FILE);
    let registry_id =
        policy.registry_id().ok_or_else(|| Error::NoRegistryKeys { path: policy.source().to_path_buf() })?;
    let (bytes, envelope) = index::read_signed(root)?;
    let signers =
        envelope.verified_signers(SigningContext::INDEX, |id| policy.key(id)).map_err(|e| match e {
            escx::Error::SignatureInvalid { key_id } => Error::IndexInvalid {
                path: path.clone(),
                reason: format!("the signature by key {key_id} does not verify: the index was altered"),
            },
            other => Error::IndexInvalid { path: path.clone(), reason: other.to_string() },
        })?;
    let decision = policy.evaluate_registry(&signers, now)?;
    let index = Index::from_cbor(envelope.payload_unverified())
        .map_err(|reason| Error::IndexInvalid { path: path.clone(), reason })?;
    if now >= index.expires_at {
        return Err(Error::IndexExpired { path, expired_at: index.expires_at });
    }
    let blake3 = *blake3::hash(&bytes).as_bytes();
    let blake3_hex = hex::encode(blake3);
    // The highest version accepted under the registry's key set or any of its keys: a
    // key set that changed (a key added, dropped or rotated) keeps the protection of the
    // keys that stayed.
    let mut ids = vec![registry_id];
    ids.extend(policy.registry_key_ids());
    ids.dedup();
    let mut highest: Option<Seen> = None;
    for id in &ids {
        if let Some(seen) = state.seen(id)? {
            if seen.index_version == index.version && seen.index_blake3 != blake3_hex {
                return Err(Error::IndexEquivocation { path, version: index.version });
            }
            if highest.as_ref().is_none_or(|h| seen.index_version > h.index_version) {
                highest = Some(seen);
            }
        }
    }
    if let Some(seen) = &highest
        && index.version < seen.index_version
    {
        return Err(Error::IndexRollback { path, seen: seen.index_version, offered: index.version });
    }
    let seen = Seen { index_version: index.version, index_blake3: blake3_hex, accepted_at: now };
    for id in &ids {
        if state.seen(id)?.is_none_or(|held| held.index_version < index.version) {
            state.record(id, &seen)?;
        }
    }
    Ok(TrustedIndex { root: root.to_path_buf(), index, signers, decision, blake3 })
}

/// Copies `name@entry` from the registry into `into_dir`, reading at most `size` bytes
/// and checking size and hash against the index (registry.md §5.2 steps 1–3).
pub fn fetch(root: &Path, name: &str, entry: &IndexVersion, into_dir: &Path) -> Result<PathBuf, Error> {
    let source = index::package_path(root, name, &entry.version);
    let mismatch = |reason: String| Error::PackageMismatch {
        name: name.into(),
        version: entry.version.clone(),
        file: source.clone(),
        reason,
    };
    let metadata =
        std::fs::symlink_metadata(&source).map_err(|e| Error::Io { path: source.clone(), error: e })?;
    if !metadata.is_file() {
        return Err(mismatch(format!("{} is not a regular file", source.display())));
    }
    if metadata.len() > entry.size {
        return Err(Error::PackageSize {
            name: name.into(),
            version: entry.version.clone(),
            file: source.clone(),
            expected: entry.size,
            actual: metadata.len(),
        });
    }
    let destination = into_dir.join(format!("{}-{}.escx", name.replace('/', "--"), entry.version));
    let file = std::fs::File::open(&source).map_err(|e| Error::Io { path: source.clone(), error: e })?;
    // A new file (never following or truncating what is there) in the caller's private
    // directory; removed again unless it matches the index.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&destination)
        .map_err(|e| Error::Io { path: destination.clone(), error: e })?;
    let checked = (|| {
        let mut hashing = HashingWriter::new(&mut out);
        // One byte more than the index allows, so a file that grows meanwhile is noticed.
        let copied = std::io::copy(&mut std::io::Read::take(file, entry.size + 1), &mut hashing)
            .map_err(|e| Error::Io { path: source.clone(), error: e })?;
        let hash = hashing.finalize();
        if copied != entry.size {
            return Err(Error::PackageSize {
                name: name.into(),
                version: entry.version.clone(),
                file: source.clone(),
                expected: entry.size,
                actual: copied,
            });
        }
        if hash[..] != entry.blake3[..] {
            return Err(mismatch(format!(
                "BLAKE3 of the file is {}, the index says {}: the file was replaced (mix-and-match) or altered",
                hex::encode(hash),
                entry.blake3_hex()
            )));
        }
        Ok(())
    })();
    if let Err(error) = checked {
        drop(out);
        let _ = std::fs::remove_file(&destination);
        return Err(error);
    }
    Ok(destination)
}

/// A private directory (mode 0700) for downloads inside `parent`, removed when dropped.
pub fn download_dir(parent: &Path) -> Result<tempfile::TempDir, Error> {
    std::fs::create_dir_all(parent).map_err(|e| Error::Io { path: parent.into(), error: e })?;
    let dir = tempfile::Builder::new()
        .prefix(".escx-download-")
        .tempdir_in(parent)
        .map_err(|e| Error::Io { path: parent.into(), error: e })?;
    escx::fsutil::create_private_dir(dir.path())?;
    Ok(dir)
}

/// Verifies a fetched package under `policy` and checks that its signed manifest agrees
/// with the index entry: name, version and dependencies (registry.md §5.2 steps 4–5).
pub fn verify_fetched(
    package: &Path,
    name: &str,
    entry: &IndexVersion,
    policy: &TrustPolicy,
    now: UnixSeconds,
) -> Result<(VerifyReport, Manifest), Error> {
    let mismatch = |reason: String| Error::PackageMismatch {
        name: name.into(),
        version: entry.version.clone(),
        file: package.to_path_buf(),
        reason,
    };
    let report =
        verify::verify_file(package, policy, &VerifyOptions { now: Some(now), ..VerifyOptions::default() })?;
    if report.package.name != name || report.package.version != entry.semver() {
        return Err(mismatch(format!(
            "the package is {} {}, not what the index lists",
            report.package.name, report.package.version
        )));
    }
    let manifest = manifest_of(package)?;
    if index::dependencies_of(&manifest) != entry.dependencies {
        return Err(mismatch(
            "its manifest's dependencies differ from the index's (extraneous dependencies)".into(),
        ));
    }
    Ok((report, manifest))
}

/// What a mirror run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MirrorReport {
    /// Package files copied and checked.
    pub copied: usize,
    /// Files already present with the right hash.
    pub unchanged: usize,
    /// The index version mirrored.
    pub index_version: u64,
}

/// Makes `destination` a verified copy of the registry at `source` (registry.md §4.5):
/// the index must pass [`load_index`], every package file must match its entry, and the
/// signed index is written last, byte for byte, so a mirror can serve but never forge.
pub fn mirror(
    source: &Path,
    destination: &Path,
    policy: &TrustPolicy,
    state: &StateDir,
    now: UnixSeconds,
) -> Result<MirrorReport, Error> {
    let trusted = load_index(source, policy, state, now)?;
    let (bytes, _) = index::read_signed(source)?;
    if *blake3::hash(&bytes).as_bytes() != trusted.blake3 {
        return Err(Error::IndexChanged { path: source.into() });
    }
    let staging = download_dir(destination)?;
    let staging_root = staging.path();
    let mut report = MirrorReport { index_version: trusted.index.version, ..MirrorReport::default() };
    for package in &trusted.index.packages {
        for entry in &package.versions {
            let target = index::package_path(destination, &package.name, &entry.version);
            if file_matches(&target, entry) {
                report.unchanged += 1;
                continue;
            }
            let fetched = fetch(source, &package.name, entry, staging_root)?;
            let parent = fsutil::parent_dir(&target);
            std::fs::create_dir_all(&parent).map_err(|e| Error::Io { path: parent, error: e })?;
            std::fs::rename(&fetched, &target).map_err(|e| Error::Io { path: target.clone(), error: e })?;
            report.copied += 1;
        }
    }
    drop(staging);
    fsutil::write_atomic(&destination.join(index::INDEX_FILE), &bytes, fsutil::MODE_PUBLIC, true)?;
    Ok(report)
}

fn file_matches(path: &Path, entry: &IndexVersion) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else { return false };
    if metadata.len() != entry.size {
        return false;
    }
    let Ok(mut file) = std::fs::File::open(path) else { return false };
    escx::hash::hash_exact(&mut file, entry.size, &escx::progress::NoProgress)
        .is_ok_and(|h| h[..] == entry.blake3[..])
}
