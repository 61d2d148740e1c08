//! A project's whole flow (resolution.md §3–§6): read its `manifest.toml` and `escx.lock`,
//! load and check the registry index, resolve, write the lockfile, and install, each as
//! one call.
//!
//! ```no_run
//! use escx_manifest::client::StateDir;
//! use escx_manifest::project::{Project, Selection};
//! # fn main() -> Result<(), escx_manifest::Error> {
//! let policy = escx::policy::TrustPolicy::load("trust.toml".as_ref())?;
//! let project = Project::load("app".as_ref(), "registry".as_ref(), &policy, &StateDir::default_location(), escx::now_unix())?;
//! let report = project.install(&Selection::default(), "app/escx_packages".as_ref(), None, |_, _, _| {})?;
//! println!("installed {} packages", report.installed.len());
//! # Ok(()) }
//! ```

use escx::UnixSeconds;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use escx::policy::TrustPolicy;

use crate::client::{self, StateDir, TrustedIndex};
use crate::install::{self, ContentKeys, InstallReport};
use crate::lockfile::Lockfile;
use crate::resolve::{self, Catalog, Resolution, ResolveOptions};
use crate::{Error, Manifest};

/// What to resolve beyond the root manifest's defaults.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Ignore the lockfile's versions and pick the highest again.
    pub update: bool,
    /// Features of the root manifest to enable.
    pub features: Vec<String>,
}

/// A project directory with its manifest, lockfile and the registry index it resolves
/// against, every check of the index done.
pub struct Project {
    root: PathBuf,
    /// What the lockfile records as the source (the directory, or the URL it was fetched from).
    source: String,
    manifest: Manifest,
    lock: Option<Lockfile>,
    trusted: TrustedIndex,
    policy: TrustPolicy,
    now: UnixSeconds,
}

/// A resolution and what it changed in the lockfile.
pub struct Locked<'a> {
    /// The resolution.
    pub resolution: Resolution<'a>,
    /// Lines like `+ acme/c 1.5.0` and `- acme/c 1.4.0`: what the lockfile gained and
    /// lost (empty when it was already up to date).
    pub changes: Vec<String>,
}

impl Project {
    /// Reads `root/manifest.toml` and `root/escx.lock` (if any) and loads the index of the
    /// registry (or mirror) at `registry` under `policy`, recording what was accepted in
    /// `state` (registry.md §5.1).
    pub fn load(
        root: &Path,
        registry: &Path,
        policy: &TrustPolicy,
        state: &StateDir,
        now: UnixSeconds,
    ) -> Result<Self, Error> {
        let manifest = Manifest::load(&root.join("manifest.toml"))?;
        let trusted = client::load_index(registry, policy, state, now)?;
        let lock = Lockfile::read(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            source: registry.display().to_string(),
            manifest,
            lock,
            trusted,
            policy: policy.clone(),
            now,
        })
    }

    /// The root manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The index every check passed for.
    pub fn index(&self) -> &TrustedIndex {
        &self.trusted
    }

    /// Where the lockfile is.
    pub fn lockfile_path(&self) -> PathBuf {
        self.root.join(crate::lockfile::LOCKFILE)
    }

    /// Records `source` (for example the URL the registry directory was fetched from) as
    /// the lockfile's source instead of the directory.
    pub fn with_source(mut self, source: &str) -> Self {
        self.source = source.to_owned();
        self
    }

    /// Resolves (keeping the lockfile's versions unless `selection.update`) and writes the
    /// lockfile when the resolution differs from it.
    pub fn lock(&self, selection: &Selection) -> Result<Locked<'_>, Error> {
        let catalog = Catalog::new(&self.trusted.index);
        let options = ResolveOptions {
            lock: self.lock.as_ref(),
            update: selection.update,
            features: selection.features.clone(),
        };
        let resolution = resolve::resolve(&self.manifest, &catalog, &options)?;
        let new_lock = Lockfile::from_resolution(&resolution, &self.source);
        let changes = lock_changes(self.lock.as_ref(), &new_lock);
        if self.lock.as_ref() != Some(&new_lock) {
            new_lock.write(&self.root)?;
        }
        Ok(Locked { resolution, changes })
    }

    /// [`Self::lock`], then fetches and verifies every package and installs them into
    /// `into` (resolution.md §6). Licensed packages take their content keys from
    /// `content_keys`; without it they fail with `content-key-required`. `on_package` is
    /// told (done, total, what) as packages are processed.
    pub fn install(
        &self,
        selection: &Selection,
        into: &Path,
        content_keys: Option<ContentKeys<'_>>,
        on_package: impl FnMut(usize, usize, &str),
    ) -> Result<InstallReport, Error> {
        let locked = self.lock(selection)?;
        let (trusted, resolution) = (&self.trusted, &locked.resolution);
        match content_keys {
            Some(keys) => {
                install::install_licensed(trusted, resolution, into, &self.policy, self.now, keys, on_package)
            }
            None => install::install(trusted, resolution, into, &self.policy, self.now, on_package),
        }
    }
}

/// Lines like "+ acme/c 1.5.0", "- acme/c 1.4.0" between two lockfiles.
fn lock_changes(old: Option<&Lockfile>, new: &Lockfile) -> Vec<String> {
    let set = |lock: Option<&Lockfile>| -> BTreeSet<String> {
        lock.map(|l| l.packages.iter().map(|p| format!("{} {}", p.name, p.version)).collect())
            .unwrap_or_default()
    };
    let (before, after) = (set(old), set(Some(new)));
    let removed = before.difference(&after).map(|p| format!("- {p}"));
    let added = after.difference(&before).map(|p| format!("+ {p}"));
    removed.chain(added).collect()
}
