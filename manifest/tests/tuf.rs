//! The client refuses each of the ten attacks TUF catalogues (registry.md §6).
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

mod common;

use escx::Fault as _;
use std::path::Path;

use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx_manifest::client::{self, StateDir};
use escx_manifest::index::{self, Index};
use escx_manifest::registry::DEFAULT_EXPIRY_SECS;
use semver::Version;

use common::*;

fn v(text: &str) -> Version {
    Version::parse(text).unwrap()
}

fn fetch_and_verify(world: &World, name: &str, version: &str) -> Result<(), escx_manifest::Error> {
    let trusted = client::load_index(world.reg(), &world.client_policy(), &world.state, NOW)?;
    let entry = trusted.index.find(name, &v(version)).unwrap().clone();
    let staging = tempfile::tempdir().unwrap();
    let file = client::fetch(world.reg(), name, &entry, staging.path())?;
    client::verify_fetched(&file, name, &entry, &world.client_policy(), NOW).map(|_| ())
}

fn rewrite_index(world: &World, keys: &[&SecretKey], edit: impl FnOnce(&mut Index)) {
    let (_, envelope) = index::read_signed(world.reg()).unwrap();
    let mut index = Index::from_cbor(envelope.payload_unverified()).unwrap();
    edit(&mut index);
    std::fs::write(world.reg().join(index::INDEX_FILE), index.sign(keys)).unwrap();
}

#[test]
fn honest_registry_passes_every_check() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    fetch_and_verify(&world, "acme/a", "1.0.0").unwrap();
}

#[test]
fn arbitrary_installation_is_refused() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    // The attacker replaces the file with their own build of the same name and version.
    let evil = world.package_signed_by(&SecretKey::generate(), "acme/a", "1.0.0", "");
    std::fs::copy(&evil, index::package_path(world.reg(), "acme/a", "1.0.0")).unwrap();
    let err = fetch_and_verify(&world, "acme/a", "1.0.0").unwrap_err();
    assert!(matches!(err.code(), "package-mismatch" | "package-size"), "{err}");
}

#[test]
fn endless_data_is_refused() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    let path = index::package_path(world.reg(), "acme/a", "1.0.0");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 1 << 20));
    std::fs::write(&path, bytes).unwrap();
    let err = fetch_and_verify(&world, "acme/a", "1.0.0").unwrap_err();
    assert_eq!(err.code(), "package-size", "{err}");
}

#[test]
fn extraneous_dependencies_are_refused() {
    let world = World::new();
    world.publish("acme/evil", "1.0.0", "");
    world.publish("acme/a", "1.0.0", "");
    // A compromised index (signed with the registry key) adds a dependency the publisher
    // never declared.
    rewrite_index(&world, &[&world.registry_key], |index| {
        let a = index.packages.iter_mut().find(|p| p.name == "acme/a").unwrap();
        a.versions[0].dependencies.push(index::IndexDependency {
            name: "acme/evil".parse().unwrap(),
            requirement: "^1".into(),
            optional: false,
            features: vec![],
        });
        index.version += 1;
    });
    let err = fetch_and_verify(&world, "acme/a", "1.0.0").unwrap_err();
    assert_eq!(err.code(), "package-mismatch", "{err}");
    assert!(err.to_string().contains("extraneous dependencies"), "{err}");
}

#[test]
fn fast_forward_by_an_untrusted_key_does_not_move_the_client() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    let honest = std::fs::read(world.reg().join(index::INDEX_FILE)).unwrap();
    rewrite_index(&world, &[&SecretKey::generate()], |index| index.version = 1_000_000);
    let err = client::load_index(world.reg(), &world.client_policy(), &world.state, NOW).unwrap_err();
    assert_eq!(err.code(), "policy-rejected", "{err}");
    // The honest index (a much lower version) is still accepted afterwards.
    std::fs::write(world.reg().join(index::INDEX_FILE), honest).unwrap();
    let trusted = client::load_index(world.reg(), &world.client_policy(), &world.state, NOW).unwrap();
    assert_eq!(trusted.index.version, 2);
}

#[test]
fn indefinite_freeze_is_refused() {
    let world = World::new();
    let later = NOW + DEFAULT_EXPIRY_SECS;
    let err = client::load_index(world.reg(), &world.client_policy(), &world.state, later).unwrap_err();
    assert_eq!(err.code(), "index-expired", "{err}");
    world.registry.refresh(&[&world.registry_key], later, DEFAULT_EXPIRY_SECS).unwrap();
    client::load_index(world.reg(), &world.client_policy(), &world.state, later).unwrap();
}

#[test]
fn an_index_that_expires_before_it_was_issued_is_invalid() {
    let world = World::new();
    rewrite_index(&world, &[&world.registry_key], |index| index.expires_at = index.issued_at);
    let err = client::load_index(world.reg(), &world.client_policy(), &world.state, NOW).unwrap_err();
    assert_eq!(err.code(), "index-invalid", "{err}");
    assert!(err.to_string().contains("expires_at"), "{err}");
}

#[test]
fn a_malicious_mirror_can_serve_but_not_forge() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    let mirror = world.path("mirror");
    let report = client::mirror(world.reg(), &mirror, &world.client_policy(), &world.state, NOW).unwrap();
    assert_eq!((report.copied, report.index_version), (1, 2));
    // The untouched mirror verifies like the origin.
    client::load_index(&mirror, &world.client_policy(), &StateDir::new(world.path("s2")), NOW).unwrap();
    // Altering the mirrored index payload breaks the registry's signature.
    let path = mirror.join(index::INDEX_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(6).position(|w| w == b"acme/a").unwrap();
    bytes[at + 5] = b'b';
    std::fs::write(&path, bytes).unwrap();
    let err = client::load_index(&mirror, &world.client_policy(), &StateDir::new(world.path("s3")), NOW)
        .unwrap_err();
    assert_eq!(err.code(), "index-invalid", "{err}");
    // A second mirror run refuses to copy a tampered package from a bad origin.
    std::fs::write(index::package_path(world.reg(), "acme/a", "1.0.0"), b"not the package").unwrap();
    let err = client::mirror(world.reg(), &world.path("mirror2"), &world.client_policy(), &world.state, NOW)
        .unwrap_err();
    assert!(matches!(err.code(), "package-size" | "package-mismatch"), "{err}");
}

#[test]
fn mix_and_match_is_refused() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    world.publish("acme/a", "1.1.0", "");
    // Serve 1.0.0's (validly signed) file as 1.1.0.
    std::fs::copy(
        index::package_path(world.reg(), "acme/a", "1.0.0"),
        index::package_path(world.reg(), "acme/a", "1.1.0"),
    )
    .unwrap();
    let err = fetch_and_verify(&world, "acme/a", "1.1.0").unwrap_err();
    assert!(matches!(err.code(), "package-mismatch" | "package-size"), "{err}");
}

#[test]
fn rollback_is_refused() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    let old = std::fs::read(world.reg().join(index::INDEX_FILE)).unwrap();
    world.publish("acme/a", "1.0.1", "");
    client::load_index(world.reg(), &world.client_policy(), &world.state, NOW).unwrap();
    std::fs::write(world.reg().join(index::INDEX_FILE), old).unwrap();
    let err = client::load_index(world.reg(), &world.client_policy(), &world.state, NOW).unwrap_err();
    assert_eq!(err.code(), "index-rollback", "{err}");
    assert!(err.to_string().contains("index version 2 is older than version 3"), "{err}");
}

/// The client adds a second registry key to its policy (a rotation under way). Keyed by
/// the key set alone, its state would start afresh and an old index, validly signed by
/// the first key, would be accepted again; state kept per key refuses it.
#[test]
fn changing_the_registry_key_set_keeps_rollback_protection() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    let old = std::fs::read(world.reg().join(index::INDEX_FILE)).unwrap();
    world.publish("acme/a", "1.0.1", "");
    client::load_index(world.reg(), &world.client_policy(), &world.state, NOW).unwrap();
    let second = SecretKey::generate();
    let widened = TrustPolicy::from_keys(vec![world.publisher.public_key().clone()])
        .with_registry_keys(vec![world.registry_key.public_key().clone(), second.public_key().clone()]);
    assert_ne!(widened.registry_id(), world.client_policy().registry_id(), "the key set id changed");
    std::fs::write(world.reg().join(index::INDEX_FILE), old).unwrap();
    let err = client::load_index(world.reg(), &widened, &world.state, NOW).unwrap_err();
    assert_eq!(err.code(), "index-rollback", "{err}");
}

/// Downloads go to new files in a private directory: a planted link at the download path
/// is never followed, and a file that does not match the index is removed.
#[cfg(unix)]
#[test]
fn downloads_never_follow_links_and_mismatches_are_removed() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    let trusted = client::load_index(world.reg(), &world.client_policy(), &world.state, NOW).unwrap();
    let entry = trusted.index.find("acme/a", &v("1.0.0")).unwrap().clone();
    let downloads = client::download_dir(&world.path("dl")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(downloads.path()).unwrap().permissions().mode() & 0o777, 0o700);
    let victim = world.path("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, downloads.path().join("acme--a-1.0.0.escx")).unwrap();
    let err = client::fetch(world.reg(), "acme/a", &entry, downloads.path()).unwrap_err();
    assert_eq!(err.code(), "io", "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    std::fs::remove_file(downloads.path().join("acme--a-1.0.0.escx")).unwrap();
    // A replaced package file: refused, and nothing left behind.
    let evil = world.package_signed_by(&SecretKey::generate(), "acme/a", "1.0.0", "");
    let mut bytes = std::fs::read(&evil).unwrap();
    bytes.resize(entry.size as usize, 0);
    std::fs::write(index::package_path(world.reg(), "acme/a", "1.0.0"), bytes).unwrap();
    let err = client::fetch(world.reg(), "acme/a", &entry, downloads.path()).unwrap_err();
    assert_eq!(err.code(), "package-mismatch", "{err}");
    assert_eq!(std::fs::read_dir(downloads.path()).unwrap().count(), 0, "the mismatching download was kept");
}

#[test]
fn a_different_index_with_an_accepted_version_is_equivocation() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    client::load_index(world.reg(), &world.client_policy(), &world.state, NOW).unwrap();
    rewrite_index(&world, &[&world.registry_key], |index| index.packages.clear());
    let err = client::load_index(world.reg(), &world.client_policy(), &world.state, NOW).unwrap_err();
    assert_eq!(err.code(), "index-equivocation", "{err}");
}

#[test]
fn key_compromise_below_threshold_is_refused() {
    let world = World::new();
    let second = SecretKey::generate();
    let text = format!(
        "version = 1\n[[key]]\nname = \"r1\"\npublic_key = \"{}\"\n[[key]]\nname = \"r2\"\npublic_key = \"{}\"\n\
         [registry]\nkeys = [\"r1\", \"r2\"]\nthreshold = 2\n[[scope]]\npackages = \"**\"\nkeys = [\"r1\"]\n",
        key_line(&world.registry_key),
        key_line(&second)
    );
    let policy = TrustPolicy::parse(&text, Path::new("."), Path::new("trust.toml")).unwrap();
    // Only one of the two registry keys (the compromised one) signed.
    let err = client::load_index(world.reg(), &policy, &world.state, NOW).unwrap_err();
    assert_eq!(err.code(), "policy-rejected", "{err}");
    assert!(err.to_string().contains("2 of 2 required"), "{err}");
    rewrite_index(&world, &[&world.registry_key, &second], |index| index.version += 1);
    client::load_index(world.reg(), &policy, &world.state, NOW).unwrap();
}

#[test]
fn wrong_software_is_refused() {
    let world = World::new();
    // The registry accepts a package signed by some other key (its own publisher policy is
    // lax), but the client trusts only the acme key for acme/*.
    let stranger = SecretKey::generate();
    let file = world.package_signed_by(&stranger, "acme/a", "1.0.0", "");
    let lax = TrustPolicy::from_keys(vec![stranger.public_key().clone()]);
    world.registry.publish(&file, &lax, &[&world.registry_key], NOW, DEFAULT_EXPIRY_SECS).unwrap();
    let err = fetch_and_verify(&world, "acme/a", "1.0.0").unwrap_err();
    assert_eq!(err.code(), "untrusted", "{err}");
}

#[test]
fn published_versions_are_immutable_and_yank_is_recorded() {
    let world = World::new();
    world.publish("acme/a", "1.0.0", "");
    let again = world.package("acme/a", "1.0.0", "");
    let err = world
        .registry
        .publish(&again, &world.publishers(), &[&world.registry_key], NOW, DEFAULT_EXPIRY_SECS)
        .unwrap_err();
    assert!(err.to_string().contains("already published"), "{err}");
    world
        .registry
        .set_yanked("acme/a", &v("1.0.0"), true, &[&world.registry_key], NOW, DEFAULT_EXPIRY_SECS)
        .unwrap();
    let trusted = client::load_index(world.reg(), &world.client_policy(), &world.state, NOW).unwrap();
    assert!(trusted.index.find("acme/a", &v("1.0.0")).unwrap().yanked);
}

#[test]
fn publish_refuses_a_package_the_registry_does_not_trust() {
    let world = World::new();
    let file = world.package_signed_by(&SecretKey::generate(), "acme/a", "1.0.0", "");
    let err = world
        .registry
        .publish(&file, &world.publishers(), &[&world.registry_key], NOW, DEFAULT_EXPIRY_SECS)
        .unwrap_err();
    assert_eq!(err.code(), "untrusted", "{err}");
    assert!(!index::package_path(world.reg(), "acme/a", "1.0.0").exists());
}
