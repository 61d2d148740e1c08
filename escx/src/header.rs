//! The container's minimal view of `manifest.toml`, its header (spec: escx-format.md
//! §6.1): package name and version. (Named `header`, not `manifest`, so that it is not
//! taken for the `escx-manifest` crate, which owns the full schema.)
//!
//! The container needs only the package's name and version (for trust-policy scopes and
//! for `inspect`) and, when packing, the `[include]` globs. The full schema and its
//! validation live in the `escx-manifest` crate; this view ignores every other key so it
//! stays compatible with that schema as it grows.

use serde::Deserialize;

use crate::FormatError;

/// Longest package name.
pub const PACKAGE_NAME_BYTES_MAX: usize = 128;

/// Name and version of a package, read from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageId {
    /// `[package] name`, e.g. `acme/thermal`.
    pub name: PackageName,
    /// `[package] version`, a semantic version.
    pub version: semver::Version,
}

/// The parts of `manifest.toml` the container reads.
#[derive(Debug, Clone)]
pub struct ManifestHeader {
    /// Name and version.
    pub package: PackageId,
    /// `[include] files`: globs selecting payload files; empty means the default selection.
    pub include_files: Vec<String>,
    /// `[include] exclude`: globs removed from the selection.
    pub exclude_files: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    package: Option<RawPackage>,
    #[serde(default)]
    include: RawInclude,
}

#[derive(Deserialize)]
struct RawPackage {
    name: Option<toml::Spanned<String>>,
    version: Option<toml::Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInclude {
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

/// A package version (escx-format.md §6.1): Semantic Versioning 2.0.0 with MAJOR, MINOR
/// and PATCH each at most 2^64 − 1, and **no build metadata**: SemVer gives `1.0.0+a` and
/// `1.0.0+b` equal precedence, so neither a requirement nor a registry could tell them
/// apart. Every reader of a package version (manifests, registry indexes, lockfiles) uses
/// this, so they agree.
pub fn parse_version(text: &str) -> Result<semver::Version, String> {
    let version = semver::Version::parse(text).map_err(|e| e.to_string())?;
    if !version.build.is_empty() {
        return Err(format!(
            "build metadata (\"+{}\") is not allowed in package versions: versions that differ only in it have equal precedence",
            version.build
        ));
    }
    Ok(version)
}

/// Manifest text: UTF-8 without a byte order mark (escx-format.md §6.1).
pub fn manifest_text(bytes: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    if text.starts_with('\u{feff}') {
        return Err(
            "the manifest starts with a byte order mark (U+FEFF); save it as UTF-8 without one".into()
        );
    }
    Ok(text)
}

impl ManifestHeader {
    /// Parses manifest bytes. Errors carry a line and column where TOML provides one.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let invalid = |reason: String| FormatError::ManifestInvalid { reason };
        let text = manifest_text(bytes).map_err(invalid)?;
        let raw: Raw = toml::from_str(text).map_err(|e| invalid(one_line(&e.to_string())))?;
        let package = raw.package.ok_or_else(|| invalid("missing [package] table".into()))?;
        let name = package.name.ok_or_else(|| invalid("missing [package] name".into()))?;
        let version = package.version.ok_or_else(|| invalid("missing [package] version".into()))?;
        let at = |span: std::ops::Range<usize>| line_col(text, span.start);
        let span = name.span();
        let name = PackageName::parse(name.into_inner()).map_err(|reason| {
            let (line, col) = at(span);
            invalid(format!("line {line}, column {col}: package name {reason}"))
        })?;
        let parsed_version = parse_version(version.get_ref()).map_err(|e| {
            let (line, col) = at(version.span());
            invalid(format!(
                "line {line}, column {col}: version {:?} is not a semantic version ({e})",
                version.get_ref()
            ))
        })?;
        Ok(Self {
            package: PackageId { name, version: parsed_version },
            include_files: raw.include.files,
            exclude_files: raw.include.exclude,
        })
    }
}

/// A package name that has been checked: 1..=128 bytes of `a-z 0-9 - _ .`, optionally one
/// `scope/` prefix of the same characters; each part starts with a letter or digit.
///
/// Every decoder that reads a name (manifests, registry indexes, billing events) produces a
/// `PackageName`, so code that holds one never re-checks it. It serializes as a plain string,
/// and deserializing checks it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackageName(String);

/// Why a string is not a package name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} {reason}")]
pub struct NameError {
    /// The rejected text.
    pub name: String,
    /// What is wrong with it, e.g. "must be 1 to 128 characters long".
    pub reason: &'static str,
}

impl PackageName {
    /// Checks `name` and wraps it.
    pub fn parse(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        match check_name(&name) {
            Ok(()) => Ok(Self(name)),
            Err(reason) => Err(NameError { name, reason }),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scope before the `/`, if the name has one: `acme` for `acme/thermal`.
    pub fn scope(&self) -> Option<&str> {
        self.0.split_once('/').map(|(scope, _)| scope)
    }

    /// The owned text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::ops::Deref for PackageName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PackageName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for PackageName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PackageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for PackageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for PackageName {
    type Err = NameError;
    fn from_str(name: &str) -> Result<Self, NameError> {
        Self::parse(name)
    }
}

impl TryFrom<String> for PackageName {
    type Error = NameError;
    fn try_from(name: String) -> Result<Self, NameError> {
        Self::parse(name)
    }
}

impl From<PackageName> for String {
    fn from(name: PackageName) -> String {
        name.0
    }
}

impl PartialEq<str> for PackageName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PackageName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for PackageName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

#[cfg(feature = "rusqlite")]
impl rusqlite::types::ToSql for PackageName {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

/// A stored name is checked again when read back: a bad one is a conversion error.
#[cfg(feature = "rusqlite")]
impl rusqlite::types::FromSql for PackageName {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        Self::parse(text).map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > PACKAGE_NAME_BYTES_MAX {
        return Err("must be 1 to 128 characters long");
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 2 {
        return Err("may contain at most one '/' (scope/name)");
    }
    for part in parts {
        let first_ok = part.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !first_ok {
            return Err("must start each part with a lowercase letter or digit");
        }
        if !part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)) {
            return Err("may only contain a-z, 0-9, '-', '_', '.' and one '/'");
        }
    }
    Ok(())
}

fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_version_and_include() {
        let m = ManifestHeader::parse(
            b"[package]\nname = \"acme/thermal\"\nversion = \"1.2.3\"\nextra = 1\n[include]\nfiles = [\"src/**\"]\n",
        )
        .unwrap();
        assert_eq!(m.package.name, "acme/thermal");
        assert_eq!(m.package.version, semver::Version::new(1, 2, 3));
        assert_eq!(m.include_files, vec!["src/**"]);
    }

    #[test]
    fn bad_version_names_line_and_column() {
        let err = ManifestHeader::parse(b"[package]\nname = \"a\"\nversion = \"1.x\"\n").unwrap_err();
        assert!(err.to_string().contains("line 3, column 11"), "{err}");
    }

    #[test]
    fn names_are_restricted() {
        for bad in ["", "Acme", "a/b/c", "-x", "a b", "a/", "ümlaut"] {
            assert!(PackageName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(PackageName::parse("a".repeat(129)).is_err());
        for good in ["a", "acme/thermal", "x-1.2_3"] {
            assert_eq!(PackageName::parse(good).unwrap(), good, "{good:?} rejected");
        }
        assert_eq!(PackageName::parse("acme/thermal").unwrap().scope(), Some("acme"));
        assert_eq!(PackageName::parse("thermal").unwrap().scope(), None);
    }

    #[test]
    fn names_check_when_deserialized() {
        let good: PackageName = serde_json::from_str("\"acme/thermal\"").unwrap();
        assert_eq!(serde_json::to_string(&good).unwrap(), "\"acme/thermal\"");
        let err = serde_json::from_str::<PackageName>("\"Acme\"").unwrap_err();
        assert!(err.to_string().contains("\"Acme\" must start"), "{err}");
    }
}
