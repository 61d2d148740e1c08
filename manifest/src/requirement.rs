//! Version requirements (spec: resolution.md §2).
//!
//! Requirements use Cargo's syntax (`^1.2`, `~1.2.3`, `>=1.2, <1.5`, `=1.0.0`, `1.*`),
//! parsed by the `semver` crate and converted to version ranges for the solver. Two rules
//! keep resolutions simple and predictable:
//!
//! - **One version per package per major.** Versions fall into compatibility buckets
//!   (`1.x.y` -> `1`, `0.2.x` -> `0.2`, `0.0.3` -> `0.0.3`); a requirement must stay inside
//!   one bucket, and a resolution holds at most one version per (package, bucket).
//! - **Pre-releases only when pinned.** `1.3.0-beta.1` is selected only by `=1.3.0-beta.1`.

use std::fmt;
use std::ops::Bound;

use semver::{Comparator, Op, Prerelease, Version, VersionReq};
use version_ranges::Ranges;

/// What to write instead of an invalid requirement.
pub const HELP: &str =
    "write a requirement within one major version, e.g. \"^1.2\", \"~1.4.2\", \">=1.2, <1.6\" or \"=1.0.0\"";

/// A parsed requirement and the versions it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    text: String,
    ranges: Ranges<Version>,
    bucket: Bucket,
}

impl Requirement {
    /// Parses and checks a requirement.
    pub fn parse(text: &str) -> Result<Self, String> {
        // The semver crate accepts and then ignores build metadata in requirements; escx
        // versions have none (escx::header::parse_version), so it can only mislead.
        if text.contains('+') {
            return Err(format!("{text:?} has build metadata (\"+...\"), which requirements cannot match"));
        }
        let req =
            VersionReq::parse(text).map_err(|e| format!("{text:?} is not a version requirement: {e}"))?;
        let mut ranges = Ranges::full();
        for comparator in &req.comparators {
            ranges = ranges.intersection(&comparator_ranges(comparator)?);
        }
        if ranges.is_empty() {
            return Err(format!("{text:?} matches no version"));
        }
        let lowest = match ranges.bounding_range() {
            Some((Bound::Included(v) | Bound::Excluded(v), _)) => v.clone(),
            _ => Version::new(0, 0, 0),
        };
        let bucket = Bucket::of(&lowest);
        if !ranges.subset_of(&bucket.ranges()) {
            return Err(format!(
                "{text:?} spans more than one major version (from {bucket}); escx resolves one version per package per major"
            ));
        }
        Ok(Self { text: text.trim().to_owned(), ranges, bucket })
    }

    /// An exact requirement `=version`.
    pub fn exact(version: &Version) -> Self {
        Self {
            text: format!("={version}"),
            ranges: Ranges::singleton(version.clone()),
            bucket: Bucket::of(version),
        }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The allowed versions as ranges (pre-releases inside them are still excluded by
    /// [`Self::matches`] unless pinned).
    pub fn ranges(&self) -> &Ranges<Version> {
        &self.ranges
    }

    /// The compatibility bucket every allowed version is in.
    pub fn bucket(&self) -> Bucket {
        self.bucket
    }

    /// Whether `version` satisfies the requirement.
    pub fn matches(&self, version: &Version) -> bool {
        if version.pre.is_empty() {
            self.ranges.contains(version)
        } else {
            self.ranges.as_singleton() == Some(version)
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A compatibility bucket: versions that may replace each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// `M.x.y` with M >= 1.
    Major(u64),
    /// `0.m.x` with m >= 1.
    Minor(u64),
    /// `0.0.p`.
    Patch(u64),
}

impl Bucket {
    /// The bucket of a version.
    pub fn of(version: &Version) -> Self {
        match (version.major, version.minor) {
            (0, 0) => Self::Patch(version.patch),
            (0, minor) => Self::Minor(minor),
            (major, _) => Self::Major(major),
        }
    }

    /// All versions in the bucket, pre-releases included.
    pub fn ranges(&self) -> Ranges<Version> {
        match *self {
            Self::Major(major) => Ranges::between(floor(major, 0, 0), floor(major + 1, 0, 0)),
            Self::Minor(minor) => Ranges::between(floor(0, minor, 0), floor(0, minor + 1, 0)),
            Self::Patch(patch) => Ranges::between(floor(0, 0, patch), floor(0, 0, patch + 1)),
        }
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Major(major) => write!(f, "{major}"),
            Self::Minor(minor) => write!(f, "0.{minor}"),
            Self::Patch(patch) => write!(f, "0.0.{patch}"),
        }
    }
}

/// The lowest version with this triple (`M.m.p-0`, below every other pre-release).
fn floor(major: u64, minor: u64, patch: u64) -> Version {
    let mut version = Version::new(major, minor, patch);
    version.pre = Prerelease::new("0").unwrap_or(Prerelease::EMPTY);
    version
}

fn exact(c: &Comparator, minor: u64, patch: u64) -> Version {
    let mut version = Version::new(c.major, minor, patch);
    version.pre = c.pre.clone();
    version
}

/// Cargo's meaning of one comparator as ranges.
fn comparator_ranges(c: &Comparator) -> Result<Ranges<Version>, String> {
    let major = c.major;
    Ok(match (c.op, c.minor, c.patch) {
        (Op::Exact, Some(minor), Some(patch)) => Ranges::singleton(exact(c, minor, patch)),
        (Op::Exact | Op::Tilde | Op::Wildcard, Some(minor), None) => {
            Ranges::between(floor(major, minor, 0), floor(major, minor + 1, 0))
        }
        (Op::Exact | Op::Tilde | Op::Wildcard | Op::Caret, None, _) => {
            Ranges::between(floor(major, 0, 0), floor(major + 1, 0, 0))
        }
        (Op::Greater, Some(minor), Some(patch)) => Ranges::strictly_higher_than(exact(c, minor, patch)),
        (Op::Greater, Some(minor), None) => Ranges::higher_than(floor(major, minor + 1, 0)),
        (Op::Greater, None, _) => Ranges::higher_than(floor(major + 1, 0, 0)),
        (Op::GreaterEq, Some(minor), Some(patch)) => Ranges::higher_than(exact(c, minor, patch)),
        (Op::GreaterEq, Some(minor), None) => Ranges::higher_than(floor(major, minor, 0)),
        (Op::GreaterEq, None, _) => Ranges::higher_than(floor(major, 0, 0)),
        (Op::Less, Some(minor), Some(patch)) if c.pre.is_empty() => {
            Ranges::strictly_lower_than(floor(major, minor, patch))
        }
        (Op::Less, Some(minor), Some(patch)) => Ranges::strictly_lower_than(exact(c, minor, patch)),
        (Op::Less, Some(minor), None) => Ranges::strictly_lower_than(floor(major, minor, 0)),
        (Op::Less, None, _) => Ranges::strictly_lower_than(floor(major, 0, 0)),
        (Op::LessEq, Some(minor), Some(patch)) => Ranges::lower_than(exact(c, minor, patch)),
        (Op::LessEq, Some(minor), None) => Ranges::strictly_lower_than(floor(major, minor + 1, 0)),
        (Op::LessEq, None, _) => Ranges::strictly_lower_than(floor(major + 1, 0, 0)),
        (Op::Tilde, Some(minor), Some(patch)) => {
            Ranges::between(exact(c, minor, patch), floor(major, minor + 1, 0))
        }
        (Op::Caret, Some(minor), Some(patch)) => {
            let upper = match (major, minor) {
                (0, 0) => floor(0, 0, patch + 1),
                (0, minor) => floor(0, minor + 1, 0),
                (major, _) => floor(major + 1, 0, 0),
            };
            Ranges::between(exact(c, minor, patch), upper)
        }
        (Op::Caret, Some(minor), None) => {
            let upper = if major == 0 { floor(0, minor + 1, 0) } else { floor(major + 1, 0, 0) };
            Ranges::between(floor(major, minor, 0), upper)
        }
        (Op::Wildcard, Some(minor), Some(_)) => {
            Ranges::between(floor(major, minor, 0), floor(major, minor + 1, 0))
        }
        _ => return Err(format!("unsupported requirement operator in {c}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn caret_tilde_and_ranges_follow_cargo() {
        let caret = Requirement::parse("^1.2.3").unwrap();
        assert!(caret.matches(&v("1.2.3")) && caret.matches(&v("1.9.0")));
        assert!(!caret.matches(&v("2.0.0")) && !caret.matches(&v("1.2.2")));
        let zero = Requirement::parse("^0.2").unwrap();
        assert!(zero.matches(&v("0.2.9")) && !zero.matches(&v("0.3.0")));
        assert_eq!(zero.bucket().to_string(), "0.2");
        let tilde = Requirement::parse("~1.4.2").unwrap();
        assert!(tilde.matches(&v("1.4.9")) && !tilde.matches(&v("1.5.0")));
        let range = Requirement::parse(">=1.2, <1.6").unwrap();
        assert!(range.matches(&v("1.5.99")) && !range.matches(&v("1.6.0")));
        assert!(Requirement::parse("1.*").unwrap().matches(&v("1.7.0")));
        assert!(Requirement::parse("^0.0.3").unwrap().matches(&v("0.0.3")));
        assert!(!Requirement::parse("^0.0.3").unwrap().matches(&v("0.0.4")));
    }

    #[test]
    fn requirements_spanning_majors_are_refused() {
        for text in ["*", ">=1.0", ">=1.2, <3", "<2", ">1.2.3"] {
            let err = Requirement::parse(text).unwrap_err();
            assert!(err.contains("more than one major") || err.contains("no version"), "{text}: {err}");
        }
        assert!(Requirement::parse("not a req").is_err());
        assert!(Requirement::parse(">=2, <1").unwrap_err().contains("no version"));
        for text in ["^0.0", "~0", "^0", "0.*"] {
            let err = Requirement::parse(text).unwrap_err();
            assert!(err.contains("more than one major"), "{text}: {err}");
        }
        assert!(Requirement::parse("=1.2.3+build").unwrap_err().contains("build metadata"));
    }

    #[test]
    fn pre_releases_match_only_when_pinned() {
        assert!(!Requirement::parse("^1.2").unwrap().matches(&v("1.3.0-beta.1")));
        assert!(!Requirement::parse("^1.2").unwrap().matches(&v("2.0.0-alpha")));
        assert!(Requirement::parse("=1.3.0-beta.1").unwrap().matches(&v("1.3.0-beta.1")));
    }
}
