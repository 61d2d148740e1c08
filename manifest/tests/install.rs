//! Verified installation in dependency order; failures leave the target as it was.

mod common;

use escx::Fault as _;
use std::path::Path;

use escx_manifest::client;
use escx_manifest::index;
use escx_manifest::install::{INSTALLED_FILE, install};
use escx_manifest::resolve::{Catalog, ResolveOptions, resolve};
use escx_manifest::{Manifest, lockfile::Lockfile};

use common::*;

fn app() -> Manifest {
    Manifest::parse(
        "[package]\nname = \"acme/app\"\nversion = \"0.1.0\"\n[dependencies]\n\"acme/a\" = \"^1\"\n\"acme/b\" = \"^1\"\n",
        Path::new("manifest.toml"),
    )
    .unwrap()
}

fn diamond(world: &World) {
    world.publish("acme/c", "1.2.0", "");
    world.publish("acme/c", "1.5.0", "");
    world.publish("acme/a", "1.0.0", "\"acme/c\" = \"^1.2\"\n");
    world.publish("acme/b", "1.0.0", "\"acme/c\" = \"^1.5\"\n");
}

#[test]
fn diamond_installs_dependencies_first_and_every_file_verifies() {
    let world = World::new();
    diamond(&world);
    let policy = world.client_policy();
    let trusted = client::load_index(world.reg(), &policy, &world.state, NOW).unwrap();
    let resolution = resolve(&app(), &Catalog::new(&trusted.index), &ResolveOptions::default()).unwrap();
    let target = world.path("app/escx_packages");
    let mut steps = Vec::new();
    let report = install(&trusted, &resolution, &target, &policy, NOW, |done, total, what| {
        steps.push(format!("{done}/{total} {what}"))
    })
    .unwrap();
    let order: Vec<String> = report.installed.iter().map(|(n, v)| format!("{n} {v}")).collect();
    assert_eq!(order, ["acme/c 1.5.0", "acme/a 1.0.0", "acme/b 1.0.0"]);
    assert_eq!(std::fs::read_to_string(target.join("acme/c/1.5.0/lib.txt")).unwrap(), "acme/c 1.5.0\n");
    assert!(target.join("acme/a/1.0.0/manifest.toml").exists());
    let record = std::fs::read_to_string(target.join(INSTALLED_FILE)).unwrap();
    assert!(record.find("acme/c").unwrap() < record.find("acme/a").unwrap(), "{record}");
    // Every package was verified before the first one was installed.
    let first_install = steps.iter().position(|s| s.contains("installing")).unwrap();
    assert_eq!(steps[..first_install].iter().filter(|s| s.contains("verifying")).count(), 3);
    // The lockfile round-trips the resolution.
    let lock = Lockfile::from_resolution(&resolution, "reg");
    assert_eq!(lock.packages.len(), 3);
}

#[test]
fn a_tampered_package_leaves_the_previous_install_untouched() {
    let world = World::new();
    diamond(&world);
    let policy = world.client_policy();
    let target = world.path("app/escx_packages");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep.txt"), "previous install").unwrap();

    let path = index::package_path(world.reg(), "acme/b", "1.0.0");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&path, bytes).unwrap();

    let trusted = client::load_index(world.reg(), &policy, &world.state, NOW).unwrap();
    let resolution = resolve(&app(), &Catalog::new(&trusted.index), &ResolveOptions::default()).unwrap();
    let err = install(&trusted, &resolution, &target, &policy, NOW, |_, _, _| {}).unwrap_err();
    assert_eq!(err.code(), "package-mismatch", "{err}");
    assert_eq!(std::fs::read_to_string(target.join("keep.txt")).unwrap(), "previous install");
    assert!(!target.join("acme").exists());
    let leftovers: Vec<_> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".escx"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_install_interrupted_between_renames_is_recovered() {
    let world = World::new();
    diamond(&world);
    let policy = world.client_policy();
    let target = world.path("app/escx_packages");
    // Simulate a crash after the old target was moved aside.
    let previous = world.path("app/escx_packages.escx-previous");
    std::fs::create_dir_all(&previous).unwrap();
    std::fs::write(previous.join("keep.txt"), "old").unwrap();
    let trusted = client::load_index(world.reg(), &policy, &world.state, NOW).unwrap();
    let resolution = resolve(&app(), &Catalog::new(&trusted.index), &ResolveOptions::default()).unwrap();
    install(&trusted, &resolution, &target, &policy, NOW, |_, _, _| {}).unwrap();
    assert!(!previous.exists());
    assert!(target.join("acme/a/1.0.0").exists());
}

/// A licensed (encrypted) package installs only when its content key is supplied; every
/// key is looked up before anything is extracted.
#[test]
fn licensed_packages_install_only_with_their_content_key() {
    use escx::pack::{self, PackOptions};
    use escx_manifest::install::install_licensed;

    let world = World::new();
    world.publish("acme/c", "1.5.0", "");
    world.publish("acme/a", "1.0.0", "\"acme/c\" = \"^1.2\"\n");
    world.package("acme/b", "1.0.0", "\"acme/c\" = \"^1.5\"\n");
    let source = world.path(&format!("src-acme-b-1.0.0-{}", world.publisher.id()));
    let issuer = escx::kem::KemSecretKey::generate();
    let licensed = world.path("acme-b-licensed.escx");
    let options =
        PackOptions { signed_at: Some(NOW), encrypt_for: Some(issuer.public_key()), ..Default::default() };
    pack::pack_dir(&source, &licensed, &[&world.publisher], &options).unwrap();
    world.registry.publish(&licensed, &world.publishers(), &[&world.registry_key], NOW, 86_400 * 30).unwrap();

    let policy = world.client_policy();
    let trusted = client::load_index(world.reg(), &policy, &world.state, NOW).unwrap();
    let resolution = resolve(&app(), &Catalog::new(&trusted.index), &ResolveOptions::default()).unwrap();
    let target = world.path("app/escx_packages");

    let err = install(&trusted, &resolution, &target, &policy, NOW, |_, _, _| {}).unwrap_err();
    assert_eq!(err.code(), "content-key-required", "{err}");
    assert!(err.to_string().contains("acme/b@1.0.0"), "{err}");
    assert!(!target.exists(), "nothing is extracted before every key is at hand");

    let keys = |name: &str, _version: &semver::Version, root: &[u8; 32]| {
        let mut reader = escx::container::PackageReader::open_file(&licensed).unwrap();
        assert_eq!((name, root), ("acme/b", reader.root()));
        let binding = reader.content_binding().unwrap();
        reader.content_key_section().unwrap().unwrap().open(&issuer, &binding).map_err(|e| e.to_string())
    };
    install_licensed(&trusted, &resolution, &target, &policy, NOW, &keys, |_, _, _| {}).unwrap();
    assert_eq!(std::fs::read_to_string(target.join("acme/b/1.0.0/lib.txt")).unwrap(), "acme/b 1.0.0\n");
}
