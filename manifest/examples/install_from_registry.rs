//! Resolve and install a project's dependencies from a signed registry, in process.
//!
//! A registry operator signs the index, a publisher signs two packages, and a project that
//! depends on one of them (which depends on the other) installs both. Every package file is
//! checked against the index (size, BLAKE3) and its publisher's signature before anything
//! is extracted.
//!
//! Run with `cargo run -p escx-manifest --example install_from_registry`.

use std::path::Path;

use escx::keyfile::public_key_text;
use escx::pack::{PackOptions, pack_dir};
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx_manifest::client::StateDir;
use escx_manifest::project::{Project, Selection};
use escx_manifest::registry::{DEFAULT_EXPIRY_SECS, Registry};

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = tempfile::tempdir()?;
    let now = escx::now_unix();

    // The registry operator and a publisher, each with an ML-DSA-87 key.
    let registry_key = SecretKey::generate();
    let publisher = SecretKey::generate();
    let registry = Registry::init(&work.path().join("registry"), &[&registry_key], now, DEFAULT_EXPIRY_SECS)?;

    // The publisher packs and publishes acme/units and acme/thermal (which needs units).
    let publishers = TrustPolicy::from_keys(vec![publisher.public_key().clone()]);
    for (name, version, dependencies) in
        [("acme/units", "1.4.0", ""), ("acme/thermal", "2.0.1", "\"acme/units\" = \"^1.2\"\n")]
    {
        let source = work.path().join(name.replace('/', "-"));
        std::fs::create_dir_all(&source)?;
        std::fs::write(
            source.join("manifest.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"{version}\"\n[dependencies]\n{dependencies}"),
        )?;
        std::fs::write(source.join("README.txt"), format!("{name} {version}\n"))?;
        let file = work.path().join(format!("{}-{version}.escx", name.replace('/', "-")));
        pack_dir(&source, &file, &[&publisher], &PackOptions::default())?;
        registry.publish(&file, &publishers, &[&registry_key], now, DEFAULT_EXPIRY_SECS)?;
    }

    // The customer trusts the registry key for the index and the publisher for acme/*.
    let last_line =
        |key: &SecretKey| public_key_text(key.public_key()).lines().last().unwrap_or_default().to_owned();
    let policy = TrustPolicy::parse(
        &format!(
            "version = 1\n\
             [[key]]\nname = \"registry\"\npublic_key = \"{}\"\n\
             [[key]]\nname = \"acme\"\npublic_key = \"{}\"\n\
             [registry]\nkeys = [\"registry\"]\n\
             [[scope]]\npackages = \"acme/*\"\nkeys = [\"acme\"]\n",
            last_line(&registry_key),
            last_line(&publisher)
        ),
        Path::new("."),
        Path::new("trust.toml"),
    )?;

    // The project: a manifest naming its direct dependency.
    let app = work.path().join("app");
    std::fs::create_dir_all(&app)?;
    std::fs::write(
        app.join("manifest.toml"),
        "[package]\nname = \"plant-monitor\"\nversion = \"0.1.0\"\n[dependencies]\n\"acme/thermal\" = \"^2\"\n",
    )?;

    // One call: check the index, resolve, write escx.lock, verify every file, install.
    let state = StateDir::new(work.path().join("client-state"));
    let project = Project::load(&app, registry.root(), &policy, &state, now)?;
    let into = app.join("escx_packages");
    let report = project.install(&Selection::default(), &into, None, |_, _, _| {})?;

    for (name, version) in &report.installed {
        println!("installed {name} {version}");
    }
    assert_eq!(report.installed.len(), 2);
    assert_eq!(report.installed[0].0, "acme/units", "dependencies are installed first");
    assert!(project.lockfile_path().exists());
    assert_eq!(std::fs::read_to_string(into.join("acme/thermal/2.0.1/README.txt"))?, "acme/thermal 2.0.1\n");
    Ok(())
}
