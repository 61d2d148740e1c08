//! Shared helpers: a registry with a publisher and a client policy.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use escx::keyfile;
use escx::pack::{self, PackOptions};
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx_manifest::client::StateDir;
use escx_manifest::registry::{DEFAULT_EXPIRY_SECS, Registry};

pub const NOW: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000);

pub struct World {
    pub tmp: tempfile::TempDir,
    pub registry_key: SecretKey,
    pub publisher: SecretKey,
    pub registry: Registry,
    pub state: StateDir,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let registry_key = SecretKey::generate();
        let publisher = SecretKey::generate();
        let registry =
            Registry::init(&tmp.path().join("reg"), &[&registry_key], NOW, DEFAULT_EXPIRY_SECS).unwrap();
        let state = StateDir::new(tmp.path().join("state"));
        Self { tmp, registry_key, publisher, registry, state }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Packs `name@version` with `dependencies` (TOML lines) signed by `key`.
    pub fn package_signed_by(
        &self,
        key: &SecretKey,
        name: &str,
        version: &str,
        dependencies: &str,
    ) -> PathBuf {
        let dir = self.path(&format!("src-{}-{version}-{}", name.replace('/', "-"), key.id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("manifest.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"{name} package\"\n[dependencies]\n{dependencies}"),
        )
        .unwrap();
        std::fs::write(dir.join("lib.txt"), format!("{name} {version}\n")).unwrap();
        let out = self.path(&format!("{}-{version}-{}.escx", name.replace('/', "-"), key.id()));
        pack::pack_dir(
            &dir,
            &out,
            &[key],
            &PackOptions { signed_at: Some(NOW), overwrite: true, ..Default::default() },
        )
        .unwrap();
        out
    }

    pub fn package(&self, name: &str, version: &str, dependencies: &str) -> PathBuf {
        self.package_signed_by(&self.publisher, name, version, dependencies)
    }

    pub fn publishers(&self) -> TrustPolicy {
        TrustPolicy::from_keys(vec![self.publisher.public_key().clone()])
    }

    pub fn publish(&self, name: &str, version: &str, dependencies: &str) {
        let file = self.package(name, version, dependencies);
        self.registry
            .publish(&file, &self.publishers(), &[&self.registry_key], NOW, DEFAULT_EXPIRY_SECS)
            .unwrap();
    }

    /// The client's policy: registry key for the index, publisher for acme/*.
    pub fn client_policy(&self) -> TrustPolicy {
        let text = format!(
            "version = 1\n[[key]]\nname = \"registry\"\npublic_key = \"{}\"\n[[key]]\nname = \"acme\"\npublic_key = \"{}\"\n\
             [registry]\nkeys = [\"registry\"]\n[[scope]]\npackages = \"acme/*\"\nkeys = [\"acme\"]\n",
            key_line(&self.registry_key),
            key_line(&self.publisher)
        );
        TrustPolicy::parse(&text, Path::new("."), Path::new("trust.toml")).unwrap()
    }

    pub fn reg(&self) -> &Path {
        self.registry.root()
    }
}

pub fn key_line(key: &SecretKey) -> String {
    keyfile::public_key_text(key.public_key()).lines().last().unwrap().to_owned()
}
