//! `escx resolve`, `escx tree`, `escx install`.

use escx::header::PackageName;
use std::path::{Path, PathBuf};

use clap::Args;
use escx_manifest::project::{Locked, Project, Selection};
use escx_manifest::resolve::Resolution;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::registry_trust::ClientTrust;
use crate::output::Ui;

/// Arguments shared by resolve, tree and install.
#[derive(Args)]
pub struct ProjectArgs {
    /// Registry (or mirror) directory.
    #[arg(long, value_name = "DIR")]
    registry: PathBuf,
    /// Directory with the project's manifest.toml (escx.lock is written beside it).
    #[arg(long, value_name = "DIR", default_value = ".")]
    root: PathBuf,
    /// Re-resolve to the highest versions instead of keeping escx.lock's.
    #[arg(long)]
    update: bool,
    /// Features of the root manifest to enable (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "FEATURE")]
    features: Vec<String>,
    #[command(flatten)]
    trust: ClientTrust,
}

#[derive(Args)]
#[command(after_help = "\
Reads ROOT/manifest.toml, verifies the registry index (signatures, expiry, rollback), and
resolves with PubGrub: highest compatible versions, one per package per major, yanked
versions skipped unless escx.lock pins them. Writes ROOT/escx.lock. When no versions fit,
the explanation names the conflicting requirements.

Examples:
  escx resolve --registry ./reg --root ./app --registry-key registry.pub --pubkey acme.pub
  escx resolve --registry ./reg --root ./app --policy trust.toml --update")]
pub struct ResolveArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  escx tree --registry ./reg --root ./app --policy trust.toml")]
pub struct TreeArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
}

#[derive(Args)]
#[command(after_help = "\
Resolves (as `escx resolve`, keeping escx.lock), then fetches every package, checks its
size and BLAKE3 against the index and its signature under the trust policy, and only then
extracts them in dependency order into a staging directory that replaces INTO. A failure
leaves INTO as it was. Licensed (encrypted) packages are decrypted with the content keys
of valid licenses in --wallet, all looked up before anything is extracted.

Examples:
  escx install --registry ./reg --root ./app --into ./app/escx_packages --policy trust.toml
  escx install --registry ./mirror --root . --into escx_packages --registry-key registry.pub --pubkey acme.pub
  escx install --registry ./reg --root ./app --into ./app/escx_packages --policy trust.toml --wallet ./wallet")]
pub struct InstallArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Target directory.
    #[arg(long, value_name = "DIR")]
    into: PathBuf,
    /// License wallet holding the content keys of licensed (encrypted) packages.
    #[arg(long, value_name = "DIR")]
    wallet: Option<PathBuf>,
}

/// The project, and the directory a served registry was fetched into (kept while the
/// project is used).
fn load(args: &ProjectArgs) -> anyhow::Result<(Project, Option<Served>)> {
    super::manifest::require_manifest(&args.root)?;
    let policy = args.trust.policy()?;
    let now = args.trust.now()?;
    match served_url(&args.registry) {
        None => Ok((Project::load(&args.root, &args.registry, &policy, &args.trust.state(), now)?, None)),
        Some(url) => {
            let served = Served::fetch_index(url)?;
            let project = Project::load(&args.root, served.dir.path(), &policy, &args.trust.state(), now)?
                .with_source(url);
            Ok((project, Some(served)))
        }
    }
}

/// `--registry URL`: a registry served over HTTP (service.md §2), e.g.
/// `http://127.0.0.1:8440/registry`.
fn served_url(registry: &Path) -> Option<&str> {
    registry.to_str().filter(|s| s.starts_with("http://") || s.starts_with("https://"))
}

/// A served registry fetched into a private directory: the signed index first, then only
/// the package files a resolution needs, each bounded by the size the index gives. The
/// files are then checked exactly as a registry directory's (registry.md §5).
struct Served {
    client: crate::http::Client,
    dir: tempfile::TempDir,
}

impl Served {
    fn fetch_index(url: &str) -> anyhow::Result<Self> {
        let url = url.trim_end_matches('/').to_owned();
        let client = crate::http::Client::new(&url)?;
        let dir = tempfile::Builder::new()
            .prefix("escx-registry-")
            .tempdir()
            .map_err(|e| escx::Error::io("<temp>", e))?;
        escx::fsutil::create_private_dir(dir.path())?;
        let index =
            client.get_bounded(&format!("/{}", escx_manifest::index::INDEX_FILE), 64 * 1024 * 1024)?;
        let path = dir.path().join(escx_manifest::index::INDEX_FILE);
        std::fs::write(&path, index).map_err(|e| escx::Error::io(&path, e))?;
        Ok(Self { client, dir })
    }

    fn fetch_packages(&self, resolution: &Resolution<'_>) -> anyhow::Result<()> {
        for package in &resolution.packages {
            let version = package.version.to_string();
            let path = escx_manifest::index::package_path(self.dir.path(), package.name.as_str(), &version);
            let wanted = format!("/packages/{}/{version}.escx", package.name);
            let bytes = self.client.get_bounded(&wanted, package.entry.size.saturating_add(1))?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| escx::Error::io(parent, e))?;
            }
            std::fs::write(&path, bytes).map_err(|e| escx::Error::io(&path, e))?;
        }
        Ok(())
    }
}

fn selection(args: &ProjectArgs) -> Selection {
    Selection { update: args.update, features: args.features.clone() }
}

/// `escx resolve --json` (spec/cli.md).
#[derive(Serialize)]
struct Resolved<'a> {
    root: &'a PackageName,
    lockfile: &'a Path,
    index_version: u64,
    packages: Vec<ResolvedPackage<'a>>,
    changes: &'a [String],
}

/// One package of a resolution, in installation order.
#[derive(Serialize)]
struct ResolvedPackage<'a> {
    name: &'a PackageName,
    version: String,
    blake3: String,
    features: &'a std::collections::BTreeSet<String>,
    yanked: bool,
    dependencies: Vec<String>,
}

/// `escx tree --json`: each node with its dependencies (a repeated node's are omitted).
#[derive(Serialize)]
struct TreeNode<'a> {
    name: &'a PackageName,
    version: String,
    dependencies: Vec<TreeNode<'a>>,
}

/// `escx install --json`.
#[derive(Serialize)]
struct Installed<'a> {
    target: &'a Path,
    lockfile: &'a Path,
    installed: Vec<InstalledPackage<'a>>,
}

#[derive(Serialize)]
struct InstalledPackage<'a> {
    name: &'a PackageName,
    version: String,
}

fn packages_json<'a>(resolution: &'a Resolution<'_>) -> Vec<ResolvedPackage<'a>> {
    resolution
        .install_order
        .iter()
        .map(|&i| {
            let p = &resolution.packages[i];
            ResolvedPackage {
                name: &p.name,
                version: p.version.to_string(),
                blake3: p.entry.blake3_hex(),
                features: &p.features,
                yanked: p.entry.yanked,
                dependencies: p.dependencies.iter().map(|(n, v)| format!("{n} {v}")).collect(),
            }
        })
        .collect()
}

pub fn run_resolve(args: ResolveArgs, ui: &Ui) -> anyhow::Result<()> {
    let (project, _served) = load(&args.project)?;
    let Locked { resolution, changes } = project.lock(&selection(&args.project))?;
    let resolution = &resolution;
    let index_version = project.index().index.version;
    let lock_path = project.lockfile_path();
    ui.emit(
        &Resolved {
            root: &resolution.root,
            lockfile: &lock_path,
            index_version,
            packages: packages_json(resolution),
            changes: &changes,
        },
        || {
            let mut text = format!(
                "resolved {} for {} (index version {}); wrote {}\n",
                crate::output::count(resolution.packages.len(), "package"),
                resolution.root,
                index_version,
                lock_path.display()
            );
            for line in &changes {
                text += &format!("  {line}\n");
            }
            if changes.is_empty() {
                text += "  (no changes)\n";
            }
            text
        },
    );
    Ok(())
}

pub fn run_tree(args: TreeArgs, ui: &Ui) -> anyhow::Result<()> {
    let (project, _served) = load(&args.project)?;
    let Locked { resolution, .. } = project.lock(&selection(&args.project))?;
    let resolution = &resolution;
    #[derive(Serialize)]
    struct Tree<'a> {
        root: &'a PackageName,
        tree: Vec<TreeNode<'a>>,
    }
    let tree = Tree {
        root: &resolution.root,
        tree: tree_json(resolution, &resolution.root_dependencies, &mut Vec::new()),
    };
    ui.emit(&tree, || {
        let mut text = format!("{}\n", resolution.root);
        tree_text(resolution, &resolution.root_dependencies, "", &mut Vec::new(), &mut text);
        text
    });
    Ok(())
}

fn tree_json<'a>(
    resolution: &'a Resolution<'_>,
    children: &'a [(PackageName, semver::Version)],
    path: &mut Vec<String>,
) -> Vec<TreeNode<'a>> {
    children
        .iter()
        .map(|(name, version)| {
            let key = format!("{name} {version}");
            let repeated = path.contains(&key);
            let nested = match resolution.get(name, version) {
                Some(package) if !repeated => {
                    path.push(key.clone());
                    let nested = tree_json(resolution, &package.dependencies, path);
                    path.pop();
                    nested
                }
                _ => Vec::new(),
            };
            TreeNode { name, version: version.to_string(), dependencies: nested }
        })
        .collect()
}

fn tree_text(
    resolution: &Resolution<'_>,
    children: &[(PackageName, semver::Version)],
    prefix: &str,
    seen: &mut Vec<String>,
    out: &mut String,
) {
    for (i, (name, version)) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let key = format!("{name} {version}");
        let again = seen.contains(&key);
        let features = resolution
            .get(name, version)
            .filter(|p| !p.features.is_empty())
            .map(|p| format!(" [{}]", p.features.iter().cloned().collect::<Vec<_>>().join(", ")))
            .unwrap_or_default();
        out.push_str(&format!(
            "{prefix}{}{key}{features}{}\n",
            if last { "└── " } else { "├── " },
            if again { " (*)" } else { "" }
        ));
        if again {
            continue;
        }
        seen.push(key);
        if let Some(package) = resolution.get(name, version) {
            let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
            tree_text(resolution, &package.dependencies, &deeper, seen, out);
        }
    }
}

pub fn run_install(args: InstallArgs, ui: &Ui) -> anyhow::Result<()> {
    let (project, served) = load(&args.project)?;
    if let Some(served) = &served {
        served.fetch_packages(&project.lock(&selection(&args.project))?.resolution)?;
    }
    let wallet = args.wallet.as_deref().map(escx_licensing::wallet::Wallet::open).transpose()?;
    let content_keys = |name: &str, version: &semver::Version, root: &[u8; 32]| match &wallet {
        None => Err("pass --wallet with a license for it".to_owned()),
        Some(wallet) => wallet.content_key(name, version, root, escx::now_unix()).map_err(|e| e.to_string()),
    };
    let mut bar = None;
    let report = project.install(
        &selection(&args.project),
        &args.into,
        Some(&content_keys),
        |done, total, what| {
            let bar = bar.get_or_insert_with(|| progress_bar(ui, total as u64));
            if let Some(bar) = bar {
                bar.set_position(done as u64);
                bar.set_message(what.to_owned());
            }
        },
    )?;
    if let Some(Some(bar)) = bar {
        bar.finish_and_clear();
    }
    ui.emit(
        &Installed {
            target: &report.target,
            lockfile: &project.lockfile_path(),
            installed: report
                .installed
                .iter()
                .map(|(name, version)| InstalledPackage { name, version: version.to_string() })
                .collect(),
        },
        || {
            let mut text = format!(
                "installed {} into {} (all verified first):\n",
                crate::output::count(report.installed.len(), "package"),
                report.target.display()
            );
            for (name, version) in &report.installed {
                text += &format!("  {name} {version}\n");
            }
            text
        },
    );
    Ok(())
}

fn progress_bar(ui: &Ui, length: u64) -> Option<ProgressBar> {
    if !ui.progress_allowed() {
        return None;
    }
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    Some(bar)
}
