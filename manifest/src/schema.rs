//! The `manifest.toml` schema (spec: manifest.md) and its validation.
//!
//! Parsing happens in two passes. Serde reads the document into `Raw*` structs that keep
//! every value's byte span and refuse unknown keys (with a "did you mean"); then
//! [`Manifest::parse`] checks every rule, collecting all problems, each with file, line,
//! column, key path, the offending value and a fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use semver::Version;
use serde::Deserialize;
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

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `[package]`.
    pub package: Package,
    /// `[publisher]`.
    pub publisher: Option<Publisher>,
    /// `[dependencies]`, by package name.
    pub dependencies: BTreeMap<String, Dependency>,
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
    pub name: String,
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
    pub fn in_force(&self, at: u64) -> Option<&Waterfall> {
        std::iter::once(&self.base).chain(&self.versions).rev().find(|w| w.effective_from <= at)
    }
}

/// An ordered list of steps valid from a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waterfall {
    /// Unix seconds (midnight UTC of the given date).
    pub effective_from: u64,
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
    pub replaced_by: Option<String>,
}

/// `[solution]`: a bundle of packages with its own tier in the revenue chain
/// (platform -> solution -> customer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solution {
    /// The bundled packages and their requirements.
    pub packages: BTreeMap<String, Requirement>,
    /// The solution vendor's step, applied after the platform's and before the packages'.
    pub tier: Option<Step>,
}

// ---------------------------------------------------------------------------------------
// Raw (serde) form.

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    package: Option<S<RawPackage>>,
    publisher: Option<S<RawPublisher>>,
    #[serde(default)]
    dependencies: BTreeMap<S<String>, S<toml::Value>>,
    #[serde(default)]
    features: BTreeMap<S<String>, S<Vec<S<String>>>>,
    pricing: Option<S<RawPricing>>,
    revenue: Option<S<RawRevenue>>,
    telemetry: Option<S<RawTelemetry>>,
    include: Option<S<RawInclude>>,
    lifecycle: Option<S<RawLifecycle>>,
    solution: Option<S<RawSolution>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: Option<S<String>>,
    version: Option<S<String>>,
    description: Option<S<String>>,
    license: Option<S<String>>,
    #[serde(default)]
    keywords: Vec<S<String>>,
    #[serde(default)]
    categories: Vec<S<String>>,
    homepage: Option<S<String>>,
    repository: Option<S<String>>,
    metadata: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublisher {
    name: Option<S<String>>,
    email: Option<S<String>>,
    url: Option<S<String>>,
    key_id: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependencyTable {
    // Converted from a `toml::Value`, which carries no spans: errors point at the table.
    version: Option<String>,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    license_type: Option<S<String>>,
    currency: Option<S<String>>,
    #[serde(default)]
    tier: Vec<S<RawTier>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    name: Option<S<String>>,
    price: Option<S<String>>,
    unit: Option<S<String>>,
    telemetry: Option<S<String>>,
    seats: Option<S<i64>>,
    #[serde(default)]
    features: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevenue {
    currency: Option<S<String>>,
    residual: Option<S<String>>,
    effective_from: Option<S<String>>,
    #[serde(default)]
    step: Vec<S<RawStep>>,
    #[serde(default)]
    version: Vec<S<RawRevenueVersion>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevenueVersion {
    effective_from: Option<S<String>>,
    #[serde(default)]
    step: Vec<S<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    party: Option<S<String>>,
    share_of_gross_bps: Option<S<i64>>,
    share_of_remaining_bps: Option<S<i64>>,
    fixed: Option<S<String>>,
    recoup_cap: Option<S<String>>,
    residual_weights: Option<S<BTreeMap<String, S<i64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    #[serde(default)]
    metrics: Vec<S<String>>,
    window: Option<S<String>>,
    cohort_min_size: Option<S<i64>>,
    epsilon: Option<S<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInclude {
    #[serde(default)]
    files: Vec<S<String>>,
    #[serde(default)]
    exclude: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLifecycle {
    deprecated: Option<S<toml::Value>>,
    replaced_by: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSolution {
    #[serde(default)]
    packages: BTreeMap<S<String>, S<String>>,
    tier: Option<S<RawStep>>,
}

// ---------------------------------------------------------------------------------------
// Validation.

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self, crate::Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| crate::Error::Io { path: path.into(), error: e })?;
        Self::parse(&text, path).map_err(crate::Error::Manifest)
    }

    /// Validates manifest text; `file` names it in diagnostics.
    pub fn parse(text: &str, file: &Path) -> Result<Self, Diagnostics> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| Diagnostics(vec![diagnostic::from_toml(file, text, &e)]))?;
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
        if let Some(dependency) = validate_dependency(&name, spec, package_name.as_deref(), c) {
            dependency_spans.insert(name.get_ref().clone(), name.span());
            dependencies.insert(name.into_inner(), dependency);
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

fn validate_package(raw: S<RawPackage>, c: &mut Collector<'_>) -> Option<Package> {
    let span = raw.span();
    let raw = raw.into_inner();
    let name = match raw.name {
        Some(name) => {
            if let Err(reason) = escx::manifest::validate_name(name.get_ref()) {
                c.error(
                    name.span(),
                    "package.name",
                    format!("{:?} {reason}", name.get_ref()),
                    Some("use lowercase letters, digits, '-', '_', '.', optionally with one scope: \"acme/thermal\"".into()),
                );
            }
            Some(name.into_inner())
        }
        None => {
            c.error(span.clone(), "package.name", "missing `name`", Some("add name = \"scope/name\"".into()));
            None
        }
    };
    let version = match raw.version {
        Some(version) => match Version::parse(version.get_ref()) {
            Ok(v) => Some(v),
            Err(e) => {
                c.error(
                    version.span(),
                    "package.version",
                    format!("{:?} is not a semantic version: {e}", version.get_ref()),
                    Some("write MAJOR.MINOR.PATCH, e.g. \"1.2.0\"".into()),
                );
                None
            }
        },
        None => {
            c.error(span, "package.version", "missing `version`", Some("add version = \"0.1.0\"".into()));
            None
        }
    };
    if let Some(description) = &raw.description
        && description.get_ref().chars().count() > DESCRIPTION_CHARS_MAX
    {
        c.error(
            description.span(),
            "package.description",
            format!(
                "{} characters; the limit is {DESCRIPTION_CHARS_MAX}",
                description.get_ref().chars().count()
            ),
            Some("keep the description to one paragraph; put the rest in docs/".into()),
        );
    }
    if let Some(license) = &raw.license
        && let Err(e) = spdx::Expression::parse(license.get_ref())
    {
        c.error(
            license.span(),
            "package.license",
            format!("{:?} is not an SPDX license expression: {}", license.get_ref(), e.reason),
            Some("use SPDX identifiers such as \"MIT\", \"Apache-2.0\" or \"MIT OR Apache-2.0\"".into()),
        );
    }
    check_slug_list(&raw.keywords, "package.keywords", 24, false, c);
    check_slug_list(&raw.categories, "package.categories", 64, true, c);
    for (key, url) in [("package.homepage", &raw.homepage), ("package.repository", &raw.repository)] {
        if let Some(url) = url {
            check_url(url, key, c);
        }
    }
    Some(Package {
        name: name?,
        version: version?,
        description: raw.description.map(Spanned::into_inner),
        license: raw.license.map(Spanned::into_inner),
        keywords: raw.keywords.into_iter().map(Spanned::into_inner).collect(),
        categories: raw.categories.into_iter().map(Spanned::into_inner).collect(),
        homepage: raw.homepage.map(Spanned::into_inner),
        repository: raw.repository.map(Spanned::into_inner),
        metadata: raw.metadata,
    })
}

/// Keywords: `[a-z0-9-]`, 1..=max characters; categories may have `/`-separated parts.
fn check_slug_list(
    items: &[S<String>],
    key: &str,
    max_chars: usize,
    allow_slash: bool,
    c: &mut Collector<'_>,
) {
    if items.len() > KEYWORDS_MAX {
        c.error(
            items[KEYWORDS_MAX].span(),
            key,
            format!("more than {KEYWORDS_MAX} entries"),
            Some("keep the most relevant five".into()),
        );
    }
    for item in items {
        let text = item.get_ref();
        let ok_char = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-';
        let valid = !text.is_empty()
            && text.len() <= max_chars
            && text.split('/').all(|part| !part.is_empty() && part.chars().all(ok_char))
            && (allow_slash || !text.contains('/'));
        if !valid {
            let shape = if allow_slash { "lowercase slugs separated by '/'" } else { "a lowercase slug" };
            c.error(
                item.span(),
                key,
                format!("{text:?} is not {shape} of at most {max_chars} characters (a-z, 0-9, '-')"),
                None,
            );
        }
    }
}

fn check_url(url: &S<String>, key: &str, c: &mut Collector<'_>) {
    let text = url.get_ref();
    let host = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    if host.is_none_or(|h| h.is_empty() || h.starts_with('/') || h.contains(char::is_whitespace)) {
        c.error(
            url.span(),
            key,
            format!("{text:?} is not an http(s) URL"),
            Some("write the full URL, e.g. \"https://example.com/acme\"".into()),
        );
    }
}

fn validate_publisher(raw: S<RawPublisher>, c: &mut Collector<'_>) -> Option<Publisher> {
    let span = raw.span();
    let raw = raw.into_inner();
    let Some(name) = raw.name.filter(|n| !n.get_ref().trim().is_empty()) else {
        c.error(span, "publisher.name", "missing `name`", Some("add name = \"Acme Corp\"".into()));
        return None;
    };
    if let Some(email) = &raw.email {
        let text = email.get_ref();
        let valid =
            text.split_once('@').is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'));
        if !valid {
            c.error(email.span(), "publisher.email", format!("{text:?} is not an email address"), None);
        }
    }
    if let Some(url) = &raw.url {
        check_url(url, "publisher.url", c);
    }
    let key_id = raw.key_id.and_then(|k| match k.get_ref().parse::<escx::sig::KeyId>() {
        Ok(id) => Some(id),
        Err(e) => {
            c.error(
                k.span(),
                "publisher.key_id",
                e.to_string(),
                Some("run `escx key show your.pub` to see the key id".into()),
            );
            None
        }
    });
    Some(Publisher {
        name: name.into_inner(),
        email: raw.email.map(Spanned::into_inner),
        url: raw.url.map(Spanned::into_inner),
        key_id,
    })
}

fn validate_dependency(
    name: &S<String>,
    spec: S<toml::Value>,
    own_name: Option<&str>,
    c: &mut Collector<'_>,
) -> Option<Dependency> {
    let key = format!("dependencies.{}", name.get_ref());
    if let Err(reason) = escx::manifest::validate_name(name.get_ref()) {
        c.error(name.span(), &key, format!("dependency name {:?} {reason}", name.get_ref()), None);
        return None;
    }
    if own_name == Some(name.get_ref().as_str()) {
        c.error(name.span(), &key, "a package cannot depend on itself", None);
        return None;
    }
    let span = spec.span();
    let (requirement_text, optional, features) = match spec.into_inner() {
        toml::Value::String(text) => (text, false, Vec::new()),
        toml::Value::Table(table) => {
            let parsed: RawDependencyTable = match toml::Value::Table(table).try_into() {
                Ok(parsed) => parsed,
                Err(e) => {
                    let message = e.message().to_owned();
                    let help =
                        Some("write { version = \"^1.2\", optional = true, features = [\"x\"] }".to_owned());
                    c.error(span, &key, message, help);
                    return None;
                }
            };
            let Some(version) = parsed.version else {
                c.error(span, &key, "missing `version`", Some("add version = \"^1.2\"".into()));
                return None;
            };
            (version, parsed.optional, parsed.features)
        }
        other => {
            c.error(
                span,
                &key,
                format!("expected a version requirement string or a table, found {}", other.type_str()),
                Some(format!("write {} = \"^1.2\"", name.get_ref())),
            );
            return None;
        }
    };
    match Requirement::parse(&requirement_text) {
        Ok(requirement) => Some(Dependency { requirement, optional, features }),
        Err(reason) => {
            c.error(span, &key, reason, Some(requirement::HELP.into()));
            None
        }
    }
}

fn validate_features(
    raw: BTreeMap<S<String>, S<Vec<S<String>>>>,
    dependencies: &BTreeMap<String, Dependency>,
    dependency_spans: &BTreeMap<String, std::ops::Range<usize>>,
    c: &mut Collector<'_>,
) -> BTreeMap<String, Vec<FeatureItem>> {
    let names: BTreeSet<String> = raw.keys().map(|k| k.get_ref().clone()).collect();
    let mut enabled_optional = BTreeSet::new();
    let mut features = BTreeMap::new();
    for (name, items) in raw {
        let key = format!("features.{}", name.get_ref());
        let valid_name = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_');
        if !valid_name {
            c.error(
                name.span(),
                &key,
                format!("feature name {:?} must be a-z, 0-9, '-' or '_'", name.get_ref()),
                None,
            );
        }
        let mut parsed = Vec::new();
        for item in items.into_inner() {
            let text = item.get_ref().as_str();
            let entry = if let Some(dependency) = text.strip_prefix("dep:") {
                match dependencies.get(dependency) {
                    Some(d) if d.optional => {
                        enabled_optional.insert(dependency.to_owned());
                        Some(FeatureItem::Dependency(dependency.to_owned()))
                    }
                    Some(_) => {
                        c.error(
                            item.span(),
                            &key,
                            format!("{text:?}: {dependency} is not optional"),
                            Some(format!(
                                "mark it optional: {dependency} = {{ version = \"...\", optional = true }}"
                            )),
                        );
                        None
                    }
                    None => {
                        c.error(
                            item.span(),
                            &key,
                            format!("{text:?}: no dependency named {dependency:?}"),
                            None,
                        );
                        None
                    }
                }
            } else if let Some((dependency, feature)) =
                text.rsplit_once('/').filter(|_| !names.contains(text))
            {
                if let Some(d) = dependencies.get(dependency) {
                    if d.optional {
                        enabled_optional.insert(dependency.to_owned());
                    }
                    Some(FeatureItem::DependencyFeature {
                        dependency: dependency.to_owned(),
                        feature: feature.to_owned(),
                    })
                } else {
                    c.error(item.span(), &key, format!("{text:?}: no dependency named {dependency:?}"), None);
                    None
                }
            } else if names.contains(text) {
                if text == name.get_ref() {
                    c.error(item.span(), &key, "a feature cannot list itself", None);
                    None
                } else {
                    Some(FeatureItem::Feature(text.to_owned()))
                }
            } else {
                c.error(
                    item.span(),
                    &key,
                    format!("{text:?} is not a feature of this package"),
                    Some(
                        "list a feature, \"dep:NAME\" for an optional dependency, or \"NAME/FEATURE\"".into(),
                    ),
                );
                None
            };
            parsed.extend(entry);
        }
        features.insert(name.into_inner(), parsed);
    }
    for (name, dependency) in dependencies {
        if dependency.optional && !enabled_optional.contains(name) {
            c.error(
                dependency_spans.get(name).cloned().unwrap_or(0..0),
                format!("dependencies.{name}"),
                format!("optional dependency {name} is not enabled by any feature"),
                Some(format!(
                    "add {} = [\"dep:{name}\"] to [features]",
                    name.rsplit('/').next().unwrap_or(name)
                )),
            );
        }
    }
    features
}

fn validate_pricing(
    raw: S<RawPricing>,
    features: &BTreeMap<String, Vec<FeatureItem>>,
    c: &mut Collector<'_>,
) -> Option<Pricing> {
    let span = raw.span();
    let raw = raw.into_inner();
    let license_type = match raw.license_type.as_ref().map(|l| (l.get_ref().as_str(), l.span())) {
        Some(("free", _)) => LicenseType::Free,
        Some(("paid", _)) => LicenseType::Paid,
        Some((other, at)) => {
            c.error(
                at,
                "pricing.license_type",
                format!("{other:?} is not a license type"),
                Some("use \"free\" or \"paid\"".into()),
            );
            return None;
        }
        None => {
            c.error(
                span.clone(),
                "pricing.license_type",
                "missing `license_type`",
                Some("add license_type = \"free\" or \"paid\"".into()),
            );
            return None;
        }
    };
    let currency = raw.currency.as_ref().and_then(|cur| check_currency(cur, "pricing.currency", c));
    if raw.tier.len() > TIERS_MAX {
        c.error(raw.tier[TIERS_MAX].span(), "pricing.tier", format!("more than {TIERS_MAX} tiers"), None);
    }
    match license_type {
        LicenseType::Free if !raw.tier.is_empty() => {
            c.error(
                raw.tier[0].span(),
                "pricing.tier",
                "a free package has no price tiers",
                Some("remove the tiers or set license_type = \"paid\"".into()),
            );
        }
        LicenseType::Paid if raw.tier.is_empty() => {
            c.error(span.clone(), "pricing.tier", "a paid package needs at least one [[pricing.tier]]", None);
        }
        LicenseType::Paid if raw.currency.is_none() => {
            c.error(
                span,
                "pricing.currency",
                "a paid package needs a currency",
                Some("add currency = \"USD\"".into()),
            );
        }
        _ => {}
    }
    let mut tiers = Vec::new();
    let mut names = BTreeSet::new();
    for (index, tier) in raw.tier.into_iter().enumerate() {
        let key = format!("pricing.tier[{index}]");
        let span = tier.span();
        let tier = tier.into_inner();
        let Some(name) = tier.name else {
            missing_at(c, span, &format!("{key}.name"), "add name = \"share\"");
            continue;
        };
        if !names.insert(name.get_ref().clone()) {
            c.error(
                name.span(),
                format!("{key}.name"),
                format!("tier {:?} is defined twice", name.get_ref()),
                None,
            );
        }
        let price = match &tier.price {
            Some(p) => money(p, &format!("{key}.price"), c),
            None => {
                missing_at(
                    c,
                    span.clone(),
                    &format!("{key}.price"),
                    "add price = \"49.00\" (a decimal string)",
                );
                None
            }
        };
        let unit = match tier.unit.as_ref().map(|u| (u.get_ref().as_str(), u.span())) {
            Some(("one-off", _)) => Some(PriceUnit::OneOff),
            Some(("hour", _)) => Some(PriceUnit::Hour),
            Some(("month", _)) => Some(PriceUnit::Month),
            Some(("year", _)) => Some(PriceUnit::Year),
            Some((other, at)) => {
                c.error(
                    at,
                    format!("{key}.unit"),
                    format!("{other:?} is not a price unit"),
                    Some("use \"one-off\", \"hour\", \"month\" or \"year\"".into()),
                );
                None
            }
            None => Some(PriceUnit::OneOff),
        };
        let telemetry = match tier.telemetry.as_ref().map(|t| (t.get_ref().as_str(), t.span())) {
            Some(("share", _)) => Some(TelemetryMode::Share),
            Some(("private", _)) | None => Some(TelemetryMode::Private),
            Some((other, at)) => {
                c.error(
                    at,
                    format!("{key}.telemetry"),
                    format!("{other:?} is not a telemetry mode"),
                    Some("use \"share\" or \"private\"".into()),
                );
                None
            }
        };
        let seats = match &tier.seats {
            Some(s) if !(1..=1_000_000).contains(s.get_ref()) => {
                c.error(
                    s.span(),
                    format!("{key}.seats"),
                    format!("{} seats; use 1 to 1000000", s.get_ref()),
                    None,
                );
                None
            }
            // In 1..=1000000, checked above.
            Some(s) => u32::try_from(*s.get_ref()).ok(),
            None => None,
        };
        for feature in &tier.features {
            if !features.contains_key(feature.get_ref()) {
                c.error(
                    feature.span(),
                    format!("{key}.features"),
                    format!("{:?} is not a feature of this package", feature.get_ref()),
                    Some("entitlements name features declared in [features]".into()),
                );
            }
        }
        if let (Some(price), Some(unit), Some(telemetry)) = (price, unit, telemetry) {
            tiers.push(Tier {
                name: name.into_inner(),
                price,
                unit,
                telemetry,
                seats,
                features: tier.features.into_iter().map(Spanned::into_inner).collect(),
            });
        }
    }
    Some(Pricing { license_type, currency, tiers })
}

fn missing_at(c: &mut Collector<'_>, span: std::ops::Range<usize>, key: &str, help: &str) {
    let field = key.rsplit('.').next().unwrap_or(key);
    c.error(span, key, format!("missing `{field}`"), Some(help.to_owned()));
}

fn money(value: &S<String>, key: &str, c: &mut Collector<'_>) -> Option<Micros> {
    match Micros::parse(value.get_ref()) {
        Ok(amount) => Some(amount),
        Err(e) => {
            c.error(
                value.span(),
                key,
                format!("{:?}: {e}", value.get_ref()),
                Some("write amounts as decimal strings, e.g. \"49.99\"".into()),
            );
            None
        }
    }
}

fn check_currency(value: &S<String>, key: &str, c: &mut Collector<'_>) -> Option<String> {
    let text = value.get_ref();
    if text.len() == 3 && text.chars().all(|ch| ch.is_ascii_uppercase()) {
        Some(text.clone())
    } else {
        c.error(
            value.span(),
            key,
            format!("{text:?} is not an ISO 4217 currency code"),
            Some("use three capital letters, e.g. \"USD\" or \"EUR\"".into()),
        );
        None
    }
}

fn check_party(value: &S<String>, key: &str, c: &mut Collector<'_>) -> bool {
    let text = value.get_ref();
    let valid = !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "-_./".contains(ch));
    if !valid {
        c.error(
            value.span(),
            key,
            format!("party {text:?} must be 1-64 characters of a-z, 0-9, '-', '_', '.', '/'"),
            None,
        );
    }
    valid
}

fn parse_date(value: &S<String>, key: &str, c: &mut Collector<'_>) -> Option<u64> {
    let text = value.get_ref();
    if text.len() != 10 {
        c.error(
            value.span(),
            key,
            format!("{text:?} is not a date"),
            Some("write YYYY-MM-DD, e.g. \"2026-01-01\"".into()),
        );
        return None;
    }
    match escx::timestamp::parse(text) {
        Ok(at) => Some(at),
        Err(_) => {
            c.error(
                value.span(),
                key,
                format!("{text:?} is not a date"),
                Some("write YYYY-MM-DD, e.g. \"2026-01-01\"".into()),
            );
            None
        }
    }
}

fn validate_revenue(raw: S<RawRevenue>, c: &mut Collector<'_>) -> Option<Revenue> {
    let span = raw.span();
    let raw = raw.into_inner();
    let currency = match &raw.currency {
        Some(cur) => check_currency(cur, "revenue.currency", c),
        None => {
            c.error(
                span.clone(),
                "revenue.currency",
                "missing `currency`",
                Some("add currency = \"USD\"".into()),
            );
            None
        }
    };
    let residual = match &raw.residual {
        Some(party) => check_party(party, "revenue.residual", c).then(|| party.get_ref().clone()),
        None => {
            c.error(
                span.clone(),
                "revenue.residual",
                "missing `residual`",
                Some("name the party that receives the rounding dust, e.g. residual = \"acme\"".into()),
            );
            None
        }
    };
    let effective_from = match &raw.effective_from {
        Some(date) => parse_date(date, "revenue.effective_from", c),
        None => {
            c.error(
                span.clone(),
                "revenue.effective_from",
                "missing `effective_from`",
                Some("add effective_from = \"2026-01-01\"".into()),
            );
            None
        }
    };
    let steps = validate_steps(&raw.step, "revenue.step", span, c);
    let mut versions = Vec::new();
    let mut previous = effective_from;
    for (index, version) in raw.version.iter().enumerate() {
        let key = format!("revenue.version[{index}]");
        let version_span = version.span();
        let from = match &version.get_ref().effective_from {
            Some(date) => parse_date(date, &format!("{key}.effective_from"), c),
            None => {
                missing_at(
                    c,
                    version_span.clone(),
                    &format!("{key}.effective_from"),
                    "add effective_from = \"2027-01-01\"",
                );
                None
            }
        };
        if let (Some(from), Some(before)) = (from, previous)
            && from <= before
        {
            c.error(
                version_span.clone(),
                format!("{key}.effective_from"),
                "must be later than the previous waterfall's effective_from",
                Some("list [[revenue.version]] tables in date order".into()),
            );
        }
        let version_steps = validate_steps(&version.get_ref().step, &format!("{key}.step"), version_span, c);
        if let (Some(from), Some(steps)) = (from, version_steps) {
            versions.push(Waterfall { effective_from: from, steps });
        }
        previous = from.or(previous);
    }
    Some(Revenue {
        currency: currency?,
        residual: residual?,
        base: Waterfall { effective_from: effective_from?, steps: steps? },
        versions,
    })
}

fn validate_steps(
    raw: &[S<RawStep>],
    key: &str,
    table: std::ops::Range<usize>,
    c: &mut Collector<'_>,
) -> Option<Vec<Step>> {
    if raw.is_empty() {
        c.error(
            table,
            key,
            "a waterfall needs at least one step",
            Some("add [[revenue.step]] with a party and one amount rule".into()),
        );
        return None;
    }
    if raw.len() > REVENUE_STEPS_MAX {
        c.error(raw[REVENUE_STEPS_MAX].span(), key, format!("more than {REVENUE_STEPS_MAX} steps"), None);
    }
    let mut steps = Vec::new();
    let mut gross_bps: u32 = 0;
    let mut ok = true;
    for (index, step) in raw.iter().enumerate() {
        let step_key = format!("{key}[{index}]");
        match validate_step(step, &step_key, c) {
            Some(step) => {
                if let Step::ShareOfGross { bps, .. } = &step {
                    gross_bps += bps;
                }
                if matches!(step, Step::ResidualWeights { .. }) && index + 1 != raw.len() {
                    c.error(
                        raw[index].span(),
                        &step_key,
                        "residual_weights must be the last step",
                        Some("move it to the end: it splits whatever the other steps leave".into()),
                    );
                    ok = false;
                }
                steps.push(step);
            }
            None => ok = false,
        }
    }
    if gross_bps > BPS_FULL {
        c.error(
            raw[0].span(),
            key,
            format!("shares of gross add up to {gross_bps} bps, more than 10000 (100 %)"),
            Some("lower the share_of_gross_bps values".into()),
        );
        ok = false;
    }
    ok.then_some(steps)
}

fn validate_step(step: &S<RawStep>, key: &str, c: &mut Collector<'_>) -> Option<Step> {
    let raw = step.get_ref();
    let rules = [
        raw.share_of_gross_bps.is_some(),
        raw.share_of_remaining_bps.is_some(),
        raw.fixed.is_some(),
        raw.recoup_cap.is_some(),
        raw.residual_weights.is_some(),
    ];
    let count = rules.iter().filter(|r| **r).count();
    if count != 1 {
        c.error(
            step.span(),
            key,
            format!("a step needs exactly one amount rule, found {count}"),
            Some(
                "use one of share_of_gross_bps, share_of_remaining_bps, fixed, recoup_cap, residual_weights"
                    .into(),
            ),
        );
        return None;
    }
    if let Some(weights) = &raw.residual_weights {
        if let Some(party) = &raw.party {
            c.error(
                party.span(),
                format!("{key}.party"),
                "a residual_weights step names its parties in the weights, not in `party`",
                None,
            );
            return None;
        }
        let mut parsed = BTreeMap::new();
        if weights.get_ref().is_empty() || weights.get_ref().len() > RESIDUAL_PARTIES_MAX {
            c.error(
                weights.span(),
                format!("{key}.residual_weights"),
                format!("needs 1 to {RESIDUAL_PARTIES_MAX} parties"),
                None,
            );
            return None;
        }
        for (party, weight) in weights.get_ref() {
            let party_spanned = Spanned::new(weight.span(), party.clone());
            if !check_party(&party_spanned, &format!("{key}.residual_weights"), c) {
                return None;
            }
            if !(1..=i64::from(BPS_FULL)).contains(weight.get_ref()) {
                c.error(
                    weight.span(),
                    format!("{key}.residual_weights.{party}"),
                    format!("weight {} must be 1 to 10000", weight.get_ref()),
                    None,
                );
                return None;
            }
            // In 1..=10000, checked above.
            let Ok(weight) = u32::try_from(*weight.get_ref()) else { return None };
            parsed.insert(party.clone(), weight);
        }
        return Some(Step::ResidualWeights { weights: parsed });
    }
    let Some(party) = &raw.party else {
        c.error(
            step.span(),
            format!("{key}.party"),
            "missing `party`",
            Some("name who this step pays, e.g. party = \"platform\"".into()),
        );
        return None;
    };
    if !check_party(party, &format!("{key}.party"), c) {
        return None;
    }
    let party = party.get_ref().clone();
    let bps = |value: &S<i64>, field: &str, c: &mut Collector<'_>| {
        if (1..=i64::from(BPS_FULL)).contains(value.get_ref()) {
            u32::try_from(*value.get_ref()).ok()
        } else {
            c.error(
                value.span(),
                format!("{key}.{field}"),
                format!("{} bps is outside 1..=10000", value.get_ref()),
                Some("1 bps = 0.01 %; 1500 is 15 %".into()),
            );
            None
        }
    };
    let positive = |value: &S<String>, field: &str, c: &mut Collector<'_>| {
        let amount = money(value, &format!("{key}.{field}"), c)?;
        if amount == Micros::ZERO {
            c.error(value.span(), format!("{key}.{field}"), "must be greater than zero", None);
            return None;
        }
        Some(amount)
    };
    if let Some(value) = &raw.share_of_gross_bps {
        return Some(Step::ShareOfGross { party, bps: bps(value, "share_of_gross_bps", c)? });
    }
    if let Some(value) = &raw.share_of_remaining_bps {
        return Some(Step::ShareOfRemaining { party, bps: bps(value, "share_of_remaining_bps", c)? });
    }
    if let Some(value) = &raw.fixed {
        return Some(Step::Fixed { party, amount: positive(value, "fixed", c)? });
    }
    let value = raw.recoup_cap.as_ref()?;
    Some(Step::Recoup { party, cap: positive(value, "recoup_cap", c)? })
}

fn validate_telemetry(raw: S<RawTelemetry>, c: &mut Collector<'_>) -> Option<Telemetry> {
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.metrics.is_empty() {
        c.error(
            span.clone(),
            "telemetry.metrics",
            "no metrics",
            Some("list what the meter counts, e.g. metrics = [\"invocations\", \"compute_ms\"]".into()),
        );
    }
    let mut metrics = Vec::new();
    for metric in &raw.metrics {
        let text = metric.get_ref();
        let valid = matches!(text.as_str(), "invocations" | "compute_ms" | "bytes")
            || text.strip_prefix("custom:").is_some_and(|name| {
                !name.is_empty()
                    && name.len() <= 32
                    && name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
            });
        if valid {
            metrics.push(text.clone());
        } else {
            c.error(
                metric.span(),
                "telemetry.metrics",
                format!("{text:?} is not a metric"),
                Some("use invocations, compute_ms, bytes, or custom:<name> (a-z, 0-9, '_')".into()),
            );
        }
    }
    let window_secs = match &raw.window {
        Some(window) => parse_window(window, c),
        None => {
            c.error(
                span.clone(),
                "telemetry.window",
                "missing `window`",
                Some("add window = \"1h\" (at least one hour)".into()),
            );
            None
        }
    };
    let cohort_min_size = match &raw.cohort_min_size {
        Some(size)
            if *size.get_ref() < i64::from(COHORT_MIN_SIZE_FLOOR)
                || *size.get_ref() > i64::from(u32::MAX) =>
        {
            c.error(
                size.span(),
                "telemetry.cohort_min_size",
                format!("{} is below the minimum of {COHORT_MIN_SIZE_FLOOR}", size.get_ref()),
                Some("smaller cohorts could identify customers; use 50 or more".into()),
            );
            None
        }
        // In COHORT_MIN_SIZE_FLOOR..=u32::MAX, checked above.
        Some(size) => u32::try_from(*size.get_ref()).ok(),
        None => Some(COHORT_MIN_SIZE_FLOOR),
    };
    let epsilon = match &raw.epsilon {
        Some(e) if !(e.get_ref().is_finite() && *e.get_ref() > 0.0 && *e.get_ref() <= EPSILON_MAX) => {
            c.error(
                e.span(),
                "telemetry.epsilon",
                format!("{} is not in (0, {EPSILON_MAX}]", e.get_ref()),
                Some("smaller is more private; 1.0 is a common choice".into()),
            );
            None
        }
        Some(e) => Some(*e.get_ref()),
        None => {
            c.error(
                span,
                "telemetry.epsilon",
                "missing `epsilon`",
                Some("add epsilon = 1.0 (the privacy budget per window)".into()),
            );
            None
        }
    };
    Some(Telemetry {
        metrics,
        window_secs: window_secs?,
        cohort_min_size: cohort_min_size?,
        epsilon: epsilon?,
    })
}

/// `"<n>h"` or `"<n>d"`, at least one hour.
fn parse_window(value: &S<String>, c: &mut Collector<'_>) -> Option<u64> {
    let text = value.get_ref();
    let parsed =
        text.strip_suffix('h').and_then(|n| n.parse::<u64>().ok()).map(|h| h.saturating_mul(3600)).or_else(
            || text.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()).map(|d| d.saturating_mul(86_400)),
        );
    match parsed {
        Some(secs) if (3600..=366 * 86_400).contains(&secs) => Some(secs),
        _ => {
            c.error(
                value.span(),
                "telemetry.window",
                format!("{text:?} is not a window of at least one hour"),
                Some("write whole hours or days, e.g. \"1h\", \"24h\", \"7d\" (at most 366d)".into()),
            );
            None
        }
    }
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

fn validate_include(raw: S<RawInclude>, c: &mut Collector<'_>) -> Include {
    let raw = raw.into_inner();
    for (key, globs) in [("include.files", &raw.files), ("include.exclude", &raw.exclude)] {
        for glob in globs {
            if let Err(e) = globset::GlobBuilder::new(glob.get_ref()).literal_separator(true).build() {
                c.error(
                    glob.span(),
                    key,
                    format!("{:?} is not a valid glob: {}", glob.get_ref(), e.kind()),
                    Some(
                        "globs match '/'-separated paths; '*' stays within one directory, '**' crosses them"
                            .into(),
                    ),
                );
            }
        }
    }
    Include {
        files: raw.files.into_iter().map(Spanned::into_inner).collect(),
        exclude: raw.exclude.into_iter().map(Spanned::into_inner).collect(),
    }
}

fn validate_lifecycle(raw: S<RawLifecycle>, own_name: Option<&str>, c: &mut Collector<'_>) -> Lifecycle {
    let raw = raw.into_inner();
    let deprecated = match raw.deprecated {
        None => None,
        Some(value) => match value.get_ref() {
            toml::Value::Boolean(true) => Some("deprecated".to_owned()),
            toml::Value::Boolean(false) => None,
            toml::Value::String(message) if !message.trim().is_empty() => Some(message.clone()),
            _ => {
                c.error(
                    value.span(),
                    "lifecycle.deprecated",
                    "expected true, false or a message",
                    Some("write deprecated = \"use acme/thermal2 instead\"".into()),
                );
                None
            }
        },
    };
    let replaced_by = raw.replaced_by.and_then(|name| {
        if let Err(reason) = escx::manifest::validate_name(name.get_ref()) {
            c.error(name.span(), "lifecycle.replaced_by", format!("{:?} {reason}", name.get_ref()), None);
            return None;
        }
        if Some(name.get_ref().as_str()) == own_name {
            c.error(name.span(), "lifecycle.replaced_by", "a package cannot replace itself", None);
            return None;
        }
        Some(name.into_inner())
    });
    Lifecycle { deprecated, replaced_by }
}

fn validate_solution(raw: S<RawSolution>, c: &mut Collector<'_>) -> Option<Solution> {
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.packages.is_empty() {
        c.error(
            span,
            "solution.packages",
            "a solution bundles at least one package",
            Some("add packages = { \"acme/thermal\" = \"^1.2\" }".into()),
        );
        return None;
    }
    let mut packages = BTreeMap::new();
    for (name, requirement) in raw.packages {
        let key = format!("solution.packages.{}", name.get_ref());
        if let Err(reason) = escx::manifest::validate_name(name.get_ref()) {
            c.error(name.span(), &key, format!("{:?} {reason}", name.get_ref()), None);
            continue;
        }
        match Requirement::parse(requirement.get_ref()) {
            Ok(parsed) => {
                packages.insert(name.into_inner(), parsed);
            }
            Err(reason) => c.error(requirement.span(), &key, reason, Some(requirement::HELP.into())),
        }
    }
    let tier = match &raw.tier {
        Some(step) => {
            let parsed = validate_step(step, "solution.tier", c)?;
            if matches!(parsed, Step::ResidualWeights { .. } | Step::Recoup { .. }) {
                c.error(
                    step.span(),
                    "solution.tier",
                    "a solution tier is a share or a fixed amount",
                    Some("use share_of_gross_bps, share_of_remaining_bps or fixed".into()),
                );
                return None;
            }
            Some(parsed)
        }
        None => None,
    };
    Some(Solution { packages, tier })
}
