//! The raw (serde) form: what `toml` reads, every value with its byte span, unknown
//! keys refused (with a "did you mean").

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A value and where it is in the file.
pub(super) type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManifest {
    pub(super) package: Option<S<RawPackage>>,
    pub(super) publisher: Option<S<RawPublisher>>,
    #[serde(default)]
    pub(super) dependencies: BTreeMap<S<String>, S<toml::Value>>,
    #[serde(default)]
    pub(super) features: BTreeMap<S<String>, S<Vec<S<String>>>>,
    pub(super) pricing: Option<S<RawPricing>>,
    pub(super) revenue: Option<S<RawRevenue>>,
    pub(super) telemetry: Option<S<RawTelemetry>>,
    pub(super) include: Option<S<RawInclude>>,
    pub(super) lifecycle: Option<S<RawLifecycle>>,
    pub(super) solution: Option<S<RawSolution>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPackage {
    pub(super) name: Option<S<String>>,
    pub(super) version: Option<S<String>>,
    pub(super) description: Option<S<String>>,
    pub(super) license: Option<S<String>>,
    #[serde(default)]
    pub(super) keywords: Vec<S<String>>,
    #[serde(default)]
    pub(super) categories: Vec<S<String>>,
    pub(super) homepage: Option<S<String>>,
    pub(super) repository: Option<S<String>>,
    pub(super) metadata: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublisher {
    pub(super) name: Option<S<String>>,
    pub(super) email: Option<S<String>>,
    pub(super) url: Option<S<String>>,
    pub(super) key_id: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDependencyTable {
    // Converted from a `toml::Value`, which carries no spans: errors point at the table.
    pub(super) version: Option<String>,
    #[serde(default)]
    pub(super) optional: bool,
    #[serde(default)]
    pub(super) features: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPricing {
    pub(super) license_type: Option<S<String>>,
    pub(super) currency: Option<S<String>>,
    #[serde(default)]
    pub(super) tier: Vec<S<RawTier>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTier {
    pub(super) name: Option<S<String>>,
    pub(super) price: Option<S<String>>,
    pub(super) unit: Option<S<String>>,
    pub(super) telemetry: Option<S<String>>,
    pub(super) seats: Option<S<i64>>,
    #[serde(default)]
    pub(super) features: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRevenue {
    pub(super) currency: Option<S<String>>,
    pub(super) residual: Option<S<String>>,
    pub(super) effective_from: Option<S<String>>,
    #[serde(default)]
    pub(super) step: Vec<S<RawStep>>,
    #[serde(default)]
    pub(super) version: Vec<S<RawRevenueVersion>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRevenueVersion {
    pub(super) effective_from: Option<S<String>>,
    #[serde(default)]
    pub(super) step: Vec<S<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) party: Option<S<String>>,
    pub(super) share_of_gross_bps: Option<S<i64>>,
    pub(super) share_of_remaining_bps: Option<S<i64>>,
    pub(super) fixed: Option<S<String>>,
    pub(super) recoup_cap: Option<S<String>>,
    pub(super) residual_weights: Option<S<BTreeMap<String, S<i64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    #[serde(default)]
    pub(super) metrics: Vec<S<String>>,
    pub(super) window: Option<S<String>>,
    pub(super) cohort_min_size: Option<S<i64>>,
    pub(super) epsilon: Option<S<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInclude {
    #[serde(default)]
    pub(super) files: Vec<S<String>>,
    #[serde(default)]
    pub(super) exclude: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLifecycle {
    pub(super) deprecated: Option<S<toml::Value>>,
    pub(super) replaced_by: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSolution {
    #[serde(default)]
    pub(super) packages: BTreeMap<S<String>, S<String>>,
    pub(super) tier: Option<S<RawStep>>,
}
