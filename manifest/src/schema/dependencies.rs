//! `[dependencies]` and `[features]` (manifest.md §2).

use super::raw::*;
use super::*;

pub(super) fn validate_dependency(
    name: &S<String>,
    spec: S<toml::Value>,
    own_name: Option<&str>,
    c: &mut Collector<'_>,
) -> Option<(PackageName, Dependency)> {
    let key = format!("dependencies.{}", name.get_ref());
    let package = match PackageName::parse(name.get_ref().as_str()) {
        Ok(package) => package,
        Err(e) => {
            c.error(name.span(), &key, format!("dependency name {e}"), None);
            return None;
        }
    };
    if own_name == Some(package.as_str()) {
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
        Ok(requirement) => Some((package, Dependency { requirement, optional, features })),
        Err(reason) => {
            c.error(span, &key, reason, Some(requirement::HELP.into()));
            None
        }
    }
}

pub(super) fn validate_features(
    raw: BTreeMap<S<String>, S<Vec<S<String>>>>,
    dependencies: &BTreeMap<PackageName, Dependency>,
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
        if dependency.optional && !enabled_optional.contains(name.as_str()) {
            c.error(
                dependency_spans.get(name.as_str()).cloned().unwrap_or(0..0),
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
