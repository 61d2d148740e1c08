//! `[include]`, `[lifecycle]` and `[solution]` (manifest.md §2).

use super::raw::*;
use super::*;

pub(super) fn validate_include(raw: S<RawInclude>, c: &mut Collector<'_>) -> Include {
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

pub(super) fn validate_lifecycle(
    raw: S<RawLifecycle>,
    own_name: Option<&str>,
    c: &mut Collector<'_>,
) -> Lifecycle {
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
        let span = name.span();
        let name = match PackageName::parse(name.into_inner()) {
            Ok(name) => name,
            Err(e) => {
                c.error(span, "lifecycle.replaced_by", e.to_string(), None);
                return None;
            }
        };
        if Some(name.as_str()) == own_name {
            c.error(span, "lifecycle.replaced_by", "a package cannot replace itself", None);
            return None;
        }
        Some(name)
    });
    Lifecycle { deprecated, replaced_by }
}

pub(super) fn validate_solution(raw: S<RawSolution>, c: &mut Collector<'_>) -> Option<Solution> {
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
        let name = match PackageName::parse(name.get_ref().as_str()) {
            Ok(name) => name,
            Err(e) => {
                c.error(name.span(), &key, e.to_string(), None);
                continue;
            }
        };
        match Requirement::parse(requirement.get_ref()) {
            Ok(parsed) => {
                packages.insert(name, parsed);
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
