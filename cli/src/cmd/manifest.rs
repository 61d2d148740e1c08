//! `escx manifest ...`

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use escx_manifest::Manifest;
use escx_manifest::template::manifest_template;
use serde::Serialize;

use crate::failure::{self, UsageError};
use crate::output::Ui;

#[derive(Subcommand)]
pub enum ManifestCommand {
    /// Write a commented manifest.toml template into a directory.
    #[command(after_help = "\
The package name defaults to the directory's name; every optional section is present
but commented out, with its rules.

Examples:
  escx manifest init ./mypkg
  escx manifest init ./mypkg --name acme/thermal")]
    Init(InitArgs),
    /// Validate a manifest: schema, semantic rules, line:column errors with fixes.
    #[command(after_help = "\
Every problem is reported at once, each as FILE:LINE:COLUMN: KEY: MESSAGE followed by a
help line. Unknown keys get a \"did you mean\".

Examples:
  escx manifest check ./mypkg/manifest.toml
  escx manifest check ./mypkg --json")]
    Check(CheckArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Package directory (created if needed).
    dir: PathBuf,
    /// Package name (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Replace an existing manifest.toml.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    /// A manifest.toml, or a directory containing one.
    path: PathBuf,
}

pub fn run(command: ManifestCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        ManifestCommand::Init(args) => init(args, ui),
        ManifestCommand::Check(args) => check(args, ui),
    }
}

/// `path` itself, or `path/manifest.toml` when it is a directory.
pub fn manifest_path(path: &Path) -> PathBuf {
    if path.is_dir() { path.join("manifest.toml") } else { path.to_path_buf() }
}

/// Loads and fully validates a manifest, for commands that take a package directory.
pub fn load(path: &Path) -> anyhow::Result<Manifest> {
    require_manifest(path)?;
    Ok(Manifest::load(&manifest_path(path))?)
}

/// Refuses a directory without `manifest.toml`, saying how to write one.
pub fn require_manifest(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() && !path.join("manifest.toml").exists() {
        return Err(failure::no_manifest(path));
    }
    Ok(())
}

fn init(args: InitArgs, ui: &Ui) -> anyhow::Result<()> {
    let given = args.name.is_some();
    let name = match args.name {
        Some(name) => name,
        None => {
            let base = std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone());
            let stem = base.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
            stem.chars()
                .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
                .collect()
        }
    };
    let name = escx::header::PackageName::parse(name).map_err(|e| match given {
        true => UsageError(format!("--name: package name {e}")),
        false => UsageError(format!("package name {e} (made from the directory's name); pass --name")),
    })?;
    let path = args.dir.join("manifest.toml");
    if path.exists() && !args.force {
        return Err(failure::exists(&path, "pass --force to replace it"));
    }
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| escx::Error::io(&args.dir, e))
        .map_err(failure::at(&args.dir))?;
    std::fs::write(&path, manifest_template(&name))
        .map_err(|e| escx::Error::io(&path, e))
        .map_err(failure::at(&path))?;
    ui.emit(&Initialized { file: &path, name: &name }, || {
        format!("wrote {} for package {name}", path.display())
    });
    Ok(())
}

/// `escx manifest init --json` (spec/cli.md).
#[derive(Serialize)]
struct Initialized<'a> {
    file: &'a Path,
    name: &'a str,
}

/// `escx manifest check --json`.
#[derive(Serialize)]
struct Checked<'a> {
    ok: bool,
    file: &'a Path,
    package: PackageRef<'a>,
    dependencies: Vec<DependencyRef<'a>>,
    features: Vec<&'a str>,
    pricing_tiers: usize,
    revenue_steps: usize,
    telemetry: bool,
}

#[derive(Serialize)]
struct PackageRef<'a> {
    name: &'a str,
    version: String,
}

#[derive(Serialize)]
struct DependencyRef<'a> {
    name: &'a str,
    requirement: &'a str,
    optional: bool,
    features: &'a [String],
}

fn check(args: CheckArgs, ui: &Ui) -> anyhow::Result<()> {
    require_manifest(&args.path)?;
    let path = manifest_path(&args.path);
    let manifest = Manifest::load(&path)?;
    let tiers = manifest.pricing.as_ref().map_or(0, |p| p.tiers.len());
    let steps = manifest.revenue.as_ref().map_or(0, |r| r.base.steps.len());
    ui.emit(
        &Checked {
            ok: true,
            file: &path,
            package: PackageRef {
                name: &manifest.package.name,
                version: manifest.package.version.to_string(),
            },
            dependencies: manifest
                .dependencies
                .iter()
                .map(|(name, d)| DependencyRef {
                    name,
                    requirement: d.requirement.as_str(),
                    optional: d.optional,
                    features: &d.features,
                })
                .collect(),
            features: manifest.features.keys().map(String::as_str).collect(),
            pricing_tiers: tiers,
            revenue_steps: steps,
            telemetry: manifest.telemetry.is_some(),
        },
        || {
            format!(
                "{}: {} {} is valid ({}, {}, {}, {})",
                path.display(),
                manifest.package.name,
                manifest.package.version,
                crate::output::count(manifest.dependencies.len(), "dependency"),
                crate::output::count(manifest.features.len(), "feature"),
                crate::output::count(tiers, "price tier"),
                crate::output::count(steps, "waterfall step")
            )
        },
    );
    Ok(())
}
