//! Resolution: diamonds, conflicts, cycles, yanked versions, lockfile reuse, optional
//! dependencies and features, and a property test (resolution.md).

use escx::Fault as _;
use std::collections::BTreeMap;
use std::path::Path;

use escx_manifest::index::{Index, IndexDependency, IndexPackage, IndexVersion};
use escx_manifest::lockfile::Lockfile;
use escx_manifest::resolve::{Catalog, Resolution, ResolveOptions};
use escx_manifest::{Manifest, Requirement};
use proptest::prelude::*;
use semver::Version;
use serde_bytes::ByteBuf;

/// `(name, version, [(dependency, requirement, optional)], features, yanked)`.
type Spec<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str, bool)>, Vec<(&'a str, Vec<&'a str>)>, bool);

fn index(specs: &[Spec<'_>]) -> Index {
    let mut packages: BTreeMap<String, Vec<IndexVersion>> = BTreeMap::new();
    for (name, version, dependencies, features, yanked) in specs {
        let mut dependencies: Vec<IndexDependency> = dependencies
            .iter()
            .map(|(n, r, optional)| IndexDependency {
                name: n.parse().unwrap(),
                requirement: r.to_string(),
                optional: *optional,
                features: vec![],
            })
            .collect();
        dependencies.sort_by(|a, b| a.name.cmp(&b.name));
        packages.entry(name.to_string()).or_default().push(IndexVersion {
            version: version.to_string(),
            blake3: ByteBuf::from(blake3::hash(format!("{name}@{version}").as_bytes()).as_bytes().to_vec()),
            size: 1,
            publisher_key_id: ByteBuf::from(vec![0u8; 16]),
            yanked: *yanked,
            dependencies,
            features: features
                .iter()
                .map(|(f, items)| (f.to_string(), items.iter().map(|i| i.to_string()).collect()))
                .collect(),
            description: String::new(),
            keywords: vec![],
        });
    }
    let packages = packages
        .into_iter()
        .map(|(name, mut versions)| {
            versions.sort_by_key(|v| v.semver());
            IndexPackage { name: name.parse().unwrap(), versions }
        })
        .collect();
    Index {
        v: 2,
        version: 1,
        issued_at: escx::UnixSeconds(0),
        expires_at: escx::UnixSeconds(u64::MAX),
        packages,
        issuers: Vec::new(),
    }
}

fn plain(
    name: &'static str,
    version: &'static str,
    dependencies: Vec<(&'static str, &'static str)>,
) -> Spec<'static> {
    (name, version, dependencies.into_iter().map(|(n, r)| (n, r, false)).collect(), vec![], false)
}

fn app(dependencies: &str) -> Manifest {
    let text = format!("[package]\nname = \"app\"\nversion = \"0.1.0\"\n[dependencies]\n{dependencies}");
    Manifest::parse(&text, Path::new("manifest.toml")).unwrap()
}

/// Resolves against a freshly prepared catalog of `index`.
fn resolve<'a>(
    root: &Manifest,
    index: &'a Index,
    options: &ResolveOptions<'_>,
) -> Result<Resolution<'a>, escx_manifest::Error> {
    escx_manifest::resolve::resolve(root, &Catalog::new(index), options)
}

fn versions(resolution: &Resolution<'_>) -> Vec<String> {
    resolution.packages.iter().map(|p| format!("{} {}", p.name, p.version)).collect()
}

fn diamond_index() -> Index {
    index(&[
        plain("a", "1.0.0", vec![("c", "^1.2")]),
        plain("b", "1.0.0", vec![("c", "^1.5")]),
        plain("c", "1.2.0", vec![]),
        plain("c", "1.5.0", vec![]),
        plain("c", "1.9.0", vec![]),
        plain("c", "2.0.0", vec![]),
    ])
}

#[test]
fn diamond_picks_one_highest_compatible_version() {
    let diamond = diamond_index();
    let resolution = resolve(&app("a = \"^1\"\nb = \"^1\"\n"), &diamond, &ResolveOptions::default()).unwrap();
    assert_eq!(versions(&resolution), ["a 1.0.0", "b 1.0.0", "c 1.9.0"]);
    // c is installed before a and b.
    let order: Vec<&str> =
        resolution.install_order.iter().map(|&i| resolution.packages[i].name.as_str()).collect();
    assert_eq!(order, ["c", "a", "b"]);
}

#[test]
fn conflict_explanation_names_both_requirements() {
    let index = index(&[
        plain("a", "1.0.0", vec![("c", ">=1.2, <1.3")]),
        plain("b", "1.0.0", vec![("c", "^1.5")]),
        plain("c", "1.2.0", vec![]),
        plain("c", "1.5.0", vec![]),
    ]);
    let err = resolve(&app("a = \"^1\"\nb = \"^1\"\n"), &index, &ResolveOptions::default()).unwrap_err();
    assert_eq!(err.code(), "unsatisfiable");
    let text = err.to_string();
    assert!(text.contains("depends on c >=1.2.0, <1.3.0"), "{text}");
    assert!(text.contains("b 1.0.0 depends on c >=1.5.0, <2.0.0"), "{text}");
    assert!(!text.contains("-0"), "solver-internal bounds leaked: {text}");
    assert!(text.contains("the requirements of app 0.1.0 cannot all be met"), "{text}");
}

#[test]
fn cycle_is_an_error_that_prints_the_cycle() {
    let index = index(&[plain("a", "1.0.0", vec![("b", "^1")]), plain("b", "1.0.0", vec![("a", "^1")])]);
    let err = resolve(&app("a = \"^1\"\n"), &index, &ResolveOptions::default()).unwrap_err();
    assert_eq!(err.code(), "dependency-cycle");
    let text = err.to_string();
    assert!(
        text.contains("a 1.0.0 -> b 1.0.0 -> a 1.0.0") || text.contains("b 1.0.0 -> a 1.0.0 -> b 1.0.0"),
        "{text}"
    );
}

#[test]
fn yanked_versions_are_skipped_unless_locked() {
    let mut specs = vec![plain("c", "1.5.0", vec![]), plain("c", "1.9.0", vec![])];
    specs[1].4 = true; // 1.9.0 yanked
    let yanked_index = index(&specs);
    let resolution = resolve(&app("c = \"^1\"\n"), &yanked_index, &ResolveOptions::default()).unwrap();
    assert_eq!(versions(&resolution), ["c 1.5.0"]);

    // A lockfile made before the yank keeps 1.9.0.
    let unyanked = index(&[plain("c", "1.5.0", vec![]), plain("c", "1.9.0", vec![])]);
    let before = resolve(&app("c = \"^1\"\n"), &unyanked, &ResolveOptions::default()).unwrap();
    let lock = Lockfile::from_resolution(&before, "reg");
    let options = ResolveOptions { lock: Some(&lock), ..Default::default() };
    assert_eq!(versions(&resolve(&app("c = \"^1\"\n"), &yanked_index, &options).unwrap()), ["c 1.9.0"]);
    // --update drops the yanked version.
    let update = ResolveOptions { lock: Some(&lock), update: true, ..Default::default() };
    assert_eq!(versions(&resolve(&app("c = \"^1\"\n"), &yanked_index, &update).unwrap()), ["c 1.5.0"]);
}

#[test]
fn lockfile_is_reused_until_update() {
    let old = index(&[plain("c", "1.5.0", vec![])]);
    let first = resolve(&app("c = \"^1\"\n"), &old, &ResolveOptions::default()).unwrap();
    let lock = Lockfile::from_resolution(&first, "reg");
    let text = lock.to_toml();
    assert_eq!(Lockfile::parse(&text, Path::new("escx.lock")).unwrap(), lock);
    assert_eq!(text, Lockfile::from_resolution(&first, "reg").to_toml(), "lockfile text is deterministic");

    let newer = index(&[plain("c", "1.5.0", vec![]), plain("c", "1.6.0", vec![])]);
    let kept =
        resolve(&app("c = \"^1\"\n"), &newer, &ResolveOptions { lock: Some(&lock), ..Default::default() })
            .unwrap();
    assert_eq!(versions(&kept), ["c 1.5.0"]);
    let updated = resolve(
        &app("c = \"^1\"\n"),
        &newer,
        &ResolveOptions { lock: Some(&lock), update: true, ..Default::default() },
    )
    .unwrap();
    assert_eq!(versions(&updated), ["c 1.6.0"]);
}

#[test]
fn a_registry_file_that_changed_under_a_locked_version_is_refused() {
    let single = index(&[plain("c", "1.5.0", vec![])]);
    let first = resolve(&app("c = \"^1\"\n"), &single, &ResolveOptions::default()).unwrap();
    let mut lock = Lockfile::from_resolution(&first, "reg");
    lock.packages[0].blake3 = "00".repeat(32);
    let err =
        resolve(&app("c = \"^1\"\n"), &single, &ResolveOptions { lock: Some(&lock), ..Default::default() })
            .unwrap_err();
    assert_eq!(err.code(), "lockfile-mismatch", "{err}");
}

#[test]
fn optional_dependencies_come_only_with_their_feature() {
    let index = index(&[
        ("a", "1.0.0", vec![("svg", "^1", true)], vec![("svg", vec!["dep:svg"]), ("default", vec![])], false),
        plain("svg", "1.0.0", vec![]),
        plain("plot", "0.4.0", vec![]),
    ]);
    let root = "a = \"^1\"\nplot = { version = \"^0.4\", optional = true }\n[features]\nplots = [\"dep:plot\"]\nvector = [\"a/svg\"]\n";
    let without = resolve(&app(root), &index, &ResolveOptions::default()).unwrap();
    assert_eq!(versions(&without), ["a 1.0.0"]);
    let with = resolve(
        &app(root),
        &index,
        &ResolveOptions { features: vec!["plots".into(), "vector".into()], ..Default::default() },
    )
    .unwrap();
    assert_eq!(versions(&with), ["a 1.0.0", "plot 0.4.0", "svg 1.0.0"]);
    assert!(with.packages[0].features.contains("svg"));
    assert_eq!(with.packages[0].dependencies, vec![("svg".parse().unwrap(), Version::new(1, 0, 0))]);
}

#[test]
fn a_missing_feature_is_explained() {
    let index = index(&[plain("a", "1.0.0", vec![])]);
    let err = resolve(
        &app("a = { version = \"^1\", features = [\"turbo\"] }\n"),
        &index,
        &ResolveOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("has no feature \"turbo\""), "{err}");
}

#[test]
fn different_majors_coexist_one_version_each() {
    let index = index(&[
        plain("d", "1.0.0", vec![("c", "^2")]),
        plain("c", "1.4.0", vec![]),
        plain("c", "2.1.0", vec![]),
    ]);
    let resolution = resolve(&app("c = \"^1\"\nd = \"^1\"\n"), &index, &ResolveOptions::default()).unwrap();
    assert_eq!(versions(&resolution), ["c 1.4.0", "c 2.1.0", "d 1.0.0"]);
}

#[test]
fn pre_releases_only_when_pinned() {
    let index = index(&[plain("c", "1.4.0", vec![]), plain("c", "1.5.0-beta.1", vec![])]);
    assert_eq!(
        versions(&resolve(&app("c = \"^1\"\n"), &index, &ResolveOptions::default()).unwrap()),
        ["c 1.4.0"]
    );
    assert_eq!(
        versions(&resolve(&app("c = \"=1.5.0-beta.1\"\n"), &index, &ResolveOptions::default()).unwrap()),
        ["c 1.5.0-beta.1"]
    );
}

/// A random acyclic index: package `p{i}` may depend only on `p{j}` with j > i, and
/// every requirement is a caret of a version that exists, so a solution always exists
/// (the highest version of each bucket satisfies every caret requirement into it).
fn arbitrary_index() -> impl Strategy<Value = (Index, Vec<(String, String)>)> {
    let package_count = 6usize;
    let versions =
        prop::collection::vec(prop::collection::btree_set((1u64..3, 0u64..4), 1..4), package_count);
    let edges =
        prop::collection::vec((0..package_count, 0..package_count, any::<prop::sample::Index>()), 0..14);
    let roots = prop::collection::vec((0..package_count, any::<prop::sample::Index>()), 1..3);
    (versions, edges, roots).prop_map(move |(versions, edges, roots)| {
        let requirement = |target: usize, pick: &prop::sample::Index| {
            let choices: Vec<&(u64, u64)> = versions[target].iter().collect();
            let (major, minor) = choices[pick.index(choices.len())];
            format!("^{major}.{minor}")
        };
        // (name, version, [(dependency, requirement)])
        type OwnedSpec = (String, String, Vec<(String, String)>);
        let mut specs: Vec<OwnedSpec> = Vec::new();
        for (i, set) in versions.iter().enumerate() {
            for (major, minor) in set {
                let deps: Vec<(String, String)> = edges
                    .iter()
                    .filter(|(from, to, _)| *from == i && *to > i)
                    .map(|(_, to, pick)| (format!("p{to}"), requirement(*to, pick)))
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect();
                specs.push((format!("p{i}"), format!("{major}.{minor}.0"), deps));
            }
        }
        let owned: Vec<Spec<'_>> = specs
            .iter()
            .map(|(n, v, d)| {
                (
                    n.as_str(),
                    v.as_str(),
                    d.iter().map(|(a, b)| (a.as_str(), b.as_str(), false)).collect(),
                    vec![],
                    false,
                )
            })
            .collect();
        let index = index(&owned);
        let roots = roots
            .iter()
            .map(|(p, pick)| (format!("p{p}"), requirement(*p, pick)))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        (index, roots)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Every resolution satisfies every requirement in the graph, holds one version per
    /// package per major, and installs dependencies before their dependants.
    #[test]
    fn resolutions_satisfy_every_requirement((index, roots) in arbitrary_index()) {
        let dependencies: String = roots.iter().map(|(n, r)| format!("{n} = \"{r}\"\n")).collect();
        let root = app(&dependencies);
        let resolution = resolve(&root, &index, &ResolveOptions::default());
        prop_assert!(resolution.is_ok(), "a solvable graph failed: {}", resolution.unwrap_err());
        let resolution = resolution.unwrap();
        let chosen = |name: &str, requirement: &Requirement| {
            resolution.packages.iter().find(|p| p.name == name && requirement.matches(&p.version)).map(|p| p.version.clone())
        };
        for (name, requirement) in &roots {
            prop_assert!(chosen(name, &Requirement::parse(requirement).unwrap()).is_some(), "root requirement {} {} unmet", name, requirement);
        }
        let position = |name: &str, version: &Version| resolution.install_order.iter().position(|&i| {
            resolution.packages[i].name == name && resolution.packages[i].version == *version
        });
        let mut buckets = std::collections::BTreeSet::new();
        for package in &resolution.packages {
            prop_assert!(buckets.insert((package.name.clone(), escx_manifest::Bucket::of(&package.version))));
            for dependency in &package.entry.dependencies {
                let requirement = Requirement::parse(&dependency.requirement).unwrap();
                let version = chosen(&dependency.name, &requirement);
                prop_assert!(version.is_some(), "{} {} needs {} {}", package.name, package.version, dependency.name, requirement);
                let version = version.unwrap();
                prop_assert!(position(&dependency.name, &version) < position(&package.name, &package.version));
            }
        }
    }
}
