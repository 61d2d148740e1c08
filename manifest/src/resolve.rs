//! Dependency resolution (spec: resolution.md) with the PubGrub algorithm.
//!
//! Solver packages are [`Node`]s: the root manifest, one node per (package, compatibility
//! bucket) — so a resolution holds at most one version per package per major — and one
//! proxy node per enabled feature, which depends on its package at exactly the same
//! version plus whatever the feature enables (the technique uv uses for extras).
//! Versions are chosen highest first, skipping yanked versions unless the lockfile pins
//! them and pre-releases unless pinned exactly; locked versions are kept unless updating.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt;

use pubgrub::{
    DefaultStringReporter, Dependencies, DependencyConstraints, DependencyProvider,
    PackageResolutionStatistics, PubGrubError, Reporter,
};
use semver::Version;
use version_ranges::Ranges;

use crate::Error;
use crate::index::{Index, IndexVersion};
use crate::lockfile::Lockfile;
use crate::requirement::{Bucket, Requirement};
use crate::schema::{FeatureItem, Manifest};

/// The feature every dependant enables unless it is absent.
pub const DEFAULT_FEATURE: &str = "default";

/// A solver package.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// The manifest being resolved.
    Root(String),
    /// A package, one version per compatibility bucket.
    Package {
        /// Name.
        name: String,
        /// Bucket.
        bucket: Bucket,
    },
    /// A feature of a package (a proxy pinned to the package's version).
    Feature {
        /// Name.
        name: String,
        /// Bucket.
        bucket: Bucket,
        /// Feature.
        feature: String,
    },
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root(name) => f.write_str(name),
            Self::Package { name, .. } => f.write_str(name),
            Self::Feature { name, feature, .. } => write!(f, "{name}[{feature}]"),
        }
    }
}

/// Resolution settings.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions<'a> {
    /// A previous lockfile whose versions are kept (and whose yanked versions stay usable).
    pub lock: Option<&'a Lockfile>,
    /// Ignore the lockfile's versions and pick the highest again.
    pub update: bool,
    /// Features of the root manifest to enable (its `default` is always enabled when present).
    pub features: Vec<String>,
}

/// One package in a resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Name.
    pub name: String,
    /// Chosen version.
    pub version: Version,
    /// Its index entry.
    pub entry: IndexVersion,
    /// Enabled features.
    pub features: BTreeSet<String>,
    /// Resolved dependencies (name, version), sorted.
    pub dependencies: Vec<(String, Version)>,
}

/// The result: every package, and an installation order where dependencies come first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Root name.
    pub root: String,
    /// Direct dependencies of the root (name, version).
    pub root_dependencies: Vec<(String, Version)>,
    /// Packages sorted by name and version.
    pub packages: Vec<Resolved>,
    /// Indices into `packages`, dependencies before dependants.
    pub install_order: Vec<usize>,
}

impl Resolution {
    /// The package with this name and version.
    pub fn get(&self, name: &str, version: &Version) -> Option<&Resolved> {
        self.packages.iter().find(|p| p.name == name && p.version == *version)
    }
}

struct Provider<'a> {
    root: &'a Manifest,
    root_features: Vec<String>,
    index: &'a Index,
    /// Locked version per (name, bucket), unless updating.
    locked: HashMap<(String, Bucket), Version>,
    /// BLAKE3 the lockfile records per (name, version), checked even when updating.
    lock_hashes: HashMap<(String, Version), String>,
    /// Index versions of each package, ascending.
    versions: HashMap<&'a str, Vec<(Version, &'a IndexVersion)>>,
}

type Constraints = DependencyConstraints<Node, Ranges<Version>>;

impl<'a> Provider<'a> {
    fn new(root: &'a Manifest, index: &'a Index, options: &ResolveOptions<'_>) -> Self {
        let versions = index
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.versions.iter().map(|v| (v.semver(), v)).collect()))
            .collect();
        let locked = match options.lock {
            Some(lock) if !options.update => lock
                .packages
                .iter()
                .map(|p| ((p.name.clone(), Bucket::of(&p.version)), p.version.clone()))
                .collect(),
            _ => HashMap::new(),
        };
        let lock_hashes = options
            .lock
            .map(|lock| {
                lock.packages
                    .iter()
                    .map(|p| ((p.name.clone(), p.version.clone()), p.blake3.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut root_features = options.features.clone();
        if root.features.contains_key(DEFAULT_FEATURE) {
            root_features.push(DEFAULT_FEATURE.to_owned());
        }
        Self { root, root_features, index, locked, lock_hashes, versions }
    }

    fn candidates(
        &self,
        name: &str,
        bucket: Bucket,
    ) -> impl DoubleEndedIterator<Item = &(Version, &'a IndexVersion)> {
        let bucket_range = bucket.ranges();
        self.versions.get(name).into_iter().flatten().filter(move |(v, _)| bucket_range.contains(v))
    }

    fn allowed(
        &self,
        name: &str,
        bucket: Bucket,
        version: &Version,
        entry: &IndexVersion,
        range: &Ranges<Version>,
    ) -> bool {
        let locked = self.locked.get(&(name.to_owned(), bucket)) == Some(version);
        range.contains(version)
            && (version.pre.is_empty() || range.as_singleton() == Some(version))
            && (!entry.yanked || locked)
    }

    /// Adds `name` at `requirement`, with the dependency's default feature and `features`.
    fn add_dependency(
        &self,
        out: &mut BTreeMap<Node, Ranges<Version>>,
        name: &str,
        requirement: &Requirement,
        features: &[String],
    ) {
        let bucket = requirement.bucket();
        let mut add = |node: Node| {
            let entry = out.entry(node).or_insert_with(Ranges::full);
            *entry = entry.intersection(requirement.ranges());
        };
        add(Node::Package { name: name.to_owned(), bucket });
        let has_default = self
            .versions
            .get(name)
            .is_some_and(|versions| versions.iter().any(|(_, v)| v.features.contains_key(DEFAULT_FEATURE)));
        if has_default {
            add(Node::Feature { name: name.to_owned(), bucket, feature: DEFAULT_FEATURE.to_owned() });
        }
        for feature in features {
            add(Node::Feature { name: name.to_owned(), bucket, feature: feature.clone() });
        }
    }

    fn root_dependencies(&self) -> Result<Constraints, String> {
        let mut out = BTreeMap::new();
        let enabled = expand_root_features(self.root, &self.root_features)?;
        for (name, dependency) in &self.root.dependencies {
            let mut features = dependency.features.clone();
            features.extend(enabled.dependency_features.get(name).into_iter().flatten().cloned());
            if !dependency.optional || enabled.optional.contains(name) {
                self.add_dependency(&mut out, name, &dependency.requirement, &features);
            }
        }
        Ok(out.into_iter().collect())
    }

    fn package_dependencies(&self, name: &str, version: &Version) -> Result<Constraints, String> {
        let entry =
            self.index.find(name, version).ok_or_else(|| format!("{name} {version} is not in the index"))?;
        let mut out = BTreeMap::new();
        for dependency in entry.dependencies.iter().filter(|d| !d.optional) {
            let requirement = Requirement::parse(&dependency.requirement)?;
            self.add_dependency(&mut out, &dependency.name, &requirement, &dependency.features);
        }
        Ok(out.into_iter().collect())
    }

    fn feature_dependencies(
        &self,
        name: &str,
        bucket: Bucket,
        feature: &str,
        version: &Version,
    ) -> Result<Constraints, String> {
        let entry =
            self.index.find(name, version).ok_or_else(|| format!("{name} {version} is not in the index"))?;
        let mut out = BTreeMap::new();
        out.insert(Node::Package { name: name.to_owned(), bucket }, Ranges::singleton(version.clone()));
        let Some(items) = entry.features.get(feature) else {
            if feature == DEFAULT_FEATURE {
                return Ok(out.into_iter().collect());
            }
            return Err(format!("{name} {version} has no feature {feature:?}"));
        };
        for item in items {
            let (dependency_name, dependency_feature) = if let Some(dependency) = item.strip_prefix("dep:") {
                (dependency, None)
            } else if let Some((dependency, feature)) =
                item.rsplit_once('/').filter(|_| !entry.features.contains_key(item))
            {
                (dependency, Some(feature))
            } else {
                let node = Node::Feature { name: name.to_owned(), bucket, feature: item.clone() };
                out.insert(node, Ranges::singleton(version.clone()));
                continue;
            };
            let dependency =
                entry.dependencies.iter().find(|d| d.name == dependency_name).ok_or_else(|| {
                    format!("{name} {version}: feature {feature} names unknown dependency {dependency_name}")
                })?;
            let requirement = Requirement::parse(&dependency.requirement)?;
            let mut features = dependency.features.clone();
            features.extend(dependency_feature.map(str::to_owned));
            self.add_dependency(&mut out, dependency_name, &requirement, &features);
        }
        Ok(out.into_iter().collect())
    }
}

impl DependencyProvider for Provider<'_> {
    type P = Node;
    type V = Version;
    type VS = Ranges<Version>;
    type M = String;
    type Err = Infallible;
    type Priority = (u32, Reverse<usize>);

    fn prioritize(
        &self,
        package: &Node,
        range: &Ranges<Version>,
        stats: &PackageResolutionStatistics,
    ) -> Self::Priority {
        let count = match package {
            Node::Root(_) => 1,
            Node::Package { name, bucket } | Node::Feature { name, bucket, .. } => self
                .candidates(name, *bucket)
                .filter(|(v, e)| self.allowed(name, *bucket, v, e, range))
                .count(),
        };
        (stats.conflict_count(), Reverse(count))
    }

    fn choose_version(&self, package: &Node, range: &Ranges<Version>) -> Result<Option<Version>, Infallible> {
        let (name, bucket) = match package {
            Node::Root(_) => return Ok(Some(self.root.package.version.clone())),
            Node::Package { name, bucket } | Node::Feature { name, bucket, .. } => (name, *bucket),
        };
        if let Some(locked) = self.locked.get(&(name.clone(), bucket))
            && let Some((_, entry)) = self.candidates(name, bucket).find(|(v, _)| v == locked)
            && self.allowed(name, bucket, locked, entry, range)
        {
            return Ok(Some(locked.clone()));
        }
        Ok(self
            .candidates(name, bucket)
            .rev()
            .find(|(v, e)| self.allowed(name, bucket, v, e, range))
            .map(|(v, _)| v.clone()))
    }

    fn get_dependencies(
        &self,
        package: &Node,
        version: &Version,
    ) -> Result<Dependencies<Node, Ranges<Version>, String>, Infallible> {
        let result = match package {
            Node::Root(_) => self.root_dependencies(),
            Node::Package { name, .. } => self.package_dependencies(name, version),
            Node::Feature { name, bucket, feature } => {
                self.feature_dependencies(name, *bucket, feature, version)
            }
        };
        Ok(match result {
            Ok(constraints) => Dependencies::Available(constraints),
            Err(reason) => Dependencies::Unavailable(reason),
        })
    }
}

/// Features of the root: which optional dependencies they enable and which dependency
/// features they request.
struct RootFeatures {
    optional: BTreeSet<String>,
    dependency_features: BTreeMap<String, Vec<String>>,
}

fn expand_root_features(root: &Manifest, requested: &[String]) -> Result<RootFeatures, String> {
    let mut pending: Vec<String> = requested.to_vec();
    let mut seen = BTreeSet::new();
    let mut enabled = RootFeatures { optional: BTreeSet::new(), dependency_features: BTreeMap::new() };
    while let Some(feature) = pending.pop() {
        if !seen.insert(feature.clone()) {
            continue;
        }
        let items = root
            .features
            .get(&feature)
            .ok_or_else(|| format!("{} has no feature {feature:?}", root.package.name))?;
        for item in items {
            match item {
                FeatureItem::Feature(other) => pending.push(other.clone()),
                FeatureItem::Dependency(name) => {
                    enabled.optional.insert(name.clone());
                }
                FeatureItem::DependencyFeature { dependency, feature } => {
                    enabled.optional.insert(dependency.clone());
                    enabled.dependency_features.entry(dependency.clone()).or_default().push(feature.clone());
                }
            }
        }
    }
    Ok(enabled)
}

/// Resolves `root`'s dependencies against `index` (resolution.md §3).
pub fn resolve(root: &Manifest, index: &Index, options: &ResolveOptions<'_>) -> Result<Resolution, Error> {
    let provider = Provider::new(root, index, options);
    let root_node = Node::Root(root.package.name.clone());
    let selected = match pubgrub::resolve(&provider, root_node.clone(), root.package.version.clone()) {
        Ok(selected) => selected,
        Err(PubGrubError::NoSolution(mut tree)) => {
            tree.collapse_no_versions();
            let root_text = format!("{} {}", root.package.name, root.package.version);
            let explanation = readable(&DefaultStringReporter::report(&tree)).replace(
                &format!("{root_text} is forbidden"),
                &format!("the requirements of {root_text} cannot all be met"),
            );
            return Err(Error::Unsatisfiable { explanation });
        }
        Err(other) => return Err(Error::Unsatisfiable { explanation: other.to_string() }),
    };
    assemble(root, index, &selected, &provider)
}

/// Turns the solver's selection into packages, edges and an installation order.
fn assemble(
    root: &Manifest,
    index: &Index,
    selected: &pubgrub::SelectedDependencies<Node, Version>,
    provider: &Provider<'_>,
) -> Result<Resolution, Error> {
    let mut chosen: BTreeMap<(String, Bucket), Version> = BTreeMap::new();
    let mut features: BTreeMap<(String, Bucket), BTreeSet<String>> = BTreeMap::new();
    for (node, version) in selected.iter() {
        match node {
            Node::Package { name, bucket } => {
                chosen.insert((name.clone(), *bucket), version.clone());
            }
            Node::Feature { name, bucket, feature } => {
                features.entry((name.clone(), *bucket)).or_default().insert(feature.clone());
            }
            Node::Root(_) => {}
        }
    }
    let version_of = |name: &str, requirement: &str| -> Option<Version> {
        let bucket = Requirement::parse(requirement).ok()?.bucket();
        chosen.get(&(name.to_owned(), bucket)).cloned()
    };
    let mut packages = Vec::new();
    for ((name, bucket), version) in &chosen {
        let entry = index
            .find(name, version)
            .ok_or_else(|| Error::NotInIndex { name: name.clone(), version: version.to_string() })?
            .clone();
        let active = features.get(&(name.clone(), *bucket)).cloned().unwrap_or_default();
        let enabled_optional: BTreeSet<&str> = active
            .iter()
            .filter_map(|f| entry.features.get(f))
            .flatten()
            .filter_map(|item| item.strip_prefix("dep:").or_else(|| item.rsplit_once('/').map(|(d, _)| d)))
            .collect();
        let mut dependencies: Vec<(String, Version)> = entry
            .dependencies
            .iter()
            .filter(|d| !d.optional || enabled_optional.contains(d.name.as_str()))
            .filter_map(|d| version_of(&d.name, &d.requirement).map(|v| (d.name.clone(), v)))
            .collect();
        dependencies.sort();
        dependencies.dedup();
        if let Some(lock) = provider.lock_hashes.get(&(name.clone(), version.clone()))
            && *lock != entry.blake3_hex()
        {
            return Err(Error::LockfileMismatch {
                name: name.clone(),
                version: version.to_string(),
                reason: format!(
                    "the lockfile records BLAKE3 {lock}, the registry index {}",
                    entry.blake3_hex()
                ),
            });
        }
        packages.push(Resolved {
            name: name.clone(),
            version: version.clone(),
            entry,
            features: active,
            dependencies,
        });
    }
    let root_features = expand_root_features(root, &provider.root_features)
        .map_err(|explanation| Error::Unsatisfiable { explanation })?;
    let mut root_dependencies: Vec<(String, Version)> = root
        .dependencies
        .iter()
        .filter(|(name, d)| !d.optional || root_features.optional.contains(*name))
        .filter_map(|(name, d)| version_of(name, d.requirement.as_str()).map(|v| (name.clone(), v)))
        .collect();
    root_dependencies.sort();
    let install_order = install_order(&packages)?;
    Ok(Resolution { root: root.package.name.clone(), root_dependencies, packages, install_order })
}

/// Dependencies before dependants (Kahn's algorithm, ties broken by name and version);
/// a cycle is an error that prints it.
fn install_order(packages: &[Resolved]) -> Result<Vec<usize>, Error> {
    let position: HashMap<(&str, &Version), usize> =
        packages.iter().enumerate().map(|(i, p)| ((p.name.as_str(), &p.version), i)).collect();
    let edges: Vec<Vec<usize>> = packages
        .iter()
        .map(|p| p.dependencies.iter().filter_map(|(n, v)| position.get(&(n.as_str(), v)).copied()).collect())
        .collect();
    if let Some(cycle) = find_cycle(&edges) {
        let mut path: Vec<String> =
            cycle.iter().map(|&i| format!("{} {}", packages[i].name, packages[i].version)).collect();
        path.push(path[0].clone());
        return Err(Error::DependencyCycle { cycle: path });
    }
    let mut remaining: Vec<usize> = edges.iter().map(Vec::len).collect();
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); packages.len()];
    for (from, targets) in edges.iter().enumerate() {
        for &to in targets {
            dependants[to].push(from);
        }
    }
    let mut ready: BTreeSet<usize> = (0..packages.len()).filter(|&i| remaining[i] == 0).collect();
    let mut order = Vec::with_capacity(packages.len());
    while let Some(next) = ready.pop_first() {
        order.push(next);
        for &dependant in &dependants[next] {
            remaining[dependant] -= 1;
            if remaining[dependant] == 0 {
                ready.insert(dependant);
            }
        }
    }
    Ok(order)
}

/// A cycle in the graph, as node indices in order, if there is one.
fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    for start in 0..edges.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge index); the stack is the current path.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&target) = edges[node].get(*next) {
                *next += 1;
                match marks[target] {
                    Mark::Active => {
                        let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                        return Some(stack[from..].iter().map(|(n, _)| *n).collect());
                    }
                    Mark::New => {
                        marks[target] = Mark::Active;
                        stack.push((target, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// PubGrub's report with solver-internal range bounds (`<2.0.0-0`, which excludes the next
/// major's pre-releases) written the way people write them (`<2.0.0`).
fn readable(report: &str) -> String {
    let mut out = String::with_capacity(report.len());
    let bytes = report.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let ends_version = i + 2 <= bytes.len()
            && &report[i..i + 2] == "-0"
            && i > 0
            && bytes[i - 1].is_ascii_digit()
            && bytes.get(i + 2).is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-'));
        if ends_version {
            i += 2;
            continue;
        }
        let ch = report[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}
