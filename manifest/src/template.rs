//! The commented template `escx manifest init` writes.

/// A valid manifest with every section explained; optional sections are commented out.
pub fn manifest_template(name: &str) -> String {
    TEMPLATE.replace("{name}", name).replace("{description}", PLACEHOLDER_DESCRIPTION)
}

/// The template's `description`, which says nothing about a real package: packing warns
/// while a manifest still carries it.
pub const PLACEHOLDER_DESCRIPTION: &str = "What this package does, in one paragraph.";

const TEMPLATE: &str = r#"# escx package manifest. Reference: spec/manifest.md

[package]
name = "{name}"                  # lowercase; optionally "scope/name"
version = "0.1.0"                # semantic version
description = "{description}"
license = "MIT OR Apache-2.0"    # SPDX expression
keywords = ["example"]           # up to 5, a-z 0-9 -
categories = ["tools"]           # up to 5, slugs like "engineering/simulation"
# homepage = "https://example.com"
# repository = "https://example.com/repo"

# [package.metadata]             # free-form; escx ignores it
# team = "platform"

# [publisher]
# name = "Acme Corp"
# email = "packages@acme.example"
# key_id = "0123456789abcdef0123456789abcdef"   # `escx key show acme.pub`

[dependencies]
# "acme/units" = "^1.2"                                        # one major at a time
# "acme/plot" = { version = "^0.4", optional = true, features = ["svg"] }

[features]
# default = []
# plots = ["dep:acme/plot"]      # enables the optional dependency

# [pricing]
# license_type = "paid"          # "free" or "paid"
# currency = "USD"
# [[pricing.tier]]
# name = "share"
# price = "49.00"                # decimal string, at most 6 decimals
# unit = "month"                 # "one-off", "hour", "month" or "year"
# telemetry = "share"            # "share" (needs [telemetry]) or "private"

# [telemetry]
# metrics = ["invocations", "compute_ms"]
# window = "1h"                  # at least one hour
# cohort_min_size = 50           # at least 50
# epsilon = 1.0                  # privacy budget per window, (0, 10]

# [revenue]
# currency = "USD"
# residual = "acme"              # receives the rounding dust
# effective_from = "2026-01-01"
# [[revenue.step]]
# party = "platform"
# share_of_gross_bps = 1500      # 15 % of gross
# [[revenue.step]]
# residual_weights = { acme = 3, partner = 1 }

[include]
# files = ["src/**", "data/**"]  # payload files; default: everything not hidden
# exclude = ["**/*.tmp"]

# [lifecycle]
# deprecated = "use acme/other instead"
# replaced_by = "acme/other"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_a_valid_manifest() {
        let manifest =
            crate::Manifest::parse(&manifest_template("acme/demo"), std::path::Path::new("manifest.toml"))
                .unwrap();
        assert_eq!(manifest.package.name, "acme/demo");
    }

    #[test]
    fn template_with_every_section_uncommented_is_valid() {
        let uncommented: String = manifest_template("acme/demo")
            .lines()
            .map(|line| {
                let line = line.strip_prefix("# ").filter(|rest| !rest.starts_with("escx"));
                line.map(str::to_owned)
            })
            .zip(manifest_template("acme/demo").lines())
            .map(|(uncommented, original)| uncommented.unwrap_or_else(|| original.to_owned()))
            .collect::<Vec<_>>()
            .join("\n");
        let result = crate::Manifest::parse(&uncommented, std::path::Path::new("manifest.toml"));
        assert!(result.is_ok(), "{}\n---\n{uncommented}", result.unwrap_err());
    }
}
