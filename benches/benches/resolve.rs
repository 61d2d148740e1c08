//! Resolution of a 200-package dependency tree over a generated index of 10 000 packages
//! with 10 versions each, next to `pubgrub` solving the same problem with its bare
//! in-memory `OfflineDependencyProvider`, in the same run; and loading + verifying the
//! signed index next to its raw parts (CBOR decode, one ML-DSA-87 verify).
//!
//! The tree: 200 packages form a DAG (each depends on up to 3 later tree packages with
//! caret requirements of existing versions); the root depends on all 200. The other
//! 9 800 packages depend on each other and are never reached, as in a real registry.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use escx::policy::TrustPolicy;
use escx::sig::{SecretKey, SigningContext};
use escx_manifest::client::{self, StateDir};
use escx_manifest::index::{INDEX_FILE, Index, IndexDependency, IndexPackage, IndexVersion};
use escx_manifest::resolve::{Catalog, ResolveOptions, resolve};
use escx_manifest::{Manifest, Requirement};
use pubgrub::OfflineDependencyProvider;
use semver::Version;
use serde_bytes::ByteBuf;
use version_ranges::Ranges;

const PACKAGES: usize = 10_000;
const VERSIONS: u64 = 10;
const TREE: usize = 200;

/// Deterministic pseudo-random numbers (SplitMix64), so every run benches the same index.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn name(i: usize) -> String {
    format!("bench/p{i:05}")
}

/// The index and the root's direct dependencies.
fn generate() -> (Index, Vec<(String, String)>) {
    let mut mix = Mix(42);
    // Tree packages are every 50th package; each depends on up to 3 later ones.
    let tree: Vec<usize> = (0..TREE).map(|k| k * (PACKAGES / TREE)).collect();
    let mut packages = Vec::with_capacity(PACKAGES);
    for i in 0..PACKAGES {
        let position = tree.iter().position(|&t| t == i);
        let versions = (0..VERSIONS)
            .map(|minor| {
                let mut dependencies: BTreeMap<String, String> = BTreeMap::new();
                let count = mix.below(4);
                for _ in 0..count {
                    let target = match position {
                        Some(p) if p + 1 < TREE => {
                            tree[p + 1 + mix.below((TREE - p - 1).min(20) as u64) as usize]
                        }
                        Some(_) => continue,
                        None if i + 1 < PACKAGES => {
                            i + 1 + mix.below(((PACKAGES - i - 1) as u64).min(50)) as usize
                        }
                        None => continue,
                    };
                    dependencies.insert(name(target), format!("^1.{}", mix.below(VERSIONS)));
                }
                IndexVersion {
                    version: format!("1.{minor}.0"),
                    blake3: ByteBuf::from(vec![0u8; 32]),
                    size: 1,
                    publisher_key_id: ByteBuf::from(vec![0u8; 16]),
                    yanked: false,
                    dependencies: dependencies
                        .into_iter()
                        .map(|(name, requirement)| IndexDependency {
                            name: name.parse().unwrap(),
                            requirement,
                            optional: false,
                            features: vec![],
                        })
                        .collect(),
                    features: BTreeMap::new(),
                    description: String::new(),
                    keywords: vec![],
                }
            })
            .collect();
        packages.push(IndexPackage { name: name(i).parse().unwrap(), versions });
    }
    let roots = tree.iter().map(|&t| (name(t), "^1.0".to_owned())).collect();
    (
        Index {
            v: 2,
            version: 1,
            issued_at: escx::UnixSeconds(0),
            expires_at: escx::UnixSeconds(u64::MAX),
            packages,
            issuers: Vec::new(),
        },
        roots,
    )
}

/// The same problem for bare pubgrub: packages are names, requirements their ranges.
fn offline(index: &Index, roots: &[(String, String)]) -> OfflineDependencyProvider<String, Ranges<Version>> {
    let mut provider = OfflineDependencyProvider::new();
    for package in &index.packages {
        for entry in &package.versions {
            let dependencies: Vec<(String, Ranges<Version>)> = entry
                .dependencies
                .iter()
                .map(|d| (d.name.to_string(), Requirement::parse(&d.requirement).unwrap().ranges().clone()))
                .collect();
            provider.add_dependencies(package.name.to_string(), entry.semver(), dependencies);
        }
    }
    let root_dependencies: Vec<(String, Ranges<Version>)> =
        roots.iter().map(|(n, r)| (n.clone(), Requirement::parse(r).unwrap().ranges().clone())).collect();
    provider.add_dependencies("root".to_owned(), Version::new(0, 1, 0), root_dependencies);
    provider
}

fn bench(c: &mut Criterion) {
    let (index, roots) = generate();
    let dependencies: String = roots.iter().map(|(n, r)| format!("\"{n}\" = \"{r}\"\n")).collect();
    let manifest = Manifest::parse(
        &format!("[package]\nname = \"bench/root\"\nversion = \"0.1.0\"\n[dependencies]\n{dependencies}"),
        Path::new("m"),
    )
    .unwrap();
    // Both sides get their lookup structures built outside the measurement: our catalog
    // (filled by a first resolution), pubgrub's offline provider.
    let catalog = Catalog::new(&index);
    let ours = resolve(&manifest, &catalog, &ResolveOptions::default()).unwrap();
    let provider = offline(&index, &roots);
    let bare = pubgrub::resolve(&provider, "root".to_owned(), Version::new(0, 1, 0)).unwrap();
    assert_eq!(ours.packages.len() + 1, bare.iter().count(), "both solve the same problem");
    eprintln!("resolution holds {} packages", ours.packages.len());

    let mut group = c.benchmark_group("resolve");
    group.bench_function("escx", |b| {
        b.iter(|| black_box(resolve(&manifest, &catalog, &ResolveOptions::default()).unwrap()))
    });
    group.bench_function("escx-cold-catalog", |b| {
        b.iter(|| black_box(resolve(&manifest, &Catalog::new(&index), &ResolveOptions::default()).unwrap()))
    });
    group.bench_function("pubgrub-offline", |b| {
        b.iter(|| black_box(pubgrub::resolve(&provider, "root".to_owned(), Version::new(0, 1, 0)).unwrap()))
    });
    group.finish();

    // Index load: signed file of 100 000 versions.
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let signed = index.sign(&[&key]);
    std::fs::write(dir.path().join(INDEX_FILE), &signed).unwrap();
    eprintln!("signed index: {:.1} MiB", signed.len() as f64 / (1024.0 * 1024.0));
    let policy = TrustPolicy::from_keys(vec![]).with_registry_keys(vec![key.public_key().clone()]);
    let payload = index.to_cbor();
    let signature = key.sign(SigningContext::INDEX, &payload);
    let mut group = c.benchmark_group("index-load");
    group.sample_size(20);
    group.bench_function("escx-load-verified", |b| {
        b.iter(|| {
            let state = StateDir::new(dir.path().join("state"));
            black_box(client::load_index(dir.path(), &policy, &state, escx::UnixSeconds(1)).unwrap())
        })
    });
    group.bench_function("cbor-decode", |b| {
        b.iter(|| black_box(ciborium::from_reader::<Index, _>(&payload[..]).unwrap()))
    });
    group.bench_function("ml-dsa-87-verify", |b| {
        b.iter(|| key.public_key().verify(SigningContext::INDEX, &payload, &signature).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
