//! The registry index (spec: registry.md §2–§3): every package version a registry offers,
//! with what a client needs to resolve and verify it, signed as a whole.

use escx::UnixSeconds;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use escx::envelope::MultiEnvelope;
use escx::header::PackageName;
use escx::sig::{KeyId, SecretKey, SigningContext};
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::Error;
use crate::requirement::Requirement;
use crate::schema::{FeatureItem, Manifest};

/// The index file inside a registry directory.
pub const INDEX_FILE: &str = "index.signed";
/// The directory holding package files.
pub const PACKAGES_DIR: &str = "packages";
/// Largest index file a client reads.
pub const INDEX_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Most package versions in one index.
pub const INDEX_VERSIONS_MAX: usize = 1_000_000;

/// Index format this build writes.
pub const INDEX_FORMAT: u8 = 2;
/// Most issuers one index lists.
pub const INDEX_ISSUERS_MAX: usize = 10_000;

/// The index payload (CBOR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Format version: 2 (1 is read too: it has no `issuers`).
    pub v: u8,
    /// Increases by one with every change; clients refuse to go back.
    pub version: u64,
    /// When it was signed (Unix seconds).
    pub issued_at: UnixSeconds,
    /// After this, clients refuse it (Unix seconds).
    pub expires_at: UnixSeconds,
    /// Packages sorted by name.
    pub packages: Vec<IndexPackage>,
    /// The current bundle-chain head of each license issuer this registry vouches for,
    /// sorted by issuer id (registry.md §2.3): the channel every customer reads, so an
    /// issuer cannot show one customer a bundle it shows nobody else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<IndexIssuer>,
}

/// One issuer's published bundle head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexIssuer {
    /// The issuer's signing key id (16 bytes).
    pub id: ByteBuf,
    /// The head's version in the bundle chain.
    pub version: u64,
    /// The head's bundle hash (32 bytes, licensing.md §3.1).
    pub hash: ByteBuf,
}

impl IndexIssuer {
    /// The bundle hash.
    pub fn hash_bytes(&self) -> [u8; 32] {
        let mut hash = [0u8; 32];
        if self.hash.len() == 32 {
            hash.copy_from_slice(&self.hash);
        }
        hash
    }
}

/// One package and its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPackage {
    /// Package name.
    pub name: PackageName,
    /// Versions in ascending semver order.
    pub versions: Vec<IndexVersion>,
}

/// One published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexVersion {
    /// Semantic version.
    pub version: String,
    /// Plain BLAKE3 of the whole `.escx` file.
    pub blake3: ByteBuf,
    /// Size of the `.escx` file in bytes.
    pub size: u64,
    /// Key id of the signature the registry verified when the version was published.
    pub publisher_key_id: ByteBuf,
    /// Withdrawn: skipped by resolution unless a lockfile pins it.
    pub yanked: bool,
    /// Dependencies exactly as in the package's manifest, sorted by name.
    pub dependencies: Vec<IndexDependency>,
    /// `[features]` exactly as in the package's manifest.
    pub features: BTreeMap<String, Vec<String>>,
    /// `[package] description` (empty if none), for search.
    pub description: String,
    /// `[package] keywords`, for search.
    pub keywords: Vec<String>,
}

/// One dependency of an indexed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexDependency {
    /// Package name.
    pub name: PackageName,
    /// Requirement text.
    pub requirement: String,
    /// Optional (enabled by a feature).
    pub optional: bool,
    /// Features of the dependency to enable.
    pub features: Vec<String>,
}

impl Index {
    /// An empty index.
    pub fn empty(issued_at: UnixSeconds, expires_at: UnixSeconds) -> Self {
        Self { v: INDEX_FORMAT, version: 1, issued_at, expires_at, packages: Vec::new(), issuers: Vec::new() }
    }

    /// Canonical CBOR of the payload.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }

    /// Parses and checks a payload (registry.md §2.2).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, String> {
        let index: Index = escx::cbor::decode_exact(bytes, "index payload")?;
        index.check()?;
        Ok(index)
    }

    /// The structural rules every index must satisfy.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.v != 1 && self.v != INDEX_FORMAT {
            return Err(format!("unsupported index format {}", self.v));
        }
        if self.v == 1 && !self.issuers.is_empty() {
            return Err("format 1 indexes carry no issuers".into());
        }
        if self.issuers.len() > INDEX_ISSUERS_MAX {
            return Err(format!("more than {INDEX_ISSUERS_MAX} issuers"));
        }
        for issuer in &self.issuers {
            if issuer.id.len() != 16 || issuer.hash.len() != 32 || issuer.version == 0 {
                return Err(
                    "an issuer entry needs a 16-byte id, a version of at least 1 and a 32-byte hash".into()
                );
            }
        }
        for pair in self.issuers.windows(2) {
            if pair[0].id >= pair[1].id {
                return Err(format!("issuers not sorted or repeated at {}", hex::encode(&pair[1].id)));
            }
        }
        if self.version == 0 {
            return Err("index version must be at least 1".into());
        }
        if self.expires_at <= self.issued_at {
            return Err(format!(
                "expires_at ({}) is not after issued_at ({}): the index was never valid",
                self.expires_at, self.issued_at
            ));
        }
        let total: usize = self.packages.iter().map(|p| p.versions.len()).sum();
        if total > INDEX_VERSIONS_MAX {
            return Err(format!("more than {INDEX_VERSIONS_MAX} package versions"));
        }
        for pair in self.packages.windows(2) {
            if pair[0].name >= pair[1].name {
                return Err(format!("packages not sorted or repeated at {:?}", pair[1].name));
            }
        }
        for package in &self.packages {
            if package.versions.is_empty() {
                return Err(format!("package {} lists no versions", package.name));
            }
            let mut previous: Option<Version> = None;
            for entry in &package.versions {
                let at = format!("{}@{}", package.name, entry.version);
                let version = escx::header::parse_version(&entry.version)
                    .map_err(|e| format!("{at}: bad version: {e}"))?;
                if previous.as_ref().is_some_and(|p| *p >= version) {
                    return Err(format!("{at}: versions not in ascending order or repeated"));
                }
                previous = Some(version);
                if entry.blake3.len() != 32 || entry.publisher_key_id.len() != 16 {
                    return Err(format!("{at}: blake3 must be 32 bytes and publisher_key_id 16"));
                }
                for pair in entry.dependencies.windows(2) {
                    if pair[0].name >= pair[1].name {
                        return Err(format!("{at}: dependencies not sorted or repeated"));
                    }
                }
                for dependency in &entry.dependencies {
                    Requirement::parse(&dependency.requirement).map_err(|r| format!("{at}: {r}"))?;
                }
            }
        }
        Ok(())
    }

    /// The entry for `name` at `version`.
    pub fn find(&self, name: &str, version: &Version) -> Option<&IndexVersion> {
        let package = self.package(name)?;
        package.versions.iter().find(|v| Version::parse(&v.version).ok().as_ref() == Some(version))
    }

    /// The published bundle head of an issuer.
    pub fn issuer(&self, id: KeyId) -> Option<&IndexIssuer> {
        self.issuers.iter().find(|i| i.id[..] == id.0[..])
    }

    /// A package by name.
    pub fn package(&self, name: &str) -> Option<&IndexPackage> {
        self.packages.binary_search_by(|p| p.name.as_str().cmp(name)).ok().map(|i| &self.packages[i])
    }

    /// Signs the payload with the registry keys.
    pub fn sign(&self, keys: &[&SecretKey]) -> Vec<u8> {
        MultiEnvelope::seal(SigningContext::INDEX, self.to_cbor(), keys).to_cbor()
    }
}

impl IndexVersion {
    /// The parsed version (checked when the index was loaded).
    pub fn semver(&self) -> Version {
        Version::parse(&self.version).unwrap_or_else(|_| Version::new(0, 0, 0))
    }

    /// The publisher key id.
    pub fn publisher(&self) -> KeyId {
        let mut id = [0u8; 16];
        if self.publisher_key_id.len() == 16 {
            id.copy_from_slice(&self.publisher_key_id);
        }
        KeyId(id)
    }

    /// The file hash as lowercase hex.
    pub fn blake3_hex(&self) -> String {
        hex::encode(&self.blake3)
    }

    /// Builds an entry from a package's manifest and file facts.
    pub fn from_manifest(manifest: &Manifest, blake3: [u8; 32], size: u64, publisher: KeyId) -> Self {
        Self {
            version: manifest.package.version.to_string(),
            blake3: ByteBuf::from(blake3.to_vec()),
            size,
            publisher_key_id: ByteBuf::from(publisher.0.to_vec()),
            yanked: false,
            dependencies: dependencies_of(manifest),
            features: manifest
                .features
                .iter()
                .map(|(name, items)| (name.clone(), items.iter().map(feature_item_text).collect()))
                .collect(),
            description: manifest.package.description.clone().unwrap_or_default(),
            keywords: manifest.package.keywords.clone(),
        }
    }
}

/// A manifest's dependencies in index form (sorted by name, as the map is).
pub(crate) fn dependencies_of(manifest: &Manifest) -> Vec<IndexDependency> {
    manifest
        .dependencies
        .iter()
        .map(|(name, d)| IndexDependency {
            name: name.clone(),
            requirement: d.requirement.as_str().to_owned(),
            optional: d.optional,
            features: d.features.clone(),
        })
        .collect()
}

/// A feature item as written in the manifest.
pub(crate) fn feature_item_text(item: &FeatureItem) -> String {
    match item {
        FeatureItem::Feature(name) => name.clone(),
        FeatureItem::Dependency(name) => format!("dep:{name}"),
        FeatureItem::DependencyFeature { dependency, feature } => format!("{dependency}/{feature}"),
    }
}

/// Where a version's file lives inside a registry: `packages/<name>/<version>.escx`.
/// Derived, never read from the index, so an index cannot point outside the registry.
pub fn package_path(root: &Path, name: &str, version: &str) -> PathBuf {
    let mut path = root.join(PACKAGES_DIR);
    for part in name.split('/') {
        path.push(part);
    }
    path.push(format!("{version}.escx"));
    path
}

/// Reads the signed index file without verifying it.
pub fn read_signed(root: &Path) -> Result<(Vec<u8>, MultiEnvelope), Error> {
    let path = root.join(INDEX_FILE);
    let file = std::fs::File::open(&path).map_err(|e| Error::Io { path: path.clone(), error: e })?;
    let length = file.metadata().map_err(|e| Error::Io { path: path.clone(), error: e })?.len();
    if length > INDEX_BYTES_MAX {
        return Err(Error::IndexInvalid {
            path,
            reason: format!("{length} bytes exceeds the limit {INDEX_BYTES_MAX}"),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
    std::io::Read::read_to_end(&mut std::io::Read::take(file, INDEX_BYTES_MAX + 1), &mut bytes)
        .map_err(|e| Error::Io { path: path.clone(), error: e })?;
    let envelope =
        MultiEnvelope::from_cbor(&bytes).map_err(|e| Error::IndexInvalid { path, reason: e.to_string() })?;
    Ok((bytes, envelope))
}
