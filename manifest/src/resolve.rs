//! Dependency resolution (spec: resolution.md) with the PubGrub algorithm.
//!
//! Solver packages are [`Node`]s: the root manifest, one node per (package, compatibility
//! bucket) — so a resolution holds at most one version per package per major — and one
//! proxy node per enabled feature, which depends on its package at exactly the same
//! version plus whatever the feature enables (the technique uv uses for extras).
//! Versions are chosen highest first, skipping yanked versions unless the lockfile pins
//! them and pre-releases unless pinned exactly; locked versions are kept unless updating.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::rc::Rc;

use pubgrub::{
    DefaultStringReporter, Dependencies, DependencyConstraints, DependencyProvider,
    PackageResolutionStatistics, PubGrubError, Reporter,
};
use rustc_hash::FxHashMap;
use semver::Version;
use version_ranges::Ranges;

use escx::header::PackageName;

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
    Root(PackageName),
    /// A package, one version per compatibility bucket.
    Package {
        /// Name.
        name: PackageName,
        /// Bucket.
        bucket: Bucket,
    },
    /// A feature of a package (a proxy pinned to the package's version).
    Feature {
        /// Name.
        name: PackageName,
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
pub struct Resolved<'a> {
    /// Name.
    pub name: PackageName,
    /// Chosen version.
    pub version: Version,
    /// Its index entry.
    pub entry: &'a IndexVersion,
    /// Enabled features.
    pub features: BTreeSet<String>,
    /// Resolved dependencies (name, version), sorted.
    pub dependencies: Vec<(PackageName, Version)>,
}

/// The result: every package, and an installation order where dependencies come first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution<'a> {
    /// Root name.
    pub root: PackageName,
    /// Direct dependencies of the root (name, version).
    pub root_dependencies: Vec<(PackageName, Version)>,
    /// Packages sorted by name and version.
    pub packages: Vec<Resolved<'a>>,
    /// Indices into `packages`, dependencies before dependants.
    pub install_order: Vec<usize>,
}

impl<'a> Resolution<'a> {
    /// The package with this name and version.
    pub fn get(&self, name: &str, version: &Version) -> Option<&Resolved<'a>> {
        self.packages.iter().find(|p| p.name == name && p.version == *version)
    }
}

/// An index prepared for resolution: a name lookup table and, filled lazily and kept
/// across resolutions, each visited package's parsed versions.
pub struct Catalog<'a> {
    index: &'a Index,
    names: FxHashMap<&'a str, usize>,
    versions: RefCell<FxHashMap<usize, Rc<PackageVersions<'a>>>>,
}

impl<'a> Catalog<'a> {
    /// Prepares `index` (a hash table over package names; versions are parsed on demand).
    pub fn new(index: &'a Index) -> Self {
        let names = index.packages.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
        Self { index, names, versions: RefCell::default() }
    }

    /// Every version of `name`, ascending (parsed once, on first use).
    fn versions_of(&self, name: &str) -> Rc<PackageVersions<'a>> {
        let Some(&position) = self.names.get(name) else { return Rc::default() };
        if let Some(cached) = self.versions.borrow().get(&position) {
            return Rc::clone(cached);
        }
        let package = &self.index.packages[position];
        let parsed = Rc::new(PackageVersions {
            versions: package.versions.iter().map(|v| (v.semver(), v)).collect(),
            has_default: package.versions.iter().any(|v| v.features.contains_key(DEFAULT_FEATURE)),
        });
        self.versions.borrow_mut().insert(position, Rc::clone(&parsed));
        parsed
    }
}

struct Provider<'c, 'a> {
    catalog: &'c Catalog<'a>,
    root: &'c Manifest,
    root_features: Vec<String>,
    /// Locked version per (name, bucket), unless updating.
    locked: HashMap<(PackageName, Bucket), Version>,
    /// BLAKE3 the lockfile records per (name, version), checked even when updating.
    lock_hashes: HashMap<(PackageName, Version), String>,
    /// Parsed requirements by text (an index repeats the same few requirements).
    requirements: RefCell<FxHashMap<&'a str, Rc<Requirement>>>,
}

type Constraints = DependencyConstraints<Node, Ranges<Version>>;

/// One package's parsed versions (ascending) and whether any declares a default feature.
#[derive(Default)]
struct PackageVersions<'a> {
    versions: Vec<(Version, &'a IndexVersion)>,
    has_default: bool,
}

impl<'c, 'a> Provider<'c, 'a> {
    fn new(root: &'c Manifest, catalog: &'c Catalog<'a>, options: &ResolveOptions<'_>) -> Self {
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
        Self { root, root_features, catalog, locked, lock_hashes, requirements: RefCell::default() }
    }

    fn versions_of(&self, name: &str) -> Rc<PackageVersions<'a>> {
        self.catalog.versions_of(name)
    }

    /// The bucket of a requirement text, from the cache when the solver saw it.
    fn requirement_bucket(&self, text: &str) -> Option<Bucket> {
        if let Some(cached) = self.requirements.borrow().get(text) {
            return Some(cached.bucket());
        }
        Requirement::parse(text).ok().map(|r| r.bucket())
    }

    /// A dependency requirement of an index entry, parsed once per distinct text.
    fn requirement(&self, text: &'a str) -> Result<Rc<Requirement>, String> {
        if let Some(cached) = self.requirements.borrow().get(text) {
            return Ok(Rc::clone(cached));
        }
        let parsed = Rc::new(Requirement::parse(text)?);
        self.requirements.borrow_mut().insert(text, Rc::clone(&parsed));
        Ok(parsed)
    }

    fn allowed(
        &self,
        name: &PackageName,
        bucket: Bucket,
        version: &Version,
        entry: &IndexVersion,
        range: &Ranges<Version>,
    ) -> bool {
        // The lock lookup allocates, so it only happens for the rare yanked version.
        range.contains(version)
            && (version.pre.is_empty() || range.as_singleton() == Some(version))
            && (!entry.yanked || self.locked.get(&(name.clone(), bucket)) == Some(version))
    }

    /// Adds `name` at `requirement`, with the dependency's default feature and `features`.
    fn add_dependency(
        &self,
        out: &mut BTreeMap<Node, Ranges<Version>>,
        name: &PackageName,
        requirement: &Requirement,
        features: &[String],
    ) {
        let bucket = requirement.bucket();
        let mut add = |node: Node| match out.entry(node) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(requirement.ranges().clone());
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                let narrowed = slot.get().intersection(requirement.ranges());
                *slot.get_mut() = narrowed;
            }
        };
        add(Node::Package { name: name.clone(), bucket });
        if self.versions_of(name).has_default {
            add(Node::Feature { name: name.clone(), bucket, feature: DEFAULT_FEATURE.to_owned() });
        }
        for feature in features {
            add(Node::Feature { name: name.clone(), bucket, feature: feature.clone() });
        }
    }

    fn root_dependencies(&self) -> Result<Constraints, String> {
        let mut out = BTreeMap::new();
        let enabled = expand_root_features(self.root, &self.root_features)?;
        for (name, dependency) in &self.root.dependencies {
            let mut features = dependency.features.clone();
            features.extend(enabled.dependency_features.get(name.as_str()).into_iter().flatten().cloned());
            if !dependency.optional || enabled.optional.contains(name.as_str()) {
                self.add_dependency(&mut out, name, &dependency.requirement, &features);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The index entry for `name` at `version`, from the pre-parsed version lists.
    fn entry(&self, name: &str, version: &Version) -> Result<&'a IndexVersion, String> {
        self.versions_of(name)
            .versions
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, entry)| *entry)
            .ok_or_else(|| format!("{name} {version} is not in the index"))
    }

    fn package_dependencies(&self, name: &str, version: &Version) -> Result<Constraints, String> {
        let entry = self.entry(name, version)?;
        let mut out = BTreeMap::new();
        for dependency in entry.dependencies.iter().filter(|d| !d.optional) {
            let requirement = self.requirement(&dependency.requirement)?;
            self.add_dependency(&mut out, &dependency.name, &requirement, &dependency.features);
        }
        Ok(out.into_iter().collect())
    }

    fn feature_dependencies(
        &self,
        name: &PackageName,
        bucket: Bucket,
        feature: &str,
        version: &Version,
    ) -> Result<Constraints, String> {
        let entry = self.entry(name, version)?;
        let mut out = BTreeMap::new();
        out.insert(Node::Package { name: name.clone(), bucket }, Ranges::singleton(version.clone()));
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
                let node = Node::Feature { name: name.clone(), bucket, feature: item.clone() };
                out.insert(node, Ranges::singleton(version.clone()));
                continue;
            };
            let dependency =
                entry.dependencies.iter().find(|d| d.name == dependency_name).ok_or_else(|| {
                    format!("{name} {version}: feature {feature} names unknown dependency {dependency_name}")
                })?;
            let requirement = self.requirement(&dependency.requirement)?;
            let mut features = dependency.features.clone();
            features.extend(dependency_feature.map(str::to_owned));
            self.add_dependency(&mut out, &dependency.name, &requirement, &features);
        }
        Ok(out.into_iter().collect())
    }
}

impl DependencyProvider for Provider<'_, '_> {
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
                .versions_of(name)
                .versions
                .iter()
                .filter(|(v, e)| Bucket::of(v) == *bucket && self.allowed(name, *bucket, v, e, range))
                .count(),
        };
        (stats.conflict_count(), Reverse(count))
    }

    fn choose_version(&self, package: &Node, range: &Ranges<Version>) -> Result<Option<Version>, Infallible> {
        let (name, bucket) = match package {
            Node::Root(_) => return Ok(Some(self.root.package.version.clone())),
            Node::Package { name, bucket } | Node::Feature { name, bucket, .. } => (name, *bucket),
        };
        let package_versions = self.versions_of(name);
        let versions = &package_versions.versions;
        let allowed = |(v, e): &&(Version, &IndexVersion)| {
            Bucket::of(v) == bucket && self.allowed(name, bucket, v, e, range)
        };
        if !self.locked.is_empty()
            && let Some(locked) = self.locked.get(&(name.clone(), bucket))
            && let Some((version, _)) = versions.iter().filter(allowed).find(|(v, _)| v == locked)
        {
            return Ok(Some(version.clone()));
        }
        Ok(versions.iter().rev().find(allowed).map(|(v, _)| v.clone()))
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
pub fn resolve<'a>(
    root: &Manifest,
    catalog: &Catalog<'a>,
    options: &ResolveOptions<'_>,
) -> Result<Resolution<'a>, Error> {
    let provider = Provider::new(root, catalog, options);
    let root_node = Node::Root(root.package.name.clone());
    let selected = match pubgrub::resolve(&provider, root_node.clone(), root.package.version.clone()) {
        Ok(selected) => selected,
        Err(PubGrubError::NoSolution(mut tree)) => {
            tree.collapse_no_versions();
            let explanation = DefaultStringReporter::report_with_formatter(&tree, &crate::explain::Explainer);
            return Err(Error::Unsatisfiable { explanation });
        }
        Err(other) => return Err(Error::Unsatisfiable { explanation: other.to_string() }),
    };
    assemble(root, &selected, &provider)
}

/// Turns the solver's selection into packages, edges and an installation order.
fn assemble<'a>(
    root: &Manifest,
    selected: &pubgrub::SelectedDependencies<Node, Version>,
    provider: &Provider<'_, 'a>,
) -> Result<Resolution<'a>, Error> {
    let mut chosen: BTreeMap<(PackageName, Bucket), Version> = BTreeMap::new();
    let mut features: BTreeMap<(PackageName, Bucket), BTreeSet<String>> = BTreeMap::new();
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
    let dependency_version = |name: &PackageName, requirement: &'_ str| -> Option<Version> {
        let bucket = provider.requirement_bucket(requirement)?;
        chosen.get(&(name.clone(), bucket)).cloned()
    };
    let mut packages = Vec::new();
    for ((name, bucket), version) in &chosen {
        let entry = provider
            .entry(name, version)
            .map_err(|_| Error::NotInIndex { name: name.to_string(), version: version.to_string() })?;
        let active = features.get(&(name.clone(), *bucket)).cloned().unwrap_or_default();
        let enabled_optional: BTreeSet<&str> = active
            .iter()
            .filter_map(|f| entry.features.get(f))
            .flatten()
            .filter_map(|item| item.strip_prefix("dep:").or_else(|| item.rsplit_once('/').map(|(d, _)| d)))
            .collect();
        let mut dependencies: Vec<(PackageName, Version)> = entry
            .dependencies
            .iter()
            .filter(|d| !d.optional || enabled_optional.contains(d.name.as_str()))
            .filter_map(|d| dependency_version(&d.name, &d.requirement).map(|v| (d.name.clone(), v)))
            .collect();
        dependencies.sort();
        dependencies.dedup();
        if let Some(lock) = provider.lock_hashes.get(&(name.clone(), version.clone()))
            && *lock != entry.blake3_hex()
        {
            return Err(Error::LockfileMismatch {
                name: name.to_string(),
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
    let mut root_dependencies: Vec<(PackageName, Version)> = root
        .dependencies
        .iter()
        .filter(|(name, d)| !d.optional || root_features.optional.contains(name.as_str()))
        .filter_map(|(name, d)| {
            chosen.get(&(name.clone(), d.requirement.bucket())).map(|v| (name.clone(), v.clone()))
        })
        .collect();
    root_dependencies.sort();
    let install_order = install_order(&packages)?;
    Ok(Resolution { root: root.package.name.clone(), root_dependencies, packages, install_order })
}

/// Dependencies before dependants (Kahn's algorithm, ties broken by name and version);
/// a cycle is an error that prints it.
fn install_order(packages: &[Resolved<'_>]) -> Result<Vec<usize>, Error> {
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
