//! Installing a resolution (spec: resolution.md §6): fetch and verify every package first,
//! extract them into a staging directory in dependency order, then swap the staging
//! directory into place. An interrupted install leaves the target as it was.

use escx::UnixSeconds;
use std::path::{Path, PathBuf};

use escx::content::ContentKey;
use escx::header::PackageName;
use escx::policy::TrustPolicy;
use semver::Version;
use serde::Serialize;

use crate::Error;
use crate::client::{self, TrustedIndex};
use crate::resolve::Resolution;

/// The record of what a target directory holds.
pub const INSTALLED_FILE: &str = "escx-installed.toml";
const PREVIOUS_SUFFIX: &str = ".escx-previous";

/// What was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The target directory.
    pub target: PathBuf,
    /// Packages in installation order.
    pub installed: Vec<(PackageName, Version)>,
}

#[derive(Serialize)]
struct Installed {
    version: u32,
    package: Vec<InstalledPackage>,
}

#[derive(Serialize)]
struct InstalledPackage {
    name: PackageName,
    version: String,
    blake3: String,
    path: String,
}

/// Where `name@version` is extracted inside the target.
pub fn package_dir(target: &Path, name: &str, version: &Version) -> PathBuf {
    let mut path = target.to_path_buf();
    for part in name.split('/') {
        path.push(part);
    }
    path.push(version.to_string());
    path
}

/// Supplies the content key of a licensed (encrypted) package: given its name, version and
/// signed root, the key, or why there is none.
pub type ContentKeys<'a> = &'a dyn Fn(&str, &Version, &[u8; 32]) -> Result<ContentKey, String>;

/// Installs `resolution` from the registry of `trusted` into `target`. `on_package` is
/// told (done, total, "name version") as packages are processed. A licensed package
/// fails with `content-key-required`: see [`install_licensed`].
pub fn install(
    trusted: &TrustedIndex,
    resolution: &Resolution<'_>,
    target: &Path,
    policy: &TrustPolicy,
    now: UnixSeconds,
    on_package: impl FnMut(usize, usize, &str),
) -> Result<InstallReport, Error> {
    let no_keys = |_: &str, _: &Version, _: &[u8; 32]| Err("no license wallet was given".to_owned());
    install_licensed(trusted, resolution, target, policy, now, &no_keys, on_package)
}

/// [`install`], decrypting licensed packages with the keys `content_keys` supplies. Every
/// key is obtained while verifying, before anything is extracted.
pub fn install_licensed(
    trusted: &TrustedIndex,
    resolution: &Resolution<'_>,
    target: &Path,
    policy: &TrustPolicy,
    now: UnixSeconds,
    content_keys: ContentKeys<'_>,
    mut on_package: impl FnMut(usize, usize, &str),
) -> Result<InstallReport, Error> {
    recover_interrupted(target)?;
    let parent = escx::fsutil::parent_dir(target);
    let downloads = client::download_dir(&parent)?;
    let total = resolution.install_order.len() * 2;

    // 1. Fetch and verify everything before writing anything into the target.
    let mut fetched = Vec::with_capacity(resolution.install_order.len());
    for (done, &index) in resolution.install_order.iter().enumerate() {
        let package = &resolution.packages[index];
        on_package(done, total, &format!("verifying {} {}", package.name, package.version));
        let file = client::fetch(&trusted.root, &package.name, package.entry, downloads.path())?;
        let (report, _) = client::verify_fetched(&file, &package.name, package.entry, policy, now)?;
        let key = if report.sections.iter().any(|s| s.entry.is_encrypted()) {
            let key = content_keys(&package.name, &package.version, &report.root).map_err(|reason| {
                Error::ContentKeyUnavailable {
                    name: package.name.to_string(),
                    version: package.version.to_string(),
                    reason,
                }
            })?;
            Some(key)
        } else {
            None
        };
        fetched.push((package, file, report, key));
    }

    // 2. Extract in dependency order into a staging directory beside the target.
    let staging = tempfile::Builder::new()
        .prefix(".escx-install-")
        .tempdir_in(&parent)
        .map_err(|e| Error::Io { path: parent.clone(), error: e })?;
    let mut installed = Vec::new();
    let mut record = Installed { version: 1, package: Vec::new() };
    for (done, (package, file, report, key)) in fetched.iter().enumerate() {
        on_package(fetched.len() + done, total, &format!("installing {} {}", package.name, package.version));
        let destination = package_dir(staging.path(), &package.name, &package.version);
        // Verified in step 1; extraction re-hashes every section as it writes it.
        escx::extract::extract_verified(file, &destination, report, key.as_ref())?;
        installed.push((package.name.clone(), package.version.clone()));
        record.package.push(InstalledPackage {
            name: package.name.clone(),
            version: package.version.to_string(),
            blake3: package.entry.blake3_hex(),
            path: package_dir(Path::new(""), &package.name, &package.version)
                .to_string_lossy()
                .replace('\\', "/"),
        });
    }
    let text = toml::to_string(&record)
        .map_err(|e| Error::Io { path: target.join(INSTALLED_FILE), error: std::io::Error::other(e) })?;
    let record_path = staging.path().join(INSTALLED_FILE);
    std::fs::write(&record_path, text).map_err(|e| Error::Io { path: record_path, error: e })?;

    // 3. Swap: the old target moves aside, the staging directory takes its place.
    let staged = staging.keep();
    let previous = previous_path(target);
    if target.exists() {
        std::fs::rename(target, &previous).map_err(|e| Error::Io { path: target.into(), error: e })?;
    }
    if let Err(e) = std::fs::rename(&staged, target) {
        let _ = std::fs::rename(&previous, target);
        let _ = std::fs::remove_dir_all(&staged);
        return Err(Error::Io { path: target.into(), error: e });
    }
    if previous.exists() {
        std::fs::remove_dir_all(&previous).map_err(|e| Error::Io { path: previous, error: e })?;
    }
    on_package(total, total, "done");
    Ok(InstallReport { target: target.to_path_buf(), installed })
}

fn previous_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(PREVIOUS_SUFFIX);
    target.with_file_name(name)
}

/// If a previous install stopped between its two renames, the old target is beside it
/// under the `.escx-previous` name: put it back (or drop it if the new one made it).
fn recover_interrupted(target: &Path) -> Result<(), Error> {
    let previous = previous_path(target);
    if !previous.exists() {
        return Ok(());
    }
    if target.exists() {
        std::fs::remove_dir_all(&previous).map_err(|e| Error::Io { path: previous, error: e })
    } else {
        std::fs::rename(&previous, target).map_err(|e| Error::Io { path: previous, error: e })
    }
}
