//! The `manifest.toml` schema (spec: manifest.md) and its validation.
//!
//! Parsing happens in two passes. Serde reads the document into `Raw*` structs that keep
//! every value's byte span and refuse unknown keys (with a "did you mean"); then
//! [`Manifest::parse`] checks every rule, collecting all problems, each with file, line,
//! column, key path, the offending value and a fix.
//!
//! This module holds the validated types and the two passes; `raw` the serde forms; one
//! module per table of manifest.md §2 its checks (`package` with `[publisher]`,
//! `dependencies` with `[features]`, `pricing`, `telemetry`, `revenue`, and `extras` for
//! `[include]`, `[lifecycle]` and `[solution]`); `fields` the checks tables share.

use escx::UnixSeconds;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use escx::header::PackageName;
use semver::Version;
use toml::Spanned;

use crate::diagnostic::{self, Collector, Diagnostics};
use crate::money::Micros;
use crate::requirement::{self, Requirement};

/// Longest description, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 1024;
/// Most keywords and most categories.
pub const KEYWORDS_MAX: usize = 5;
/// Most dependencies of one package.
pub const DEPENDENCIES_MAX: usize = 256;
/// Most waterfall steps in one `[revenue]` version.
pub const REVENUE_STEPS_MAX: usize = 64;
/// Most parties in `residual_weights`.
pub const RESIDUAL_PARTIES_MAX: usize = 16;
/// Most pricing tiers.
pub const TIERS_MAX: usize = 16;
/// Smallest `cohort_min_size` (a cohort below it is never released).
pub const COHORT_MIN_SIZE_FLOOR: u32 = 50;
/// Largest accepted differential-privacy epsilon.
pub const EPSILON_MAX: f64 = 10.0;
/// Basis points in 100 %.
pub const BPS_FULL: u32 = 10_000;

mod dependencies;
mod extras;
mod fields;
mod package;
mod pricing;
mod raw;
mod revenue;
mod telemetry;

use dependencies::*;
use extras::*;
use package::*;
use pricing::*;
use raw::*;
use revenue::*;
use telemetry::*;

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `[package]`.
    pub package: Package,
    /// `[publisher]`.
    pub publisher: Option<Publisher>,
    /// `[dependencies]`, by package name.
    pub dependencies: BTreeMap<PackageName, Dependency>,
    /// `[features]`, by feature name.
    pub features: BTreeMap<String, Vec<FeatureItem>>,
    /// `[pricing]`.
    pub pricing: Option<Pricing>,
    /// `[revenue]`: the waterfall.
    pub revenue: Option<Revenue>,
    /// `[telemetry]`.
    pub telemetry: Option<Telemetry>,
    /// `[include]`.
    pub include: Include,
    /// `[lifecycle]`.
    pub lifecycle: Lifecycle,
    /// `[solution]`, for bundles.
    pub solution: Option<Solution>,
}

/// `[package]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    /// `scope/name` or `name`.
    pub name: PackageName,
    /// Semantic version.
    pub version: Version,
    /// One paragraph.
    pub description: Option<String>,
    /// SPDX license expression.
    pub license: Option<String>,
    /// Search keywords.
    pub keywords: Vec<String>,
    /// Categories (`a/b` slugs).
    pub categories: Vec<String>,
    /// Project home page.
    pub homepage: Option<String>,
    /// Source repository.
    pub repository: Option<String>,
    /// `[package.metadata]`, free-form and not interpreted.
    pub metadata: Option<toml::Table>,
}

/// `[publisher]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// Display name.
    pub name: String,
    /// Contact address.
    pub email: Option<String>,
    /// Web site.
    pub url: Option<String>,
    /// Key id of the publisher's signing key (32 hex digits).
    pub key_id: Option<escx::sig::KeyId>,
}

/// One `[dependencies]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The version requirement.
    pub requirement: Requirement,
    /// Only installed when a feature enables it (`dep:name`).
    pub optional: bool,
    /// Features of the dependency to enable.
    pub features: Vec<String>,
}

/// One item of a `[features]` list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FeatureItem {
    /// Another feature of this package.
    Feature(String),
    /// `dep:name`: enables an optional dependency.
    Dependency(String),
    /// `name/feature`: enables a feature of a dependency (and the dependency, if optional).
    DependencyFeature {
        /// The dependency.
        dependency: String,
        /// Its feature.
        feature: String,
    },
}

/// `[pricing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    /// Free or paid.
    pub license_type: LicenseType,
    /// ISO 4217 code, required for paid packages.
    pub currency: Option<String>,
    /// Price tiers (empty for free packages).
    pub tiers: Vec<Tier>,
}

/// `pricing.license_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseType {
    /// No license purchase needed.
    Free,
    /// Licenses are bought per tier.
    Paid,
}

/// One `[[pricing.tier]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// Unique tier name.
    pub name: String,
    /// Price per unit.
    pub price: Micros,
    /// What the price is for.
    pub unit: PriceUnit,
    /// Whether usage telemetry is shared (cheaper) or kept private.
    pub telemetry: TelemetryMode,
    /// Seats included, if limited.
    pub seats: Option<u32>,
    /// Entitlements (names of this package's features) the tier unlocks.
    pub features: Vec<String>,
}

/// `pricing.tier.unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceUnit {
    /// Paid once.
    OneOff,
    /// Per metered hour of use.
    Hour,
    /// Per month.
    Month,
    /// Per year.
    Year,
}

/// `pricing.tier.telemetry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryMode {
    /// Aggregated, noised usage telemetry is shared with the publisher.
    Share,
    /// Nothing beyond billing totals leaves the customer.
    Private,
}

/// `[revenue]`: a waterfall and its later versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revenue {
    /// ISO 4217 code.
    pub currency: String,
    /// Receives the rounding dust and whatever no step takes.
    pub residual: String,
    /// The waterfall in force from `effective_from`.
    pub base: Waterfall,
    /// Later waterfalls, strictly increasing `effective_from`.
    pub versions: Vec<Waterfall>,
}

impl Revenue {
    /// The waterfall in force at `at` (Unix seconds), if any.
    pub fn in_force(&self, at: UnixSeconds) -> Option<&Waterfall> {
        std::iter::once(&self.base).chain(&self.versions).rev().find(|w| w.effective_from <= at)
    }
}

/// An ordered list of steps valid from a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waterfall {
    /// Unix seconds (midnight UTC of the given date).
    pub effective_from: UnixSeconds,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One waterfall step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `share_of_gross_bps`: a share of the gross amount.
    ShareOfGross {
        /// Who is paid.
        party: String,
        /// 1..=10000.
        bps: u32,
    },
    /// `share_of_remaining_bps`: a share of what the earlier steps left.
    ShareOfRemaining {
        /// Who is paid.
        party: String,
        /// 1..=10000.
        bps: u32,
    },
    /// `fixed`: an amount per settlement, capped by what remains.
    Fixed {
        /// Who is paid.
        party: String,
        /// The amount.
        amount: Micros,
    },
    /// `recoup_cap`: everything that remains until the party has received `cap` in total,
    /// across settlements.
    Recoup {
        /// Who is paid.
        party: String,
        /// Cumulative cap.
        cap: Micros,
    },
    /// `residual_weights`: the remainder split by weights (last step only).
    ResidualWeights {
        /// Party -> weight (1..=10000).
        weights: BTreeMap<String, u32>,
    },
}

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// Metered units.
    pub metrics: Vec<String>,
    /// Aggregation window, a multiple of one hour.
    pub window_secs: u64,
    /// Cohorts smaller than this are never released.
    pub cohort_min_size: u32,
    /// Differential-privacy budget per window for share-tier telemetry.
    pub epsilon: f64,
}

/// `[include]`: payload file selection (escx-format.md §10.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Include {
    /// Globs selecting payload files (empty: everything).
    pub files: Vec<String>,
    /// Globs removed from the selection.
    pub exclude: Vec<String>,
}

/// `[lifecycle]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lifecycle {
    /// Set when the package is deprecated: the message, or "deprecated".
    pub deprecated: Option<String>,
    /// The package that replaces this one.
    pub replaced_by: Option<PackageName>,
}

/// `[solution]`: a bundle of packages with its own tier in the revenue chain
/// (platform -> solution -> customer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solution {
    /// The bundled packages and their requirements.
    pub packages: BTreeMap<PackageName, Requirement>,
    /// The solution vendor's step, applied after the platform's and before the packages'.
    pub tier: Option<Step>,
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self, crate::Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| crate::Error::Io { path: path.into(), error: e })?;
        Self::parse(&text, path).map_err(crate::Error::Manifest)
    }

    /// Validates manifest text; `file` names it in diagnostics. A document that does not
    /// have the manifest's shape (an unknown table or key, a value of the wrong type) gets
    /// one diagnostic per such problem, not only the first (manifest.md §9).
    pub fn parse(text: &str, file: &Path) -> Result<Self, Diagnostics> {
        if let Err(message) = escx::header::manifest_text(text.as_bytes()) {
            return Err(Diagnostics(vec![diagnostic::Diagnostic {
                file: file.to_path_buf(),
                line: 1,
                column: 1,
                key: String::new(),
                message,
                help: Some("remove the byte order mark; manifests are UTF-8 without one".into()),
            }]));
        }
        let raw: RawManifest = toml::from_str(text).map_err(|e| every_shape_error(file, text, &e))?;
        let mut c = Collector::new(file, text);
        let manifest = validate(raw, &mut c);
        c.finish()?;
        manifest.ok_or_else(|| Diagnostics(Vec::new()))
    }
}

fn validate(raw: RawManifest, c: &mut Collector<'_>) -> Option<Manifest> {
    let package = match raw.package {
        Some(p) => validate_package(p, c),
        None => {
            c.error(
                0..0,
                "package",
                "missing [package] table",
                Some("add [package] with name and version".into()),
            );
            None
        }
    };
    let publisher = raw.publisher.and_then(|p| validate_publisher(p, c));
    let package_name = package.as_ref().map(|p| p.name.clone());

    let mut dependencies = BTreeMap::new();
    let mut dependency_spans = BTreeMap::new();
    if let Some((name, _)) = raw.dependencies.iter().nth(DEPENDENCIES_MAX) {
        c.error(name.span(), "dependencies", format!("more than {DEPENDENCIES_MAX} dependencies"), None);
    }
    for (name, spec) in raw.dependencies {
        if let Some((package, dependency)) = validate_dependency(&name, spec, package_name.as_deref(), c) {
            dependency_spans.insert(name.get_ref().clone(), name.span());
            dependencies.insert(package, dependency);
        }
    }
    let features = validate_features(raw.features, &dependencies, &dependency_spans, c);
    let spans = SectionSpans {
        pricing: raw.pricing.as_ref().map(Spanned::span),
        revenue_currency: raw.revenue.as_ref().and_then(|r| r.get_ref().currency.as_ref().map(Spanned::span)),
    };
    let pricing = raw.pricing.and_then(|p| validate_pricing(p, &features, c));
    let revenue = raw.revenue.and_then(|r| validate_revenue(r, c));
    let telemetry = raw.telemetry.and_then(|t| validate_telemetry(t, c));
    cross_checks(&pricing, &revenue, &telemetry, &spans, c);
    let include = raw.include.map(|i| validate_include(i, c)).unwrap_or_default();
    let lifecycle =
        raw.lifecycle.map(|l| validate_lifecycle(l, package_name.as_deref(), c)).unwrap_or_default();
    let solution = raw.solution.and_then(|s| validate_solution(s, c));

    Some(Manifest {
        package: package?,
        publisher,
        dependencies,
        features,
        pricing,
        revenue,
        telemetry,
        include,
        lifecycle,
        solution,
    })
}

/// Where the tables checked against each other are, for cross-table messages.
struct SectionSpans {
    pricing: Option<std::ops::Range<usize>>,
    revenue_currency: Option<std::ops::Range<usize>>,
}

fn cross_checks(
    pricing: &Option<Pricing>,
    revenue: &Option<Revenue>,
    telemetry: &Option<Telemetry>,
    spans: &SectionSpans,
    c: &mut Collector<'_>,
) {
    if let Some(pricing) = pricing {
        if pricing.tiers.iter().any(|t| t.telemetry == TelemetryMode::Share) && telemetry.is_none() {
            c.error(
                spans.pricing.clone().unwrap_or(0..0),
                "telemetry",
                "a tier shares telemetry but there is no [telemetry] table",
                Some("add [telemetry] with metrics, window, cohort_min_size and epsilon".into()),
            );
        }
        if let (Some(priced), Some(revenue)) = (&pricing.currency, revenue)
            && *priced != revenue.currency
        {
            c.error(
                spans.revenue_currency.clone().unwrap_or(0..0),
                "revenue.currency",
                format!("revenue is in {} but prices are in {priced}", revenue.currency),
                Some("use one currency for prices and revenue".into()),
            );
        }
    }
}

/// At most this many shape problems are listed: beyond, the file is not a manifest.
const SHAPE_ERRORS_MAX: usize = 64;

/// Every shape problem of `text`, starting from `first`: each is recorded, then the key or
/// table it names is blanked out (spaces, newlines kept, so later positions stay true) and
/// the text is read again, until it reads or a problem cannot be located.
fn every_shape_error(file: &Path, text: &str, first: &toml::de::Error) -> Diagnostics {
    let mut found = vec![diagnostic::from_toml(file, text, first)];
    let mut blanked = text.to_owned();
    let mut error = first.clone();
    while found.len() < SHAPE_ERRORS_MAX {
        let Some(span) = error.span() else { break };
        let Some(next) = blank_entry(&blanked, span.start) else { break };
        blanked = next;
        match toml::from_str::<RawManifest>(&blanked) {
            Ok(_) => break,
            Err(e) => {
                let diagnostic = diagnostic::from_toml(file, text, &e);
                if found.contains(&diagnostic) {
                    break;
                }
                found.push(diagnostic);
                error = e;
            }
        }
    }
    found.sort_by_key(|d| (d.line, d.column));
    Diagnostics(found)
}

/// `text` with the entry at byte `at` replaced by spaces: a whole table when `at` is in a
/// `[table]` or `[[array]]` header (up to the next header), else the key's line and, while
/// its brackets are open, the lines its value continues on. `None` when nothing changes.
fn blank_entry(text: &str, at: usize) -> Option<String> {
    let at = (0..=at.min(text.len())).rev().find(|&o| text.is_char_boundary(o))?;
    let start = text[..at].rfind('\n').map_or(0, |n| n + 1);
    let is_header = |line: &str| line.trim_start().starts_with('[');
    let mut end = start;
    let mut depth: i64 = 0;
    for (index, line) in text[start..].split_inclusive('\n').enumerate() {
        if index == 0 {
            if is_header(line) {
                end += line.len();
                for rest in text[end..].split_inclusive('\n') {
                    if is_header(rest) {
                        break;
                    }
                    end += rest.len();
                }
                break;
            }
        } else if depth <= 0 {
            break;
        }
        depth += brackets(line);
        end += line.len();
    }
    if end == start {
        return None;
    }
    let blank: String = text[start..end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
    let next = format!("{}{blank}{}", &text[..start], &text[end..]);
    (next != text).then_some(next)
}

/// Opening minus closing brackets and braces on a line, outside strings and comments.
fn brackets(line: &str) -> i64 {
    let (mut depth, mut quote) = (0i64, None::<char>);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => break,
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, _) => {}
        }
    }
    depth
}
