//! Operating a registry (spec: registry.md §4): a directory with `index.signed` and
//! `packages/`, served by any static file server or copied as is.
//!
//! Every change verifies the current index with the operator's keys, takes an exclusive
//! lock, writes package files first and the re-signed index last (atomically), so a reader
//! always sees a consistent registry and a crash never loses a published version.

use escx::UnixSeconds;
use std::path::{Path, PathBuf};

use escx::fsutil;
use escx::header::PackageName;
use escx::policy::TrustPolicy;
use escx::sig::{KeyId, SecretKey, SigningContext};
use escx::verify::{self, VerifyOptions};
use semver::Version;

use crate::Error;
use crate::index::{self, INDEX_FILE, Index, IndexIssuer, IndexPackage, IndexVersion, PACKAGES_DIR};
use crate::schema::Manifest;

/// Default index lifetime: clients refuse an index this long after it was signed unless
/// the operator re-signs it (`escx registry refresh`), which defeats freeze attacks.
pub const DEFAULT_EXPIRY_SECS: u64 = 7 * 24 * 3600;
const LOCK_FILE: &str = ".lock";

/// A registry directory on the operator's side.
pub struct Registry {
    root: PathBuf,
}

/// Holds the registry's lock file; removes it when dropped.
struct Lock(PathBuf);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Registry {
    /// Creates an empty registry in `root` (which must not exist or be empty), signed by
    /// `keys`.
    pub fn init(root: &Path, keys: &[&SecretKey], now: UnixSeconds, expiry_secs: u64) -> Result<Self, Error> {
        if std::fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(Error::RegistryNotEmpty { path: root.into() });
        }
        let packages = root.join(PACKAGES_DIR);
        std::fs::create_dir_all(&packages).map_err(|e| Error::Io { path: packages, error: e })?;
        let registry = Self { root: root.to_path_buf() };
        let index = Index::empty(now, now + expiry_secs);
        registry.write_index(&index, keys)?;
        Ok(registry)
    }

    /// Opens an existing registry directory.
    pub fn open(root: &Path) -> Result<Self, Error> {
        if !root.join(INDEX_FILE).is_file() {
            return Err(Error::NotARegistry { path: root.into() });
        }
        Ok(Self { root: root.to_path_buf() })
    }

    /// The registry directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The current index, verified against the operator's own keys: every key given must
    /// have signed it, so an operator never builds on an index someone else wrote.
    pub fn current_index(&self, keys: &[&SecretKey]) -> Result<Index, Error> {
        let path = self.root.join(INDEX_FILE);
        let (_, envelope) = index::read_signed(&self.root)?;
        let signers = envelope
            .verified_signers(SigningContext::INDEX, |id| {
                keys.iter().find(|k| k.id() == id).map(|k| k.public_key())
            })
            .map_err(|e| Error::IndexInvalid { path: path.clone(), reason: e.to_string() })?;
        if let Some(missing) = keys.iter().find(|k| !signers.contains(&k.id())) {
            return Err(Error::IndexInvalid {
                path,
                reason: format!(
                    "the current index is not signed by key {}; refusing to build on it",
                    missing.id()
                ),
            });
        }
        Index::from_cbor(envelope.payload_unverified()).map_err(|reason| Error::IndexInvalid { path, reason })
    }

    /// Verifies `package` under `publishers` and adds it. Versions are immutable: a name
    /// and version already present is refused. The file is copied once, to a private
    /// temporary file beside its place in the registry, and that copy is what is verified,
    /// hashed for the index and moved into place: a file replaced while this runs cannot
    /// get unverified bytes published.
    pub fn publish(
        &self,
        package: &Path,
        publishers: &TrustPolicy,
        keys: &[&SecretKey],
        now: UnixSeconds,
        expiry_secs: u64,
    ) -> Result<(PackageName, IndexVersion), Error> {
        let staging = self.root.join(PACKAGES_DIR);
        std::fs::create_dir_all(&staging).map_err(|e| Error::Io { path: staging.clone(), error: e })?;
        let (copy, blake3, size) = fsutil::private_copy(package, &staging)?;
        let report = verify::verify_file(
            copy.path(),
            publishers,
            &VerifyOptions { now: Some(now), ..Default::default() },
        )
        .map_err(|e| named(e, package))?;
        let publisher = report
            .signers
            .iter()
            .find(|s| matches!(s.status, verify::SignerStatus::Valid(_)))
            .map(|s| s.key_id)
            .unwrap_or(KeyId([0; 16]));
        let manifest = manifest_in(copy.path(), package)?;
        let (name, version) = (manifest.package.name.clone(), manifest.package.version.clone());

        let _lock = self.lock()?;
        let mut index = self.current_index(keys)?;
        if index.find(&name, &version).is_some() {
            return Err(Error::AlreadyPublished {
                path: self.root.clone(),
                name: name.to_string(),
                version: version.to_string(),
            });
        }
        let destination = index::package_path(&self.root, &name, &version.to_string());
        let parent = fsutil::parent_dir(&destination);
        std::fs::create_dir_all(&parent).map_err(|e| Error::Io { path: parent, error: e })?;
        fsutil::persist(copy, &destination, fsutil::MODE_PUBLIC, false)?;
        let entry = IndexVersion::from_manifest(&manifest, blake3, size, publisher);
        match index.packages.binary_search_by(|p| p.name.cmp(&name)) {
            Ok(at) => {
                let versions = &mut index.packages[at].versions;
                let position = versions.partition_point(|v| v.semver() < version);
                versions.insert(position, entry.clone());
            }
            Err(at) => {
                index.packages.insert(at, IndexPackage { name: name.clone(), versions: vec![entry.clone()] })
            }
        }
        self.commit(index, keys, now, expiry_secs)?;
        Ok((name, entry))
    }

    /// Publishes `head` as an issuer's current bundle-chain head (registry.md §2.3).
    /// `extends` is given the head listed now (if any) and must confirm that the new one
    /// extends it (the caller holds the chain; this crate does not parse bundles), so the
    /// index never moves an issuer to another history.
    pub fn set_issuer(
        &self,
        head: IndexIssuer,
        extends: impl FnOnce(Option<&IndexIssuer>) -> Result<(), Error>,
        keys: &[&SecretKey],
        now: UnixSeconds,
        expiry_secs: u64,
    ) -> Result<Index, Error> {
        let _lock = self.lock()?;
        let mut index = self.current_index(keys)?;
        let listed = index.issuers.iter().position(|i| i.id == head.id);
        extends(listed.map(|at| &index.issuers[at]))?;
        match listed {
            Some(at) => index.issuers[at] = head,
            None => {
                let at = index.issuers.partition_point(|i| i.id < head.id);
                index.issuers.insert(at, head);
            }
        }
        self.commit(index, keys, now, expiry_secs)?;
        self.current_index(keys)
    }

    /// Marks `name@version` yanked (or not).
    pub fn set_yanked(
        &self,
        name: &str,
        version: &Version,
        yanked: bool,
        keys: &[&SecretKey],
        now: UnixSeconds,
        expiry_secs: u64,
    ) -> Result<(), Error> {
        let _lock = self.lock()?;
        let mut index = self.current_index(keys)?;
        let entry = index
            .packages
            .iter_mut()
            .find(|p| p.name == name)
            .and_then(|p| p.versions.iter_mut().find(|v| v.semver() == *version))
            .ok_or_else(|| Error::NotInIndex { name: name.into(), version: version.to_string() })?;
        entry.yanked = yanked;
        self.commit(index, keys, now, expiry_secs)
    }

    /// Re-signs the current index with a new expiry (and version), so clients do not
    /// consider the registry frozen.
    pub fn refresh(&self, keys: &[&SecretKey], now: UnixSeconds, expiry_secs: u64) -> Result<Index, Error> {
        let _lock = self.lock()?;
        let index = self.current_index(keys)?;
        self.commit(index.clone(), keys, now, expiry_secs)?;
        self.current_index(keys)
    }

    fn commit(
        &self,
        mut index: Index,
        keys: &[&SecretKey],
        now: UnixSeconds,
        expiry_secs: u64,
    ) -> Result<(), Error> {
        index.v = index::INDEX_FORMAT;
        index.version += 1;
        index.issued_at = now;
        index.expires_at = now + expiry_secs;
        self.write_index(&index, keys)
    }

    fn write_index(&self, index: &Index, keys: &[&SecretKey]) -> Result<(), Error> {
        // The rules a reader applies (registry.md §2.2) hold before anything is signed.
        let path = self.root.join(INDEX_FILE);
        index.check().map_err(|reason| Error::IndexInvalid { path, reason })?;
        fsutil::write_atomic(&self.root.join(INDEX_FILE), &index.sign(keys), fsutil::MODE_PUBLIC, true)?;
        Ok(())
    }

    fn lock(&self) -> Result<Lock, Error> {
        let path = self.root.join(LOCK_FILE);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => Ok(Lock(path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::RegistryLocked { path: self.root.clone(), lock: path })
            }
            Err(e) => Err(Error::Io { path, error: e }),
        }
    }
}

/// The full, validated manifest inside a package file (hash-checked against its table).
pub(crate) fn manifest_of(package: &Path) -> Result<Manifest, Error> {
    manifest_in(package, package)
}

/// [`manifest_of`] on `file`, naming `shown` in messages (a private copy of `shown`).
fn manifest_in(file: &Path, shown: &Path) -> Result<Manifest, Error> {
    let mut reader = escx::container::PackageReader::open_file(file).map_err(|e| named(e, shown))?;
    let bytes = reader.manifest_bytes().map_err(|e| named(e, shown))?;
    let text = String::from_utf8(bytes).map_err(|_| Error::ManifestEncoding { path: shown.into() })?;
    Manifest::parse(&text, &shown.join("manifest.toml")).map_err(Error::Manifest)
}

/// Names the package as the user gave it in an error about its private copy.
fn named(error: escx::Error, package: &Path) -> Error {
    match error {
        escx::Error::Io { error, .. } => Error::Io { path: package.into(), error },
        other => Error::Escx(other),
    }
}

/// A search hit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SearchHit {
    /// Package name.
    pub name: PackageName,
    /// Highest non-yanked version (or the highest, if all are yanked).
    pub version: String,
    /// Its description.
    pub description: String,
    /// Whether every version is yanked.
    pub all_yanked: bool,
}

/// Packages whose name, description or keywords contain `query` (case-insensitive),
/// sorted by name.
pub fn search(index: &Index, query: &str) -> Vec<SearchHit> {
    let needle = query.to_lowercase();
    index
        .packages
        .iter()
        .filter_map(|package| {
            let latest = package.versions.iter().rev().find(|v| !v.yanked).or(package.versions.last())?;
            let matches = package.name.to_lowercase().contains(&needle)
                || latest.description.to_lowercase().contains(&needle)
                || latest.keywords.iter().any(|k| k.contains(&needle));
            matches.then(|| SearchHit {
                name: package.name.clone(),
                version: latest.version.clone(),
                description: latest.description.clone(),
                all_yanked: package.versions.iter().all(|v| v.yanked),
            })
        })
        .collect()
}
